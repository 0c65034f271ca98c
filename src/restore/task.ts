// Turning a puppet into one restored process: PID, address space, files, task state, threads.
import { readFileSync, statSync } from "../sys/fs";
import { syscall, cstr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { PR, CLONE, CLONE_ARGS_SIZE, MADV } from "../sys/flags";
import {
  ptrace,
  PTRACE,
  getRegs,
  setRegs,
  setSigmask,
  wait4Raw,
  W,
  __WALL,
  R,
  describeStatus,
  detach,
} from "../sys/ptrace";
import { O, F, pwriteFull, closeFd } from "../sys/mem";
import { uffdUnregister } from "../sys/uffd";
import { restoreFds, importFd, restoreCtx, fdFloor } from "../resources/files";
import { kindByType } from "../resources/kinds";
import { shmemFd } from "../resources/shmem";
import { TreeFiles, ProcFilesState } from "../resources/fdkind";
import { Injector, RemoteMem, BATCH_CODE, dataWords, mustSucceed } from "../ptrace/inject";
import { startPuppet, PUPPET_SYSCALL } from "../ptrace/puppet";
import { MAP, PE, VMA } from "../resources/vma";
import type { RestoreSet, TaskImages } from "./images";
import type * as S from "../images/schemas";
import { CriuError, log, errorMessage } from "../log";
import { presentRuns } from "../images/pagemap";
import { fillPages } from "../codec/pipeline";
import { fillParentPages, PageSource } from "../codec/incremental";
import { lazyRanges, makeUffd, eagerParentRuns, canBeLazy } from "../resources/lazymem";
import { restoreMountNs } from "../resources/mounts";
import {
  restoreMemory,
  restoreMmFields,
  restoreDumpable,
  restoreMlockFuture,
  type MmRestoreCtx,
} from "../resources/mm";
import { enterTimens, restoreRootNamespaces } from "../resources/namespaces";
import { restoreMembarrier } from "../resources/membarrier";
import { restoreThread, restoreFpregs, restoreRegisters, restoreSched } from "../resources/threads";
import { restoreTimers } from "../resources/timers";
import {
  sigactionRestoreCalls,
  restoreTrapAction,
  restorePendingSignals,
  restoreSigmask,
  stopSignal,
  stopSignalProblem,
  type TrapAction,
} from "../resources/signals";
import { rlimitRestoreCalls } from "../resources/rlimits";
import type { InCall } from "../ptrace/inject";
import { errnoText, sysFailed } from "../sys/errno";
import { restoreLocks } from "../resources/filelocks";
import { personalityCall, restoreTaskAttrs, restoreSubreaperEarly } from "../resources/taskattrs";

/** Pages of a process from which its private anonymous memory is written by UFFDIO_COPY (fillUffd):
 * below, the userfaultfd's making (a few injected calls) costs more than it saves. */
const UFFD_FILL_MIN = 32 << 20;
/** a transparent huge page (x86-64) */
const HUGE = 2n << 20n;
const PROT_WRITE = 2;

const TRAMP_SIZE = 5 * 4096; // code + scratch: 2 KiB of structs, then 4 path slots of 4 KiB
const SCRATCH = 256n; // scratch data starts here inside the trampoline area
const BATCH_AT = 16n; // Injector.callMany's code, after `syscall; int3`
/** scratch offset and size of the area batched calls use (the 4 path slots: no path is in use then) */
const BATCH_SCRATCH = 1792n,
  BATCH_SCRATCH_SIZE = 4 * 4096;

function hex(v: bigint | number) {
  return "0x" + v.toString(16);
}

/** The PID of a task in its own (innermost) PID namespace, from /proc/PID/status NSpid. */
function nsPid(hostPid: number): number {
  const m = /^NSpid:\s*(.*)$/m.exec(readFileSync(`/proc/${hostPid}/status`, "latin1"));
  if (!m) return hostPid;
  const l = m[1].trim().split(/\s+/);
  return Number(l[l.length - 1]);
}

/** The first place from FROM on that no VMA of the images takes (the puppet's own mappings are
 *  not read: its mmap with MAP_FIXED_NOREPLACE says EEXIST where one lies, and the next is tried). */
function pickTrampoline(set: RestoreSet, from = 0x10000000n): bigint {
  const taken: [bigint, bigint][] = set.tasks.flatMap((t) =>
    (t.mm?.vmas ?? []).map((v): [bigint, bigint] => [v.start, v.end])
  );
  for (let a = from; a < 0x7f0000000000n; a += 0x10000000n) {
    const e = a + BigInt(TRAMP_SIZE);
    if (!taken.some(([s, en]) => a < en && s < e)) return a;
  }
  throw new CriuError("restore", "no room for the restorer trampoline");
}

export class TaskBuilder {
  puppet = -1;
  pid = -1;
  /** host tids of this process's threads (leader first); vtid() maps them to the image's ids */
  tids: number[] = [];
  v = new Map<number, number>();
  vtid(hostTid: number): number {
    return this.v.get(hostTid) ?? hostTid;
  }
  /** this process lives in a new PID namespace made for the restore (root only) */
  newPidNs = false;
  mem?: RemoteMem;
  inj?: Injector;
  tramp = 0n;
  caught = new Map<number, number[]>();
  /** SIGTRAP's sigaction (handler, flags, restorer, mask), set last by finish() */
  trapAction: TrapAction | null = null;
  injs = new Map<number, Injector>();
  /** what the restore of this process's fds shares between them (RestoreCtx.state) */
  state = new ProcFilesState();
  ownShmem = new Set<number>();

  constructor(
    public set: RestoreSet,
    public t: TaskImages,
    public tree: TreeFiles
  ) {}

  /** Close what this process held open for the others (after every process has its files). */
  closeHeld() {
    // (in one stop: independent closes, their results unused as before)
    const fds = this.tree.toClose.get(this.pid) ?? [];
    if (fds.length) this.batchCalls(fds.map((fd) => [NR.close, fd]));
  }

  /** Independent syscalls in as few stops as fit the batch area (CRIU_BUN_BATCH=off: one each). */
  batchCalls(calls: (number | bigint)[][]): bigint[] {
    const inj = this.inj!;
    if (process.env.CRIU_BUN_BATCH === "off") return calls.map(([nr, ...args]) => inj.call(Number(nr), ...args));
    const per = Number(BigInt(BATCH_SCRATCH_SIZE) / 64n),
      out: bigint[] = [];
    for (let i = 0; i < calls.length; i += per)
      out.push(...inj.callMany(this.tramp + BATCH_AT, this.tramp + SCRATCH + BATCH_SCRATCH, calls.slice(i, i + per)));
    return out;
  }

  /**
   * Calls that each pass a struct: the structs laid out one after the other in the batch area, the
   * call table after them, run in as few stops as fit the area (CRIU_BUN_BATCH=off: one injected
   * syscall each, as dump); each call's check sees its result, in order.
   */
  private batchWithData(vpid: number, calls: InCall[], inj = this.inj!) {
    const room = (words: number, n: number) => ((BigInt(words * 8) + 63n) & ~63n) + BigInt(n * 64);
    for (let i = 0; i < calls.length; ) {
      let words = 0,
        j = i;
      while (j < calls.length && room(words + calls[j].data.length, j + 1 - i) <= BigInt(BATCH_SCRATCH_SIZE))
        words += calls[j++].data.length;
      if (j === i)
        throw new CriuError(
          "restore",
          `process ${vpid}: a call's ${calls[i].data.length * 8} bytes do not fit the batch area`
        );
      this.batchChunk(calls.slice(i, j), words, inj);
      i = j;
    }
  }

  private batchChunk(calls: InCall[], words: number, inj: Injector) {
    const base = this.tramp + SCRATCH + BATCH_SCRATCH;
    const structs = new BigUint64Array(words);
    const raw: (number | bigint)[][] = [];
    let at = 0;
    for (const c of calls) {
      raw.push([c.nr, ...c.args(base + BigInt(at * 8))]);
      structs.set(c.data, at);
      at += c.data.length;
    }
    const tableOff = BigInt(words * 8 + 63) & ~63n;
    this.scratchWrite(BATCH_SCRATCH, new Uint8Array(structs.buffer));
    const res =
      process.env.CRIU_BUN_BATCH === "off"
        ? raw.map(([nr, ...args]) => inj.call(Number(nr), ...args))
        : inj.callMany(this.tramp + BATCH_AT, base + tableOff, raw);
    calls.forEach((c, i) => c.check(res[i]));
  }

  scratchWrite(off: bigint, data: Uint8Array): bigint {
    const a = this.tramp + SCRATCH + off;
    this.mem!.write(a, data);
    return a;
  }
  str(s: string, slot = 0): bigint {
    const b = Buffer.from(s + "\0");
    if (b.length > 4096) throw new CriuError("restore", `process ${this.t.pid}: path too long: ${s.slice(0, 80)}...`);
    return this.scratchWrite(1792n + BigInt(slot) * 4096n, new Uint8Array(b.buffer, b.byteOffset, b.length));
  }

  /** Start the puppet and clone the root process with its old PID out of it. */
  createFromPuppet() {
    const t = this.t,
      t0 = performance.now();
    this.puppet = startPuppet(!!this.set.rstSibling);
    const t1 = performance.now();
    if (this.set.rstSibling)
      log.info(`puppet ${this.puppet} is a child of ${process.ppid} (rst_sibling): so is the restored root`);
    const pmem = new RemoteMem(this.puppet);
    this.tramp = pickTrampoline(this.set);
    const pinj = new Injector(this.puppet, PUPPET_SYSCALL, "trap", pmem);
    log.debug(
      `process ${t.pid}: puppet ${this.puppet} taken in ${(t1 - t0).toFixed(1)} ms, trampoline at ${hex(this.tramp)} picked in ${(performance.now() - t1).toFixed(1)} ms`
    );
    const map = () =>
      pinj.call(
        NR.mmap,
        this.tramp,
        TRAMP_SIZE,
        7 /* RWX: code, and scratch the kernel writes into */,
        MAP.PRIVATE | MAP.ANONYMOUS | MAP.FIXED_NOREPLACE,
        -1,
        0
      );
    let r = map();
    // EEXIST: a mapping of the puppet's own lies there (its image, stack, vDSO): the next place
    for (let tries = 0; r === -17n && tries < 16; tries++) {
      this.tramp = pickTrampoline(this.set, this.tramp + 0x10000000n);
      log.debug(`process ${t.pid}: the puppet has a mapping there; trampoline at ${hex(this.tramp)} instead`);
      r = map();
    }
    if (r !== this.tramp)
      throw new CriuError(
        "restore",
        r < 0n
          ? sysFailed(`process ${t.pid} (the puppet ${this.puppet})`, `mmap of the trampoline at ${hex(this.tramp)}`, r)
          : `process ${t.pid} (the puppet ${this.puppet}): the trampoline was mapped at ${hex(r)}, not ${hex(this.tramp)}`
      );
    pmem.write(this.tramp, new Uint8Array([0x0f, 0x05, 0xcc]));
    pmem.write(this.tramp + BATCH_AT, BATCH_CODE);
    pinj.ok("close_range", NR.close_range, 0, 0xffffffff, 0);
    const inherited = this.importInherited(pinj);
    if (this.set.timens) enterTimens(pinj, this.puppet, this.set.timens);
    // clone3 with set_tid = [pid], CLONE_PARENT: the new process is criu-bun's child
    const args = new BigUint64Array(CLONE_ARGS_SIZE / 8);
    // a tree dumped from the init of its own PID namespace comes back in a fresh one, as PID 1
    this.newPidNs = t.pid === 1 && this.set.tasks.length > 0 && !!this.set.newPidNs;
    const tidArr = new BigUint64Array([BigInt(t.pid)]);
    const tidAddr = this.tramp + SCRATCH + 512n;
    pmem.write(tidAddr, new Uint8Array(tidArr.buffer));
    // CLONE_PARENT wants exit_signal 0: the puppet's SIGCHLD is inherited
    args[0] = BigInt(CLONE.PARENT | (this.newPidNs ? CLONE.NEWPID : 0));
    args[4] = 0n;
    args[8] = tidAddr;
    args[9] = 1n;
    const argsAddr = this.tramp + SCRATCH;
    pmem.write(argsAddr, new Uint8Array(args.buffer));
    pinj.syscallAddr = this.tramp;
    const child = pinj.call(NR.clone3, argsAddr, CLONE_ARGS_SIZE);
    if (child < 0n) {
      const hint =
        child === -17n
          ? "its PID is in use"
          : child === -1n
            ? "giving a process its old PID needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN; run the restore as root"
            : undefined;
      throw new CriuError("restore", sysFailed(`process ${t.pid}`, "clone3 with set_tid", child, hint));
    }
    this.pid = Number(child);
    this.checkVpid(this.pid, t.pid);
    this.waitNewTask(this.pid);
    pmem.close();
    // the puppet has served its purpose
    syscall(NR.kill, this.puppet, 9);
    for (;;) {
      const { r: w, status } = wait4Raw(this.puppet, __WALL);
      if (w === -4) continue;
      if (w < 0 || !W.stopped(status)) break;
    }
    this.puppet = -1;
    this.inherited = new Map(inherited);
    this.adopt();
    // the inherited fds came along in the root's copy of the puppet's fd table: held there for
    // whichever process of the tree uses them (children close their copies at creation)
    for (const [key, fd] of inherited) {
      this.tree.held.set(`inherit:${key}`, { pid: this.pid, vpid: t.pid, fd });
      const l = this.tree.toClose.get(this.pid) ?? [];
      l.push(fd);
      this.tree.toClose.set(this.pid, l);
    }
  }

  /** inherit_fd KEY -> the root's copy of it (importInherited), while the root is made */
  private inherited = new Map<string, number>();

  /** setns into the network namespace given for KEY (the root's copy of criu-bun's fd: in the
   *  container's PID namespace criu-bun's own PID means nothing) */
  private joinExtNetNs(key: string) {
    const fd = this.inherited.get(key);
    if (fd === undefined)
      throw new CriuError("restore", `process ${this.t.pid}: inherit_fd ${key}: not imported into the root`);
    const r = Number(this.inj!.call(NR.setns, fd, CLONE.NEWNET));
    if (r < 0)
      throw new CriuError(
        "restore",
        sysFailed(
          `process ${this.t.pid}`,
          `setns into criu-bun's fd ${this.set.inheritFds?.get(key)} (inherit_fd ${key})`,
          r,
          "is it a network namespace?"
        )
      );
    this.tree.taken.add(`inherit:${key}`);
    log.info(
      `process ${this.t.pid} joined the external network namespace given for ${key} (criu-bun's fd ${this.set.inheritFds?.get(key)})`
    );
  }

  /** inherit_fd: each fd criu-bun was given for a KEY, copied into the puppet (same open file
   *  description, pidfd_getfd) above every fd number the root restores. */
  private importInherited(pinj: Injector): [string, number][] {
    const out: [string, number][] = [];
    if (!this.set.inheritFds?.size) return out;
    const floor = fdFloor(this.t.fds);
    const pidfd = Number(pinj.call(NR.pidfd_open, process.pid, 0));
    if (pidfd < 0)
      throw new CriuError(
        "restore",
        sysFailed(`process ${this.t.pid} (the puppet ${this.puppet})`, "pidfd_open of criu-bun (inherit_fd)", pidfd)
      );
    try {
      for (const [key, mine] of this.set.inheritFds) {
        const g = Number(pinj.call(NR.pidfd_getfd, pidfd, mine, 0));
        if (g < 0)
          throw new CriuError(
            "restore",
            sysFailed(
              `process ${this.t.pid} (the puppet ${this.puppet})`,
              `pidfd_getfd of criu-bun's fd ${mine} (inherit_fd ${key})`,
              g
            )
          );
        const h = Number(pinj.call(NR.fcntl, g, F.DUPFD_CLOEXEC, floor));
        pinj.call(NR.close, g);
        if (h < 0)
          throw new CriuError(
            "restore",
            sysFailed(
              `process ${this.t.pid} (the puppet ${this.puppet})`,
              `F_DUPFD of criu-bun's fd ${mine} (inherit_fd ${key})`,
              h
            )
          );
        log.debug(`inherit_fd: criu-bun's fd ${mine} for '${key}' is fd ${h} of the root until its files are restored`);
        out.push([key, h]);
      }
    } finally {
      pinj.call(NR.close, pidfd);
    }
    return out;
  }

  parent?: TaskBuilder;
  /** the process whose memory it was forked with (its parent), if any */
  memParent?: TaskBuilder;
  /** the zombie session leader that made it, when not its parent (restore.ts) */
  via?: TaskBuilder;

  /** shares the fd table (CLONE_FILES) / fs (CLONE_FS) of its parent: restored there, once */
  sharesFiles = false;
  sharesFs = false;

  /** Fork this process, with its old PID, from its parent (whose memory is already restored). */
  createFromParent(parent: TaskBuilder, via?: TaskBuilder, exitSignal = 17) {
    const t = this.t;
    this.tramp = parent.tramp;
    this.parent = parent;
    // made by its session's zombie leader (restore.ts): nothing shared with it, its memory all its own
    this.memParent = via ? undefined : parent;
    this.sharesFiles = !via && !!t.ids && !!parent.t.ids && t.ids.filesId === parent.t.ids.filesId;
    this.sharesFs = !via && !!t.ids && !!parent.t.ids && t.ids.fsId === parent.t.ids.fsId;
    if (via) {
      this.via = via;
      log.debug(
        `process ${t.pid}: made by ${via.t.pid}, the zombie leader of its session ${t.sid}, whose exit hands it to its parent ${parent.t.pid}`
      );
      parent = via;
    }
    const args = new BigUint64Array(CLONE_ARGS_SIZE / 8);
    args[0] = BigInt((this.sharesFiles ? CLONE.FILES : 0) | (this.sharesFs ? CLONE.FS : 0));
    args[4] = BigInt(exitSignal); // SIGCHLD to the parent, as fork() (a group helper: none)
    args[8] = parent.scratchWrite(512n, new Uint8Array(new BigUint64Array([BigInt(t.pid)]).buffer));
    args[9] = 1n;
    const a = parent.scratchWrite(0n, new Uint8Array(args.buffer));
    const child = parent.inj!.call(NR.clone3, a, CLONE_ARGS_SIZE);
    if (child < 0n) {
      throw new CriuError(
        "restore",
        sysFailed(
          `process ${t.pid}`,
          `clone3 with set_tid from its parent ${parent.t.pid}`,
          child,
          child === -17n ? "its PID is in use" : undefined
        )
      );
    }
    // clone3 answers in the parent's PID namespace; ptrace needs ours: the fork event tells it
    this.pid = parent.inj!.lastEventPid || Number(child);
    this.checkVpid(this.pid, t.pid);
    this.waitNewTask(this.pid);
    this.adopt();
    if (!this.sharesFiles) this.inj!.ok("close_range", NR.close_range, 0, 0xffffffff, 0); // the parent's held fds are not ours
  }

  /** The new task must have the image's PID in its own namespace. */
  private checkVpid(hostPid: number, want: number) {
    const ns = nsPid(hostPid);
    if (ns !== want) {
      syscall(NR.kill, hostPid, 9);
      throw new CriuError("restore", `clone3 gave PID ${ns} instead of ${want}`);
    }
  }

  private adopt() {
    // Everything blocked until the very end: timer signals and re-queued signals wait in the
    // kernel's queues with their siginfo instead of stopping us mid-restore. Threads inherit it.
    setSigmask(this.pid, 0xffffffffffffffffn);
    this.mem = new RemoteMem(this.pid);
    this.inj = new Injector(this.pid, this.tramp, "trap", this.mem);
    this.injs.set(this.pid, this.inj);
    this.tids.push(this.pid);
    this.v.set(this.pid, this.t.pid);
    if (!this.parent) {
      restoreRootNamespaces(
        {
          pid: this.pid,
          inj: this.inj,
          str: (s, slot) => this.str(s, slot),
          scratch: (off, d) => this.scratchWrite(off, d),
          joinExtNetNs: (key) => this.joinExtNetNs(key),
        },
        this.set,
        this.newPidNs
      );
    }
    if (!this.parent && this.set.mounts) {
      // a container's mounts, after the namespaces they belong to (proc: PID, mqueue: IPC, sysfs: network)
      const inj = this.inj;
      restoreMountNs(
        {
          pid: this.pid,
          ok: (n, nr, ...a) => inj.ok(n, nr, ...a),
          call: (nr, ...a) => inj.call(nr, ...a),
          str: (s, slot) => this.str(s, slot),
          pty: {
            pid: this.pid,
            vpid: this.t.pid,
            tree: this.tree,
            inj: this.inj!,
            mem: this.mem!,
            str: (x) => this.str(x),
            scratch: (off, data) => this.scratchWrite(off, data),
            floor: fdFloor(this.t.fds) + 8,
          },
        },
        this.set.mounts,
        this.set.dir,
        this.set.mountOpts!.root,
        { root: this.set.mountOpts!.root, ext: this.set.mountOpts!.ext }
      );
    }
    log.info(`Created process ${this.t.pid}${this.pid !== this.t.pid ? ` (${this.pid} here)` : ""}`);
  }

  private waitNewTask(tid: number) {
    for (;;) {
      const { r, status } = wait4Raw(tid, __WALL);
      if (r === -4) continue;
      if (r < 0) throw new CriuError("restore", sysFailed(`new thread ${tid} of process ${this.t.pid}`, "wait4", r));
      if (!W.stopped(status))
        throw new CriuError("restore", `process ${this.t.pid}: its new thread ${tid} ${describeStatus(status)}`);
      return;
    }
  }

  /** The memory layout of the process (mm.ts), through its own injected syscalls. */
  private mmCtx(): MmRestoreCtx {
    const inj = this.inj!,
      t = this.t;
    return {
      pid: this.pid,
      vpid: this.t.pid,
      inj,
      mm: this.t.mm,
      // the runs as objects, made only when read (memory inherited from a parent)
      get pagemap() {
        return t.pagemap;
      },
      parent: this.memParent?.t,
      files: this.set.files,
      tramp: this.tramp,
      treeVmas: () => this.set.tasks.flatMap((t) => t.mm?.vmas ?? []),
      batch: (calls) => this.batchCalls(calls),
      batchData: (calls) => this.batchWithData(this.t.pid, calls),
      str: (s, slot = 0) => this.str(s, slot),
      scratch: (off, d) => this.scratchWrite(off, d),
      openDeleted: (f, flags, what) => this.openRemoved(f, flags, what),
      shmem: (shmid, size) => {
        const got = shmemFd({
          pid: this.pid,
          inj,
          dir: this.set.dir,
          tree: this.tree,
          shmid,
          size,
          namedSizes: this.set.shmemSizes,
          str: (s) => this.str(s),
          floor: this.t.fds.reduce((m, f) => Math.max(m, f.fd), 0) + 16,
          vpid: this.t.pid,
          importFd: (owner) => importFd(inj, this.pid, owner, `process ${this.pid} shared memory`),
        });
        if (got.own) this.ownShmem.add(got.fd);
        return got;
      },
      shmemIno: (shmid) => {
        const h = this.tree.held.get(`shmem:${shmid}`);
        return h ? statSync(`/proc/${h.pid}/fd/${h.fd}`).ino : undefined;
      },
      fill: () => this.fillPages(),
    };
  }

  /** Unmap the puppet's memory, put the vDSO where it was, map every VMA and fill the pages. */
  restoreMemory() {
    restoreMemory(this.mmCtx());
  }

  private fillPages() {
    // src/codec/pipeline.ts; with lazyParents the pages of private anonymous memory are the daemon's
    const u = this.fillUffd();
    try {
      fillPages(
        this.set.dir,
        this.t,
        this.pid,
        this.mem!.fd,
        !!this.memParent,
        this.set.lazyParents ? canBeLazy : undefined,
        u?.fd,
        this.set.autoDedup
      );
    } finally {
      if (u) {
        // (closing criu-bun's fd, the last one, would unregister them too)
        for (const [a, b] of u.ranges) {
          const e = uffdUnregister(u.fd, a, b);
          if (e) log.warn(`process ${this.t.pid}: UFFDIO_UNREGISTER of 0x${a.toString(16)}: ${errnoText(e)}`);
        }
        closeFd(u.fd);
      }
    }
    // incremental dumps; with lazyParents (migrate's post-copy) only what is not lazy memory: the daemon brings the rest
    // (a pagemap without runs in the parent's images: no objects made for its runs)
    if (this.t.pm.some(PE.PARENT, PE.PRESENT)) {
      const runs = this.set.lazyParents ? eagerParentRuns(this.t.mm.vmas, this.t.pagemap) : this.t.pagemap;
      fillParentPages(this.set.dir, this.t.pid, runs, this.mem!.fd, `process ${this.t.pid}`, this.set.autoDedup);
    }
    if (this.set.lazyParents) this.placeRseqPages();
  }

  /**
   * For a plain restore of a large process: a userfaultfd over its writable private anonymous VMAs
   * (made in it and taken out, as for lazy pages, without events), through which the page Workers
   * write its pages with UFFDIO_COPY instead of process_vm_writev: the kernel allocates each page
   * and copies into it, where a fault through process_vm_writev's pinning zeroes it first (1 GiB
   * heap image, A/B alternating: pages phase median 526 -> 486 ms, CPU 0.63 -> 0.575 s, faster in
   * 6 of 6 pairs). Nothing else may write into a registered range while it is (a missing page there
   * would wait for a fault nobody serves): not with memory inherited from a parent (its pages are
   * compared through /proc/PID/mem) or lazy memory; read-only VMAs are not registered (written
   * through /proc/PID/mem); the parent images' pages are written after fillPages unregistered them.
   * undefined (process_vm_writev) when small, when transparent huge pages may back its memory
   * (UFFDIO_COPY makes 4 KiB pages), or when the kernel refuses (a VMA userfaultfd cannot take, no
   * userfaultfd at all): said at -v4. CRIU_BUN_UFFD_FILL=0 turns it off.
   */
  private fillUffd(): { fd: number; ranges: [bigint, bigint][] } | undefined {
    if (process.env.CRIU_BUN_UFFD_FILL === "0" || this.memParent || this.set.lazyParents) return undefined;
    if (presentRuns(this.t.pm).bytes < UFFD_FILL_MIN) return undefined;
    // UFFDIO_COPY puts 4 KiB pages where a fault through process_vm_writev may get a transparent
    // huge page: left to the faults whenever the kernel would give this memory huge pages (a VMA
    // holding an aligned 2 MiB, THP "always" and no MADV_NOHUGEPAGE, or "madvise" and MADV_HUGEPAGE)
    const thp = thpMode();
    const huge = (v: S.vma_entry) =>
      thp === "always"
        ? !(v.madv & (1n << BigInt(MADV.NOHUGEPAGE)))
        : thp === "madvise" && !!(v.madv & (1n << BigInt(MADV.HUGEPAGE)));
    const ranges: [bigint, bigint][] = [];
    for (const v of this.t.mm.vmas) {
      if (!(v.status & VMA.ANON_PRIVATE) || !(v.prot & PROT_WRITE) || v.status & (VMA.VDSO | VMA.VVAR | VMA.VSYSCALL))
        continue;
      if (huge(v) && (v.end / HUGE) * HUGE - ((v.start + HUGE - 1n) / HUGE) * HUGE >= HUGE) {
        log.debug(
          `process ${this.t.pid}: transparent huge pages (${thp}) may back its memory: its pages go by process_vm_writev`
        );
        return undefined;
      }
      ranges.push([BigInt(v.start), BigInt(v.end)]);
    }
    if (!ranges.length) return undefined;
    try {
      const fd = makeUffd(
        {
          pid: this.pid,
          vpid: this.t.pid,
          call: (nr, ...a) => this.inj!.call(nr, ...a),
          batchData: (calls) => this.batchWithData(this.t.pid, calls),
        },
        ranges,
        { features: 0, what: "pages by UFFDIO_COPY" }
      );
      return { fd, ranges };
    } catch (e) {
      // nothing stays registered: the process's own fd is closed whatever happened, and criu-bun never got one
      log.debug(`process ${this.t.pid}: ${errorMessage(e)}; its pages go by process_vm_writev`);
      return undefined;
    }
  }

  /**
   * lazyParents: the pages of the threads' rseq areas written here from the images, though they
   * are lazy memory. The restore's own rseq registration writes there before the tree runs: a
   * fault the lazy-pages daemon answers only once it has read the images (a tenth of a second of
   * the frozen window on a busy machine). The daemon finds them in place (EEXIST) and moves on.
   */
  private placeRseqPages() {
    const pages = new Set<bigint>();
    for (const core of this.t.cores.values()) {
      const e = core.threadCore?.rseqEntry;
      if (!e?.rseqAbiPointer) continue;
      const a = BigInt(e.rseqAbiPointer);
      pages.add(a & ~4095n);
      pages.add((a + BigInt(Math.max(1, Number(e.rseqAbiSize || 32))) - 1n) & ~4095n);
    }
    if (!pages.size) return;
    // the pagemap loadImages read and checked, not decoded again
    const src = new PageSource(this.set.dir, this.t.pid, { pagesFile: this.t.pagesFile, runs: this.t.pagemap });
    try {
      const buf = new Uint8Array(4096);
      for (const p of pages) {
        const v = this.t.mm.vmas.find((x) => BigInt(x.start) <= p && p < BigInt(x.end));
        if (!v || !canBeLazy(v)) continue; // written with the rest
        // not in the images (kept by the source, or a zero page): faulted in as before
        if (!src.readSpan(p, 1, buf, 0)) continue;
        pwriteFull(this.mem!.fd, buf, p, 4096, 0, `process ${this.t.pid}: write its rseq page at 0x${p.toString(16)}`);
        log.debug(
          `process ${this.t.pid}: rseq page 0x${p.toString(16)} written from the images (not left to the lazy-pages daemon)`
        );
      }
    } finally {
      src.close();
    }
  }

  /** mm fields, auxv and exe link in one PR_SET_MM_MAP. */
  restoreMmFields() {
    restoreMmFields(this.mmCtx());
  }

  /** An fd on a deleted file the images bring back (its kind's openRemoved: a ghost file or link
   *  remap) that the process needs outside its fd table (what: a mapping, its cwd), else undefined. */
  private openRemoved(f: S.file_entry, flags: number, what: string): number | undefined {
    const k = kindByType(f.type);
    return k?.openRemoved?.(this.fileCtx(what), f, flags, this.tree.kindState(k));
  }

  /** A file-restore context for this process (ghost files needed by mappings and exe). */
  private fileCtx(what: string) {
    return restoreCtx(
      {
        pid: this.pid,
        vpid: this.t.pid,
        inj: this.inj!,
        mem: this.mem!,
        dir: this.set.dir,
        files: this.set.files,
        state: this.state,
        tree: this.tree,
        str: (s, slot = 0) => this.str(s, slot),
        scratch: (off, d) => this.scratchWrite(off, d),
      },
      fdFloor(this.t.fds),
      `process ${this.t.pid} ${what}`
    );
  }

  restoreFiles(opts: { shellJob?: boolean } = {}) {
    const inj = this.inj!;
    if (!this.sharesFiles)
      restoreFds(
        {
          pid: this.pid,
          vpid: this.t.pid,
          inj,
          mem: this.mem!,
          dir: this.set.dir,
          files: this.set.files,
          state: this.state,
          tree: this.tree,
          opts,
          str: (s, slot = 0) => this.str(s, slot),
          scratch: (off, d) => this.scratchWrite(off, d),
          batch: (calls) => this.batchCalls(calls),
          batchData: (calls) => this.batchWithData(this.t.pid, calls),
        },
        this.t.fds
      );
    restoreLocks({
      vpid: this.t.pid,
      dir: this.set.dir,
      inj: this.inj!,
      scratch: (off, d) => this.scratchWrite(off, d),
    });
    if (this.sharesFs) return; // cwd, root and umask are the parent's, restored there
    const cwd = this.set.files.get(this.t.fs.cwdId)?.reg?.name;
    const root = this.set.files.get(this.t.fs.rootId)?.reg?.name;
    const cwdFile = this.set.files.get(this.t.fs.cwdId);
    const removed = cwdFile ? this.openRemoved(cwdFile, O.RDONLY | O.DIRECTORY, "cwd") : undefined;
    // cwd, root and umask in one stop, run in this order whatever each returns, results checked
    // in order (a failure fails the restore, which kills the process)
    const calls: InCall[] = [];
    const must = (what: string) => mustSucceed(inj.who, what);
    const path = (p: string) => dataWords(cstr(p));
    if (removed !== undefined) {
      calls.push(
        { nr: NR.fchdir, data: [], args: () => [removed], check: must("fchdir to the removed cwd") },
        { nr: NR.close, data: [], args: () => [removed], check: () => {} }
      );
    } else if (cwd) calls.push({ nr: NR.chdir, data: path(cwd), args: (a) => [a], check: must(`chdir(${cwd})`) });
    // the cwd first, as seen from here: it may lie outside the root (chroot leaves the cwd alone)
    if (root && root !== "/")
      calls.push({ nr: NR.chroot, data: path(root), args: (a) => [a], check: must(`chroot(${root})`) });
    const umask = this.t.fs.umask;
    if (umask !== undefined) calls.push({ nr: NR.umask, data: [], args: () => [umask], check: () => {} });
    this.batchWithData(this.t.pid, calls);
  }

  restoreTaskState() {
    const inj = this.inj!,
      t = this.t,
      tc = t.cores.get(t.pid)!.tc!;
    // personality, signal handlers (CRIU's table of 62, checked when the images were loaded:
    // sigactionTable) and rlimits in one batch: one stop of the process instead of about 80
    const { calls: sa, trap } = sigactionRestoreCalls(t.pid, tc.sigactions);
    this.trapAction = trap; // set last, in finish()
    this.batchWithData(t.pid, [personalityCall(tc), ...sa, ...rlimitRestoreCalls(t.pid, tc.rlimits?.rlimits ?? [])]);
    if (t.mm?.thpDisabled) inj.ok("prctl(PR_SET_THP_DISABLE)", NR.prctl, PR.SET_THP_DISABLE, 1, 0, 0, 0);
    restoreMembarrier(t.pid, inj, tc.membarrierRegistrationMask ?? 0);
    restoreTaskAttrs(
      { pid: this.pid, vpid: t.pid, inj, str: (s) => this.str(s), scratch: (off, d) => this.scratchWrite(off, d) },
      tc
    );
  }

  /** Create the other threads with their TIDs. */
  createThreads() {
    const inj = this.inj!;
    for (const tid of this.t.tids) {
      if (tid === this.t.pid) continue;
      const args = new BigUint64Array(CLONE_ARGS_SIZE / 8);
      args[0] = BigInt(CLONE.VM | CLONE.FS | CLONE.FILES | CLONE.SIGHAND | CLONE.THREAD | CLONE.SYSVSEM);
      const tidAddr = this.scratchWrite(512n, new Uint8Array(new BigUint64Array([BigInt(tid)]).buffer));
      args[8] = tidAddr;
      args[9] = 1n;
      const a = this.scratchWrite(0n, new Uint8Array(args.buffer));
      const r = inj.call(NR.clone3, a, CLONE_ARGS_SIZE);
      if (r < 0n) {
        throw new CriuError(
          "restore",
          sysFailed(
            `process ${this.t.pid} thread ${tid}`,
            "clone3 with set_tid",
            r,
            r === -17n ? "its TID is in use" : undefined
          )
        );
      }
      const host = inj.lastEventPid || Number(r);
      this.waitNewTask(host);
      this.tids.push(host);
      this.v.set(host, tid);
      this.injs.set(host, new Injector(host, this.tramp, "trap", this.mem!));
    }
  }

  /** Per-thread kernel state: tid address, robust list, rseq, altstack, name, creds (threads.ts). */
  restoreThreadState() {
    for (const tid of this.tids) {
      const vtid = this.vtid(tid),
        core = this.t.cores.get(vtid)!;
      const comm = core.threadCore!.comm ?? (vtid === this.t.pid ? this.t.cores.get(this.t.pid)!.tc!.comm : undefined);
      restoreThread(
        {
          tid,
          vtid,
          inj: this.injs.get(tid)!,
          scratch: (off, data) => this.scratchWrite(off, data),
          batchData: (calls) => this.batchWithData(vtid, calls, this.injs.get(tid)!),
        },
        core,
        comm,
        this.set.seccomp
      );
    }
  }

  /** Pending signals, timers: the last things before the registers, so nothing fires early. */
  restoreSignalsAndTimers() {
    const t = this.t,
      tc = t.cores.get(t.pid)!.tc!;
    const scratch = (off: bigint, data: Uint8Array) => this.scratchWrite(off, data);
    restorePendingSignals({ pid: t.pid, inj: this.inj!, scratch }, null, tc.signalsS?.signals ?? []);
    for (const tid of this.tids) {
      restorePendingSignals(
        { pid: t.pid, inj: this.injs.get(tid)!, scratch },
        this.vtid(tid),
        this.t.cores.get(this.vtid(tid))!.threadCore?.signalsP?.signals ?? []
      );
    }
    restoreTimers(
      {
        pid: t.pid,
        inj: this.inj!,
        scratch: (off, data) => this.scratchWrite(off, data),
        read: (a, n) => this.mem!.read(a, n),
      },
      tc.timers
    );
  }

  /**
   * restore --lazy-pages: a userfaultfd over the VMAs whose pages stayed with the source, made in
   * the process and taken out of it (src/resources/lazymem.ts); criu-bun's fd of it, or undefined
   * when this process has no lazy pages.
   */
  lazyUffd(): number | undefined {
    const ranges = lazyRanges(this.t.pid, this.t.mm.vmas, this.t.pagemap, !!this.set.lazyParents);
    if (!ranges.length) return undefined;
    return makeUffd(
      {
        pid: this.pid,
        vpid: this.t.pid,
        call: (nr, ...a) => this.inj!.call(nr, ...a),
        batchData: (calls) => this.batchWithData(this.t.pid, calls),
      },
      ranges
    );
  }

  /** Registers of every thread, trampoline unmapped from the leader itself, then let go. */
  finish() {
    for (const tid of this.tids) restoreFpregs(tid, this.t.cores.get(this.vtid(tid))!);
    // SIGTRAP's handler, then munmap of the trampoline, from the leader through its syscall
    // stops (the trampoline's `syscall`, never reaching its int3): no int3 runs (and forces a
    // SIGTRAP) after the handler is set, and no instruction is fetched from the unmapped trampoline
    const inj = this.inj!;
    inj.mode = "sysstop";
    // (after every thread's credentials, and late: mm.ts)
    restoreDumpable({ vpid: this.t.pid, inj }, this.t.mm);
    restoreMlockFuture({ vpid: this.t.pid, inj }, this.t.mm);
    restoreTrapAction({ pid: this.t.pid, inj, scratch: (off, data) => this.scratchWrite(off, data) }, this.trapAction);
    const res = inj.call(NR.munmap, this.tramp, TRAMP_SIZE);
    if (res !== 0n)
      throw new CriuError(
        "restore",
        sysFailed(`process ${this.t.pid}`, `munmap of the trampoline at ${hex(this.tramp)}`, res)
      );
    for (const tid of this.tids) {
      for (const s of this.injs.get(tid)!.caughtSignals)
        (this.caught.get(tid) ?? this.caught.set(tid, []).get(tid)!).push(s);
    }
    const tc = this.t.cores.get(this.t.pid)!.tc!;
    for (const tid of this.tids) {
      const core = this.t.cores.get(this.vtid(tid))!;
      restoreRegisters(tid, this.vtid(tid), core);
      restoreSigmask(tid, core.threadCore, tc);
      // last: nothing is injected in the thread after this (threads.ts)
      restoreSched(tid, this.vtid(tid), core);
    }
    this.mem?.close();
  }

  /** Let every thread run (or stay stopped with -s). */
  release(opts: { leaveStopped?: boolean }) {
    const tc = this.t.cores.get(this.t.pid)?.tc;
    const stopped = opts.leaveStopped || tc?.taskState === 3; // dumped while stopped
    // dumped while stopped: the signal that stopped it (its parent's wait tells them apart); -s: SIGSTOP
    const stopSig = opts.leaveStopped ? 19 : stopSignal(tc);
    for (const tid of [...this.tids].reverse()) {
      const sig = stopped ? stopSig : (this.caught.get(tid)?.[0] ?? 0);
      detach(tid, sig);
    }
  }

  /** Before the release: a process dumped stopped by SIGTSTP, SIGTTIN or SIGTTOU must stop so again. */
  checkStopSignal(leaveStopped?: boolean) {
    const tc = this.t.cores.get(this.t.pid)?.tc;
    const sig = stopSignal(tc);
    if (leaveStopped || sig === 19 || !tc) return;
    const why = stopSignalProblem(
      this.pid,
      sig,
      tc,
      this.t.tids.map((tid) => this.t.cores.get(tid)?.threadCore)
    );
    if (why)
      throw new CriuError(
        "restore",
        `process ${this.t.pid} was stopped by signal ${sig}, which would not stop it again: ${why}`
      );
    log.debug(`process ${this.t.pid}: stopped again by signal ${sig} at the release`);
  }

  /** its process group as its setsid made it (its own PID), when it made one */
  private pgidNow?: number;
  /** Right after creation, before its children exist: a session leader starts its session. */
  restoreSession(inTree: Set<number>) {
    const t = this.t;
    if (t.sid === t.pid) this.pgidNow = Number(this.inj!.ok(`setsid in ${t.pid}`, NR.setsid));
    if (!t.zombie) restoreSubreaperEarly({ vpid: t.pid, inj: this.inj! }, t.cores.get(t.pid)?.tc);
    else if (!inTree.has(t.sid))
      log.info(`process ${t.pid}: session ${t.sid} was the shell job's; it joins criu-bun's`); // (restore.ts checkSessions)
  }
  /** Once every process exists: process groups (leaders first, see restore.ts). */
  restoreGroup() {
    const t = this.t;
    // after its setsid a process leads its own group until its setpgid here (no one else moves it)
    const cur = this.pgidNow ?? Number(this.inj!.call(NR.getpgid, 0));
    if (cur === t.pgid) {
      if (this.pgidNow !== undefined) log.debug(`process ${t.pid}: process group ${cur} since its setsid`);
      return;
    }
    const r = this.inj!.call(NR.setpgid, 0, t.pgid === t.pid ? 0 : t.pgid);
    if (r < 0n) log.warn(`process ${t.pid}: cannot join process group ${t.pgid}: ${errnoText(-r)}`);
  }

  /** A zombie: exit with the recorded status and stay unreaped for the parent. */
  becomeZombie() {
    const st = this.t.zombie!.exitCode;
    // its name as ps shows it: the comm the image holds (a zombie keeps the comm it died with)
    const comm = this.t.cores.get(this.t.pid)?.tc?.comm;
    if (comm) {
      const name = new Uint8Array(16);
      name.set(Buffer.from(comm).subarray(0, 15));
      this.inj!.ok("prctl(PR_SET_NAME)", NR.prctl, PR.SET_NAME, this.scratchWrite(0n, name), 0, 0, 0);
    }
    const regs = getRegs(this.pid);
    regs[R.rip] = this.tramp;
    regs[R.orig_rax] = 0xffffffffffffffffn;
    let sig = 0;
    if ((st & 0x7f) === 0) {
      regs[R.rax] = BigInt(NR.exit_group);
      regs[R.rdi] = BigInt((st >> 8) & 0xff);
    } else {
      sig = st & 0x7f;
      this.inj!.call(NR.rt_sigaction, sig, this.scratchWrite(0n, new Uint8Array(32)), 0, 8); // SIG_DFL
      setSigmask(this.pid, 0n);
      regs[R.rax] = BigInt(NR.kill);
      regs[R.rdi] = BigInt(this.t.pid);
      regs[R.rsi] = BigInt(sig);
    }
    setRegs(this.pid, regs);
    ptrace(PTRACE.CONT, this.pid, 0, 0);
    for (;;) {
      const { r, status } = wait4Raw(this.pid, __WALL);
      if (r === -4) continue;
      if (r < 0) throw new CriuError("restore", sysFailed(`zombie process ${this.t.pid}`, "wait4", r));
      if (W.exited(status) || W.signaled(status)) break;
      // signal-delivery stop of the fatal signal, or the exit event: let it go on
      ptrace(PTRACE.CONT, this.pid, 0, W.event(status) === 0 ? W.stopSig(status) : 0);
    }
    this.mem?.close();
    this.tids = [];
    log.info(`Process ${this.pid} restored as a zombie (status 0x${st.toString(16)})`);
  }

  /** A process group helper (restore.ts): exit, and be reaped by the member that made it (a child
   *  without an exit signal: wait4 with __WALL), leaving the group to its members. */
  endGroupHelper(creator: TaskBuilder) {
    this.becomeZombie();
    const r = creator.inj!.call(NR.wait4, this.t.pid, 0, 0x40000000 /* __WALL */, 0);
    if (r !== BigInt(this.t.pid))
      throw new CriuError(
        "restore",
        r < 0n
          ? sysFailed(`process ${creator.t.pid}`, `wait4 for the helper of process group ${this.t.pgid}`, r)
          : `process ${creator.t.pid}: wait4 for the helper of process group ${this.t.pgid} gave ${r}`
      );
    log.debug(
      `process group ${this.t.pgid}: its helper led it while its members joined, and was reaped by process ${creator.t.pid}`
    );
  }

  /** Made by its session's leader (createFromParent via): that leader's exit made it its parent's? */
  checkHandedOver() {
    if (!this.via) return;
    const want = this.parent!.pid;
    const st = readFileSync(`/proc/${this.pid}/stat`, "latin1");
    const ppid = Number(st.slice(st.lastIndexOf(")") + 2).split(" ")[1]);
    if (ppid !== want)
      throw new CriuError(
        "restore",
        `process ${this.t.pid}: the exit of its session's leader ${this.via.t.pid} handed it to ${ppid}, not to its parent ${this.parent!.t.pid}`
      );
    log.debug(`process ${this.t.pid}: its parent is ${this.parent!.t.pid} again, in session ${this.t.sid}`);
  }

  /** Undo: kill whatever was built. */
  abort() {
    for (const p of [this.puppet, this.pid]) {
      if (p <= 0) continue;
      syscall(NR.kill, p, 9);
    }
    for (const tid of [...this.tids].reverse().concat(this.puppet > 0 ? [this.puppet] : [])) {
      for (let i = 0; i < 100; i++) {
        const { r, status } = wait4Raw(tid, __WALL);
        if (r < 0 || !W.stopped(status)) break;
      }
    }
    this.mem?.close();
  }
}

/** The kernel's transparent huge page mode ("always", "madvise", "never"; "never" without THP). */
function thpMode(): string {
  try {
    return /\[(\w+)\]/.exec(readFileSync("/sys/kernel/mm/transparent_hugepage/enabled", "latin1"))?.[1] ?? "never";
  } catch {
    return "never";
  }
}
