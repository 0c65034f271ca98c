// Running system calls inside a stopped tracee (our compel, without a parasite).
//  - "sysstop" mode (dump): rip points at an existing `syscall` instruction of the target; we step
//    through the syscall-entry and syscall-exit stops with PTRACE_SYSCALL. Guarded (Injector.dump,
//    guard.ts): rip points at our stub instead, which returns the thread to its saved state by
//    itself should criu-bun die at any moment.
//  - "trap" mode (restore): rip points at our trampoline `syscall; int3`; one PTRACE_CONT, one SIGTRAP.
import {
  getRegs,
  setRegs,
  ptrace,
  PTRACE,
  R,
  wait4Raw,
  W,
  type Regs,
  __WALL,
  describeStatus,
  getEventMsg,
  getXstate,
  getSigmask,
} from "../sys/ptrace";
import {
  buildFrame,
  findStubPlace,
  unguardable,
  GUARD_STUB,
  NR_RT_SIGRETURN,
  FRAME_SIGMASK_OFF,
  SCRATCH_ROOM,
  BATCH_LOOP,
  GUARD_BATCH,
  GUARD_BATCH_AFTER_SYSCALL,
  batchPlace,
} from "./guard";
import { realSigmask, holdSignals, endHold } from "./heldmask";
import { diePoint } from "../fault";
import { tick } from "../watchdog";
import { openFd, closeFd, preadFull, pwriteFull, O } from "../sys/mem";
import { readMaps, readStat, readStatus, type Vma } from "../sys/proc";
import { CriuError, log, logLevel, LOG_DEBUG, errorMessage } from "../log";
import { NR, syscallName } from "../sys/nr";
import { addr, syscall } from "../sys/syscall";
import { errnoText, sysFailed } from "../sys/errno";

export class RemoteMem {
  fd: number;
  /** where guarded injections put their stub in this process (guard.ts); null: nowhere */
  stubPlace?: bigint | null;
  constructor(public pid: number) {
    this.fd = openFd(`/proc/${pid}/mem`, O.RDWR | O.CLOEXEC);
  }
  read(addr: bigint, len: number): Uint8Array {
    const b = new Uint8Array(len);
    const n = preadFull(this.fd, b, addr, len, 0, `process ${this.pid}: read of its memory at 0x${addr.toString(16)}`);
    if (n !== len)
      throw new CriuError("mem", `process ${this.pid}: short read of its memory at 0x${addr.toString(16)}`);
    return b;
  }
  write(addr: bigint, data: Uint8Array, off = 0, len = data.length - off) {
    pwriteFull(this.fd, data, addr, len, off, `process ${this.pid}: write of its memory at 0x${addr.toString(16)}`);
  }
  close() {
    if (this.fd >= 0) closeFd(this.fd);
    this.fd = -1;
  }
}

type InjectMode = "sysstop" | "trap";

/** The code Injector.callMany() runs: the batch loop (guard.ts BATCH_LOOP), then int3. */
export const BATCH_CODE = new Uint8Array([...BATCH_LOOP, 0xcc /* done: int3 */]);

/** One syscall of a dump-side batch: its arguments given the address of its out buffer (out bytes). */
export interface OutCall {
  nr: number;
  args: (buf: bigint) => (number | bigint)[];
  out: number;
}
/**
 * One syscall of a restore-side batch: `data` (64-bit words) is copied into the process first and
 * its address given to args; `check` sees the call's result, in the order the calls were listed.
 */
export interface InCall {
  nr: number;
  data: bigint[];
  args: (data: bigint) => (number | bigint)[];
  check: (r: bigint) => void;
}

/** Bytes as an InCall's data: 64-bit words, the last one zero-padded (a loop: spreading a typed
 *  array goes through the iterator protocol, slow in the interpreter the restore runs in). */
export function dataWords(bytes: Uint8Array): bigint[] {
  const padded = new Uint8Array((bytes.length + 7) & ~7);
  padded.set(bytes);
  const w = new BigUint64Array(padded.buffer);
  const out = new Array<bigint>(w.length);
  for (let i = 0; i < w.length; i++) out[i] = w[i];
  return out;
}

/** guarded calls and sessions made by this criu-bun so far (CRIU_BUN_DIE=inject-N-POINT, inject-restored-N) */
let guardedCalls = 0,
  guardedSessions = 0,
  guardedBatches = 0;
const NR_RT_SIGPROCMASK = 14;

/** An injected call's result checked as Injector.ok checks it (an errno fails the restore, named
 *  "injected NAME"): for the check of a batched call (InCall). */
export function mustSucceed(who: string, name: string): (r: bigint) => void {
  return (r) => {
    if (r < 0n && r > -4096n) throw new CriuError("inject", sysFailed(who, `injected ${name}`, r));
  };
}

export class Injector {
  saved: Regs;
  /** guard the calls (dump): see guard.ts */
  guarded = false;
  /** the armed guard: the frame's address and the bytes it covers, the stub's place; the batch's
   *  code (where written) and the stack it used (with the bytes it covered) */
  private guard?: {
    frame: bigint;
    old: Uint8Array;
    stub: bigint;
    batch?: bigint;
    areas: { at: bigint; old: Uint8Array }[];
  };
  /** signals that arrived while we were injecting; re-delivered by the caller */
  caughtSignals: number[] = [];
  /** PID (in criu-bun's namespace) of the last task this one forked or cloned during a call */
  lastEventPid = 0;
  /** how failure lines name the task: "process P" or "process P thread T" (restore: the images' numbers) */
  who: string;
  constructor(
    public tid: number,
    public syscallAddr: bigint,
    public mode: InjectMode,
    public mem: RemoteMem
  ) {
    this.saved = getRegs(tid);
    this.who = tid === mem.pid ? `process ${tid}` : `process ${mem.pid} thread ${tid}`;
  }

  /**
   * An injector for the dump side (a live target that must run on as before whatever happens):
   * its calls are guarded (guard.ts) where the thread allows it, else made the plain way.
   */
  static dump(tid: number, syscallAddr: bigint, mem: RemoteMem): Injector {
    const inj = new Injector(tid, syscallAddr, "sysstop", mem);
    inj.guarded = true;
    // a group-stopped thread's pending signals held for the session (heldmask.ts)
    holdSignals(tid);
    inj.holding = true;
    return inj;
  }

  /** Find a `syscall` instruction usable for injection into a seized, stopped thread. */
  static findSyscallInsn(pid: number, regs: Regs, mem: RemoteMem): bigint {
    const rip = regs[R.rip];
    try {
      const b = mem.read(rip - 2n, 2);
      if (b[0] === 0x0f && b[1] === 0x05) return rip - 2n;
    } catch {}
    // maps, not smaps: smaps would walk the page tables of all the memory for one line
    const vdso = readMaps(pid).find((v) => v.path === "[vdso]");
    if (vdso) {
      const b = mem.read(vdso.start, Number(vdso.end - vdso.start));
      for (let i = 0; i + 1 < b.length; i++) if (b[i] === 0x0f && b[i + 1] === 0x05) return vdso.start + BigInt(i);
    }
    throw new CriuError("inject", `no syscall instruction found in process ${pid}`);
  }

  private waitStop(): number {
    for (;;) {
      const { r, status } = wait4Raw(this.tid, __WALL);
      if (r === -4) continue;
      if (r < 0) throw new CriuError("inject", sysFailed(this.who, "wait4", r));
      if (!W.stopped(status))
        throw new CriuError("inject", `thread ${this.tid} ${describeStatus(status)} during an injected syscall`);
      return status;
    }
  }

  /**
   * Arm the guard (guard.ts) before the first call of a session: frame on the stack, stub in the
   * vDSO, then a first call storing the real signal mask in the frame. False (and the plain way
   * is used) where the thread cannot be guarded. TS, MAPS: the thread's status and its process's
   * maps when the caller has just read them (else read here, as far as needed).
   */
  private armGuard(ts?: Record<string, string>, maps?: Vma[]): boolean {
    const pid = this.mem.pid;
    if (!ts)
      try {
        ts = readStatus(pid, this.tid);
      } catch {}
    const why = unguardable(this.saved, ts);
    if (this.mem.stubPlace === undefined) {
      try {
        this.mem.stubPlace = findStubPlace(maps ?? readMaps(pid), (a, n) => this.mem.read(a, n));
      } catch (e) {
        log.debug(`process ${pid}: no place for the injection stub (${errorMessage(e)})`);
        this.mem.stubPlace = null;
      }
    }
    const stub = this.mem.stubPlace;
    if (why || stub === null) {
      log.debug(`thread ${this.tid}: injected syscalls not guarded: ${why || "no unused tail in the vDSO"}`);
      this.guarded = false;
      return false;
    }
    // (a stopped thread whose signals are held: its own mask, not the holding one)
    const held = realSigmask(this.tid);
    const f = buildFrame(this.saved, getXstate(this.tid), held ?? getSigmask(this.tid));
    let old: Uint8Array;
    try {
      old = this.mem.read(f.frame, f.bytes.length);
      pokeWords(this.tid, stub, GUARD_STUB); // (into the vDSO's padding: harmless if the frame write fails)
    } catch (e) {
      log.debug(`thread ${this.tid}: injected syscalls not guarded: ${errorMessage(e)}`);
      this.guarded = false;
      return false;
    }
    this.guard = { frame: f.frame, old, stub, areas: [] };
    this.mem.write(f.frame, f.bytes);
    log.debug(
      `thread ${this.tid}: injected syscalls guarded (frame at 0x${f.frame.toString(16)}, ${f.bytes.length} bytes; stub at 0x${stub.toString(16)})`
    );
    // the mask the thread has once it leaves its stop (a ppoll's or sigsuspend's temporary mask is
    // gone by then): what the frame must give back
    // (held: PTRACE_GETSIGMASK gave that mask already, a ppoll's put-back included)
    if (held !== undefined) return true;
    const r = this.guardedCall(NR_RT_SIGPROCMASK, [0 /* SIG_BLOCK */, 0, f.frame + FRAME_SIGMASK_OFF, 8], true);
    if (r !== 0n) throw new CriuError("inject", sysFailed(this.who, "injected rt_sigprocmask", r));
    return true;
  }

  /** One guarded call (guard.ts): starts as rt_sigreturn, made NR at its syscall-entry stop (unless DIRECT). */
  private guardedCall(nr: number, args: (number | bigint)[], direct = false): bigint {
    const g = this.guard!;
    const n = ++guardedCalls;
    const regs = new BigUint64Array(this.saved);
    regs[R.rip] = g.stub;
    regs[R.rsp] = g.frame + 8n;
    regs[R.rax] = BigInt(direct ? nr : NR_RT_SIGRETURN);
    regs[R.orig_rax] = 0xffffffffffffffffn;
    const order = [R.rdi, R.rsi, R.rdx, R.r10, R.r8, R.r9];
    for (let i = 0; i < 6; i++) regs[order[i]] = BigInt.asUintN(64, BigInt(args[i] ?? 0));
    setRegs(this.tid, regs);
    diePoint(`inject-${n}-set`);
    this.syscallStop(`inject-${n}-run1`);
    diePoint(`inject-${n}-entry`);
    if (!direct) {
      const p = ptrace(PTRACE.POKEUSER, this.tid, R.orig_rax * 8, BigInt(nr));
      if (p < 0)
        throw new CriuError("inject", sysFailed(this.who, "PTRACE_POKEUSER of orig_rax (setting the syscall)", p));
      diePoint(`inject-${n}-poked`);
    }
    this.syscallStop(`inject-${n}-run2`);
    diePoint(`inject-${n}-exit`);
    return BigInt.asIntN(64, getRegs(this.tid)[R.rax]);
  }

  /**
   * Independent, harmless calls (queries: nothing they do matters if they run again or without
   * criu-bun) in one run of the thread, guarded (guard.ts GUARD_BATCH): the table and the out
   * buffers below the frame, the thread's stack pointer below them; its own tgkill of a signal it
   * neither catches, blocks nor has pending ends the run in a signal-delivery-stop, whose signal
   * the tracer drops. Were criu-bun to die at any moment, the thread finishes the calls (the
   * signal discarded: ignored, not caught) and returns through the frame as it was; the table
   * stays as dead bytes below its stack pointer. Each call's result and out buffer; undefined when
   * the thread cannot run one (not guarded, no room in its vDSO or on its stack, a seccomp filter,
   * no such signal): the caller makes the calls one by one.
   */
  guardedBatch(calls: OutCall[]): { r: bigint; b: Uint8Array }[] | undefined {
    if (!calls.length || !this.guarded || this.mode !== "sysstop" || process.env.CRIU_BUN_GUARDED_BATCH === "off")
      return undefined;
    // the thread's status (its mask, pending signals and filter; the process's handlers) and the
    // maps (its stack; the vDSO's place) read once, for the guard too when it arms here: nothing
    // between changes them but signals sent from elsewhere, which may come at any time anyway
    const pid = this.mem.pid,
      ts = readStatus(pid, this.tid),
      maps = readMaps(pid);
    if (!(this.guard || this.armGuard(ts, maps))) return undefined;
    const g = this.guard!;
    const place = batchPlace(g.stub);
    if (place === null) {
      log.debug(`thread ${this.tid}: no room for a guarded batch in the vDSO`);
      return undefined;
    }
    if (Number(ts.Seccomp ?? "0") !== 0) return undefined;
    const sig = this.freeSignal(ts);
    if (sig === undefined) {
      log.debug(`thread ${this.tid}: no signal free to end a guarded batch`);
      return undefined;
    }
    const nsLast = (x?: string) => Number((x ?? "").split(/\s+/).filter(Boolean).pop());
    const tgid = nsLast(ts.NStgid),
      tid = nsLast(ts.NSpid);
    if (!(tgid > 0 && tid > 0)) return undefined;
    // the area: the table (the calls and the tgkill), then the out buffers, 64 bytes below the frame
    const entries = calls.length + 1;
    const outs: bigint[] = [];
    let size = entries * 64;
    for (const c of calls) {
      outs.push(BigInt(size));
      size += (c.out + 15) & ~15;
    }
    const area = (g.frame - 64n - BigInt(size)) & ~63n,
      sp = area - 128n;
    // all of it and 16 KiB below (a handler's frame, were criu-bun gone) inside the thread's stack mapping
    const stack = maps.find((v) => v.start <= this.saved[R.rsp] && this.saved[R.rsp] < v.end);
    if (!stack || stack.start > sp - 16384n || !(stack.prot & 2)) {
      log.debug(`thread ${this.tid}: no room on its stack for a guarded batch`);
      return undefined;
    }
    // the table's 64-bit words as 32-bit halves (plain numbers, no BigInt per word); each call's
    // arguments kept for its -v4 line
    const table = new Uint32Array(size / 4);
    const put = (word: number, x: number | bigint) => {
      if (typeof x === "number") {
        table[word * 2] = x >>> 0;
        table[word * 2 + 1] = Math.floor(x / 0x100000000) >>> 0; // (-1: all ones, as BigInt.asUintN)
      } else {
        const u = BigInt.asUintN(64, x);
        table[word * 2] = Number(u & 0xffffffffn);
        table[word * 2 + 1] = Number(u >> 32n);
      }
    };
    const argLists = calls.map((c, i) => {
      const a = c.args(area + outs[i]);
      put(i * 8, c.nr);
      for (let k = 0; k < 6; k++) put(i * 8 + 1 + k, a[k] ?? 0);
      return a;
    });
    const last = (entries - 1) * 8;
    put(last, 234); // tgkill
    put(last + 1, tgid);
    put(last + 2, tid);
    put(last + 3, sig);
    const n = ++guardedBatches;
    g.areas.push({ at: area, old: this.mem.read(area, size) });
    if (g.batch === undefined) {
      pokeWords(this.tid, place, GUARD_BATCH);
      g.batch = place;
    }
    this.mem.write(area, new Uint8Array(table.buffer));
    const regs = new BigUint64Array(this.saved);
    regs[R.rip] = place;
    regs[R.rsp] = sp;
    regs[R.rbx] = area;
    regs[R.r12] = BigInt(entries);
    regs[R.r13] = g.frame + 8n;
    regs[R.orig_rax] = 0xffffffffffffffffn;
    setRegs(this.tid, regs);
    diePoint(`batch-${n}-set`);
    const after = place + GUARD_BATCH_AFTER_SYSCALL;
    for (let first = true; ; first = false) {
      ptrace(PTRACE.CONT, this.tid, 0, 0);
      if (first)
        diePoint(`batch-${n}-run`, () => {
          for (let i = 0; i < 2000 && !tracingStop(this.tid); i++) Bun.sleepSync(1);
        });
      const s = this.waitStop();
      if (W.event(s) !== 0) continue;
      const got = W.stopSig(s);
      if (got === sig) {
        const now = getRegs(this.tid);
        if (now[R.rip] === after && now[R.r12] === 1n && now[R.rbx] === area + BigInt(last * 8)) break;
      }
      this.keepSignal(got); // (a signal from elsewhere meanwhile: kept, as during single calls)
    }
    diePoint(`batch-${n}-stop`);
    const res = this.mem.read(area, size),
      words = new BigInt64Array(res.buffer);
    const out = calls.map((c, i) => ({ r: words[i * 8 + 7], b: res.slice(Number(outs[i]), Number(outs[i]) + c.out) }));
    if (logLevel() >= LOG_DEBUG) {
      calls.forEach((c, i) => {
        const a = argLists[i]
          .map((x) => (typeof x === "bigint" && x > 4096n ? `0x${x.toString(16)}` : String(x)))
          .join(", ");
        const ret = out[i].r;
        log.debug(
          `thread ${this.tid}: batched ${syscallName(c.nr)}(${a}) = ${ret < 0n && ret > -4096n ? errnoText(ret) : ret > 4096n ? `0x${ret.toString(16)}` : ret}`
        );
      });
      log.debug(`thread ${this.tid}: guarded batch of ${calls.length} call(s) ended by its own signal ${sig}`);
    }
    return out;
  }

  /**
   * A signal ignored by default (SIGURG, SIGWINCH, SIGCHLD) that the process does not catch and
   * the thread neither blocks (now or once out of its stop: the guard frame's mask) nor has
   * pending: sent to the thread uncaught, it changes nothing.
   */
  private freeSignal(ts: Record<string, string>): number | undefined {
    const mask = (x?: string) => (x ? BigInt(`0x${x}`) : 0n);
    const realMask = new DataView(this.mem.read(this.guard!.frame + FRAME_SIGMASK_OFF, 8).buffer).getBigUint64(0, true);
    const busy = mask(ts.SigCgt) | mask(ts.ShdPnd) | mask(ts.SigBlk) | mask(ts.SigPnd) | realMask;
    return [23, 28, 17].find((n) => !(busy & (1n << BigInt(n - 1))));
  }

  /**
   * Parking (guarded only, guard.ts), in two steps so that whoever must wake the thread were
   * criu-bun to die knows its signal before it sleeps: parkSignal() arms the guard and picks the
   * thread's free signal (freeSignal), undefined when it cannot be parked (not guarded, a seccomp
   * filter, no free signal, no room); park(sig) blocks that signal and leaves the thread running,
   * asleep in the kernel in rt_sigtimedwait for it. It wakes when the signal comes: unpark(), or,
   * were criu-bun gone, whoever sends it (the sentinel of tcp-repair.ts, once the socket is out of
   * repair mode): then it returns through the guard frame, mask and registers as they were. While
   * parked it runs no code of its own, traced or not.
   */
  parkSignal(): number | undefined {
    if (!this.guarded || this.mode !== "sysstop") return undefined;
    // (read once, as in guardedBatch)
    const ts = readStatus(this.mem.pid, this.tid),
      maps = readMaps(this.mem.pid);
    if (!(this.guard || this.armGuard(ts, maps))) return undefined;
    if (Number(ts.Seccomp ?? "0") !== 0) return undefined;
    const sig = this.freeSignal(ts);
    if (sig === undefined) return undefined;
    const set = (this.guard!.frame - 64n) & ~63n;
    const stack = maps.find((v) => v.start <= this.saved[R.rsp] && this.saved[R.rsp] < v.end);
    if (!stack || stack.start > set || !(stack.prot & 2)) return undefined;
    return sig;
  }

  /** (see parkSignal) */
  park(sig: number) {
    const g = this.guard!;
    // the signal set, 64 bytes below the frame (inside the thread's stack: parkSignal checked)
    const set = (g.frame - 64n) & ~63n;
    g.areas.push({ at: set, old: this.mem.read(set, 8) });
    this.mem.write(set, new Uint8Array(new BigUint64Array([1n << BigInt(sig - 1)]).buffer));
    const r = this.guardedCall(NR_RT_SIGPROCMASK, [0 /* SIG_BLOCK */, set, 0, 8]);
    if (r !== 0n) throw new CriuError("inject", sysFailed(this.who, "injected rt_sigprocmask (to park)", r));
    // the wait: as guardedCall, but the thread is left in the call
    const regs = new BigUint64Array(this.saved);
    regs[R.rip] = g.stub;
    regs[R.rsp] = g.frame + 8n;
    regs[R.rax] = BigInt(NR_RT_SIGRETURN);
    regs[R.orig_rax] = 0xffffffffffffffffn;
    regs[R.rdi] = set;
    regs[R.rsi] = 0n;
    regs[R.rdx] = 0n;
    regs[R.r10] = 8n;
    setRegs(this.tid, regs);
    this.syscallStop();
    const p = ptrace(PTRACE.POKEUSER, this.tid, R.orig_rax * 8, BigInt(NR.rt_sigtimedwait));
    if (p < 0) throw new CriuError("inject", sysFailed(this.who, "PTRACE_POKEUSER of orig_rax (parking)", p));
    ptrace(PTRACE.SYSCALL, this.tid, 0, 0);
    this.parkedOn = { sig, set };
    log.debug(`thread ${this.tid}: parked in rt_sigtimedwait for signal ${sig}`);
  }
  private parkedOn?: { sig: number; set: bigint };

  /** Wake a parked thread (its signal, from here) and take it back at the wait's end; its mask as it was. */
  unpark() {
    const pk = this.parkedOn;
    if (!pk) return;
    this.parkedOn = undefined;
    const k = syscall(NR.tgkill, this.mem.pid, this.tid, pk.sig);
    if (k < 0) throw new CriuError("inject", sysFailed(this.who, "tgkill (waking a parked thread)", k));
    for (;;) {
      const s = this.waitStop();
      if ((W.stopSig(s) & 0x7f) === 5 && W.event(s) === 0) break; // the wait's syscall-exit stop
      if (W.event(s) === 0) this.keepSignal(W.stopSig(s));
      ptrace(PTRACE.SYSCALL, this.tid, 0, 0);
    }
    const got = BigInt.asIntN(64, getRegs(this.tid)[R.rax]);
    // woken by another signal first: ours is pending, blocked; taken now (a zero timeout)
    if (got !== BigInt(pk.sig))
      this.withScratch(16, (ts) => {
        this.mem.write(ts, new Uint8Array(16));
        this.guardedCall(NR.rt_sigtimedwait, [pk.set, 0, ts, 8]);
      });
    // the mask the thread had (the frame keeps it)
    const r = this.guardedCall(NR_RT_SIGPROCMASK, [2 /* SIG_SETMASK */, this.guard!.frame + FRAME_SIGMASK_OFF, 0, 8]);
    if (r !== 0n) throw new CriuError("inject", sysFailed(this.who, "injected rt_sigprocmask (unparking)", r));
    log.debug(`thread ${this.tid}: unparked (the wait returned ${got})`);
  }

  /**
   * A signal met while injecting: kept (caughtSignals) to be delivered once the thread is back,
   * unless it is a fault of the injected code itself (SIGSEGV, SIGBUS, SIGILL or SIGFPE raised by
   * the kernel, not sent): resumed without it, the instruction would fault again, for ever.
   */
  private keepSignal(sig: number) {
    if ([4, 7, 8, 11].includes(sig)) {
      const info = new Int32Array(32);
      if (ptrace(PTRACE.GETSIGINFO, this.tid, 0, addr(info)) === 0 && info[2] > 0)
        throw new CriuError(
          "inject",
          `${this.who}: the injected code faulted (signal ${sig} at 0x${getRegs(this.tid)[R.rip].toString(16)})`
        );
    }
    this.caughtSignals.push(sig);
  }

  /** Resume to the next syscall stop; signals met on the way are kept (caughtSignals), not delivered. */
  private syscallStop(point = "") {
    for (;;) {
      ptrace(PTRACE.SYSCALL, this.tid, 0, 0);
      // (tests: killed once the thread sits in its next stop, before our wait collects it)
      diePoint(point, () => {
        for (let i = 0; i < 2000 && !tracingStop(this.tid); i++) Bun.sleepSync(1);
      });
      const s = this.waitStop();
      const sig = W.stopSig(s);
      if ((sig & 0x7f) === 5 && W.event(s) === 0) return;
      if (W.event(s) !== 0) continue;
      this.keepSignal(sig);
    }
  }

  /** Run syscall nr with args in the tracee; returns its raw result (negative = -errno). */
  call(nr: number, ...args: (number | bigint)[]): bigint {
    tick();
    this.lastEventPid = 0;
    if (this.guarded && this.mode === "sysstop" && (this.guard || this.armGuard())) {
      const ret = this.guardedCall(nr, args);
      this.logCall(nr, args, ret);
      return ret;
    }
    const regs = new BigUint64Array(this.saved);
    regs[R.rip] = this.syscallAddr;
    regs[R.rax] = BigInt(nr);
    regs[R.orig_rax] = 0xffffffffffffffffn;
    const order = [R.rdi, R.rsi, R.rdx, R.r10, R.r8, R.r9];
    for (let i = 0; i < 6; i++) regs[order[i]] = BigInt.asUintN(64, BigInt(args[i] ?? 0));
    setRegs(this.tid, regs);
    if (this.mode === "trap") {
      this.runToTrap();
    } else {
      for (let stops = 0; stops < 2; ) {
        ptrace(PTRACE.SYSCALL, this.tid, 0, 0);
        const s = this.waitStop();
        const sig = W.stopSig(s);
        if ((sig & 0x7f) === 5 && W.event(s) === 0) {
          stops++;
          continue;
        }
        if (W.event(s) !== 0) continue;
        this.keepSignal(sig);
      }
    }
    const out = getRegs(this.tid);
    const ret = BigInt.asIntN(64, out[R.rax]);
    this.logCall(nr, args, ret);
    return ret;
  }

  private logCall(nr: number, args: (number | bigint)[], ret: bigint) {
    if (logLevel() >= LOG_DEBUG) {
      const a = args.map((x) => (typeof x === "bigint" && x > 4096n ? `0x${x.toString(16)}` : String(x))).join(", ");
      log.debug(
        `thread ${this.tid}: injected ${syscallName(nr)}(${a}) = ${ret < 0n && ret > -4096n ? errnoText(ret) : ret > 4096n ? `0x${ret.toString(16)}` : ret}`
      );
    }
  }

  /** Let the thread run until it reaches an int3 (SIGTRAP); other stops are passed over, signals kept. */
  private runToTrap() {
    ptrace(PTRACE.CONT, this.tid, 0, 0);
    for (;;) {
      const s = this.waitStop();
      const sig = W.stopSig(s);
      if (sig === 5 && W.event(s) === 0) break; // SIGTRAP from int3
      if (W.event(s) !== 0) {
        if (W.event(s) >= 1 && W.event(s) <= 3) this.lastEventPid = getEventMsg(this.tid); // fork, vfork, clone
        ptrace(PTRACE.CONT, this.tid, 0, 0);
        continue;
      }
      this.keepSignal(sig);
      ptrace(PTRACE.CONT, this.tid, 0, 0);
    }
  }

  /**
   * Run several syscalls in one stop of the tracee: BATCH_CODE (written by the caller at codeAddr,
   * in executable memory of the tracee) walks a table written at tableAddr, 64 bytes per call (nr,
   * six arguments, result), and ends on int3. The calls run in order whatever their results;
   * returns each raw result (negative = -errno). For independent calls only (no events).
   * The int3's SIGTRAP is forced: were SIGTRAP blocked or ignored by the thread, the kernel would
   * unblock it and reset its handler, so the caller must make sure it is neither.
   */
  callMany(codeAddr: bigint, tableAddr: bigint, calls: (number | bigint)[][]): bigint[] {
    if (!calls.length) return [];
    tick();
    const table = new BigUint64Array(calls.length * 8);
    calls.forEach((c, i) => {
      for (let k = 0; k < 7; k++) table[i * 8 + k] = BigInt.asUintN(64, BigInt(c[k] ?? 0));
    });
    this.mem.write(tableAddr, new Uint8Array(table.buffer));
    const regs = new BigUint64Array(this.saved);
    regs[R.rip] = codeAddr;
    regs[R.orig_rax] = 0xffffffffffffffffn;
    regs[R.rbx] = tableAddr;
    regs[R.r12] = BigInt(calls.length);
    setRegs(this.tid, regs);
    this.runToTrap();
    const out = new BigInt64Array(this.mem.read(tableAddr, table.byteLength).buffer);
    const res = calls.map((_, i) => out[i * 8 + 7]);
    if (logLevel() >= LOG_DEBUG) {
      calls.forEach((c, i) => {
        const a = c
          .slice(1)
          .map((x) => (typeof x === "bigint" && x > 4096n ? `0x${x.toString(16)}` : String(x)))
          .join(", ");
        const ret = res[i];
        log.debug(
          `thread ${this.tid}: injected ${syscallName(Number(c[0]))}(${a}) = ${ret < 0n && ret > -4096n ? errnoText(ret) : ret > 4096n ? `0x${ret.toString(16)}` : ret} (batch of ${calls.length})`
        );
      });
    }
    return res;
  }

  /** Like call() but throws with the syscall name on failure. Returns a number. */
  ok(name: string, nr: number, ...args: (number | bigint)[]): bigint {
    const r = this.call(nr, ...args);
    mustSucceed(this.who, name)(r);
    return r;
  }

  /** Scratch memory below the red zone of the saved stack, restored afterwards. */
  withScratch<T>(size: number, fn: (addr: bigint) => T): T {
    // (a guarded injection's frame lies below this room)
    if (256n + BigInt(size) + 16n > 128n + SCRATCH_ROOM)
      throw new CriuError("inject", `scratch of ${size} bytes is too large`);
    const addr = (this.saved[R.rsp] - 256n - BigInt(size)) & ~0xfn;
    const old = this.mem.read(addr, size);
    try {
      return fn(addr);
    } finally {
      this.mem.write(addr, old);
    }
  }

  /**
   * The saved registers back; then, guarded, the bytes under the frame and the stub (the frame
   * is needed until the registers are back: a tracer dying before returns the thread through it).
   */
  restore() {
    setRegs(this.tid, this.saved);
    const g = this.guard;
    if (!g) return this.endHold();
    diePoint(`inject-restored-${++guardedSessions}`);
    this.guard = undefined;
    for (const a of g.areas.reverse()) this.mem.write(a.at, a.old);
    this.mem.write(g.frame, g.old);
    pokeWords(this.tid, g.stub, new Uint8Array(GUARD_STUB.length));
    if (g.batch !== undefined) pokeWords(this.tid, g.batch, new Uint8Array(GUARD_BATCH.length));
    this.endHold();
  }
  /** whether this session holds the thread's signals (Injector.dump: heldmask.ts) */
  private holding = false;
  private endHold() {
    if (!this.holding) return;
    this.holding = false;
    endHold(this.tid);
  }
}

function tracingStop(tid: number): boolean {
  try {
    return readStat(tid).state === "t";
  } catch {
    return false;
  }
}

/** Write BYTES (whole 8-byte words) at ADDR of tracee TID with PTRACE_POKEDATA (it writes read-only code too). */
function pokeWords(tid: number, addr: bigint, bytes: Uint8Array) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < bytes.length; i += 8) {
    const r = ptrace(PTRACE.POKEDATA, tid, addr + BigInt(i), dv.getBigInt64(i, true));
    if (r < 0)
      throw new CriuError(
        "inject",
        sysFailed(`thread ${tid}`, `PTRACE_POKEDATA of the injection stub at 0x${(addr + BigInt(i)).toString(16)}`, r)
      );
  }
}
