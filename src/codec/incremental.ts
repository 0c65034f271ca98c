// Incremental dumps (pre-dump, then dump --prev-images-dir DIR): a page whose bytes are the same
// as in the previous images is written as a PE_PARENT pagemap run instead of being stored again,
// and DIR/parent links to the previous images, as CRIU does. This kernel has no soft-dirty bits,
// so "the same" is decided by comparing contents; the final dump still reads all memory, but
// writes (and sends) only what changed. Restore follows the parent links for PE_PARENT runs.
import {
  existsSync,
  openSync,
  closeSync,
  renameSync,
  rmSync,
  symlinkSync,
  lstatSync,
  statSync,
  realpathSync,
  readdirSync,
  constants,
} from "../sys/fs";
import { createNew, writeNewFile, under, withDir } from "../images/safefs";
import { join, resolve } from "../sys/path";
import { decodePagemap, presentRuns, type PagemapRun, type PagemapRunAt } from "../images/pagemap";
import { preadFull, pwriteFull, writeFull } from "../sys/mem";
import { PageCodec } from "../codec/codec";
import { PlainCodec } from "../codec/plain";
import { encodeBlock, decodeBlock, BlockError } from "../codec/jobs";
import {
  BLOCK,
  BLOCK_LZ4,
  IndexWriter,
  AddrHash,
  pagesNames,
  checkPagesLayout,
  checkAddrBinding,
} from "../codec/format";
import { CriuError, log, errorMessage } from "../log";
import { syscall } from "../sys/syscall";
import { NR } from "../sys/nr";
import { errnoText } from "../sys/errno";
import { markDeduped } from "./dedup";

const PAGE = 4096,
  PE_PRESENT = 4,
  PE_PARENT = 1;
/** bytes a parent's pages file is read ahead by */
const AHEAD = 256 * 1024;

/** A block of a pages file with an index: where its raw bytes start, where it is stored. */
interface Block {
  raw: number;
  file: number;
  rawLen: number;
  storedLen: number;
  flags: number;
  hash: bigint;
  xxh3: boolean;
}

type LoadedRuns = PagemapRunAt[];
/**
 * Pagemaps of parent images already decoded and bound to their pages index, by the pagemap's real
 * path, kept only while the pagemap, pages and index files are the very ones (dev, ino, size, mtime
 * of each, checked at every use). migrate's destination decodes each pre-copy round at its PRECHECK,
 * before the freeze; the final restore's walk down the chain of rounds then finds them here instead
 * of decoding and checking each round's whole pagemap again inside the frozen window (a quarter of a
 * million scattered runs in a 4 GiB process's second round). Bounded: the oldest go beyond RUNS_KEPT.
 */
const parentRunsCache = new Map<string, { id: string; runs: LoadedRuns; pagesFile: string }>();
const RUNS_KEPT = 2_000_000;
function filesId(dir: string, files: string[]): string | undefined {
  try {
    return files
      .map((f) => {
        const p = join(dir, f);
        if (!existsSync(p)) return "-";
        const st = statSync(p, { bigint: true });
        return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
      })
      .join("/");
  } catch {
    return undefined;
  }
}
function cacheKey(dir: string, pid: number): string | undefined {
  try {
    return join(realpathSync(dir), `pagemap-${pid}.img`);
  } catch {
    return undefined;
  }
}
function pagesFilesOf(pagesFile: string): string[] {
  const n = pagesNames(pagesFile);
  return [n.img, n.lz4, n.idx];
}

/**
 * Keep the decoded and checked pagemap at key for the next PageSource of the same files; id: their
 * identity as taken before they were read (a file replaced meanwhile never gets the old runs).
 */
function remember(key: string, id: string, pagesFile: string, runs: LoadedRuns) {
  if (runs.length > RUNS_KEPT) return;
  parentRunsCache.delete(key);
  let total = runs.length;
  for (const v of parentRunsCache.values()) total += v.runs.length;
  for (const [k, v] of parentRunsCache) {
    if (total <= RUNS_KEPT) break;
    parentRunsCache.delete(k);
    total -= v.runs.length;
  }
  parentRunsCache.set(key, { id, runs, pagesFile });
}

/**
 * Read-ahead buffers of closed PageSources without a block index (a page server's images: every
 * round of a migration), for the next ones: a fresh 256 KiB buffer is 64 page faults (17-25
 * microseconds each on this VM) or a memset, and the final restore of a migration opens one
 * PageSource per pre-copy round in its frozen window. warmParentRuns makes them ahead, touched. Only
 * the bytes a read just put there are ever used (cacheLen).
 */
const aheadPool: Uint8Array<ArrayBuffer>[] = [];
const AHEAD_KEPT = 16;

/** where a restore's walk down the parents spends its time (fillFrom's -v4 line) */
const walk = { opens: 0, openMs: 0, loads: 0, loadMs: 0 };

/**
 * Decode and check every pagemap of images directory dir ahead (migrate's destination, at a
 * pre-copy round's PRECHECK), so that a later restore reading pages through dir as a parent finds
 * them decoded. Errors are left to that restore, which meets them again.
 */
export function warmParentRuns(dir: string) {
  let readsAhead = false;
  for (const f of readdirSync(dir)) {
    const m = /^pagemap-(\d+)\.img$/.exec(f);
    if (!m) continue;
    try {
      const s = new PageSource(dir, Number(m[1]));
      readsAhead ||= s.readsAhead;
      s.close();
    } catch (e) {
      log.debug(`${dir}: ${f} not decoded ahead (${errorMessage(e)})`);
    }
  }
  if (!readsAhead) return;
  // a restore reading through dir may open a PageSource at each level of its chain of parents
  let depth = 1;
  for (let d = dir; depth < AHEAD_KEPT && existsSync(join(d, "parent")); depth++) d = join(d, "parent");
  while (aheadPool.length < depth) aheadPool.push(new Uint8Array(AHEAD).fill(1).fill(0));
}

/**
 * One images directory's pages of one process, looked up by address (following parents). Pages
 * are asked for in address order, which is file order: with a block index (criu-bun's dumps,
 * compressed or not) whole blocks are read, checked against their XXH64 and decoded; without one
 * (CRIU's images) the file is read ahead.
 */
export class PageSource {
  /** the pagemap's runs, each with the raw offset of its pages in the page stream (PE_PRESENT ones) */
  private runs: PagemapRunAt[] = [];
  private fd = -1;
  private blocks?: Block[];
  private codec?: PlainCodec;
  private cache = new Uint8Array(0);
  private cacheOff = -1;
  private cacheLen = 0;
  private parent?: PageSource | null;
  /** restore --auto-dedup: raw page-stream ranges read from this level (punched by punchRead) */
  private read_?: [number, number][];
  private dataPath = "";
  /**
   * loaded: the pagemap as the restore loaded and checked it (loadImages: its runs with their
   * offsets, pages file and index checked against each other), not decoded again (a fragmented
   * GiB's pagemap has a hundred thousand runs)
   */
  constructor(
    public dir: string,
    public pid: number,
    loaded?: { pagesFile: string; runs: PagemapRunAt[] }
  ) {
    let off = 0,
      pagesFile: string,
      // a pagemap decoded here: where it goes in the cache, and its files' identity taken before they are read
      fresh: { key: string | undefined; id: string | undefined } | undefined;
    const pagemapFile = `pagemap-${pid}.img`;
    const key = loaded ? undefined : cacheKey(dir, pid),
      hit = key ? parentRunsCache.get(key) : undefined;
    if (loaded || (hit && hit.id === filesId(dir, [pagemapFile, ...pagesFilesOf(hit.pagesFile)]))) {
      const known = loaded ?? hit!;
      this.runs = known.runs;
      pagesFile = known.pagesFile;
      off = presentRuns(known.runs).bytes;
    } else {
      const pmId = filesId(dir, [pagemapFile]);
      const pm = decodePagemap(dir, pagemapFile);
      this.runs = pm.runs; // each with its offset in the page stream
      off = presentRuns(pm.runs).bytes;
      pagesFile = `pages-${pm.pagesId}.img`;
      const pagesId = filesId(dir, pagesFilesOf(pagesFile));
      fresh = { key, id: pmId && pagesId && `${pmId}/${pagesId}` };
    }
    const layout = checkPagesLayout(dir, pagesFile, off, pagemapFile);
    if (layout.index && fresh)
      checkAddrBinding(
        layout.index,
        presentRuns(this.runs),
        join(dir, pagesNames(pagesFile).idx),
        join(dir, pagemapFile)
      );
    this.dataPath = join(dir, layout.dataFile);
    this.fd = openSync(this.dataPath, "r");
    if (fresh?.key && fresh.id) remember(fresh.key, fresh.id, pagesFile, this.runs);
    if (layout.index) {
      let raw = 0,
        file = 0;
      this.blocks = layout.index.blocks.map((b) => {
        const e = {
          raw,
          file,
          rawLen: b.rawLen,
          storedLen: b.storedLen,
          flags: b.flags,
          hash: b.storedHash,
          xxh3: layout.index!.xxh3,
        };
        raw += b.rawLen;
        file += b.storedLen;
        return e;
      });
      // decoded block, then the stored one; no WebAssembly to compile and instantiate for a
      // plain block (a restore reading a page or two of its parents: the rseq pages of migrate's)
      this.codec = new PlainCodec({ capacity: 3 * layout.index.blockSize });
    } else this.cache = aheadPool.pop() ?? new Uint8Array(AHEAD);
  }
  /** no block index: the pages file is read ahead (a page server's images) */
  get readsAhead(): boolean {
    return !this.blocks;
  }
  /** Make the cache hold raw offset off of the page stream; false past its end. */
  private load(off: number): boolean {
    const t0 = performance.now();
    try {
      return this.loadAt(off);
    } finally {
      walk.loads++;
      walk.loadMs += performance.now() - t0;
    }
  }
  private loadAt(off: number): boolean {
    if (!this.blocks) {
      this.cacheLen = preadFull(this.fd, this.cache, BigInt(off), AHEAD, 0, `read ${this.dir} pages`);
      this.cacheOff = off;
      return this.cacheLen >= PAGE;
    }
    let lo = 0,
      hi = this.blocks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.blocks[mid].raw <= off) lo = mid;
      else hi = mid - 1;
    }
    const b = this.blocks[lo],
      c = this.codec!;
    if (!b || off >= b.raw + b.rawLen) return false;
    const at = b.flags & BLOCK_LZ4 ? c.capacity - b.storedLen : 0; // stored bytes after the decoded ones
    const where = `${this.dir}: parent pages block at file offset ${b.file}`;
    if (
      preadFull(this.fd, c.inputView(b.storedLen, at), BigInt(b.file), b.storedLen, 0, `read ${this.dir} pages`) !==
      b.storedLen
    )
      throw new CriuError("restore", `${where} is truncated`);
    try {
      decodeBlock(c, at, b.storedLen, b.rawLen, b.flags, b.hash, b.xxh3);
    } catch (e) {
      if (!(e instanceof BlockError)) throw e;
      // pages punched out by a dedup that left the page index as it was (CRIU's `dedup` of
      // criu-bun's images): criu-bun's own dedup checks the blocks again
      const hole = syscall(NR.lseek, this.fd, b.file, 4 /* SEEK_HOLE */);
      const why =
        hole >= 0 && hole < b.file + b.storedLen
          ? "; pages were punched out of it by a dedup that did not update its page index (`criu-bun dedup -D` of the newest images brings it up to date)"
          : "";
      throw new CriuError("restore", `${where}: ${e.message}${why}`);
    }
    this.cache = c.inputView(b.rawLen);
    this.cacheOff = b.raw;
    this.cacheLen = b.rawLen;
    return true;
  }
  static open(dir: string, pid: number): PageSource | null {
    const t0 = performance.now();
    try {
      return existsSync(join(dir, `pagemap-${pid}.img`)) ? new PageSource(dir, pid) : null;
    } finally {
      walk.opens++;
      walk.openMs += performance.now() - t0;
    }
  }
  private find(va: bigint) {
    let lo = 0,
      hi = this.runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1,
        r = this.runs[mid];
      if (va < r.vaddr) hi = mid - 1;
      else if (va >= r.vaddr + BigInt(r.nrPages * PAGE)) lo = mid + 1;
      else return r;
    }
    return undefined;
  }
  /** The page at va into buf[at..at+4096); false if these images do not have it. */
  read(va: bigint, buf: Uint8Array, at: number): boolean {
    return this.readSpan(va, 1, buf, at) === 1;
  }
  /**
   * Up to maxPages consecutive pages from va into buf[at..]: as many as one run of these images
   * (or of a parent) and one cached block hold, at least one; 0 if these images do not have va.
   */
  readSpan(va: bigint, maxPages: number, buf: Uint8Array, at: number): number {
    const r = this.find(va);
    if (!r) return 0;
    const inRun = Number((r.vaddr + BigInt(r.nrPages * PAGE) - va) / BigInt(PAGE));
    if (r.flags & PE_PRESENT) {
      const off = r.offset + Number(va - r.vaddr);
      if (this.cacheOff < 0 || off < this.cacheOff || off + PAGE > this.cacheOff + this.cacheLen) {
        if (!this.load(off)) return 0;
      }
      const n = Math.min(maxPages, inRun, Math.floor((this.cacheOff + this.cacheLen - off) / PAGE));
      buf.set(this.cache.subarray(off - this.cacheOff, off - this.cacheOff + n * PAGE), at);
      if (this.read_) {
        const last = this.read_.at(-1);
        if (last && last[1] === off) last[1] += n * PAGE;
        else this.read_.push([off, off + n * PAGE]);
      }
      return n;
    }
    if (r.flags & PE_PARENT) {
      if (this.parent === undefined) {
        this.parent = existsSync(join(this.dir, "parent"))
          ? PageSource.open(resolve(this.dir, "parent"), this.pid)
          : null;
        if (this.read_ && this.parent) this.parent.recordReads();
      }
      return this.parent?.readSpan(va, Math.min(maxPages, inRun), buf, at) ?? 0;
    }
    return 0;
  }
  /** restore --auto-dedup: remember what is read here (and in the levels below) for punchRead */
  recordReads() {
    this.read_ ??= [];
  }
  /**
   * restore --auto-dedup, once the pages are in the process: what was read from this level and the
   * levels below is punched out of their pages files (a compressed one is left alone, as criu
   * leaves compressed pages), and each level is marked as used up. Returns the bytes punched.
   */
  punchRead(): number {
    let n = 0;
    if (this.read_?.length) {
      markDeduped(this.dir, "restore --auto-dedup punched the pages it restored out of these images");
      if (this.blocks?.some((b) => b.flags & BLOCK_LZ4))
        log.info(`--auto-dedup: ${this.dataPath} is compressed; its pages are left in it`);
      else {
        const fd = openSync(this.dataPath, constants.O_WRONLY | constants.O_NOFOLLOW | 0o2000000);
        try {
          for (const [a, b] of this.read_) {
            const r = syscall(NR.fallocate, fd, 3 /* PUNCH_HOLE | KEEP_SIZE */, a, b - a);
            if (r < 0)
              throw new CriuError(
                "restore",
                `--auto-dedup: cannot punch ${b - a} bytes at ${a} out of ${this.dataPath}: ${errnoText(-r)}`
              );
            n += b - a;
          }
        } finally {
          closeSync(fd);
        }
      }
    }
    return n + (this.parent?.punchRead() ?? 0);
  }
  close() {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    if (!this.blocks && this.cache.length === AHEAD && aheadPool.length < AHEAD_KEPT) aheadPool.push(this.cache);
    this.cache = new Uint8Array(0);
    this.cacheOff = -1;
    this.parent?.close();
  }
}

/**
 * Dump side: rewrite dir/pagesFile (raw pages) keeping only pages that differ from the parent's;
 * returns the new runs (PE_PRESENT and PE_PARENT) and the file that holds the kept pages. Reads
 * 1 MiB at a time, compares whole pages natively and writes the kept pages in 1 MiB blocks with a
 * fresh block index (XXH64 each), so an incremental dump's pages are checked at restore like any
 * other; with `compress` the blocks are LZ4 in pages-N.lz4, as a --compress dump writes them.
 */
export function dedupeAgainstParent(
  dir: string,
  pagesFile: string,
  runs: PagemapRun[],
  parentDir: string,
  pid: number,
  compress = false
): { runs: PagemapRun[]; kept: number; fromParent: number; file: string; stored: number } {
  try {
    return dedupe(dir, pagesFile, runs, parentDir, pid, compress);
  } catch (e) {
    // the parent's images are read with restore's checks; here their faults fail the dump
    if (e instanceof CriuError && e.where === "restore")
      throw new CriuError("dump", `--prev-images-dir ${parentDir}: ${e.message}`);
    throw e;
  }
}

function dedupe(dir: string, pagesFile: string, runs: PagemapRun[], parentDir: string, pid: number, compress: boolean) {
  const names = pagesNames(pagesFile);
  const parent = PageSource.open(under(dir, parentDir), pid);
  if (!parent && !compress)
    return {
      runs,
      kept: runs.reduce((s, r) => s + r.nrPages, 0),
      fromParent: 0,
      file: pagesFile,
      stored: statSync(join(dir, pagesFile)).size,
    };
  const src = openSync(join(dir, pagesFile), "r");
  const outFile = compress ? names.lz4 : names.img;
  const tmp = join(dir, `${outFile}.dedupe`);
  const out = createNew(tmp, true);
  // kept pages gather at the start of the codec's buffer (one block of the new file); a block's
  // LZ4 form goes after them
  const codec = new PageCodec({ capacity: 2 * BLOCK + PAGE });
  const io = codec.inputView(),
    ZAT = BLOCK;
  const mine = new Uint8Array(BLOCK),
    theirs = new Uint8Array(PAGE);
  const index = new IndexWriter(compress);
  const addrs = new AddrHash();
  const res: PagemapRun[] = [];
  let inOff = 0n,
    fill = 0,
    kept = 0,
    fromParent = 0,
    stored = 0;
  const flush = () => {
    if (!fill) return;
    const b = encodeBlock(codec, fill, ZAT, compress);
    writeFull(out, io.subarray(b.at, b.at + b.len), `write ${outFile}`);
    index.add({
      rawHash: b.rawHash,
      storedHash: b.storedHash,
      rawLen: fill,
      storedLen: b.len,
      flags: b.flags,
      addrHash: addrs.value(),
    });
    stored += b.len;
    fill = 0;
  };
  try {
    for (const r of runs) {
      for (let i = 0; i < r.nrPages; ) {
        const n = Math.min(r.nrPages - i, BLOCK / PAGE);
        if (preadFull(src, mine, inOff, n * PAGE, 0, `read ${pagesFile}`) !== n * PAGE)
          throw new CriuError("dump", `${join(dir, pagesFile)} is shorter than its pagemap`);
        for (let k = 0; k < n; k++) {
          const va = r.vaddr + BigInt((i + k) * PAGE);
          const page = mine.subarray(k * PAGE, (k + 1) * PAGE);
          const same = !!parent && parent.read(va, theirs, 0) && Buffer.compare(page, theirs) === 0;
          if (same) fromParent++;
          else {
            io.set(page, fill);
            addrs.add(Number(va), 1);
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
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  } finally {
    closeSync(src);
    closeSync(out);
    parent?.close();
  }
  renameSync(tmp, join(dir, outFile));
  if (outFile !== pagesFile) rmSync(join(dir, pagesFile));
  writeNewFile(join(dir, names.idx), index.bytes());
  return { runs: res, kept, fromParent, file: outFile, stored };
}

/** Make dir/parent point at the previous images (as given, like criu: relative to the images
 * directory base, which is where the link ends up; dir may be the dump's stage inside it). */
export function linkParent(dir: string, parentDir: string, base = dir) {
  const link = join(dir, "parent");
  try {
    if (lstatSync(link)) rmSync(link);
  } catch {}
  if (!existsSync(under(base, parentDir)))
    throw new CriuError("dump", `--prev-images-dir '${parentDir}' does not exist (it is relative to the images dir)`);
  symlinkSync(parentDir, link);
}

/**
 * Pages of parent images read ahead (migrate's destination, at the last pre-copy round's PRECHECK):
 * the pages a post-copy restore writes itself from the chain of rounds (those of memory that is not
 * private anonymous: a few hundred pages of the libraries' data), by the real path of the round and
 * the process. The final restore's PE_PARENT runs then come from here, with no walk down the chain
 * inside the frozen window, only while every level of the chain is the one these pages were read
 * from: the same directories (real paths) holding the same pagemap and pages files (dev, ino, size,
 * mtime of each, taken before they were read and again at every use), and only when every page asked
 * for was read ahead; otherwise the restore reads the chain as it is now. Only the last round read
 * ahead is kept.
 */
interface PagesAhead {
  id: string;
  /** pieces by address: [start, end) in doubles (addresses below 2^52), offset of their bytes */
  starts: number[];
  ends: number[];
  offs: number[];
  bytes: Uint8Array;
}
const pagesAhead = new Map<string, PagesAhead>();
/** at most this many pages read ahead (64 MiB) */
const AHEAD_PAGES_KEPT = 16384;
const ADDR_LIMIT = 2 ** 52;

/** The identity of the chain of images dir is the top of, for process pid: each level's real path
 *  and its pagemap and pages files' identity, down to the last level; undefined if it cannot be taken. */
function chainId(dir: string, pid: number): string | undefined {
  const parts: string[] = [];
  let d = dir;
  try {
    for (let depth = 0; ; depth++) {
      if (depth > 4096) return undefined;
      const names = readdirSync(d)
        .filter((f) => f === `pagemap-${pid}.img` || /^pages-\d+\.(img|lz4|idx)$/.test(f))
        .sort();
      const id = filesId(d, names);
      if (id === undefined) return undefined;
      parts.push(`${realpathSync(d)}|${names.join(",")}|${id}`);
      // (as PageSource follows it: a parent that does not resolve ends the chain)
      if (!existsSync(join(d, "parent"))) break;
      d = join(d, "parent");
    }
  } catch {
    return undefined;
  }
  return parts.join("\n");
}

/**
 * Read ahead the pages of runs (by address, as a pagemap holds them) of each process through the
 * images in dir and its parents, for a restore whose parent dir will be (fillParentPages). Pages the
 * chain does not hold are not read ahead (a restore asking for them reads the chain). Forgets what
 * was read ahead before. Errors are left to that restore, which meets them again.
 */
export function warmParentPages(dir: string, wanted: { pid: number; runs: { vaddr: bigint; nrPages: number }[] }[]) {
  pagesAhead.clear();
  const total = wanted.reduce((n, w) => n + w.runs.reduce((m, r) => m + r.nrPages, 0), 0);
  if (!total) return;
  if (total > AHEAD_PAGES_KEPT) {
    log.debug(`${dir}: ${total} parent pages are too many to read ahead (at most ${AHEAD_PAGES_KEPT})`);
    return;
  }
  const t0 = performance.now();
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    return;
  }
  let read = 0;
  for (const { pid, runs } of wanted) {
    if (!runs.length) continue;
    // identity first: a file replaced while (or after) it is read never matches at use
    const id = chainId(dir, pid);
    if (id === undefined || !existsSync(join(dir, `pagemap-${pid}.img`))) continue;
    const n = runs.reduce((m, r) => m + r.nrPages, 0);
    const a: PagesAhead = { id, starts: [], ends: [], offs: [], bytes: new Uint8Array(n * PAGE) };
    let src: PageSource | undefined;
    try {
      src = new PageSource(dir, pid);
      let fill = 0;
      for (const r of runs) {
        if (r.vaddr >= BigInt(ADDR_LIMIT)) continue;
        const base = Number(r.vaddr);
        for (let i = 0; i < r.nrPages; ) {
          const got = src.readSpan(r.vaddr + BigInt(i * PAGE), r.nrPages - i, a.bytes, fill);
          if (!got) {
            i++;
            continue;
          }
          const s = base + i * PAGE,
            k = a.starts.length - 1;
          if (k >= 0 && a.ends[k] === s && a.offs[k] + (a.ends[k] - a.starts[k]) === fill) a.ends[k] += got * PAGE;
          else {
            a.starts.push(s);
            a.ends.push(s + got * PAGE);
            a.offs.push(fill);
          }
          fill += got * PAGE;
          i += got;
        }
      }
      read += fill / PAGE;
      pagesAhead.set(`${real}\0${pid}`, a);
    } catch (e) {
      log.debug(`${dir}: parent pages of process ${pid} not read ahead (${errorMessage(e)})`);
    } finally {
      src?.close();
    }
  }
  log.debug(`${dir}: ${read} parent pages read ahead in ${(performance.now() - t0).toFixed(1)} ms`);
}

/** fillParentPages from what warmParentPages read, if it holds every page asked for and the chain
 *  is the one it read them from; false: not done, nothing written. */
function fillAhead(pdir: string, pid: number, runs: PagemapRun[], memFd: number, where: string): boolean {
  if (!pagesAhead.size) return false;
  const t0 = performance.now();
  let a: PagesAhead | undefined;
  try {
    a = pagesAhead.get(`${realpathSync(pdir)}\0${pid}`);
  } catch {
    return false;
  }
  if (!a) return false;
  // [address, length, offset] of every write, consecutive ones joined
  const spans: number[] = [];
  let pages = 0;
  for (const r of runs) {
    if (r.vaddr >= BigInt(ADDR_LIMIT)) return false;
    let va = Number(r.vaddr);
    const end = va + r.nrPages * PAGE;
    pages += r.nrPages;
    while (va < end) {
      let lo = 0,
        hi = a.starts.length - 1,
        i = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (va < a.starts[mid]) hi = mid - 1;
        else if (va >= a.ends[mid]) lo = mid + 1;
        else {
          i = mid;
          break;
        }
      }
      if (i < 0) {
        log.debug(`${where}: parent page 0x${va.toString(16)} was not read ahead; the chain is read`);
        return false;
      }
      const e = Math.min(end, a.ends[i]),
        off = a.offs[i] + (va - a.starts[i]),
        k = spans.length - 3;
      if (k >= 0 && spans[k] + spans[k + 1] === va && spans[k + 2] + spans[k + 1] === off) spans[k + 1] += e - va;
      else spans.push(va, e - va, off);
      va = e;
    }
  }
  const t1 = performance.now();
  if (chainId(pdir, pid) !== a.id) {
    log.debug(`${where}: the parent images changed since their pages were read ahead; the chain is read`);
    return false;
  }
  const t2 = performance.now();
  for (let k = 0; k < spans.length; k += 3)
    pwriteFull(
      memFd,
      a.bytes,
      BigInt(spans[k]),
      spans[k + 1],
      spans[k + 2],
      `${where}: write pages at 0x${spans[k].toString(16)}`
    );
  // (both lines' times taken before either is written: the info line goes out at once)
  const t3 = performance.now();
  log.info(`${where}: ${pages} pages taken from the parent images (read ahead) in ${(t3 - t0).toFixed(1)} ms`);
  log.debug(
    `${where}: pages found in ${(t1 - t0).toFixed(1)} ms, the chain's identity checked in ${(t2 - t1).toFixed(1)} ms, ${spans.length / 3} writes into the process in ${(t3 - t2).toFixed(1)} ms`
  );
  return true;
}

/** Restore side: write the PE_PARENT runs of process pid from the parent images into memFd. */
export function fillParentPages(
  dir: string,
  pid: number,
  runs: PagemapRun[],
  memFd: number,
  where: string,
  punch = false
) {
  const parentRuns = runs.filter((r) => r.flags & PE_PARENT && !(r.flags & PE_PRESENT));
  if (!parentRuns.length) return;
  const pdir = join(dir, "parent");
  if (!existsSync(pdir))
    throw new CriuError(
      "restore",
      `${where}: pagemap-${pid}.img refers to parent images, but ${dir}/parent is missing`
    );
  // the parent held by an fd too (the kernel follows the link, relative to where it is); errors name it by its real path
  // (--auto-dedup reads them here, where what is read is known, not from pages read ahead)
  withDir(
    pdir,
    (p) => (!punch && fillAhead(p, pid, parentRuns, memFd, where)) || fillFrom(p, pid, parentRuns, memFd, where, punch)
  );
}

function fillFrom(pdir: string, pid: number, parentRuns: PagemapRun[], memFd: number, where: string, punch: boolean) {
  const t0 = performance.now();
  Object.assign(walk, { opens: 0, openMs: 0, loads: 0, loadMs: 0 });
  const src = PageSource.open(pdir, pid);
  if (!src) throw new CriuError("restore", `${where}: the parent images have no pagemap-${pid}.img`);
  if (punch) src.recordReads();
  // consecutive pages gather in buf and go into the target with one write of up to 1 MiB
  const buf = new Uint8Array(BLOCK);
  let n = 0,
    at = 0n,
    fill = 0,
    writes = 0,
    writeMs = 0;
  const flush = () => {
    if (!fill) return;
    const t = performance.now();
    pwriteFull(memFd, buf, at, fill, 0, `${where}: write pages at 0x${at.toString(16)}`);
    writes++;
    writeMs += performance.now() - t;
    fill = 0;
  };
  try {
    for (const r of parentRuns) {
      for (let i = 0; i < r.nrPages; ) {
        const va = r.vaddr + BigInt(i * PAGE);
        if (fill && (fill === BLOCK || at + BigInt(fill) !== va)) flush();
        if (!fill) at = va;
        const got = src.readSpan(va, Math.min(r.nrPages - i, (BLOCK - fill) / PAGE), buf, fill);
        if (!got) throw new CriuError("restore", `${where}: page 0x${va.toString(16)} is in none of the parent images`);
        fill += got * PAGE;
        i += got;
        n += got;
      }
    }
    flush();
    if (punch)
      log.info(
        `${where}: --auto-dedup: ${(src.punchRead() / 2 ** 20).toFixed(1)} MiB punched out of the parent images`
      );
  } finally {
    src.close();
  }
  log.info(`${where}: ${n} pages taken from the parent images in ${(performance.now() - t0).toFixed(1)} ms`);
  log.debug(
    `${where}: parent images opened ${walk.opens} in ${walk.openMs.toFixed(1)} ms, ${walk.loads} blocks read and checked in ${walk.loadMs.toFixed(1)} ms, ${writes} writes into the process in ${writeMs.toFixed(1)} ms`
  );
}
