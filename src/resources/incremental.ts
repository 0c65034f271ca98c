// Incremental dumps (pre-dump, then dump --prev-images-dir DIR): a page whose bytes are the same
// as in the previous images is written as a PE_PARENT pagemap run instead of being stored again,
// and DIR/parent links to the previous images, as CRIU does. This kernel has no soft-dirty bits,
// so "the same" is decided by comparing contents; the final dump still reads all memory, but
// writes (and sends) only what changed. Restore follows the parent links for PE_PARENT runs.
import { existsSync, openSync, closeSync, renameSync, rmSync, symlinkSync, readlinkSync, lstatSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { decodePagemap, type PagemapRun } from "../images/pagemap";
import { preadFull, pwriteFull, writeFull } from "../sys/mem";
import { PageCodec } from "../codec/codec";
import { BLOCK, IndexWriter, pagesNames } from "../codec/format";
import { CriuError, log } from "../log";

const PAGE = 4096, PE_PRESENT = 4, PE_PARENT = 1;
/** bytes a parent's pages file is read ahead by */
const AHEAD = 256 * 1024;

/** One images directory's pages of one process, looked up by address (following parents). */
class PageSource {
  private runs: (PagemapRun & { off: number })[] = [];
  private fd = -1;
  /** read-ahead: pages are asked for in address order, which is file order within a run */
  private cache = new Uint8Array(AHEAD);
  private cacheOff = -1;
  private cacheLen = 0;
  private parent?: PageSource | null;
  constructor(public dir: string, public pid: number) {
    const pm = decodePagemap(dir, `pagemap-${pid}.img`);
    let off = 0;
    for (const r of pm.runs) { this.runs.push({ ...r, off }); if (r.flags & PE_PRESENT) off += r.nrPages * PAGE; }
    const pages = join(dir, `pages-${pm.pagesId}.img`);
    if (!existsSync(pages)) throw new CriuError("restore", `${pages} is missing (a compressed dump cannot be a parent)`);
    this.fd = openSync(pages, "r");
  }
  static open(dir: string, pid: number): PageSource | null {
    return existsSync(join(dir, `pagemap-${pid}.img`)) ? new PageSource(dir, pid) : null;
  }
  private find(va: bigint) {
    let lo = 0, hi = this.runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1, r = this.runs[mid];
      if (va < r.vaddr) hi = mid - 1;
      else if (va >= r.vaddr + BigInt(r.nrPages * PAGE)) lo = mid + 1;
      else return r;
    }
    return undefined;
  }
  /** The page at va into buf[at..at+4096); false if these images do not have it. */
  read(va: bigint, buf: Uint8Array, at: number): boolean {
    const r = this.find(va);
    if (!r) return false;
    if (r.flags & PE_PRESENT) {
      const off = r.off + Number(va - r.vaddr);
      if (this.cacheOff < 0 || off < this.cacheOff || off + PAGE > this.cacheOff + this.cacheLen) {
        this.cacheLen = preadFull(this.fd, this.cache, BigInt(off), AHEAD, 0, `read ${this.dir} pages`);
        this.cacheOff = off;
        if (this.cacheLen < PAGE) return false;
      }
      buf.set(this.cache.subarray(off - this.cacheOff, off - this.cacheOff + PAGE), at);
      return true;
    }
    if (r.flags & PE_PARENT) {
      if (this.parent === undefined) this.parent = existsSync(join(this.dir, "parent")) ? PageSource.open(resolve(this.dir, "parent"), this.pid) : null;
      return !!this.parent?.read(va, buf, at);
    }
    return false;
  }
  close() { if (this.fd >= 0) closeSync(this.fd); this.fd = -1; this.parent?.close(); }
}

/**
 * Dump side: rewrite dir/pagesFile keeping only pages that differ from the parent's; returns the
 * new runs (PE_PRESENT and PE_PARENT). Reads 1 MiB at a time, compares whole pages natively and
 * writes the kept pages in 1 MiB blocks with a fresh block index (XXH64 each), so the pages of an
 * incremental dump are checked at restore like any other.
 */
export function dedupeAgainstParent(dir: string, pagesFile: string, runs: PagemapRun[], parentDir: string, pid: number): { runs: PagemapRun[]; kept: number; fromParent: number } {
  const parent = PageSource.open(resolve(dir, parentDir), pid);
  if (!parent) return { runs, kept: runs.reduce((s, r) => s + r.nrPages, 0), fromParent: 0 };
  const src = openSync(join(dir, pagesFile), "r");
  const tmp = join(dir, `${pagesFile}.dedupe`);
  const out = openSync(tmp, "w");
  const codec = new PageCodec({ capacity: BLOCK });
  const keep = codec.inputView(BLOCK); // kept pages gather here: one block of the new file
  const mine = new Uint8Array(BLOCK), theirs = new Uint8Array(PAGE);
  const index = new IndexWriter(false);
  const res: PagemapRun[] = [];
  let inOff = 0n, fill = 0, kept = 0, fromParent = 0;
  const flush = () => {
    if (!fill) return;
    writeFull(out, keep.subarray(0, fill), `write ${pagesFile}`);
    const h = codec.checksum(0, fill);
    index.add({ rawHash: h, storedHash: h, rawLen: fill, storedLen: fill, flags: 0 });
    fill = 0;
  };
  try {
    for (const r of runs) {
      for (let i = 0; i < r.nrPages;) {
        const n = Math.min(r.nrPages - i, BLOCK / PAGE);
        if (preadFull(src, mine, inOff, n * PAGE, 0, `read ${pagesFile}`) !== n * PAGE)
          throw new CriuError("dump", `${join(dir, pagesFile)} is shorter than its pagemap`);
        for (let k = 0; k < n; k++) {
          const va = r.vaddr + BigInt((i + k) * PAGE);
          const page = mine.subarray(k * PAGE, (k + 1) * PAGE);
          const same = parent.read(va, theirs, 0) && Buffer.compare(page, theirs) === 0;
          if (same) fromParent++;
          else {
            keep.set(page, fill);
            fill += PAGE;
            kept++;
            if (fill === BLOCK) flush();
          }
          const flags = same ? PE_PARENT : PE_PRESENT;
          const last = res[res.length - 1];
          if (last && last.flags === flags && last.vaddr + BigInt(last.nrPages * PAGE) === va) last.nrPages++;
          else res.push({ vaddr: va, nrPages: 1, flags });
        }
        i += n;
        inOff += BigInt(n * PAGE);
      }
    }
    flush();
  } finally { closeSync(src); closeSync(out); parent.close(); }
  renameSync(tmp, join(dir, pagesFile));
  writeFileSync(join(dir, pagesNames(pagesFile).idx), index.bytes());
  return { runs: res, kept, fromParent };
}

/** Make dir/parent point at the previous images (as given, like criu: relative to dir). */
export function linkParent(dir: string, parentDir: string) {
  const link = join(dir, "parent");
  try { if (lstatSync(link)) rmSync(link); } catch {}
  if (!existsSync(resolve(dir, parentDir))) throw new CriuError("dump", `--prev-images-dir '${parentDir}' does not exist (it is relative to the images dir)`);
  symlinkSync(parentDir, link);
}

/** Restore side: write the PE_PARENT runs of process pid from the parent images into memFd. */
export function fillParentPages(dir: string, pid: number, runs: PagemapRun[], memFd: number, where: string) {
  const parentRuns = runs.filter((r) => r.flags & PE_PARENT && !(r.flags & PE_PRESENT));
  if (!parentRuns.length) return;
  const pdir = join(dir, "parent");
  if (!existsSync(pdir)) throw new CriuError("restore", `${where}: pagemap-${pid}.img refers to parent images, but ${dir}/parent is missing`);
  const src = PageSource.open(resolve(dir, readlinkSync(pdir)), pid);
  if (!src) throw new CriuError("restore", `${where}: the parent images have no pagemap-${pid}.img`);
  const buf = new Uint8Array(PAGE);
  let n = 0;
  try {
    for (const r of parentRuns) {
      for (let i = 0; i < r.nrPages; i++) {
        const va = r.vaddr + BigInt(i * PAGE);
        if (!src.read(va, buf, 0)) throw new CriuError("restore", `${where}: page 0x${va.toString(16)} is in none of the parent images`);
        pwriteFull(memFd, buf, va, PAGE, 0, `${where}: write page 0x${va.toString(16)}`);
        n++;
      }
    }
  } finally { src.close(); }
  log.info(`${where}: ${n} pages taken from the parent images`);
}
