// Interval timers (setitimer's real, virtual, profiling) and POSIX timers of a process, both
// directions: read at dump through the frozen process's own injected syscalls (getitimer in the
// dump's batch, timer_gettime / timer_getoverrun per timer listed in /proc/PID/timers), and created
// again at restore with their old ids and their remaining time, as CRIU does.
import { readText, readStatus } from "../sys/proc";
import { readdirSync } from "../sys/fs";
import { NR } from "../sys/nr";
import { PR } from "../sys/flags";
import { errnoText } from "../sys/errno";
import type { Injector, RemoteMem } from "../ptrace/inject";
import type * as S from "../images/schemas";
import { CriuError, log } from "../log";
import { refuse } from "./unsupported";

const ITIMERS = ["real", "virt", "prof"] as const; // ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF
type Itimer = { isec: bigint; iusec: bigint; vsec: bigint; vusec: bigint };

// ---------- dump ----------

/** the getitimer calls of the dump's batch (one per kind; out: struct itimerval) */
export function itimerCalls() {
  return ITIMERS.map((_, w) => ({ nr: NR.getitimer, args: (buf: bigint) => [w, buf], out: 32 }));
}

/** the batch's answers to itimerCalls(), as CRIU's itimer_entry per kind */
export function decodeItimers(
  pid: number,
  got: { r: bigint; b: Uint8Array }[]
): Record<(typeof ITIMERS)[number], Itimer> {
  const out = {} as Record<(typeof ITIMERS)[number], Itimer>;
  ITIMERS.forEach((name, w) => {
    const { r, b } = got[w];
    if (r < 0n && r > -4096n)
      throw new CriuError("dump", `process ${pid}: getitimer(${name}) failed: ${errnoText(-r)}`);
    const dv = new DataView(b.buffer, b.byteOffset);
    out[name] = {
      isec: dv.getBigUint64(0, true),
      iusec: dv.getBigUint64(8, true),
      vsec: dv.getBigUint64(16, true),
      vusec: dv.getBigUint64(24, true),
    };
    if (out[name].vsec || out[name].vusec || out[name].isec || out[name].iusec)
      log.debug(
        `process ${pid}: itimer ${name}: value ${out[name].vsec}.${out[name].vusec} interval ${out[name].isec}.${out[name].iusec}`
      );
  });
  return out;
}

interface PosixTimerInfo {
  id: number;
  signo: number;
  sival: bigint;
  notify: number;
  notifyTid: number;
  clock: number;
}
/**
 * /proc/PID/timers: "ID: 0\nsignal: 34/0000000000000000\nnotify: signal/pid.1234\nClockID: 1\n" per
 * timer; ClockID is negative for a CPU clock (CLOCK_PROCESS_CPUTIME_ID is -6). A block that does
 * not read so fails the dump: no timer is left out silently.
 */
function readPosixTimers(pid: number): PosixTimerInfo[] {
  let text = "";
  try {
    text = readText(`/proc/${pid}/timers`);
  } catch {
    return [];
  }
  const out: PosixTimerInfo[] = [];
  for (const block of text.split(/(?=^ID:)/m)) {
    if (!block.trim()) continue;
    const m =
      /^ID:\s*(\d+)\s+signal:\s*(\d+)\/([0-9a-f]+)\s+notify:\s*(signal|none|thread)\/(pid|tid)\.(\d+)\s+ClockID:\s*(-?\d+)\s*$/.exec(
        block
      );
    if (!m)
      throw new CriuError(
        "dump",
        `process ${pid}: cannot read a POSIX timer of /proc/${pid}/timers: '${block.trim().replace(/\n/g, "\\n")}'`
      );
    const kind = m[4];
    // SIGEV_SIGNAL 0, SIGEV_NONE 1, SIGEV_THREAD 2, SIGEV_THREAD_ID 4
    let notify = kind === "none" ? 1 : kind === "thread" ? 2 : 0;
    if (m[5] === "tid") notify |= 4;
    out.push({
      id: +m[1],
      signo: +m[2],
      sival: BigInt("0x" + m[3]),
      notify,
      notifyTid: m[5] === "tid" ? +m[6] : 0,
      clock: +m[7],
    });
  }
  return out;
}

/** the innermost-namespace number of a /proc/PID/status NSpid line */
const nsLast = (x?: string) => Number((x ?? "").split(/\s+/).filter(Boolean).pop());

/**
 * A CPU clock (a negative clock id: the kernel's CPUCLOCK_PID, _PERTHREAD and _WHICH) is kept when
 * timer_create in the restored leader binds it to the same task again, as CRIU creates it: PID 0
 * of a process clock (the process itself), PID 0 of a thread clock in a process with one thread
 * (the leader; in a process with more the creating thread cannot be told), the process's own PID
 * or one of its own TIDs (they are the same after restore, and every thread exists before the
 * timers are made). Another process's clock, and a dynamic clock (a clock fd), are refused.
 */
function checkClock(pid: number, t: PosixTimerInfo) {
  if (t.clock >= 0) return;
  const which = t.clock & 3,
    perThread = (t.clock & 4) !== 0,
    upid = ~(t.clock >> 3);
  const what = `POSIX timer ${t.id}, clock id ${t.clock}`;
  if (which === 3) refuse("dump", `process ${pid}`, "posix-timer-clock", `${what}: a dynamic clock`);
  const tids = readdirSync(`/proc/${pid}/task`).map(Number);
  if (upid === 0) {
    if (!perThread || tids.length === 1) return;
    refuse("dump", `process ${pid}`, "posix-timer-clock", `${what}: CPU clock of the thread that made it`);
  }
  const own = perThread ? tids.map((tid) => nsLast(readStatus(pid, tid).NSpid)) : [nsLast(readStatus(pid).NSpid)];
  if (own.includes(upid)) return;
  refuse(
    "dump",
    `process ${pid}`,
    "posix-timer-clock",
    `${what}: CPU clock of ${perThread ? "thread" : "process"} ${upid}`
  );
}

/** posix_timer_entry of every POSIX timer of the frozen process (scratch: 32 bytes in it) */
export function dumpPosixTimers(pid: number, inj: Injector, mem: RemoteMem, scratch: bigint) {
  const posix: S.Init<typeof S.posix_timer_entrySchema>[] = [];
  const timers = readPosixTimers(pid);
  for (const t of timers) checkClock(pid, t); // all before any is read
  for (const t of timers) {
    inj.ok("timer_gettime", NR.timer_gettime, t.id, scratch);
    const dv = new DataView(mem.read(scratch, 32).buffer);
    const overrun = Number(inj.call(NR.timer_getoverrun, t.id));
    const e: S.Init<typeof S.posix_timer_entrySchema> = {
      itId: t.id,
      clockId: t.clock >>> 0, // uint32 in CRIU's posix_timer_entry: -6 is 4294967290
      siSigno: t.signo,
      itSigevNotify: t.notify,
      sivalPtr: t.sival,
      overrun: Math.max(0, overrun),
      isec: dv.getBigUint64(0, true),
      insec: dv.getBigUint64(8, true),
      vsec: dv.getBigUint64(16, true),
      vnsec: dv.getBigUint64(24, true),
      ...(t.notifyTid ? { notifyThreadId: t.notifyTid } : {}),
    };
    log.debug(
      `process ${pid}: POSIX timer ${t.id}: clock ${t.clock}${t.clock < 0 ? " (CPU clock)" : ""}, signal ${t.signo}, notify ${t.notify}${t.notifyTid ? ` tid ${t.notifyTid}` : ""}, value ${e.vsec}.${e.vnsec} interval ${e.isec}.${e.insec}, overrun ${e.overrun}`
    );
    posix.push(e);
  }
  return posix;
}

// ---------- restore ----------

/**
 * The process's timers, through its leader's injected syscalls: POSIX timers with their old ids
 * (PR_TIMER_CREATE_RESTORE_IDS where the kernel has it, else by taking the ids before each and
 * freeing them), then armed; then the interval timers. `scratch(off, bytes)` copies bytes into
 * the leader's scratch page; `read(addr, n)` reads its memory.
 */
export function restoreTimers(
  proc: {
    pid: number;
    inj: Injector;
    scratch: (off: bigint, data: Uint8Array) => bigint;
    read: (a: bigint, n: number) => Uint8Array;
  },
  timers: S.task_timers_entry | undefined
) {
  if (!timers) return;
  const { pid, inj, scratch } = proc;
  if (timers.posix.length) {
    const byId = inj.call(NR.prctl, PR.TIMER_CREATE_RESTORE_IDS, PR.TIMER_CREATE_RESTORE_IDS_ON, 0, 0, 0) >= 0n;
    const sorted = [...timers.posix].sort((a, b) => a.itId - b.itId);
    const burnt: number[] = [];
    for (const pt of sorted) {
      const ev = new ArrayBuffer(64);
      const dv = new DataView(ev);
      dv.setBigUint64(0, pt.sivalPtr, true);
      dv.setInt32(8, pt.siSigno, true);
      dv.setInt32(12, pt.itSigevNotify, true);
      if (pt.notifyThreadId) dv.setInt32(16, pt.notifyThreadId, true);
      const evAddr = scratch(0n, new Uint8Array(ev));
      const idAddr = scratch(128n, new Uint8Array(new Int32Array([pt.itId]).buffer));
      for (;;) {
        const r = inj.call(NR.timer_create, pt.clockId | 0, evAddr, idAddr); // (a clockid_t: -6 as -6)
        if (r < 0n)
          throw new CriuError(
            "restore",
            `process ${pid}: timer_create for POSIX timer ${pt.itId} failed: ${errnoText(-r)}`
          );
        const got = new DataView(proc.read(idAddr, 4).buffer).getInt32(0, true);
        if (got === pt.itId) break;
        if (byId || got > pt.itId)
          throw new CriuError("restore", `process ${pid}: POSIX timer ${pt.itId} came back as ${got}`);
        burnt.push(got); // ids are handed out in order: take the ones before ours, free them at the end
      }
    }
    for (const id of burnt) inj.call(NR.timer_delete, id);
    if (byId) inj.call(NR.prctl, PR.TIMER_CREATE_RESTORE_IDS, PR.TIMER_CREATE_RESTORE_IDS_OFF, 0, 0, 0);
    for (const pt of sorted) {
      // as CRIU: a zero value with an interval means "expired while frozen": due one interval on
      const zero = !pt.vsec && !pt.vnsec;
      if (zero && !pt.isec && !pt.insec) continue;
      const its = new BigUint64Array([pt.isec, pt.insec, zero ? pt.isec : pt.vsec, zero ? pt.insec : pt.vnsec]);
      inj.ok("timer_settime", NR.timer_settime, pt.itId, 0, scratch(0n, new Uint8Array(its.buffer)), 0);
    }
    log.debug(
      `process ${pid}: ${sorted.length} POSIX timer(s) restored${byId ? " (PR_TIMER_CREATE_RESTORE_IDS)" : burnt.length ? ` (${burnt.length} id(s) taken and freed on the way)` : ""}`
    );
  }
  ITIMERS.forEach((n, w) => {
    const it = timers[n];
    if (!it || (!it.vsec && !it.vusec && !it.isec && !it.iusec)) return;
    const zero = !it.vsec && !it.vusec; // as CRIU: due one interval on
    const v = new BigUint64Array([it.isec, it.iusec, zero ? it.isec : it.vsec, zero ? it.iusec : it.vusec]);
    inj.ok("setitimer", NR.setitimer, w, scratch(0n, new Uint8Array(v.buffer)), 0);
    log.debug(`process ${pid}: itimer ${n} armed`);
  });
}
