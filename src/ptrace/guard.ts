// The safety net of the dump's injected syscalls: a thread whose tracer (criu-bun) dies at any
// moment of an injection puts its own registers back and runs on as before.
//
// Before the first injected call of a session, a signal frame (rt_sigframe: ucontext with the
// thread's registers, as the kernel would resume them, its FPU/xsave state and signal mask) is
// written on the thread's stack, below the red zone and the scratch buffers, and a stub
//     syscall; mov $15, %eax; syscall        (the call, then rt_sigreturn)
// into the unused tail of the process's vDSO (zero padding after its ELF image: never executed,
// and the write is private to the process, a copy-on-write of that page). Every injected call
// starts with rip at the stub, rsp at the frame and rax = rt_sigreturn; the tracer turns the
// call into the real one at its syscall-entry stop (orig_rax). So a thread let go by a dying
// tracer: before that stop, returns at once to its saved state (rt_sigreturn); at or after it,
// finishes the call (or has it restarted) and then returns to its saved state. The first call of
// a session is an rt_sigprocmask that stores the thread's real signal mask in the frame (a thread
// in ppoll/sigsuspend has a temporary one while stopped). On the normal path the tracer puts the
// saved registers back itself (Injector.restore), then the frame's and the stub's old bytes.
//
// Not guarded (the old way, a dying tracer leaves the thread in the injected state): no vDSO or no
// zero tail in it, a thread with a user shadow stack (rt_sigreturn would check it), a non-64-bit
// thread, or a stack with no room mapped below the red zone for the frame.
import { cpuid } from "../sys/syscall";
import { R, type Regs } from "../sys/ptrace";
import { type Vma } from "../sys/proc";
import { fixupRestart } from "./restart";

/** syscall; mov $15, %eax; syscall; padding to 16 bytes */
export const GUARD_STUB = new Uint8Array([
  0x0f, 0x05, 0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc,
]);

/**
 * The loop both batches run (inject.ts BATCH_CODE, GUARD_BATCH): rbx = a table of 64-byte entries,
 * r12 = their count; per entry rax = [rbx], rdi..r9 = [rbx+8..48], syscall, [rbx+56] = rax; then
 * it falls through to the code after it ("done").
 */
// biome-ignore format: machine code, one instruction a line
export const BATCH_LOOP = [
  0x4d, 0x85, 0xe4, //       test r12, r12
  0x74, 0x2a, //             jz done
  0x48, 0x8b, 0x03, //       mov rax, [rbx]
  0x48, 0x8b, 0x7b, 0x08, // mov rdi, [rbx+8]
  0x48, 0x8b, 0x73, 0x10, // mov rsi, [rbx+16]
  0x48, 0x8b, 0x53, 0x18, // mov rdx, [rbx+24]
  0x4c, 0x8b, 0x53, 0x20, // mov r10, [rbx+32]
  0x4c, 0x8b, 0x43, 0x28, // mov r8, [rbx+40]
  0x4c, 0x8b, 0x4b, 0x30, // mov r9, [rbx+48]
  0x0f, 0x05, //             syscall
  0x48, 0x89, 0x43, 0x38, // mov [rbx+56], rax
  0x48, 0x83, 0xc3, 0x40, // add rbx, 64
  0x49, 0xff, 0xcc, //       dec r12
  0xeb, 0xd1, //             jmp (test)
];

/**
 * The guarded batch (Injector.guardedBatch), 64 bytes just before GUARD_STUB in the vDSO's tail:
 * rbx = a table of 64-byte entries (nr, six arguments, result), r12 = their count, r13 = the
 * frame's rsp. Each entry's syscall runs and its result is stored; then `mov %r13, %rsp;
 * mov $15, %eax; syscall`: rt_sigreturn through the frame, the thread back as it was. The table
 * lies above the stack pointer the batch runs with, so a signal handler run meanwhile (criu-bun
 * gone) cannot overwrite it. The table's last entry is a tgkill of the thread itself with a
 * signal it neither catches, blocks nor has pending: its signal-delivery-stop hands the thread
 * back to the tracer (and without a tracer the kernel discards the signal).
 */
// biome-ignore format: machine code, one instruction a line
export const GUARD_BATCH = new Uint8Array([
  ...BATCH_LOOP,
  0x4c, 0x89, 0xec, //       done: mov rsp, r13
  0xb8, 0x0f, 0x00, 0x00, 0x00, // mov eax, 15 (rt_sigreturn)
  0x0f, 0x05, //             syscall
  0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc,
]);
/** where in GUARD_BATCH a call's syscall returns to (the tracer finds its tgkill's stop there) */
export const GUARD_BATCH_AFTER_SYSCALL = 34n;
export const NR_RT_SIGRETURN = 15;
/** bytes below the red zone kept for the callers' scratch buffers (Injector.withScratch) */
export const SCRATCH_ROOM = 1024n;

const FP_XSTATE_MAGIC1 = 0x46505853,
  FP_XSTATE_MAGIC2 = 0x46505845;
const UC_FP_XSTATE = 1n,
  UC_SIGCONTEXT_SS = 2n,
  UC_STRICT_RESTORE_SS = 4n;
const XFEATURE_XTILE_DATA = 1n << 18n; // the only component a task gets only on request
/** rt_sigframe up to its siginfo: pretcode 8, ucontext 304, siginfo 128 */
const FRAME_SIZE = 440n;
/** offsets in the frame: ucontext at 8 (uc_flags, uc_link, uc_stack, uc_mcontext, uc_sigmask) */
const UC_FLAGS = 8,
  UC_STACK = 24,
  MCTX = 48,
  SIGMASK = 304;
export const FRAME_SIGMASK_OFF = BigInt(SIGMASK);

/** struct sigcontext_64 slots (8 bytes each) of the general registers */
const SC_SLOTS: [number, number][] = [
  [0, R.r8],
  [1, R.r9],
  [2, R.r10],
  [3, R.r11],
  [4, R.r12],
  [5, R.r13],
  [6, R.r14],
  [7, R.r15],
  [8, R.rdi],
  [9, R.rsi],
  [10, R.rbp],
  [11, R.rbx],
  [12, R.rdx],
  [13, R.rax],
  [14, R.rcx],
  [15, R.rsp],
  [16, R.rip],
  [17, R.eflags],
];

/**
 * Where the stub can live in a process with mappings MAPS (/proc/PID/maps): the last 16 bytes of
 * its vDSO when they lie past every byte of its ELF image (program and section headers, loaded
 * segments) and are zero (or hold the stub, left by a criu-bun that died). null if none.
 */
export function findStubPlace(maps: Vma[], read: (addr: bigint, len: number) => Uint8Array): bigint | null {
  const v = maps.find((m) => m.path === "[vdso]");
  if (!v) return null;
  const size = Number(v.end - v.start);
  if (size < 4096) return null;
  const b = read(v.start, size);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (dv.getUint32(0, false) !== 0x7f454c46 || b[4] !== 2 /* ELFCLASS64 */) return null;
  const phoff = Number(dv.getBigUint64(0x20, true)),
    shoff = Number(dv.getBigUint64(0x28, true));
  const phentsize = dv.getUint16(0x36, true),
    phnum = dv.getUint16(0x38, true);
  const shentsize = dv.getUint16(0x3a, true),
    shnum = dv.getUint16(0x3c, true);
  let used = Math.max(64, phoff + phnum * phentsize, shoff + shnum * shentsize);
  for (let i = 0; i < phnum; i++) {
    const p = phoff + i * phentsize;
    if (p + 56 > size) return null;
    const vaddr = dv.getBigUint64(p + 16, true),
      memsz = dv.getBigUint64(p + 40, true);
    used = Math.max(used, Number(dv.getBigUint64(p + 8, true) + dv.getBigUint64(p + 32, true)));
    if (vaddr < BigInt(size)) used = Math.max(used, Number(vaddr + memsz)); // linked at 0, as the vDSO is
  }
  // section contents (a debug section could sit past the headers)
  for (let i = 0; i < shnum; i++) {
    const s = shoff + i * shentsize;
    if (s + 64 > size) return null;
    if (dv.getUint32(s + 4, true) === 8 /* SHT_NOBITS */) continue;
    used = Math.max(used, Number(dv.getBigUint64(s + 24, true) + dv.getBigUint64(s + 32, true)));
  }
  const off = size - GUARD_STUB.length;
  if (used > off) return null;
  // zero, or the stub a criu-bun that died mid-dump left there
  const tail = b.subarray(off);
  if (!tail.every((x) => x === 0) && !tail.every((x, i) => x === GUARD_STUB[i])) return null;
  // the batch's place before it, the same way (zero, or left there), if the ELF image leaves room
  const boff = off - GUARD_BATCH.length,
    btail = b.subarray(boff, off);
  batchPlaces.set(
    v.start + BigInt(off),
    used <= boff && (btail.every((x) => x === 0) || btail.every((x, i) => x === GUARD_BATCH[i]))
      ? v.start + BigInt(boff)
      : null
  );
  return v.start + BigInt(off);
}

const batchPlaces = new Map<bigint, bigint | null>();
/** Where GUARD_BATCH can live beside the stub findStubPlace found at STUB (null: nowhere). */
export function batchPlace(stub: bigint): bigint | null {
  return batchPlaces.get(stub) ?? null;
}

/** Why a thread with registers REGS and /proc status TS (readStatus; undefined: unreadable) cannot be guarded ("" if it can). */
export function unguardable(regs: Regs, ts: Record<string, string> | undefined): string {
  if (regs[R.cs] !== 0x33n) return `not a 64-bit thread (cs 0x${regs[R.cs].toString(16)})`;
  if (/shstk/.test(ts?.x86_Thread_features ?? "")) return "it has a user shadow stack";
  return "";
}

let layout: Map<number, { off: number; size: number }> | undefined;
/** end of the last component of XFEATURES in the standard xsave format (CPUID leaf 0xd) */
function xsaveSize(xfeatures: bigint): number {
  layout ??= new Map();
  let end = 576; // legacy area and header
  for (let i = 2; i < 63; i++) {
    if (!(xfeatures & (1n << BigInt(i)))) continue;
    let c = layout.get(i);
    if (!c) {
      const r = cpuid(0xd, i);
      c = { size: r[0], off: r[1] };
      layout.set(i, c);
    }
    if (c.size && c.off) end = Math.max(end, c.off + c.size);
  }
  return end;
}

interface GuardFrame {
  /** where the frame starts; the injected calls run with rsp = frame + 8 */
  frame: bigint;
  /** the frame and its fpstate, to be written at `frame` */
  bytes: Uint8Array;
}

/**
 * The signal frame that returns thread REGS (saved at its stop; fixed up as the kernel resumes an
 * interrupted syscall without a handler), with XSTATE (PTRACE_GETREGSET NT_X86_XSTATE) and signal
 * mask SIGMASK, placed below the red zone and SCRATCH_ROOM of the saved stack pointer.
 */
export function buildFrame(saved: Regs, xstate: Uint8Array, sigmask: bigint): GuardFrame {
  const regs = new BigUint64Array(saved);
  fixupRestart(regs);
  // fpstate: the ptrace xsave area (standard format) with the signal frame's software bytes
  const xs = new DataView(xstate.buffer, xstate.byteOffset, xstate.byteLength);
  let fpLen = 512,
    xfeatures = 3n,
    xsize = 512;
  if (xstate.length >= 576) {
    const xcr0 = xs.getBigUint64(464, true); // the kernel's user XCR0 word of the ptrace area
    const xstateBv = xs.getBigUint64(512, true);
    xfeatures = (xcr0 & ~XFEATURE_XTILE_DATA) | (xstateBv & XFEATURE_XTILE_DATA) | 3n;
    xsize = Math.min(xsaveSize(xfeatures), xstate.length);
    fpLen = xsize + 4;
  }
  const top = saved[R.rsp] - 128n - SCRATCH_ROOM;
  const fp = (top - BigInt(fpLen)) & ~63n;
  const frame = ((fp - FRAME_SIZE) & ~15n) - 8n;
  const bytes = new Uint8Array(Number(fp - frame) + fpLen);
  const dv = new DataView(bytes.buffer);
  const fpOff = Number(fp - frame);
  bytes.set(xstate.subarray(0, xsize), fpOff);
  if (xstate.length >= 576) {
    // struct _fpx_sw_bytes in the legacy area's software-reserved bytes, the end marker after it
    bytes.fill(0, fpOff + 464, fpOff + 512);
    dv.setUint32(fpOff + 464, FP_XSTATE_MAGIC1, true);
    dv.setUint32(fpOff + 468, xsize + 4, true);
    dv.setBigUint64(fpOff + 472, xfeatures, true);
    dv.setUint32(fpOff + 480, xsize, true);
    dv.setUint32(fpOff + xsize, FP_XSTATE_MAGIC2, true);
  }
  dv.setBigUint64(
    UC_FLAGS,
    xstate.length >= 576
      ? UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS
      : UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS,
    true
  );
  // uc_stack: rt_sigreturn hands it to sigaltstack(); an invalid mode (4) makes that change nothing
  dv.setInt32(UC_STACK + 8, 4, true);
  for (const [slot, r] of SC_SLOTS) dv.setBigUint64(MCTX + slot * 8, regs[r], true);
  dv.setUint16(MCTX + 144, Number(regs[R.cs]), true);
  dv.setUint16(MCTX + 150, Number(regs[R.ss]), true);
  dv.setBigUint64(MCTX + 184, fp, true);
  dv.setBigUint64(SIGMASK, sigmask, true);
  return { frame, bytes };
}
