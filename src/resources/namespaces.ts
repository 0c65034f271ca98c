// Namespaces of the dumped tree, both directions: at dump which namespaces the tree has of its own
// (NsView: PIDs as the tree sees them, what criu-bun can recreate, what it refuses), their ids as
// CRIU numbers them, the hostname and clocks the root sees (utsns-, timens- images) and an
// external network namespace's key (netns-); at restore which to make again (loadNamespaces) and
// the root's new namespaces made through its own injected syscalls (mount copy, IPC, network,
// UTS) or, for the time namespace, through the puppet before the root is cloned. Mounts
// (mounts.ts), the IPC namespace's contents (ipcns.ts) and cgroups (cgroup.ts) have modules of their own.
import { readFileSync, readlinkSync, writeFileSync } from "../sys/fs";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { CLONE } from "../sys/flags";
import { AF, SOCK } from "../sys/sock";
import { sysFailed } from "../sys/errno";
import { netdevs } from "../sys/netns";
import type { Injector, OutCall } from "../ptrace/inject";
import { readImage, imageExists, writeImage, plainEntry } from "../images/image";
import * as S from "../images/schemas";
import { CriuError, log } from "../log";
import { refuse } from "./unsupported";
import { checkMountNs, checkRoot, checkNsRoot, isPrivateCopy, MS } from "./mounts";

const CLOCK_MONOTONIC = 1,
  CLOCK_BOOTTIME = 7;

/** the id of the tree's own IPC namespace (ids, ipcns-var-14.img) */
export const IPC_NS_ID = 14;
/** The dumper's own ids (inventory root_ids), numbered as CRIU numbers its own. */
export const ROOT_IDS = {
  vmId: 1,
  filesId: 1,
  fsId: 1,
  sighandId: 1,
  pidNsId: 1,
  netNsId: 2,
  ipcNsId: 3,
  utsNsId: 4,
  timeNsId: 5,
  mntNsId: 6,
  userNsId: 7,
  cgroupNsId: 8,
};

// ---------- dump ----------

/**
 * PIDs as the dumped tree sees them. A tree whose root is the init of its own PID namespace
 * (unshare --pid --fork) is dumped with the PIDs of that namespace; images never hold our PIDs.
 */
export class NsView {
  ownPidNs: boolean;
  ownMntNs: boolean;
  /** its own mount namespace is not a copy of ours: saved in mountpoints-<id>.img */
  container = false;
  ownUtsNs: boolean;
  ownTimeNs: boolean;
  ownNetNs: boolean;
  ownIpcNs: boolean;
  private rootNs = new Map<string, string>();
  private rootPidNs: string;
  private cache = new Map<string, number>();
  /** the key of the tree's network namespace when it is external (--external net[INODE]:KEY) */
  extNetKey?: string;
  constructor(root: number, emptyNet = false, extNet?: { ino: number; key: string }) {
    this.rootPidNs = readlinkSync(`/proc/${root}/ns/pid`);
    this.ownPidNs = this.rootPidNs !== readlinkSync("/proc/self/ns/pid");
    this.ownMntNs = readlinkSync(`/proc/${root}/ns/mnt`) !== readlinkSync("/proc/self/ns/mnt");
    this.ownUtsNs = readlinkSync(`/proc/${root}/ns/uts`) !== readlinkSync("/proc/self/ns/uts");
    this.ownTimeNs = readlinkSync(`/proc/${root}/ns/time`) !== readlinkSync("/proc/self/ns/time");
    for (const k of ["net", "ipc", "uts", "mnt", "user", "cgroup", "time"])
      this.rootNs.set(k, readlinkSync(`/proc/${root}/ns/${k}`));
    // namespaces criu-bun cannot recreate: the tree must share them with criu-bun
    // its own network namespace with nothing but loopback comes back as a new one with lo up
    this.ownNetNs = this.rootNs.get("net") !== readlinkSync("/proc/self/ns/net");
    const netIno = Number(/^net:\[(\d+)\]$/.exec(this.rootNs.get("net")!)?.[1]);
    if (extNet && (!this.ownNetNs || extNet.ino !== netIno)) {
      throw new CriuError(
        "dump",
        `--external net[${extNet.ino}]:${extNet.key}: process ${root} is in network namespace ${this.rootNs.get("net")}${this.ownNetNs ? "" : ", criu-bun's own"}, not that one`
      );
    }
    if (extNet) {
      // the caller's namespace: its interfaces, addresses and routes stay as they are, the tree's
      // sockets are saved (TCP with --tcp-established) and restore joins it again by its key
      this.extNetKey = extNet.key;
      log.info(
        `process ${root}: its network namespace ${this.rootNs.get("net")} is external (key ${extNet.key}): not saved`
      );
    } else if (this.ownNetNs && emptyNet) {
      // empty_ns net: the caller (runc, Podman) builds the namespace's interfaces itself on restore
      log.info(`process ${root}: its network namespace's contents are left to the caller (empty_ns)`);
    } else if (this.ownNetNs) {
      const devs = netdevs(root).filter((d) => d !== "lo");
      if (devs.length) {
        throw new CriuError(
          "dump",
          `process ${root} is in its own network namespace with interfaces (${devs.join(", ")}), which criu-bun does not save yet; run criu-bun inside it (nsenter --net=/proc/${root}/ns/net)`
        );
      }
    }
    // its own IPC namespace: SysV segments are read inside it, and it comes back as a new one
    this.ownIpcNs = this.rootNs.get("ipc") !== readlinkSync("/proc/self/ns/ipc");
    for (const [k, what, how] of [["user", "user", "--user"]]) {
      if (this.rootNs.get(k) !== readlinkSync(`/proc/self/ns/${k}`)) {
        throw new CriuError(
          "dump",
          `process ${root} is in its own ${what} namespace, which criu-bun does not save yet; run criu-bun inside it (nsenter ${how}=/proc/${root}/ns/${k})`
        );
      }
    }
    // its own cgroup namespace: restore does not make one (it would come back in criu-bun's)
    if (this.rootNs.get("cgroup") !== readlinkSync("/proc/self/ns/cgroup"))
      refuse("dump", `process ${root}`, "cgroupns", this.rootNs.get("cgroup"));
    // its own mount namespace: only a private copy of ours (plus a fresh /proc) comes back exactly
    // its own mount namespace: a private copy of ours (plus a fresh /proc) comes back as before;
    // any other (a container's) is saved mount by mount (dumpMountNs)
    this.container = this.ownMntNs && !isPrivateCopy(root, this.ownPidNs);
    if (!this.container) {
      checkRoot(root, this.ownMntNs);
      if (this.ownMntNs) checkMountNs(root, this.ownPidNs);
    }
    if (this.ownPidNs && this.v(root) !== 1) {
      throw new CriuError(
        "dump",
        `process ${root} lives in a PID namespace it is not the init of; dump that namespace's init instead`
      );
    }
  }
  private last(pid: number, key: string, tid?: number): number {
    return lastField(readFileSync(tid ? `/proc/${pid}/task/${tid}/status` : `/proc/${pid}/status`, "latin1"), pid, key);
  }
  /** the PID (or TID) in the tree's own namespace */
  v(pid: number, tid?: number): number {
    const k = `${pid}/${tid ?? ""}`;
    let r = this.cache.get(k);
    if (r === undefined) this.cache.set(k, (r = this.last(pid, "NSpid", tid)));
    return r;
  }
  /** its process group and session in the tree's own namespace (one read of its status) */
  groups(pid: number) {
    const text = readFileSync(`/proc/${pid}/status`, "latin1");
    return { pgid: lastField(text, pid, "NSpgid"), sid: lastField(text, pid, "NSsid") };
  }
  /** every process of the tree must be in the root's PID namespace (nested ones are not supported) */
  check(pid: number) {
    for (const [k, v] of this.rootNs) {
      const mine = readlinkSync(`/proc/${pid}/ns/${k}`);
      if (mine !== v)
        throw new CriuError(
          "dump",
          `process ${pid} is in a ${k} namespace of its own (${mine}, the tree's root is in ${v}); nested ${k} namespaces are not supported yet`
        );
    }
    if (this.container) checkNsRoot(pid);
    else checkRoot(pid, this.ownMntNs);
    if (readlinkSync(`/proc/${pid}/ns/pid`) !== this.rootPidNs) {
      throw new CriuError(
        "dump",
        `process ${pid} is in a nested PID namespace; nested PID namespaces are not supported yet`
      );
    }
    // a time namespace made for its children (unshare CLONE_NEWTIME, no child yet) is not kept
    if (readlinkSync(`/proc/${pid}/ns/time_for_children`) !== readlinkSync(`/proc/${pid}/ns/time`))
      refuse("dump", `process ${pid}`, "timens-children");
  }
}

/**
 * The namespace ids of a process of the tree: the tree's own namespaces numbered as CRIU numbers
 * them (9 and up), the ones it shares with the dumper the dumper's (ROOT_IDS).
 */
export function nsIds(ns: NsView) {
  return {
    pidNsId: ns.ownPidNs ? 9 : ROOT_IDS.pidNsId,
    netNsId: ns.ownNetNs ? 13 : ROOT_IDS.netNsId,
    ipcNsId: ns.ownIpcNs ? IPC_NS_ID : ROOT_IDS.ipcNsId,
    utsNsId: ns.ownUtsNs ? 11 : ROOT_IDS.utsNsId,
    mntNsId: ns.ownMntNs ? 10 : ROOT_IDS.mntNsId,
    userNsId: ROOT_IDS.userNsId,
    cgroupNsId: ROOT_IDS.cgroupNsId,
    timeNsId: ns.ownTimeNs ? 12 : ROOT_IDS.timeNsId,
  };
}

/** the batch calls of nsCalls(): the clocks as the process sees them (its time namespace may shift them) and uname */
const CLOCKS = [
  [CLOCK_MONOTONIC, "monotonic"],
  [CLOCK_BOOTTIME, "boottime"],
] as const;
export function nsCalls(): OutCall[] {
  return [
    ...CLOCKS.map(([id]) => ({ nr: NR.clock_gettime, args: (buf: bigint) => [id, buf], out: 16 })),
    // struct utsname: 6 fields of 65 bytes; nodename is the 2nd, domainname the 6th
    { nr: NR.uname, args: (buf: bigint) => [buf], out: 390 },
  ];
}

export type Clocks = Record<string, { tvSec: bigint; tvNsec: bigint }>;
/** the batch's answers to nsCalls(): CLOCK_MONOTONIC and CLOCK_BOOTTIME, hostname and domain name */
export function decodeNsCalls(
  pid: number,
  got: { r: bigint; b: Uint8Array }[]
): { clocks: Clocks; uts: { nodename: string; domainname: string } } {
  const clocks: Clocks = {};
  let uts = { nodename: "", domainname: "" };
  CLOCKS.forEach(([, key], k) => {
    const { r, b } = got[k];
    if (r !== 0n) return;
    const dv = new DataView(b.buffer, b.byteOffset, 16);
    clocks[key] = { tvSec: dv.getBigInt64(0, true), tvNsec: dv.getBigInt64(8, true) };
  });
  const u = got[CLOCKS.length];
  if (u.r === 0n) {
    const b = u.b;
    const str = (off: number) =>
      new TextDecoder().decode(
        b.subarray(off, b.indexOf(0, off) < 0 ? off + 65 : Math.min(b.indexOf(0, off), off + 65))
      );
    uts = { nodename: str(65), domainname: str(325) };
  }
  log.debug(
    `namespaces: process ${pid}: hostname '${uts.nodename}', domain '${uts.domainname}'${clocks.monotonic ? `, monotonic ${clocks.monotonic.tvSec}.${clocks.monotonic.tvNsec}` : ""}${clocks.boottime ? `, boottime ${clocks.boottime.tvSec}.${clocks.boottime.tvNsec}` : ""}`
  );
  return { clocks, uts };
}

/** Images of the tree's own namespaces that are not per process: an external network namespace's key. */
export function writeTreeNsImages(dir: string, ns: NsView) {
  // an external network namespace: only its key is saved (as criu: netns-<id>.img, ext_key)
  if (ns.extNetKey) {
    writeImage(dir, `netns-13.img`, "NETNS", [plainEntry(S.netns_entrySchema, { extKey: ns.extNetKey })]);
    log.debug(`namespaces: netns-13.img: external network namespace, key ${ns.extNetKey}`);
  }
}

/** The root process's hostname (its own UTS namespace) and clocks (timens-<id>.img, or CRIU's timens-0.img for the host's). */
export function writeRootNsImages(
  dir: string,
  pid: number,
  ns: NsView,
  ids: Record<string, number>,
  uts: { nodename: string; domainname: string },
  clocks: Clocks
) {
  if (ns.ownUtsNs) {
    writeImage(dir, `utsns-${ids.utsNsId}.img`, "UTSNS", [plainEntry(S.utsns_entrySchema, uts)]);
    log.debug(`namespaces: utsns-${ids.utsNsId}.img: the tree's own UTS namespace`);
  }
  if (ns.ownTimeNs) {
    if (!clocks.monotonic || !clocks.boottime)
      throw new CriuError("dump", `process ${pid}: cannot read its clocks for its time namespace`);
    writeImage(dir, `timens-${ids.timeNsId}.img`, "TIMENS", [
      plainEntry(S.timens_entrySchema, { monotonic: clocks.monotonic, boottime: clocks.boottime }),
    ]);
    log.debug(`namespaces: timens-${ids.timeNsId}.img: the tree's own time namespace`);
  } else if (clocks.monotonic && clocks.boottime) {
    // the host's time namespace: CRIU 4.2 writes its clocks all the same, as timens-0.img
    // (neither tool's restore uses it unless the tree had a time namespace of its own)
    writeImage(dir, "timens-0.img", "TIMENS", [
      plainEntry(S.timens_entrySchema, { monotonic: clocks.monotonic, boottime: clocks.boottime }),
    ]);
  }
}

// ---------- images ----------

export interface RestoreNamespaces {
  /** the root was the init of its own PID namespace: a new one */
  newPidNs?: boolean;
  /** the root had its own mount namespace */
  newMntNs?: boolean;
  /** the root had its own UTS namespace: hostname and domain name */
  uts?: S.utsns_entry;
  /** the root had its own time namespace: its clocks at dump time */
  timens?: S.timens_entry;
  /** the root had its own network namespace */
  newNetNs?: boolean;
  /** ... which was external: restore joins the one inherit_fd gives for this key */
  extNetKey?: string;
  /** the root had its own IPC namespace */
  newIpcNs?: boolean;
}

/** Which of the root's namespaces differ from the dumper's (inventory root_ids), with what they hold. */
export function loadNamespaces(
  dir: string,
  rootIds: S.task_kobj_ids_entry | undefined,
  dumper: S.task_kobj_ids_entry | undefined,
  rootPid: number
): RestoreNamespaces {
  const differs = (k: "pidNsId" | "mntNsId" | "utsNsId" | "timeNsId" | "netNsId" | "ipcNsId") =>
    !!(rootIds && dumper && rootIds[k] !== dumper[k]);
  const need = (file: string) => {
    if (!imageExists(dir, file)) throw new CriuError("restore", `${dir}/${file} is missing`);
  };
  const newPidNs = differs("pidNsId"),
    newMntNs = differs("mntNsId");
  let uts: S.utsns_entry | undefined;
  if (differs("utsNsId")) {
    need(`utsns-${rootIds!.utsNsId}.img`);
    uts = readImage(dir, `utsns-${rootIds!.utsNsId}.img`, "UTSNS")[0];
    if (!uts) throw new CriuError("restore", `${dir}/utsns-${rootIds!.utsNsId}.img has no entry`);
  }
  let timens: S.timens_entry | undefined;
  if (differs("timeNsId")) {
    need(`timens-${rootIds!.timeNsId}.img`);
    timens = readImage(dir, `timens-${rootIds!.timeNsId}.img`, "TIMENS")[0];
    if (!timens?.monotonic || !timens.boottime)
      throw new CriuError("restore", `${dir}/timens-${rootIds!.timeNsId}.img has no clocks`);
  }
  if (newPidNs && rootPid !== 1)
    throw new CriuError(
      "restore",
      `${dir}: the tree lives in its own PID namespace but its root is PID ${rootPid}, not that namespace's init`
    );
  const newNetNs = differs("netNsId");
  // an external network namespace (dump --external net[INODE]:KEY): its key, to be given as inherit_fd
  const netImg = rootIds ? `netns-${rootIds.netNsId}.img` : "";
  const extNetKey =
    newNetNs && imageExists(dir, netImg) ? readImage(dir, netImg, "NETNS")[0]?.extKey || undefined : undefined;
  const newIpcNs = differs("ipcNsId");
  const own = [
    newPidNs && "pid",
    newMntNs && "mnt",
    uts && "uts",
    timens && "time",
    newNetNs && (extNetKey ? `net (external, ${extNetKey})` : "net"),
    newIpcNs && "ipc",
  ].filter(Boolean);
  log.debug(`namespaces: the tree's own: ${own.length ? own.join(", ") : "none"}`);
  return { newPidNs, newMntNs, uts, timens, newNetNs, extNetKey, newIpcNs };
}

// ---------- restore ----------

/**
 * The tree had its own time namespace: the puppet makes a new one for its children whose offsets
 * put CLOCK_MONOTONIC and CLOCK_BOOTTIME back where the tree saw them at dump time.
 */
export function enterTimens(pinj: Injector, puppet: number, tn: S.timens_entry) {
  pinj.ok("unshare(CLONE_NEWTIME)", NR.unshare, CLONE.NEWTIME);
  const now = (clock: number) => {
    const ts = new BigInt64Array(2);
    const r = syscall(NR.clock_gettime, clock, addr(ts));
    if (r !== 0) throw new CriuError("restore", sysFailed("criu-bun", `clock_gettime(${clock})`, r));
    return ts[0] * 1_000_000_000n + ts[1];
  };
  const off = (t: S.timespec, clock: number) => {
    const d = BigInt.asIntN(64, t.tvSec) * 1_000_000_000n + BigInt.asIntN(64, t.tvNsec) - now(clock);
    let sec = d / 1_000_000_000n,
      nsec = d % 1_000_000_000n;
    if (nsec < 0n) {
      nsec += 1_000_000_000n;
      sec -= 1n;
    }
    return `${sec} ${nsec}`;
  };
  const text = `monotonic ${off(tn.monotonic!, CLOCK_MONOTONIC)}\nboottime ${off(tn.boottime!, CLOCK_BOOTTIME)}\n`;
  try {
    writeFileSync(`/proc/${puppet}/timens_offsets`, text);
  } catch (e) {
    throw new CriuError("restore", sysFailed(`puppet process ${puppet}`, "writing its timens_offsets", e));
  }
  log.debug(`namespaces: a new time namespace, offsets ${text.trim().replace(/\n/g, ", ")}`);
}

/**
 * The root's own namespaces, made in the root itself before anything else is restored: a private
 * copy of criu-bun's mounts (with a fresh /proc for a new PID namespace), IPC, network (joined
 * when external, left empty for empty_ns, else a new one with lo up), UTS with its names. A
 * container's mounts (a namespace that is not a copy) are built after this by mounts.ts.
 */
export function restoreRootNamespaces(
  root: {
    pid: number;
    inj: Injector;
    str: (s: string, slot?: number) => bigint;
    scratch: (off: bigint, data: Uint8Array) => bigint;
    joinExtNetNs: (key: string) => void;
  },
  ns: RestoreNamespaces & { emptyNetNs?: boolean; mounts?: unknown },
  newPidNs: boolean
) {
  const { inj, str } = root;
  if (ns.newMntNs && !ns.mounts) {
    // the tree had its own mount namespace, a private copy of ours (dump checked it, src/resources/mounts.ts),
    // with a /proc of its PID namespace if it has one (unshare --mount-proc)
    inj.ok("unshare(CLONE_NEWNS)", NR.unshare, CLONE.NEWNS);
    inj.ok("mount / private", NR.mount, 0, str("/"), 0, MS.REC | MS.PRIVATE, 0);
    if (newPidNs)
      inj.ok(
        "mount /proc",
        NR.mount,
        str("proc", 1),
        str("/proc", 2),
        str("proc", 3),
        MS.NOSUID | MS.NODEV | MS.NOEXEC,
        0
      );
    log.debug(
      `namespaces: process ${root.pid}: a new mount namespace, a private copy of criu-bun's${newPidNs ? " with its own /proc" : ""}`
    );
  }
  if (ns.newIpcNs) {
    inj.ok("unshare(CLONE_NEWIPC)", NR.unshare, CLONE.NEWIPC);
    log.debug(`namespaces: process ${root.pid}: a new IPC namespace`);
  }
  if (ns.newNetNs && ns.extNetKey !== undefined) {
    // an external network namespace: the one the caller gave for its key (runc: the netns path
    // of config.json), joined as it is; empty_ns does not apply to it
    root.joinExtNetNs(ns.extNetKey);
  } else if (ns.newNetNs && ns.emptyNetNs) {
    // empty_ns net: a new, empty network namespace; the caller sets it up (setup-namespaces)
    inj.ok("unshare(CLONE_NEWNET)", NR.unshare, CLONE.NEWNET);
    log.debug(`namespaces: process ${root.pid}: a new, empty network namespace (empty_ns)`);
  } else if (ns.newNetNs) {
    // the tree had its own network namespace with only loopback: a new one, lo up
    inj.ok("unshare(CLONE_NEWNET)", NR.unshare, CLONE.NEWNET);
    const s = Number(inj.ok("socket", NR.socket, AF.INET, SOCK.DGRAM, 0));
    const ifr = new Uint8Array(40);
    ifr.set(Buffer.from("lo"));
    new DataView(ifr.buffer).setUint16(16, 0x1 | 0x8 | 0x40, true); // IFF_UP | IFF_LOOPBACK | IFF_RUNNING
    const r = inj.call(NR.ioctl, s, 0x8914 /* SIOCSIFFLAGS */, root.scratch(0n, ifr));
    inj.call(NR.close, s);
    if (r < 0n)
      throw new CriuError(
        "restore",
        sysFailed(`process ${root.pid}`, "SIOCSIFFLAGS bringing lo up in its new network namespace", r)
      );
    log.debug(`namespaces: process ${root.pid}: a new network namespace, lo up`);
  }
  if (ns.uts) {
    // the tree had its own UTS namespace: a new one with its hostname and domain name
    const { nodename, domainname } = ns.uts;
    inj.ok("unshare(CLONE_NEWUTS)", NR.unshare, CLONE.NEWUTS);
    inj.ok("sethostname", NR.sethostname, str(nodename), Buffer.byteLength(nodename));
    inj.ok("setdomainname", NR.setdomainname, str(domainname, 1), Buffer.byteLength(domainname));
    log.debug(`namespaces: process ${root.pid}: a new UTS namespace, hostname '${nodename}', domain '${domainname}'`);
  }
}

/** The last number of a /proc/PID/status line (NSpid, NSpgid, NSsid: the innermost namespace's). */
function lastField(text: string, pid: number, key: string): number {
  const m = new RegExp(`^${key}:\\s*(.*)$`, "m").exec(text);
  if (!m) throw new CriuError("dump", `process ${pid}: no ${key} in /proc/${pid}/status`);
  const l = m[1].trim().split(/\s+/);
  return Number(l[l.length - 1]);
}
