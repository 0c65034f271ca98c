// The WASM page codec (asm/codec.ts via src/codec/codec.ts), checked against real things:
// liblz4 (dlopen'ed through bun:ffi, the library behind /usr/bin/lz4), the lz4 CLI's frames,
// xxHash's published sanity vectors, and process_vm_readv writing into WASM memory.
import { describe, expect, test, beforeAll, afterAll } from "bun:test";
import { dlopen, FFIType, ptr } from "bun:ffi";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PageCodec, CodecError } from "../src/codec/codec";
import { PlainCodec } from "../src/codec/plain";
import { heapLike, prng } from "../src/codec/sample";
import { syscall } from "../src/sys/syscall";
import { NR } from "../src/sys/nr";

const PAGE = 4096;
const codec = new PageCodec({ capacity: 4 << 20 });

const lz4lib = dlopen("liblz4.so.1", {
  LZ4_compress_default: { args: [FFIType.ptr, FFIType.ptr, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  LZ4_decompress_safe: { args: [FFIType.ptr, FFIType.ptr, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
}).symbols;

function libCompress(src: Uint8Array): Uint8Array {
  const out = new Uint8Array(PageCodec.lz4Bound(src.length));
  const n = lz4lib.LZ4_compress_default(src.length ? ptr(src) : ptr(out), ptr(out), src.length, out.length);
  if (n <= 0) throw new Error("LZ4_compress_default failed");
  return out.slice(0, n);
}
function libDecompress(block: Uint8Array, max: number): Uint8Array | null {
  const out = new Uint8Array(Math.max(max, 1));
  const src = block.length ? block : new Uint8Array(1);
  const n = lz4lib.LZ4_decompress_safe(ptr(src), ptr(out), block.length, max);
  return n < 0 ? null : out.slice(0, n);
}

/** Byte-for-byte equality with a short message (toEqual would print megabytes). */
function sameBytes(got: Uint8Array | null, want: Uint8Array) {
  expect(got).not.toBeNull();
  expect(got!.length).toBe(want.length);
  let diff = -1;
  if (Buffer.compare(got!, want) !== 0)
    for (let i = 0; i < want.length; i++)
      if (got![i] !== want[i]) {
        diff = i;
        break;
      }
  expect(diff).toBe(-1);
}

/** Our compression of `data`, copied out of WASM memory. */
function ours(data: Uint8Array, at = 0): Uint8Array<ArrayBuffer> {
  codec.inputView(data.length, at).set(data);
  return codec.compress(at, data.length).slice();
}
/** Our decompression into a garbage-filled destination (catches reads of unwritten bytes). */
function oursDecode(block: Uint8Array, max: number): Uint8Array<ArrayBuffer> {
  codec.inputView(max).fill(0xa5);
  const n = codec.decompressToInput(block, 0, max);
  return codec.inputView(n).slice();
}

function random(n: number, seed: number): Uint8Array {
  const r = prng(seed),
    b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = r() & 255;
  return b;
}
function repetitive(n: number, period: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i % period) * 31 + 7;
  return b;
}
function mixed(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n),
    r = prng(seed);
  let p = 0;
  while (p < n) {
    const len = Math.min(n - p, 1 + (r() % 300));
    const k = r() % 4;
    if (k === 0) for (let i = 0; i < len; i++) b[p + i] = r() & 255;
    else if (k === 1 && p > 0) {
      const off = 1 + (r() % Math.min(p, 70000));
      for (let i = 0; i < len; i++) b[p + i] = b[p + i - off]!;
    } else if (k === 2) b.fill(r() & 255, p, p + len);
    p += len; // k === 3: zeros
  }
  return b;
}

/** Short copies from 1-24 bytes back between short random runs: every match-copy path of the decoder. */
function shortOffsets(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n),
    r = prng(seed);
  let p = 0;
  while (p < n) {
    const lit = r() % 6,
      len = Math.min(n - p, 4 + (r() % 40));
    for (let i = 0; i < lit && p < n; i++) b[p++] = r() & 255;
    if (p < 24) continue;
    const off = 1 + (r() % 24);
    for (let i = 0; i < len && p < n; i++, p++) b[p] = b[p - off]!;
  }
  return b;
}

const cases: [string, Uint8Array][] = [
  ["empty", new Uint8Array(0)],
  ["1 byte", new Uint8Array([42])],
  ["12 bytes", repetitive(12, 3)],
  ["13 bytes", repetitive(13, 3)],
  ["17 random", random(17, 1)],
  ["zeros 4097", new Uint8Array(4097)],
  ["zeros 65537", new Uint8Array(65537)],
  ["random 1000", random(1000, 2)],
  ["random 65536", random(65536, 3)],
  ["random 100003", random(100003, 4)],
  ["period 1 (0x55) 9999", new Uint8Array(9999).fill(0x55)],
  ["period 3 5001", repetitive(5001, 3)],
  ["period 7 70001", repetitive(70001, 7)],
  ["period 17 3333", repetitive(3333, 17)],
  ["period 300 200000", repetitive(200000, 300)],
  ["mixed 131071", mixed(131071, 5)],
  ["short offsets 50001", shortOffsets(50001, 9)],
  ["short offsets 65536", shortOffsets(65536, 10)],
  ["mixed 777777", mixed(777777, 6)],
  ["heap-like 64 KiB", heapLike(65536, 7)],
  ["heap-like 1 MiB - 5", heapLike(1 << 20, 8).subarray(0, (1 << 20) - 5)],
];

describe("zero pages", () => {
  test("crafted pages", () => {
    const v = codec.inputView(16 * PAGE);
    v.fill(0);
    v[1 * PAGE + 4095] = 1; // last byte
    v[2 * PAGE] = 0x80; // first byte
    v[3 * PAGE + 2047] = 0x01; // middle
    v.fill(0xff, 4 * PAGE, 5 * PAGE); // full
    v[6 * PAGE + 127] = 2; // end of the first 128-byte step
    v[7 * PAGE + 128] = 2; // start of the second step
    v[9 * PAGE - 1] = 1; // last byte of page 8
    v[15 * PAGE + 4000] = 9;
    const flags = codec.zeroPages(0, 16);
    expect([...flags]).toEqual([1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0]);
    expect(codec.lastZeroCount).toBe(8);
    // a page-unaligned start is allowed too
    expect([...codec.zeroPages(PAGE + 1, 1)]).toEqual([0]);
    expect([...codec.zeroPages(1, 1)]).toEqual([1]);
    expect([...codec.zeroPages(9 * PAGE + 5, 2)]).toEqual([1, 1]);
  });

  test("every single non-zero byte position is seen", () => {
    const v = codec.inputView(PAGE);
    for (let i = 0; i < PAGE; i++) {
      v.fill(0);
      v[i] = 1 << (i & 7);
      expect(codec.zeroPages(0, 1)[0]).toBe(0);
      expect(codec.isZero(0, PAGE)).toBe(false);
    }
    v.fill(0);
    expect(codec.zeroPages(0, 1)[0]).toBe(1);
    expect(codec.isZero(0, PAGE)).toBe(true);
  });

  test("isZero on odd lengths, heap-like flags vs a JS scan", () => {
    const v = codec.inputView(256 * PAGE);
    v.fill(0);
    v[100] = 1;
    expect(codec.isZero(0, 100)).toBe(true);
    expect(codec.isZero(0, 101)).toBe(false);
    expect(codec.isZero(101, 77)).toBe(true);
    heapLike(256 * PAGE, 11, v);
    const flags = codec.zeroPages(0, 256);
    let zeros = 0;
    for (let p = 0; p < 256; p++) {
      const z = v.subarray(p * PAGE, (p + 1) * PAGE).every((b) => b === 0) ? 1 : 0;
      expect(flags[p]).toBe(z);
      zeros += z;
    }
    expect(codec.lastZeroCount).toBe(zeros);
    expect(zeros).toBeGreaterThan(30);
  });

  test("bounds are checked", () => {
    expect(() => codec.zeroPages(codec.capacity - PAGE + 1, 1)).toThrow(RangeError);
    expect(() => codec.zeroPages(-1, 1)).toThrow(RangeError);
    expect(() => codec.compress(0, codec.capacity + 1)).toThrow(RangeError);
  });
});

describe("packing a dump block's kept pages", () => {
  // the reference: the loop jobs.ts ran before packKept, on plain arrays
  function reference(pages: Uint8Array[], segs: { va: number; n: number; anon: boolean }[], zero: number[]) {
    const out: Uint8Array[] = [];
    const runs: number[] = [];
    let p = 0;
    for (const sg of segs) {
      for (let k = 0; k < sg.n; k++) {
        if (sg.anon && zero[p + k]) continue;
        out.push(pages[p + k]);
        const va = sg.va + k * PAGE;
        const m = runs.length;
        if (m && runs[m - 2] + runs[m - 1] * PAGE === va) runs[m - 1]++;
        else runs.push(va, 1);
      }
      p += sg.n;
    }
    return { bytes: out, runs };
  }
  function pack(c: PageCodec | PlainCodec, total: number, segs: { va: number; n: number; anon: boolean }[]) {
    const zeros = c.zeroPages(0, total);
    let w = 0,
      nRuns = 0,
      p = 0;
    for (const sg of segs) {
      if (!sg.anon) zeros.fill(0, p, p + sg.n);
      nRuns = c.packKept(p * PAGE, sg.n, p, w, sg.va, nRuns);
      w += c.lastPacked;
      p += sg.n;
    }
    return { w, runs: [...c.runs(nRuns)] };
  }

  test("WASM and plain codecs pack as the loop they replaced: random zero pages, touching and split segments, addresses above 2^32", () => {
    const plain = new PlainCodec({ capacity: 1 << 20 });
    const next = prng(99);
    for (let round = 0; round < 60; round++) {
      const total = 1 + (next() % 256);
      // segments: some touching the one before (their runs merge), some not, anonymous or not
      const segs: { va: number; n: number; anon: boolean }[] = [];
      let va = (round % 3 === 0 ? 2 ** 45 : 0x10000) + (next() % 1000) * PAGE;
      for (let left = total; left > 0; ) {
        const n = Math.min(left, 1 + (next() % 80));
        segs.push({ va, n, anon: next() % 5 !== 0 });
        va += n * PAGE + (next() % 2 ? 0 : (1 + (next() % 9)) * PAGE);
        left -= n;
      }
      // pages: zero with probability 0..1 by round (all kept, none kept, mixed), each page's bytes distinct
      const zp = (round % 6) / 5;
      const pages: Uint8Array[] = [];
      const zero: number[] = [];
      for (let i = 0; i < total; i++) {
        const pg = new Uint8Array(PAGE);
        const z = next() % 1000 < zp * 1000;
        if (!z) for (let j = 0; j < 16; j++) pg[(next() % PAGE) | 0] = 1 + (next() % 255);
        if (!z && pg.every((b) => b === 0)) pg[0] = 1;
        pages.push(pg);
        zero.push(z ? 1 : 0);
      }
      const ref = reference(pages, segs, zero);
      for (const c of [codec, plain]) {
        const v = c.inputView(total * PAGE);
        for (let i = 0; i < total; i++) v.set(pages[i], i * PAGE);
        const got = pack(c, total, segs);
        expect(got.w).toBe(ref.bytes.length * PAGE);
        expect(got.runs).toEqual(ref.runs);
        for (let i = 0; i < ref.bytes.length; i++)
          if (!Buffer.from(v.subarray(i * PAGE, (i + 1) * PAGE)).equals(Buffer.from(ref.bytes[i])))
            throw new Error(`round ${round}, ${c.constructor.name}: packed page ${i} differs`);
      }
    }
  });

  test("bad arguments are refused before the WASM runs", () => {
    codec.inputView(4 * PAGE).fill(1);
    codec.zeroPages(0, 4);
    expect(() => codec.packKept(PAGE, 2, 0, 2 * PAGE, 0x1000, 0)).toThrow(RangeError); // dst above src
    expect(() => codec.packKept(codec.capacity - PAGE, 2, 0, 0, 0x1000, 0)).toThrow(RangeError);
    expect(() => codec.packKept(0, 2, -1, 0, 0x1000, 0)).toThrow(RangeError);
    expect(() => codec.packKept(0, 2, 0, 0, 0x1000, codec.capacity / PAGE)).toThrow(RangeError); // runs area full
    expect(codec.packKept(0, 4, 0, 0, 0x1000, 0)).toBe(1);
    expect([...codec.runs(1)]).toEqual([0x1000, 4]);
  });
});

describe("lz4 blocks", () => {
  for (const [name, data] of cases) {
    test(`round trip + liblz4 cross-decoding: ${name}`, () => {
      const block = ours(data, name.length % 7); // odd offsets too
      expect(block.length).toBeLessThanOrEqual(PageCodec.lz4Bound(data.length));
      // ours -> ours
      sameBytes(oursDecode(block, data.length), data);
      // ours -> liblz4 (with an exact-size destination: liblz4 is strict about the end rules)
      sameBytes(libDecompress(block, data.length), data);
      // liblz4 -> ours
      const theirs = libCompress(data);
      sameBytes(oursDecode(theirs, data.length), data);
      // a destination one byte short is reported, not overrun
      if (data.length > 0) expect(() => codec.decompressToInput(block, 0, data.length - 1)).toThrow(CodecError);
    });
  }

  test("compression ratio close to liblz4's default level", () => {
    for (const [name, data] of cases) {
      if (data.length < 4096) continue;
      const a = ours(data).length,
        b = libCompress(data).length;
      if (a > b * 1.1 + 64) throw new Error(`${name}: ours ${a} bytes vs liblz4 ${b}`);
    }
  });

  test("a block already in WASM memory decodes without copying", () => {
    const data = heapLike(8 * PAGE, 3);
    codec.inputView(data.length, 0).set(data);
    const view = codec.compress(0, data.length); // view of the output buffer
    const n = codec.decompressToInput(view, 16 * PAGE);
    expect(n).toBe(data.length);
    sameBytes(codec.inputView(n, 16 * PAGE), data);
  });

  test("decompress() into a caller buffer, leaving bytes past the output alone", () => {
    const data = mixed(50000, 9);
    const block = ours(data);
    const dst = new Uint8Array(60000).fill(7);
    expect(codec.decompress(block, dst)).toBe(50000);
    sameBytes(dst.subarray(0, 50000), data);
    expect(dst.subarray(50000).every((b) => b === 7)).toBe(true);
  });
});

describe("corrupt lz4 input", () => {
  test("hand-made bad blocks throw CodecError", () => {
    const bad: number[][] = [
      [], // empty
      [0x10], // 1 literal announced, none present
      [0xf0], // literal length continues past the end
      [0xf0, 255, 255], // same, longer
      [0x10, 65, 0], // literal then half an offset
      [0x10, 65, 0, 0], // offset 0
      [0x10, 65, 2, 0, 0x00], // offset 2 before the start of the output
      [0x00, 1, 0, 0x00], // match with nothing decoded yet
      [0x1f, 65, 1, 0, 255, 255, 255, 255, 255, 255, 255, 255], // match length runs off the end of src
      [0x1f, 65, 1, 0, 200, 0x00], // match longer than the destination
      [0x10, 65, 1, 0], // ends right after a match (last sequence must be literals)
    ];
    for (const b of bad) {
      expect(() => codec.decompressToInput(new Uint8Array(b), 0, 100)).toThrow(CodecError);
      expect(libDecompress(new Uint8Array(b), 100)).toBeNull(); // liblz4 agrees they are bad
    }
  });

  test("fuzz: truncated, bit-flipped and random blocks never escape their buffers", () => {
    const r = prng(99);
    const data = heapLike(16 * PAGE, 12);
    const block = ours(data);
    const SENT = 0x5c,
      at = 4 * PAGE,
      max = data.length;
    let errors = 0,
      agreed = 0,
      trials = 0;
    for (let t = 0; t < 1500; t++) {
      let b: Uint8Array;
      const k = t % 3;
      if (k === 0) b = block.slice(0, r() % block.length);
      else if (k === 1) {
        b = block.slice();
        for (let i = 0, n = 1 + (r() % 4); i < n; i++) b[r() % b.length]! ^= 1 << (r() & 7);
      } else b = random(1 + (r() % 600), r());
      const v = codec.inputView(at + max + PAGE);
      v.fill(SENT);
      let n = -1;
      try {
        n = codec.decompressToInput(b, at, max);
      } catch (e) {
        if (!(e instanceof CodecError)) throw e;
        errors++;
      }
      // nothing before or after [at, at+max) was touched
      const v2 = codec.inputView(at + max + PAGE);
      expect(v2.subarray(0, at).every((x) => x === SENT)).toBe(true);
      expect(v2.subarray(at + max).every((x) => x === SENT)).toBe(true);
      // when both decoders accept a block they produce the same bytes
      const lib = libDecompress(b, max);
      if (lib && n >= 0) {
        expect(n).toBe(lib.length);
        sameBytes(v2.subarray(at, at + n), lib);
        agreed++;
      }
      trials++;
    }
    expect(errors).toBeGreaterThan(trials / 3);
    expect(agreed).toBeGreaterThan(0);
  });
});

// ---- lz4 frames, to talk to the lz4 CLI
const LZ4_MAGIC = 0x184d2204;
let dir = "";
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "criu-bun-codec-"));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function lz4cli(args: string[]) {
  const r = Bun.spawnSync(["lz4", ...args], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`lz4 ${args.join(" ")}: ${r.stderr.toString()}`);
}

/** XXH32 of arbitrary bytes through the codec. */
function xxh32Of(b: Uint8Array): number {
  codec.inputView(b.length).set(b);
  return codec.xxh32(0, b.length);
}

/** An LZ4 frame holding our blocks (independent, 4 MiB max), with content size and content checksum. */
function frameOf(data: Uint8Array, blockSize: number): Uint8Array {
  const parts: Uint8Array[] = [];
  const hdr = new Uint8Array(4 + 2 + 8 + 1);
  const dv = new DataView(hdr.buffer);
  dv.setUint32(0, LZ4_MAGIC, true);
  hdr[4] = 0x40 | 0x20 | 0x08 | 0x04; // version 01, independent blocks, content size, content checksum
  hdr[5] = 7 << 4; // 4 MiB blocks
  dv.setBigUint64(6, BigInt(data.length), true);
  hdr[14] = (xxh32Of(hdr.subarray(4, 14)) >>> 8) & 0xff; // header checksum
  parts.push(hdr);
  for (let off = 0; off < data.length; off += blockSize) {
    const chunk = data.subarray(off, Math.min(data.length, off + blockSize));
    const block = ours(chunk);
    const size = new Uint8Array(4);
    if (block.length < chunk.length) {
      new DataView(size.buffer).setUint32(0, block.length, true);
      parts.push(size, block);
    } else {
      new DataView(size.buffer).setUint32(0, (chunk.length | 0x80000000) >>> 0, true);
      parts.push(size, chunk.slice());
    }
  }
  const tail = new Uint8Array(8);
  new DataView(tail.buffer).setUint32(4, xxh32Of(data), true); // end mark 0, then content checksum
  parts.push(tail);
  return Buffer.concat(parts);
}

/** Parse an lz4 frame: its blocks (with an uncompressed flag) and the content checksum if present. */
function parseFrame(f: Uint8Array) {
  const dv = new DataView(f.buffer, f.byteOffset, f.length);
  expect(dv.getUint32(0, true)).toBe(LZ4_MAGIC);
  const flg = f[4]!;
  let p = 6 + (flg & 0x08 ? 8 : 0) + (flg & 0x01 ? 4 : 0);
  expect(f[p]).toBe((xxh32Of(f.subarray(4, p)) >>> 8) & 0xff); // our XXH32 vs the CLI's header checksum
  p++;
  const blocks: { raw: boolean; data: Uint8Array }[] = [];
  for (;;) {
    const w = dv.getUint32(p, true);
    p += 4;
    if (w === 0) break;
    const n = w & 0x7fffffff;
    blocks.push({ raw: (w & 0x80000000) !== 0, data: f.slice(p, p + n) });
    p += n + (flg & 0x10 ? 4 : 0);
  }
  const checksum = flg & 0x04 ? dv.getUint32(p, true) : undefined;
  return { flg, blocks, checksum };
}

describe("lz4 CLI interop", () => {
  test("frames of our blocks decode with `lz4 -d`", () => {
    const data = Buffer.concat([heapLike(300 * PAGE, 21), random(5000, 22), mixed(100001, 23)]);
    for (const bs of [65536, 1 << 20]) {
      writeFileSync(join(dir, "ours.lz4"), frameOf(data, bs));
      lz4cli(["-d", "-f", "-q", join(dir, "ours.lz4"), join(dir, "ours.out")]);
      sameBytes(new Uint8Array(readFileSync(join(dir, "ours.out"))), new Uint8Array(data));
    }
  });

  test("blocks of `lz4 -1` frames decode with ours; content checksum equals our XXH32", () => {
    const data = Buffer.concat([heapLike(200 * PAGE, 31), random(70000, 32), new Uint8Array(12345)]);
    writeFileSync(join(dir, "in.bin"), data);
    for (const opts of [["-B4"], ["-B5"], ["-B7"]]) {
      lz4cli(["-1", "-f", "-q", "-BI", ...opts, join(dir, "in.bin"), join(dir, "cli.lz4")]);
      const { blocks, checksum } = parseFrame(new Uint8Array(readFileSync(join(dir, "cli.lz4"))));
      const parts: Uint8Array[] = [];
      for (const b of blocks) parts.push(b.raw ? b.data : oursDecode(b.data, codec.capacity));
      sameBytes(new Uint8Array(Buffer.concat(parts)), new Uint8Array(data));
      expect(blocks.some((b) => !b.raw)).toBe(true);
      expect(checksum).toBe(xxh32Of(data));
    }
  });
});

describe("checksums", () => {
  // xxHash's sanity vectors (cli/xsum_sanity_check.c): a buffer from the PRNG below, lengths and seeds.
  const PRIME32 = 2654435761;
  const sanity = (() => {
    const b = new Uint8Array(222);
    let g = BigInt(PRIME32);
    for (let i = 0; i < b.length; i++) {
      b[i] = Number(g >> 56n);
      g = BigInt.asUintN(64, g * 11400714785074694797n);
    }
    return b;
  })();

  test("XXH32 vectors", () => {
    const v: [number, number, number][] = [
      [0, 0, 0x02cc5d05],
      [0, PRIME32, 0x36b78ae7],
      [1, 0, 0xcf65b03e],
      [1, PRIME32, 0xb4545aa4],
      [14, 0, 0x1208e7e2],
      [14, PRIME32, 0x6af1d1fe],
      [222, 0, 0x5bd11dbd],
      [222, PRIME32, 0x58803c5f],
    ];
    codec.inputView(222, 3).set(sanity); // unaligned
    for (const [len, seed, want] of v) expect(codec.xxh32(3, len, seed)).toBe(want);
  });

  test("XXH64 vectors", () => {
    const v: [number, bigint, bigint][] = [
      [0, 0n, 0xef46db3751d8e999n],
      [0, BigInt(PRIME32), 0xac75fda2929b17efn],
      [1, 0n, 0xe934a84adb052768n],
      [1, BigInt(PRIME32), 0x5014607643a9b4c3n],
      [4, 0n, 0x9136a0dca57457een],
      [14, 0n, 0x8282dcc4994e35c8n],
      [14, BigInt(PRIME32), 0xc3bd6bf63deb6df0n],
      [222, 0n, 0xb641ae8cb691c174n],
      [222, BigInt(PRIME32), 0x20cb8ab7ae10c14an],
    ];
    codec.inputView(222, 5).set(sanity);
    for (const [len, seed, want] of v) expect(codec.checksum(5, len, seed)).toBe(want);
  });

  test("XXH32 equals the lz4 CLI's content checksum on many lengths", () => {
    const data = mixed(70000, 41);
    for (const len of [0, 1, 3, 4, 15, 16, 17, 31, 32, 33, 1000, 4096, 65535, 70000]) {
      writeFileSync(join(dir, "x.bin"), data.subarray(0, len));
      lz4cli(["-1", "-f", "-q", join(dir, "x.bin"), join(dir, "x.lz4")]);
      const { checksum } = parseFrame(new Uint8Array(readFileSync(join(dir, "x.lz4"))));
      expect(checksum).toBe(xxh32Of(data.subarray(0, len)));
    }
  });

  test("checksumKept (pages whose flag is 0, in place) equals XXH64 of them packed, and Bun's XXH64", () => {
    const n = 96;
    const src = new Uint8Array(n * PAGE);
    heapLike(n * PAGE, 9, src);
    const rnd = prng(77);
    for (const zeroShare of [0, 0.3, 0.9, 1]) {
      // some pages zeroed: zeroPages() flags them; also clear a few flags by hand (kept zero pages)
      const pages = src.slice();
      for (let i = 0; i < n; i++) if (rnd() / 2 ** 32 < zeroShare) pages.fill(0, i * PAGE, (i + 1) * PAGE);
      codec.inputView(n * PAGE).set(pages);
      const flags = codec.zeroPages(0, n);
      for (let i = 0; i < n; i += 7) flags[i] = 0;
      const kept: number[] = [];
      for (let i = 0; i < n; i++) if (!flags[i]) kept.push(i);
      const got = codec.checksumKept(0, n);
      const packed = new Uint8Array(kept.length * PAGE);
      kept.forEach((p, j) => packed.set(pages.subarray(p * PAGE, (p + 1) * PAGE), j * PAGE));
      expect(got).toBe(Bun.hash.xxHash64(packed));
      codec.inputView(packed.length || PAGE).set(packed);
      expect(got).toBe(codec.checksum(0, packed.length));
    }
  });

  test("a changed byte changes the XXH64 of a page block", () => {
    const v = codec.inputView(64 * PAGE);
    heapLike(64 * PAGE, 5, v);
    const a = codec.checksum(0, 64 * PAGE);
    v[33 * PAGE + 17]! ^= 1;
    expect(codec.checksum(0, 64 * PAGE)).not.toBe(a);
  });
});

describe("PageCodec memory", () => {
  test("process_vm_readv writes straight into the input buffer (inputAddr is a real pointer)", () => {
    const c = new PageCodec({ capacity: 64 * PAGE });
    const src = random(3 * PAGE + 100, 51);
    const local = new BigUint64Array([BigInt(c.inputAddr(PAGE + 3)), BigInt(src.length)]);
    const remote = new BigUint64Array([BigInt(ptr(src)), BigInt(src.length)]);
    expect(syscall(NR.process_vm_readv, process.pid, ptr(local), 1, ptr(remote), 1, 0)).toBe(src.length);
    sameBytes(c.inputView(src.length, PAGE + 3), src);
    const block = c.compress(PAGE + 3, src.length);
    sameBytes(libDecompress(block.slice(), src.length), src);
  });

  test("reserve grows, keeps the input, detaches old views; instances are independent", () => {
    const a = new PageCodec({ capacity: 5000 });
    const b = new PageCodec({ capacity: 5000 });
    expect(a.capacity).toBe(2 * PAGE);
    const data = random(2 * PAGE, 61);
    const old = a.inputView();
    old.set(data);
    b.inputView().fill(1);
    a.reserve(8 << 20);
    expect(a.capacity).toBe(8 << 20);
    expect(old.length).toBe(0); // detached by memory.grow
    sameBytes(a.inputView(2 * PAGE), data);
    expect(b.inputView().every((x) => x === 1)).toBe(true);
    a.reserve(PAGE); // never shrinks
    expect(a.capacity).toBe(8 << 20);
    const big = heapLike(8 << 20, 62);
    a.inputView().set(big);
    expect(a.zeroPages(0, 2048).length).toBe(2048);
    sameBytes(libDecompress(a.compress(0, big.length).slice(), big.length), big);
  });

  test("one compiled module serves several instances", () => {
    const m = PageCodec.module();
    expect(PageCodec.module()).toBe(m);
    const c = new PageCodec({ module: m, capacity: PAGE });
    c.inputView().fill(0);
    expect(c.zeroPages(0, 1)[0]).toBe(1);
  });
});

describe("Workers", () => {
  test("a Worker builds its own PageCodec from a posted module; blocks decode here", async () => {
    const codecPath = join(import.meta.dir, "../src/codec/codec.ts");
    const src = `import { PageCodec } from ${JSON.stringify(codecPath)};
      self.onmessage = (e) => {
        const { module, data } = e.data;
        const c = new PageCodec({ capacity: data.length, module });
        c.inputView(data.length).set(data);
        const z = c.compress(0, data.length).slice();
        postMessage({ z, posted: module instanceof WebAssembly.Module, zeros: (c.zeroPages(0, data.length / 4096), c.lastZeroCount) });
      };`;
    const url = URL.createObjectURL(new Blob([src], { type: "application/javascript" }));
    const data = heapLike(64 * PAGE, 71);
    const w = new Worker(url);
    try {
      const r: any = await new Promise((res, rej) => {
        w.onmessage = (e) => res(e.data);
        w.onerror = (e) => rej(e);
        w.postMessage({ module: PageCodec.module(), data });
      });
      expect(r.posted).toBe(true);
      sameBytes(oursDecode(r.z, data.length), data);
      codec.inputView(data.length).set(data);
      codec.zeroPages(0, 64);
      expect(r.zeros).toBe(codec.lastZeroCount);
    } finally {
      w.terminate();
      URL.revokeObjectURL(url);
    }
  });
});

describe("PlainCodec (small runs on the main thread, no WebAssembly)", () => {
  test("zero flags, XXH64 and checksumKept equal codec.wasm's on the same pages; LZ4 goes through codec.wasm", () => {
    const n = 64;
    const plain = new PlainCodec({ capacity: n * PAGE + PageCodec.lz4Bound(n * PAGE) + PAGE });
    const rnd = prng(31);
    for (const zeroShare of [0, 0.3, 0.9, 1]) {
      const pages = heapLike(n * PAGE, 13);
      for (let i = 0; i < n; i++) if (rnd() / 2 ** 32 < zeroShare) pages.fill(0, i * PAGE, (i + 1) * PAGE);
      // single non-zero bytes at the first and last byte of pages, where a scan could stop short
      pages.fill(0, 3 * PAGE, 5 * PAGE);
      pages[3 * PAGE] = 1;
      pages[5 * PAGE - 1] = 1;
      codec.inputView(n * PAGE).set(pages);
      plain.inputView(n * PAGE).set(pages);
      const wf = [...codec.zeroPages(0, n)],
        pf = [...plain.zeroPages(0, n)];
      expect(pf).toEqual(wf);
      expect(plain.lastZeroCount).toBe(codec.lastZeroCount);
      expect(plain.checksumKept(0, n)).toBe(codec.checksumKept(0, n));
      expect(plain.checksum(PAGE + 5, 7 * PAGE - 9)).toBe(codec.checksum(PAGE + 5, 7 * PAGE - 9));
      expect(plain.checksum(0, n * PAGE, 12345n)).toBe(codec.checksum(0, n * PAGE, 12345n));
      expect(plain.isZero(3 * PAGE + 1, 2 * PAGE - 2)).toBe(codec.isZero(3 * PAGE + 1, 2 * PAGE - 2));
    }
    // LZ4 both ways through the fallback, from and into the plain buffer
    const data = heapLike(16 * PAGE, 5);
    plain.inputView(data.length).set(data);
    const z = plain.compress(0, data.length).slice();
    sameBytes(libDecompress(z, data.length), data);
    const at = 32 * PAGE;
    plain.inputView(z.length, at).set(z);
    plain.inputView(data.length).fill(0);
    expect(plain.decompressToInput(plain.inputView(z.length, at), 0, data.length)).toBe(data.length);
    sameBytes(plain.inputView(data.length), data);
    // process_vm_readv into it through inputAddr
    const src = random(PAGE + 7, 3);
    const local = new BigUint64Array([BigInt(plain.inputAddr(9)), BigInt(src.length)]);
    const remote = new BigUint64Array([BigInt(ptr(src)), BigInt(src.length)]);
    expect(syscall(NR.process_vm_readv, process.pid, ptr(local), 1, ptr(remote), 1, 0)).toBe(src.length);
    sameBytes(plain.inputView(src.length, 9), src);
    expect(() => plain.zeroPages(n * PAGE, 1 << 20)).toThrow(RangeError);
  });
});
