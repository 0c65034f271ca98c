// An undo that outlives criu-bun: a small child process that puts back, with a few raw system
// calls, a change criu-bun makes in a process that runs on (a live socket in TCP repair mode), if
// criu-bun dies before it puts it back itself. SIGKILL gives criu-bun no chance to clean up; the
// kernel closes its fds, and that is what the child waits for.
//
// A machine-code stub (no JavaScript, no library code in the child) blocks every signal, then
// clone(CLONE_VM | SIGCHLD): the child shares our memory (it only reads its page below) and gets a
// copy of our fd table, in which it closes every fd but the pipe's read end and the ones its undo
// needs (so it holds no lock socket, no image and no pidfd of ours), leaves our session (a kill of
// our process group does not take it), moves to / (it holds no directory of ours busy), says so
// (a word of its page set to 1, a futex wake on it), and reads the pipe:
//   - one byte: criu-bun put the state back itself (disarm): the child exits;
//   - end of file: criu-bun is gone (or gave up): the child runs its undo calls, then exits.
// The pipe is close-on-exec at both ends, so no program criu-bun starts keeps the write end open.
// The parent restores its signal mask and returns the child's pid; disarm() reaps it.
//
// keepMemoryPastExit() arms one with nothing to undo at criu-bun's very end: the child shares our
// memory, so when criu-bun exits the kernel does not tear that memory down (~47 MiB resident for a
// small dump, and every page table of it: 3-14 ms on this VM, where each page table change traps
// to the hypervisor) before telling criu-bun's parent it has exited. The child sees the end of
// file when the last of our threads has closed the fd table (after each of them dropped the
// memory), exits and frees it, after criu-bun's parent has its exit status. criu-bun waits until
// the child has closed its copies of our fds: a parent reading criu-bun's stdout or stderr to the
// end (a shell's $(...), a test's pipes) sees the end as criu-bun exits, not when the child happens
// to be scheduled (up to 4.5 ms later at load 9-12).
import { toArrayBuffer, type Pointer } from "bun:ffi";
import { libc } from "./libc";
import { addr, callCode, codePage, keepAlive, syscall } from "./syscall";
import { NR } from "./nr";
import { CLONE } from "./flags";
import { assemble, cloneBlocked, d32, movEax, parentSide, syscallOp } from "./asm";
import { SysError } from "./errno";
import { thisThreadOnCpus } from "./affinity";
import { seize, interrupt, detach, PTRACE_O } from "./ptrace";

/** One undo call: a syscall number and up to six arguments; `{ int32 }` passes the address of that int. */
interface UndoCall {
  nr: number;
  args: (number | bigint | { int32: number })[];
}

// The page each sentinel owns (read and written by the stub, read by the child until it exits):
const P_FLAGS = 0, // clone flags
  P_STACK = 8, // the child's stack top (never used: no call, no push in the child)
  P_RFD = 16, // the pipe's read end
  P_NRANGES = 24, // close_range ranges
  P_NUNDO = 32, // undo calls
  P_RESULT = 40, // clone's result
  P_ALL = 48, // an all-ones signal set
  P_OLD = 56, // the parent's old signal mask
  P_BYTE = 64, // the byte read
  P_ROOT = 72, // "/": the child's working directory
  P_READY = 80, // set to 1 (and woken) by the child once it holds only the fds it keeps
  P_RANGES = 128, // [first, last] u64 pairs (at most MAX_RANGES)
  P_UNDO = 512, // 64-byte entries: nr, six arguments, result (as the guarded batch's loop reads them)
  P_INTS = 3840, // the ints the undo calls point to (8 bytes each)
  PAGE = 4096;
const MAX_RANGES = 16,
  MAX_UNDO = (P_INTS - P_UNDO) / 64;

const FUTEX_WAIT_PRIVATE = 128,
  FUTEX_WAKE_PRIVATE = 129;
const CLONE_AT = { all: P_ALL, old: P_OLD, flags: P_FLAGS, stack: P_STACK, result: P_RESULT };
// biome-ignore format: machine code, one instruction a line
const STUB = assemble([
  [0x53],                                   // push rbx
  [0x41, 0x54],                             // push r12
  [0x48, 0x89, 0xfb],                       // mov rbx, rdi              (the page)
  ...cloneBlocked(CLONE_AT),
  // the child: close every fd but the kept ones (r12 = ranges left, rbx walks them)
  [0x4c, 0x8b, 0xa3, ...d32(P_NRANGES)],    // mov r12, [rbx+P_NRANGES]
  [0x48, 0x8d, 0x8b, ...d32(P_RANGES)],     // lea rcx, [rbx+P_RANGES]
  "ranges",
  [0x4d, 0x85, 0xe4],                       // test r12, r12
  { jump: [0x0f, 0x84], to: "ranged" },     // jz ranged
  [0x48, 0x8b, 0x39],                       // mov rdi, [rcx]
  [0x48, 0x8b, 0x71, 0x08],                 // mov rsi, [rcx+8]
  [0x31, 0xd2],                             // xor edx, edx
  movEax(NR.close_range),
  [0x49, 0x89, 0xc8],                       // mov r8, rcx              (syscall clobbers rcx)
  syscallOp,
  [0x4c, 0x89, 0xc1],                       // mov rcx, r8
  [0x48, 0x83, 0xc1, 0x10],                 // add rcx, 16
  [0x49, 0xff, 0xcc],                       // dec r12
  { jump: [0xe9], to: "ranges" },           // jmp ranges
  "ranged",
  movEax(NR.setsid),
  syscallOp,
  movEax(NR.chdir),
  [0x48, 0x8d, 0xbb, ...d32(P_ROOT)],       // lea rdi, [rbx+P_ROOT]
  syscallOp,
  [0xc7, 0x83, ...d32(P_READY), 1, 0, 0, 0], // mov dword [rbx+P_READY], 1
  movEax(NR.futex),
  [0x48, 0x8d, 0xbb, ...d32(P_READY)],      // lea rdi, [rbx+P_READY]
  [0xbe, ...d32(FUTEX_WAKE_PRIVATE)],       // mov esi, FUTEX_WAKE | FUTEX_PRIVATE_FLAG
  [0xba, 1, 0, 0, 0],                       // mov edx, 1
  syscallOp,
  "read",
  [0x31, 0xc0],                             // xor eax, eax             (read)
  [0x48, 0x8b, 0xbb, ...d32(P_RFD)],        // mov rdi, [rbx+P_RFD]
  [0x48, 0x8d, 0xb3, ...d32(P_BYTE)],       // lea rsi, [rbx+P_BYTE]
  [0xba, 1, 0, 0, 0],                       // mov edx, 1
  syscallOp,
  [0x48, 0x83, 0xf8, 0xfc],                 // cmp rax, -EINTR
  { jump: [0x0f, 0x84], to: "read" },       // je read
  [0x48, 0x83, 0xf8, 0x01],                 // cmp rax, 1
  { jump: [0x0f, 0x84], to: "exit" },       // je exit                 (disarmed)
  // criu-bun is gone: the undo calls, each entry nr, six arguments, result
  [0x4c, 0x8b, 0xa3, ...d32(P_NUNDO)],      // mov r12, [rbx+P_NUNDO]
  [0x48, 0x8d, 0x9b, ...d32(P_UNDO)],       // lea rbx, [rbx+P_UNDO]
  "undo",
  [0x4d, 0x85, 0xe4],                       // test r12, r12
  { jump: [0x0f, 0x84], to: "exit" },       // jz exit
  [0x48, 0x8b, 0x03],                       // mov rax, [rbx]
  [0x48, 0x8b, 0x7b, 0x08],                 // mov rdi, [rbx+8]
  [0x48, 0x8b, 0x73, 0x10],                 // mov rsi, [rbx+16]
  [0x48, 0x8b, 0x53, 0x18],                 // mov rdx, [rbx+24]
  [0x4c, 0x8b, 0x53, 0x20],                 // mov r10, [rbx+32]
  [0x4c, 0x8b, 0x43, 0x28],                 // mov r8, [rbx+40]
  [0x4c, 0x8b, 0x4b, 0x30],                 // mov r9, [rbx+48]
  syscallOp,
  [0x48, 0x89, 0x43, 0x38],                 // mov [rbx+56], rax
  [0x48, 0x83, 0xc3, 0x40],                 // add rbx, 64
  [0x49, 0xff, 0xcc],                       // dec r12
  { jump: [0xe9], to: "undo" },             // jmp undo
  "exit",
  movEax(NR.exit),
  [0x31, 0xff],                             // xor edi, edi
  syscallOp,
  ...parentSide(CLONE_AT),
  [0x41, 0x5c],                             // pop r12
  [0x5b],                                   // pop rbx
  [0xc3],                                   // ret
]);

let stubAt: bigint | undefined;

/** The stub's page (read + execute), written once. */
function stub(): bigint {
  stubAt ??= codePage([[0, STUB]], "the sentinel's stub");
  return stubAt;
}

/** What armUndo returns: disarm() when criu-bun has put the state back itself. */
interface Sentinel {
  /** the child's pid (for the logs) */
  pid: number;
  /** the state is back: the child exits without its undo; reaped here */
  disarm(): void;
  /** the child killed without its undo (it may be stopped: a held sentinel); reaped here */
  cancel(): void;
  /** criu-bun gives up while it runs: the child runs its undo now, as if criu-bun had died (then
   *  reap() it) */
  fire(): void;
  /** after fire(): wait until `deadline` (performance.now()) for the child to have run its undo and
   *  exited, then reap it; false if it had not (killed then: its undo may not have run) */
  reap(deadline: number): boolean;
}

const __WALL = 0x40000000;
/** wait4 on pid until it has stopped (true) or is gone (false) */
function waitStopOrGone(pid: number): boolean {
  const st = new Int32Array(1);
  for (;;) {
    const r = syscall(NR.wait4, pid, addr(st), __WALL, 0);
    if (r === -4 /* EINTR */) continue;
    if (r < 0) return false;
    if ((st[0] & 0xff) === 0x7f) return true; // WIFSTOPPED
    return false;
  }
}

/**
 * A sentinel that may act only after a moment to come (held): traced by this thread with
 * PTRACE_O_EXITKILL and kept stopped, so a criu-bun that dies before that moment takes it along
 * (it never runs its undo); let go (free) at that moment, it acts as any sentinel from then on;
 * cancel kills it without its undo. Returns the sentinel with these, or throws (killed, reaped).
 */
export function armHeldUndo(keep: number[], undo: UndoCall[]) {
  const s = armUndo(keep, undo, true);
  let r = seize(s.pid, PTRACE_O.EXITKILL);
  if (r >= 0) r = interrupt(s.pid);
  if (r < 0 || !waitStopOrGone(s.pid)) {
    s.cancel();
    throw new SysError("ptrace (holding a sentinel)", r < 0 ? -r : 3 /* ESRCH */);
  }
  let held = true;
  return {
    pid: s.pid,
    /** from now on a criu-bun that dies has the sentinel run its undo */
    free() {
      if (!held) return;
      held = false;
      const d = detach(s.pid);
      if (d < 0) throw new SysError("ptrace(DETACH) of a sentinel", -d);
    },
    /** the state is back: the sentinel exits without its undo */
    disarm() {
      this.free();
      s.disarm();
    },
    cancel: () => s.cancel(),
  };
}

/** The CPU this thread runs on, alone in a mask of the kernel's length (undefined: not known). */
function thisCpuOnly(mine: Uint8Array): Uint8Array | undefined {
  const cpu = new Uint32Array(1);
  if (syscall(NR.getcpu, addr(cpu), 0, 0) !== 0 || cpu[0] >> 3 >= mine.length) return undefined;
  const one = new Uint8Array(mine.length);
  one[cpu[0] >> 3] = 1 << (cpu[0] & 7);
  return one;
}

/**
 * Start a sentinel that runs `undo` (on the fds in `keep`, which it holds until it exits) if this
 * process dies before disarm(). The undo calls must be harmless if the state is already back (a
 * kill between criu-bun's own undo and disarm() runs both). waitReady: return only once the child
 * has closed every other fd (or after 2 s, or if it is gone).
 */
export function armUndo(keep: number[], undo: UndoCall[], waitReady = false): Sentinel {
  const nInts = undo.reduce((n, c) => n + c.args.filter((a) => typeof a === "object").length, 0);
  if (undo.length > MAX_UNDO || keep.length > MAX_RANGES - 2 || P_INTS + nInts * 8 > PAGE)
    throw new Error(
      `armUndo: at most ${MAX_UNDO} calls, ${MAX_RANGES - 2} fds and ${(PAGE - P_INTS) / 8} int arguments`
    );
  const pfds = new Int32Array(2);
  const O_CLOEXEC = 0o2000000;
  const pr = syscall(NR.pipe2, addr(pfds), O_CLOEXEC);
  if (pr < 0) throw new SysError("pipe2 (a sentinel's pipe)", -pr);
  const [rfd, wfd] = [pfds[0], pfds[1]];
  const map = libc.mmap(null, PAGE, 3 /* RW */, 0x22 /* PRIVATE|ANONYMOUS */, -1, 0) as Pointer;
  if (!map || Number(map) === -1) {
    syscall(NR.close, rfd);
    syscall(NR.close, wfd);
    throw new SysError("mmap (a sentinel's page)", 12);
  }
  const base = BigInt(Number(map));
  const page = new DataView(toArrayBuffer(map, 0, PAGE));
  const u64 = (at: number, v: number | bigint) => page.setBigUint64(at, BigInt.asUintN(64, BigInt(v)), true);
  u64(P_FLAGS, CLONE.VM | 17 /* SIGCHLD */);
  u64(P_STACK, base + BigInt(PAGE));
  u64(P_RFD, rfd);
  u64(P_ALL, 0xffffffffffffffffn);
  page.setUint16(P_ROOT, 0x2f, true); // "/\0"
  // every fd but these is closed in the child: ranges between them
  const kept = [...new Set([rfd, ...keep])].sort((a, b) => a - b);
  const ranges: [number, number][] = [];
  let from = 0;
  for (const k of kept) {
    if (k > from) ranges.push([from, k - 1]);
    from = k + 1;
  }
  ranges.push([from, 0xffffffff]);
  u64(P_NRANGES, ranges.length);
  ranges.forEach(([a, b], i) => {
    u64(P_RANGES + i * 16, a);
    u64(P_RANGES + i * 16 + 8, b);
  });
  let ints = P_INTS;
  u64(P_NUNDO, undo.length);
  undo.forEach((c, i) => {
    const e = P_UNDO + i * 64;
    u64(e, c.nr);
    c.args.forEach((a, k) => {
      if (typeof a === "object") {
        page.setInt32(ints, a.int32, true);
        u64(e + 8 + k * 8, base + BigInt(ints));
        ints += 8;
      } else u64(e + 8 + k * 8, a);
    });
  });
  // waitReady: the child is made on this thread's CPU only (it inherits the mask; ours is given
  // back right after), which this thread leaves free as it waits. Left to the scheduler, a new
  // process goes to the least loaded CPU, and there it may wait behind a busy process for a whole
  // time slice before it runs its first instructions: up to 8 ms of criu-bun's exit, with a
  // CPU-bound process on the other CPU of 2 (sched timehist: 3.9 ms of scheduling delay).
  const giveBack = waitReady ? thisThreadOnCpus(thisCpuOnly) : undefined;
  const r = Number(BigInt.asIntN(64, callCode(stub(), base)));
  giveBack?.();
  if (r < 0) {
    syscall(NR.close, rfd);
    syscall(NR.close, wfd);
    syscall(NR.munmap, base, PAGE);
    throw new SysError("clone (a sentinel)", -r);
  }
  syscall(NR.close, rfd);
  if (waitReady) {
    const ts = new BigInt64Array([0n, 100_000_000n]); // 100 ms per wait
    const info = new Int32Array(32); // siginfo_t: si_pid at [3], 0 while the child runs
    for (let i = 0; i < 20 && page.getInt32(P_READY, true) !== 1; i++) {
      syscall(NR.futex, base + BigInt(P_READY), FUTEX_WAIT_PRIVATE, 0, addr(ts));
      // (gone without saying so, killed: nothing to wait for; WNOWAIT leaves it unreaped)
      const P_PID = 1,
        WEXITED = 4,
        WNOHANG = 1,
        WNOWAIT = 0x01000000,
        __WALL = 0x40000000;
      if (syscall(NR.waitid, P_PID, r, addr(info), WEXITED | WNOHANG | WNOWAIT | __WALL, 0) < 0 || info[3] !== 0) break;
    }
    keepAlive(ts, info);
  }
  let firedPidfd = -1;
  /** the child exiting (or gone) reaped, and its page released */
  const reaped = () => {
    const st = new Int32Array(1);
    while (syscall(NR.wait4, r, addr(st), __WALL, 0) === -4 /* EINTR */);
    syscall(NR.munmap, base, PAGE);
  };
  return {
    pid: r,
    disarm() {
      const one = new Uint8Array([1]);
      syscall(NR.write, wfd, addr(one), 1);
      syscall(NR.close, wfd);
      reaped();
    },
    cancel() {
      // SIGKILL first: with the pipe's write end closed first the child would run its undo
      syscall(NR.kill, r, 9);
      while (waitStopOrGone(r));
      syscall(NR.close, wfd);
      syscall(NR.munmap, base, PAGE);
    },
    fire() {
      // the end of file it waits for (every other holder of the write end, a sentinel armed later,
      // closed it as it started); it exits once its undo has run. Its pidfd turns readable then
      firedPidfd = syscall(NR.pidfd_open, r, 0);
      syscall(NR.close, wfd);
    },
    reap(deadline: number) {
      // one that still waits at the deadline (another holder of the write end) is killed, never
      // waited for without end
      let exited = true;
      if (firedPidfd >= 0) {
        const pfd = new Int32Array([firedPidfd, 1 /* POLLIN */]);
        let n: number;
        do {
          n = syscall(NR.poll, addr(pfd), 1, Math.max(0, Math.ceil(deadline - performance.now())));
        } while (n === -4 /* EINTR */);
        syscall(NR.close, firedPidfd);
        if (n === 0) {
          exited = false;
          syscall(NR.kill, r, 9);
        }
      }
      reaped();
      return exited;
    },
  };
}

/**
 * A sentinel with nothing to undo, armed as criu-bun ends (see the top of this file): the kernel
 * frees criu-bun's memory after its parent has its exit status, not before. Its pid; never disarmed
 * (it exits when criu-bun has).
 */
export function keepMemoryPastExit(): { pid: number; ms: number } {
  const t0 = performance.now();
  const pid = armUndo([], [], true).pid;
  return { pid, ms: performance.now() - t0 };
}
