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
import { readStat, readStatus, readText } from "../sys/proc";
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

const SS_ONSTACK = 1,
  SS_DISABLE = 2,
  PRIO_PROCESS = 0;

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
  secbits: number;
}

const QUERY_NAMES = ["prctl(PR_GET_PDEATHSIG)", "prctl(PR_GET_TID_ADDRESS)", "sigaltstack", "prctl(PR_GET_SECUREBITS)"];

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
    sas: { ssSp: dv.getBigUint64(0, true), ssFlags: dv.getInt32(8, true), ssSize: dv.getBigUint64(16, true) },
    secbits: Number(got[3].r),
  };
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
      schedPolicy: 0,
      schedPrio: 0,
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
      `${pdeathSig ? `, pdeath signal ${pdeathSig}` : ""}, nice ${tstat.nice}, comm '${comm}'`
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
    dv.setInt32(8, sas.ssFlags & ~SS_ONSTACK, true);
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
