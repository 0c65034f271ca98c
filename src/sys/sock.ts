// Small socket helpers for `check` probes: creation, int options. Netlink is in ./netlink.
import { syscall, addr } from "./syscall";
import { NR } from "./nr";
import { SysError } from "./errno";

export const AF = { UNIX: 1, INET: 2, INET6: 10, NETLINK: 16 } as const;
export const SOCK = { STREAM: 1, DGRAM: 2, RAW: 3, SEQPACKET: 5, NONBLOCK: 0o4000, CLOEXEC: 0o2000000 } as const;
export const SOL = { SOCKET: 1, TCP: 6, NETLINK: 270 } as const;

/** socket(2) with CLOEXEC; returns the fd or throws SysError. */
export function socketFd(domain: number, type: number, protocol = 0): number {
  const r = syscall(NR.socket, domain, type | SOCK.CLOEXEC, protocol);
  if (r < 0) throw new SysError(`socket(${domain}, ${type}, ${protocol})`, -r);
  return r;
}

/** socketpair(2) with CLOEXEC -> [fd0, fd1]. */
export function socketPair(domain: number, type: number, protocol = 0): [number, number] {
  const fds = new Int32Array(2);
  const r = syscall(NR.socketpair, domain, type | SOCK.CLOEXEC, protocol, addr(fds));
  if (r < 0) throw new SysError("socketpair", -r);
  return [fds[0], fds[1]];
}

/** setsockopt with an int value; returns 0 or -errno. */
export function setsockoptInt(fd: number, level: number, name: number, value: number): number {
  const v = new Int32Array([value]);
  return syscall(NR.setsockopt, fd, level, name, addr(v), 4);
}

/** getsockopt of an int; throws SysError on failure. */
export function getsockoptInt(fd: number, level: number, name: number): number {
  const v = new Int32Array(1), len = new Uint32Array([4]);
  const r = syscall(NR.getsockopt, fd, level, name, addr(v), addr(len));
  if (r < 0) throw new SysError(`getsockopt(${level}, ${name})`, -r);
  return v[0];
}

/** getsockopt into buf; returns the length the kernel wrote, or -errno. */
export function getsockoptBuf(fd: number, level: number, name: number, buf: Uint8Array): number {
  const len = new Uint32Array([buf.length]);
  const r = syscall(NR.getsockopt, fd, level, name, addr(buf), addr(len));
  return r < 0 ? r : len[0];
}
