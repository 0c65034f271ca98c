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
//   header (32 bytes): u32 magic "CBPX" | u32 version (1) | u32 flags (bit 0: compressed)
//                      | u32 block size (raw bytes, max) | u32 block count | u32 0 | u64 total raw bytes
//   per block (32 bytes): u64 XXH64 of the raw bytes | u64 XXH64 of the stored bytes
//                      | u32 raw length | u32 stored length | u32 flags (bit 0: LZ4) | u32 0
// Blocks hold whole pages; block i's raw bytes are the page stream [sum raw len of blocks < i, +raw len),
// its stored bytes are at file offset sum of stored len of blocks < i.
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { CriuError } from "../log";

export const IDX_MAGIC = 0x58504243; // "CBPX"
export const IDX_VERSION = 1;
export const IDX_HEADER = 32;
export const IDX_ENTRY = 32;
/** Raw bytes per block: one process_vm_readv chunk, one LZ4 block, one checksum. */
export const BLOCK = 1 << 20;
export const BLOCK_PAGES = BLOCK / 4096;
export const BLOCK_LZ4 = 1;

export interface BlockEntry { rawHash: bigint; storedHash: bigint; rawLen: number; storedLen: number; flags: number }
export interface PagesIndex { compressed: boolean; blockSize: number; totalRaw: number; blocks: BlockEntry[] }

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
    if (need > this.buf.length) { const b = new Uint8Array(this.buf.length * 2); b.set(this.buf); this.buf = b; }
    const dv = new DataView(this.buf.buffer, IDX_HEADER + this.n * IDX_ENTRY, IDX_ENTRY);
    dv.setBigUint64(0, e.rawHash, true); dv.setBigUint64(8, e.storedHash, true);
    dv.setUint32(16, e.rawLen, true); dv.setUint32(20, e.storedLen, true); dv.setUint32(24, e.flags, true);
    this.n++;
    this.totalRaw += e.rawLen;
  }
  get count() { return this.n; }
  bytes(): Uint8Array {
    const dv = new DataView(this.buf.buffer);
    dv.setUint32(0, IDX_MAGIC, true); dv.setUint32(4, IDX_VERSION, true); dv.setUint32(8, this.compressed ? 1 : 0, true);
    dv.setUint32(12, BLOCK, true); dv.setUint32(16, this.n, true); dv.setBigUint64(24, BigInt(this.totalRaw), true);
    return this.buf.subarray(0, IDX_HEADER + this.n * IDX_ENTRY);
  }
}

export function parseIndex(bytes: Uint8Array, where: string): PagesIndex {
  const bad = (m: string) => new CriuError("restore", `${where}: ${m}`);
  if (bytes.length < IDX_HEADER) throw bad("too short for a page index");
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  if (dv.getUint32(0, true) !== IDX_MAGIC) throw bad("not a criu-bun page index (bad magic)");
  if (dv.getUint32(4, true) !== IDX_VERSION) throw bad(`unsupported page index version ${dv.getUint32(4, true)}`);
  const flags = dv.getUint32(8, true), blockSize = dv.getUint32(12, true), n = dv.getUint32(16, true);
  const totalRaw = Number(dv.getBigUint64(24, true));
  if (bytes.length !== IDX_HEADER + n * IDX_ENTRY) throw bad(`${bytes.length} bytes, expected ${IDX_HEADER + n * IDX_ENTRY} for ${n} blocks`);
  if (blockSize % 4096 || blockSize <= 0 || blockSize > 64 << 20) throw bad(`bad block size ${blockSize}`);
  const blocks: BlockEntry[] = new Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const o = IDX_HEADER + i * IDX_ENTRY;
    const e: BlockEntry = {
      rawHash: dv.getBigUint64(o, true), storedHash: dv.getBigUint64(o + 8, true),
      rawLen: dv.getUint32(o + 16, true), storedLen: dv.getUint32(o + 20, true), flags: dv.getUint32(o + 24, true),
    };
    if (e.rawLen % 4096 || e.rawLen > blockSize || e.rawLen === 0) throw bad(`block ${i}: bad raw length ${e.rawLen}`);
    if (e.flags & BLOCK_LZ4 ? e.storedLen === 0 || e.storedLen > blockSize + (blockSize >> 8) + 16 : e.storedLen !== e.rawLen)
      throw bad(`block ${i}: bad stored length ${e.storedLen}`);
    sum += e.rawLen;
    blocks[i] = e;
  }
  if (sum !== totalRaw) throw bad(`blocks hold ${sum} bytes, header says ${totalRaw}`);
  return { compressed: (flags & 1) !== 0, blockSize, totalRaw, blocks };
}

export interface PagesLayout {
  /** the file holding the page bytes (pages-N.img or pages-N.lz4) */
  dataFile: string;
  index?: PagesIndex;
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
    if (!index?.compressed) throw new CriuError("restore", `${join(dir, n.lz4)} has no compressed page index ${idxPath}`);
    dataFile = n.lz4;
  } else throw new CriuError("restore", `${join(dir, n.img)} is missing`);
  if (index && index.compressed !== (dataFile === n.lz4))
    throw new CriuError("restore", `${idxPath} is for ${index.compressed ? "compressed" : "uncompressed"} pages, but ${join(dir, dataFile)} is not`);
  const path = join(dir, dataFile);
  const size = statSync(path).size;
  if (index) {
    if (index.totalRaw !== rawBytes) throw new CriuError("restore", `${idxPath} covers ${index.totalRaw} bytes of pages, ${pagemapFile} lists ${rawBytes}`);
    const stored = index.blocks.reduce((s, b) => s + b.storedLen, 0);
    if (size !== stored) throw new CriuError("restore", `${path} is ${size} bytes, ${idxPath} expects ${stored}`);
  } else if (size < rawBytes) {
    throw new CriuError("restore", `${path} is truncated: ${size} bytes, ${pagemapFile} needs ${rawBytes}`);
  }
  return { dataFile, index };
}
