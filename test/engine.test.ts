// The core engine on real processes: dump, kill, restore, and the workload verifies itself.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, readdirSync, existsSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import {
  buildWorkloads,
  cleanup,
  startWorkload,
  trigger,
  waitResult,
  isAlive,
  procState,
  criuBun,
  waitUntil,
  holdsFor,
  cpuTicks,
} from "./harness";
import { dump, restore, imagesDir, cleanupImages, waitReaped, dumpRestoreVerify } from "./engine-helpers";

beforeAll(async () => {
  await buildWorkloads();
}, 120_000);
afterAll(() => {
  cleanup();
  cleanupImages();
});

describe("single process", () => {
  test("counter: memory, heap, TLS, brk, guard pages survive", async () => {
    await dumpRestoreVerify("counter");
  });
});

describe("threads", () => {
  test("8 threads keep TIDs, counters, TLS and stacks", async () => {
    await dumpRestoreVerify("threads", ["8"]);
  });
});

describe("blocked in a syscall at dump time", () => {
  for (const mode of ["read", "read-eintr", "nanosleep", "futex", "poll"]) {
    test(`${mode} resumes correctly`, async () => {
      await dumpRestoreVerify("block", [mode]);
    });
  }
});

describe("seccomp", () => {
  test("two seccomp filters and no_new_privs still apply after restore", async () => {
    const { dir } = await dumpRestoreVerify("seccomp");
    const j = JSON.parse(Bun.spawnSync(["crit", "decode", "-i", join(dir, "seccomp.img")]).stdout.toString());
    expect(j.entries[0].seccomp_filters.length).toBe(2);
  });
});

describe("signals and timers", () => {
  test("handlers, blocked+pending signals, itimer, POSIX timer", async () => {
    await dumpRestoreVerify("signals");
  });
});

describe("files", () => {
  test("file locks (flock, POSIX, OFD) are refused without --file-locks and held again with it", async () => {
    const w = await startWorkload("locks");
    const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("locks-no")]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Error \(files\): process \d+ fd \d+: holds a \w+ file lock; use --file-locks to dump it/);
    const dir = imagesDir("locks");
    dump(w.pid, dir, ["--file-locks"]);
    const rr = await restore(dir, w.pid);
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    expect(await rr.proc.exited).toBe(0);
  });

  test("a file deleted while open comes back as a ghost file: contents, mode, offset, still unlinked", async () => {
    const { dir } = await dumpRestoreVerify("deleted");
    expect(readdirSync(dir)).toContain("remap-fpath.img");
    const ghost = readdirSync(dir).find((f) => f.startsWith("ghost-file-"))!;
    const j = JSON.parse(Bun.spawnSync(["crit", "decode", "-i", join(dir, ghost)]).stdout.toString());
    expect(j.magic).toBe("GHOST_FILE");
    expect(Number(j.entries[0].size)).toBe(32 << 10);
  });

  test("--ghost-limit refuses a deleted file larger than the limit, target unharmed", async () => {
    const w = await startWorkload("deleted");
    const r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("ghostlimit"), "--ghost-limit", "16K"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(
      /deleted file '.*\/deleted' is 32768 bytes, over the ghost file limit of 16384 \(--ghost-limit\)/
    );
    trigger(w);
    expect((await waitResult(w)).text).toStartWith("PASS");
  });

  test("append log, rw offset, ro offset, O_PATH, devices, cloexec, shared file mapping", async () => {
    await dumpRestoreVerify("files");
  });
});

describe("image directory reuse", () => {
  test("restore twice from one image dir, then a chain of three dumps", async () => {
    const w = await startWorkload("counter");
    const d1 = imagesDir("chain1");
    dump(w.pid, d1);
    // first copy from d1: killed again
    let r = await restore(d1, w.pid);
    process.kill(w.pid, "SIGKILL");
    // criu waits for its restored tree and exits 0 whatever became of it
    expect(await r.proc.exited).toBe(0);
    // second copy from the same d1, then dump it again (d2), restore, dump (d3), restore
    r = await restore(d1, w.pid);
    const d2 = imagesDir("chain2");
    dump(w.pid, d2);
    expect(await r.proc.exited).toBe(0);
    r = await restore(d2, w.pid);
    const d3 = imagesDir("chain3");
    dump(w.pid, d3);
    expect(await r.proc.exited).toBe(0);
    r = await restore(d3, w.pid);
    trigger(w);
    const res = await waitResult(w, 15000);
    expect(res.text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  });
});

describe("leave running / leave stopped", () => {
  test("--leave-running keeps the target going and the images still restore a copy", async () => {
    const w = await startWorkload("spin");
    const dir = imagesDir("lr");
    dump(w.pid, dir, ["-R"]);
    expect(isAlive(w.pid)).toBe(true);
    const t1 = cpuTicks(w.pid);
    await waitUntil("the -R target to keep using CPU", () => cpuTicks(w.pid) > t1); // still running
    process.kill(w.pid, "SIGKILL");
    const r = await restore(dir, w.pid);
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
  });

  test("--leave-stopped leaves it stopped", async () => {
    const w = await startWorkload("spin");
    dump(w.pid, imagesDir("ls"), ["-s"]);
    await waitUntil("the -s target to be stopped", () => procState(w.pid) === "T");
    const t1 = cpuTicks(w.pid);
    await holdsFor("a -s target uses no CPU", () => cpuTicks(w.pid) === t1 && procState(w.pid) === "T", 300);
    process.kill(w.pid, "SIGCONT");
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  });
});

describe("real programs", () => {
  test("python3 with state in a dict", async () => {
    await dumpRestoreVerify("pyloop.py");
  });
  test("node: an HTTP server with its timers and libuv threads keeps serving", async () => {
    await dumpRestoreVerify("nodeserver.cjs", [String(7400 + Math.floor(Math.random() * 500))]);
  });
  test("a bash loop", async () => {
    await dumpRestoreVerify("bashloop.sh");
  });
});

describe("images are CRIU's", () => {
  test("every image of a dump decodes with Debian's crit, and crit x mems agrees with the VMAs", async () => {
    if (!existsSync("/usr/bin/crit")) throw new Error("crit is not installed (apt-get install criu)");
    const w = await startWorkload("threads", ["4"]);
    const dir = imagesDir("crit");
    dump(w.pid, dir, ["-R"]);
    const imgs = readdirSync(dir).filter((f) => f.endsWith(".img") && !f.startsWith("pages-"));
    expect(imgs).toContain(`core-${w.pid}.img`);
    expect(imgs).toContain(`mm-${w.pid}.img`);
    for (const f of imgs) {
      const r = Bun.spawnSync(["crit", "decode", "-i", join(dir, f)], { stderr: "pipe" });
      expect({ f, code: r.exitCode, err: r.stderr.toString() }).toEqual({ f, code: 0, err: "" });
      const j = JSON.parse(r.stdout.toString());
      expect(j.entries.length).toBeGreaterThan(0);
    }
    // pstree lists the threads; the core of the leader has its registers
    const ps = JSON.parse(Bun.spawnSync(["crit", "decode", "-i", join(dir, "pstree.img")]).stdout.toString());
    expect(ps.entries[0].pid).toBe(w.pid);
    expect(ps.entries[0].threads.length).toBe(5);
    // crit x mems lists the same VMAs as mm-PID.img
    const mm = JSON.parse(Bun.spawnSync(["crit", "decode", "-i", join(dir, `mm-${w.pid}.img`)]).stdout.toString());
    const ours = mm.entries[0].vmas.map((v: any) => BigInt(v.start)).sort();
    const mems = Bun.spawnSync(["crit", "x", dir, "mems"]).stdout.toString();
    const theirs = [...mems.matchAll(/^\s+([0-9a-f]+)-([0-9a-f]+)\s/gm)].map((m) => BigInt("0x" + m[1])).sort();
    expect(theirs.length).toBeGreaterThan(5);
    expect(theirs).toEqual(ours);
    // and the live process agrees too (it was left running); as in CRIU's images, [vvar_vclock] is
    // part of the [vvar] VMA before it
    const live = readFileSync(`/proc/${w.pid}/maps`, "utf8")
      .split("\n")
      .filter((l) => l && !l.includes("[vvar_vclock]"))
      .map((l) => BigInt("0x" + l.split("-")[0]))
      .sort();
    expect(ours).toEqual(live);
    trigger(w);
    expect((await waitResult(w)).text).toStartWith("PASS");
  });
});

/** One field of /proc/PID/status. */
const statusField = (t: string, k: string) => new RegExp(`^${k}:\\s*(.*)$`, "m").exec(t)![1].trim();
/** Ids, groups and capability sets of two /proc/PID/status texts are the same. */
function expectSameCreds(before: string, after: string) {
  for (const k of ["Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"])
    expect(`${k}: ${statusField(after, k)}`).toBe(`${k}: ${statusField(before, k)}`);
}

/** A counter started under `wrap` (checked first by `check`) keeps its credentials through dump and restore. */
async function credsSurvive(tag: string, wrap: string[], check: (status: string) => void) {
  const w = await startWorkload("counter", [], { wrap });
  const before = readFileSync(`/proc/${w.pid}/status`, "utf8");
  check(before);
  const dir = imagesDir(tag);
  dump(w.pid, dir);
  const r = await restore(dir, w.pid);
  expectSameCreds(before, readFileSync(`/proc/${w.pid}/status`, "utf8"));
  trigger(w);
  expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  expect(await r.proc.exited).toBe(0);
}

describe("credentials", () => {
  test("a process running as uid/gid 1000 with supplementary groups keeps its credentials", async () => {
    await credsSurvive(
      "creds",
      ["setpriv", "--reuid", "1000", "--regid", "1000", "--groups", "1001,1002", "--"],
      (st) => expect(statusField(st, "Uid")).toBe("1000\t1000\t1000\t1000")
    );
  });
});

describe("task attributes", () => {
  test("umask, cwd, comm, nice, rlimits, oom_score_adj come back; -d, --pidfile and --display-stats", async () => {
    const wrap = [
      "sh",
      "-c",
      'umask 027; cd /tmp; echo 123 > /proc/self/oom_score_adj; exec nice -n 5 prlimit --nofile=512:1024 --core=0:0 "$0" "$@"',
    ];
    const w = await startWorkload("counter", [], { wrap });
    const snap = (pid: number) => {
      const st = readFileSync(`/proc/${pid}/status`, "utf8");
      const f = readFileSync(`/proc/${pid}/stat`, "latin1")
        .replace(/^.*\) /s, "")
        .split(" ");
      return {
        umask: /^Umask:\s*(\S+)/m.exec(st)![1],
        cwd: readlinkSync(`/proc/${pid}/cwd`),
        comm: readFileSync(`/proc/${pid}/comm`, "utf8"),
        nice: f[16],
        oom: readFileSync(`/proc/${pid}/oom_score_adj`, "utf8"),
        limits: readFileSync(`/proc/${pid}/limits`, "utf8")
          .split("\n")
          .filter((l) => /open files|core file/.test(l))
          .join("\n"),
      };
    };
    const before = snap(w.pid);
    expect(before.umask).toBe("0027");
    expect(before.nice).toBe("5");
    const dir = imagesDir("attrs");
    dump(w.pid, dir);
    await waitReaped(w.pid);
    const pidfile = join(dir, "restored.pid");
    const r = criuBun(["restore", "-d", "-D", dir, "--pidfile", pidfile, "--display-stats"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Restore time:");
    expect(readFileSync(pidfile, "utf8").trim()).toBe(String(w.pid));
    expect(isAlive(w.pid)).toBe(true); // -d: criu-bun is gone, the process runs on
    expect(snap(w.pid)).toEqual(before);
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  });
});

describe("capabilities", () => {
  test("a uid 1000 process with an inheritable+ambient capability and a reduced bounding set keeps its sets", async () => {
    await credsSurvive(
      "caps",
      [
        "setpriv",
        "--reuid",
        "1000",
        "--regid",
        "1000",
        "--clear-groups",
        "--inh-caps",
        "+net_raw",
        "--ambient-caps",
        "+net_raw",
        "--bounding-set",
        "-sys_admin,-sys_ptrace",
        "--",
      ],
      (st) => expect(statusField(st, "CapEff")).toBe("0000000000002000")
    );
  });
});

describe("more options", () => {
  test("restore -s leaves the process stopped; -W puts logs and the pidfile in the work dir; exe link kept", async () => {
    const w = await startWorkload("spin");
    const exe = readlinkSync(`/proc/${w.pid}/exe`);
    const dir = imagesDir("opts");
    const work = imagesDir("work");
    let r = criuBun(["dump", "-t", String(w.pid), "-D", dir, "-W", work, "-o", "dump.log", "-v4"]);
    expect(r.code).toBe(0);
    expect(existsSync(join(work, "dump.log"))).toBe(true);
    await waitReaped(w.pid);
    r = criuBun(["restore", "-d", "-s", "-D", dir, "-W", work, "-o", "restore.log", "-v4", "--pidfile", "p.pid"]);
    expect(r.code).toBe(0);
    expect(readFileSync(join(work, "p.pid"), "utf8").trim()).toBe(String(w.pid));
    expect(readFileSync(join(work, "restore.log"), "utf8")).toContain("Restore finished");
    await waitUntil("the restore -s process to be stopped", () => procState(w.pid) === "T");
    expect(readlinkSync(`/proc/${w.pid}/exe`)).toBe(exe);
    process.kill(w.pid, "SIGCONT");
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  });

  test("a file that changed size since the dump is refused with a clear error", async () => {
    const w = await startWorkload("files");
    const dir = imagesDir("size");
    dump(w.pid, dir);
    await waitReaped(w.pid);
    require("node:fs").appendFileSync(join(w.dir, "ro"), "more");
    const r = criuBun(["restore", "-d", "-D", dir]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(
      /Error \(restore\): process \d+ fd \d+: '.*\/ro' has changed size \(\d+ bytes, dumped with \d+\)/
    );
    expect(isAlive(w.pid)).toBe(false);
  });
});

describe("child subreaper", () => {
  test("PR_SET_CHILD_SUBREAPER comes back (python3 sets it with ctypes)", async () => {
    await dumpRestoreVerify("subreaper.py");
  });
});

describe("stopped processes", () => {
  test("a process stopped with SIGSTOP stays stopped through dump -R and comes back stopped", async () => {
    const w = await startWorkload("spin");
    process.kill(w.pid, "SIGSTOP");
    await waitUntil("SIGSTOP to stop it", () => procState(w.pid) === "T");
    const dir = imagesDir("stopped");
    let r = criuBun(["dump", "-t", String(w.pid), "-D", imagesDir("stopped-r"), "-R"]);
    expect(r.code).toBe(0);
    await holdsFor("-R left it as it was: stopped", () => procState(w.pid) === "T", 100);
    dump(w.pid, dir);
    await waitReaped(w.pid);
    r = criuBun(["restore", "-d", "-D", dir]);
    expect(r.code).toBe(0);
    await waitUntil("the restored process to be stopped", () => procState(w.pid) === "T");
    await holdsFor("the restored process stays stopped", () => procState(w.pid) === "T", 100);
    process.kill(w.pid, "SIGCONT");
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
  });
});

describe("deleted executable and mappings", () => {
  test("a program whose executable was deleted (an upgrade: its code is mapped from the deleted file) comes back", async () => {
    const { copyFileSync, mkdtempSync, rmSync: rm } = await import("node:fs");
    const { workloadBin } = await import("./harness");
    const tmp = mkdtempSync(join(require("node:os").tmpdir(), "criu-bun-delexe-"));
    const exe = join(tmp, "files-old");
    copyFileSync(workloadBin("files"), exe);
    require("node:fs").chmodSync(exe, 0o755);
    // run a copy of the files workload, then delete the copy: exe link and code mappings are "(deleted)"
    const w = await startWorkload("files", [], { wrap: ["sh", "-c", `shift; exec ${exe} "$@"`, "sh"] });
    rm(exe);
    expect(readlinkSync(`/proc/${w.pid}/exe`)).toEndWith(" (deleted)");
    const dir = imagesDir("delexe");
    dump(w.pid, dir);
    expect(readdirSync(dir).filter((f) => f.startsWith("ghost-file-")).length).toBeGreaterThan(0);
    const r = await restore(dir, w.pid);
    expect(readlinkSync(`/proc/${w.pid}/exe`)).toEndWith(" (deleted)");
    trigger(w);
    expect((await waitResult(w, 15000)).text).toStartWith("PASS");
    expect(await r.proc.exited).toBe(0);
    rm(tmp, { recursive: true, force: true });
  });
});

describe("pseudo terminals", () => {
  test("a pty pair held in the tree keeps its index, termios, window size and controlling terminal; masters dumped locked stay locked", async () => {
    const { dir } = await dumpRestoreVerify("ptypair.py");
    const info = JSON.parse(Bun.spawnSync(["crit", "decode", "-i", join(dir, "tty-info.img")]).stdout.toString());
    // the pair (slave and master entries), the never-unlocked master, the locked-again pair
    expect(info.entries.length).toBe(5);
    expect(info.entries.filter((e: { locked?: boolean }) => e.locked).length).toBe(2);
  });
});
