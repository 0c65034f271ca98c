// A frozen process's VMAs with their VmFlags (/proc/PID/smaps) read on a Worker, while the main
// thread collects the rest of its state and its memory. Reading smaps walks every page table of the
// process (tens of ms per GiB resident, more on a busy machine), and nothing but the VmFlags needs
// it: the VMAs themselves come from /proc/PID/maps (no walk) at once, and the flags join them later
// (resources/memory.ts completeVmas). Exact: the tree is frozen from before the request until after
// the answer is used, and completeVmas checks that smaps lists the very VMAs maps did.
//
// One Worker (the page Worker's entry point, op "vmas"), started by the first use and kept for the
// following dumps of this run (migrate's rounds): it takes ~0.1-0.3 s to start. A request it has not
// taken by the time the answer is needed (the Worker still starting) is taken back and read here.
import type { MessagePort } from "node:worker_threads";
import { readVmas, parseSmaps, threadNice, setTidNice, type Vma } from "../sys/proc";
import { workerUrl, postToSpareWorker } from "./pipeline";
import { STARTING, IDLE, ASKED, TAKEN, I_STATE, I_PID, I_TID, I_LEN, ONCE_TEXT_AT } from "./vmaserve";
import { log, errorMessage, CriuError } from "../log";

let reader: VmaReader | undefined;

// node:worker_threads is loaded by the first VmaReader, not with the dump's modules: a small
// process's dump never starts one, and loading the module cost ~1 ms of its start-up
const threads = (): typeof import("node:worker_threads") => require("node:worker_threads");

/** One process's VMAs asked of the Worker; join() has them (or reads them here). */
export interface PendingVmas {
  join(): Vma[];
}

class VmaReader {
  private readonly ctl = new Int32Array(new SharedArrayBuffer(16));
  private readonly port: MessagePort;
  private readonly worker: Worker;
  private busy = false;
  /** the nice value the Worker's thread was given last */
  private nice = 0;

  constructor() {
    const ch = new (threads().MessageChannel)();
    this.port = ch.port1;
    this.worker = new Worker(workerUrl(), { smol: true });
    this.worker.postMessage({ op: "vmas", ctl: this.ctl.buffer, port: ch.port2 }, [ch.port2]);
    this.worker.unref();
  }

  ask(pid: number): PendingVmas {
    const here = { join: () => readVmas(pid) };
    // one answer at a time: else read on this thread when it is needed. A Worker still starting
    // takes the request once it runs (else it is taken back at join() and read here)
    const state = Atomics.load(this.ctl, I_STATE);
    if (this.busy || (state !== IDLE && state !== STARTING)) return here;
    this.busy = true;
    Atomics.store(this.ctl, I_PID, pid);
    // the Worker at this thread's priority before it is woken (migrate's frozen window runs at
    // nice -20: a Worker left at 0 was seen waking too late on a busy machine to take the request)
    const nice = threadNice(),
      tid = Atomics.load(this.ctl, I_TID);
    if (nice !== undefined && tid > 0 && nice !== this.nice && setTidNice(tid, nice)) this.nice = nice;
    Atomics.store(this.ctl, I_STATE, ASKED);
    Atomics.notify(this.ctl, I_STATE);
    const t0 = performance.now();
    return {
      join: () => {
        try {
          // not taken yet: taken back and read here
          if (Atomics.compareExchange(this.ctl, I_STATE, ASKED, IDLE) === ASKED) {
            log.debug(`process ${pid}: the VMA reader did not take the request; smaps read here`);
            return readVmas(pid);
          }
          const tw = performance.now();
          while (Atomics.load(this.ctl, I_STATE) === TAKEN) Atomics.wait(this.ctl, I_STATE, TAKEN, 1000);
          const m = threads().receiveMessageOnPort(this.port)?.message as { vmas?: Vma[]; error?: string; ms?: number };
          Atomics.store(this.ctl, I_STATE, IDLE);
          if (!m?.vmas) {
            // the same read here gives the same error (a process gone ...) as without the Worker
            log.debug(`process ${pid}: the VMA reader failed (${m?.error ?? "no answer"}); smaps read here`);
            return readVmas(pid);
          }
          log.debug(
            `process ${pid}: VMAs and their flags read from smaps on a Worker in ${m.ms?.toFixed(1)} ms; waited ${(performance.now() - tw).toFixed(1)} ms for them, ${(tw - t0).toFixed(1)} ms after asking`
          );
          return m.vmas;
        } finally {
          this.busy = false;
        }
      },
    };
  }
}

/**
 * The VMA reader Worker started now, for a dump of a large process (its smaps walk, 0.1-0.5 s at
 * 4 GiB on this VM, then goes beside the pages instead of before them): started with the page
 * Workers, at the freeze, it takes the request whenever it is up (dump.ts asks at the task state,
 * joins after the memory dump).
 */
export function startVmaReader() {
  if (process.env.CRIU_BUN_VMA_READER === "off" || reader) return;
  try {
    reader = new VmaReader();
  } catch (e) {
    log.debug(`no VMA reader Worker (${errorMessage(e)}): smaps read on this thread`);
  }
}
/** Whether the VMA reader Worker was started (by startVmaReader or a first askVmas). */
export const vmaReaderStarted = () => reader !== undefined;

/**
 * The VMAs of frozen process pid, with their flags, read on the VMA reader Worker from now on
 * (started on the first call: that one's are read here when asked for). The process must stay
 * frozen, its memory map untouched, until join() returned.
 */
export function askVmas(pid: number): PendingVmas {
  if (process.env.CRIU_BUN_VMA_READER === "off") return { join: () => readVmas(pid) };
  try {
    reader ??= new VmaReader();
  } catch (e) {
    log.debug(`no VMA reader Worker (${errorMessage(e)}): smaps read on this thread`);
    return { join: () => readVmas(pid) };
  }
  return reader.ask(pid);
}

/** The room for one answer of a page Worker (smapsSkeleton text: about 120 bytes a VMA): more VMAs
 * than fit are read on the asking thread, as without the Worker */
const ONCE_BYTES = 1 << 20;

/**
 * The VMAs of frozen process pid, with their flags, read from smaps by one of the dump's page
 * Workers while they wait for its pages (they are started at the freeze: pipeline.ts
 * startPageWorkers), and this thread collects the rest of the task state, its fds and its pagemap:
 * smaps walks the page tables of the whole process (16-24 ms for a GiB here), which then no longer
 * goes before the pages on this thread. undefined when no page Worker waits (a small process),
 * or with CRIU_BUN_VMA_READER=off. The process must stay frozen, its memory map untouched, until
 * join() returned; a request the Worker has not taken by then is taken back and read here.
 */
export function askVmasOfPageWorker(pid: number): PendingVmas | undefined {
  if (process.env.CRIU_BUN_VMA_READER === "off") return undefined;
  const buffer = new SharedArrayBuffer(ONCE_BYTES);
  const ctl = new Int32Array(buffer, 0, 4);
  Atomics.store(ctl, I_PID, pid);
  Atomics.store(ctl, I_STATE, ASKED);
  if (!postToSpareWorker({ op: "vmas1", ctl: buffer })) return undefined;
  const t0 = performance.now();
  return {
    join: () => {
      if (Atomics.compareExchange(ctl, I_STATE, ASKED, IDLE) === ASKED) {
        log.debug(`process ${pid}: the page Worker did not take the VMA request; smaps read here`);
        return readVmas(pid);
      }
      const tw = performance.now(),
        deadline = Date.now() + 120_000;
      while (Atomics.load(ctl, I_STATE) === TAKEN) {
        Atomics.wait(ctl, I_STATE, TAKEN, 1000);
        if (Date.now() > deadline) throw new CriuError("mem", `process ${pid}: a page Worker read smaps for 120 s`);
      }
      const len = Atomics.load(ctl, I_LEN);
      if (len < 0) {
        // (the same read here gives the same error, or the VMAs that did not fit)
        log.debug(`process ${pid}: no VMAs from the page Worker; smaps read here`);
        return readVmas(pid);
      }
      const vmas = parseSmaps(Buffer.from(new Uint8Array(buffer, ONCE_TEXT_AT, len)).toString("latin1"));
      log.debug(
        `process ${pid}: ${vmas.length} VMAs and their flags read from smaps on a page Worker; waited ${(performance.now() - tw).toFixed(1)} ms for them, ${(tw - t0).toFixed(1)} ms after asking`
      );
      return vmas;
    },
  };
}
