// criu-bun's speed against the floor (`npm run bench`, or `bun scripts/bench.ts` after a build).
//
// Workloads: test/workloads/spin with 1 GiB and 4 GiB of memory in two patterns: heap (about 30%
// zero pages, 55% pages of pointers/small integers/short strings, 15% random pages: structured
// pages, the hard case for LZ4) and zero-rep-random (whole pages of three kinds: about 30% zero,
// 55% repetitive text, 15% random), dumped to and restored from tmpfs (/dev/shm), with and without
// --compress; and a small process (sleep). For reference, native `lz4 -1` compressing the same
// memory on both cores (two processes, one per half). The floor is measured in the same run on the
// same process: process_vm_readv of the same bytes + writing them to the same file system (dump),
// process_vm_writev of them into a fresh process (restore); see scripts/bench-floor.c.
// Every restored spin checks the hash of its memory; a failed check fails the bench.
//
// Env: BENCH_SIZES=1024,4096 (MiB; empty: small process only), BENCH_PATTERNS=heap,zero-rep-random
// (any of spin's --pattern values), BENCH_DIR=/dev/shm/criu-bun-bench,
// CRIU_BUN_EXE=path of the executable to measure (default ./criu-bun).
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildWorkloads, workloadBin, REPO_ROOT } from "../test/harness";

const PATTERNS = (process.env.BENCH_PATTERNS ?? "heap,zero-rep-random").split(",").filter(Boolean);
const SIZES = (process.env.BENCH_SIZES ?? "1024,4096").split(",").map(Number).filter((n) => n > 0); // "" or 0: small process only
const BASE = process.env.BENCH_DIR ?? "/dev/shm/criu-bun-bench";
const exe = process.env.CRIU_BUN_EXE ?? join(REPO_ROOT, "criu-bun");
const CB = existsSync(exe) ? [exe] : [process.execPath, join(REPO_ROOT, "src/main.ts")];

function sh(cmd: string[], opts: { allowFail?: boolean } = {}) {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", env: { ...process.env, CRIU_BUN_NO_PROGRESS: "1" } });
  if (r.exitCode !== 0 && !opts.allowFail) throw new Error(`${cmd.join(" ")} failed (${r.exitCode}):\n${r.stderr.toString()}`);
  return { out: r.stdout.toString(), err: r.stderr.toString(), code: r.exitCode };
}
function timed(cmd: string[]) {
  const t0 = performance.now();
  const r = sh(cmd);
  return { ...r, s: (performance.now() - t0) / 1000 };
}
const sleep = (ms: number) => Bun.sleepSync(ms);
/** Gone and reaped (a zombie still holds its PID, which restore needs). */
function waitGone(pid: number) { for (let i = 0; i < 4000 && existsSync(`/proc/${pid}`); i++) sleep(5); }
function waitFile(p: string, ms: number) {
  const end = Date.now() + ms;
  while (!existsSync(p)) { if (Date.now() > end) throw new Error(`timeout waiting for ${p}`); sleep(10); }
  sleep(20);
  return readFileSync(p, "utf8");
}
function dirBytes(d: string) { return readdirSync(d).filter((f) => f.endsWith(".img") || f.endsWith(".lz4") || f.endsWith(".idx")).reduce((s, f) => s + statSync(join(d, f)).size, 0); }
function logNum(log: string, re: RegExp) { const m = re.exec(log); return m ? Number(m[1]) : NaN; }

/** Start spin detached (own session) and wait until it is ready. */
function startSpin(mib: number, pattern: string): { pid: number; wdir: string } {
  const wdir = join(BASE, `wl-${mib}-${Date.now()}`);
  mkdirSync(wdir, { recursive: true });
  // through sh and &: not our child, so init reaps it when dump kills it (we block our event loop)
  sh(["sh", "-c", `setsid ${workloadBin("spin")} ${wdir} ${mib} --pattern=${pattern} </dev/null >/dev/null 2>&1 &`]);
  const pid = Number(waitFile(join(wdir, "ready"), 120_000));
  return { pid, wdir };
}

interface Row { what: string; s: number; memS?: number; bytes: number; floorS?: number; image?: number; ratio?: string; rssKb?: number }
const rows: Row[] = [];

await buildWorkloads();
mkdirSync(BASE, { recursive: true });
const floorBin = join(BASE, "bench-floor");
sh(["gcc", "-O2", "-o", floorBin, join(REPO_ROOT, "scripts/bench-floor.c")]);

for (const pattern of PATTERNS) for (const mib of SIZES) {
  const label = `${mib >= 1024 ? `${mib / 1024} GiB` : `${mib} MiB`} ${pattern}`;
  // floor, measured on the same process memory, to the same file system
  const w0 = startSpin(mib, pattern);
  const floorFile = join(BASE, "floor.bin");
  const [fBytes, fDumpS] = sh([floorBin, "dump", String(w0.pid), floorFile]).out.trim().split(" ").map(Number);
  const lz4Size = Number(sh(["sh", "-c", `lz4 -1 -c ${floorFile} | wc -c`]).out.trim());
  // what native liblz4 does with the same bytes on both cores: two `lz4 -1` (64 KiB independent
  // blocks, as ours) on the two halves at once, tmpfs to /dev/null
  sh(["split", "-n", "2", floorFile, `${floorFile}.part.`]);
  const nat = timed(["sh", "-c", `for p in ${floorFile}.part.*; do lz4 -1 -BI -B4 -q -c $p >/dev/null & done; wait`]);
  sh(["sh", "-c", `rm -f ${floorFile}.part.*`]);
  const [, fRestS] = sh([floorBin, "restore", floorFile]).out.trim().split(" ").map(Number);
  rmSync(floorFile, { force: true });
  process.kill(w0.pid, "SIGKILL");
  waitGone(w0.pid);
  const lz4Ratio = fBytes / lz4Size;

  rows.push({ what: `lz4 -1 native, 2 processes, ${label} (reference)`, s: nat.s, bytes: fBytes });

  for (const compress of [false, true]) {
    const w = startSpin(mib, pattern);
    const img = join(BASE, `img-${mib}-${compress ? "z" : "raw"}`);
    rmSync(img, { recursive: true, force: true });
    mkdirSync(img);
    const d = timed([...CB, "dump", "-t", String(w.pid), "-D", img, "-v4", "-o", "dump.log", ...(compress ? ["--compress"] : [])]);
    const dlog = readFileSync(join(img, "dump.log"), "utf8");
    const image = dirBytes(img);
    const pagesBytes = statSync(join(img, compress ? "pages-1.lz4" : "pages-1.img")).size;
    const rawPages = logNum(dlog, /Pages: \d+ scanned, (\d+) written/) * 4096;
    // both ratios against the same memory: what each leaves of it (ours also drops zero pages)
    const ours = fBytes / pagesBytes;
    void rawPages;
    rows.push({
      what: `dump ${label}${compress ? " --compress" : ""}`, s: d.s, memS: logNum(dlog, /written to pages-1\.\w+ \(.*?\) in ([\d.]+) ms/) / 1000,
      bytes: fBytes, floorS: fDumpS, image, ratio: compress ? `${ours.toFixed(2)} (lz4 -1: ${lz4Ratio.toFixed(2)})` : undefined,
      rssKb: logNum(dlog, /VmHWM\): (\d+) kB/),
    });
    waitGone(w.pid);
    const r = timed([...CB, "restore", "-D", img, "-d", "-v4", "-o", "restore.log"]);
    const rlog = readFileSync(join(img, "restore.log"), "utf8");
    const memS = (logNum(rlog, /written into \d+ from \S+ in ([\d.]+) ms/) + (logNum(rlog, /checksums verified in ([\d.]+) ms/) || 0)) / 1000;
    rows.push({ what: `restore ${label}${compress ? " --compress" : ""}`, s: r.s, memS, bytes: fBytes, floorS: fRestS, image, rssKb: logNum(rlog, /VmHWM\): (\d+) kB/) });
    writeFileSync(join(w.wdir, "go"), "");
    const res = waitFile(join(w.wdir, "result"), 30_000);
    if (!res.startsWith("PASS")) throw new Error(`restored spin ${mib} MiB${compress ? " (--compress)" : ""} failed its check:\n${res}`);
    try { process.kill(w.pid, "SIGKILL"); } catch {}
    waitGone(w.pid);
    rmSync(img, { recursive: true, force: true });
    rmSync(w.wdir, { recursive: true, force: true });
  }
  rmSync(w0.wdir, { recursive: true, force: true });
}

// a small process: whole commands as a user types them (default verbosity, no log file), process
// start included; median of 11. One more round with -v4 -o gives criu-bun's peak RSS.
{
  const ds: number[] = [], rs: number[] = [];
  let rssD = 0, rssR = 0, image = 0;
  for (let i = 0; i < 12; i++) {
    const verbose = i === 11;
    const pid = Number(sh(["sh", "-c", "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!"]).out.trim());
    sleep(30);
    const img = join(BASE, `img-sleep-${i}`);
    rmSync(img, { recursive: true, force: true });
    mkdirSync(img);
    const d = timed([...CB, "dump", "-t", String(pid), "-D", img, ...(verbose ? ["-v4", "-o", "dump.log"] : [])]).s;
    image = dirBytes(img);
    waitGone(pid);
    const r = timed([...CB, "restore", "-D", img, "-d", ...(verbose ? ["-v4", "-o", "restore.log"] : [])]).s;
    if (verbose) {
      rssD = logNum(readFileSync(join(img, "dump.log"), "utf8"), /VmHWM\): (\d+) kB/);
      rssR = logNum(readFileSync(join(img, "restore.log"), "utf8"), /VmHWM\): (\d+) kB/);
    } else { ds.push(d); rs.push(r); }
    try { process.kill(pid, "SIGKILL"); } catch {}
    waitGone(pid);
    rmSync(img, { recursive: true, force: true });
  }
  const med = (a: number[]) => a.sort((x, y) => x - y)[a.length >> 1];
  console.error(`sleep: dump ${ds.map((x) => (x * 1000).toFixed(0)).join(" ")} ms; restore ${rs.map((x) => (x * 1000).toFixed(0)).join(" ")} ms`);
  rows.push({ what: "dump sleep (whole command)", s: med(ds), bytes: 0, image, rssKb: rssD });
  rows.push({ what: "restore sleep (whole command, -d)", s: med(rs), bytes: 0, image, rssKb: rssR });
}

const gb = (b: number, s: number) => (b && s ? (b / s / 1e9).toFixed(2) : "");
const mb = (b?: number) => (b ? `${(b / 2 ** 20).toFixed(0)} MiB` : "");
console.log("| what | wall s | pages phase s | GB/s (wall) | floor s | wall / floor | image | compression ratio (ours vs lz4 -1) | criu-bun peak RSS |");
console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
for (const r of rows) {
  console.log(`| ${r.what} | ${r.s.toFixed(3)} | ${r.memS !== undefined && !Number.isNaN(r.memS) ? r.memS.toFixed(3) : ""} | ${gb(r.bytes, r.s)} | ${r.floorS?.toFixed(3) ?? ""} | ${r.floorS ? (r.s / r.floorS).toFixed(2) + "x" : ""} | ${mb(r.image)} | ${r.ratio ?? ""} | ${r.rssKb ? (r.rssKb / 1024).toFixed(0) + " MiB" : ""} |`);
}
