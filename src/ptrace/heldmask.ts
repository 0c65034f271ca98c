// Signals held while a stopped thread is dumped. A thread in a group stop (SIGSTOP, ^Z) keeps its
// pending signals queued until SIGCONT; resumed by ptrace for the injected syscalls it would take
// every unblocked one on its way out of the stop (a signal-delivery-stop the injector drops), so
// they would be gone from the dump and from the process itself. While it is dumped its mask
// blocks everything (PTRACE_SETSIGMASK) but the signals whose delivery changes nothing (ignored by
// default, not caught, not blocked, not pending: what a guarded batch ends with); its own mask is
// what the dump records, what the guard frame gives back were criu-bun to die in a guarded call,
// and what it has again before it is let go (giveBackSigmask).
import { getSigmask, setSigmask } from "../sys/ptrace";
import { readStatus } from "../sys/proc";
import { log } from "../log";

const held = new Map<number, bigint>();
/** SIGCHLD, SIGURG, SIGWINCH: ignored by default */
const HARMLESS = [17, 23, 28];
const ALL = 0xffffffffffffffffn;

/** Hold TID's signals (see above); the mask it had is kept for realSigmask and giveBackSigmask. */
export function holdSignals(pid: number, tid: number) {
  if (held.has(tid)) return;
  // (PTRACE_GETSIGMASK gives the mask a ppoll or sigsuspend will put back, if it is in one;
  // PTRACE_SETSIGMASK drops that pending put-back: giveBackSigmask sets the real one again)
  const real = getSigmask(tid);
  const ts = readStatus(pid, tid);
  const bits = (k: string) => (ts[k] ? BigInt(`0x${ts[k]}`) : 0n);
  // nothing it could take (all pending blocked, or none): left as it is
  if (!((bits("SigPnd") | bits("ShdPnd")) & ~real)) return;
  const busy = real | bits("SigCgt") | bits("SigPnd") | bits("ShdPnd");
  let mask = ALL;
  for (const s of HARMLESS) if (!(busy & (1n << BigInt(s - 1)))) mask &= ~(1n << BigInt(s - 1));
  setSigmask(tid, mask);
  held.set(tid, real);
  log.debug(
    `thread ${tid}: stopped with signals pending (${ts.SigPnd}/${ts.ShdPnd}): held while dumped (mask ${mask.toString(16)}, its own ${real.toString(16)})`
  );
}

/** The mask TID had before holdSignals, if its signals are held. */
export function realSigmask(tid: number): bigint | undefined {
  return held.get(tid);
}

/** TID's own mask set again (before it is let go); false if it was not held or is gone. */
export function giveBackSigmask(tid: number): boolean {
  const real = held.get(tid);
  if (real === undefined) return false;
  held.delete(tid);
  try {
    setSigmask(tid, real);
    log.debug(`thread ${tid}: its own signal mask ${real.toString(16)} back`);
    return true;
  } catch (e) {
    log.debug(`thread ${tid}: mask not given back: ${(e as Error).message}`);
    return false;
  }
}
