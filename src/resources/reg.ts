// Regular files, directories and character devices opened by path.
import { statSync, lstatSync, readlinkSync, existsSync, unlinkSync } from "../sys/fs";
import { dirname } from "../sys/path";
import { removedFromName } from "../sys/proc";
import type { FdKind, DumpCtx, RestoreCtx, ImageSink, ProcessPaths, OpenByPath } from "./fdkind";
import type { FileTable } from "./files";
import { linkMmFiles } from "./mm";
import type { BigIntStats } from "../sys/fs";
import { FOWN0, cachedPayloads, checkSeek } from "./fdkind";
import { readImage, imageExists } from "../images/image";
import * as S from "../images/schemas";
import { openFd, closeFd, preadFull, pwriteFull } from "../sys/mem";
import { NR } from "../sys/nr";
import { syscall, addr, cstr } from "../sys/syscall";
import { errnoText } from "../sys/errno";
import { O } from "../sys/mem";
import { CriuError, log } from "../log";
import { refuse } from "./unsupported";
import { isFieldSet } from "@bufbuild/protobuf";
import { buildIdOf, buildIdHex } from "./buildid";
import { fd_types } from "../images/schemas";

/** source: where to read the file's build-id (an fd of the target through /proc, or the path);
 * ids: build-ids already read in this dump, by the file's identity (key) */
export function regEntry(
  id: number,
  name: string,
  flags: number,
  pos: bigint,
  size: bigint | undefined,
  mode: number | undefined,
  source?: string,
  ids?: { map: Map<string, number[] | undefined>; key: string }
) {
  // as CRIU: no size (so none checked at restore) for a file open O_WRONLY|O_APPEND, a log others
  // may append to
  if ((flags & 3) === O.WRONLY && flags & O.APPEND) size = undefined;
  // as CRIU: a file whose size is checked has its ELF build-id kept too (checked at restore)
  let buildId: number[] | undefined;
  if (size !== undefined && source) {
    if (ids?.map.has(ids.key)) buildId = ids.map.get(ids.key);
    else {
      buildId = buildIdOf(source);
      ids?.map.set(ids.key, buildId);
    }
  }
  return {
    id,
    flags,
    pos,
    fown: FOWN0,
    name,
    ...(size !== undefined ? { size } : {}),
    ...(mode !== undefined ? { mode } : {}),
    ...(buildId ? { buildId } : {}),
  };
}

/** As CRIU: a file dumped with an ELF build-id must have that build-id at restore (another binary
 * of the same size is not the dumped one). */
function checkBuildId(where: string, reg: S.reg_file_entry) {
  if (!reg.buildId.length) return;
  const now = buildIdOf(reg.name);
  if (!now || buildIdHex(now) !== buildIdHex(reg.buildId)) {
    throw new CriuError(
      "restore",
      `${where}: '${reg.name}' is another file: its ELF build-id is ${now ? buildIdHex(now) : "none"}, dumped with ${buildIdHex(reg.buildId)}`
    );
  }
}

/** The size a reg_file_entry was dumped with, if it has one (proto2: unset reads as 0). */
function regSize(reg: S.reg_file_entry): bigint | undefined {
  return isFieldSet(reg, S.reg_file_entrySchema.field.size) ? reg.size : undefined;
}

/** The file the entry names is still the dumped one (where: the process and what it is to it). */
function checkFile(where: string, reg: S.reg_file_entry, checkSize = true) {
  let st;
  try {
    st = statSync(reg.name, { bigint: true });
  } catch (e) {
    throw new CriuError("restore", `${where}: '${reg.name}' does not exist any more: ${errnoText(e)}`);
  }
  const size = regSize(reg);
  if (checkSize && size !== undefined && st.isFile() && st.size !== size && !(reg.flags & O.PATH)) {
    throw new CriuError("restore", `${where}: '${reg.name}' has changed size (${st.size} bytes, dumped with ${size})`);
  }
  if (st.isFile()) checkBuildId(where, reg);
}

/** How a regular file is opened at restore when no ghost file, link remap or shell job's terminal is
 *  involved: its path, its flags but the creating and close-on-exec ones, its position (none with O_PATH). */
function plainOpen(reg: S.reg_file_entry): OpenByPath {
  return {
    path: reg.name,
    flags: reg.flags & ~(O.CREAT | O.EXCL | O.TRUNC | O.CLOEXEC),
    pos: reg.flags & O.PATH ? 0n : reg.pos,
  };
}

/** /dev/pts/N, /dev/ttyN, /dev/console ... */
function isTtyPath(p: string) {
  return /^\/dev\/(pts\/\d+|tty\w*|console)$/.test(p);
}
/** the terminal criu-bun itself runs on (its stdin, else stdout/stderr), if any */
function shellTty(): string | undefined {
  for (const fd of [0, 1, 2]) {
    try {
      const p = readlinkSync(`/proc/self/fd/${fd}`);
      if (isTtyPath(p)) return p;
    } catch {}
  }
  return undefined;
}

function isTty(rdev: bigint) {
  const [major] = majorMinor(rdev);
  return major === 4 || major === 5 || (major >= 136 && major <= 143);
}

/**
 * Character devices whose open file holds nothing beyond its flags and offset, so that opening
 * the node again gives what the process had: mem's null, zero, full, random and urandom, and
 * /dev/net/tun not attached to an interface (attached, files.ts refuses it). Any other (FUSE's
 * connection, uinput, kmsg's read position, a GPU, a sound card...) would come back as a fresh
 * open of the device, silently not what it was: refused.
 */
function statelessChardev(rdev: bigint): boolean {
  const [major, minor] = majorMinor(rdev);
  return (major === 1 && [3, 5, 7, 8, 9].includes(minor)) || (major === 10 && minor === 200);
}
/** glibc's dev_t split (st_rdev as stat gives it) */
function majorMinor(rdev: bigint): [number, number] {
  return [
    Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn)),
    Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn)),
  ];
}

/** reg's state for one dump: its --ghost-limit and --link-remap, and the link_remap names it made
 *  (host paths), removed if the dump fails */
interface RegDump {
  ghostLimit: number;
  linkRemap: boolean;
  madeLinks: string[];
}
/** reg's state for one restore: link_remap names it opened (as the target sees them, and the
 *  target's pid), removed once it succeeded (a failed one leaves them for the next try); the
 *  images' deleted files (remap-fpath.img), read when first asked about */
interface RegRestore {
  dir: string;
  usedLinks: { pid: number; name: string }[];
  remaps?: Remaps;
}
/** remap-fpath.img: file id -> its ghost file id, and -> its link_remap file id */
interface Remaps {
  ghosts: Map<number, number>;
  linked: Map<number, number>;
}

export const regKind: FdKind<RegDump, RegRestore> = {
  name: "regular file",
  type: fd_types.REG,
  dumpBegin: (_tree, opts) => ({
    ghostLimit: opts.ghostLimit ?? GHOST_LIMIT,
    linkRemap: !!opts.linkRemap,
    madeLinks: [],
  }),
  // restore opens the deleted files through their link remaps
  dumpCommit: (s) => {
    s.madeLinks.length = 0;
  },
  dumpAbort: (s) => {
    for (const p of s.madeLinks.splice(0)) {
      try {
        unlinkSync(p);
        log.debug(`removed link remap ${p}`);
      } catch {}
    }
  },
  dumpProcessFiles: (p, files, images, s) => dumpTaskPaths(s, files, images, p.pid, p),
  restoreBegin: (run) => ({ dir: run.dir, usedLinks: [] }),
  // (last of the kinds: nothing can fail after it) the deleted files are open again: their
  // link_remap names can go
  restoreCommit: (s) => {
    for (const { pid, name } of s.usedLinks.splice(0)) {
      try {
        unlinkSync(`/proc/${pid}/root${name}`);
        log.debug(`removed link remap ${name}`);
      } catch (e) {
        log.warn(`cannot remove link remap ${name}: ${errnoText(e)}`);
      }
    }
  },
  restoreAbort: (s) => {
    s.usedLinks.length = 0;
  },
  precheckMapped: (f, where, opts, s) => {
    if (!isRemapped(s, f.id) && !opts.inMountNs) checkFile(where, f.reg!, false); // ghosts are in the images
  },
  openRemoved: (ctx, f, flags) => restoreDeleted(ctx, f, flags),
  // (a symbolic link itself only through O_PATH|O_NOFOLLOW)
  match: (target, st) =>
    target.startsWith("/") &&
    (st.isFile() || st.isDirectory() || st.isCharacterDevice() || st.isBlockDevice() || st.isSymbolicLink()),
  dump(ctx, s) {
    const { target, st } = ctx;
    if (removedFile(ctx.pid, target, st)) return dumpGhost(ctx, s);
    if (st.isCharacterDevice() && isTty(st.rdev) && !ctx.opts.shellJob) {
      refuse(
        "files",
        ctx.where,
        "terminal",
        `'${target}'; --shell-job gives a shell job criu-bun's terminal at restore`
      );
    }
    if (st.isCharacterDevice() && !isTty(st.rdev) && !statelessChardev(st.rdev))
      refuse("files", ctx.where, "chardev", `'${target}', ${majorMinor(st.rdev).join(":")}`);
    if (st.isFile() || st.isDirectory()) checkPathLeadsHere(ctx.where, target, st, ctx.files.statRoot);
    const size = st.isFile() ? st.size : undefined;
    // many fds on one file: its build-id is read once (same inode, size and change times)
    const ids = { map: ctx.files.buildIds, key: `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}` };
    return ctx.files.add(null, (id) => ({
      id,
      type: 1,
      reg: regEntry(
        id,
        target,
        ctx.flags,
        ctx.pos,
        size,
        Number(st.mode),
        st.isFile() ? `/proc/${ctx.pid}/fd/${ctx.fd}` : undefined,
        ids
      ),
    }));
  },
  precheck(f, _dir, where, opts, s) {
    const reg = f.reg!;
    if (opts?.shellJob && isTtyPath(reg.name) && shellTty()) return; // it gets our terminal
    if (opts?.inMountNs) return; // the container's path: it exists once its mounts are made
    // a file of /proc/PID of a process of the tree (its status, its directory): there once it is
    // (the original may be reaped already; CRIU's images name them the same way)
    const proc = /^\/proc\/(\d+)(\/|$)/.exec(reg.name);
    if (proc && opts?.treePids?.has(Number(proc[1]))) return;
    if (linkedOf(s, f.id) !== undefined) {
      if (existsSync(reg.name))
        throw new CriuError(
          "restore",
          `${where}: '${reg.name}' exists again: the deleted file cannot be opened under its name (remove it first)`
        );
      return;
    }
    if (ghostOf(s, f.id) !== undefined) {
      if (!existsSync(dirname(reg.name)))
        throw new CriuError("restore", `${where}: the directory of deleted file '${reg.name}' does not exist any more`);
      return;
    }
    let st;
    try {
      st = (reg.flags & O.NOFOLLOW ? lstatSync : statSync)(reg.name, { bigint: true });
    } catch (e) {
      throw new CriuError("restore", `${where}: '${reg.name}' does not exist any more: ${errnoText(e)}`);
    }
    const size = regSize(reg);
    if (size !== undefined && st.isFile() && st.size !== size && !(reg.flags & O.PATH)) {
      throw new CriuError(
        "restore",
        `${where}: '${reg.name}' has changed size (${st.size} bytes, dumped with ${size})`
      );
    }
    if (st.isFile() && !(reg.flags & O.PATH)) checkBuildId(where, reg);
  },
  openByPath(f, opts, s) {
    const reg = f.reg!;
    if (ghostOf(s, f.id) !== undefined || linkedOf(s, f.id) !== undefined) return undefined;
    if (opts.shellJob && isTtyPath(reg.name)) return undefined;
    return plainOpen(reg);
  },
  restore(ctx, f, _fe, s) {
    const reg = f.reg!;
    const p = plainOpen(reg);
    const ghost = ghostOf(s, f.id);
    if (ghost !== undefined) return restoreGhost(ctx, f, ghost, p.flags);
    const linked = linkedOf(s, f.id);
    if (linked !== undefined) return restoreLinked(ctx, f, linked, p.flags);
    // a shell job's terminal: as criu does, the restored job is attached to criu-bun's terminal
    const name = ctx.opts?.shellJob && isTtyPath(reg.name) ? (shellTty() ?? reg.name) : reg.name;
    const fd = Number(ctx.inj.call(NR.openat, -100, ctx.str(name), p.flags, 0));
    if (fd < 0) throw new CriuError("restore", `${ctx.where}: cannot open '${reg.name}': ${errnoText(-fd)}`);
    if (p.pos) checkSeek(ctx.where, p, ctx.inj.call(NR.lseek, fd, p.pos, 0));
    return ctx.high(fd, ctx.where);
  },
};

/** removedFromName in process pid's root, saying at -v4 when such a name is a live file's */
function removedFile(pid: number, path: string, st: BigIntStats): boolean {
  const removed = removedFromName(`/proc/${pid}/root`, path, st);
  if (!removed && path.endsWith(" (deleted)"))
    log.debug(`process ${pid}: '${path}' is a live file of that name (${st.nlink} links), not a removed one`);
  return removed;
}

// ---- files deleted while open: CRIU's ghost files ----------------------------------------------
// Dump: the contents go to ghost-file-<id>.img (ghost_file_entry + raw bytes) and remap-fpath.img
// maps every description of that file to the ghost. Restore: the file is created again at its
// path (or beside it if the path is taken), filled, opened as each description wants, and
// unlinked, so the process finds an open, deleted file with the same contents, mode and owner.

/** Largest deleted file whose contents are saved (--ghost-limit; criu's default is 1 MiB, ours larger). */
const GHOST_LIMIT = 256 << 20;

function dumpGhost(ctx: DumpCtx, s: RegDump): number {
  return saveGhost(
    s,
    ctx.files,
    ctx.images,
    ctx.st,
    ctx.target.slice(0, -" (deleted)".length),
    `/proc/${ctx.pid}/fd/${ctx.fd}`,
    ctx.flags,
    ctx.pos,
    ctx.where
  );
}

/**
 * A file id for a deleted file whose contents are read through `source` (an fd, a mapping in
 * /proc/PID/map_files, /proc/PID/exe): its contents once per inode in ghost-file-N.img, and a
 * remap-fpath.img entry for this id.
 */
function saveGhost(
  s: RegDump,
  files: FileTable,
  images: ImageSink,
  st: BigIntStats,
  path: string,
  source: string,
  flags: number,
  pos: bigint,
  where: string
): number {
  if (/^\/proc\/\d+(\/|$)/.test(path)) refuse("files", where, "proc-gone", `'${path}'`);
  if (/^\/dev\/pts\/\d+$/.test(path)) refuse("files", where, "terminal", `'${path}', its master was closed`);
  if (st.isDirectory()) return saveGhostDir(files, images, st, path, flags, pos);
  if (!st.isFile())
    refuse(
      "files",
      where,
      "deleted-special",
      `'${path}', ${st.isSymbolicLink() ? "a symbolic link" : st.isFIFO() ? "a FIFO" : st.isSocket() ? "a socket" : "a device node"}`
    );
  if (flags & O_TMPFILE) refuse("files", where, "tmpfile", `'${path}'`);
  // another hard link keeps the inode: a copy would be a different file. --link-remap links it
  // back under a name of its own (CRIU's link_remap.N) so restore opens that very inode
  if (st.nlink > 0n) return saveLinked(s, files, images, st, path, source, flags, pos, where);
  // judged by what it holds (allocated blocks), not its apparent size, as CRIU does: a sparse file is cheap
  const held = st.blocks * 512n < st.size ? st.blocks * 512n : st.size;
  if (held > BigInt(s.ghostLimit))
    throw new CriuError(
      "files",
      `${where}: deleted file '${path}' is ${st.size} bytes, over the ghost file limit of ${s.ghostLimit} (--ghost-limit)`
    );
  const key = `ghost:${st.dev}:${st.ino}`;
  let ghostId = files.byKey.get(key);
  if (ghostId === undefined) {
    ghostId = files.nextId++;
    files.byKey.set(key, ghostId);
    const fd = openFd(source, O.RDONLY | O.CLOEXEC);
    const file = `ghost-file-${ghostId.toString(16)}.img`;
    const t = (ns: bigint) => ({ tvSec: ns / 1_000_000_000n, tvUsec: (ns % 1_000_000_000n) / 1000n });
    const entry = {
      uid: Number(st.uid),
      gid: Number(st.gid),
      mode: Number(st.mode),
      dev: Number(st.dev),
      ino: st.ino,
      size: st.size,
      atim: t(st.atimeNs),
      mtim: t(st.mtimeNs),
    };
    try {
      // a sparse file keeps its holes: only its data extents are saved, as CRIU's chunks
      const extents = dataExtents(fd, Number(st.size));
      if (st.size === 0n || (extents.length === 1 && extents[0][0] === 0 && extents[0][1] === Number(st.size))) {
        const data = new Uint8Array(Number(st.size));
        const got = preadFull(fd, data, 0n, data.length, 0, `${where}: reading deleted file`);
        if (got !== data.length)
          throw new CriuError("files", `${where}: deleted file '${path}' shrank while being read`);
        images.add(file, "GHOST_FILE", S.ghost_file_entrySchema, entry, data);
      } else {
        images.add(file, "GHOST_FILE", S.ghost_file_entrySchema, { ...entry, chunks: true }, new Uint8Array(0));
        for (const [off, end] of extents) {
          const data = new Uint8Array(end - off);
          const got = preadFull(fd, data, BigInt(off), data.length, 0, `${where}: reading deleted file`);
          if (got !== data.length)
            throw new CriuError("files", `${where}: deleted file '${path}' shrank while being read`);
          images.add(
            file,
            "GHOST_FILE",
            S.ghost_chunk_entrySchema,
            { off: BigInt(off), len: BigInt(data.length) },
            data
          );
        }
      }
    } finally {
      closeFd(fd);
    }
  }
  const id = files.add(null, (id) => ({ id, type: 1, reg: regEntry(id, path, flags, pos, st.size, Number(st.mode)) }));
  images.add("remap-fpath.img", "REMAP_FPATH", S.remap_file_path_entrySchema, {
    origId: id,
    remapId: ghostId,
    remapType: 1 /* GHOST */,
  });
  return id;
}

/**
 * The files of a process's cwd, root, exe and mappings (fs-N.img, mm-N.img): as CRIU writes them,
 * O_RDONLY entries (CRIU hands the exe's fd to PR_SET_MM_MAP, which refuses an O_PATH one); the
 * exe shares its entry with its mappings. A deleted executable or mapped file (an upgraded
 * binary, a tmp file mapped then unlinked) is saved as a ghost file, read through /proc/PID/exe or
 * /proc/PID/map_files; a removed directory as cwd is a ghost directory.
 */
function dumpTaskPaths(
  s: RegDump,
  files: FileTable,
  images: ImageSink,
  pid: number,
  task: ProcessPaths
): { cwdId: number; rootId: number } {
  const fileId = (path: string, source: string, flags: number) => {
    const st = statSync(source, { bigint: true });
    if (path.endsWith(" (deleted)") && removedFile(pid, path, st))
      return saveGhost(s, files, images, st, path.slice(0, -" (deleted)".length), source, flags, 0n, `process ${pid}`);
    // a live file (one named "x (deleted)" too): its path must still lead to it
    checkPathLeadsHere(`process ${pid}`, path, st, files.statRoot);
    return files.addPath(path, flags);
  };
  const cwdId = fileId(task.cwd, `/proc/${pid}/cwd`, 0);
  const rootId = files.addPath(task.root, 0);
  linkMmFiles(pid, task.mm, task.exe, task.vmas, fileId);
  return { cwdId, rootId };
}

/**
 * Restore opens a file, cwd or mapped file by its path: that path, from the tree's root, must lead
 * to the same inode (a mount made on top of it, or of a directory above it, since it was opened
 * hides it: the path leads to another file, or none). /proc and /sys are left out (their inodes
 * are made per lookup).
 */
function checkPathLeadsHere(where: string, path: string, st: BigIntStats, statRoot: string) {
  if (/^\/(proc|sys)(\/|$)/.test(path)) return;
  let here: BigIntStats | undefined;
  try {
    here = statSync(statRoot + path, { bigint: true });
  } catch {}
  if (here && here.dev === st.dev && here.ino === st.ino) return;
  refuse(
    "files",
    where,
    "path-hidden",
    `'${path}' ${here ? `leads to inode ${here.ino} on ${devText(here.dev)}` : "leads nowhere"}, not to inode ${st.ino} on ${devText(st.dev)}`
  );
}
const devText = (d: bigint) => `${(d >> 8n) & 0xfffn}:${(d & 0xffn) | ((d >> 12n) & 0xfff00n)}`;

/** __O_TMPFILE, kept in the file's flags: whether it may still be linked in (not opened O_EXCL) is not visible */
const O_TMPFILE = 0o20000000;

const ghostTimes = (st: BigIntStats) => {
  const t = (ns: bigint) => ({ tvSec: ns / 1_000_000_000n, tvUsec: (ns % 1_000_000_000n) / 1000n });
  return { atim: t(st.atimeNs), mtim: t(st.mtimeNs) };
};

/** A removed directory still open (an fd, a cwd): a ghost file with a directory's mode and no contents, as CRIU. */
function saveGhostDir(
  files: FileTable,
  images: ImageSink,
  st: BigIntStats,
  path: string,
  flags: number,
  pos: bigint
): number {
  const key = `ghost:${st.dev}:${st.ino}`;
  let ghostId = files.byKey.get(key);
  if (ghostId === undefined) {
    ghostId = files.nextId++;
    files.byKey.set(key, ghostId);
    images.add(
      `ghost-file-${ghostId.toString(16)}.img`,
      "GHOST_FILE",
      S.ghost_file_entrySchema,
      {
        uid: Number(st.uid),
        gid: Number(st.gid),
        mode: Number(st.mode),
        dev: Number(st.dev),
        ino: st.ino,
        ...ghostTimes(st),
      },
      new Uint8Array(0)
    );
  }
  const id = files.add(null, (id) => ({
    id,
    type: 1,
    reg: regEntry(id, path, flags, pos, undefined, Number(st.mode)),
  }));
  images.add("remap-fpath.img", "REMAP_FPATH", S.remap_file_path_entrySchema, {
    origId: id,
    remapId: ghostId,
    remapType: 1 /* GHOST */,
  });
  return id;
}

/** [start, end) of each data extent of an open file (SEEK_DATA / SEEK_HOLE); the whole file if the filesystem cannot tell */
function dataExtents(fd: number, size: number): [number, number][] {
  const out: [number, number][] = [];
  for (let pos = 0; pos < size; ) {
    const d = syscall(NR.lseek, fd, pos, 3 /* SEEK_DATA */);
    if (d === -6 /* ENXIO: only a hole left */) break;
    if (d < 0) return size ? [[0, size]] : [];
    const h = syscall(NR.lseek, fd, d, 4 /* SEEK_HOLE */);
    if (h < 0) return [[0, size]];
    out.push([d, Math.min(h, size)]);
    pos = h;
  }
  return out;
}

// ---- deleted files that still have another hard link: --link-remap ------------------------------
// Dump links the open inode under DIR/link_remap.N (DIR: the deleted name's directory, so the same
// filesystem) and writes a reg entry for that name and a LINKED remap-fpath entry. Restore links
// it at its old name, opens it there (so the fd reads "NAME (deleted)" as before) and unlinks that
// name; the link_remap.N names go once the whole restore succeeded (a failed one can be retried).

function saveLinked(
  s: RegDump,
  files: FileTable,
  images: ImageSink,
  st: BigIntStats,
  path: string,
  source: string,
  flags: number,
  pos: bigint,
  where: string
): number {
  if (!s.linkRemap)
    refuse("files", where, "deleted-linked", `'${path}', ${st.nlink} other link(s); --link-remap keeps it`);
  const key = `linked:${st.dev}:${st.ino}`;
  let remapId = files.byKey.get(key);
  if (remapId === undefined) {
    remapId = files.nextId++;
    files.byKey.set(key, remapId);
    const name = `${dirname(path)}/link_remap.${remapId}`;
    // through the /proc magic link to the inode itself (AT_SYMLINK_FOLLOW), not the link
    const from = cstr(source),
      to = cstr(files.statRoot + name);
    const r = syscall(NR.linkat, -100, addr(from), -100, addr(to), 0x400 /* AT_SYMLINK_FOLLOW */);
    if (r < 0)
      throw new CriuError("files", `${where}: cannot link deleted file '${path}' back as '${name}': ${errnoText(-r)}`);
    s.madeLinks.push(files.statRoot + name);
    log.debug(`${where}: deleted file '${path}' (${st.nlink} other link(s)) linked back as '${name}'`);
    const id = remapId;
    files.files.push({ id, type: 1, reg: regEntry(id, name, O.RDONLY, 0n, st.size, Number(st.mode)) });
  }
  const id = files.add(null, (id) => ({ id, type: 1, reg: regEntry(id, path, flags, pos, st.size, Number(st.mode)) }));
  images.add("remap-fpath.img", "REMAP_FPATH", S.remap_file_path_entrySchema, {
    origId: id,
    remapId,
    remapType: 0 /* LINKED */,
  });
  return id;
}

function restoreLinked(ctx: RestoreCtx, f: S.file_entry, remapId: number, flags: number): number {
  const reg = f.reg!,
    inj = ctx.inj;
  const key = `linked:${remapId}` as const;
  let base = ctx.fdFrom(key);
  if (base === undefined) {
    const link = ctx.files.get(remapId)?.reg?.name;
    if (!link)
      throw new CriuError("restore", `${ctx.where}: link remap ${remapId} of '${reg.name}' is not in files.img`);
    const l = inj.call(NR.linkat, -100, ctx.str(link, 0), -100, ctx.str(reg.name, 1), 0);
    if (l < 0n)
      throw new CriuError("restore", `${ctx.where}: cannot link '${link}' back at '${reg.name}': ${errnoText(-l)}`);
    const fd = Number(inj.call(NR.openat, -100, ctx.str(reg.name), O.PATH | O.CLOEXEC, 0));
    inj.call(NR.unlink, ctx.str(reg.name));
    if (fd < 0)
      throw new CriuError("restore", `${ctx.where}: cannot open deleted file '${reg.name}': ${errnoText(-fd)}`);
    base = ctx.high(fd, ctx.where);
    ctx.hold(key, base);
    ctx.tree.kindState(regKind).usedLinks.push({ pid: ctx.pid, name: link });
    log.debug(`${ctx.where}: deleted file '${reg.name}' opened again through '${link}'`);
  }
  const r = Number(inj.call(NR.openat, -100, ctx.str(`/proc/self/fd/${base}`), flags | O.CLOEXEC, 0));
  if (ctx.tree.held.get(key)!.pid !== ctx.pid) inj.call(NR.close, base);
  if (r < 0)
    throw new CriuError("restore", `${ctx.where}: reopening deleted file '${reg.name}' failed: ${errnoText(-r)}`);
  if (reg.pos) inj.call(NR.lseek, r, reg.pos, 0);
  return ctx.high(r, ctx.where);
}

function remapsOf(s: RegRestore): Remaps {
  if (s.remaps) return s.remaps;
  const ghosts = new Map<number, number>(),
    linked = new Map<number, number>();
  if (imageExists(s.dir, "remap-fpath.img")) {
    for (const r of readImage(s.dir, "remap-fpath.img", "REMAP_FPATH")) {
      if (r.remapType === 1) ghosts.set(r.origId, r.remapId);
      else if (r.remapType === 0) linked.set(r.origId, r.remapId);
    }
  }
  log.debug(`remap-fpath.img: ${ghosts.size} ghost file(s), ${linked.size} link remap(s)`);
  return (s.remaps = { ghosts, linked });
}
/** A removed directory: made again at its name (or beside it), opened, removed; the times last. */
function restoreGhostDir(
  ctx: RestoreCtx,
  f: S.file_entry,
  ghostId: number,
  g: S.ghost_file_entry,
  flags: number
): number {
  const reg = f.reg!,
    inj = ctx.inj,
    key = `ghost:${ghostId}` as const;
  let name = reg.name,
    r = -17n;
  for (let i = 0; r === -17n && i < 100; i++) {
    if (i) name = `${reg.name}.criu-bun-ghost.${ghostId}.${i}`;
    r = inj.call(NR.mkdir, ctx.str(name), g.mode & 0o7777);
  }
  if (r < 0n)
    throw new CriuError("restore", `${ctx.where}: cannot make removed directory '${reg.name}' again: ${errnoText(-r)}`);
  const fd = Number(inj.call(NR.openat, -100, ctx.str(name), O.RDONLY | O.DIRECTORY | O.CLOEXEC, 0));
  if (fd < 0)
    throw new CriuError("restore", `${ctx.where}: cannot open the directory made for '${reg.name}': ${errnoText(-fd)}`);
  inj.call(NR.fchown, fd, g.uid, g.gid);
  inj.call(NR.fchmod, fd, g.mode & 0o7777);
  const u = inj.call(NR.rmdir, ctx.str(name));
  if (u < 0n)
    throw new CriuError(
      "restore",
      `${ctx.where}: cannot remove the directory made for '${reg.name}': ${errnoText(-u)}`
    );
  if (g.mtim) {
    const ts = new BigInt64Array(4),
      a = g.atim ?? g.mtim;
    ts[0] = BigInt(a.tvSec);
    ts[1] = BigInt(a.tvUsec) * 1000n;
    ts[2] = BigInt(g.mtim.tvSec);
    ts[3] = BigInt(g.mtim.tvUsec) * 1000n;
    inj.call(NR.utimensat, fd, 0, ctx.scratch(0n, new Uint8Array(ts.buffer)), 0);
  }
  const base = ctx.high(fd, ctx.where);
  ctx.hold(key, base);
  const o = Number(inj.call(NR.openat, -100, ctx.str(`/proc/self/fd/${base}`), flags | O.CLOEXEC, 0));
  if (o < 0)
    throw new CriuError("restore", `${ctx.where}: reopening removed directory '${reg.name}' failed: ${errnoText(-o)}`);
  return ctx.high(o, ctx.where);
}

/** A deleted file (ghost or linked remap) opened with flags, or undefined for an ordinary path. */
function restoreDeleted(ctx: RestoreCtx, f: S.file_entry, flags: number): number | undefined {
  const s = ctx.tree.kindState(regKind);
  const g = ghostOf(s, f.id);
  if (g !== undefined) return restoreGhost(ctx, f, g, flags);
  const l = linkedOf(s, f.id);
  return l !== undefined ? restoreLinked(ctx, f, l, flags) : undefined;
}
/** Is this file id a deleted file the images bring back (ghost or link remap)? (s: reg's state
 *  for this restore, TreeFiles.kindState(regKind)) */
function isRemapped(s: RegRestore, id: number) {
  return ghostOf(s, id) !== undefined || linkedOf(s, id) !== undefined;
}

/** The ghost file id a file id is remapped to, if any. */
function ghostOf(s: RegRestore, id: number): number | undefined {
  return remapsOf(s).ghosts.get(id);
}
/** The link_remap file id a file id is remapped to (a deleted file with other links), if any. */
function linkedOf(s: RegRestore, id: number): number | undefined {
  return remapsOf(s).linked.get(id);
}

function restoreGhost(ctx: RestoreCtx, f: S.file_entry, ghostId: number, flags: number): number {
  const reg = f.reg!,
    inj = ctx.inj;
  const key = `ghost:${ghostId}` as const;
  let base = ctx.fdFrom(key);
  if (base === undefined) {
    const [first, ...chunks] = cachedPayloads(ctx, `ghost-file-${ghostId.toString(16)}.img`, "GHOST_FILE");
    const g = first as { msg: S.ghost_file_entry; payload: Uint8Array } | undefined; // then its chunks
    if (!g) throw new CriuError("restore", `${ctx.where}: ghost-file-${ghostId.toString(16)}.img is missing`);
    if ((g.msg.mode & 0o170000) === 0o040000) return restoreGhostDir(ctx, f, ghostId, g.msg, flags);
    // at its own path if free, else beside it; unlinked right after
    let name = reg.name,
      fd = -17;
    for (let i = 0; fd === -17 && i < 100; i++) {
      if (i) name = `${reg.name}.criu-bun-ghost.${ghostId}.${i}`;
      fd = Number(inj.call(NR.openat, -100, ctx.str(name), O.RDWR | O.CREAT | O.EXCL | O.CLOEXEC, g.msg.mode & 0o7777));
    }
    if (fd < 0)
      throw new CriuError("restore", `${ctx.where}: cannot recreate deleted file '${reg.name}': ${errnoText(-fd)}`);
    const w = openFd(`/proc/${ctx.pid}/fd/${fd}`, O.WRONLY | O.CLOEXEC);
    try {
      if (g.msg.chunks) {
        // holes stay holes: size first, then each data extent at its offset
        const tr = syscall(NR.ftruncate, w, g.msg.size ?? 0n);
        if (tr < 0)
          throw new CriuError("restore", `${ctx.where}: ftruncate of recreated deleted file failed: ${errnoText(-tr)}`);
        for (const c of chunks)
          pwriteFull(
            w,
            c.payload,
            (c.msg as S.ghost_chunk_entry).off,
            c.payload.length,
            0,
            `${ctx.where}: writing deleted file contents`
          );
      } else pwriteFull(w, g.payload, 0n, g.payload.length, 0, `${ctx.where}: writing deleted file contents`);
    } finally {
      closeFd(w);
    }
    inj.call(NR.fchown, fd, g.msg.uid, g.msg.gid);
    inj.call(NR.fchmod, fd, g.msg.mode & 0o7777);
    // access and modification times last: writing changed them
    if (g.msg.mtim) {
      const ts = new BigInt64Array(4),
        a = g.msg.atim ?? g.msg.mtim;
      ts[0] = BigInt(a.tvSec);
      ts[1] = BigInt(a.tvUsec) * 1000n;
      ts[2] = BigInt(g.msg.mtim.tvSec);
      ts[3] = BigInt(g.msg.mtim.tvUsec) * 1000n;
      const u = inj.call(NR.utimensat, fd, 0, ctx.scratch(0n, new Uint8Array(ts.buffer)), 0);
      if (u < 0n)
        throw new CriuError(
          "restore",
          `${ctx.where}: setting the times of recreated deleted file failed: ${errnoText(-u)}`
        );
    }
    const u = inj.call(NR.unlink, ctx.str(name));
    if (u < 0n)
      throw new CriuError("restore", `${ctx.where}: cannot unlink recreated deleted file '${name}': ${errnoText(-u)}`);
    // hold it read-only: an open writer would forbid it as an executable (ETXTBSY/EACCES)
    const ro = Number(inj.call(NR.openat, -100, ctx.str(`/proc/self/fd/${fd}`), O.RDONLY | O.CLOEXEC, 0));
    inj.call(NR.close, fd);
    if (ro < 0)
      throw new CriuError(
        "restore",
        `${ctx.where}: reopening recreated deleted file '${name}' failed: ${errnoText(-ro)}`
      );
    base = ctx.high(ro, ctx.where);
    ctx.hold(key, base);
  }
  // every description is its own open of that inode, with its own flags and offset
  const r = Number(inj.call(NR.openat, -100, ctx.str(`/proc/self/fd/${base}`), flags | O.CLOEXEC, 0));
  if (ctx.tree.held.get(key)!.pid !== ctx.pid) inj.call(NR.close, base); // our imported copy
  if (r < 0)
    throw new CriuError("restore", `${ctx.where}: reopening deleted file '${reg.name}' failed: ${errnoText(-r)}`);
  if (reg.pos) inj.call(NR.lseek, r, reg.pos, 0);
  return ctx.high(r, ctx.where);
}
