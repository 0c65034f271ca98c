// Threads and their registers, both directions: at dump each frozen thread's registers (fixed up
// so that an interrupted syscall is re-issued or fails cleanly), FPU/xsave state, TLS entries,
// robust list, rseq, clear_child_tid, sigaltstack, parent-death signal, nice and name, with its
// signals (signals.ts), credentials (creds.ts) and seccomp state (seccomp.ts), as CRIU's
// core_entry; at restore the same set again through each thread's own injected syscalls, and the
// registers last, before the threads are let go.
import {
  getRegs,
  getXstate,
  setXstate,
  setRegs,
  getRseqConfig,
  getThreadArea,
  setThreadArea,
  R,
  REG_NAMES,
  type Regs,
  GDT_ENTRY_TLS_MIN,
  GDT_ENTRY_TLS_ENTRIES,
} from "../sys/ptrace";
import { readStat, readStatus, readText, taskWhere } from "../sys/proc";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { PR } from "../sys/flags";
import { errnoText, sysFailed } from "../sys/errno";
import { Injector, dataWords, type RemoteMem, type InCall, type OutCall } from "../ptrace/inject";
import { fixupRestart } from "../ptrace/restart";
import type * as S from "../images/schemas";
import { CriuError, log } from "../log";
import { xsaveToFpregs, fpregsToXsave } from "./xsave";
import { dumpPendingSignals, dumpSigmask, refusePendingTrap } from "./signals";
import { realSigmask } from "../ptrace/heldmask";
import { dumpCreds, restoreCreds } from "./creds";
import { dumpSeccompFilters, restoreSeccomp, type SeccompFilter } from "./seccomp";
import { refuse } from "./unsupported";

const SS_ONSTACK = 1,
  SS_DISABLE = 2,
  PRIO_PROCESS = 0;

/** sched_getscheduler's flag for reset-on-fork, kept in CRIU's sched_policy as the kernel reports it */
const SCHED_RESET_ON_FORK = 0x40000000;
/** the policies sched_setscheduler can set again (SCHED_DEADLINE needs sched_setattr's runtime,
 *  deadline and period, which CRIU's thread_core_entry has no place for) */
const SCHED_POLICIES: Record<number, string> = {
  0: "SCHED_OTHER",
  1: "SCHED_FIFO",
  2: "SCHED_RR",
  3: "SCHED_BATCH",
  5: "SCHED_IDLE",
};
const isRealtime = (policy: number) => policy === 1 || policy === 2;
function schedText(policy: number, prio: number) {
  const base = policy & ~SCHED_RESET_ON_FORK;
  return `${SCHED_POLICIES[base] ?? `policy ${base}`}${policy & SCHED_RESET_ON_FORK ? "|SCHED_RESET_ON_FORK" : ""}${isRealtime(base) ? ` priority ${prio}` : ""}`;
}

/**
 * A thread's scheduling policy (with SCHED_RESET_ON_FORK, as sched_getscheduler reports it and
 * CRIU stores it) and its real-time priority, read from outside (the dump runs as root). A policy
 * sched_setscheduler cannot set again (SCHED_DEADLINE) is refused.
 */
function dumpSched(pid: number, tid: number): { policy: number; prio: number } {
  const r = syscall(NR.sched_getscheduler, tid);
  if (r < 0) throw new CriuError("dump", sysFailed(`process ${pid} thread ${tid}`, "sched_getscheduler", r));
  const base = r & ~SCHED_RESET_ON_FORK;
  if (!(base in SCHED_POLICIES)) refuse("dump", taskWhere(pid, tid), "sched-deadline", `policy ${base}`);
  let prio = 0;
  if (isRealtime(base)) {
    const p = new Int32Array(1);
    const g = syscall(NR.sched_getparam, tid, addr(p));
    if (g < 0) throw new CriuError("dump", sysFailed(`process ${pid} thread ${tid}`, "sched_getparam", g));
    prio = p[0];
  }
  return { policy: r, prio };
}

/** core_entry of one thread as the dump builds it: thread_info, thread_core, and tc for the leader */
type CoreInit = S.InitOf<typeof S.core_entrySchema> & {
  threadInfo: S.InitOf<typeof S.thread_info_x86Schema>;
  threadCore: S.InitOf<typeof S.thread_core_entrySchema>;
  tc?: S.InitOf<typeof S.task_core_entrySchema>;
};

export interface ThreadDump {
  tid: number;
  regs: Regs; // after the restart fix-up
  xstate: Uint8Array;
  core: CoreInit; // core_entry init (thread_info + thread_core, tc for the leader)
  /** seccomp filters of the thread, oldest first, with their flags (mode 2) */
  seccomp: SeccompFilter[];
}

// ---------- dump ----------

function regsToEntry(r: Regs): Record<string, bigint | number> {
  const map: Record<string, string> = {
    rbp: "bp",
    rbx: "bx",
    rax: "ax",
    rcx: "cx",
    rdx: "dx",
    rsi: "si",
    rdi: "di",
    orig_rax: "origAx",
    rip: "ip",
    eflags: "flags",
    rsp: "sp",
    fs_base: "fsBase",
    gs_base: "gsBase",
  };
  const o: Record<string, bigint | number> = {};
  REG_NAMES.forEach((n, i) => {
    o[map[n] ?? n] = r[i];
  });
  o.mode = 1; // NATIVE
  return o;
}

/** What a thread tells only through syscalls of its own (injected): dumpThread's queries. */
export interface ThreadQueries {
  pdeathSig: number;
  tidAddr: bigint;
  sas: { ssSp: bigint; ssSize: bigint; ssFlags: number };
  /** PR_GET_TSC, PR_MCE_KILL_GET, PR_GET_TIMERSLACK: settings no field of CRIU's images holds (unkeptThreadState) */
  tsc: number;
  mceKill: number;
  timerSlack: bigint;
  secbits: number;
}

const QUERY_NAMES = [
  "prctl(PR_GET_PDEATHSIG)",
  "prctl(PR_GET_TID_ADDRESS)",
  "sigaltstack",
  "prctl(PR_GET_TSC)",
  "prctl(PR_MCE_KILL_GET)",
  "prctl(PR_GET_TIMERSLACK)",
  "prctl(PR_GET_SECUREBITS)",
];

/**
 * The thread's queries (parent-death signal, clear_child_tid, sigaltstack, securebits) as calls
 * with out buffers: the leader's go into its process's batch (dump/task.ts), each other thread's
 * into a batch of its own (dumpThread).
 */
export function threadQueryCalls(): OutCall[] {
  return [
    { nr: NR.prctl, args: (b: bigint) => [PR.GET_PDEATHSIG, b], out: 4 },
    { nr: NR.prctl, args: (b: bigint) => [PR.GET_TID_ADDRESS, b], out: 8 },
    { nr: NR.sigaltstack, args: (b: bigint) => [0, b], out: 24 },
    { nr: NR.prctl, args: (b: bigint) => [PR.GET_TSC, b], out: 4 },
    { nr: NR.prctl, args: () => [PR.MCE_KILL_GET, 0, 0, 0, 0], out: 0 },
    { nr: NR.prctl, args: () => [PR.GET_TIMERSLACK], out: 0 },
    { nr: NR.prctl, args: () => [PR.GET_SECUREBITS], out: 0 },
  ];
}

/** threadQueryCalls' results (each call's result and out buffer, in order); a failed one is an error. */
export function decodeThreadQueries(tid: number, got: { r: bigint; b: Uint8Array }[]): ThreadQueries {
  got.forEach((g, i) => {
    if (g.r < 0n && g.r > -4096n)
      throw new CriuError("inject", sysFailed(`thread ${tid}`, `injected ${QUERY_NAMES[i]}`, g.r));
  });
  const dv = new DataView(got[2].b.buffer, got[2].b.byteOffset);
  return {
    pdeathSig: new DataView(got[0].b.buffer, got[0].b.byteOffset).getInt32(0, true),
    tidAddr: new DataView(got[1].b.buffer, got[1].b.byteOffset).getBigUint64(0, true),
    // ss_flags: unsigned (SS_AUTODISARM is bit 31), as CRIU's thread_sas_entry holds it
    sas: { ssSp: dv.getBigUint64(0, true), ssFlags: dv.getUint32(8, true), ssSize: dv.getBigUint64(16, true) },
    tsc: new DataView(got[3].b.buffer, got[3].b.byteOffset).getInt32(0, true),
    mceKill: Number(got[4].r),
    timerSlack: got[5].r,
    secbits: Number(got[6].r),
  };
}

const PR_TSC_ENABLE = 1;
const PR_MCE_KILL_DEFAULT = 2;
const IOPRIO_WHO_PROCESS = 1;
/** criu-bun's own timer slack and I/O priority: what a thread it makes at restore starts with */
let own: { slack: bigint; ioprio: number } | undefined;

/**
 * Settings of a thread that no field of CRIU's images holds, refused when away from what the
 * restore gives a thread it makes (CRIU 4.2 loses them): PR_SET_TSC (rdtsc faulting), PR_MCE_KILL,
 * the timer slack (PR_SET_TIMERSLACK; a real-time thread's is 0 and comes back with its policy) and
 * the I/O priority (ioprio_set).
 */
function refuseUnkeptThreadState(pid: number, tid: number, q: ThreadQueries, policy: number, seccomp: number) {
  const where = taskWhere(pid, tid);
  // (seccomp's strict mode turns rdtsc off itself, and comes back with the thread's seccomp)
  if (q.tsc !== PR_TSC_ENABLE && seccomp !== 1) refuse("dump", where, "unkept-state", `PR_SET_TSC ${q.tsc}`);
  if (q.mceKill !== PR_MCE_KILL_DEFAULT) refuse("dump", where, "unkept-state", `PR_MCE_KILL ${q.mceKill}`);
  own ??= {
    slack: BigInt(syscall(NR.prctl, PR.GET_TIMERSLACK, 0, 0, 0, 0)),
    ioprio: syscall(NR.ioprio_get, IOPRIO_WHO_PROCESS, 0),
  };
  if (q.timerSlack !== own.slack && !(q.timerSlack === 0n && isRealtime(policy & ~SCHED_RESET_ON_FORK)))
    refuse("dump", where, "unkept-state", `timer slack ${q.timerSlack} ns`);
  const io = syscall(NR.ioprio_get, IOPRIO_WHO_PROCESS, tid);
  if (io >= 0 && io !== own.ioprio) refuse("dump", where, "unkept-state", `I/O priority 0x${io.toString(16)}`);
}

const PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG = 0x4211;
const sud = new BigUint64Array(4);
/**
 * A thread with syscall user dispatch on (PR_SET_SYSCALL_USER_DISPATCH): no field of CRIU's images
 * holds it, and a syscall injected into it would be dispatched to its own handler. Asked through
 * ptrace (Linux 6.4); an older kernel's error: it cannot be on there.
 */
export function refuseSyscallDispatch(pid: number, threads: { tid: number }[]) {
  for (const t of threads) {
    sud.fill(0n);
    const r = syscall(NR.ptrace, PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG, t.tid, 32, addr(sud));
    if (r >= 0 && sud[0] !== 0n)
      refuse("dump", taskWhere(pid, t.tid), "unkept-state", `syscall user dispatch, mode ${sud[0]}`);
  }
}

/**
 * Everything of one frozen thread of process `pid`, as its core_entry (thread_info, thread_core).
 * `sysInsn`: a syscall instruction of the process, through which the thread's own state is asked
 * (injected prctl, sigaltstack); its registers are left as they were. `queries`: those answers
 * when the caller already has them (the leader's, from its process's batch).
 */
export function dumpThread(
  pid: number,
  t: { tid: number; pendingSiginfo?: Uint8Array; pendingStopSig?: number },
  sysInsn: bigint,
  mem: RemoteMem,
  queries?: ThreadQueries
): ThreadDump {
  const regs = getRegs(t.tid);
  const xstate = getXstate(t.tid);
  // (a stopped thread whose pending signals are held while dumped: the mask it has of its own)
  const sigmask = realSigmask(t.tid) ?? dumpSigmask(t.tid);
  const rseq = getRseqConfig(t.tid);
  // robust list: readable from outside
  const head = new BigUint64Array(1),
    len = new BigUint64Array(1);
  const rr = syscall(NR.get_robust_list, t.tid, addr(head), addr(len));
  if (rr < 0) throw new CriuError("dump", sysFailed(`thread ${t.tid}`, "get_robust_list", rr));
  // clear_child_tid, sigaltstack, the parent-death signal and securebits: injected in the thread itself
  if (!queries) {
    const tinj = Injector.dump(t.tid, sysInsn, mem);
    try {
      queries = tinj.withScratch(32, (scratch) => {
        // all but the last in one guarded batch where the thread can run one, else one by one; the
        // last alone, so the thread ends in a syscall stop as after single calls (as dump/task.ts)
        const calls = threadQueryCalls();
        const single = (c: OutCall) => {
          const r = tinj.call(c.nr, ...c.args(scratch));
          return { r, b: r < 0n ? new Uint8Array(c.out) : mem.read(scratch, c.out) };
        };
        const head = tinj.guardedBatch(calls.slice(0, -1)) ?? calls.slice(0, -1).map(single);
        return decodeThreadQueries(t.tid, [...head, single(calls[calls.length - 1])]);
      });
    } finally {
      tinj.restore();
    }
  }
  const { pdeathSig, tidAddr, sas, secbits } = queries;
  // a signal caught on its way in while freezing is still owed to the thread
  const pending = dumpPendingSignals(t.tid, false, t.pendingSiginfo);
  fixupRestart(regs);
  const tstat = readStat(pid, t.tid);
  const comm = readText(`/proc/${pid}/task/${t.tid}/comm`).replace(/\n$/, "");
  const tst = readStatus(pid, t.tid); // (its credentials and the checks below: one read)
  const sched = dumpSched(pid, t.tid);
  refuseUnkeptThreadState(pid, t.tid, queries, sched.policy, Number(tst.Seccomp ?? "0"));
  const core: CoreInit = {
    mtype: 1,
    threadInfo: {
      clearTidAddr: tidAddr,
      gpregs: regsToEntry(regs),
      fpregs: xsaveToFpregs(xstate),
      tls: Array.from({ length: GDT_ENTRY_TLS_ENTRIES }, (_, i) => getThreadArea(t.tid, GDT_ENTRY_TLS_MIN + i)),
    },
    threadCore: {
      futexRla: head[0],
      futexRlaLen: Number(len[0]),
      schedNice: tstat.nice,
      schedPolicy: sched.policy,
      // (as CRIU: the priority only for SCHED_FIFO and SCHED_RR)
      ...(isRealtime(sched.policy & ~SCHED_RESET_ON_FORK) ? { schedPrio: sched.prio } : {}),
      blkSigset: sigmask,
      sas,
      pdeathSig,
      signalsP: { signals: pending },
      creds: dumpCreds(pid, t.tid, secbits, tst),
      comm,
      ...(rseq && rseq.ptr
        ? { rseqEntry: { rseqAbiPointer: rseq.ptr, rseqAbiSize: rseq.len, signature: rseq.sig } }
        : {}),
    },
  };
  refusePendingTrap(pid, t.tid, tst, t.pendingStopSig);
  const seccompMode = Number(tst.Seccomp ?? "0");
  core.threadCore.seccompMode = seccompMode;
  if (tst.NoNewPrivs === "1") {
    core.threadCore.noNewPrivs = true;
    core.threadCore.creds!.noNewPrivs = 1; // where CRIU 4.2 keeps it (and reads it at restore)
  }
  log.debug(
    `threads: thread ${t.tid}: ip 0x${regs[R.rip].toString(16)} sp 0x${regs[R.rsp].toString(16)} orig_ax ${BigInt.asIntN(64, regs[R.orig_rax])}, ` +
      `xstate ${xstate.length} bytes, clear_tid 0x${tidAddr.toString(16)}, robust list 0x${head[0].toString(16)}/${len[0]}` +
      `${rseq && rseq.ptr ? `, rseq 0x${rseq.ptr.toString(16)}` : ""}${sas.ssFlags & SS_DISABLE ? "" : `, altstack 0x${sas.ssSp.toString(16)}+${sas.ssSize}`}` +
      `${pdeathSig ? `, pdeath signal ${pdeathSig}` : ""}, nice ${tstat.nice}, ${schedText(sched.policy, sched.prio)}, comm '${comm}'`
  );
  return { tid: t.tid, regs, xstate, core, seccomp: seccompMode === 2 ? dumpSeccompFilters(t.tid) : [] };
}

// ---------- restore ----------

/**
 * Per-thread kernel state of one restored thread, through its own injected syscalls: tid address,
 * robust list, rseq, altstack, name, nice, then seccomp and credentials while it is still root,
 * then the parent-death signal (changing credentials clears it). `comm`: the thread's name (the
 * leader's may only be in tc.comm); `scratch(off, bytes)` copies bytes into its scratch page,
 * `str(s)` a path or name.
 */
export function restoreThread(
  thread: {
    tid: number;
    vtid: number;
    inj: Injector;
    scratch: (off: bigint, data: Uint8Array) => bigint;
    /** calls that each pass bytes, in this thread, in as few stops as fit; each check sees its result */
    batchData: (calls: InCall[]) => void;
  },
  core: S.core_entry,
  comm: string | undefined,
  seccompFilters: S.seccomp_filter[]
) {
  const { tid, vtid, inj, scratch } = thread;
  const tcore = core.threadCore!;
  // tid address, robust list, rseq, altstack, name and nice in one stop of the thread
  const calls: InCall[] = [
    { nr: NR.set_tid_address, data: [], args: () => [core.threadInfo!.clearTidAddr], check: () => {} },
  ];
  if (tcore.futexRla)
    calls.push({
      nr: NR.set_robust_list,
      data: [],
      args: () => [tcore.futexRla, tcore.futexRlaLen],
      check: (r) => {
        if (r < 0n) throw new CriuError("restore", sysFailed(`thread ${vtid}`, "injected set_robust_list", r));
      },
    });
  const rs = tcore.rseqEntry;
  if (rs && rs.rseqAbiPointer)
    calls.push({
      nr: NR.rseq,
      data: [],
      args: () => [rs.rseqAbiPointer, rs.rseqAbiSize, 0, rs.signature],
      check: (r) => {
        if (r < 0n) throw new CriuError("restore", sysFailed(`thread ${vtid}`, "rseq registration", r));
      },
    });
  const sas = tcore.sas;
  if (sas && !(sas.ssFlags & SS_DISABLE)) {
    const b = new ArrayBuffer(24);
    const dv = new DataView(b);
    dv.setBigUint64(0, sas.ssSp, true);
    dv.setUint32(8, (sas.ssFlags & ~SS_ONSTACK) >>> 0, true); // SS_AUTODISARM (bit 31) too
    dv.setBigUint64(16, sas.ssSize, true);
    calls.push({
      nr: NR.sigaltstack,
      data: dataWords(new Uint8Array(b)),
      args: (at) => [at, 0],
      check: (r) => {
        if (r < 0n) throw new CriuError("restore", sysFailed(`thread ${vtid}`, "injected sigaltstack", r));
      },
    });
  }
  if (comm) {
    const name = new Uint8Array((Buffer.byteLength(comm) + 8) & ~7);
    name.set(Buffer.from(comm));
    calls.push({
      nr: NR.prctl,
      data: dataWords(name),
      args: (at) => [PR.SET_NAME, at, 0, 0, 0],
      check: () => {},
    });
  }
  // always, 0 too: a thread starts with the nice of whoever made it (criu-bun may run at another)
  calls.push({
    nr: NR.setpriority,
    data: [],
    args: () => [PRIO_PROCESS, vtid, tcore.schedNice ?? 0],
    check: (r) => {
      if (r < 0n) log.warn(`thread ${vtid}: nice ${tcore.schedNice ?? 0} not restored: ${errnoText(-r)}`);
    },
  });
  // the credentials after seccomp's no_new_privs and filters; without those, in the same stop
  if (tcore.seccompMode || tcore.noNewPrivs || tcore.creds?.noNewPrivs) {
    thread.batchData(calls);
    restoreSeccomp({ tid, vtid, inj, scratch }, tcore, seccompFilters);
    if (tcore.creds) restoreCreds({ vtid, inj, batchData: thread.batchData }, tcore.creds);
  } else {
    if (tcore.creds) restoreCreds({ vtid, inj, batchData: (c) => calls.push(...c) }, tcore.creds);
    thread.batchData(calls);
  }
  // after the credentials: changing them clears the parent-death signal
  if (tcore.pdeathSig) inj.ok("prctl(PR_SET_PDEATHSIG)", NR.prctl, PR.SET_PDEATHSIG, tcore.pdeathSig, 0, 0, 0);
  log.debug(
    `threads: thread ${vtid}: kernel state restored (clear_tid 0x${core.threadInfo!.clearTidAddr.toString(16)}${tcore.futexRla ? `, robust list 0x${tcore.futexRla.toString(16)}` : ""}` +
      `${rs && rs.rseqAbiPointer ? `, rseq 0x${rs.rseqAbiPointer.toString(16)}` : ""}${sas && !(sas.ssFlags & SS_DISABLE) ? `, altstack 0x${sas.ssSp.toString(16)}` : ""}${comm ? `, comm '${comm}'` : ""})`
  );
}

/**
 * The thread's scheduling policy, SCHED_RESET_ON_FORK and real-time priority, set from outside
 * (criu-bun is root) on the stopped thread once nothing is injected in it any more: a SCHED_IDLE
 * thread would crawl through the rest of the restore, a SCHED_FIFO one could starve it. Always,
 * SCHED_OTHER too: the thread was made by criu-bun, under whatever policy it runs. Its nice, set
 * before (restoreThread), stays: sched_setscheduler keeps it.
 */
export function restoreSched(tid: number, vtid: number, core: S.core_entry) {
  const tcore = core.threadCore!;
  const policy = tcore.schedPolicy ?? 0;
  const base = policy & ~SCHED_RESET_ON_FORK;
  const prio = isRealtime(base) ? (tcore.schedPrio ?? 0) : 0;
  if (!(base in SCHED_POLICIES))
    throw new CriuError("restore", `thread ${vtid}: scheduling policy ${policy} of the image cannot be set`);
  const param = new Int32Array([prio]);
  const r = syscall(NR.sched_setscheduler, tid, policy, addr(param));
  if (r < 0)
    throw new CriuError("restore", sysFailed(`thread ${vtid}`, `sched_setscheduler(${schedText(policy, prio)})`, r));
  log.debug(`threads: thread ${vtid}: scheduling ${schedText(policy, prio)}`);
}

/** The FPU/xsave state of a stopped thread, in this CPU's xsave layout. */
export function restoreFpregs(tid: number, core: S.core_entry) {
  // (validate.ts refused a core without fpregs)
  const xsize = getXstate(tid).length;
  setXstate(tid, fpregsToXsave(core.threadInfo!.fpregs!, xsize));
}

/** General registers and TLS entries of a stopped thread, the last thing before it runs. */
export function restoreRegisters(tid: number, vtid: number, core: S.core_entry) {
  const regs = entryToRegs(core.threadInfo!.gpregs!);
  regs[R.orig_rax] = 0xffffffffffffffffn; // no syscall restart on resume: done at dump (fixupRestart), as CRIU's sigreturn
  setRegs(tid, regs);
  for (const d of core.threadInfo!.tls) setThreadArea(tid, d); // the TLS GDT entries (12..14)
  log.debug(
    `threads: thread ${vtid}: registers set (ip 0x${regs[R.rip].toString(16)} sp 0x${regs[R.rsp].toString(16)}), ${core.threadInfo!.tls.length} TLS entries`
  );
}

function entryToRegs(g: S.user_x86_regs_entry): BigUint64Array {
  const r = new BigUint64Array(27);
  const v = [
    g.r15,
    g.r14,
    g.r13,
    g.r12,
    g.bp,
    g.bx,
    g.r11,
    g.r10,
    g.r9,
    g.r8,
    g.ax,
    g.cx,
    g.dx,
    g.si,
    g.di,
    g.origAx,
    g.ip,
    g.cs,
    g.flags,
    g.sp,
    g.ss,
    g.fsBase,
    g.gsBase,
    g.ds,
    g.es,
    g.fs,
    g.gs,
  ];
  v.forEach((x, i) => (r[i] = BigInt(x)));
  return r;
}
