// Open files of a process: dump (fd table -> files.img + fdinfo-N.img) and restore (reopen by path).
import { statSync, lstatSync } from "node:fs";
import { listFds, readFdinfo, readLink } from "../sys/proc";
import { CriuError } from "../log";

export const FD_TYPE = { REG: 1, PIPE: 2, FIFO: 3, INETSK: 4, UNIXSK: 5, EVENTFD: 6, EVENTPOLL: 7, INOTIFY: 8, SIGNALFD: 9, PACKETSK: 10, TTY: 11, FANOTIFY: 12, NETLINKSK: 13, NS: 14, TIMERFD: 17, MEMFD: 18 } as const;

export interface FdDump { fd: number; id: number; type: number; cloexec: boolean }
export interface FileDump { id: number; type: number; reg?: Record<string, any> }

/** Global file ids across the dump; a file description seen twice gets one id. */
export class FileTable {
  nextId = 1;
  files: FileDump[] = [];
  byKey = new Map<string, number>();
  add(key: string | null, make: (id: number) => FileDump): number {
    if (key && this.byKey.has(key)) return this.byKey.get(key)!;
    const id = this.nextId++;
    this.files.push(make(id));
    if (key) this.byKey.set(key, id);
    return id;
  }
  /** A path used by a mapping, cwd, root or exe (opened O_RDONLY/O_PATH at restore). */
  addPath(path: string, flags: number): number {
    let size: bigint | undefined, mode: number | undefined;
    try { const st = statSync(path, { bigint: true }); size = st.isFile() ? st.size : undefined; mode = Number(st.mode); } catch {}
    return this.add(`path:${path}:${flags}`, (id) => ({ id, type: FD_TYPE.REG, reg: regEntry(id, path, flags, 0n, size, mode) }));
  }
}

function regEntry(id: number, name: string, flags: number, pos: bigint, size: bigint | undefined, mode: number | undefined) {
  return {
    id, flags, pos, fown: { uid: 0, euid: 0, signum: 0, pidType: 0, pid: 0 }, name,
    ...(size !== undefined ? { size } : {}), ...(mode !== undefined ? { mode } : {}),
  };
}

const O_CLOEXEC = 0o2000000;

export function dumpFds(pid: number, table: FileTable, opts: { shellJob?: boolean }): FdDump[] {
  const out: FdDump[] = [];
  for (const fd of listFds(pid)) {
    let target: string;
    try { target = readLink(`/proc/${pid}/fd/${fd}`); } catch { continue; }
    const info = readFdinfo(pid, fd);
    const flags = parseInt(info.flags ?? "0", 8);
    const pos = BigInt(info.pos ?? "0");
    const cloexec = (flags & O_CLOEXEC) !== 0;
    const where = `process ${pid} fd ${fd}`;
    const kind = /^(\w+):\[(\d+)\]$/.exec(target) ?? /^anon_inode:\[?([\w-]+)\]?$/.exec(target);
    if (kind || !target.startsWith("/")) {
      throw new CriuError("files", `${where}: ${describe(target)} is not supported yet`);
    }
    if (target.endsWith(" (deleted)")) {
      throw new CriuError("files", `${where}: '${target.slice(0, -10)}' was deleted while open; deleted files are not supported yet`);
    }
    let st;
    try { st = statSync(`/proc/${pid}/fd/${fd}`, { bigint: true }); } catch (e: any) { throw new CriuError("files", `${where}: cannot stat '${target}': ${e.message}`); }
    if (st.isFIFO()) throw new CriuError("files", `${where}: FIFO '${target}' is not supported yet`);
    if (st.isSocket()) throw new CriuError("files", `${where}: socket '${target}' is not supported yet`);
    if (st.isCharacterDevice()) {
      const major = Number(st.rdev >> 8n) & 0xfff;
      // ttys: 4 (vt/serial), 5 (/dev/tty, ptmx), 136-143 (pts)
      if (major === 4 || major === 5 || (major >= 136 && major <= 143)) {
        if (!opts.shellJob) throw new CriuError("files", `${where}: terminal '${target}' is open; use --shell-job to dump a shell job`);
      }
    }
    const fileFlags = flags & ~O_CLOEXEC;
    const size = st.isFile() ? st.size : undefined;
    // one id per open file description: same (inode, flags, pos) seen through kcmp later; for now per fd
    const id = table.add(null, (id) => ({ id, type: FD_TYPE.REG, reg: regEntry(id, target, fileFlags, pos, size, Number(st.mode)) }));
    out.push({ fd, id, type: FD_TYPE.REG, cloexec });
  }
  return out;
}

function describe(target: string): string {
  if (target.startsWith("pipe:")) return `pipe ${target}`;
  if (target.startsWith("socket:")) return `socket ${target}`;
  if (target.startsWith("anon_inode:")) return `${target.slice(11)} (${target})`;
  return `'${target}'`;
}
void lstatSync;
