// The calling thread's CPUs changed for a moment, for a kernel handoff (sys/sentinel.ts: a new
// process made on this thread's CPU; dump/dump.ts killAndFree: this thread off a killed process's
// CPUs). Only criu-bun's own thread: never a process it works on, so a criu-bun killed meanwhile
// leaves every other process as it was.
import { addr, syscall } from "./syscall";
import { NR } from "./nr";

/**
 * This thread run on the CPUs `pick` returns, given its current mask (the kernel's length of it):
 * undefined, an empty mask or the same one leave it as it is. Returns what gives the thread its CPUs
 * back (the call's result: 0 or -errno), or undefined when nothing changed (any failure included).
 */
export function thisThreadOnCpus(pick: (mine: Uint8Array) => Uint8Array | undefined): (() => number) | undefined {
  const buf = new Uint8Array(128);
  const n = syscall(NR.sched_getaffinity, 0, buf.length, addr(buf));
  if (n <= 0) return undefined;
  const mine = buf.subarray(0, n);
  const want = pick(mine.slice());
  if (!want || want.length !== n || want.every((b) => b === 0) || want.every((b, i) => b === mine[i])) return undefined;
  if (syscall(NR.sched_setaffinity, 0, n, addr(want)) !== 0) return undefined;
  return () => syscall(NR.sched_setaffinity, 0, n, addr(mine));
}
