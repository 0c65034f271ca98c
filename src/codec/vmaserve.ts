// The VMA reader Worker's side (vmareader.ts): the page Worker's entry point (worker.ts) serves
// op "vmas" with this, one request at a time, for as long as it lives.
import type { MessagePort } from "node:worker_threads";
import { readVmas, readText, smapsSkeleton, gettid, type Vma } from "../sys/proc";
import { errorMessage } from "../log";

// the control word: the Worker's state and the request's (STARTING until the Worker serves)
export const STARTING = 0,
  IDLE = 1,
  ASKED = 2,
  TAKEN = 3;
const DONE = 4;
export const I_STATE = 0,
  I_PID = 1,
  I_TID = 2,
  /** serveVmasOnce: the bytes of the answer's text after ONCE_TEXT_AT, -1 when there is none */
  I_LEN = 3;
/** serveVmasOnce: where the answer's text starts in its buffer */
export const ONCE_TEXT_AT = 16;

/** Serve requests until the Worker ends: each one's VMAs (or its error) posted on port. */
export function serveVmas(ctlBuffer: SharedArrayBuffer, port: MessagePort) {
  const ctl = new Int32Array(ctlBuffer);
  // (the asking thread gives this one its own priority before each request: vmareader.ts)
  Atomics.store(ctl, I_TID, gettid());
  // idle, unless a request came while this Worker was starting (vmareader.ts asks then too)
  Atomics.compareExchange(ctl, I_STATE, STARTING, IDLE);
  Atomics.notify(ctl, I_STATE);
  for (;;) {
    while (Atomics.load(ctl, I_STATE) !== ASKED) Atomics.wait(ctl, I_STATE, Atomics.load(ctl, I_STATE));
    if (Atomics.compareExchange(ctl, I_STATE, ASKED, TAKEN) !== ASKED) continue; // taken back
    const pid = Atomics.load(ctl, I_PID);
    const t0 = performance.now();
    let msg: { vmas?: Vma[]; error?: string; ms?: number };
    try {
      msg = { vmas: readVmas(pid), ms: performance.now() - t0 };
    } catch (e) {
      msg = { error: errorMessage(e) };
    }
    port.postMessage(msg);
    Atomics.store(ctl, I_STATE, DONE);
    Atomics.notify(ctl, I_STATE);
  }
}

/**
 * A page Worker's one request (op "vmas1", vmareader.ts askVmas while the page Workers wait for
 * the dump's pages): the VMAs of the process asked, read from smaps here, handed back as the
 * smaps lines the parser reads (smapsSkeleton, latin1) after ONCE_TEXT_AT in `buffer`, their
 * length at I_LEN (-1: none, the asker reads smaps itself: an error, or more text than fits).
 * Nothing when the asker took the request back first.
 */
export function serveVmasOnce(buffer: SharedArrayBuffer) {
  const ctl = new Int32Array(buffer, 0, 4);
  if (Atomics.compareExchange(ctl, I_STATE, ASKED, TAKEN) !== ASKED) return;
  let len = -1;
  try {
    const text = Buffer.from(smapsSkeleton(readText(`/proc/${Atomics.load(ctl, I_PID)}/smaps`)), "latin1");
    if (ONCE_TEXT_AT + text.length <= buffer.byteLength) {
      new Uint8Array(buffer, ONCE_TEXT_AT, text.length).set(text);
      len = text.length;
    }
  } catch {
    // read again by the asker, whose error it then is
  }
  Atomics.store(ctl, I_LEN, len);
  Atomics.store(ctl, I_STATE, DONE);
  Atomics.notify(ctl, I_STATE);
}
