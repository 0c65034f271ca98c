// Test harness: builds the C workloads in test/workloads/ and drives them through their
// protocol (see test/workloads/wl.h): `bin/<name> DIR [args]` writes DIR/ready ("<pid>\n")
// once set up, waits for DIR/go (plus the signal named in DIR/wake, if any), verifies its own
// state and writes DIR/result ("PASS" or "FAIL: reason", then detail lines).
// Engine tests put `criu-bun dump` + kill + `criu-bun restore` between ready and trigger.

import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { constants, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";

export const REPO_ROOT = resolve(import.meta.dir, "..");
export const WORKLOADS_DIR = join(REPO_ROOT, "test", "workloads");
export const BIN_DIR = join(WORKLOADS_DIR, "bin");

export interface Workload {
  name: string;
  args: string[];
  /** pid the workload wrote into DIR/ready (restores keep it). */
  pid: number;
  /** the workload's private directory (DIR) */
  dir: string;
  /** signal the workload needs besides DIR/go to wake up (from DIR/wake), if any */
  wakeSignal?: number;
  /** the Bun child handle; null after a restore made someone else its parent */
  proc: Subprocess | null;
  /** DIR/stderr when started with opts.stderr === "file", else null (/dev/null) */
  stderrPath: string | null;
}

export interface WorkloadResult {
  pass: boolean;
  /** full DIR/result text */
  text: string;
  /** first line ("PASS" or "FAIL: ...") */
  summary: string;
}

export interface StartOptions {
  /** time to wait for DIR/ready (default 10 s) */
  timeoutMs?: number;
  /**
   * "null" (default): fds 0, 1 and 2 are all /dev/null, the simplest fd table to dump;
   * "file": stderr goes to DIR/stderr (a regular file the dump must then handle too).
   */
  stderr?: "file" | "null";
  /** run the workload through this command (it must exec it: same pid), e.g. setpriv; DIR is made world-writable */
  wrap?: string[];
  /** wait until the main thread sleeps in a syscall after ready (default: true for "block") */
  waitBlocked?: boolean;
  /** an fd of this process for the workload's stdout (default /dev/null) */
  stdout?: number;
}

const started: Workload[] = [];
const dirs: string[] = [];

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function mtime(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return -1;
  }
}

/** Names of all workloads (test/workloads/*.c). */
export function workloadNames(): string[] {
  return readdirSync(WORKLOADS_DIR)
    .filter((f) => f.endsWith(".c"))
    .map((f) => f.slice(0, -2))
    .sort();
}

export function workloadBin(name: string): string {
  return join(BIN_DIR, name);
}

let building: Promise<void> | null = null;

/**
 * Compile every test/workloads/*.c into test/workloads/bin/ (gcc -O2 -g -pthread) when the
 * binary is missing or older than its source or the shared header. Each compile goes to a
 * unique temporary name then is renamed into place, so concurrent test processes never see
 * a half-written binary. Memoised per process.
 */
export function buildWorkloads(): Promise<void> {
  building ??= (async () => {
    mkdirSync(BIN_DIR, { recursive: true });
    const header = mtime(join(WORKLOADS_DIR, "wl.h"));
    const jobs = workloadNames().map(async (name) => {
      const src = join(WORKLOADS_DIR, `${name}.c`);
      const out = workloadBin(name);
      if (mtime(out) >= Math.max(mtime(src), header)) return;
      const tmp = `${out}.tmp.${process.pid}.${Math.random().toString(36).slice(2)}`;
      const p = Bun.spawn(["gcc", "-O2", "-g", "-pthread", "-Wall", "-o", tmp, src], {
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
      });
      const [code, out1, err] = await Promise.all([
        p.exited,
        new Response(p.stdout).text(),
        new Response(p.stderr).text(),
      ]);
      if (code !== 0) {
        rmSync(tmp, { force: true });
        throw new Error(`gcc failed for ${src} (exit ${code}):\n${out1}${err}`);
      }
      renameSync(tmp, out);
    });
    const results = await Promise.allSettled(jobs);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed.length) throw new Error(failed.map((f) => String(f.reason?.message ?? f.reason)).join("\n"));
  })();
  building.catch(() => {
    building = null; // allow a retry after fixing the source
  });
  return building;
}

function readText(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}

/** State letter from /proc/PID/stat ("R", "S", "Z", ...) or null if the process is gone. */
export function procState(pid: number): string | null {
  const stat = readText(`/proc/${pid}/stat`);
  if (stat === null) return null;
  const close = stat.lastIndexOf(")");
  return stat.slice(close + 2, close + 3);
}

/** Alive and not a zombie. */
export function isAlive(pid: number): boolean {
  const s = procState(pid);
  return s !== null && s !== "Z" && s !== "X";
}

/** The workload's stderr (if captured) for error messages. */
export function workloadStderr(w: Workload): string {
  return (w.stderrPath && readText(w.stderrPath)) || "";
}

function describe(w: Pick<Workload, "name" | "args" | "dir" | "stderrPath">, pid?: number): string {
  const parts = [`workload ${w.name} ${w.args.join(" ")} (dir ${w.dir}${pid ? `, pid ${pid}` : ""})`];
  if (pid) parts.push(`state: ${procState(pid) ?? "gone"}`);
  const result = readText(join(w.dir, "result"));
  if (result) parts.push(`result:\n${result.trimEnd()}`);
  const err = w.stderrPath ? readText(w.stderrPath) : null;
  if (err) parts.push(`stderr:\n${err.trimEnd()}`);
  return parts.join("\n");
}

/** Start `bin/<name> DIR args...` in its own session and wait for DIR/ready. */
export async function startWorkload(name: string, args: string[] = [], opts: StartOptions = {}): Promise<Workload> {
  await buildWorkloads();
  // C workloads are binaries; real programs run scripts: NAME.py with python3, NAME.sh with bash, NAME.cjs with node
  const script = /\.(py|sh|cjs)$/.exec(name);
  const bin = script ? join(WORKLOADS_DIR, name) : workloadBin(name);
  if (!existsSync(bin)) throw new Error(`no workload named ${name} (${bin} missing)`);
  const argv = script ? [{ py: "python3", sh: "bash", cjs: "node" }[script[1]]!, bin] : [bin];
  const dir = mkdtempSync(join(tmpdir(), `criu-bun-wl-${name}-`));
  dirs.push(dir);
  const stderrPath = opts.stderr === "file" ? join(dir, "stderr") : null;
  if (opts.wrap) chmodSync(dir, 0o777);
  const proc = Bun.spawn([...(opts.wrap ?? []), ...argv, dir, ...args], {
    cwd: dir,
    detached: true, // setsid(): own session and process group, as dump/restore expect
    stdin: "ignore",
    stdout: opts.stdout ?? "ignore",
    stderr: stderrPath ? Bun.file(stderrPath) : "ignore",
  });
  const w: Workload = { name, args, pid: proc.pid, dir, proc, stderrPath };
  started.push(w);

  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  const readyPath = join(dir, "ready");
  for (;;) {
    const ready = readText(readyPath);
    if (ready !== null) {
      const pid = Number.parseInt(ready, 10);
      if (!Number.isInteger(pid) || pid <= 0) throw new Error(`bad ready file '${ready}'\n${describe(w)}`);
      w.pid = pid;
      break;
    }
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(
        `workload exited (code ${proc.exitCode}, signal ${proc.signalCode}) before ready\n${describe(w)}`
      );
    }
    if (Date.now() > deadline) {
      killWorkload(w);
      throw new Error(`timeout waiting for ${readyPath}\n${describe(w, proc.pid)}`);
    }
    await sleep(5);
  }
  const wake = readText(join(dir, "wake"));
  if (wake !== null) w.wakeSignal = Number.parseInt(wake, 10);
  if (opts.waitBlocked ?? name === "block") await waitBlocked(w);
  return w;
}

/**
 * Wait until the workload's main thread sleeps inside a syscall (state S and
 * /proc/PID/syscall not "running"); returns the syscall number it is blocked in.
 */
export async function waitBlocked(w: Workload, timeoutMs = 30000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = procState(w.pid);
    const sc = readText(`/proc/${w.pid}/syscall`);
    if (state === "S" && sc && !sc.startsWith("running")) {
      const nr = Number.parseInt(sc, 10);
      if (nr >= 0) return nr;
    }
    if (state === null || state === "Z") throw new Error(`workload died before blocking\n${describe(w, w.pid)}`);
    if (Date.now() > deadline) throw new Error(`workload did not block within ${timeoutMs} ms\n${describe(w, w.pid)}`);
    await sleep(5);
  }
}

/** Write DIR/go atomically, then send the wake-up signal if the workload asked for one. */
export function trigger(w: Workload): void {
  const tmp = join(w.dir, "go.tmp");
  writeFileSync(tmp, "go\n");
  renameSync(tmp, join(w.dir, "go"));
  if (w.wakeSignal) {
    if (!isAlive(w.pid)) throw new Error(`cannot wake: workload is not running\n${describe(w, w.pid)}`);
    process.kill(w.pid, w.wakeSignal);
  }
}

/** Poll DIR/result until it appears (or the workload dies without one, or time runs out). */
export async function waitResult(w: Workload, timeoutMs = 10_000): Promise<WorkloadResult> {
  const deadline = Date.now() + timeoutMs;
  const path = join(w.dir, "result");
  let deadSince = 0;
  for (;;) {
    const text = readText(path);
    if (text !== null) {
      const summary = text.split("\n", 1)[0];
      return { pass: summary === "PASS", text, summary };
    }
    if (!isAlive(w.pid)) {
      // A result may be renamed into place just before exit: look once more after a moment.
      if (!deadSince) deadSince = Date.now();
      else if (Date.now() - deadSince > 100) {
        const summary = `FAIL: workload died without writing a result (state ${procState(w.pid) ?? "gone"})`;
        const text = `${summary}\n${describe(w)}\n`;
        return { pass: false, text, summary };
      }
    }
    if (Date.now() > deadline) {
      throw new Error(`timeout (${timeoutMs} ms) waiting for ${path}\n${describe(w, w.pid)}`);
    }
    await sleep(10);
  }
}

/**
 * SIGKILL the workload if it is still running. Only touches a pid whose command line still
 * names this workload's DIR, so a recycled pid is never hit.
 */
export function killWorkload(w: Workload): void {
  const cmdline = readText(`/proc/${w.pid}/cmdline`);
  if (cmdline !== null && cmdline.split("\0").includes(w.dir)) {
    try {
      process.kill(w.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  // the children it forked (refusal helpers, trees): they share its session (it was started with
  // setsid, so the session id is its pid) and its command line, which names DIR
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e) || Number(e) === w.pid) continue;
    const st = readText(`/proc/${e}/stat`);
    if (st === null || Number(st.replace(/^.*\) /s, "").split(" ")[3]) !== w.pid) continue;
    if (!(readText(`/proc/${e}/cmdline`) ?? "").split("\0").includes(w.dir)) continue;
    try {
      process.kill(Number(e), "SIGKILL");
    } catch {}
  }
  if (w.proc && w.proc.pid !== w.pid) {
    try {
      w.proc.kill("SIGKILL");
    } catch {}
  }
}

/** utime + stime of a process, in clock ticks (0 when it is gone). */
export function cpuTicks(pid: number): number {
  const stat = readText(`/proc/${pid}/stat`);
  if (stat === null) return 0;
  const f = stat.replace(/^.*\) /s, "").split(" ");
  return Number(f[11]) + Number(f[12]);
}

/**
 * Poll `cond` until it holds; after timeoutMs fail naming what was awaited. Tests wait for states
 * with this (and the wait* helpers built on the same idea), never with a fixed sleep.
 */
export async function waitUntil(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  await waitFor(cond, what, timeoutMs, 5);
}

/** Poll FN until it gives a value (not null, undefined, false, 0 or ""); after ms fail naming what was awaited. */
export async function waitFor<T>(
  fn: () => T | null | undefined | false,
  what: string,
  ms = 20000,
  everyMs = 20
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timeout (${ms} ms) waiting for ${what}`);
    await sleep(everyMs);
  }
}

/**
 * For a state that must NOT change (a stopped process stays stopped): `cond` is checked every
 * 10 ms for ms milliseconds and the first time it fails, the test fails naming it.
 */
export async function holdsFor(what: string, cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  do {
    if (!cond()) throw new Error(`${what}: no longer true after ${ms - (end - Date.now())} ms`);
    await sleep(10);
  } while (Date.now() < end);
}

/** Wait until the pid is gone or a zombie (e.g. after killWorkload, before a restore). */
export async function waitGone(pid: number, timeoutMs = 5000): Promise<void> {
  await waitFor(() => !isAlive(pid), `pid ${pid} to be gone`, timeoutMs, 5);
}

/** Kill every workload started here and remove their directories (CRIU_BUN_KEEP=1 keeps them). */
export function cleanup(): void {
  for (const w of started.splice(0)) killWorkload(w);
  const dirsNow = dirs.splice(0);
  if (process.env.CRIU_BUN_KEEP) return;
  for (const d of dirsNow) rmSync(d, { recursive: true, force: true });
}

/**
 * The whole protocol in one call: start (the workload's state is complete once it is ready), run
 * `between` (e.g. dump + kill + restore), trigger, wait for the result.
 */
export async function runWorkload(
  name: string,
  args: string[] = [],
  opts: StartOptions & { resultTimeoutMs?: number; between?: (w: Workload) => Promise<void> | void } = {}
): Promise<WorkloadResult & { workload: Workload }> {
  const w = await startWorkload(name, args, opts);
  if (opts.between) await opts.between(w);
  trigger(w);
  const r = await waitResult(w, opts.resultTimeoutMs ?? 10_000);
  return { ...r, workload: w };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Command line for criu-bun: ./criu-bun if built, else `bun src/main.ts`. */
export function criuBunCommand(): string[] {
  const exe = join(REPO_ROOT, "criu-bun");
  // the compiled executable only when it is newer than every source file (npm test builds it
  // first); otherwise the sources themselves, so a stale build is never what gets tested
  if (existsSync(exe) && statSync(exe).mtimeMs >= newestSource()) return [exe];
  return [process.execPath, join(REPO_ROOT, "src", "main.ts")];
}

let newest = 0;
/** mtime of the newest file under src/ and asm/: an executable older than this is stale. */
export function newestSource(): number {
  if (newest) return newest;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  walk(join(REPO_ROOT, "src"));
  walk(join(REPO_ROOT, "asm"));
  return newest;
}

/** Run criu-bun synchronously with ARGS; returns exit code and captured output. */
export function criuBun(
  args: string[],
  opts: { cwd?: string; timeoutMs?: number; env?: Record<string, string> } = {}
): RunResult {
  const r = Bun.spawnSync([...criuBunCommand(), ...args], {
    cwd: opts.cwd ?? REPO_ROOT,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    timeout: opts.timeoutMs ?? 120_000,
    env: opts.env ? { ...process.env, ...opts.env } : undefined,
  });
  return {
    code:
      r.exitCode ?? 128 + ((r.signalCode && constants.signals[r.signalCode as keyof typeof constants.signals]) || 0),
    stdout: r.stdout?.toString() ?? "",
    stderr: r.stderr?.toString() ?? "",
  };
}
