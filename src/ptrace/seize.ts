// Freezing: seize every thread of a process, interrupt it and wait for the stop.
import {
  PTRACE_O,
  seize,
  interrupt,
  wait4Raw,
  detach,
  W,
  PTRACE_EVENT,
  PTRACE,
  ptrace,
  __WALL,
  WNOHANG,
  sleepUs,
  describeStatus,
} from "../sys/ptrace";
import { listTids, taskWhere } from "../sys/proc";
import { readFileSync } from "../sys/fs";
import { addr, syscall } from "../sys/syscall";
import { sysFailed, E, errnoText } from "../sys/errno";
import { CriuError, log, errorMessage } from "../log";
import { jitIfLarge, WORK_JIT } from "../jit";
import { markGroupStopped, giveBackSigmask } from "./heldmask";

interface FrozenThread {
  tid: number;
  /** signal that was about to be delivered when we stopped it (0 if none), and its siginfo */
  pendingStopSig: number;
  pendingSiginfo?: Uint8Array;
  /** the signal of the stop it reported (group-stop: SIGSTOP, SIGTSTP ...; PTRACE_INTERRUPT: SIGTRAP) */
  stopSig?: number;
}
export interface FrozenProcess {
  pid: number;
  threads: FrozenThread[];
}

/** A thread that exited (or was killed) between its seize and its stop: it is not there to freeze. */
export class ExitedWhileFreezing extends CriuError {
  constructor(
    public tid: number,
    status: number
  ) {
    super("seize", `thread ${tid} ${status < 0 ? "exited" : describeStatus(status)} while being frozen`);
  }
}
function exitedNow(pid: number): boolean {
  try {
    return /^State:\s*[ZX]/m.test(readFileSync(`/proc/${pid}/status`, "latin1"));
  } catch {
    return true;
  }
}

/**
 * A thread that never reaches its ptrace stop: seized and interrupted, but held in a killable
 * wait of the kernel (a vfork parent waiting for its child, a task blocked on a dead NFS server).
 * It cannot be detached before it stops; criu-bun's exit lets go of it (the kernel's exit_ptrace
 * clears the pending interrupt).
 */
class DidNotStop extends CriuError {
  constructor(
    public tid: number,
    timeoutMs: number,
    pid = 0
  ) {
    super(
      "seize",
      `${pid ? taskWhere(pid, tid) : `thread ${tid}`} did not stop within ${Math.round(timeoutMs / 100) / 10} s (blocked in the kernel: state ${taskState(tid)}); the tree is left running`
    );
  }
}
function taskState(tid: number): string {
  try {
    const st = readFileSync(`/proc/${tid}/stat`, "latin1");
    return st.slice(st.lastIndexOf(")") + 2, st.lastIndexOf(")") + 3);
  } catch {
    return "?";
  }
}
/**
 * wait4 for TID's next ptrace report, never past DEADLINE: polled (WNOHANG), busy for the first
 * 5 ms (a thread reaches its stop in microseconds: a sleep per thread would cost more than the
 * stop), then with naps growing to 2 ms, so a thread that never stops costs no hang.
 * r === 0: nothing by the deadline.
 */
function waitReport(tid: number, deadline: number): { r: number; status: number } {
  const busyUntil = performance.now() + 5;
  for (let i = 0; ; i++) {
    const w = wait4Raw(tid, __WALL | WNOHANG);
    if (w.r !== 0 && w.r !== -4) return w;
    if (Date.now() > deadline) return { r: 0, status: 0 };
    if (performance.now() < busyUntil) {
      syscall(24 /* sched_yield */); // (on few CPUs the thread we wait for may need ours to get there)
      continue;
    }
    sleepUs(Math.min(2000, 50 * (1 + (i & 63))));
  }
}

/** Wait for a seized+interrupted thread to report its stop. Signal-delivery stops are recorded and re-stopped. */
function waitInterrupted(
  tid: number,
  deadline: number,
  timeoutMs = 0,
  pid = 0
): { sig: number; info?: Uint8Array; stopSig: number } {
  let pendingSig = 0;
  let info: Uint8Array | undefined;
  for (;;) {
    const { r, status } = waitReport(tid, deadline);
    if (r === 0) throw new DidNotStop(tid, timeoutMs, pid);
    if (r < 0) throw new CriuError("seize", sysFailed(`thread ${tid}`, "wait4", r));
    if (!W.stopped(status)) throw new ExitedWhileFreezing(tid, status);
    const ev = W.event(status);
    if (ev === PTRACE_EVENT.STOP) return { sig: pendingSig, info, stopSig: W.stopSig(status) }; // group-stop or interrupt stop
    if (ev === 0) {
      // Signal-delivery stop: the thread was about to receive a signal. Keep it for later, suppress now.
      const sig = W.stopSig(status);
      if (sig !== 0 && sig !== 19 /*SIGSTOP*/) {
        pendingSig = sig;
        const b = new Uint8Array(128);
        if (ptrace(PTRACE.GETSIGINFO, tid, 0, addr(b)) === 0) info = b;
      }
      ptrace(PTRACE.CONT, tid, 0, 0);
      interrupt(tid);
    } else {
      // Some other event stop (clone, exec ...): resume and interrupt again.
      ptrace(PTRACE.CONT, tid, 0, 0);
      interrupt(tid);
    }
    if (Date.now() > deadline) throw new DidNotStop(tid, timeoutMs, pid);
  }
}

/**
 * Seize all threads of pid (repeating while new threads appear).
 * On failure every thread seized so far is released and the error is thrown.
 */
/**
 * TRACESYSGOOD: a syscall stop's code is SIGTRAP|0x80, not SIGTRAP. A thread in a syscall stop
 * our wait has not collected yet sends itself that code as a signal when it resumes; when its
 * tracer dies (criu-bun killed between a PTRACE_SYSCALL and its wait4) plain SIGTRAP would kill
 * it, SIGTRAP|0x80 is no signal and is dropped.
 */
const DUMP_OPTIONS = PTRACE_O.TRACESYSGOOD;

/**
 * Whether a seccomp filter (or strict mode) of thread TID of PID must be suspended while we inject
 * syscalls: seccomp is a thread's own (a filter installed without TSYNC, strict mode), so each
 * thread's status is read, not only the leader's.
 */
function threadHasSeccomp(pid: number, tid: number): boolean {
  try {
    return !/^Seccomp:\s*0$/m.test(readFileSync(`/proc/${pid}/task/${tid}/status`, "latin1"));
  } catch {
    return false;
  }
}
/**
 * Seize TID of PID with its seccomp suspended (PTRACE_O_SUSPEND_SECCOMP): a seccomp filter or
 * strict mode is a thread's own (a filter installed without TSYNC, strict mode), so every thread
 * is seized so, with or without one (suspending nothing changes nothing, and costs no read of each
 * thread's status). Where the option is refused (EPERM, EINVAL: criu-bun without CAP_SYS_ADMIN or
 * under a filter itself), a thread without seccomp is seized without it; one with seccomp fails
 * the freeze. Returns seize's result.
 */
function seizeSuspended(pid: number, tid: number): number {
  const r = seize(tid, DUMP_OPTIONS | PTRACE_O.SUSPEND_SECCOMP);
  if (r !== -22 && r !== -1) return r;
  if (r === -1 && exitedNow(tid)) return r; // (a zombie: the caller tells that apart)
  if (threadHasSeccomp(pid, tid))
    throw new CriuError(
      "seize",
      sysFailed(
        tid === pid ? `process ${pid}` : `process ${pid} thread ${tid}`,
        "PTRACE_SEIZE with PTRACE_O_SUSPEND_SECCOMP",
        r,
        "needs CAP_SYS_ADMIN"
      )
    );
  return seize(tid, DUMP_OPTIONS);
}

/**
 * Seize and interrupt TIDS without waiting for them to stop: for tasks held by a cgroup freezer,
 * which reach the ptrace stop only once thawed (criu's freeze_cgroup). Returns those seized;
 * freezeProcess then only waits for their stops.
 */
export function seizeFrozen(tids: number[]): number[] {
  const done: number[] = [];
  for (const tid of tids) {
    let r: number;
    try {
      r = seizeSuspended(tid, tid);
    } catch (e) {
      for (const t of done) detach(t, 0);
      throw e;
    }
    if (r === -3) continue; // gone meanwhile
    if (r < 0) {
      for (const t of done) detach(t, 0);
      throw new CriuError("seize", sysFailed(`thread ${tid}`, "PTRACE_SEIZE in its frozen cgroup", r));
    }
    interrupt(tid);
    done.push(tid);
  }
  return done;
}

/** Let go of tasks seizeFrozen caught that turned out not to be part of the dumped tree. */
export function releaseSeized(tids: Iterable<number>, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (const tid of tids) {
    try {
      const { sig } = waitInterrupted(tid, deadline, timeoutMs);
      detach(tid, sig);
    } catch (e) {
      log.warn(`releasing ${tid}: ${errorMessage(e)}`);
    }
  }
}

export function freezeProcess(pid: number, timeoutMs = 10000, preSeized?: Set<number>): FrozenProcess {
  const seized = new Map<number, FrozenThread>();
  const deadline = Date.now() + timeoutMs;
  /** seized and interrupted, their stops not collected yet (in order) */
  const pending: number[] = [];
  try {
    for (;;) {
      let fresh = 0;
      let tids: number[];
      try {
        tids = listTids(pid);
      } catch {
        throw new CriuError("seize", `process ${pid} does not exist: ${errnoText(E.ESRCH)}`);
      }
      for (const tid of tids) {
        if (seized.has(tid)) continue;
        if (preSeized?.has(tid)) {
          preSeized.delete(tid);
          const { sig, info } = waitInterrupted(tid, deadline, timeoutMs, pid);
          seized.set(tid, { tid, pendingStopSig: sig, pendingSiginfo: info });
          fresh++;
          continue;
        }
        // a seccomp filter must not judge (or kill for) the syscalls we inject: suspended
        const r = seizeSuspended(pid, tid);
        if (r < 0) {
          // a task that has exited cannot be seized (ESRCH once reaped, EPERM while a zombie)
          if ((r === -3 || r === -1) && tid === pid && !seized.size && exitedNow(pid))
            throw new ExitedWhileFreezing(tid, -1);
          if (r === -3) continue; // thread exited meanwhile
          throw new CriuError(
            "seize",
            sysFailed(
              tid === pid ? `process ${pid}` : `process ${pid} thread ${tid}`,
              "PTRACE_SEIZE",
              r,
              r === -1 ? "already traced, or not permitted" : undefined
            )
          );
        }
        interrupt(tid);
        pending.push(tid);
      }
      // every thread of the listing seized and interrupted first, then their stops collected:
      // they get there side by side (a freeze of N threads costs about one stop's latency)
      while (pending.length) {
        const tid = pending[0];
        let w;
        try {
          w = waitInterrupted(tid, deadline, timeoutMs, pid);
        } catch (e) {
          // a thread other than the leader that ends meanwhile is simply not there any more
          // (the leader's end is the process's: the caller looks at what is left of it)
          if (e instanceof ExitedWhileFreezing && tid !== pid) {
            pending.shift();
            log.debug(`thread ${tid} of ${pid} exited while being frozen: left out`);
            continue;
          }
          throw e;
        }
        pending.shift();
        const { sig, info, stopSig } = w;
        seized.set(tid, { tid, pendingStopSig: sig, pendingSiginfo: info, stopSig });
        // in a group stop (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU): its pending signals stay queued
        if (stopSig >= 19 && stopSig <= 22) markGroupStopped(pid, tid);
        fresh++;
      }
      if (!fresh) break;
    }
    if (!seized.has(pid)) throw new CriuError("seize", `process ${pid} does not exist: ${errnoText(E.ESRCH)}`);
    const threads = [...seized.values()].sort((a, b) => (a.tid === pid ? -1 : b.tid === pid ? 1 : a.tid - b.tid));
    log.info(`Seized process ${pid} with ${threads.length} thread(s)`);
    if (jitIfLarge(threads.length, 64))
      log.debug(`JIT tier-up thresholds x${WORK_JIT} from here on (${threads.length} threads)`);
    return { pid, threads };
  } catch (e) {
    for (const t of seized.values()) releaseThread(t);
    // the others seized meanwhile: let go once they stop (the one that failed, if it did not stop
    // or is gone, cannot be waited for: the kernel lets go of it when criu-bun exits)
    const failed = e instanceof DidNotStop || e instanceof ExitedWhileFreezing ? e.tid : 0;
    const rest = pending.filter((t) => t !== failed);
    if (rest.length) releaseSeized(rest);
    throw e;
  }
}

/** Let a thread run again exactly as before (re-delivering a signal we intercepted). */
function releaseThread(t: FrozenThread) {
  giveBackSigmask(t.tid);
  detach(t.tid, t.pendingStopSig);
}
export function releaseProcess(p: FrozenProcess) {
  for (const t of p.threads) releaseThread(t);
}
