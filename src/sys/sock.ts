// Small socket helpers for `check` probes: creation, int options, one netlink request/answer.
import { syscall, addr } from "./syscall";
import { NR } from "./nr";
import { SysError } from "./errno";

export const AF = { UNIX: 1, INET: 2, INET6: 10, NETLINK: 16 } as const;
export const SOCK = { STREAM: 1, DGRAM: 2, RAW: 3, SEQPACKET: 5, NONBLOCK: 0o4000, CLOEXEC: 0o2000000 } as const;
export const SOL = { SOCKET: 1, TCP: 6, NETLINK: 270 } as const;
export const NETLINK = { ROUTE: 0, SOCK_DIAG: 4, NETFILTER: 12 } as const;
export const NLM_F = { REQUEST: 1, MULTI: 2, ACK: 4, DUMP: 0x300 } as const;
export const NLMSG = { NOOP: 1, ERROR: 2, DONE: 3 } as const;

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

export interface NlMsg { type: number; flags: number; seq: number; pid: number; payload: Uint8Array }

/** One netlink message: 16-byte nlmsghdr + payload, padded to 4 bytes. */
export function nlMessage(type: number, flags: number, seq: number, payload: Uint8Array): Uint8Array {
  const len = 16 + payload.length;
  const b = new Uint8Array((len + 3) & ~3);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, len, true); dv.setUint16(4, type, true); dv.setUint16(6, flags, true);
  dv.setUint32(8, seq, true); dv.setUint32(12, 0, true);
  b.set(payload, 16);
  return b;
}

export function parseNl(buf: Uint8Array, n: number): NlMsg[] {
  const out: NlMsg[] = [];
  const dv = new DataView(buf.buffer, buf.byteOffset, n);
  for (let off = 0; off + 16 <= n;) {
    const len = dv.getUint32(off, true);
    if (len < 16 || off + len > n) break;
    out.push({
      type: dv.getUint16(off + 4, true), flags: dv.getUint16(off + 6, true),
      seq: dv.getUint32(off + 8, true), pid: dv.getUint32(off + 12, true),
      payload: buf.slice(off + 16, off + len),
    });
    off += (len + 3) & ~3;
  }
  return out;
}

/**
 * Send one request to the kernel on a netlink socket and collect the answer: for a dump every
 * message up to NLMSG_DONE, otherwise the first message (NLMSG_ERROR carries -errno).
 */
export function nlTalk(fd: number, msg: Uint8Array, dump: boolean): NlMsg[] {
  const sa = new Uint8Array(12); // sockaddr_nl of the kernel (nl_pid 0)
  new DataView(sa.buffer).setUint16(0, AF.NETLINK, true);
  const s = syscall(NR.sendto, fd, addr(msg), msg.length, 0, addr(sa), sa.length);
  if (s < 0) throw new SysError("netlink sendto", -s);
  const out: NlMsg[] = [];
  const buf = new Uint8Array(65536);
  for (;;) {
    const r = syscall(NR.recvfrom, fd, addr(buf), buf.length, 0, 0, 0);
    if (r === -4) continue;
    if (r < 0) throw new SysError("netlink recvfrom", -r);
    if (r === 0) return out;
    for (const m of parseNl(buf, r)) {
      out.push(m);
      if (!dump || m.type === NLMSG.DONE || m.type === NLMSG.ERROR) return out;
    }
  }
}

/** The (negative) errno in an NLMSG_ERROR message; 0 is an ack. */
export function nlError(m: NlMsg): number {
  return new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.length).getInt32(0, true);
}
