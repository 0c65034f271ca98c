// Netlink from criu-bun: message and attribute building, a request/ack exchange, and dumps.
// Used by the network lock (nf_tables) and by socket diagnostics (sock_diag).
import { syscall, addr } from "./syscall";
import { NR } from "./nr";
import { SysError } from "./errno";

export const NETLINK = { SOCK_DIAG: 4, NETFILTER: 12 } as const;
export const NLM_F = { REQUEST: 1, MULTI: 2, ACK: 4, ROOT: 0x100, MATCH: 0x200, DUMP: 0x300, EXCL: 0x200, CREATE: 0x400, APPEND: 0x800 } as const;
export const NLMSG = { NOOP: 1, ERROR: 2, DONE: 3 } as const;
export const NLA_F_NESTED = 0x8000;

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
  bytes(type: number, data: Uint8Array) { return this.raw(type, data); }
  str(type: number, s: string) { return this.raw(type, new TextEncoder().encode(s + "\0")); }
  /** u32 in network byte order (nf_tables wants big endian numbers) */
  be32(type: number, v: number) { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v >>> 0, false); return this.raw(type, b); }
  u32(type: number, v: number) { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v >>> 0, true); return this.raw(type, b); }
  nest(type: number, inner: Attrs) { return this.raw(type | NLA_F_NESTED, inner.concat()); }
  concat(): Uint8Array { return concat(this.parts); }
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
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

export interface NlReply { type: number; flags: number; seq: number; payload: Uint8Array }

export class NetlinkSocket {
  fd: number;
  seq = Math.floor(Date.now() / 1000) & 0xffffff;
  constructor(public proto: number) {
    const fd = syscall(NR.socket, 16 /* AF_NETLINK */, 3 /* SOCK_RAW */ | 0o2000000 /* CLOEXEC */, proto);
    if (fd < 0) throw new SysError(`socket(AF_NETLINK, ${proto})`, -fd);
    this.fd = fd;
  }
  nextSeq() { return ++this.seq; }
  send(buf: Uint8Array) {
    const sa = new Uint8Array(12);
    sa[0] = 16;
    const r = syscall(NR.sendto, this.fd, addr(buf), buf.length, 0, addr(sa), 12);
    if (r < 0) throw new SysError("netlink sendto", -r);
  }
  /** Read one datagram and split it into messages. */
  recv(): NlReply[] {
    const buf = new Uint8Array(65536);
    let r: number;
    do r = syscall(NR.recvfrom, this.fd, addr(buf), buf.length, 0, 0, 0); while (r === -4);
    if (r < 0) throw new SysError("netlink recv", -r);
    const out: NlReply[] = [];
    const dv = new DataView(buf.buffer);
    for (let o = 0; o + 16 <= r;) {
      const len = dv.getUint32(o, true);
      if (len < 16) break;
      out.push({ type: dv.getUint16(o + 4, true), flags: dv.getUint16(o + 6, true), seq: dv.getUint32(o + 8, true), payload: buf.slice(o + 16, o + len) });
      o += align4(len);
    }
    return out;
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
        const err = new DataView(m.payload.buffer, m.payload.byteOffset).getInt32(0, true);
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
          const err = new DataView(m.payload.buffer, m.payload.byteOffset).getInt32(0, true);
          if (err < 0) throw new SysError("netlink dump", -err);
          continue;
        }
        out.push(m);
      }
    }
  }
  close() { if (this.fd >= 0) syscall(NR.close, this.fd); this.fd = -1; }
}
