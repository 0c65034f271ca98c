// A restore that stops making progress ends within --timeout with one line. The restore itself
// is synchronous (ptrace waits, page loops), so a kernel timer watches it (sys/stallkill.ts): the
// restore re-arms it as it moves on (every phase, injected syscall and page block); when it
// expires, its signal handler (machine code, not JavaScript) logs the error line (stderr, or the
// -o file) and kills criu-bun: every process being built is traced with PTRACE_O_EXITKILL, so it
// dies too and nothing half-built remains.
import { context, setPhaseHook, logBuffer } from "./log";
import { stallKillerArm, stallKillerLine, stallKillerStart, stallKillerStop } from "./sys/stallkill";

// the timer is re-armed at most every REARM_MS, each time for the timeout + REARM_MS: it expires
// between timeout and timeout + REARM_MS after the last progress, never before
const REARM_MS = 100;
let running = false;
let timeout = 0;
let fd = 2;
let verb = "restore";
let lastArm = 0;
let paused = 0;
let lastPhase = "";
let suffix = "";

/** Said after the phase in the timeout's line (what the restore may be waiting for), "" for nothing. */
export function setStallHint(s: string) {
  suffix = s ? ` (${s})` : "";
  lastPhase = "";
  tick();
}

/** The restore moved on (cheap: call it as often as you like). */
export function tick() {
  if (!running) return;
  const p = context.phase + (context.pid ? ` for process ${context.pid}` : "") + suffix;
  if (p !== lastPhase) {
    lastPhase = p;
    stallKillerLine(
      fd,
      `Error (${verb}): no progress for ${timeout / 1000} s${p ? ` in ${p}` : ""} (--timeout); stopped, nothing restored\n`
    );
  }
  if (paused) return;
  const now = performance.now();
  if (now - lastArm < REARM_MS) return;
  lastArm = now;
  stallKillerArm(timeout + REARM_MS);
}

/** Start watching (timeoutMs without progress ends criu-bun); logFd: where the log goes (log.ts). */
export function startWatchdog(timeoutMs: number, logFd: number, what = "restore") {
  if (running || !(timeoutMs > 0)) return;
  stallKillerStart(logBuffer());
  running = true;
  timeout = timeoutMs;
  fd = logFd;
  verb = what;
  lastArm = -Infinity;
  paused = 0;
  lastPhase = "";
  setPhaseHook(tick);
  tick();
}

/** Run fn without the clock running (waiting for a hook's answer is not a stall). */
export function whilePaused<T>(fn: () => T): T {
  if (!running) return fn();
  if (paused++ === 0) stallKillerArm(0);
  try {
    return fn();
  } finally {
    if (--paused === 0) {
      lastArm = -Infinity;
      tick();
    }
  }
}

export function stopWatchdog() {
  if (!running) return;
  setPhaseHook(undefined);
  stallKillerStop();
  running = false;
  suffix = "";
}
