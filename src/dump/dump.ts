// The dump pipeline: freeze the process, collect its state, write CRIU images, then kill,
// release (-R) or leave it stopped (-s). Any failure before the end releases the process
// untouched (registers were restored after every injection).
import { existsSync, readlinkSync } from "../sys/fs";
import { join } from "../sys/path";
import { dedupChain } from "../codec/dedup";
import { DumpStage, under, openDir, type DirHandle } from "../images/safefs";
import { SeccompChains } from "../resources/seccomp";
import { dumpIpcNs } from "../resources/ipcns";
import {
  freezeProcess,
  releaseProcess,
  seizeFrozen,
  releaseSeized,
  ExitedWhileFreezing,
  type FrozenProcess,
} from "../ptrace/seize";
import { wait4Raw, sleepUs, W, WNOHANG, __WALL } from "../sys/ptrace";
import { Injector, RemoteMem } from "../ptrace/inject";
import { startPuppet, PUPPET_SYSCALL } from "../ptrace/puppet";
import { syscall, killAndRelease } from "../sys/syscall";
import { closeFd, O } from "../sys/mem";
import { thisThreadOnCpus } from "../sys/affinity";
import { NR } from "../sys/nr";
import { CLONE } from "../sys/flags";
import { dumpTask, type TaskDump } from "./task";
import { startPageWorkers, stopPageWorkers, giveBackOwnPages, givesBackOwnPages } from "../codec/pipeline";
import { startVmaReader, vmaReaderStarted } from "../codec/vmareader";
import { dumpMemory, writePagemap, type MemStats } from "../codec/memdump";
import { MemTracker } from "../resources/memtrack";
import { completeVmas, logVmas, prepareVmFlags, vmFlagsFromBpf, type DumpedVma } from "../resources/memory";
import type { PagemapRun } from "../images/pagemap";
import { dumpFds, FileTable, FdTwins, FdKindsDump, type FdDump } from "../resources/files";
import type { LockDump } from "../resources/filelocks";
import { readStat, readStatus, listChildren, listTids, fdLinks, sigkillPending } from "../sys/proc";
import { ImageSink, type DumpOpts } from "../resources/fdkind";
import { dumpSharedVmas, checkHostSysvAttaches } from "../resources/sysvshm";

import { CgroupSets, ROOT_CG_SET, freezeCgroup } from "../resources/cgroup";
import { plainEntry, writeImage, writeImageBytes } from "../images/image";
import { writeManifest } from "../images/manifest";
import * as S from "../images/schemas";
import { CriuError, log, phase, unalias, aliasPath, errorMessage } from "../log";
import { fault, pausePoint } from "../fault";
import { PageServerClient, serveLazyPages, type LazySource } from "../net/pageserver";
import { linkParent } from "../codec/incremental";
import { dumpRunId, NETWORK_LOCK } from "../net/netlock";
import { runHook, type Hooks } from "../hooks";
import { dumpMountNs, readMountinfo, type ExtMounts } from "../resources/mounts";
import { refuse } from "../resources/unsupported";
import { giveBackSigmask } from "../ptrace/heldmask";
import { unledGroup, sessionCreators } from "../resources/taskattrs";
import { mmVmaEntries } from "../resources/mm";
import { NsView, nsIds, writeTreeNsImages, writeRootNsImages, ROOT_IDS, IPC_NS_ID } from "../resources/namespaces";
import { E, errnoText } from "../sys/errno";

interface DumpOptions {
  pid: number;
  dir: string;
  leaveRunning?: boolean;
  leaveStopped?: boolean;
  shellJob?: boolean;
  timeoutSec?: number;
  displayStats?: boolean;
  compress?: boolean;
  tcpEstablished?: boolean;
  tcpClose?: boolean;
  skipInFlight?: boolean;
  extUnixSk?: boolean;
  fileLocks?: boolean;
  /** --ghost-limit (bytes, default reg.ts GHOST_LIMIT) and --link-remap: how deleted files are kept */
  ghostLimit?: number;
  linkRemap?: boolean;
  /** the images of a previous (pre-)dump, relative to dir: unchanged pages are not stored again */
  prevImagesDir?: string;
  /** --auto-dedup: the pages this dump stores are punched out of its parent images once it is in place */
  autoDedup?: boolean;
  /** a pre-dump: memory tracking is armed at its end (memtrack.ts) */
  preDump?: boolean;
  /** --track-mem: a -R dump arms memory tracking too, for a later dump on top of it */
  trackMem?: boolean;
  /** --network-lock skip: no network lock (inventory network_lock_method 2, as criu writes) */
  networkLockSkip?: boolean;
  /** send pages to a page server instead of writing them here */
  pageServer?: { address: string; port: number };
  /** the same, over a connection the caller made (migrate's control channel) */
  psClient?: PageServerClient;
  /**
   * migrate: once the images are in dir, with the tree still frozen (and its connections still
   * locked), hand them over. Returning kills the tree as a dump does; throwing lets it go on
   * running untouched (connections out of repair, lock removed) and fails the dump with that error.
   * frozenAt: performance.now() when freezing began. commit(): the caller is about to let the
   * tree's copy run elsewhere: from then on this tree is never resumed (a failure leaves it
   * stopped, and a SIGSTOP is queued to each process now, so that even criu-bun dying leaves it
   * stopped rather than running beside its copy).
   */
  handOff?: (dir: string, frozenAt: number, commit: () => void) => void;
  /**
   * migrate's post-copy from the source: after handOff returned (committed), serve what the copy
   * still needs from the frozen tree; returning kills the tree, throwing leaves it stopped
   */
  afterHandOff?: () => void;
  /**
   * --lazy-pages: private anonymous memory is not written but served from the frozen tree on
   * address:port (lazymem.ts); once it listens, the status-ready hook runs (criu's status_ready: an
   * action script, or the RPC notification runc waits for) and then ready (--status-fd's byte)
   */
  lazyPages?: { address: string; port: number; ready?: () => void };
  /**
   * filled by the dump: the lazy runs of each process, by pid as the images name it. Given by the
   * caller with psClient and handOff (migrate's final round, post-copy from the source): the pages of
   * private anonymous memory the dump would send go as PE_LAZY runs, without their contents, for
   * the caller to serve from the frozen tree (afterHandOff)
   */
  lazySources?: Map<number, LazySource>;
  /**
   * migrate's pre-copy rounds (a pre-dump with psClient): which pages to send is decided while the
   * tree is frozen, tracking is armed, and the tree is let go before its pages are read and sent.
   * A page written meanwhile is marked written by the tracking, so the next round sends it again;
   * a process whose memory changed under the read (a mapping gone) is left out of this round and
   * sent in full by the next one.
   */
  liveRead?: boolean;
  /** (internal) the page reads liveRead defers until the tree runs again */
  deferred?: (() => { scanned: number; written: number; skipped: number })[];
  /** mounts marked external: mountpoint -> key (--external mnt[MP]:KEY, --ext-mount-map MP:KEY or auto) */
  extMounts?: ExtMounts;
  /** notifications (action scripts, RPC) at criu's points; each blocks until answered */
  hooks?: Hooks;
  /** a cgroup holding the tree: frozen while its tasks are seized (criu's --freeze-cgroup) */
  freezeCgroup?: string;
  /** CLONE_NEW* bits of namespaces whose contents the caller sets up itself (criu's empty_ns; runc: net) */
  emptyNs?: number;
  /** --external net[INODE]:KEY: the tree's network namespace is the caller's (runc: a netns path in config.json) */
  extNetNs?: { ino: number; key: string };
  /** the work dir (-W, RPC work_dir_fd): stats-dump goes there, as criu writes it (default: dir) */
  workDir?: string;
}
export interface DumpStats {
  /** the processes of the dumped tree, root first */
  pids: number[];
  freezingTime: number;
  frozenTime: number;
  memdumpTime: number;
  memwriteTime: number;
  pagesScanned: number;
  pagesWritten: number;
  /** pages left to the parent images (unchanged since the pre-dump) */
  pagesSkippedParent: number;
}

/** an image entry as its plain init object (plainEntry): no create() copy */
const msg = plainEntry;

/** A process of the dumped tree: frozen (alive) or a zombie (nothing to freeze). */
interface TreeNode {
  pid: number;
  ppid: number;
  children: number[];
  /** it was stopped (SIGSTOP, ^Z) before we came: it stays stopped, and is restored stopped */
  wasStopped?: boolean;
  /** the signal that stopped it: SIGSTOP, SIGTSTP, SIGTTIN or SIGTTOU */
  stopSig?: number;
  ids?: Record<string, number>;
  fp?: FrozenProcess;
  mem?: RemoteMem;
  /** its pid in the images and its VMAs, once dumped (memory tracking is armed from them) */
  dumped?: { vpid: number; vmas: DumpedVma[] };
  zombie?: { exitCode: number; pgid: number; sid: number; comm: string };
  /** PR_SET_CHILD_SUBREAPER, once dumped */
  subreaper?: boolean;
}

/**
 * The tree at the end of the dump must be the one frozen: a process or thread killed meanwhile
 * (SIGKILL reaches a traced task) would otherwise come back to life at restore.
 */
function sameTreeAsFrozen(tree: TreeNode[]) {
  // a SIGKILL sent but not acted on yet counts: it is pending in every thread of a dying process
  const state = (pid: number, tid?: number) => {
    try {
      const s = readStatus(pid, tid ?? pid);
      return sigkillPending(s) ? "X" : (s.State?.[0] ?? "gone");
    } catch {
      return "gone";
    }
  };
  for (const n of tree) {
    if (n.zombie) {
      if (state(n.pid) !== "Z")
        throw new CriuError("dump", `zombie ${n.pid} of the tree was reaped while the tree was being dumped`);
      continue;
    }
    for (const t of n.fp!.threads) {
      const s = state(n.pid, t.tid);
      if (s === "gone" || s === "Z" || s === "X") {
        throw new CriuError(
          "dump",
          t.tid === n.pid
            ? `process ${n.pid} of the tree exited while it was being dumped`
            : `thread ${t.tid} of process ${n.pid} exited while it was being dumped`
        );
      }
    }
  }
  log.debug(`the tree is the one frozen: ${tree.length} process(es)`);
}

/** Release a frozen process as it was: running, or stopped if it was stopped before we came. */
function letGo(n: TreeNode) {
  if (!n.fp) return;
  if (n.wasStopped) {
    // its group stop is still in effect (SIGNAL_STOP_STOPPED): detached without a signal, each
    // thread stops again as it was (a signal given to PTRACE_DETACH in a syscall stop would be
    // queued to it: a stray SIGSTOP pending), with its own mask back (its signals were held)
    for (const t of n.fp.threads) {
      giveBackSigmask(t.tid);
      syscall(NR.ptrace, 17 /* DETACH */, t.tid, 0, 0);
    }
    log.debug(`process ${n.pid}: left stopped as it was`);
  } else releaseProcess(n.fp);
}

/** A zombie thread-group leader whose other threads still run: PID's threads cannot be restored so. */
function refuseLeaderExited(pid: number) {
  let tids: number[];
  try {
    tids = listTids(pid);
  } catch {
    return; // gone (reaped) meanwhile
  }
  const others = tids.filter((t) => t !== pid);
  if (others.length)
    refuse("dump", `process ${pid}`, "leader-exited", `threads ${others.join(", ")} run on without it`);
}

/**
 * A vfork in progress around PID, looked at before PID is seized: a child of PID sharing its memory
 * while a thread of PID sleeps (the parent waits killable for the child's exec or exit, and a
 * PTRACE_INTERRUPT never stops it); or PID itself the vfork child of PARENT (the root's parent,
 * outside the tree). kcmp(KCMP_VM) tells the sharing; nothing is touched. A vfork about to exec
 * (a shell's, posix_spawn's) ends in microseconds: waited for, up to a second (or --timeout if
 * shorter), then refused.
 */
function refuseVfork(pid: number, parent: number, timeoutMs: number) {
  // tests: CRIU_BUN_FAULT=vfork-check:skip leaves the vfork to the freeze's deadline
  if (process.env.CRIU_BUN_FAULT === "vfork-check:skip") return;
  const blocked = () => {
    try {
      return listTids(pid).some((t) => readStat(pid, t).state === "D");
    } catch {
      return false;
    }
  };
  const vforkOf = (): string | undefined => {
    for (const c of listChildren(pid))
      if (syscall(NR.kcmp, pid, c, KCMP.VM, 0, 0) === 0 && blocked()) return `child ${c}`;
    if (parent > 1 && syscall(NR.kcmp, pid, parent, KCMP.VM, 0, 0) === 0)
      return `it is the vfork child of ${parent}, which waits for it`;
    return undefined;
  };
  let what = vforkOf();
  if (!what) return;
  const t0 = Date.now(),
    until = t0 + Math.min(1000, timeoutMs);
  log.debug(`process ${pid}: a vfork in progress (${what}): waiting for it to exec or exit`);
  while (what && Date.now() < until) {
    Bun.sleepSync(1);
    what = vforkOf();
  }
  if (!what) {
    log.debug(`process ${pid}: the vfork ended after ${Date.now() - t0} ms`);
    return;
  }
  log.debug(`process ${pid}: still in its vfork after ${Date.now() - t0} ms (${what})`);
  refuse("dump", `process ${pid}`, "vfork", what);
}

/** Freeze ROOT and every descendant, repeating while new children appear. */
function freezeTree(root: number, timeoutMs: number, preSeized?: Set<number>): TreeNode[] {
  const nodes = new Map<number, TreeNode>();
  const order: number[] = [];
  try {
    for (let round = 0; ; round++) {
      let fresh = 0;
      const queue = [root];
      while (queue.length) {
        const pid = queue.shift()!;
        let node = nodes.get(pid);
        if (!node) {
          let st;
          try {
            st = readStat(pid);
          } catch {
            if (pid === root) throw new CriuError("dump", `process ${pid} does not exist: ${errnoText(E.ESRCH)}`);
            continue;
          }
          let fp: FrozenProcess | undefined;
          if (st.state === "Z") refuseLeaderExited(pid);
          else {
            // before anything of it is seized: a vfork parent never reaches its ptrace stop
            refuseVfork(pid, pid === root ? st.ppid : 0, timeoutMs);
            try {
              fp = freezeProcess(pid, timeoutMs, preSeized);
            } catch (e) {
              // a child that exits between our look and its stop (a shell's `sleep`, say) is a
              // zombie of its frozen parent now, or gone if the parent does not wait for children
              if (!(e instanceof ExitedWhileFreezing) || e.tid !== pid || pid === root) throw e;
              try {
                st = readStat(pid);
              } catch {
                log.debug(`process ${pid} exited while being frozen and is gone`);
                continue;
              }
              if (st.state !== "Z") throw e;
              log.debug(`process ${pid} exited while being frozen: dumped as a zombie`);
            }
          }
          node = fp
            ? { pid, ppid: st.ppid, children: [], wasStopped: st.state === "T", fp }
            : {
                pid,
                ppid: st.ppid,
                children: [],
                zombie: { exitCode: st.exitCode, pgid: st.pgid, sid: st.sid, comm: st.comm },
              };
          nodes.set(pid, node);
          order.push(pid);
          fresh++;
          // the stop signal (its parent's wait tells SIGSTOP from SIGTSTP, SIGTTIN, SIGTTOU): restore
          // stops it with the same (task_core_entry.stop_signo, as CRIU 4.2 keeps it)
          const ss = node.fp?.threads[0].stopSig;
          if (node.wasStopped) node.stopSig = ss !== undefined && ss >= 20 && ss <= 22 ? ss : 19;
        }
        if (node.zombie) continue;
        node.children = listChildren(pid).sort((a, b) => a - b);
        queue.push(...node.children);
      }
      if (!fresh) break;
      if (round > 50) throw new CriuError("dump", `the tree of ${root} keeps forking; cannot freeze it`);
    }
  } catch (e) {
    for (const n of nodes.values()) letGo(n);
    throw e;
  }
  const list = order.map((p) => nodes.get(p)!);
  list[0].ppid = 0;
  return list;
}

export function dumpProcess(o: DumpOptions): DumpStats {
  const { pid, dir } = o;
  if (!Number.isInteger(pid) || pid <= 0) throw new CriuError("dump", `invalid PID '${o.pid}'`);
  // kill(pid, 0) says ESRCH for a process that is not there (EPERM for one that is, not ours)
  if (syscall(NR.kill, pid, 0) === -E.ESRCH || !existsSync(`/proc/${pid}`)) {
    throw new CriuError("dump", `process ${pid} does not exist: ${errnoText(E.ESRCH)}`);
  }
  if (pid === process.pid) throw new CriuError("dump", `cannot dump criu-bun itself`);
  // a leader that has exited (pthread_exit in main) leaves no namespaces to read: refused first
  try {
    if (readStat(pid).state === "Z") refuseLeaderExited(pid);
  } catch (e) {
    if (e instanceof CriuError) throw e;
  }
  if (o.pageServer && o.compress)
    throw new CriuError(
      "dump",
      "--compress cannot be used with --page-server (the page server writes CRIU's raw pages)"
    );
  if (o.lazyPages) {
    const bad = o.leaveRunning
      ? "--leave-running"
      : o.leaveStopped
        ? "--leave-stopped"
        : o.pageServer || o.psClient
          ? "--page-server"
          : o.prevImagesDir
            ? "--prev-images-dir"
            : o.preDump
              ? "pre-dump"
              : o.handOff
                ? "migrate"
                : undefined;
    if (bad)
      throw new CriuError(
        "dump",
        `--lazy-pages cannot be used with ${bad} (the source serves its memory from where it is frozen, then is killed)`
      );
    o = { ...o, lazySources: new Map() };
  } else if (o.lazySources && !(o.psClient && o.handOff && !o.preDump)) {
    throw new CriuError("dump", "post-copy from the source is migrate's final round only");
  }
  // images go into a private stage inside dir, moved into place when all is written and synced
  // (inventory.img last): a failed dump leaves dir as it was (src/images/safefs.ts)
  const stage = new DumpStage(dir);
  // each fd kind's state for this dump, begun once the tree is frozen (FdKind.dumpBegin)
  const kinds = new FdKindsDump();
  let tree: TreeNode[] = [];
  let stats: DumpStats;
  let t0 = 0,
    tFrozen = 0;
  let prev: DirHandle | undefined;
  let netLocked = false;
  let pageServer: PageServerClient | undefined;
  let track: MemTracker | undefined;
  // criu tells about the network lock only for a tree with its own network namespace
  let ownNet = false;
  /** liveRead: the tree was let go before its pages were read */
  let released = false,
    tThawed = 0;
  try {
    if (o.prevImagesDir) {
      linkParent(stage.path, o.prevImagesDir, stage.dir.path);
      // held by an fd too: paths are joined without ".." (join would fold /proc/self/fd/N/..)
      prev = openDir(under(stage.dir.path, o.prevImagesDir));
      aliasPath(prev.path, o.prevImagesDir);
    }
    const w: DumpOptions = {
      ...o,
      dir: stage.path,
      prevImagesDir: prev?.path,
      deferred: o.liveRead && o.preDump && o.psClient ? [] : undefined,
    };
    // connect first: a page server that is not there fails the dump before anything is frozen
    pageServer =
      o.psClient ??
      (o.pageServer ? new PageServerClient(o.pageServer.address, o.pageServer.port, o.timeoutSec ?? 10) : undefined);
    runHook(o.hooks, "pre-dump", { pid });
    ownNet = readlinkSync(`/proc/${pid}/ns/net`) !== readlinkSync("/proc/self/ns/net");
    // VmFlags without smaps's page-table walk, made ready (and checked) before anything is frozen
    prepareVmFlags(!!o.psClient);
    t0 = performance.now();
    phase("freezing the tree", pid);
    // with a freezer cgroup: every task in it is caught while frozen (nothing forks meanwhile);
    // those outside the tree are let go again
    let preSeized: Set<number> | undefined;
    if (o.freezeCgroup) {
      const fz = freezeCgroup(o.freezeCgroup, (o.timeoutSec ?? 10) * 1000);
      try {
        preSeized = new Set(seizeFrozen(fz.tids.filter((t) => !fz.stopped.has(t))));
      } finally {
        fz.thaw();
      }
    }
    try {
      tree = freezeTree(pid, (o.timeoutSec ?? 10) * 1000, preSeized);
    } finally {
      if (preSeized?.size) {
        log.info(`releasing ${preSeized.size} thread(s) of the cgroup outside the tree`);
        releaseSeized(preSeized);
      }
    }
    tFrozen = performance.now();
    // the page Workers start while the tree is collected (a dump of a parent's changes alone
    // may need none)
    const anon = tree.reduce((sum, n) => sum + (n.fp ? anonBytes(n.pid) : 0), 0);
    if (givesBackOwnPages(anon)) giveBackOwnPages("before the page Workers start");
    if (!w.prevImagesDir) startPageWorkers(anon, true);
    // and, for a large tree, the VMA reader: the VmFlags (smaps) read while the pages go
    if ((anon >= VMA_READER_AHEAD && !vmFlagsFromBpf()) || process.env.CRIU_BUN_VMA_READER === "on") startVmaReader();
    pausePoint("dump-frozen");
    if (ownNet) {
      netLocked = true;
      runHook(o.hooks, "network-lock", { pid });
    }
    runHook(o.hooks, "query-ext-files", { pid });
    for (const n of tree) if (n.fp) n.mem = new RemoteMem(n.pid);
    track = new MemTracker(w.dir, w.prevImagesDir);
    stats = collectAndWrite(tree, w, tFrozen - t0, pageServer, track, kinds);
    // memory tracking, at the end of the frozen period: armed for the next dump, or ended in a
    // process that lives on (a killed tree takes it along)
    const arm = o.preDump || (o.trackMem && o.leaveRunning);
    phase(arm ? "arming memory tracking" : "ending memory tracking");
    for (const n of tree) {
      if (!n.fp || !n.dumped) continue;
      if (arm) track.arm(n.pid, n.dumped.vpid, n.fp.threads[0].tid, n.mem!, n.dumped.vmas);
      // (a hand-off's tree is killed with its tracking once its copy runs: ended only if it is let go
      // again; closing it write-unprotects every tracked page, time that grows with memory)
      else if (o.leaveRunning || o.leaveStopped) track.disarm(n.pid, n.fp.threads[0].tid, n.mem!);
    }
    if (w.deferred) {
      sameTreeAsFrozen(tree);
      kinds.release("running");
      if (ownNet) unlockHook(o.hooks, pid);
      for (const n of tree) letGo(n);
      released = true;
      tThawed = performance.now();
      log.info(`Tree of ${pid} let go: its pages are read while it runs (tracking marks what it writes meanwhile)`);
      for (const job of w.deferred) {
        const r = job();
        stats.pagesScanned += r.scanned;
        stats.pagesWritten += r.written;
        stats.pagesSkippedParent += r.skipped;
      }
      stats.memdumpTime += Math.round((performance.now() - tThawed) * 1000);
    }
    pausePoint("dump-written");
    pageServer?.close();
    fault("dump-end", "dump");
    if (!released) sameTreeAsFrozen(tree);
    stage.commit();
    kinds.commit(); // (reg.ts: restore opens the deleted files through their link remaps)
    prev?.close();
    if (o.autoDedup) autoDedup(dir, !!(o.pageServer || o.psClient));
    // after the commit: a post-dump hook sees the images in place
    runHook(o.hooks, "post-dump", { pid });
  } catch (err) {
    let e = err;
    pageServer?.abort(); // no PS_IOV_CLOSE: the page server drops what it received
    // a failure because a process of the tree died meanwhile is reported as that
    if (tree.length && !released)
      try {
        sameTreeAsFrozen(tree);
      } catch (lost) {
        log.debug(`failed with: ${errorMessage(err)}`);
        e = lost;
      }
    kinds.abort();
    if (netLocked && !released) unlockHook(o.hooks, pid);
    for (const n of tree) {
      n.mem?.close();
      if (!released) letGo(n);
    }
    if (e instanceof Error) e.message = unalias(e.message); // the directory's name, not its fd
    stage.abort();
    prev?.close();
    if (tree.length) log.info(`Dump of ${pid} failed; ${tree.length} process(es) released`);
    throw e;
  } finally {
    stopPageWorkers();
  }
  for (const n of tree) n.mem?.close();
  stats.frozenTime = Math.round(((released ? tThawed : performance.now()) - tFrozen) * 1000);
  const alive = tree.filter((n) => n.fp);
  if (released) {
    log.info(`Tree of ${pid} left running`);
    return stats;
  }
  if (o.handOff) {
    let committed = false;
    const commit = () => {
      committed = true;
      // if criu-bun dies from here on, the tree stops instead of running beside its copy
      for (const n of alive) syscall(NR.kill, n.pid, 19 /* SIGSTOP */);
      log.info(
        `Tree of ${pid}: committed to its copy (a SIGSTOP is queued to each process: it is never resumed from here)`
      );
    };
    try {
      o.handOff(dir, t0, commit);
      o.afterHandOff?.();
    } catch (e) {
      // the tree lives on (resumed or left stopped): its tracking ends first
      for (const n of alive) {
        const m = new RemoteMem(n.pid);
        try {
          track!.disarm(n.pid, n.fp!.threads[0].tid, m);
        } catch (x) {
          log.warn(`process ${n.pid}: memory tracking not ended: ${errorMessage(x)}`);
        } finally {
          m.close();
        }
      }
      // (the injection took the queued SIGSTOP as it passed: queued again)
      if (committed) for (const n of alive) syscall(NR.kill, n.pid, 19);
      kinds.release("running");
      if (ownNet) unlockHook(o.hooks, pid);
      if (committed) {
        // its copy ran (or may have): resuming this one could run both; killing it could lose the only whole copy
        for (const n of alive)
          for (const t of n.fp!.threads) {
            giveBackSigmask(t.tid);
            syscall(NR.ptrace, 17 /* DETACH */, t.tid, 0, 19);
          }
        log.info(`Tree of ${pid} left stopped: the hand-off failed after its copy was let run`);
        if (e instanceof CriuError)
          e.message += `; the source (pid ${pid}) is left stopped, not resumed since its copy ran: kill it, or \`kill -CONT\` it once that copy is known to be gone`;
      } else {
        for (const n of alive) letGo(n);
        log.info(`Tree of ${pid} resumed as it was: the hand-off failed`);
      }
      throw e;
    }
  }
  if (o.leaveStopped) {
    // leave them stopped: detach with SIGSTOP so they stay in a group stop
    for (const n of alive)
      for (const t of n.fp!.threads) {
        giveBackSigmask(t.tid);
        syscall(NR.ptrace, 17 /*DETACH*/, t.tid, 0, n.wasStopped ? 0 : 19);
      }
    kinds.release("running");
    if (ownNet) unlockHook(o.hooks, pid);
    log.info(`Tree of ${pid} left stopped`);
  } else if (o.leaveRunning) {
    kinds.release("running");
    if (ownNet) unlockHook(o.hooks, pid);
    for (const n of alive) letGo(n);
    log.info(`Tree of ${pid} left running`);
  } else {
    log.debug(`images written`);
    if (givesBackOwnPages(stats.pagesScanned * 4096)) giveBackOwnPages("images written");
    if (o.lazyPages) {
      // the restore side takes the rest of the memory from the frozen tree, then it goes; a
      // daemon that leaves before it has everything leaves the source running (as CRIU resumes it)
      try {
        serveLazyPages(
          o.lazyPages!.address,
          o.lazyPages!.port,
          o.lazySources!,
          () => {
            runHook(o.hooks, "status-ready", { pid });
            o.lazyPages!.ready?.();
          },
          o.timeoutSec ?? 10
        );
      } catch (e) {
        kinds.release("running");
        if (ownNet) unlockHook(o.hooks, pid);
        for (const n of alive) letGo(n);
        log.info(`Tree of ${pid} resumed: its lazy pages were not all taken`);
        throw e;
      }
    }
    kinds.release("killed", dumpRunId(pid)); // while the tree lives: its network namespace is reached through it
    killAndFree(alive, stats.pagesScanned * 4096);
    for (const n of alive) for (const t of n.fp!.threads) syscall(NR.ptrace, 17, t.tid, 0, 0);
    // a killed thread still traced by us (DETACH needs a stopped tracee) reports its death to us
    // first: collect it, so its parent can reap it and its PID is free even while criu-bun lives on
    // (swrk serves a RESTORE of the same tree on the same connection; a script restores right
    // after `dump` returns). CRIU 4.2 waits here too, in every mode (seize.c, pstree_wait: wait4 of
    // each killed thread): a killed process reports its death only after its memory is freed, about
    // 0.1 s for 1 GiB, and CRIU's log shows the same gap between "Unseizing" and "Writing stats".
    // (killAndFree frees their memory from here too, beside their own exit)
    collectDeaths(alive);
    kinds.killed(); // (inet.ts: the connections' last references, closed in repair mode)
    log.info(`Tree of ${pid} (${tree.length} process(es)) killed after dump`);
  }
  writeDumpStats(o.workDir ?? dir, stats);
  return stats;
}

/**
 * The deaths of the killed tree's threads collected, in whatever order they come. A thread can wait
 * in its own exit for others to be reaped first: a thread-group leader reports its death only once
 * every other thread of its group is reaped, and the last thread of a PID namespace's init to exit
 * waits in zap_pid_ns_processes until every other task of the namespace is released, its own
 * threads' zombies (traced by us, so reaped by us) included. Which of the init's threads that is
 * cannot be known ahead, so a blocking wait for one chosen thread could wait forever (runc
 * checkpoint of a container whose init had 4 threads did). Polled instead: each round asks every
 * thread left (WNOHANG), and a round that collects nothing sleeps 50 us, doubling up to 2 ms; after
 * 30 s the rest is left to the kernel with a warning (they were killed: nothing of the dump waits
 * on them).
 */
function collectDeaths(tree: TreeNode[]) {
  // children before parents, other threads before their leader: the order they can die in
  let left = [...tree].reverse().flatMap((n) => [...n.fp!.threads].reverse().map((t) => t.tid));
  const deadline = performance.now() + 30_000;
  let pause = 50;
  while (left.length) {
    const still = left.filter((tid) => {
      const { r, status } = wait4Raw(tid, __WALL | WNOHANG);
      if (r === -E.EINTR) return true;
      if (r < 0) return false; // ECHILD: collected already
      return r === 0 || !(W.exited(status) || W.signaled(status)); // not dead yet, or a stop on its way
    });
    if (still.length < left.length) pause = 50;
    else if (performance.now() > deadline) {
      log.warn(`${still.length} killed thread(s) of the tree not collected in 30 s: ${still.join(", ")}`);
      return;
    } else {
      sleepUs(pause);
      pause = Math.min(pause * 2, 2000);
    }
    left = still;
  }
}

/**
 * The memory a dump found in its tree (pages scanned) from which killAndFree frees it from here as
 * well: below, the calls (a few system calls and their first run of JavaScript, ~0.3 ms) cost more
 * than a small process's memory takes to free (about 1 ms per 16 MiB here).
 */
const FREE_FROM_HERE_MIN = 32 * 2 ** 20;

/**
 * SIGKILL to every process of the tree, back to back as before, and their memory freed from this
 * thread too (process_mrelease, Linux 5.15) while each frees it in its own exit: two CPUs free it
 * instead of one. On 2 idle CPUs the wait for a killed 1 GiB process went from 58-76 to 40-45 ms,
 * 4 GiB from 256-306 to 147-183 ms (a C program; a 1 GiB dump's end 77 -> 48 ms, BENCHMARKS.md).
 * The call helps only before the process reaches exit_mm, which lets go of the memory before
 * freeing it (then ESRCH): the process with the largest address space is killed last, by
 * killAndRelease (both calls a few instructions apart), the others are helped after it if they are
 * not that far yet. The processes stay traced by us until their deaths are collected, so the pids
 * (and pidfds) are still theirs. A failed call loses nothing: that process frees its memory alone,
 * as it did before.
 */
function killAndFree(tree: TreeNode[], bytes: number) {
  if (!tree.length) return;
  const t0 = performance.now();
  if (bytes < FREE_FROM_HERE_MIN) {
    for (const n of tree) syscall(NR.kill, n.pid, 9);
    log.debug(
      `killed ${tree.length} process(es), their ${(bytes / 2 ** 20).toFixed(1)} MiB of pages left to them to free`
    );
    return;
  }
  const mapped = (n: TreeNode) => (n.dumped?.vmas ?? []).reduce((a, v) => a + Number(v.end - v.start), 0);
  const order = [...tree].sort((a, b) => mapped(a) - mapped(b)),
    last = order.pop()!,
    fds = new Map(tree.map((n) => [n.pid, syscall(NR.pidfd_open, n.pid, 0)]));
  for (const n of order) syscall(NR.kill, n.pid, 9);
  // pid -> process_mrelease's result (or the kill's, from killAndRelease)
  const results = new Map<number, number>();
  const lastFd = fds.get(last.pid)!;
  if (lastFd < 0) syscall(NR.kill, last.pid, 9);
  else {
    const back = offTheirCpus(
      last.pid,
      last.fp!.threads.map((t) => t.tid)
    );
    try {
      results.set(last.pid, killAndRelease(last.pid, lastFd));
    } finally {
      back?.();
    }
  }
  if (results.get(last.pid) !== -E.ENOSYS)
    for (const n of order) {
      const fd = fds.get(n.pid)!;
      if (fd >= 0) results.set(n.pid, syscall(NR.process_mrelease, fd, 0));
    }
  for (const fd of fds.values()) if (fd >= 0) closeFd(fd);
  let freed = 0;
  for (const [pid, r] of results) {
    if (r === 0) freed++;
    else log.debug(`process ${pid}: process_mrelease: ${errnoText(r)} (it frees its memory alone)`);
  }
  log.debug(
    `killed ${tree.length} process(es), the memory of ${freed} freed from here too in ${(performance.now() - t0).toFixed(1)} ms`
  );
}

/**
 * This thread kept off the CPUs the threads of a process about to be killed last ran on, until the
 * returned function puts its CPUs back: woken there by the kill, they do not preempt us between the
 * kill and process_mrelease, which made them reach exit_mm first in 1 of 5-6 dumps here. Only this
 * thread's own affinity changes, never the process's: a criu-bun killed meanwhile leaves the tree as
 * it was. Nothing when no other CPU is allowed to us, or for more than 16 threads (one of many still
 * holding the memory is enough for process_mrelease).
 */
function offTheirCpus(pid: number, tids: number[]): (() => void) | undefined {
  if (tids.length > 16) return undefined;
  const back = thisThreadOnCpus((away) => {
    for (const tid of tids) {
      let cpu: number;
      try {
        cpu = readStat(pid, tid).processor;
      } catch {
        continue;
      }
      if (cpu >= 0 && cpu >> 3 < away.length) away[cpu >> 3] &= ~(1 << (cpu & 7));
    }
    return away;
  });
  return (
    back &&
    (() => {
      const r = back();
      if (r !== 0) log.warn(`cannot give this thread its CPUs back: ${errnoText(r)}`);
    })
  );
}

/**
 * --auto-dedup: once the images are in place, the pages they store are punched out of their parent
 * images (codec/dedup.ts). The dump is done by then: a failure here leaves the parents whole where
 * it stopped (and their checksums right) and is a warning, not a failed dump.
 */
function autoDedup(dir: string, remote: boolean) {
  if (remote) {
    log.info("--auto-dedup: the pages went to the page server; it keeps the images");
    return;
  }
  if (!existsSync(join(dir, "parent"))) {
    log.debug("--auto-dedup: no parent images");
    return;
  }
  try {
    dedupChain(dir, "dump");
  } catch (e) {
    log.warn(`--auto-dedup: ${errorMessage(e)}; the parent images keep the rest of their pages`);
  }
}

/**
 * stats-dump, as criu writes it once the tree is let go or killed: into the work dir (Podman's
 * --print-stats reads it there, beside the images dir), outside the images' checksums. A failure
 * to write it does not undo a finished dump.
 */
function writeDumpStats(dir: string, stats: DumpStats) {
  try {
    writeImage(dir, "stats-dump", "STATS", [
      msg(S.stats_entrySchema, {
        dump: {
          freezingTime: stats.freezingTime,
          frozenTime: stats.frozenTime,
          memdumpTime: stats.memdumpTime,
          memwriteTime: stats.memwriteTime,
          pagesScanned: BigInt(stats.pagesScanned),
          pagesSkippedParent: BigInt(stats.pagesSkippedParent),
          pagesWritten: BigInt(stats.pagesWritten),
          pagesLazy: 0n,
        },
      }),
    ]);
    log.debug(`stats-dump written in ${dir}`);
  } catch (e) {
    log.warn(`cannot write stats-dump: ${errorMessage(e)}`);
  }
}

/** network-unlock's answer changes nothing (criu ignores it too): the tree must be let go */
function unlockHook(hooks: Hooks | undefined, pid: number) {
  try {
    runHook(hooks, "network-unlock", { pid });
  } catch (e) {
    log.warn(`network-unlock: ${errorMessage(e)}`);
  }
}

/**
 * Sessions and process groups restore can give back exactly: every process's session and group
 * are led by a process of the tree (restore recreates them with setsid/setpgid), or, with
 * --shell-job, are the root's own (restore puts the tree in criu-bun's session and group, the
 * job's). A leader outside the tree's PID namespace (session or group 0 seen from inside) or a
 * leader that is gone cannot be recreated: refused, as CRIU refuses them.
 */
function checkSessions(tree: TreeNode[], ns: NsView, shellJob: boolean): Map<number, { pgid: number; sid: number }> {
  const groups = new Map(tree.map((n) => [n.pid, ns.groups(n.pid)]));
  for (const n of tree) {
    const { pgid, sid } = groups.get(n.pid)!,
      where = `process ${n.pid}`;
    if (sid === 0) refuse("dump", where, "session-outside-pidns", "getsid() is 0 inside its PID namespace");
    if (pgid === 0)
      refuse("dump", where, "session-outside-pidns", "its process group leader is outside its PID namespace");
  }
  // a group whose leader exited (no process has its number; in criu-bun's PID namespace, where
  // /proc tells) is made again at restore (a helper leads it while its members join)
  const here = ns.v(tree[0].pid) === tree[0].pid;
  const u = unledGroup(
    tree.map((n) => ({ n, pid: ns.v(n.pid), ...groups.get(n.pid)! })),
    shellJob,
    (g) => here && !existsSync(`/proc/${g}`)
  );
  if (u) {
    const { t, what } = u,
      where = `process ${t.n.pid}`;
    if (what === "group") refuse("dump", where, "pgrp-leader-gone", `process group ${t.pgid}`);
    if (t.n === tree[0])
      throw new CriuError(
        "dump",
        `${where} is not a session leader (its session is ${t.sid}); dump with --shell-job to restore it into criu-bun's session, or make it one (setsid)`
      );
    refuse("dump", where, "session-leader-gone", `session ${t.sid}`);
  }
  return groups;
}

/**
 * A clone of the mount at PATH of the root task's mount namespace alone (open_tree
 * OPEN_TREE_CLONE without AT_RECURSIVE: none of the mounts on it). open_tree clones mounts of the
 * caller's own namespace only, and needs CAP_SYS_ADMIN, which a container's tasks may lack; criu-bun's
 * threads cannot setns into a mount namespace: a puppet (one thread, criu-bun's credentials) joins
 * the task's namespace and makes it, and criu-bun takes it with pidfd_getfd. Returns criu-bun's fd
 * on the clone, or the step that failed and why.
 */
function cloneMountOf(n: TreeNode, path: string): number | string {
  const pid = startPuppet();
  const mem = new RemoteMem(pid);
  try {
    const inj = new Injector(pid, PUPPET_SYSCALL, "trap", mem);
    const page = inj.call(NR.mmap, 0, 8192, 3 /* RW */, 0x22 /* MAP_PRIVATE | MAP_ANONYMOUS */, -1, 0);
    if (page < 0n && page > -4096n) return `mmap in the puppet: ${errnoText(Number(-page))}`;
    const nsPath = Buffer.from(`/proc/${n.pid}/ns/mnt\0`),
      mp = Buffer.from(`${path}\0`);
    if (nsPath.length + mp.length > 8192) return "path too long";
    mem.write(page, new Uint8Array(nsPath.buffer, nsPath.byteOffset, nsPath.length));
    mem.write(page + BigInt(nsPath.length), new Uint8Array(mp.buffer, mp.byteOffset, mp.length));
    const ns = inj.call(NR.openat, -100, page, O.RDONLY | O.CLOEXEC, 0);
    if (ns < 0n) return `open of its mount namespace: ${errnoText(Number(-ns))}`;
    const r = inj.call(NR.setns, ns, CLONE.NEWNS);
    if (r < 0n) return `setns into its mount namespace: ${errnoText(Number(-r))}`;
    const fd = inj.call(NR.open_tree, -100, page + BigInt(nsPath.length), 1 /* OPEN_TREE_CLONE */ | O.CLOEXEC);
    if (fd < 0n) return `open_tree: ${errnoText(Number(-fd))}`;
    const pidfd = syscall(NR.pidfd_open, pid, 0);
    const mine = pidfd < 0 ? pidfd : syscall(NR.pidfd_getfd, pidfd, Number(fd), 0);
    if (pidfd >= 0) closeFd(pidfd);
    return mine < 0 ? `pidfd_getfd: ${errnoText(-mine)}` : mine;
  } finally {
    mem.close();
    syscall(NR.kill, pid, 9);
    for (;;) {
      const { r: w, status } = wait4Raw(pid, __WALL);
      if (w === -4) continue;
      if (w < 0 || !W.stopped(status)) break;
    }
  }
}

function collectAndWrite(
  tree: TreeNode[],
  o: DumpOptions,
  freezeMs: number,
  pageServer: PageServerClient | undefined,
  track: MemTracker,
  kinds: FdKindsDump
): DumpStats {
  const d = o.dir;
  const files = new FileTable();
  const extra = new ImageSink(tree.length + 1); // pages-1..n are the processes' (pages-N.img below)
  const twins = new FdTwins();
  const stats: DumpStats = {
    pids: tree.map((n) => n.pid),
    freezingTime: Math.round(freezeMs * 1000),
    frozenTime: 0,
    memdumpTime: 0,
    memwriteTime: 0,
    pagesScanned: 0,
    pagesWritten: 0,
    pagesSkippedParent: 0,
  };
  const pstree: S.Init<typeof S.pstree_entrySchema>[] = [];
  const ns = new NsView(tree[0].pid, !!((o.emptyNs ?? 0) & CLONE.NEWNET), o.extNetNs);
  const groups = checkSessions(tree, ns, !!o.shellJob); // each process's, read once
  writeTreeNsImages(d, ns);
  if (ns.container && !o.preDump) {
    // (a pre-dump keeps memory for the next dump; the mounts are saved by that dump, as criu
    // does: runc's pre-dump request names no external mounts)
    const root = tree[0].pid;
    const entries = dumpMountNs(
      root,
      o.extMounts ?? { map: new Map() },
      (f, data) => writeImageBytes(d, f, data),
      (mp) => cloneMountOf(tree[0], mp)
    );
    writeImage(
      d,
      `mountpoints-10.img`,
      "MNTS",
      entries.map((e) => msg(S.mnt_entrySchema, e))
    );
  }
  if (ns.container) files.statRoot = `/proc/${tree[0].pid}/root`; // paths are the container's
  const nsMounts = ns.container ? new Set(readMountinfo(tree[0].pid).map((m) => m.id)) : undefined;
  const cgroups = new CgroupSets();
  // what the fd dumpers need to know, once for the whole tree
  const alivePids = tree.filter((n) => !n.zombie).map((n) => n.pid);
  // every fd of the frozen tree and what it points to, read once (fds, pty masters, socket peers)
  const links = new Map(alivePids.map((p) => [p, fdLinks(p)]));
  const fdOpts: DumpOpts = {
    tree: alivePids,
    shellJob: o.shellJob,
    tcpEstablished: o.tcpEstablished,
    tcpClose: o.tcpClose,
    skipInFlight: o.skipInFlight,
    extUnixSk: o.extUnixSk,
    fileLocks: o.fileLocks,
    networkLockSkip: o.networkLockSkip,
    ghostLimit: o.ghostLimit,
    linkRemap: o.linkRemap,
    links,
    nsMounts,
    skipFd: (p, fd) => track.skips(p, fd),
  };
  // each fd kind's look at the whole tree (pty masters and controlling terminals: tty.ts)
  const dumpTree = {
    pids: alivePids,
    files,
    images: extra,
    vpid: (p: number) => ns.v(p),
    vpgid: (p: number) => groups.get(p)!.pgid,
  };
  kinds.begin(dumpTree, fdOpts);
  // its own IPC namespace: its queues, semaphore sets, unattached segments and sysctls (refused
  // when one cannot be made again as it is)
  if (ns.ownIpcNs) dumpIpcNs(tree[0].pid, alivePids, d, IPC_NS_ID, extra);
  const seccomp = new SeccompChains();
  tree.forEach((n, idx) => {
    const id = idx + 1; // pages-N.img
    // kernel object ids as CRIU numbers them: 1 is the dumper's own (inventory root_ids), the
    // tree's start at 2; namespaces the dumper shares keep the dumper's ids (ROOT_IDS)
    const kid = idx + 2;
    const ids = {
      vmId: kid,
      filesId: sharedId(tree, idx, KCMP.FILES, "filesId"),
      fsId: sharedId(tree, idx, KCMP.FS, "fsId"),
      sighandId: kid,
      ...nsIds(ns),
    };
    if (!n.zombie) ns.check(n.pid); // a zombie has no namespaces left to look at
    const vpid = ns.v(n.pid),
      vppid = idx === 0 ? 0 : ns.v(n.ppid);
    const { pgid, sid } = groups.get(n.pid)!;
    if (n.zombie) {
      const z = n.zombie;
      pstree.push({ pid: vpid, ppid: vppid, pgid, sid, threads: [vpid] });
      writeImage(d, `core-${vpid}.img`, "CORE", [
        msg(S.core_entrySchema, {
          mtype: 1,
          tc: {
            taskState: 2 /* TASK_DEAD */,
            exitCode: z.exitCode,
            personality: 0,
            flags: 0,
            blkSigset: 0n,
            comm: z.comm,
          },
        }),
      ]);
      return;
    }
    if (!n.zombie && sharedId(tree, idx, KCMP.VM, "vmId") !== kid) {
      throw new CriuError(
        "dump",
        `process ${n.pid} shares its memory with another process (CLONE_VM without threads, e.g. vfork); not supported yet`
      );
    }
    n.ids = ids;
    track.adopt(n.pid, ns.v(n.pid));
    const r = dumpOne(n, id, ids, files, extra, twins, o, fdOpts, kinds, d, ns, cgroups, seccomp, pageServer, track);
    stats.memdumpTime += r.memUs;
    stats.pagesScanned += r.scanned;
    stats.pagesWritten += r.written;
    stats.pagesSkippedParent += r.skipped;
    pstree.push({ pid: vpid, ppid: vppid, pgid, sid, threads: r.tids });
  });
  // each process can be made in its session (taskattrs.ts sessionCreators; restore checks it again)
  const made = sessionCreators(
    pstree.map((p, i) => ({
      pid: p.pid!,
      ppid: p.ppid!,
      sid: p.sid!,
      n: tree[i],
      zombie: !!tree[i].zombie,
      subreaper: !!tree[i].subreaper,
    }))
  );
  if ("why" in made) refuse("dump", `process ${made.t.n.pid}`, "session-not-parents", made.why);
  // SysV segments of the host's IPC namespace attached outside the tree too (refused)
  if (!ns.ownIpcNs) checkHostSysvAttaches(tree.flatMap((n) => (n.dumped ? [{ pid: n.pid, vmas: n.dumped.vmas }] : [])));
  log.debug(`all processes collected`);
  phase("writing the tree's images");
  writeImage(d, "inventory.img", "INVENTORY", [
    msg(S.inventory_entrySchema, {
      imgVersion: 2,
      fdinfoPerId: true,
      nsPerId: true,
      lsmtype: 0,
      rootIds: ROOT_IDS,
      rootCgSet: ROOT_CG_SET,
      dumpUptime: BigInt(Math.round(performance.now() * 1000)),
      tcpClose: !!o.tcpClose && !o.tcpEstablished, // established connections saved without their streams
      allImages: true,
      // what the kinds' objects need (inet.ts: the network lock a killed tree's connections keep
      // until restore). --network-lock skip: criu's NETWORK_LOCK_SKIP, its restore does not unlock
      ...(o.networkLockSkip ? { networkLockMethod: NETWORK_LOCK.SKIP } : kinds.inventory()),
      dumpCriuRunId: dumpRunId(tree[0].pid),
    }),
  ]);
  writeImage(
    d,
    "pstree.img",
    "PSTREE",
    pstree.map((p) => msg(S.pstree_entrySchema, p))
  );
  writeImage(d, "files.img", "FILES", files.files as unknown as S.file_entry[]); // plain objects: encoded as they are (encode.ts)
  const cg = cgroups.entry(); // none when every task is in criu-bun's own cgroups, as CRIU
  if (cg) writeImage(d, "cgroup.img", "CGROUP", [msg(S.cgroup_entrySchema, cg)]);
  seccomp.write(d);
  const tExtra = performance.now();
  extra.writeAll(d);
  const tSum = performance.now();
  writeManifest(d); // last: the checksums of everything written above
  log.debug(
    `images of the tree's resources ${(tSum - tExtra).toFixed(1)} ms, their checksums ${(performance.now() - tSum).toFixed(1)} ms`
  );
  return stats;
}

/** One live process of the tree: its core, mm, pages, fds, fs and ids images. */
function dumpOne(
  n: TreeNode,
  id: number,
  ids: Record<string, number>,
  files: FileTable,
  extra: ImageSink,
  twins: FdTwins,
  o: DumpOptions,
  fdOpts: DumpOpts,
  kinds: FdKindsDump,
  d: string,
  ns: NsView,
  cgroups: CgroupSets,
  seccomp: SeccompChains,
  pageServer: PageServerClient | undefined,
  track: MemTracker
) {
  const pid = n.pid,
    mem = n.mem!;
  const vpid = ns.v(pid);
  phase("dumping", pid);
  // migrate's rounds: the VmFlags read on the VMA reader Worker while the rest is collected (the
  // Worker started by round 1 serves the rounds after it; one dump alone would wait for its start)
  // (or, for a large tree, the Worker started at the freeze: see VMA_READER_AHEAD)
  const task: TaskDump = dumpTask(n.fp!, mem, (!!pageServer && (!!o.deferred || !!o.handOff)) || vmaReaderStarted());
  n.subreaper = !!task.threads[0].core.tc?.childSubreaper;
  log.debug(`process ${pid}: task state collected`);
  if (id === 1) writeRootNsImages(d, pid, ns, ids, task.uts, task.clocks);
  // where CRIU 4 keeps it: per thread (a cgroup v1 hierarchy's tasks, or a threaded cgroup v2,
  // takes a thread alone)
  const cgSet = cgroups.add(pid);
  for (const t of task.threads) t.core.threadCore.cgSet = t.tid === pid ? cgSet : cgroups.add(pid, t.tid);
  if (n.wasStopped)
    Object.assign(task.threads[0].core.tc!, { taskState: 3 /* TASK_STOPPED */, stopSigno: n.stopSig ?? 19 });
  // a process sharing its parent's fd table (CLONE_FILES) has it dumped once, under one files id
  const tableDone = ids.filesId !== ids.vmId;
  const locks: LockDump[] = [];
  phase("dumping fds", pid);
  const fds: FdDump[] = tableDone ? [] : dumpFds(pid, files, extra, fdOpts, kinds, twins, locks);
  for (const l of locks) extra.add("filelocks.img", "FILE_LOCKS", S.file_lock_entrySchema, { ...l, pid: vpid });
  // VmFlags from the VMA reader: the memory dump needs none of them (it goes by the VMAs' kinds),
  // but a lazy split needs MAP_LOCKED ("lo"), so with mlock()ed memory they come first
  const completeFlags = () => {
    if (!task.vmFlags) return;
    completeVmas(pid, task.vmas, task.vmFlags.join());
    task.vmFlags = undefined;
    logVmas(pid, task.vmas);
  };
  if (task.locked) completeFlags();

  phase("dumping memory", pid);
  const tMem = performance.now();
  const pr = dumpMemory(pid, vpid, task, mem, {
    dir: d,
    pagesId: id,
    compress: o.compress,
    prevImagesDir: o.prevImagesDir,
    lazySources: o.lazySources,
    deferred: o.deferred,
    pageServer,
    track,
  });
  const memUs = Math.round((performance.now() - tMem) * 1000);
  const giveBack = givesBackOwnPages(pr.scanned * 4096);
  if (giveBack) giveBackOwnPages("memory dumped");
  completeFlags();

  phase("dumping mappings", pid);
  // cwd, root, exe and mapped files (deleted ones as ghost files)
  const tFiles = performance.now();
  const { cwdId, rootId } = kinds.processFiles(task, files, extra);
  const tShared = performance.now();
  dumpSharedVmas(pid, task.vmas, extra, ns.ownIpcNs ? ids.ipcNsId : undefined);
  n.dumped = { vpid, vmas: task.vmas };
  task.mm.vmas = mmVmaEntries(task.vmas);
  log.debug(
    `process ${pid}: mapped files ${(tShared - tFiles).toFixed(1)} ms, shared memory and VMA entries ${(performance.now() - tShared).toFixed(1)} ms`
  );
  return finish(pr);

  function finish(pr: MemStats & { runs?: Iterable<PagemapRun> }) {
    const tids = task.threads.map((t) => ns.v(pid, t.tid));
    const tCore = performance.now();
    for (const t of task.threads) {
      if (t.seccomp.length) t.core.threadCore.seccompFilter = seccomp.add(t.seccomp);
      const core = { ...t.core };
      if (t.tid === pid) core.tc = task.threads[0].core.tc;
      writeImage(d, `core-${ns.v(pid, t.tid)}.img`, "CORE", [msg(S.core_entrySchema, core)]);
    }
    writeImage(d, `ids-${vpid}.img`, "IDS", [msg(S.task_kobj_ids_entrySchema, ids)]);
    writeImage(d, `mm-${vpid}.img`, "MM", [task.mm as unknown as S.mm_entry]); // plain: thousands of VMAs encoded as they are
    const tPagemap = performance.now();
    if (!pageServer) writePagemap(d, vpid, id, pr.runs!, task.vmas, giveBack);
    // (the pagemap of a GiB of scattered memory has tens of thousands of runs: one-shot code, JIT-cold)
    log.debug(
      `process ${pid}: core, ids and mm images ${(tPagemap - tCore).toFixed(1)} ms, pagemap image ${(performance.now() - tPagemap).toFixed(1)} ms`
    );
    writeImage(d, `fs-${vpid}.img`, "FS", [msg(S.fs_entrySchema, { cwdId, rootId, umask: task.umask })]);
    if (!tableDone)
      writeImage(
        d,
        `fdinfo-${ids.filesId}.img`,
        "FDINFO",
        fds.map((f) => ({ id: f.id, flags: f.cloexec ? 1 : 0, type: f.type, fd: f.fd }) as unknown as S.fdinfo_entry)
      );
    return {
      memUs,
      scanned: pr.scanned,
      written: pr.written,
      skipped: pr.skipped,
      tids,
      pgid: task.stat.pgid,
      sid: task.stat.sid,
    };
  }
}

/**
 * From this many bytes of anonymous memory in the tree a dump starts the VMA reader Worker
 * (codec/vmareader.ts) at the freeze: the smaps walk then runs beside the task state and the pages
 * instead of before them (4 GiB: 0.3-0.5 s of wall off the dump here). Below, a third Worker's start
 * (a VM: ~0.065 s of CPU, 660 page faults) cost more than the walk it hid (1 GiB: BENCHMARKS.md,
 * tenth session). CRIU_BUN_VMA_READER=on starts it whatever the size, =off never.
 */
const VMA_READER_AHEAD = 2 ** 31;
/** Bytes of private memory a process has (RssAnon), 0 when it cannot be read. */
function anonBytes(pid: number): number {
  try {
    return Number(/^(\d+) kB/.exec(readStatus(pid).RssAnon ?? "")?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

const KCMP = { VM: 1, FILES: 2, FS: 3 } as const;
/** The id of a kernel object (fd table, fs, mm) that tree[idx] shares with an earlier process, or its own. */
function sharedId(tree: TreeNode[], idx: number, type: number, key: string): number {
  const me = tree[idx];
  if (me.zombie) return idx + 2;
  for (let j = 0; j < idx; j++) {
    const o = tree[j];
    if (o.zombie || !o.ids) continue;
    if (syscall(NR.kcmp, o.pid, me.pid, type, 0, 0) === 0) return o.ids[key];
  }
  return idx + 2; // the process's own (ids start at 2, as CRIU's: 1 is the dumper's)
}
