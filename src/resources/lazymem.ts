// Lazy pages (post-copy), the process's side: which memory a `dump --lazy-pages` leaves with the
// source, and, on `restore --lazy-pages`, the userfaultfd that lets the process run before that
// memory has arrived. The pages travel between the dump (src/net/pageserver.ts, serveLazyPages)
// and the lazy-pages daemon (src/restore/lazy-daemon.ts), which resolves the faults.
//
// Dump: private anonymous memory (not the vDSO/vvar/vsyscall, not mlock()ed, as CRIU decides) is
// not read; its pagemap runs carry PE_LAZY alone, as CRIU writes them. Restore: those VMAs are
// mapped empty, and once every process of the tree exists each one gets a userfaultfd made inside
// it by injected syscalls (UFFDIO_API with the fork/remap/remove/unmap events, UFFDIO_REGISTER in
// missing mode over every VMA that has lazy pages), taken out with pidfd_getfd and closed there:
// the process never sees it. The daemon gets it over the unix socket `lazy-pages.socket` in the
// work directory as CRIU passes it (an int pid, then the fd by SCM_RIGHTS; a zombie's pid negated
// and no fd). Then restore says the tree runs (CRIU's 0x52535446, "RSTF") and waits for the
// daemon's int 0: all memory is there. CRIU 4.2's daemon never answers: it exits once every page is
// in, and restore, seeing the connection end without the 0, checks the memory itself (every lazy
// page still mapped is present or swapped: missingPages). restore keeps its own copy of every
// userfaultfd meanwhile: if the daemon dies, the process's faults keep waiting (no page silently
// reads as zero) until restore kills the tree, with one line.
import { existsSync, lstatSync, realpathSync, readdirSync, readFileSync } from "../sys/fs";
import { wait4Raw, __WALL } from "../sys/ptrace";
import { dirname, join } from "../sys/path";
import { VMA, MAP, PE, PAGE } from "./vma";
import type { DumpedVma } from "./memory";
import { CriuError, log, errorMessage } from "../log";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { O, closeFd, openFd, preadFull } from "../sys/mem";
import { readVmas } from "../sys/proc";
import { RunList, type PagemapTable } from "../images/pagemap";
import { errnoText, SysError, E } from "../sys/errno";
import { UFFDIO_API, UFFDIO_REGISTER, UFFD_API, UFFDIO_REGISTER_MODE, UFFD_LAZY_FEATURES } from "../sys/uffd";
import { sendPacket, recvPacket } from "../sys/seqpacket";
import { AF, SOCK } from "../sys/sock";
import type * as S from "../images/schemas";
import type { InCall } from "../ptrace/inject";

export const LAZY_SOCKET = "lazy-pages.socket";
/** what restore sends the daemon once the tree runs, as CRIU does ("RSTF") */
export const RESTORE_FINISHED = 0x52535446;

// ---- dump -----------------------------------------------------------------------------------------

/** Memory whose pages a lazy dump leaves with the source (CRIU's vma_entry_can_be_lazy). */
export function canBeLazy(v: { status: number; flags: number }): boolean {
  return (
    (v.status & VMA.ANON_PRIVATE) !== 0 &&
    (v.flags & MAP.PRIVATE) !== 0 &&
    !(v.flags & MAP.LOCKED) &&
    !(v.status & (VMA.VDSO | VMA.VVAR | VMA.VSYSCALL | VMA.AIORING))
  );
}

/** Split the VMAs: those read now, and those whose pages stay with the source. */
export function splitLazy(vmas: DumpedVma[]): { eager: DumpedVma[]; lazy: DumpedVma[] } {
  const eager: DumpedVma[] = [],
    lazy: DumpedVma[] = [];
  for (const v of vmas) (canBeLazy(v) ? lazy : eager).push(v);
  return { eager, lazy };
}

/**
 * Cuts sorted runs where the sorted VMAs begin and end (a cursor over the VMAs, kept from run to
 * run): each piece says whether the VMA holding it can be lazy (no VMA: no).
 */
class VmaCutter {
  private i = 0;
  constructor(private readonly vmas: { start: bigint; end: bigint; status: number; flags: number }[]) {}
  cut(vaddr: bigint, nrPages: number, piece: (vaddr: bigint, nrPages: number, lazy: boolean) => void) {
    const vmas = this.vmas,
      end = vaddr + BigInt(nrPages * PAGE);
    for (let a = vaddr; a < end; ) {
      while (this.i < vmas.length && vmas[this.i].end <= a) this.i++;
      const i = this.i,
        v = i < vmas.length && vmas[i].start <= a ? vmas[i] : undefined;
      // up to the end of the VMA holding a (or to the next VMA / the run's end outside any)
      const stop = v ? (v.end < end ? v.end : end) : i < vmas.length && vmas[i].start < end ? vmas[i].start : end;
      piece(a, Number((stop - a) / BigInt(PAGE)), !!v && canBeLazy(v));
      a = stop;
    }
  }
}

/**
 * Runs to read (sorted), split where the VMAs (sorted) that may be lazy begin and end: the pages a
 * post-copy from the source leaves with the frozen tree (migrate's final round), and the others.
 */
export function splitRunsLazy<R extends { vaddr: bigint; nrPages: number; flags: number }>(
  runs: R[],
  vmas: { start: bigint; end: bigint; status: number; flags: number }[]
): { eager: R[]; lazy: R[] } {
  const eager: R[] = [],
    lazy: R[] = [];
  const c = new VmaCutter(vmas);
  for (const r of runs)
    c.cut(r.vaddr, r.nrPages, (vaddr, nrPages, l) => (l ? lazy : eager).push({ ...r, vaddr, nrPages }));
  return { eager, lazy };
}

/**
 * The pieces of SPLIT's lazy runs that hold one of PAGES (addresses, any byte of the page) moved to
 * its eager runs (both stay by address): memory the restore's own syscalls touch before the tree
 * runs (a thread's rseq area, which its registration writes) is sent with the state instead of
 * faulting in from the frozen source in the middle of the restore.
 */
export function keepEager<R extends { vaddr: bigint; nrPages: number; flags: number }>(
  split: { eager: R[]; lazy: R[] },
  pages: bigint[]
): { eager: R[]; lazy: R[] } {
  const P = BigInt(PAGE);
  const want = [...new Set(pages.map((p) => p & ~(P - 1n)))].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  if (!want.length) return split;
  const lazy: R[] = [],
    moved: R[] = [];
  for (const r of split.lazy) {
    let a = r.vaddr;
    const end = r.vaddr + BigInt(r.nrPages) * P;
    for (const p of want) {
      if (p < a || p >= end) continue;
      if (p > a) lazy.push({ ...r, vaddr: a, nrPages: Number((p - a) / P) });
      moved.push({ ...r, vaddr: p, nrPages: 1 });
      a = p + P;
    }
    if (a < end) lazy.push({ ...r, vaddr: a, nrPages: Number((end - a) / P) });
  }
  if (!moved.length) return split;
  return {
    eager: [...split.eager, ...moved].sort((x, y) => (x.vaddr < y.vaddr ? -1 : x.vaddr > y.vaddr ? 1 : 0)),
    lazy,
  };
}

/**
 * Present pages of memory that may be lazy get PE_LAZY too, as CRIU marks them in every dump: its
 * `restore --lazy-pages` (with a lazy-pages daemon reading these images) leaves exactly those pages to
 * the daemon and restores the others itself; without the mark it takes none lazily. A run that
 * spans VMAs of both kinds is split where they meet. criu-bun's own restore reads them as present.
 */
export function markLazy(
  runs: Iterable<{ vaddr: bigint; nrPages: number; flags: number }>,
  vmas: { start: bigint; end: bigint; status: number; flags: number }[]
): { vaddr: bigint; nrPages: number; flags: number }[] {
  const out: { vaddr: bigint; nrPages: number; flags: number }[] = [];
  const c = new VmaCutter(vmas);
  for (const r of runs) {
    if (!(r.flags & PE.PRESENT) || r.flags & PE.LAZY) {
      out.push(r);
      continue;
    }
    c.cut(r.vaddr, r.nrPages, (vaddr, nrPages, l) =>
      out.push({ vaddr, nrPages, flags: l ? r.flags | PE.LAZY : r.flags })
    );
  }
  return out;
}

/**
 * markLazy on a RunList, into a RunList (or straight into the pagemap image: PagemapWriter): the
 * same runs and flags, computed on numbers (user addresses fit a double exactly) without an object
 * or a BigInt per run. A dump of a GiB of
 * fragmented memory has tens of thousands of runs: markLazy's objects cost a tenth of a second.
 */
type RunSink = { push(vaddr: number, nrPages: number, flags: number): void };
export function markLazyList(
  runs: RunList,
  vmas: { start: bigint; end: bigint; status: number; flags: number }[]
): RunList;
export function markLazyList<T extends RunSink>(
  runs: RunList,
  vmas: { start: bigint; end: bigint; status: number; flags: number }[],
  out: T
): T;
export function markLazyList(
  runs: RunList,
  vmas: { start: bigint; end: bigint; status: number; flags: number }[],
  out: RunSink = new RunList()
): RunSink {
  const vs = vmas.map((v) => ({ start: Number(v.start), end: Number(v.end), lazy: canBeLazy(v) }));
  let i = 0;
  for (let k = 0; k < runs.length; k++) {
    const flags = runs.flagsAt(k),
      va = runs.vaddrAt(k),
      n = runs.pagesAt(k);
    if (!(flags & PE.PRESENT) || flags & PE.LAZY) {
      out.push(va, n, flags);
      continue;
    }
    const end = va + n * PAGE;
    for (let a = va; a < end; ) {
      while (i < vs.length && vs[i].end <= a) i++;
      const v = i < vs.length && vs[i].start <= a ? vs[i] : undefined;
      const stop = v ? (v.end < end ? v.end : end) : i < vs.length && vs[i].start < end ? vs[i].start : end;
      out.push(a, (stop - a) / PAGE, v && v.lazy ? flags | PE.LAZY : flags);
      a = stop;
    }
  }
  return out;
}

// ---- restore --------------------------------------------------------------------------------------

type Run = { vaddr: bigint; nrPages: number; flags: number };
const lazyOnly = (r: Run) => (r.flags & PE.LAZY) !== 0 && !(r.flags & (PE.PRESENT | PE.PARENT));

/** Whether a process's pagemap leaves pages with the source. */
export const hasLazyPages = (pagemap: PagemapTable) => pagemap.some(PE.LAZY, PE.PRESENT | PE.PARENT);

/**
 * Post-copy from the restoring side's own images (migrate's default final step): the runs of a
 * process's pagemap that the images hold (PE_PRESENT: the final round's; PE_PARENT: the pre-copy
 * rounds') inside memory that can be lazy, each clipped to one such VMA. `restore` with
 * lazyParents leaves them out and registers their VMAs; the lazy-pages daemon serving from the
 * images (no --page-server) copies them in. Both sides compute them with this one function from
 * the same images.
 */
export function lazyParentRuns(
  vmas: { start: bigint; end: bigint; status: number; flags: number }[],
  pagemap: Run[]
): Run[] {
  const out: Run[] = [];
  let vi = 0;
  for (const r of pagemap) {
    if (!(r.flags & (PE.PARENT | PE.PRESENT))) continue;
    const end = r.vaddr + BigInt(r.nrPages * PAGE);
    while (vi < vmas.length && vmas[vi].end <= r.vaddr) vi++;
    for (let k = vi; k < vmas.length && vmas[k].start < end; k++) {
      const v = vmas[k];
      if (!canBeLazy(v)) continue;
      const a = r.vaddr > v.start ? r.vaddr : v.start,
        b = end < v.end ? end : v.end;
      if (a < b) out.push({ vaddr: a, nrPages: Number((b - a) / BigInt(PAGE)), flags: r.flags });
    }
  }
  return out;
}

/** The PE_PARENT runs minus lazyParentRuns: what a lazyParents restore writes itself. stored: the
 *  PE_PRESENT runs too (the pages these images hold that such a restore from a child of them may ask for). */
export function eagerParentRuns(
  vmas: { start: bigint; end: bigint; status: number; flags: number }[],
  pagemap: Run[],
  stored = false
): Run[] {
  const out: Run[] = [];
  let vi = 0;
  for (const r of pagemap) {
    if (stored ? !(r.flags & (PE.PARENT | PE.PRESENT)) : !(r.flags & PE.PARENT) || r.flags & PE.PRESENT) continue;
    while (vi < vmas.length && vmas[vi].end <= r.vaddr) vi++;
    // (the common case, a run inside one VMA of lazy memory: nothing to write, no BigInt made)
    if (vi < vmas.length && vmas[vi].start <= r.vaddr && canBeLazy(vmas[vi])) {
      if (Number(r.vaddr) + r.nrPages * PAGE <= Number(vmas[vi].end)) continue;
    }
    const end = r.vaddr + BigInt(r.nrPages * PAGE);
    for (let a = r.vaddr, k = vi; a < end; ) {
      while (k < vmas.length && vmas[k].end <= a) k++;
      const v = vmas[k];
      const inside = !!v && v.start <= a;
      const b = inside ? (v.end < end ? v.end : end) : v && v.start < end ? v.start : end;
      // not lazy memory (or outside every VMA: validatePagemap refuses that): written by the restore
      if (!inside || !canBeLazy(v)) out.push({ vaddr: a, nrPages: Number((b - a) / BigInt(PAGE)), flags: r.flags });
      a = b;
    }
  }
  return out;
}

/**
 * The VMAs to register: each that holds a lazy run (and, with lazyParents, a run of
 * lazyParentRuns). A lazy run outside such memory is refused
 * (a restore could not get its pages in: only private anonymous memory is registered).
 */
export function lazyRanges(pid: number, vmas: S.vma_entry[], pagemap: Run[], lazyParents = false): [bigint, bigint][] {
  // one walk of the runs (by address, as images hold them) over the VMAs, marking the VMAs to
  // register: no list of pieces built and sorted (a GiB of fragmented memory has tens of thousands
  // of runs: that sort of BigInts took most of a tenth of a second of a migration's frozen window)
  for (let i = 1; i < pagemap.length; i++) {
    if (pagemap[i].vaddr < pagemap[i - 1].vaddr)
      return lazyRanges(
        pid,
        vmas,
        [...pagemap].sort((x, y) => (x.vaddr < y.vaddr ? -1 : 1)),
        lazyParents
      );
  }
  const byStart = [...vmas].sort((x, y) => (x.start < y.start ? -1 : x.start > y.start ? 1 : 0));
  const take = new Uint8Array(byStart.length);
  // addresses in doubles (page-aligned ones are exact there; validatePagemap checked the runs)
  const starts = byStart.map((v) => Number(v.start)),
    ends = byStart.map((v) => Number(v.end));
  let vi = 0;
  for (const r of pagemap) {
    const only = lazyOnly(r),
      parent = lazyParents && (r.flags & (PE.PARENT | PE.PRESENT)) !== 0;
    if (!only && !parent) continue;
    const va = Number(r.vaddr),
      end = va + r.nrPages * PAGE;
    while (vi < byStart.length && ends[vi] <= va) vi++;
    if (only) {
      // a lazy run outside private anonymous memory: its pages could not be brought in
      const v = vi < byStart.length && starts[vi] <= va && end <= ends[vi] ? byStart[vi] : undefined;
      if (!v || !canBeLazy(v)) {
        throw new CriuError(
          "restore",
          `process ${pid}: lazy pages 0x${r.vaddr.toString(16)}-0x${end.toString(16)} are not inside private anonymous memory`
        );
      }
      take[vi] = 1;
    } else {
      // the images' pages of every private anonymous VMA the run overlaps (lazyParentRuns' pieces)
      for (let k = vi; k < byStart.length && starts[k] < end; k++)
        if (canBeLazy(byStart[k]) && ends[k] > va) take[k] = 1;
    }
  }
  const out: [bigint, bigint][] = [];
  for (let k = 0; k < byStart.length; k++) if (take[k]) out.push([byStart[k].start, byStart[k].end]);
  return out;
}

interface UffdTarget {
  /** the process here, and as the images name it */
  pid: number;
  vpid: number;
  call: (nr: number, ...args: (number | bigint)[]) => bigint;
  /** calls that each pass a struct, in as few stops as fit; each call's check sees its result, in order */
  batchData: (calls: InCall[]) => void;
}

/**
 * Make a userfaultfd inside the process, register ranges in missing mode, and take it out: returns
 * criu-bun's own fd of it (the process keeps none).
 */
export function makeUffd(
  t: UffdTarget,
  ranges: [bigint, bigint][],
  o: { features: number; what: string } = { features: UFFD_LAZY_FEATURES, what: "lazy pages" }
): number {
  const what = `process ${t.vpid}: ${o.what}`,
    features = o.features;
  const u = Number(t.call(NR.userfaultfd, O.CLOEXEC | O.NONBLOCK));
  if (u < 0) throw new CriuError("restore", `${what}: userfaultfd failed: ${errnoText(-u)}`);
  try {
    // UFFDIO_API and every range's UFFDIO_REGISTER in one stop of the process
    const calls: InCall[] = [
      {
        nr: NR.ioctl,
        data: [BigInt(UFFD_API), BigInt(features), 0n],
        args: (api) => [u, UFFDIO_API, api],
        check: (r) => {
          if (r !== 0n)
            throw new CriuError(
              "restore",
              features
                ? `${what}: UFFDIO_API with the fork, remap, remove and unmap events failed: ${errnoText(Number(-r))}; see check --feature lazy_pages`
                : `${what}: UFFDIO_API failed: ${errnoText(Number(-r))}`
            );
        },
      },
    ];
    for (const [a, b] of ranges)
      calls.push({
        nr: NR.ioctl,
        data: [a, b - a, BigInt(UFFDIO_REGISTER_MODE.MISSING), 0n],
        args: (reg) => [u, UFFDIO_REGISTER, reg],
        check: (x) => {
          if (x !== 0n)
            throw new CriuError(
              "restore",
              `${what}: UFFDIO_REGISTER of 0x${a.toString(16)}-0x${b.toString(16)} failed: ${errnoText(Number(-x))}`
            );
          log.debug(`${what}: 0x${a.toString(16)}-0x${b.toString(16)} registered (missing mode)`);
        },
      });
    t.batchData(calls);
    const pidfd = syscall(NR.pidfd_open, t.pid, 0);
    if (pidfd < 0) throw new CriuError("restore", `${what}: pidfd_open failed: ${errnoText(-pidfd)}`);
    const fd = syscall(NR.pidfd_getfd, pidfd, u, 0);
    closeFd(pidfd);
    if (fd < 0) throw new CriuError("restore", `${what}: pidfd_getfd of its userfaultfd failed: ${errnoText(-fd)}`);
    return fd;
  } finally {
    t.call(NR.close, u);
  }
}

/** restore's end of the unix socket to the lazy-pages daemon. */
/**
 * The lazy-pages daemon's socket in workDir (the directory itself, not a /proc/self/fd/N alias
 * that goes when restore closes its handle); no daemon there is refused in one line.
 */
export function lazyDaemonSocket(workDir: string): string {
  try {
    workDir = realpathSync(workDir);
  } catch {}
  const path = join(workDir, LAZY_SOCKET);
  if (!existsSync(path))
    throw new CriuError(
      "restore",
      `no lazy-pages daemon: ${path} does not exist (start \`criu-bun lazy-pages --page-server ...\` first)`
    );
  return path;
}

export class LazyChannel {
  private fd: number;
  private held: number[] = [];
  private sent = 0;
  public workDir: string;
  constructor(workDir: string) {
    const path = lazyDaemonSocket(workDir);
    this.workDir = dirname(path);
    const sun = sockaddrUn(path);
    this.fd = syscall(NR.socket, AF.UNIX, SOCK.STREAM | SOCK.CLOEXEC, 0);
    if (this.fd < 0) throw new CriuError("restore", `socket for the lazy-pages daemon failed: ${errnoText(-this.fd)}`);
    const r = syscall(NR.connect, this.fd, addr(sun), sun.length);
    if (r < 0) {
      closeFd(this.fd);
      throw new CriuError("restore", `cannot reach the lazy-pages daemon at ${path}: ${errnoText(-r)}`);
    }
    log.info(`lazy pages: connected to the lazy-pages daemon at ${path}`);
  }

  /** what each process's daemon must bring in (for the check when the daemon ends without its 0) */
  private expected: { pid: number; vpid: number; runs: () => Run[] }[] = [];

  /** One process's userfaultfd to the daemon (CRIU's order: the pid, then the fd); restore keeps its copy. */
  send(vpid: number, uffd: number, pid?: number, pagemap?: Run[], lazyParentsVmas?: S.vma_entry[]) {
    this.held.push(uffd);
    // with lazyParents the daemon brings the images' pages of private anonymous memory too
    // (worked out only if the daemon ends without its 0: not in migrate's frozen window, where a
    // fragmented GiB has a hundred thousand runs)
    if (pid !== undefined && pagemap) {
      const runs = () => {
        const r = pagemap.filter(lazyOnly);
        if (lazyParentsVmas) r.push(...lazyParentRuns(lazyParentsVmas, pagemap));
        return r;
      };
      this.expected.push({ pid, vpid, runs });
    }
    sendPacket(this.fd, new Uint8Array(new Int32Array([vpid]).buffer));
    sendPacket(this.fd, new Uint8Array([0]), uffd);
    this.sent++;
    log.info(`lazy pages: userfaultfd of process ${vpid} handed to the daemon`);
  }
  /** A zombie: its pid negated, no fd (as CRIU). */
  sendZombie(vpid: number) {
    sendPacket(this.fd, new Uint8Array(new Int32Array([-vpid]).buffer));
  }

  /** The tree is restored and runs (CRIU's "ReSTore Finished"): the daemon may finish once all memory is in. */
  released() {
    sendPacket(this.fd, new Uint8Array(new Uint32Array([RESTORE_FINISHED]).buffer));
  }

  /**
   * Wait until all memory is in (true), or not (false: the daemon died or failed). criu-bun's daemon
   * says so (an int 0); CRIU's never answers (its restore sends RSTF and hangs up) and exits once it
   * has brought every page in: when the connection ends without the 0, the memory itself tells
   * (missingPages).
   */
  waitDone(): boolean {
    const got: number[] = [];
    for (;;) {
      let p;
      try {
        p = recvPacket(this.fd, 4);
      } catch (e) {
        log.warn(`lazy pages: ${errorMessage(e)}`);
        // a daemon that died with our last packet unread resets the connection instead of closing it:
        // a hang-up all the same, which the memory itself judges
        if (!(e instanceof SysError && e.errno === E.ECONNRESET)) return false;
        p = { data: new Uint8Array(0), fds: [] as number[] };
      }
      for (const fd of p.fds) closeFd(fd);
      if (!p.data.length) {
        const missing = this.missingPages();
        if (missing) {
          log.info(`lazy pages: the daemon hung up with ${missing} of the restored tree's lazy pages not brought in`);
          return false;
        }
        log.info(
          "lazy pages: the daemon hung up without a word (CRIU's does) and every lazy page of the restored tree is in"
        );
        return true;
      }
      got.push(...p.data);
      if (got.length >= 4) return new Int32Array(new Uint8Array(got.slice(0, 4)).buffer)[0] === 0;
    }
  }

  /**
   * Lazy pages not in memory, once the daemon is gone: each page of each process's lazy runs that is
   * still where it was (in private anonymous memory) must be present or swapped out (pagemap bits
   * 63, 62). Pages the process unmapped or moved since are not counted (the daemon drops them on
   * the unmap and remap events); a page it discarded itself (MADV_DONTNEED) is, so such a restore
   * fails rather than risk running with a page that never came.
   */
  missingPages(): number {
    let missing = 0;
    for (const e of this.expected) {
      if (!existsSync(`/proc/${e.pid}`)) continue; // exited meanwhile: nothing of it runs on
      let vmas;
      try {
        vmas = readVmas(e.pid);
      } catch {
        continue;
      }
      const fd = openFd(`/proc/${e.pid}/pagemap`, O.RDONLY | O.CLOEXEC);
      try {
        for (const r of e.runs()) {
          const end = r.vaddr + BigInt(r.nrPages * PAGE);
          for (const v of vmas) {
            if (v.end <= r.vaddr || v.start >= end || v.shared || v.inode !== 0) continue;
            const a = v.start > r.vaddr ? v.start : r.vaddr,
              b = v.end < end ? v.end : end;
            const n = Number((b - a) / BigInt(PAGE));
            const buf = new Uint8Array(n * 8);
            preadFull(fd, buf, (a / BigInt(PAGE)) * 8n, buf.length, 0, `lazy pages: pagemap of process ${e.pid}`);
            const w = new BigUint64Array(buf.buffer);
            let here = 0;
            for (let i = 0; i < n; i++) if (!(w[i] & (3n << 62n))) here++;
            if (here)
              log.info(
                `lazy pages: process ${e.pid} (${e.vpid} in the images): ${here} page(s) of 0x${a.toString(16)}-0x${b.toString(16)} not in memory`
              );
            missing += here;
          }
        }
      } finally {
        closeFd(fd);
      }
    }
    return missing;
  }

  close() {
    for (const fd of this.held.splice(0)) closeFd(fd);
    if (this.fd >= 0) {
      closeFd(this.fd);
      this.fd = -1;
    }
  }

  /** A daemon that died (killed) leaves its socket file: removed when nothing listens there any more. */
  removeStaleSocket() {
    const path = join(this.workDir, LAZY_SOCKET),
      sun = sockaddrUn(path);
    // a daemon being killed closes its connection before its listener: give it a second to go
    for (let i = 0; i < 50; i++) {
      const fd = syscall(NR.socket, AF.UNIX, SOCK.STREAM | SOCK.CLOEXEC, 0);
      const r = syscall(NR.connect, fd, addr(sun), sun.length);
      closeFd(fd);
      if (r === -111 /* ECONNREFUSED: no one listens */) {
        try {
          clearStaleSocket(path);
          log.info(`lazy pages: removed the dead daemon's ${path}`);
        } catch {}
        return;
      }
      if (r < 0) return; // gone already (or not ours to judge)
      Bun.sleepSync(20);
    }
  }
}

/** struct sockaddr_un for path (refused when too long, as the kernel would truncate it). */
export function sockaddrUn(path: string): Uint8Array {
  const p = new TextEncoder().encode(path);
  if (p.length > 107)
    throw new CriuError(
      "lazy-pages",
      `${path}: the unix socket path is longer than 107 bytes; use a shorter work directory (-W)`
    );
  const b = new Uint8Array(2 + p.length + 1);
  new DataView(b.buffer).setUint16(0, AF.UNIX, true);
  b.set(p, 2);
  return b;
}

/** A stale socket file of an earlier daemon is removed; anything else at that path is refused. */
export function clearStaleSocket(path: string) {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new CriuError("lazy-pages", `${path} exists and is not a socket`);
  syscall(NR.unlink, addr(new TextEncoder().encode(path + "\0")));
}

/**
 * A lazy restore runs before its memory is all there: wait (with or without -d) until the daemon
 * says it is. If the daemon goes first, the tree must not run on with memory missing: it is killed.
 */
export function awaitLazyMemory(lazy: LazyChannel, pids: number[], root: number, parent: boolean) {
  try {
    if (lazy.waitDone()) {
      log.info("lazy pages: all memory of the restored tree is in");
      return;
    }
    // the tree and whatever it forked since
    const all = new Set<number>();
    const walk = (p: number) => {
      if (all.has(p)) return;
      all.add(p);
      let tids: string[] = [];
      try {
        tids = readdirSync(`/proc/${p}/task`);
      } catch {
        return;
      }
      for (const t of tids) {
        let kids = "";
        try {
          kids = readFileSync(`/proc/${p}/task/${t}/children`, "latin1");
        } catch {
          continue;
        }
        for (const k of kids.split(" ").filter(Boolean)) walk(Number(k));
      }
    };
    for (const p of pids) walk(p);
    for (const p of all) syscall(NR.kill, p, 9);
    lazy.removeStaleSocket();
    if (parent)
      for (;;) {
        const { r } = wait4Raw(-1, __WALL);
        if (r === -4) continue;
        if (r < 0) break;
      }
    throw new CriuError(
      "restore",
      `the lazy-pages daemon went away before the restored memory was all in; the restored tree (root ${root}, ${all.size} process(es)) was killed`
    );
  } finally {
    lazy.close();
  }
}
