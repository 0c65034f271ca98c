// A restore that stops making progress ends within --timeout with one line. The restore itself
// is synchronous (ptrace waits, page loops), so a thread of its own watches a progress counter
// the restore bumps (every phase, injected syscall and page block). When it has not moved for
// the timeout, the watcher logs the error line (stderr, or the -o file) and kills criu-bun: every process
// being built is traced with PTRACE_O_EXITKILL, so it dies too and nothing half-built remains.
import { context, setPhaseHook, logBuffer } from "./log";

const PHASE_BYTES = 512;
let counter: Int32Array | undefined;
let phaseBuf: Uint8Array | undefined;
let worker: Worker | undefined;
let lastPhase = "";
let suffix = "";

/** Said after the phase in the timeout's line (what the restore may be waiting for), "" for nothing. */
export function setStallHint(s: string) { suffix = s ? ` (${s})` : ""; lastPhase = ""; tick(); }

/** The restore moved on (cheap: call it as often as you like). */
export function tick() {
  if (!counter) return;
  Atomics.add(counter, 0, 1);
  const p = context.phase + (context.pid ? ` for process ${context.pid}` : "") + suffix;
  if (p !== lastPhase) {
    lastPhase = p;
    const b = new TextEncoder().encode(p).subarray(0, PHASE_BYTES - 1);
    phaseBuf!.fill(0);
    phaseBuf!.set(b);
  }
}

// the watcher: plain JS, run from a Blob so the compiled executable needs no extra entry point
const WATCHER = `
self.onmessage = (ev) => {
  const { sab, phase, timeoutMs, logFd, what, logBuf } = ev.data;
  const a = new Int32Array(sab), p = new Uint8Array(phase);
  const fs = require("node:fs");
  let last = Atomics.load(a, 0), since = Date.now();
  for (;;) {
    Atomics.wait(a, 1, 0, 250);
    if (Atomics.load(a, 1) !== 0) return;
    const v = Atomics.load(a, 0);
    if (v !== last || Atomics.load(a, 2) > 0) { last = v; since = Date.now(); continue; }
    if (Date.now() - since < timeoutMs) continue;
    const n = p.indexOf(0);
    const at = new TextDecoder().decode(p.slice(0, n < 0 ? p.length : n));
    const line = "Error (" + what + "): no progress for " + (timeoutMs / 1000) + " s" + (at ? " in " + at : "") + " (--timeout); stopped, nothing restored\\n";
    // the lines the restore thread buffered first (log.ts flushLogFrom)
    const lb = new Int32Array(logBuf, 0, 2), len = Atomics.exchange(lb, 0, 0);
    if (len > 0) { try { fs.writeSync(Atomics.load(lb, 1), new Uint8Array(logBuf, 8, len)); } catch {} }
    try { fs.writeSync(logFd, line); } catch {}
    process.kill(process.pid, "SIGKILL");
  }
};`;

/** Start watching (timeoutMs without progress ends criu-bun); logFd: where the log goes (log.ts). */
export function startWatchdog(timeoutMs: number, logFd: number, what = "restore") {
  if (worker || !(timeoutMs > 0)) return;
  const sab = new SharedArrayBuffer(12), phase = new SharedArrayBuffer(PHASE_BYTES);
  counter = new Int32Array(sab);
  phaseBuf = new Uint8Array(phase);
  const url = URL.createObjectURL(new Blob([WATCHER], { type: "application/javascript" }));
  worker = new Worker(url);
  worker.postMessage({ sab, phase, timeoutMs, logFd, what, logBuf: logBuffer() });
  worker.unref?.();
  setPhaseHook(tick);
}

/** Run fn without the clock running (waiting for a hook's answer is not a stall). */
export function whilePaused<T>(fn: () => T): T {
  if (!counter) return fn();
  Atomics.add(counter, 2, 1);
  try { return fn(); } finally { Atomics.sub(counter, 2, 1); tick(); }
}

export function stopWatchdog() {
  if (!counter || !worker) return;
  setPhaseHook(undefined);
  Atomics.store(counter, 1, 1);
  Atomics.notify(counter, 1);
  worker.terminate();
  worker = undefined;
  counter = undefined;
  suffix = "";
}
