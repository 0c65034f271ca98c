// criu's dedup, both directions of a chain of incremental images (pre-dump, then dump
// --prev-images-dir): the pages a dump stores itself (PE_PRESENT) are punched out of its parent
// images (fallocate PUNCH_HOLE | KEEP_SIZE), which a restore of the newest images never reads, as
// `criu dedup` and `dump --auto-dedup` do; `restore --auto-dedup` punches each block out of the
// images once its pages are in the process. Where the images have criu-bun's block index, each
// block that lost pages gets its checksums again (its holes read as zeros), and criu-bun.sum with
// it, so a restore of the newest images still checks every parent block it reads.
//
// Images dedup punched pages out of are marked (criu-bun.dedup): a restore of them as the newest
// images would put zeros where those pages were, so it is refused; as the parents of a later dump
// they are read as usual (that dump holds every page punched out of them).
import {
  existsSync,
  openSync,
  closeSync,
  readdirSync,
  renameSync,
  readFileSync,
  writeSync,
  constants,
} from "../sys/fs";
import { join, resolve } from "../sys/path";
import { syscall } from "../sys/syscall";
import { NR } from "../sys/nr";
import { errnoText } from "../sys/errno";
import { decodePagemap, type PagemapRunAt } from "../images/pagemap";
import { pagesNames } from "./format";
import { preadFull } from "../sys/mem";
import { createNew } from "../images/safefs";
import { writeManifest } from "../images/manifest";
import { CriuError, log } from "../log";

const PAGE = 4096,
  PE_PARENT = 1,
  PE_PRESENT = 4;
const PUNCH_HOLE_KEEP_SIZE = 0x2 | 0x1;
const IDX_HEADER = 32,
  IDX_ENTRY = 32;

/** [start, end) byte ranges of a pages file, kept merged */
type Ranges = [number, number][];

function addRange(r: Ranges, a: number, b: number) {
  r.push([a, b]);
}
function merged(r: Ranges): Ranges {
  const s = [...r].sort((x, y) => x[0] - y[0]);
  const out: Ranges = [];
  for (const [a, b] of s) {
    const last = out.at(-1);
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

/** One images directory of the chain: its pagemaps (by file name), decoded once. */
class Level {
  private pagemaps = new Map<string, { pagesFile: string; runs: PagemapRunAt[] } | null>();
  /** pages file -> byte ranges to punch in it */
  readonly punch = new Map<string, Ranges>();
  private parentLevel?: Level | null;
  constructor(readonly dir: string) {}
  pagemap(file: string) {
    if (!this.pagemaps.has(file))
      this.pagemaps.set(
        file,
        existsSync(join(this.dir, file))
          ? (() => {
              const pm = decodePagemap(this.dir, file);
              return { pagesFile: `pages-${pm.pagesId}.img`, runs: pm.runs };
            })()
          : null
      );
    return this.pagemaps.get(file)!;
  }
  parent(): Level | null {
    if (this.parentLevel === undefined)
      this.parentLevel = existsSync(join(this.dir, "parent")) ? new Level(resolve(this.dir, "parent")) : null;
    return this.parentLevel;
  }
}

/**
 * criu's dedup_one_iovec: [a, b) of the process whose pagemap is `file` leaves `level` and every
 * level under it: pages it stores itself are marked to be punched, and the range goes on down.
 */
function dedupRange(level: Level, file: string, a: bigint, b: bigint) {
  const pm = level.pagemap(file);
  if (!pm) return;
  const runs = pm.runs;
  // the first run that ends after a (runs are sorted by address)
  let lo = 0,
    hi = runs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (runs[mid].vaddr + BigInt(runs[mid].nrPages * PAGE) <= a) lo = mid + 1;
    else hi = mid;
  }
  for (let i = lo; i < runs.length && runs[i].vaddr < b; i++) {
    const r = runs[i];
    const s = r.vaddr > a ? r.vaddr : a,
      e0 = r.vaddr + BigInt(r.nrPages * PAGE),
      e = e0 < b ? e0 : b;
    if (s >= e) continue;
    if (r.flags & PE_PRESENT && !(r.flags & PE_PARENT)) {
      let ranges = level.punch.get(pm.pagesFile);
      if (!ranges) level.punch.set(pm.pagesFile, (ranges = []));
      const off = r.offset + Number(s - r.vaddr);
      addRange(ranges, off, off + Number(e - s));
    }
    const p = level.parent();
    if (p) dedupRange(p, file, s, e);
  }
}

/** The pages files of dir's task pagemaps (pagemap-PID.img) */
const taskPagemaps = (dir: string) => readdirSync(dir).filter((f) => /^pagemap-\d+\.img$/.test(f));

/**
 * `criu dedup -D dir`, and `dump --auto-dedup` once its images are in place: every page dir's
 * pagemaps store themselves is punched out of the parent images. Returns the bytes punched.
 */
export function dedupChain(dir: string, where: "dedup" | "dump" = "dedup"): number {
  const top = new Level(dir);
  const first = top.parent();
  if (!first) {
    log.info(`dedup: ${dir} has no parent images; nothing to punch`);
    return 0;
  }
  for (const file of taskPagemaps(dir)) {
    const pm = top.pagemap(file)!;
    for (const r of pm.runs)
      if (r.flags & PE_PRESENT && !(r.flags & PE_PARENT))
        dedupRange(first, file, r.vaddr, r.vaddr + BigInt(r.nrPages * PAGE));
  }
  let total = 0;
  for (let l: Level | null = first; l; l = l.parent()) {
    let changed = false;
    if (l.punch.size) markDeduped(l.dir, `dedup: the pages ${resolve(dir)} stores itself were punched out`);
    for (const [pagesFile, ranges] of l.punch) {
      const n = punchPages(l.dir, pagesFile, merged(ranges), where);
      if (n > 0) changed = true;
      total += n;
    }
    if (changed && existsSync(join(l.dir, "criu-bun.sum"))) writeManifest(l.dir);
  }
  log.info(`dedup: ${(total / 2 ** 20).toFixed(1)} MiB punched out of the parent images of ${dir}`);
  return total;
}

/**
 * Punch `ranges` (raw page-stream offsets) out of dir/pagesFile; with a block index, the blocks
 * they touch get their checksums again. A compressed pages file (pages-N.lz4) is left alone, as
 * criu leaves compressed pages (a hole would cut through blocks that share a file block).
 */
function punchPages(dir: string, pagesFile: string, ranges: Ranges, where: string): number {
  const names = pagesNames(pagesFile);
  const path = join(dir, names.img);
  if (!existsSync(path)) {
    if (existsSync(join(dir, names.lz4)))
      log.info(`dedup: ${join(dir, names.lz4)} is compressed; its pages are left in it`);
    return 0;
  }
  const fd = openSync(path, constants.O_RDWR | constants.O_NOFOLLOW | 0o2000000);
  let n = 0,
    done = 0;
  try {
    for (const [a, b] of ranges) {
      const r = syscall(NR.fallocate, fd, PUNCH_HOLE_KEEP_SIZE, a, b - a);
      if (r < 0) throw new CriuError(where, `cannot punch ${b - a} bytes at ${a} out of ${path}: ${errnoText(-r)}`);
      n += b - a;
      done++;
    }
    log.debug(`dedup: ${path}: ${ranges.length} range(s), ${n} bytes punched`);
  } finally {
    // the blocks that lost pages, even when a later punch failed: the chain stays consistent
    const idx = join(dir, names.idx);
    try {
      if (done && existsSync(idx)) rehashBlocks(fd, path, idx, ranges.slice(0, done));
    } finally {
      closeSync(fd);
    }
  }
  return n;
}

/** The blocks of idx that `ranges` touch: their raw and stored checksums of the bytes as they are now. */
function rehashBlocks(fd: number, path: string, idx: string, ranges: Ranges) {
  const bytes = new Uint8Array(readFileSync(idx));
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const version = dv.getUint32(4, true),
    n = dv.getUint32(16, true);
  if ((dv.getUint32(8, true) & 1) !== 0 || bytes.length !== IDX_HEADER + n * IDX_ENTRY)
    throw new CriuError("dedup", `${idx} is not the index of an uncompressed pages file`);
  const hash = (b: Uint8Array) =>
    version >= 3 ? (Bun.hash.xxHash3(b) as bigint) : BigInt.asUintN(64, Bun.hash.xxHash64(b, 0n));
  let buf = new Uint8Array(0);
  let off = 0,
    k = 0;
  for (let i = 0; i < n; i++) {
    const o = IDX_HEADER + i * IDX_ENTRY;
    const len = dv.getUint32(o + 16, true);
    while (k < ranges.length && ranges[k][1] <= off) k++;
    if (k < ranges.length && ranges[k][0] < off + len) {
      if (buf.length < len) buf = new Uint8Array(len);
      const b = buf.subarray(0, len);
      if (preadFull(fd, b, BigInt(off), len, 0, `read ${path}`) !== len)
        throw new CriuError("dedup", `${path} is shorter than ${idx} says`);
      const h = hash(b);
      dv.setBigUint64(o, h, true);
      dv.setBigUint64(o + 8, h, true);
    }
    off += len;
  }
  const tmp = join(resolve(idx, ".."), `.${idx.split("/").at(-1)}.dedup${process.pid}`);
  const t = createNew(tmp, true);
  try {
    let w = 0;
    while (w < bytes.length) {
      const r = writeSync(t, bytes, w, bytes.length - w);
      if (r <= 0) throw new CriuError("dedup", `cannot write ${tmp}: short write`);
      w += r;
    }
  } finally {
    closeSync(t);
  }
  renameSync(tmp, idx);
}

/** In an images directory whose pages a dedup punched: says so (CRIU ignores the file). */
const DEDUP_MARK = "criu-bun.dedup";

/** Mark dir as holding only part of its pages (before the first punch: a failure midway is marked too). */
export function markDeduped(dir: string, why: string) {
  const path = join(dir, DEDUP_MARK);
  if (existsSync(path)) return;
  const fd = createNew(path, true);
  try {
    const b = new TextEncoder().encode(`${why}\n`);
    if (writeSync(fd, b, 0, b.length) !== b.length) throw new CriuError("dedup", `cannot write ${path}`);
  } finally {
    closeSync(fd);
  }
}

/**
 * The newest images of a restore must hold their pages: a directory a dedup punched pages out of
 * (they went to a later dump of the chain, or a restore with --auto-dedup used them up) would come
 * back with zeros there, so it is refused; as a parent of the restored images it is read as usual.
 */
export function refuseDeduped(dir: string) {
  const path = join(dir, DEDUP_MARK);
  if (!existsSync(path)) return;
  let why = "";
  try {
    why = readFileSync(path, "utf8").split("\n")[0].slice(0, 300);
  } catch {}
  throw new CriuError(
    "restore",
    `${dir}: pages were punched out of these images (${why || DEDUP_MARK}): restore the newest images of their chain`
  );
}
