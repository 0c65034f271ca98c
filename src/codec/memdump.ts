// A process's memory pages at dump, every way they can go: into pages-N.img (compressed if asked),
// against the previous dump's images (incremental: unchanged pages stay with the parent, with
// memory tracking only pages written since are read), to a page server (whole, or only what
// tracking says changed, or decided now and read once the tree runs again: migrate's pre-copy),
// or left with the source as PE_LAZY runs (lazy pages, post-copy). The VMAs and which pages are
// worth saving are resources/memory.ts's, the lazy split resources/lazymem.ts's, the tracking
// resources/memtrack.ts's; the pages are read and encoded by the pipeline (pipeline.ts).
import { existsSync, mkdtempSync, rmSync } from "../sys/fs";
import { join } from "../sys/path";
import type { RemoteMem } from "../ptrace/inject";
import { dumpPages as pipelineDumpPages, giveBackOwnPages } from "./pipeline";
import { releasePages } from "../sys/ownpages";
import { dedupeAgainstParent } from "./incremental";
import type { MemTracker } from "../resources/memtrack";
import { pagesToDump, type DumpedVma, type PageRun } from "../resources/memory";
import type { ThreadDump } from "../resources/threads";
import { splitLazy, markLazy, markLazyList, splitRunsLazy, keepEager } from "../resources/lazymem";
import type { PageServerClient, LazySource } from "../net/pageserver";
import { writeImageBytes } from "../images/image";
import { encodePagemap, PagemapWriter, RunList, type PagemapRun } from "../images/pagemap";
import { CriuError, log, errorMessage } from "../log";

export interface MemStats {
  scanned: number;
  written: number;
  skipped: number;
}

interface MemDumpOpts {
  /** the images directory */
  dir: string;
  /** N of pages-N.img (the process's index in the tree) */
  pagesId: number;
  compress?: boolean;
  /** the previous (pre-)dump's images: unchanged pages are not stored again */
  prevImagesDir?: string;
  /** filled: the lazy runs of each process, by pid as the images name it (lazy pages, post-copy) */
  lazySources?: Map<number, LazySource>;
  /** filled: page reads left for when the tree runs again (migrate's pre-copy rounds) */
  deferred?: (() => MemStats)[];
  /** the pages go to this page server instead of pages-N.img */
  pageServer?: PageServerClient;
  track: MemTracker;
}

/**
 * The pages of one frozen process (pid; vpid as the images name it): stored, sent or left lazy as
 * o says. Returns the counts and, unless deferred, the runs its pagemap lists (writePagemap).
 */
export function dumpMemory(
  pid: number,
  vpid: number,
  task: { vmas: DumpedVma[]; threads: ThreadDump[] },
  mem: RemoteMem,
  o: MemDumpOpts
): MemStats & { runs?: Iterable<PagemapRun> } {
  const { pageServer, track } = o;
  const d = o.dir,
    id = o.pagesId;
  let pr;
  let skipped = 0;
  if (pageServer) {
    // pages go through a scratch file, then to the page server, which writes the pagemap. With
    // parent images on the server's side and memory tracking in use, only pages written since the
    // parent are sent; the others are PE_PARENT holes (the server checks its parent has them).
    // Without tracking every page is sent: the parent's pages are not here to compare with.
    if (o.deferred) {
      // liveRead: what to send is decided now, frozen; it is read and sent once the tree runs again.
      // The server's parent images are this side's previous round (it answers OPEN2 the same)
      const hasParent = !!o.prevImagesDir && existsSync(join(o.prevImagesDir, `sent-pagemap-${vpid}.img`));
      const tracked = hasParent ? track.select(pid, vpid, task.vmas) : undefined;
      const want = tracked ? byAddress([...pagesToDump(pid, tracked.untracked), ...tracked.want]) : undefined;
      const vmas = task.vmas,
        ps = pageServer;
      o.deferred.push(() => {
        const tmp = mkdtempSync(join(d, ".criu-bun-pages-"));
        try {
          let p;
          try {
            p = dumpPages(pid, vmas, mem, tmp, id, false, want);
          } catch (e) {
            if (!existsSync(`/proc/${pid}`)) throw e;
            log.warn(
              `process ${pid}: its memory changed while it was read (${errorMessage(e)}); left out of this round, sent in full by the next`
            );
            return { scanned: 0, written: 0, skipped: 0 };
          }
          if (ps.open(vpid) !== hasParent)
            throw new CriuError(
              "dump",
              `process ${pid}: the page server ${hasParent ? "has no" : "has"} parent images for it, unlike this side`
            );
          const runs = tracked ? byAddress<PagemapRun>([...p.runs, ...tracked.fromParent]) : [...p.runs];
          ps.sendRuns(markLazy(runs, vmas), join(tmp, p.file));
          writeImageBytes(d, `sent-pagemap-${vpid}.img`, encodePagemap(0, runs));
          return { scanned: p.scanned, written: p.written, skipped: tracked ? pagesOf(tracked.fromParent) : 0 };
        } finally {
          rmSync(tmp, { recursive: true, force: true });
        }
      });
      return { scanned: 0, written: 0, skipped: 0 };
    }
    // the server's answer to OPEN2 (whether it has parent images) is read only before the pages go:
    // meanwhile the pages are chosen and read as it will answer (it has this side's previous
    // round, or what sent-pagemap says it holds); should it answer otherwise, chosen again
    const answer = pageServer.openLater(vpid);
    let hasParent = !!o.prevImagesDir && existsSync(join(o.prevImagesDir, `sent-pagemap-${vpid}.img`));
    for (;;) {
      const r = pagesToServer(pid, vpid, task, mem, o, pageServer, hasParent, answer);
      if (r === undefined) {
        hasParent = !hasParent;
        log.debug(`process ${pid}: the page server answered otherwise: its pages chosen again`);
        continue;
      }
      ({ pr, skipped } = r);
      break;
    }
  } else {
    // incremental: raw pages first, then only those that changed are kept (compressed if asked)
    // with memory tracking (memtrack.ts) only pages written since the parent are read
    const tracked = o.prevImagesDir ? track.select(pid, vpid, task.vmas) : undefined;
    const want = tracked ? byAddress([...pagesToDump(pid, tracked.untracked), ...tracked.want]) : undefined;
    // lazy: private anonymous memory stays with the source, its runs flagged PE_LAZY alone
    const split = o.lazySources ? splitLazy(task.vmas) : undefined;
    pr = dumpPages(pid, split ? split.eager : task.vmas, mem, d, id, o.compress && !o.prevImagesDir, want);
    if (split) {
      const lazy = pagesToDump(pid, split.lazy);
      o.lazySources!.set(vpid, { pid, runs: lazy });
      pr = {
        ...pr,
        runs: byAddress<PagemapRun>([...pr.runs, ...lazy.map((r) => ({ ...r, flags: 2 /* PE_LAZY */ }))]),
        scanned: pr.scanned + lazy.reduce((m, r) => m + r.nrPages, 0),
      };
      log.info(
        `process ${pid}: ${lazy.reduce((m, r) => m + r.nrPages, 0)} pages of private anonymous memory left with the source (lazy)`
      );
    }
    if (o.prevImagesDir) {
      const dd = dedupeAgainstParent(d, pr.file, [...pr.runs], o.prevImagesDir, vpid, o.compress);
      log.info(
        `process ${pid}: ${dd.fromParent} pages unchanged since the previous dump, ${dd.kept} stored in ${dd.file}`
      );
      const runs = tracked ? byAddress<PagemapRun>([...dd.runs, ...tracked.fromParent]) : dd.runs;
      skipped = dd.fromParent + (tracked ? pagesOf(tracked.fromParent) : 0);
      pr = { ...pr, runs, written: dd.kept, file: dd.file, storedBytes: dd.stored, rawBytes: dd.kept * 4096 };
    }
  }
  return { scanned: pr.scanned, written: pr.written, skipped, runs: pr.runs };
}

const pagesOf = (runs: { nrPages: number }[]) => runs.reduce((n, r) => n + r.nrPages, 0);

/**
 * One process's pages to the page server whose OPEN2 was just sent (its answer: `answer`), chosen
 * as if it has parent images or not (`hasParent`): with memory tracking only pages written since,
 * the others PE_PARENT; in migrate's final round private anonymous memory left as PE_LAZY runs.
 * Undefined, nothing sent, when the server's answer says otherwise (the caller chooses again).
 */
function pagesToServer(
  pid: number,
  vpid: number,
  task: { vmas: DumpedVma[]; threads: ThreadDump[] },
  mem: RemoteMem,
  o: MemDumpOpts,
  pageServer: PageServerClient,
  hasParent: boolean,
  answer: () => boolean
): { pr: { scanned: number; written: number; runs: PagemapRun[] }; skipped: number } | undefined {
  const d = o.dir,
    id = o.pagesId;
  let skipped = 0;
  const tracked = o.prevImagesDir && hasParent ? o.track.select(pid, vpid, task.vmas) : undefined;
  let want = tracked ? byAddress([...pagesToDump(pid, tracked.untracked), ...tracked.want]) : undefined;
  // post-copy from the source (migrate's final round): private anonymous memory is not read now,
  // its runs go as PE_LAZY and the frozen tree serves them once its copy runs
  let lazy: PageRun[] = [];
  if (o.lazySources) {
    // the rseq areas go now: the restore registers them (the kernel writes there) before the tree runs
    const rseq = task.threads.flatMap((t) => {
      const e = t.core.threadCore?.rseqEntry;
      return e?.rseqAbiPointer
        ? [BigInt(e.rseqAbiPointer), BigInt(e.rseqAbiPointer) + BigInt(Math.max(1, Number(e.rseqAbiSize ?? 32))) - 1n]
        : [];
    });
    const split = keepEager(splitRunsLazy(want ?? pagesToDump(pid, task.vmas), task.vmas), rseq);
    want = split.eager;
    lazy = split.lazy;
    o.lazySources.set(vpid, { pid, runs: lazy });
    log.info(
      `process ${pid}: ${pagesOf(lazy)} page(s) of private anonymous memory left here for post-copy, ${pagesOf(want)} sent now`
    );
  }
  const tmp = mkdtempSync(join(d, ".criu-bun-pages-"));
  try {
    const pr = dumpPages(pid, task.vmas, mem, tmp, id, false, want);
    // the server's answer, now: pages chosen for the other case are chosen again
    const got = answer(); // (read in any case: the next answer on the connection is another's)
    if (o.prevImagesDir && got !== hasParent) return undefined;
    const t1 = performance.now();
    const lz = lazy.map((r) => ({ vaddr: r.vaddr, nrPages: r.nrPages, flags: 2 /* PE_LAZY */ }));
    const runs =
      tracked || lz.length ? byAddress<PagemapRun>([...pr.runs, ...(tracked?.fromParent ?? []), ...lz]) : [...pr.runs];
    const t2 = performance.now();
    const marked = markLazy(runs, task.vmas);
    const t3 = performance.now();
    pageServer.sendRuns(marked, join(tmp, pr.file));
    log.debug(
      `process ${pid}: ${runs.length} pagemap runs (${tracked?.fromParent.length ?? 0} from the parent) ordered in ${(t2 - t1).toFixed(1)} ms, marked in ${(t3 - t2).toFixed(1)} ms, sent in ${(performance.now() - t3).toFixed(1)} ms`
    );
    if (tracked) skipped = pagesOf(tracked.fromParent);
    // what the server now holds for this process, for a later dump with this one as its parent
    const t4 = performance.now();
    writeImageBytes(d, `sent-pagemap-${vpid}.img`, encodePagemap(0, runs));
    log.debug(`process ${pid}: sent-pagemap-${vpid}.img written in ${(performance.now() - t4).toFixed(1)} ms`);
    return { pr: { scanned: pr.scanned, written: pr.written, runs }, skipped };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** pagemap-VPID.img: the runs dumpMemory returned, lazy ones marked (not written when a page server
 * holds them). The last use of the runs: a large RunList is emptied (its memory given back).
 * giveBack: the executable's pages the images before it touched are unmapped first (a large
 * pagemap is where a dump's own memory peaks: the runs and their image). */
export function writePagemap(
  d: string,
  vpid: number,
  id: number,
  runs: Iterable<PagemapRun>,
  vmas: DumpedVma[],
  giveBack = false
) {
  if (giveBack) giveBackOwnPages("before the pagemap image");
  const bytes =
    runs instanceof RunList
      ? markLazyList(runs, vmas, new PagemapWriter(id, runs.length + vmas.length)).bytes()
      : encodePagemap(id, markLazy(runs, vmas));
  writeImageBytes(d, `pagemap-${vpid}.img`, bytes);
  // the image's buffer and the runs' arrays given back at once, not when the allocator reuses them
  if (runs instanceof RunList && runs.length >= LARGE_PAGEMAP) {
    releasePages(new Uint8Array(bytes.buffer));
    runs.release();
  }
}
/** Runs from which writePagemap gives the buffers back (16,384 runs: about 0.4 MB of image, a
 * fragmented 256 MiB; the 4 GiB heap of the benchmark has about 220,000). */
const LARGE_PAGEMAP = 16384;

/** Memory pages of one process into pages-<pagesId>.img; returns the runs for pagemap-PID.img. */
function dumpPages(
  pid: number,
  vmas: DumpedVma[],
  mem: RemoteMem,
  dir: string,
  pagesId: number,
  compress?: boolean,
  want?: PageRun[]
) {
  return pipelineDumpPages({ pid, vmas, memFd: mem.fd, dir, pagesId, compress, want }); // src/codec/pipeline.ts
}

/**
 * Runs by address. The callers join a few lists that are each by address already (pages read,
 * pages from the parent, lazy runs; tens of thousands of runs for a GiB of scattered memory):
 * those are merged, one pass per list, instead of n log n comparisons of BigInt addresses in the
 * frozen window. Anything else is sorted.
 */
function byAddress<T extends { vaddr: bigint }>(runs: T[]): T[] {
  const starts = [0];
  for (let i = 1; i < runs.length; i++) {
    if (runs[i].vaddr < runs[i - 1].vaddr) {
      starts.push(i);
      if (starts.length > 8) return runs.sort((a, b) => (a.vaddr < b.vaddr ? -1 : a.vaddr > b.vaddr ? 1 : 0));
    }
  }
  if (starts.length === 1) return runs;
  starts.push(runs.length);
  let parts = starts.slice(0, -1).map((s, k) => runs.slice(s, starts[k + 1]));
  while (parts.length > 1) {
    const next: T[][] = [];
    for (let k = 0; k < parts.length; k += 2) {
      const x = parts[k],
        y = parts[k + 1];
      if (!y) {
        next.push(x);
        continue;
      }
      const m: T[] = new Array(x.length + y.length);
      let i = 0,
        j = 0,
        o = 0;
      while (i < x.length && j < y.length) m[o++] = y[j].vaddr < x[i].vaddr ? y[j++] : x[i++];
      while (i < x.length) m[o++] = x[i++];
      while (j < y.length) m[o++] = y[j++];
      next.push(m);
    }
    parts = next;
  }
  return parts[0];
}
