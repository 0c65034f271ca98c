// The network lock: while a TCP connection has no live socket (between dump and restore), its
// packets are dropped in both directions so the peer never sees a RST or FIN from us, and we
// never answer its retransmissions with a RST. Done with nf_tables over netlink, like CRIU's
// nftables lock but without the nft binary: one table "criu-bun-<pid>" (family inet) in the
// current network namespace, chains on the input and output hooks, one drop rule per
// direction per locked endpoint. Unlocking deletes the table.
import { Attrs, NetlinkSocket, NETLINK, NLM_F, nlmsg, concat } from "../sys/netlink";
import { isV4Mapped } from "../sys/inetsock";
import { CriuError, log } from "../log";
import { errnoText } from "../sys/errno";

/** One local endpoint to isolate; remote unset = every peer (a listening socket). */
export interface LockedEndpoint {
  proto: number; // 6 = TCP, 17 = UDP
  local: Uint8Array; // 4 or 16 bytes; all zero = any local address
  lport: number;
  remote?: Uint8Array;
  rport?: number;
}

const NFNL_SUBSYS_NFTABLES = 10;
const MSG = { NEWTABLE: 0, DELTABLE: 2, NEWCHAIN: 3, NEWRULE: 6 };
const NFPROTO = { INET: 1, IPV4: 2, IPV6: 10 };
const HOOK = { LOCAL_IN: 1, LOCAL_OUT: 3 };
const BATCH_BEGIN = 0x10,
  BATCH_END = 0x11;

/**
 * The lock a dump leaves for its restore (process pid was killed with its connections): kept
 * until a restore of pid succeeds, as criu does.
 */
export function lockTableName(pid: number) {
  return `criu-bun-${pid}`;
}
/**
 * The lock a dump of the tree rooted at pid leaves: "CRIU-" + the dump's run id, the table name
 * CRIU 4 gives its nftables lock (table inet CRIU-<dump_criu_run_id>), with the run id written in
 * inventory.img (dump_criu_run_id, network_lock_method nftables), so that CRIU 4.2 restoring
 * criu-bun's images lifts criu-bun's lock, and criu-bun restoring CRIU's lifts CRIU's.
 */
export function dumpRunId(rootPid: number) {
  return `criu-bun-${rootPid}`;
}
/** CRIU formats "inet CRIU-<run id>" into 32 bytes: the table name is cut at 26 characters */
export function runLockTableName(runId: string) {
  return `CRIU-${runId}`.slice(0, 26);
}
/** inventory network_lock_method values (CRIU's enum, not the RPC one) */
export const NETWORK_LOCK = { IPTABLES: 0, NFTABLES: 1, SKIP: 2 } as const;
/**
 * A lock held while this criu-bun works (a dump in progress, a restore): the table is created
 * with NFT_TABLE_F_OWNER on a netlink socket kept open, so the kernel deletes it when the socket
 * closes, which includes criu-bun being killed at any moment. Named after both PIDs.
 */
export function heldTableName(pid: number) {
  return `criu-bun-${pid}-by-${process.pid}`;
}
const NFT_TABLE_F_OWNER = 2;

/** A lock table held by this criu-bun (netLock with it): the netlink socket whose closing makes
 *  the kernel delete the table, kept by the dump or restore that made it. */
export class HeldLock {
  nl?: NetlinkSocket;
  constructor(readonly table: string) {}
  /** End the lock: closing its socket makes the kernel delete the table. */
  release() {
    const nl = this.nl;
    if (!nl) return;
    this.nl = undefined;
    nl.close();
    log.info(`Network lock ${this.table} released`);
  }
}

function nfgen(family: number, resId = 0): Uint8Array {
  const b = new Uint8Array(4);
  b[0] = family;
  new DataView(b.buffer).setUint16(2, resId, false);
  return b;
}
const msgType = (m: number) => (NFNL_SUBSYS_NFTABLES << 8) | m;

function expr(name: string, data: Attrs): Attrs {
  return new Attrs().str(1 /* NFTA_EXPR_NAME */, name).nest(2 /* NFTA_EXPR_DATA */, data);
}
function meta(key: number) {
  return expr("meta", new Attrs().be32(1 /* DREG */, 1).be32(2 /* KEY */, key));
}
function payload(base: number, offset: number, len: number) {
  return expr("payload", new Attrs().be32(1, 1).be32(2, base).be32(3, offset).be32(4, len));
}
function cmpEq(value: Uint8Array) {
  return expr(
    "cmp",
    new Attrs()
      .be32(1 /* SREG */, 1)
      .be32(2 /* OP */, 0 /* EQ */)
      .nest(3 /* DATA */, new Attrs().bytes(1 /* VALUE */, value))
  );
}
function drop() {
  const verdict = new Attrs().be32(1 /* NFTA_VERDICT_CODE */, 0 /* NF_DROP */);
  return expr(
    "immediate",
    new Attrs()
      .be32(1 /* DREG */, 0 /* NFT_REG_VERDICT */)
      .nest(2, new Attrs().nest(2 /* NFTA_DATA_VERDICT */, verdict))
  );
}
const port = (p: number) => new Uint8Array([p >> 8, p & 255]);

/** The address as it appears in packets: v4-mapped IPv6 endpoints talk IPv4. */
function wireAddr(a: Uint8Array): Uint8Array {
  return isV4Mapped(a) ? a.slice(12) : a;
}
const isAny = (a: Uint8Array) => a.every((x) => x === 0);

/** Expressions of one rule: packets from src(addr, port) to dst(addr, port). */
function ruleExprs(
  v6: boolean,
  proto: number,
  src: Uint8Array | null,
  sport: number | null,
  dst: Uint8Array | null,
  dport: number | null
): Attrs[] {
  const e: Attrs[] = [
    meta(15 /* NFPROTO */),
    cmpEq(new Uint8Array([v6 ? NFPROTO.IPV6 : NFPROTO.IPV4])),
    meta(16 /* L4PROTO */),
    cmpEq(new Uint8Array([proto])),
  ];
  if (src) e.push(payload(1, v6 ? 8 : 12, v6 ? 16 : 4), cmpEq(src));
  if (dst) e.push(payload(1, v6 ? 24 : 16, v6 ? 16 : 4), cmpEq(dst));
  if (sport !== null) e.push(payload(2, 0, 2), cmpEq(port(sport)));
  if (dport !== null) e.push(payload(2, 2, 2), cmpEq(port(dport)));
  e.push(drop());
  return e;
}

class Batch {
  parts: Uint8Array[] = [];
  acks: number[] = [];
  what = new Map<number, string>();
  constructor(private nl: NetlinkSocket) {
    this.parts.push(nlmsg(BATCH_BEGIN, NLM_F.REQUEST, nl.nextSeq(), nfgen(0, NFNL_SUBSYS_NFTABLES)));
  }
  add(type: number, flags: number, attrs: Attrs, what: string) {
    const seq = this.nl.nextSeq();
    this.parts.push(
      nlmsg(msgType(type), NLM_F.REQUEST | NLM_F.ACK | flags, seq, concat([nfgen(NFPROTO.INET), attrs.concat()]))
    );
    this.acks.push(seq);
    this.what.set(seq, what);
  }
  /** the whole batch, ended */
  bytes(): Uint8Array {
    this.parts.push(nlmsg(BATCH_END, NLM_F.REQUEST, this.nl.nextSeq(), nfgen(0, NFNL_SUBSYS_NFTABLES)));
    return concat(this.parts);
  }
  run(): { err: number; what: string } {
    const r = this.nl.exchange(this.bytes(), this.acks);
    return { err: r.err, what: this.what.get(r.seq) ?? "" };
  }
}

function describe(ep: LockedEndpoint) {
  return `${ep.proto === 6 ? "tcp" : "udp"} port ${ep.lport}${ep.rport ? ` <-> ${ep.rport}` : " (listening)"}`;
}

/** --network-lock skip (criu's NETWORK_LOCK_SKIP, inventory network_lock_method 2): the network is
 * someone else's to lock; the dump or restore then locks, releases and unlocks nothing (inet.ts). */
export function logNetworkLockSkipped() {
  log.info("Network locking skipped (--network-lock skip): TCP peers are not isolated by criu-bun");
}

/**
 * Add drop rules for these endpoints to the lock table (created on first use). A HeldLock: a table
 * of this criu-bun's (heldTableName), gone with it; its release() ends it.
 */
export function netLock(lock: string | HeldLock, eps: LockedEndpoint[]) {
  if (!eps.length) return;
  const hold = typeof lock === "string" ? undefined : lock,
    table = typeof lock === "string" ? lock : lock.table;
  const nl = hold?.nl ?? new NetlinkSocket(NETLINK.NETFILTER);
  try {
    const b = new Batch(nl);
    b.add(
      MSG.NEWTABLE,
      NLM_F.CREATE,
      new Attrs().str(1, table).be32(2, hold ? NFT_TABLE_F_OWNER : 0),
      `create table ${table}`
    );
    for (const [name, hook] of [
      ["input", HOOK.LOCAL_IN],
      ["output", HOOK.LOCAL_OUT],
    ] as const) {
      b.add(
        MSG.NEWCHAIN,
        NLM_F.CREATE,
        new Attrs()
          .str(1, table)
          .str(3, name)
          .nest(4, new Attrs().be32(1, hook).be32(2, -300 >>> 0))
          .be32(5, 1 /* NF_ACCEPT */)
          .str(7, "filter"),
        `create chain ${name}`
      );
    }
    for (const ep of eps) {
      const local = wireAddr(ep.local);
      const v6 = local.length === 16;
      const l = isAny(local) ? null : local;
      const r = ep.remote ? wireAddr(ep.remote) : null;
      const rp = ep.rport ?? null;
      const inE = ruleExprs(v6, ep.proto, r, rp, l, ep.lport);
      const outE = ruleExprs(v6, ep.proto, l, ep.lport, r, rp);
      for (const [chain, ex] of [
        ["input", inE],
        ["output", outE],
      ] as const) {
        const list = new Attrs();
        for (const x of ex) list.nest(1 /* NFTA_LIST_ELEM */, x);
        b.add(
          MSG.NEWRULE,
          NLM_F.CREATE | NLM_F.APPEND,
          new Attrs().str(1, table).str(2, chain).nest(4, list),
          `${chain} rule for ${describe(ep)}`
        );
      }
    }
    const res = b.run();
    if (res.err < 0)
      throw new CriuError(
        "netlock",
        `cannot lock the network (${res.what}: ${errnoText(-res.err)}); nf_tables is needed, and CAP_NET_ADMIN`
      );
    log.info(
      `Network locked for ${eps.map(describe).join(", ")} (nftables table inet ${table}${hold ? ", held by this criu-bun" : ""})`
    );
    if (hold) hold.nl = nl;
  } finally {
    if (nl !== hold?.nl) nl.close();
  }
}

/**
 * The removal of a lock table, made ahead on a netlink socket of the current network namespace: for a
 * sentinel to send if criu-bun dies (sys/sentinel.ts; sendto on the socket to the kernel, nothing
 * reads the answer), or for criu-bun to send (send) once the namespace's processes run (entering
 * it then could fail: a process that exits at once takes its /proc/PID/ns/net along).
 */
export function unlockRequest(table: string): UnlockRequest {
  const nl = new NetlinkSocket(NETLINK.NETFILTER);
  const b = new Batch(nl);
  b.add(MSG.DELTABLE, 0, new Attrs().str(1, table), `delete table ${table}`);
  const bytes = b.bytes();
  return {
    fd: nl.fd,
    bytes,
    send() {
      const r = nl.exchange(bytes, b.acks);
      if (r.err === -2) {
        log.debug(`no network lock table inet ${table} here`);
        return false;
      }
      if (r.err < 0)
        throw new CriuError("netlock", `cannot unlock the network (delete table ${table}: ${errnoText(-r.err)})`);
      log.info(`Network unlocked (table inet ${table} deleted)`);
      return true;
    },
    close: () => nl.close(),
  };
}
interface UnlockRequest {
  fd: number;
  bytes: Uint8Array;
  /** the table removed through this socket (its network namespace, wherever the caller is now);
   *  a missing table is fine: false then */
  send(): boolean;
  close(): void;
}

/** Names of the inet nftables tables of criu-bun's locks in the current network namespace. */
export function listLockTables(): string[] {
  const nl = new NetlinkSocket(NETLINK.NETFILTER);
  try {
    const out: string[] = [];
    for (const m of nl.dump(msgType(1 /* NFT_MSG_GETTABLE */), nfgen(NFPROTO.INET))) {
      const p = m.payload,
        dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
      for (let o = 4; o + 4 <= p.length; ) {
        const len = dv.getUint16(o, true),
          type = dv.getUint16(o + 2, true) & 0x3fff;
        if (len < 4) break;
        if (type === 1 /* NFTA_TABLE_NAME */) {
          const name = new TextDecoder().decode(p.subarray(o + 4, o + len)).replace(/\0.*$/s, "");
          if (name.startsWith("criu-bun-") || name.startsWith("CRIU-criu-bun-")) out.push(name);
        }
        o += (len + 3) & ~3;
      }
    }
    return out;
  } finally {
    nl.close();
  }
}
