// Inet sockets (IPv4, IPv6, v4-mapped): TCP listening, established (--tcp-established, through
// TCP repair) and closed/bound sockets, UDP bound and connected sockets. Images as CRIU writes
// them: file_entry.isk in files.img, tcp-stream-<inode hex>.img with the queued bytes.
// Established connections are isolated by the network lock (src/net/netlock.ts) from the moment
// they are dumped until the restored process runs.
import { readFileSync } from "node:fs";
import { isFieldSet } from "@bufbuild/protobuf";
import type { FdKind, RestoreCtx } from "./fdkind";
import { FOWN0, cachedPayloads } from "./fdkind";
import {
  AF, SOL, SO, TCP, IPPROTO, IP_FREEBIND, IPV6_V6ONLY, IPV6_FREEBIND, SOCK,
  getsockoptInt, tryGetsockoptInt, getsockoptBytes, getSockName, getPeerName,
  sockaddr, addrToWords, wordsToAddr, addrString, int32, ioctlInt, SIOCOUTQ,
} from "../sys/inetsock";
import { NetlinkSocket, NETLINK } from "../sys/netlink";
import { syscall } from "../sys/syscall";
import { NR } from "../sys/nr";
import { MAP } from "./vma";
import {
  TCP_STATE, TCP_STATE_NAME, tcpInfo, repairOn, repairOff, dumpTcpStream, restoreTcpStream, type TcpStream, type SockOps,
} from "../net/tcp-repair";
import { netLock, netUnlock, netRelease, lockTableName, heldTableName, type LockedEndpoint } from "../net/netlock";
import { withNetns } from "../sys/netns";
import * as S from "../images/gen/sockets_pb";
import { CriuError, log } from "../log";
import { errnoName } from "../sys/errno";
import { refuse } from "./unsupported";

const FD_INETSK = 4;
export const streamImage = (ino: number) => `tcp-stream-${ino.toString(16)}.img`;

// ---------- which sockets are ours ----------

/** Inodes of the inet sockets of process pid's network namespace (/proc/PID/net is its view). */
function inetInodes(pid: number): Set<bigint> {
  const out = new Set<bigint>();
  for (const f of ["tcp", "tcp6", "udp", "udp6"]) {
    let text: string;
    try { text = readFileSync(`/proc/${pid}/net/${f}`, "latin1"); } catch { continue; }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9) out.add(BigInt(cols[9]));
    }
  }
  return out;
}

// ---------- dump-side session: connections held in repair mode until the dump ends ----------

interface DumpSession { locks: Map<number, LockedEndpoint[]>; repaired: { fd: number; where: string }[] }
let session: DumpSession | null = null;

/**
 * Lock endpoints of process pid. While the dump runs the lock is held by this criu-bun (gone if
 * it dies); a dump that kills the process leaves the same rules in the table a restore of that
 * process lifts (see netDumpEnd).
 */
function lockDump(pid: number, eps: LockedEndpoint[]) {
  session ??= { locks: new Map(), repaired: [] };
  withNetns(pid, () => netLock(heldTableName(pid), eps, { hold: true }));
  const l = session.locks.get(pid) ?? [];
  l.push(...eps);
  session.locks.set(pid, l);
}

/**
 * End of a dump that touched inet sockets. "killed": the process is gone, our duplicates of its
 * connections are closed in repair mode (nothing is sent) and the lock stays until restore.
 * "running" (-R, -s) or "failed": connections leave repair mode and the lock is removed.
 */
export function netDumpEnd(outcome: "killed" | "running" | "failed") {
  const s = session;
  session = null;
  if (!s) return;
  try {
    // before the tree dies (its network namespace is reached through it): the lock that outlives us
    if (outcome === "killed") for (const [pid, eps] of s.locks) withNetns(pid, () => netLock(lockTableName(pid), eps));
  } catch (e: any) {
    log.error("dump", `the network lock could not be kept for the restore (${e?.message}); peers may see the connections reset`);
  } finally {
    for (const pid of s.locks.keys()) netRelease(heldTableName(pid));
  }
  for (const r of s.repaired) {
    if (outcome !== "killed") {
      const e = repairOff(r.fd);
      if (e < 0) log.warn(`${r.where}: leaving TCP repair mode failed (errno ${-e})`);
    }
    syscall(NR.close, r.fd);
  }
}

// ---------- socket options ----------

function dumpSkOpts(fd: number, proto: number) {
  const i = (lvl: number, opt: number) => tryGetsockoptInt(fd, lvl, opt) ?? 0;
  const tv = (opt: number) => {
    const b = getsockoptBytes(fd, SOL.SOCKET, opt, 16);
    const dv = new DataView(b.buffer, b.byteOffset);
    return [dv.getBigUint64(0, true), dv.getBigUint64(8, true)];
  };
  const [sndS, sndU] = tv(SO.SNDTIMEO), [rcvS, rcvU] = tv(SO.RCVTIMEO);
  const lb = getsockoptBytes(fd, SOL.SOCKET, SO.LINGER, 8);
  const ldv = new DataView(lb.buffer, lb.byteOffset);
  let dev = "";
  try { dev = new TextDecoder().decode(getsockoptBytes(fd, SOL.SOCKET, SO.BINDTODEVICE, 64)).replace(/\0.*$/s, ""); } catch {}
  const o: Record<string, any> = {
    soSndbuf: i(SOL.SOCKET, SO.SNDBUF), soRcvbuf: i(SOL.SOCKET, SO.RCVBUF),
    soSndTmoSec: sndS, soSndTmoUsec: sndU, soRcvTmoSec: rcvS, soRcvTmoUsec: rcvU,
    reuseaddr: i(SOL.SOCKET, SO.REUSEADDR) !== 0, soPriority: i(SOL.SOCKET, SO.PRIORITY),
    soRcvlowat: i(SOL.SOCKET, SO.RCVLOWAT), soMark: i(SOL.SOCKET, SO.MARK),
    soDontroute: i(SOL.SOCKET, SO.DONTROUTE) !== 0, soReuseport: i(SOL.SOCKET, SO.REUSEPORT) !== 0,
    soBroadcast: i(SOL.SOCKET, SO.BROADCAST) !== 0, soKeepalive: i(SOL.SOCKET, SO.KEEPALIVE) !== 0,
    soOobinline: i(SOL.SOCKET, SO.OOBINLINE), soBufLock: i(SOL.SOCKET, SO.BUF_LOCK),
  };
  if (ldv.getInt32(0, true)) o.soLinger = ldv.getInt32(4, true);
  if (dev) o.soBoundDev = dev;
  if (proto === IPPROTO.TCP) {
    o.tcpKeepcnt = i(SOL.TCP, TCP.KEEPCNT); o.tcpKeepidle = i(SOL.TCP, TCP.KEEPIDLE); o.tcpKeepintvl = i(SOL.TCP, TCP.KEEPINTVL);
  }
  return o;
}

/** Listen backlog of a listening socket, from sock_diag (the kernel reports it as wqueue). */
function listenBacklog(family: number, port: number, ino: number): number | undefined {
  let nl: NetlinkSocket | undefined;
  try {
    nl = new NetlinkSocket(NETLINK.SOCK_DIAG);
    const req = new Uint8Array(56);
    const dv = new DataView(req.buffer);
    req[0] = family; req[1] = IPPROTO.TCP;
    dv.setUint32(4, 1 << TCP_STATE.LISTEN, true);
    dv.setUint16(8, port, false);
    for (const m of nl.dump(20 /* SOCK_DIAG_BY_FAMILY */, req)) {
      const d = new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.length);
      if (m.payload.length >= 72 && d.getUint32(68, true) === ino) return d.getUint32(60, true);
    }
  } catch (e: any) { log.debug(`sock_diag: ${e.message}`); }
  finally { nl?.close(); }
  return undefined;
}

/** sk_shutdown of an inet socket (INET_DIAG_SHUTDOWN), found by inode in the process's netns. */
function inetShutdown(pid: number, family: number, proto: number, ino: number, where: string): number {
  return withNetns(pid, () => {
    const nl = new NetlinkSocket(NETLINK.SOCK_DIAG);
    try {
      const req = new Uint8Array(56);
      const dv = new DataView(req.buffer);
      req[0] = family; req[1] = proto;
      dv.setUint32(4, 0xffffffff, true);
      for (const m of nl.dump(20 /* SOCK_DIAG_BY_FAMILY */, req)) {
        const p = m.payload, d = new DataView(p.buffer, p.byteOffset, p.length);
        if (p.length < 72 || d.getUint32(68, true) !== ino) continue;
        for (let off = 72; off + 4 <= p.length;) {
          const alen = d.getUint16(off, true), atype = d.getUint16(off + 2, true);
          if (alen < 4) break;
          if (atype === 8 /* INET_DIAG_SHUTDOWN */) return p[off + 4];
          off += (alen + 3) & ~3;
        }
        return 0;
      }
    } catch (e: any) {
      throw new CriuError("files", `${where}: sock_diag cannot tell whether the socket is shut down (${e.message})`);
    } finally { nl.close(); }
    throw new CriuError("files", `${where}: sock_diag does not know socket ${ino}`);
  });
}

// ---------- the kind ----------

let inodes: { at: number; set: Set<bigint> } | null = null;

export const inetKind: FdKind = {
  name: "inet socket",
  type: FD_INETSK,
  match(target, st, procPath) {
    if (!target.startsWith("socket:[")) return false;
    const pid = Number(/^\/proc\/(\d+)\//.exec(procPath ?? "")?.[1] ?? "self");
    // one scan per dump (a dump takes well under a second between fds)
    if (!inodes || Date.now() - inodes.at > 1000 || !inodes.set.has(st.ino)) inodes = { at: Date.now(), set: inetInodes(pid) };
    return inodes.set.has(st.ino);
  },
  dump(ctx) {
    const fd = ctx.grab();
    const where = ctx.where;
    const family = getsockoptInt(fd, SOL.SOCKET, SO.DOMAIN);
    const type = getsockoptInt(fd, SOL.SOCKET, SO.TYPE);
    const proto = getsockoptInt(fd, SOL.SOCKET, SO.PROTOCOL);
    const ino = Number(ctx.st.ino);
    if (family !== AF.INET && family !== AF.INET6) throw new CriuError("files", `${where}: socket family ${family} is not an inet socket`);
    if (!((type === SOCK.STREAM && proto === IPPROTO.TCP) || (type === SOCK.DGRAM && proto === IPPROTO.UDP))) {
      throw new CriuError("files", `${where}: inet socket type ${type} protocol ${proto} is not supported yet (TCP and UDP are)`);
    }
    const local = getSockName(fd)!;
    const peer = getPeerName(fd);
    const isk: Record<string, any> = {
      id: 0, ino, family, type, proto, flags: ctx.flags, backlog: 0,
      srcPort: local.port, dstPort: peer?.port ?? 0,
      srcAddr: addrToWords(local.addr), dstAddr: addrToWords(peer?.addr ?? new Uint8Array(family === AF.INET6 ? 16 : 4)),
      fown: FOWN0, opts: dumpSkOpts(fd, proto),
    };
    if (family === AF.INET6) isk.v6only = getsockoptInt(fd, SOL.IPV6, IPV6_V6ONLY) !== 0;
    const fb = tryGetsockoptInt(fd, family === AF.INET6 ? SOL.IPV6 : SOL.IP, family === AF.INET6 ? IPV6_FREEBIND : IP_FREEBIND);
    if (fb) isk.ipOpts = { freebind: true };
    const conn = `${addrString(family, local.addr)}:${local.port}${peer ? ` <-> ${addrString(family, peer.addr)}:${peer.port}` : ""}`;
    let stream: TcpStream | undefined;
    if (proto === IPPROTO.TCP) {
      const state = tcpInfo(fd).state;
      isk.state = state;
      if (state === TCP_STATE.LISTEN) {
        isk.backlog = listenBacklog(family, local.port, ino) ?? 128;
        if (ctx.opts.tcpEstablished) lockDump(ctx.pid, [{ proto, local: local.addr, lport: local.port }]);
      } else if (state === TCP_STATE.ESTABLISHED) {
        if (!ctx.opts.tcpEstablished && !ctx.opts.tcpClose) {
          throw new CriuError("files", `${where}: established TCP connection ${conn}; use --tcp-established to dump it (or --tcp-close to restore it closed)`);
        }
        if (ctx.opts.tcpEstablished) {
          lockDump(ctx.pid, [{ proto, local: local.addr, lport: local.port, remote: peer!.addr, rport: peer!.port }]);
          // keep our own duplicate: repair mode must outlive this fd loop (see netDumpEnd)
          const keep = syscall(NR.fcntl, fd, 1030 /* F_DUPFD_CLOEXEC */, 0);
          if (keep < 0) throw new CriuError("files", `${where}: dup failed (errno ${-keep})`);
          repairOn(keep, where);
          session ??= { locks: new Map(), repaired: [] };
          session!.repaired.push({ fd: keep, where });
          stream = dumpTcpStream(keep, `${where} (${conn})`);
        }
      } else if (state !== TCP_STATE.CLOSE) {
        throw new CriuError("files", `${where}: TCP connection ${conn} in state ${TCP_STATE_NAME[state] ?? state} cannot be dumped yet`);
      }
    } else {
      isk.state = peer ? TCP_STATE.ESTABLISHED : TCP_STATE.CLOSE;
      // shut down for reading and/or writing (sk_shutdown: 1 read, 2 write), as CRIU's sk_shutdown
      const shut = inetShutdown(ctx.pid, family, proto, ino, where);
      if (shut) isk.shutdown = shut;
      // data in the cork is in the send queue until uncorked
      if (tryGetsockoptInt(fd, IPPROTO.UDP, 1 /* UDP_CORK */) && ioctlInt(fd, SIOCOUTQ) > 0) refuse("files", where, "udp-cork", conn);
    }
    const id = ctx.files.add(null, (id) => ({ id, type: FD_INETSK, isk: { ...isk, id } }));
    if (stream) {
      const s = stream.state;
      ctx.images.add(streamImage(ino), "TCP_STREAM", S.tcp_stream_entrySchema, { ...s },
        concatBytes(stream.inq, stream.outq));
      log.info(`${where}: TCP ${conn}: receive queue ${s.inqLen} bytes, send queue ${s.outqLen} (${s.unsqLen} unsent)`);
    } else log.debug(`${where}: ${proto === IPPROTO.TCP ? "TCP" : "UDP"} ${TCP_STATE_NAME[isk.state]} ${conn}`);
    return id;
  },
  restore(ctx, f) {
    return restoreInet(ctx, f.isk!);
  },
};

function concatBytes(a: Uint8Array, b: Uint8Array) {
  const r = new Uint8Array(a.length + b.length);
  r.set(a); r.set(b, a.length);
  return r;
}

// ---------- restore ----------

let restoreOpts: { tcpClose?: boolean } = {};
/** lock tables of the processes of this restore that have inet sockets */
let restoreTables = new Map<string, number>();

/** Options of this restore (--tcp-close). */
export function netRestoreBegin(o: { tcpClose?: boolean }) { restoreOpts = o; restoreTables = new Map(); }
/** After a successful restore: the connections are live again, lift the locks (the dump's too:
 * same table names in the same network namespace). */
export function netRestoreEnd() {
  try { for (const [t, pid] of restoreTables) withNetns(pid, () => netUnlock(t)); }
  finally { netRestoreAbort(); }
}
/** A failed restore: its own locks go (the dump's stays, for another try). */
export function netRestoreAbort() {
  for (const pid of restoreTables.values()) netRelease(heldTableName(pid));
  restoreTables = new Map();
}

/** Lock every TCP endpoint of this restore before the first connection is made. */
function lockRestore(ctx: RestoreCtx) {
  if (ctx.state.has("inet:locked")) return;
  ctx.state.set("inet:locked", true);
  const eps: LockedEndpoint[] = [];
  for (const f of ctx.files.values()) {
    const k = f.isk;
    if (!k || k.proto !== IPPROTO.TCP) continue;
    const local = wordsToAddr(k.srcAddr, k.family);
    if (k.state === TCP_STATE.LISTEN) eps.push({ proto: k.proto, local, lport: k.srcPort });
    else if (k.state === TCP_STATE.ESTABLISHED) eps.push({ proto: k.proto, local, lport: k.srcPort, remote: wordsToAddr(k.dstAddr, k.family), rport: k.dstPort });
  }
  restoreTables.set(lockTableName(ctx.pid), ctx.pid);
  withNetns(ctx.pid, () => netLock(heldTableName(ctx.pid), eps, { hold: true }));
}

function restoreInet(ctx: RestoreCtx, k: S.inet_sk_entry): number {
  const inj = ctx.inj, where = ctx.where;
  restoreTables.set(lockTableName(ctx.pid), ctx.pid);
  const fail = (what: string, r: bigint | number) => {
    throw new CriuError("restore", `${where}: ${what} failed (errno ${-Number(r)}: ${errnoName(-Number(r))})`);
  };
  const call = (what: string, nr: number, ...a: (number | bigint)[]) => {
    const r = inj.call(nr, ...a);
    if (r < 0n) fail(what, r);
    return r;
  };
  const setopt = (lvl: number, opt: number, v: Uint8Array) => Number(inj.call(NR.setsockopt, fdT, lvl, opt, ctx.scratch(0n, v), v.length));
  const setInt = (lvl: number, opt: number, v: number, what: string) => { const r = setopt(lvl, opt, int32(v)); if (r < 0) fail(`setsockopt ${what}`, r); };
  let fdT = Number(call("socket", NR.socket, k.family, k.type | SOCK.CLOEXEC, k.proto));
  fdT = ctx.high(fdT, where);
  const local = wordsToAddr(k.srcAddr, k.family);
  const peerAddr = wordsToAddr(k.dstAddr, k.family);
  const bindTo = () => {
    const sa = sockaddr(k.family, local, k.srcPort);
    const r = inj.call(NR.bind, fdT, ctx.scratch(0n, sa), sa.length);
    if (r < 0n) fail(`bind to ${addrString(k.family, local)}:${k.srcPort}`, r);
  };
  if (k.family === AF.INET6) setInt(SOL.IPV6, IPV6_V6ONLY, k.v6only ? 1 : 0, "IPV6_V6ONLY");
  if (k.ipOpts?.freebind) setInt(k.family === AF.INET6 ? SOL.IPV6 : SOL.IP, k.family === AF.INET6 ? IPV6_FREEBIND : IP_FREEBIND, 1, "FREEBIND");
  if (k.opts?.soBoundDev) {
    const d = new TextEncoder().encode(k.opts.soBoundDev + "\0");
    const r = setopt(SOL.SOCKET, SO.BINDTODEVICE, d);
    if (r < 0) fail(`binding to device ${k.opts.soBoundDev}`, r);
  }
  let unsent: Uint8Array | undefined;
  const tcp = k.proto === IPPROTO.TCP;
  if (tcp && k.state === TCP_STATE.ESTABLISHED) {
    const item = cachedPayloads<S.tcp_stream_entry>(ctx, streamImage(k.ino), "TCP_STREAM")[0];
    if (restoreOpts.tcpClose || !item) {
      // --tcp-close (or dumped with --tcp-close): the socket comes back, the connection does not
      log.info(`${where}: TCP connection restored closed`);
    } else {
      lockRestore(ctx);
      const m = item.msg;
      const stream: TcpStream = {
        state: { inqLen: m.inqLen, inqSeq: m.inqSeq, outqLen: m.outqLen, outqSeq: m.outqSeq, optMask: m.optMask,
          sndWscale: m.sndWscale, rcvWscale: m.rcvWscale, mssClamp: m.mssClamp, timestamp: m.timestamp,
          cork: m.cork, nodelay: m.nodelay, unsqLen: m.unsqLen,
          ...(m.maxWindow ? { sndWl1: m.sndWl1, sndWnd: m.sndWnd, maxWindow: m.maxWindow, rcvWnd: m.rcvWnd, rcvWup: m.rcvWup } : {}) },
        inq: item.payload.subarray(0, m.inqLen), outq: item.payload.subarray(m.inqLen, m.inqLen + m.outqLen),
      };
      const r = setopt(SOL.TCP, TCP.REPAIR, int32(1));
      if (r < 0) fail("TCP_REPAIR (needs CAP_NET_ADMIN)", r);
      bindTo();
      // queues are refilled through buffers at least as large as the dumped ones
      const need = Math.max(m.inqLen, m.outqLen) * 2 + 65536;
      setInt(SOL.SOCKET, SO.SNDBUFFORCE, Math.max(k.opts?.soSndbuf ?? 0, need) >> 1, "SO_SNDBUFFORCE");
      setInt(SOL.SOCKET, SO.RCVBUFFORCE, Math.max(k.opts?.soRcvbuf ?? 0, need) >> 1, "SO_RCVBUFFORCE");
      const ops: SockOps = {
        setsockopt: (lvl, opt, v) => setopt(lvl, opt, v),
        connect: (sa) => Number(inj.call(NR.connect, fdT, ctx.scratch(0n, sa), sa.length)),
        send: (data, flags) => withTargetBuffer(ctx, data, (a) => Number(inj.call(NR.sendto, fdT, a, data.length, flags | 0x40 /* DONTWAIT */, 0, 0))),
      };
      const peer = sockaddr(k.family, peerAddr, k.dstPort);
      unsent = restoreTcpStream(ops, stream, peer, `${where} (TCP ${addrString(k.family, local)}:${k.srcPort} <-> ${addrString(k.family, peerAddr)}:${k.dstPort})`);
      const off = setopt(SOL.TCP, TCP.REPAIR, int32(0));
      if (off < 0) fail("leaving TCP repair mode", off);
      log.info(`${where}: TCP connection to ${addrString(k.family, peerAddr)}:${k.dstPort} restored (${m.inqLen} + ${m.outqLen} queued bytes)`);
    }
  } else if (tcp && k.state === TCP_STATE.LISTEN) {
    setInt(SOL.SOCKET, SO.REUSEADDR, 1, "SO_REUSEADDR");
    bindTo();
    call("listen", NR.listen, fdT, k.backlog || 128);
  } else if (k.srcPort) {
    setInt(SOL.SOCKET, SO.REUSEADDR, 1, "SO_REUSEADDR");
    bindTo();
    if (!tcp && k.dstPort) {
      const sa = sockaddr(k.family, peerAddr, k.dstPort);
      const r = inj.call(NR.connect, fdT, ctx.scratch(0n, sa), sa.length);
      if (r < 0n) fail("connect", r);
    }
  }
  if (unsent?.length) {
    // The tail that had not been sent yet goes out the normal way, while the send buffer is
    // still forced large (the program's own SO_SNDBUF comes back after); if the buffer is full
    // anyway (its accounting counts overhead too), grow it and go on.
    let off = 0, grow = Math.max(unsent.length * 4, 1 << 20);
    while (off < unsent.length) {
      const part = unsent.subarray(off);
      const n = withTargetBuffer(ctx, part, (a) => Number(inj.call(NR.sendto, fdT, a, part.length, 0x40, 0, 0)));
      if (n === -11 && grow < 1 << 28) { setInt(SOL.SOCKET, SO.SNDBUFFORCE, grow, "SO_SNDBUFFORCE"); grow *= 2; continue; }
      if (n < 0) fail(`sending the ${unsent.length - off} unsent bytes`, n);
      off += n;
    }
  }
  restoreSkOpts(k, tcp, setopt, where);
  if (!tcp && k.shutdown) {
    // an unconnected socket says ENOTCONN but is shut down all the same
    const r = inj.call(NR.shutdown, fdT, k.shutdown - 1);
    if (r < 0n && r !== -107n) fail("shutdown", r);
  }
  const fl = k.flags & (0o4000 /* O_NONBLOCK */ | 0o20000 /* O_ASYNC */);
  if (fl) call("fcntl(F_SETFL)", NR.fcntl, fdT, 4, fl);
  return fdT;
}

function restoreSkOpts(k: S.inet_sk_entry, tcp: boolean, setopt: (l: number, o: number, v: Uint8Array) => number, where: string) {
  const o = k.opts;
  if (!o) return;
  const set = (l: number, opt: number, v: Uint8Array, what: string) => {
    const r = setopt(l, opt, v);
    if (r < 0) log.warn(`${where}: restoring ${what} failed (errno ${-r})`);
  };
  const seti = (l: number, opt: number, v: number, what: string) => set(l, opt, int32(v), what);
  seti(SOL.SOCKET, SO.REUSEADDR, o.reuseaddr ? 1 : 0, "SO_REUSEADDR");
  if (o.soReuseport) seti(SOL.SOCKET, SO.REUSEPORT, 1, "SO_REUSEPORT");
  if (o.soKeepalive) seti(SOL.SOCKET, SO.KEEPALIVE, 1, "SO_KEEPALIVE");
  if (o.soPriority) seti(SOL.SOCKET, SO.PRIORITY, o.soPriority, "SO_PRIORITY");
  if (o.soMark) seti(SOL.SOCKET, SO.MARK, o.soMark, "SO_MARK");
  if (o.soRcvlowat > 1) seti(SOL.SOCKET, SO.RCVLOWAT, o.soRcvlowat, "SO_RCVLOWAT");
  if (o.soBroadcast) seti(SOL.SOCKET, SO.BROADCAST, 1, "SO_BROADCAST");
  if (o.soDontroute) seti(SOL.SOCKET, SO.DONTROUTE, 1, "SO_DONTROUTE");
  if (o.soOobinline) seti(SOL.SOCKET, SO.OOBINLINE, 1, "SO_OOBINLINE");
  if (isFieldSet(o, S.sk_opts_entrySchema.field.soLinger)) set(SOL.SOCKET, SO.LINGER, new Uint8Array(new Int32Array([1, o.soLinger]).buffer), "SO_LINGER");
  for (const [opt, s, u] of [[SO.SNDTIMEO, o.soSndTmoSec, o.soSndTmoUsec], [SO.RCVTIMEO, o.soRcvTmoSec, o.soRcvTmoUsec]] as const) {
    if (s || u) set(SOL.SOCKET, opt, new Uint8Array(new BigUint64Array([BigInt(s), BigInt(u)]).buffer), "socket timeout");
  }
  if (tcp) {
    if (o.tcpKeepcnt) seti(SOL.TCP, TCP.KEEPCNT, o.tcpKeepcnt, "TCP_KEEPCNT");
    if (o.tcpKeepidle) seti(SOL.TCP, TCP.KEEPIDLE, o.tcpKeepidle, "TCP_KEEPIDLE");
    if (o.tcpKeepintvl) seti(SOL.TCP, TCP.KEEPINTVL, o.tcpKeepintvl, "TCP_KEEPINTVL");
  }
  // buffer sizes only where the program fixed them (SO_BUF_LOCK bits); elsewhere autotuning goes on
  const lock = o.soBufLock ?? 0;
  if (lock & 1) seti(SOL.SOCKET, SO.SNDBUFFORCE, o.soSndbuf >> 1, "SO_SNDBUF");
  if (lock & 2) seti(SOL.SOCKET, SO.RCVBUFFORCE, o.soRcvbuf >> 1, "SO_RCVBUF");
  seti(SOL.SOCKET, SO.BUF_LOCK, lock, "SO_BUF_LOCK");
}

/** Run fn with data placed in the target: in the scratch area when small, else in a temporary mapping. */
function withTargetBuffer(ctx: RestoreCtx, data: Uint8Array, fn: (addr: bigint) => number): number {
  if (data.length <= 512) return fn(ctx.scratch(256n, data));
  const len = (data.length + 4095) & ~4095;
  const a = ctx.inj.call(NR.mmap, 0, len, 3, MAP.PRIVATE | MAP.ANONYMOUS, -1, 0);
  if (a < 0n) throw new CriuError("restore", `${ctx.where}: mmap of a ${len}-byte buffer in the target failed (errno ${-a})`);
  try {
    ctx.mem.write(a, data);
    return fn(a);
  } finally { ctx.inj.call(NR.munmap, a, len); }
}
