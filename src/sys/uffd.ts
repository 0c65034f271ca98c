// userfaultfd: ioctl numbers, features and register modes (linux/userfaultfd.h).
import { syscall, addr } from "./syscall";
import { NR } from "./nr";

export const UFFDIO_API = 0xc018aa3f,
  UFFDIO_REGISTER = 0xc020aa00,
  UFFDIO_WRITEPROTECT = 0xc018aa06;
export const UFFD_API = 0xaa;
/** userfaultfd(2) flag: handle user-space faults only (enough for write-protect tracking) */
export const UFFD_USER_MODE_ONLY = 1;
export const UFFDIO_REGISTER_MODE = { MISSING: 1, WP: 2, MINOR: 4 } as const;
export const UFFD_FEATURE = {
  PAGEFAULT_FLAG_WP: 1,
  EVENT_FORK: 2,
  EVENT_REMAP: 4,
  EVENT_REMOVE: 8,
  EVENT_UNMAP: 0x40,
  WP_UNPOPULATED: 0x2000,
  WP_ASYNC: 0x8000,
} as const;
/** PAGEMAP_SCAN flags (linux/fs.h) */
export const PM_SCAN = { WP_MATCHING: 1, CHECK_WPASYNC: 2 } as const;

// ---- the missing-mode side (lazy pages): the daemon resolves faults with these ----------------

export const UFFDIO_UNREGISTER = 0x8010aa01;
const UFFDIO_WAKE = 0x8010aa02,
  UFFDIO_COPY = 0xc028aa03,
  UFFDIO_ZEROPAGE = 0xc020aa04;
/** uffd_msg.event */
export const UFFD_EVENT = { PAGEFAULT: 0x12, FORK: 0x13, REMAP: 0x14, REMOVE: 0x15, UNMAP: 0x16 } as const;
/** the events a lazy restore needs to follow the process: fork, mremap, MADV_DONTNEED/REMOVE, munmap */
export const UFFD_LAZY_FEATURES =
  UFFD_FEATURE.EVENT_FORK | UFFD_FEATURE.EVENT_REMAP | UFFD_FEATURE.EVENT_REMOVE | UFFD_FEATURE.EVENT_UNMAP;
const UFFD_MSG_SIZE = 32;

interface UffdMsg {
  event: number;
  a: bigint;
  b: bigint;
  c: bigint;
  ufd: number;
}

/** Every message queued on a non-blocking uffd (none: EAGAIN). A negative number is an -errno. */
export function readUffdMsgs(fd: number, buf: Uint8Array): UffdMsg[] | number {
  const out: UffdMsg[] = [];
  for (;;) {
    const r = syscall(NR.read, fd, addr(buf), buf.length - (buf.length % UFFD_MSG_SIZE));
    if (r === -4) continue;
    if (r === -11) return out;
    if (r < 0) return out.length ? out : r;
    if (r === 0) return out;
    const dv = new DataView(buf.buffer, buf.byteOffset, r);
    for (let o = 0; o + UFFD_MSG_SIZE <= r; o += UFFD_MSG_SIZE) {
      out.push({
        event: dv.getUint8(o),
        a: dv.getBigUint64(o + 8, true),
        b: dv.getBigUint64(o + 16, true),
        c: dv.getBigUint64(o + 24, true),
        ufd: dv.getInt32(o + 8, true),
      });
    }
    if (r < buf.length - (buf.length % UFFD_MSG_SIZE)) return out;
  }
}

const copyArg = new BigInt64Array(5),
  zeroArg = new BigInt64Array(4),
  wakeArg = new BigUint64Array(2);

/**
 * UFFDIO_COPY of len bytes from src to dst in the uffd's process (waking what waits there).
 * Returns the bytes copied (len when all were) and the errno that stopped it (0 if none).
 */
export function uffdCopy(
  fd: number,
  dst: bigint,
  src: Uint8Array,
  srcOff: number,
  len: number
): { copied: number; err: number } {
  copyArg[0] = dst;
  copyArg[1] = BigInt(addr(src, srcOff));
  copyArg[2] = BigInt(len);
  copyArg[3] = 0n;
  copyArg[4] = 0n;
  const r = syscall(NR.ioctl, fd, UFFDIO_COPY, addr(copyArg));
  if (r === 0) return { copied: len, err: 0 };
  const c = Number(copyArg[4]);
  return { copied: c > 0 ? c : 0, err: -r };
}

/** struct uffdio_copy as 32-bit halves (dst, src, len, mode, copy): a restore's page Workers fill it
 *  with numbers (addresses below 2^53), no BigInt per call. Its address is taken at each call: a
 *  small typed array's storage moves (it did after the Workers' collections: the kernel then read a
 *  stale struct, an earlier run's address, and said EEXIST for every run). */
const copyWords = new Uint32Array(new ArrayBuffer(40));

/**
 * UFFDIO_COPY of len bytes from the address src (of this process) to dst in the uffd's process: the
 * page Workers' call, ~55,000 per GiB of a heap (a run of pages each). Returns the ioctl's result (0:
 * all copied, else -errno); uffdCopied() then says how many bytes were.
 */
export function uffdCopyAt(fd: number, dst: number, src: number, len: number): number {
  const w = copyWords;
  w[0] = dst >>> 0;
  w[1] = (dst / 4294967296) >>> 0;
  w[2] = src >>> 0;
  w[3] = (src / 4294967296) >>> 0;
  w[4] = len >>> 0;
  w[5] = (len / 4294967296) >>> 0;
  w[6] = 0;
  w[7] = 0;
  w[8] = 0;
  w[9] = 0;
  return syscall(NR.ioctl, fd, UFFDIO_COPY, addr(w));
}
/** The bytes the last uffdCopyAt copied (its struct's `copy`: 0 when it failed before any). */
export function uffdCopied(): number {
  const hi = copyWords[9] | 0;
  return hi < 0 ? 0 : hi * 4294967296 + copyWords[8];
}

/** UFFDIO_ZEROPAGE: the range reads as zeroes (as a page never written). Returns 0 or the errno. */
export function uffdZero(fd: number, dst: bigint, len: number): number {
  zeroArg[0] = dst;
  zeroArg[1] = BigInt(len);
  zeroArg[2] = 0n;
  zeroArg[3] = 0n;
  const r = syscall(NR.ioctl, fd, UFFDIO_ZEROPAGE, addr(zeroArg));
  return r < 0 ? -r : 0;
}

/** UFFDIO_WAKE: let threads waiting on the range go on (the page is there already). */
export function uffdWake(fd: number, dst: bigint, len: number) {
  wakeArg[0] = dst;
  wakeArg[1] = BigInt(len);
  syscall(NR.ioctl, fd, UFFDIO_WAKE, addr(wakeArg));
}

const unregArg = new BigUint64Array(2);
/** UFFDIO_UNREGISTER of [a, b) in the uffd's process. Returns 0 or the errno. */
export function uffdUnregister(fd: number, a: bigint, b: bigint): number {
  unregArg[0] = a;
  unregArg[1] = b - a;
  const r = syscall(NR.ioctl, fd, UFFDIO_UNREGISTER, addr(unregArg));
  return r < 0 ? -r : 0;
}
