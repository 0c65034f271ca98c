// File locks, both directions: read at dump from each fd's fdinfo "lock:" lines (flock, POSIX and
// OFD locks, advisory; leases and mandatory locks refused), saved in filelocks.img by the dump,
// taken again at restore on the restored fds through the process's own injected syscalls.
import { NR } from "../sys/nr";
import { F } from "../sys/mem";
import { errnoText } from "../sys/errno";
import type { Injector } from "../ptrace/inject";
import { readImage, imageExists } from "../images/image";
import { CriuError, log } from "../log";
import { refuse } from "./unsupported";
import type { DumpOpts } from "./fdkind";

const LOCK_SH = 1,
  LOCK_EX = 2,
  LOCK_NB = 4;

// ---------- dump ----------

/** A file lock held through one of the process's fds (from the fdinfo "lock:" lines). */
export interface LockDump {
  fd: number;
  flag: number;
  type: number;
  start: bigint;
  len: bigint;
}
// file_lock_entry.flag as CRIU writes and reads it (criu/include/file-lock.h: FL_POSIX 1,
// FL_FLOCK 2, FL_OFD 4). criu-bun images before this used the kernel's FL_OFDLCK (1024) for OFD
// locks, which CRIU refuses ("Unknown file lock style"): still read as OFD.
const FL = { POSIX: 1, FLOCK: 2, OFD: 4 } as const;
const FL_OFDLCK_OLD = 1024;

/** "lock:\t1: POSIX  ADVISORY  WRITE 1234 fe:00:5678 0 EOF" -> what to take again at restore. */
export function fdLocks(
  pid: number,
  fd: number,
  text: string,
  where: string,
  opts: DumpOpts,
  seen: Set<string>,
  id: number,
  out: LockDump[]
) {
  for (const m of text.matchAll(/^lock:\s*\d+:\s*(\S+)\s+(\S+)\s+(\S+)\s+(-?\d+)\s+(\S+)\s+(\d+)\s+(\S+)/gm)) {
    const [, kind, mand, rw, owner, devino, start, end] = m;
    if (kind === "LEASE") refuse("files", where, "lease", `${mand.toLowerCase()} ${rw.toLowerCase()} lease`);
    if (!opts.fileLocks)
      throw new CriuError("files", `${where}: holds a ${kind} file lock; use --file-locks to dump it`);
    if (mand !== "ADVISORY") throw new CriuError("files", `${where}: ${mand} file locks are not supported`);
    const flag = kind === "FLOCK" ? FL.FLOCK : kind === "OFDLCK" ? FL.OFD : kind === "POSIX" ? FL.POSIX : 0;
    if (!flag) throw new CriuError("files", `${where}: ${kind} file locks are not supported`);
    if (flag === FL.POSIX && Number(owner) !== pid) continue; // another process's lock on the same file
    const key = flag === FL.POSIX ? `posix:${pid}:${devino}:${start}:${end}` : `${kind}:${id}:${start}:${end}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const s = BigInt(start),
      len = end === "EOF" ? 0n : BigInt(end) - s + 1n;
    out.push({ fd, flag, type: rw === "READ" ? F.RDLCK : F.WRLCK, start: s, len });
  }
}

// ---------- restore ----------

/**
 * The file locks process VPID held (filelocks.img), taken again on its restored fds through its own
 * injected flock / fcntl(F_SETLK, F_OFD_SETLK), non-blocking: a lock someone else holds now fails
 * the restore.
 */
export function restoreLocks(proc: {
  vpid: number;
  dir: string;
  inj: Injector;
  scratch: (off: bigint, data: Uint8Array) => bigint;
}) {
  if (!imageExists(proc.dir, "filelocks.img")) return;
  const inj = proc.inj;
  let n = 0;
  for (const l of readImage(proc.dir, "filelocks.img", "FILE_LOCKS")) {
    if (l.pid !== proc.vpid) continue;
    const what = `process ${proc.vpid} fd ${l.fd}: file lock`;
    const ofd = l.flag === FL.OFD || l.flag === FL_OFDLCK_OLD;
    if (l.flag !== FL.FLOCK && l.flag !== FL.POSIX && !ofd)
      throw new CriuError("restore", `${what}: unknown lock style ${l.flag} in filelocks.img`);
    let r: bigint;
    if (l.flag === FL.FLOCK) {
      r = inj.call(NR.flock, l.fd, (l.type === F.RDLCK ? LOCK_SH : LOCK_EX) | LOCK_NB);
    } else {
      // struct flock: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
      const b = new ArrayBuffer(32),
        dv = new DataView(b);
      dv.setInt16(0, l.type, true);
      dv.setInt16(2, 0 /* SEEK_SET */, true);
      dv.setBigInt64(8, l.start, true);
      dv.setBigInt64(16, l.len, true);
      r = inj.call(NR.fcntl, l.fd, ofd ? F.OFD_SETLK : F.SETLK, proc.scratch(0n, new Uint8Array(b)));
    }
    if (r < 0n)
      throw new CriuError("restore", `${what} cannot be taken again: ${errnoText(-r)}; held by someone else?`);
    log.debug(
      `filelocks: ${what}: ${l.flag === FL.FLOCK ? "flock" : ofd ? "OFD" : "POSIX"} ${l.type === 0 ? "read" : "write"} lock taken again (${l.start}+${l.len})`
    );
    n++;
  }
  if (n) log.debug(`filelocks: process ${proc.vpid}: ${n} lock(s) taken again`);
}
