// Dump/restore steps shared by the engine tests: dump a workload, restore it as criu-bun's child
// (criu-bun stays the parent, as criu does without -d, and exits 0 once the tree is gone).
import {
  mkdtempSync,
  rmSync,
  openSync,
  readSync,
  writeSync,
  closeSync,
  statSync,
  existsSync,
  readFileSync,
  readdirSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { expect } from "bun:test";
import type { Subprocess } from "bun";
import {
  criuBun,
  criuBunCommand,
  REPO_ROOT,
  startWorkload,
  trigger,
  waitGone,
  waitResult,
  waitUntil,
  type Workload,
} from "./harness";

/** Flip one bit of the byte at `offset` of a file (default: its middle), as a damaged disk would. */
export function flipBit(path: string, offset = statSync(path).size >> 1) {
  const fd = openSync(path, "r+");
  const b = new Uint8Array(1);
  readSync(fd, b, 0, 1, offset);
  b[0] ^= 0x10;
  writeSync(fd, b, 0, 1, offset);
  closeSync(fd);
}

const dirs: string[] = [];
/** The reference CRIU 4.2, the peer of the interop tests: ../shared/tools/criu-4.2 beside the
 *  repository, or $CRIU_PEER. */
export const PEER = process.env.CRIU_PEER ?? resolve(REPO_ROOT, "..", "shared", "tools", "criu-4.2");
export const havePeer = existsSync(PEER);

/** `criu-4.2 ARGS -D DIR -o LOG -v4`, run in DIR; a failure throws with its stderr and the log's first errors. */
export function peer(args: string[], dir: string, log: string) {
  const r = Bun.spawnSync([PEER, ...args, "-D", dir, "-o", log, "-v4"], { stdout: "pipe", stderr: "pipe", cwd: dir });
  if (r.exitCode !== 0) {
    const text = existsSync(join(dir, log)) ? readFileSync(join(dir, log), "utf8") : "";
    const errors = text
      .split("\n")
      .filter((l) => l.includes("Error") && !l.includes("RLIMIT_NOFILE"))
      .slice(0, 8)
      .join("\n");
    throw new Error(`criu-4.2 ${args[0]} failed (${r.exitCode}):\n${r.stderr.toString()}\n${errors}`);
  }
}

export function imagesDir(tag: string): string {
  const d = mkdtempSync(join(tmpdir(), `criu-bun-img-${tag}-`));
  dirs.push(d);
  return d;
}
export function cleanupImages() {
  if (process.env.CRIU_BUN_KEEP) return;
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

export function dump(pid: number, dir: string, extra: string[] = []) {
  const r = criuBun(["dump", "-t", String(pid), "-D", dir, "-o", "dump.log", "-v4", ...extra]);
  if (r.code !== 0) throw new Error(`dump of ${pid} failed (${r.code}):\n${r.stderr}\n${readLog(dir, "dump.log")}`);
  return r;
}

function readLog(dir: string, name: string): string {
  try {
    return require("node:fs").readFileSync(join(dir, name), "utf8");
  } catch {
    return "";
  }
}

export interface Restored {
  proc: Subprocess;
  pid: number;
  stderr: () => Promise<string>;
}
/** Start `criu-bun restore -D dir` (not detached) and wait until the pid is back. */
export async function restore(
  dir: string,
  pid: number,
  extra: string[] = [],
  timeoutMs = 20000,
  env?: Record<string, string>
): Promise<Restored> {
  await waitReaped(pid);
  // -o truncates the log as criu does, but a second restore from the same directory must not be
  // taken as done because of the first one's "Restore finished" line before that happens
  rmSync(join(dir, "restore.log"), { force: true });
  const before = 0;
  const proc = Bun.spawn([...criuBunCommand(), "restore", "-D", dir, "-o", "restore.log", "-v4", ...extra], {
    cwd: REPO_ROOT,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: env ? { ...process.env, ...env } : undefined,
  });
  // with -d the restore exits 0 right after its last line: a finished restore whose process
  // runs is done, whichever of the two the loop sees first
  const finished = () => {
    const st = statOf(pid);
    return (
      st &&
      st !== "t" &&
      st !== "T" &&
      st !== "Z" &&
      readLog(dir, "restore.log").slice(before).includes("Restore finished")
    );
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null) {
      if (proc.exitCode === 0 && finished()) break;
      throw new Error(
        `restore exited ${proc.exitCode}:\n${await new Response(proc.stderr).text()}\n${readLog(dir, "restore.log")}`
      );
    }
    if (finished()) break;
    if (Date.now() > deadline) throw new Error(`restore did not finish in time:\n${readLog(dir, "restore.log")}`);
    await Bun.sleep(10);
  }
  return { proc, pid, stderr: async () => new Response(proc.stderr).text() };
}

function statOf(pid: number): string | null {
  try {
    return require("node:fs")
      .readFileSync(`/proc/${pid}/stat`, "latin1")
      .replace(/^.*\) /s, "")[0];
  } catch {
    return null;
  }
}

/** Kill a workload we dumped (it is our child: Bun reaps it). */
export async function killAndWait(w: Workload) {
  try {
    process.kill(w.pid, "SIGKILL");
  } catch {}
  await waitGone(w.pid);
}

/** Wait until the pid is gone from /proc (a dead child of this test runner is reaped by Bun's event loop). */
export async function waitReaped(pid: number, timeoutMs = 5000) {
  await waitGone(pid, timeoutMs);
  const deadline = Date.now() + timeoutMs;
  while (require("node:fs").existsSync(`/proc/${pid}`)) {
    if (Date.now() > deadline) throw new Error(`pid ${pid} not reaped after ${timeoutMs} ms`);
    await Bun.sleep(5);
  }
}

/** The process and every process below it (zombies among them), read from /proc: the tree a dump takes. */
export function treeOf(root: number): number[] {
  const parent = new Map<number, number>();
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const st = readFileSync(`/proc/${e}/stat`, "latin1");
      parent.set(Number(e), Number(st.slice(st.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {}
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) for (const [p, pp] of parent) if (pp === out[i]) out.push(p);
  return out;
}

/** The two tools of a round trip: criu-bun, or the reference CRIU 4.2 (PEER). */
export type Tool = "criu-bun" | "criu-4.2";

export interface RestoreCheck {
  /** restore options (CRIU 4.2 is run with -d before them) */
  restoreArgs?: string[];
  /** the dumped tree: each waited for gone before the restore, each killed after CRIU 4.2's restore
   *  (default: the target alone) */
  pids?: number[];
  /** triggers the restored target and asserts its state (default: the workload's trigger, then PASS
   *  within resultMs) */
  verdict?: () => Promise<void>;
  resultMs?: number;
}

/** Trigger a workload's self-check and expect PASS (its report printed when it is not). */
export async function expectPass(w: Workload, resultMs = 15_000) {
  trigger(w);
  const res = await waitResult(w, resultMs);
  if (!res.pass) console.error(res.text);
  expect(res.text).toStartWith("PASS");
}

/**
 * The restore half of a round trip: once the dumped tree is gone, `restorer` restores the images in
 * `dir`, then the verdict. criu-bun restores as its child (not detached) and must exit 0 once the
 * tree is done; CRIU 4.2 restores with -d, and the tree is killed after.
 */
export async function restoreAndCheck(restorer: Tool, dir: string, target: Workload | number, o: RestoreCheck = {}) {
  const pid = typeof target === "number" ? target : target.pid;
  const pids = o.pids ?? [pid];
  for (const p of pids) await waitReaped(p, 10_000);
  const verdict =
    o.verdict ??
    (() => {
      if (typeof target === "number") throw new Error(`round trip of process ${pid}: no verdict given`);
      return expectPass(target, o.resultMs);
    });
  if (restorer === "criu-bun") {
    const r = await restore(dir, pid, o.restoreArgs);
    await verdict();
    expect(await r.proc.exited).toBe(0);
    return;
  }
  try {
    peer(["restore", "-d", ...(o.restoreArgs ?? [])], dir, "restore.log");
    await waitUntil(`restored ${pid}`, () => existsSync(`/proc/${pid}`));
    await verdict();
  } finally {
    for (const p of pids)
      try {
        process.kill(p, "SIGKILL");
      } catch {}
  }
}

export interface RoundTrip extends Omit<RestoreCheck, "pids"> {
  dumper: Tool;
  restorer: Tool;
  /** dump options */
  dumpArgs?: string[];
  /** names the images directory (default: the workload's name) */
  tag?: string;
}

/**
 * Dump a running target (a workload, or a pid with a verdict) with one tool, wait for its tree to go,
 * restore with the other (or the same) tool and check it (restoreAndCheck). The tree is read from
 * /proc before the dump. Returns the images directory, for further checks of the images and logs.
 */
export async function roundTrip(target: Workload | number, o: RoundTrip): Promise<string> {
  const pid = typeof target === "number" ? target : target.pid;
  const name = typeof target === "number" ? String(pid) : target.name;
  const pids = treeOf(pid);
  const dir = imagesDir((o.tag ?? name).replace(/\W/g, "_"));
  if (o.dumper === "criu-bun") dump(pid, dir, o.dumpArgs);
  else peer(["dump", "-t", String(pid), ...(o.dumpArgs ?? [])], dir, "dump.log");
  await restoreAndCheck(o.restorer, dir, target, { ...o, pids });
  return dir;
}

/**
 * The engine tests' core step: start a workload, dump it (killing it), restore it,
 * trigger its self-check and assert PASS and criu-bun's exit status 0. Returns the workload and
 * the images directory for further checks.
 */
export async function dumpRestoreVerify(
  name: string,
  args: string[] = [],
  opts: { dumpArgs?: string[]; restoreArgs?: string[] } = {}
) {
  const w = await startWorkload(name, args);
  const dir = await roundTrip(w, { dumper: "criu-bun", restorer: "criu-bun", ...opts });
  return { w, dir };
}
