// Inet sockets (IPv4, IPv6, v4-mapped): TCP listening, established (--tcp-established, through
// TCP repair; --tcp-close brings connections back closed) and closed/bound sockets; UDP and
// UDP-Lite bound and connected sockets; ICMP/ICMPv6 ping sockets and raw sockets, unconnected.
// Socket options in CRIU 4.2's fields (sk_opts, ip_opts with its raw part, tcp_opts). Images as CRIU writes
// them: file_entry.isk in files.img, tcp-stream-<inode hex>.img with the queued bytes.
// Established connections are isolated by the network lock (src/net/netlock.ts) from the moment
// they are dumped until the restored process runs.
import { readdirSync, readFileSync } from "../sys/fs";
import { join } from "../sys/path";
import { pausePoint, diePoint, fault } from "../fault";
import { Injector, RemoteMem } from "../ptrace/inject";
import { getRegs } from "../sys/ptrace";
import { isFieldSet } from "@bufbuild/protobuf";
import type { FdKind, RestoreCtx, DumpOpts, DumpCtx } from "./fdkind";
import { FOWN0, cachedPayloads } from "./fdkind";
import {
  AF,
  SOL,
  SO,
  TCP,
  IPPROTO,
  MSG,
  SHUT,
  IP_FREEBIND,
  IPV6_V6ONLY,
  IPV6_FREEBIND,
  SOCK,
  IP,
  IPV6,
  ICMP_FILTER,
  ICMPV6_FILTER,
  getsockoptInt,
  tryGetsockoptInt,
  getsockoptBytes,
  getSockName,
  getPeerName,
  sockaddr,
  addrToWords,
  wordsToAddr,
  addrString,
  int32,
  ioctlInt,
  SIOCOUTQ,
  SIOCINQ,
  sockProtoName,
} from "../sys/inetsock";
import { addr } from "../sys/syscall";
import { armHeldUndo, armUndo } from "../sys/sentinel";
import { sockDiagDump, inetDiagReq, diagAttrs, INET_DIAG } from "../sys/sockdiag";
import { syscall } from "../sys/syscall";
import { NR } from "../sys/nr";
import { F, O } from "../sys/mem";
import { MAP } from "./vma";
import {
  TCP_STATE,
  TCP_STATE_NAME,
  tcpInfo,
  repairOn,
  liveWindowProbe,
  withLiveRepair,
  PARK_MAX,
  dumpTcpStream,
  restoreTcpStream,
  type TcpStream,
  type SockOps,
} from "../net/tcp-repair";
import {
  netLock,
  unlockRequest,
  lockTableName,
  heldTableName,
  runLockTableName,
  logNetworkLockSkipped,
  HeldLock,
  NETWORK_LOCK,
  type LockedEndpoint,
} from "../net/netlock";
import { withNetns } from "../sys/netns";
import { readLink } from "../sys/proc";
import * as S from "../images/schemas";
import type { InitOf } from "../images/schemas";
import { CriuError, log, errorMessage } from "../log";
import { errnoText, sysFailed } from "../sys/errno";
import { refuse } from "./unsupported";

const FD_INETSK = 4;
const streamImage = (ino: number) => `tcp-stream-${ino.toString(16)}.img`;

// ---------- which sockets are ours ----------

const PROC_NET = ["tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6", "icmp", "icmp6"];

/** The /proc/PID/net line (split in columns) of a raw or ping socket, by inode. */
function procNetLine(pid: number, files: string[], ino: number): string[] | undefined {
  for (const f of files) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/net/${f}`, "latin1");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && cols[9] === String(ino)) return cols;
    }
  }
  return undefined;
}

/** Inodes of the inet sockets of process pid's network namespace (/proc/PID/net is its view). */
function inetInodes(pid: number): Set<bigint> {
  const out = new Set<bigint>();
  for (const f of PROC_NET) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/net/${f}`, "latin1");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9) out.add(BigInt(cols[9]));
    }
  }
  return out;
}

// ---------- one dump's connections: held in repair mode until the dump ends ----------

/** inet's state for one dump (FdKind<InetDump>) */
interface InetDump {
  /** --network-lock skip: nothing is locked or unlocked */
  skipLock: boolean;
  /** some connection was locked or kept (what the end of the dump deals with) */
  active: boolean;
  /** the endpoints locked in each process's netns, and the lock this criu-bun holds there */
  locks: Map<number, { eps: LockedEndpoint[]; held: HeldLock }>;
  /** criu-bun's duplicates of the established connections (closed in repair mode once a killed tree is gone) */
  repaired: { fd: number; where: string; reuseaddr: number; park: () => ReturnType<typeof threadsToPark> }[];
  /** the tree was let go or killed: the locks are dealt with */
  released: boolean;
  /** sk_shutdown of the sockets of a netns, family and protocol (inetShutdown) */
  shutdownLists: Map<string, Map<number, { shut: number; rq: number }>>;
  /** the inet sockets' inodes of the last namespace scanned (match, where sockfs names no protocol) */
  inodes: { at: number; set: Set<bigint> } | null;
  /** what a new socket says, by netns, family, type and protocol (freshOpts) */
  fresh: Map<string, ReturnType<typeof readFresh>>;
  /** the multicast groups joined in a netns (mcastGroups), by netns */
  groups: Map<string, McastGroup[]>;
}

function inetDumpBegin(opts: DumpOpts): InetDump {
  if (opts.networkLockSkip) logNetworkLockSkipped();
  return {
    skipLock: !!opts.networkLockSkip,
    active: false,
    locks: new Map(),
    repaired: [],
    released: false,
    shutdownLists: new Map(),
    inodes: null,
    fresh: new Map(),
    groups: new Map(),
  };
}

/**
 * Lock endpoints of process pid. While the dump runs the lock is held by this criu-bun (gone if
 * it dies); a dump that kills the process leaves the same rules in the table a restore of that
 * process lifts (see inetDumpRelease).
 */
function lockDump(s: InetDump, pid: number, eps: LockedEndpoint[]) {
  s.active = true;
  const l = s.locks.get(pid) ?? { eps: [], held: new HeldLock(heldTableName(pid)) };
  if (!s.skipLock) withNetns(pid, () => netLock(l.held, eps));
  l.eps.push(...eps);
  s.locks.set(pid, l);
}

/**
 * The tree is let go or killed. "killed": the process is gone, our duplicates of its connections
 * are closed in repair mode once it is (inetDumpKilled: nothing is sent) and the lock stays until
 * restore. "running" (-R, -s, or a failed dump): connections leave repair mode and the lock is removed.
 */
function inetDumpRelease(s: InetDump, outcome: "killed" | "running", runId?: string) {
  if (s.released || !s.active) return;
  s.released = true;
  try {
    // before the tree dies (its network namespace is reached through it): the lock that outlives us
    // one table for the whole dump, named after its run id (as CRIU's), in each process's netns
    if (outcome === "killed") {
      for (const [pid, l] of s.locks)
        if (!s.skipLock) withNetns(pid, () => netLock(runId ? runLockTableName(runId) : lockTableName(pid), l.eps));
      // the kernel deletes a namespace's nftables hooks before its interfaces: a peer's segment
      // arriving in between finds the port empty and unlocked, and is answered with a RST
      log.info(
        "The lock lives in the network namespace(s) of the dumped connections: take their interfaces down before deleting such a namespace, or its peers may see a RST"
      );
    }
  } catch (e) {
    log.error(
      "dump",
      `the network lock could not be kept for the restore (${errorMessage(e)}); peers may see the connections reset`
    );
  } finally {
    for (const l of s.locks.values()) l.held.release();
  }
  if (outcome === "killed") return;
  for (const r of s.repaired.splice(0)) {
    // a window probe, now that the lock is gone, so the peer learns at once we are back; with the
    // process's threads parked again where it has SO_REUSEADDR to lose (liveWindowProbe). A dump
    // that failed may have left a thread where it cannot be parked: the sentinel still covers it
    let hold: ReturnType<typeof threadsToPark> = { threads: [], park() {}, unpark() {} };
    try {
      if (r.reuseaddr) hold = r.park();
    } catch (e) {
      log.info(`${r.where}: threads not parked for the window probe: ${errorMessage(e)}`);
    }
    try {
      const e = liveWindowProbe(r.fd, r.reuseaddr, hold.threads, hold, r.where);
      if (e < 0) log.warn(`${r.where}: leaving TCP repair mode failed: ${errnoText(-e)}`);
    } catch (e) {
      // no sentinel or no parked threads, so no window: the socket stays as it is (out of repair
      // mode since its queues were read, SO_REUSEADDR as the program set it), the peer learns
      // that it is back at its next retransmission
      log.warn(`${r.where}: no window probe (${errorMessage(e)})`);
    } finally {
      hold.unpark();
      syscall(NR.close, r.fd);
    }
  }
}

/**
 * The threads of the processes that hold the socket (the dumped one and any other of the tree with
 * it open: a fork shares it), to be parked (Injector.park) for a repair window: a criu-bun that
 * dies in it lets traced threads run at once, and the sentinel wakes these only once the socket is
 * out of repair mode. A thread that cannot be parked (no guard: see guard.ts; beyond the
 * sentinel's PARK_MAX) stays stopped as it is (it may run before the sentinel acts; logged).
 * park() puts them to sleep, unpark() wakes them and gives them back their registers (withLiveRepair
 * calls it before disarming its sentinel; the caller again, for a window that failed before park:
 * the threads' guards are armed by then; a second call does nothing).
 */
function threadsToPark(ctx: DumpCtx, where: string) {
  const links = ctx.opts.links;
  const pids = links
    ? ctx.opts.tree.filter((p) => p === ctx.pid || links.get(p)?.some(([, t]) => t === ctx.target))
    : [ctx.pid];
  const mems: RemoteMem[] = [];
  const all: { inj: Injector; tgid: number; tid: number; sig: number }[] = [];
  // every thread woken before any is given its registers back: a restore clears the guard's stub
  // in the vDSO, which the process's threads share and a thread still parked returns through
  const unpark = () => {
    const hs = all.splice(0).reverse();
    try {
      for (const h of hs) h.inj.unpark();
    } finally {
      try {
        for (const h of hs) h.inj.restore();
      } finally {
        for (const m of mems.splice(0)) m.close();
      }
    }
  };
  try {
    for (const pid of pids) {
      const mem = new RemoteMem(pid);
      mems.push(mem);
      for (const t of readdirSync(`/proc/${pid}/task`)) {
        const tid = Number(t);
        let sig: number | undefined;
        const inj = Injector.dump(tid, Injector.findSyscallInsn(pid, getRegs(tid), mem), mem);
        try {
          if (all.length < PARK_MAX) sig = inj.parkSignal();
        } finally {
          if (sig === undefined) inj.restore();
        }
        if (sig === undefined) log.info(`${where}: process ${pid} thread ${tid} is not parked for the repair window`);
        else all.push({ inj, tgid: pid, tid, sig });
      }
    }
  } catch (e) {
    unpark();
    throw e;
  }
  return {
    threads: all.map(({ tgid, tid, sig }) => ({ tgid, tid, sig })),
    park: () => {
      for (const h of all) h.inj.park(h.sig);
    },
    unpark,
  };
}

/** The dumped tree was killed: our duplicates are the connections' last references; closed in
 *  repair mode, they go without a FIN or RST (the restore brings them back). */
function inetDumpKilled(s: InetDump) {
  for (const r of s.repaired.splice(0)) {
    const e = setsockoptRepair(r.fd);
    if (e < 0) log.warn(`${r.where}: repair mode for the close failed: ${errnoText(-e)}`);
    syscall(NR.close, r.fd);
  }
}
function setsockoptRepair(fd: number): number {
  try {
    repairOn(fd, "");
    return 0;
  } catch {
    return -1;
  }
}

// ---------- socket options ----------

const textDecoder = new TextDecoder();
/** sk_opts_entry of a grabbed socket (inet and unix alike, as CRIU's dump_socket_opts) */
export function dumpSkOpts(fd: number, type: number, proto: number, where: string) {
  const i = (lvl: number, opt: number) => tryGetsockoptInt(fd, lvl, opt) ?? 0;
  const tv = (opt: number) => {
    const b = getsockoptBytes(fd, SOL.SOCKET, opt, 16);
    const dv = new DataView(b.buffer, b.byteOffset);
    return [dv.getBigUint64(0, true), dv.getBigUint64(8, true)];
  };
  const [sndS, sndU] = tv(SO.SNDTIMEO),
    [rcvS, rcvU] = tv(SO.RCVTIMEO);
  const lb = getsockoptBytes(fd, SOL.SOCKET, SO.LINGER, 8);
  const ldv = new DataView(lb.buffer, lb.byteOffset);
  let dev = "";
  try {
    dev = textDecoder.decode(getsockoptBytes(fd, SOL.SOCKET, SO.BINDTODEVICE, 64)).replace(/\0.*$/s, "");
  } catch {}
  const o: InitOf<typeof S.sk_opts_entrySchema> = {
    soSndbuf: i(SOL.SOCKET, SO.SNDBUF),
    soRcvbuf: i(SOL.SOCKET, SO.RCVBUF),
    soSndTmoSec: sndS,
    soSndTmoUsec: sndU,
    soRcvTmoSec: rcvS,
    soRcvTmoUsec: rcvU,
    reuseaddr: i(SOL.SOCKET, SO.REUSEADDR) !== 0,
    soPriority: i(SOL.SOCKET, SO.PRIORITY),
    soRcvlowat: i(SOL.SOCKET, SO.RCVLOWAT),
    soMark: i(SOL.SOCKET, SO.MARK),
    soDontroute: i(SOL.SOCKET, SO.DONTROUTE) !== 0,
    soReuseport: i(SOL.SOCKET, SO.REUSEPORT) !== 0,
    soBroadcast: i(SOL.SOCKET, SO.BROADCAST) !== 0,
    soKeepalive: i(SOL.SOCKET, SO.KEEPALIVE) !== 0,
    soOobinline: i(SOL.SOCKET, SO.OOBINLINE),
    soBufLock: i(SOL.SOCKET, SO.BUF_LOCK),
  };
  if (ldv.getInt32(0, true)) o.soLinger = ldv.getInt32(4, true);
  if (dev) o.soBoundDev = dev;
  if (i(SOL.SOCKET, SO.PASSCRED)) o.soPasscred = true;
  if (i(SOL.SOCKET, SO.PASSSEC)) o.soPasssec = true;
  if (i(SOL.SOCKET, SO.NO_CHECK)) o.soNoCheck = true;
  const filter = socketFilter(fd, where);
  if (filter.length) o.soFilter = filter;
  if (proto === IPPROTO.TCP && type !== SOCK.RAW) {
    o.tcpKeepcnt = i(SOL.TCP, TCP.KEEPCNT);
    o.tcpKeepidle = i(SOL.TCP, TCP.KEEPIDLE);
    o.tcpKeepintvl = i(SOL.TCP, TCP.KEEPINTVL);
  }
  return o;
}

/** A classic BPF filter (SO_ATTACH_FILTER) as CRIU keeps it: one fixed64 per instruction. */
function socketFilter(fd: number, where: string): bigint[] {
  const len = new Uint32Array([0]);
  const r = syscall(NR.getsockopt, fd, SOL.SOCKET, SO.GET_FILTER, 0, addr(len));
  if (r < 0 || !len[0]) return [];
  const n = len[0];
  const buf = new BigUint64Array(n);
  const l2 = new Uint32Array([n]);
  const r2 = syscall(NR.getsockopt, fd, SOL.SOCKET, SO.GET_FILTER, addr(buf), addr(l2));
  if (r2 < 0) throw new CriuError("files", sysFailed(where, "getsockopt(SO_GET_FILTER)", r2));
  return [...buf.subarray(0, l2[0])];
}

/** IP-level options (ip_opts_entry), tos and ttl only where they differ from a new socket's. */
function dumpIpOpts(
  s: InetDump,
  pid: number,
  fd: number,
  family: number,
  type: number,
  proto: number
): InitOf<typeof S.ip_opts_entrySchema> {
  const v6 = family === AF.INET6;
  const o: InitOf<typeof S.ip_opts_entrySchema> = {};
  // the kernel answers IP_FREEBIND for IPv6 sockets too (the same flag as IPV6_FREEBIND)
  if (tryGetsockoptInt(fd, SOL.IP, IP_FREEBIND)) o.freebind = true;
  const get = (lvl: number, opt: number) => tryGetsockoptInt(fd, lvl, opt) ?? 0;
  if (get(v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.RECVPKTINFO : IP.PKTINFO)) o.pktinfo = true;
  const fresh = freshOpts(s, pid, family, type, proto);
  const tos = get(v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.TCLASS : IP.TOS),
    ttl = get(v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.UNICAST_HOPS : IP.TTL);
  if (tos !== fresh.tos) o.tos = tos;
  if (ttl !== fresh.ttl) o.ttl = ttl;
  if (type === SOCK.RAW) {
    const raw: InitOf<typeof S.ip_opts_raw_entrySchema> = {};
    if (get(v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.HDRINCL : IP.HDRINCL)) raw.hdrincl = true;
    if (!v6 && get(SOL.IP, IP.NODEFRAG)) raw.nodefrag = true;
    if (proto === (v6 ? IPPROTO.ICMPV6 : IPPROTO.ICMP)) {
      const f = getsockoptBytes(fd, v6 ? SOL.ICMPV6 : SOL.RAW, v6 ? ICMPV6_FILTER : ICMP_FILTER, v6 ? 32 : 4);
      const w = new Uint32Array(f.slice().buffer);
      if (w.some((x) => x !== 0)) raw.icmpvFilter = [...w];
    }
    o.raw = raw;
  }
  return o;
}

// ---------- what no image field holds: refused ----------

/** where an unkept option is compared: any socket, or one of these kinds only */
type OptWhere = "any" | "v6" | "tcp" | "tcpIdle" | "tcpMss" | "udp" | "raw6" | "mc" | "mc6";
/**
 * Options of an inet socket that neither CRIU's images nor criu-bun's keep, by level and number,
 * with a buffer length: each must read as a new socket of the same family, type and protocol in
 * the same network namespace reads it, else the dump is refused (they would come back as a new
 * socket's). "tcpIdle": compared on a TCP socket that never connected or listens only (on a
 * connection, or a socket closed after one, the kernel's own value shows there); "tcpMss"
 * (TCP_MAXSEG) on a listening or closed one, where a closed one that had a connection may also
 * show that connection's MSS (tcp_info's snd_mss). The options the
 * images keep (IP_TOS/TTL/PKTINFO/FREEBIND of IPv4, their IPv6 twins, HDRINCL, NODEFRAG, the ICMP
 * filters, sk_opts and tcp_opts) are not here; IP_TOS, IP_TTL and IP_PKTINFO of an IPv6 socket
 * (its IPv4-mapped traffic's) are. Left out: values the kernel sets as traffic flows
 * (SO_INCOMING_CPU, SO_INCOMING_NAPI_ID, IP_MTU, IPV6_MTU, TCP_TIMESTAMP), and the multicast
 * settings of TCP sockets ("mc", "mc6" are the others': an accepted connection takes its SYN's TTL
 * and interface there, and TCP sends no multicast).
 */
const UNKEPT_INET: [number, number, string, number, OptWhere][] = [
  [SOL.SOCKET, 1, "SO_DEBUG", 4, "any"],
  [SOL.SOCKET, 29, "SO_TIMESTAMP", 4, "any"],
  [SOL.SOCKET, 35, "SO_TIMESTAMPNS", 4, "any"],
  [SOL.SOCKET, 37, "SO_TIMESTAMPING", 8, "any"],
  [SOL.SOCKET, 40, "SO_RXQ_OVFL", 4, "any"],
  [SOL.SOCKET, 41, "SO_WIFI_STATUS", 4, "any"],
  [SOL.SOCKET, SO.PEEK_OFF, "SO_PEEK_OFF", 4, "any"],
  [SOL.SOCKET, 43, "SO_NOFCS", 4, "any"],
  [SOL.SOCKET, 45, "SO_SELECT_ERR_QUEUE", 4, "any"],
  [SOL.SOCKET, 46, "SO_BUSY_POLL", 4, "any"],
  [SOL.SOCKET, 47, "SO_MAX_PACING_RATE", 8, "any"],
  [SOL.SOCKET, 60, "SO_ZEROCOPY", 4, "any"],
  [SOL.SOCKET, 61, "SO_TXTIME", 8, "any"],
  [SOL.SOCKET, 63, "SO_TIMESTAMP_NEW", 4, "any"],
  [SOL.SOCKET, 64, "SO_TIMESTAMPNS_NEW", 4, "any"],
  [SOL.SOCKET, 65, "SO_TIMESTAMPING_NEW", 8, "any"],
  [SOL.SOCKET, 69, "SO_PREFER_BUSY_POLL", 4, "any"],
  [SOL.SOCKET, 70, "SO_BUSY_POLL_BUDGET", 4, "any"],
  [SOL.SOCKET, 73, "SO_RESERVE_MEM", 4, "any"],
  [SOL.SOCKET, 74, "SO_TXREHASH", 4, "any"],
  [SOL.SOCKET, 75, "SO_RCVMARK", 4, "any"],
  [SOL.SOCKET, 82, "SO_RCVPRIORITY", 4, "any"],
  [SOL.IP, IP.TOS, "IP_TOS", 4, "v6"],
  [SOL.IP, IP.TTL, "IP_TTL", 4, "v6"],
  [SOL.IP, IP.PKTINFO, "IP_PKTINFO", 4, "v6"],
  [SOL.IP, 4, "IP_OPTIONS", 40, "any"],
  [SOL.IP, 6, "IP_RECVOPTS", 4, "any"],
  [SOL.IP, 7, "IP_RETOPTS", 4, "any"],
  [SOL.IP, 10, "IP_MTU_DISCOVER", 4, "any"],
  [SOL.IP, 11, "IP_RECVERR", 4, "any"],
  [SOL.IP, 12, "IP_RECVTTL", 4, "any"],
  [SOL.IP, 13, "IP_RECVTOS", 4, "any"],
  [SOL.IP, 18, "IP_PASSSEC", 4, "any"],
  [SOL.IP, 19, "IP_TRANSPARENT", 4, "any"],
  [SOL.IP, 20, "IP_RECVORIGDSTADDR", 4, "any"],
  [SOL.IP, 21, "IP_MINTTL", 4, "any"],
  [SOL.IP, 23, "IP_CHECKSUM", 4, "any"],
  [SOL.IP, 24, "IP_BIND_ADDRESS_NO_PORT", 4, "any"],
  [SOL.IP, 25, "IP_RECVFRAGSIZE", 4, "any"],
  [SOL.IP, 26, "IP_RECVERR_RFC4884", 4, "any"],
  [SOL.IP, 32, "IP_MULTICAST_IF", 12, "mc"],
  [SOL.IP, 33, "IP_MULTICAST_TTL", 4, "mc"],
  [SOL.IP, 34, "IP_MULTICAST_LOOP", 4, "mc"],
  [SOL.IP, 49, "IP_MULTICAST_ALL", 4, "mc"],
  [SOL.IP, 50, "IP_UNICAST_IF", 4, "any"],
  [SOL.IP, 51, "IP_LOCAL_PORT_RANGE", 4, "any"],
  [SOL.IPV6, 2, "IPV6_2292PKTINFO", 4, "v6"],
  [SOL.IPV6, 3, "IPV6_2292HOPOPTS", 4, "v6"],
  [SOL.IPV6, 4, "IPV6_2292DSTOPTS", 4, "v6"],
  [SOL.IPV6, 5, "IPV6_2292RTHDR", 4, "v6"],
  [SOL.IPV6, 8, "IPV6_2292HOPLIMIT", 4, "v6"],
  [SOL.IPV6, 7, "IPV6_CHECKSUM", 4, "raw6"],
  [SOL.IPV6, 11, "IPV6_FLOWINFO", 4, "v6"],
  [SOL.IPV6, 17, "IPV6_MULTICAST_IF", 4, "mc6"],
  [SOL.IPV6, 18, "IPV6_MULTICAST_HOPS", 4, "mc6"],
  [SOL.IPV6, 19, "IPV6_MULTICAST_LOOP", 4, "mc6"],
  [SOL.IPV6, 23, "IPV6_MTU_DISCOVER", 4, "v6"],
  [SOL.IPV6, 25, "IPV6_RECVERR", 4, "v6"],
  [SOL.IPV6, 29, "IPV6_MULTICAST_ALL", 4, "mc6"],
  [SOL.IPV6, 31, "IPV6_RECVERR_RFC4884", 4, "v6"],
  [SOL.IPV6, 33, "IPV6_FLOWINFO_SEND", 4, "v6"],
  [SOL.IPV6, 51, "IPV6_RECVHOPLIMIT", 4, "v6"],
  [SOL.IPV6, 53, "IPV6_RECVHOPOPTS", 4, "v6"],
  [SOL.IPV6, 54, "IPV6_HOPOPTS", 64, "v6"],
  [SOL.IPV6, 55, "IPV6_RTHDRDSTOPTS", 64, "v6"],
  [SOL.IPV6, 56, "IPV6_RECVRTHDR", 4, "v6"],
  [SOL.IPV6, 57, "IPV6_RTHDR", 64, "v6"],
  [SOL.IPV6, 58, "IPV6_RECVDSTOPTS", 4, "v6"],
  [SOL.IPV6, 59, "IPV6_DSTOPTS", 64, "v6"],
  [SOL.IPV6, 60, "IPV6_RECVPATHMTU", 4, "v6"],
  [SOL.IPV6, 62, "IPV6_DONTFRAG", 4, "v6"],
  [SOL.IPV6, 66, "IPV6_RECVTCLASS", 4, "v6"],
  [SOL.IPV6, 70, "IPV6_AUTOFLOWLABEL", 4, "v6"],
  [SOL.IPV6, 72, "IPV6_ADDR_PREFERENCES", 4, "v6"],
  [SOL.IPV6, 73, "IPV6_MINHOPCOUNT", 4, "v6"],
  [SOL.IPV6, 74, "IPV6_RECVORIGDSTADDR", 4, "v6"],
  [SOL.IPV6, 76, "IPV6_UNICAST_IF", 4, "v6"],
  [SOL.IPV6, 77, "IPV6_RECVFRAGSIZE", 4, "v6"],
  [SOL.TCP, TCP.MAXSEG, "TCP_MAXSEG", 4, "tcpMss"],
  [SOL.TCP, 7, "TCP_SYNCNT", 4, "tcp"],
  [SOL.TCP, 8, "TCP_LINGER2", 4, "tcp"],
  [SOL.TCP, 10, "TCP_WINDOW_CLAMP", 4, "tcpIdle"],
  [SOL.TCP, 12, "TCP_QUICKACK", 4, "tcpIdle"],
  [SOL.TCP, 13, "TCP_CONGESTION", 16, "tcp"],
  [SOL.TCP, 16, "TCP_THIN_LINEAR_TIMEOUTS", 4, "tcp"],
  [SOL.TCP, 18, "TCP_USER_TIMEOUT", 4, "tcp"],
  [SOL.TCP, 23, "TCP_FASTOPEN", 4, "tcp"],
  [SOL.TCP, 25, "TCP_NOTSENT_LOWAT", 4, "tcp"],
  [SOL.TCP, 27, "TCP_SAVE_SYN", 4, "tcp"],
  [SOL.TCP, 30, "TCP_FASTOPEN_CONNECT", 4, "tcp"],
  [SOL.TCP, 31, "TCP_ULP", 16, "tcp"],
  [SOL.TCP, 34, "TCP_FASTOPEN_NO_COOKIE", 4, "tcp"],
  [SOL.TCP, 36, "TCP_INQ", 4, "tcp"],
  [SOL.TCP, 37, "TCP_TX_DELAY", 4, "tcp"],
  [SOL.UDP, 100, "UDP_ENCAP", 4, "udp"],
  [SOL.UDP, 101, "UDP_NO_CHECK6_TX", 4, "udp"],
  [SOL.UDP, 102, "UDP_NO_CHECK6_RX", 4, "udp"],
  [SOL.UDP, 103, "UDP_SEGMENT", 4, "udp"],
  [SOL.UDP, 104, "UDP_GRO", 4, "udp"],
];

/** one getsockopt's answer: its result (negative errno) and the bytes */
interface OptRead {
  rc: number;
  bytes: Uint8Array;
}
function readOpt(fd: number, lvl: number, opt: number, len: number): OptRead {
  const buf = new Uint8Array(len),
    l = new Uint32Array([len]);
  const rc = syscall(NR.getsockopt, fd, lvl, opt, addr(buf), addr(l));
  return { rc: rc < 0 ? rc : 0, bytes: rc < 0 ? buf.subarray(0, 0) : buf.subarray(0, l[0]) };
}
const sameRead = (a: OptRead, b: OptRead) =>
  a.rc === b.rc && a.bytes.length === b.bytes.length && a.bytes.every((x, i) => x === b.bytes[i]);

/** The unkept options a socket of this kind is compared on (UNKEPT_INET), by index. */
function unkeptFor(family: number, type: number, proto: number, idle: boolean, closed: boolean): number[] {
  const tcp = proto === IPPROTO.TCP && type === SOCK.STREAM,
    udp = type === SOCK.DGRAM && (proto === IPPROTO.UDP || proto === IPPROTO.UDPLITE);
  const out: number[] = [];
  UNKEPT_INET.forEach(([, , , , w], i) => {
    if (
      w === "any" ||
      (w === "v6" && family === AF.INET6) ||
      (w === "tcp" && tcp) ||
      (w === "tcpIdle" && tcp && idle) ||
      (w === "tcpMss" && tcp && closed) ||
      (w === "udp" && udp) ||
      (w === "mc" && !tcp) ||
      (w === "mc6" && !tcp && family === AF.INET6) ||
      (w === "raw6" && family === AF.INET6 && type === SOCK.RAW)
    )
      out.push(i);
  });
  return out;
}

/** What a new socket of this family, type and protocol says in process pid's network namespace:
 *  the unkept options (every one, by UNKEPT_INET's index) and IP_TOS/IP_TTL (or their IPv6
 *  twins), asked once per dump, namespace and kind. */
function freshOpts(s: InetDump, pid: number, family: number, type: number, proto: number) {
  const key = `${readLink(`/proc/${pid}/ns/net`)}:${family}:${type}:${proto}`;
  let got = s.fresh.get(key);
  if (!got) {
    got = withNetns(pid, () => readFresh(pid, family, type, proto));
    s.fresh.set(key, got);
  }
  return got;
}
function readFresh(pid: number, family: number, type: number, proto: number) {
  const v6 = family === AF.INET6;
  const t = syscall(NR.socket, family, type | SOCK.CLOEXEC, proto);
  if (t < 0)
    throw new CriuError(
      "files",
      sysFailed(`process ${pid}`, `a socket(${family}, ${type}, ${proto}) to compare options with`, t)
    );
  try {
    return {
      tos: tryGetsockoptInt(t, v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.TCLASS : IP.TOS) ?? 0,
      ttl: tryGetsockoptInt(t, v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.UNICAST_HOPS : IP.TTL) ?? 0,
      unkept: UNKEPT_INET.map(([lvl, opt, , len]) => readOpt(t, lvl, opt, len)),
    };
  } finally {
    syscall(NR.close, t);
  }
}

/** A TCP socket's state, whether it never had traffic (listening, or closed and never connected:
 *  no segment in or out, tcp_info's segs_out and segs_in) and its MSS (tcp_info's snd_mss). */
function tcpTraffic(fd: number) {
  const b = getsockoptBytes(fd, SOL.TCP, TCP.INFO, 144);
  const d = new DataView(b.buffer, b.byteOffset, b.length);
  const segs = b.length >= 144 ? d.getUint32(136, true) + d.getUint32(140, true) : 1;
  return {
    state: b[0],
    idle: b[0] === TCP_STATE.LISTEN || (b[0] === TCP_STATE.CLOSE && segs === 0),
    sndMss: d.getUint32(16, true),
  };
}

/** Refuse a socket with an option no image field holds set away from a new socket's (UNKEPT_INET). */
function checkUnkeptInet(
  s: InetDump,
  pid: number,
  fd: number,
  family: number,
  type: number,
  proto: number,
  tcp: { state: number; idle: boolean; sndMss: number } | undefined,
  where: string,
  what: string
) {
  const fresh = freshOpts(s, pid, family, type, proto);
  const closed = tcp?.state === TCP_STATE.CLOSE || tcp?.state === TCP_STATE.LISTEN;
  for (const i of unkeptFor(family, type, proto, !!tcp?.idle, closed)) {
    const [lvl, opt, name, len] = UNKEPT_INET[i];
    const r = readOpt(fd, lvl, opt, len);
    if (sameRead(r, fresh.unkept[i])) continue;
    // a closed socket's MSS of the connection it had
    if (opt === TCP.MAXSEG && lvl === SOL.TCP && !tcp?.idle && r.rc === 0 && r.bytes.length === 4) {
      if (new DataView(r.bytes.buffer, r.bytes.byteOffset).getInt32(0, true) === tcp?.sndMss) continue;
    }
    const v =
      r.rc < 0
        ? ` (not readable: ${errnoText(-r.rc)})`
        : len === 16
          ? ` ${JSON.stringify(textDecoder.decode(r.bytes).replace(/\0.*$/s, ""))}`
          : r.bytes.length >= 4
            ? ` ${new DataView(r.bytes.buffer, r.bytes.byteOffset).getInt32(0, true)}`
            : "";
    refuse("files", where, "sockopt", `${name}${v} on ${what}`);
  }
}

/** a multicast group joined on an interface of a netns: family, interface index, address */
interface McastGroup {
  family: number;
  ifindex: number;
  group: Uint8Array;
}
/** The groups joined in process pid's network namespace (by any socket or the kernel), from
 *  /proc/PID/net/igmp and igmp6: what a socket of the tree may be a member of. */
function mcastGroups(s: InetDump, pid: number): McastGroup[] {
  const key = readLink(`/proc/${pid}/ns/net`);
  const have = s.groups.get(key);
  if (have) return have;
  const out: McastGroup[] = [];
  let text = "";
  try {
    text = readFileSync(`/proc/${pid}/net/igmp`, "latin1");
  } catch {}
  let ifindex = 0;
  for (const line of text.split("\n").slice(1)) {
    const dev = /^(\d+)\s/.exec(line);
    if (dev) ifindex = Number(dev[1]);
    const g = /^\s+([0-9A-Fa-f]{8})\s/.exec(line);
    // the address as the kernel's %08X of a big-endian word read as a little-endian one
    if (g && ifindex) {
      const group = new Uint8Array(4);
      new DataView(group.buffer).setUint32(0, Number.parseInt(g[1], 16), true);
      out.push({ family: AF.INET, ifindex, group });
    }
  }
  text = "";
  try {
    text = readFileSync(`/proc/${pid}/net/igmp6`, "latin1");
  } catch {}
  for (const line of text.split("\n")) {
    const m = /^\s*(\d+)\s+\S+\s+([0-9a-f]{32})\s/.exec(line);
    if (m) out.push({ family: AF.INET6, ifindex: Number(m[1]), group: Uint8Array.from(Buffer.from(m[2], "hex")) });
  }
  s.groups.set(key, out);
  return out;
}
const MCAST_MSFILTER = 48;
/** Refuse a socket that is a member of a multicast group (no image field holds one): each group
 *  joined in its netns asked with MCAST_MSFILTER, which answers for a member only. */
function checkMulticast(s: InetDump, pid: number, fd: number, family: number, where: string, what: string) {
  for (const g of mcastGroups(s, pid)) {
    if (g.family === AF.INET6 && family !== AF.INET6) continue;
    // struct group_filter: interface, then the group's sockaddr_storage at 8 (272 bytes with one source)
    const gf = new Uint8Array(272);
    const dv = new DataView(gf.buffer);
    dv.setUint32(0, g.ifindex, true);
    dv.setUint16(8, g.family, true);
    gf.set(g.group, g.family === AF.INET6 ? 16 : 12);
    const len = new Uint32Array([gf.length]);
    const r = syscall(
      NR.getsockopt,
      fd,
      g.family === AF.INET6 ? SOL.IPV6 : SOL.IP,
      MCAST_MSFILTER,
      addr(gf),
      addr(len)
    );
    if (r >= 0)
      refuse("files", where, "inet-multicast", `${addrString(g.family, g.group)} on interface ${g.ifindex}, ${what}`);
  }
}

/** Data a socket kept without its queues (not an established TCP connection) has to be read:
 *  datagrams of UDP, raw and ping sockets, bytes a closed TCP socket still holds (its peer's
 *  data before a reset whose error was taken with SO_ERROR). CRIU's images have no field for them. */
function checkQueued(fd: number, type: number, proto: number, rq: number | undefined, where: string, what: string) {
  if (proto === IPPROTO.TCP && type === SOCK.STREAM) {
    const n = ioctlInt(fd, SIOCINQ);
    if (n > 0) refuse("files", where, "inet-queue", `${n} bytes on ${what}`);
    return;
  }
  const ev = pollBits(fd);
  let queued = (ev & 1) !== 0 && (ev & 0x2000) === 0; // POLLIN, not a read shutdown's
  if (!queued && ev & 0x2000) {
    // shut down for reading: POLLIN is always up. A peek says how long the first datagram is; a
    // UDP one may be empty, which sock_diag's receive queue (the socket's memory) tells apart
    const one = new Uint8Array(1);
    const n = syscall(NR.recvfrom, fd, addr(one), 1, MSG.PEEK | MSG.DONTWAIT | 0x20 /* MSG_TRUNC */, 0, 0);
    queued = n > 0 || (n === 0 && (rq ?? 0) > 0);
  }
  if (queued) refuse("files", where, "inet-queue", `datagrams on ${what}`);
}

/** How a socket of this family, type and protocol is named in messages, or undefined if not kept. */
function kindName(family: number, type: number, proto: number): string | undefined {
  if (type === SOCK.STREAM && proto === IPPROTO.TCP) return "TCP";
  if (type === SOCK.DGRAM && proto === IPPROTO.UDP) return "UDP";
  if (type === SOCK.DGRAM && proto === IPPROTO.UDPLITE) return "UDP-Lite";
  if (type === SOCK.DGRAM && proto === (family === AF.INET6 ? IPPROTO.ICMPV6 : IPPROTO.ICMP)) return "ping";
  if (type === SOCK.RAW) return `raw (protocol ${proto})`;
  return undefined;
}

/** TCP states of a connection (connected or half-closed): --tcp-close restores them closed. */
const CONNECTED = new Set<number>([
  TCP_STATE.ESTABLISHED,
  TCP_STATE.SYN_SENT,
  TCP_STATE.FIN_WAIT1,
  TCP_STATE.FIN_WAIT2,
  TCP_STATE.CLOSE_WAIT,
  TCP_STATE.LAST_ACK,
  TCP_STATE.CLOSING,
]);

/** poll() bits of a grabbed socket, without consuming anything (a pending error stays pending) */
function pollBits(fd: number): number {
  const pfd = new Uint8Array(8);
  const dv = new DataView(pfd.buffer);
  dv.setInt32(0, fd, true);
  dv.setInt16(4, 0x2000 /* POLLRDHUP */ | 0x10 /* POLLHUP */ | 1 /* POLLIN */, true);
  const r = syscall(NR.poll, addr(pfd), 1, 0);
  return r < 0 ? 0 : dv.getInt16(6, true);
}

/** Listen backlog (wqueue) and connections waiting in the accept queue (rqueue) of a listening
 * socket, from sock_diag. */
function listenBacklog(family: number, port: number, ino: number): { backlog: number; pending: number } | undefined {
  try {
    for (const m of sockDiagDump(inetDiagReq(family, IPPROTO.TCP, 1 << TCP_STATE.LISTEN, port))) {
      const d = new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.length);
      if (m.payload.length >= 72 && d.getUint32(68, true) === ino)
        return { backlog: d.getUint32(60, true), pending: d.getUint32(56, true) };
    }
  } catch (e) {
    log.debug(`sock_diag: ${errorMessage(e)}`);
  }
  return undefined;
}

/** Half-open connections to a listener: request sockets (TCP_NEW_SYN_RECV, the SYN answered,
 * the handshake's last ACK not come yet) whose local port and address are the listener's, from
 * sock_diag (asking for SYN_RECV also gives the request sockets). They live in no fd either. */
function synQueue(family: number, port: number, local: Uint8Array): number {
  // the address is compared for IPv4 only: an IPv6 listener's request sockets may be v4-mapped
  // ones, and counting one too many only refuses (never loses a connection)
  const any = family !== AF.INET || local.every((b) => b === 0);
  let n = 0;
  try {
    for (const m of sockDiagDump(
      inetDiagReq(family, IPPROTO.TCP, (1 << TCP_STATE.SYN_RECV) | (1 << 12) /* TCP_NEW_SYN_RECV */)
    )) {
      const p = m.payload;
      if (p.length < 72 || p[0] !== family || (p[1] !== TCP_STATE.SYN_RECV && p[1] !== 12)) continue;
      const d = new DataView(p.buffer, p.byteOffset, p.length);
      if (d.getUint16(4, false) !== port) continue;
      if (!any && !local.every((b, i) => p[8 + i] === b)) continue;
      n++;
    }
  } catch (e) {
    // not knowing would let a half-open connection be lost silently
    throw new CriuError(
      "files",
      `sock_diag cannot list the half-open connections of port ${port} (${errorMessage(e)})`
    );
  }
  return n;
}

/** sk_shutdown of an inet socket (INET_DIAG_SHUTDOWN), found by inode in the process's netns.
 *  The sockets of a family and protocol are listed once per dump and netns (the tree is frozen),
 *  not once per socket; one missing from that listing is looked up in a fresh one. */
function inetShutdown(
  pid: number,
  family: number,
  proto: number,
  ino: number,
  where: string,
  s: InetDump
): { shut: number; rq: number } {
  const lists = s.shutdownLists;
  const key = `${readLink(`/proc/${pid}/ns/net`)}:${family}:${proto}`;
  let list = lists.get(key);
  if (list?.has(ino)) return list.get(ino)!;
  list = inetShutdownList(pid, family, proto, where);
  lists.set(key, list);
  const shut = list.get(ino);
  if (shut === undefined) throw new CriuError("files", `${where}: sock_diag does not know socket ${ino}`);
  return shut;
}
/** inetShutdown, or undefined where sock_diag does not list the socket (a bound TCP socket that
 *  never listened or connected, on a kernel before 6.8) */
function inetShutdownMaybe(pid: number, family: number, proto: number, ino: number, where: string, s: InetDump) {
  try {
    return inetShutdown(pid, family, proto, ino, where, s);
  } catch (e) {
    log.debug(`${where}: ${errorMessage(e)}`);
    return undefined;
  }
}
function inetShutdownList(
  pid: number,
  family: number,
  proto: number,
  where: string
): Map<number, { shut: number; rq: number }> {
  return withNetns(pid, () => {
    const out = new Map<number, { shut: number; rq: number }>();
    try {
      for (const m of sockDiagDump(inetDiagReq(family, proto, 0xffffffff))) {
        const p = m.payload,
          d = new DataView(p.buffer, p.byteOffset, p.length);
        if (p.length < 72) continue;
        const shut = diagAttrs(p, 72).get(INET_DIAG.SHUTDOWN)?.[0] ?? 0;
        const ino = d.getUint32(68, true);
        // idiag_rqueue: the memory the receive queue holds (sk_rmem_alloc)
        if (!out.has(ino)) out.set(ino, { shut, rq: d.getUint32(56, true) });
      }
    } catch (e) {
      throw new CriuError(
        "files",
        `${where}: sock_diag cannot tell whether the socket is shut down (${errorMessage(e)})`
      );
    }
    return out;
  });
}

// ---------- the kind ----------

/** system.sockprotoname of AF_INET/AF_INET6 sockets (MPTCP and SCTP too: refused by dump as kinds not kept) */
const INET_PROTO_NAMES = new Set([
  "TCP",
  "TCPv6",
  "UDP",
  "UDPv6",
  "UDP-Lite",
  "UDPLITEv6",
  "RAW",
  "RAWv6",
  "PING",
  "PINGv6",
  "MPTCP",
  "MPTCPv6",
  "SCTP",
  "SCTPv6",
  "DCCP",
  "DCCPv6",
  "L2TP/IP",
  "L2TP/IPv6",
]);

export const inetKind: FdKind<InetDump, InetRestore> = {
  name: "inet socket",
  type: FD_INETSK,
  dumpBegin: (_tree, opts) => inetDumpBegin(opts),
  // the lock a killed tree's connections keep until restore: nftables table inet CRIU-<run id>
  // (netlock.ts), as CRIU 4 names its own, so either tool's restore lifts it. No connection
  // locked: unset (CRIU's restore would otherwise look for a table that was never made)
  dumpInventory: (s) => (s.locks.size ? { networkLockMethod: NETWORK_LOCK.NFTABLES } : {}),
  dumpRelease: inetDumpRelease,
  dumpKilled: inetDumpKilled,
  dumpAbort: (s) => inetDumpRelease(s, "running"),
  match(target, st, procPath, _opts, copy, s) {
    if (!target.startsWith("socket:[")) return false;
    // sockfs names the protocol; unbound sockets are in no /proc/net table
    const pname =
      copy !== undefined && copy >= 0 ? sockProtoName(copy) : procPath ? sockProtoName(procPath) : undefined;
    if (pname !== undefined) return INET_PROTO_NAMES.has(pname);
    const pid = Number(/^\/proc\/(\d+)\//.exec(procPath ?? "")?.[1] ?? "self");
    // one scan per dump (a dump takes well under a second between fds)
    if (!s.inodes || Date.now() - s.inodes.at > 1000 || !s.inodes.set.has(st.ino))
      s.inodes = { at: Date.now(), set: inetInodes(pid) };
    return s.inodes.set.has(st.ino);
  },
  dump(ctx, s) {
    const fd = ctx.grab();
    const where = ctx.where;
    const family = getsockoptInt(fd, SOL.SOCKET, SO.DOMAIN);
    const type = getsockoptInt(fd, SOL.SOCKET, SO.TYPE);
    const proto = getsockoptInt(fd, SOL.SOCKET, SO.PROTOCOL);
    const ino = Number(ctx.st.ino);
    if (family !== AF.INET && family !== AF.INET6)
      throw new CriuError("files", `${where}: socket family ${family} is not an inet socket`);
    const kname = kindName(family, type, proto);
    if (!kname) refuse("files", where, "inet-kind", `type ${type} protocol ${proto}`);
    const rawOrPing = type === SOCK.RAW || kname === "ping";
    const local = getSockName(fd)!;
    const peer = getPeerName(fd);
    const isk: InitOf<typeof S.inet_sk_entrySchema> = {
      id: 0,
      ino,
      family,
      type,
      proto,
      flags: ctx.flags,
      backlog: 0,
      srcPort: local.port,
      dstPort: peer?.port ?? 0,
      srcAddr: addrToWords(local.addr),
      dstAddr: addrToWords(peer?.addr ?? new Uint8Array(family === AF.INET6 ? 16 : 4)),
      fown: FOWN0,
    };
    const conn = `${addrString(family, local.addr)}:${local.port}${peer ? ` <-> ${addrString(family, peer.addr)}:${peer.port}` : ""}`;
    // what no image field holds, before anything is locked or read: options away from a new
    // socket's, multicast memberships (a TCP socket cannot join)
    const tcp = proto === IPPROTO.TCP && type === SOCK.STREAM ? tcpTraffic(fd) : undefined;
    checkUnkeptInet(s, ctx.pid, fd, family, type, proto, tcp, where, `${kname} ${conn}`);
    if (!tcp) checkMulticast(s, ctx.pid, fd, family, where, `${kname} ${conn}`);
    let stream: TcpStream | undefined;
    if (rawOrPing) {
      // the peer of a connected raw or ping socket has no port: getpeername() cannot tell, /proc can
      const cols = procNetLine(ctx.pid, type === SOCK.RAW ? ["raw", "raw6"] : ["icmp", "icmp6"], ino);
      if (cols && cols[3] !== "07") refuse("files", where, "inet-connected-raw", `${kname} socket in state ${cols[3]}`);
      isk.state = TCP_STATE.CLOSE;
      const ev = pollBits(fd);
      if (ev & 8 /* POLLERR */) refuse("files", where, "sock-error", `${kname} ${conn}`);
      if (ev & 0x2000) isk.shutdown = 1; // read side (a write-only shutdown leaves no trace poll can see)
      checkQueued(fd, type, proto, undefined, where, `${kname} ${conn}`);
    } else if (proto === IPPROTO.TCP) {
      const state = tcpInfo(fd).state;
      isk.state = state;
      if (state === TCP_STATE.LISTEN) {
        const lb = withNetns(ctx.pid, () => listenBacklog(family, local.port, ino));
        isk.backlog = lb?.backlog ?? 128;
        // connections the program has not accepted yet live in no fd: a new listener would not
        // have them (their peers would be reset); CRIU's --skip-in-flight accepts that loss
        if (lb?.pending) {
          if (!ctx.opts.skipInFlight) refuse("files", where, "tcp-in-flight", `${lb.pending} on ${conn}`);
          log.warn(`${where}: ${lb.pending} connection(s) not accepted yet on ${conn} are dropped (--skip-in-flight)`);
        }
        // half-open ones (still in the SYN queue) are not accepted yet either
        const half = withNetns(ctx.pid, () => synQueue(family, local.port, local.addr));
        log.debug(`${where}: ${half} half-open connection(s) in the SYN queue of ${conn}`);
        if (half) {
          if (!ctx.opts.skipInFlight)
            refuse("files", where, "tcp-in-flight", `${half} half-open (SYN_RECV) on ${conn}`);
          log.warn(`${where}: ${half} half-open connection(s) (SYN_RECV) on ${conn} are dropped (--skip-in-flight)`);
        }
        if (ctx.opts.tcpEstablished) lockDump(s, ctx.pid, [{ proto, local: local.addr, lport: local.port }]);
      } else if (state === TCP_STATE.ESTABLISHED) {
        if (!ctx.opts.tcpEstablished && !ctx.opts.tcpClose) {
          throw new CriuError(
            "files",
            `${where}: established TCP connection ${conn}; use --tcp-established to dump it (or --tcp-close to restore it closed)`
          );
        }
        if (ctx.opts.tcpEstablished) {
          lockDump(s, ctx.pid, [
            { proto, local: local.addr, lport: local.port, remote: peer!.addr, rport: peer!.port },
          ]);
          // keep our own duplicate: the socket must outlive its process when the dump kills it,
          // to be closed in repair mode (see inetDumpKilled)
          const keep = syscall(NR.fcntl, fd, F.DUPFD_CLOEXEC, 0);
          if (keep < 0) throw new CriuError("files", `${where}: dup failed: ${errnoText(-keep)}`);
          s.active = true;
          // in repair mode only while the queues are read (withLiveRepair: left even if criu-bun
          // dies). The process is frozen and the lock drops the packets, so nothing moves after;
          // off without a window probe (the lock would drop it anyway). SO_REUSEADDR first: repair
          // mode changes it
          const reuseaddr = getsockoptInt(keep, SOL.SOCKET, SO.REUSEADDR);
          s.repaired.push({ fd: keep, where, reuseaddr, park: () => threadsToPark(ctx, where) });
          const hold = threadsToPark(ctx, where);
          try {
            stream = withLiveRepair(keep, reuseaddr, hold.threads, hold, where, () =>
              dumpTcpStream(keep, `${where} (${conn})`)
            );
          } finally {
            hold.unpark();
          }
        }
      } else if (CONNECTED.has(state)) {
        if (ctx.opts.tcpEstablished) refuse("files", where, "tcp-half-closed", `${TCP_STATE_NAME[state]} ${conn}`);
        if (!ctx.opts.tcpClose)
          throw new CriuError(
            "files",
            `${where}: TCP connection ${conn} in state ${TCP_STATE_NAME[state]}; use --tcp-close to restore it closed`
          );
      } else if (state === TCP_STATE.CLOSE) {
        // a socket never connected, or whose connection ended (reset, closed): a pending error
        // (ECONNRESET not read yet) cannot be put back; a read shutdown can
        const ev = pollBits(fd);
        if (ev & 8 /* POLLERR */) refuse("files", where, "sock-error", `TCP ${conn}`);
        // poll shows the read side only (POLLHUP is always up in CLOSE). A bound one's write side
        // too is in sock_diag (its bound-inactive sockets, Linux 6.8+): shut, it stays so through
        // a connect() the program makes later (send says EPIPE); an unbound one's is seen nowhere
        if (ev & 0x2000 /* POLLRDHUP */) isk.shutdown = 1;
        if (local.port) {
          const diag = inetShutdownMaybe(ctx.pid, family, proto, ino, where, s);
          if (diag?.shut) isk.shutdown = diag.shut;
        }
        checkQueued(fd, type, proto, undefined, where, `TCP ${conn}`);
      } else {
        throw new CriuError(
          "files",
          `${where}: TCP socket ${conn} in state ${TCP_STATE_NAME[state] ?? state} cannot be dumped yet`
        );
      }
    } else {
      isk.state = peer ? TCP_STATE.ESTABLISHED : TCP_STATE.CLOSE;
      // shut down for reading and/or writing (sk_shutdown: 1 read, 2 write), as CRIU's sk_shutdown
      // (sock_diag knows bound sockets only; an unbound one's read shutdown shows in poll)
      const diag = local.port ? inetShutdown(ctx.pid, family, proto, ino, where, s) : undefined;
      const shut = diag ? diag.shut : pollBits(fd) & 0x2000 ? 1 : 0;
      if (shut) isk.shutdown = shut;
      checkQueued(fd, type, proto, diag?.rq, where, `${kname} ${conn}`);
      // data in the cork is in the send queue until uncorked
      // corked, with or without data in the cork (CRIU's images have no field for it either)
      if (tryGetsockoptInt(fd, proto, 1 /* UDP_CORK */))
        refuse("files", where, "udp-cork", `${conn}, ${ioctlInt(fd, SIOCOUTQ)} bytes corked`);
    }
    // options last: an established connection is locked by now, so its queues were read the
    // moment it was reached (they drain while the peer still runs); out of repair mode again, with
    // its SO_REUSEADDR as the program set it
    isk.opts = dumpSkOpts(fd, type, proto, where);
    if (family === AF.INET6) isk.v6only = getsockoptInt(fd, SOL.IPV6, IPV6_V6ONLY) !== 0;
    isk.ipOpts = dumpIpOpts(s, ctx.pid, fd, family, type, proto);
    if (tryGetsockoptInt(fd, SOL.SOCKET, SO.LOCK_FILTER)) refuse("files", where, "sockopt", "SO_LOCK_FILTER");
    if (
      proto === IPPROTO.UDPLITE &&
      (tryGetsockoptInt(fd, IPPROTO.UDPLITE, 10) || tryGetsockoptInt(fd, IPPROTO.UDPLITE, 11))
    ) {
      refuse("files", where, "sockopt", "UDPLITE_SEND_CSCOV/UDPLITE_RECV_CSCOV");
    }
    if (proto === IPPROTO.TCP && type === SOCK.STREAM && tryGetsockoptInt(fd, SOL.TCP, 9 /* TCP_DEFER_ACCEPT */))
      refuse("files", where, "sockopt", "TCP_DEFER_ACCEPT");
    if (proto === IPPROTO.TCP && type === SOCK.STREAM) {
      isk.tcpOpts = {
        cork: getsockoptInt(fd, SOL.TCP, TCP.CORK) !== 0,
        nodelay: getsockoptInt(fd, SOL.TCP, TCP.NODELAY) !== 0,
        keepcnt: getsockoptInt(fd, SOL.TCP, TCP.KEEPCNT),
        keepidle: getsockoptInt(fd, SOL.TCP, TCP.KEEPIDLE),
        keepintvl: getsockoptInt(fd, SOL.TCP, TCP.KEEPINTVL),
      };
    }
    const id = ctx.files.add(null, (id) => ({ id, type: FD_INETSK, isk: { ...isk, id } }));
    if (stream) {
      const s = stream.state;
      ctx.images.add(
        streamImage(ino),
        "TCP_STREAM",
        S.tcp_stream_entrySchema,
        { ...s },
        concatBytes(stream.inq, stream.outq)
      );
      log.info(`${where}: TCP ${conn}: receive queue ${s.inqLen} bytes, send queue ${s.outqLen} (${s.unsqLen} unsent)`);
    } else
      log.debug(
        `${where}: ${kname} ${TCP_STATE_NAME[isk.state]} ${conn}${isk.shutdown ? ` shut down (${isk.shutdown})` : ""}`
      );
    return id;
  },
  requireImages(f, run, need) {
    const k = f.isk;
    if (k && k.proto === IPPROTO.TCP && k.state === TCP_STATE.ESTABLISHED && !run.tcpClose && !run.inventory.tcpClose) {
      need(
        streamImage(k.ino),
        `files.img has an established TCP connection, socket ${k.ino}; --tcp-close restores it closed`
      );
      // CRIU's default lock: iptables rules per connection, which criu-bun has no way to lift
      if (run.lockMethod === NETWORK_LOCK.IPTABLES)
        throw new CriuError(
          "restore",
          `${join(run.dir, "inventory.img")}: network_lock_method 0: the dump locked TCP connection ${k.ino} with iptables, which criu-bun cannot lift; dump with --network-lock nftables (or restore with --tcp-close)`
        );
    }
  },
  restoreBegin: netRestoreBegin,
  restore(ctx, f, _fe, s) {
    return restoreInet(ctx, f.isk!, s);
  },
  // a connection left in repair mode: where it is once every fd has its final number
  restoreLate(ctx, f, fd, s) {
    const e = s.inRepair.get(`${ctx.pid}:${f.isk!.id}`);
    if (e) {
      e.ctx = ctx;
      e.fd = fd;
    }
  },
  restoreProcessFiles: (pid, s) => netRestoreHoldRepaired(pid, s),
  // last before the release: the connections out of repair mode (CRIU's order too: repair off
  // right before the tree is let go); the dump's network lock stays until the processes run
  // (netRestoreHoldLift), so a restore killed or failing before the release leaves it in place: the
  // peers see nothing and another restore can bring the connections back. Lifted before the
  // release, as it was until the nineteenth session, a kill in between lost the connections (the
  // peer's next segment met a closed port and was answered with a RST). The connections that left
  // repair mode go back into it if criu-bun dies or fails before the release
  // (netRestoreArmRepairBack): closed out of repair mode behind the lock, they would linger and
  // hold their addresses against the next restore.
  restoreCommit(s) {
    pausePoint("restore-repair-off");
    netRestoreHoldLift(s);
    netRestoreArmRepairBack(s);
    netRestoreLeaveRepair(s);
    diePoint("restore-lift-held");
    fault("restore-repair-left", "restore");
    // (only reg's removal of link remaps, which cannot fail, comes between this and the release)
    netRestoreDisarmRepairBack(s);
  },
  // the processes run: the sentinel may lift the dump's locks from now on, then criu-bun does
  restoreReleased(s) {
    try {
      s.lift?.sentinel.free();
    } catch (e) {
      // (criu-bun lifts the lock itself next; only a kill before that would leave it)
      log.warn(`the sentinel of the dump's network lock could not be let go: ${errorMessage(e)}`);
    }
  },
  restoreEnd(s) {
    try {
      netRestoreHandover(s);
    } finally {
      netRestoreEnd(s);
    }
  },
  restoreAbort: (s) => netRestoreAbort(s),
};

/** inet's state for one restore (FdKind<InetDump, InetRestore>) */
interface InetRestore {
  /** --tcp-close */
  tcpClose?: boolean;
  /** the nftables table (inet) the dump left (CRIU's "CRIU-<dump_criu_run_id>", also criu-bun's) */
  lockTable?: string;
  /** the dump was made with --network-lock skip: nothing to lock or unlock */
  skipLock: boolean;
  /** lock tables the dump left for the processes of this restore that have inet sockets (table -> pid) */
  tables: Map<string, number>;
  /** this restore's own locks, by pid (lockRestore), gone with criu-bun */
  held: Map<number, HeldLock>;
  /** connections of this restore still in repair mode, by "pid:file id"; copy: criu-bun's own fd
   *  on the socket (netRestoreHoldRepaired), through which it leaves repair mode at the very end */
  inRepair: Map<
    string,
    { unsent?: Uint8Array; reuseaddr: boolean; where: string; ctx?: RestoreCtx; fd?: number; copy?: number }
  >;
  /** lifts the dump's locks if criu-bun dies once the processes were let go (netRestoreHoldLift) */
  lift?: { sentinel: ReturnType<typeof armHeldUndo>; reqs: ReturnType<typeof unlockRequest>[] };
  /** put the connections back into repair mode if criu-bun dies or gives up before the release
   *  (netRestoreArmRepairBack), each holding at most REPAIR_BACK_FDS of them */
  back?: ReturnType<typeof armUndo>[];
}

/**
 * Process PID's connections, still in repair mode, copied into criu-bun (pidfd_getfd: the same
 * socket), while the process is still being built. The process then takes its own credentials,
 * signals and registers with its connections in repair mode: a restore that fails or is killed
 * meanwhile closes them silently (no FIN, nothing lingering on the port).
 */
function netRestoreHoldRepaired(pid: number, s: InetRestore) {
  let pidfd = -1;
  try {
    for (const [key, e] of s.inRepair) {
      if (!key.startsWith(`${pid}:`) || e.copy !== undefined) continue;
      if (!e.ctx || e.fd === undefined)
        throw new CriuError("restore", `${e.where}: the TCP connection's fd was never placed`);
      if (pidfd < 0) {
        pidfd = syscall(NR.pidfd_open, pid, 0);
        if (pidfd < 0) throw new CriuError("restore", `${e.where}: pidfd_open failed: ${errnoText(-pidfd)}`);
      }
      const c = syscall(NR.pidfd_getfd, pidfd, e.fd, 0);
      if (c < 0)
        throw new CriuError("restore", `${e.where}: taking a copy of the TCP connection failed: ${errnoText(-c)}`);
      e.copy = c;
      log.debug(`${e.ctx.where}: TCP connection held by criu-bun (fd ${c}) in repair mode until the tree is let go`);
    }
  } finally {
    if (pidfd >= 0) syscall(NR.close, pidfd);
  }
}

/**
 * Every connection of the restore out of repair mode, the last step before the tree is let go,
 * after everything else that can fail (credentials, signals, registers, hooks, the dump's lock's
 * lift held for after the release): through criu-bun's copy of each socket (the process may have
 * dropped CAP_NET_ADMIN by now, criu-bun has it). The socket's SO_REUSEADDR back as dumped
 * (leaving repair mode clears it), then the tail that had not been sent yet goes out the normal
 * way, while the send buffer is still forced large; if the buffer is full anyway (its accounting
 * counts overhead too), grow it and go on. A criu-bun killed or failing from here until the
 * release has the sentinels of netRestoreArmRepairBack put them back into repair mode; killed
 * between their disarm and the release (a few system calls) it leaves them closed the normal way.
 */
function netRestoreLeaveRepair(s: InetRestore) {
  for (const [key, e] of s.inRepair) {
    const { unsent, copy: fd } = e;
    const where = e.ctx?.where ?? e.where;
    if (fd === undefined)
      throw new CriuError("restore", `${where}: the TCP connection was never held (internal order)`);
    const setInt = (lvl: number, opt: number, v: number, what: string) => {
      const r = syscall(NR.setsockopt, fd, lvl, opt, addr(int32(v)), 4);
      if (r < 0) throw new CriuError("restore", `${where}: ${what} failed: ${errnoText(-r)}`);
    };
    setInt(SOL.TCP, TCP.REPAIR, 0, "leaving TCP repair mode");
    if (e.reuseaddr) setInt(SOL.SOCKET, SO.REUSEADDR, 1, "SO_REUSEADDR");
    if (unsent?.length) {
      let off = 0,
        grow = Math.max(unsent.length * 4, 1 << 20);
      while (off < unsent.length) {
        const part = unsent.subarray(off);
        const n = syscall(NR.sendto, fd, addr(part), part.length, MSG.DONTWAIT, 0, 0);
        if (n === -11 && grow < 1 << 28) {
          setInt(SOL.SOCKET, SO.SNDBUFFORCE, grow, "SO_SNDBUFFORCE");
          grow *= 2;
          continue;
        }
        if (n === -4) continue;
        if (n < 0)
          throw new CriuError(
            "restore",
            `${where}: sending the ${unsent.length - off} unsent bytes failed: ${errnoText(-n)}`
          );
        off += n;
      }
    }
    s.inRepair.delete(key);
    syscall(NR.close, fd);
    log.debug(
      `${where}: TCP connection out of repair mode${unsent?.length ? `, ${unsent.length} unsent bytes sent` : ""}`
    );
  }
}

/** connections per sentinel of netRestoreArmRepairBack (armUndo keeps at most 14 fds) */
const REPAIR_BACK_FDS = 14;

/**
 * Before the connections leave repair mode: sentinels (sys/sentinel.ts) holding a copy of each,
 * which put them back into repair mode if criu-bun dies before the release (or gives up: the
 * abort fires them), so that the sockets close silently with the processes that never ran, as
 * they would have before. Out of repair mode they would close the normal way: their FIN dropped
 * by the dump's lock, they would linger in FIN_WAIT holding the connections' addresses, and
 * another restore would fail with EADDRNOTAVAIL until the kernel dropped them. Disarmed right
 * before the release (a running process's connection must never go back into repair mode).
 */
function netRestoreArmRepairBack(s: InetRestore) {
  const fds = [...s.inRepair.values()].flatMap((e) => (e.copy === undefined ? [] : [e.copy]));
  if (!fds.length) return;
  s.back = [];
  try {
    for (let i = 0; i < fds.length; i += REPAIR_BACK_FDS) {
      const chunk = fds.slice(i, i + REPAIR_BACK_FDS);
      const sentinel = armUndo(
        chunk,
        chunk.map((fd) => ({ nr: NR.setsockopt, args: [fd, SOL.TCP, TCP.REPAIR, { int32: 1 }, 4] }))
      );
      s.back.push(sentinel);
      log.debug(
        `sentinel ${sentinel.pid} puts ${chunk.length} TCP connection(s) back into repair mode if criu-bun dies or fails before the release`
      );
    }
  } catch (e) {
    for (const b of s.back.splice(0)) b.cancel();
    s.back = undefined;
    throw new CriuError("restore", `cannot arm the return of the TCP connections to repair mode: ${errorMessage(e)}`);
  }
}
/** The release comes: the connections stay out of repair mode from now on. */
function netRestoreDisarmRepairBack(s: InetRestore) {
  for (const b of s.back?.splice(0) ?? []) b.disarm();
  s.back = undefined;
}

/** criu-bun's copies of connections still in repair mode closed (a failed restore: the sockets
 *  go silently with the processes) */
function dropRepairCopies(s: InetRestore) {
  for (const e of s.inRepair.values()) if (e.copy !== undefined) syscall(NR.close, e.copy);
  s.inRepair.clear();
}

function concatBytes(a: Uint8Array, b: Uint8Array) {
  const r = new Uint8Array(a.length + b.length);
  r.set(a);
  r.set(b, a.length);
  return r;
}

// ---------- restore ----------

/**
 * Options of this restore (--tcp-close), and the dump's network lock as inventory.img tells it:
 * lockTable, the nftables table (inet) the dump left (CRIU's "CRIU-<dump_criu_run_id>", also
 * criu-bun's); lockMethod, CRIU's network_lock_method (0 iptables, 1 nftables, 2 skip).
 */
function netRestoreBegin(run: { tcpClose?: boolean; lockTable?: string; lockMethod?: number }): InetRestore {
  const skipLock = run.lockMethod === NETWORK_LOCK.SKIP;
  if (skipLock) logNetworkLockSkipped();
  return {
    tcpClose: run.tcpClose,
    lockTable: run.lockTable,
    skipLock,
    tables: new Map(),
    held: new Map(),
    inRepair: new Map(),
  };
}
/** the table the dump left for process pid's connections */
const dumpLockTable = (s: InetRestore, pid: number) => s.lockTable ?? lockTableName(pid);
/** A restore whose processes were let go: the dump's locks (same table names in the same network
 * namespaces) are lifted, through the sockets netRestoreHoldLift opened there, while this restore's
 * own still drop the packets; then the sentinel that would have lifted them is disarmed. This
 * restore's own are tables owned by this criu-bun (NFT_TABLE_F_OWNER), so from here on no lock
 * outlives criu-bun. */
function netRestoreHandover(s: InetRestore) {
  const lift = s.lift;
  if (!lift) return; // (netRestoreHoldLift made none: --network-lock skip, or no lock table)
  s.lift = undefined;
  try {
    for (const r of lift.reqs) r.send();
  } finally {
    lift.sentinel.disarm();
    for (const r of lift.reqs) r.close();
  }
}

/**
 * The dump's locks stay until the processes are let go, and go after, even if criu-bun dies in
 * between: a sentinel (sys/sentinel.ts) holding a netlink socket in each lock's network namespace
 * and the messages that delete the tables, traced with PTRACE_O_EXITKILL and kept stopped until
 * the release (restoreReleased). A criu-bun that dies before the release takes it along with the
 * processes (their connections, out of repair mode, close behind the dump's lock: the peers see
 * nothing, another restore brings them back); one that dies after has it delete the tables (the
 * processes run, their peers must reach them). Lifted before the release, a kill in between lost
 * the connections.
 */
function netRestoreHoldLift(s: InetRestore) {
  if (s.skipLock || !s.tables.size) return;
  const reqs: ReturnType<typeof unlockRequest>[] = [],
    undo: { nr: number; args: number[] }[] = [];
  try {
    for (const [t, pid] of s.tables) {
      const r = withNetns(pid, () => unlockRequest(t));
      reqs.push(r);
      undo.push({ nr: NR.sendto, args: [r.fd, addr(r.bytes), r.bytes.length, 0, 0, 0] });
    }
    s.lift = {
      sentinel: armHeldUndo(
        reqs.map((r) => r.fd),
        undo
      ),
      reqs,
    };
    log.debug(
      `sentinel ${s.lift.sentinel.pid} lifts the dump's network lock(s) if criu-bun dies once the processes run`
    );
  } catch (e) {
    for (const r of reqs) r.close();
    throw new CriuError("restore", `cannot hold the dump's network lock past the release: ${errorMessage(e)}`);
  }
}
/** After a successful restore, the processes running: the connections are live again, this
 * restore's locks go. */
function netRestoreEnd(s: InetRestore) {
  netRestoreAbort(s);
}
/** A failed restore: its own locks go (the dump's stays, for another try). */
function netRestoreAbort(s: InetRestore) {
  if (s.back) {
    // connections that left repair mode go back into it before the processes die (silently then):
    // every sentinel fired at once, then each waited for, 5 s at most in all
    const back = s.back.splice(0);
    s.back = undefined;
    for (const b of back) b.fire();
    const deadline = performance.now() + 5000;
    for (const b of back) {
      if (b.reap(deadline)) log.debug(`sentinel ${b.pid}: its TCP connections back into repair mode`);
      else
        log.warn(
          `sentinel ${b.pid} did not put its TCP connections back into repair mode within 5 s (killed): they may linger and hold their addresses until the kernel drops them`
        );
    }
  }
  if (s.lift) {
    // the processes never ran: the dump's locks stay for another restore
    s.lift.sentinel.cancel();
    for (const r of s.lift.reqs) r.close();
    s.lift = undefined;
  }
  try {
    for (const h of s.held.values()) h.release();
  } finally {
    s.tables.clear();
    s.held.clear();
    dropRepairCopies(s);
  }
}

/** Lock every TCP endpoint of this restore before the first connection is made. */
function lockRestore(ctx: RestoreCtx, s: InetRestore) {
  if (s.held.has(ctx.pid)) return;
  const held = new HeldLock(heldTableName(ctx.pid));
  s.held.set(ctx.pid, held);
  const eps: LockedEndpoint[] = [];
  for (const f of ctx.files.values()) {
    const k = f.isk;
    if (!k || k.proto !== IPPROTO.TCP) continue;
    const local = wordsToAddr(k.srcAddr, k.family);
    if (k.state === TCP_STATE.LISTEN) eps.push({ proto: k.proto, local, lport: k.srcPort });
    else if (k.state === TCP_STATE.ESTABLISHED)
      eps.push({ proto: k.proto, local, lport: k.srcPort, remote: wordsToAddr(k.dstAddr, k.family), rport: k.dstPort });
  }
  s.tables.set(dumpLockTable(s, ctx.pid), ctx.pid);
  if (!s.skipLock) withNetns(ctx.pid, () => netLock(held, eps));
}

function restoreInet(ctx: RestoreCtx, k: S.inet_sk_entry, s: InetRestore): number {
  const inj = ctx.inj,
    where = ctx.where;
  s.tables.set(dumpLockTable(s, ctx.pid), ctx.pid);
  const fail = (what: string, r: bigint | number) => {
    throw new CriuError("restore", `${where}: ${what} failed: ${errnoText(-Number(r))}`);
  };
  const call = (what: string, nr: number, ...a: (number | bigint)[]) => {
    const r = inj.call(nr, ...a);
    if (r < 0n) fail(what, r);
    return r;
  };
  const setopt = (lvl: number, opt: number, v: Uint8Array) =>
    Number(inj.call(NR.setsockopt, fdT, lvl, opt, ctx.scratch(0n, v), v.length));
  const setInt = (lvl: number, opt: number, v: number, what: string) => {
    const r = setopt(lvl, opt, int32(v));
    if (r < 0) fail(`setsockopt ${what}`, r);
  };
  let fdT = Number(call("socket", NR.socket, k.family, k.type | SOCK.CLOEXEC, k.proto));
  fdT = ctx.high(fdT, where);
  const local = wordsToAddr(k.srcAddr, k.family);
  const peerAddr = wordsToAddr(k.dstAddr, k.family);
  const bindTo = () => {
    const sa = sockaddr(k.family, local, k.srcPort);
    const r = inj.call(NR.bind, fdT, ctx.scratch(0n, sa), sa.length);
    if (r < 0n) fail(`bind to ${addrString(k.family, local)}:${k.srcPort}`, r);
  };
  // (a raw socket's is fixed at birth: it counts as bound to its protocol)
  if (k.family === AF.INET6 && k.type !== SOCK.RAW) setInt(SOL.IPV6, IPV6_V6ONLY, k.v6only ? 1 : 0, "IPV6_V6ONLY");
  // freebind before bind: the address may not be local (any more)
  if (k.ipOpts?.freebind)
    setInt(
      k.family === AF.INET6 ? SOL.IPV6 : SOL.IP,
      k.family === AF.INET6 ? IPV6_FREEBIND : IP_FREEBIND,
      1,
      "FREEBIND"
    );
  if (k.opts?.soBoundDev) {
    const d = new TextEncoder().encode(k.opts.soBoundDev + "\0");
    const r = setopt(SOL.SOCKET, SO.BINDTODEVICE, d);
    if (r < 0) fail(`binding to device ${k.opts.soBoundDev}`, r);
  }
  // SO_REUSEPORT before bind, as the program had it: sockets of a reuseport group share their port
  // (two listeners, UDP sockets) only so (the second bind failed: EADDRINUSE), and a UDP socket
  // joins its group when it binds
  if (k.opts?.soReuseport) setInt(SOL.SOCKET, SO.REUSEPORT, 1, "SO_REUSEPORT");
  const tcp = k.proto === IPPROTO.TCP;
  const raw = k.type === SOCK.RAW;
  const connection = tcp && !raw && k.state !== TCP_STATE.LISTEN && k.state !== TCP_STATE.CLOSE;
  let closed = false;
  if (connection) {
    const item =
      k.state === TCP_STATE.ESTABLISHED ? cachedPayloads(ctx, streamImage(k.ino), "TCP_STREAM")[0] : undefined;
    if (s.tcpClose || !item) {
      // --tcp-close (or dumped with it): as CRIU, a socket shut down both ways and never
      // connected here, so recv() says 0 (end of stream) and send() EPIPE, and no peer sees it
      closed = true;
      const r = inj.call(NR.shutdown, fdT, SHUT.RDWR);
      if (r < 0n && r !== -107n /* ENOTCONN: it is shut all the same */) fail("shutdown", r);
      log.info(`${where}: TCP connection (${TCP_STATE_NAME[k.state] ?? k.state}) restored closed`);
    } else {
      lockRestore(ctx, s);
      const m = item.msg;
      const stream: TcpStream = {
        state: {
          inqLen: m.inqLen,
          inqSeq: m.inqSeq,
          outqLen: m.outqLen,
          outqSeq: m.outqSeq,
          optMask: m.optMask,
          sndWscale: m.sndWscale,
          rcvWscale: m.rcvWscale,
          mssClamp: m.mssClamp,
          timestamp: m.timestamp,
          cork: m.cork,
          nodelay: m.nodelay,
          unsqLen: m.unsqLen,
          ...(m.maxWindow
            ? { sndWl1: m.sndWl1, sndWnd: m.sndWnd, maxWindow: m.maxWindow, rcvWnd: m.rcvWnd, rcvWup: m.rcvWup }
            : {}),
        },
        inq: item.payload.subarray(0, m.inqLen),
        outq: item.payload.subarray(m.inqLen, m.inqLen + m.outqLen),
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
        send: (data, flags) =>
          withTargetBuffer(ctx, data, (a) =>
            Number(inj.call(NR.sendto, fdT, a, data.length, flags | MSG.DONTWAIT, 0, 0))
          ),
      };
      const peer = sockaddr(k.family, peerAddr, k.dstPort);
      const unsent = restoreTcpStream(
        ops,
        stream,
        peer,
        `${where} (TCP ${addrString(k.family, local)}:${k.srcPort} <-> ${addrString(k.family, peerAddr)}:${k.dstPort})`
      );
      // left in repair mode until the tree is about to run (netRestoreLeaveRepair), as CRIU does:
      // a restore that fails or is killed before then closes it without a FIN or RST, and leaves
      // no socket lingering on its port
      s.inRepair.set(`${ctx.pid}:${k.id}`, { unsent, reuseaddr: !!k.opts?.reuseaddr, where });
      log.info(
        `${where}: TCP connection to ${addrString(k.family, peerAddr)}:${k.dstPort} restored (${m.inqLen} + ${m.outqLen} queued bytes), in repair mode until the tree runs`
      );
    }
  } else if (tcp && !raw && k.state === TCP_STATE.LISTEN) {
    setInt(SOL.SOCKET, SO.REUSEADDR, 1, "SO_REUSEADDR");
    bindTo();
    call("listen", NR.listen, fdT, k.backlog || 128);
  } else if (raw) {
    // a raw socket's "port" is its protocol: only a bound address is kept
    if (local.some((b) => b !== 0)) bindTo();
  } else if (k.srcPort) {
    setInt(SOL.SOCKET, SO.REUSEADDR, 1, "SO_REUSEADDR");
    bindTo();
    if (!tcp && k.dstPort) {
      const sa = sockaddr(k.family, peerAddr, k.dstPort);
      const r = inj.call(NR.connect, fdT, ctx.scratch(0n, sa), sa.length);
      if (r < 0n) fail("connect", r);
    }
  }

  restoreSkOpts(ctx, k, tcp && !raw, setopt, fdT, !closed && connection);
  if (k.shutdown && !closed) {
    // an unconnected socket says ENOTCONN but is shut down all the same
    const r = inj.call(NR.shutdown, fdT, k.shutdown - 1);
    if (r < 0n && r !== -107n) fail("shutdown", r);
  }
  const fl = k.flags & (O.NONBLOCK | O.ASYNC);
  if (fl) call("fcntl(F_SETFL)", NR.fcntl, fdT, F.SETFL, fl);
  return fdT;
}

/** Socket options as dumped; any the kernel refuses fails the restore (never a socket that differs). */
function restoreSkOpts(
  ctx: RestoreCtx,
  k: S.inet_sk_entry,
  tcp: boolean,
  setopt: (l: number, o: number, v: Uint8Array) => number,
  fd: number,
  stream: boolean
) {
  const o = k.opts,
    where = ctx.where;
  if (!o) return;
  const set = (l: number, opt: number, v: Uint8Array, what: string) => {
    const r = setopt(l, opt, v);
    if (r < 0) throw new CriuError("restore", `${where}: restoring ${what} failed: ${errnoText(-r)}`);
  };
  const seti = (l: number, opt: number, v: number, what: string) => set(l, opt, int32(v), what);
  // IP_TOS first: it sets the priority, which SO_PRIORITY below then puts back as dumped
  const ip = k.ipOpts,
    v6 = k.family === AF.INET6;
  if (ip) {
    if (ip.pktinfo)
      seti(v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.RECVPKTINFO : IP.PKTINFO, 1, v6 ? "IPV6_RECVPKTINFO" : "IP_PKTINFO");
    if (isFieldSet(ip, S.ip_opts_entrySchema.field.tos))
      seti(v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.TCLASS : IP.TOS, ip.tos!, v6 ? "IPV6_TCLASS" : "IP_TOS");
    if (isFieldSet(ip, S.ip_opts_entrySchema.field.ttl))
      seti(v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.UNICAST_HOPS : IP.TTL, ip.ttl!, v6 ? "IPV6_UNICAST_HOPS" : "IP_TTL");
    const r = ip.raw;
    if (r && k.type === SOCK.RAW) {
      // IPPROTO_RAW sockets have IP_HDRINCL from birth; others only if it was set
      if (r.hdrincl) seti(v6 ? SOL.IPV6 : SOL.IP, v6 ? IPV6.HDRINCL : IP.HDRINCL, 1, "IP_HDRINCL");
      if (r.nodefrag) seti(SOL.IP, IP.NODEFRAG, 1, "IP_NODEFRAG");
      if (r.icmpvFilter?.length)
        set(
          v6 ? SOL.ICMPV6 : SOL.RAW,
          v6 ? ICMPV6_FILTER : ICMP_FILTER,
          new Uint8Array(new Uint32Array(r.icmpvFilter).buffer),
          "ICMP_FILTER"
        );
    }
  }
  seti(SOL.SOCKET, SO.REUSEADDR, o.reuseaddr ? 1 : 0, "SO_REUSEADDR");
  seti(SOL.SOCKET, SO.REUSEPORT, o.soReuseport ? 1 : 0, "SO_REUSEPORT");
  if (o.soKeepalive) seti(SOL.SOCKET, SO.KEEPALIVE, 1, "SO_KEEPALIVE");
  seti(SOL.SOCKET, SO.PRIORITY, o.soPriority ?? 0, "SO_PRIORITY");
  if (o.soMark) seti(SOL.SOCKET, SO.MARK, o.soMark, "SO_MARK");
  if (o.soRcvlowat > 1) seti(SOL.SOCKET, SO.RCVLOWAT, o.soRcvlowat, "SO_RCVLOWAT");
  if (o.soBroadcast) seti(SOL.SOCKET, SO.BROADCAST, 1, "SO_BROADCAST");
  if (o.soDontroute) seti(SOL.SOCKET, SO.DONTROUTE, 1, "SO_DONTROUTE");
  if (o.soOobinline) seti(SOL.SOCKET, SO.OOBINLINE, 1, "SO_OOBINLINE");
  if (o.soNoCheck) seti(SOL.SOCKET, SO.NO_CHECK, 1, "SO_NO_CHECK");
  if (o.soPasscred) seti(SOL.SOCKET, SO.PASSCRED, 1, "SO_PASSCRED");
  if (o.soPasssec) seti(SOL.SOCKET, SO.PASSSEC, 1, "SO_PASSSEC");
  if (isFieldSet(o, S.sk_opts_entrySchema.field.soLinger))
    set(SOL.SOCKET, SO.LINGER, new Uint8Array(new Int32Array([1, o.soLinger]).buffer), "SO_LINGER");
  for (const [opt, s, u] of [
    [SO.SNDTIMEO, o.soSndTmoSec, o.soSndTmoUsec],
    [SO.RCVTIMEO, o.soRcvTmoSec, o.soRcvTmoUsec],
  ] as const) {
    if (s || u)
      set(SOL.SOCKET, opt, new Uint8Array(new BigUint64Array([BigInt(s), BigInt(u)]).buffer), "socket timeout");
  }
  attachFilter(ctx, fd, o);
  if (tcp) {
    const t = k.tcpOpts;
    if (o.tcpKeepcnt || t?.keepcnt) seti(SOL.TCP, TCP.KEEPCNT, t?.keepcnt || o.tcpKeepcnt, "TCP_KEEPCNT");
    if (o.tcpKeepidle || t?.keepidle) seti(SOL.TCP, TCP.KEEPIDLE, t?.keepidle || o.tcpKeepidle, "TCP_KEEPIDLE");
    if (o.tcpKeepintvl || t?.keepintvl) seti(SOL.TCP, TCP.KEEPINTVL, t?.keepintvl || o.tcpKeepintvl, "TCP_KEEPINTVL");
    // a restored stream has its own cork and nodelay (tcp-stream image)
    if (!stream && t?.nodelay) seti(SOL.TCP, TCP.NODELAY, 1, "TCP_NODELAY");
    if (!stream && t?.cork) seti(SOL.TCP, TCP.CORK, 1, "TCP_CORK");
  }
  // buffer sizes only where the program fixed them (SO_BUF_LOCK bits); elsewhere autotuning goes on
  const lock = o.soBufLock ?? 0;
  if (lock & 1) seti(SOL.SOCKET, SO.SNDBUFFORCE, o.soSndbuf >> 1, "SO_SNDBUF");
  if (lock & 2) seti(SOL.SOCKET, SO.RCVBUFFORCE, o.soRcvbuf >> 1, "SO_RCVBUF");
  seti(SOL.SOCKET, SO.BUF_LOCK, lock, "SO_BUF_LOCK");
}

/** A classic BPF filter as dumped (struct sock_fprog with the instructions beside it). */
function attachFilter(ctx: RestoreCtx, fd: number, o: S.sk_opts_entry) {
  if (!o.soFilter?.length) return;
  const insns = new Uint8Array(new BigUint64Array(o.soFilter.map((x) => BigInt.asUintN(64, BigInt(x)))).buffer);
  const r = withTargetBuffer(ctx, insns, (a) => {
    const prog = new Uint8Array(16);
    const dv = new DataView(prog.buffer);
    dv.setUint16(0, o.soFilter.length, true);
    dv.setBigUint64(8, a, true);
    return Number(ctx.inj.call(NR.setsockopt, fd, SOL.SOCKET, SO.ATTACH_FILTER, ctx.scratch(0n, prog), 16));
  });
  if (r < 0)
    throw new CriuError(
      "restore",
      `${ctx.where}: restoring SO_ATTACH_FILTER (${o.soFilter.length} instructions) failed: ${errnoText(-r)}`
    );
}

/** The socket-level options of a unix socket (buffer sizes are set apart, before its queues). */
export function restoreUnixSkOpts(ctx: RestoreCtx, fd: number, o: S.sk_opts_entry | undefined) {
  if (!o) return;
  const seti = (opt: number, v: number, what: string) => {
    const r = Number(ctx.inj.call(NR.setsockopt, fd, SOL.SOCKET, opt, ctx.scratch(0n, int32(v)), 4));
    if (r < 0) throw new CriuError("restore", `${ctx.where}: restoring ${what} failed: ${errnoText(-r)}`);
  };
  if (o.soPasscred) seti(SO.PASSCRED, 1, "SO_PASSCRED");
  if (o.soPasssec) seti(SO.PASSSEC, 1, "SO_PASSSEC");
  // the flags CRIU keeps for every socket (what the kernel lets a unix socket have)
  if (o.reuseaddr) seti(SO.REUSEADDR, 1, "SO_REUSEADDR");
  if (o.soReuseport) seti(SO.REUSEPORT, 1, "SO_REUSEPORT");
  if (o.soBroadcast) seti(SO.BROADCAST, 1, "SO_BROADCAST");
  if (o.soDontroute) seti(SO.DONTROUTE, 1, "SO_DONTROUTE");
  if (o.soNoCheck) seti(SO.NO_CHECK, 1, "SO_NO_CHECK");
  if (o.soKeepalive) seti(SO.KEEPALIVE, 1, "SO_KEEPALIVE");
  if (o.soOobinline) seti(SO.OOBINLINE, 1, "SO_OOBINLINE");
  if (isFieldSet(o, S.sk_opts_entrySchema.field.soLinger)) {
    const v = new Uint8Array(new Int32Array([1, o.soLinger!]).buffer);
    const r = Number(ctx.inj.call(NR.setsockopt, fd, SOL.SOCKET, SO.LINGER, ctx.scratch(0n, v), 8));
    if (r < 0) throw new CriuError("restore", `${ctx.where}: restoring SO_LINGER failed: ${errnoText(-r)}`);
  }
  if (o.soBoundDev) {
    const d = new TextEncoder().encode(o.soBoundDev + "\0");
    const r = Number(ctx.inj.call(NR.setsockopt, fd, SOL.SOCKET, SO.BINDTODEVICE, ctx.scratch(0n, d), d.length));
    if (r < 0)
      throw new CriuError("restore", `${ctx.where}: binding to device ${o.soBoundDev} failed: ${errnoText(-r)}`);
  }
  if (o.soPriority) seti(SO.PRIORITY, o.soPriority, "SO_PRIORITY");
  if (o.soMark) seti(SO.MARK, o.soMark, "SO_MARK");
  if ((o.soRcvlowat ?? 0) > 1) seti(SO.RCVLOWAT, o.soRcvlowat!, "SO_RCVLOWAT");
  for (const [opt, s, u] of [
    [SO.SNDTIMEO, o.soSndTmoSec, o.soSndTmoUsec],
    [SO.RCVTIMEO, o.soRcvTmoSec, o.soRcvTmoUsec],
  ] as const) {
    if (!s && !u) continue;
    const v = new Uint8Array(new BigUint64Array([BigInt(s), BigInt(u)]).buffer);
    const r = Number(ctx.inj.call(NR.setsockopt, fd, SOL.SOCKET, opt, ctx.scratch(0n, v), 16));
    if (r < 0) throw new CriuError("restore", `${ctx.where}: restoring a socket timeout failed: ${errnoText(-r)}`);
  }
  attachFilter(ctx, fd, o);
  // the buffer sizes were set before the queues (SO_*BUFFORCE locks them): the locks as dumped
  if (isFieldSet(o, S.sk_opts_entrySchema.field.soBufLock)) seti(SO.BUF_LOCK, o.soBufLock ?? 0, "SO_BUF_LOCK");
}

/** Run fn with data placed in the target: in the scratch area when small, else in a temporary mapping. */
function withTargetBuffer(ctx: RestoreCtx, data: Uint8Array, fn: (addr: bigint) => number): number {
  if (data.length <= 512) return fn(ctx.scratch(256n, data));
  const len = (data.length + 4095) & ~4095;
  const a = ctx.inj.call(NR.mmap, 0, len, 3, MAP.PRIVATE | MAP.ANONYMOUS, -1, 0);
  if (a < 0n)
    throw new CriuError("restore", `${ctx.where}: mmap of a ${len}-byte buffer in the target failed: ${errnoText(-a)}`);
  try {
    ctx.mem.write(a, data);
    return fn(a);
  } finally {
    ctx.inj.call(NR.munmap, a, len);
  }
}
