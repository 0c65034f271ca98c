// The work on one block of pages, the same on the main thread (small jobs) and in Workers
// (src/codec/worker.ts): one PageCodec (one WASM instance) per thread, reused for every block.
//
// dump block:    segments of the dumped process -> process_vm_readv (or /proc/PID/mem) straight
//                into WASM memory -> zero pages of anonymous memory dropped, kept pages packed ->
//                uncompressed: XXH3-64 of them, then, once the blocks before it are written
//                (DumpOrder: one write at a time), one pwrite of them from WASM memory into the
//                pages file at this block's offset, by the thread that read them (no copy into
//                the slot, no write on the main thread); with LZ4: XXH3-64 -> LZ4 -> stored bytes into the
//                slot, written by the main thread.
// fill block:    stored bytes from the pages file -> XXH3-64 (XXH64 for page index versions 1
//                and 2) compared with the index -> LZ4 decode
//                -> zero pages of anonymous memory skipped (or, for memory inherited from the
//                parent, pages already right) -> process_vm_writev (or /proc/PID/mem) into the target.
//
// Results go to a Slot: a small header (lengths, hashes, kept runs, error text) and a data area,
// backed by a SharedArrayBuffer when a Worker fills it and the main thread waits on it.
import { PageCodec } from "./codec";
import { PlainCodec } from "./plain";

/** codec.wasm, or for a small job on the main thread the same without WebAssembly (plain.ts) */
type Codec = PageCodec | PlainCodec;
import { BLOCK, BLOCK_LZ4 } from "./format";
import { vmRead, vmWrite, preadFull, pwriteFull, VmWriteBatch } from "../sys/mem";
import { addr } from "../sys/addr";
import { uffdCopy, uffdCopyAt, uffdCopied } from "../sys/uffd";
import { syscall } from "../sys/syscall";
import { NR } from "../sys/nr";
import { errnoText, E } from "../sys/errno";

const PAGE = 4096;
/** segment kinds (bits) */
export const SEG_ANON = 1,
  SEG_READABLE = 2,
  SEG_WRITABLE = 4;
/** pages of the vDSO: stored as CRIU stores them, never written back (the kernel maps its own) */
export const SEG_KERNEL = 8;

// a slot's control word: 0 idle (as a new slot starts), then busy, then done or error
const CTL_ERROR = 3;
export const CTL_BUSY = 1,
  CTL_DONE = 2;
export const I_CTL = 0; // the slot's control word (CTL_*), waited on with Atomics
/** in the pool's shared `ready` words: how many jobs the Workers finished (each one notified) */
export const I_DONE = 1;
const I_RAW = 1,
  I_STORED = 2,
  I_NRUNS = 3,
  I_FLAGS = 4,
  I_ERRLEN = 5,
  I_WRITTEN = 6;
const I_ORDER_SEQ = 0,
  I_ORDER_ABORT = 1;
const RUNS_AT = 64,
  MAX_RUNS = BLOCK / PAGE; // pairs of f64
const DATA_AT = 8192;
/** Jobs between a page Worker's garbage collections (worker.ts; a run may say none: pipeline.ts GC_EVERY) */
export const WORKER_GC_EVERY = 64;
/** Bytes of a slot for jobs of up to `block` raw bytes. */
export const slotBytes = (block = BLOCK) => DATA_AT + PageCodec.lz4Bound(block) + 4096;

/** One result slot. */
export class Slot {
  readonly i32: Int32Array;
  readonly u64: BigUint64Array;
  readonly runs: Float64Array;
  readonly data: Uint8Array;
  /** [0]: the file offset a direct (DumpOrder) block was written at */
  readonly f64: Float64Array;
  constructor(readonly buffer: ArrayBuffer | SharedArrayBuffer) {
    this.i32 = new Int32Array(buffer, 0, 16);
    this.u64 = new BigUint64Array(buffer, 32, 2);
    this.f64 = new Float64Array(buffer, 48, 1);
    this.runs = new Float64Array(buffer, RUNS_AT, MAX_RUNS * 2);
    this.data = new Uint8Array(buffer, DATA_AT, buffer.byteLength - DATA_AT);
  }
  get rawLen() {
    return this.i32[I_RAW];
  }
  get storedLen() {
    return this.i32[I_STORED];
  }
  get nRuns() {
    return this.i32[I_NRUNS];
  }
  get flags() {
    return this.i32[I_FLAGS];
  }
  get written() {
    return this.i32[I_WRITTEN];
  }
  get fileOff() {
    return this.f64[0];
  }
  get rawHash() {
    return this.u64[0];
  }
  get storedHash() {
    return this.u64[1];
  }
  error(): string {
    return new TextDecoder().decode(this.data.subarray(0, this.i32[I_ERRLEN]));
  }
  setError(msg: string) {
    const b = new TextEncoder().encode(msg.slice(0, 2000));
    this.data.set(b);
    this.i32[I_ERRLEN] = b.length;
  }
}

export interface DumpJob {
  op: "dump";
  slot: number;
  segs: number[] /* [vaddr, nPages, kind]* */;
  seq: number /* 0, 1, ... in file order */;
}

/**
 * Where the next block of an uncompressed dump goes in the pages file, and whose turn it is to
 * write, shared by the threads that write blocks themselves: i32[0] the sequence number of the
 * block whose turn it is, f64[1] the offset it writes at, i32[1] set when a block failed (its
 * successors give up instead of waiting). Block s waits until i32[0] === s (turn), writes its
 * bytes at the offset, then publishes offset + its length and s + 1 (pass). Jobs reach each thread
 * in sequence order, so the oldest unfinished block never waits.
 *
 * One block writes at a time: a tmpfs (shmem) write holds the file's inode lock for the whole
 * write, so two threads writing blocks of one pages file at once never overlap in the kernel; the
 * second spun on that lock (rwsem_spin_on_owner: 6% of a 1 GiB dump's CPU under perf) while the
 * first wrote. Waiting here sleeps (Atomics.wait) instead.
 */
export class DumpOrder {
  readonly i32: Int32Array;
  readonly f64: Float64Array;
  constructor(readonly buffer: SharedArrayBuffer = new SharedArrayBuffer(16)) {
    this.i32 = new Int32Array(buffer, 0, 2);
    this.f64 = new Float64Array(buffer, 8, 1);
  }
  /** Wait for block seq's turn; returns the file offset it writes at (then pass(seq, len)). */
  turn(seq: number): number {
    const t0 = Date.now();
    for (;;) {
      const cur = Atomics.load(this.i32, I_ORDER_SEQ);
      if (cur === seq) break;
      if (Atomics.load(this.i32, I_ORDER_ABORT)) throw new BlockError("an earlier block failed");
      if (cur > seq) throw new BlockError(`block ${seq} claimed twice`);
      Atomics.wait(this.i32, I_ORDER_SEQ, cur, 200);
      if (Date.now() - t0 > 120_000) throw new BlockError(`block ${seq} waited 120 s for block ${cur}`);
    }
    return this.f64[0];
  }
  /** Block seq (whose turn it is) wrote len bytes: the next block's turn. */
  pass(seq: number, len: number) {
    this.f64[0] += len;
    Atomics.store(this.i32, I_ORDER_SEQ, seq + 1);
    Atomics.notify(this.i32, I_ORDER_SEQ);
  }
  abort() {
    Atomics.store(this.i32, I_ORDER_ABORT, 1);
    Atomics.notify(this.i32, I_ORDER_SEQ);
  }
  /** bytes written so far */
  get end() {
    return this.f64[0];
  }
}
export interface RestoreJob {
  op: "fill";
  slot: number;
  block: number;
  fileOff: number;
  rawLen: number;
  storedLen: number;
  flags: number;
  rawHash: bigint;
  storedHash: bigint;
  hasHash: boolean;
  /** the hashes are XXH3-64 (page index version 3), else XXH64 */
  xxh3: boolean;
  segs: number[] /* [vaddr, nPages, kind]* covering rawLen bytes */;
  /** the target inherited its memory from its parent: write only pages that differ from what is there */
  cow?: boolean;
}
export type Job = DumpJob | RestoreJob;

/** The runs k..e-1 of the n pages of a segment that `skip` leaves, each given to put(k, e); the pages put. */
function eachRun(n: number, skip: (k: number) => boolean, put: (k: number, e: number) => void): number {
  let pages = 0;
  for (let k = 0; k < n; ) {
    if (skip(k)) {
      k++;
      continue;
    }
    let e = k + 1;
    while (e < n && !skip(e)) e++;
    put(k, e);
    pages += e - k;
    k = e;
  }
  return pages;
}

export interface CoreInit {
  /** a restore: a userfaultfd over every writable private anonymous VMA of the target (task.ts
   * fillUffd): their pages go by UFFDIO_COPY (uffdWrite) */
  uffd?: number;
  pid: number;
  memFd: number;
  pagesFd: number;
  /** restore --auto-dedup: each block's stored bytes are punched out of the pages file (opened
   * for writing) once its pages are in the process, as criu's restore punches what it read */
  punch?: boolean;
  compress: boolean;
  module?: WebAssembly.Module;
  /** the largest job in raw bytes (default BLOCK): a small dump needs no 1 MiB buffers */
  block?: number;
  /** no WebAssembly (PlainCodec): for a small uncompressed run on the main thread */
  plain?: boolean;
  /** uncompressed dump: the pages file (opened for writing) and its DumpOrder's buffer: each
   * block is written by the thread that read it */
  outFd?: number;
  order?: SharedArrayBuffer;
}

/** Thrown (and passed back from Workers as text) when a block fails a check. */
export class BlockError extends Error {}

/** A raw block's stored form in a codec's input: where, how long, both XXH3-64s, BLOCK_LZ4 or 0. */
interface StoredBlock {
  at: number;
  len: number;
  rawHash: bigint;
  storedHash: bigint;
  flags: number;
}

/**
 * A block's checksum: XXH3-64 (page index version 3, what criu-bun writes), or XXH64 (versions 1
 * and 2, still read).
 */
function blockHash(c: Codec, at: number, len: number, xxh3: boolean): bigint {
  return xxh3 ? c.hash(at, len) : c.checksum(at, len);
}

/**
 * The stored form of the raw block at 0..rawLen of c's input: with `compress`, its LZ4 block
 * copied to `zat` when that is shorter; else the raw bytes where they are. Checksums: XXH3-64.
 */
export function encodeBlock(c: Codec, rawLen: number, zat: number, compress: boolean): StoredBlock {
  const rawHash = c.hash(0, rawLen);
  if (compress) {
    const z = c.compress(0, rawLen);
    if (z.length < rawLen) {
      c.inputView(z.length, zat).set(z);
      return { at: zat, len: z.length, rawHash, storedHash: c.hash(zat, z.length), flags: BLOCK_LZ4 };
    }
  }
  return { at: 0, len: rawLen, rawHash, storedHash: rawHash, flags: 0 };
}

/**
 * Check the stored block at `at` of c's input (len bytes) against `storedHash` (when there is one;
 * xxh3: an XXH3-64, else an XXH64) and leave its rawLen raw bytes at 0 (an uncompressed block is
 * read to 0 in the first place). Throws BlockError.
 */
export function decodeBlock(
  c: Codec,
  at: number,
  len: number,
  rawLen: number,
  flags: number,
  storedHash: bigint | undefined,
  xxh3: boolean
): void {
  if (storedHash !== undefined && blockHash(c, at, len, xxh3) !== storedHash) throw new BlockError("checksum mismatch");
  if (!(flags & BLOCK_LZ4)) return;
  let n: number;
  try {
    n = c.decompressToInput(c.inputView(len, at), 0, rawLen);
  } catch (e) {
    throw new BlockError(`LZ4 block does not decode (${e instanceof Error ? e.message : e})`);
  }
  if (n !== rawLen) throw new BlockError(`LZ4 block decodes to ${n} bytes, index says ${rawLen}`);
}

/**
 * The functions a restore block runs through once per segment or run of pages (BlockCore's methods,
 * the run loop, the UFFDIO_COPY and system call wrappers): a restore's Workers keep them out of
 * JavaScriptCore's top tier (bun:jsc noFTL, worker.ts). Hot for a few hundred milliseconds only,
 * they reached FTL in both Workers: 60-65 ms of compiling on the JIT thread (of ~85 ms in all,
 * BUN_JSC_reportFTLCompileTimes) on the two CPUs the Workers need, for code that then runs a
 * fraction of the pages phase; DFG code is quick enough for them.
 */
export function restoreHotCode(): ((...a: never[]) => unknown)[] {
  const proto = BlockCore.prototype as unknown as Record<string, unknown>;
  const methods = Object.getOwnPropertyNames(BlockCore.prototype)
    .filter((k) => k !== "constructor")
    .map((k) => proto[k])
    .filter((f): f is (...a: never[]) => unknown => typeof f === "function");
  const table = BlockTable.prototype as unknown as Record<string, (...a: never[]) => unknown>;
  return [
    eachRun,
    uffdCopy,
    uffdCopyAt,
    syscall,
    addr,
    preadFull,
    vmWrite,
    decodeBlock,
    runInto,
    table.cut,
    ...methods,
  ];
}

/** The input capacity of a core's codec for jobs of `block` raw bytes: the raw block, then its stored
 *  (LZ4) form after it. */
const coreCapacity = (block: number) => block + PageCodec.lz4Bound(block) + PAGE;

/**
 * A codec for BlockCores of full blocks, made ahead (a page Worker at its start, worker.ts): the
 * codec module compiled on this thread if `module` is not given, the first block's buffer faulted
 * in. A core opened later takes it (new BlockCore(init, codec)) instead of making its own.
 */
export function coreCodec(module?: WebAssembly.Module): PageCodec {
  const c = new PageCodec({ capacity: coreCapacity(BLOCK), module: module ?? PageCodec.module() });
  c.inputView(BLOCK).fill(0);
  return c;
}

export class BlockCore {
  readonly codec: Codec;
  private io: Uint8Array;
  /** stored bytes (compressed) live here, after the raw block */
  private readonly ZAT: number;
  private readonly order?: DumpOrder;
  /** a restore block's writes: one process_vm_writev; and its pieces [from, va, len]* to redo one by one */
  private readonly batch = new VmWriteBatch(BLOCK / PAGE);
  private readonly pieces = new Float64Array((BLOCK / PAGE) * 3);
  /** pages uffdRest went through one by one since runTable last took the count */
  oneByOne = 0;
  /** reuse: a codec made ahead (coreCodec) taken when this core's buffers are its size */
  constructor(
    public init: CoreInit,
    reuse?: PageCodec
  ) {
    const block = init.block ?? BLOCK;
    this.ZAT = block;
    if (init.order && init.outFd !== undefined && init.outFd >= 0 && !init.compress)
      this.order = new DumpOrder(init.order);
    const capacity = coreCapacity(block);
    this.codec = init.plain
      ? new PlainCodec({ capacity })
      : reuse && block === BLOCK && reuse.capacity >= capacity
        ? reuse
        : new PageCodec({ capacity, module: init.module });
    this.io = this.codec.inputView();
  }

  run(job: Job, out: Slot): void {
    if (job.op === "dump") {
      try {
        this.dump(job, out);
      } catch (e) {
        this.order?.abort();
        throw e;
      }
    } else {
      this.restore(job, out);
      if (this.init.punch) this.punchStored(job);
    }
  }

  /** restore --auto-dedup: the block's stored bytes leave the pages file (its pages are in the process) */
  private punchStored(job: RestoreJob) {
    const r = syscall(NR.fallocate, this.init.pagesFd, 3 /* PUNCH_HOLE | KEEP_SIZE */, job.fileOff, job.storedLen);
    if (r < 0)
      throw new BlockError(
        `--auto-dedup: cannot punch ${job.storedLen} bytes at file offset ${job.fileOff}: ${errnoText(-r)}`
      );
  }

  private dump(job: DumpJob, out: Slot) {
    const { pid, memFd } = this.init;
    const io = this.io,
      c = this.codec,
      s = job.segs;
    // 1. read every segment, packed from offset 0
    let off = 0;
    for (let i = 0; i < s.length; i += 3) {
      const va = s[i],
        len = s[i + 1] * PAGE,
        kind = s[i + 2];
      let got = kind & SEG_READABLE ? vmRead(pid, BigInt(va), io, off, len) : -1;
      if (got !== len) {
        // unreadable (PROT_NONE, ...) or partly: /proc/PID/mem reads with FOLL_FORCE
        got = preadFull(memFd, io, BigInt(va), len, off, `read memory of ${pid}`);
        if (got !== len) throw new BlockError(`cannot read ${len} bytes of process ${pid} at 0x${va.toString(16)}`);
      }
      off += len;
    }
    const total = off / PAGE;
    // 2. zero pages of anonymous memory out: flags[i] = 1 for a page left out (zero pages of
    // other memory are kept: their mapping would not give zeroes back)
    const zeros = c.zeroPages(0, total);
    const anyZero = c.lastZeroCount > 0;
    let w = 0,
      nRuns = 0,
      p = 0;
    for (let i = 0; i < s.length; i += 3) {
      const va = s[i],
        n = s[i + 1],
        anon = (s[i + 2] & SEG_ANON) !== 0;
      if (anyZero && !anon) zeros.fill(0, p, p + n);
      // kept pages packed from 0 (memmove in WASM memory: cheaper than hashing them in pieces),
      // their runs listed (va, pages), merged where they touch (across segments too)
      nRuns = c.packKept(p * PAGE, n, p, w, va, nRuns);
      w += c.lastPacked;
      p += n;
    }
    if (nRuns) out.runs.set(c.runs(nRuns));
    out.i32[I_NRUNS] = nRuns;
    out.i32[I_RAW] = w;
    out.i32[I_WRITTEN] = total;
    if (this.order) {
      // 3. XXH3 of the kept pages, then this block's place in the file, then one pwrite
      const h = w ? c.hash(0, w) : 0n;
      const at = this.order.turn(job.seq);
      if (w) pwriteFull(this.init.outFd!, io, BigInt(at), w, 0, "write pages");
      this.order.pass(job.seq, w);
      out.f64[0] = at;
      out.u64[0] = h;
      out.u64[1] = h;
      out.i32[I_STORED] = w;
      out.i32[I_FLAGS] = 0;
      return;
    }
    if (!w) {
      out.i32[I_STORED] = 0;
      out.i32[I_FLAGS] = 0;
      return;
    }
    const b = encodeBlock(c, w, this.ZAT, this.init.compress);
    out.data.set(io.subarray(b.at, b.at + b.len));
    out.u64[0] = b.rawHash;
    out.u64[1] = b.storedHash;
    out.i32[I_STORED] = b.len;
    out.i32[I_FLAGS] = b.flags;
  }

  /**
   * Take blocks of `t` until none is left or one failed (BlockTable): each cut into its segments,
   * then read, checked and written as a posted job is (restore). out: a slot of this thread's own.
   * gc(): after each block (the Worker's collections).
   */
  runTable(t: BlockTable, out: Slot, gc: () => void) {
    const c = t.i32,
      d = t.d,
      segs: number[] = [];
    const job: RestoreJob = {
      op: "fill",
      slot: 0,
      block: 0,
      fileOff: 0,
      rawLen: 0,
      storedLen: 0,
      flags: 0,
      rawHash: 0n,
      storedHash: 0n,
      hasHash: d.hasHash,
      xxh3: d.xxh3,
      segs,
      cow: d.cow,
    };
    while (!Atomics.load(c, TB_ABORT)) {
      const i = Atomics.add(c, TB_NEXT, 1);
      if (i >= d.n) break;
      const b = i * TB_FIELDS;
      job.block = i;
      job.fileOff = d.blocks[b];
      job.rawLen = d.blocks[b + 1];
      job.storedLen = d.blocks[b + 2];
      job.flags = d.blocks[b + 3];
      job.rawHash = d.hashes[i * 2];
      job.storedHash = d.hashes[i * 2 + 1];
      try {
        t.cut(i, segs);
        this.restore(job, out);
        if (this.init.punch) this.punchStored(job);
      } catch (e) {
        t.fail(i, errorText(e));
        break;
      }
      Atomics.add(c, TB_WRITTEN, out.i32[I_WRITTEN]);
      if (this.oneByOne) {
        Atomics.add(c, TB_ONE_BY_ONE, this.oneByOne);
        this.oneByOne = 0;
      }
      const k = job.rawLen / PAGE,
        before = Atomics.add(c, TB_PAGES, k),
        wake = c[TB_WAKE];
      if (wake && before < wake && before + k >= wake) Atomics.notify(c, TB_FINISHED);
      Atomics.add(c, TB_BLOCKS, 1);
      gc();
    }
  }

  /** Where the stored bytes of a restore job are in WASM memory, read from the pages file. */
  private loadStored(job: RestoreJob): number {
    const at = job.flags & BLOCK_LZ4 ? this.ZAT : 0;
    // the raw block at 0 must end before the stored one (LZ4) and both inside the buffer (a page
    // index may declare blocks of up to 64 MiB; criu-bun writes 1 MiB ones)
    if (job.rawLen > this.ZAT || at + job.storedLen > this.io.length)
      throw new BlockError(
        `${job.rawLen} raw bytes stored in ${job.storedLen}: larger than a block this restore reads`
      );
    const got = preadFull(this.init.pagesFd, this.io, BigInt(job.fileOff), job.storedLen, at, "read pages");
    if (got !== job.storedLen)
      throw new BlockError(`truncated: ${got} of ${job.storedLen} bytes at file offset ${job.fileOff}`);
    return at;
  }

  private restore(job: RestoreJob, out: Slot) {
    const c = this.codec;
    const at = this.loadStored(job);
    // the stored bytes are checked before they are used: a bad block stops the restore while
    // every process is still a stopped shell that never ran (it is then killed)
    decodeBlock(c, at, job.storedLen, job.rawLen, job.flags, job.hasHash ? job.storedHash : undefined, job.xxh3);
    // write, skipping zero pages of anonymous memory (the fresh mapping is zero already) or, for
    // memory inherited from the parent, every page that is already right (it stays shared, COW)
    if (job.cow) {
      this.fillCow(job, out);
      return;
    }
    const s = job.segs;
    const zeros = c.zeroPages(0, job.rawLen / PAGE);
    // the pages of writable private anonymous segments by UFFDIO_COPY when the target's are
    // registered (init.uffd); other writable ones in one process_vm_writev (VmWriteBatch), the
    // runs of pages to write as its pieces; read-only segments through /proc/PID/mem (writeSegment)
    const batch = this.batch,
      pc = this.pieces,
      base = addr(this.io),
      uffd = this.init.uffd ?? -1;
    batch.clear();
    let p = 0,
      np = 0,
      written = 0;
    for (let i = 0; i < s.length; i += 3) {
      const va = s[i],
        n = s[i + 1],
        kind = s[i + 2],
        anon = (kind & SEG_ANON) !== 0,
        at = p;
      const skip = (k: number) => anon && zeros[at + k] === 1;
      if (kind & SEG_KERNEL) {
        // not written (the kernel's own pages; memory left to the lazy-pages daemon)
      } else if (!(kind & SEG_WRITABLE)) {
        written += this.writeSegment(va, n, p, kind, skip);
      } else if (anon && uffd >= 0) {
        written += this.uffdSegment(uffd, va, n, at, zeros, base);
      } else {
        written += eachRun(n, skip, (k, e) => {
          const from = (at + k) * PAGE,
            len = (e - k) * PAGE,
            dst = va + k * PAGE;
          batch.add(base + from, dst, len);
          pc[np * 3] = from;
          pc[np * 3 + 1] = dst;
          pc[np * 3 + 2] = len;
          np++;
        });
      }
      p += n;
    }
    if (np && batch.write(this.init.pid) !== batch.bytes) {
      // short (a page the call cannot write: the copy stops there) or failed: every piece again on
      // its own, through /proc/PID/mem where process_vm_writev still falls short (the same bytes
      // to the same place: what the batch did write is written again, unchanged)
      for (let q = 0; q < np; q++) this.writeRun(pc[q * 3 + 1], pc[q * 3], pc[q * 3 + 2], SEG_WRITABLE);
    }
    out.i32[I_RAW] = job.rawLen;
    out.i32[I_WRITTEN] = written;
  }

  /**
   * The n pages of a segment at va (raw bytes from page p of the block, whose first byte is at the
   * address base) that are not zero pages (zeros[p + k] === 1), by UFFDIO_COPY in runs: one loop,
   * numbers only (no closure per page, no BigInt or object per run: 55,000 runs per GiB of a heap);
   * a run the kernel does not take whole goes on in uffdRest. The pages written.
   */
  private uffdSegment(uffd: number, va: number, n: number, p: number, zeros: Uint8Array, base: number): number {
    let pages = 0;
    for (let k = 0; k < n; ) {
      if (zeros[p + k] === 1) {
        k++;
        continue;
      }
      let e = k + 1;
      while (e < n && zeros[p + e] !== 1) e++;
      const len = (e - k) * PAGE,
        from = (p + k) * PAGE;
      if (uffdCopyAt(uffd, va + k * PAGE, base + from, len) !== 0)
        this.uffdRest(uffd, va + k * PAGE, from, len, uffdCopied());
      pages += e - k;
      k = e;
    }
    return pages;
  }

  /**
   * The rest of len bytes from io[from..] to the target at va, inside a range registered with the
   * userfaultfd `uffd` (task.ts fillUffd), after a UFFDIO_COPY of them all copied only `copied`
   * bytes (uffdSegment). From there: page by page, a page already there
   * (EEXIST) written by process_vm_writev (no fault: nothing waits on the userfaultfd), EAGAIN
   * (the target's memory map changing) tried again; anything else fails the block. Never
   * process_vm_writev or /proc/PID/mem on a missing page of a registered range: that write would
   * wait for a fault nobody serves.
   */
  private uffdRest(uffd: number, va: number, from: number, len: number, copied: number) {
    const done = Math.min(copied, len),
      start = done - (done % PAGE);
    this.oneByOne += (len - start) / PAGE;
    for (let off = start, again = 0; off < len; ) {
      const p = uffdCopy(uffd, BigInt(va + off), this.io, from + off, PAGE);
      if (!p.err && p.copied === PAGE) {
        off += PAGE;
        continue;
      }
      if (p.err === E.EEXIST) {
        if (vmWrite(this.init.pid, BigInt(va + off), this.io, from + off, PAGE) !== PAGE)
          throw new BlockError(`cannot write the page at 0x${(va + off).toString(16)} of process ${this.init.pid}`);
        off += PAGE;
        continue;
      }
      if (p.err === E.EAGAIN && ++again < 1000) continue;
      throw new BlockError(`UFFDIO_COPY at 0x${(va + off).toString(16)} failed: ${errnoText(p.err)}`);
    }
  }

  /** len bytes from io[from..] to the target at va: process_vm_writev when the segment is writable,
   * else (or when that falls short) /proc/PID/mem. */
  private writeRun(va: number, from: number, len: number, kind: number) {
    const { pid, memFd } = this.init;
    const dst = BigInt(va);
    const r = kind & SEG_WRITABLE ? vmWrite(pid, dst, this.io, from, len) : -1;
    if (r !== len) pwriteFull(memFd, this.io, dst, len, from, `write pages of ${pid} at 0x${dst.toString(16)}`);
  }

  /** Write the pages of one segment (raw bytes from page p of the block) that `skip` keeps, in runs. */
  private writeSegment(va: number, n: number, p: number, kind: number, skip: (k: number) => boolean): number {
    return eachRun(n, skip, (k, e) => this.writeRun(va + k * PAGE, (p + k) * PAGE, (e - k) * PAGE, kind));
  }

  /** Compare each page with the target's current one (read into the area after the raw block). */
  private fillCow(job: RestoreJob, out: Slot) {
    const { pid, memFd } = this.init;
    const io = this.io,
      s = job.segs,
      cmp = this.ZAT;
    const a = new Uint32Array(io.buffer, io.byteOffset, io.length >> 2);
    let p = 0,
      written = 0;
    for (let i = 0; i < s.length; i += 3) {
      const va = s[i],
        n = s[i + 1],
        kind = s[i + 2];
      if (kind & SEG_KERNEL) {
        p += n;
        continue;
      }
      const got = preadFull(memFd, io, BigInt(va), n * PAGE, cmp, `read memory of ${pid}`);
      if (got !== n * PAGE)
        throw new BlockError(`cannot read ${n * PAGE} bytes of process ${pid} at 0x${va.toString(16)}`);
      const at = p;
      const same = (q: number) => {
        const x = ((at + q) * PAGE) >> 2,
          y = (cmp + q * PAGE) >> 2;
        for (let j = 0; j < 1024; j++) if (a[x + j] !== a[y + j]) return false;
        return true;
      };
      written += this.writeSegment(va, n, p, kind, same);
      p += n;
    }
    out.i32[I_RAW] = job.rawLen;
    out.i32[I_WRITTEN] = written;
  }
}

/** What a failed job says: a BlockError's message, another error's name and message. */
function errorText(e: unknown): string {
  return e instanceof BlockError ? e.message : e instanceof Error ? `${e.name}: ${e.message}` : `Error: ${e}`;
}

/** Run a job into a slot, catching errors into the slot; returns the control value. */
export function runInto(core: BlockCore, job: Job, out: Slot): number {
  try {
    core.run(job, out);
    return CTL_DONE;
  } catch (e) {
    out.setError(errorText(e));
    return CTL_ERROR;
  }
}

// ---------------------------------------------------------------------------------------------
// A restore's blocks in shared memory (BlockTable)

/** the table's control words (Int32Array at the start of its `ctl` buffer) */
export const TB_BLOCKS = 1, // blocks done
  TB_PAGES = 2, // raw pages of the blocks done
  TB_WRITTEN = 3, // pages written into the target
  TB_FINISHED = 4, // Workers that left the table (notified)
  TB_WAKE = 8, // raw pages done at which the main thread is woken (0: never; see pipeline.ts runTable)
  TB_ONE_BY_ONE = 9; // pages of runs UFFDIO_COPY did not take whole, then written one by one (uffdRest)
const TB_NEXT = 0, // the next block to take (Atomics.add by each Worker)
  TB_ABORT = 5, // set by the first block that failed: the others take no more
  TB_ERR_BLOCK = 6, // that block (-1: none; -2: a Worker without its core)
  TB_ERR_LEN = 7; // bytes of its error text (at TB_TEXT)
const TB_TEXT = 64,
  TB_CTL_BYTES = TB_TEXT + 4096;
/** per block in `blocks`: file offset, raw length, stored length, flags, first run, pages into it */
export const TB_FIELDS = 6;

/** What a BlockTable is made of: shared buffers (posted to the Workers, not copied) and scalars. */
interface BlockTableData {
  ctl: SharedArrayBuffer;
  /** the PE_PRESENT runs in page-stream order: addresses and page counts (Float64Array each) */
  runVa: Float64Array;
  runNr: Float64Array;
  /** [start, end, kind]* per VMA, sorted (validateMm) */
  vmas: Float64Array;
  /** TB_FIELDS per block */
  blocks: Float64Array;
  /** [raw hash, stored hash] per block */
  hashes: BigUint64Array;
  n: number;
  hasHash: boolean;
  xxh3: boolean;
  cow: boolean;
}

/**
 * A restore's blocks in shared memory: each page Worker takes the next block itself (TB_NEXT) and
 * cuts it into the target's segments itself (cut: the same segments as pipeline.ts restoreBlocks),
 * so the main thread neither cuts nor posts per block; it waits for the Workers to leave the table.
 * The first block that fails stops the others (TB_ABORT) and leaves its number and error text.
 */
export class BlockTable {
  readonly i32: Int32Array;
  constructor(readonly d: BlockTableData) {
    this.i32 = new Int32Array(d.ctl, 0, 16);
  }
  static make(d: Omit<BlockTableData, "ctl">): BlockTable {
    const t = new BlockTable({ ...d, ctl: new SharedArrayBuffer(TB_CTL_BYTES) });
    t.i32[TB_ERR_BLOCK] = -1;
    return t;
  }
  /** Block i (-2: none) failed with msg; only the first failure is kept. */
  fail(i: number, msg: string) {
    if (Atomics.compareExchange(this.i32, TB_ERR_BLOCK, -1, i) === -1) {
      const b = new TextEncoder().encode(msg.slice(0, 2000));
      new Uint8Array(this.d.ctl, TB_TEXT, b.length).set(b);
      Atomics.store(this.i32, TB_ERR_LEN, b.length);
    }
    Atomics.store(this.i32, TB_ABORT, 1);
  }
  get errorBlock() {
    return Atomics.load(this.i32, TB_ERR_BLOCK);
  }
  error(): string {
    return new TextDecoder().decode(new Uint8Array(this.d.ctl, TB_TEXT, Atomics.load(this.i32, TB_ERR_LEN)).slice());
  }
  /** A Worker leaves the table. */
  leave() {
    Atomics.add(this.i32, TB_FINISHED, 1);
    Atomics.notify(this.i32, TB_FINISHED);
  }

  /**
   * Block i's segments [vaddr, nPages, kind]* into segs: from its first run (as blocks' start
   * positions say) through as many pages as it holds, split where runs and VMAs end. Throws
   * BlockError where the pagemap and the VMAs do not hold its pages (validatePagemap refuses that
   * before; here it keeps the loop from running off).
   */
  cut(i: number, segs: number[]) {
    const { runVa, runNr, vmas, blocks } = this.d;
    const nv = vmas.length / 3;
    let ei = blocks[i * TB_FIELDS + 4],
      inEntry = blocks[i * TB_FIELDS + 5],
      pages = blocks[i * TB_FIELDS + 1] / PAGE;
    segs.length = 0;
    if (ei >= runVa.length) throw new BlockError("the page stream holds more pages than the pagemap lists");
    // the first VMA ending above the block's first page (VMAs are sorted and do not overlap)
    const first = runVa[ei] + inEntry * PAGE;
    let lo = 0,
      hi = nv;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (vmas[mid * 3 + 1] <= first) lo = mid + 1;
      else hi = mid;
    }
    let vi = lo;
    while (pages > 0) {
      if (ei >= runVa.length) throw new BlockError("the page stream holds more pages than the pagemap lists");
      const va = runVa[ei] + inEntry * PAGE;
      while (vi < nv && vmas[vi * 3 + 1] <= va) vi++;
      if (vi >= nv || vmas[vi * 3] > va) throw new BlockError(`page 0x${va.toString(16)} is outside every VMA`);
      const inVma = Math.floor((vmas[vi * 3 + 1] - va) / PAGE);
      const n = Math.min(pages, runNr[ei] - inEntry, inVma);
      if (!(n > 0)) throw new BlockError(`page 0x${va.toString(16)} does not fit its VMA`);
      segs.push(va, n, vmas[vi * 3 + 2]);
      pages -= n;
      inEntry += n;
      if (inEntry === runNr[ei]) {
        ei++;
        inEntry = 0;
      }
    }
  }
}
