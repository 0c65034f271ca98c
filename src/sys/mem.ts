// Moving bytes between address spaces: process_vm_readv/writev and /proc/PID/mem.
import { syscall, addr, cstr } from "./syscall";
import { NR } from "./nr";
import { SysError } from "./errno";

const liov = new BigUint64Array(2), riov = new BigUint64Array(2);

/** Read len bytes at remote address into buf[off..]. Returns bytes read (may be short). */
export function vmRead(pid: number, remote: bigint, buf: Uint8Array, off = 0, len = buf.length - off): number {
  liov[0] = BigInt(addr(buf, off)); liov[1] = BigInt(len);
  riov[0] = remote; riov[1] = BigInt(len);
  return syscall(NR.process_vm_readv, pid, addr(liov), 1, addr(riov), 1, 0);
}
export function vmWrite(pid: number, remote: bigint, buf: Uint8Array, off = 0, len = buf.length - off): number {
  liov[0] = BigInt(addr(buf, off)); liov[1] = BigInt(len);
  riov[0] = remote; riov[1] = BigInt(len);
  return syscall(NR.process_vm_writev, pid, addr(liov), 1, addr(riov), 1, 0);
}

export const O = {
  RDONLY: 0, WRONLY: 1, RDWR: 2, CREAT: 0o100, EXCL: 0o200, NOCTTY: 0o400, TRUNC: 0o1000,
  APPEND: 0o2000, NONBLOCK: 0o4000, DSYNC: 0o10000, DIRECT: 0o40000, LARGEFILE: 0o100000,
  DIRECTORY: 0o200000, NOFOLLOW: 0o400000, NOATIME: 0o1000000, CLOEXEC: 0o2000000, PATH: 0o10000000,
  TMPFILE: 0o20200000,
} as const;

export function openFd(path: string, flags: number, mode = 0o644): number {
  const c = cstr(path);
  const r = syscall(NR.openat, -100, addr(c), flags, mode);
  if (r < 0) throw new SysError(`open(${path})`, -r);
  return r;
}
export function closeFd(fd: number) { syscall(NR.close, fd); }

export function pread(fd: number, buf: Uint8Array, off: bigint | number, len = buf.length, bufOff = 0): number {
  return syscall(NR.pread64, fd, addr(buf, bufOff), len, off);
}
export function pwrite(fd: number, buf: Uint8Array, off: bigint | number, len = buf.length, bufOff = 0): number {
  return syscall(NR.pwrite64, fd, addr(buf, bufOff), len, off);
}
/** pread until len bytes or EOF/error; throws on error. */
export function preadFull(fd: number, buf: Uint8Array, off: bigint, len = buf.length, bufOff = 0, what = "pread"): number {
  let done = 0;
  while (done < len) {
    const r = pread(fd, buf, off + BigInt(done), len - done, bufOff + done);
    if (r === -4) continue;
    if (r < 0) throw new SysError(what, -r);
    if (r === 0) break;
    done += r;
  }
  return done;
}
export function pwriteFull(fd: number, buf: Uint8Array, off: bigint, len = buf.length, bufOff = 0, what = "pwrite"): void {
  let done = 0;
  while (done < len) {
    const r = pwrite(fd, buf, off + BigInt(done), len - done, bufOff + done);
    if (r === -4) continue;
    if (r < 0) throw new SysError(what, -r);
    if (r === 0) throw new SysError(what, 5);
    done += r;
  }
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
