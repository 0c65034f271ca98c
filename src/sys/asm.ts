// A little x86-64 assembler for the machine code criu-bun runs itself (sys/sentinel.ts's stub,
// sys/warm.ts's thread): bytes as written, labels, and 32-bit relative jumps to them.

/** Bytes, with 32-bit relative jumps to labels resolved at the end. */
export function assemble(parts: (number[] | string | { jump: number[]; to: string })[]): Uint8Array {
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
