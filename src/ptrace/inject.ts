// Running system calls inside a stopped tracee (our compel, without a parasite).
//  - "sysstop" mode (dump): rip points at an existing `syscall` instruction of the target; we step
//    through the syscall-entry and syscall-exit stops with PTRACE_SYSCALL.
//  - "trap" mode (restore): rip points at our trampoline `syscall; int3`; one PTRACE_CONT, one SIGTRAP.
import { getRegs, setRegs, ptrace, PTRACE, R, wait4Raw, W, type Regs, __WALL, describeStatus, getEventMsg } from "../sys/ptrace";
import { tick } from "../restore/watchdog";
import { openFd, closeFd, preadFull, pwriteFull, O } from "../sys/mem";
import { readMaps } from "../sys/proc";
import { CriuError, log, logLevel, LOG_DEBUG } from "../log";
import { syscallName } from "../sys/nr";
import { errnoText } from "../sys/errno";

export class RemoteMem {
  fd: number;
  constructor(public pid: number) { this.fd = openFd(`/proc/${pid}/mem`, O.RDWR | O.CLOEXEC); }
  read(addr: bigint, len: number): Uint8Array {
    const b = new Uint8Array(len);
    const n = preadFull(this.fd, b, addr, len, 0, `read memory of ${this.pid} at 0x${addr.toString(16)}`);
    if (n !== len) throw new CriuError("mem", `short read of ${this.pid} memory at 0x${addr.toString(16)}`);
    return b;
  }
  write(addr: bigint, data: Uint8Array, off = 0, len = data.length - off) {
    pwriteFull(this.fd, data, addr, len, off, `write memory of ${this.pid} at 0x${addr.toString(16)}`);
  }
  close() { if (this.fd >= 0) closeFd(this.fd); this.fd = -1; }
}

export type InjectMode = "sysstop" | "trap";

/**
 * The code Injector.callMany() runs: rbx = table, r12 = count; per 64-byte entry
 * rax = [rbx], rdi..r9 = [rbx+8..48], syscall, [rbx+56] = rax; then int3.
 */
export const BATCH_CODE = new Uint8Array([
  0x4d, 0x85, 0xe4,             // test r12, r12
  0x74, 0x2a,                   // jz done
  0x48, 0x8b, 0x03,             // mov rax, [rbx]
  0x48, 0x8b, 0x7b, 0x08,       // mov rdi, [rbx+8]
  0x48, 0x8b, 0x73, 0x10,       // mov rsi, [rbx+16]
  0x48, 0x8b, 0x53, 0x18,       // mov rdx, [rbx+24]
  0x4c, 0x8b, 0x53, 0x20,       // mov r10, [rbx+32]
  0x4c, 0x8b, 0x43, 0x28,       // mov r8, [rbx+40]
  0x4c, 0x8b, 0x4b, 0x30,       // mov r9, [rbx+48]
  0x0f, 0x05,                   // syscall
  0x48, 0x89, 0x43, 0x38,       // mov [rbx+56], rax
  0x48, 0x83, 0xc3, 0x40,       // add rbx, 64
  0x49, 0xff, 0xcc,             // dec r12
  0xeb, 0xd1,                   // jmp (test)
  0xcc,                         // done: int3
]);

/** One syscall of a dump-side batch: its arguments given the address of its out buffer (out bytes). */
export interface OutCall { nr: number; args: (buf: bigint) => (number | bigint)[]; out: number }
/**
 * One syscall of a restore-side batch: `data` (64-bit words) is copied into the process first and
 * its address given to args; `check` sees the call's result, in the order the calls were listed.
 */
export interface InCall { nr: number; data: bigint[]; args: (data: bigint) => (number | bigint)[]; check: (r: bigint) => void }

export class Injector {
  saved: Regs;
  /** signals that arrived while we were injecting; re-delivered by the caller */
  caughtSignals: number[] = [];
  /** PID (in criu-bun's namespace) of the last task this one forked or cloned during a call */
  lastEventPid = 0;
  constructor(public tid: number, public syscallAddr: bigint, public mode: InjectMode, public mem: RemoteMem) {
    this.saved = getRegs(tid);
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
      if (r < 0) throw new CriuError("inject", `wait4(${this.tid}) failed (${-r})`);
      if (!W.stopped(status)) throw new CriuError("inject", `thread ${this.tid} ${describeStatus(status)} during an injected syscall`);
      return status;
    }
  }

  /** Run syscall nr with args in the tracee; returns its raw result (negative = -errno). */
  call(nr: number, ...args: (number | bigint)[]): bigint {
    tick();
    this.lastEventPid = 0;
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
      for (let stops = 0; stops < 2;) {
        ptrace(PTRACE.SYSCALL, this.tid, 0, 0);
        const s = this.waitStop();
        const sig = W.stopSig(s);
        if ((sig & 0x7f) === 5 && W.event(s) === 0) { stops++; continue; }
        if (W.event(s) !== 0) continue;
        this.caughtSignals.push(sig);
      }
    }
    const out = getRegs(this.tid);
    const ret = BigInt.asIntN(64, out[R.rax]);
    if (logLevel() >= LOG_DEBUG) {
      const a = args.map((x) => (typeof x === "bigint" && x > 4096n ? `0x${x.toString(16)}` : String(x))).join(", ");
      log.debug(`thread ${this.tid}: injected ${syscallName(nr)}(${a}) = ${ret < 0n && ret > -4096n ? `-errno ${-ret}` : ret > 4096n ? `0x${ret.toString(16)}` : ret}`);
    }
    return ret;
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
      this.caughtSignals.push(sig);
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
    calls.forEach((c, i) => { for (let k = 0; k < 7; k++) table[i * 8 + k] = BigInt.asUintN(64, BigInt(c[k] ?? 0)); });
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
        const a = c.slice(1).map((x) => (typeof x === "bigint" && x > 4096n ? `0x${x.toString(16)}` : String(x))).join(", ");
        const ret = res[i];
        log.debug(`thread ${this.tid}: injected ${syscallName(Number(c[0]))}(${a}) = ${ret < 0n && ret > -4096n ? `-errno ${-ret}` : ret > 4096n ? `0x${ret.toString(16)}` : ret} (batch of ${calls.length})`);
      });
    }
    return res;
  }

  /** Like call() but throws with the syscall name on failure. Returns a number. */
  ok(name: string, nr: number, ...args: (number | bigint)[]): bigint {
    const r = this.call(nr, ...args);
    if (r < 0n && r > -4096n) throw new CriuError("inject", `${name} in ${this.tid} failed (${errnoText(-r)})`);
    return r;
  }

  /** Scratch memory below the red zone of the saved stack, restored afterwards. */
  withScratch<T>(size: number, fn: (addr: bigint) => T): T {
    const addr = (this.saved[R.rsp] - 256n - BigInt(size)) & ~0xfn;
    const old = this.mem.read(addr, size);
    try { return fn(addr); } finally { this.mem.write(addr, old); }
  }

  restore() { setRegs(this.tid, this.saved); }
}
