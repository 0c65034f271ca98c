// Netlink from criu-bun, the one netlink library: message and attribute building and parsing, a
// request/ack exchange, dumps, and one request/answer on a caller's socket (check's probes).
// Used by the network lock (nf_tables), socket diagnostics (sock_diag) and `check`.
import { syscall, addr } from "./syscall";
import { NR } from "./nr";
import { SysError } from "./errno";
import { AF, SOCK } from "./sock";

export const NETLINK = { ROUTE: 0, SOCK_DIAG: 4, NETFILTER: 12 } as const;
export const NLM_F = {
  REQUEST: 1,
  MULTI: 2,
  ACK: 4,
  ROOT: 0x100,
  MATCH: 0x200,
  DUMP: 0x300,
  EXCL: 0x200,
  CREATE: 0x400,
  APPEND: 0x800,
} as const;
export const NLMSG = { NOOP: 1, ERROR: 2, DONE: 3 } as const;
const NLA_F_NESTED = 0x8000;

const align4 = (n: number) => (n + 3) & ~3;

/** Netlink attributes, built bottom-up. */
export class Attrs {
  parts: Uint8Array[] = [];
  private raw(type: number, data: Uint8Array) {
    const len = 4 + data.length;
    const b = new Uint8Array(align4(len));
    const dv = new DataView(b.buffer);
    dv.setUint16(0, len, true);
    dv.setUint16(2, type, true);
    b.set(data, 4);
    this.parts.push(b);
    return this;
  }
  bytes(type: number, data: Uint8Array) {
    return this.raw(type, data);
  }
  str(type: number, s: string) {
    return this.raw(type, new TextEncoder().encode(s + "\0"));
  }
  /** u32 in network byte order (nf_tables wants big endian numbers) */
  be32(type: number, v: number) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0, false);
    return this.raw(type, b);
  }
  u32(type: number, v: number) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0, true);
    return this.raw(type, b);
  }
  nest(type: number, inner: Attrs) {
    return this.raw(type | NLA_F_NESTED, inner.concat());
  }
  concat(): Uint8Array {
    return concat(this.parts);
  }
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** One netlink message: header + fixed part (e.g. nfgenmsg) + attributes. */
export function nlmsg(type: number, flags: number, seq: number, body: Uint8Array): Uint8Array {
  const len = 16 + body.length;
  const b = new Uint8Array(align4(len));
  const dv = new DataView(b.buffer);
  dv.setUint32(0, len, true);
  dv.setUint16(4, type, true);
  dv.setUint16(6, flags, true);
  dv.setUint32(8, seq >>> 0, true);
  dv.setUint32(12, 0, true);
  b.set(body, 16);
  return b;
}

export interface NlReply {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  payload: Uint8Array;
}

/** Split the first n bytes of buf (one datagram) into netlink messages. */
function parseNl(buf: Uint8Array, n: number): NlReply[] {
  const out: NlReply[] = [];
  const dv = new DataView(buf.buffer, buf.byteOffset, n);
  for (let off = 0; off + 16 <= n; ) {
    const len = dv.getUint32(off, true);
    if (len < 16 || off + len > n) break;
    out.push({
      type: dv.getUint16(off + 4, true),
      flags: dv.getUint16(off + 6, true),
      seq: dv.getUint32(off + 8, true),
      pid: dv.getUint32(off + 12, true),
      payload: buf.slice(off + 16, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** The (negative) errno in an NLMSG_ERROR message's payload; 0 is an ack. */
export function nlError(m: { payload: Uint8Array }): number {
  return new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.length).getInt32(0, true);
}

/** sendto the kernel (sockaddr_nl with nl_pid 0) on a netlink socket. */
function sendToKernel(fd: number, buf: Uint8Array) {
  const sa = new Uint8Array(12);
  sa[0] = AF.NETLINK;
  const r = syscall(NR.sendto, fd, addr(buf), buf.length, 0, addr(sa), 12);
  if (r < 0) throw new SysError("netlink sendto", -r);
}

/**
 * Send one request to the kernel on a netlink socket and collect the answer: for a dump every
 * message up to NLMSG_DONE, otherwise the first message (NLMSG_ERROR carries -errno).
 */
export function nlTalk(fd: number, msg: Uint8Array, dump: boolean): NlReply[] {
  sendToKernel(fd, msg);
  const out: NlReply[] = [];
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

export class NetlinkSocket {
  fd: number;
  seq = Math.floor(Date.now() / 1000) & 0xffffff;
  constructor(public proto: number) {
    const fd = syscall(NR.socket, AF.NETLINK, SOCK.RAW | SOCK.CLOEXEC, proto);
    if (fd < 0) throw new SysError(`socket(AF_NETLINK, ${proto})`, -fd);
    this.fd = fd;
  }
  nextSeq() {
    return ++this.seq;
  }
  send(buf: Uint8Array) {
    sendToKernel(this.fd, buf);
  }
  /** Read one datagram and split it into messages. */
  recv(): NlReply[] {
    const buf = new Uint8Array(65536);
    let r: number;
    do r = syscall(NR.recvfrom, this.fd, addr(buf), buf.length, 0, 0, 0);
    while (r === -4);
    if (r < 0) throw new SysError("netlink recv", -r);
    return parseNl(buf, r);
  }
  /**
   * Send messages that each asked for an ACK (seqs listed in `acks`); returns 0 when all were
   * acknowledged, or the first negative errno (with the seq it belongs to).
   */
  exchange(buf: Uint8Array, acks: number[]): { err: number; seq: number } {
    this.send(buf);
    const want = new Set(acks);
    while (want.size) {
      for (const m of this.recv()) {
        if (m.type !== NLMSG.ERROR) continue;
        const err = nlError(m);
        if (err < 0) return { err, seq: m.seq };
        want.delete(m.seq);
      }
    }
    return { err: 0, seq: 0 };
  }
  /** A dump request: collect every reply message until NLMSG_DONE. */
  dump(type: number, body: Uint8Array): NlReply[] {
    const seq = this.nextSeq();
    this.send(nlmsg(type, NLM_F.REQUEST | NLM_F.DUMP, seq, body));
    const out: NlReply[] = [];
    for (;;) {
      for (const m of this.recv()) {
        if (m.seq !== seq) continue;
        if (m.type === NLMSG.DONE) return out;
        if (m.type === NLMSG.ERROR) {
          const err = nlError(m);
          if (err < 0) throw new SysError("netlink dump", -err);
          continue;
        }
        out.push(m);
      }
    }
  }
  close() {
    if (this.fd >= 0) syscall(NR.close, this.fd);
    this.fd = -1;
  }
}
