// Network probes: TCP repair mode, sock_diag, nf_tables over netlink, tun.
import { syscall, addr, cstr } from "../sys/syscall";
import { TCP, setsockoptInt, getsockoptInt } from "../sys/inetsock";
import { NR } from "../sys/nr";
import { errnoText } from "../sys/errno";
import { AF, SOCK, SOL, socketFd, socketPair, getsockoptBuf } from "../sys/sock";
import { NETLINK, NLM_F, NLMSG, nlmsg, nlTalk, nlError } from "../sys/netlink";
import { sockDiagGet, unixDiagReq, SOCK_DIAG_BY_FAMILY } from "../sys/sockdiag";
import { Missing, need, withFds, type Probe } from "./probe";

function sock(fds: number[], domain: number, type: number, proto = 0): number {
  try {
    const fd = socketFd(domain, type, proto);
    fds.push(fd);
    return fd;
  } catch (e) {
    throw new Missing((e as Error).message);
  }
}

/** TCP_REPAIR on a TCP socket, and the options a dump reads in repair mode. */
function tcpRepair(): string {
  return withFds((fds) => {
    const fd = sock(fds, AF.INET, SOCK.STREAM);
    const r = setsockoptInt(fd, SOL.TCP, TCP.REPAIR, 1);
    need(r === 0, r === -1 ? "TCP_REPAIR needs CAP_NET_ADMIN" : `setsockopt(TCP_REPAIR): ${errnoText(-r)}`);
    need(getsockoptInt(fd, SOL.TCP, TCP.REPAIR) === 1, "TCP_REPAIR does not read back as 1");
    getsockoptInt(fd, SOL.TCP, TCP.TIMESTAMP);
    need(setsockoptInt(fd, SOL.TCP, TCP.REPAIR_QUEUE, 2 /* send queue */) === 0, "TCP_REPAIR_QUEUE refused");
    need(setsockoptInt(fd, SOL.TCP, TCP.QUEUE_SEQ, 12345) === 0, "TCP_QUEUE_SEQ refused in repair mode");
    need(getsockoptInt(fd, SOL.TCP, TCP.QUEUE_SEQ) === 12345, "TCP_QUEUE_SEQ does not read back");
    const win = new Uint8Array(20);
    const w = getsockoptBuf(fd, SOL.TCP, TCP.REPAIR_WINDOW, win);
    need(w === 20, `TCP_REPAIR_WINDOW: ${w < 0 ? errnoText(-w) : `${w} bytes`}`);
    return "repair mode, queues, sequence, window";
  });
}

/** sock_diag: a unix socket we just made is listed by a UNIX_DIAG dump with its inode. */
function sockDiag(): string {
  return withFds((fds) => {
    let pair: [number, number];
    try {
      pair = socketPair(AF.UNIX, SOCK.STREAM);
    } catch (e) {
      throw new Missing((e as Error).message);
    }
    fds.push(...pair);
    const st = new BigUint64Array(18); // struct stat
    syscall(NR.fstat, pair[0], addr(st));
    const ino = Number(st[1]);
    let m;
    try {
      m = sockDiagGet(unixDiagReq(ino, 0));
    } catch (e) {
      throw new Missing((e as Error).message);
    }
    need(m !== undefined, "no answer from sock_diag");
    if (m.type === NLMSG.ERROR) {
      const e = -nlError(m);
      throw new Missing(e === 2 ? "no unix_diag in the kernel (ENOENT)" : `sock_diag error ${errnoText(e)}`);
    }
    need(m.type === SOCK_DIAG_BY_FAMILY && m.payload.length >= 16, `unexpected sock_diag answer type ${m.type}`);
    const got = new DataView(m.payload.buffer, m.payload.byteOffset).getUint32(4, true);
    need(got === ino, `sock_diag answered for inode ${got}, asked for ${ino}`);
    return `unix socket ${ino} found`;
  });
}

/** nf_tables answers NFT_MSG_GETGEN over NETLINK_NETFILTER. */
function nftables(): string {
  return withFds((fds) => {
    const nl = sock(fds, AF.NETLINK, SOCK.RAW, NETLINK.NETFILTER);
    const nfgen = new Uint8Array(4); // struct nfgenmsg: family AF_UNSPEC, version 0, res_id 0
    const type = (10 /* NFNL_SUBSYS_NFTABLES */ << 8) | 16 /* NFT_MSG_GETGEN */;
    const msgs = nlTalk(nl, nlmsg(type, NLM_F.REQUEST, 1, nfgen), false);
    need(msgs.length > 0, "no answer from nfnetlink");
    const m = msgs[0];
    if (m.type === NLMSG.ERROR) throw new Missing(`nf_tables: ${errnoText(-nlError(m))}`);
    need(m.type === ((10 << 8) | 15) /* NFT_MSG_NEWGEN */, `unexpected nf_tables answer type ${m.type}`);
    // attribute NFTA_GEN_ID (1), u32 big endian, after the 4-byte nfgenmsg
    const dv = new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.length);
    let gen = -1;
    for (let off = 4; off + 4 <= m.payload.length; ) {
      const len = dv.getUint16(off, true),
        at = dv.getUint16(off + 2, true) & 0x3fff;
      if (len < 4) break;
      if (at === 1 && len >= 8) gen = dv.getUint32(off + 4, false);
      off += (len + 3) & ~3;
    }
    need(gen >= 0, "NFT_MSG_NEWGEN without a generation id");
    return `ruleset generation ${gen}`;
  });
}

/** /dev/net/tun opens and reports IFF_TUN|IFF_TAP in TUNGETFEATURES. */
function tun(): string {
  return withFds((fds) => {
    const p = cstr("/dev/net/tun");
    const fd = syscall(NR.openat, -100, addr(p), 2 | 0o2000000);
    need(fd >= 0, `open /dev/net/tun: ${errnoText(-fd)}`);
    fds.push(fd);
    const f = new Uint32Array(1);
    const r = syscall(NR.ioctl, fd, 0x800454cf /* TUNGETFEATURES */, addr(f));
    need(r === 0, `TUNGETFEATURES: ${errnoText(-r)}`);
    need((f[0] & 3) === 3, `tun features ${f[0].toString(16)} lack IFF_TUN/IFF_TAP`);
    return `features 0x${f[0].toString(16)}`;
  });
}

export const NET_PROBES: Probe[] = [
  { name: "tcp_repair", basic: false, desc: "established TCP connections (--tcp-established)", run: tcpRepair },
  { name: "sock_diag", basic: false, desc: "socket details (unix_diag)", run: sockDiag },
  { name: "nftables", basic: false, desc: "nf_tables (network locking)", run: nftables },
  { name: "tun", basic: false, desc: "tun/tap devices", run: tun },
];
