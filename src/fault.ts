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
