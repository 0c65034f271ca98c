// Unix sockets: socketpairs (and accepted/connected pairs) with queued data both ways, bound and
// listening sockets with path or abstract names. State from sock_diag (peer inode, name,
// shutdown, backlog); queued packets read without consuming them (SO_PEEK_OFF + MSG_PEEK on a
// grabbed copy) into sk-queues.img (sk_packet_entry.id_for = the receiving socket's file id).
// Restore: socketpair for mutual peers (a stream connection with a name, such as an accepted one,
// through a temporary listener so both ends keep their names), then each queue re-sent from
// criu-bun through a pidfd_getfd copy of the peer end, so it lands on the right side;
// socket+bind+listen for named ones. Any other socket family stops the dump with a one-line error naming it.
import { lstatSync, unlinkSync, mkdtempSync, mkdirSync, rmSync, tmpdir } from "../sys/fs";
import { join, dirname } from "../sys/path";
import type { FdKind, RestoreCtx, DumpCtx } from "./fdkind";
import { FOWN0, cachedPayloadsBy } from "./fdkind";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { closeFd, O, F } from "../sys/mem";
import { fdLinks, readLink } from "../sys/proc";
import type * as S from "../images/schemas";
import { sk_packet_entrySchema, fd_types } from "../images/schemas";
import { withNetns } from "../sys/netns";
import { CriuError, log } from "../log";
import { refuse } from "./unsupported";
import { dumpSkOpts, restoreUnixSkOpts } from "./inet";
import { errnoText, SysError, sysFailed } from "../sys/errno";
import {
  sockDiagDump,
  sockDiagGet,
  unixDiagReq,
  diagAttrs,
  SOCK_DIAG_BY_FAMILY,
  UDIAG_SHOW,
  UNIX_DIAG,
} from "../sys/sockdiag";
import { NLMSG, nlError } from "../sys/netlink";
import { AF, AF_NAMES, SOL, SO, MSG, SCM_RIGHTS } from "../sys/sock";

const TCP_LISTEN = 10;

interface Diag {
  type: number;
  state: number;
  ino: number;
  name?: Uint8Array;
  peer: number;
  rq: number;
  wq: number;
  shutdown: number;
  vfs?: { ino: number; dev: number };
}

/** sock_diag's view of a unix socket by inode. The kernel looks a socket up by inode through
 *  all unix sockets, so a dump asks once for all of those of the process's network namespace
 *  (one NLM_F_DUMP, kept for the dump: the tree is frozen) and looks them up here. */
function unixDiag(ino: number, where: string, pid: number, s: UnixDump): Diag {
  const d = unixDiagListing(pid, where, s).get(ino);
  if (d) return d;
  return withNetns(pid, () => unixDiagHere(ino, where)); // made after the listing (a peer outside the tree)
}

/** unix's state for one dump (FdKind<UnixDump>): what is listed once per dump (the tree is frozen) */
interface UnixDump {
  /** the processes of the tree, and their fds' targets when read already */
  tree: number[];
  links?: Map<number, [number, string][]>;
  /** sock_diag's listing of every unix socket, by network namespace */
  diag: Map<string, Map<number, Diag>>;
  /** the network namespace of each process */
  netns: Map<number, string>;
  /** inodes of the sockets the tree's processes hold (heldInTree), listed on first use */
  treeInodes?: Set<number>;
  /** what a new unix socket says for each of UNKEPT_OPTS, by socket type */
  optDefaults?: Map<number, OptDefaults>;
  /** peekQueue's buffers, one set for every socket of the dump, made on first use */
  peek?: { buf: Uint8Array; ctl: Uint8Array; iov: BigUint64Array; msg: BigUint64Array };
}

/** every unix socket of pid's network namespace (listed once per dump) */
function unixDiagListing(pid: number, where: string, s: UnixDump): Map<number, Diag> {
  // the namespace of each process read once (the tree is frozen)
  let ns = s.netns.get(pid);
  if (ns === undefined) s.netns.set(pid, (ns = readLink(`/proc/${pid}/ns/net`)));
  let all = s.diag.get(ns);
  if (!all) s.diag.set(ns, (all = withNetns(pid, () => unixDiagAll(where))));
  return all;
}

/** one unix_diag_msg with its attributes (a sock_diag answer's payload) */
function parseDiag(p: Uint8Array): Diag {
  const v = new DataView(p.buffer, p.byteOffset, p.length);
  const d: Diag = { type: p[1], state: p[2], ino: v.getUint32(4, true), peer: 0, rq: 0, wq: 0, shutdown: 0 };
  for (const [atype, a] of diagAttrs(p, 16)) {
    const av = new DataView(a.buffer, a.byteOffset, a.length);
    if (atype === UNIX_DIAG.NAME) d.name = a.slice();
    else if (atype === UNIX_DIAG.VFS) d.vfs = { ino: av.getUint32(0, true), dev: av.getUint32(4, true) };
    else if (atype === UNIX_DIAG.PEER) d.peer = av.getUint32(0, true);
    else if (atype === UNIX_DIAG.RQLEN) {
      d.rq = av.getUint32(0, true);
      d.wq = av.getUint32(4, true);
    } else if (atype === UNIX_DIAG.SHUTDOWN) d.shutdown = a[0];
  }
  return d;
}

const SHOW = UDIAG_SHOW.NAME | UDIAG_SHOW.VFS | UDIAG_SHOW.PEER | UDIAG_SHOW.RQLEN;

/** every unix socket of this network namespace, by inode */
function unixDiagAll(where: string): Map<number, Diag> {
  const out = new Map<number, Diag>();
  let msgs;
  try {
    msgs = sockDiagDump(unixDiagReq(0, SHOW));
  } catch (e) {
    throw new CriuError(
      "files",
      `${where}: sock_diag listing of unix sockets failed (${e instanceof SysError ? errnoText(e.errno) : (e as Error).message})`
    );
  }
  for (const m of msgs)
    if (m.type === SOCK_DIAG_BY_FAMILY && m.payload.length >= 16) {
      const d = parseDiag(m.payload);
      out.set(d.ino, d);
    }
  return out;
}

function unixDiagHere(ino: number, where: string): Diag {
  let m;
  try {
    m = sockDiagGet(unixDiagReq(ino, SHOW));
  } catch (e) {
    throw new CriuError(
      "files",
      `${where}: sock_diag request failed (${e instanceof SysError ? errnoText(e.errno) : (e as Error).message})`
    );
  }
  if (m?.type === NLMSG.ERROR)
    throw new CriuError("files", `${where}: sock_diag does not know unix socket ${ino}: ${errnoText(-nlError(m))}`);
  if (!m || m.payload.length < 16)
    throw new CriuError("files", `${where}: sock_diag answer too short (${m ? m.payload.length + 16 : 0})`);
  return parseDiag(m.payload);
}

/** st_dev (userspace encoding) and a kernel dev_t (major << 20 | minor) name the same device */
function sameDev(st: number, k: number): boolean {
  const major = (st >>> 8) & 0xfff,
    minor = (st & 0xff) | ((st >>> 12) & 0xfff00);
  return k >>> 20 === major && (k & 0xfffff) === minor;
}

// scratch words for the socket options read and set per socket; their addresses are taken at
// each call (addr() also tells the JIT the call may change them: a cached address would not)
const intVal = new Int32Array(1),
  intLen = new Uint32Array(1);
function getInt(fd: number, opt: number): number {
  intVal[0] = 0;
  intLen[0] = 4;
  const r = syscall(NR.getsockopt, fd, SOL.SOCKET, opt, addr(intVal), addr(intLen));
  return r < 0 ? r : intVal[0];
}
function setInt(fd: number, opt: number, val: number): number {
  intVal[0] = val;
  return syscall(NR.setsockopt, fd, SOL.SOCKET, opt, addr(intVal), 4);
}

/**
 * Socket options sk_opts_entry has no field for (so neither tool brings them back), by number:
 * each must be as a new unix socket of the same type has it, else the dump is refused. What a new
 * socket says is asked once per type and dump (no value is assumed: defaults differ by kernel).
 */
const UNKEPT_OPTS: [number, string][] = [
  [1, "SO_DEBUG"],
  [29, "SO_TIMESTAMP"],
  [35, "SO_TIMESTAMPNS"],
  [37, "SO_TIMESTAMPING"],
  [40, "SO_RXQ_OVFL"],
  [41, "SO_WIFI_STATUS"],
  [SO.PEEK_OFF, "SO_PEEK_OFF"],
  [43, "SO_NOFCS"],
  [SO.LOCK_FILTER, "SO_LOCK_FILTER"],
  [45, "SO_SELECT_ERR_QUEUE"],
  [46, "SO_BUSY_POLL"],
  [47, "SO_MAX_PACING_RATE"],
  [49, "SO_INCOMING_CPU"],
  [60, "SO_ZEROCOPY"],
  [61, "SO_TXTIME"],
  [63, "SO_TIMESTAMP_NEW"],
  [64, "SO_TIMESTAMPNS_NEW"],
  [65, "SO_TIMESTAMPING_NEW"],
  [69, "SO_PREFER_BUSY_POLL"],
  [70, "SO_BUSY_POLL_BUDGET"],
  [74, "SO_TXREHASH"],
  [75, "SO_RCVMARK"],
  [82, "SO_RCVPRIORITY"],
];
const optBuf = new Uint8Array(16),
  optLen = new Uint32Array(1);
/** getsockopt of an option into optBuf (16 bytes at most; optLen the length): the call's result */
function readOpt(fd: number, opt: number): number {
  optBuf.fill(0);
  optLen[0] = optBuf.length;
  return syscall(NR.getsockopt, fd, SOL.SOCKET, opt, addr(optBuf), addr(optLen));
}
/** what a new socket says for each of UNKEPT_OPTS: the call's result, the length and the bytes */
interface OptDefaults {
  rc: Int32Array;
  len: Uint32Array;
  bytes: Uint8Array;
}
/** Refuse the options of UNKEPT_OPTS a socket has away from a new socket's (before its queue is read:
 *  SO_PEEK_OFF is the program's). */
function checkUnkeptOpts(fd: number, type: number, where: string, ino: number, s: UnixDump) {
  s.optDefaults ??= new Map();
  let def = s.optDefaults.get(type);
  if (!def) {
    const t = syscall(NR.socket, AF.UNIX, type | O.CLOEXEC, 0);
    if (t < 0) throw new CriuError("files", sysFailed(where, "socket(AF_UNIX) to read default options", t));
    const n = UNKEPT_OPTS.length;
    def = { rc: new Int32Array(n), len: new Uint32Array(n), bytes: new Uint8Array(n * 16) };
    try {
      for (let i = 0; i < n; i++) {
        def.rc[i] = readOpt(t, UNKEPT_OPTS[i][0]);
        def.len[i] = optLen[0];
        def.bytes.set(optBuf, i * 16);
      }
    } finally {
      closeFd(t);
    }
    s.optDefaults.set(type, def);
  }
  for (let i = 0; i < UNKEPT_OPTS.length; i++) {
    const rc = readOpt(fd, UNKEPT_OPTS[i][0]);
    let same = rc === def.rc[i] && (rc < 0 || optLen[0] === def.len[i]);
    for (let b = 0; same && rc >= 0 && b < 16; b++) same = optBuf[b] === def.bytes[i * 16 + b];
    if (!same) {
      const v = rc >= 0 && optLen[0] >= 4 ? ` ${new DataView(optBuf.buffer).getInt32(0, true)}` : "";
      refuse("files", where, "sockopt", `${UNKEPT_OPTS[i][1]}${v} on unix socket ${ino}`);
    }
  }
}

/**
 * An out-of-band byte on a unix stream socket: one waiting (peeked with MSG_OOB, left in place;
 * the kernel gives it to MSG_OOB only with SO_OOBINLINE off, which is turned off for the look and
 * back on), or the mark of one read already at the head of the queue (SIOCATMARK: a read stops
 * there). Either would come back inline, without its mark (one inside the queue: peekQueue).
 */
function oobState(fd: number, where: string, queued: boolean): string | undefined {
  if (queued) {
    const inline = getInt(fd, SO.OOBINLINE) > 0;
    if (inline) {
      const r = setInt(fd, SO.OOBINLINE, 0);
      if (r < 0) throw new CriuError("files", sysFailed(where, "setsockopt(SO_OOBINLINE)", r));
    }
    try {
      const one = new Uint8Array(1);
      if (syscall(NR.recvfrom, fd, addr(one), 1, MSG_OOB | MSG.PEEK | MSG.DONTWAIT, 0, 0) >= 0)
        return `a byte waiting${inline ? " (SO_OOBINLINE)" : ""}`;
    } finally {
      if (inline) setInt(fd, SO.OOBINLINE, 1);
    }
  }
  intVal[0] = 0;
  if (syscall(NR.ioctl, fd, SIOCATMARK, addr(intVal)) >= 0 && intVal[0] === 1)
    return "the mark of a byte read already, at the head of the queue";
  return undefined;
}
const SIOCATMARK = 0x8905;

const MSG_OOB = 1,
  MSG_CTRUNC = 8;
const SCM_NAMES: Record<number, string> = {
  2: "SCM_CREDENTIALS",
  3: "SCM_SECURITY",
  4: "SCM_PIDFD",
  29: "SCM_TIMESTAMP",
  35: "SCM_TIMESTAMPNS",
  37: "SCM_TIMESTAMPING",
};
const SCM_CREDENTIALS = 2;

/**
 * The receive queue of a grabbed socket, packet by packet, left in place (MSG_PEEK, through
 * SO_PEEK_OFF from 0, put back to what it was after). Datagram and seqpacket queues keep their
 * empty messages: the head is peeked first without an offset, since an empty message already
 * peeked (by the program or an earlier dump) is passed over by an offset. A seqpacket socket shut
 * for reading says 0 at its queue's end as for an empty message: SO_PASSCRED is on for the look
 * (off again after), so a message comes with credentials and the end with none. Control data
 * refuses the dump: fds in flight (SCM_RIGHTS; peeking installs copies here, closed at once), and
 * anything else the receiver would get (credentials with its SO_PASSCRED, timestamps), which the
 * image has no room for. With senders, each packet's source name as recvfrom() gives it (the
 * sun_path bytes; empty: unnamed).
 */
function peekQueue(
  fd: number,
  type: number,
  where: string,
  s: UnixDump,
  ino: number,
  senders?: Uint8Array[],
  shut = 0
): Uint8Array[] {
  const stream = type === 1;
  const endSaysZero = type === 5 /* SOCK_SEQPACKET */ && (shut & 1) /* RCV_SHUTDOWN */ !== 0;
  const credsOn = endSaysZero && getInt(fd, SO.PASSCRED) === 0;
  if (credsOn) {
    const r = setInt(fd, SO.PASSCRED, 1);
    if (r < 0) throw new CriuError("files", sysFailed(where, "setsockopt(SO_PASSCRED)", r));
  }
  const old = getInt(fd, SO.PEEK_OFF);
  const out: Uint8Array[] = [];
  try {
    // one set of buffers for every socket of the dump (addresses taken at each call, see getInt)
    s.peek ??= {
      buf: new Uint8Array(1 << 20),
      ctl: new Uint8Array(4096),
      iov: new BigUint64Array(2),
      msg: new BigUint64Array(7),
    };
    const { buf, ctl, iov, msg } = s.peek;
    const from = new Uint8Array(128);
    /** one packet peeked: its length (-errno; null: the queue's end) and its control data checked */
    const peek = (): number | null => {
      iov[0] = BigInt(addr(buf));
      iov[1] = BigInt(buf.length);
      msg.fill(0n);
      if (senders) {
        msg[0] = BigInt(addr(from));
        msg[1] = BigInt(from.length);
      }
      msg[2] = BigInt(addr(iov));
      msg[3] = 1n;
      msg[4] = BigInt(addr(ctl));
      msg[5] = BigInt(ctl.length);
      const n = syscall(NR.recvmsg, fd, addr(msg), MSG.PEEK | MSG.DONTWAIT | (stream ? 0 : MSG.TRUNC));
      if (n === -11) return null;
      if (n < 0) throw new CriuError("files", `${where}: peeking the socket queue failed: ${errnoText(-n)}`);
      const cmsgs = controlMessages(ctl, Number(msg[5]));
      const fds = cmsgs.flatMap((c) => c.fds);
      for (const f of fds) closeFd(f);
      if (fds.length || Number(msg[6] & 0xffffffffn) & MSG_CTRUNC)
        refuse("files", where, "scm-rights", `${fds.length} fd(s) in a message queued on unix socket ${ino}`);
      const creds = cmsgs.some((c) => c.level === SOL.SOCKET && c.type === SCM_CREDENTIALS);
      // nothing queued: the end (a stream's, or a shut seqpacket's, which has no credentials)
      if (n === 0 && (stream || (endSaysZero && !creds))) return null;
      const other = cmsgs.find((c) => !(credsOn && c.level === SOL.SOCKET && c.type === SCM_CREDENTIALS));
      if (other)
        refuse(
          "files",
          where,
          "unix-queue-cmsg",
          `${(other.level === SOL.SOCKET && SCM_NAMES[other.type]) || `level ${other.level} type ${other.type}`} on a message queued on unix socket ${ino}`
        );
      return n;
    };
    const take = (n: number) => {
      if (n > buf.length) throw new CriuError("files", `${where}: a queued packet of ${n} bytes is too big`);
      out.push(buf.slice(0, n));
      if (senders) senders.push(from.slice(2, Math.max(2, Math.min(from.length, Number(msg[1] & 0xffffffffn)))));
    };
    if (!stream && old < 0) {
      const head = peek();
      if (head === 0) take(0);
    }
    const po = setInt(fd, SO.PEEK_OFF, 0);
    if (po < 0) throw new CriuError("files", sysFailed(where, "setsockopt(SO_PEEK_OFF)", po));
    for (let i = 0; i < 100000; i++) {
      const n = peek();
      if (n === null) break;
      // a stream peek runs on to the end of what is queued (one buffer at most) but stops at the
      // mark an out-of-band byte read already left (fds and credentials, which stop it too, are
      // refused above): the mark would be lost
      if (stream && out.length && out[out.length - 1].length < buf.length)
        refuse(
          "files",
          where,
          "unix-oob",
          `the mark of a byte read already, after ${out.reduce((a, p) => a + p.length, 0)} queued bytes on unix socket ${ino}`
        );
      take(n);
    }
  } finally {
    setInt(fd, SO.PEEK_OFF, old < 0 ? -1 : old);
    if (credsOn) setInt(fd, SO.PASSCRED, 0);
  }
  const empty = out.filter((p) => !p.length).length;
  if (empty) log.debug(`${where}: unix socket ${ino}: ${empty} empty message(s) among ${out.length} queued`);
  return out;
}

/** control messages (cmsghdr: u64 len, i32 level, i32 type, data), with the fds SCM_RIGHTS brought */
function controlMessages(ctl: Uint8Array, len: number): { level: number; type: number; fds: number[] }[] {
  const dv = new DataView(ctl.buffer, ctl.byteOffset);
  const out: { level: number; type: number; fds: number[] }[] = [];
  for (let off = 0; off + 16 <= len; ) {
    const clen = Number(dv.getBigUint64(off, true));
    if (clen < 16) break;
    const level = dv.getInt32(off + 8, true),
      type = dv.getInt32(off + 12, true);
    const fds: number[] = [];
    if (level === SOL.SOCKET && type === SCM_RIGHTS)
      for (let p = off + 16; p + 4 <= off + clen && p + 4 <= len; p += 4) fds.push(dv.getInt32(p, true));
    out.push({ level, type, fds });
    off += (clen + 7) & ~7;
  }
  return out;
}

/** Does a process of the dumped tree hold unix socket ino (through any fd)? The tree's socket
 *  inodes are listed once per dump (the tree is frozen), not once per socket. */
function heldInTree(ino: number, s: UnixDump): boolean {
  let set = s.treeInodes;
  if (!set) {
    set = s.treeInodes = new Set();
    for (const p of s.tree)
      for (const [, t] of s.links?.get(p) ?? fdLinks(p)) if (t.startsWith("socket:[")) set.add(Number(t.slice(8, -1)));
  }
  return set.has(ino);
}

/**
 * A connected stream socket's names come back through a temporary listener bound to the accepted
 * end's name (see restoreNamedConnection). For an abstract name that needs the name free at
 * restore and the accepted end known: refused when a listener outside the tree holds the name,
 * or when both ends are named and neither name is a listener's of the tree (which one was
 * accepted is then unknown).
 */
function checkConnectionNames(ctx: DumpCtx, s: UnixDump, d: Diag, name: Uint8Array, peerInTree: boolean) {
  const pd = peerInTree ? unixDiag(d.peer, ctx.where, ctx.pid, s) : undefined;
  const pname = pd?.name ?? new Uint8Array(0);
  if (!(name.length && name[0] === 0) && !(pname.length && pname[0] === 0)) return;
  const all = unixDiagListing(ctx.pid, ctx.where, s);
  const listeners = (n: Uint8Array) =>
    [...all.values()].filter(
      (s) => s.state === TCP_LISTEN && s.name && s.name.length === n.length && s.name.every((v, i) => v === n[i])
    );
  if (name.length && name[0] === 0) {
    const out = listeners(name).find((l) => !heldInTree(l.ino, s));
    if (out)
      refuse(
        "files",
        ctx.where,
        "unix-connection-name",
        `'${nameText(name)}' of unix socket ${d.ino} is held by listener ${out.ino} outside the tree`
      );
  }
  if (name.length && pname.length) {
    const inTree = (n: Uint8Array) => listeners(n).some((l) => heldInTree(l.ino, s));
    if (!inTree(name) && !inTree(pname))
      refuse(
        "files",
        ctx.where,
        "unix-connection-name",
        `unix socket ${d.ino} '${nameText(name)}' and its peer ${d.peer} '${nameText(pname)}' are both named, neither by a listener of the tree`
      );
  }
}

/** unix's state for one restore (FdKind<UnixDump, UnixRestore>): the images' unix sockets,
 *  indexed once when first asked about (per socket, the restore of 10,000 fds would be quadratic) */
interface UnixRestore {
  files: Map<number, S.file_entry>;
  /** every unix socket entry by inode (peers outside the tree too) */
  byIno?: Map<number, S.file_entry>;
  /** the tree's sockets by inode (peers outside it left out), and the inodes some socket is
   *  connected to one way */
  tree?: { socks: Map<number, S.file_entry>; oneWayTargets: Set<number> };
}

/** The unix socket entry of an inode (the first of the images'), in the tree or not. */
function uskByIno(s: UnixRestore, ino: number): S.file_entry | undefined {
  let m = s.byIno;
  if (!m) {
    m = s.byIno = new Map();
    for (const f of s.files.values()) if (f.usk && !m.has(f.usk.ino)) m.set(f.usk.ino, f);
  }
  return m.get(ino);
}

/** USK_EXTERN in unix_sk_entry.uflags: an entry for a peer outside the dumped tree (CRIU's layout) */
const USK_EXTERN = 1;

export const unixKind: FdKind<UnixDump, UnixRestore> = {
  name: "unix socket",
  type: fd_types.UNIXSK,
  dumpBegin: (_tree, opts) => ({ tree: opts.tree, links: opts.links, diag: new Map(), netns: new Map() }),
  restoreBegin: (run) => ({ files: run.files }),
  match: (target) => target.startsWith("socket:["),
  requireImages(f, run, need) {
    const u = f.usk;
    if (u && run.inventory.allImages && u.peer && u.state !== TCP_LISTEN && !(u.uflags & USK_EXTERN))
      need("sk-queues.img", `files.img has connected unix socket ${u.ino}`);
  },
  dump(ctx, s) {
    const fd = ctx.grab();
    const ino = Number(ctx.st.ino);
    // a socket in the dump's listing of unix sockets is one, with its type and state there
    // (three system calls fewer per socket); any other is asked
    const listed = unixDiagListing(ctx.pid, ctx.where, s).get(ino);
    if (!listed) {
      const family = getInt(fd, SO.DOMAIN);
      if (family !== AF.UNIX) {
        throw new CriuError(
          "files",
          `${ctx.where}: ${AF_NAMES[family] ?? `family ${family}`} socket (${ctx.target}) is not supported yet`
        );
      }
    }
    const d = listed ?? unixDiag(ino, ctx.where, ctx.pid, s);
    const type = listed ? listed.type : getInt(fd, SO.TYPE);
    const listening = listed ? listed.state === TCP_LISTEN : getInt(fd, SO.ACCEPTCONN) === 1;
    // options CRIU's images have no field for, left at their defaults or refused
    if (getInt(fd, SO.PASSPIDFD) > 0) refuse("files", ctx.where, "sockopt", "SO_PASSPIDFD");
    if (getInt(fd, SO.PASSRIGHTS) === 0) refuse("files", ctx.where, "sockopt", "SO_PASSRIGHTS off");
    checkUnkeptOpts(fd, type, ctx.where, ino, s);
    // an out-of-band byte would come back inline (it is counted in the queued bytes), its mark lost
    const oob = type === 1 && !listening ? oobState(fd, ctx.where, d.rq > 0) : undefined;
    if (oob) refuse("files", ctx.where, "unix-oob", `${oob} on unix socket ${ino}`);
    if (listening && d.rq) refuse("files", ctx.where, "unix-in-flight", `${d.rq} on unix socket ${ino}`);
    // the name as bound, as CRIU keeps it: a path's trailing NUL (when the address length
    // counted it) stays, so getsockname() gives the same length after restore
    const name = d.name ?? new Uint8Array(0);
    let nameDir: string | undefined;
    let filePerms: { mode: number; uid: number; gid: number } | undefined;
    let deleted = false;
    if (name.length && name[0] !== 0) {
      const path = pathOf(name);
      // a relative name is bound again from the directory it was bound in: the process's cwd
      // now (CRIU's assumption too); what sits at the path must be the socket's own inode, else
      // the name was unlinked (or its directory removed, or something else now sits there)
      if (!path.startsWith("/")) nameDir = readLink(`/proc/${ctx.pid}/cwd`);
      let st: import("../sys/fs").Stats | undefined;
      try {
        st = lstatSync(nameDir ? join(nameDir, path) : path);
      } catch {}
      deleted = !st || !d.vfs || Number(st.ino) !== d.vfs.ino || !sameDev(Number(st.dev), d.vfs.dev);
      if (st && !deleted) filePerms = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
      if (deleted)
        log.debug(
          `${ctx.where}: unix socket ${ino}: its name '${path}' is no longer its file (${st ? "another file sits there" : "gone"})`
        );
    }
    const id = ctx.files.add(null, (id) => ({
      id,
      type: 5,
      usk: {
        id,
        ino,
        type,
        state: listening ? TCP_LISTEN : d.state,
        flags: ctx.flags,
        uflags: 0,
        backlog: listening ? d.wq : 0,
        peer: d.peer,
        fown: FOWN0,
        opts: dumpSkOpts(fd, type, 0, ctx.where),
        name,
        shutdown: d.shutdown,
        ...(filePerms ? { filePerms } : {}),
        ...(nameDir ? { nameDir } : {}),
        ...(deleted ? { deleted } : {}),
      },
    }));
    if (d.peer && !listening && !ctx.files.usk.has(d.peer) && !heldInTree(d.peer, s)) {
      // the peer lives outside the dumped tree
      if (!ctx.opts.extUnixSk) {
        throw new CriuError(
          "files",
          `${ctx.where}: unix socket ${ino} is connected to socket ${d.peer} outside the dumped tree; use --ext-unix-sk`
        );
      }
      // CRIU's layout: one extra UNIXSK file entry for the peer, flagged USK_EXTERN, with its name;
      // a datagram socket is reconnected to that name at restore, anything else comes back
      // unconnected (a valid socket of the same type; I/O on it says ENOTCONN)
      const pd = unixDiag(d.peer, ctx.where, ctx.pid, s);
      let pname = pd.name ?? new Uint8Array(0);
      if (pname.length && pname[0] !== 0 && pname.indexOf(0) >= 0) pname = pname.subarray(0, pname.indexOf(0));
      ctx.files.add(`uskext:${d.peer}`, (pid) => ({
        id: pid,
        type: 5,
        usk: {
          id: pid,
          ino: d.peer,
          type: pd.type,
          state: TCP_LISTEN,
          flags: 0,
          uflags: USK_EXTERN,
          backlog: 0,
          peer: 0,
          fown: FOWN0,
          opts: { soSndbuf: 0, soRcvbuf: 0, soSndTmoSec: 0n, soSndTmoUsec: 0n, soRcvTmoSec: 0n, soRcvTmoUsec: 0n },
          name: pname,
          shutdown: 0,
        },
      }));
      // anything else would come back unconnected (CRIU 4.2 refuses a stream one too: "half of
      // stream unix connection"): refused
      const reconnect = type === 2 && pd.type === 2 && pname.length > 0;
      if (!reconnect)
        refuse(
          "files",
          ctx.where,
          "unix-ext-peer",
          `socket ${ino}, ${type === 2 ? "datagram" : type === 5 ? "seqpacket" : "stream"}, peer ${d.peer}${pname.length ? "" : " without a name"}`
        );
      if (d.rq && !(reconnect && name.length)) {
        throw new CriuError(
          "files",
          `${ctx.where}: unix socket ${ino} has ${d.rq} queued bytes from socket ${d.peer} outside the dumped tree; only a named datagram socket keeps them`
        );
      }
      if (d.rq) {
        // restore puts the datagrams back from an unnamed socket of criu-bun's: exact only for
        // those whose sender has no name (a named sender, such as the external peer still bound
        // to its name, cannot be sent from again)
        const senders: Uint8Array[] = [];
        peekQueue(fd, type, ctx.where, s, ino, senders);
        const named = senders.find((n) => n.length > 0);
        if (named) {
          refuse(
            "files",
            ctx.where,
            "unix-queue-named-sender",
            `a datagram from '${nameText(named)}' queued on unix socket ${ino}`
          );
        }
        log.debug(`${ctx.where}: unix socket ${ino}: ${senders.length} queued datagram(s), all from unnamed senders`);
      }
    }
    // connected, but the peer is closed (sock_diag has no peer inode for it): restored as a pair
    // whose other end is closed at once, so data then EOF (stream) or ECONNREFUSED (dgram) follow
    const peerGone = !listening && !d.peer && d.state === 1 /* TCP_ESTABLISHED */;
    if (!listening && !d.peer && !peerGone && d.rq)
      refuse("files", ctx.where, "unix-dgram-queue", `${d.rq} bytes on unix socket ${ino}`);
    const peerInTree = d.peer !== 0 && (ctx.files.usk.has(d.peer) || heldInTree(d.peer, s));
    if (type !== 2 && !listening && d.state === 1 && (peerInTree || peerGone))
      checkConnectionNames(ctx, s, d, name, peerInTree);
    if (d.peer && d.peer !== ino && !listening && d.rq && peerInTree) {
      // connected one way (to a server of the tree that is not connected back): what is queued
      // here was sent by some socket with sendto(), which the image cannot name
      const pd = unixDiag(d.peer, ctx.where, ctx.pid, s);
      if (pd.peer !== ino) refuse("files", ctx.where, "unix-oneway-queue", `${d.rq} bytes on unix socket ${ino}`);
    }
    // a stream socket whose peer is frozen in the tree (or gone) with nothing queued in the
    // listing has nothing to read (stream data has no empty packets; datagram and seqpacket
    // queues may hold empty ones, the listing's byte count cannot tell: those are always read)
    const nothingQueued = listed !== undefined && type === 1 && d.rq === 0 && (peerGone || peerInTree);
    // (the queues' image is written all the same: restore then knows none was lost)
    if ((d.peer || peerGone) && !listening && nothingQueued) ctx.images.ensure("sk-queues.img", "SK_QUEUES");
    if ((d.peer || peerGone) && !listening && !nothingQueued) {
      // a closed peer's data is put back from the unnamed end of a new pair: exact only when
      // its sender had no name either (recvfrom() gives the sender's name)
      const senders: Uint8Array[] | undefined = peerGone ? [] : undefined;
      const q = peekQueue(fd, type, ctx.where, s, ino, senders, d.shutdown);
      const named = senders?.find((n) => n.length > 0);
      if (named)
        refuse(
          "files",
          ctx.where,
          "unix-queue-named-sender",
          `data from closed '${nameText(named)}' queued on unix socket ${ino}`
        );
      ctx.images.ensure("sk-queues.img", "SK_QUEUES");
      for (const p of q)
        ctx.images.add("sk-queues.img", "SK_QUEUES", sk_packet_entrySchema, { idFor: id, length: p.length }, p);
    }
    return id;
  },
  restore(ctx, f, _fe, s) {
    const u = f.usk!,
      inj = ctx.inj;
    // the other end of a pair made while restoring its peer, maybe in another process of the tree
    const ready = ctx.fdFrom(`usk:${u.ino}`);
    if (ready !== undefined) return ready;
    const peerFile = u.peer ? uskByIno(s, u.peer) : undefined;
    if (u.peer && !peerFile) {
      throw new CriuError(
        "restore",
        `${ctx.where}: unix socket ${u.ino} is connected to socket ${u.peer} outside the dumped processes (--ext-unix-sk is not supported yet)`
      );
    }
    // datagram sockets connected one way (clients of a named server, a socket connected to
    // itself): the server and all its clients are made together, bound, then connected by name
    if (oneWayGroup(ctx, u)) return restoreGroup(ctx, f);
    if (namedConnection(u, peerFile?.usk)) {
      // a stream connection with names (an accepted one): made through a listener, both held
      restoreNamedConnection(ctx, f);
      return ctx.fdFrom(`usk:${u.ino}`)!;
    }
    if (peerFile && peerFile.usk!.peer === u.ino) {
      // mutual peers: one socketpair, then refill both queues
      const a = ctx.scratch(0n, new Uint8Array(8));
      const r = inj.call(NR.socketpair, AF.UNIX, u.type | O.CLOEXEC, 0, a);
      if (r < 0n) throw new CriuError("restore", `${ctx.where}: socketpair failed: ${errnoText(-r)}`);
      const v = new Int32Array(ctx.mem.read(a, 8).buffer);
      const mine = ctx.high(v[0], ctx.where),
        theirs = ctx.high(v[1], ctx.where);
      // one pair for the whole tree: the peer's end is held for whichever process has it
      ctx.hold(`usk:${u.peer}`, theirs);
      // buffer sizes first: a stream's queue is bounded by its sender's SO_SNDBUF
      setBufs(ctx, mine, u);
      setBufs(ctx, theirs, peerFile.usk!);
      // datagram sockets bound to their own names: bound now (connected ones can be)
      if (u.name.length) bindName(ctx, u, mine);
      if (peerFile.usk!.name.length) bindName(ctx, peerFile.usk!, theirs);
      refill(ctx, f, theirs);
      refill(ctx, peerFile, mine);
      finish(ctx, f, mine);
      finish(ctx, peerFile, theirs);
      return mine;
    }
    if (peerFile && peerFile.usk!.uflags & USK_EXTERN) return restoreExternal(ctx, f, peerFile);
    if (!u.peer && u.state === 1 /* TCP_ESTABLISHED */) {
      // its peer was closed: a pair, the queue sent from the other end, which is then closed
      const a = ctx.scratch(0n, new Uint8Array(8));
      const r = inj.call(NR.socketpair, AF.UNIX, u.type | O.CLOEXEC, 0, a);
      if (r < 0n) throw new CriuError("restore", `${ctx.where}: socketpair failed: ${errnoText(-r)}`);
      const v = new Int32Array(ctx.mem.read(a, 8).buffer);
      const mine = ctx.high(v[0], ctx.where),
        theirs = ctx.high(v[1], ctx.where);
      setBufs(ctx, mine, u);
      if (u.name.length) bindName(ctx, u, mine); // a datagram socket's own name
      const queued = (cachedPayloadsBy(ctx, "sk-queues.img", "SK_QUEUES", (m) => m.idFor).get(f.id) ?? []).reduce(
        (n, p) => n + p.payload.length,
        0
      );
      setBufs(ctx, theirs, { opts: { soSndbuf: queued * 2 + 65536, soRcvbuf: 0 } });
      refill(ctx, f, theirs);
      inj.call(NR.close, theirs);
      log.debug(`${ctx.where}: unix socket ${u.ino} restored with its peer closed`);
      finish(ctx, f, mine);
      return mine;
    }
    if (u.peer)
      throw new CriuError(
        "restore",
        `${ctx.where}: unix socket ${u.ino} connected one way to ${u.peer}: not supported yet`
      );
    const fd = boundSocket(ctx, u);
    if (u.state === TCP_LISTEN) {
      const l = inj.call(NR.listen, fd, u.backlog);
      if (l < 0n) throw new CriuError("restore", `${ctx.where}: listen failed: ${errnoText(-l)}`);
    }
    finish(ctx, f, fd);
    return fd;
  },
};

/** the tree's unix sockets by inode, and the inodes some socket is connected to one way: indexed
 *  once per restore, in unix's state for it */
function treeIndex(ctx: RestoreCtx) {
  const s = ctx.tree.kindState(unixKind);
  if (!s.tree) {
    const socks = new Map<number, S.file_entry>();
    for (const x of s.files.values()) if (x.usk && !(x.usk.uflags & USK_EXTERN)) socks.set(x.usk.ino, x);
    const oneWayTargets = new Set<number>();
    for (const x of socks.values()) if (isOneWay(x.usk!, socks)) oneWayTargets.add(x.usk!.peer);
    s.tree = { socks, oneWayTargets };
  }
  return s.tree;
}
/** Unix socket files of this restore by inode (entries for peers outside the tree left out). */
function treeSockets(ctx: RestoreCtx): Map<number, S.file_entry> {
  return treeIndex(ctx).socks;
}
/** connected to another socket of the tree that is not connected back to it */
function isOneWay(u: S.unix_sk_entry, socks: Map<number, S.file_entry>): boolean {
  const p = u.peer ? socks.get(u.peer) : undefined;
  return !!p && u.peer !== u.ino && p.usk!.peer !== u.ino;
}
function oneWayGroup(ctx: RestoreCtx, u: S.unix_sk_entry): boolean {
  if (u.state === TCP_LISTEN) return false;
  const socks = treeSockets(ctx);
  if (u.peer === u.ino || isOneWay(u, socks)) return true;
  return treeIndex(ctx).oneWayTargets.has(u.ino);
}

/**
 * A server and every socket connected to it one way (and theirs, transitively), made in this
 * process: each bound to its name (names whose file was unlinked inside a ghost root, see
 * withGhostRoot), then each client connected to its server's name, a self-connected socket to
 * its own; held tree-wide for the processes that have them.
 */
function restoreGroup(ctx: RestoreCtx, f: S.file_entry): number {
  const socks = treeSockets(ctx);
  let root = f;
  for (const seen = new Set([f.usk!.ino]); isOneWay(root.usk!, socks); ) {
    const p = socks.get(root.usk!.peer)!;
    if (seen.has(p.usk!.ino)) break; // a ring: any member will do as the root
    seen.add(p.usk!.ino);
    root = p;
  }
  const members: S.file_entry[] = [];
  for (const stack = [root]; stack.length; ) {
    const m = stack.pop()!;
    if (members.includes(m)) continue;
    members.push(m);
    for (const c of socks.values()) if (c.usk!.peer === m.usk!.ino && c !== m && isOneWay(c.usk!, socks)) stack.push(c);
  }
  const fds = new Map<number, number>();
  for (const m of members) {
    const r = Number(ctx.inj.call(NR.socket, AF.UNIX, m.usk!.type | O.CLOEXEC, 0));
    if (r < 0) throw new CriuError("restore", `${ctx.where}: socket(AF_UNIX) failed: ${errnoText(-r)}`);
    const fd = ctx.high(r, ctx.where);
    setBufs(ctx, fd, m.usk!);
    fds.set(m.usk!.ino, fd);
  }
  const named = (m: S.file_entry) => m.usk!.name.length > 0;
  const ghost = (m: S.file_entry) => named(m) && m.usk!.name[0] !== 0 && !!m.usk!.deleted;
  const conns = members.filter((m) => m.usk!.peer && fds.has(m.usk!.peer));
  const connect = (m: S.file_entry) => {
    const srv = socks.get(m.usk!.peer)!.usk!;
    if (!srv.name.length)
      throw new CriuError(
        "restore",
        `${ctx.where}: unix socket ${m.usk!.ino} is connected to unnamed socket ${srv.ino}`
      );
    const { sa, text } = sockaddr(srv.name, srv.nameDir);
    const c = ctx.inj.call(NR.connect, fds.get(m.usk!.ino)!, ctx.scratch(0n, sa), sa.length);
    if (c < 0n)
      throw new CriuError(
        "restore",
        `${ctx.where}: connecting unix socket ${m.usk!.ino} to '${text}' failed: ${errnoText(-c)}`
      );
  };
  for (const m of members) if (named(m) && !ghost(m)) bindName(ctx, m.usk!, fds.get(m.usk!.ino)!);
  const ghosts = members.filter(ghost);
  if (ghosts.length) {
    withGhostRoot(
      ctx,
      ghosts.map((m) => m.usk!),
      () => {
        for (const m of ghosts) bindHere(ctx, m.usk!, fds.get(m.usk!.ino)!);
        for (const m of conns) if (ghost(socks.get(m.usk!.peer)!)) connect(m);
      }
    );
  }
  for (const m of conns) if (!ghost(socks.get(m.usk!.peer)!)) connect(m);
  for (const m of members) {
    const fd = fds.get(m.usk!.ino)!;
    if (m.usk!.peer === m.usk!.ino) refill(ctx, m, fd); // its own datagrams, sent to itself
    finish(ctx, m, fd);
    ctx.hold(`usk:${m.usk!.ino}`, fd);
  }
  log.debug(
    `${ctx.where}: unix sockets ${members.map((m) => m.usk!.ino).join(", ")} restored as one group (${conns.length} connected one way or to themselves)`
  );
  return ctx.fdFrom(`usk:${f.usk!.ino}`)!;
}

/** sockaddr_un bytes for a dumped name (path names made absolute with name_dir) */
function sockaddr(name: Uint8Array, nameDir?: string): { sa: Uint8Array; text: string } {
  if (name[0] !== 0) {
    // a path name: made absolute; what followed its NUL (the NUL itself) is kept
    const nul = name.indexOf(0);
    let path = pathOf(name);
    if (nameDir && !path.startsWith("/")) path = join(nameDir, path);
    const p = new TextEncoder().encode(path);
    const tail = nul >= 0 ? name.subarray(nul) : new Uint8Array(0);
    const sa = new Uint8Array(2 + p.length + tail.length);
    sa[0] = AF.UNIX;
    sa.set(p, 2);
    sa.set(tail, 2 + p.length);
    return { sa, text: path };
  }
  const sa = new Uint8Array(2 + name.length);
  sa[0] = AF.UNIX;
  sa.set(name, 2);
  return { sa, text: new TextDecoder().decode(name).replace(/\0/g, "@") };
}

/** A socket name for messages: a path up to its NUL, an abstract one with @ for its NULs. */
function nameText(name: Uint8Array): string {
  return name[0] === 0 ? `@${new TextDecoder().decode(name.subarray(1)).replace(/\0/g, "@")}` : pathOf(name);
}

/** A path socket name up to its NUL. */
function pathOf(name: Uint8Array): string {
  const nul = name.indexOf(0);
  return new TextDecoder().decode(nul >= 0 ? name.subarray(0, nul) : name);
}

/** A new unix socket of the dumped type, bound to its dumped name if it had one. */
function boundSocket(ctx: RestoreCtx, u: S.unix_sk_entry): number {
  const r = Number(ctx.inj.call(NR.socket, AF.UNIX, u.type | O.CLOEXEC, 0));
  if (r < 0) throw new CriuError("restore", `${ctx.where}: socket(AF_UNIX) failed: ${errnoText(-r)}`);
  const fd = ctx.high(r, ctx.where);
  setBufs(ctx, fd, u);
  if (u.name.length) bindName(ctx, u, fd);
  return fd;
}

/**
 * Bind fd to u's name as dumped. A path name is bound as it was (a relative one from its
 * directory, so getsockname() gives the same bytes), then given its mode and owner; a name whose
 * file was unlinked (its directory removed, something else there now) is bound inside a ghost
 * root, so the socket has its name and no file, and whatever sits at the path is left alone.
 */
function bindName(ctx: RestoreCtx, u: S.unix_sk_entry, fd: number) {
  if (u.name[0] === 0) connectionsNamedFirst(ctx, u);
  if (u.name[0] !== 0 && u.deleted) return withGhostRoot(ctx, [u], () => bindHere(ctx, u, fd));
  const { text } = sockaddr(u.name, u.nameDir);
  if (u.name[0] !== 0) {
    try {
      if (lstatSync(text).isSocket()) unlinkSync(text);
    } catch {}
  }
  bindHere(ctx, u, fd);
  if (u.name[0] !== 0 && u.filePerms) {
    const p = u.filePerms;
    const m = ctx.inj.call(NR.fchmodat, -100, ctx.str(text), p.mode, 0);
    const o = ctx.inj.call(NR.fchownat, -100, ctx.str(text), p.uid, p.gid, 0x100 /* AT_SYMLINK_NOFOLLOW */);
    if (m < 0n || o < 0n)
      throw new CriuError(
        "restore",
        `${ctx.where}: giving '${text}' mode ${p.mode.toString(8)} and owner ${p.uid}:${p.gid} failed: ${errnoText(-(m < 0n ? m : o))}`
      );
  }
}

/** bind() (or connect(), with nr) with the name's own bytes, from its directory when it is
 *  relative (cwd put back after) */
function bindHere(ctx: RestoreCtx, u: S.unix_sk_entry, fd: number, nr: number = NR.bind) {
  const inj = ctx.inj;
  const text = sockaddr(u.name, u.nameDir).text;
  const sa = new Uint8Array(2 + u.name.length);
  sa[0] = AF.UNIX;
  sa.set(u.name, 2);
  const relative = u.name[0] !== 0 && u.name[0] !== 0x2f /* / */ && !!u.nameDir;
  let cwd = -1;
  if (relative) {
    cwd = Number(
      inj.call(NR.openat, -100, ctx.str("."), 0o10000000 /* O_PATH */ | 0o200000 /* O_DIRECTORY */ | O.CLOEXEC, 0)
    );
    if (cwd < 0) throw new CriuError("restore", `${ctx.where}: opening the cwd failed: ${errnoText(-cwd)}`);
    const c = inj.call(NR.chdir, ctx.str(u.nameDir!));
    if (c < 0n) {
      inj.call(NR.close, cwd);
      throw new CriuError(
        "restore",
        `${ctx.where}: chdir to '${u.nameDir}' to bind '${text}' failed: ${errnoText(-c)}`
      );
    }
  }
  try {
    const b = inj.call(nr, fd, ctx.scratch(0n, sa), sa.length);
    if (b < 0n)
      throw new CriuError(
        "restore",
        `${ctx.where}: ${nr === NR.bind ? "bind" : "connect"} to '${text}' failed: ${errnoText(-b)}`
      );
  } finally {
    if (relative) {
      inj.call(NR.fchdir, cwd);
      inj.call(NR.close, cwd);
    }
  }
}

/**
 * Run fn with the target's root in a fresh private directory holding the directories of these
 * names (as CRIU keeps a deleted name: bound where the path leads, then unlinked): the sockets
 * bound there have their names and, once the directory is removed, no file. Root and cwd are put
 * back from fds opened first.
 */
function withGhostRoot(ctx: RestoreCtx, us: S.unix_sk_entry[], fn: () => void) {
  const inj = ctx.inj;
  const tmp = mkdtempSync(join(tmpdir(), "criu-bun-usk-"));
  try {
    for (const u of us) {
      const abs = sockaddr(u.name, u.nameDir).text;
      mkdirSync(join(tmp, dirname(abs)), { recursive: true, mode: 0o700 });
      if (u.nameDir) mkdirSync(join(tmp, u.nameDir), { recursive: true, mode: 0o700 });
    }
    const open = (path: string) => {
      const r = Number(
        inj.call(NR.openat, -100, ctx.str(path), 0o10000000 /* O_PATH */ | 0o200000 /* O_DIRECTORY */ | O.CLOEXEC, 0)
      );
      if (r < 0) throw new CriuError("restore", `${ctx.where}: opening '${path}' failed: ${errnoText(-r)}`);
      return r;
    };
    const root = open("/"),
      cwd = open(".");
    try {
      const c = inj.call(NR.chroot, ctx.str(tmp));
      if (c < 0n)
        throw new CriuError(
          "restore",
          `${ctx.where}: chroot to a ghost root for unlinked socket names failed: ${errnoText(-c)}`
        );
      try {
        fn();
      } finally {
        const a = inj.call(NR.fchdir, root),
          b = inj.call(NR.chroot, ctx.str(".")),
          d = inj.call(NR.fchdir, cwd);
        const bad = a < 0n ? a : b < 0n ? b : d;
        if (bad < 0n)
          throw new CriuError("restore", sysFailed(ctx.where, "putting root and cwd back after the ghost root", bad));
      }
    } finally {
      inj.call(NR.close, root);
      inj.call(NR.close, cwd);
    }
    log.debug(
      `${ctx.where}: unix socket name(s) ${us.map((u) => `'${sockaddr(u.name, u.nameDir).text}'`).join(", ")} bound with no file (unlinked at dump)`
    );
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** A socket whose peer was outside the dumped tree (--ext-unix-sk): a datagram socket is
 *  reconnected to the peer's name (as criu does), after its queued datagrams are put back by
 *  name (so its own name is needed for that); anything else comes back unconnected. */
function restoreExternal(ctx: RestoreCtx, f: S.file_entry, ext: S.file_entry): number {
  const u = f.usk!,
    e = ext.usk!,
    inj = ctx.inj;
  const fd = boundSocket(ctx, u);
  if (u.type === 2 && e.type === 2 && e.name.length) {
    const items = cachedPayloadsBy(ctx, "sk-queues.img", "SK_QUEUES", (m) => m.idFor).get(f.id) ?? [];
    if (items.length) {
      if (!u.name.length)
        throw new CriuError(
          "restore",
          `${ctx.where}: queued datagrams of unnamed unix socket ${u.ino} cannot be put back`
        );
      const own = sockaddr(u.name, u.nameDir);
      const tmp = syscall(NR.socket, AF.UNIX, 2 | O.CLOEXEC, 0);
      if (tmp < 0) throw new CriuError("restore", sysFailed(ctx.where, "socket", tmp));
      try {
        for (const it of items) {
          const n = syscall(
            NR.sendto,
            tmp,
            it.payload.length ? addr(it.payload) : 0, // an empty datagram: no bytes to point at
            it.payload.length,
            MSG.DONTWAIT,
            addr(own.sa),
            own.sa.length
          );
          if (n !== it.payload.length)
            throw new CriuError(
              "restore",
              n < 0
                ? sysFailed(ctx.where, `re-queueing ${it.payload.length} bytes to '${own.text}'`, n)
                : `${ctx.where}: re-queueing ${it.payload.length} bytes to '${own.text}' sent ${n}`
            );
        }
      } finally {
        closeFd(tmp);
      }
    }
    const peer = sockaddr(e.name, e.nameDir || u.nameDir);
    const c = inj.call(NR.connect, fd, ctx.scratch(0n, peer.sa), peer.sa.length);
    if (c < 0n)
      throw new CriuError(
        "restore",
        `${ctx.where}: reconnecting unix socket ${u.ino} to external '${peer.text}' failed: ${errnoText(-c)}`
      );
  } else {
    // only a datagram socket can be connected again (by its peer's name); an image that holds
    // anything else (criu-bun's before it refused them at dump) would come back unconnected
    throw new CriuError(
      "restore",
      `${ctx.where}: unix socket ${u.ino} had its peer ${u.peer} outside the dumped tree, and only a datagram socket connected to a named peer can be connected again`
    );
  }
  finish(ctx, f, fd);
  return fd;
}

/** queued packets of socket f, sent from criu-bun through a copy of its peer's target fd */
function refill(ctx: RestoreCtx, f: S.file_entry, peerTargetFd: number) {
  const items = cachedPayloadsBy(ctx, "sk-queues.img", "SK_QUEUES", (m) => m.idFor).get(f.id) ?? [];
  if (!items.length) return;
  const pfd = syscall(NR.pidfd_open, ctx.pid, 0);
  if (pfd < 0) throw new CriuError("restore", sysFailed(ctx.where, "pidfd_open", pfd));
  const fd = syscall(NR.pidfd_getfd, pfd, peerTargetFd, 0);
  closeFd(pfd);
  if (fd < 0) throw new CriuError("restore", sysFailed(ctx.where, "pidfd_getfd", fd));
  try {
    for (const it of items) {
      // (an empty message is one too: sent with no bytes to point at)
      const data = it.payload.length ? addr(it.payload) : 0;
      const n = syscall(NR.sendto, fd, data, it.payload.length, MSG.DONTWAIT | MSG.NOSIGNAL, 0, 0);
      if (n !== it.payload.length)
        throw new CriuError(
          "restore",
          n < 0
            ? sysFailed(ctx.where, `re-queueing ${it.payload.length} bytes on unix socket ${f.usk!.ino}`, n)
            : `${ctx.where}: re-queueing ${it.payload.length} bytes on unix socket ${f.usk!.ino} sent ${n}`
        );
    }
  } finally {
    closeFd(fd);
  }
  const empty = items.filter((it) => !it.payload.length).length;
  log.debug(
    `${ctx.where}: ${items.length} queued message(s)${empty ? ` (${empty} empty)` : ""} put back on unix socket ${f.usk!.ino}`
  );
}

/** SO_SNDBUF / SO_RCVBUF as dumped (the kernel doubles what is set: half of what getsockopt said) */
function setBufs(ctx: RestoreCtx, fd: number, u: { opts?: { soSndbuf?: number; soRcvbuf?: number } }) {
  for (const [opt, v] of [
    [SO.SNDBUFFORCE, u.opts?.soSndbuf ?? 0],
    [SO.RCVBUFFORCE, u.opts?.soRcvbuf ?? 0],
  ]) {
    if (!v) continue;
    const r = ctx.inj.call(
      NR.setsockopt,
      fd,
      SOL.SOCKET,
      opt,
      ctx.scratch(0n, new Uint8Array(new Int32Array([Math.ceil(v / 2)]).buffer)),
      4
    );
    if (r < 0n)
      throw new CriuError(
        "restore",
        `${ctx.where}: setting the buffer size of a unix socket to ${v} failed: ${errnoText(-r)}`
      );
  }
}

function finish(ctx: RestoreCtx, f: S.file_entry, fd: number) {
  const u = f.usk!;
  restoreUnixSkOpts(ctx, fd, u.opts);
  if (u.shutdown) ctx.inj.call(NR.shutdown, fd, u.shutdown - 1);
  if (u.flags & O.NONBLOCK) ctx.inj.call(NR.fcntl, fd, F.SETFL, O.NONBLOCK);
}

const sameName = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((v, i) => v === b[i]);
/** a listening socket of the tree has this name */
function treeListens(ctx: RestoreCtx, name: Uint8Array): boolean {
  for (const s of treeSockets(ctx).values())
    if (s.usk!.state === TCP_LISTEN && sameName(s.usk!.name, name)) return true;
  return false;
}

/** A connected stream or seqpacket socket whose connection carries a name (an accepted
 *  connection: its end has the listener's name, the client sees it as its peer's; or a client
 *  bound to a name of its own), with its peer in the tree or closed. */
function namedConnection(u: S.unix_sk_entry, p: S.unix_sk_entry | undefined): boolean {
  if (u.type === 2 || u.state !== 1 /* TCP_ESTABLISHED */ || u.uflags & USK_EXTERN) return false;
  if (u.peer && (!p || p.peer !== u.ino || p.uflags & USK_EXTERN)) return false;
  return u.name.length > 0 || (!!p && p.name.length > 0);
}

/**
 * A named stream connection made as the kernel made it (a socketpair has no names, and the
 * accepted end cannot bind its listener's name, which the listener owns): a temporary listener
 * bound to the accepted end's name (a path inside a ghost root, so no file is made and the real
 * listener's is left alone; an abstract name before anything of the tree binds it, see
 * connectionsNamedFirst), the client bound to its own name if it had one and connected, the
 * accepted end taken with accept4, the temporary listener closed. getsockname() on the accepted
 * end and getpeername() on the client give the listener's name again. Both ends are held for the
 * processes that have them; a closed peer's end is closed after its data is sent.
 */
function restoreNamedConnection(ctx: RestoreCtx, f: S.file_entry) {
  const inj = ctx.inj,
    socks = treeSockets(ctx);
  const pf = f.usk!.peer ? socks.get(f.usk!.peer) : undefined;
  // the accepted end: the one with its tree listener's name, else the named one (the dump
  // refused the pairs where this is ambiguous for an abstract name)
  const peerAccepted =
    !!pf &&
    pf.usk!.name.length > 0 &&
    (!f.usk!.name.length || (treeListens(ctx, pf.usk!.name) && !treeListens(ctx, f.usk!.name)));
  const [xf, yf] = peerAccepted ? [pf!, f] : [f, pf];
  const x = xf.usk!,
    y = yf?.usk;
  const sock = () => {
    const r = Number(inj.call(NR.socket, AF.UNIX, x.type | O.CLOEXEC, 0));
    if (r < 0) throw new CriuError("restore", `${ctx.where}: socket(AF_UNIX) failed: ${errnoText(-r)}`);
    return ctx.high(r, ctx.where);
  };
  const queued = (e: S.file_entry) =>
    (cachedPayloadsBy(ctx, "sk-queues.img", "SK_QUEUES", (m) => m.idFor).get(e.id) ?? []).reduce(
      (n, p) => n + p.payload.length,
      0
    );
  const lfd = sock(),
    yfd = sock();
  let xfd: number;
  try {
    // a stream's queue is bounded by its sender's SO_SNDBUF: the client's set before its data goes
    setBufs(ctx, yfd, y ? y : { opts: { soSndbuf: queued(xf) * 2 + 65536, soRcvbuf: 0 } });
    const steps = () => {
      bindHere(ctx, x, lfd);
      if (y?.name.length) bindHere(ctx, y, yfd);
      const l = inj.call(NR.listen, lfd, 1);
      if (l < 0n)
        throw new CriuError("restore", `${ctx.where}: listen on a temporary listener failed: ${errnoText(-l)}`);
      bindHere(ctx, x, yfd, NR.connect);
    };
    const paths = [x, ...(y ? [y] : [])].filter((e) => e.name.length > 0 && e.name[0] !== 0);
    if (paths.length) withGhostRoot(ctx, paths, steps);
    else steps();
    const a = Number(inj.call(NR.accept4, lfd, 0, 0, O.CLOEXEC));
    if (a < 0) throw new CriuError("restore", `${ctx.where}: accept4 on a temporary listener failed: ${errnoText(-a)}`);
    xfd = ctx.high(a, ctx.where);
  } finally {
    inj.call(NR.close, lfd);
  }
  setBufs(ctx, xfd, x);
  ctx.hold(`usk:${x.ino}`, xfd);
  refill(ctx, xf, yfd);
  if (y) {
    ctx.hold(`usk:${y.ino}`, yfd);
    refill(ctx, yf!, xfd);
    finish(ctx, yf!, yfd);
  } else inj.call(NR.close, yfd);
  finish(ctx, xf, xfd);
  log.debug(
    `${ctx.where}: unix socket ${x.ino} ('${nameText(x.name)}') accepted from a temporary listener${y ? `, its peer ${y.ino}${y.name.length ? ` bound to '${nameText(y.name)}'` : ""} connected` : ", its closed peer's data sent"}`
  );
}

/** Before a socket of the tree binds abstract name u.name: the named connections carrying that
 *  name that are not made yet are made now (their temporary listener needs the name free). */
function connectionsNamedFirst(ctx: RestoreCtx, u: S.unix_sk_entry) {
  const socks = treeSockets(ctx);
  for (const s of socks.values()) {
    const e = s.usk!;
    if (e.ino === u.ino || ctx.tree.held.has(`usk:${e.ino}`)) continue;
    const p = e.peer ? socks.get(e.peer)?.usk : undefined;
    if (!namedConnection(e, p)) continue;
    if (sameName(e.name, u.name) || (p && sameName(p.name, u.name))) restoreNamedConnection(ctx, s);
  }
}
