// Signals of a process, both directions: its handlers (CRIU's table of 62 sigactions), the signals
// pending for the process and for each of its threads, and each thread's blocked mask. Read at dump
// through the frozen leader's injected rt_sigaction (in the dump's batch) and PTRACE_PEEKSIGINFO;
// set again at restore through the process's own injected syscalls, SIGTRAP's handler last.
import { getSigmask, setSigmask, peekSiginfo } from "../sys/ptrace";
import { readdirSync } from "../sys/fs";
import { readStat, readStatus, taskWhere, type ProcStat } from "../sys/proc";
import { NR } from "../sys/nr";
import { errnoText, sysFailed } from "../sys/errno";
import type { Injector, InCall, OutCall } from "../ptrace/inject";
import * as S from "../images/schemas";
import { isFieldSet, type MessageInitShape } from "@bufbuild/protobuf";
import { CriuError, log } from "../log";
import { refuse } from "./unsupported";

const SIGKILL = 9,
  SIGSTOP = 19,
  SIGTRAP = 5;
/** CRIU's sigaction table: signals 1..64 without SIGKILL and SIGSTOP, in that order (62). A plain
 *  loop: Array.from + filter at import cost ~0.1 ms of the start in the interpreter. */
const SIGACTION_SIGNALS: readonly number[] = sigactionSignals();
function sigactionSignals(): number[] {
  const out: number[] = [];
  for (let s = 1; s <= 64; s++) if (s !== SIGKILL && s !== SIGSTOP) out.push(s);
  return out;
}
/** struct sigaction as rt_sigaction reads and writes it: handler, flags, restorer, mask */
const SIGACTION_BYTES = 32;

type SaInit = MessageInitShape<typeof S.sa_entrySchema>;
type SiginfoInit = MessageInitShape<typeof S.siginfo_entrySchema>;

function hexMask(s: string | undefined): bigint {
  return s ? BigInt("0x" + s) : 0n;
}
const signo = (si: Uint8Array) => new DataView(si.buffer, si.byteOffset).getInt32(0, true);

// ---------- dump ----------

/** rt_sigaction(sig, NULL, out, 8) for every signal of the table, for the dump's batch */
export function sigactionCalls(): OutCall[] {
  return SIGACTION_SIGNALS.map((sig) => ({
    nr: NR.rt_sigaction,
    args: (buf: bigint) => [sig, 0, buf, 8],
    out: SIGACTION_BYTES,
  }));
}

/**
 * The batch's answers to sigactionCalls(), as CRIU's sa_entry table. Flags, mask and restorer are
 * kept for SIG_IGN and SIG_DFL too; compat_sigaction is false (a 64-bit task), as CRIU writes it.
 */
export function decodeSigactions(pid: number, got: { r: bigint; b: Uint8Array }[]): SaInit[] {
  const out: SaInit[] = [];
  const handled: string[] = [];
  SIGACTION_SIGNALS.forEach((sig, i) => {
    const { r, b } = got[i];
    if (r < 0n) throw new CriuError("dump", `rt_sigaction(${sig}) in ${pid} failed: ${errnoText(-r)}`);
    const dv = new DataView(b.buffer, b.byteOffset);
    const e = {
      sigaction: dv.getBigUint64(0, true),
      flags: dv.getBigUint64(8, true),
      restorer: dv.getBigUint64(16, true),
      mask: dv.getBigUint64(24, true),
      compatSigaction: false,
    };
    if (e.sigaction) handled.push(`${sig}:${e.sigaction === 1n ? "ign" : "0x" + e.sigaction.toString(16)}`);
    out.push(e);
  });
  log.debug(
    `signals: process ${pid}: ${out.length} sigactions read, ${handled.length} not SIG_DFL${handled.length ? ` (${handled.join(" ")})` : ""}`
  );
  return out;
}

/**
 * Signals queued for a thread (shared: for the whole process), as siginfo entries; `caught` is a
 * signal that arrived while the thread was being frozen, still owed to it.
 */
export function dumpPendingSignals(tid: number, shared: boolean, caught?: Uint8Array): SiginfoInit[] {
  const list = peekSiginfo(tid, shared).map((b) => ({ siginfo: b }));
  if (caught) list.push({ siginfo: caught });
  if (list.length)
    log.debug(
      `signals: ${shared ? `process of ${tid}` : `thread ${tid}`}: ${list.length} pending (${list.map((s) => signo(s.siginfo)).join(", ")})`
    );
  return list;
}

/** The thread's blocked signals. */
export function dumpSigmask(tid: number): bigint {
  return getSigmask(tid);
}

/**
 * A pending SIGTRAP belongs to a debugger's conversation with the thread: refused, as CRIU does.
 * `status` is the thread's /proc status, `stopSig` the signal it was stopped by when frozen.
 */
export function refusePendingTrap(
  pid: number,
  tid: number,
  status: Record<string, string>,
  stopSig: number | undefined
) {
  if ((hexMask(status.SigPnd) | hexMask(status.ShdPnd)) & (1n << BigInt(SIGTRAP - 1)) || stopSig === SIGTRAP) {
    refuse("dump", taskWhere(pid, tid), "sigtrap");
  }
}

const SIGRTMIN = 32,
  RLIMIT_SIGPENDING = 11;

/**
 * Queued signals restore cannot queue back: each is queued again through the thread's own
 * rt_sigqueueinfo / rt_tgsigqueueinfo, charged to the receiver's user and held against the
 * process's RLIMIT_SIGPENDING (restored before them). A real-time signal over that limit fails
 * (EAGAIN), a standard one sent with a negative si_code loses its siginfo; one with si_code >= 0
 * is let over the limit. The count restore meets is the user's count of queued signals (and
 * POSIX timers' reserved entries) as SigQ reports it now, this tree's included: when that is over
 * the soft limit and a thread (with the process's shared queue, for the leader) holds a signal
 * held to the limit, the dump is refused.
 */
export function refuseSigpendingOverLimit(
  pid: number,
  limit: bigint,
  queues: { tid: number; signals: { siginfo?: Uint8Array }[] }[]
) {
  for (const q of queues) {
    const held = q.signals
      .flatMap((s) => (s.siginfo ? [s.siginfo] : []))
      .filter((si) => {
        const dv = new DataView(si.buffer, si.byteOffset);
        return dv.getInt32(0, true) >= SIGRTMIN || dv.getInt32(8, true) < 0;
      });
    if (!held.length) continue;
    const m = /^(\d+)\//.exec(readStatus(pid, q.tid).SigQ ?? "");
    const count = m ? BigInt(m[1]) : 0n;
    if (count <= limit) continue;
    refuse(
      "dump",
      taskWhere(pid, q.tid),
      "sigpending-rlimit",
      `${count} queued for its user, RLIMIT_SIGPENDING ${limit}; signal(s) ${held.map(signo).join(", ")}`
    );
  }
}

/** RLIMIT_SIGPENDING's soft limit among dumpRlimits' answers (kernel order) */
export function sigpendingLimit(limits: { cur: bigint }[]): bigint {
  return limits[RLIMIT_SIGPENDING].cur;
}

// ---------- images ----------

/**
 * tc.sigactions as CRIU writes it: exactly 62 native entries, signals 1..64 without SIGKILL (9)
 * and SIGSTOP (19), in that order. Any other shape (an older criu-bun's 64, a 32-bit task's
 * compat entries, CRIU's old separate sigacts-N.img) is refused rather than guessed at.
 */
export function sigactionTable(file: string, tc: S.task_core_entry) {
  const n = tc.sigactions.length;
  if (n === 0)
    throw new CriuError(
      "restore",
      `${file}: tc.sigactions is empty (signal handlers in a separate sigacts image are not supported)`
    );
  if (n !== SIGACTION_SIGNALS.length)
    throw new CriuError(
      "restore",
      `${file}: tc.sigactions has ${n} entries, CRIU's table has 62 (signals 1-64 without SIGKILL and SIGSTOP)`
    );
  const compat = tc.sigactions.findIndex((e) => e.compatSigaction);
  if (compat >= 0)
    throw new CriuError(
      "restore",
      `${file}: tc.sigactions[${compat}].compat_sigaction is set (32-bit handlers are not supported)`
    );
}

// ---------- restore ----------

export type TrapAction = [handler: bigint, flags: bigint, restorer: bigint, mask: bigint];

/**
 * rt_sigaction calls setting every handler of the table but SIGTRAP's, for the restore's batch;
 * SIGTRAP's is returned to be set last (restoreTrapAction): every int3 of criu-bun's later
 * injections forces a SIGTRAP, and a forced signal that is ignored or blocked gets its handler
 * reset to SIG_DFL.
 */
export function sigactionRestoreCalls(pid: number, sa: S.sa_entry[]): { calls: InCall[]; trap: TrapAction | null } {
  const calls: InCall[] = [];
  let trap: TrapAction | null = null;
  SIGACTION_SIGNALS.forEach((sig, i) => {
    const e = sa[i];
    if (sig === SIGTRAP) {
      trap = [e.sigaction, e.flags, e.restorer, e.mask];
      return;
    }
    calls.push({
      nr: NR.rt_sigaction,
      data: [e.sigaction, e.flags, e.restorer, e.mask],
      args: (act) => [sig, act, 0, 8],
      check: (r) => {
        if (r < 0n) throw new CriuError("restore", sysFailed(`process ${pid}`, `rt_sigaction(${sig})`, r));
      },
    });
  });
  log.debug(`signals: process ${pid}: ${calls.length} sigactions to set, SIGTRAP's last`);
  return { calls, trap };
}

/** SIGTRAP's handler, once no int3 of criu-bun's runs in the process any more. */
export function restoreTrapAction(
  proc: { pid: number; inj: Injector; scratch: (off: bigint, data: Uint8Array) => bigint },
  trap: TrapAction | null
) {
  if (!trap) return;
  const act = proc.scratch(0n, new Uint8Array(new BigUint64Array(trap).buffer));
  const r = proc.inj.call(NR.rt_sigaction, SIGTRAP, act, 0, 8);
  if (r !== 0n) throw new CriuError("restore", sysFailed(`process ${proc.pid}`, "rt_sigaction(SIGTRAP)", r));
  log.debug(`signals: process ${proc.pid}: SIGTRAP's handler set (0x${trap[0].toString(16)})`);
}

/**
 * Signals pending for the process (tid null) or one of its threads, queued again with their
 * siginfo through a thread's own injected rt_sigqueueinfo / rt_tgsigqueueinfo. Every signal is
 * blocked until the very end, so they wait in the queues as they did.
 */
export function restorePendingSignals(
  proc: { pid: number; inj: Injector; scratch: (off: bigint, data: Uint8Array) => bigint },
  tid: number | null,
  pending: S.siginfo_entry[]
) {
  const { pid, inj, scratch } = proc;
  for (const s of pending) {
    const sig = signo(s.siginfo);
    const a = scratch(0n, s.siginfo);
    const r =
      tid === null ? inj.call(NR.rt_sigqueueinfo, pid, sig, a) : inj.call(NR.rt_tgsigqueueinfo, pid, tid, sig, a);
    if (r < 0n)
      throw new CriuError(
        "restore",
        sysFailed(
          tid === null ? `process ${pid}` : `process ${pid} thread ${tid}`,
          `re-queueing pending signal ${sig}`,
          r
        )
      );
  }
  if (pending.length)
    log.debug(
      `signals: ${tid === null ? `process ${pid}` : `thread ${tid}`}: ${pending.length} pending signal(s) queued again (${pending.map((s) => signo(s.siginfo)).join(", ")})`
    );
}

/**
 * A thread's blocked mask, set last. CRIU keeps the leader's in tc.blk_sigset and sets
 * thread_core.blk_sigset only for other threads (proto2: an unset field reads as 0, so ask
 * whether it is set).
 */
export function restoreSigmask(tid: number, tcore: S.thread_core_entry | undefined, tc: S.task_core_entry) {
  const mask = tcore && isFieldSet(tcore, S.thread_core_entrySchema.field.blkSigset) ? tcore.blkSigset : tc.blkSigset;
  setSigmask(tid, mask);
  log.debug(`signals: thread ${tid}: blocked mask 0x${mask.toString(16)}`);
}

/** The stop signal a stopped task is given again at restore (task_core_entry.stop_signo, as CRIU
 *  4.2 keeps it): SIGTSTP, SIGTTIN or SIGTTOU as it was; SIGSTOP otherwise (or when not stopped). */
export function stopSignal(tc: S.task_core_entry | undefined): number {
  const s = tc?.taskState === 3 ? (tc.stopSigno ?? 0) : 0;
  return s >= 20 && s <= 22 ? s : SIGSTOP;
}

/**
 * Why `sig` (SIGTSTP, SIGTTIN or SIGTTOU) would not stop the restored process `hostPid`, or
 * undefined: a handler or a blocked mask in the images, or a process group orphaned here (the
 * kernel drops those three signals for one). Asked before anything runs, so a restore that could
 * not stop it as it was fails and leaves nothing behind.
 */
export function stopSignalProblem(
  hostPid: number,
  sig: number,
  tc: S.task_core_entry,
  threadCores: (S.thread_core_entry | undefined)[]
): string | undefined {
  if (sig === SIGSTOP) return undefined;
  const sa = tc.sigactions[SIGACTION_SIGNALS.indexOf(sig)];
  if (sa && sa.sigaction !== 0n) return `signal ${sig} has a handler or is ignored (0x${sa.sigaction.toString(16)})`;
  for (const t of threadCores) {
    const mask = t && isFieldSet(t, S.thread_core_entrySchema.field.blkSigset) ? t.blkSigset : tc.blkSigset;
    if (mask & (1n << BigInt(sig - 1))) return `signal ${sig} is blocked`;
  }
  // orphaned: no member has a parent in another group of its session (init does not count)
  const me = readStat(hostPid);
  const all = new Map<number, ProcStat>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readStat(Number(d));
      all.set(st.pid, st);
    } catch {} // gone meanwhile
  }
  const held = [...all.values()].some((p) => {
    if (p.pgid !== me.pgid) return false;
    const q = all.get(p.ppid);
    return q !== undefined && q.pid !== 1 && q.pgid !== me.pgid && q.sid === p.sid;
  });
  return held ? undefined : `its process group ${me.pgid} is orphaned here (the kernel drops signal ${sig} for it)`;
}
