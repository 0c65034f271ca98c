// The streaming page pipeline (dump and restore), synchronous for its callers.
//
// Dump:    pagemap -> blocks of up to 1 MiB of wanted pages -> (Workers, or the main thread for
//          small dumps) process_vm_readv into WASM memory, zero pages out, XXH3-64; uncompressed:
//          the same thread writes the kept pages from WASM memory at the block's offset (one
//          pwrite, offsets handed out in block order by DumpOrder); --compress: LZ4, and the main
//          thread writes the blocks in order. The main thread builds the pagemap runs and the
//          block index (src/codec/format.ts).
// Fill:    blocks read from the pages file, their hash checked against pages-N.idx before they
//          are used, decoded and written into the target with process_vm_writev, zero pages of
//          anonymous memory skipped; all while every restored process is a stopped shell that
//          never ran, so a bad block ends the restore with nothing left behind.
//
// Workers and the main thread meet in shared slots (SharedArrayBuffer): the main thread posts a
// job, then blocks in Atomics.wait on the oldest slot, so results are consumed in order while
// up to SLOTS_PER_WORKER jobs per Worker are under way. Memory stays bounded: per Worker one WASM
// instance (about 2 MiB of buffers) and its slots (about 1 MiB each), whatever the dump's size.
import {
  openSync,
  closeSync,
  existsSync,
  unlinkSync,
  readFileSync,
  readdirSync,
  statSync,
  isTerminal,
  constants,
} from "../sys/fs";
import { createNew, writeNewFile } from "../images/safefs";
import { join } from "../sys/path";
import { PageCodec } from "./codec";
import {
  BlockCore,
  DumpOrder,
  Slot,
  runInto,
  slotBytes,
  CTL_BUSY,
  CTL_DONE,
  I_CTL,
  I_DONE,
  BlockTable,
  TB_BLOCKS,
  TB_FIELDS,
  TB_FINISHED,
  TB_PAGES,
  TB_WRITTEN,
  TB_ONE_BY_ONE,
  TB_WAKE,
  SEG_ANON,
  SEG_READABLE,
  SEG_WRITABLE,
  SEG_KERNEL,
  type DumpJob,
  type RestoreJob,
} from "./jobs";
import {
  BLOCK,
  BLOCK_PAGES,
  BLOCK_LZ4,
  IndexWriter,
  AddrHash,
  addrHashCode,
  pagesNames,
  checkPagesLayout,
  checkAddrBinding,
  type PagesLayout,
} from "./format";
import { pagesToDump, type DumpedVma, type PageRun } from "../resources/memory";
import { RunList, presentRuns, pagemapWriterCode, type PagemapTable } from "../images/pagemap";
import { writeFull } from "../sys/mem";
import { VMA, PE } from "../resources/vma";
import { CriuError, log, logLevel, LOG_DEBUG } from "../log";
import { tick } from "../watchdog";
import { trimOwnPages } from "../sys/ownpages";
import { jitIfLarge, jitForBlocks, WORK_JIT } from "../jit";
import { noFTL } from "bun:jsc";
import { capEffective, gettid, setTidNice, threadNice } from "../sys/proc";

const PAGE = 4096;
const SLOTS_PER_WORKER = 3;
/** Below this many bytes the main thread does the work alone (a Worker costs ~10 ms to start). */
const WORKER_THRESHOLD = 48 << 20;
const PROGRESS_MIN = 256 << 20;
/** Up to this many bytes, a run alone on the main thread needs no codec.wasm (PlainCodec: its zero
 * test is slower than the WASM one, but compiling the module costs more below this size);
 * CRIU_BUN_CODEC=wasm uses codec.wasm always. */
const PLAIN_MAX = 8 << 20;
/** Jobs between garbage collections: each job leaves a little garbage (job objects, views, BigInts)
 * that JSC would otherwise let pile up to hundreds of MiB on multi-GiB processes. A dump below
 * LEAN_MIN forces none (gcEvery 0, on this thread and in its Workers): JSC's own collections keep
 * it within a few MiB there, and the forced ones (each an eden collection of 1-3 ms, with its
 * helper threads) cost a 1 GiB dump about 30 collections; a 4 GiB dump without them peaked 2-4
 * MiB higher (60-62 MiB against 58: the 64 MiB target), so from LEAN_MIN on they stay. */
const GC_EVERY = 128;

type JobIn<J> = Omit<J, "slot">;
type PoolInit = {
  uffd?: number;
  pid: number;
  memFd: number;
  pagesFd: number;
  /** restore --auto-dedup (jobs.ts CoreInit.punch) */
  punch?: boolean;
  compress: boolean;
  outFd?: number;
  order?: SharedArrayBuffer;
  /** jobs between forced garbage collections on each thread of the run, 0 for none (GC_EVERY) */
  gcEvery?: { main: number; worker: number };
};

// ---------------------------------------------------------------------------------------------
// Worker pool

class Pool {
  private workers: Worker[] = [];
  private slots: Slot[] = [];
  private core?: BlockCore;
  private sabs: SharedArrayBuffer[] = [];
  /** a dump's share of blocks read on this thread beside the Workers (open's `help`): its core and slots */
  private helper?: BlockCore;
  private helperSlots: Slot[] = [];
  /** [0]: Workers that took their last "open"; [1]: jobs the Workers finished (I_DONE), each
   * notified: what an unordered run (runAny) waits on */
  private ready = new Int32Array(new SharedArrayBuffer(8));
  private opens = 0;
  /** this thread's jobs between forced garbage collections in the run opened (0: none) */
  private gcEvery = GC_EVERY;

  /** Start nWorkers Workers (none: the work is done on this thread); they get their work with open().
   * withHelper: started for a dump where this thread reads blocks too (one Worker fewer). */
  constructor(
    nWorkers: number,
    readonly withHelper = false,
    codecHere = false
  ) {
    if (nWorkers <= 0) return;
    // codecHere (a restore's Workers started ahead): each Worker compiles the codec module and makes
    // its codec at "start" (jobs.ts coreCodec), on the other CPU while this thread loads the images;
    // else the module compiled here once and posted to them
    const module = codecHere ? undefined : PageCodec.module();
    // slot i belongs to worker i % nWorkers; every worker gets the whole list (indexed by slot)
    for (let i = 0; i < nWorkers * SLOTS_PER_WORKER; i++) {
      this.sabs.push(new SharedArrayBuffer(slotBytes()));
      this.slots.push(new Slot(this.sabs[i]));
    }
    // a restore's Workers start at a lower priority (nice +BOOT_NICE, inherited from this thread
    // while it creates them): their start (a runtime each, the codec compiled, buffers touched) then
    // yields the CPU to this thread, which loads the images and builds the process they wait for;
    // each goes back to this thread's priority at "open" (worker.ts)
    const base = codecHere && canRenice() && process.env.CRIU_BUN_BOOT_NICE !== "0" ? threadNice() : undefined,
      lower = base !== undefined && setTidNice(gettid(), Math.min(19, base + BOOT_NICE));
    try {
      for (let w = 0; w < nWorkers; w++) {
        const worker = new Worker(workerUrl(), { smol: true });
        worker.postMessage({
          op: "start",
          slots: this.sabs,
          ready: this.ready.buffer,
          module,
          codecHere,
          nice: lower ? base : undefined,
        });
        this.workers.push(worker);
      }
    } finally {
      if (lower && !setTidNice(gettid(), base)) log.warn(`cannot set this thread's nice value back to ${base}`);
    }
    if (lower) log.debug(`page workers started at nice ${Math.min(19, base + BOOT_NICE)} (this thread: ${base})`);
  }

  /** Give every Worker the process and files of the next run (totalBytes: raw bytes of all its
   * jobs, which sizes the buffers of a small job run alone) and wait until they took them. help:
   * this thread takes a share of the blocks too (dumpPages), instead of only waiting for them. */
  open(init: PoolInit, totalBytes = BLOCK, help = false) {
    this.core = undefined;
    this.helper = undefined;
    this.gcEvery = init.gcEvery?.main ?? GC_EVERY;
    if (!this.workers.length) {
      this.alone(init, totalBytes);
      return;
    }
    const nw = this.workers.length;
    Atomics.store(this.ready, 0, 0);
    this.opens++;
    for (const w of this.workers) w.postMessage({ op: "open", ...init });
    // a Worker that cannot start (missing entry point, ...) must not hang us: work alone then
    const t0 = Date.now(),
      tw = performance.now();
    while (Atomics.load(this.ready, 0) < nw && Date.now() - t0 < 5000)
      Atomics.wait(this.ready, 0, Atomics.load(this.ready, 0), 100);
    log.debug(`page workers: ${nw} took the run, waited ${(performance.now() - tw).toFixed(1)} ms for them`);
    if (Atomics.load(this.ready, 0) < nw) {
      log.warn(
        `page workers did not start in 5 s (${Atomics.load(this.ready, 0)} of ${nw}); working on the main thread`
      );
      this.close();
      this.alone(init, totalBytes);
    } else if (help) {
      this.helper = new BlockCore({ ...init, module: PageCodec.module() });
      while (this.helperSlots.length < SLOTS_PER_WORKER) this.helperSlots.push(new Slot(new ArrayBuffer(slotBytes())));
    }
  }

  /** No Workers: one core on this thread, its buffers no larger than the largest job; without
   * WebAssembly (PlainCodec) when the run is small and uncompressed. */
  private alone(init: PoolInit, totalBytes: number) {
    const block = Math.min(BLOCK, Math.max(PAGE, Math.ceil(totalBytes / PAGE) * PAGE));
    const plain = !init.compress && totalBytes <= PLAIN_MAX && process.env.CRIU_BUN_CODEC !== "wasm";
    if (plain && warm && init.order === undefined) {
      // a restore: the buffers warmPageBuffers() faulted in ahead (a fault costs tens of microseconds on a VM)
      warm.core.init = { ...init, block: BLOCK, plain };
      this.core = warm.core;
      this.slots = [warm.slot];
      return;
    }
    this.core = new BlockCore({ ...init, block, plain });
    this.slots = [new Slot(new ArrayBuffer(slotBytes(block)))];
  }

  get parallel() {
    return this.workers.length;
  }
  /** whether this thread takes a share of the run's blocks (open's `help`) */
  get helps() {
    return this.helper !== undefined;
  }

  /** Run jobs in order; consume(slot, job) sees each result in job order. anyOrder: results may be
   * taken as they come (runAny) when the Workers run them alone. */
  run<J extends DumpJob | RestoreJob>(
    jobs: Iterator<JobIn<J>>,
    consumeJob: (s: Slot, job: J) => void,
    fail: (s: Slot, job: J) => Error,
    anyOrder = false
  ) {
    let done = 0;
    const consume = (s: Slot, job: J) => {
      consumeJob(s, job);
      tick();
      if (++done === this.gcEvery) {
        Bun.gc(false);
        done = 0;
      }
    };
    if (anyOrder && !this.core && !this.helper && this.workers.length > 1 && process.env.CRIU_BUN_ORDERED !== "1") {
      this.runAny(jobs, consume, fail);
      return;
    }
    if (this.core) {
      const s = this.slots[0];
      for (let r = jobs.next(); !r.done; r = jobs.next()) {
        const job = { ...r.value, slot: 0 } as J;
        if (runInto(this.core, job, s) !== CTL_DONE) throw fail(s, job);
        consume(s, job);
      }
      return;
    }
    const nw = this.workers.length;
    const helper = this.helper;
    // lanes in the order of the first jobs: each Worker's slots (slot k is Worker k % nw's) and,
    // when this thread helps, one of its own after every nw of them: its share is 1 / (nw + 1).
    // This thread runs its own jobs in job order, the oldest first, whenever the oldest job is a
    // Worker's still under way (and when the oldest is its own); results are consumed in job order.
    // An uncompressed dump's DumpOrder waits for nothing that will not come: every job older than
    // one this thread runs is done or under way on a Worker (Workers take theirs in order too)
    const lanes: { slot: number; s: Slot; here: boolean }[] = [];
    for (let k = 0; k < this.slots.length; k++) {
      lanes.push({ slot: k, s: this.slots[k], here: false });
      if (helper && (k + 1) % nw === 0) lanes.push({ slot: k, s: this.helperSlots[(k + 1) / nw - 1], here: true });
    }
    type Lane = (typeof lanes)[number];
    type Item = { lane: Lane; job: J; ran: boolean };
    const queue: Item[] = [];
    const dispatch = (lane: Lane): boolean => {
      const r = jobs.next();
      if (r.done) return false;
      const job = { ...r.value, slot: lane.slot } as J;
      if (!lane.here) {
        Atomics.store(lane.s.i32, I_CTL, CTL_BUSY);
        this.workers[lane.slot % nw].postMessage(job);
      }
      queue.push({ lane, job, ran: false });
      return true;
    };
    const runHere = (it: Item) => {
      if (runInto(helper!, it.job, it.lane.s) !== CTL_DONE) throw fail(it.lane.s, it.job);
      it.ran = true;
    };
    for (const lane of lanes) if (!dispatch(lane)) break;
    while (queue.length) {
      const it = queue[0];
      const s = it.lane.s;
      if (it.lane.here) {
        if (!it.ran) runHere(it);
      } else {
        if (Atomics.load(s.i32, I_CTL) === CTL_BUSY) {
          const mine = helper && queue.find((q) => q.lane.here && !q.ran);
          if (mine) {
            runHere(mine);
            continue;
          }
        }
        const t0 = Date.now();
        while (Atomics.load(s.i32, I_CTL) === CTL_BUSY) {
          Atomics.wait(s.i32, I_CTL, CTL_BUSY, 1000);
          if (Date.now() - t0 > 120_000) throw new CriuError("pages", "a page worker stopped answering");
        }
        if (Atomics.load(s.i32, I_CTL) !== CTL_DONE) throw fail(s, it.job);
      }
      queue.shift();
      consume(s, it.job);
      dispatch(it.lane);
    }
  }

  /**
   * Run jobs whose results may be taken in any order (a restore's blocks: each one checked and
   * written on its own): a slot is refilled as soon as its Worker finishes it, so a Worker that
   * runs faster (the other shares its CPU with this thread, the JIT or another process) takes
   * more of the blocks. In job order (run), the Workers kept the same pace: each one got its
   * next block only once the oldest one, maybe the other's, was done (1 GiB heap restore on a
   * busy machine: one Worker idle 240-270 ms of a 550-620 ms pages phase, the other 90-110 ms,
   * 500 blocks each; taken as they come: 16-44 ms each). CRIU_BUN_ORDERED=1: in job order.
   */
  private runAny<J extends DumpJob | RestoreJob>(
    jobs: Iterator<JobIn<J>>,
    consume: (s: Slot, job: J) => void,
    fail: (s: Slot, job: J) => Error
  ) {
    const nw = this.workers.length;
    const busy: (J | undefined)[] = new Array(this.slots.length);
    let open = 0;
    const dispatch = (slot: number): boolean => {
      const r = jobs.next();
      if (r.done) return false;
      const job = { ...r.value, slot } as J;
      Atomics.store(this.slots[slot].i32, I_CTL, CTL_BUSY);
      busy[slot] = job;
      open++;
      this.workers[slot % nw].postMessage(job);
      return true;
    };
    for (let k = 0; k < this.slots.length; k++) if (!dispatch(k)) break;
    let t0 = Date.now();
    while (open) {
      const seen = Atomics.load(this.ready, I_DONE);
      let any = false;
      for (let k = 0; k < busy.length; k++) {
        const job = busy[k];
        if (!job) continue;
        const s = this.slots[k];
        const ctl = Atomics.load(s.i32, I_CTL);
        if (ctl === CTL_BUSY) continue;
        busy[k] = undefined;
        open--;
        if (ctl !== CTL_DONE) throw fail(s, job);
        consume(s, job);
        dispatch(k);
        any = true;
      }
      if (any) {
        t0 = Date.now();
        continue;
      }
      Atomics.wait(this.ready, I_DONE, seen, 1000);
      if (Date.now() - t0 > 120_000) throw new CriuError("pages", "a page worker stopped answering");
    }
  }

  /**
   * A restore's blocks from a shared table (jobs.ts BlockTable): every Worker takes blocks from it
   * itself until none is left or one failed; this thread only waits for them to leave it, calling
   * progress(raw pages done) as they go (and ticking the watchdog). The caller reads the outcome
   * from the table. Per block, the posted jobs (run) cost this thread about 66 ms of CPU for a
   * 1 GiB restore's 1,030 blocks (segments cut, jobs posted and taken), beside the Workers on 2 CPUs.
   */
  runTable(t: BlockTable, progress: (pages: number) => void, wakeAtPages = 0) {
    const nw = this.workers.length;
    // (woken by the Worker whose block passes it too, not only every 20 ms: ownPagesTrimmer)
    t.i32[TB_WAKE] = wakeAtPages;
    for (const w of this.workers) w.postMessage({ op: "table", table: t.d });
    const c = t.i32;
    let seen = 0,
      t0 = Date.now();
    for (;;) {
      const f = Atomics.load(c, TB_FINISHED);
      if (f >= nw) break;
      Atomics.wait(c, TB_FINISHED, f, 20);
      const pages = Atomics.load(c, TB_PAGES);
      if (pages !== seen) {
        seen = pages;
        t0 = Date.now();
        tick();
        progress(pages);
      } else if (Date.now() - t0 > 120_000) throw new CriuError("pages", "a page worker stopped answering");
    }
    progress(Atomics.load(c, TB_PAGES));
  }

  /** A message to this pool's last Worker (whose first job comes after the first Worker's), if any. */
  postLast(msg: object): boolean {
    const w = this.workers[this.workers.length - 1];
    if (!w) return false;
    w.postMessage(msg);
    return true;
  }

  close() {
    for (const w of this.workers) w.terminate();
    this.workers = [];
  }
}

/** How much lower a restore's page Workers start (Pool; the nice value they add until "open"). */
const BOOT_NICE = 10;
/** Whether this process may lower a nice value again (CAP_SYS_NICE in its effective set): a thread
 *  that could not would stay niced. */
function canRenice(): boolean {
  return ((capEffective() ?? 0n) & (1n << 23n)) /* CAP_SYS_NICE */ !== 0n;
}

/** A main-thread core without WebAssembly and its slot, their buffers touched (warmPageBuffers). */
let warm: { core: BlockCore; slot: Slot } | undefined;

/**
 * For a small restore to come on this thread (migrate's destination: the few file-mapping pages
 * of its post-copy restore, after the freeze): the main thread's buffers made and faulted in now,
 * not in the frozen window (the first touch of 1 MiB is 256 page faults: 5-25 ms on a busy VM).
 */
export function warmPageBuffers() {
  if (warm) return;
  const core = new BlockCore({ pid: 0, memFd: -1, pagesFd: -1, compress: false, block: BLOCK, plain: true });
  core.codec.inputView().fill(0);
  warm = { core, slot: new Slot(new ArrayBuffer(slotBytes(BLOCK))) };
}

/** Workers started ahead (startPageWorkers), used by every dumpPages/fillPages until stopPageWorkers. */
let spare: Pool | undefined;

/**
 * Start the page Workers now, for a dump or restore of about `bytes` of pages: a Worker takes
 * 0.1-0.4 s to start (its runtime, the codec), time that passes while the tree is collected or
 * built instead of before the first page. Kept for every process of the tree (one start, not one
 * per process) until stopPageWorkers(). Nothing when the work is too small for Workers.
 */
export function startPageWorkers(bytes: number, dump = false) {
  if (spare) return;
  largeWork(bytes);
  const nw = dump ? dumpWorkerCount(bytes) : workerCount(bytes);
  if (nw > 0) {
    const codecHere = !dump && process.env.CRIU_BUN_WORKER_CODEC !== "0";
    spare = new Pool(nw, dump && mainHelps(bytes), codecHere);
    log.debug(
      `${nw} page worker(s) started ahead for ${size(bytes)} (${workerUrl()})${codecHere ? ", each compiling the codec and making its buffers itself" : ""}`
    );
  }
}
/**
 * For a restore from `dir`, before its images are loaded: the page Workers started now when its
 * uncompressed pages files (pages-N.img: exactly the pages the pagemaps list) hold enough for them,
 * so that their start (a runtime each, the codec's module) runs on the other CPU while this thread
 * loads and checks the images, not after it. Not when the pages are LZ4 (the files say less than the
 * memory) or when the restore gives back its own pages before the Workers start (LEAN_MIN and
 * more: restore.ts does that once the images are loaded). restore.ts's startPageWorkers(bytes)
 * then finds them started.
 */
export function startPageWorkersEarly(dir: string) {
  let bytes = 0;
  try {
    for (const f of readdirSync(dir)) {
      if (/^pages-\d+\.lz4$/.test(f)) return;
      if (/^pages-\d+\.img$/.test(f)) bytes += statSync(join(dir, f)).size;
    }
  } catch {
    return; // (what is wrong with the directory is said when the images are loaded)
  }
  if (bytes >= WORKER_THRESHOLD && !givesBackOwnPages(bytes)) startPageWorkers(bytes);
}
/**
 * A message for a page Worker started ahead (one of a dump's, waiting for its pages while the tree
 * is collected: vmareader.ts askVmas): posted before any job, so taken before them. False when
 * there is none.
 */
export function postToSpareWorker(msg: object): boolean {
  return spare?.postLast(msg) ?? false;
}
export function stopPageWorkers() {
  spare?.close();
  spare = undefined;
}

/** The pool for a run of nw Workers: the ones started ahead when there are, else new ones. */
function takePool(nw: number): { pool: Pool; shared: boolean } {
  if (nw > 0 && spare) return { pool: spare, shared: true };
  return { pool: new Pool(nw), shared: false };
}
/** After a run: a pool of its own is closed; the shared one too when the run failed half-way (its
 * slots may still be busy). */
function endPool(p: { pool: Pool; shared: boolean }, ok: boolean) {
  if (p.shared && ok && p.pool.parallel) return;
  p.pool.close();
  if (p.shared) spare = undefined;
}

/** The Worker entry point: next to this file in the source tree; in the compiled executable the
 * extra entry point src/codec/worker.ts (scripts/build.ts), embedded as codec/worker.js under its
 * root. Not found through import.meta.url there: in a --bytecode executable that names the source
 * file the build read (/path/of/the/checkout/src/codec/pipeline.ts), so the Workers would load and
 * transpile whatever source sits there now (another version, or nothing: then no Workers at all). */
export function workerUrl(): string | URL {
  if (Bun.main.startsWith("/$bunfs/")) return "/$bunfs/root/codec/worker.js";
  return new URL("./worker.ts", import.meta.url);
}

/** Memory enough for Workers: this thread's loops over it tier up as long work (src/jit.ts). */
function largeWork(bytes: number) {
  if (jitIfLarge(bytes, WORKER_THRESHOLD))
    log.debug(`JIT tier-up thresholds x${WORK_JIT} from here on (${size(bytes)} of memory)`);
}

function workerCount(bytes: number): number {
  if (process.env.CRIU_BUN_WORKERS !== undefined) return Math.max(0, Number(process.env.CRIU_BUN_WORKERS) | 0);
  if (bytes < WORKER_THRESHOLD) return 0;
  const cpus = globalThis.navigator?.hardwareConcurrency ?? 2;
  return Math.max(1, Math.min(4, cpus));
}

/**
 * A dump's Workers: for a large dump one fewer than a restore's, this thread reading a share of the
 * blocks itself (Pool.run) instead of only waiting for theirs. One Worker is a whole JavaScript VM:
 * 3-4 MiB of a 4 GiB dump's peak RSS and ~0.065 s of CPU to start; on 2 CPUs one Worker and this
 * thread keep both busy as two Workers did (BENCHMARKS.md, twelfth session). CRIU_BUN_WORKERS,
 * when set, is the number of Workers either way.
 */
function dumpWorkerCount(bytes: number): number {
  const n = workerCount(bytes);
  return n > 1 && mainHelps(bytes) && process.env.CRIU_BUN_WORKERS === undefined ? n - 1 : n;
}
/** Whether this thread reads a share of a dump's blocks: from LEAN_MIN bytes of pages (4 GiB dumps
 * were not slower; at 1 GiB the A/B did not settle it; CRIU_BUN_MAIN_PAGES=on|off). */
function mainHelps(bytes: number): boolean {
  const env = process.env.CRIU_BUN_MAIN_PAGES;
  return env === "on" || (env !== "off" && bytes >= LEAN_MIN);
}

/**
 * A dump of this many bytes of pages or more unmaps the executable's pages it no longer uses at a
 * few moments (sys/ownpages.ts): before the page Workers start (the runtime's start and the
 * command's modules), once they are ready (their start) and after the first blocks, after the
 * memory (the page pipeline's code), before the pagemap image (the images' code) and once the
 * images are written. About 40 ms in all (the unmapping and the faults that map back what is used
 * again): 1-2% of a 4 GiB dump, whose peak RSS it cut from 84-87 to about 64 MiB with writePagemap's
 * and RunList's buffers given back (BENCHMARKS.md, twelfth session); 8% of a 1 GiB one, which peaks
 * at 72 MiB without it. CRIU_BUN_GIVE_BACK=on does it whatever the size, =off never.
 */
const LEAN_MIN = 2 ** 31;
/** ... and once more after this many bytes of its pages (see dumpPages). */
const OWN_PAGES_FIRST = 128 << 20;
/** Whether a dump of `bytes` of pages gives back its own unused pages (see LEAN_MIN). */
export function givesBackOwnPages(bytes: number): boolean {
  const env = process.env.CRIU_BUN_GIVE_BACK;
  return env === "on" || (env !== "off" && bytes >= LEAN_MIN);
}
/**
 * For a run of `bytes` of pages on `pool`'s Workers that gives back its own unused pages
 * (givesBackOwnPages): those the Workers' start touched, now, then those of the first blocks (the
 * JIT compiling the loops, the first collections) once OWN_PAGES_FIRST bytes of pages are done (the
 * rest of the pages reuse 20-27 MiB of code). Returns what to call with the bytes done so far.
 */
function ownPagesTrimmer(pool: Pool, bytes: number, verb: "read" | "written"): (done: number) => void {
  if (!pool.parallel || !givesBackOwnPages(bytes)) return () => {};
  giveBackOwnPages("page Workers ready");
  let at = OWN_PAGES_FIRST;
  return (done) => {
    if (done < at) return;
    giveBackOwnPages(`the first ${size(done)} of pages ${verb}`);
    at = Infinity;
  };
}
/** trimOwnPages, logged at -v4 with the moment `why`. */
export function giveBackOwnPages(why: string) {
  const t = trimOwnPages();
  log.debug(
    `own pages, ${why}: ${(t.bytes / 2 ** 20).toFixed(1)} MiB of the executable's read-only pages unmapped (${t.kept} written page(s) kept) in ${t.ms.toFixed(1)} ms${t.error ? `; stopped: ${t.error}` : ""}`
  );
}

// ---------------------------------------------------------------------------------------------
// Progress and memory

/** "12.3 GiB" style */
function size(n: number) {
  return n >= 1 << 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;
}

/** A progress line on stderr, only when stderr is a terminal and the work is large. */
class Progress {
  private on: boolean;
  private t0 = performance.now();
  private last = 0;
  done = 0;
  constructor(
    private what: string,
    private total: number
  ) {
    this.on = total > PROGRESS_MIN && !process.env.CRIU_BUN_NO_PROGRESS && isTerminal(2);
  }
  add(bytes: number) {
    this.done += bytes;
    if (!this.on) return;
    const now = performance.now();
    if (now - this.last < 200 && this.done < this.total) return;
    this.last = now;
    const s = (now - this.t0) / 1000;
    const rate = s > 0 ? this.done / s : 0;
    const eta = rate > 0 ? Math.max(0, (this.total - this.done) / rate) : 0;
    const line = `${this.what}: ${size(this.done)} of ${size(this.total)}, ${(rate / 1e9).toFixed(2)} GB/s, ETA ${eta.toFixed(1)} s`;
    try {
      require("../sys/fs").writeSync(2, `\r\x1b[K${line}`);
    } catch {}
  }
  end() {
    if (this.on)
      try {
        require("../sys/fs").writeSync(2, "\r\x1b[K");
      } catch {}
  }
}

/** Peak resident memory of criu-bun so far (VmHWM), in KiB; 0 when unknown. */
export function peakRssKb(): number {
  try {
    const m = /VmHWM:\s+(\d+)/.exec(readFileSync("/proc/self/status", "latin1"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Dump

interface PagesDumpResult {
  /** pagemap runs of the pages written (PE_PRESENT), sorted */
  runs: RunList;
  /** pages looked at / pages written */
  scanned: number;
  written: number;
  /** bytes of the pages file, bytes of raw pages in it */
  storedBytes: number;
  rawBytes: number;
  file: string;
}

/**
 * Dump the memory of a frozen process: write pages-<pagesId>.img (or .lz4 when compressing) and
 * pages-<pagesId>.idx into dir. memFd is an open /proc/PID/mem (for pages process_vm_readv
 * cannot read). Returns what pagemap-PID.img must list.
 */
/** want: the runs to read, when the caller chose them (memory tracking); else pagesToDump's */
export function dumpPages(o: {
  pid: number;
  vmas: DumpedVma[];
  memFd: number;
  dir: string;
  pagesId?: number;
  compress?: boolean;
  want?: PageRun[];
}): PagesDumpResult {
  const names = pagesNames(`pages-${o.pagesId ?? 1}.img`);
  const compress = !!o.compress;
  const dataFile = compress ? names.lz4 : names.img;
  const stale = compress ? names.img : names.lz4;
  if (existsSync(join(o.dir, stale))) unlinkSync(join(o.dir, stale));
  // a large process: the loops over its runs (pagesToDump) tier up too
  largeWork(o.vmas.reduce((n, v) => n + Number(v.end - v.start), 0));
  keepDumpAtDFG();
  const want = o.want ?? pagesToDump(o.pid, o.vmas);
  const totalPages = want.reduce((s, r) => s + r.nrPages, 0);
  const jobs = dumpJobs(want, o.vmas);
  const path = join(o.dir, dataFile);
  const fd = createNew(path, true);
  const index = new IndexWriter(compress);
  const addrs = new AddrHash();
  const runs = new RunList();
  let scanned = 0,
    written = 0,
    stored = 0;
  const progress = new Progress("dump", totalPages * PAGE);
  const nw = dumpWorkerCount(totalPages * PAGE);
  // uncompressed: each block is written where it belongs by the thread that read it (DumpOrder)
  const order = compress ? undefined : new DumpOrder();
  const t0 = performance.now();
  const p = takePool(nw);
  const pool = p.pool;
  let ok = false;
  try {
    pool.open(
      {
        pid: o.pid,
        memFd: o.memFd,
        pagesFd: -1,
        compress,
        outFd: order ? fd : undefined,
        order: order?.buffer,
        gcEvery: totalPages * PAGE >= LEAN_MIN ? undefined : { main: 0, worker: 0 },
      },
      totalPages * PAGE,
      // (the Workers started ahead for the whole tree were fewer if this thread helps)
      pool.parallel > 0 && (p.shared ? pool.withHelper : mainHelps(totalPages * PAGE))
    );
    const trimmed = ownPagesTrimmer(pool, totalPages * PAGE, "read");
    // (while this thread reads blocks too, its JavaScript stays in the interpreter as the Workers' does)
    const run = () =>
      pool.run<DumpJob>(
        jobs,
        (s) => {
          scanned += s.written;
          trimmed(scanned * PAGE);
          progress.add(s.written * PAGE);
          const raw = s.rawLen;
          if (order) {
            if (s.fileOff !== stored)
              throw new CriuError(
                "mem",
                `process ${o.pid}: a block of ${path} went to offset ${s.fileOff}, expected ${stored}`
              );
          } else if (raw) writeFull(fd, s.data.subarray(0, s.storedLen), `write ${path}`);
          if (!raw) return;
          stored += s.storedLen;
          for (let i = 0; i < s.nRuns; i++) addrs.add(s.runs[i * 2], s.runs[i * 2 + 1]);
          index.add({
            rawHash: s.rawHash,
            storedHash: s.storedHash,
            rawLen: raw,
            storedLen: s.storedLen,
            flags: s.flags & BLOCK_LZ4,
            addrHash: addrs.value(),
          });
          written += raw / PAGE;
          for (let i = 0; i < s.nRuns; i++) runs.add(s.runs[i * 2], s.runs[i * 2 + 1], PE.PRESENT);
        },
        (s) => new CriuError("mem", `process ${o.pid}: ${s.error()}`)
      );
    if (pool.helps) jitForBlocks(run);
    else run();
    if (order && order.end !== stored)
      throw new CriuError("mem", `process ${o.pid}: ${path} holds ${order.end} bytes of pages, expected ${stored}`);
    ok = true;
  } finally {
    endPool(p, ok);
    progress.end();
    closeSync(fd);
  }
  writeNewFile(join(o.dir, names.idx), index.bytes());
  const ms = performance.now() - t0;
  log.info(
    `Pages: ${scanned} scanned, ${written} written to ${dataFile} (${size(stored)}${compress ? `, ratio ${((written * PAGE) / Math.max(stored, 1)).toFixed(2)}` : ""}) in ${ms.toFixed(1)} ms, ${nw} worker(s)${pool.helps ? " and this thread" : ""}`
  );
  if (logLevel() >= LOG_DEBUG) log.debug(`criu-bun peak RSS (VmHWM): ${peakRssKb()} kB`);
  return { runs, scanned, written, storedBytes: stored, rawBytes: written * PAGE, file: dataFile };
}

/**
 * The functions this thread runs once per block or per run of pages of a dump (the blocks' results:
 * Slot's getters, the page index, the address hash, the run list; the pagemap image after them)
 * kept out of JavaScriptCore's top tier (bun:jsc noFTL), as a restore's Workers keep theirs
 * (jobs.ts restoreHotCode). At the dump's x16 thresholds ten of them reached FTL in a 1 GiB dump:
 * 36-49 ms of compiling on the JIT threads (BUN_JSC_reportCompileTimes), on the two CPUs the page
 * Workers need, for calls that take microseconds at DFG; 4 FTL compiles (5 ms) remain.
 */
let dumpAtDFG = false;
function keepDumpAtDFG() {
  if (dumpAtDFG) return;
  dumpAtDFG = true;
  const fns: unknown[] = [...pagemapWriterCode(), ...addrHashCode()];
  const methods = (proto: object, names: string[]) => {
    for (const n of names) {
      const d = Object.getOwnPropertyDescriptor(proto, n);
      if (typeof d?.value === "function") fns.push(d.value);
      if (d?.get) fns.push(d.get);
    }
  };
  methods(AddrHash.prototype, ["add", "flush", "value"]);
  methods(RunList.prototype, ["add", "push"]);
  methods(IndexWriter.prototype, ["add"]);
  methods(Slot.prototype, ["rawLen", "storedLen", "nRuns", "flags", "written", "fileOff", "rawHash", "storedHash"]);
  for (const f of fns) noFTL(f as (...a: unknown[]) => unknown);
}

function vmaKind(v: { status: number; prot: number }): number {
  return (
    (v.status & VMA.ANON_PRIVATE ? SEG_ANON : 0) |
    (v.prot & 1 ? SEG_READABLE : 0) |
    (v.prot & 2 ? SEG_WRITABLE : 0) |
    (v.status & (VMA.VDSO | VMA.VVAR | VMA.VSYSCALL) ? SEG_KERNEL : 0)
  );
}

/** Cut page runs into jobs of at most BLOCK_PAGES pages, segments split at VMA ends. */
function* dumpJobs(
  want: PageRun[],
  vmas: { start: bigint; end: bigint; status: number; prot: number }[]
): Generator<JobIn<DumpJob>> {
  let segs: number[] = [],
    pages = 0,
    vi = 0,
    seq = 0;
  for (const r of want) {
    let va = r.vaddr,
      left = r.nrPages;
    while (left > 0) {
      while (vi < vmas.length && vmas[vi].end <= va) vi++;
      const v = vmas[vi];
      if (!v || v.start > va) throw new CriuError("mem", `page 0x${va.toString(16)} is outside every VMA`);
      const inVma = Number((v.end - va) / 4096n);
      const n = Math.min(left, inVma, BLOCK_PAGES - pages);
      segs.push(Number(va), n, vmaKind(v));
      pages += n;
      left -= n;
      va += BigInt(n * PAGE);
      if (pages === BLOCK_PAGES) {
        yield { op: "dump", segs, seq: seq++ };
        segs = [];
        pages = 0;
      }
    }
  }
  if (pages) yield { op: "dump", segs, seq: seq++ };
}

// ---------------------------------------------------------------------------------------------
// Restore

interface PagesTask {
  pid: number;
  pm: PagemapTable;
  pagesFile: string;
  mm: { vmas: { start: bigint; end: bigint; status: number; prot: number; flags: number }[] };
}

interface Block {
  i: number;
  fileOff: number;
  rawLen: number;
  storedLen: number;
  flags: number;
  rawHash: bigint;
  storedHash: bigint;
  hasHash: boolean;
  xxh3: boolean;
  segs: number[];
}

const layouts = new Map<string, PagesLayout>();

const presentBytes = (t: PagesTask) => presentRuns(t.pm).bytes;

/**
 * Structural check of a task's pages (which file, sizes against pagemap and index). Cheap.
 * Replaces loadImages()'s own size check; throws CriuError.
 */
export function checkPages(dir: string, t: PagesTask): PagesLayout {
  const l = checkPagesLayout(dir, t.pagesFile, presentBytes(t), `pagemap-${t.pid}.img`);
  if (l.index) {
    const starts = new Float64Array(l.index.blocks.length * 2);
    if (
      checkAddrBinding(
        l.index,
        presentRuns(t.pm),
        join(dir, pagesNames(t.pagesFile).idx),
        join(dir, `pagemap-${t.pid}.img`),
        starts
      )
    )
      l.starts = starts;
  }
  layouts.set(`${dir}\0${t.pid}`, l);
  return l;
}

/** The blocks of a task's page stream, each with the target segments it covers. */
function* restoreBlocks(
  t: PagesTask,
  l: PagesLayout,
  lazy?: (v: { status: number; flags: number }) => boolean
): Generator<Block> {
  const vmas = t.mm.vmas;
  const present = presentRuns(t.pm),
    eAddr = present.va,
    eNr = present.nr;
  // addresses as doubles (exact: page aligned, and validatePagemap and validateMm keep them below
  // user space's end): a 1 GiB heap has 55,000 runs, cut here on the main thread while the Workers
  // fill; BigInt arithmetic on each cost as much CPU as checking their pages
  const vStart = new Float64Array(vmas.length),
    vEnd = new Float64Array(vmas.length);
  for (let i = 0; i < vmas.length; i++) {
    vStart[i] = Number(vmas[i].start);
    vEnd[i] = Number(vmas[i].end);
  }
  let ei = 0,
    inEntry = 0,
    vi = 0,
    fileOff = 0;
  const outside = (va: number): never => {
    throw new CriuError("restore", `pagemap-${t.pid}.img: page 0x${va.toString(16)} is outside every VMA`);
  };
  const take = (pages: number): number[] => {
    const segs: number[] = [];
    while (pages > 0) {
      if (ei >= eAddr.length)
        throw new CriuError("restore", `${l.dataFile} holds more pages than pagemap-${t.pid}.img lists`);
      const va = eAddr[ei] + inEntry * PAGE;
      while (vi < vmas.length && vEnd[vi] <= va) vi++;
      // pagemap entries are sorted; a page outside every VMA is an error caught here
      if (vi >= vmas.length || vStart[vi] > va) {
        vi = vmas.findIndex((x) => Number(x.start) <= va && va < Number(x.end));
        if (vi < 0) outside(va);
      }
      const v = vmas[vi];
      const inVma = Math.floor((vEnd[vi] - va) / PAGE);
      const n = Math.min(pages, eNr[ei] - inEntry, inVma);
      // validatePagemap() makes this impossible; it is what keeps this loop from spinning
      if (!(n > 0))
        throw new CriuError("restore", `pagemap-${t.pid}.img: page 0x${va.toString(16)} does not fit its VMA`);
      // memory left to the lazy-pages daemon: not written (as the kernel's own pages are not)
      segs.push(va, n, vmaKind(v) | (lazy?.(v) ? SEG_KERNEL : 0));
      pages -= n;
      inEntry += n;
      if (inEntry === eNr[ei]) {
        ei++;
        inEntry = 0;
      }
    }
    return segs;
  };
  if (l.index) {
    for (let i = 0; i < l.index.blocks.length; i++) {
      const b = l.index.blocks[i];
      yield {
        i,
        fileOff,
        rawLen: b.rawLen,
        storedLen: b.storedLen,
        flags: b.flags,
        rawHash: b.rawHash,
        storedHash: b.storedHash,
        hasHash: true,
        xxh3: l.index.xxh3,
        segs: take(b.rawLen / PAGE),
      };
      fileOff += b.storedLen;
    }
  } else {
    // an image without our index (CRIU's): 1 MiB blocks of raw pages, nothing to verify
    const total = presentBytes(t);
    for (let i = 0, off = 0; off < total; i++) {
      const raw = Math.min(BLOCK, total - off);
      yield {
        i,
        fileOff: off,
        rawLen: raw,
        storedLen: raw,
        flags: 0,
        rawHash: 0n,
        storedHash: 0n,
        hasHash: false,
        xxh3: false,
        segs: take(raw / PAGE),
      };
      off += raw;
    }
  }
}

function blockWhere(dir: string, t: PagesTask, l: PagesLayout, job: Block | RestoreJob): string {
  const s = job.segs;
  const first = s[0] ?? 0;
  let lastEnd = first;
  for (let i = 0; i < s.length; i += 3) lastEnd = s[i] + s[i + 1] * PAGE;
  return (
    `${join(dir, l.dataFile)}: block ${"block" in job ? job.block : job.i} (file offset ${job.fileOff}, ${job.storedLen} bytes) ` +
    `holding the pages of process ${t.pid} at 0x${first.toString(16)}-0x${lastEnd.toString(16)}`
  );
}

function restoreJobs(
  op: "fill",
  blocks: Generator<Block>,
  cow = false,
  skipUnwritten = false
): IterableIterator<JobIn<RestoreJob>> {
  return (function* () {
    for (const b of blocks) {
      // nothing of it to write (all lazy memory, or the kernel's): not even read (the daemon
      // reading it checks it)
      let skip = skipUnwritten;
      for (let i = 2; i < b.segs.length && skip; i += 3) if (!(b.segs[i] & SEG_KERNEL)) skip = false;
      if (skip && b.segs.length) continue;
      yield {
        op,
        block: b.i,
        fileOff: b.fileOff,
        rawLen: b.rawLen,
        storedLen: b.storedLen,
        flags: b.flags,
        rawHash: b.rawHash,
        storedHash: b.storedHash,
        hasHash: b.hasHash,
        xxh3: b.xxh3,
        segs: b.segs,
        cow,
      };
    }
  })();
}

function layoutOf(dir: string, t: PagesTask) {
  return layouts.get(`${dir}\0${t.pid}`) ?? checkPages(dir, t);
}

/** A shared array of n doubles (the page Workers read it where it is). */
const sharedF64 = (n: number) => new Float64Array(new SharedArrayBuffer(Math.max(n, 1) * 8)).subarray(0, n);

/**
 * A task's blocks for the page Workers to take themselves (jobs.ts BlockTable): per block its place
 * in the pages file, lengths, flags and hashes, and where its pages start in the pagemap's
 * PE_PRESENT runs (run, pages into it); the runs and the VMAs (start, end, kind) beside them.
 */
function blockTable(t: PagesTask, l: PagesLayout, cow: boolean): BlockTable {
  const present = presentRuns(t.pm);
  const shared = (a: Float64Array) => {
    if (a.buffer instanceof SharedArrayBuffer) return a;
    const s = sharedF64(a.length);
    s.set(a);
    return s;
  };
  const runVa = shared(present.va),
    runNr = shared(present.nr);
  const vmas = t.mm.vmas,
    vm = sharedF64(vmas.length * 3);
  for (let i = 0; i < vmas.length; i++) {
    vm[i * 3] = Number(vmas[i].start);
    vm[i * 3 + 1] = Number(vmas[i].end);
    vm[i * 3 + 2] = vmaKind(vmas[i]);
  }
  const index = l.index;
  const total = present.bytes;
  const n = index ? index.blocks.length : Math.ceil(total / BLOCK);
  const blocks = sharedF64(n * TB_FIELDS),
    hashes = new BigUint64Array(new SharedArrayBuffer(Math.max(n, 1) * 16)).subarray(0, n * 2);
  // where each block starts in the runs: as the index check found it, else walked here
  const starts = l.starts?.length === n * 2 ? l.starts : undefined;
  let fileOff = 0,
    ei = 0,
    inEntry = 0;
  for (let i = 0; i < n; i++) {
    const b = index?.blocks[i];
    const rawLen = b ? b.rawLen : Math.min(BLOCK, total - i * BLOCK),
      storedLen = b ? b.storedLen : rawLen;
    const o = i * TB_FIELDS;
    blocks[o] = fileOff;
    blocks[o + 1] = rawLen;
    blocks[o + 2] = storedLen;
    blocks[o + 3] = b ? b.flags : 0;
    blocks[o + 4] = starts ? starts[i * 2] : ei;
    blocks[o + 5] = starts ? starts[i * 2 + 1] : inEntry;
    if (b) {
      hashes[i * 2] = b.rawHash;
      hashes[i * 2 + 1] = b.storedHash;
    }
    fileOff += storedLen;
    // the next block's first page (a run of 0 pages is passed over; validatePagemap refuses them)
    for (let p = starts ? 0 : rawLen / PAGE; p > 0 && ei < runNr.length; ) {
      const k = Math.min(p, runNr[ei] - inEntry);
      p -= k;
      inEntry += k;
      if (inEntry >= runNr[ei]) {
        ei++;
        inEntry = 0;
      }
    }
  }
  return BlockTable.make({
    runVa,
    runNr,
    vmas: vm,
    blocks,
    hashes,
    n,
    hasHash: !!index,
    xxh3: !!index?.xxh3,
    cow,
  });
}

/**
 * Write a task's pages into the process `pid` (its VMAs mapped already). memFd: its /proc/PID/mem
 * opened read-write (for pages process_vm_writev cannot write). Returns pages written.
 */
export function fillPages(
  dir: string,
  t: PagesTask,
  pid: number,
  memFd: number,
  cow = false,
  lazy?: (v: { status: number; flags: number }) => boolean,
  uffd = -1,
  punch = false
): number {
  const l = layoutOf(dir, t);
  const total = presentBytes(t);
  // with lazy memory left out, only the blocks holding pages outside it are read: the workers and
  // the codec for those (a few file-mapping pages of a post-copy restore: no WebAssembly to compile)
  const jobs = lazy ? [...restoreJobs("fill", restoreBlocks(t, l, lazy), cow, true)] : undefined;
  const runBytes = jobs ? jobs.reduce((n, j) => n + j.rawLen, 0) : total;
  const path = join(dir, l.dataFile);
  // --auto-dedup: each block is punched out of the file once written (jobs.ts punchStored)
  const fd = openSync(path, punch ? constants.O_RDWR | constants.O_NOFOLLOW : "r");
  largeWork(runBytes);
  const nw = workerCount(runBytes);
  const progress = new Progress("restore", total);
  let written = 0;
  const t0 = performance.now();
  const p = takePool(nw);
  const pool = p.pool;
  let ok = false;
  try {
    pool.open({ pid, memFd, pagesFd: fd, punch, compress: false, uffd }, runBytes);
    if (nw) log.debug(`page workers ready for ${pid} after ${(performance.now() - t0).toFixed(1)} ms`);
    const trimmed = ownPagesTrimmer(pool, runBytes, "written");
    let filled = 0;
    if (!jobs && pool.parallel && process.env.CRIU_BUN_BLOCK_TABLE !== "0" && process.env.CRIU_BUN_ORDERED !== "1") {
      // the Workers take the blocks from a shared table and cut them themselves (CRIU_BUN_BLOCK_TABLE=0:
      // posted one by one, as a lazy restore's are)
      const tb = performance.now();
      const table = blockTable(t, l, cow);
      log.debug(
        `${table.d.n} blocks in a shared table (${table.d.runVa.length} runs, ${t.mm.vmas.length} VMAs) in ${(performance.now() - tb).toFixed(1)} ms: the Workers take them`
      );
      pool.runTable(
        table,
        (pages) => {
          progress.add(pages * PAGE - filled);
          trimmed((filled = pages * PAGE));
        },
        givesBackOwnPages(runBytes) ? OWN_PAGES_FIRST / PAGE : 0
      );
      const bad = table.errorBlock;
      if (bad >= 0) {
        // worded as the posted jobs word it (restoreBlocks throws first where the pagemap does not hold the block)
        for (const b of restoreBlocks(t, l))
          if (b.i === bad) throw new CriuError("restore", `${blockWhere(dir, t, l, b)}: ${table.error()}`);
      }
      if (bad !== -1) throw new CriuError("restore", `${path}: ${table.error()}`);
      if (table.i32[TB_BLOCKS] !== table.d.n)
        throw new CriuError("restore", `${path}: ${table.i32[TB_BLOCKS]} of ${table.d.n} blocks written`);
      written = table.i32[TB_WRITTEN];
      // (a run the kernel does not take whole: a page there already, the map changing; none in a
      // plain restore: more says the runs' copies went wrong and the pages went one ioctl each)
      log.debug(`UFFDIO_COPY runs not taken whole, their pages redone one by one: ${table.i32[TB_ONE_BY_ONE]}`);
    } else
      pool.run<RestoreJob>(
        jobs ? jobs.values() : restoreJobs("fill", restoreBlocks(t, l), cow),
        (s) => {
          written += s.written;
          progress.add(s.rawLen);
          trimmed((filled += s.rawLen));
        },
        (s, job) => new CriuError("restore", `${blockWhere(dir, t, l, job)}: ${s.error()}`),
        // each block is checked and written on its own: taken as the Workers finish them
        true
      );
    ok = true;
  } finally {
    endPool(p, ok);
    progress.end();
    closeSync(fd);
  }
  log.info(
    `Pages: ${written} written into ${pid} from ${l.dataFile} in ${(performance.now() - t0).toFixed(1)} ms, ${nw} worker(s)`
  );
  if (logLevel() >= LOG_DEBUG) log.debug(`criu-bun peak RSS (VmHWM): ${peakRssKb()} kB`);
  return written;
}
