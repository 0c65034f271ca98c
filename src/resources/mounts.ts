// Mount namespaces. A tree that shares criu-bun's mount namespace and root needs nothing here.
// A tree in its own mount namespace is accepted only when that namespace is a private copy of
// criu-bun's (what `unshare -m` or `unshare --pid --fork --mount-proc` make), which restore
// rebuilds exactly: unshare(CLONE_NEWNS), everything private, and a fresh /proc when the tree
// has its own PID namespace. Anything else (pivot_root into a container's root file system,
// extra mounts, shared propagation, a chroot) is refused at dump with the mount named.
import { readlinkSync, statSync } from "node:fs";
import { readText } from "../sys/proc";
import { CriuError, log } from "../log";

export interface MountInfo {
  id: number; parent: number; dev: string; root: string; mountpoint: string;
  /** per-mount options (rw, nosuid, nodev, noexec, relatime ...) */
  opts: string;
  /** optional fields: shared:N, master:N, propagate_from:N, unbindable */
  optional: string[];
  fstype: string; source: string; superOpts: string;
}

/** octal escapes of mountinfo (\040 space, \011 tab, \012 newline, \134 backslash) */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountinfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const f = line.split(" ");
    const sep = f.indexOf("-", 6);
    if (sep < 0 || f.length < sep + 4) throw new CriuError("dump", `cannot parse mountinfo line '${line}'`);
    out.push({
      id: Number(f[0]), parent: Number(f[1]), dev: f[2], root: unescape(f[3]), mountpoint: unescape(f[4]), opts: f[5],
      optional: f.slice(6, sep), fstype: f[sep + 1], source: unescape(f[sep + 2]), superOpts: f.slice(sep + 3).join(" "),
    });
  }
  return out;
}

export function readMountinfo(pid: number | "self"): MountInfo[] {
  return parseMountinfo(readText(`/proc/${pid}/mountinfo`));
}

const sig = (m: MountInfo) => `${m.dev} ${m.root} ${m.mountpoint} ${m.opts} ${m.fstype} ${m.source} ${m.superOpts}`;
const describe = (m: MountInfo) => `'${m.mountpoint}' (${m.fstype} ${m.source}${m.root !== "/" ? `, bind of ${m.root}` : ""})`;

/** The /proc that restore mounts for a new PID namespace: mount("proc", "/proc", "proc", MS_NOSUID|MS_NODEV|MS_NOEXEC). */
export const FRESH_PROC_OPTS = "rw,nosuid,nodev,noexec,relatime";

/** Dump side: every process of the tree must have criu-bun's root directory (no chroot, no pivot_root). */
export function checkRoot(pid: number, ownMntNs: boolean) {
  const rs = statSync(`/proc/${pid}/root`), ms = statSync("/");
  if (rs.dev === ms.dev && rs.ino === ms.ino) return;
  const where = ownMntNs ? `in its own mount namespace (${safeLink(`/proc/${pid}/ns/mnt`)})` : `(chroot to ${safeLink(`/proc/${pid}/root`)})`;
  throw new CriuError("dump", `process ${pid} has a root directory other than criu-bun's ${where}; container root file systems are not supported yet`);
}

/**
 * Dump side: may the tree's own mount namespace be restored? Throws one line naming the process,
 * the namespace and the first mount that differs. `ownPidNs`: the tree has its own PID namespace
 * (a /proc of it mounted on top of ours is expected, restore makes the same).
 */
export function checkMountNs(pid: number, ownPidNs: boolean) {
  const mine = readMountinfo("self"), theirs = readMountinfo(pid);
  const nsName = safeLink(`/proc/${pid}/ns/mnt`);
  const refuse = (why: string) => {
    throw new CriuError("dump", `process ${pid} is in its own mount namespace (${nsName}) ${why}; only a private copy of criu-bun's mounts is supported yet`);
  };
  // each mount by the chain of mounts from the root down to it: the listing order differs
  // between a namespace and its copy, what sits on what does not
  const mineKeys = chainKeys(mine), theirKeys = chainKeys(theirs);
  const left = new Map<string, number>();
  for (const k of mineKeys) left.set(k, (left.get(k) ?? 0) + 1);
  let freshProc = 0;
  theirs.forEach((m, i) => {
    const n = left.get(theirKeys[i]) ?? 0;
    if (n > 0) { left.set(theirKeys[i], n - 1); return; }
    // restore mounts a /proc of the new PID namespace on top of ours, as unshare --mount-proc did
    if (ownPidNs && !freshProc && m.fstype === "proc" && m.mountpoint === "/proc" && m.opts === FRESH_PROC_OPTS) { freshProc++; return; }
    refuse(`with mount ${describe(m)} that criu-bun's namespace does not have`);
  });
  const missing = mine.find((_, i) => (left.get(mineKeys[i]) ?? 0) > 0 && left.set(mineKeys[i], 0));
  if (missing) refuse(`without criu-bun's mount ${describe(missing)}`);
  if (ownPidNs && !freshProc) refuse(`without a fresh /proc of its PID namespace on top of criu-bun's mounts (as unshare --mount-proc makes)`);
  for (const m of theirs) {
    const prop = m.optional.filter((o) => /^(shared|master):/.test(o) || o === "unbindable");
    if (prop.length) refuse(`where mount ${describe(m)} is not private (${prop.join(" ")})`);
  }
  log.debug(`process ${pid}: its mount namespace ${nsName} is a private copy of criu-bun's${theirs.length > mine.length ? " with a fresh /proc" : ""}`);
}

/** every mount's key: the signatures of the mounts from the root down to it */
function chainKeys(ms: MountInfo[]): string[] {
  const byId = new Map(ms.map((m) => [m.id, m]));
  return ms.map((m) => {
    const parts: string[] = [];
    for (let c: MountInfo | undefined = m, n = 0; c && n < ms.length; c = c.parent !== c.id ? byId.get(c.parent) : undefined, n++) parts.push(sig(c));
    return parts.reverse().join("\n");
  });
}

function safeLink(p: string): string {
  try { return readlinkSync(p); } catch { return "?"; }
}
