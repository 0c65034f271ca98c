// `criu-bun check`: exit codes and output of check / --all / --feature, every probe's verdict
// against an independent observation of this machine (kernel config, /proc, kernel version),
// probes that clean up after themselves, and the single executable working alone in a directory.
import { describe, test, expect, beforeAll, afterAll } from "bun:test";
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT, newestSource } from "./harness";
import { PROBES, runProbe, CRIU_FEATURE_NAMES, UNSUPPORTED_FEATURES } from "../src/check/index";
import { listChildren, listFds, readLink, readVmas } from "../src/sys/proc";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** criu-bun from source (always the code under test, even if ./criu-bun is stale). */
function check(...args: string[]): Run {
  return exec([process.execPath, join(REPO_ROOT, "src/main.ts"), "check", ...args]);
}
function exec(cmd: string[], cwd = REPO_ROOT): Run {
  const r = Bun.spawnSync(cmd, {
    cwd,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    timeout: 120_000,
    env: { ...process.env },
  });
  return { code: r.exitCode ?? -1, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

const LINE = /^(\S+) \.\.\. (yes|no \(.+\))$/;
let all: Run;
const verdict = new Map<string, boolean>();

beforeAll(() => {
  all = check("--all");
  for (const l of all.stdout.split("\n")) {
    const m = LINE.exec(l);
    if (m) verdict.set(m[1], m[2] === "yes");
  }
});

describe("check", () => {
  test("plain check: Looks good., exit 0", () => {
    const r = check();
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("Looks good.\n");
    expect(r.code).toBe(0);
  });

  test("--all: one line per probe and per experimental feature, then criu's verdict and exit code", () => {
    const lines = all.stdout.trimEnd().split("\n");
    const probeLines = lines.filter((l) => LINE.test(l));
    const rest = lines.slice(probeLines.length);
    const names = probeLines.map((l) => l.split(" ")[0]);
    expect(names).toEqual([...PROBES.map((p) => p.name), "autofs", "compat_cr"]);
    expect(new Set(names).size).toBe(names.length);
    for (const p of PROBES.filter((p) => p.basic)) expect(verdict.get(p.name)).toBe(true);
    // criu: "Looks good." only if every feature checked is there, else its warning and exit 1
    if ([...verdict.values()].every(Boolean)) {
      expect(rest).toEqual(["Looks good."]);
      expect(all.code).toBe(0);
    } else {
      expect(rest).toEqual([
        "Looks good but some kernel features are missing",
        "which, depending on your process tree, may cause",
        "dump or restore failure.",
      ]);
      expect(all.code).toBe(1);
    }
    // criu's names where criu has them
    for (const n of [
      "can_map_vdso",
      "clone3_set_tid",
      "get_rseq_conf",
      "mem_dirty_track",
      "uffd",
      "uffd-noncoop",
      "timens",
      "seccomp_suspend",
      "seccomp_filters",
      "kcmp_epoll",
      "pidfd_store",
      "memfd_hugetlb",
      "ns_pid",
      "nftables",
      "userns",
      "cgroupns",
      "loginuid",
      "tun",
      "timerfd",
      "fdinfo_lock",
      "aio_remap",
      "network_lock_nftables",
      "mnt_id",
      "openat2",
    ])
      expect(names).toContain(n);
  });

  test("--feature list prints CRIU 4.2's names in criu's order, then criu-bun's own", () => {
    const r = check("--feature", "list");
    expect(r.code).toBe(0);
    const listed = r.stdout.trim().split("\n");
    expect(listed.slice(0, CRIU_FEATURE_NAMES.length)).toEqual([...CRIU_FEATURE_NAMES]);
    for (const p of PROBES) expect(listed).toContain(p.name);
    expect(new Set(listed).size).toBe(listed.length);
  });

  test("every feature name of CRIU 4.2 gets an answer: a real probe's, or 'unsupported by criu-bun' and exit 1", () => {
    expect(CRIU_FEATURE_NAMES.length).toBe(45);
    const criu42 = "/work/shared/tools/criu-4.2";
    if (existsSync(criu42)) {
      // each name is a string of criu 4.2's binary (itself, or the tail of a longer one)
      const strings = readFileSync(criu42).toString("latin1");
      for (const n of CRIU_FEATURE_NAMES) expect(`${n}: ${strings.includes(`${n}\0`)}`).toBe(`${n}: true`);
    }
    for (const n of CRIU_FEATURE_NAMES) {
      const r = check("--feature", n);
      const probe = PROBES.find((p) => p.name === n);
      if (probe) {
        const ok = runProbe(probe).ok;
        expect(`${n}: ${r.code} ${r.stdout}`).toBe(`${n}: ${ok ? 0 : 1} ${ok ? `${n} is supported\n` : ""}`);
        if (!ok) expect(r.stderr).toMatch(new RegExp(`^Error \\(check\\): ${n} is not supported: .+`));
      } else {
        expect(`${n}: ${r.code} ${r.stdout}`).toBe(`${n}: 1 `);
        expect(r.stderr).toBe(`Error (check): ${n} is unsupported by criu-bun: ${UNSUPPORTED_FEATURES[n]}\n`);
      }
    }
  }, 120_000);

  test("--feature: 0 for a present feature, 1 for an absent one, 1 with an error for an unknown one", () => {
    const ok = check("--feature", "pidfd_getfd");
    expect(ok.code).toBe(0);
    expect(ok.stdout).toBe("pidfd_getfd is supported\n");

    const absent = [...verdict].find(([, v]) => !v)?.[0];
    if (absent) {
      const r = check("--feature", absent);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(new RegExp(`^Error \\(check\\): ${absent} is not supported: .+`));
    }

    const unknown = check("--feature", "no_such_feature");
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("Error (check): unknown feature no_such_feature");
  });

  test("--feature agrees with --all for every probe", () => {
    // several --feature flags in one run: exit 0 only if all are present
    const present = [...verdict].filter(([, v]) => v).map(([n]) => n);
    const r = check(...present.flatMap((n) => ["--feature", n]));
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split("\n")).toEqual(present.map((n) => `${n} is supported`));
    for (const [name, v] of verdict) {
      if (v) continue;
      expect(check("--feature", name).code).toBe(1);
    }
  });

  // skipped (and reported as such) where there is no unshare or no user namespaces
  test.skipIf(exec(["unshare", "--user", "true"]).code !== 0)(
    "without privileges (a new user namespace) the basics fail: Error (check) lines, exit 1",
    () => {
      const r = exec(["unshare", "--user", process.execPath, join(REPO_ROOT, "src/main.ts"), "check"]);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("Does not look good.\n");
      // set_tid needs CAP_SYS_ADMIN over the PID namespace, which a new user namespace does not own
      expect(r.stderr).toMatch(/^Error \(check\): clone3_set_tid: clone3 with set_tid: EPERM/m);
      for (const l of r.stderr.trim().split("\n")) expect(l).toMatch(/^Error \(check\): \S+: .+/);
      const f = exec([
        "unshare",
        "--user",
        process.execPath,
        join(REPO_ROOT, "src/main.ts"),
        "check",
        "--feature",
        "tcp_repair",
      ]);
      expect(f.code).toBe(1);
      expect(f.stderr).toContain("Error (check): tcp_repair is not supported: TCP_REPAIR needs CAP_NET_ADMIN");
    }
  );

  test("each probe agrees with an independent look at this machine", () => {
    const config = kernelConfig();
    const cfg = (k: string) => (config ? config.has(k) : undefined);
    const [maj, min] = readFileSync("/proc/sys/kernel/osrelease", "latin1").split(".").map(Number);
    const kv = (a: number, b: number) => maj > a || (maj === a && min >= b);
    const root = process.getuid?.() === 0;
    const mountinfo = readFileSync("/proc/self/mountinfo", "latin1");
    const smapsFlags = readFileSync("/proc/self/smaps", "latin1")
      .split("\n")
      .filter((l) => l.startsWith("VmFlags:"))
      .join(" ");

    const expected: Record<string, boolean | undefined> = {
      clone3_set_tid: root && kv(5, 5) ? true : undefined,
      close_range: kv(5, 9),
      get_rseq_conf: kv(5, 13) && cfg("CONFIG_RSEQ") !== false,
      pagemap_scan: kv(6, 7) && cfg("CONFIG_PROC_PAGE_MONITOR") !== false,
      pidfd_getfd: kv(5, 6),
      pidfd_open: kv(5, 3),
      timens: existsSync("/proc/self/ns/time"),
      cgroupns: existsSync("/proc/self/ns/cgroup"),
      userns: existsSync("/proc/self/ns/user"),
      ns_pid: /\nNSpid:/.test(readFileSync("/proc/self/status", "latin1")),
      cgroup_v2: / - cgroup2 /.test(mountinfo) && /^0::/m.test(readFileSync("/proc/self/cgroup", "latin1")),
      memfd_hugetlb: /\bhugetlbfs\b/.test(readFileSync("/proc/filesystems", "latin1")) ? undefined : false,
      // soft-dirty kernels flag new mappings "sd" in smaps
      mem_dirty_track: cfg("CONFIG_MEM_SOFT_DIRTY") ?? (/\bsd\b/.test(smapsFlags) ? undefined : false),
      uffd: cfg("CONFIG_USERFAULTFD") ?? existsSync("/proc/sys/vm/unprivileged_userfaultfd"),
      "uffd-noncoop": root ? cfg("CONFIG_USERFAULTFD") : undefined,
      uffd_wp_async:
        cfg("CONFIG_PTE_MARKER_UFFD_WP") === undefined ? undefined : cfg("CONFIG_PTE_MARKER_UFFD_WP")! && kv(6, 7),
      tun: existsSync("/dev/net/tun") ? (root ? true : undefined) : false,
      loginuid: existsSync("/proc/self/loginuid") ? undefined : false,
      tcp_repair: root ? true : undefined,
      seccomp_filters: cfg("CONFIG_SECCOMP_FILTER") === false ? false : undefined,
      kcmp: cfg("CONFIG_CHECKPOINT_RESTORE") ?? true,
      kcmp_epoll: cfg("CONFIG_CHECKPOINT_RESTORE"),
      aio_remap: cfg("CONFIG_AIO"),
      membarrier: cfg("CONFIG_MEMBARRIER"),
      rseq: cfg("CONFIG_RSEQ"),
      nftables: cfg("CONFIG_NF_TABLES") === false ? false : undefined,
      sock_diag: cfg("CONFIG_UNIX_DIAG") === false ? false : undefined,
    };
    let compared = 0;
    for (const [name, want] of Object.entries(expected)) {
      expect(verdict.has(name)).toBe(true);
      if (want === undefined) continue;
      compared++;
      expect(`${name}: ${verdict.get(name)}`).toBe(`${name}: ${want}`);
    }
    expect(compared).toBeGreaterThan(10);
  });

  test("can_map_vdso understands this kernel's vDSO layout ([vvar_vclock] on 6.13+)", () => {
    const names = readVmas(process.pid)
      .map((v) => v.path)
      .filter((p) => /^\[(vvar|vvar_vclock|vdso)\]$/.test(p));
    expect(names[names.length - 1]).toBe("[vdso]");
    expect(verdict.get("can_map_vdso")).toBe(true);
  });

  test("probes clean up: no children, descriptors or mappings left behind", () => {
    // run in this process, synchronously, so nothing else changes these in between
    const kids = listChildren(process.pid).sort().join(",");
    // the puppet's ELF stays cached in one memfd for the life of the process (src/ptrace/puppet.ts)
    const ownFds = () =>
      listFds(process.pid)
        .filter((fd) => {
          try {
            return !readLink(`/proc/self/fd/${fd}`).startsWith("/memfd:criu-bun-puppet");
          } catch {
            return false;
          }
        })
        .join(",");
    const fds = ownFds();
    // what the in-process probes map: AIO rings, userfaultfd-registered areas
    const probeMaps = () =>
      readVmas(process.pid).filter(
        (v) => v.path.startsWith("/[aio]") || v.vmflags.some((f) => f === "uw" || f === "um")
      ).length;
    const maps = probeMaps();
    const results = PROBES.map(runProbe);
    for (const r of results) expect(`${r.name}: ${r.broken ? "broken: " + r.text : "ok"}`).toBe(`${r.name}: ok`);
    expect(results.map((r) => `${r.name} ${r.ok}`)).toEqual(PROBES.map((p) => `${p.name} ${verdict.get(p.name)}`));
    expect(listChildren(process.pid).sort().join(",")).toBe(kids);
    expect(ownFds()).toBe(fds);
    expect(probeMaps()).toBe(maps);
  });
});

describe("single executable", () => {
  let dir = "";
  let exe = "";
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "criu-bun-check-"));
    exe = join(dir, "criu-bun");
    const built = join(REPO_ROOT, "criu-bun");
    if (!existsSync(built)) {
      const b = exec([process.execPath, "scripts/build.ts"]);
      if (b.code !== 0) throw new Error(`build failed: ${b.stderr}`);
    }
    if (statSync(built).mtimeMs >= newestSource()) {
      copyFileSync(built, exe);
    } else {
      // ./criu-bun predates the sources: build the current ones with scripts/build.ts, straight
      // into the empty directory (./criu-bun stays as it is)
      const b = exec([process.execPath, "scripts/build.ts", "--outfile", exe]);
      if (b.code !== 0) throw new Error(`build failed: ${b.stderr}`);
    }
  }, 180_000);
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("runs check alone in an empty directory", () => {
    const extra = readdirSync(dir).filter((f) => f !== "criu-bun");
    expect(extra).toEqual([]);
    const r = exec([exe, "check"], dir);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("Looks good.\n");
    expect(r.code).toBe(0);
    const f = exec([exe, "check", "--feature", "clone3_set_tid"], dir);
    expect(f.code).toBe(0);
  });
});

/** CONFIG_* options set to y or m, from /proc/config.gz; null when the kernel does not offer it. */
function kernelConfig(): Set<string> | null {
  try {
    const text = gunzipSync(readFileSync("/proc/config.gz")).toString("latin1");
    return new Set(
      text
        .split("\n")
        .filter((l) => /^CONFIG_\w+=[ym]$/.test(l))
        .map((l) => l.split("=")[0])
    );
  } catch {
    return null;
  }
}
