// Deterministic "heap-like" sample data for codec tests and benchmarks: a mix of zero pages,
// pages of repetitive structures (pointers, small integers, short strings, zero runs) and
// random pages. Not used by the dumper itself.

/** mulberry32: a small deterministic PRNG returning uint32. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

const WORDS = ["malloc", "heap", "checkpoint", "restore", "page", "counter", "socket", "thread", "vma", "\0\0\0\0"];

/** Fill one 4 KiB page at `off` of `buf` with heap-like structures. */
function structPage(buf: Uint8Array, off: number, rnd: () => number) {
  const dv = new DataView(buf.buffer, buf.byteOffset + off, 4096);
  const base = 0x7f0000000000 + (rnd() & 0xffff) * 0x10000;
  let p = 0;
  while (p < 4096) {
    const kind = rnd() % 10;
    if (kind < 4 && p + 8 <= 4096) {
      // a pointer into the same heap
      const v = base + (rnd() & 0xfff) * 16;
      dv.setUint32(p, v >>> 0, true);
      dv.setUint32(p + 4, Math.floor(v / 2 ** 32), true);
      p += 8;
    } else if (kind < 7 && p + 8 <= 4096) {
      dv.setUint32(p, rnd() % 256, true); // small integer, 8-byte slot
      dv.setUint32(p + 4, 0, true);
      p += 8;
    } else if (kind < 9) {
      const w = WORDS[rnd() % WORDS.length]!;
      for (let i = 0; i < w.length && p < 4096; i++) buf[off + p++] = w.charCodeAt(i);
    } else {
      p += 8 * (1 + (rnd() % 8)); // a zero run
    }
  }
}

/** `bytes` (a multiple of 4096) of heap-like data: about 30% zero, 55% structured, 15% random pages. */
export function heapLike<B extends ArrayBufferLike = ArrayBuffer>(
  bytes: number,
  seed = 1,
  out?: Uint8Array<B>
): Uint8Array<B> {
  if (!out) out = new Uint8Array(bytes) as unknown as Uint8Array<B>;
  const rnd = prng(seed);
  out.fill(0, 0, bytes);
  for (let off = 0; off + 4096 <= bytes; off += 4096) {
    const k = rnd() % 100;
    if (k < 30) continue;
    if (k < 85) structPage(out, off, rnd);
    else {
      const w = new Uint32Array(out.buffer, out.byteOffset + off, 1024);
      for (let i = 0; i < 1024; i++) w[i] = rnd();
    }
  }
  return out;
}
