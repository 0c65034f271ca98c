// Signals held while a stopped thread runs injected calls. A thread in a group stop (SIGSTOP, ^Z)
// keeps its pending signals queued until SIGCONT; resumed by ptrace for the injected syscalls it
// would take every unblocked one on its way out of the stop (a signal-delivery-stop the injector
// drops), so they would be gone from the dump and from the process itself. For each injection
// session (Injector.dump ... restore) such a thread's mask blocks everything (PTRACE_SETSIGMASK)
// but the signals whose delivery changes nothing (ignored by default, not caught, not blocked, not
// pending: what a guarded batch ends with); its own mask is what the guard frame gives back were
// criu-bun to die in a guarded call, and it has it again at the session's end (between sessions it
// sits in its ptrace stop and takes nothing). A death outside a guarded call while a session holds
// them leaves the holding mask: the window is the session's unguarded moments only.
import { getSigmask, setSigmask } from "../sys/ptrace";
import { readStatus } from "../sys/proc";
import { log } from "../log";

/** threads frozen in a group stop: tid -> pid */
const groupStopped = new Map<number, number>();
/** threads whose signals a session holds: tid -> their own mask, and how many sessions hold them */
const held = new Map<number, { real: bigint; n: number }>();
/** SIGCHLD, SIGURG, SIGWINCH: ignored by default */
const HARMLESS = [17, 23, 28];
const ALL = 0xffffffffffffffffn;

/** The freeze found TID of PID in a group stop: its sessions hold its signals. */
export function markGroupStopped(pid: number, tid: number) {
  groupStopped.set(tid, pid);
}

/** An injection session on TID begins: its signals held if it is group-stopped with unblocked ones pending. */
export function holdSignals(tid: number) {
  const pid = groupStopped.get(tid);
  if (pid === undefined) return;
  const h = held.get(tid);
  if (h) {
    h.n++;
    return;
  }
  // (PTRACE_GETSIGMASK gives the mask a ppoll or sigsuspend will put back, if it is in one;
  // PTRACE_SETSIGMASK drops that pending put-back: the session's end sets the real one again)
  const real = getSigmask(tid);
  const ts = readStatus(pid, tid);
  const bits = (k: string) => (ts[k] ? BigInt(`0x${ts[k]}`) : 0n);
  // nothing it could take (none pending, or all blocked): left as it is
  if (!((bits("SigPnd") | bits("ShdPnd")) & ~real)) return;
  const busy = real | bits("SigCgt") | bits("SigPnd") | bits("ShdPnd");
  let mask = ALL;
  for (const s of HARMLESS) if (!(busy & (1n << BigInt(s - 1)))) mask &= ~(1n << BigInt(s - 1));
  setSigmask(tid, mask);
  held.set(tid, { real, n: 1 });
  log.debug(
    `thread ${tid}: stopped with signals pending (${ts.SigPnd}/${ts.ShdPnd}): held while injected (mask ${mask.toString(16)}, its own ${real.toString(16)})`
  );
}

/** The mask TID had before a session held its signals, while one does. */
export function realSigmask(tid: number): bigint | undefined {
  return held.get(tid)?.real;
}

/** An injection session on TID ends: its own mask back once no session holds it. */
export function endHold(tid: number) {
  const h = held.get(tid);
  if (h && --h.n <= 0) giveBackSigmask(tid);
}

/** TID's own mask set again, whatever holds it (before it is let go); false if it was not held or is gone. */
export function giveBackSigmask(tid: number): boolean {
  groupStopped.delete(tid);
  const h = held.get(tid);
  if (!h) return false;
  held.delete(tid);
  try {
    setSigmask(tid, h.real);
    log.debug(`thread ${tid}: its own signal mask ${h.real.toString(16)} back`);
    return true;
  } catch (e) {
    log.debug(`thread ${tid}: mask not given back: ${(e as Error).message}`);
    return false;
  }
}
