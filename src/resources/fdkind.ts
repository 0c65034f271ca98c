// The interface every kind of file descriptor implements (regular files, pipes, sockets,
// eventfd ...). Adding a kind = one file in src/resources exporting an FdKind, listed in kinds.ts.
import { type BigIntStats } from "../sys/fs";
import { writeNewFile } from "../images/safefs";
import { join } from "../sys/path";
import { create, type DescMessage, type Message, type MessageInitShape } from "@bufbuild/protobuf";
import { writeImage, writeImageWithPayload, readImage, readImagePayloads, imageExists } from "../images/image";
import type { FileTable } from "./files";
import type { DumpedVma } from "./memory";
import type { Injector, RemoteMem, InCall } from "../ptrace/inject";
import type * as S from "../images/schemas";
import type { MessageKind, EntryOf } from "../images/magic";
import type { Hooks } from "../hooks";
import { CriuError } from "../log";
import { errnoText } from "../sys/errno";

/** Extra images produced while dumping fds (pipes-data, eventpoll tfds, sk-queues ...). */
export class ImageSink {
  /** @param nextPages the first pages-N.img number for shared memory contents (after the processes' own 1..n) */
  constructor(private nextPages = 1) {}
  /** a pages-N.img number no other image of this dump uses (CRIU numbers them from one counter too) */
  pagesId(): number {
    return this.nextPages++;
  }
  private files = new Map<string, { kind: MessageKind; items: { msg: Message; payload?: Uint8Array }[] }>();
  /** an entry of kind KIND (magic.ts) for FILE: SCHEMA is the kind's (or its head's, chunks'),
   *  INIT its generated init type (a misspelled field does not compile) */
  add<D extends DescMessage>(
    file: string,
    kind: MessageKind,
    schema: D,
    init: MessageInitShape<D>,
    payload?: Uint8Array
  ) {
    let f = this.files.get(file);
    if (!f) this.files.set(file, (f = { kind, items: [] }));
    f.items.push({ msg: create(schema, init), payload });
  }
  private raws = new Map<string, Uint8Array[]>();
  /** a raw file (pages-N.img ...) written as is; chunks appended in order */
  raw(file: string, data: Uint8Array) {
    let r = this.raws.get(file);
    if (!r) this.raws.set(file, (r = []));
    r.push(data);
  }
  /** write FILE even if nothing is added to it (restore then knows it is not lost) */
  ensure(file: string, kind: MessageKind) {
    if (!this.files.has(file)) this.files.set(file, { kind, items: [] });
  }
  has(file: string) {
    return this.files.has(file) || this.raws.has(file) || this.marks.has(file);
  }
  /** remember that KEY was dealt with in this dump (has(KEY) is then true) */
  mark(key: string) {
    this.marks.add(key);
  }
  private marks = new Set<string>();
  writeAll(dir: string) {
    for (const [file, chunks] of this.raws) writeNewFile(join(dir, file), Buffer.concat(chunks));
    for (const [file, f] of this.files) {
      if (f.items.some((i) => i.payload))
        writeImageWithPayload(
          dir,
          file,
          f.kind,
          f.items.map((i) => ({ msg: i.msg as EntryOf<MessageKind>, payload: i.payload ?? new Uint8Array(0) }))
        );
      else
        writeImage(
          dir,
          file,
          f.kind,
          f.items.map((i) => i.msg as EntryOf<MessageKind>)
        );
    }
  }
}

export interface DumpOpts {
  /** the live processes of the dumped tree */
  tree: number[];
  /** each live process's fds and their targets, read once when the tree is frozen */
  links?: Map<number, [fd: number, target: string][]>;
  shellJob?: boolean;
  tcpEstablished?: boolean;
  tcpClose?: boolean;
  skipInFlight?: boolean;
  extUnixSk?: boolean;
  fileLocks?: boolean;
  /** --network-lock skip: connections are not locked (inet.ts) */
  networkLockSkip?: boolean;
  /** --ghost-limit (bytes) and --link-remap: deleted files (reg.ts) */
  ghostLimit?: number;
  linkRemap?: boolean;
  /** the tree lives in its own mount namespace (a container's): the ids of its mounts */
  nsMounts?: Set<number>;
  /** fds that belong to criu-bun, not to the process (memory tracking's userfaultfd): not dumped */
  skipFd?: (pid: number, fd: number) => boolean;
}

export interface DumpCtx {
  pid: number;
  fd: number;
  /** readlink of /proc/PID/fd/N */
  target: string;
  /** open flags without O_CLOEXEC */
  flags: number;
  pos: bigint;
  st: BigIntStats;
  fdinfo: Record<string, string>;
  /** the whole /proc/PID/fdinfo/N text (eventpoll tfd lines, inotify wd lines ...) */
  fdinfoText: string;
  files: FileTable;
  images: ImageSink;
  opts: DumpOpts;
  /** this fd duplicated into criu-bun with pidfd_getfd (closed by the caller at the end of the dump) */
  grab(): number;
  where: string;
}

export interface RestoreCtx {
  /** the target as criu-bun sees it (ptrace, /proc from criu-bun) */
  pid: number;
  /** the target's PID in its own namespace (what injected syscalls use) */
  vpid: number;
  inj: Injector;
  mem: RemoteMem;
  dir: string;
  files: Map<number, S.file_entry>;
  /** a NUL-terminated string in the target's scratch area (slot 0..3 for several at once) */
  str(s: string, slot?: number): bigint;
  /** bytes in the target's scratch area at offset off (0..1023) */
  scratch(off: bigint, data: Uint8Array): bigint;
  /** move a target fd above every fd number being restored; returns the new number */
  high(fd: number, what: string): number;
  /** high() of several fds at once (one stop of the target) */
  highMany(fds: number[], what: string): number[];
  /** a copy of fd (the same open file description) above every fd number being restored; fd stays */
  dupHigh(fd: number, what: string): number;
  /** independent syscalls ([nr, ...args]) in as few stops of the target as fit, their raw results in
   *  order (all run, whatever each returns); without it, one injected call each */
  batch?: (calls: (number | bigint)[][]) => bigint[];
  /** calls that each pass bytes (a path), in as few stops as fit; each call's check sees its result, in order */
  batchData?: (calls: InCall[]) => void;
  /** restore options that kinds care about */
  opts?: { shellJob?: boolean };
  /** what the fds of this process's restore share (images read once, memfd bases ...) */
  state: ProcFilesState;
  /** the whole restore's shared state: objects other processes may need (see hold/fdFrom) */
  tree: TreeFiles;
  /** keep fd open (in this process) until every process has its files, under KEY */
  hold(key: HeldKey, fd: number): void;
  /** an fd in this process for an object held under KEY (imported with pidfd_getfd if another process holds it) */
  fdFrom(key: HeldKey): number | undefined;
  where: string;
}

/** What the restore of one process's fds shares between them (RestoreCtx.state). */
export class ProcFilesState {
  private cache = new Map<string, unknown>();
  /** a value made once for this process under KEY (an image read once): the key names its type, one
   *  key is only ever used with one make */
  once<T>(key: string, make: () => T): T {
    if (!this.cache.has(key)) this.cache.set(key, make());
    return this.cache.get(key) as T;
  }
  /** fds a kind keeps open until every fd of this process is in place, then closed (restoreFds) */
  closeLater = new Set<number>();
  /** memfd inode id -> the fd of it every description of it is opened through (memfd.ts) */
  memfds = new Map<number, number>();
}

/** An fd of a process under restore: pid as criu-bun sees it, vpid inside the restored namespace. */
export interface Holder {
  pid: number;
  vpid?: number;
  fd: number;
}

/**
 * What an object held open for other processes is (TreeFiles.held): its kind's prefix and its id
 * in the images, so a misspelled key does not compile.
 */
export type HeldKey =
  | `pty:${number}`
  | `ptyEarly:${number}`
  | `usk:${number}`
  | `pipe:${number}:${"r" | "w"}`
  | `fifo:${number}:${string}`
  | `mqueue:${number}`
  | `shmem:${bigint}`
  | `ghost:${number}`
  | `linked:${number}`
  | `inherit:${string}`;

/** Files shared across the processes of one restore. */
export class TreeFiles {
  /** file id -> where the restored open file description lives (pid, fd) */
  owners = new Map<number, Holder>();
  /** objects held open for other processes (pipe ends, socket peers ...) */
  held = new Map<HeldKey, Holder>();
  /** held objects an fd of the tree has taken as its own description (a pipe end, an inherited
   *  fd): a second fd of the same object opens a description of its own */
  taken = new Set<HeldKey>();
  /** per pid: fds to close once all processes have their files */
  toClose = new Map<number, number[]>();
  /** pts index -> the new master of a terminal whose master was outside the tree (handed to the caller: orphan-pts-master) */
  orphanPts = new Map<number, Holder>();
  /** each fd kind's state for this restore (FdKind.restoreBegin) */
  private kindStates = new Map<SomeFdKind, unknown>();
  /** every kind's restoreBegin, once, when the images are loaded */
  beginKinds(kinds: SomeFdKind[], run: RestoreRun) {
    for (const k of kinds) this.kindStates.set(k, k.restoreBegin?.(run));
  }
  /** kind K's state for this restore, typed by K (undefined for a kind without restoreBegin) */
  kindState<R>(k: FdKind<unknown, R>): R {
    return this.kindStates.get(k) as R;
  }
}

/** The frozen tree, as every fd kind sees it once before any fd is dumped (FdKind.dumpBegin). */
export interface DumpTree {
  /** its live processes */
  pids: number[];
  files: FileTable;
  images: ImageSink;
  /** a process's pid, and its process group, as the images number them */
  vpid(pid: number): number;
  vpgid(pid: number): number;
}

/** The whole restore, as every fd kind sees it at its phases (FdKind.restore* hooks). */
export interface RestoreRun {
  dir: string;
  inventory: S.inventory_entry;
  /** --tcp-close */
  tcpClose?: boolean;
  /** the dump's network lock as inventory.img tells it: CRIU's network_lock_method, and the
   *  nftables table the dump left (CRIU's and criu-bun's "CRIU-<dump_criu_run_id>") */
  lockMethod?: number;
  lockTable?: string;
  /** the caller's notifications (a wait for one is not a stalled restore) */
  hooks?: Hooks;
  files: Map<number, S.file_entry>;
  tree: TreeFiles;
}

/** A process of the restore once every process has its files (FdKind.restoreFilesDone). */
export interface RestoredProc {
  pid: number;
  vpid: number;
  /** its session, as the images number it */
  sid: number;
  inj: Injector;
  /** a NUL-terminated string in its scratch area */
  str(s: string): bigint;
  /** bytes at OFF of its scratch area (below the strings) */
  scratch(off: bigint, data: Uint8Array): bigint;
}

/** A process's paths outside its fd table, as dumpTask collected them (FdKind.dumpProcessFiles). */
export interface ProcessPaths {
  pid: number;
  cwd: string;
  root: string;
  exe: string;
  mm: S.Init<typeof S.mm_entrySchema>;
  vmas: DumpedVma[];
}

/** inventory.img fields a kind's objects need (FdKind.dumpInventory) */
export type InventoryInit = Partial<S.InitOf<typeof S.inventory_entrySchema>>;

/**
 * One kind of fd. D: the kind's own state for one dump, made by dumpBegin and handed to each of
 * its dump hooks; R: the same for one restore (restoreBegin). Made per dump or restore and kept
 * by whoever runs it (FdKindsDump, TreeFiles), never in a module: two dumps (or a dump and a
 * restore) in one criu-bun share nothing.
 */
export interface FdKind<D = undefined, R = undefined> {
  name: string;
  /** once per dump, before the first fd: what this kind needs to know about the whole tree */
  dumpBegin?(tree: DumpTree, opts: DumpOpts): D;
  /** inventory.img fields this dump needs (the network lock its connections keep) */
  dumpInventory?(state: D): InventoryInit;
  /** the images are in place (a later failure of the dump does not undo them) */
  dumpCommit?(state: D): void;
  /** the tree is about to be let go ("running", stopped too) or killed ("killed": runId names
   *  what outlives it until the restore) */
  dumpRelease?(state: D, how: "running" | "killed", runId?: string): void;
  /** the killed tree is gone (its processes reaped) */
  dumpKilled?(state: D): void;
  /** the dump failed: what the kind made for it goes (the tree is let go as it was) */
  dumpAbort?(state: D): void;
  /** the files a process holds outside its fd table (cwd, root, exe, mapped files) into files.img;
   *  their ids for fs-N.img (the one kind that keeps paths answers: FdKindsDump.processFiles) */
  dumpProcessFiles?(p: ProcessPaths, files: FileTable, images: ImageSink, state: D): { cwdId: number; rootId: number };
  /** images the file f needs besides files.img: need(file, why) throws when one is missing
   *  (checked before anything is created) */
  requireImages?(f: S.file_entry, run: RestoreRun, need: (file: string, why: string) => void): void;
  /** once per restore, when its images are loaded: the kind's state for this restore */
  restoreBegin?(run: RestoreRun): R;
  /** once per restore, after requireImages, before any process is made: checks over the whole tree */
  precheckTree?(run: RestoreRun): void;
  /** process pid has its files and threads, before it takes its own credentials */
  restoreProcessFiles?(pid: number, state: R): void;
  /** every process has its files (before what they hold for each other is closed) */
  restoreFilesDone?(run: RestoreRun, procs: RestoredProc[], state: R): void;
  /** the restore succeeded: the kind's last steps that may fail, right before the processes are let go */
  restoreCommit?(state: R): void;
  /** the processes were let go this very moment (before anything else happens) */
  restoreReleased?(state: R): void;
  /** the processes run */
  restoreEnd?(state: R): void;
  /** the restore failed: what the kind made for it goes */
  restoreAbort?(state: R): void;
  /** fd_types value in file_entry.type */
  type: number;
  /** fdPath: /proc/PID/fd/N of the fd (for kinds that must look closer, e.g. statfs) */
  /** copy: criu-bun's own fd on the file when it has one (cheaper to ask than fdPath) */
  match(target: string, st: BigIntStats, fdPath: string, opts: DumpOpts, copy: number | undefined, state: D): boolean;
  /** create the file entry (through ctx.files) and extra images; returns the file id */
  dump(ctx: DumpCtx, state: D): number;
  /** checks before any process is created */
  /** opts.inMountNs: paths belong to a mount namespace restore builds later (they are checked when opened) */
  precheck?(
    f: S.file_entry,
    dir: string,
    where: string,
    opts: { shellJob?: boolean; inMountNs?: boolean; treePids?: Set<number> },
    state: R
  ): void;
  /** a file a process maps (a VMA), checked before any process is created (where: the process
   *  and the mapping; opts.inMountNs as precheck's) */
  precheckMapped?(f: S.file_entry, where: string, opts: { inMountNs?: boolean }, state: R): void;
  /** a file a process needs outside its fd table (a mapping's, its cwd) that the images bring back
   *  because it was deleted (ghost file, link remap): a target fd on it, else undefined */
  openRemoved?(ctx: RestoreCtx, f: S.file_entry, flags: number, state: R): number | undefined;
  /** a file restore() would make by a plain openat of a path (then an lseek to pos): how, else
   *  undefined. restoreFds opens every such file of a process in one batch of injected calls */
  openByPath?(f: S.file_entry, opts: { shellJob?: boolean }, state: R): OpenByPath | undefined;
  /** create the object in the target, return a target fd (moved high with ctx.high) */
  restore(ctx: RestoreCtx, f: S.file_entry, fe: S.fdinfo_entry, state: R): number;
  /** second pass, once per file, after every fd has its final number (epoll targets ...);
   *  fd is the final number of one fd using this file */
  restoreLate?(ctx: RestoreCtx, f: S.file_entry, fd: number, state: R): void;
}

/** How a file is opened by path (FdKind.openByPath): openat(AT_FDCWD, path, flags), then lseek to pos (if not 0). */
export interface OpenByPath {
  path: string;
  flags: number;
  pos: bigint;
}

/** The result of an OpenByPath's lseek to pos, checked (ESPIPE: a file without a position, a tty or a
 *  FIFO, keeps none). restore() and restoreFds' batch both check it so. */
export function checkSeek(where: string, p: OpenByPath, r: bigint) {
  if (r < 0n && r !== -29n)
    throw new CriuError("restore", `${where}: lseek to ${p.pos} in '${p.path}' failed: ${errnoText(-r)}`);
}

/** Any kind, its states unknown: what the lists of kinds hold (kinds.ts). */
export type SomeFdKind = FdKind<unknown, unknown>;

/** Read an optional image once per restore. */
export function cachedImage<N extends MessageKind>(ctx: RestoreCtx, file: string, kind: N): EntryOf<N>[] {
  return ctx.state.once(`img:${kind}:${file}`, () =>
    imageExists(ctx.dir, file) ? readImage(ctx.dir, file, kind) : []
  );
}
export function cachedPayloads<N extends MessageKind>(
  ctx: RestoreCtx,
  file: string,
  kind: N
): { msg: EntryOf<N>; payload: Uint8Array }[] {
  return ctx.state.once(`imgp:${kind}:${file}`, () =>
    imageExists(ctx.dir, file) ? readImagePayloads(ctx.dir, file, kind) : []
  );
}
/** The entries of an image read once per restore (cachedPayloads), grouped by key(msg), so
 *  finding those of one file costs a lookup, not a pass over the image. */
export function cachedPayloadsBy<N extends MessageKind, K>(
  ctx: RestoreCtx,
  file: string,
  kind: N,
  key: (m: EntryOf<N>) => K
): Map<K, { msg: EntryOf<N>; payload: Uint8Array }[]> {
  return ctx.state.once(`imgp-by:${kind}:${file}`, () => {
    const m = new Map<K, { msg: EntryOf<N>; payload: Uint8Array }[]>();
    for (const item of cachedPayloads(ctx, file, kind)) {
      const id = key(item.msg);
      const list = m.get(id);
      if (list) list.push(item);
      else m.set(id, [item]);
    }
    return m;
  });
}
export const FOWN0 = { uid: 0, euid: 0, signum: 0, pidType: 0, pid: 0 };
