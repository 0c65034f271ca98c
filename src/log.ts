// Logging as criu does it (criu/log.c): levels 0 (messages only) .. 4 (debug), default 2; a
// message is written only if its level is at most the current one (so -v0 silences even errors).
// Everything goes to one place: the -o file (created 0600, truncated, never through a symlink),
// stdout for "-o -", else stderr. With -o the console stays quiet. From -v3 on, every line starts
// with the time since start, "(00.012345) ". Plain messages (log.msg: "Looks good.") always go
// to stdout. Errors read "Error (where): ..."; the first one is kept for RPC replies.
import { openSync, writeSync, closeSync, constants, fstatSync, lstatSync, ftruncateSync } from "./sys/fs";
import { errnoText } from "./sys/errno";

// criu's levels; 0 (LOG_MSG) is log.msg's: printed whatever the level
const LOG_ERROR = 1,
  LOG_WARN = 2,
  LOG_INFO = 3;
export const LOG_DEBUG = 4;
const LOG_TIMESTAMP = 3;
let level = 2; // criu's DEFAULT_LOGLEVEL
let fd = 2;
let ownFd = false;
const t0 = performance.now();

export function setLogLevel(v: number) {
  flushLog();
  level = Math.max(0, v);
}
export function logLevel() {
  return level;
}

/** Send the log to `path` ("-": stdout; undefined: stderr). */
export function setLogFile(path: string | undefined) {
  flushLog();
  if (ownFd) {
    closeSync(fd);
    ownFd = false;
  }
  fd = 2;
  if (path === "-") fd = 1;
  else if (path) {
    fd = openLogFile(path);
    ownFd = true;
  }
}

/**
 * A log file is opened without following a symlink (nor blocking on a FIFO planted in its
 * place), created 0600; one already there must be a regular file of ours with a single link
 * (not a hard link to another file). Then it is truncated, as criu does.
 */
function openLogFile(path: string): number {
  const { O_WRONLY, O_CREAT, O_APPEND, O_NOFOLLOW, O_NONBLOCK, O_CLOEXEC } = constants as Record<string, number>;
  let f: number;
  try {
    f = openSync(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK | (O_CLOEXEC ?? 0o2000000), 0o600);
  } catch (e) {
    let link = false;
    try {
      link = lstatSync(path).isSymbolicLink();
    } catch {}
    throw new CriuError("log", `${path}: ${link ? "a symbolic link, not followed" : errnoText(e)}`);
  }
  const st = fstatSync(f);
  if (!st.isFile() || st.nlink !== 1 || st.uid !== (process.geteuid?.() ?? 0)) {
    closeSync(f);
    throw new CriuError("log", `${path}: not a regular file of this user with one link; not written`);
  }
  ftruncateSync(f, 0);
  return f;
}

/**
 * Paths through an fd held on a directory (/proc/self/fd/N/...) are shown to the user as the
 * directory's name. aliasPath(p, undefined) forgets p.
 */
const aliases = new Map<string, string>();
export function aliasPath(p: string, shown: string | undefined): () => void {
  if (shown === undefined) aliases.delete(p);
  else aliases.set(p, shown);
  return () => {
    aliases.delete(p);
  };
}
export function unalias(text: string): string {
  if (!aliases.size || !text.includes("/proc/self/fd/")) return text;
  return text.replace(/\/proc\/self\/fd\/\d+(?![0-9])/g, (m) => aliases.get(m) ?? m);
}

/** The fd log lines go to (2 unless -o). */
export function logFd() {
  return fd;
}

function stamp(): string {
  const us = Math.round((performance.now() - t0) * 1000);
  return `(${String(Math.floor(us / 1e6)).padStart(2, "0")}.${String(us % 1e6).padStart(6, "0")}) `;
}

// At -v4 a dump of a large process logs a line per fd and per VMA (15,000 lines for 10,000 fds):
// a write(2) each cost about a tenth of the frozen time. Debug lines are gathered in a buffer
// and written when it fills, at the next line of a lower level (warnings and errors go out at
// once, after what came before them), at every phase() and at exit. The buffer is shared memory:
// the restore watchdog's signal handler (src/sys/stallkill.ts), which reports a stalled restore while
// this thread is stuck, writes what is buffered before its own line.
const BUF_BYTES = 32 << 10;
const shared = new SharedArrayBuffer(BUF_BYTES + 8);
const bufLen = new Int32Array(shared, 0, 2); // [0]: bytes buffered, [1]: the fd they go to
const buf = new Uint8Array(shared, 8, BUF_BYTES);
const enc = new TextEncoder();
let exitHooked = false;
let firstAt = 0; // when the oldest buffered line was logged

/** The shared log buffer, for a handler that must write it out (watchdog). It never moves. */
export function logBuffer(): SharedArrayBuffer {
  return shared;
}

/** Write out what the buffer holds (any thread: see flushLogFrom). */
function flushLog() {
  flushLogFrom(shared);
}
function flushLogFrom(sab: SharedArrayBuffer) {
  const n = new Int32Array(sab, 0, 2),
    b = new Uint8Array(sab, 8);
  const len = Atomics.exchange(n, 0, 0);
  if (len > 0) {
    try {
      writeSync(Atomics.load(n, 1), b.subarray(0, len));
    } catch {}
  }
}

function emit(lvl: number, text: string) {
  if (lvl > level) return;
  text = unalias(text);
  const line = `${level >= LOG_TIMESTAMP ? stamp() : ""}${text}\n`;
  if (lvl === LOG_DEBUG && line.length * 3 <= BUF_BYTES) {
    let len = bufLen[0];
    // a slow stream of lines (a long-running lazy-pages daemon): written at the next line once
    // the oldest buffered one is 0.2 s old
    const now = performance.now();
    if (len && (bufLen[1] !== fd || len + line.length * 3 > BUF_BYTES || now - firstAt > 200)) {
      flushLog();
      len = 0;
    }
    if (!len) firstAt = now;
    const { written } = enc.encodeInto(line, buf.subarray(len));
    bufLen[1] = fd;
    Atomics.store(bufLen, 0, len + written);
    if (!exitHooked) {
      exitHooked = true;
      process.on("exit", flushLog);
    }
    return;
  }
  flushLog();
  try {
    writeSync(fd, line);
  } catch {}
}

export const log = {
  /** criu's pr_msg: always printed, on stdout */
  msg(text: string) {
    flushLog();
    try {
      writeSync(1, text + "\n");
    } catch {}
  },
  error(where: string, msg: string) {
    emit(LOG_ERROR, `Error (${where}): ${msg}`);
  },
  warn(msg: string) {
    emit(LOG_WARN, `Warn: ${msg}`);
  },
  info(msg: string) {
    emit(LOG_INFO, msg);
  },
  debug(msg: string) {
    emit(LOG_DEBUG, msg);
  },
};

/** An error meant for the user: one line, criu-style, naming what failed and where. */
export class CriuError extends Error {
  constructor(
    public where: string,
    message: string
  ) {
    super(message);
    this.name = "CriuError";
  }
}

/** What criu-bun is doing, and for which process: named by an unexpected error (see cli/index.ts). */
export const context = { phase: "", pid: 0 };
/** Enter a phase of the work (pid: the process it is about, in the images' numbering, if any). */
export function phase(name: string, pid = 0) {
  // at -v4 each phase's start is a line, so the timestamps tell where the time goes
  if (level >= LOG_DEBUG) log.debug(`phase: ${name}${pid ? ` (process ${pid})` : ""}`);
  flushLog();
  context.phase = name;
  context.pid = pid;
  onPhase?.();
}
let onPhase: (() => void) | undefined;
/** Called at every phase() (the restore watchdog counts them as progress). */
export function setPhaseHook(f: (() => void) | undefined) {
  onPhase = f;
}

/** What a caught error says (its message; anything thrown that is not an Error, as a string). */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * The one line a user sees for an error: a CriuError as it is; anything else (a bug, or damage
 * no check caught) becomes "internal error in <phase> for process P: ...", its stack only in the
 * log at -v4. Call it where the error is caught, before cleaning up changes the phase.
 */
export function asCriuError(e: unknown, command: string): CriuError {
  if (e instanceof CriuError) return e;
  const err = e as { message?: unknown; stack?: unknown } | undefined;
  const text = String(err?.message ?? e).split("\n")[0];
  if (typeof err?.stack === "string") log.debug(`stack of the internal error:\n${err.stack}`);
  const at = context.phase || command;
  return new CriuError(command, `internal error in ${at}${context.pid ? ` for process ${context.pid}` : ""}: ${text}`);
}
