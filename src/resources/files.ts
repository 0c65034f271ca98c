// The fd table of a process: dump walks /proc/PID/fd and hands each fd to its kind (kinds.ts);
// restore opens every file once per file id in the target and dup3()s it into place.
import { statSync, fstatSync } from "../sys/fs";
import { listFds, parseFdinfo, readLink, readFdinfoAt } from "../sys/proc";
import { raiseNofile } from "./nofile";
import { CriuError, log, errorMessage } from "../log";
import { jitIfLarge, WORK_JIT } from "../jit";
import { syscall, addr, cstr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { closeFd, O, F } from "../sys/mem";
import { FD_KINDS, kindByType } from "./kinds";
import { regEntry } from "./reg";
import type {
  ImageSink,
  DumpOpts,
  DumpTree,
  DumpCtx,
  RestoreCtx,
  Holder,
  FdKind,
  SomeFdKind,
  InventoryInit,
  OpenByPath,
  TreeFiles,
  ProcessPaths,
} from "./fdkind";
import { checkSeek } from "./fdkind";
import type { BigIntStats } from "../sys/fs";
import { dataWords, type Injector } from "../ptrace/inject";
import { refuse, ANON_REFUSED } from "./unsupported";
import type * as S from "../images/schemas";
import { errnoText } from "../sys/errno";
import { fdLocks, type LockDump } from "./filelocks";
import { fd_types } from "../images/schemas";

/** fd_types of files.proto (generated): the kind of each fd in fdinfo and files.img */
export const FD_TYPE = fd_types;

export interface FdDump {
  fd: number;
  id: number;
  type: number;
  cloexec: boolean;
}
/** a file_entry as the dump builds it (its generated init type: a misspelled field does not compile) */
type FileDump = S.InitOf<typeof S.file_entrySchema> & { id: number; type: number };

/** Global file ids across the dump; a file description seen twice gets one id. */
export class FileTable {
  nextId = 1;
  files: FileDump[] = [];
  byKey = new Map<string, number>();
  /** where the tree's paths are seen from here (its own mount namespace: /proc/ROOT/root) */
  statRoot = "";
  /** unix sockets by inode (those of the tree, not USK_EXTERN entries for outside peers) */
  usk = new Map<number, FileDump>();
  /** ELF build-ids read so far (reg.ts regEntry), by file identity */
  buildIds = new Map<string, number[] | undefined>();
  add(key: string | null, make: (id: number) => FileDump): number {
    if (key && this.byKey.has(key)) return this.byKey.get(key)!;
    const id = this.nextId++;
    const f = make(id);
    this.files.push(f);
    if (key) this.byKey.set(key, id);
    if (f.usk && !((f.usk.uflags ?? 0) & 1)) this.usk.set(f.usk.ino!, f);
    return id;
  }
  byId(id: number): FileDump | undefined {
    const f = this.files[id - 1];
    return f?.id === id ? f : this.files.find((x) => x.id === id);
  }
  /** A path used by a mapping, cwd, root or exe (opened O_RDONLY/O_PATH at restore). */
  addPath(path: string, flags: number): number {
    let size: bigint | undefined, mode: number | undefined;
    try {
      const st = statSync(this.statRoot + path, { bigint: true });
      size = st.isFile() ? st.size : undefined;
      mode = Number(st.mode);
    } catch {}
    return this.add(`path:${path}:${flags}`, (id) => ({
      id,
      type: FD_TYPE.REG,
      reg: regEntry(id, path, flags, 0n, size, mode, this.statRoot + path),
    }));
  }
}

const O_CLOEXEC = 0o2000000;

/** the name of an anon_inode:[NAME] target (brackets off), undefined for any other */
function anonName(target: string): string | undefined {
  return target.startsWith("anon_inode:") ? target.slice(11).replace(/^\[|\]$/g, "") : undefined;
}
function describe(target: string): string {
  const anon = anonName(target);
  return anon !== undefined ? `${anon} (${target})` : `'${target}'`;
}

/** An fd already dumped, to find the same open file description through other fds and processes. */
interface FdTwin {
  pid: number;
  fd: number;
  dev: bigint;
  ino: bigint;
  id: number;
  type: number;
}

const KCMP_FILE = 0;
/**
 * The fds already dumped, grouped by what one open file description shows through every fd
 * (device, inode, offset, status flags), each group in the kernel's order of descriptions (kcmp
 * orders two files as well as it compares them): the description of a new fd is found with a
 * binary search, log n kcmp calls, so 10,000 fds on one file cost no more than 10,000 files.
 */
export class FdTwins {
  private groups = new Map<string, FdTwin[]>();
  /** the dumped fd that shares pid/fd's open file description, or where pid/fd goes in its group (add) */
  find(pid: number, fd: number, key: string): { twin?: FdTwin; list?: FdTwin[]; at: number } {
    const list = this.groups.get(key);
    if (!list) return { at: 0 };
    let lo = 0,
      hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1,
        x = list[mid];
      const r = syscall(NR.kcmp, x.pid, pid, KCMP_FILE, x.fd, fd);
      if (r === 0) return { twin: x, list, at: mid };
      if (r === 1)
        lo = mid + 1; // x's file sorts before ours
      else if (r === 2) hi = mid;
      else
        return {
          twin: list.find((y) => syscall(NR.kcmp, y.pid, pid, KCMP_FILE, y.fd, fd) === 0),
          list,
          at: list.length,
        }; // no order: compare each
    }
    return { list, at: lo };
  }
  add(key: string, where: { list?: FdTwin[]; at: number }, t: FdTwin) {
    if (where.list) where.list.splice(where.at, 0, t);
    else this.groups.set(key, [t]);
  }
}

/**
 * The fd kinds of one dump, each with the state its dumpBegin made for this dump (FdKind<D>),
 * handed to each of its dump hooks. Made by the dump before anything is frozen: a dump that fails
 * before the kinds began ends none of them.
 */
export class FdKindsDump {
  private states = new Map<SomeFdKind, unknown>();
  constructor(private kinds: SomeFdKind[] = FD_KINDS) {}
  /** every kind's look at the whole frozen tree, before its first fd */
  begin(tree: DumpTree, opts: DumpOpts) {
    for (const k of this.kinds) this.states.set(k, k.dumpBegin?.(tree, opts));
  }
  /** kind K's state for this dump, typed by K */
  stateOf<D>(k: FdKind<D, unknown>): D {
    if (!this.states.has(k))
      throw new CriuError("files", `${k.name}: used before the dump's kinds began (internal order)`);
    return this.states.get(k) as D;
  }
  /** the kind of an fd, by its target and stat */
  find(target: string, st: BigIntStats, fdPath: string, opts: DumpOpts, copy?: number): SomeFdKind | undefined {
    return this.kinds.find((k) => k.match(target, st, fdPath, opts, copy, this.states.get(k)));
  }
  dump(k: SomeFdKind, ctx: DumpCtx): number {
    return k.dump(ctx, this.states.get(k));
  }
  /** the files of a process outside its fd table (cwd, root, exe, mappings): their ids for fs-N.img */
  processFiles(p: ProcessPaths, files: FileTable, images: ImageSink): { cwdId: number; rootId: number } {
    for (const [k, s] of this.begun()) {
      const r = k.dumpProcessFiles?.(p, files, images, s);
      if (r) return r;
    }
    throw new CriuError("files", `process ${p.pid}: no fd kind keeps its cwd and root (internal)`);
  }
  /** inventory.img fields the kinds' objects need */
  inventory(): InventoryInit {
    return Object.assign({}, ...this.begun().map(([k, s]) => k.dumpInventory?.(s) ?? {}));
  }
  commit() {
    for (const [k, s] of this.begun()) k.dumpCommit?.(s);
  }
  release(how: "running" | "killed", runId?: string) {
    for (const [k, s] of this.begun()) k.dumpRelease?.(s, how, runId);
  }
  killed() {
    for (const [k, s] of this.begun()) k.dumpKilled?.(s);
  }
  /** a failed dump: each kind's own cleanup, one failing not stopping the others */
  abort() {
    for (const [k, s] of this.begun()) {
      try {
        k.dumpAbort?.(s);
      } catch (e) {
        log.warn(`${k.name}: ${errorMessage(e)}`);
      }
    }
  }
  private begun(): [SomeFdKind, unknown][] {
    return [...this.states];
  }
}

/** F_SETOWN / F_SETSIG / O_ASYNC live in the open file description: read through criu-bun's copy
 *  of the fd (dup). An owner other than the process itself (another process, a group, one of its
 *  threads) is refused. */
const own = new Int32Array(2); // scratch for every fd (its address taken at each call: see unix.ts getInt)
function readOwner(
  pid: number,
  dup: number,
  where: string,
  ownPidNs: () => boolean,
  tree: number[]
): S.fown_entry | undefined {
  own[0] = own[1] = 0;
  const r = syscall(NR.fcntl, dup, F.GETOWN_EX, addr(own));
  const sig = syscall(NR.fcntl, dup, F.GETSIG);
  const owner = r === 0 ? own[1] : 0;
  if (!owner && sig <= 0) return undefined;
  // a process of the tree, or a group whose leader is one: every process exists (same pid) before
  // restore sets owners. A thread does not yet (threads come after the files), nor what is outside
  const kind = own[0] === 1 ? "process" : own[0] === 2 ? "group" : "thread";
  if (owner && (own[0] === F.OWNER_TID || !(owner === pid || tree.includes(owner)))) {
    refuse("files", where, "fown", `owner ${kind} ${owner}${own[0] === 0 ? "" : ", not of the tree"}`);
  }
  if (owner && ownPidNs()) refuse("files", where, "fown", `owner ${owner} in a PID namespace`);
  const uids = new Uint32Array(2);
  if (owner && syscall(NR.fcntl, dup, F.GETOWNER_UIDS, addr(uids)) < 0)
    refuse("files", where, "fown", "F_GETOWNER_UIDS failed");
  return {
    uid: uids[0],
    euid: uids[1],
    signum: Math.max(sig, 0),
    pidType: owner ? own[0] : 0,
    pid: owner,
  } as S.fown_entry;
}

/** a file entry's sub-entry that carries its fown (reg, pipe, usk ...), and its open flags */
interface FownHolder {
  fown?: S.fown_entry | S.InitOf<typeof S.fown_entrySchema>;
  flags?: number;
}
/** the sub-entry of a file entry that carries its fown (reg, pipe, usk ...) */
function fownHolder(f: object): FownHolder | undefined {
  for (const v of Object.values(f) as unknown[]) if (v && typeof v === "object" && "fown" in v) return v as FownHolder;
  return undefined;
}

/**
 * Every fd of pid, in one pass whose cost is linear in the number of fds: one readlink, stat and
 * fdinfo read per fd, one pidfd for the process, one copy of each fd (pidfd_getfd) shared by the
 * owner check and the fd's kind and closed as soon as the fd is done, twins found by kcmp order.
 */
export function dumpFds(
  pid: number,
  table: FileTable,
  images: ImageSink,
  opts: DumpOpts,
  kinds: FdKindsDump,
  seen = new FdTwins(),
  locks: LockDump[] = []
): FdDump[] {
  const out: FdDump[] = [];
  const lockSeen = new Set<string>();
  const known = opts.links?.get(pid);
  const fdList = known ? known.map(([fd]) => fd) : listFds(pid);
  if (jitIfLarge(fdList.length, 256))
    log.debug(`JIT tier-up thresholds x${WORK_JIT} from here on (${fdList.length} fds)`);
  const targets = new Map(known ?? []);
  // criu-bun holds a copy of each fd for a moment, and kinds keep some (a TCP connection's, in
  // repair mode, until the dump ends): as much room as the hard limit gives
  raiseNofile(64, `dumping the ${fdList.length} fds of process ${pid}`, 0, fdList.length + 256);
  const pidfd = syscall(NR.pidfd_open, pid, 0);
  if (pidfd < 0) throw new CriuError("files", `process ${pid}: pidfd_open failed: ${errnoText(-pidfd)}`);
  // each fd's fdinfo opened relative to the process's fdinfo directory, held for the loop
  const fdinfoDir = syscall(NR.openat, -100, addr(cstr(`/proc/${pid}/fdinfo`)), O.RDONLY | O.DIRECTORY | O.CLOEXEC, 0);
  if (fdinfoDir < 0) {
    closeFd(pidfd);
    throw new CriuError("files", `process ${pid}: cannot open /proc/${pid}/fdinfo: ${errnoText(-fdinfoDir)}`);
  }
  let pidNs: boolean | undefined;
  const ownPidNs = () => (pidNs ??= readLink(`/proc/${pid}/ns/pid`) !== readLink("/proc/self/ns/pid"));
  try {
    for (const fd of fdList) {
      if (opts.skipFd?.(pid, fd)) continue;
      const where = `process ${pid} fd ${fd}`;
      let target: string, fdinfoText: string;
      try {
        target = targets.get(fd) ?? readLink(`/proc/${pid}/fd/${fd}`);
        fdinfoText = readFdinfoAt(fdinfoDir, fd);
      } catch {
        continue;
      }
      // a lease first: any open of the file from here (a build-id read) would break it, and the
      // lease break's SIGIO kills a holder without a handler (the target must run on)
      const lease = /^lock:\s*\d+:\s*LEASE\s+(\S+)\s+(\S+)/m.exec(fdinfoText);
      if (lease) refuse("files", where, "lease", `${lease[1].toLowerCase()} ${lease[2].toLowerCase()} lease`);
      const fdinfo = parseFdinfo(fdinfoText);
      const flags = parseInt(fdinfo.flags ?? "0", 8);
      const cloexec = (flags & O_CLOEXEC) !== 0;
      let dup = -1;
      const grab = () => {
        if (dup >= 0) return dup;
        dup = syscall(NR.pidfd_getfd, pidfd, fd, 0);
        if (dup < 0) throw new CriuError("files", `${where}: pidfd_getfd failed: ${errnoText(-dup)}`);
        return dup;
      };
      let st;
      // through criu-bun's copy of the fd (taken for its owner and kind anyway): fstat, cheaper
      // than a path walk through /proc/PID/fd/N; without a copy, through the path
      try {
        try {
          st = fstatSync(grab(), { bigint: true });
        } catch (e) {
          if (dup >= 0) throw e;
          st = statSync(`/proc/${pid}/fd/${fd}`, { bigint: true });
        }
      } catch (e) {
        if (dup >= 0) closeFd(dup);
        throw new CriuError("files", `${where}: cannot stat '${target}': ${errorMessage(e)}`);
      }
      // the same open file description seen through another fd: same id (kcmp says so)
      // (fds of one description show the same offset and flags: only those are compared)
      // (eventfds all share one anonymous inode: their id, as fdinfo shows it, tells them apart)
      const twinKey = `${st.dev}:${st.ino}:${fdinfo.pos}:${flags & ~O_CLOEXEC}${fdinfo["eventfd-id"] !== undefined ? `:e${fdinfo["eventfd-id"]}` : ""}`;
      const slot = seen.find(pid, fd, twinKey);
      const twin = slot.twin;
      if (twin) {
        if (dup >= 0) closeFd(dup);
        out.push({ fd, id: twin.id, type: twin.type, cloexec });
        log.debug(
          `${where}: '${target}' shares file id ${twin.id} with process ${twin.pid} fd ${twin.fd}${cloexec ? ", cloexec" : ""}`
        );
        fdLocks(pid, fd, fdinfoText, where, opts, lockSeen, twin.id, locks);
        continue;
      }
      try {
        let fown: S.fown_entry | undefined;
        try {
          fown = readOwner(pid, grab(), where, ownPidNs, opts.tree);
        } catch (e) {
          if (dup >= 0) throw e;
        } // no copy: no owner to read (as before)
        const fdPath = `/proc/${pid}/fd/${fd}`;
        const kind = kinds.find(target, st, fdPath, opts, dup);
        if (!kind && /^(cgroup|ipc|mnt|net|pid|pid_for_children|time|time_for_children|user|uts):\[\d+\]$/.test(target))
          refuse("files", where, "nsfs", `'${target}'`);
        // /dev/net/tun attached to an interface (fdinfo "iff:"): reopening the device would give an
        // fd attached to nothing (CRIU keeps it as a tunfile with the link); unattached, it is a
        // plain character device and reopened as one
        if (fdinfo.iff !== undefined) refuse("files", where, "tun", `'${fdinfo.iff}'`);
        const anon = ANON_REFUSED[anonName(target) ?? ""];
        if (!kind && anon) refuse("files", where, anon, target);
        if (!kind) throw new CriuError("files", `${where}: ${describe(target)} is not supported yet`);
        if (opts.nsMounts && kind.type === FD_TYPE.REG && !opts.nsMounts.has(Number(fdinfo.mnt_id))) {
          throw new CriuError(
            "files",
            `${where}: '${target}' is on a mount outside the tree's mount namespace (mnt_id ${fdinfo.mnt_id}); not supported`
          );
        }
        const id = kinds.dump(kind, {
          pid,
          fd,
          target,
          flags: flags & ~O_CLOEXEC,
          pos: BigInt(fdinfo.pos ?? "0"),
          st,
          fdinfo,
          fdinfoText,
          files: table,
          images,
          opts,
          where,
          grab,
        });
        if (fown) {
          const h = fownHolder(table.byId(id) ?? {});
          if (!h) refuse("files", where, "fown", `${kind.name} keeps no owner`);
          h.fown = fown;
          log.debug(`${where}: owner ${fown.pid} (uid ${fown.uid}/${fown.euid}), signal ${fown.signum}`);
        }
        seen.add(twinKey, slot, { pid, fd, dev: st.dev, ino: st.ino, id, type: kind.type });
        log.debug(
          `${where}: ${kind.name} '${target}' flags 0${(flags & ~O_CLOEXEC).toString(8)} pos ${fdinfo.pos ?? "0"} -> file id ${id}${cloexec ? ", cloexec" : ""}`
        );
        out.push({ fd, id, type: kind.type, cloexec });
        fdLocks(pid, fd, fdinfoText, where, opts, lockSeen, id, locks);
      } finally {
        if (dup >= 0) closeFd(dup);
      }
    }
  } finally {
    closeFd(pidfd);
    closeFd(fdinfoDir);
  }
  return out;
}

/** Checks of every fd's file before any process is created. */
export function precheckFds(
  fds: S.fdinfo_entry[],
  files: Map<number, S.file_entry>,
  dir: string,
  pid: number,
  tree: TreeFiles,
  opts: { shellJob?: boolean; inMountNs?: boolean; treePids?: Set<number> } = {}
) {
  for (const fe of fds) {
    const f = files.get(fe.id);
    const where = `process ${pid} fd ${fe.fd}`;
    if (!f) throw new CriuError("restore", `${where}: file id ${fe.id} is not in files.img`);
    const kind = kindByType(f.type);
    if (!kind) throw new CriuError("restore", `${where}: file kind ${f.type} is not supported yet`);
    kind.precheck?.(f, dir, where, opts, tree.kindState(kind));
  }
}

/** Inside process pid (through inj), a copy of another process's fd: the same open file description. */
export function importFd(inj: Injector, pid: number, owner: Holder, what: string): number {
  if (owner.pid === pid) return owner.fd;
  // pidfd_open runs inside the target: it needs the owner's PID in the target's namespace
  const pidfd = Number(inj.call(NR.pidfd_open, owner.vpid ?? owner.pid, 0));
  if (pidfd < 0) throw new CriuError("restore", `${what}: pidfd_open(${owner.pid}) failed: ${errnoText(-pidfd)}`);
  const fd = Number(inj.call(NR.pidfd_getfd, pidfd, owner.fd, 0));
  inj.call(NR.close, pidfd);
  if (fd < 0)
    throw new CriuError("restore", `${what}: pidfd_getfd of fd ${owner.fd} of ${owner.pid} failed: ${errnoText(-fd)}`);
  return fd;
}

/** Open every file in the target once per id, then dup3 each into its fd number. A file id that
 * another process of the tree already restored is shared with it (pidfd_getfd: same description). */
type CtxBase = Omit<RestoreCtx, "high" | "highMany" | "dupHigh" | "where" | "hold" | "fdFrom">;

/** A full RestoreCtx for one file of process base.pid; fds it makes go at or above floor. */
export function restoreCtx(base: CtxBase, floor: number, where: string): RestoreCtx {
  const inj = base.inj,
    tree = base.tree;
  const run = (calls: (number | bigint)[][]) =>
    base.batch ? base.batch(calls) : calls.map(([nr, ...a]) => inj.call(Number(nr), ...a));
  // each fd's copy and close in one stop where batches are at hand (no call needs another's result)
  const highMany = (fds: number[], what: string) => {
    const out = [...fds];
    const calls: (number | bigint)[][] = [],
      checks: ((r: bigint) => void)[] = [];
    fds.forEach((fd, i) => {
      if (fd < floor) moveHigh(fd, floor, what, (r) => (out[i] = r), calls, checks);
    });
    if (calls.length) run(calls).forEach((r, i) => checks[i](r));
    return out;
  };
  const high = (fd: number, what: string) => highMany([fd], what)[0];
  return {
    ...base,
    high,
    highMany,
    dupHigh(fd, what) {
      const r = Number(inj.call(NR.fcntl, fd, F.DUPFD_CLOEXEC, floor));
      if (r < 0) throw new CriuError("restore", `${what}: F_DUPFD of fd ${fd} failed: ${errnoText(-r)}`);
      return r;
    },
    where,
    hold(key, fd) {
      tree.held.set(key, { pid: base.pid, vpid: base.vpid, fd });
      const l = tree.toClose.get(base.pid) ?? [];
      l.push(fd);
      tree.toClose.set(base.pid, l);
    },
    fdFrom(key) {
      const h = tree.held.get(key);
      return h ? (h.pid === base.pid ? h.fd : high(importFd(inj, base.pid, h, where), where)) : undefined;
    },
  };
}

/** F_SETOWN_EX under the owner's uids (the kernel records them for its permission check), F_SETSIG, O_ASYNC. */
function restoreOwner(
  inj: Injector,
  scratch: (off: bigint, data: Uint8Array) => bigint,
  fd: number,
  h: FownHolder | undefined,
  where: string
) {
  const o = h?.fown as S.fown_entry | undefined; // a restore's entries are decoded messages: every field set
  const async = ((h?.flags ?? 0) & O.ASYNC) !== 0;
  if (!o?.pid && !o?.signum && !async) return;
  const ok = (what: string, r: bigint) => {
    if (r < 0n) throw new CriuError("restore", `${where}: ${what} failed: ${errnoText(-r)}`);
    return r;
  };
  if (o?.pid) {
    const swap = o.uid !== 0 || o.euid !== 0;
    if (swap) ok(`setresuid(${o.uid}, ${o.euid}) for F_SETOWN`, inj.call(NR.setresuid, o.uid, o.euid, -1));
    const ex = new Int32Array([o.pidType, o.pid]);
    const r = inj.call(NR.fcntl, fd, F.SETOWN_EX, scratch(0n, new Uint8Array(ex.buffer)));
    if (swap) ok("setresuid back to root", inj.call(NR.setresuid, 0, 0, -1));
    ok(`F_SETOWN_EX(${o.pid})`, r);
  }
  if (o?.signum) ok(`F_SETSIG(${o.signum})`, inj.call(NR.fcntl, fd, F.SETSIG, o.signum));
  if (async) {
    // off, then on through the final fd number: the signal's si_fd is the fd O_ASYNC was set through
    const fl = ok("F_GETFL", inj.call(NR.fcntl, fd, F.GETFL));
    ok("F_SETFL(~O_ASYNC)", inj.call(NR.fcntl, fd, F.SETFL, fl & ~BigInt(O.ASYNC)));
    ok("F_SETFL(O_ASYNC)", inj.call(NR.fcntl, fd, F.SETFL, fl | BigInt(O.ASYNC)));
  }
}

/** The lowest fd number the restore of these fds may use for its own temporary fds. */
export function fdFloor(fds: S.fdinfo_entry[]) {
  return fds.reduce((m, f) => Math.max(m, f.fd), 0) + 16;
}

/** fd's copy above floor (F_DUPFD_CLOEXEC) and its close, as two calls of a batch, and their results'
 *  checks; moved gets the new number. */
function moveHigh(
  fd: number,
  floor: number,
  what: string,
  moved: (fd: number) => void,
  calls: (number | bigint)[][],
  checks: ((r: bigint) => void)[]
) {
  calls.push([NR.fcntl, fd, F.DUPFD_CLOEXEC, floor], [NR.close, fd]);
  checks.push(
    (r) => {
      if (r < 0n) throw new CriuError("restore", `${what}: F_DUPFD failed: ${errnoText(-r)}`);
      moved(Number(r));
    },
    (r) => {
      if (r < 0n) throw new CriuError("restore", `${what}: close of fd ${fd} failed: ${errnoText(-r)}`);
    }
  );
}

/**
 * The files of these fds that their kind opens by a path (FdKind.openByPath; none another process
 * of the tree already made), opened in process base.pid in two stops: one batch of openat calls
 * (their fd numbers whatever the kernel gives), then one of lseek, F_DUPFD_CLOEXEC above floor and
 * close of each (numbers now known: no call depends on a result it has not seen). Every result is
 * checked, in order, the first failure named as restore() names it: the restore then fails and the
 * process, with whatever it opened, is killed. File id -> its fd above floor.
 */
function openByPath(base: CtxBase, sorted: S.fdinfo_entry[], floor: number): Map<number, number> {
  const out = new Map<number, number>();
  if (!base.batch || !base.batchData) return out;
  const plans: { id: number; where: string; p: OpenByPath; fd: number }[] = [];
  const seen = new Set<number>();
  for (const fe of sorted) {
    if (seen.has(fe.id) || base.tree.owners.has(fe.id)) continue;
    seen.add(fe.id);
    const f = base.files.get(fe.id)!,
      kind = kindByType(f.type)!;
    const p = kind.openByPath?.(f, base.opts ?? {}, base.tree.kindState(kind));
    if (p) plans.push({ id: fe.id, where: `process ${base.pid} fd ${fe.fd}`, p, fd: -1 });
  }
  if (!plans.length) return out;
  base.batchData(
    plans.map((x) => ({
      nr: NR.openat,
      data: dataWords(cstr(x.p.path)),
      args: (at) => [-100, at, x.p.flags, 0],
      check: (r) => {
        if (r < 0n) throw new CriuError("restore", `${x.where}: cannot open '${x.p.path}': ${errnoText(-r)}`);
        x.fd = Number(r);
      },
    }))
  );
  const calls: (number | bigint)[][] = [];
  const checks: ((r: bigint) => void)[] = [];
  for (const x of plans) {
    if (x.p.pos) {
      calls.push([NR.lseek, x.fd, x.p.pos, 0]);
      checks.push((r) => checkSeek(x.where, x.p, r));
    }
    if (x.fd >= floor) out.set(x.id, x.fd);
    else moveHigh(x.fd, floor, x.where, (fd) => out.set(x.id, fd), calls, checks);
  }
  if (calls.length) {
    const res = base.batch(calls);
    checks.forEach((c, i) => c(res[i]));
  }
  return out;
}

export function restoreFds(base: CtxBase, fds: S.fdinfo_entry[]) {
  const inj = base.inj;
  const sorted = [...fds].sort((a, b) => a.fd - b.fd);
  const floor = fdFloor(fds);
  const ids = new Set(fds.map((f) => f.id)).size;
  // the fds in place plus temporary ones above the floor (soft limit up to the hard one; the
  // target's own limits come back with its other rlimits, restoreTaskState). When the limit
  // cannot hold a temporary fd per file, files are put in place in batches (place below).
  const limit = raiseNofile(
    floor + 64,
    `restoring the ${fds.length} fds of process ${base.pid}`,
    base.pid,
    floor + ids + 64
  );
  const room = limit - floor - 32;
  const temps = new Map<number, number>();
  const created = new Set<number>();
  const closeLater = (base.state.closeLater = new Set<number>());
  const tree = base.tree;
  const byId = new Map<number, S.fdinfo_entry[]>();
  for (const fe of sorted) {
    const l = byId.get(fe.id);
    if (l) l.push(fe);
    else byId.set(fe.id, [fe]);
  }
  // dup3 every fd of the files made so far into its number; their temporary fds are closed
  // unless held for another process or closed later by their kind
  let pending: number[] = [];
  const placed = new Set<number>();
  // (in one batch of injected calls: the dup3s write fd numbers below the floor, the closes take
  // temporary ones above it, so no call depends on another's result; each dup3's result is checked
  // in order, the first failure named)
  const place = () => {
    const heldHere = new Set(tree.toClose.get(base.pid) ?? []);
    const calls: (number | bigint)[][] = [];
    const dups: { id: number; fe: S.fdinfo_entry; at: number }[] = [];
    for (const id of pending) {
      const t = temps.get(id)!;
      for (const fe of byId.get(id)!) {
        dups.push({ id, fe, at: calls.length });
        calls.push([NR.dup3, t, fe.fd, fe.flags & 1 ? O.CLOEXEC : 0]);
      }
      if (!heldHere.has(t) && !closeLater.has(t)) calls.push([NR.close, t]);
      placed.add(id);
    }
    const res = base.batch ? base.batch(calls) : calls.map((c) => inj.call(Number(c[0]), ...c.slice(1)));
    for (const { id, fe, at } of dups) {
      const r = res[at];
      if (r < 0n) throw new CriuError("restore", `process ${base.pid} fd ${fe.fd}: dup3 failed: ${errnoText(-r)}`);
      if (created.has(id) && !tree.owners.has(id)) tree.owners.set(id, { pid: base.pid, vpid: base.vpid, fd: fe.fd });
    }
    pending = [];
  };
  // the files opened by a path (openByPath): all of them at once, when every file of the process fits
  const early = tree.toClose.get(base.pid)?.length ?? 0;
  const opened = 2 * ids + early + closeLater.size + 32 < room ? openByPath(base, sorted, floor) : new Map();
  const imp = (owner: Holder, what: string) =>
    owner.pid === base.pid ? owner.fd : restoreCtx(base, floor, what).high(importFd(inj, base.pid, owner, what), what);
  for (const fe of sorted) {
    if (temps.has(fe.id)) continue;
    // fds above the floor now: temporary ones, those held for other processes, those closed later
    if (pending.length + (tree.toClose.get(base.pid)?.length ?? 0) + closeLater.size + 16 >= room) {
      log.debug(
        `process ${base.pid}: ${pending.length} file(s) put in place before more are made (RLIMIT_NOFILE ${limit})`
      );
      place();
    }
    const f = base.files.get(fe.id)!;
    const where = `process ${base.pid} fd ${fe.fd}`;
    const owner = tree.owners.get(fe.id);
    if (owner) {
      temps.set(fe.id, imp(owner, where));
      pending.push(fe.id);
      log.debug(
        `${where}: file id ${fe.id} taken from process ${owner.pid} fd ${owner.fd} (one open file description)`
      );
      continue;
    }
    const kind = kindByType(f.type)!;
    const fd = opened.get(fe.id) ?? kind.restore(restoreCtx(base, floor, where), f, fe, tree.kindState(kind));
    log.debug(`${where}: file id ${fe.id} (${kind.name}) created`);
    temps.set(fe.id, fd);
    pending.push(fe.id);
    created.add(fe.id);
  }
  place();
  // owner, signal and O_ASYNC of each description created here
  const owned = new Set<number>();
  for (const fe of sorted) {
    if (!created.has(fe.id) || owned.has(fe.id)) continue;
    owned.add(fe.id);
    restoreOwner(inj, base.scratch, fe.fd, fownHolder(base.files.get(fe.id)!), `process ${base.pid} fd ${fe.fd}`);
  }
  // second pass, once per file created here, now that every fd has its final number (epoll ...)
  const late = new Set<number>();
  for (const fe of sorted) {
    const f = base.files.get(fe.id)!,
      kind = kindByType(f.type)!;
    if (!kind.restoreLate || !created.has(fe.id) || late.has(fe.id)) continue;
    late.add(fe.id);
    kind.restoreLate(restoreCtx(base, floor, `process ${base.pid} fd ${fe.fd}`), f, fe.fd, tree.kindState(kind));
  }
  const heldHere = new Set(tree.toClose.get(base.pid) ?? []);
  for (const t of closeLater) if (!heldHere.has(t)) inj.call(NR.close, t);
}
