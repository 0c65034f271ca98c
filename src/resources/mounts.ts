// Mount namespaces, dump and restore side by side.
//
// A tree that shares criu-bun's mount namespace and root needs nothing here. A tree in a private
// copy of criu-bun's mounts (what `unshare -m` or `unshare --pid --fork --mount-proc` make) comes
// back in a new copy: unshare(CLONE_NEWNS), everything private, and a fresh /proc when the tree
// has its own PID namespace (checkMountNs decides).
//
// Any other mount namespace (a container: pivot_root into its own root file system) is saved as
// CRIU does: mountpoints-<ns id>.img with one mnt_entry per mount, tmpfs contents in
// tmpfs-dev-<dev>.tar.gz.img. At restore the root task builds the mount tree in a new mount
// namespace before anything of the tree runs, on top of the root file system given with --root
// (or the directory the root mount was a bind of), then pivot_roots into it. What criu-bun
// recreates: tmpfs (with contents), proc, sysfs, devpts, mqueue, cgroup and cgroup2 mounts, bind
// mounts of anything inside the namespace, external bind mounts (--external mnt[KEY]:VAL,
// --ext-mount-map), flags, and shared/slave/private/unbindable propagation inside the namespace.
// Anything else is refused at dump with the mount named.
import { existsSync, readFileSync, readlinkSync, statSync } from "../sys/fs";
import { join, resolve } from "../sys/path";
import { NR } from "../sys/nr";
import { CLONE } from "../sys/flags";
import { O, closeFd } from "../sys/mem";
import * as S from "../images/schemas";
import { create } from "@bufbuild/protobuf";
import { extractTar, tarDirectory } from "./tar";
import { restoreEarlyPty, type EarlyPtyTarget } from "./tty";
import { readText } from "../sys/proc";
import { errnoText } from "../sys/errno";
import { refuse as refuseUnsupported } from "./unsupported";
import { CriuError, log } from "../log";

interface MountInfo {
  id: number;
  parent: number;
  dev: string;
  root: string;
  mountpoint: string;
  /** per-mount options (rw, nosuid, nodev, noexec, relatime ...) */
  opts: string;
  /** optional fields: shared:N, master:N, propagate_from:N, unbindable */
  optional: string[];
  fstype: string;
  source: string;
  superOpts: string;
}

/** octal escapes of mountinfo (\040 space, \011 tab, \012 newline, \134 backslash) */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

function parseMountinfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const f = line.split(" ");
    const sep = f.indexOf("-", 6);
    if (sep < 0 || f.length < sep + 4) throw new CriuError("dump", `cannot parse mountinfo line '${line}'`);
    out.push({
      id: Number(f[0]),
      parent: Number(f[1]),
      dev: f[2],
      root: unescape(f[3]),
      mountpoint: unescape(f[4]),
      opts: f[5],
      optional: f.slice(6, sep),
      fstype: f[sep + 1],
      source: unescape(f[sep + 2]),
      superOpts: f.slice(sep + 3).join(" "),
    });
  }
  return out;
}

export function readMountinfo(pid: number | "self"): MountInfo[] {
  return parseMountinfo(readText(`/proc/${pid}/mountinfo`));
}

const sig = (m: MountInfo) => `${m.dev} ${m.root} ${m.mountpoint} ${m.opts} ${m.fstype} ${m.source} ${m.superOpts}`;
const describe = (m: MountInfo) =>
  `'${m.mountpoint}' (${m.fstype} ${m.source}${m.root !== "/" ? `, bind of ${m.root}` : ""})`;

/** The /proc that restore mounts for a new PID namespace: mount("proc", "/proc", "proc", MS_NOSUID|MS_NODEV|MS_NOEXEC). */
const FRESH_PROC_OPTS = "rw,nosuid,nodev,noexec,relatime";

/** Dump side: every process of the tree must have criu-bun's root directory (no chroot, no pivot_root). */
export function checkRoot(pid: number, ownMntNs: boolean) {
  const rs = statSync(`/proc/${pid}/root`),
    ms = statSync("/");
  if (rs.dev === ms.dev && rs.ino === ms.ino) return;
  if (!ownMntNs) refuseUnsupported("dump", `process ${pid}`, "chroot", `chroot to ${safeLink(`/proc/${pid}/root`)}`);
  throw new CriuError(
    "dump",
    `process ${pid} has a root directory other than criu-bun's in its own mount namespace (${safeLink(`/proc/${pid}/ns/mnt`)}); container root file systems are not supported yet`
  );
}

/**
 * Dump side: may the tree's own mount namespace be restored? Throws one line naming the process,
 * the namespace and the first mount that differs. `ownPidNs`: the tree has its own PID namespace
 * (a /proc of it mounted on top of ours is expected, restore makes the same).
 */
export function checkMountNs(pid: number, ownPidNs: boolean) {
  const mine = readMountinfo("self"),
    theirs = readMountinfo(pid);
  const nsName = safeLink(`/proc/${pid}/ns/mnt`);
  const refuse = (why: string) => {
    throw new CriuError(
      "dump",
      `process ${pid} is in its own mount namespace (${nsName}) ${why}; only a private copy of criu-bun's mounts is supported yet`
    );
  };
  // each mount by the chain of mounts from the root down to it: the listing order differs
  // between a namespace and its copy, what sits on what does not
  const mineKeys = chainKeys(mine),
    theirKeys = chainKeys(theirs);
  const left = new Map<string, number>();
  for (const k of mineKeys) left.set(k, (left.get(k) ?? 0) + 1);
  let freshProc = 0;
  theirs.forEach((m, i) => {
    const n = left.get(theirKeys[i]) ?? 0;
    if (n > 0) {
      left.set(theirKeys[i], n - 1);
      return;
    }
    // restore mounts a /proc of the new PID namespace on top of ours, as unshare --mount-proc did
    if (ownPidNs && !freshProc && m.fstype === "proc" && m.mountpoint === "/proc" && m.opts === FRESH_PROC_OPTS) {
      freshProc++;
      return;
    }
    refuse(`with mount ${describe(m)} that criu-bun's namespace does not have`);
  });
  const missing = mine.find((_, i) => (left.get(mineKeys[i]) ?? 0) > 0 && left.set(mineKeys[i], 0));
  if (missing) refuse(`without criu-bun's mount ${describe(missing)}`);
  if (ownPidNs && !freshProc)
    refuse(`without a fresh /proc of its PID namespace on top of criu-bun's mounts (as unshare --mount-proc makes)`);
  for (const m of theirs) {
    const prop = m.optional.filter((o) => /^(shared|master):/.test(o) || o === "unbindable");
    if (prop.length) refuse(`where mount ${describe(m)} is not private (${prop.join(" ")})`);
  }
  log.debug(
    `process ${pid}: its mount namespace ${nsName} is a private copy of criu-bun's${theirs.length > mine.length ? " with a fresh /proc" : ""}`
  );
}

/** every mount's key: the signatures of the mounts from the root down to it */
function chainKeys(ms: MountInfo[]): string[] {
  const byId = new Map(ms.map((m) => [m.id, m]));
  return ms.map((m) => {
    const parts: string[] = [];
    for (
      let c: MountInfo | undefined = m, n = 0;
      c && n < ms.length;
      c = c.parent !== c.id ? byId.get(c.parent) : undefined, n++
    )
      parts.push(sig(c));
    return parts.reverse().join("\n");
  });
}

function safeLink(p: string): string {
  try {
    return readlinkSync(p);
  } catch {
    return "?";
  }
}

// ---------------------------------------------------------------------------------------------
// Containers: the mount namespace saved in CRIU's format

/** images/mnt.proto's fstype codes */
const FSTYPE: Record<string, number> = {
  proc: 1,
  sysfs: 2,
  devtmpfs: 3,
  binfmt_misc: 4,
  tmpfs: 5,
  devpts: 6,
  simfs: 7,
  pstore: 8,
  securityfs: 9,
  fusectl: 10,
  debugfs: 11,
  cgroup: 12,
  aufs: 13,
  mqueue: 14,
  fuse: 15,
  overlay: 17,
  autofs: 18,
  tracefs: 19,
  cgroup2: 23,
};
const FSNAME = new Map(Object.entries(FSTYPE).map(([k, v]) => [v, k]));
/** file systems criu-bun mounts anew at restore (tmpfs with its saved contents) */
const FRESH = new Set(["tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"]);

export const MS = {
  RDONLY: 1,
  NOSUID: 2,
  NODEV: 4,
  NOEXEC: 8,
  SYNCHRONOUS: 16,
  REMOUNT: 32,
  MANDLOCK: 64,
  DIRSYNC: 128,
  NOSYMFOLLOW: 256,
  NOATIME: 1024,
  NODIRATIME: 2048,
  BIND: 4096,
  MOVE: 8192,
  REC: 16384,
  UNBINDABLE: 1 << 17,
  PRIVATE: 1 << 18,
  SLAVE: 1 << 19,
  SHARED: 1 << 20,
  RELATIME: 1 << 21,
  STRICTATIME: 1 << 24,
  LAZYTIME: 1 << 25,
} as const;
const MNT_OPT: Record<string, number> = {
  ro: MS.RDONLY,
  nosuid: MS.NOSUID,
  nodev: MS.NODEV,
  noexec: MS.NOEXEC,
  noatime: MS.NOATIME,
  nodiratime: MS.NODIRATIME,
  relatime: MS.RELATIME,
  nosymfollow: MS.NOSYMFOLLOW,
};
const SB_OPT: Record<string, number> = {
  ro: MS.RDONLY,
  sync: MS.SYNCHRONOUS,
  dirsync: MS.DIRSYNC,
  mand: MS.MANDLOCK,
  lazytime: MS.LAZYTIME,
};

/** "maj:min" -> the kernel's internal dev_t (major << 20 | minor), as CRIU stores root_dev */
function kdev(dev: string): number {
  const [maj, min] = dev.split(":").map(Number);
  return ((maj << 20) | min) >>> 0;
}

function mountFlags(m: MountInfo): number {
  let f = 0;
  for (const o of m.opts.split(",")) f |= MNT_OPT[o] ?? 0;
  for (const o of m.optional) {
    if (o.startsWith("shared:")) f |= MS.SHARED;
    else if (o.startsWith("master:")) f |= MS.SLAVE;
    else if (o === "unbindable") f |= MS.UNBINDABLE;
  }
  return f;
}
function superFlags(m: MountInfo): { sbFlags: number; options: string } {
  let sbFlags = 0;
  const rest: string[] = [];
  for (const o of m.superOpts.split(",")) {
    if (o === "rw" || o === "") continue;
    if (o in SB_OPT) sbFlags |= SB_OPT[o];
    else rest.push(o);
  }
  if (m.fstype === "devpts" && !rest.includes("newinstance")) rest.push("newinstance");
  return { sbFlags, options: rest.join(",") };
}
const optNum = (m: MountInfo, key: string) =>
  Number(m.optional.find((o) => o.startsWith(`${key}:`))?.slice(key.length + 1) ?? 0);

/** where a dumped tree's mounts are mapped: --external mnt[MOUNTPOINT]:KEY / --ext-mount-map MOUNTPOINT:KEY (or auto) */
export interface ExtMounts {
  map: Map<string, string>;
  auto?: boolean;
}

/** Parse --external mnt[K]:V and --ext-mount-map K:V / auto into one map (dump: mountpoint -> key; restore: key -> path). */
export function parseExtMounts(external: unknown, extMountMap: unknown, cmd: string): ExtMounts {
  const list = (v: unknown) => (v === undefined || v === false ? [] : Array.isArray(v) ? v.map(String) : [String(v)]);
  const out: ExtMounts = { map: new Map() };
  for (const e of list(extMountMap)) {
    if (e === "auto") {
      out.auto = true;
      continue;
    }
    const i = e.indexOf(":");
    if (i <= 0) throw new CriuError(cmd, `--ext-mount-map '${e}': expected KEY:VALUE or auto`);
    out.map.set(e.slice(0, i), e.slice(i + 1));
  }
  for (const e of list(external)) {
    const m = /^mnt\[(.*)\]:(.*)$/.exec(e);
    if (m) {
      out.map.set(m[1], m[2]);
      continue;
    }
    if (/^mnt\[/.test(e)) throw new CriuError(cmd, `--external '${e}': expected mnt[KEY]:VALUE`);
    if (/^net\[/.test(e)) {
      parseExtNetNs([e], cmd);
      continue;
    } // the network namespace's, below
    throw new CriuError(
      cmd,
      `--external '${e}': only mnt[KEY]:VALUE and net[INODE]:KEY external resources are supported by criu-bun yet`
    );
  }
  return out;
}

/**
 * --external net[INODE]:KEY (runc sends it for a container whose config names a network namespace
 * path, key extRootNetNS): that namespace is the caller's. The dump saves only the key (netns image
 * ext_key, as criu), not its contents; restore joins the namespace given as inherit_fd KEY.
 */
export function parseExtNetNs(external: unknown, cmd: string): { ino: number; key: string } | undefined {
  const list =
    external === undefined || external === false
      ? []
      : Array.isArray(external)
        ? external.map(String)
        : [String(external)];
  let out: { ino: number; key: string } | undefined;
  for (const e of list) {
    if (!/^net\[/.test(e)) continue;
    const m = /^net\[(\d+)\]:([^\s:/]+)$/.exec(e);
    if (!m) throw new CriuError(cmd, `--external '${e}': expected net[INODE]:KEY`);
    if (out) throw new CriuError(cmd, `--external '${e}': only one external network namespace is supported`);
    out = { ino: Number(m[1]), key: m[2] };
  }
  return out;
}

/**
 * Dump side: is the tree's mount namespace a private copy of criu-bun's (restored as before,
 * without images), or a namespace of its own (a container: saved with dumpMountNs)?
 */
export function isPrivateCopy(pid: number, ownPidNs: boolean): boolean {
  try {
    checkMountNs(pid, ownPidNs);
    return true;
  } catch (e) {
    if (!(e instanceof CriuError)) throw e;
    // why matters when the namespace's own mounts are then refused (a host mount made after unshare)
    log.debug(
      `process ${pid}: its mount namespace is not a private copy of criu-bun's: ${e.message}; it is saved as a namespace of its own`
    );
    return false;
  }
}

/** Dump side, for a container: every process's root must be its namespace's root (no chroot inside). */
export function checkNsRoot(pid: number) {
  const r = safeLink(`/proc/${pid}/root`);
  if (r !== "/")
    throw new CriuError(
      "dump",
      `process ${pid} has a root directory other than its mount namespace's (chroot to ${r}); not supported yet`
    );
}

/** What restore does with one mount; dump and restore classify the same way. */
interface Role {
  kind: "root" | "fresh" | "bind" | "external";
  source?: number;
}
interface Classified {
  mntId: number;
  rootDev: number;
  root: string;
  fstype: string;
  extKey?: string;
  isRoot: boolean;
}

/**
 * The namespace's root, external mounts, and new ones (tmpfs, proc ...) are origins; another
 * mount of the same file system whose root lies inside an origin's root is a bind of that origin.
 */
function classify(ms: Classified[]): Map<number, Role> {
  const out = new Map<number, Role>();
  const origins: Classified[] = [];
  // the namespace's root first, then external mounts, then the widest roots (mount ids are reused,
  // so they do not tell which mount came first): a file system's own mount comes before its binds
  const rank = (m: Classified) => (m.isRoot ? 0 : m.extKey !== undefined ? 1 : 2);
  const depth = (m: Classified) => (m.root === "/" ? 0 : m.root.split("/").length);
  for (const m of [...ms].sort((a, b) => rank(a) - rank(b) || depth(a) - depth(b) || a.mntId - b.mntId)) {
    if (m.isRoot) {
      out.set(m.mntId, { kind: "root" });
      origins.push(m);
      continue;
    }
    if (m.extKey !== undefined) {
      out.set(m.mntId, { kind: "external" });
      origins.push(m);
      continue;
    }
    const s = origins.find((o) => o.rootDev === m.rootDev && within(m.root, o.root));
    if (s) {
      out.set(m.mntId, { kind: "bind", source: s.mntId });
      continue;
    }
    out.set(m.mntId, { kind: "fresh" });
    origins.push(m);
  }
  return out;
}

/** st_dev as "maj:min" */
function devName(d: bigint): string {
  return `${((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn)}:${(d & 0xffn) | ((d >> 12n) & ~0xffn)}`;
}

/** mnt_entry as the dump builds it */
type MntInit = S.InitOf<typeof S.mnt_entrySchema>;

/**
 * Dump side: the tree's mount namespace (seen through process `pid`) into
 * mountpoints-<nsId>.img and tmpfs-dev-<dev>.tar.gz.img. Throws, naming the mount, for anything
 * restore could not recreate exactly.
 */
export function dumpMountNs(
  pid: number,
  ext: ExtMounts,
  writeBytes: (file: string, data: Uint8Array) => void,
  cloneMount: (mountpoint: string) => number | string
): MntInit[] {
  const ms = readMountinfo(pid);
  const nsName = safeLink(`/proc/${pid}/ns/mnt`);
  const where = `process ${pid} mount namespace ${nsName}`;
  const refuse = (m: MountInfo, why: string): never => {
    throw new CriuError("dump", `${where}: mount ${describe(m)} ${why}`);
  };
  const byId = new Map(ms.map((m) => [m.id, m]));
  const roots = ms.filter((m) => !byId.has(m.parent) || m.parent === m.id);
  if (roots.length !== 1 || roots[0].mountpoint !== "/")
    throw new CriuError(
      "dump",
      `${where}: expected one root mount at /, found ${roots.map(describe).join(", ") || "none"}`
    );
  const hostIds = new Set(
    readMountinfo("self").flatMap((h) =>
      h.optional.filter((o) => /^(shared|master):/.test(o)).map((o) => Number(o.split(":")[1]))
    )
  );
  const sharedHere = new Set(ms.map((m) => optNum(m, "shared")).filter((n) => n));
  const seenMp = new Map<string, MountInfo>();
  const entries = new Map<number, MntInit>();
  const ownCgroupNs = safeLink(`/proc/${pid}/ns/cgroup`) !== safeLink("/proc/self/ns/cgroup");
  for (const m of ms) {
    if (m.mountpoint.endsWith("//deleted") || m.mountpoint.endsWith(" (deleted)"))
      refuse(m, "is mounted on a deleted directory; not supported");
    const other = seenMp.get(m.mountpoint);
    if (other) refuse(m, `is mounted on top of ${describe(other)}; stacked mounts are not supported yet`);
    seenMp.set(m.mountpoint, m);
    const shared = optNum(m, "shared"),
      master = optNum(m, "master");
    if (shared && hostIds.has(shared))
      refuse(m, `is shared with mounts outside its namespace (peer group ${shared}); not supported`);
    if (master && !sharedHere.has(master))
      refuse(m, `is a slave of a peer group outside its namespace (master ${master}); not supported`);
    if (m.optional.some((o) => o.startsWith("propagate_from:")))
      refuse(m, "receives propagation from outside its namespace; not supported");
    const { sbFlags, options } = superFlags(m);
    const e: MntInit = {
      fstype: FSTYPE[m.fstype] ?? 0,
      mntId: m.id,
      rootDev: kdev(m.dev),
      parentMntId: m.parent,
      flags: mountFlags(m) >>> 0,
      root: m.root,
      mountpoint: m.mountpoint,
      source: m.source,
      options,
      sharedId: shared,
      masterId: master,
      sbFlags,
    };
    const key = ext.map.get(m.mountpoint);
    if (m === roots[0] && key !== undefined)
      refuse(m, "is the namespace's root: it cannot be external (restore puts it on --root)");
    if (key !== undefined) e.extKey = key;
    entries.set(m.id, e);
  }
  const cls = () =>
    classify(
      ms.map((m) => ({
        mntId: m.id,
        rootDev: kdev(m.dev),
        root: m.root,
        fstype: m.fstype,
        extKey: entries.get(m.id)!.extKey,
        isRoot: m === roots[0],
      }))
    );
  let roles = cls();
  if (ext.auto) {
    // --ext-mount-map auto: what criu-bun cannot make again is bound from where it is visible here
    for (const m of ms) {
      if (roles.get(m.id)!.kind === "fresh" && !FRESH.has(m.fstype)) {
        const h = hostPath(m);
        if (h) entries.get(m.id)!.extKey = h;
      }
    }
    roles = cls();
  }
  for (const m of ms) {
    const r = roles.get(m.id)!;
    if (r.kind !== "fresh") continue;
    if (!FRESH.has(m.fstype))
      refuse(
        m,
        `cannot be recreated by criu-bun; mark it external (--external mnt[${m.mountpoint}]:KEY at dump, --external mnt[KEY]:PATH at restore)`
      );
    if (m.root !== "/")
      refuse(
        m,
        `is a bind of '${m.root}' of a ${m.fstype} that is not mounted in the namespace; mark it external (--external mnt[${m.mountpoint}]:KEY)`
      );
    if ((m.fstype === "cgroup" || m.fstype === "cgroup2") && ownCgroupNs)
      refuse(m, "belongs to a cgroup namespace of its own, which criu-bun does not restore yet");
  }
  const plan = ms.map((m) => ({ m, e: entries.get(m.id)!, ...roles.get(m.id)! }));
  const prop = propagationPlan([...entries.values()].map((e) => create(S.mnt_entrySchema, e)));
  if (typeof prop === "string") {
    const i = prop.indexOf(" ");
    refuse(byId.get(Number(prop.slice(0, i)))!, prop.slice(i + 1));
  }
  // tmpfs contents, read through the tree's root (the tree is frozen); one with mounts on it
  // through a clone of it alone (open_tree without AT_RECURSIVE: no submounts), so what lies
  // under those mounts is saved too (it was lost: the mounts' roots were read instead)
  for (const p of plan) {
    if (p.kind !== "fresh" || p.m.fstype !== "tmpfs") continue;
    const path = `/proc/${pid}/root${p.m.mountpoint === "/" ? "" : p.m.mountpoint}`;
    const st = statSync(path, { bigint: true });
    if (devName(st.dev) !== p.m.dev) refuse(p.m, "is hidden under another mount; not supported");
    if (!ms.some((c) => c.parent === p.m.id && c !== p.m)) {
      writeBytes(
        `tmpfs-dev-${p.e.rootDev}.tar.gz.img`,
        tarDirectory(path, st.dev, `${where}: tmpfs ${p.m.mountpoint}`, { who: `process ${pid}`, at: p.m.mountpoint })
      );
      continue;
    }
    const got = cloneMount(p.m.mountpoint);
    if (typeof got === "string") refuse(p.m, `has mounts on it, and what lies under them cannot be read (${got})`);
    const fd = got as number;
    try {
      // (".": the clone's root directory, not the fd's magic link)
      writeBytes(
        `tmpfs-dev-${p.e.rootDev}.tar.gz.img`,
        tarDirectory(`/proc/self/fd/${fd}/.`, st.dev, `${where}: tmpfs ${p.m.mountpoint}`, {
          who: `process ${pid}`,
          at: p.m.mountpoint,
        })
      );
    } finally {
      closeFd(fd);
    }
    log.debug(`${where}: tmpfs ${p.m.mountpoint} read through a clone of it without its submounts`);
  }
  for (const p of plan)
    log.info(
      `${where}: ${p.kind} ${describe(p.m)}${p.source ? ` from mount ${p.source}` : ""}${p.e.extKey !== undefined ? ` key '${p.e.extKey}'` : ""} flags 0x${p.e.flags!.toString(16)}`
    );
  return [...plan].reverse().map((p) => p.e); // CRIU lists the root last
}

/** path is `root` or below it */
function within(path: string, root: string): boolean {
  return root === "/" || path === root || path.startsWith(root.endsWith("/") ? root : `${root}/`);
}

/** where a mount's contents are visible in criu-bun's own namespace, if anywhere */
function hostPath(m: MountInfo): string | undefined {
  for (const h of readMountinfo("self")) {
    if (h.dev !== m.dev || !within(m.root, h.root)) continue;
    const rest = h.root === "/" ? m.root : m.root.slice(h.root.length);
    return (h.mountpoint === "/" ? "" : h.mountpoint) + (rest === "/" ? "" : rest) || "/";
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Propagation: peer groups (shared:N) and slaves (master:N) as mountinfo shows them

type PropStep =
  | { op: "shared"; e: S.mnt_entry }
  | { op: "join"; from: S.mnt_entry; e: S.mnt_entry }
  | { op: "slave"; e: S.mnt_entry };

/**
 * How restore recreates the saved peer groups and slaves once every mount exists (all private):
 * per group, its leader (the member with the widest root) is made a slave of its master group
 * first if it is one, then shared (a new group); every other member joins it
 * (move_mount MOVE_MOUNT_SET_GROUP: same peer group, same master). A slave joins a member of its
 * master's group whose root holds its own, then is made a slave (MS_SLAVE: of that group).
 * Masters' groups come before their slaves. Returns the steps, or "MNTID why" for the first
 * mount the kernel could not be brought to the same state for.
 */
function propagationPlan(entries: S.mnt_entry[]): PropStep[] | string {
  const groups = new Map<number, S.mnt_entry[]>();
  for (const e of entries)
    if (e.sharedId) {
      const g = groups.get(e.sharedId);
      if (g) g.push(e);
      else groups.set(e.sharedId, [e]);
    }
  const depth = (e: S.mnt_entry) => (e.root === "/" ? 0 : e.root.split("/").length);
  const steps: PropStep[] = [];
  const made = new Set<number>(),
    making = new Set<number>();
  let err: string | undefined;
  const slaveOf = (e: S.mnt_entry, master: number): boolean => {
    const g = groups.get(master);
    if (!g) {
      err = `${e.mntId} is a slave of peer group ${master}, which has no mount in the namespace; not supported`;
      return false;
    }
    if (!makeGroup(master)) return false;
    const from = g.find((x) => x.rootDev === e.rootDev && within(e.root, x.root));
    if (!from) {
      err = `${e.mntId} is a slave of peer group ${master}, none of whose mounts holds its root '${e.root}'; not supported`;
      return false;
    }
    steps.push({ op: "join", from, e }, { op: "slave", e });
    return true;
  };
  const makeGroup = (id: number): boolean => {
    if (made.has(id)) return true;
    if (making.has(id)) {
      err = `${groups.get(id)![0].mntId} is in a cycle of peer groups and masters; not supported`;
      return false;
    }
    making.add(id);
    const g = groups.get(id)!;
    const lead = [...g].sort((a, b) => depth(a) - depth(b) || a.mntId - b.mntId)[0];
    for (const m of g) {
      if (m.rootDev !== lead.rootDev || !within(m.root, lead.root)) {
        err = `${m.mntId} is a peer (group ${id}) of '${lead.mountpoint}', whose root '${lead.root}' does not hold its root '${m.root}'; not supported`;
        return false;
      }
      if ((m.masterId ?? 0) !== (lead.masterId ?? 0)) {
        err = `${m.mntId} is a peer (group ${id}) of '${lead.mountpoint}' with another master (${m.masterId ?? 0}, not ${lead.masterId ?? 0}); not supported`;
        return false;
      }
    }
    if (lead.masterId && !slaveOf(lead, lead.masterId)) return false;
    steps.push({ op: "shared", e: lead });
    for (const m of g) if (m !== lead) steps.push({ op: "join", from: lead, e: m });
    made.add(id);
    return true;
  };
  for (const id of [...groups.keys()].sort((a, b) => a - b)) if (!makeGroup(id)) return err!;
  for (const e of [...entries].sort((a, b) => a.mntId - b.mntId))
    if (e.masterId && !e.sharedId && !slaveOf(e, e.masterId)) return err!;
  return steps;
}

// ---------------------------------------------------------------------------------------------
// Restore

/** The root task, before anything of the tree runs: injected syscalls and string slots (0..3). */
interface MountTask {
  pid: number;
  ok(name: string, nr: number, ...args: (number | bigint)[]): bigint;
  call(nr: number, ...args: (number | bigint)[]): bigint;
  str(s: string, slot?: number): bigint;
  /** where pts INDEX is made on a devpts whose pts is bind-mounted (its master kept for the tty restore) */
  pty?: EarlyPtyTarget;
}
interface MountRestoreOpts {
  root?: string;
  ext: ExtMounts;
}

const OPEN_TREE_CLONE = 1,
  MOVE_MOUNT_F_EMPTY_PATH = 4,
  MOVE_MOUNT_SET_GROUP = 0x100;

function restoreRoles(entries: S.mnt_entry[]) {
  const byId = new Map(entries.map((e) => [e.mntId, e]));
  const root = entries.find((e) => !byId.has(e.parentMntId) || e.parentMntId === e.mntId);
  const roles = classify(
    entries.map((e) => ({
      mntId: e.mntId,
      rootDev: e.rootDev,
      root: e.root,
      fstype: FSNAME.get(e.fstype) ?? "",
      extKey: e.extKey || undefined,
      isRoot: e === root,
    }))
  );
  return { root, roles, byId };
}

/** Restore side, before creating anything: every mount can be made (external keys mapped, the root directory exists). Returns the root directory. */
export function precheckMountNs(entries: S.mnt_entry[], dir: string, o: MountRestoreOpts): string {
  const { root, roles } = restoreRoles(entries);
  if (!root || root.mountpoint !== "/")
    throw new CriuError("restore", `${dir}: the saved mount namespace has no root mount at /`);
  let rootDir = o.root !== undefined ? resolve(o.root) : undefined;
  if (!rootDir) {
    const [maj, min] = [root.rootDev >>> 20, root.rootDev & 0xfffff];
    rootDir = hostPath({ dev: `${maj}:${min}`, root: root.root } as MountInfo);
    if (!rootDir)
      throw new CriuError(
        "restore",
        `the container's root file system (${root.root} on ${maj}:${min}) is not visible here; give it with --root DIR`
      );
  }
  let st;
  try {
    st = statSync(rootDir);
  } catch {
    throw new CriuError("restore", `--root '${rootDir}' does not exist`);
  }
  if (!st.isDirectory()) throw new CriuError("restore", `--root '${rootDir}' is not a directory`);
  const prop = propagationPlan(entries);
  if (typeof prop === "string") {
    const i = prop.indexOf(" "),
      e = entries.find((x) => x.mntId === Number(prop.slice(0, i)))!;
    throw new CriuError("restore", `mount '${e.mountpoint}' ${prop.slice(i + 1)}`);
  }
  for (const e of entries) {
    const r = roles.get(e.mntId)!,
      name = FSNAME.get(e.fstype);
    if (r.kind === "fresh" && !(name && FRESH.has(name)))
      throw new CriuError(
        "restore",
        `mount '${e.mountpoint}' (${name ?? `fstype ${e.fstype}`} ${e.source}) cannot be recreated by criu-bun`
      );
    if (r.kind === "fresh" && name === "tmpfs" && !existsSync(join(dir, `tmpfs-dev-${e.rootDev}.tar.gz.img`)))
      throw new CriuError(
        "restore",
        `${join(dir, `tmpfs-dev-${e.rootDev}.tar.gz.img`)} is missing (contents of tmpfs ${e.mountpoint})`
      );
    if (r.kind !== "external") continue;
    const path = o.ext.map.get(e.extKey!) ?? (o.ext.auto ? e.extKey : undefined);
    if (path === undefined)
      throw new CriuError(
        "restore",
        `mount '${e.mountpoint}' is external (key '${e.extKey}'): map it with --external mnt[${e.extKey}]:PATH or --ext-mount-map ${e.extKey}:PATH`
      );
    if (!existsSync(path))
      throw new CriuError("restore", `external mount '${e.mountpoint}': '${path}' (key '${e.extKey}') does not exist`);
  }
  return rootDir;
}

/**
 * Restore side, in the root task (already in its new PID, IPC, network and UTS namespaces): a
 * new mount namespace holding the saved tree on top of rootDir, then pivot_root into it. Every
 * bind mount is cloned (open_tree) from its source right after the source is made, before
 * anything is mounted below it, so no later mount can stand in the way.
 */
export function restoreMountNs(
  t0: MountTask,
  entries: S.mnt_entry[],
  dir: string,
  rootDir: string,
  o: MountRestoreOpts
) {
  const where = `process ${t0.pid}`;
  // a failed step is one line naming the mount; the namespace with what was made goes with the task
  const t: MountTask = {
    ...t0,
    ok: (name, nr, ...args) => {
      const r = t0.call(nr, ...args);
      if (r < 0n && r > -4096n)
        throw new CriuError(
          "restore",
          `${where}: ${name} failed: ${errnoText(Number(-r))}; the container's mounts are built on ${rootDir}`
        );
      return r;
    },
  };
  const { root: rootE, roles } = restoreRoles(entries);
  const root = rootE!;
  const R = rootDir.replace(/\/+$/, "") || "/";
  const at = (e: S.mnt_entry) => (e.mountpoint === "/" ? R : (R === "/" ? "" : R) + e.mountpoint);
  t.ok("unshare(CLONE_NEWNS)", NR.unshare, CLONE.NEWNS);
  t.ok("mount / rprivate", NR.mount, 0, t.str("/"), 0, MS.REC | MS.PRIVATE, 0);
  const clones = new Map<number, number>();
  const cloneBindsOf = (s: S.mnt_entry) => {
    for (const b of entries) {
      const r = roles.get(b.mntId)!;
      if (r.kind !== "bind" || r.source !== s.mntId) continue;
      const rest = s.root === "/" ? b.root : b.root.slice(s.root.length);
      const from = at(s) + (rest === "/" ? "" : rest);
      // runc's /dev/console: a bind of the terminal's slave, which exists once its pair is made
      if (FSNAME.get(s.fstype) === "devpts" && /^\/\d+$/.test(rest) && t.pty)
        restoreEarlyPty(t.pty, at(s) + (s.root === "/" ? "" : s.root) + "/ptmx", Number(rest.slice(1)));
      clones.set(
        b.mntId,
        Number(t.ok(`open_tree(${from})`, NR.open_tree, -100, t.str(from), OPEN_TREE_CLONE | O.CLOEXEC))
      );
      log.debug(`${where}: ${b.mountpoint} will be a bind of ${from}`);
    }
  };
  const setFlags = (e: S.mnt_entry) => {
    let f =
      e.flags &
      (MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC | MS.NOATIME | MS.NODIRATIME | MS.RELATIME | MS.NOSYMFOLLOW);
    if (!(f & (MS.NOATIME | MS.RELATIME))) f |= MS.STRICTATIME;
    t.ok(
      `remount ${e.mountpoint} flags 0x${f.toString(16)}`,
      NR.mount,
      0,
      t.str(at(e)),
      0,
      MS.REMOUNT | MS.BIND | f,
      0
    );
  };
  // the root: a bind of rootDir on itself (nothing of the host below it comes along)
  t.ok(`bind ${R} onto itself`, NR.mount, t.str(R), t.str(R, 1), 0, MS.BIND, 0);
  setFlags(root);
  cloneBindsOf(root);
  // the others, parents first, in the order they were mounted
  const done = new Set<number>([root.mntId]);
  const order = entries.filter((e) => e !== root).sort((a, b) => a.mntId - b.mntId);
  while (done.size < entries.length) {
    const e = order.find(
      (x) =>
        !done.has(x.mntId) && done.has(x.parentMntId) && (roles.get(x.mntId)!.kind !== "bind" || clones.has(x.mntId))
    );
    if (!e)
      throw new CriuError(
        "restore",
        `${where}: the saved mounts cannot be ordered (${order
          .filter((x) => !done.has(x.mntId))
          .map((x) => x.mountpoint)
          .join(", ")})`
      );
    const r = roles.get(e.mntId)!,
      target = at(e),
      name = FSNAME.get(e.fstype) ?? "";
    if (r.kind === "external") {
      const path = o.ext.map.get(e.extKey!) ?? e.extKey!;
      t.ok(`bind external ${path} onto ${e.mountpoint}`, NR.mount, t.str(path), t.str(target, 1), 0, MS.BIND, 0);
    } else if (r.kind === "bind") {
      const fd = clones.get(e.mntId)!;
      t.ok(
        `move_mount onto ${e.mountpoint}`,
        NR.move_mount,
        fd,
        t.str(""),
        -100,
        t.str(target, 1),
        MOVE_MOUNT_F_EMPTY_PATH
      );
      t.call(NR.close, fd);
      clones.delete(e.mntId);
    } else {
      const sb = e.sbFlags ?? 0;
      t.ok(
        `mount ${name} on ${e.mountpoint}`,
        NR.mount,
        t.str(e.source || name),
        t.str(target, 1),
        t.str(name, 2),
        sb & ~MS.RDONLY,
        e.options ? t.str(e.options, 3) : 0
      );
      if (name === "tmpfs") {
        const n = extractTar(
          readFileSync(join(dir, `tmpfs-dev-${e.rootDev}.tar.gz.img`)),
          `/proc/${t.pid}/root${target}`,
          `tmpfs ${e.mountpoint}`
        );
        log.info(`${where}: tmpfs ${e.mountpoint}: ${n} entries restored`);
      }
      if (sb & MS.RDONLY)
        t.ok(
          `${e.mountpoint}: read-only super block`,
          NR.mount,
          0,
          t.str(target),
          0,
          MS.REMOUNT | sb,
          e.options ? t.str(e.options, 3) : 0
        );
    }
    setFlags(e);
    cloneBindsOf(e);
    done.add(e.mntId);
    log.debug(`${where}: mounted ${e.mountpoint} (${r.kind}${r.kind === "fresh" ? ` ${name}` : ""})`);
  }
  for (const fd of clones.values()) t.call(NR.close, fd);
  // into it: the old root goes on top of the new one and is detached from there
  t.ok(`chdir(${R})`, NR.chdir, t.str(R));
  t.ok("pivot_root(., .)", NR.pivot_root, t.str("."), t.str(".", 1));
  t.ok("umount old root", NR.umount2, t.str("."), 2 /* MNT_DETACH */);
  t.ok("chdir(/)", NR.chdir, t.str("/"));
  // propagation last: every mount was made private (nothing propagated while building), and
  // pivot_root refuses a shared new root
  for (const s of propagationPlan(entries) as PropStep[]) {
    if (s.op === "shared") t.ok(`make ${s.e.mountpoint} shared`, NR.mount, 0, t.str(s.e.mountpoint), 0, MS.SHARED, 0);
    else if (s.op === "slave") t.ok(`make ${s.e.mountpoint} slave`, NR.mount, 0, t.str(s.e.mountpoint), 0, MS.SLAVE, 0);
    else
      t.ok(
        `${s.e.mountpoint} joins the peer group of ${s.from.mountpoint}`,
        NR.move_mount,
        -100,
        t.str(s.from.mountpoint),
        -100,
        t.str(s.e.mountpoint, 1),
        MOVE_MOUNT_SET_GROUP
      );
  }
  for (const e of entries)
    if (e.flags & MS.UNBINDABLE)
      t.ok(`make ${e.mountpoint} unbindable`, NR.mount, 0, t.str(e.mountpoint), 0, MS.UNBINDABLE, 0);
  log.info(`${where}: ${entries.length} mounts restored on ${R}, pivot_root done`);
}
