// One message per packet on a unix SOCK_SEQPACKET socket (criu's RPC), with an fd passed
// alongside (SCM_RIGHTS), and the peer's credentials (SO_PEERCRED).
import { syscall, addr } from "./syscall";
import { NR } from "./nr";
import { SysError } from "./errno";

import { AF, SOCK, SOL, SO, MSG, SCM_RIGHTS } from "./sock";

const MSG_TRUNC = MSG.TRUNC,
  MSG_CMSG_CLOEXEC = MSG.CMSG_CLOEXEC,
  MSG_NOSIGNAL = MSG.NOSIGNAL;
const SOL_SOCKET = SOL.SOCKET,
  SO_PEERCRED = SO.PEERCRED;
const EINTR = 4;

/** struct msghdr (56 bytes) with its one iovec right after it, in one buffer; data and control are
 *  kept alive by the caller */
function msghdr(data: Uint8Array, control: Uint8Array | null) {
  const h = new BigUint64Array(9);
  h[7] = BigInt(data.length ? addr(data) : 0);
  h[8] = BigInt(data.length);
  h[2] = BigInt(addr(h, 56));
  h[3] = 1n;
  if (control) {
    h[4] = BigInt(addr(control));
    h[5] = BigInt(control.length);
  }
  return h;
}

interface Packet {
  data: Uint8Array;
  fds: number[];
  truncated: boolean;
}

/** Receive one packet (blocking). data is empty at end of stream (the peer closed). */
export function recvPacket(fd: number, max = 1 << 20): Packet {
  const buf = new Uint8Array(max);
  const control = new Uint8Array(64);
  for (;;) {
    const h = msghdr(buf, control);
    const r = syscall(NR.recvmsg, fd, addr(h), MSG_CMSG_CLOEXEC);
    if (r === -EINTR) continue;
    if (r < 0) throw new SysError("recvmsg", -r);
    const fds: number[] = [];
    const clen = Number(h[5]);
    const dv = new DataView(control.buffer);
    for (let off = 0; off + 16 <= clen; ) {
      const len = Number(dv.getBigUint64(off, true));
      if (len < 16) break;
      if (dv.getInt32(off + 8, true) === SOL_SOCKET && dv.getInt32(off + 12, true) === SCM_RIGHTS) {
        for (let p = off + 16; p + 4 <= off + len; p += 4) fds.push(dv.getInt32(p, true));
      }
      off += (len + 7) & ~7;
    }
    const flags = Number(h[6] & 0xffffffffn);
    return { data: buf.slice(0, Math.min(r, max)), fds, truncated: (flags & MSG_TRUNC) !== 0 };
  }
}

/** Send one packet, with FD passed by SCM_RIGHTS when given. */
export function sendPacket(fd: number, data: Uint8Array, passFd?: number) {
  let control: Uint8Array | null = null;
  if (passFd !== undefined) {
    control = new Uint8Array(24); // CMSG_SPACE(4)
    const dv = new DataView(control.buffer);
    dv.setBigUint64(0, 20n, true); // CMSG_LEN(4)
    dv.setInt32(8, SOL_SOCKET, true);
    dv.setInt32(12, SCM_RIGHTS, true);
    dv.setInt32(16, passFd, true);
  }
  for (;;) {
    const h = msghdr(data, control);
    const r = syscall(NR.sendmsg, fd, addr(h), MSG_NOSIGNAL);
    if (r === -EINTR) continue;
    if (r < 0) throw new SysError("sendmsg", -r);
    return;
  }
}

/** The pid, uid and gid of the process at the other end (as it was when it connected). */
export function peerCred(fd: number): { pid: number; uid: number; gid: number } {
  const v = new Int32Array(3),
    len = new Uint32Array([12]);
  const r = syscall(NR.getsockopt, fd, SOL_SOCKET, SO_PEERCRED, addr(v), addr(len));
  if (r < 0) throw new SysError("getsockopt(SO_PEERCRED)", -r);
  return { pid: v[0], uid: v[1], gid: v[2] };
}

/** SO_TYPE of an fd that should be a socket; -errno when it is not one. */
export function socketType(fd: number): number {
  const v = new Int32Array(1),
    len = new Uint32Array([4]);
  const r = syscall(NR.getsockopt, fd, SOL_SOCKET, SO.TYPE, addr(v), addr(len));
  return r < 0 ? r : v[0];
}

/** struct sockaddr_un for a path (at most 107 bytes). */
function sockaddrUn(path: string): Uint8Array {
  const p = Buffer.from(path, "utf8");
  if (p.length > 107) throw new SysError(`unix socket path ${path}`, 36 /* ENAMETOOLONG */);
  const a = new Uint8Array(2 + 108);
  a[0] = AF.UNIX;
  a.set(p, 2);
  return a;
}

/** A listening SOCK_SEQPACKET unix socket bound at path (close-on-exec). */
export function seqpacketListen(path: string, backlog: number): number {
  const fd = syscall(NR.socket, AF.UNIX, SOCK.SEQPACKET | SOCK.CLOEXEC, 0);
  if (fd < 0) throw new SysError("socket", -fd);
  const a = sockaddrUn(path);
  let r = syscall(NR.bind, fd, addr(a), 2 + Buffer.byteLength(path) + 1);
  if (r < 0) {
    syscall(NR.close, fd);
    throw new SysError(`bind ${path}`, -r);
  }
  r = syscall(NR.listen, fd, backlog);
  if (r < 0) {
    syscall(NR.close, fd);
    throw new SysError("listen", -r);
  }
  return fd;
}

/** The next connection on a listening socket, or -1 if none came within timeoutMs. */
export function seqpacketAccept(fd: number, timeoutMs: number): number {
  const pfd = new Int32Array([fd, 1 /* POLLIN */]);
  const r = syscall(NR.poll, addr(pfd), 1, timeoutMs);
  if (r === -EINTR || r === 0) return -1;
  if (r < 0) throw new SysError("poll", -r);
  const c = syscall(NR.accept4, fd, 0, 0, SOCK.CLOEXEC);
  if (c === -EINTR || c === -11 /* EAGAIN */ || c === -103 /* ECONNABORTED */) return -1;
  if (c < 0) throw new SysError("accept4", -c);
  return c;
}

/** A SOCK_SEQPACKET connection to the unix socket at path. */
export function seqpacketConnect(path: string): number {
  const fd = syscall(NR.socket, AF.UNIX, SOCK.SEQPACKET | SOCK.CLOEXEC, 0);
  if (fd < 0) throw new SysError("socket", -fd);
  const a = sockaddrUn(path);
  const r = syscall(NR.connect, fd, addr(a), 2 + Buffer.byteLength(path) + 1);
  if (r < 0) {
    syscall(NR.close, fd);
    throw new SysError(`connect ${path}`, -r);
  }
  return fd;
}
