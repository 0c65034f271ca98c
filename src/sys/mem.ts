// Moving bytes between address spaces: process_vm_readv/writev and /proc/PID/mem.
import { syscall, addr, cstr } from "./syscall";
import { NR } from "./nr";
import { SysError } from "./errno";

const liov = new BigUint64Array(2),
  riov = new BigUint64Array(2);

/** Read len bytes at remote address into buf[off..]. Returns bytes read (may be short). */
export function vmRead(pid: number, remote: bigint, buf: Uint8Array, off = 0, len = buf.length - off): number {
  liov[0] = BigInt(addr(buf, off));
  liov[1] = BigInt(len);
  riov[0] = remote;
  riov[1] = BigInt(len);
  return syscall(NR.process_vm_readv, pid, addr(liov), 1, addr(riov), 1, 0);
}
export function vmWrite(pid: number, remote: bigint, buf: Uint8Array, off = 0, len = buf.length - off): number {
  liov[0] = BigInt(addr(buf, off));
  liov[1] = BigInt(len);
  riov[0] = remote;
  riov[1] = BigInt(len);
  return syscall(NR.process_vm_writev, pid, addr(liov), 1, addr(riov), 1, 0);
}

/**
 * One process_vm_writev of many pieces: local ranges of this process (by address) to remote ranges
 * of another, each side's adjacent ranges merged into one iovec. A 1 MiB block of a restore
 * is ~54 runs of pages on a heap with a third of its pages zero: one system call for them instead
 * of one per run (each call looks the task up, checks ptrace access and pins its own pages).
 */
export class VmWriteBatch {
  /** [base lo, base hi, len lo, len hi] per iovec, in 32-bit halves (no BigInt per piece) */
  private readonly l: Uint32Array;
  private readonly r: Uint32Array;
  private nl = 0;
  private nr = 0;
  private lEnd = -1;
  private rEnd = -1;
  /** bytes added since the last clear() */
  bytes = 0;
  constructor(readonly cap = 1024) {
    this.l = new Uint32Array(cap * 4);
    this.r = new Uint32Array(cap * 4);
  }
  clear() {
    this.nl = this.nr = this.bytes = 0;
    this.lEnd = this.rEnd = -1;
  }
  /** Room for one more piece (each side may need a new iovec). */
  get full() {
    return this.nl >= this.cap || this.nr >= this.cap;
  }
  /** Add len bytes from the local address `local` to the remote address `remote` (both below 2^53). */
  add(local: number, remote: number, len: number) {
    if (local === this.lEnd) grow(this.l, this.nl - 1, len);
    else set(this.l, this.nl++, local, len);
    if (remote === this.rEnd) grow(this.r, this.nr - 1, len);
    else set(this.r, this.nr++, remote, len);
    this.lEnd = local + len;
    this.rEnd = remote + len;
    this.bytes += len;
  }
  /** process_vm_writev of everything added: bytes written (fewer when a remote page is not
   * writable: the copy stops there) or -errno. */
  write(pid: number): number {
    if (!this.nl) return 0;
    return syscall(NR.process_vm_writev, pid, addr(this.l), this.nl, addr(this.r), this.nr, 0);
  }
}
const U32 = 2 ** 32;
function set(v: Uint32Array, i: number, base: number, len: number) {
  v[i * 4] = base % U32;
  v[i * 4 + 1] = Math.floor(base / U32);
  v[i * 4 + 2] = len % U32;
  v[i * 4 + 3] = Math.floor(len / U32);
}
function grow(v: Uint32Array, i: number, len: number) {
  const n = v[i * 4 + 2] + v[i * 4 + 3] * U32 + len;
  v[i * 4 + 2] = n % U32;
  v[i * 4 + 3] = Math.floor(n / U32);
}

export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  CREAT: 0o100,
  EXCL: 0o200,
  NOCTTY: 0o400,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  NONBLOCK: 0o4000,
  DSYNC: 0o10000,
  ASYNC: 0o20000,
  DIRECT: 0o40000,
  LARGEFILE: 0o100000,
  DIRECTORY: 0o200000,
  NOFOLLOW: 0o400000,
  NOATIME: 0o1000000,
  CLOEXEC: 0o2000000,
  PATH: 0o10000000,
  TMPFILE: 0o20200000,
} as const;
/** fcntl(2) commands, and the lock types and owner types some of them take */
export const F = {
  DUPFD: 0,
  GETFD: 1,
  SETFD: 2,
  GETFL: 3,
  SETFL: 4,
  GETLK: 5,
  SETLK: 6,
  SETLKW: 7,
  SETOWN: 8,
  GETOWN: 9,
  SETSIG: 10,
  GETSIG: 11,
  SETOWN_EX: 15,
  GETOWN_EX: 16,
  GETOWNER_UIDS: 17,
  OFD_GETLK: 36,
  OFD_SETLK: 37,
  OFD_SETLKW: 38,
  SETLEASE: 1024,
  GETLEASE: 1025,
  NOTIFY: 1026,
  DUPFD_CLOEXEC: 1030,
  SETPIPE_SZ: 1031,
  GETPIPE_SZ: 1032,
  ADD_SEALS: 1033,
  GET_SEALS: 1034,
  RDLCK: 0,
  WRLCK: 1,
  UNLCK: 2,
  OWNER_TID: 0,
  OWNER_PID: 1,
  OWNER_PGRP: 2,
} as const;

export function openFd(path: string, flags: number, mode = 0o644): number {
  const c = cstr(path);
  const r = syscall(NR.openat, -100, addr(c), flags, mode);
  if (r < 0) throw new SysError(`open(${path})`, -r);
  return r;
}
export function closeFd(fd: number) {
  syscall(NR.close, fd);
}

export function pread(fd: number, buf: Uint8Array, off: bigint | number, len = buf.length, bufOff = 0): number {
  return syscall(NR.pread64, fd, addr(buf, bufOff), len, off);
}
function pwrite(fd: number, buf: Uint8Array, off: bigint | number, len = buf.length, bufOff = 0): number {
  return syscall(NR.pwrite64, fd, addr(buf, bufOff), len, off);
}
/** pread/pwrite until len bytes are moved, retrying EINTR and short transfers; throws on error.
 * A transfer of 0 bytes ends a read (EOF: returns what was read) and fails a write (EIO). */
function fullIo(
  io: typeof pread,
  fd: number,
  buf: Uint8Array,
  off: bigint,
  len: number,
  bufOff: number,
  what: string
): number {
  let done = 0;
  while (done < len) {
    const r = io(fd, buf, off + BigInt(done), len - done, bufOff + done);
    if (r === -4) continue;
    if (r < 0) throw new SysError(what, -r);
    if (r === 0) {
      if (io === pwrite) throw new SysError(what, 5);
      break;
    }
    done += r;
  }
  return done;
}
/** pread until len bytes or EOF; returns the bytes read, throws on error. */
export function preadFull(
  fd: number,
  buf: Uint8Array,
  off: bigint,
  len = buf.length,
  bufOff = 0,
  what = "pread"
): number {
  return fullIo(pread, fd, buf, off, len, bufOff, what);
}
/** pwrite all len bytes; throws on error. */
export function pwriteFull(
  fd: number,
  buf: Uint8Array,
  off: bigint,
  len = buf.length,
  bufOff = 0,
  what = "pwrite"
): void {
  fullIo(pwrite, fd, buf, off, len, bufOff, what);
}
export function writeFull(fd: number, buf: Uint8Array, what = "write"): void {
  let done = 0;
  while (done < buf.length) {
    const r = syscall(NR.write, fd, addr(buf, done), buf.length - done);
    if (r === -4) continue;
    if (r < 0) throw new SysError(what, -r);
    done += r;
  }
}

/** PAGE_IS_* page categories of the PAGEMAP_SCAN ioctl (linux/fs.h). */
export const PAGE_IS = {
  WPALLOWED: 1,
  WRITTEN: 2,
  FILE: 4,
  PRESENT: 8,
  SWAPPED: 16,
  PFNZERO: 32,
  HUGE: 64,
  SOFT_DIRTY: 128,
} as const;
const PAGEMAP_SCAN = 0xc0606610; // _IOWR('f', 16, struct pm_scan_arg)

/** Which pages a scan keeps: after XOR with `inverted`, a page needs every `mask` bit and one of `anyof`;
 * regions are runs of kept pages with equal categories & `ret`. */
interface ScanQuery {
  flags?: number;
  inverted?: number;
  mask?: number;
  anyof?: number;
  ret: number;
}

/**
 * PAGEMAP_SCAN (Linux 6.7+) over an open /proc/PID/pagemap: the kernel walks the page tables and
 * returns runs of matching pages, instead of 8 bytes per page to read and test.
 */
export class PagemapScanner {
  /** struct pm_scan_arg: size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted,
   * category_mask, category_anyof_mask, return_mask */
  private readonly arg = new BigUint64Array(12);
  /** regions found by the last scan: start, end, categories (triples) */
  readonly vec: BigUint64Array;
  constructor(
    private readonly fd: number,
    readonly capacity = 2048
  ) {
    this.vec = new BigUint64Array(capacity * 3);
  }
  /** One call over [start, end): the number of regions in vec, or -errno. walkEnd tells where it stopped. */
  scan(start: bigint, end: bigint, q: ScanQuery): number {
    const a = this.arg;
    a.fill(0n);
    a[0] = 96n;
    a[1] = BigInt(q.flags ?? 0);
    a[2] = start;
    a[3] = end;
    a[5] = BigInt(addr(this.vec));
    a[6] = BigInt(this.capacity);
    a[8] = BigInt(q.inverted ?? 0);
    a[9] = BigInt(q.mask ?? 0);
    a[10] = BigInt(q.anyof ?? 0);
    a[11] = BigInt(q.ret);
    return syscall(NR.ioctl, this.fd, PAGEMAP_SCAN, addr(a));
  }
  get walkEnd(): bigint {
    return this.arg[4];
  }
  /**
   * Scans over all of [start, end): each region found, clipped to its call's walk_end (6.18 was seen
   * returning regions past it when it stopped early, and the next call, from walk_end, reports them
   * again), as start, end and categories. A failing call instead: its errno and where it started;
   * `who` names the walk in the error a call that makes no progress throws.
   */
  walk(
    start: bigint,
    end: bigint,
    q: ScanQuery,
    who: string
  ): { a: bigint; b: bigint; cat: bigint }[] | { errno: number; at: bigint } {
    const out: { a: bigint; b: bigint; cat: bigint }[] = [];
    let at = start;
    while (at < end) {
      const n = this.scan(at, end, q);
      if (n < 0) return { errno: -n, at };
      const stop = this.walkEnd;
      if (stop <= at) throw new Error(`PAGEMAP_SCAN of ${who} made no progress at 0x${at.toString(16)}`);
      for (let i = 0; i < n; i++) {
        const a = this.vec[i * 3],
          b = this.vec[i * 3 + 1] < stop ? this.vec[i * 3 + 1] : stop;
        if (a < b) out.push({ a, b, cat: this.vec[i * 3 + 2] });
      }
      at = stop;
    }
    return out;
  }
}
