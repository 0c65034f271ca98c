// Inet sockets seen from criu-bun itself: options, names, queue sizes of an fd we hold (a socket
// duplicated out of a dumped process with pidfd_getfd), and sockaddr layouts.
import { syscall, addr, cstr } from "./syscall";
import { NR } from "./nr";
import { SysError } from "./errno";
import { AF } from "./sock";
export { AF, SOCK, IPPROTO, SOL, SO, MSG, SHUT } from "./sock";

export const TCP = {
  NODELAY: 1,
  MAXSEG: 2,
  CORK: 3,
  KEEPIDLE: 4,
  KEEPINTVL: 5,
  KEEPCNT: 6,
  INFO: 11,
  REPAIR: 19,
  REPAIR_QUEUE: 20,
  QUEUE_SEQ: 21,
  REPAIR_OPTIONS: 22,
  TIMESTAMP: 24,
  REPAIR_WINDOW: 29,
} as const;
export const IP_FREEBIND = 15,
  IPV6_V6ONLY = 26,
  IPV6_FREEBIND = 78;
export const IP = { TOS: 1, TTL: 2, HDRINCL: 3, PKTINFO: 8, NODEFRAG: 22 } as const;
export const IPV6 = { RECVPKTINFO: 49, UNICAST_HOPS: 16, TCLASS: 67, HDRINCL: 36 } as const;
/** ICMP_FILTER (SOL_RAW) and ICMPV6_FILTER (SOL_ICMPV6): 4 and 32 bytes of type bits */
export const ICMP_FILTER = 1,
  ICMPV6_FILTER = 1;
export const SIOCINQ = 0x541b,
  SIOCOUTQ = 0x5411,
  SIOCOUTQNSD = 0x894b;

// one scratch buffer (and its length word) for every small getsockopt, results copied out (taking
// a fresh array's address costs more than the system call). Their addresses are taken at each
// call: addr() also tells the JIT the call may change them (a cached address does not, and the
// JIT then reads a stale value)
const optBuf = new Uint8Array(256),
  optLen = new Uint32Array(1),
  optInt = new Int32Array(1);

/** getsockopt into a buffer of len bytes; returns the bytes the kernel filled. */
export function getsockoptBytes(fd: number, level: number, opt: number, len: number): Uint8Array {
  if (len > optBuf.length) {
    const buf = new Uint8Array(Math.max(len, 4));
    const l = new Uint32Array([len]);
    const r = syscall(NR.getsockopt, fd, level, opt, addr(buf), addr(l));
    if (r < 0) throw new SysError(`getsockopt(${level}, ${opt})`, -r);
    return buf.subarray(0, l[0]);
  }
  optBuf.fill(0, 0, Math.max(len, 4));
  optLen[0] = len;
  const r = syscall(NR.getsockopt, fd, level, opt, addr(optBuf), addr(optLen));
  if (r < 0) throw new SysError(`getsockopt(${level}, ${opt})`, -r);
  return optBuf.slice(0, Math.min(optLen[0], len));
}
/** getsockopt of an int: the value, or undefined (errno in lastErr; a short answer is EINVAL) */
function getInt(fd: number, level: number, opt: number): number | undefined {
  optInt[0] = 0;
  optLen[0] = 4;
  const r = syscall(NR.getsockopt, fd, level, opt, addr(optInt), addr(optLen));
  if (r < 0) {
    lastErr = -r;
    return undefined;
  }
  if (optLen[0] < 4) {
    lastErr = 22;
    return undefined;
  }
  return optInt[0];
}
let lastErr = 0;
export function getsockoptInt(fd: number, level: number, opt: number): number {
  const v = getInt(fd, level, opt);
  if (v === undefined) throw new SysError(`getsockopt(${level}, ${opt})`, lastErr);
  return v;
}
/** Like getsockoptInt but undefined when the kernel does not know the option. */
export function tryGetsockoptInt(fd: number, level: number, opt: number): number | undefined {
  return getInt(fd, level, opt);
}
function setsockoptBytes(fd: number, level: number, opt: number, val: Uint8Array): number {
  return syscall(NR.setsockopt, fd, level, opt, addr(val), val.length);
}
export function setsockoptInt(fd: number, level: number, opt: number, v: number): number {
  return setsockoptBytes(fd, level, opt, int32(v));
}
export function int32(v: number): Uint8Array {
  return new Uint8Array(new Int32Array([v]).buffer);
}
export function ioctlInt(fd: number, req: number): number {
  const v = new Int32Array(1);
  const r = syscall(NR.ioctl, fd, req, addr(v));
  if (r < 0) throw new SysError(`ioctl(0x${req.toString(16)})`, -r);
  return v[0];
}
/** recv() exactly into a fresh buffer of len bytes (MSG_PEEK etc. in flags); returns what came. */
export function recvBytes(fd: number, len: number, flags: number): Uint8Array {
  const buf = new Uint8Array(len);
  if (len === 0) return buf;
  const r = syscall(NR.recvfrom, fd, addr(buf), len, flags, 0, 0);
  if (r < 0) throw new SysError("recv", -r);
  return buf.subarray(0, r);
}

interface SockName {
  family: number;
  port: number /** 4 or 16 bytes, network order */;
  addr: Uint8Array;
  flowinfo?: number;
  scope?: number;
}

function nameCall(nr: number, fd: number): SockName | null {
  const buf = new Uint8Array(128);
  const l = new Uint32Array([128]);
  const r = syscall(nr, fd, addr(buf), addr(l));
  if (r === -107 /* ENOTCONN */) return null;
  if (r < 0) throw new SysError(nr === NR.getsockname ? "getsockname" : "getpeername", -r);
  return parseSockaddr(buf.subarray(0, l[0]));
}
export const getSockName = (fd: number) => nameCall(NR.getsockname, fd);
export const getPeerName = (fd: number) => nameCall(NR.getpeername, fd);

function parseSockaddr(b: Uint8Array): SockName | null {
  if (b.length < 2) return null;
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const family = dv.getUint16(0, true);
  if (family === AF.INET) return { family, port: dv.getUint16(2, false), addr: b.slice(4, 8) };
  if (family === AF.INET6)
    return {
      family,
      port: dv.getUint16(2, false),
      flowinfo: dv.getUint32(4, false),
      addr: b.slice(8, 24),
      scope: dv.getUint32(24, true),
    };
  return { family, port: 0, addr: new Uint8Array(0) };
}

/** struct sockaddr_in / sockaddr_in6 bytes. */
export function sockaddr(family: number, address: Uint8Array, port: number, scope = 0): Uint8Array {
  const b = new Uint8Array(family === AF.INET6 ? 28 : 16);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, family, true);
  dv.setUint16(2, port, false);
  if (family === AF.INET6) {
    b.set(address.subarray(0, 16), 8);
    dv.setUint32(24, scope, true);
  } else b.set(address.subarray(0, 4), 4);
  return b;
}

/** CRIU stores addresses as u32 words read in host order from the network-order bytes. */
export function addrToWords(a: Uint8Array): number[] {
  const dv = new DataView(a.buffer, a.byteOffset, a.length);
  const out: number[] = [];
  for (let i = 0; i + 4 <= a.length; i += 4) out.push(dv.getUint32(i, true));
  return out;
}
export function wordsToAddr(w: number[], family: number): Uint8Array {
  const n = family === AF.INET6 ? 16 : 4;
  const b = new Uint8Array(n);
  const dv = new DataView(b.buffer);
  for (let i = 0; i < w.length && i * 4 < n; i++) dv.setUint32(i * 4, w[i] >>> 0, true);
  return b;
}
export function isV4Mapped(a: Uint8Array): boolean {
  return a.length === 16 && a.subarray(0, 10).every((x) => x === 0) && a[10] === 0xff && a[11] === 0xff;
}
export function addrString(family: number, a: Uint8Array): string {
  if (family === AF.INET || a.length === 4) return [...a].join(".");
  const parts: string[] = [];
  for (let i = 0; i < 16; i += 2) parts.push(((a[i] << 8) | a[i + 1]).toString(16));
  return `[${parts.join(":").replace(/(^|:)0(:0)+(:|$)/, "::")}]`;
}

/** The protocol name sockfs gives a socket (system.sockprotoname: "TCP", "UDPv6", "PING", "UNIX"...),
 * read through a path to it such as /proc/PID/fd/N; undefined if it has none. */
const protoBuf = new Uint8Array(64),
  protoAttr = cstr("system.sockprotoname"),
  protoText = new TextDecoder();
export function sockProtoName(path: string | number): string | undefined {
  // a path, or an fd of criu-bun's on the socket (fgetxattr: no walk through /proc)
  const r =
    typeof path === "number"
      ? syscall(NR.fgetxattr, path, addr(protoAttr), addr(protoBuf), protoBuf.length)
      : syscall(NR.getxattr, addr(cstr(path)), addr(protoAttr), addr(protoBuf), protoBuf.length);
  if (r <= 0) return undefined;
  return protoText.decode(protoBuf.subarray(0, r)).replace(/\0.*$/s, "");
}
