// Socket constants (the one table) and small socket helpers: creation, a raw getsockopt. Int
// and byte options are in ./inetsock, netlink in ./netlink, sock_diag in ./sockdiag.
import { syscall, addr } from "./syscall";
import { NR } from "./nr";
import { SysError } from "./errno";

// The one table of socket constants (families, types, levels, SOL_SOCKET options, MSG_ flags);
// sys/inetsock re-exports them with the inet-only ones.
export const AF = { UNIX: 1, INET: 2, INET6: 10, NETLINK: 16 } as const;
/** Names of the families a dump meets but does not save (for its refusal line). */
export const AF_NAMES: Readonly<Record<number, string>> = {
  2: "inet",
  10: "inet6",
  16: "netlink",
  17: "packet",
  40: "vsock",
  44: "xdp",
  38: "alg",
};
export const SOCK = { STREAM: 1, DGRAM: 2, RAW: 3, SEQPACKET: 5, NONBLOCK: 0o4000, CLOEXEC: 0o2000000 } as const;
export const IPPROTO = { IP: 0, ICMP: 1, TCP: 6, UDP: 17, IPV6: 41, ICMPV6: 58, UDPLITE: 136, RAW: 255 } as const;
export const SOL = { SOCKET: 1, IP: 0, TCP: 6, UDP: 17, IPV6: 41, ICMPV6: 58, RAW: 255, NETLINK: 270 } as const;
export const SO = {
  REUSEADDR: 2,
  TYPE: 3,
  DONTROUTE: 5,
  BROADCAST: 6,
  SNDBUF: 7,
  RCVBUF: 8,
  KEEPALIVE: 9,
  OOBINLINE: 10,
  PRIORITY: 12,
  LINGER: 13,
  REUSEPORT: 15,
  RCVLOWAT: 18,
  RCVTIMEO: 20,
  SNDTIMEO: 21,
  BINDTODEVICE: 25,
  NO_CHECK: 11,
  PASSCRED: 16,
  PEERCRED: 17,
  GET_FILTER: 26,
  ATTACH_FILTER: 26,
  PASSSEC: 34,
  LOCK_FILTER: 44,
  ACCEPTCONN: 30,
  SNDBUFFORCE: 32,
  RCVBUFFORCE: 33,
  PROTOCOL: 38,
  DOMAIN: 39,
  MARK: 36,
  PEEK_OFF: 42,
  BUF_LOCK: 72,
  PASSPIDFD: 76,
  PASSRIGHTS: 83,
} as const;
/** shutdown(2) how */
export const SHUT = { RD: 0, WR: 1, RDWR: 2 } as const;
export const SCM_RIGHTS = 1;
export const MSG = { PEEK: 2, TRUNC: 0x20, DONTWAIT: 0x40, NOSIGNAL: 0x4000, CMSG_CLOEXEC: 0x40000000 } as const;

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

/** getsockopt into buf; returns the length the kernel wrote, or -errno. */
export function getsockoptBuf(fd: number, level: number, name: number, buf: Uint8Array): number {
  const len = new Uint32Array([buf.length]);
  const r = syscall(NR.getsockopt, fd, level, name, addr(buf), addr(len));
  return r < 0 ? r : len[0];
}
