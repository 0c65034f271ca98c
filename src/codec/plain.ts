// PlainCodec: the part of PageCodec's API a small uncompressed dump or restore uses (zero pages,
// XXH3-64, XXH64), without WebAssembly. Compiling and instantiating codec.wasm costs about 10 ms of CPU
// (more wall time on a busy machine: the compile runs on JavaScriptCore's compiler threads),
// which is a quarter of a small process's whole dump. Here the input is a plain ArrayBuffer, the
// zero test is Buffer.compare against a zero page (memcmp), XXH3-64 is Bun.hash.xxHash3 as in
// PageCodec.hash, and XXH64 is Bun.hash.xxHash64: the same function as codec.wasm's xxh64 (seed
// included), so the images are identical either way.
// LZ4 (a compressed image met on restore) falls back to a PageCodec, made on first use.
import { addr } from "../sys/addr";
import { PageCodec } from "./codec";

const PAGE = 4096;
const ZERO_PAGE = Buffer.alloc(PAGE);

export class PlainCodec {
  static readonly PAGE_SIZE = PAGE;
  readonly capacity: number;
  private readonly buf: Buffer;
  private readonly u8: Uint8Array<ArrayBuffer>;
  private flags = new Uint8Array(0);
  private scratch?: Uint8Array;
  private lz4?: PageCodec;
  /** Number of zero pages found by the last zeroPages() call. */
  lastZeroCount = 0;
  /** Bytes the last packKept() call wrote. */
  lastPacked = 0;
  private runList = new Float64Array(0);

  constructor(opts: { capacity: number }) {
    this.capacity = Math.max(PAGE, Math.ceil(opts.capacity / PAGE) * PAGE);
    this.u8 = new Uint8Array(new ArrayBuffer(this.capacity));
    this.buf = Buffer.from(this.u8.buffer, 0, this.capacity);
  }

  private check(offset: number, len: number, what: string) {
    if (!Number.isInteger(offset) || !Number.isInteger(len) || offset < 0 || len < 0 || offset + len > this.capacity)
      throw new RangeError(
        `PlainCodec.${what}: [${offset}, +${len}) outside the input buffer (${this.capacity} bytes)`
      );
  }

  inputView(bytes = this.capacity, offset = 0): Uint8Array<ArrayBuffer> {
    this.check(offset, bytes, "inputView");
    return new Uint8Array(this.u8.buffer, offset, bytes);
  }

  inputAddr(offset = 0): number {
    this.check(offset, 0, "inputAddr");
    return addr(this.u8, offset);
  }

  /** One flag per 4 KiB page of [offset, offset + nPages*4096): 1 = all zero. */
  zeroPages(offset: number, nPages: number): Uint8Array {
    this.check(offset, nPages * PAGE, "zeroPages");
    if (this.flags.length < nPages) this.flags = new Uint8Array(nPages);
    const f = this.flags.subarray(0, nPages);
    let zero = 0;
    for (let i = 0, at = offset; i < nPages; i++, at += PAGE) {
      const z = ZERO_PAGE.compare(this.buf, at, at + PAGE) === 0 ? 1 : 0;
      f[i] = z;
      zero += z;
    }
    this.lastZeroCount = zero;
    return f;
  }

  /** PageCodec.packKept, in JavaScript (a small run on the main thread: the loop jobs.ts had). */
  packKept(offset: number, nPages: number, flagAt: number, dstOffset: number, va: number, nRuns: number): number {
    this.check(offset, nPages * PAGE, "packKept");
    if (dstOffset > offset || dstOffset < 0 || flagAt < 0 || flagAt + nPages > this.flags.length || nRuns < 0)
      throw new RangeError(
        `PlainCodec.packKept: bad arguments (${offset}, ${nPages}, ${flagAt}, ${dstOffset}, ${nRuns})`
      );
    if (this.runList.length < (nRuns + nPages) * 2) {
      const r = new Float64Array((nRuns + nPages) * 2);
      r.set(this.runList.subarray(0, nRuns * 2));
      this.runList = r;
    }
    const f = this.flags,
      runs = this.runList,
      io = this.u8;
    let w = 0;
    for (let k = 0; k < nPages; ) {
      if (f[flagAt + k]) {
        k++;
        continue;
      }
      let e = k + 1;
      while (e < nPages && !f[flagAt + e]) e++;
      const from = offset + k * PAGE,
        len = (e - k) * PAGE;
      if (from !== dstOffset + w) io.copyWithin(dstOffset + w, from, from + len);
      const rva = va + k * PAGE;
      if (nRuns && runs[nRuns * 2 - 2] + runs[nRuns * 2 - 1] * PAGE === rva) runs[nRuns * 2 - 1] += e - k;
      else {
        runs[nRuns * 2] = rva;
        runs[nRuns * 2 + 1] = e - k;
        nRuns++;
      }
      w += len;
      k = e;
    }
    this.lastPacked = w;
    return nRuns;
  }

  /** The first n (va, pages) pairs of packKept()'s run list. */
  runs(n: number): Float64Array {
    return this.runList.subarray(0, n * 2);
  }

  isZero(offset: number, len: number): boolean {
    this.check(offset, len, "isZero");
    for (let at = offset; at < offset + len; at += PAGE) {
      const n = Math.min(PAGE, offset + len - at);
      if (ZERO_PAGE.compare(this.buf, at, at + n, 0, n) !== 0) return false;
    }
    return true;
  }

  /** XXH3-64 (seed 0) of input bytes [offset, offset+len), as PageCodec.hash. */
  hash(offset: number, len: number): bigint {
    this.check(offset, len, "hash");
    return Bun.hash.xxHash3(this.u8.subarray(offset, offset + len)) as bigint;
  }

  /** XXH64 of input bytes [offset, offset+len). */
  checksum(offset: number, len: number, seed: bigint = 0n): bigint {
    this.check(offset, len, "checksum");
    return BigInt.asUintN(64, Bun.hash.xxHash64(this.u8.subarray(offset, offset + len), seed));
  }

  /** XXH64 of the pages at offset whose zeroPages() flag is 0, as if packed together. */
  checksumKept(offset: number, nPages: number, seed: bigint = 0n): bigint {
    this.check(offset, nPages * PAGE, "checksumKept");
    if (!this.scratch || this.scratch.length < nPages * PAGE) this.scratch = new Uint8Array(nPages * PAGE);
    let w = 0;
    for (let i = 0; i < nPages; i++) {
      if (this.flags[i]) continue;
      this.scratch.set(this.u8.subarray(offset + i * PAGE, offset + (i + 1) * PAGE), w);
      w += PAGE;
    }
    return BigInt.asUintN(64, Bun.hash.xxHash64(this.scratch.subarray(0, w), seed));
  }

  private wasm(need: number): PageCodec {
    if (!this.lz4 || this.lz4.capacity < need) this.lz4 = new PageCodec({ capacity: need });
    return this.lz4;
  }

  /** LZ4 (only with --compress, which never picks this codec): through codec.wasm. */
  compress(offset: number, len: number): Uint8Array {
    this.check(offset, len, "compress");
    const c = this.wasm(len);
    c.inputView(len).set(this.u8.subarray(offset, offset + len));
    return c.compress(0, len);
  }

  /** Decode one LZ4 block into the input buffer at offset; returns the decoded length. */
  decompressToInput(block: Uint8Array, offset = 0, maxLen = this.capacity - offset): number {
    this.check(offset, maxLen, "decompressToInput");
    const c = this.wasm(maxLen);
    const n = c.decompressToInput(block, 0, maxLen); // copied into its own memory first
    this.u8.set(c.inputView(n), offset);
    return n;
  }
}
