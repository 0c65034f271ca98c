// A little x86-64 assembler for the machine code criu-bun runs itself (sys/sentinel.ts's stub,
// sys/warm.ts's thread): bytes as written, labels, and 32-bit relative jumps to them; and the two
// pieces both of them start a child with.
import { NR } from "./nr";

/** Bytes as written, a label, or a 32-bit relative jump (its opcode bytes) to a label. */
type Part = number[] | string | { jump: number[]; to: string };

/** Bytes, with 32-bit relative jumps to labels resolved at the end. */
export function assemble(parts: Part[]): Uint8Array {
  const out: number[] = [];
  const labels = new Map<string, number>();
  const fixups: { at: number; to: string }[] = [];
  for (const p of parts) {
    if (typeof p === "string") labels.set(p, out.length);
    else if (Array.isArray(p)) out.push(...p);
    else {
      out.push(...p.jump, 0, 0, 0, 0);
      fixups.push({ at: out.length - 4, to: p.to });
    }
  }
  const b = new Uint8Array(out);
  const dv = new DataView(b.buffer);
  for (const f of fixups) dv.setInt32(f.at, labels.get(f.to)! - (f.at + 4), true);
  return b;
}

/** A 32-bit immediate or displacement, little-endian. */
export const d32 = (v: number) => [v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >>> 24) & 0xff];
/** mov eax, imm32 */
export const movEax = (v: number) => [0xb8, ...d32(v)];
/** syscall */
export const syscallOp = [0x0f, 0x05];

/** Offsets, in the page rbx points at, of what cloneBlocked and parentSide read and write. */
interface ClonePage {
  all: number; // an all-ones signal set
  old: number; // the caller's mask, saved
  flags: number; // clone's flags
  stack: number; // the child's stack pointer
  result: number; // clone's result, kept across the mask's restore
}

/** Every signal blocked (the caller's mask saved), then clone(flags, stack, 0, 0, 0): the child
 *  goes on after these bytes with every signal blocked, the parent jumps to "parent" (parentSide). */
export function cloneBlocked(p: ClonePage): Part[] {
  // biome-ignore format: machine code, one instruction a line
  return [
    movEax(NR.rt_sigprocmask),
    [0xbf, 2, 0, 0, 0],                     // mov edi, SIG_SETMASK
    [0x48, 0x8d, 0xb3, ...d32(p.all)],      // lea rsi, [rbx+all]
    [0x48, 0x8d, 0x93, ...d32(p.old)],      // lea rdx, [rbx+old]
    [0x41, 0xba, 8, 0, 0, 0],               // mov r10d, 8
    syscallOp,
    movEax(NR.clone),
    [0x48, 0x8b, 0xbb, ...d32(p.flags)],    // mov rdi, [rbx+flags]
    [0x48, 0x8b, 0xb3, ...d32(p.stack)],    // mov rsi, [rbx+stack]
    [0x31, 0xd2],                           // xor edx, edx
    [0x45, 0x31, 0xd2],                     // xor r10d, r10d
    [0x45, 0x31, 0xc0],                     // xor r8d, r8d
    syscallOp,
    [0x48, 0x85, 0xc0],                     // test rax, rax
    { jump: [0x0f, 0x85], to: "parent" },   // jnz parent
  ];
}

/** The parent's side, at its label: clone's result saved, the caller's mask put back, the result
 *  in rax (the caller's epilogue follows). */
export function parentSide(p: ClonePage): Part[] {
  // biome-ignore format: machine code, one instruction a line
  return [
    "parent",
    [0x48, 0x89, 0x83, ...d32(p.result)],   // mov [rbx+result], rax
    movEax(NR.rt_sigprocmask),
    [0xbf, 2, 0, 0, 0],                     // mov edi, SIG_SETMASK
    [0x48, 0x8d, 0xb3, ...d32(p.old)],      // lea rsi, [rbx+old]
    [0x31, 0xd2],                           // xor edx, edx
    [0x41, 0xba, 8, 0, 0, 0],               // mov r10d, 8
    syscallOp,
    [0x48, 0x8b, 0x83, ...d32(p.result)],   // mov rax, [rbx+result]
  ];
}
