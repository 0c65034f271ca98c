// Fault injection for tests, in the spirit of criu's CRIU_FAULT: CRIU_BUN_FAULT=NAME makes the
// named step fail as a real error would, so tests can prove that failures leave nothing behind.
import { CriuError } from "./log";

// NAME:internal throws what a bug would (a TypeError), to test how unexpected errors are reported;
// NAME:hang blocks forever there, as a restore that cannot make progress would (--timeout).
export function fault(name: string, where: string) {
  const f = process.env.CRIU_BUN_FAULT;
  if (f === name) throw new CriuError(where, `injected fault '${name}' (CRIU_BUN_FAULT)`);
  if (f === `${name}:internal`) throw new TypeError(`injected bug '${name}' (CRIU_BUN_FAULT)`);
  if (f === `${name}:hang`) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
}

/**
 * Tests: CRIU_BUN_PAUSE=NAME stops at the named point until the file CRIU_BUN_PAUSE_FILE, which
 * is created there, is removed (at most 30 s), so a test can act at a known moment (kill a target
 * in the middle of its dump).
 */
export function pausePoint(name: string) {
  const file = process.env.CRIU_BUN_PAUSE_FILE;
  if (process.env.CRIU_BUN_PAUSE !== name || !file) return;
  const fs = require("./sys/fs") as typeof import("./sys/fs");
  fs.writeFileSync(file, `${process.pid}\n`, { flag: "wx", mode: 0o600 });
  const deadline = Date.now() + 30_000;
  while (fs.existsSync(file) && Date.now() < deadline) Bun.sleepSync(5);
}

/**
 * Tests: CRIU_BUN_DIE=NAME kills criu-bun with SIGKILL at the named point, as a kill from outside
 * landing exactly there would (Injector's guarded calls: inject-N-set|run1|entry|poked|run2|exit, run1/run2 once the thread
 * sits in its syscall stop before criu-bun's wait collected it; the N-th session's end
 * inject-restored-N).
 */
export function diePoint(name: string, first?: () => void) {
  if (process.env.CRIU_BUN_DIE !== name) return;
  first?.();
  process.kill(process.pid, "SIGKILL");
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
}
