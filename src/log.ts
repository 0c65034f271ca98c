// criu-style logging: -v0 (errors) .. -v4 (debug), optional -o FILE. Lines look like criu's:
// "(00.012345) Error (dump): ..." in the log file; the console gets the same text without the stamp.
import { appendFileSync, openSync, writeSync, closeSync } from "node:fs";

export const LOG_ERROR = 1, LOG_WARN = 2, LOG_INFO = 3, LOG_DEBUG = 4;
let level = 2; // criu's default verbosity
let fd = -1;
const t0 = performance.now();

export function setLogLevel(v: number) { level = Math.max(0, Math.min(4, v)); }
export function logLevel() { return level; }
export function setLogFile(path: string | undefined) {
  if (fd >= 0) { closeSync(fd); fd = -1; }
  if (path && path !== "-") fd = openSync(path, "a");
}

function stamp(): string {
  const s = (performance.now() - t0) / 1000;
  return `(${s.toFixed(6).padStart(9, "0")})`;
}

function emit(lvl: number, text: string, toConsole: boolean) {
  if (lvl > level && lvl !== LOG_ERROR) return;
  const line = `${stamp()} ${text}\n`;
  if (fd >= 0) writeSync(fd, line);
  if (toConsole || fd < 0) process.stderr.write(`${text}\n`);
}

export const log = {
  error(where: string, msg: string) { emit(LOG_ERROR, `Error (${where}): ${msg}`, true); },
  warn(msg: string) { emit(LOG_WARN, `Warn: ${msg}`, false); },
  info(msg: string) { emit(LOG_INFO, msg, false); },
  debug(msg: string) { emit(LOG_DEBUG, msg, false); },
};

/** An error meant for the user: one line, criu-style, naming what failed and where. */
export class CriuError extends Error {
  constructor(public where: string, message: string) {
    super(message);
    this.name = "CriuError";
  }
}

export { appendFileSync };
