// A page Worker: one WASM codec instance, jobs by postMessage, results into shared slots that
// the (synchronously waiting) main thread reads. See src/codec/pipeline.ts.
import {
  BlockCore,
  coreCodec,
  BlockTable,
  Slot,
  runInto,
  I_CTL,
  I_DONE,
  WORKER_GC_EVERY,
  slotBytes,
  restoreHotCode,
  type CoreInit,
  type Job,
} from "./jobs";
import { noFTL } from "bun:jsc";
import type { PageCodec } from "./codec";
import { gettid, setTidNice } from "../sys/proc";
import { serveVmas, serveVmasOnce } from "./vmaserve";
import { START_JIT, WORK_JIT, BLOCKS_JIT } from "../jit";

/**
 * JavaScriptCore's tier-up thresholds in this Worker's VM while it dumps: x1000, so its JavaScript
 * stays in the interpreter. A dump block's JavaScript is a few calls and a loop over its 256 page
 * flags; the pages themselves go through the kernel, WASM and native XXH3. Left to tier up, each
 * Worker compiled the same functions through DFG and FTL on the JIT threads while the pages went:
 * about 0.09 s of CPU and 400 page faults per 1 GiB dump on the 2 cores the Workers need (A/B in
 * BENCHMARKS.md, tenth session). A restore's Workers go to WORK_JIT (src/jit.ts; a Worker starts at
 * the executable's START_JIT): fillCow compares pages word by word in JavaScript and needs the JIT.
 */
const DUMP_JIT = BLOCKS_JIT,
  RESTORE_JIT = WORK_JIT;
let jitPolicy = START_JIT;
function setJit(scale: number) {
  if (jitPolicy === scale) return;
  Bun.unsafe.setJITPolicy(scale);
  jitPolicy = scale;
}
/** Jobs between garbage collections in this Worker, 0 for none (the run's, see GC_EVERY in pipeline.ts) */
let gcEvery = WORKER_GC_EVERY;
let jobsDone = 0;
let noFtlDone = false;

declare const self: Worker;
let core: BlockCore | undefined;
/** this Worker's own result slot for the blocks it takes from a BlockTable */
let own: Slot | undefined;
let slots: Slot[] = [];
let startError = "";
let module: WebAssembly.Module | undefined;
/** the codec made at "start" (jobs.ts coreCodec), taken by each run's core */
let codec: PageCodec | undefined;
let codecError = "";
/** the main thread's nice value, to go back to at "open" (this Worker started lower: pipeline.ts Pool) */
let bootNice: number | undefined;
let ready: Int32Array | undefined;

self.onmessage = (e: MessageEvent) => {
  const m = e.data;
  // "vmas": this Worker reads smaps for the dump instead (vmareader.ts), and nothing else
  if (m.op === "vmas") {
    serveVmas(m.ctl, m.port);
    return;
  }
  // "vmas1": one process's VMAs for the dump, while this page Worker waits for its pages
  if (m.op === "vmas1") {
    serveVmasOnce(m.ctl);
    return;
  }
  // "start": the slots and the codec's module, once; "open": the process and files of a run (one
  // per process of a tree), acknowledged through `ready`
  if (m.op === "start") {
    slots = (m.slots as SharedArrayBuffer[]).map((b) => new Slot(b));
    ready = new Int32Array(m.ready as SharedArrayBuffer);
    module = m.module;
    bootNice = m.nice;
    if (m.codecHere) {
      // a restore's Workers: the codec module compiled here and the codec made now, while the main
      // thread loads the images, not there (the compile) nor at "open" (which it waits for)
      try {
        codec = coreCodec(module);
      } catch (err) {
        codecError = `page worker start: ${err instanceof Error ? err.message : err}`;
      }
    }
    return;
  }
  if (m.op === "open") {
    if (bootNice !== undefined) {
      // started at a lower priority (pipeline.ts Pool): now the main thread's again
      setTidNice(gettid(), bootNice);
      bootNice = undefined;
    }
    setJit(m.pagesFd < 0 ? DUMP_JIT : RESTORE_JIT); // pagesFd: the file a restore reads, -1 for a dump
    if (m.pagesFd >= 0 && !noFtlDone && process.env.CRIU_BUN_RESTORE_FTL !== "1") {
      // a restore's per-block code stays at DFG (jobs.ts restoreHotCode)
      for (const f of restoreHotCode()) noFTL(f as (...a: unknown[]) => unknown);
      noFtlDone = true;
    }
    gcEvery = m.gcEvery?.worker ?? WORKER_GC_EVERY;
    jobsDone = 0;
    const init: CoreInit = {
      pid: m.pid,
      memFd: m.memFd,
      pagesFd: m.pagesFd,
      punch: m.punch,
      compress: m.compress,
      module,
      outFd: m.outFd,
      order: m.order,
      uffd: m.uffd,
    };
    core = undefined;
    startError = codecError;
    if (!startError)
      try {
        core = new BlockCore(init, codec);
      } catch (err) {
        startError = `page worker start: ${err instanceof Error ? err.message : err}`;
      }
    Atomics.add(ready!, 0, 1);
    Atomics.notify(ready!, 0);
    return;
  }
  // "table": a restore's blocks, taken from the shared table until none is left (jobs.ts BlockTable)
  if (m.op === "table") {
    const t = new BlockTable(m.table);
    if (!core) t.fail(-2, startError || "page worker not started");
    else {
      own ??= new Slot(new ArrayBuffer(slotBytes(4096))); // (only its header is used)
      core.runTable(t, own, () => {
        if (++jobsDone === gcEvery) {
          Bun.gc(false);
          jobsDone = 0;
        }
      });
    }
    t.leave();
    return;
  }
  const job = m as Job;
  const out = slots[job.slot];
  let ctl: number;
  if (!core) {
    out.setError(startError || "page worker not started");
    ctl = 3;
  } else ctl = runInto(core, job, out);
  Atomics.store(out.i32, I_CTL, ctl);
  Atomics.notify(out.i32, I_CTL);
  // (a restore's run waits for any of its slots: pipeline.ts runAny)
  Atomics.add(ready!, I_DONE, 1);
  Atomics.notify(ready!, I_DONE);
  if (++jobsDone === gcEvery) {
    Bun.gc(false);
    jobsDone = 0;
  }
};
