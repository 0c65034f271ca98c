// The restore pipeline: load and validate all images, check the PIDs are free, then build the
// process from a puppet. Any failure kills what was built.
import { capEffective, readStat, readStatus, sigkillPending } from "../sys/proc";
import { openDir, checkImagesTrusted, replaceFile } from "../images/safefs";
import { loadImages, type RestoreSet, type TaskImages } from "./images";
import {
  startPageWorkers,
  startPageWorkersEarly,
  stopPageWorkers,
  givesBackOwnPages,
  giveBackOwnPages,
} from "../codec/pipeline";
import { requireImages } from "./validate";
import { TaskBuilder } from "./task";
import { writeImage, plainEntry } from "../images/image";
import { presentRuns, PagemapTable } from "../images/pagemap";
import * as S from "../images/schemas";
import { precheckFds } from "../resources/files";
import {
  enterCgroups,
  precheckCgroups,
  removeCgroups,
  taskCgSet,
  applyCgRoots,
  type CgRoot,
} from "../resources/cgroup";
import { TreeFiles, type RestoreRun, type SomeFdKind } from "../resources/fdkind";
import { FD_KINDS, kindByType } from "../resources/kinds";
import { SysvShmRestore } from "../resources/sysvshm";
import { withNs } from "../sys/netns";
import { restoreIpcNs } from "../resources/ipcns";
import { unledGroup, sessionCreators, orphanGroups } from "../resources/taskattrs";
import { CriuError, log, phase, asCriuError, logFd, unalias, errorMessage } from "../log";
import { startWatchdog, stopWatchdog, tick, whilePaused, setStallHint } from "../watchdog";
import { fault, pausePoint } from "../fault";
import { NETWORK_LOCK, runLockTableName } from "../net/netlock";
import { create, isFieldSet } from "@bufbuild/protobuf";
import { inventory_entrySchema } from "../images/schemas";
import { precheckMountNs, type ExtMounts } from "../resources/mounts";
import { runHook as runHookNow, type Hooks } from "../hooks";
import { CLONE } from "../sys/flags";
import { LazyChannel, hasLazyPages, eagerParentRuns, lazyDaemonSocket } from "../resources/lazymem";
import { markDeduped, refuseDeduped } from "../codec/dedup";
import { warmParentPages } from "../codec/incremental";
import { errnoText, errnoOf } from "../sys/errno";

/** A hook waits for someone else (a script, the RPC client): that is not a stalled restore. */
function runHook(...a: Parameters<typeof runHookNow>) {
  return whilePaused(() => runHookNow(...a));
}

export interface RestoreOptions {
  /** root: where the saved mount namespace's root goes (--root); extMounts: key -> path of external mounts */
  root?: string;
  extMounts?: ExtMounts;
  /** the work dir (-W, RPC work_dir_fd): stats-restore goes there, as criu writes it (default: dir) */
  workDir?: string;
  dir: string;
  leaveStopped?: boolean;
  timeoutSec?: number;
  shellJob?: boolean;
  pidfile?: string;
  tcpClose?: boolean;
  manageCgroups?: boolean;
  /** --manage-cgroups=ignore: leave every task in the cgroups restore runs in */
  ignoreCgroups?: boolean;
  /** notifications (action scripts, RPC) at criu's points; each blocks until answered */
  hooks?: Hooks;
  /** CLONE_NEW* bits of namespaces created empty, their contents left to the caller (criu's empty_ns; only net) */
  emptyNs?: number;
  /** restore as root even images another user could have written (--trust-images) */
  trustImages?: boolean;
  /** rst_sibling: the restored root becomes a child of criu-bun's parent (the caller) */
  rstSibling?: boolean;
  /** inherit_fd: KEY ("pipe:[ino]") -> an fd of criu-bun's that takes that file's place */
  inheritFds?: Map<string, number>;
  /** cg_root: new roots for the tree's cgroups */
  cgRoots?: CgRoot[];
  /** --lazy-pages: memory left with the source comes on demand from the lazy-pages daemon (its socket in workDir) */
  lazyPages?: boolean;
  /**
   * with lazyPages: the pages of private anonymous memory that the parent images hold come from the
   * daemon too (one serving from these images: migrate's post-copy, lazymem.ts lazyParentRuns)
   */
  lazyParents?: boolean;
  /** --auto-dedup: the pages restored are punched out of the images (criu's restore --auto-dedup) */
  autoDedup?: boolean;
  /**
   * migrate: called once the tree is restored, before its connections leave repair mode and it is
   * let go; throwing fails the restore (the tree is killed, it never ran). The source commits
   * here to its copy.
   */
  commit?: () => void;
}

interface Restored {
  pid: number;
  ms: number;
  forkMs: number;
  pages: number;
  processes: number;
  /** a lazy restore: the channel to the daemon (wait for all memory with waitDone) and the restored pids */
  lazy?: LazyChannel;
  pids: number[];
}

/** Hooks whose answer changes nothing (criu only logs their failure): the tree goes on. */
function softHook(hooks: Hooks | undefined, action: "network-unlock" | "post-resume", pid: number) {
  try {
    runHook(hooks, action, { pid });
  } catch (e) {
    log.warn(`${action}: ${errorMessage(e)}`);
  }
}

/** Every fd kind's hook of one restore phase (FdKind.restore*), in kinds.ts order. */
function kinds(fn: (k: SomeFdKind) => void) {
  for (const k of FD_KINDS) fn(k);
}

/** The restore as fd kinds see it (their hooks' RestoreRun). */
function restoreRun(set: RestoreSet, o: RestoreOptions): RestoreRun {
  const inv = set.inventory,
    hooks = o.hooks;
  // the dump's network lock (CRIU writes network_lock_method always; criu-bun's older images not)
  const lockMethod = isFieldSet(inv, inventory_entrySchema.field.networkLockMethod) ? inv.networkLockMethod : undefined;
  // a hook waits for someone else: the watchdog is paused meanwhile (runHook)
  const kindHooks: Hooks | undefined = hooks && {
    run: (a, c) => whilePaused(() => hooks.run(a, c)),
    wants: hooks.wants && ((a) => hooks.wants!(a)),
  };
  const run: RestoreRun = {
    dir: set.dir,
    inventory: inv,
    files: set.files,
    tcpClose: o.tcpClose,
    hooks: kindHooks,
    tree: new TreeFiles(),
    lockMethod,
    lockTable:
      lockMethod === NETWORK_LOCK.NFTABLES && inv.dumpCriuRunId ? runLockTableName(inv.dumpCriuRunId) : undefined,
  };
  // each kind's state for this restore, its own (inet: a dump made with --network-lock skip has
  // nothing to lock or unlock; reg: the images' deleted files), before precheck asks them
  run.tree.beginKinds(FD_KINDS, run);
  return run;
}

/** Everything that can be checked before creating a process. */
function precheck(set: RestoreSet, o: RestoreOptions, run: RestoreRun) {
  requireImages(run, set.files);
  kinds((k) => k.precheckTree?.(run));
  // a container's mounts: the root file system and every external mount must be there
  if (set.mounts)
    set.mountOpts = {
      root: precheckMountNs(set.mounts, set.dir, { root: o.root, ext: o.extMounts ?? { map: new Map() } }),
      ext: o.extMounts ?? { map: new Map() },
    };
  if (o.cgRoots?.length && !o.ignoreCgroups)
    applyCgRoots(set.cgroups, taskCgSet(set.tasks[0]?.cores.get(set.tasks[0].pid)), o.cgRoots, set.inventory.rootCgSet);
  const used = new Set(
    set.tasks.flatMap((t) => [
      taskCgSet(t.cores.get(t.pid)) ?? 0,
      ...[...t.cores.values()].map((c) => c.threadCore?.cgSet ?? 0),
    ])
  );
  if (!o.ignoreCgroups) precheckCgroups([...set.cgroups.values()], used, !!o.manageCgroups);
  checkSessions(set.tasks, !!o.shellJob);
  // /proc/PID paths of the tree's own processes exist once they do (their fds are opened after every process is made)
  const treePids = new Set(set.newPidNs ? [] : set.tasks.map((t) => t.pid));
  // each mapped file once (a library is mapped four or five times: its stat and ELF build-id do not change)
  const checked = new Set<number>();
  for (const t of set.tasks) {
    // in a fresh PID namespace every PID is free; here they must be
    if (!set.newPidNs)
      for (const tid of t.tids)
        if (!pidFree(tid)) throw new CriuError("restore", `PID ${tid} is in use${pidUser(tid)}`);
    if (!set.newPidNs && t === set.tasks[0])
      for (const g of orphanGroups(set.tasks, !!o.shellJob).keys())
        if (!pidFree(g))
          throw new CriuError("restore", `PID ${g} (process group ${g}, whose leader is gone) is in use${pidUser(g)}`);
    if (t.zombie) continue;
    precheckFds(t.fds, set.files, set.dir, t.pid, run.tree, {
      shellJob: o.shellJob,
      inMountNs: !!set.mounts,
      treePids,
    });
    for (const v of t.mm.vmas) {
      if (v.status & ((1 << 6) | (1 << 7))) {
        const f = set.files.get(Number(v.shmid));
        if (!f?.reg)
          throw new CriuError(
            "restore",
            `process ${t.pid}: mapping at 0x${v.start.toString(16)} refers to file id ${v.shmid}, not in files.img`
          );
        if (checked.has(f.id)) continue;
        checked.add(f.id);
        const k = kindByType(f.type);
        k?.precheckMapped?.(
          f,
          `process ${t.pid} mapping at 0x${v.start.toString(16)}`,
          { inMountNs: !!set.mounts },
          run.tree.kindState(k)
        );
      }
    }
  }
}

/**
 * A PID held by a process on its way out (killed, exiting, or a zombie its parent has not reaped
 * yet: PID 1 here reaps orphans only every second or two) is given a few seconds to go; a PID of
 * a live process is in use at once.
 */
function pidFree(pid: number): boolean {
  const deadline = Date.now() + 10000;
  for (;;) {
    let st;
    try {
      st = readStat(pid);
    } catch {
      return true;
    }
    let killed = false;
    try {
      killed = sigkillPending(readStatus(pid));
    } catch {}
    const dying = st.state === "Z" || st.state === "X" || (st.flags & 0x4) /* PF_EXITING */ !== 0 || killed;
    if (!dying || Date.now() > deadline) return false;
    tick();
    Bun.sleepSync(10);
  }
}
function pidUser(pid: number): string {
  try {
    const st = readStat(pid);
    return st.state === "Z" ? ` (by a zombie '${st.comm}' not reaped in 10 s)` : ` (by '${st.comm}')`;
  } catch {
    return "";
  }
}

/** Privileges restore cannot do without, said before anything is read (as an unprivileged user). */
function needPrivileges() {
  const eff = capEffective();
  if (eff === undefined) return;
  const has = (cap: number) => (eff >> BigInt(cap)) & 1n;
  if (!has(21 /* SYS_ADMIN */) && !has(40 /* CHECKPOINT_RESTORE */)) {
    throw new CriuError(
      "restore",
      "giving processes their old PIDs (clone3 set_tid) and their memory layout (PR_SET_MM) needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN, which this user does not have; run the restore as root"
    );
  }
}

export function restoreProcesses(o: RestoreOptions): Restored {
  needPrivileges();
  // every image is read through an fd held on the directory (see safefs.ts), checked first
  let h;
  try {
    h = openDir(o.dir);
  } catch (e) {
    throw new CriuError(
      "restore",
      `images directory '${o.dir}' ${errnoOf(e) === 2 /* ENOENT */ ? "does not exist" : "cannot be opened"}: ${errnoText(e)}`
    );
  }
  try {
    if (!o.trustImages) checkImagesTrusted(h.path);
    return restoreFrom({ ...o, dir: h.path });
  } catch (e) {
    if (e instanceof Error) e.message = unalias(e.message); // the directory's name, not its fd
    throw e;
  } finally {
    h.close();
  }
}

/**
 * migrate's destination during pre-copy: would these (pre-dump) images restore? Loads and checks
 * them as a restore does first, creating nothing; throws what a restore would. Beside telling early
 * what would fail, it readies what the restore after the freeze uses (code compiled, the mapped
 * files' pages in the page cache), so that restore is faster. warmParents: these images are the
 * parent of a post-copy restore to come (lazyParents): the pages it will write itself from them (the
 * stored pages of memory that is not private anonymous) are read ahead (warmParentPages).
 */
export function checkRestorable(o: RestoreOptions, warmParents = false) {
  needPrivileges();
  const h = openDir(o.dir);
  try {
    if (!o.trustImages) checkImagesTrusted(h.path);
    const set = loadImages(h.path);
    const po = { ...o, dir: h.path, ignoreCgroups: true, cgRoots: undefined };
    // (first: the pages do not depend on what the check may refuse, a file the round caught in passing)
    if (warmParents)
      warmParentPages(
        h.path,
        set.tasks
          .filter((t) => !t.zombie)
          .map((t) => ({
            pid: t.pid,
            // every page these images hold, as the next round's PE_PARENT runs would name them
            runs: eagerParentRuns(t.mm.vmas, t.pagemap, true),
          }))
      );
    precheck(set, po, restoreRun(set, po));
  } catch (e) {
    if (e instanceof Error) e.message = unalias(e.message);
    throw e;
  } finally {
    h.close();
  }
}

function restoreFrom(o: RestoreOptions): Restored {
  const t0 = performance.now();
  // no progress for --timeout seconds (default 10) ends the restore, whatever it waits for
  startWatchdog((o.timeoutSec ?? 10) * 1000, logFd());
  try {
    return restoreAll(o, t0);
  } finally {
    stopPageWorkers();
    stopWatchdog();
  }
}

function restoreAll(o: RestoreOptions, t0: number): Restored {
  // a large restore's page Workers start while the images load (not for a post-copy restore)
  if (!(o.lazyPages && o.lazyParents)) startPageWorkersEarly(o.dir);
  // images a dedup took pages out of are only the parents of a later dump's
  refuseDeduped(o.dir);
  phase("loading images");
  const set = loadImages(o.dir);
  const run = restoreRun(set, o);
  const treeFiles = run.tree;
  const state = (k: SomeFdKind) => treeFiles.kindState(k);
  phase("checking images");
  // memory left with the source of a lazy dump: only a lazy restore can get it (said before what
  // the host lacks: no other check makes such images restorable)
  const lazyTask = set.tasks.find((t) => !t.zombie && hasLazyPages(t.pm));
  if (lazyTask && !o.lazyPages)
    throw new CriuError(
      "restore",
      `process ${lazyTask.pid}: its private memory stayed with the source (dump --lazy-pages); restore it with --lazy-pages and a running lazy-pages daemon`
    );
  // and without its daemon nothing else matters: said before the host's checks (files, ...)
  if (lazyTask) lazyDaemonSocket(o.workDir ?? o.dir);
  precheck(set, o, run);
  if (o.lazyPages && !lazyTask && !o.lazyParents)
    log.info("lazy pages: the images hold every page; nothing to take lazily");
  if ((o.emptyNs ?? 0) & ~CLONE.NEWNET)
    throw new CriuError(
      "restore",
      `empty_ns 0x${(o.emptyNs!).toString(16)}: only the network namespace (CLONE_NEWNET) can be left empty`
    );
  if ((o.emptyNs ?? 0) & CLONE.NEWNET) set.emptyNetNs = true;
  set.rstSibling = !!o.rstSibling;
  set.lazyParents = !!(o.lazyPages && o.lazyParents);
  if (o.autoDedup) {
    set.autoDedup = true;
    // before the first punch: a restore that fails after it leaves images marked as used up
    markDeduped(o.dir, "restore --auto-dedup punched the pages it restored out of these images");
  }
  if (o.inheritFds?.size) set.inheritFds = o.inheritFds;
  if (set.extNetKey !== undefined && !o.inheritFds?.has(set.extNetKey)) {
    throw new CriuError(
      "restore",
      `the tree's network namespace was external (key ${set.extNetKey}): give the namespace to join as inherit_fd ${set.extNetKey} (--inherit-fd fd[N]:${set.extNetKey})`
    );
  }
  // the page Workers start while the processes are created (not for a post-copy restore: most
  // of its memory comes later, from the lazy-pages daemon)
  if (!set.lazyParents) {
    const bytes = set.tasks.reduce((sum, t) => sum + (t.zombie ? 0 : presentRuns(t.pm).bytes), 0);
    if (givesBackOwnPages(bytes)) giveBackOwnPages("before the page Workers start");
    startPageWorkers(bytes);
  }
  runHook(o.hooks, "pre-restore");
  const ownNs = !!(set.newPidNs || set.newMntNs || set.newNetNs || set.newIpcNs || set.uts || set.timens);
  const root = set.tasks[0];
  const builders: TaskBuilder[] = [];
  const helpers: TaskBuilder[] = [];
  /** cgroups this restore made (--manage-cgroups): removed if it fails */
  const cgMade: string[] = [];
  const byPid = new Map<number, TaskBuilder>();
  const inTree = new Set(set.tasks.map((t) => t.pid));
  let forkMs = 0;
  const sysv = new SysvShmRestore(set.dir, !!set.newIpcNs, set.newIpcNs ? set.tasks[0].ids?.ipcNsId : undefined);
  // the daemon is reached before anything is created
  const lazy = o.lazyPages ? new LazyChannel(o.workDir ?? o.dir) : undefined;
  try {
    // SysV segments exist before anyone attaches them: here, or in the tree's new IPC namespace
    const ipc = <T>(fn: () => T): T => (set.newIpcNs && builders[0] ? withNs(builders[0].pid, "ipc", fn) : fn());
    sysv.inHost();
    // 1. every process, parents before children (pstree order), each with its memory; a process
    // born in a session other than its parent's is made by that session's zombie leader (its exit
    // below hands it to its parent: taskattrs.ts sessionCreators), after that leader
    const made = treeCreators(set.tasks);
    if ("why" in made) throw new CriuError("restore", `process ${made.t.pid}: ${made.why}`);
    const creators = made.creators;
    const order: TaskImages[] = [];
    {
      const done = new Set<number>();
      let left = set.tasks;
      while (left.length) {
        const rest = left.filter((t) => t !== root && !done.has(creators.get(t.pid)!));
        for (const t of left)
          if (!rest.includes(t)) {
            order.push(t);
            done.add(t.pid);
          }
        if (rest.length === left.length)
          throw new CriuError("restore", `process ${rest[0].pid}: the process that must create it is never made`);
        left = rest;
      }
    }
    for (const t of order) {
      phase("creating the process", t.pid);
      const b = new TaskBuilder(set, t, treeFiles);
      builders.push(b);
      byPid.set(t.pid, b);
      if (t === root) {
        b.createFromPuppet();
        if (set.newIpcNs) {
          restoreIpcNs(b.pid, set.ipcNs!, "limits");
          sysv.inNewNs(ipc);
          restoreIpcNs(b.pid, set.ipcNs!, "objects");
          restoreIpcNs(b.pid, set.ipcNs!, "next-ids");
        }
        if (ownNs) {
          runHook(o.hooks, "setup-namespaces", { pid: b.pid });
          runHook(o.hooks, "post-setup-namespaces", { pid: b.pid });
        }
      } else {
        const via = creators.get(t.pid)!;
        b.createFromParent(byPid.get(t.ppid)!, via !== t.ppid ? byPid.get(via) : undefined);
      }
      const cg = taskCgSet(t.cores.get(t.pid));
      if (cg && !o.ignoreCgroups && set.cgroups.has(cg))
        enterCgroups(b.pid, set.cgroups.get(cg)!, !!o.manageCgroups, cgMade);
      b.restoreSession(inTree);
      // memory before the children are forked from it: what they share stays shared
      phase("restoring memory", t.pid);
      if (!t.zombie) b.restoreMemory();
    }
    // process groups: leaders first; a group whose leader is gone gets a helper of its number,
    // made by its first member (so in its session), as CRIU does: it leads the group while the
    // members join, then exits and is reaped by that member
    for (const [pgid, first] of orphanGroups(set.tasks, !!o.shellJob)) {
      const h = new TaskBuilder(set, groupHelperImages(pgid, first), treeFiles);
      helpers.push(h);
      h.createFromParent(byPid.get(first.pid)!, undefined, 0);
      h.restoreGroup();
    }
    for (const b of builders) if (b.t.pgid === b.t.pid) b.restoreGroup();
    const helped = new Set(helpers.map((h) => h.t.pid));
    for (const b of builders)
      if (b.t.pgid !== b.t.pid && (inTree.has(b.t.pgid) || helped.has(b.t.pgid))) b.restoreGroup();
    for (const h of helpers) h.endGroupHelper(byPid.get(h.t.ppid)!);
    helpers.length = 0;
    for (const b of builders) if (b.t.zombie) b.becomeZombie();
    // each process made by its session's leader is its parent's now, or the restore cannot be right
    for (const b of builders) if (creators.get(b.t.pid) !== b.t.ppid && b !== builders[0]) b.checkHandedOver();
    forkMs = performance.now() - t0;
    // 2. each live process gets its memory, files, state and threads
    // lazy memory: every process exists (no fork event is left to answer), none has dropped its
    // privileges yet (the fork event needs CAP_SYS_PTRACE): each gets its userfaultfd now, and from
    // here its faults are the daemon's
    if (lazy)
      for (const b of builders) {
        if (b.t.zombie) {
          lazy.sendZombie(b.t.pid);
          continue;
        }
        phase("registering lazy memory", b.t.pid);
        const fd = b.lazyUffd();
        if (fd !== undefined) lazy.send(b.t.pid, fd, b.pid, b.t.pagemap, set.lazyParents ? b.t.mm.vmas : undefined);
      }
    // from here a process touching its lazy memory waits for the daemon
    if (lazy)
      setStallHint("the lazy memory of the restored processes comes from the lazy-pages daemon; is it still there?");
    for (const b of builders) {
      if (b.t.zombie) continue;
      phase("restoring mm fields", b.t.pid);
      b.restoreMmFields();
      phase("restoring files", b.t.pid);
      b.restoreFiles({ shellJob: o.shellJob });
      fault("restore-files", "restore");
      phase("restoring task state", b.t.pid);
      b.restoreTaskState();
      phase("restoring threads", b.t.pid);
      b.createThreads();
      // a thread in cgroups of its own (a cgroup v1 hierarchy's tasks, a threaded cgroup v2)
      if (!o.ignoreCgroups) {
        const pcg = taskCgSet(b.t.cores.get(b.t.pid));
        for (const tid of b.tids) {
          const tcg = b.t.cores.get(b.vtid(tid))?.threadCore?.cgSet;
          if (tcg && tcg !== pcg && set.cgroups.has(tcg))
            enterCgroups(tid, set.cgroups.get(tcg)!, !!o.manageCgroups, cgMade, true);
        }
      }
      // its connections stay in repair mode until everything else is done: criu-bun takes a copy
      // of each now (before the process's own credentials), and leaves repair mode through it
      // last, so that a restore failing or killed before then closes them silently
      kinds((k) => k.restoreProcessFiles?.(b.pid, state(k)));
      b.restoreThreadState();
      phase("restoring signals and timers", b.t.pid);
      b.restoreSignalsAndTimers();
    }
    // every process has its files (a terminal's new master to the caller, controlling terminals taken again)
    const procs = builders
      .filter((b) => !b.t.zombie)
      .map((b) => ({
        pid: b.pid,
        vpid: b.t.pid,
        sid: b.t.sid,
        inj: b.inj!,
        str: (s: string) => b.str(s),
        scratch: (off: bigint, data: Uint8Array) => b.scratchWrite(off, data),
      }));
    kinds((k) => k.restoreFilesDone?.(run, procs, state(k)));
    for (const key of o.inheritFds?.keys() ?? []) {
      if (!treeFiles.taken.has(`inherit:${key}`))
        log.info(`inherit_fd '${key}': no file of the tree is that; the fd is not used`);
    }
    for (const b of builders) if (!b.t.zombie) b.closeHeld();
    // 3. registers, trampolines gone; 4. all go at once
    for (const b of builders)
      if (!b.t.zombie) {
        phase("restoring registers", b.t.pid);
        b.finish();
      }
    fault("restore-end", "restore");
    sysv.finish(ipc);
    // shm_rmid_forced last: set earlier it would destroy the segments not attached yet
    if (set.newIpcNs) restoreIpcNs(builders[0].pid, set.ipcNs!, "after-attach");
    // the pidfile before anything runs: failing to write it fails the restore
    if (o.pidfile) {
      try {
        replaceFile(o.pidfile, `${builders[0].pid}`);
      } catch (e) {
        throw new CriuError("restore", `cannot write pidfile ${o.pidfile}: ${errnoText(e)}`);
      }
    }
    runHook(o.hooks, "post-restore", { pid: builders[0].pid });
    if (set.newNetNs) softHook(o.hooks, "network-unlock", builders[0].pid);
    for (const b of builders) if (!b.t.zombie) b.checkStopSignal(o.leaveStopped);
    runHook(o.hooks, "pre-resume", { pid: builders[0].pid });
    // migrate: the source commits to this copy here (a failure now kills the copy, which never ran,
    // and the source resumes), before the connections can speak (out of repair, unlocked)
    o.commit?.();
    // the last steps that can fail (inet: the dump's network lock goes, connections out of repair
    // mode), then reg's link_remap names go: the deleted files are open again
    kinds((k) => k.restoreCommit?.(state(k)));
  } catch (e) {
    const err = asCriuError(e, "restore"); // names the phase it happened in, before cleanup moves on
    phase("cleaning up a failed restore");
    kinds((k) => {
      try {
        k.restoreAbort?.(state(k));
      } catch (x) {
        log.warn(`${k.name}: ${asCriuError(x, "restore").message}`);
      }
    });
    for (const b of [...builders, ...helpers].reverse()) {
      try {
        b.abort();
      } catch (x) {
        log.warn(`cleanup of process ${b.t.pid}: ${asCriuError(x, "restore").message}`);
      }
    }
    sysv.drop();
    removeCgroups(cgMade);
    lazy?.close(); // before the tree runs: the daemon gives up and the dump resumes its source
    throw err;
  }
  for (const b of [...builders].reverse()) if (!b.t.zombie) b.release({ leaveStopped: o.leaveStopped });
  kinds((k) => k.restoreReleased?.(state(k)));
  lazy?.released();
  pausePoint("restore-released");
  kinds((k) => k.restoreEnd?.(state(k)));
  softHook(o.hooks, "post-resume", builders[0].pid);
  const t = root;
  // the root as criu-bun sees it (in a fresh PID namespace it is 1 inside, something else here)
  const hostPid = builders[0].pid;
  const ms = performance.now() - t0;
  const pages = set.tasks.reduce((n, x) => n + presentRuns(x.pm).bytes / 4096, 0);
  try {
    writeImage(o.workDir ?? o.dir, "stats-restore", "STATS", [
      plainEntry(S.stats_entrySchema, {
        restore: {
          pagesCompared: 0n,
          pagesSkippedCow: 0n,
          forkingTime: Math.round(forkMs * 1000),
          restoreTime: Math.round(ms * 1000),
          pagesRestored: BigInt(pages),
        },
      }),
    ]);
  } catch (e) {
    log.warn(`cannot write stats-restore: ${errorMessage(e)}`);
  }
  log.info(`Restored ${set.tasks.length} process(es), root ${t.pid}, in ${ms.toFixed(1)} ms`);
  return {
    pid: hostPid,
    ms,
    forkMs,
    pages,
    processes: set.tasks.length,
    lazy,
    pids: builders.filter((b) => !b.t.zombie).map((b) => b.pid),
  };
}

/** A process group helper (orphanGroups) as a task of the images: a child of the group's first
 *  member in its session, pid the group's number, leading its group, exiting 0. */
function groupHelperImages(pgid: number, first: TaskImages): TaskImages {
  return {
    pid: pgid,
    ppid: first.pid,
    pgid,
    sid: first.sid,
    tids: [pgid],
    cores: new Map(),
    zombie: { exitCode: 0 },
    mm: create(S.mm_entrySchema),
    pm: PagemapTable.empty,
    pagemap: [],
    pagesFile: "",
    fs: create(S.fs_entrySchema),
    fds: [],
  };
}

/** Which process creates each one (taskattrs.ts sessionCreators), or the first that cannot be made in its session. */
function treeCreators(tasks: TaskImages[]) {
  return sessionCreators(
    tasks.map((t) => ({
      pid: t.pid,
      ppid: t.ppid,
      sid: t.sid,
      zombie: !!t.zombie,
      subreaper: !!t.cores.get(t.pid)?.tc?.childSubreaper,
    }))
  );
}

/** Sessions and process groups led from outside the images: refused before anything is made, as
 *  CRIU's restore refuses them (taskattrs.ts unledGroup). */
function checkSessions(tasks: TaskImages[], shellJob: boolean) {
  const c = treeCreators(tasks);
  if ("why" in c) throw new CriuError("restore", `process ${c.t.pid}: ${c.why}: it cannot be made in that session`);
  // (a group whose leader is gone is made with a helper: restoreAll)
  const u = unledGroup(tasks, shellJob, () => true);
  if (!u) return;
  const { t, what } = u,
    id = what === "session" ? t.sid : t.pgid;
  if (t === tasks[0]) {
    throw new CriuError(
      "restore",
      what === "session"
        ? `process ${t.pid} was not a session leader (session ${id}); restore it with --shell-job to put it in criu-bun's session`
        : `process ${t.pid} was not a process group leader (group ${id}); restore it with --shell-job to put it in criu-bun's group`
    );
  }
  throw new CriuError(
    "restore",
    `process ${t.pid}: its ${what === "session" ? "session" : "process group"} ${id} is led by a process that is not in the images`
  );
}
