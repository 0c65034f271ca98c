// pagemap-N.img without building a protobuf message per entry. A large process has hundreds of
// thousands of page runs; encoding them as messages costs seconds and hundreds of MB, so this
// hot path writes and reads CRIU's framing and the two small messages (pagemap_head,
// pagemap_entry: vaddr=1, compat_nr_pages=2, in_parent=3, flags=4, nr_pages=5) directly.
// tests/pagemap.test.ts checks it against the generic protobuf path and Debian's crit.
import { readFileSync } from "../sys/fs";
import { noFTL } from "bun:jsc";
import { join } from "../sys/path";
import { ImageError, LARGE_IMAGE } from "./image";
import { log } from "../log";
import { jitForLoops, jitIfLarge, WORK_JIT } from "../jit";
import { IMG_COMMON_MAGIC } from "./magic";
import { releasePages } from "../sys/ownpages";

const PAGEMAP_MAGIC = 0x56084025;

export interface PagemapRun {
  vaddr: bigint;
  nrPages: number;
  flags: number;
}

/**
 * Page runs kept compactly (16 bytes each in typed arrays instead of an object and a BigInt per
 * run): a multi-GiB dump of fragmented memory has hundreds of thousands of runs, and a list of
 * objects grew criu-bun's peak RSS with the size of the dump. Iterating yields PagemapRun objects
 * one at a time; add() joins a run to the previous one when they touch and share flags.
 */
export class RunList implements Iterable<PagemapRun> {
  private va = new Float64Array(256);
  private nf = new Uint32Array(512); // [nrPages, flags] per run
  length = 0;
  add(vaddr: number, nrPages: number, flags: number) {
    const i = this.length - 1;
    if (
      i >= 0 &&
      this.nf[i * 2 + 1] === flags &&
      this.va[i] + this.nf[i * 2] * 4096 === vaddr &&
      this.nf[i * 2] + nrPages <= 0xffffffff
    ) {
      this.nf[i * 2] += nrPages;
      return;
    }
    if (this.length === this.va.length) this.grow();
    this.va[this.length] = vaddr;
    this.nf[this.length * 2] = nrPages;
    this.nf[this.length * 2 + 1] = flags;
    this.length++;
  }
  /** Append a run as it is, never merged with the one before (runs split where VMAs meet). */
  push(vaddr: number, nrPages: number, flags: number) {
    if (this.length === this.va.length) this.grow();
    this.va[this.length] = vaddr;
    this.nf[this.length * 2] = nrPages;
    this.nf[this.length * 2 + 1] = flags;
    this.length++;
  }
  /** Twice the room; the arrays left behind given back to the kernel at once (a 4 GiB heap has
   * about 220,000 runs: 3.4 MB of arrays, and as much again in the ones outgrown). */
  private grow() {
    const va = new Float64Array(this.va.length * 2);
    va.set(this.va);
    const nf = new Uint32Array(this.nf.length * 2);
    nf.set(this.nf);
    this.giveBack();
    this.va = va;
    this.nf = nf;
  }
  private giveBack() {
    releasePages(new Uint8Array(this.va.buffer));
    releasePages(new Uint8Array(this.nf.buffer));
  }
  /** For the last user of the list: its arrays' pages given back to the kernel, the list empty. */
  release() {
    this.giveBack();
    this.va = new Float64Array(256);
    this.nf = new Uint32Array(512);
    this.length = 0;
  }
  /** run i without building an object: [vaddr, nrPages, flags] */
  vaddrAt(i: number) {
    return this.va[i];
  }
  pagesAt(i: number) {
    return this.nf[i * 2];
  }
  flagsAt(i: number) {
    return this.nf[i * 2 + 1];
  }
  *[Symbol.iterator](): Iterator<PagemapRun> {
    for (let i = 0; i < this.length; i++)
      yield { vaddr: BigInt(this.va[i]), nrPages: this.nf[i * 2], flags: this.nf[i * 2 + 1] };
  }
}

class Out {
  buf = new Uint8Array(1 << 16);
  len = 0;
  need(n: number) {
    if (this.len + n <= this.buf.length) return;
    const b = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }
  u32(v: number) {
    this.need(4);
    const b = this.buf;
    b[this.len] = v & 0xff;
    b[this.len + 1] = (v >>> 8) & 0xff;
    b[this.len + 2] = (v >>> 16) & 0xff;
    b[this.len + 3] = v >>> 24;
    this.len += 4;
  }
  /** v < 2^53, in integer halves: the floating-point % and floor of a plain loop cost 10x more
   * (a 1 GiB dump of fragmented memory has 60,000 runs: 150-400 ms before, under 10 now) */
  varint(v: number) {
    this.need(10);
    const b = this.buf;
    let lo = v >>> 0,
      hi = v > 0xffffffff ? Math.floor(v / 0x100000000) : 0;
    while (hi !== 0 || lo > 0x7f) {
      b[this.len++] = (lo & 0x7f) | 0x80;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    b[this.len++] = lo;
  }
}

function varintLen(v: number) {
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  let n = 4;
  v = Math.floor(v / 0x10000000);
  while (v >= 0x80) {
    v = Math.floor(v / 0x80);
    n++;
  }
  return n + 1;
}

function putVarint(b: Uint8Array, p: number, v: number): number {
  if (v < 0x80) {
    b[p] = v;
    return p + 1;
  }
  let lo = v >>> 0,
    hi = v > 0xffffffff ? Math.floor(v / 0x100000000) : 0;
  while (hi !== 0 || lo > 0x7f) {
    b[p++] = (lo & 0x7f) | 0x80;
    lo = ((lo >>> 7) | (hi << 25)) >>> 0;
    hi >>>= 7;
  }
  b[p++] = lo;
  return p;
}

/**
 * pagemap-N.img written entry by entry into one buffer: magics, pagemap_head{pages_id}, then per
 * push() one pagemap_entry (u32 length, then vaddr=1, compat_nr_pages=2, flags=4, nr_pages=5), its
 * length filled in after its fields. Runs one pass per run and no object per run: the pagemap of
 * 4 GiB of scattered memory (240,000 runs) took 0.4 s of the dump's wall after its pages, most of
 * it computing each field's varint length first and copying the result out (CPU per 240,000 runs,
 * first call: 120-150 ms before, 40-60 ms this way).
 */
export class PagemapWriter {
  private b: Uint8Array;
  private p = 0;
  constructor(pagesId: number, runsHint = 256) {
    this.b = new Uint8Array(32 + Math.max(runsHint, 16) * 48);
    const o = new Out();
    o.u32(IMG_COMMON_MAGIC);
    o.u32(PAGEMAP_MAGIC);
    o.u32(1 + varintLen(pagesId));
    o.varint(0x08);
    o.varint(pagesId);
    this.b.set(o.buf.subarray(0, o.len));
    this.p = o.len;
  }
  /** One run (vaddr < 2^53): an entry is at most 4 + 4 * 11 bytes. */
  push(vaddr: number, nrPages: number, flags: number) {
    if (this.p + 48 > this.b.length) {
      const b = new Uint8Array(this.b.length * 2);
      b.set(this.b.subarray(0, this.p));
      this.b = b;
    }
    const b = this.b,
      at = this.p;
    let p = at + 4;
    b[p++] = 0x08;
    p = putVarint(b, p, vaddr);
    b[p++] = 0x10;
    p = putVarint(b, p, nrPages > 0xffffffff ? 0 : nrPages);
    b[p++] = 0x20;
    p = putVarint(b, p, flags);
    b[p++] = 0x28;
    p = putVarint(b, p, nrPages);
    const size = p - at - 4;
    b[at] = size;
    b[at + 1] = 0;
    b[at + 2] = 0;
    b[at + 3] = 0;
    this.p = p;
  }
  /** The image's bytes (a view of the buffer). */
  bytes(): Uint8Array {
    return this.b.subarray(0, this.p);
  }
}

/** The functions that write a pagemap image run by run (PagemapWriter.push and its varints). */
export const pagemapWriterCode = (): ((...a: never[]) => unknown)[] => [putVarint, PagemapWriter.prototype.push];

/** The whole image: magics, pagemap_head{pages_id}, then one pagemap_entry per run. */
export function encodePagemap(pagesId: number, runs: Iterable<PagemapRun>): Uint8Array {
  if (runs instanceof RunList) {
    const w = new PagemapWriter(pagesId, runs.length);
    for (let i = 0; i < runs.length; i++) w.push(runs.vaddrAt(i), runs.pagesAt(i), runs.flagsAt(i));
    return w.bytes();
  }
  const w = new PagemapWriter(pagesId);
  for (const r of runs) w.push(Number(r.vaddr), r.nrPages, r.flags);
  return w.bytes();
}

/** A run as read from an image, with the raw offset of its pages in the page stream (that of the
 * PE_PRESENT runs before it: the pages of a PE_PRESENT run start there). */
export type PagemapRunAt = PagemapRun & { offset: number };

/**
 * A pagemap as a restore reads it: per run its address (a double: exact for a page-aligned address
 * below 2^64), page count, flags and the raw offset of its pages in the page stream (that of the
 * PE_PRESENT runs before it), in typed arrays. A 1 GiB heap has 55,000 runs, 4 GiB 220,000: an
 * object and a BigInt per run were most of a restore's image loading (allocation: fresh heap
 * pages fault on a VM). Objects (PagemapRunAt) are made only when asked for, by the paths that
 * walk runs as objects (lazy pages, parent images, the page server).
 */
export class PagemapTable {
  private objs?: PagemapRunAt[];
  constructor(
    readonly pagesId: number,
    readonly length: number,
    readonly va: Float64Array,
    readonly nr: Float64Array,
    readonly flags: Uint32Array,
    readonly offset: Float64Array
  ) {}
  /** the runs as objects, made once */
  runs(): PagemapRunAt[] {
    if (this.objs) return this.objs;
    const out: PagemapRunAt[] = new Array(this.length);
    for (let i = 0; i < this.length; i++)
      out[i] = { vaddr: BigInt(this.va[i]), nrPages: this.nr[i], flags: this.flags[i], offset: this.offset[i] };
    this.objs = out;
    return out;
  }
  /** Does any run have all of the flags `bits` and none of `without`? */
  some(bits: number, without = 0): boolean {
    for (let i = 0; i < this.length; i++)
      if ((this.flags[i] & bits) === bits && !(this.flags[i] & without)) return true;
    return false;
  }
  static readonly empty = new PagemapTable(
    0,
    0,
    new Float64Array(0),
    new Float64Array(0),
    new Uint32Array(0),
    new Float64Array(0)
  );
}

/** Read dir/file: pages id and the runs (nr_pages from field 5, else field 2; flags default PE_PRESENT),
 * each with its offset in the page stream. */
export function decodePagemap(dir: string, file: string): { pagesId: number; runs: PagemapRunAt[] } {
  const t = decodePagemapTable(dir, file);
  return { pagesId: t.pagesId, runs: t.runs() };
}

/** Read dir/file into a PagemapTable (decodePagemap's runs, without an object per run). */
export function decodePagemapTable(dir: string, file: string): PagemapTable {
  const b = readFileSync(join(dir, file));
  if (jitIfLarge(b.length, LARGE_IMAGE)) log.debug(`JIT tier-up thresholds x${WORK_JIT} from here on (${file})`);
  // a large one's loops at the JIT's own thresholds (jitForLoops)
  return b.length >= LARGE_IMAGE ? jitForLoops(() => tableOf(b, file)) : tableOf(b, file);
}

function tableOf(b: Buffer, file: string): PagemapTable {
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  if (b.length < 8) throw new ImageError(file, 0, "truncated header");
  if (dv.getUint32(0, true) !== IMG_COMMON_MAGIC || dv.getUint32(4, true) !== PAGEMAP_MAGIC)
    throw new ImageError(file, 0, "not a PAGEMAP image (bad magic)");
  let off = 8,
    pagesId = -1;
  // an entry takes at least 8 bytes (its length, and vaddr's and a count's tag and value)
  const cap = Math.max(1, Math.floor(b.length / 8));
  let va = new Float64Array(cap),
    nrs = new Float64Array(cap),
    fl = new Uint32Array(cap),
    offs = new Float64Array(cap),
    n = 0;
  let offset = 0;
  // (one closure for the whole file, not one per entry: a migrate's final pagemap may hold a
  // hundred thousand entries, decoded in its frozen window)
  let p = 0,
    end = 0;
  const varint = () => {
    let v = 0,
      mul = 1;
    const at = p;
    for (;;) {
      if (p >= end) throw new ImageError(file, p, "truncated varint");
      const c = b[p++];
      v += (c & 0x7f) * mul;
      if (c < 0x80) break;
      mul *= 0x80;
      if (mul > 2 ** 63) throw new ImageError(file, p, "varint too long");
    }
    // above 2^53 a double may have rounded the value: an address taken for another (a run of
    // pages restored elsewhere than the image says) is refused, not used
    if (v >= 2 ** 53) {
      let x = 0n;
      for (let q = p - 1; q >= at; q--) x = (x << 7n) | BigInt(b[q] & 0x7f);
      if (BigInt(v) !== x)
        throw new ImageError(file, at, `value 0x${x.toString(16)} has more bits than a run's address can hold`);
    }
    return v;
  };
  const st = new Float64Array(2);
  while (off < b.length) {
    if (pagesId >= 0) {
      st[0] = n;
      st[1] = offset;
      off = usualEntries(b, dv, off, va, nrs, fl, offs, st);
      n = st[0];
      offset = st[1];
      if (off >= b.length) break;
    }
    if (off + 4 > b.length) throw new ImageError(file, off, "truncated entry length");
    const len = dv.getUint32(off, true);
    const start = off + 4;
    end = start + len;
    if (end > b.length)
      throw new ImageError(file, off, `truncated entry (needs ${len} bytes, has ${b.length - start})`);
    p = start;
    let vaddr = -1,
      compat = -1,
      nr = -1,
      flags = 4,
      head = -1;
    while (p < end) {
      const tag = varint(),
        field = tag >= 2 ** 31 ? Math.floor(tag / 8) : tag >>> 3,
        wt = tag & 7;
      if (wt !== 0) throw new ImageError(file, p, `unexpected wire type ${wt} in field ${field}`);
      const v = varint();
      if (pagesId < 0) {
        if (field === 1) head = v;
        continue;
      }
      if (field === 1) vaddr = v;
      else if (field === 2) compat = v;
      else if (field === 4) flags = v;
      else if (field === 5) nr = v;
    }
    if (pagesId < 0) {
      if (head < 0) throw new ImageError(file, off, "pagemap_head without pages_id");
      pagesId = head;
    } else {
      if (vaddr < 0 || (compat < 0 && nr < 0))
        throw new ImageError(file, off, "pagemap_entry without vaddr or page count");
      // flags is a uint32 (pagemap.proto): a larger value would be cut short in the table
      if (flags > 0xffffffff) throw new ImageError(file, off, `pagemap_entry flags ${flags} out of range`);
      const nrPages = nr >= 0 ? nr : compat;
      if (n === va.length) {
        const grow = <T extends Float64Array | Uint32Array>(a: T): T => {
          const g = new (a.constructor as new (n: number) => T)(a.length * 2);
          g.set(a);
          return g;
        };
        va = grow(va);
        nrs = grow(nrs);
        fl = grow(fl);
        offs = grow(offs);
      }
      va[n] = vaddr;
      nrs[n] = nrPages;
      fl[n] = flags;
      offs[n++] = offset;
      if (flags & 4 /* PE_PRESENT */) offset += nrPages * 4096;
    }
    off = end;
  }
  if (pagesId < 0) throw new ImageError(file, off, "no pagemap_head");
  return new PagemapTable(pagesId, n, va.subarray(0, n), nrs.subarray(0, n), fl.subarray(0, n), offs.subarray(0, n));
}

/**
 * decodePagemapTable's pagemap_entries from `off` on, for as long as each is the usual kind: every
 * field a one-byte tag of wire type 0 and a varint of at most 7 bytes (a value below 2^49), vaddr
 * and a page count present, flags a uint32, and the arrays not full. Stops at the first entry that
 * is not (returning its offset), which the general loop then reads, accepts or refuses and words as
 * before. The same values as the general loop, without a call per varint: a 1 GiB heap's 55,000
 * entries took 16-41 ms (median 29) of a restore's start in it, 9-21 ms (median 12) this way.
 * st: [runs so far, page-stream offset], updated.
 * Kept at DFG (noFTL below): it runs once per pagemap, and its FTL compiles (15-25 ms on the JIT
 * thread, BUN_JSC_reportFTLCompileTimes) ended after a 1 GiB restore's decoding, on the CPUs the
 * page Workers started beside it need.
 */
function usualEntries(
  b: Uint8Array,
  dv: DataView,
  off: number,
  va: Float64Array,
  nrs: Float64Array,
  fl: Uint32Array,
  offs: Float64Array,
  st: Float64Array
): number {
  let n = st[0],
    offset = st[1];
  const size = b.length,
    cap = va.length;
  while (off + 4 <= size && n < cap) {
    let p = off + 4;
    const end = p + dv.getUint32(off, true);
    if (end > size) break;
    let vaddr = -1,
      compat = -1,
      nr = -1,
      flags = 4;
    while (p < end) {
      const tag = b[p];
      if (tag > 0x7f || (tag & 7) !== 0) break;
      let q = p + 1,
        v = 0,
        mul = 1,
        c = 0x80;
      while (c > 0x7f && q < end && mul < 2 ** 49) {
        c = b[q++];
        v += (c & 0x7f) * mul;
        mul *= 0x80;
      }
      if (c > 0x7f) break; // cut short, or 8 bytes or more
      p = q;
      const field = tag >>> 3;
      if (field === 1) vaddr = v;
      else if (field === 2) compat = v;
      else if (field === 4) flags = v;
      else if (field === 5) nr = v;
    }
    if (p < end || vaddr < 0 || (compat < 0 && nr < 0) || flags > 0xffffffff) break;
    const nrPages = nr >= 0 ? nr : compat;
    va[n] = vaddr;
    nrs[n] = nrPages;
    fl[n] = flags;
    offs[n++] = offset;
    if (flags & 4 /* PE_PRESENT */) offset += nrPages * 4096;
    off = end;
  }
  st[0] = n;
  st[1] = offset;
  return off;
}
noFTL(usualEntries);

/**
 * The PE_PRESENT runs of a pagemap, by address, in typed arrays (addresses as doubles: a page-aligned
 * address below 2^64 is exact in one), and the bytes they hold: what a restore walks to cut the
 * page stream into segments and check it against the page index. Built once per pagemap (a 4 GiB
 * heap has 220,000 runs; filtering and converting them at each use cost a restore hundreds of ms).
 * The pagemap must not change after the first call (a restore's images do not).
 */
interface PresentRuns {
  va: Float64Array;
  nr: Float64Array;
  bytes: number;
}
const presentCache = new WeakMap<object, PresentRuns>();
export function presentRuns(pagemap: readonly PagemapRun[] | PagemapTable): PresentRuns {
  const hit = presentCache.get(pagemap);
  if (hit) return hit;
  let out: PresentRuns;
  if (pagemap instanceof PagemapTable) {
    const { flags, length } = pagemap;
    let n = 0;
    for (let i = 0; i < length; i++) if (flags[i] & 4) n++;
    // in shared memory: a restore's page Workers read them where they are (codec/jobs.ts BlockTable)
    const va = new Float64Array(new SharedArrayBuffer(n * 8)),
      nr = new Float64Array(new SharedArrayBuffer(n * 8));
    let bytes = 0;
    for (let i = 0, k = 0; i < length; i++) {
      if (!(flags[i] & 4) /* PE_PRESENT */) continue;
      va[k] = pagemap.va[i];
      nr[k++] = pagemap.nr[i];
      bytes += pagemap.nr[i] * 4096;
    }
    out = { va, nr, bytes };
  } else {
    let n = 0;
    for (let i = 0; i < pagemap.length; i++) if (pagemap[i].flags & 4) n++;
    const va = new Float64Array(n),
      nr = new Float64Array(n);
    let bytes = 0;
    for (let i = 0, k = 0; i < pagemap.length; i++) {
      const r = pagemap[i];
      if (!((r.flags & 4) /* PE_PRESENT */)) continue;
      va[k] = Number(r.vaddr);
      nr[k++] = r.nrPages;
      bytes += r.nrPages * 4096;
    }
    out = { va, nr, bytes };
  }
  presentCache.set(pagemap, out);
  return out;
}
