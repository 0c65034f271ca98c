// PageCodec: the WASM page codec (asm/codec.ts -> wasm/codec.wasm) behind a small TypeScript API.
//
// One PageCodec = one WebAssembly instance with its own linear memory, laid out as
//   [hash table 32 KiB][flags: capacity/4096 B][input: capacity B, 4 KiB aligned][output: lz4Bound(capacity) B]
// Buffers are fixed; they grow only through reserve(). Instances are independent, so each Bun
// Worker can own one; compile the module once (PageCodec.module()) and post it to Workers,
// then `new PageCodec({ module })` there.
//
// API (offsets are byte offsets into the input buffer; every call checks its bounds and throws
// RangeError when out of range):
//   PageCodec.PAGE_SIZE = 4096
//   PageCodec.module(): WebAssembly.Module            compiled once per thread, synchronously
//   PageCodec.lz4Bound(n): number                      worst-case LZ4 block size for n input bytes
//   new PageCodec({ capacity = 4 MiB, module? })       capacity is rounded up to whole pages
//   .capacity: number                                  input buffer size in bytes
//   .reserve(capacity): void                           grow the buffers (never shrinks). Grows the
//                                                      WASM memory: ALL views returned before are
//                                                      detached (length 0) afterwards; get new ones.
//   .inputView(bytes = capacity, offset = 0): Uint8Array
//                                                      view of the input buffer in WASM memory; fill
//                                                      it (e.g. process_vm_readv) then call the codec
//   .inputAddr(offset = 0): number                     real address of the input buffer for the
//                                                      kernel (sys/addr of the view; stable until
//                                                      reserve())
//   .zeroPages(offset, nPages): Uint8Array             flag per 4 KiB page, 1 = all zero. A view
//                                                      valid until the next zeroPages()/reserve().
//                                                      .lastZeroCount holds the number of zero pages.
//   .isZero(offset, len): boolean
//   .compress(offset, len): Uint8Array                 one LZ4 *block* (raw block format, no frame)
//                                                      as a view of the output buffer, valid until the
//                                                      next compress()/decompress()/reserve(). Never
//                                                      fails; if the result is not shorter than len
//                                                      the caller should store the bytes raw.
//   .decompressToInput(block, offset = 0, maxLen = capacity - offset): number
//                                                      decode an LZ4 block into the input buffer at
//                                                      offset; returns the decoded length. Throws
//                                                      CodecError on corrupt input (never reads or
//                                                      writes outside its buffers).
//   .decompress(block, dst): number                    same, then copies into dst (dst.length bytes
//                                                      max); returns the decoded length.
//   .checksum(offset, len, seed = 0n): bigint          XXH64 (xxHash, 64-bit) of input bytes
//   .checksumKept(offset, nPages): bigint              XXH64 of the pages of [offset, +nPages*4096)
//                                                      whose flag in the last zeroPages() view is 0,
//                                                      as if packed together (no copy)
//   .xxh32(offset, len, seed = 0): number              XXH32 (the checksum LZ4 frames use)
//   .hash(offset, len): bigint                         XXH3-64 (seed 0) of input bytes, Bun's native one
//   .packKept(offset, nPages, flagAt, dstOffset, va, nRuns): number
//                                                      the pages of [offset, +nPages*4096) whose flag
//                                                      (last zeroPages() view, from index flagAt) is 0
//                                                      moved down to dstOffset (<= offset), packed;
//                                                      their runs appended to the run list (pairs
//                                                      va, pages; nRuns held before, merged with the
//                                                      last when touching). Returns the new count;
//                                                      .lastPacked = bytes written. .runs(n): a view
//                                                      of the first n pairs (valid until reserve())
//
// Layout: [hash table][flags: capacity/4096 B][runs: capacity/4096 f64 pairs][input][output].
// Checksum choice: XXH3-64 (Bun.hash.xxHash3, native, 24-33 GB/s here) is the page-block checksum
// of page index version 3; XXH64 in WASM (2.5 GB/s) was the one of versions 1 and 2 and stays to
// read them. XXH32 is there to match the LZ4 frame format's content checksums.
// Both are tested against xxHash's own sanity vectors and XXH32 also against the lz4 CLI.
import { readFileSync } from "../sys/fs";
import { addr } from "../sys/addr";
// @ts-ignore: a file import: Bun gives its path (inside the executable when compiled)
import wasmPath from "../../wasm/codec.wasm" with { type: "file" };
import { CriuError } from "../log";

const PAGE = 4096;
const DEFAULT_CAPACITY = 4 << 20;
const WASM_PAGE = 65536;
/** LZ4's largest block input (LZ4_MAX_INPUT_SIZE). */
const LZ4_MAX_INPUT = 0x7e000000;

interface Exports {
  memory: WebAssembly.Memory;
  HASH_TABLE_BYTES: WebAssembly.Global;
  heapBase(): number;
  zeroScan(src: number, nPages: number, flags: number): number;
  isZero(src: number, len: number): number;
  lz4Compress(src: number, len: number, dst: number, dstCap: number, htab: number): number;
  lz4Decompress(src: number, len: number, dst: number, dstCap: number): number;
  xxh32(src: number, len: number, seed: number): number;
  xxh64(src: number, len: number, seed: bigint): bigint;
  xxh64Pages(src: number, nPages: number, flags: number, seed: bigint): bigint;
  packPages(src: number, nPages: number, flags: number, dst: number, va: number, runs: number, nRuns: number): number;
  packedBytes: WebAssembly.Global;
}

/** A corrupt LZ4 block (or one that does not fit the destination). */
export class CodecError extends CriuError {
  constructor(
    message: string,
    public offset: number
  ) {
    super("lz4", message);
    this.name = "CodecError";
  }
}

let cachedModule: WebAssembly.Module | undefined;

// The compiled executable carries the module's bytes in its code (scripts/build.ts: --define
// CRIU_BUN_CODEC_WASM, base64): reading the file embedded beside them would need the runtime's
// node:fs (sys/fs.ts). From sources, the file.
declare const CRIU_BUN_CODEC_WASM: string | undefined;
function wasmBytes(): Uint8Array {
  return typeof CRIU_BUN_CODEC_WASM === "string" ? Buffer.from(CRIU_BUN_CODEC_WASM, "base64") : readFileSync(wasmPath);
}

const align = (n: number, a: number) => Math.ceil(n / a) * a;

export class PageCodec {
  static readonly PAGE_SIZE = PAGE;

  /** The compiled codec module (compiled synchronously on first use, then cached). */
  static module(): WebAssembly.Module {
    if (!cachedModule) cachedModule = new WebAssembly.Module(wasmBytes());
    return cachedModule;
  }

  /** Worst-case LZ4 block size for n input bytes (LZ4_COMPRESSBOUND). */
  static lz4Bound(n: number): number {
    return n + Math.floor(n / 255) + 16;
  }

  readonly memory: WebAssembly.Memory;
  private x: Exports;
  private u8: Uint8Array;
  private cap = 0;
  private htab: number;
  private flagsAt = 0;
  private runsAt = 0;
  private inAt = 0;
  private outAt = 0;
  private outCap = 0;
  /** Number of zero pages found by the last zeroPages() call. */
  lastZeroCount = 0;
  /** Bytes the last packKept() call wrote. */
  lastPacked = 0;

  constructor(opts: { capacity?: number; module?: WebAssembly.Module } = {}) {
    const inst = new WebAssembly.Instance(opts.module ?? PageCodec.module(), {
      env: {
        abort() {
          throw new Error("codec.wasm: abort");
        },
      },
    });
    this.x = inst.exports as unknown as Exports;
    this.memory = this.x.memory;
    this.htab = this.x.heapBase();
    this.u8 = new Uint8Array(this.memory.buffer);
    this.reserve(opts.capacity ?? DEFAULT_CAPACITY);
  }

  /** Input buffer size in bytes. */
  get capacity(): number {
    return this.cap;
  }

  /** Make the input buffer at least `capacity` bytes. Detaches every view handed out before when it grows. */
  reserve(capacity: number): void {
    if (!(capacity >= 0) || capacity > LZ4_MAX_INPUT) throw new RangeError(`PageCodec: bad capacity ${capacity}`);
    capacity = align(Math.max(capacity, PAGE), PAGE);
    if (capacity <= this.cap) return;
    const tableBytes = this.x.HASH_TABLE_BYTES.value as number;
    const flagsAt = align(this.htab + tableBytes, 64);
    const runsAt = align(flagsAt + capacity / PAGE, 64);
    const inAt = align(runsAt + (capacity / PAGE) * 16, PAGE);
    const outCap = PageCodec.lz4Bound(capacity);
    const outAt = align(inAt + capacity, 64);
    const need = outAt + outCap;
    const have = this.memory.buffer.byteLength;
    if (need > have) {
      const oldIn = this.inAt,
        oldCap = this.cap;
      this.memory.grow(Math.ceil((need - have) / WASM_PAGE));
      this.u8 = new Uint8Array(this.memory.buffer);
      // keep the input contents (the input moves when the flags area grows)
      if (oldCap && oldIn !== inAt) this.u8.copyWithin(inAt, oldIn, oldIn + oldCap);
    } else if (this.cap && this.inAt !== inAt) {
      this.u8.copyWithin(inAt, this.inAt, this.inAt + this.cap);
    }
    this.flagsAt = flagsAt;
    this.runsAt = runsAt;
    this.inAt = inAt;
    this.outAt = outAt;
    this.outCap = outCap;
    this.cap = capacity;
  }

  private check(offset: number, len: number, what: string) {
    if (!Number.isInteger(offset) || !Number.isInteger(len) || offset < 0 || len < 0 || offset + len > this.cap)
      throw new RangeError(`PageCodec.${what}: [${offset}, +${len}) outside the input buffer (${this.cap} bytes)`);
  }

  /** View of `bytes` bytes of the input buffer starting at `offset`. */
  inputView(bytes = this.cap, offset = 0): Uint8Array<ArrayBuffer> {
    this.check(offset, bytes, "inputView");
    return new Uint8Array(this.memory.buffer, this.inAt + offset, bytes);
  }

  /** Real (process) address of input byte `offset`, for syscalls such as process_vm_readv. */
  inputAddr(offset = 0): number {
    this.check(offset, 0, "inputAddr");
    return addr(this.u8, this.inAt + offset);
  }

  /** One flag per 4 KiB page of [offset, offset + nPages*4096): 1 = all zero. */
  zeroPages(offset: number, nPages: number): Uint8Array<ArrayBuffer> {
    this.check(offset, nPages * PAGE, "zeroPages");
    this.lastZeroCount = this.x.zeroScan(this.inAt + offset, nPages, this.flagsAt);
    return new Uint8Array(this.memory.buffer, this.flagsAt, nPages);
  }

  /**
   * The pages of [offset, offset + nPages*4096) whose flag in the last zeroPages() view (from index
   * flagAt) is 0, moved down to dstOffset and packed; their runs (va of the first page, pages)
   * appended to the run list, which holds nRuns pairs (merged with the last one when they touch).
   * Returns the new number of pairs; lastPacked = the bytes written at dstOffset.
   */
  packKept(offset: number, nPages: number, flagAt: number, dstOffset: number, va: number, nRuns: number): number {
    this.check(offset, nPages * PAGE, "packKept");
    this.check(dstOffset, 0, "packKept");
    const maxRuns = this.cap / PAGE;
    if (
      dstOffset > offset ||
      !Number.isInteger(flagAt) ||
      flagAt < 0 ||
      flagAt + nPages > maxRuns ||
      !Number.isInteger(nRuns) ||
      nRuns < 0 ||
      nRuns + nPages > maxRuns
    )
      throw new RangeError(
        `PageCodec.packKept: bad arguments (${offset}, ${nPages}, ${flagAt}, ${dstOffset}, ${nRuns})`
      );
    // (each new pair holds at least one of the nPages pages: nRuns + nPages <= capacity/4096 keeps
    // them inside the runs area)
    const n = this.x.packPages(
      this.inAt + offset,
      nPages,
      this.flagsAt + flagAt,
      this.inAt + dstOffset,
      va,
      this.runsAt,
      nRuns
    );
    this.lastPacked = this.x.packedBytes.value as number;
    return n;
  }

  /** The first n (va, pages) pairs of packKept()'s run list (a view of WASM memory). */
  runs(n: number): Float64Array<ArrayBuffer> {
    if (!Number.isInteger(n) || n < 0 || n > this.cap / PAGE) throw new RangeError(`PageCodec.runs: ${n}`);
    return new Float64Array(this.memory.buffer, this.runsAt, n * 2);
  }

  /** True when the len bytes at offset are all zero. */
  isZero(offset: number, len: number): boolean {
    this.check(offset, len, "isZero");
    return this.x.isZero(this.inAt + offset, len) === 1;
  }

  /** LZ4-compress input bytes [offset, offset+len) into one raw LZ4 block (view of the output buffer). */
  compress(offset: number, len: number): Uint8Array<ArrayBuffer> {
    this.check(offset, len, "compress");
    const n = this.x.lz4Compress(this.inAt + offset, len, this.outAt, this.outCap, this.htab);
    if (n <= 0) throw new Error(`codec.wasm: lz4Compress returned ${n} for ${len} bytes`); // cannot happen: outCap is the bound
    return new Uint8Array(this.memory.buffer, this.outAt, n);
  }

  /** Decode one LZ4 block into the input buffer at offset (at most maxLen bytes); returns the decoded length. */
  decompressToInput(block: Uint8Array, offset = 0, maxLen = this.cap - offset): number {
    this.check(offset, maxLen, "decompressToInput");
    let src: number;
    if (block.buffer === this.memory.buffer) {
      src = block.byteOffset; // already in our memory (e.g. a compress() result): no copy
      const end = src + block.length;
      const dst = this.inAt + offset;
      if (src < dst + maxLen && dst < end)
        throw new RangeError("PageCodec.decompressToInput: block overlaps the destination");
    } else {
      if (block.length > this.outCap)
        throw new RangeError(
          `PageCodec.decompressToInput: block of ${block.length} bytes exceeds the ${this.outCap}-byte staging buffer (reserve() more)`
        );
      this.u8.set(block, this.outAt);
      src = this.outAt;
    }
    const n = this.x.lz4Decompress(src, block.length, this.inAt + offset, maxLen);
    if (n < 0) {
      const at = -n - 1;
      throw new CodecError(
        `corrupt LZ4 block (${block.length} bytes, error at byte ${at}, output limit ${maxLen})`,
        at
      );
    }
    return n;
  }

  /** Decode one LZ4 block into dst (at most dst.length bytes); returns the decoded length. */
  decompress(block: Uint8Array, dst: Uint8Array): number {
    if (dst.length > this.cap)
      throw new RangeError(
        `PageCodec.decompress: destination of ${dst.length} bytes exceeds capacity ${this.cap} (reserve() more)`
      );
    const n = this.decompressToInput(block, 0, dst.length);
    dst.set(new Uint8Array(this.memory.buffer, this.inAt, n));
    return n;
  }

  /** XXH3-64 (seed 0) of input bytes [offset, offset+len): Bun's native xxHash3 on the WASM memory. */
  hash(offset: number, len: number): bigint {
    this.check(offset, len, "hash");
    return Bun.hash.xxHash3(new Uint8Array(this.memory.buffer, this.inAt + offset, len)) as bigint;
  }

  /** XXH64 of input bytes [offset, offset+len). */
  checksum(offset: number, len: number, seed: bigint = 0n): bigint {
    this.check(offset, len, "checksum");
    return BigInt.asUintN(64, this.x.xxh64(this.inAt + offset, len, BigInt.asIntN(64, seed)));
  }

  /** XXH64 of the pages at offset whose zeroPages() flag (as the caller left it) is 0, packed. */
  checksumKept(offset: number, nPages: number, seed: bigint = 0n): bigint {
    this.check(offset, nPages * PAGE, "checksumKept");
    return BigInt.asUintN(64, this.x.xxh64Pages(this.inAt + offset, nPages, this.flagsAt, BigInt.asIntN(64, seed)));
  }

  /** XXH32 of input bytes [offset, offset+len). */
  xxh32(offset: number, len: number, seed = 0): number {
    this.check(offset, len, "xxh32");
    return this.x.xxh32(this.inAt + offset, len, seed | 0) >>> 0;
  }
}
