// Memory tracking between dumps without soft-dirty bits: userfaultfd write-protect in async mode
// (UFFD_FEATURE_WP_ASYNC) with PAGEMAP_SCAN (Linux 6.7+), set up in the target by injected syscalls.
//
// pre-dump (or dump --track-mem -R) ARMS tracking in each process, at the end of its frozen period,
// after its pages were read: a userfaultfd is made in the target, its private anonymous VMAs (and
// its private file mappings but the executable ones: their copied-on-write pages) are registered in
// write-protect mode, and one PAGEMAP_SCAN with PM_SCAN_WP_MATCHING write-protects every
// page. From then on the kernel itself clears a page's write-protection on its first write (no signal,
// no fault handler: async mode), so PAGEMAP_SCAN's PAGE_IS_WRITTEN says which pages changed.
//
// The next pre-dump or dump --prev-images-dir USES it: it reads from the target only pages written
// since (and not the zero page); pages present and not written are PE_PARENT runs where the parent's
// pagemap has them (the parent left out all-zero pages: unwritten and absent there means zero still).
// A VMA no longer registered (mremap, munmap + mmap, a new VMA) falls back to content comparison.
//
// Between runs the userfaultfd stays in the target, at a high fd number with FD_CLOEXEC; the pre-dump
// directory's memtrack-PID.json names it (fd, inode, the process's start time). What the target can
// observe: that fd in /proc/self/fd ("anon_inode:[userfaultfd]"), "uw" in its smaps VmFlags, its own
// UFFDIO_REGISTER of those ranges failing with EBUSY; an exec, closing the fd or an mremap ends
// tracking (the next dump compares contents instead). The fd is never dumped as the process's own, and
// a dump that does not re-arm (the final dump, or -R without --track-mem) closes it in the target.
import {
  closeSync,
  existsSync,
  fstatSync,
  readdirSync,
  openSync,
  readFileSync,
  statSync,
  writeSync,
  constants as FS,
} from "../sys/fs";
import { join, resolve } from "../sys/path";
import { Injector, RemoteMem } from "../ptrace/inject";
import { freezeProcess, releaseProcess } from "../ptrace/seize";
import { getRegs } from "../sys/ptrace";
import { NR } from "../sys/nr";
import { openFd, closeFd, O, F, PAGE_IS, PagemapScanner } from "../sys/mem";
import {
  UFFDIO_API,
  UFFDIO_REGISTER,
  UFFD_API,
  UFFD_USER_MODE_ONLY,
  UFFDIO_REGISTER_MODE,
  UFFD_FEATURE,
  PM_SCAN,
} from "../sys/uffd";
import { readStat, readLink } from "../sys/proc";
import { errnoText } from "../sys/errno";
import { decodePagemap, type PagemapRun } from "../images/pagemap";
import { VMA, firstEndAfter } from "./vma";
import { withoutWpMarkers, type DumpedVma, type PageRun } from "./memory";
import { log, errorMessage } from "../log";

const PAGE = 4096n,
  PE_PARENT = 1,
  PE_PRESENT = 4;
/** what the tracking record of one process holds */
interface Record {
  pid: number;
  startTime: string;
  fd: number;
  ino: number;
}

/** The pages of one process to read, and those to take from the parent, when tracking is in use. */
interface TrackedPages {
  want: PageRun[];
  fromParent: PagemapRun[];
  trackedPages: number;
}

const recordName = (vpid: number) => `memtrack-${vpid}.json`;

export class MemTracker {
  /** per process (criu-bun's pid): the live tracking fd in it, when the parent's record still holds */
  private live = new Map<number, Record>();

  constructor(
    private readonly dir: string,
    private readonly prevDir: string | undefined
  ) {}

  /** Find the tracking left by the parent dump in process pid (vpid in the images). */
  adopt(pid: number, vpid: number) {
    if (!this.prevDir) return;
    const path = join(resolve(this.dir, this.prevDir), recordName(vpid));
    if (!existsSync(path)) return;
    let rec: Record;
    try {
      rec = JSON.parse(readFileSync(path, "utf8"));
    } catch {
      log.warn(`${path}: unreadable; pages are compared instead`);
      return;
    }
    if (rec.pid !== pid || !Number.isInteger(rec.fd) || rec.fd < 0) return;
    const why = this.stale(pid, rec);
    if (why) {
      log.info(`process ${pid}: memory tracking from the previous dump is gone (${why}); pages are compared instead`);
      return;
    }
    this.live.set(pid, rec);
    log.debug(`process ${pid}: memory tracking by userfaultfd ${rec.fd} in use`);
  }

  private stale(pid: number, rec: Record): string {
    return staleRecord(pid, rec);
  }

  /** fds that are criu-bun's tracking, not the process's own: never dumped. That includes the
   *  copies a child forked after the pre-dump inherited (a busybox shell's forked applets): the
   *  same userfaultfd (inode) as a record of the parent dump, which the process never opened. */
  skips(pid: number, fd: number): boolean {
    if (this.live.get(pid)?.fd === fd) return true;
    const inos = this.trackingInos();
    if (!inos.size) return false;
    try {
      if (!readLink(`/proc/${pid}/fd/${fd}`).includes("userfaultfd")) return false;
      if (!inos.has(statSync(`/proc/${pid}/fd/${fd}`).ino)) return false;
    } catch {
      return false;
    }
    log.debug(
      `process ${pid} fd ${fd}: a copy of criu-bun's tracking userfaultfd inherited through fork; not the process's own, not dumped`
    );
    return true;
  }
  private inos?: Set<number>;
  private trackingInos(): Set<number> {
    if (this.inos) return this.inos;
    this.inos = new Set();
    if (!this.prevDir) return this.inos;
    const dir = resolve(this.dir, this.prevDir);
    try {
      for (const f of readdirSync(dir)) {
        if (!/^memtrack-\d+\.json$/.test(f)) continue;
        try {
          const r = JSON.parse(readFileSync(join(dir, f), "utf8"));
          if (Number.isInteger(r.ino)) this.inos.add(r.ino);
        } catch {}
      }
    } catch {}
    return this.inos;
  }

  /**
   * Pages of the tracked VMAs: written since the parent -> read them; not written and in the
   * parent -> PE_PARENT. In a tracked file mapping (trackable) only its private pages count (those
   * no longer the file's: copied on write): written since -> read; private, not written and in the
   * parent -> PE_PARENT; the file's own pages and tracking's write-protect markers (a page not
   * there, reported swapped) are neither, as pagesToDump leaves them out. Returns undefined where tracking is not in use for this process; VMAs
   * not (or no longer) registered are left to the caller (`untracked`).
   */
  select(pid: number, vpid: number, vmas: DumpedVma[]): (TrackedPages & { untracked: DumpedVma[] }) | undefined {
    if (!this.live.has(pid) || off()) return undefined;
    // which VMAs are registered: PAGEMAP_SCAN with CHECK_WPASYNC refuses the others (EPERM, scanRuns
    // null); smaps's VmFlags would tell too, but reading smaps walks every page table of the process
    const parent = parentCoverage(resolve(this.dir, this.prevDir!), vpid);
    const fd = openFd(`/proc/${pid}/pagemap`, O.RDONLY | O.CLOEXEC);
    const sc = new PagemapScanner(fd);
    const out: TrackedPages & { untracked: DumpedVma[] } = { want: [], fromParent: [], trackedPages: 0, untracked: [] };
    try {
      for (const v of vmas) {
        const kind = trackable(v);
        if (!kind) {
          out.untracked.push(v);
          continue;
        }
        // file mappings: the file's own pages are no pages of the dump
        const file = kind === "file" ? PAGE_IS.FILE : 0;
        // anonymous memory: one walk of its page tables gives both the pages written since the
        // write-protect and those there and untouched (present or swapped, not the zero page), told
        // apart by PAGE_IS_WRITTEN in the categories of each region (the kernel joins neighbours
        // only when their returned categories are equal)
        const split = file
          ? undefined
          : scanSplit(sc, pid, v.start, v.end, PAGE_IS.WRITTEN, {
              flags: PM_SCAN.CHECK_WPASYNC,
              mask: PAGE_IS.PFNZERO,
              inverted: PAGE_IS.PFNZERO,
              anyof: PAGE_IS.PRESENT | PAGE_IS.SWAPPED,
              ret: PAGE_IS.WRITTEN | PAGE_IS.PRESENT | PAGE_IS.SWAPPED,
            });
        // written since the write-protect (not the zero page): read
        const written = split
          ? split.with
          : scanRuns(sc, pid, v.start, v.end, {
              flags: PM_SCAN.CHECK_WPASYNC,
              mask: PAGE_IS.WRITTEN | PAGE_IS.PFNZERO | file,
              inverted: PAGE_IS.PFNZERO | file,
              anyof: PAGE_IS.PRESENT | PAGE_IS.SWAPPED,
              ret: PAGE_IS.WRITTEN | PAGE_IS.PRESENT | PAGE_IS.SWAPPED,
            });
        if (split === null || written === null) {
          out.untracked.push(v);
          continue;
        }
        // there and untouched: the parent's copy is this page (where the parent has one)
        const untouched = (anyof: number, a = v.start, b = v.end) =>
          scanRuns(sc, pid, a, b, {
            flags: PM_SCAN.CHECK_WPASYNC,
            mask: PAGE_IS.WRITTEN | PAGE_IS.PFNZERO | file,
            inverted: PAGE_IS.WRITTEN | PAGE_IS.PFNZERO | file,
            anyof,
            ret: anyof,
          }) ?? [];
        // (the parent's ranges in this VMA: a binary search, not a walk of all of them per VMA)
        const inParent = clip(parent, v.start, v.end);
        let same: [bigint, bigint][];
        if (split) same = intersect(split.without, inParent);
        else {
          // a file mapping: only where the parent has pages (its few private ones: a walk of the
          // parent's ranges, not of the whole mapping). Untouched "swapped" pages there are
          // swapped-out private pages, or write-protect markers (the private page the parent has
          // was dropped since: the file's page is back), told apart by their pagemap entries
          same = [];
          for (const [a, b] of inParent) {
            const swapped = withoutWpMarkers(fd, pid, untouched(PAGE_IS.SWAPPED, a, b));
            same = union(same, union(untouched(PAGE_IS.PRESENT, a, b), swapped));
          }
        }
        for (const [a, b] of written) out.want.push({ vaddr: a, nrPages: Number((b - a) / PAGE), flags: PE_PRESENT });
        for (const [a, b] of same) out.fromParent.push({ vaddr: a, nrPages: Number((b - a) / PAGE), flags: PE_PARENT });
        out.trackedPages += Number((v.end - v.start) / PAGE);
      }
    } finally {
      closeFd(fd);
    }
    log.info(
      `process ${pid}: tracked memory: ${count(out.want)} pages written since the previous dump, ${count(out.fromParent)} taken from it, ${out.untracked.length} VMA(s) not tracked`
    );
    return out;
  }

  /**
   * At the end of the frozen period, with the process's pages already read: arm tracking (or
   * re-arm it: write-protect again what was written) and record it in this dump's directory.
   */
  arm(pid: number, vpid: number, tid: number, mem: RemoteMem, vmas: DumpedVma[]) {
    if (off()) return this.disarm(pid, tid, mem);
    let rec = this.live.get(pid);
    const inj = Injector.dump(tid, Injector.findSyscallInsn(pid, getRegs(tid), mem), mem);
    let made = -1;
    try {
      if (!rec) {
        const u = Number(inj.call(NR.userfaultfd, O.CLOEXEC | O.NONBLOCK | UFFD_USER_MODE_ONLY));
        if (u < 0) throw new Error(`userfaultfd: ${errnoText(-u)}`);
        made = u;
        inj.withScratch(24, (a) => {
          mem.write(
            a,
            new Uint8Array(new BigUint64Array([BigInt(UFFD_API), BigInt(UFFD_FEATURE.WP_ASYNC), 0n]).buffer)
          );
          const r = inj.call(NR.ioctl, u, UFFDIO_API, a);
          if (r !== 0n) throw new Error(`UFFDIO_API with WP_ASYNC: ${errnoText(Number(-r))}`);
        });
        // a high number, so the process's own next open() gets the number it would have had
        const soft = nofileSoft(pid);
        const high = Number(inj.call(NR.fcntl, u, F.DUPFD_CLOEXEC, Math.max(64, Math.floor(soft / 2))));
        const fd = high >= 0 ? high : u;
        if (high >= 0) {
          inj.call(NR.close, u);
          made = high;
        }
        rec = { pid, startTime: String(readStat(pid).startTime), fd, ino: statSync(`/proc/${pid}/fd/${fd}`).ino };
        log.debug(`process ${pid}: userfaultfd ${fd} made for memory tracking`);
      }
      // the VMAs registered already (by an earlier pre-dump: PAGEMAP_SCAN with CHECK_WPASYNC takes
      // them, refuses the others; smaps's VmFlags would tell too, but reading smaps walks every page
      // table) and those registered now: all are protected
      const pm = openFd(`/proc/${pid}/pagemap`, O.RDONLY | O.CLOEXEC);
      let n = 0;
      try {
        const sc = new PagemapScanner(pm);
        const tracked = vmas.filter((v) => trackable(v));
        const registered = (v: DumpedVma) =>
          sc.scan(v.start, v.start + PAGE, {
            flags: PM_SCAN.CHECK_WPASYNC,
            mask: PAGE_IS.WRITTEN,
            ret: PAGE_IS.WRITTEN,
          }) !== -1;
        const protect: [bigint, bigint][] = [];
        for (const v of tracked) {
          if (registered(v)) {
            protect.push([v.start, v.end]);
            continue;
          }
          const ok = inj.withScratch(32, (a) => {
            mem.write(
              a,
              new Uint8Array(new BigUint64Array([v.start, v.end - v.start, BigInt(UFFDIO_REGISTER_MODE.WP), 0n]).buffer)
            );
            return inj.call(NR.ioctl, rec!.fd, UFFDIO_REGISTER, a);
          });
          if (ok === 0n) {
            n++;
            protect.push([v.start, v.end]);
          } else log.debug(`process ${pid}: ${vmaName(v)} not tracked (UFFDIO_REGISTER: ${errnoText(Number(-ok))})`);
        }
        // write-protect every page of the registered VMAs: from now on a write marks a page
        for (const [a, b] of protect) {
          scanRuns(sc, pid, a, b, {
            flags: PM_SCAN.WP_MATCHING | PM_SCAN.CHECK_WPASYNC,
            mask: PAGE_IS.WRITTEN,
            ret: PAGE_IS.WRITTEN,
          });
        }
      } finally {
        closeFd(pm);
      }
      writeRecord(this.dir, vpid, rec);
      log.info(`process ${pid}: memory tracking armed (userfaultfd ${rec.fd}, ${n} VMA(s) newly registered)`);
      made = -1;
    } catch (e) {
      // tracking is an optimisation: the dump stands, the next one compares contents
      log.warn(`process ${pid}: memory tracking not armed: ${errorMessage(e)}`);
      if (made >= 0) inj.call(NR.close, made);
    } finally {
      inj.restore();
    }
  }

  /** A dump that does not re-arm: the tracking fd goes from a process that lives on. */
  disarm(pid: number, tid: number, mem: RemoteMem) {
    const rec = this.live.get(pid);
    if (!rec) return;
    const inj = Injector.dump(tid, Injector.findSyscallInsn(pid, getRegs(tid), mem), mem);
    try {
      inj.call(NR.close, rec.fd);
    } finally {
      inj.restore();
    }
    log.debug(`process ${pid}: memory tracking ended (userfaultfd ${rec.fd} closed)`);
  }
}

/** Why a tracking record no longer names a live userfaultfd of criu-bun's in process pid ("" if it does). */
function staleRecord(pid: number, rec: Record): string {
  try {
    if (String(readStat(pid).startTime) !== rec.startTime) return "another process has the pid";
    if (!readLink(`/proc/${pid}/fd/${rec.fd}`).includes("userfaultfd")) return `fd ${rec.fd} is no userfaultfd`;
    if (statSync(`/proc/${pid}/fd/${rec.fd}`).ino !== rec.ino) return `fd ${rec.fd} is another userfaultfd`;
  } catch {
    return `fd ${rec.fd} is closed`;
  }
  return "";
}

/**
 * End the tracking a pre-dump left in the processes it recorded in dir (memtrack-*.json), without
 * dumping: each process still holding that very userfaultfd is stopped for a moment, the fd closed
 * in it, and let go. For a migration that failed after its pre-copy rounds: the source goes on as
 * it was before them. Best effort: what cannot be ended is logged.
 */
export function dropTracking(dir: string) {
  let files: string[] = [];
  try {
    files = readdirSync(dir).filter((f) => /^memtrack-\d+\.json$/.test(f));
  } catch {
    return;
  }
  for (const f of files) {
    let rec: Record;
    try {
      rec = JSON.parse(readFileSync(join(dir, f), "utf8"));
    } catch {
      continue;
    }
    if (!Number.isInteger(rec.pid) || !Number.isInteger(rec.fd) || staleRecord(rec.pid, rec)) continue;
    try {
      const fp = freezeProcess(rec.pid, 10000);
      const mem = new RemoteMem(rec.pid);
      try {
        if (!staleRecord(rec.pid, rec)) {
          // again, now that it is stopped
          const tid = fp.threads[0].tid;
          const inj = Injector.dump(tid, Injector.findSyscallInsn(rec.pid, getRegs(tid), mem), mem);
          try {
            inj.call(NR.close, rec.fd);
          } finally {
            inj.restore();
          }
          log.info(`process ${rec.pid}: memory tracking ended (userfaultfd ${rec.fd} closed)`);
        }
      } finally {
        mem.close();
        releaseProcess(fp);
      }
    } catch (e) {
      log.warn(`process ${rec.pid}: memory tracking could not be ended: ${errorMessage(e)}`);
    }
  }
}

/** [start, end) regions of one PAGEMAP_SCAN query over [start, end); null if the VMA is not tracked (EPERM). */
function scanRuns(
  sc: PagemapScanner,
  pid: number,
  start: bigint,
  end: bigint,
  q: Parameters<PagemapScanner["scan"]>[2]
): [bigint, bigint][] | null {
  return scanSplit(sc, pid, start, end, 0, q)?.without ?? null; // (no bit: every region is "without")
}

/**
 * The regions of PAGEMAP_SCAN queries over [start, end), parted by one category bit: those that have
 * it and those that do not (each list sorted, neighbours joined); null where the VMA is not
 * registered (EPERM: not tracked).
 */
function scanSplit(
  sc: PagemapScanner,
  pid: number,
  start: bigint,
  end: bigint,
  bit: number,
  q: Parameters<PagemapScanner["scan"]>[2]
): { with: [bigint, bigint][]; without: [bigint, bigint][] } | null {
  const out = { with: [] as [bigint, bigint][], without: [] as [bigint, bigint][] };
  const b64 = BigInt(bit);
  const regions = sc.walk(start, end, q, `process ${pid}`);
  if (!Array.isArray(regions)) {
    if (regions.errno === 1 /* EPERM: not registered with async write-protect */) return null;
    throw new Error(`PAGEMAP_SCAN of process ${pid} at 0x${regions.at.toString(16)}: ${errnoText(regions.errno)}`);
  }
  for (const { a, b, cat } of regions) {
    const list = cat & b64 ? out.with : out.without;
    const last = list[list.length - 1];
    if (last && last[1] === a) last[1] = b;
    else list.push([a, b]);
  }
  return out;
}

/** The address ranges whose pages the parent images hold (stored there, or in its own parents). */
function parentCoverage(parentDir: string, vpid: number): [bigint, bigint][] {
  const out: [bigint, bigint][] = [];
  // a parent dumped through a page server keeps what it sent in sent-pagemap-N.img (its pages are on the server's side)
  const file =
    !existsSync(join(parentDir, `pagemap-${vpid}.img`)) && existsSync(join(parentDir, `sent-pagemap-${vpid}.img`))
      ? `sent-pagemap-${vpid}.img`
      : `pagemap-${vpid}.img`;
  for (const r of decodePagemap(parentDir, file).runs) {
    if (!(r.flags & (PE_PRESENT | PE_PARENT))) continue;
    const a = r.vaddr,
      b = r.vaddr + BigInt(r.nrPages) * PAGE;
    const last = out[out.length - 1];
    if (last && last[1] === a) last[1] = b;
    else out.push([a, b]);
  }
  return out.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
}

/**
 * What tracking covers: private anonymous memory, and private file mappings that are not executable
 * (data, relocations: the pages a process copies on write; text stays untracked, its pages are the
 * file's, and pagesToDump finds any that is not). A file mapping needs UFFD_FEATURE_WP_ASYNC (which
 * takes any memory in write-protect mode); its pages not there get write-protect markers.
 */
function trackable(v: DumpedVma): "anon" | "file" | undefined {
  if (v.status & (VMA.VDSO | VMA.VVAR | VMA.VSYSCALL)) return undefined;
  if (v.status & VMA.ANON_PRIVATE) return "anon";
  if (v.status & VMA.FILE_PRIVATE && v.prot & 3 && !(v.prot & 4)) return "file";
  return undefined;
}

/** The parts of sorted disjoint ranges within [a, b) (a binary search for the first). */
function clip(ranges: [bigint, bigint][], a: bigint, b: bigint): [bigint, bigint][] {
  const out: [bigint, bigint][] = [];
  for (let i = firstEndAfter(ranges, a); i < ranges.length && ranges[i][0] < b; i++)
    out.push([ranges[i][0] > a ? ranges[i][0] : a, ranges[i][1] < b ? ranges[i][1] : b]);
  return out;
}

/** Union of two sorted lists of disjoint ranges. */
function union(a: [bigint, bigint][], b: [bigint, bigint][]): [bigint, bigint][] {
  const all = [...a, ...b].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  const out: [bigint, bigint][] = [];
  for (const [x, y] of all) {
    const last = out[out.length - 1];
    if (last && x <= last[1]) {
      if (y > last[1]) last[1] = y;
    } else out.push([x, y]);
  }
  return out;
}

/** Intersection of two sorted lists of disjoint ranges. */
function intersect(a: [bigint, bigint][], b: [bigint, bigint][]): [bigint, bigint][] {
  const out: [bigint, bigint][] = [];
  let i = 0,
    j = 0;
  while (i < a.length && j < b.length) {
    const lo = a[i][0] > b[j][0] ? a[i][0] : b[j][0],
      hi = a[i][1] < b[j][1] ? a[i][1] : b[j][1];
    if (lo < hi) out.push([lo, hi]);
    if (a[i][1] < b[j][1]) i++;
    else j++;
  }
  return out;
}

/** CRIU_BUN_MEMTRACK=off: compare page contents instead (tracking already in a process is ended) */
const off = () => process.env.CRIU_BUN_MEMTRACK === "off";
const count = (runs: { nrPages: number }[]) => runs.reduce((s, r) => s + r.nrPages, 0);
const vmaName = (v: DumpedVma) => `VMA 0x${v.start.toString(16)}-0x${v.end.toString(16)}`;

function nofileSoft(pid: number): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, "latin1"));
  return m && m[1] !== "unlimited" ? Number(m[1]) : 1024;
}

/** The record, written 0600 without following a link, as this dump's own file. */
function writeRecord(dir: string, vpid: number, rec: Record) {
  const fd = openSync(
    join(dir, recordName(vpid)),
    FS.O_WRONLY | FS.O_CREAT | FS.O_TRUNC | FS.O_NOFOLLOW | O.CLOEXEC,
    0o600
  );
  try {
    if (!fstatSync(fd).isFile()) throw new Error(`${recordName(vpid)} is not a regular file`);
    writeSync(fd, JSON.stringify(rec) + "\n");
  } finally {
    closeSync(fd);
  }
}
