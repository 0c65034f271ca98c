// criu-bun's speed, side by side with CRIU 4.2 and against the floor (`npm run bench`, or
// `bun scripts/bench.ts` after a build).
//
// Side by side: the reference CRIU 4.2 (../shared/tools/criu-4.2 beside the repository's parent,
// or $CRIU; skipped with a printed line when absent) runs the same workloads in the same run, the
// two tools alternating (round 1 criu-bun first, round 2 CRIU first, ...). Each command runs under
// /usr/bin/time, so wall time, CPU time (user + sys) and peak RSS are measured the same way for
// both. Rows: dump and restore of test/workloads/spin with 1 GiB and 4 GiB of memory (pattern heap:
// about 30% zero pages, 55% pages of pointers/small integers/short strings, 15% random pages),
// pre-dump + dump (CRIU 4.2 cannot pre-dump on a kernel without soft-dirty: the line says so), a
// small process (sleep: dump and restore as a user types them, default verbosity), --version, and a
// container: `runc checkpoint` then `runc restore -d` of a busybox container (criu-bun installed as
// criu; CRIU 4.2 through runc --criu; runc's wall time, as a user sees it; BENCH_RUNC_ROUNDS=5).
// Every restored spin checks the hash of its memory; a failed check fails the bench.
//
// The floor, measured in the same run on the same process memory, to the same file system:
// process_vm_readv + write (the copying floor), vmsplice + splice (the zero-copy floor: the pages
// moved as CRIU moves them, without the parasite) and process_vm_writev into a fresh process
// (restore); see scripts/bench-floor.c. Also native `lz4 -1` on both cores over the same memory and
// criu-bun's --compress rows (criu-bun only: CRIU 4.2 has no page compression).
//
// migrate: downtime of `criu-bun migrate` over loopback (workloads/migcounter.py, python3 in its
// own PID namespace, writing 1% of its pages a second; checks its memory after the migration):
// BENCH_MIGRATE=256,1024,4096 (MiB, the default, 4096 only if MemAvailable holds 3.5 times it: source,
// received images in BENCH_DIR's tmpfs and restored copy at once; 64 with BENCH_QUICK; empty: none),
// BENCH_MIGRATE_ROUNDS (default 1), BENCH_MIGRATE_EAGER=1 (each size also with --no-post-copy on the
// destination: the restore writes every page before the tree runs, the way before post-copy).
//
// Env: BENCH_QUICK=1 (64 and 256 MiB, 1 round, 5 small-process rounds, no --compress: for
// iterating), BENCH_SIZES=1024,4096 (MiB; empty: small process only), BENCH_PATTERNS=heap (any of
// spin's --pattern values), BENCH_ROUNDS (rounds per size, default 3 for <= 1 GiB and 1 above),
// BENCH_SMALL_ROUNDS=11, BENCH_COMPRESS=0|1, BENCH_DIR=/dev/shm/criu-bun-bench,
// CRIU_BUN_EXE=path of the executable to measure (default ./criu-bun), CRIU=path of CRIU.
import { closeSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { buildWorkloads, workloadBin, REPO_ROOT } from "../test/harness";
import { syscall, addr } from "../src/sys/syscall";
import { NR } from "../src/sys/nr";

const QUICK = process.env.BENCH_QUICK === "1";
const PATTERNS = (process.env.BENCH_PATTERNS ?? "heap").split(",").filter(Boolean);
const SIZES = (process.env.BENCH_SIZES ?? (QUICK ? "64,256" : "1024,4096"))
  .split(",")
  .map(Number)
  .filter((n) => n > 0);
const SMALL_ROUNDS = Number(process.env.BENCH_SMALL_ROUNDS ?? (QUICK ? 5 : 11));
const COMPRESS = (process.env.BENCH_COMPRESS ?? (QUICK ? "0" : "1")) === "1";
const BASE = process.env.BENCH_DIR ?? "/dev/shm/criu-bun-bench";
const memAvailMib = Number(/MemAvailable:\s+(\d+)/.exec(readFileSync("/proc/meminfo", "utf8"))?.[1] ?? 0) / 1024;
const MIGRATE = (process.env.BENCH_MIGRATE ?? (QUICK ? "64" : "256,1024,4096"))
  .split(",")
  .map(Number)
  .filter((n) => n > 0)
  .filter((n) => {
    if (n * 3.5 <= memAvailMib) return true;
    console.log(
      `migrate ${n} MiB skipped: it needs about ${Math.round(n * 3.5)} MiB available (source, images, restored copy), the machine has ${Math.round(memAvailMib)}`
    );
    return false;
  });
const MIGRATE_EAGER = process.env.BENCH_MIGRATE_EAGER === "1";
/** BENCH_ONLY=migrate: the migrate rows alone */
const ONLY_MIGRATE = process.env.BENCH_ONLY === "migrate";
/** BENCH_MIGRATE_LOGS=DIR: each migration's logs (source and destination, -v4) kept there */
const MIGRATE_LOGS = process.env.BENCH_MIGRATE_LOGS;
const exe = process.env.CRIU_BUN_EXE ?? join(REPO_ROOT, "criu-bun");
const CB = existsSync(exe) ? [exe] : [process.execPath, join(REPO_ROOT, "src/main.ts")];
// ../shared/tools beside the repository (a worktree under ../wt/NAME: two levels up)
const criuPath =
  process.env.CRIU ??
  ["..", "../.."].map((up) => resolve(REPO_ROOT, up, "shared/tools/criu-4.2")).find(existsSync) ??
  resolve(REPO_ROOT, "../shared/tools/criu-4.2");
const CRIU = existsSync(criuPath) ? [criuPath] : null;
if (!CRIU) console.log(`CRIU 4.2 not found at ${criuPath}: side-by-side rows skipped (set CRIU=path)`);
const TIME = "/usr/bin/time";
if (!existsSync(TIME)) throw new Error("bench needs GNU time at /usr/bin/time (Debian package `time`)");

function sh(cmd: string[], opts: { allowFail?: boolean } = {}) {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", env: { ...process.env, CRIU_BUN_NO_PROGRESS: "1" } });
  if (r.exitCode !== 0 && !opts.allowFail)
    throw new Error(`${cmd.join(" ")} failed (${r.exitCode}):\n${r.stderr.toString()}`);
  return { out: r.stdout.toString(), err: r.stderr.toString(), code: r.exitCode };
}
interface M {
  s: number;
  cpu: number;
  rssKb: number;
  /** major page faults: pages the command waited for the disk to read (its executable's, dropped
   *  from the page cache since the last run; this guest's DAMON pageout drops cold file pages) */
  majflt?: number;
}
const timeOut = join(BASE, "time.out");
/** Run under GNU time: wall (ours, around the whole command), user+sys, peak RSS and major page faults
 *  of the command. */
function timed(cmd: string[], allowFail = false): M & { out: string; err: string; code: number } {
  const t0 = performance.now();
  const r = sh([TIME, "-f", "%U %S %M %F", "-o", timeOut, ...cmd], { allowFail });
  const s = (performance.now() - t0) / 1000;
  const [u, sy, m, f] = readFileSync(timeOut, "utf8").trim().split("\n").pop()!.split(" ").map(Number);
  return { ...r, s, cpu: u + sy, rssKb: m, majflt: f };
}
const sleep = (ms: number) => Bun.sleepSync(ms);
/** Gone and reaped (a zombie still holds its PID, which restore needs). */
function waitGone(pid: number) {
  for (let i = 0; i < 4000 && existsSync(`/proc/${pid}`); i++) sleep(5);
}
function waitFile(p: string, ms: number) {
  const end = Date.now() + ms;
  while (!existsSync(p)) {
    if (Date.now() > end) throw new Error(`timeout waiting for ${p}`);
    sleep(10);
  }
  sleep(20);
  return readFileSync(p, "utf8");
}
function dirBytes(d: string) {
  return readdirSync(d)
    .filter((f) => f.endsWith(".img") || f.endsWith(".lz4") || f.endsWith(".idx"))
    .reduce((s, f) => s + statSync(join(d, f)).size, 0);
}
const med = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];
/** For the rows of whole commands: how many runs read pages from the disk (major page faults), and
 *  the median wall of those against the others, per tool ("" when no run of either did). A small
 *  command's median moves with how many of its runs found their executable's pages gone. */
function diskWaits(s: { runs: Record<Tool, M[]> }): string {
  const part = (t: Tool, name: string) => {
    const r = s.runs[t].filter((m) => Number.isFinite(m.majflt));
    const hit = r.filter((m) => m.majflt! > 0);
    if (!r.length) return "";
    const rest = r.filter((m) => m.majflt === 0);
    const medMs = (x: M[]) => (x.length ? `${ms(med(x.map((m) => m.s)))} ms` : "-");
    return `${name} ${hit.length} of ${r.length}${hit.length ? ` (median ${medMs(hit)}, the others ${medMs(rest)})` : ""}`;
  };
  const parts = [part("criu-bun", "criu-bun"), part("criu", "CRIU")].filter(Boolean);
  if (!parts.some((p) => / [1-9]\d* of /.test(p))) return "";
  return `; runs that waited for pages read from disk (major page faults): ${parts.join(", ")}`;
}
const kill = (pid: number) => {
  try {
    process.kill(pid, "SIGKILL");
  } catch {}
};

const spins = new Set<number>();
/** Start spin detached (own session) and wait until it is ready. */
function startSpin(mib: number, pattern: string): { pid: number; wdir: string } {
  const wdir = join(BASE, `wl-${mib}-${Date.now()}`);
  mkdirSync(wdir, { recursive: true });
  // through sh and &: not our child, so init reaps it when dump kills it (we block our event loop)
  const pid0 = Number(
    sh([
      "sh",
      "-c",
      `setsid ${workloadBin("spin")} ${wdir} ${mib} --pattern=${pattern} </dev/null >/dev/null 2>&1 & echo $!`,
    ]).out.trim()
  );
  spins.add(pid0);
  // filling the memory takes a while on a busy machine
  const pid = Number(waitFile(join(wdir, "ready"), 120_000 + mib * 120));
  return { pid, wdir };
}

type Tool = "criu-bun" | "criu";
const cmdOf = (t: Tool) => (t === "criu-bun" ? CB : CRIU!);
/** Rounds of both tools, alternating which goes first. */
function alternate(rounds: number, fn: (t: Tool, round: number) => void) {
  for (let i = 0; i < rounds; i++) {
    const order: Tool[] = CRIU ? (i % 2 ? ["criu", "criu-bun"] : ["criu-bun", "criu"]) : ["criu-bun"];
    for (const t of order) fn(t, i);
  }
}

/** Side-by-side rows: per tool, the runs of each step. */
interface Side {
  what: string;
  bytes: number;
  runs: Record<Tool, M[]>;
  note?: string;
}
const sides: Side[] = [];
const side = (what: string, bytes: number): Side => {
  const s = { what, bytes, runs: { "criu-bun": [], criu: [] } };
  sides.push(s);
  return s;
};
interface FloorRow {
  what: string;
  s: number;
  memS?: number;
  bytes: number;
  floorS?: number;
  zeroS?: number;
  image?: number;
  ratio?: string;
  rssKb?: number;
}
const floorRows: FloorRow[] = [];
function logNum(log: string, re: RegExp) {
  const m = re.exec(log);
  return m ? Number(m[1]) : NaN;
}

/** One dump + restore of spin by tool t; checks the restored memory. */
/** BENCH_WARM (default 1): before each timed run of either tool at a size (and the floors), map that
 *  much memory and more with MAP_POPULATE in a short-lived process (bench-floor warm). This VM hands
 *  memory the guest freed back to the host (free page reporting), and touching it again faults into
 *  the host: a 4 GiB dump's image writes then ran at a third of their speed, for both tools alike,
 *  and the rows measured the hypervisor. BENCH_WARM=0 measures that cold case. */
const WARM = process.env.BENCH_WARM !== "0";
function warm(mib: number) {
  if (WARM) sh([floorBin, "warm", String(mib + 256)]);
}
function dumpRestore(t: Tool, mib: number, pattern: string, dumpS: Side, restS: Side, extra: string[] = []) {
  const w = startSpin(mib, pattern);
  const img = join(BASE, `img-${t}-${mib}`);
  rmSync(img, { recursive: true, force: true });
  mkdirSync(img);
  const logArgs = ["-v4", "-o", "dump.log"];
  warm(mib);
  const d = timed([...cmdOf(t), "dump", "-t", String(w.pid), "-D", img, ...logArgs, ...extra]);
  dumpS.runs[t].push(d);
  const image = dirBytes(img);
  waitGone(w.pid);
  warm(mib);
  const r = timed([...cmdOf(t), "restore", "-D", img, "-d", "-v4", "-o", "restore.log"]);
  restS.runs[t].push(r);
  writeFileSync(join(w.wdir, "go"), "");
  const res = waitFile(join(w.wdir, "result"), 60_000);
  if (!res.startsWith("PASS")) throw new Error(`${t}: restored spin ${mib} MiB failed its check:\n${res}`);
  kill(w.pid);
  waitGone(w.pid);
  const logs = {
    dump: readFileSync(join(img, "dump.log"), "utf8"),
    restore: readFileSync(join(img, "restore.log"), "utf8"),
  };
  rmSync(img, { recursive: true, force: true });
  rmSync(w.wdir, { recursive: true, force: true });
  return { d, r, image, logs };
}

const busyboxBin = ["/bin/busybox", "/usr/bin/busybox"].find((p) => existsSync(p));
const RUNC_ROUNDS = Number(process.env.BENCH_RUNC_ROUNDS ?? (QUICK ? 3 : 5));
/** A pipe whose ends are close-on-exec (a child gets one only as its stdio) */
function pipe2(): [number, number] {
  const a = new Int32Array(2);
  if (syscall(NR.pipe2, addr(a), 0o2000000) !== 0) throw new Error("pipe2 failed");
  return [a[0], a[1]];
}
/** A runc command with its stdio on fresh pipes (a detached container keeps them as its own):
 *  timed as timed() does. The ends kept here are closed once the container is gone. */
async function timedRunc(cmd: string[], cwd: string, held: number[]): Promise<M & { code: number }> {
  const i = pipe2(),
    o = pipe2(),
    e = pipe2();
  const t0 = performance.now();
  const p = Bun.spawn([TIME, "-f", "%U %S %M %F", "-o", timeOut, "runc", ...cmd], {
    cwd,
    stdin: i[0],
    stdout: o[1],
    stderr: e[1],
  });
  for (const fd of [i[0], o[1], e[1]]) closeSync(fd);
  held.push(i[1], o[0], e[0]);
  const code = await p.exited;
  const s = (performance.now() - t0) / 1000;
  const [u, sy, m, f] = readFileSync(timeOut, "utf8").trim().split("\n").pop()!.split(" ").map(Number);
  return { s, cpu: u + sy, rssKb: m, majflt: f, code };
}
async function runcRows() {
  const ck = side("runc checkpoint (busybox container)", 0),
    rs = side("runc restore -d (busybox container)", 0);
  const both = side("runc checkpoint + restore (sum)", 0);
  const bin = join(BASE, "runc-bin");
  mkdirSync(bin, { recursive: true });
  sh([...CB, "install", "--as-criu", "--prefix", bin]);
  const criuOf = (t: Tool) => (t === "criu-bun" ? join(bin, "criu") : CRIU![0]);
  // the bundle: busybox, a shell counting into /tmp/count (it writes nothing to its stdio)
  const b = join(BASE, "runc-bundle");
  for (const d of ["bin", "tmp", "proc", "dev", "sys"]) mkdirSync(join(b, "rootfs", d), { recursive: true });
  sh(["cp", busyboxBin!, join(b, "rootfs/bin/busybox")]);
  for (const a of ["sh", "sleep"]) sh(["ln", "-sf", "busybox", join(b, "rootfs/bin", a)]);
  sh(["sh", "-c", `cd ${b} && runc spec`]);
  const c = JSON.parse(readFileSync(join(b, "config.json"), "utf8"));
  c.process.terminal = false;
  c.process.args = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done"];
  c.root.readonly = false;
  writeFileSync(join(b, "config.json"), JSON.stringify(c));
  const count = () => {
    try {
      return Number(readFileSync(join(b, "rootfs/tmp/count"), "utf8").trim()) || 0;
    } catch {
      return 0;
    }
  };
  const until = (what: string, cond: () => boolean, ms = 15000) => {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error(`runc rows: timeout waiting for ${what}`);
      sleep(10);
    }
  };
  for (let i = 0; i < RUNC_ROUNDS; i++) {
    const order: Tool[] = CRIU ? (i % 2 ? ["criu", "criu-bun"] : ["criu-bun", "criu"]) : ["criu-bun"];
    for (const t of order) {
      const id = `criu-bun-bench-${process.pid}-${t}-${i}`;
      const img = join(BASE, `runc-img-${t}-${i}`);
      const held: number[] = [];
      try {
        rmSync(join(b, "rootfs/tmp/count"), { force: true });
        const run = await timedRunc(["run", "-d", id], b, held);
        if (run.code !== 0) throw new Error(`runc run -d ${id}: exit ${run.code}`);
        until("the container to count", () => count() >= 5);
        const d = timed(["runc", "--criu", criuOf(t), "checkpoint", "--image-path", img, "--work-path", img, id], true);
        const errs = (f: string) => {
          try {
            return readFileSync(join(img, f), "utf8")
              .split("\n")
              .filter((l) => l.includes("Error"))
              .join("\n");
          } catch {
            return "";
          }
        };
        if (d.code !== 0) throw new Error(`${t}: runc checkpoint failed (${d.code}): ${d.err}${errs("dump.log")}`);
        const n = count();
        const r = await timedRunc(
          ["--criu", criuOf(t), "restore", "-d", "--image-path", img, "--work-path", img, id],
          b,
          held
        );
        if (r.code !== 0) throw new Error(`${t}: runc restore failed (${r.code}): ${errs("restore.log")}`);
        // carried on: from n on, never from the start again
        until("the restored container to count on", () => {
          const x = count();
          if (x > 0 && x < n) throw new Error(`${t}: restored container counts ${x} < ${n}`);
          return x >= n + 3;
        });
        ck.runs[t].push(d);
        rs.runs[t].push(r);
        both.runs[t].push({ s: d.s + r.s, cpu: d.cpu + r.cpu, rssKb: Math.max(d.rssKb, r.rssKb) });
      } finally {
        Bun.spawnSync(["runc", "delete", "-f", id], { stdout: "ignore", stderr: "ignore" });
        for (const fd of held) {
          try {
            closeSync(fd);
          } catch {}
        }
        rmSync(img, { recursive: true, force: true });
      }
    }
  }
  rmSync(b, { recursive: true, force: true });
  rmSync(bin, { recursive: true, force: true });
}

interface MigrateRow {
  what: string;
  downtimeMs: number;
  restoreMs: number;
  allInMs: string;
  rounds: string;
  frozen: string;
  finalPages: number;
  s: number;
  rssKb: number;
}
const migrateRows: MigrateRow[] = [];
/** One live migration over loopback of migcounter.py (MiB, 1% of its pages written a second). */
function migrateRow(mib: number, eager = false) {
  const wdir = join(BASE, `mig-wl-${mib}-${Date.now()}`),
    src = join(BASE, "mig-src"),
    dst = join(BASE, "mig-dst");
  for (const d of [wdir, src, dst]) {
    rmSync(d, { recursive: true, force: true });
    mkdirSync(d, { recursive: true, mode: 0o700 });
  }
  const rate = Math.max(1, Math.round((mib * 256) / 100));
  const wl = join(REPO_ROOT, "test/workloads/migcounter.py");
  const outer = Number(
    sh([
      "sh",
      "-c",
      `setsid unshare --pid --fork sh -c 'exec python3 ${wl} ${wdir} ${mib} --rate ${rate}' </dev/null >/dev/null 2>&1 & echo $!`,
    ]).out.trim()
  );
  spins.add(outer);
  waitFile(join(wdir, "ready"), 120_000 + mib * 120);
  const pid = Number(readFileSync(`/proc/${outer}/task/${outer}/children`, "utf8").trim());
  spins.add(pid);
  sleep(1000); // a second of writing before the migration starts
  const port = 7700 + (process.pid % 200);
  const l = Bun.spawn(
    [
      ...CB,
      "migrate",
      "--listen",
      String(port),
      "--address",
      "127.0.0.1",
      "-D",
      dst,
      "-v4",
      "-o",
      "migrate.log",
      ...(eager ? ["--no-post-copy"] : []),
    ],
    { stdout: Bun.file(join(dst, "stdout")), stderr: "ignore" }
  );
  const until = Date.now() + 30_000;
  while (!(existsSync(join(dst, "stdout")) && readFileSync(join(dst, "stdout"), "utf8").includes("listening"))) {
    if (Date.now() > until) throw new Error("migrate --listen did not start");
    sleep(10);
  }
  const r = timed(
    [...CB, "migrate", "-t", String(pid), "--to", `127.0.0.1:${port}`, "-D", src, "-v4", "-o", "migrate.log"],
    true
  );
  const dout = readFileSync(join(dst, "stdout"), "utf8");
  function saveLogs() {
    if (!MIGRATE_LOGS) return;
    mkdirSync(MIGRATE_LOGS, { recursive: true });
    const tag = `${mib}-${eager ? "eager" : "post"}-${Date.now()}`;
    for (const [side, d] of [
      ["src", src],
      ["dst", dst],
    ])
      for (const f of readdirSync(d).filter((f) => f.endsWith(".log")))
        writeFileSync(join(MIGRATE_LOGS, `${tag}-${side}-${f}`), readFileSync(join(d, f)));
    writeFileSync(join(MIGRATE_LOGS, `${tag}-src-stdout`), r.out);
    writeFileSync(join(MIGRATE_LOGS, `${tag}-dst-stdout`), readFileSync(join(dst, "stdout"), "utf8"));
  }
  const npid = Number(/restored pid (\d+)/.exec(dout)?.[1] ?? 0);
  if (npid) spins.add(npid);
  if (r.code !== 0) {
    l.kill();
    saveLogs();
    throw new Error(
      `migrate ${mib} MiB failed:\n${r.out}${readFileSync(join(src, "migrate.log"), "utf8")
        .split("\n")
        .filter((x) => /Error/.test(x))
        .join("\n")}`
    );
  }
  // post-copy: the destination says when the last page is in (ms after its restore began)
  let allIn = "";
  if (!eager) {
    const until2 = Date.now() + 600_000;
    while (
      !(allIn = /all memory of pid \d+ in ([\d.]+) ms/.exec(readFileSync(join(dst, "stdout"), "utf8"))?.[1] ?? "") &&
      l.exitCode === null &&
      Date.now() < until2
    )
      sleep(50);
  }
  writeFileSync(join(wdir, "go"), "");
  const res = waitFile(join(wdir, "result"), 120_000);
  if (!res.startsWith("PASS")) throw new Error(`migrated migcounter ${mib} MiB failed its check:\n${res}`);
  const rounds = [...r.out.matchAll(/round \d+: (\d+) pages, (\d+) bytes/g)].map(
    (m) => `${(Number(m[2]) / 2 ** 20).toFixed(1)}`
  );
  const frozen = [...r.out.matchAll(/the tree frozen (\d+) ms/g)].map((m) => m[1]).join(" / ");
  const fin = /final: (\d+) pages .* (\d+) bytes in all/.exec(r.out);
  rounds.push(`final ${(Number(fin?.[2] ?? 0) / 2 ** 20).toFixed(1)}`);
  migrateRows.push({
    what: `migrate ${mib >= 1024 ? `${mib / 1024} GiB` : `${mib} MiB`}, 1% of pages written/s (${rate} pages/s)${eager ? ", --no-post-copy" : ""}`,
    downtimeMs: Number(/downtime ([\d.]+) ms/.exec(r.out)?.[1]),
    restoreMs: Number(/restore took ([\d.]+) ms/.exec(r.out)?.[1]),
    allInMs: eager ? "(before it ran)" : allIn ? Number(allIn).toFixed(0) : "?",
    rounds: rounds.join(" / "),
    frozen,
    finalPages: Number(fin?.[1] ?? NaN),
    s: r.s,
    rssKb: r.rssKb,
  });
  kill(npid);
  kill(pid);
  kill(outer);
  waitGone(pid);
  saveLogs();
  for (const d of [wdir, src, dst]) rmSync(d, { recursive: true, force: true });
}

await buildWorkloads();
mkdirSync(BASE, { recursive: true });
const floorBin = join(BASE, "bench-floor");
sh(["gcc", "-O2", "-o", floorBin, join(REPO_ROOT, "scripts/bench-floor.c")]);

let failure: unknown;
try {
  // --version: the smallest command, 21 rounds alternating
  if (!ONLY_MIGRATE) {
    const v = side("--version", 0);
    alternate(21, (t) => v.runs[t].push(timed([...cmdOf(t), "--version"])));
  }

  // the small process: whole commands as a user types them (default verbosity, no log file)
  if (!ONLY_MIGRATE) {
    const sd = side("dump sleep (whole command)", 0),
      sr = side("restore sleep (whole command, -d)", 0);
    alternate(SMALL_ROUNDS, (t, i) => {
      const pid = Number(sh(["sh", "-c", "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!"]).out.trim());
      sleep(30);
      const img = join(BASE, `img-sleep-${t}-${i}`);
      rmSync(img, { recursive: true, force: true });
      mkdirSync(img);
      sd.runs[t].push(timed([...cmdOf(t), "dump", "-t", String(pid), "-D", img]));
      waitGone(pid);
      sr.runs[t].push(timed([...cmdOf(t), "restore", "-D", img, "-d"]));
      kill(pid);
      waitGone(pid);
      rmSync(img, { recursive: true, force: true });
    });
  }

  // a container: runc (1.1) checkpoint, then runc restore -d, of a busybox container whose shell
  // counts into a file of its rootfs, with criu-bun (installed as `criu`) and with CRIU 4.2 through
  // runc --criu. Wall time of each runc command (runc's own work included, as a user sees it).
  // Every restored container must carry on counting from where it was.
  if (ONLY_MIGRATE) {
  } else if (!Bun.which("runc") || !busyboxBin)
    console.log("runc or busybox not found: the container rows are skipped");
  else await runcRows();

  for (const pattern of ONLY_MIGRATE ? [] : PATTERNS)
    for (const mib of SIZES) {
      const label = `${mib >= 1024 ? `${mib / 1024} GiB` : `${mib} MiB`} ${pattern}`;
      const bytes = mib * 2 ** 20;
      // floors, measured on the same process memory, to the same file system
      const w0 = startSpin(mib, pattern);
      const floorFile = join(BASE, "floor.bin");
      warm(mib);
      const [fBytes, fDumpS] = sh([floorBin, "dump", String(w0.pid), floorFile])
        .out.trim()
        .split(" ")
        .map(Number);
      rmSync(floorFile, { force: true });
      warm(mib);
      const [, zDumpS] = sh([floorBin, "splice", String(w0.pid), floorFile])
        .out.trim()
        .split(" ")
        .map(Number);
      warm(mib);
      const [, fRestS] = sh([floorBin, "restore", floorFile]).out.trim().split(" ").map(Number);
      let lz4Ratio = NaN;
      if (COMPRESS) {
        lz4Ratio = fBytes / Number(sh(["sh", "-c", `lz4 -1 -c ${floorFile} | wc -c`]).out.trim());
        // what native liblz4 does with the same bytes on both cores: two `lz4 -1` (64 KiB independent
        // blocks, as ours) on the two halves at once, tmpfs to /dev/null
        sh(["split", "-n", "2", floorFile, `${floorFile}.part.`]);
        const nat = timed([
          "sh",
          "-c",
          `for p in ${floorFile}.part.*; do lz4 -1 -BI -B4 -q -c $p >/dev/null & done; wait`,
        ]);
        sh(["sh", "-c", `rm -f ${floorFile}.part.*`]);
        floorRows.push({ what: `lz4 -1 native, 2 processes, ${label} (reference)`, s: nat.s, bytes: fBytes });
      }
      rmSync(floorFile, { force: true });
      kill(w0.pid);
      waitGone(w0.pid);
      rmSync(w0.wdir, { recursive: true, force: true });

      const rounds = Number(process.env.BENCH_ROUNDS ?? (QUICK || mib <= 1024 ? (QUICK ? 1 : 3) : 1));
      const sd = side(`dump ${label}`, bytes),
        sr = side(`restore ${label}`, bytes);
      let last: ReturnType<typeof dumpRestore> | undefined;
      alternate(rounds, (t) => {
        const x = dumpRestore(t, mib, pattern, sd, sr);
        if (t === "criu-bun") last = x;
      });
      if (last) {
        floorRows.push({
          what: `dump ${label}`,
          s: med(sd.runs["criu-bun"].map((m) => m.s)),
          memS: logNum(last.logs.dump, /written to pages-1\.\w+ \(.*?\) in ([\d.]+) ms/) / 1000,
          bytes: fBytes,
          floorS: fDumpS,
          zeroS: zDumpS,
          image: last.image,
          rssKb: last.d.rssKb,
        });
        const memS =
          (logNum(last.logs.restore, /written into \d+ from \S+ in ([\d.]+) ms/) +
            (logNum(last.logs.restore, /checksums verified in ([\d.]+) ms/) || 0)) /
          1000;
        floorRows.push({
          what: `restore ${label}`,
          s: med(sr.runs["criu-bun"].map((m) => m.s)),
          memS,
          bytes: fBytes,
          floorS: fRestS,
          image: last.image,
          rssKb: last.r.rssKb,
        });
      }

      // pre-dump + dump: criu-bun; CRIU tries once and the row says why it cannot
      if (mib <= 1024) {
        const pd = side(`pre-dump + dump ${label} (sum)`, bytes);
        const w = startSpin(mib, pattern);
        const base = join(BASE, `pre-${mib}`);
        rmSync(base, { recursive: true, force: true });
        for (const d of ["pre", "final"]) mkdirSync(join(base, d), { recursive: true });
        const a = timed([...CB, "pre-dump", "-t", String(w.pid), "-D", join(base, "pre"), "--track-mem"]);
        const b = timed([
          ...CB,
          "dump",
          "-t",
          String(w.pid),
          "-D",
          join(base, "final"),
          "--prev-images-dir",
          "../pre",
          "--track-mem",
        ]);
        pd.runs["criu-bun"].push({ s: a.s + b.s, cpu: a.cpu + b.cpu, rssKb: Math.max(a.rssKb, b.rssKb) });
        waitGone(w.pid);
        rmSync(base, { recursive: true, force: true });
        rmSync(w.wdir, { recursive: true, force: true });
        if (CRIU) {
          const w2 = startSpin(16, pattern);
          const cdir = join(BASE, "criu-pre");
          rmSync(cdir, { recursive: true, force: true });
          mkdirSync(cdir);
          const c = timed([...CRIU, "pre-dump", "-t", String(w2.pid), "-D", cdir, "-v4", "-o", "pre.log"], true);
          if (c.code !== 0) {
            const plog = readFileSync(join(cdir, "pre.log"), "utf8");
            const errs = plog
              .split("\n")
              .filter((l) => /Error \(/.test(l))
              .map((l) => l.replace(/^\([\d.]+\)\s*Error \(([^)]*)\):\s*/, "$1: "));
            const off = /Dirty tracking support is OFF/.test(plog) ? "dirty tracking is off (no soft-dirty); " : "";
            pd.note = `CRIU 4.2 cannot pre-dump on this kernel: ${off}exit ${c.code} at ${errs.pop() ?? "?"}`;
          } else pd.note = "CRIU's pre-dump succeeded here; not timed";
          kill(w2.pid);
          waitGone(w2.pid);
          rmSync(cdir, { recursive: true, force: true });
          rmSync(w2.wdir, { recursive: true, force: true });
        }
      }

      if (COMPRESS) {
        const cd = side(`dump ${label} --compress`, bytes),
          cr = side(`restore ${label} --compress`, bytes);
        const x = dumpRestore("criu-bun", mib, pattern, cd, cr, ["--compress"]);
        floorRows.push({
          what: `dump ${label} --compress`,
          s: x.d.s,
          memS: logNum(x.logs.dump, /written to pages-1\.\w+ \(.*?\) in ([\d.]+) ms/) / 1000,
          bytes: fBytes,
          floorS: fDumpS,
          zeroS: zDumpS,
          image: x.image,
          ratio: `${(fBytes / x.image).toFixed(2)} (lz4 -1: ${lz4Ratio.toFixed(2)})`,
          rssKb: x.d.rssKb,
        });
        floorRows.push({
          what: `restore ${label} --compress`,
          s: x.r.s,
          bytes: fBytes,
          floorS: fRestS,
          image: x.image,
          rssKb: x.r.rssKb,
        });
      }
    }

  // migrate: downtime while the workload writes 1% of its pages a second
  for (const mib of MIGRATE) {
    for (let i = 0; i < Number(process.env.BENCH_MIGRATE_ROUNDS ?? 1); i++) {
      migrateRow(mib);
      if (MIGRATE_EAGER) migrateRow(mib, true);
    }
  }
} catch (e) {
  failure = e;
} finally {
  // only our spins (their command line names our directory): a PID may have been reused
  for (const p of spins) {
    try {
      if (readFileSync(`/proc/${p}/cmdline`, "latin1").includes(BASE)) process.kill(p, "SIGKILL");
    } catch {}
  }
}

const gb = (b: number, s: number) => (b && s ? (b / s / 1e9).toFixed(2) : "");
const mib = (kb: number) => `${(kb / 1024).toFixed(0)} MiB`;
const f3 = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : "");
const ms = (x: number) => (x * 1000).toFixed(0);
console.log(
  `\nSide by side (${CRIU ? "CRIU 4.2 at " + CRIU[0] : "CRIU absent"}), medians; ratio = criu-bun / CRIU; CPU = user + sys; peak RSS from /usr/bin/time`
);
console.log(
  "| what | criu-bun wall s | CRIU wall s | wall ratio | criu-bun CPU s | CRIU CPU s | CPU ratio | criu-bun peak RSS | CRIU peak RSS | criu-bun GB/s | CRIU GB/s | runs |"
);
console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
for (const s of sides) {
  const a = s.runs["criu-bun"],
    c = s.runs.criu;
  const m = (r: M[], k: "s" | "cpu" | "rssKb") => (r.length ? med(r.map((x) => x[k])) : NaN);
  const [aw, cw, ac, cc] = [m(a, "s"), m(c, "s"), m(a, "cpu"), m(c, "cpu")];
  const ratio = (x: number, y: number) =>
    Number.isFinite(x) && Number.isFinite(y) && y > 0 ? `${(x / y).toFixed(2)}x` : "";
  console.log(
    `| ${s.what} | ${f3(aw)} | ${c.length ? f3(cw) : (s.note ?? "")} | ${ratio(aw, cw)} | ${f3(ac)} | ${c.length ? f3(cc) : ""} | ${ratio(ac, cc)} | ${a.length ? mib(m(a, "rssKb")) : ""} | ${c.length ? mib(m(c, "rssKb")) : ""} | ${gb(s.bytes, aw)} | ${c.length ? gb(s.bytes, cw) : ""} | ${a.length}+${c.length} |`
  );
}
if (CRIU)
  console.log(
    `CRIU's CPU counts the criu process only: its parasite (dump: vmsplice of the pages) and restorer (restore: reading the pages in) run in the target, whose CPU time is not criu's; criu-bun does that work in its own process. Wall ratios are only as good as the machine is quiet.${WARM ? " Memory warmed (MAP_POPULATE) before each timed run of either tool at a size and before the floors (BENCH_WARM=0: not)." : " Memory not warmed (BENCH_WARM=0)."}`
  );
for (const s of sides.filter((s) => s.bytes === 0 && s.runs["criu-bun"].length > 1))
  console.log(
    `${s.what}, every run in ms: criu-bun ${s.runs["criu-bun"].map((m) => ms(m.s)).join(" ")}; CRIU ${s.runs.criu.map((m) => ms(m.s)).join(" ")}${diskWaits(s)}`
  );
// the large rows' runs too, wall/CPU in ms in the order run (a median of three on a noisy VM can
// sit on either side of a target: the spread says how far to trust it)
for (const s of sides.filter((s) => s.bytes > 0 && s.runs["criu-bun"].length > 1)) {
  const runs = (r: M[]) => r.map((m) => `${ms(m.s)}/${ms(m.cpu)}`).join(" ");
  console.log(
    `${s.what}, every run, wall/CPU in ms: criu-bun ${runs(s.runs["criu-bun"])}${s.runs.criu.length ? `; CRIU ${runs(s.runs.criu)}` : ""}`
  );
}

console.log(
  "\nAgainst the floor (criu-bun; copying floor: process_vm_readv + write; zero-copy floor: vmsplice + splice; restore floor: process_vm_writev)"
);
console.log(
  "| what | wall s | pages phase s | GB/s (wall) | copying floor s | zero-copy floor s | wall / copying floor | image | compression ratio (ours vs lz4 -1) | criu-bun peak RSS |"
);
console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
for (const r of floorRows) {
  console.log(
    `| ${r.what} | ${r.s.toFixed(3)} | ${r.memS !== undefined && Number.isFinite(r.memS) ? r.memS.toFixed(3) : ""} | ${gb(r.bytes, r.s)} | ${r.floorS?.toFixed(3) ?? ""} | ${r.zeroS?.toFixed(3) ?? ""} | ${r.floorS ? (r.s / r.floorS).toFixed(2) + "x" : ""} | ${r.image ? `${(r.image / 2 ** 20).toFixed(0)} MiB` : ""} | ${r.ratio ?? ""} | ${r.rssKb ? mib(r.rssKb) : ""} |`
  );
}
if (migrateRows.length) {
  console.log(
    "\nmigrate over loopback (criu-bun only: CRIU has no such command); downtime = frozen on the source until running on the destination"
  );
  console.log(
    "| what | downtime ms | of it, restore ms | all memory in, ms after the restore began | MiB sent per round | frozen ms per pre-copy round | pages in the final round | source command wall s | source peak RSS |"
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const r of migrateRows)
    console.log(
      `| ${r.what} | ${r.downtimeMs.toFixed(0)} | ${r.restoreMs.toFixed(0)} | ${r.allInMs} | ${r.rounds} | ${r.frozen} | ${r.finalPages} | ${r.s.toFixed(2)} | ${mib(r.rssKb)} |`
    );
}
const load = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
console.log(`\nload average at the end: ${load} (${navigator.hardwareConcurrency} CPUs)`);
rmSync(BASE, { recursive: true, force: true });
if (failure) {
  console.error(
    `bench stopped early (the tables above hold what was measured): ${(failure as Error)?.stack ?? failure}`
  );
  process.exit(1);
}
