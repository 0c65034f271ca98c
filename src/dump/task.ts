// Collecting one frozen process: threads, memory layout, task state. Produces plain init objects
// shaped like CRIU's protobuf messages (camelCase field names of the generated code).
import { getRegs } from "../sys/ptrace";
import { readStat, readStatus, readLink, readMaps, type ProcStat } from "../sys/proc";
import { askVmas, askVmasOfPageWorker, type PendingVmas } from "../codec/vmareader";
import { NR } from "../sys/nr";
import { BATCH_CODE, Injector, RemoteMem } from "../ptrace/inject";
import type { FrozenProcess } from "../ptrace/seize";
import { vmFlagsFromBpf, type DumpedVma } from "../resources/memory";
import { CriuError, log } from "../log";
import { errnoText } from "../sys/errno";
import {
  dumpThread,
  threadQueryCalls,
  refuseSyscallDispatch,
  decodeThreadQueries,
  type ThreadDump,
  type ThreadQueries,
} from "../resources/threads";
import { itimerCalls, decodeItimers, dumpPosixTimers } from "../resources/timers";
import {
  sigactionCalls,
  decodeSigactions,
  dumpPendingSignals,
  refuseSigpendingOverLimit,
  sigpendingLimit,
} from "../resources/signals";
import { dumpRlimits } from "../resources/rlimits";
import { dumpMembarrier } from "../resources/membarrier";
import { subreaperCall, decodeSubreaper, dumpTaskAttrs } from "../resources/taskattrs";
import { nsCalls, decodeNsCalls, type Clocks } from "../resources/namespaces";
import { mmCalls, decodeMmCalls, dumpMm, probeMlockFuture } from "../resources/mm";
import type { OutCall } from "../ptrace/inject";
import type * as S from "../images/schemas";

export interface TaskDump {
  pid: number;
  stat: ProcStat;
  threads: ThreadDump[];
  vmas: DumpedVma[];
  mm: S.Init<typeof S.mm_entrySchema>;
  umask: number;
  cwd: string;
  root: string;
  exe: string;
  sigactions: S.Init<typeof S.sa_entrySchema>[];
  /** CLOCK_MONOTONIC and CLOCK_BOOTTIME as the process saw them at dump time */
  clocks: Clocks;
  /** hostname and domain name the process sees (its UTS namespace) */
  uts: { nodename: string; domainname: string };
  /**
   * vmas came from /proc/PID/maps, their flags are being read from smaps on the VMA reader Worker:
   * the caller completes them (completeVmas) before anything but the memory dump reads them
   */
  vmFlags?: PendingVmas;
  /** VmLck is not 0: a VMA may be mlock()ed (which decides what a lazy dump leaves with the source) */
  locked: boolean;
}

function hexMask(s: string | undefined): bigint {
  return s ? BigInt("0x" + s) : 0n;
}

const BATCH_AREA = 16384,
  BATCH_TABLE = 8192;

/**
 * Run independent syscalls in the stopped leader, each with an out buffer; returns each result and
 * its buffer. In one stop of the process when that is safe: an anonymous RWX area is mapped in the
 * process (an injected mmap), the calls run there from BATCH_CODE (Injector.callMany), the area is
 * unmapped again; the process's memory map is as before. Not when SIGTRAP is blocked or ignored
 * by the thread (the batch ends on int3, whose forced SIGTRAP would change that), nor under a
 * seccomp filter (it might kill the process on the mmap), nor where the process may not map
 * executable memory (memory-deny-write-execute, an LSM): then one injected
 * syscall each, with `scratch` (64 bytes below the red zone) as the buffer.
 * Off unless CRIU_BUN_BATCH=on: were criu-bun killed while the process sits at the batch's int3,
 * the kernel may deliver that SIGTRAP as the tracer goes (restart from signal-delivery-stop, man 2 ptrace: it kills the process), and the RWX area
 * would stay in its memory map; a dump killed at any moment must leave the target as it was.
 */
function batchCalls(
  inj: Injector,
  mem: RemoteMem,
  status: Record<string, string>,
  pid: number,
  calls: OutCall[],
  scratch: bigint
): { r: bigint; b: Uint8Array }[] {
  const trap = 1n << 4n; // SIGTRAP
  const trapFree = ((hexMask(status.SigBlk) | hexMask(status.SigIgn)) & trap) === 0n;
  // a seccomp filter may kill the process on the mmap/munmap the batch needs (syscalls the
  // process would never make itself): a filtered leader keeps one injected syscall per call
  const unfiltered = Number(status.Seccomp ?? "0") === 0;
  let outBytes = 0;
  for (const c of calls) outBytes += (c.out + 15) & ~15;
  let area = -1n;
  if (
    trapFree &&
    unfiltered &&
    process.env.CRIU_BUN_BATCH === "on" &&
    BATCH_TABLE + outBytes <= BATCH_AREA &&
    calls.length * 64 <= BATCH_TABLE - 256
  ) {
    const r = inj.call(NR.mmap, 0, BATCH_AREA, 7 /* RWX */, 0x22 /* MAP_PRIVATE | MAP_ANONYMOUS */, -1, 0);
    if (r > 0n || r < -4095n) area = BigInt.asUintN(64, r);
    else log.debug(`process ${pid}: no batch area (mmap: ${errnoText(-r)}): one injected syscall per call`);
  }
  if (area < 0n) {
    const single = (c: OutCall) => {
      const r = inj.call(c.nr, ...c.args(scratch));
      return { r, b: r < 0n ? new Uint8Array(c.out) : mem.read(scratch, c.out) };
    };
    // guarded (guard.ts): all but the last in one run of the thread where it can (Injector.guardedBatch:
    // queries only), the last alone, so the thread ends in a syscall stop as after single calls
    const head = calls.length > 1 ? inj.guardedBatch(calls.slice(0, -1)) : undefined;
    if (!head) return calls.map(single);
    head.forEach((h, i) => {
      if (h.r < 0n) h.b = new Uint8Array(calls[i].out);
    });
    return [...head, single(calls[calls.length - 1])];
  }
  try {
    mem.write(area, BATCH_CODE);
    const bufs: bigint[] = [];
    let off = BATCH_TABLE;
    for (const c of calls) {
      bufs.push(area + BigInt(off));
      off += (c.out + 15) & ~15;
    }
    const res = inj.callMany(
      area,
      area + 256n,
      calls.map((c, i) => [c.nr, ...c.args(bufs[i])])
    );
    const data = mem.read(area + BigInt(BATCH_TABLE), off - BATCH_TABLE);
    return calls.map((c, i) => ({
      r: res[i],
      b: data.subarray(Number(bufs[i] - area) - BATCH_TABLE, Number(bufs[i] - area) - BATCH_TABLE + c.out),
    }));
  } finally {
    const r = inj.call(NR.munmap, area, BATCH_AREA);
    if (r !== 0n)
      throw new CriuError(
        "dump",
        `process ${pid}: cannot unmap the batch area at 0x${area.toString(16)}: ${errnoText(-r)}`
      );
  }
}

/**
 * Collect everything of one frozen process. Leaves the tracee's registers as they were.
 * vmaReader: its VmFlags read on the VMA reader Worker meanwhile (TaskDump.vmFlags).
 */
export function dumpTask(fp: FrozenProcess, mem: RemoteMem, vmaReader = false): TaskDump {
  const pid = fp.pid;
  const stat = readStat(pid);
  const status = readStatus(pid);
  const leader = fp.threads[0];
  const leaderRegs = getRegs(leader.tid);
  const sysInsn = Injector.findSyscallInsn(pid, leaderRegs, mem);

  // a thread that dispatches its own syscalls (PR_SET_SYSCALL_USER_DISPATCH) would take an
  // injected one as its own: refused before the first
  refuseSyscallDispatch(pid, fp.threads);
  // --- state that only the task can tell: injected syscalls in the leader
  const inj = Injector.dump(leader.tid, sysInsn, mem);
  let brk = 0n;
  let subreaper = false;
  let thpDisabled = false;
  let dumpable = 1;
  let mlockFuture = 0;
  let membarrier = 0;
  let uts = { nodename: "", domainname: "" };
  let clocks: Clocks = {};
  const sigactions: S.Init<typeof S.sa_entrySchema>[] = [];
  let itimers: ReturnType<typeof decodeItimers> | undefined;
  let posix: S.Init<typeof S.posix_timer_entrySchema>[] = [];
  let leaderQueries: ThreadQueries | undefined;
  try {
    inj.withScratch(400, (scratch) => {
      // brk, THP, membarrier registrations, the subreaper bit, the clocks, uname, the sigaction
      // table (signals.ts), the three itimers and the leader thread's own queries (threads.ts: one
      // injection less than in a batch of the thread's own): one batch in one stop of the process
      // where it can run one (batchCalls), else one injected syscall each.
      const sa = sigactionCalls();
      const tq = threadQueryCalls();
      const mc = mmCalls();
      const head = mc.length + 5; // calls before the sigactions
      const got = batchCalls(
        inj,
        mem,
        status,
        pid,
        [
          ...mc, // brk, THP, dumpable, MDWE (mm.ts)
          // membarrier registrations (Linux 6.3+ can tell them; older kernels answer EINVAL)
          { nr: NR.membarrier, args: () => [1 << 9 /* MEMBARRIER_CMD_GET_REGISTRATIONS */, 0, 0], out: 0 },
          subreaperCall(),
          ...nsCalls(), // the clocks as the process sees them, uname (namespaces.ts)
          ...sa,
          ...itimerCalls(),
          ...tq,
        ],
        scratch
      );
      const m = mc.length;
      ({ brk, thpDisabled, dumpable } = decodeMmCalls(pid, got.slice(0, m)));
      membarrier = dumpMembarrier(pid, inj, got[m].r);
      subreaper = decodeSubreaper(got[m + 1]);
      ({ clocks, uts } = decodeNsCalls(pid, got.slice(m + 2, m + 5)));
      sigactions.push(...decodeSigactions(pid, got.slice(head, head + sa.length)));
      itimers = decodeItimers(pid, got.slice(head + sa.length, head + sa.length + 3));
      leaderQueries = decodeThreadQueries(
        leader.tid,
        got.slice(head + sa.length + 3, head + sa.length + 3 + tq.length)
      );
      posix = dumpPosixTimers(pid, inj, mem, scratch);
      mlockFuture = probeMlockFuture(pid, inj, status);
    });
  } finally {
    inj.restore();
  }
  // smaps from now, on the VMA reader, while the rest is collected: nothing below changes the memory
  // map. Not before the leader's queries: their brk(0) takes the mmap lock for writing, which waits
  // for the walk of the largest VMA's page tables that smaps does holding it for reading (tens of ms
  // per GiB), and readers that come after a waiting writer wait too (the batch area of
  // CRIU_BUN_BATCH=on is mapped and unmapped by then as well)
  // (with the BPF iterator ready for this run, no walk to hide: the flags are read with the VMAs, below)
  // (else, when the dump's page Workers wait for its pages, on one of them)
  const vmFlags = vmFlagsFromBpf() ? undefined : vmaReader ? askVmas(pid) : askVmasOfPageWorker(pid);

  // --- threads
  const tThreads = performance.now();
  const threads: ThreadDump[] = [];
  for (const t of fp.threads)
    threads.push(dumpThread(pid, t, sysInsn, mem, t.tid === leader.tid ? leaderQueries : undefined));

  // --- process-wide state in the leader's core
  const tShared = performance.now();
  const shared = dumpPendingSignals(leader.tid, true);
  const limits = dumpRlimits(pid);
  refuseSigpendingOverLimit(
    pid,
    sigpendingLimit(limits),
    threads.map((t, i) => ({
      tid: t.tid,
      signals: [...(i === 0 ? shared : []), ...(t.core.threadCore.signalsP?.signals ?? [])],
    }))
  );
  const { personality, loginuid, oomScoreAdj } = dumpTaskAttrs(pid);
  const leaderCore = threads[0].core;
  leaderCore.tc = {
    taskState: 1,
    exitCode: 0,
    personality,
    flags: stat.flags,
    blkSigset: threads[0].core.threadCore.blkSigset,
    comm: stat.comm,
    timers: { real: itimers!.real, virt: itimers!.virt, prof: itimers!.prof, posix },
    rlimits: { rlimits: limits },
    signalsS: { signals: shared },
    loginuid,
    oomScoreAdj,
    sigactions,
    childSubreaper: subreaper,
    ...(membarrier ? { membarrierRegistrationMask: membarrier } : {}),
  };

  // --- memory layout
  const tMm = performance.now();
  const { vmas, mm, exe } = dumpMm(
    pid,
    stat,
    brk,
    thpDisabled,
    dumpable,
    mlockFuture,
    vmFlags ? readMaps(pid) : undefined
  );
  log.debug(
    `process ${pid}: threads ${(tShared - tThreads).toFixed(1)} ms, signals, limits and attributes ${(tMm - tShared).toFixed(1)} ms, memory layout ${(performance.now() - tMm).toFixed(1)} ms`
  );
  const umask = parseInt(status.Umask ?? "22", 8);
  log.info(`Dumped state of ${pid}: ${threads.length} thread(s), ${vmas.length} VMAs, brk 0x${brk.toString(16)}`);
  return {
    pid,
    stat,
    threads,
    vmas,
    mm,
    umask,
    sigactions,
    uts,
    clocks,
    cwd: readLink(`/proc/${pid}/cwd`),
    root: readLink(`/proc/${pid}/root`),
    exe,
    vmFlags,
    locked: !/^0 kB$/.test(status.VmLck ?? "0 kB"),
  };
}
