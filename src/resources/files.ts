// Open files of a process: dump (fd table -> files.img + fdinfo-N.img) and restore (reopen by path).
import { statSync, lstatSync } from "node:fs";
import { listFds, readFdinfo, readLink } from "../sys/proc";
import { CriuError } from "../log";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { openFd, closeFd, O } from "../sys/mem";

export const FD_TYPE = { REG: 1, PIPE: 2, FIFO: 3, INETSK: 4, UNIXSK: 5, EVENTFD: 6, EVENTPOLL: 7, INOTIFY: 8, SIGNALFD: 9, PACKETSK: 10, TTY: 11, FANOTIFY: 12, NETLINKSK: 13, NS: 14, TIMERFD: 17, MEMFD: 18 } as const;

export interface FdDump { fd: number; id: number; type: number; cloexec: boolean }
export interface FileDump { id: number; type: number; reg?: Record<string, any>; pipe?: Record<string, any> }

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

export interface PipeData { pipeId: number; data: Uint8Array; size: number }

/** A pipe's unread bytes, read without consuming them: tee() into a scratch pipe, then read that. */
function peekPipe(pid: number, fd: number): { data: Uint8Array; size: number } {
  const rfd = openFd(`/proc/${pid}/fd/${fd}`, O.RDONLY | O.NONBLOCK | O.CLOEXEC);
  const pair = new Int32Array(2);
  try {
    const size = syscall(NR.fcntl, rfd, 1032 /* F_GETPIPE_SZ */);
    if (size < 0) throw new CriuError("files", `process ${pid} fd ${fd}: F_GETPIPE_SZ failed (${-size})`);
    const r = syscall(NR.pipe2, addr(pair), O.NONBLOCK | O.CLOEXEC);
    if (r < 0) throw new CriuError("files", `pipe2 failed (${-r})`);
    syscall(NR.fcntl, pair[1], 1031 /* F_SETPIPE_SZ */, size);
    const n = syscall(NR.tee, rfd, pair[1], size, 2 /* SPLICE_F_NONBLOCK */);
    if (n === -11) return { data: new Uint8Array(0), size };
    if (n < 0) throw new CriuError("files", `process ${pid} fd ${fd}: tee failed (${-n})`);
    const data = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const k = syscall(NR.read, pair[0], addr(data, got), n - got);
      if (k <= 0) throw new CriuError("files", `process ${pid} fd ${fd}: reading pipe copy failed (${k})`);
      got += k;
    }
    return { data, size };
  } finally {
    closeFd(rfd);
    if (pair[0]) closeFd(pair[0]);
    if (pair[1]) closeFd(pair[1]);
  }
}

export function dumpFds(pid: number, table: FileTable, opts: { shellJob?: boolean }, pipes: Map<number, PipeData>): FdDump[] {
  const out: FdDump[] = [];
  const seen: { fd: number; dev: bigint; ino: bigint; id: number }[] = [];
  for (const fd of listFds(pid)) {
    let target: string;
    try { target = readLink(`/proc/${pid}/fd/${fd}`); } catch { continue; }
    const info = readFdinfo(pid, fd);
    const flags = parseInt(info.flags ?? "0", 8);
    const pos = BigInt(info.pos ?? "0");
    const cloexec = (flags & O_CLOEXEC) !== 0;
    const fileFlags = flags & ~O_CLOEXEC;
    const where = `process ${pid} fd ${fd}`;
    let st;
    try { st = statSync(`/proc/${pid}/fd/${fd}`, { bigint: true }); } catch (e: any) { throw new CriuError("files", `${where}: cannot stat '${target}': ${e.message}`); }
    // the same open file description seen through another fd: same id (kcmp says so)
    const twin = seen.find((x) => x.dev === st.dev && x.ino === st.ino && syscall(NR.kcmp, pid, pid, 0 /* KCMP_FILE */, x.fd, fd) === 0);
    if (twin) {
      out.push({ fd, id: twin.id, type: table.files.find((f) => f.id === twin.id)!.type, cloexec });
      continue;
    }
    let id: number, type: number;
    const pipe = /^pipe:\[(\d+)\]$/.exec(target);
    if (pipe) {
      const pipeId = Number(pipe[1]);
      type = FD_TYPE.PIPE;
      id = table.add(null, (id) => ({ id, type, pipe: { id, pipeId, flags: fileFlags, fown: FOWN0 } }));
      if (!pipes.has(pipeId)) pipes.set(pipeId, { pipeId, ...peekPipe(pid, fd) });
    } else {
      const kind = /^(\w+):\[(\d+)\]$/.exec(target) ?? /^anon_inode:\[?([\w-]+)\]?$/.exec(target);
      if (kind || !target.startsWith("/")) throw new CriuError("files", `${where}: ${describe(target)} is not supported yet`);
      if (target.endsWith(" (deleted)")) {
        throw new CriuError("files", `${where}: '${target.slice(0, -10)}' was deleted while open; deleted files are not supported yet`);
      }
      if (st.isFIFO()) throw new CriuError("files", `${where}: FIFO '${target}' is not supported yet`);
      if (st.isSocket()) throw new CriuError("files", `${where}: socket '${target}' is not supported yet`);
      if (st.isCharacterDevice()) {
        const major = Number(st.rdev >> 8n) & 0xfff;
        // ttys: 4 (vt/serial), 5 (/dev/tty, ptmx), 136-143 (pts)
        if ((major === 4 || major === 5 || (major >= 136 && major <= 143)) && !opts.shellJob) {
          throw new CriuError("files", `${where}: terminal '${target}' is open; use --shell-job to dump a shell job`);
        }
      }
      const size = st.isFile() ? st.size : undefined;
      type = FD_TYPE.REG;
      id = table.add(null, (id) => ({ id, type, reg: regEntry(id, target, fileFlags, pos, size, Number(st.mode)) }));
    }
    seen.push({ fd, dev: st.dev, ino: st.ino, id });
    out.push({ fd, id, type, cloexec });
  }
  return out;
}

const FOWN0 = { uid: 0, euid: 0, signum: 0, pidType: 0, pid: 0 };

function describe(target: string): string {
  if (target.startsWith("pipe:")) return `pipe ${target}`;
  if (target.startsWith("socket:")) return `socket ${target}`;
  if (target.startsWith("anon_inode:")) return `${target.slice(11)} (${target})`;
  return `'${target}'`;
}
void lstatSync;
