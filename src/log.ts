// Logging as criu does it (criu/log.c): levels 0 (messages only) .. 4 (debug), default 2; a
// message is written only if its level is at most the current one (so -v0 silences even errors).
// Everything goes to one place: the -o file (created 0600, truncated, never through a symlink),
// stdout for "-o -", else stderr. With -o the console stays quiet. From -v3 on, every line starts
// with the time since start, "(00.012345) ". Plain messages (log.msg: "Looks good.") always go
// to stdout. Errors read "Error (where): ..."; the first one is kept for RPC replies.
import { openSync, writeSync, closeSync, constants, fstatSync, lstatSync, ftruncateSync } from "node:fs";

export const LOG_MSG = 0, LOG_ERROR = 1, LOG_WARN = 2, LOG_INFO = 3, LOG_DEBUG = 4;
const LOG_TIMESTAMP = 3;
let level = 2; // criu's DEFAULT_LOGLEVEL
let fd = 2;
let ownFd = false;
let firstError: string | undefined;
const t0 = performance.now();

export function setLogLevel(v: number) { level = Math.max(0, v); }
export function logLevel() { return level; }

/** Send the log to `path` ("-": stdout; undefined: stderr). */
export function setLogFile(path: string | undefined) {
  if (ownFd) { closeSync(fd); ownFd = false; }
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
  try { f = openSync(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK | (O_CLOEXEC ?? 0o2000000), 0o600); }
  catch (e: any) {
    let link = false;
    try { link = lstatSync(path).isSymbolicLink(); } catch {}
    throw new CriuError("log", `${path}: ${link ? "a symbolic link, not followed" : e?.code ?? e?.message}`);
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
  if (shown === undefined) aliases.delete(p); else aliases.set(p, shown);
  return () => { aliases.delete(p); };
}
export function unalias(text: string): string {
  if (!aliases.size || !text.includes("/proc/self/fd/")) return text;
  return text.replace(/\/proc\/self\/fd\/\d+(?![0-9])/g, (m) => aliases.get(m) ?? m);
}

/** The fd log lines go to (2 unless -o). */
export function logFd() { return fd; }
/** The first error logged (criu reports it back over RPC). */
export function firstLoggedError() { return firstError; }

function stamp(): string {
  const us = Math.round((performance.now() - t0) * 1000);
  return `(${String(Math.floor(us / 1e6)).padStart(2, "0")}.${String(us % 1e6).padStart(6, "0")}) `;
}

function emit(lvl: number, text: string) {
  text = unalias(text);
  if (lvl === LOG_ERROR && firstError === undefined) firstError = text;
  if (lvl > level) return;
  const line = `${level >= LOG_TIMESTAMP ? stamp() : ""}${text}\n`;
  try { writeSync(fd, line); } catch {}
}

export const log = {
  /** criu's pr_msg: always printed, on stdout */
  msg(text: string) { try { writeSync(1, text + "\n"); } catch {} },
  error(where: string, msg: string) { emit(LOG_ERROR, `Error (${where}): ${msg}`); },
  warn(msg: string) { emit(LOG_WARN, `Warn: ${msg}`); },
  info(msg: string) { emit(LOG_INFO, msg); },
  debug(msg: string) { emit(LOG_DEBUG, msg); },
};

/** An error meant for the user: one line, criu-style, naming what failed and where. */
export class CriuError extends Error {
  constructor(public where: string, message: string) {
    super(message);
    this.name = "CriuError";
  }
}

/** What criu-bun is doing, and for which process: named by an unexpected error (see cli/index.ts). */
export const context = { phase: "", pid: 0 };
/** Enter a phase of the work (pid: the process it is about, in the images' numbering, if any). */
export function phase(name: string, pid = 0) {
  context.phase = name;
  context.pid = pid;
  onPhase?.();
}
let onPhase: (() => void) | undefined;
/** Called at every phase() (the restore watchdog counts them as progress). */
export function setPhaseHook(f: (() => void) | undefined) { onPhase = f; }

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
