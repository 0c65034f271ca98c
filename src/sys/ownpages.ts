// criu-bun's own resident memory, given back where a large dump has no further use for it (peak RSS
// of a 4 GiB dump: BENCHMARKS.md, twelfth session).
//
// trimOwnPages: a compiled Bun program maps its 110 MB executable from the page cache, and every
// page it touched counts in its RSS (VmHWM) for as long as it stays mapped. Starting the runtime,
// loading a command's modules, starting the page Workers and each later phase touch 15-36 MiB of
// the executable's code each (the kernel maps 64 KiB around each fault), much of it used once. A
// read-only private file page unmapped from us loses nothing: it stays in the page cache (nothing
// is read from the disk again) and its next use maps it again (a minor fault). A page of such a
// mapping that was written (copy on write: relocations made read-only after start-up, a debugger's
// breakpoint) is anonymous memory with contents of its own: /proc/self/pagemap shows those, and
// they are left mapped. Writable mappings are never touched (a page another thread writes between
// the look and the madvise would lose what it wrote).
//
// releasePages: a buffer the caller owns and is done with, its whole pages given back to the kernel
// at once (a large ArrayBuffer freed to the runtime stays resident until the allocator reuses it).
import { closeSync, openSync, readFileSync, readSync } from "./fs";
import { syscall } from "./syscall";
import { addr } from "./addr";
import { NR } from "./nr";
import { MADV } from "./flags";

const PAGE = 4096;
// /proc/self/pagemap's bits 63 and 61, in an entry's high 32 bits
const PM_PRESENT = 0x80000000,
  PM_FILE = 0x20000000; // file page or shared anonymous: clear for a private anonymous (copied) page

/** A read-only private mapping of a file: start-end r-xp|r--p offset dev inode /path */
const RO_FILE = /^([0-9a-f]+)-([0-9a-f]+) r-[-x]p [0-9a-f]+ \S+ \d+ +\//;

/** What trimOwnPages did: bytes unmapped, written pages kept, its time; error: why it stopped early. */
interface Trimmed {
  bytes: number;
  kept: number;
  ms: number;
  error?: string;
}

/**
 * Unmap the resident pages of criu-bun's read-only private file mappings (its executable's code
 * and read-only data, the shared libraries'), except the pages written since they were mapped.
 * Never throws: it only lowers RSS, nothing depends on it.
 */
export function trimOwnPages(): Trimmed {
  const t0 = performance.now();
  let pm = -1,
    given = 0,
    kept = 0;
  let error: string | undefined;
  try {
    pm = openSync("/proc/self/pagemap", "r");
    const maps: [number, number][] = [];
    for (const line of readFileSync("/proc/self/maps", "latin1").split("\n")) {
      const m = RO_FILE.exec(line);
      if (m) maps.push([Number.parseInt(m[1], 16), Number.parseInt(m[2], 16)]);
    }
    // one buffer for the largest mapping's entries (fresh memory costs a fault per page here);
    // each entry's high word: bit 31 present, bit 29 file page or shared (no BigInt per entry)
    const buf = new Uint8Array(Math.max(0, ...maps.map(([a, b]) => (b - a) / PAGE)) * 8);
    const hi = new Uint32Array(buf.buffer);
    for (const [start, end] of maps) {
      const n = (end - start) / PAGE,
        len = n * 8;
      let got = 0;
      for (let r = 1; got < len && r > 0; got += r) r = readSync(pm, buf, got, len - got, start / 512 + got);
      if (got < len) continue; // the mapping went away meanwhile
      // runs of pages that are not private copies (absent ones included: madvise passes over them)
      let from = -1,
        resident = 0;
      const flush = (to: number) => {
        if (from >= 0 && resident && syscall(NR.madvise, start + from * PAGE, (to - from) * PAGE, MADV.DONTNEED) === 0)
          given += resident * PAGE;
        from = -1;
        resident = 0;
      };
      for (let i = 0; i < n; i++) {
        const h = hi[i * 2 + 1];
        if (h & PM_PRESENT && !(h & PM_FILE)) {
          flush(i);
          kept++;
          continue;
        }
        if (from < 0) from = i;
        if (h & PM_PRESENT) resident++;
      }
      flush(n);
    }
  } catch (e) {
    error = e instanceof Error ? e.message : String(e);
  } finally {
    if (pm >= 0) closeSync(pm);
  }
  return { bytes: given, kept, ms: performance.now() - t0, error };
}

/**
 * The whole pages inside buf given back to the kernel (their contents become zeroes): for a large
 * buffer the caller owns and will not read again. Returns the bytes given back.
 */
export function releasePages(buf: Uint8Array): number {
  const a = addr(buf);
  const from = Math.ceil(a / PAGE) * PAGE,
    to = Math.floor((a + buf.byteLength) / PAGE) * PAGE;
  if (to <= from) return 0;
  return syscall(NR.madvise, from, to - from, MADV.DONTNEED) === 0 ? to - from : 0;
}
