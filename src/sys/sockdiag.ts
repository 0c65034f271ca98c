// sock_diag (NETLINK_SOCK_DIAG), the one client: SOCK_DIAG_BY_FAMILY requests for unix and inet
// sockets, either a dump of every socket of a family in the caller's network namespace or one
// socket looked up by inode. Used by the unix and inet fd kinds and by `check`.
import { NetlinkSocket, NETLINK, NLM_F, nlmsg, nlTalk, type NlReply } from "./netlink";
import { AF } from "./sock";

export const SOCK_DIAG_BY_FAMILY = 20;
/** UDIAG_SHOW_* bits of unix_diag_req.udiag_show */
export const UDIAG_SHOW = { NAME: 0x1, VFS: 0x2, PEER: 0x4, ICONS: 0x8, RQLEN: 0x10, MEMINFO: 0x20 } as const;
/** UNIX_DIAG_* attribute types of an answer */
export const UNIX_DIAG = { NAME: 0, VFS: 1, PEER: 2, ICONS: 3, RQLEN: 4, MEMINFO: 5, SHUTDOWN: 6 } as const;
/** INET_DIAG_* attribute types of an answer */
export const INET_DIAG = { SHUTDOWN: 8 } as const;

/** struct unix_diag_req (24 bytes): all states, one inode (0 in a dump) and any cookie. */
export function unixDiagReq(ino: number, show: number): Uint8Array {
  const req = new Uint8Array(24);
  const dv = new DataView(req.buffer);
  req[0] = AF.UNIX;
  dv.setUint32(4, 0xffffffff, true); // states
  dv.setUint32(8, ino, true);
  dv.setUint32(12, show, true);
  dv.setUint32(16, 0xffffffff, true);
  dv.setUint32(20, 0xffffffff, true);
  return req;
}

/** struct inet_diag_req_v2 (56 bytes): a family and protocol, a mask of TCP states, and
 *  optionally the local port (network order in inet_diag_sockid). */
export function inetDiagReq(family: number, proto: number, states: number, sport = 0): Uint8Array {
  const req = new Uint8Array(56);
  const dv = new DataView(req.buffer);
  req[0] = family;
  req[1] = proto;
  dv.setUint32(4, states >>> 0, true);
  dv.setUint16(8, sport, false);
  return req;
}

/** Every answer to a dump request (NLM_F_DUMP) in this network namespace; throws SysError. */
export function sockDiagDump(req: Uint8Array): NlReply[] {
  const nl = new NetlinkSocket(NETLINK.SOCK_DIAG);
  try {
    return nl.dump(SOCK_DIAG_BY_FAMILY, req);
  } finally {
    nl.close();
  }
}

/** The kernel's one answer to a lookup (one socket by inode): a SOCK_DIAG_BY_FAMILY message, or
 *  NLMSG_ERROR with -errno (nlError), or undefined when nothing came; throws SysError. */
export function sockDiagGet(req: Uint8Array): NlReply | undefined {
  const nl = new NetlinkSocket(NETLINK.SOCK_DIAG);
  try {
    return nlTalk(nl.fd, nlmsg(SOCK_DIAG_BY_FAMILY, NLM_F.REQUEST, nl.nextSeq(), req), false)[0];
  } finally {
    nl.close();
  }
}

/** The attributes (type -> payload) after the fixed part of an answer, from offset `at`. */
export function diagAttrs(p: Uint8Array, at: number): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  const dv = new DataView(p.buffer, p.byteOffset, p.length);
  for (let off = at; off + 4 <= p.length; ) {
    const alen = dv.getUint16(off, true),
      atype = dv.getUint16(off + 2, true);
    if (alen < 4) break;
    if (!out.has(atype)) out.set(atype, p.subarray(off + 4, Math.min(off + alen, p.length)));
    off += (alen + 3) & ~3;
  }
  return out;
}
