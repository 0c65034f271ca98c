// `criu-bun lazy-pages --page-server --address A --port P -D DIR`: the daemon of a lazy restore.
//
// It listens on DIR's (or -W's) lazy-pages.socket for `restore --lazy-pages`, which hands it one
// userfaultfd per restored process (src/resources/lazymem.ts), and gets the pages from the dump
// serving them (`dump --lazy-pages`, CRIU's or criu-bun's: PS_IOV_GET, src/net/pageserver.ts).
// Without --page-server (migrate's post-copy, src/migrate/migrate.ts) the pages come from the images in
// DIR itself: the pages of private anonymous memory that DIR's parent images hold
// (lazymem.ts lazyParentRuns), which `restore --lazy-pages` with lazyParents left out.
// With both (migrate's post-copy from the source: sourceFd, a connection the source opened), the
// images' pages come from the images and the final round's PE_LAZY runs from the frozen source,
// those first; once they are all in the source is told (PS_IOV_CLOSE) and may go.
// A fault is answered first (the faulting page and up to 15 lazy pages after it; from the images,
// the 256 pending pages around it: they cost the same block read); between faults
// the rest streams in 1 MiB pieces once the tree runs (before, the restore has the CPU) (at most CRIU_BUN_LAZY_RATE MiB/s when set). Pages of a
// registered VMA that the dump did not hold read as zero (UFFDIO_ZEROPAGE). The events follow the
// process: fork (the child's missing pages are the parent's), mremap (pending pages move), munmap
// and MADV_DONTNEED/REMOVE (those pages are no longer wanted). When every process's pages are in
// and the restore said the tree runs, it sends PS_IOV_CLOSE (the dump then kills the source),
// tells the restore (an int 0) and exits.
import { join } from "../sys/path";
import { CriuError, log } from "../log";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { closeFd } from "../sys/mem";
import { AF, SOCK } from "../sys/sock";
import { errnoText, sysFailed } from "../sys/errno";
import { recvPacket, sendPacket } from "../sys/seqpacket";
import { readUffdMsgs, uffdCopy, uffdZero, uffdWake, UFFD_EVENT } from "../sys/uffd";
import { decodePagemap } from "../images/pagemap";
import { LazyPagesClient } from "../net/pageserver";
import { LAZY_SOCKET, RESTORE_FINISHED, sockaddrUn, clearStaleSocket, lazyParentRuns } from "../resources/lazymem";
import { PageSource } from "../codec/incremental";
import { readImage } from "../images/image";
import { PE, PAGE, firstEndAfter } from "../resources/vma";

const P = BigInt(PAGE);
const FAULT_PAGES = 16,
  STREAM_PAGES = 256;

/** One restored process: its userfaultfd and the lazy pages it has not got yet (sorted, disjoint). */
/** [start, end) of pending pages here, off: where the dump holds them is start + off (mremap moves
 * them), and whether they come from the source (1: post-copy from the frozen source) or the images (0) */
type Rng = [bigint, bigint, bigint, number];
/** pending: from the images (or the dump's page server); rpending: from the source (post-copy from
 * it: taken first). Each sorted and disjoint: thousands of scattered single pages are usual, so
 * every lookup is a binary search, never a walk of the list. */
interface Lpi {
  vpid: number;
  src: number;
  fd: number;
  pending: Rng[];
  rpending: Rng[];
  total: number;
}
const anyPending = (l: Lpi) => l.pending.length > 0 || l.rpending.length > 0;

interface LazyDaemonOptions {
  /** address and port of the dump serving the pages; none: the images in dir hold them */
  dir: string;
  workDir: string;
  address?: string;
  port?: number;
  timeoutSec: number;
  onListening?: () => void;
  /** an fd whose end (EOF or hang-up) while no restore has come means the caller is gone: give up */
  watchFd?: number;
  /**
   * with the images (no address): a connection to the frozen source serving the pages the images
   * leave with it (PE_LAZY alone: migrate's final round, post-copy from the source). Those are
   * taken first; once all are in the source is told (PS_IOV_CLOSE) and may go.
   */
  sourceFd?: number;
}

/** Where the daemon gets pages: the dump's page server, or the images. */
interface PageGetter {
  /** up to nrPages pages of process pid from vaddr into buf; how many it got (at least one) */
  get(pid: number, vaddr: bigint, nrPages: number, buf: Uint8Array, fault?: boolean): number;
  close(): void;
  drop(): void;
}

/** The pages of DIR's images (following its parents), per process as the images name it. */
class ImagePages implements PageGetter {
  /** per process: one reader for the background stream (in address order, its cached block
   * read through) and one for faults (anywhere), so that faults do not evict the stream's block */
  private srcs = new Map<string, PageSource>();
  constructor(private dir: string) {}
  get(pid: number, vaddr: bigint, nrPages: number, buf: Uint8Array, fault = false): number {
    const key = `${pid}${fault ? "f" : "s"}`;
    let s = this.srcs.get(key);
    if (!s) {
      const o = PageSource.open(this.dir, pid);
      if (!o) throw new CriuError("lazy-pages", `${this.dir} has no pagemap-${pid}.img`);
      this.srcs.set(key, (s = o));
    }
    let n = 0;
    while (n < nrPages) {
      const got = s.readSpan(vaddr + BigInt(n) * P, nrPages - n, buf, n * PAGE);
      if (!got) break;
      n += got;
    }
    if (!n)
      throw new CriuError(
        "lazy-pages",
        `process ${pid}: page 0x${vaddr.toString(16)} is in none of the images of ${this.dir}`
      );
    return n;
  }
  close() {
    for (const s of this.srcs.values()) s.close();
    this.srcs.clear();
  }
  drop() {
    this.close();
  }
}

export function runLazyDaemon(o: LazyDaemonOptions): { served: number; total: number } {
  const path = join(o.workDir, LAZY_SOCKET);
  const sun = sockaddrUn(path);
  // a daemon already there is not replaced; a stale socket file is
  const probe = syscall(NR.socket, AF.UNIX, SOCK.STREAM | SOCK.CLOEXEC, 0);
  const busy = syscall(NR.connect, probe, addr(sun), sun.length) === 0;
  closeFd(probe);
  if (busy) throw new CriuError("lazy-pages", `a lazy-pages daemon already listens at ${path}`);
  clearStaleSocket(path);
  const local = o.address === undefined;
  const ps: PageGetter = local ? new ImagePages(o.dir) : new LazyPagesClient(o.address!, o.port!, o.timeoutSec);
  let remote: LazyPagesClient | undefined =
    local && o.sourceFd !== undefined ? new LazyPagesClient("source", 0, o.timeoutSec, o.sourceFd) : undefined;
  /** pages taken from the source */
  let fromSource = 0;
  const ls = syscall(NR.socket, AF.UNIX, SOCK.STREAM | SOCK.CLOEXEC, 0);
  let conn = -1;
  const lpis: Lpi[] = [];
  let served = 0,
    total = 0,
    ok = false;
  const rate = Number(process.env.CRIU_BUN_LAZY_RATE ?? 0); // MiB/s of background streaming, 0: no limit
  try {
    const old = process.umask(0o177); // the socket file: 0600
    const r = syscall(NR.bind, ls, addr(sun), sun.length);
    process.umask(old);
    if (r < 0) throw new CriuError("lazy-pages", `cannot listen on ${path}: ${errnoText(-r)}`);
    const l = syscall(NR.listen, ls, 1);
    if (l < 0) throw new CriuError("lazy-pages", sysFailed("", `listen on ${path}`, l));
    log.info(`lazy-pages: waiting for restore --lazy-pages at ${path}`);
    o.onListening?.();
    if (o.watchFd !== undefined) {
      // wait for the restore, or for the caller (migrate --listen) to go away without one
      const pfd = new Int32Array([ls, 1, o.watchFd, 1]);
      for (;;) {
        const n = syscall(NR.poll, addr(pfd), 2, -1);
        if (n === -4) continue;
        if (n < 0) throw new CriuError("lazy-pages", `poll failed: ${errnoText(-n)}`);
        if ((pfd[1] >>> 16) & 1) break;
        if (pfd[3] >>> 16) throw new CriuError("lazy-pages", "the caller went away before any restore came");
      }
    }
    for (;;) {
      conn = syscall(NR.accept4, ls, 0, 0, SOCK.CLOEXEC);
      if (conn !== -4) break;
    }
    if (conn < 0) throw new CriuError("lazy-pages", `accept on ${path} failed: ${errnoText(-conn)}`);
    log.info("lazy-pages: restore connected");

    let inbuf: number[] = [];
    const fdq: number[] = [];
    let released = false,
      restoreOpen = true;
    const buf = new Uint8Array(STREAM_PAGES * PAGE),
      msgBuf = new Uint8Array(32 * 64);
    let streamed = 0,
      t0 = 0;
    let lastLog = 0;

    const takeFromRestore = () => {
      const p = recvPacket(conn, 64);
      fdq.push(...p.fds);
      if (!p.data.length) {
        restoreOpen = false;
        return;
      }
      inbuf.push(...p.data);
      while (inbuf.length >= 4) {
        const pid = new Int32Array(new Uint8Array(inbuf.slice(0, 4)).buffer)[0];
        if (pid === RESTORE_FINISHED) {
          released = true;
          inbuf = inbuf.slice(4);
          log.info("lazy-pages: the restored tree runs");
          continue;
        }
        if (pid < 0) {
          inbuf = inbuf.slice(4);
          log.info(`lazy-pages: process ${-pid} is a zombie`);
          continue;
        }
        if (inbuf.length < 5 || !fdq.length) break;
        inbuf = inbuf.slice(5);
        addLpi(pid, fdq.shift()!);
      }
    };
    const addLpi = (vpid: number, fd: number) => {
      const pending: Rng[] = [],
        rpending: Rng[] = [];
      const t0 = performance.now();
      let runs = decodePagemap(o.dir, `pagemap-${vpid}.img`).runs;
      log.debug(
        `lazy-pages: process ${vpid}: ${runs.length} pagemap runs read in ${(performance.now() - t0).toFixed(1)} ms`
      );
      // from the images: the runs of private anonymous memory they hold (0); the pages left with
      // the source (PE_LAZY alone) come from it (1)
      let tagged: { vaddr: bigint; nrPages: number; flags: number; src: number }[];
      if (local) {
        const lazy = runs.filter((r) => r.flags === PE.LAZY);
        if (lazy.length && !remote)
          throw new CriuError(
            "lazy-pages",
            `process ${vpid}: pages 0x${lazy[0].vaddr.toString(16)}... stayed with the dump (dump --lazy-pages); take them with --page-server`
          );
        const [mm] = readImage(o.dir, `mm-${vpid}.img`, "MM");
        // both by address already (the pagemap is): merged, not sorted (a sort of tens of thousands
        // of BigInt addresses held the first fault, the restore's own, for a tenth of a second)
        const fromImages = lazyParentRuns(mm?.vmas ?? [], runs);
        tagged = [];
        for (let i = 0, k = 0; i < fromImages.length || k < lazy.length; ) {
          if (k >= lazy.length || (i < fromImages.length && fromImages[i].vaddr <= lazy[k].vaddr))
            tagged.push({ ...fromImages[i++], flags: PE.LAZY, src: 0 });
          else tagged.push({ ...lazy[k++], src: 1 });
        }
      } else tagged = runs.map((r) => ({ ...r, src: 1 }));
      for (const r of tagged) {
        if (!(r.flags & PE.LAZY) || r.flags & (PE.PRESENT | PE.PARENT)) continue;
        const a = r.vaddr,
          b = r.vaddr + BigInt(r.nrPages) * P;
        const list = local && r.src ? rpending : pending;
        const last = list[list.length - 1];
        if (last && last[1] === a) last[1] = b;
        else list.push([a, b, 0n, r.src]);
      }
      pending.sort((x, y) => (x[0] < y[0] ? -1 : 1));
      rpending.sort((x, y) => (x[0] < y[0] ? -1 : 1));
      const n = count(pending) + count(rpending);
      total += n;
      lpis.push({ vpid, src: vpid, fd, pending, rpending, total: n });
      log.info(
        `lazy-pages: process ${vpid}: ${n} lazy pages (userfaultfd ${fd})${remote ? `, ${count(rpending)} of them from the source` : ""}, found in ${(performance.now() - t0).toFixed(1)} ms`
      );
    };

    /** Pages [a, a + n pages) of lpi from the dump (where it holds them: a + off), into the process. */
    const fetch = (l: Lpi, a: bigint, n: number, off0: bigint, fault = false, fromSrc = 0) => {
      const got = local && fromSrc ? remote!.get(l.src, a + off0, n, buf) : ps.get(l.src, a + off0, n, buf, fault);
      if (local && fromSrc) fromSource += got;
      let off = 0;
      const len = got * PAGE;
      let gone = 0;
      // one UFFDIO_COPY takes pages of one VMA: a range over two adjacent mappings (different flags,
      // protections...) fails with ENOENT as a missing one does; from there on page by page, and
      // a page whose single copy still finds no mapping is skipped (unwanted), not the ones after it
      let single = false,
        skipped = 0;
      while (off < len) {
        const c = uffdCopy(l.fd, a + BigInt(off), buf, off, single ? PAGE : len - off);
        off += c.copied;
        if (!c.err) continue;
        if (c.err === 2 && !single && len - off > PAGE) {
          single = true;
          continue;
        }
        if (c.err === 2 && single) {
          log.debug(`lazy-pages: process ${l.vpid}: 0x${(a + BigInt(off)).toString(16)}: no mapping; page dropped`);
          off += PAGE;
          skipped++;
          continue;
        }
        // EAGAIN: the mm is changing (a fork, mremap, munmap... whose event waits to be read): read
        // the events first (faults are answered after), then try again where it is now
        if (c.err === 11) {
          onEvents(l, true);
          if (!holding(l, a)) {
            gone = -1;
            break;
          }
          continue;
        }
        if (c.err === 17 /* EEXIST: already there */) {
          uffdWake(l.fd, a + BigInt(off), PAGE);
          off += PAGE;
          continue;
        }
        if (c.err === 3 /* ESRCH: the process is gone */ || c.err === 2 /* ENOENT: no such VMA any more */) {
          log.debug(
            `lazy-pages: process ${l.vpid}: 0x${(a + BigInt(off)).toString(16)}: ${errnoText(c.err)}; pages dropped`
          );
          gone = c.err;
          break;
        }
        throw new CriuError(
          "lazy-pages",
          `process ${l.vpid}: UFFDIO_COPY at 0x${(a + BigInt(off)).toString(16)} failed: ${errnoText(c.err)}`
        );
      }
      const placed = Math.min(off, len) / PAGE - skipped;
      served += placed;
      // what can no longer go in (the process or its mapping is gone) is no longer wanted
      drop(l, a, a + BigInt(got) * P, gone === -1 ? 0 : got - placed); // -1: an event moved or dropped them (counted there)
      if (gone === 3) drop(l, 0n, 1n << 64n);
      if (served - lastLog >= 8192 || !lpis.some(anyPending)) {
        lastLog = served;
        log.info(`lazy-pages: ${served} of ${total} pages served`);
      }
    };

    /** Take [a, b) out of l's pending pages; `unwanted` of them (default: all) leave the total too. */
    const drop = (l: Lpi, a: bigint, b: bigint, unwanted?: number) => {
      const removed = remove(l.pending, a, b) + remove(l.rpending, a, b);
      total -= unwanted ?? removed;
    };

    const onFault = (l: Lpi, at: bigint) => {
      const a = at & ~(P - 1n);
      const h = holding(l, a);
      if (!h) {
        // not lazy memory of the dump (never written, or dropped since): zeroes
        const e = uffdZero(l.fd, a, PAGE);
        if (e === 17) uffdWake(l.fd, a, PAGE);
        else if (e && e !== 3 && e !== 2)
          throw new CriuError(
            "lazy-pages",
            `process ${l.vpid}: UFFDIO_ZEROPAGE at 0x${a.toString(16)} failed: ${errnoText(e)}`
          );
        return;
      }
      const [start, end, off, fromSrc] = h!;
      if (local && !fromSrc) {
        // from the images every fault costs a whole block read and checked (1 MiB): all the pending
        // pages around it go in with it (a process writing all over its memory would otherwise
        // pay a block per page, and the background stream would starve)
        const from = a - BigInt(STREAM_PAGES / 2) * P > start ? a - BigInt(STREAM_PAGES / 2) * P : start;
        fetch(l, from, Math.min(STREAM_PAGES, Number((end - from) / P)), off, true);
        return;
      }
      fetch(l, a, Math.min(FAULT_PAGES, Number((end - a) / P)), off, true, fromSrc);
    };

    /** faults read while a copy waited for the mm (answered next round) */
    const deferred: { l: Lpi; at: bigint }[] = [];
    const onEvents = (l: Lpi, deferFaults = false) => {
      const msgs = readUffdMsgs(l.fd, msgBuf);
      if (typeof msgs === "number")
        throw new CriuError("lazy-pages", `process ${l.vpid}: reading its userfaultfd failed: ${errnoText(-msgs)}`);
      for (const m of msgs) {
        if (m.event === UFFD_EVENT.PAGEFAULT) {
          if (deferFaults) deferred.push({ l, at: m.b });
          else onFault(l, m.b);
        } else if (m.event === UFFD_EVENT.FORK) {
          // the child's missing pages are what the parent was missing: the same source pages
          const child: Lpi = {
            vpid: l.vpid,
            src: l.src,
            fd: m.ufd,
            pending: l.pending.map(([a, b, o, r]) => [a, b, o, r] as Rng),
            rpending: l.rpending.map(([a, b, o, r]) => [a, b, o, r] as Rng),
            total: 0,
          };
          child.total = count(child.pending) + count(child.rpending);
          total += child.total;
          lpis.push(child);
          log.info(
            `lazy-pages: process ${l.vpid} forked; its child's userfaultfd ${m.ufd} is served from the same pages`
          );
        } else if (m.event === UFFD_EVENT.REMAP) {
          move(l.pending, m.a, m.b, m.c);
          move(l.rpending, m.a, m.b, m.c);
        } else if (m.event === UFFD_EVENT.REMOVE || m.event === UFFD_EVENT.UNMAP) drop(l, m.a, m.b);
      }
    };

    for (;;) {
      const live = lpis.filter((l) => l.fd >= 0);
      // the source may go once every page it kept is in (and the tree runs: no fork is to come)
      if (remote && released && !lpis.some((l) => l.rpending.length)) {
        remote.close();
        remote = undefined;
        log.info(`lazy-pages: all ${fromSource} pages the source kept are in; the source was told to finish`);
      }
      // done: the tree runs and every process has all its pages
      if (released && !lpis.some(anyPending)) break;
      if (!restoreOpen && !released)
        throw new CriuError(
          "lazy-pages",
          "the restore ended before the restored tree was running (it failed); the dump is left to resume its source"
        );
      // the background stream waits until the tree runs (the restore has the CPU until then)
      const work = released && lpis.some(anyPending);
      let wait = work ? 0 : 1000;
      if (work && rate > 0 && t0) {
        const due = t0 + (streamed / (rate * 1048576)) * 1000;
        wait = Math.max(0, Math.ceil(due - performance.now()));
      }
      const fds = [...(restoreOpen ? [conn] : []), ...live.map((l) => l.fd)];
      const pfd = new Int32Array(fds.length * 2);
      fds.forEach((fd, i) => {
        pfd[i * 2] = fd;
        pfd[i * 2 + 1] = 1 /* POLLIN */;
      });
      const n = syscall(NR.poll, addr(pfd), fds.length, wait);
      if (n < 0 && n !== -4) throw new CriuError("lazy-pages", `poll failed: ${errnoText(-n)}`);
      let busy = deferred.length > 0;
      for (const d of deferred.splice(0)) if (d.l.fd >= 0) onFault(d.l, d.at);
      for (let i = 0; n > 0 && i < fds.length; i++) {
        const rev = (pfd[i * 2 + 1] >>> 16) & 0xffff;
        if (!rev) continue;
        busy = true;
        if (fds[i] === conn && restoreOpen) {
          takeFromRestore();
          continue;
        }
        const l = live.find((x) => x.fd === fds[i])!;
        if (rev & 1) onEvents(l);
        else if (rev & (8 | 16 | 32)) {
          log.debug(`lazy-pages: process ${l.vpid}: userfaultfd hung up`);
          drop(l, 0n, 1n << 64n);
          closeFd(l.fd);
          l.fd = -1;
        }
      }
      if (busy || !work) continue;
      // nothing to answer: stream a piece in the background
      if (!t0) t0 = performance.now();
      // the source's pages first: it is frozen until they are all in
      const lr = lpis.find((x) => x.rpending.length);
      const l = lr ?? lpis.find((x) => x.pending.length)!;
      const [a, b, off, fromSrc] = lr ? lr.rpending[0] : l.pending[0];
      const np = Math.min(STREAM_PAGES, Number((b - a) / P));
      fetch(l, a, np, off, false, fromSrc);
      streamed += np * PAGE;
    }
    log.info(`lazy-pages: ${served} of ${total} pages served`);
    ps.close();
    sendPacket(conn, new Uint8Array(new Int32Array([0]).buffer));
    ok = true;
    log.info(
      `lazy-pages: done: ${served} of ${total} pages served${local ? " from the images" : ", the dump was told to finish"}`
    );
    return { served, total };
  } finally {
    if (!ok) {
      ps.drop();
      remote?.drop();
    }
    for (const l of lpis) if (l.fd >= 0) closeFd(l.fd);
    if (conn >= 0) closeFd(conn);
    closeFd(ls);
    syscall(NR.unlink, addr(new TextEncoder().encode(path + "\0")));
  }
}

const count = (rs: Rng[]) => rs.reduce((s, [a, b]) => s + Number((b - a) / P), 0);

/** The pending range of l holding address a, if any. */
function holding(l: Lpi, a: bigint): Rng | undefined {
  for (const rs of [l.rpending, l.pending]) {
    const i = firstEndAfter(rs, a);
    if (i < rs.length && rs[i][0] <= a) return rs[i];
  }
  return undefined;
}

/** Take [a, b) out of sorted disjoint ranges; returns how many pages went. */
function remove(rs: Rng[], a: bigint, b: bigint): number {
  let removed = 0n;
  for (let i = firstEndAfter(rs, a); i < rs.length; i++) {
    const [x, y, o, r] = rs[i];
    if (x >= b) break;
    const parts: Rng[] = [];
    if (x < a) parts.push([x, a, o, r]);
    if (y > b) parts.push([b, y, o, r]);
    removed += (y < b ? y : b) - (x > a ? x : a);
    rs.splice(i, 1, ...parts);
    i += parts.length - 1;
  }
  return Number(removed / P);
}

/** mremap: pending pages of [from, from + len) are now at to (the dump still holds them where they were). */
function move(rs: Rng[], from: bigint, to: bigint, len: bigint) {
  const moved: Rng[] = [];
  for (const [x, y, o, r] of rs) {
    const a = x > from ? x : from,
      b = y < from + len ? y : from + len;
    if (a < b) moved.push([a - from + to, b - from + to, o + from - to, r]);
  }
  remove(rs, from, from + len);
  for (const m of moved) rs.push(m);
  rs.sort((p, q) => (p[0] < q[0] ? -1 : 1));
}
