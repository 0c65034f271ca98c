// criu-bun's page side data: the block index next to the pages image.
//
// Uncompressed dump (CRIU's format, untouched):
//   pages-N.img    the pages of every PE_PRESENT pagemap entry, packed in entry order (CRIU's)
//   pages-N.idx    our block index: checksums (CRIU ignores files it does not know)
// Compressed dump (--compress):
//   pages-N.lz4    the same byte stream cut into blocks, each stored as one raw LZ4 block
//                  (or raw when LZ4 does not make it shorter)
//   pages-N.idx    the block index (lengths, flags, checksums)
//   There is no pages-N.img: a tool that does not know the extension finds the pagemap asking
//   for pages that pages-N.img does not hold and stops, instead of reading LZ4 as memory.
//   Every metadata image (pagemap-PID.img included) is unchanged, so crit decodes them all.
//
// pages-N.idx, little endian:
//   header (32 bytes): u32 magic "CBPX" | u32 version (3) | u32 flags (bit 0: compressed)
//                      | u32 block size (raw bytes, max) | u32 block count | u32 0 | u64 total raw bytes
//   per block (32 bytes): u64 hash of the raw bytes | u64 hash of the stored bytes
//                      | u32 raw length | u32 stored length | u32 flags (bit 0: LZ4) | u32 address hash
// Blocks hold whole pages; block i's raw bytes are the page stream [sum raw len of blocks < i, +raw len),
// its stored bytes are at file offset sum of stored len of blocks < i. The address hash (version 2;
// 0 and unchecked in version 1) binds the block to the addresses its pages came from: AddrHash of
// the block's pages as maximal runs of consecutive addresses, in stream order. Restore computes it
// again from pagemap-PID.img, so pagemap entries reordered, moved or resized are refused even
// though every checksum of the bytes still matches. The hashes are XXH3-64 with seed 0 in version 3
// (native in Bun: 10x XXH64 in WASM), XXH64 with seed 0 in versions 1 and 2 (still read).
import { existsSync, readFileSync, statSync } from "../sys/fs";
import { join } from "../sys/path";
import { CriuError } from "../log";

const IDX_MAGIC = 0x58504243; // "CBPX"
const IDX_VERSION = 3;
const IDX_HEADER = 32;
const IDX_ENTRY = 32;
/** Raw bytes per block: one process_vm_readv chunk, one LZ4 block, one checksum. */
export const BLOCK = 1 << 20;
export const BLOCK_PAGES = BLOCK / 4096;
export const BLOCK_LZ4 = 1;

interface BlockEntry {
  rawHash: bigint;
  storedHash: bigint;
  rawLen: number;
  storedLen: number;
  flags: number;
  addrHash?: number;
}

/**
 * A 32-bit hash of a sequence of page addresses, fed in pieces (va, pages): pieces that continue
 * the previous one merge, so the value depends only on the pages' addresses and order, not on how
 * they were cut (VMA ends, zero pages, jobs). Each maximal run contributes (start, pages).
 */
export class AddrHash {
  private h = ADDR_HASH_SEED;
  private start = 0;
  private n = 0;
  add(va: number, pages: number) {
    if (this.n && this.start + this.n * 4096 === va) {
      this.n += pages;
      return;
    }
    this.flush();
    this.start = va;
    this.n = pages;
  }
  private flush() {
    if (!this.n) return;
    this.h = mixRun(this.h, this.start, this.n);
    this.n = 0;
  }
  /** the hash of everything added since the last value(), and start over */
  value(): number {
    this.flush();
    const v = hashValue(this.h);
    this.h = ADDR_HASH_SEED;
    return v;
  }
}
const ADDR_HASH_SEED = 0x811c9dc5;
/** One maximal run (start, pages) mixed into h: its start's low and high 32 bits, then its pages. */
function mixRun(h: number, start: number, pages: number): number {
  h = Math.imul(h ^ ((start % 0x100000000) >>> 0), 0x01000193);
  h ^= h >>> 15;
  h = Math.imul(h ^ (Math.floor(start / 0x100000000) >>> 0), 0x01000193);
  h ^= h >>> 15;
  h = Math.imul(h ^ (pages >>> 0), 0x01000193);
  return h ^ (h >>> 15);
}
/** The block's value from the runs mixed in. */
const hashValue = (h: number) => (Math.imul(h ^ (h >>> 13), 0x5bd1e995) ^ 0x9e3779b9) >>> 0;
/** AddrHash's functions, for the dump's list of code kept at DFG (pipeline.ts keepDumpAtDFG) */
export const addrHashCode = (): ((...a: never[]) => unknown)[] => [mixRun, hashValue];
interface PagesIndex {
  compressed: boolean;
  blockSize: number;
  totalRaw: number;
  blocks: BlockEntry[];
  /** the block hashes are XXH3-64 (version 3), else XXH64 */
  xxh3: boolean;
}

export function pagesNames(pagesFile: string) {
  const base = pagesFile.replace(/\.img$/, "");
  return { img: pagesFile, lz4: `${base}.lz4`, idx: `${base}.idx` };
}

/** Grows as blocks are added; bytes() gives the file. Memory: 32 bytes per MiB of pages. */
export class IndexWriter {
  private buf = new Uint8Array(IDX_HEADER + 64 * IDX_ENTRY);
  private n = 0;
  private totalRaw = 0;
  constructor(private compressed: boolean) {}
  add(e: BlockEntry) {
    const need = IDX_HEADER + (this.n + 1) * IDX_ENTRY;
    if (need > this.buf.length) {
      const b = new Uint8Array(this.buf.length * 2);
      b.set(this.buf);
      this.buf = b;
    }
    const dv = new DataView(this.buf.buffer, IDX_HEADER + this.n * IDX_ENTRY, IDX_ENTRY);
    dv.setBigUint64(0, e.rawHash, true);
    dv.setBigUint64(8, e.storedHash, true);
    dv.setUint32(16, e.rawLen, true);
    dv.setUint32(20, e.storedLen, true);
    dv.setUint32(24, e.flags, true);
    if (e.addrHash === undefined) throw new Error("page index block without its address hash");
    dv.setUint32(28, e.addrHash, true);
    this.n++;
    this.totalRaw += e.rawLen;
  }
  get count() {
    return this.n;
  }
  bytes(): Uint8Array {
    const dv = new DataView(this.buf.buffer);
    dv.setUint32(0, IDX_MAGIC, true);
    dv.setUint32(4, IDX_VERSION, true);
    dv.setUint32(8, this.compressed ? 1 : 0, true);
    dv.setUint32(12, BLOCK, true);
    dv.setUint32(16, this.n, true);
    dv.setBigUint64(24, BigInt(this.totalRaw), true);
    return this.buf.subarray(0, IDX_HEADER + this.n * IDX_ENTRY);
  }
}

function parseIndex(bytes: Uint8Array, where: string): PagesIndex {
  const bad = (m: string) => new CriuError("restore", `${where}: ${m}`);
  if (bytes.length < IDX_HEADER) throw bad("too short for a page index");
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  if (dv.getUint32(0, true) !== IDX_MAGIC) throw bad("not a criu-bun page index (bad magic)");
  const version = dv.getUint32(4, true);
  if (version < 1 || version > IDX_VERSION) throw bad(`unsupported page index version ${version}`);
  const flags = dv.getUint32(8, true),
    blockSize = dv.getUint32(12, true),
    n = dv.getUint32(16, true);
  const totalRaw = Number(dv.getBigUint64(24, true));
  if (bytes.length !== IDX_HEADER + n * IDX_ENTRY)
    throw bad(`${bytes.length} bytes, expected ${IDX_HEADER + n * IDX_ENTRY} for ${n} blocks`);
  if (blockSize % 4096 || blockSize <= 0 || blockSize > 64 << 20) throw bad(`bad block size ${blockSize}`);
  const blocks: BlockEntry[] = new Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const o = IDX_HEADER + i * IDX_ENTRY;
    const e: BlockEntry = {
      rawHash: dv.getBigUint64(o, true),
      storedHash: dv.getBigUint64(o + 8, true),
      rawLen: dv.getUint32(o + 16, true),
      storedLen: dv.getUint32(o + 20, true),
      flags: dv.getUint32(o + 24, true),
      addrHash: version >= 2 ? dv.getUint32(o + 28, true) : undefined,
    };
    if (e.rawLen % 4096 || e.rawLen > blockSize || e.rawLen === 0) throw bad(`block ${i}: bad raw length ${e.rawLen}`);
    if (
      e.flags & BLOCK_LZ4
        ? e.storedLen === 0 || e.storedLen > blockSize + (blockSize >> 8) + 16
        : e.storedLen !== e.rawLen
    )
      throw bad(`block ${i}: bad stored length ${e.storedLen}`);
    sum += e.rawLen;
    blocks[i] = e;
  }
  if (sum !== totalRaw) throw bad(`blocks hold ${sum} bytes, header says ${totalRaw}`);
  return { compressed: (flags & 1) !== 0, blockSize, totalRaw, blocks, xxh3: version >= 3 };
}

export interface PagesLayout {
  /** the file holding the page bytes (pages-N.img or pages-N.lz4) */
  dataFile: string;
  index?: PagesIndex;
  /** where each block of the index starts in the pagemap's PE_PRESENT runs: [run, pages into it]
   * per block, as checkAddrBinding found them (unset when it had no address hashes to check) */
  starts?: Float64Array;
}

/**
 * Which files hold the pages named by `pagesFile` (pages-N.img) and are they consistent with
 * `rawBytes` (the pagemap's PE_PRESENT bytes)? Cheap: sizes only, no data read.
 */
export function checkPagesLayout(dir: string, pagesFile: string, rawBytes: number, pagemapFile: string): PagesLayout {
  const n = pagesNames(pagesFile);
  const idxPath = join(dir, n.idx);
  const index = existsSync(idxPath) ? parseIndex(new Uint8Array(readFileSync(idxPath)), idxPath) : undefined;
  let dataFile: string;
  if (existsSync(join(dir, n.img))) dataFile = n.img;
  else if (existsSync(join(dir, n.lz4))) {
    if (!index?.compressed)
      throw new CriuError("restore", `${join(dir, n.lz4)} has no compressed page index ${idxPath}`);
    dataFile = n.lz4;
  } else throw new CriuError("restore", `${join(dir, n.img)} is missing`);
  if (index && index.compressed !== (dataFile === n.lz4))
    throw new CriuError(
      "restore",
      `${idxPath} is for ${index.compressed ? "compressed" : "uncompressed"} pages, but ${join(dir, dataFile)} is not`
    );
  const path = join(dir, dataFile);
  const size = statSync(path).size;
  if (index) {
    if (index.totalRaw !== rawBytes)
      throw new CriuError(
        "restore",
        `${idxPath} covers ${index.totalRaw} bytes of pages, ${pagemapFile} lists ${rawBytes}`
      );
    const stored = index.blocks.reduce((s, b) => s + b.storedLen, 0);
    if (size !== stored) throw new CriuError("restore", `${path} is ${size} bytes, ${idxPath} expects ${stored}`);
  } else if (size < rawBytes) {
    throw new CriuError("restore", `${path} is truncated: ${size} bytes, ${pagemapFile} needs ${rawBytes}`);
  }
  return { dataFile, index };
}

/**
 * Does each block of the index hold the pages the pagemap says, at the addresses it says? `runs`:
 * the pagemap's runs stored in this pages file (PE_PRESENT), in file order. Throws naming both files.
 * starts: where each block starts in the runs is written there ([run, pages into it] per block: the
 * restore's page Workers start their blocks there). Returns false when the index records no
 * addresses (version 1: nothing checked, starts not written).
 */
export function checkAddrBinding(
  index: PagesIndex,
  runs: { va: Float64Array; nr: Float64Array },
  idxPath: string,
  pagemapFile: string,
  starts?: Float64Array
): boolean {
  if (!index.blocks.length || index.blocks[0].addrHash === undefined) return false; // version 1: nothing recorded
  const { va, nr } = runs;
  // AddrHash's state in locals, its add inline (mixRun and hashValue shared with it): methods on
  // an object were compiled, thrown away and compiled again several times per restore
  // (BUN_JSC_reportDFGCompileTimes), and a 1 GiB heap's 55,000 runs took 11-20 ms here.
  let h = ADDR_HASH_SEED,
    start = 0,
    run = 0;
  let ri = 0,
    inRun = 0;
  for (let i = 0; i < index.blocks.length; i++) {
    const b = index.blocks[i];
    if (starts) {
      starts[i * 2] = ri;
      starts[i * 2 + 1] = inRun;
    }
    let pages = b.rawLen / 4096;
    while (pages > 0) {
      if (ri >= va.length)
        throw new CriuError("restore", `${idxPath}: block ${i} holds pages ${pagemapFile} does not list`);
      if (!(nr[ri] > 0))
        throw new CriuError("restore", `${pagemapFile}: an entry at 0x${va[ri].toString(16)} has ${nr[ri]} pages`);
      const n = Math.min(pages, nr[ri] - inRun);
      const at = va[ri] + inRun * 4096;
      // AddrHash.add: a run that continues the one before grows it, else that one is mixed in
      if (run && start + run * 4096 === at) run += n;
      else {
        if (run) h = mixRun(h, start, run);
        start = at;
        run = n;
      }
      pages -= n;
      inRun += n;
      if (inRun === nr[ri]) {
        ri++;
        inRun = 0;
      }
    }
    // AddrHash.value
    if (run) h = mixRun(h, start, run);
    run = 0;
    const v = hashValue(h);
    h = ADDR_HASH_SEED;
    if (v !== b.addrHash)
      throw new CriuError(
        "restore",
        `${pagemapFile} does not match ${idxPath}: block ${i} was dumped from other addresses (entries reordered, moved or resized)`
      );
  }
  return true;
}
