// Files criu-bun writes, made safe against hostile directories: nothing is written through a
// symlink (O_NOFOLLOW), new files are created with O_EXCL and mode 0600, directories criu-bun
// creates are 0700 with unpredictable names, and every later access goes through an fd held on
// the directory (its /proc/self/fd/N path: like openat, immune to renames of its ancestors).
//
// A dump writes into a private stage directory inside the images directory and commits by
// renaming its files into place, inventory.img last, after everything is synced: a failed or
// killed dump never damages what the directory held, and a directory without inventory.img is
// not a dump. Restore as root refuses images that another user could have written.
import {
  openSync,
  closeSync,
  writeSync,
  fsyncSync,
  fstatSync,
  lstatSync,
  statSync,
  readdirSync,
  renameSync,
  unlinkSync,
  rmSync,
  mkdtempSync,
  rmdirSync,
  realpathSync,
  type Stats,
} from "../sys/fs";
import { basename, dirname, join } from "../sys/path";
import { O } from "../sys/mem";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { readProcText } from "../sys/procfile";
import { CriuError, log, aliasPath, unalias } from "../log";
import { errnoText, errorCode } from "../sys/errno";

/** n random bytes as hex (Web Crypto: node:crypto would load the Node streams modules at start-up) */
function randomHex(n: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0")).join("");
}

const CREATE_NEW = O.WRONLY | O.CREAT | O.EXCL | O.NOFOLLOW | O.CLOEXEC;
/** images, logs and pidfiles: pages hold a process's secrets */
const FILE_MODE = 0o600;

function code(e: unknown): string {
  return errnoText(e);
}

/**
 * rel under dir, left for the kernel to resolve: path.resolve would fold "/proc/self/fd/N/../x"
 * into "/proc/self/fd/x", while the kernel takes ".." from the directory the fd holds.
 */
export function under(dir: string, rel: string): string {
  return rel.startsWith("/") ? rel : `${dir}/${rel}`;
}

/** Write all of data to fd. */
function writeAllFd(fd: number, data: Uint8Array, what: string) {
  for (let off = 0; off < data.length; ) {
    const n = writeSync(fd, data, off, data.length - off);
    if (n <= 0) throw new CriuError("dump", `${what}: short write`);
    off += n;
  }
}

/**
 * Create path as a new file (O_EXCL|O_NOFOLLOW, 0600) and return its fd. With replace, an entry
 * already there is unlinked first (unlink never follows a symlink; one planted again in between
 * makes O_EXCL fail instead of being followed).
 */
export function createNew(path: string, replace = false): number {
  try {
    return openSync(path, CREATE_NEW, FILE_MODE);
  } catch (e) {
    if (errorCode(e) !== "EEXIST" || !replace) throw e;
    unlinkSync(path);
    return openSync(path, CREATE_NEW, FILE_MODE);
  }
}

/** Write data into path as a new file (see createNew). */
export function writeNewFile(path: string, data: Uint8Array, replace = true) {
  const fd = createNew(path, replace);
  try {
    writeAllFd(fd, data, `write ${path}`);
    noteWritten(fd, data);
  } finally {
    closeSync(fd);
  }
}

/**
 * XXH64 of the files writeNewFile wrote, by inode, with the identity each had once written (size,
 * mtime, ctime): criu-bun.sum (manifest.ts) takes a dump's checksums from here instead of reading
 * every image back into fresh memory (the pagemap of 4 GiB of scattered memory is 4 MB: read
 * and hashed again it cost 0.1-0.2 s of the dump's tail on this VM, where a first touch of a page
 * costs tens of microseconds). A file changed since (any write moves its mtime or ctime) is read.
 */
const written = new Map<string, { size: bigint; mtimeNs: bigint; ctimeNs: bigint; hash: bigint }>();
const WRITTEN_MAX = 4096;
function noteWritten(fd: number, data: Uint8Array) {
  const st = fstatSync(fd, { bigint: true });
  if (st.size !== BigInt(data.length)) return;
  if (written.size >= WRITTEN_MAX) written.clear();
  written.set(`${st.dev}:${st.ino}`, {
    size: st.size,
    mtimeNs: st.mtimeNs,
    ctimeNs: st.ctimeNs,
    hash: Bun.hash.xxHash64(data),
  });
}
/** The XXH64 of path's bytes as writeNewFile wrote them, if it wrote this very file and it is unchanged since. */
export function writtenHash(path: string): bigint | undefined {
  const st = statSync(path, { bigint: true });
  const key = `${st.dev}:${st.ino}`;
  const w = written.get(key);
  if (!w) return undefined;
  written.delete(key);
  return w.size === st.size && w.mtimeNs === st.mtimeNs && w.ctimeNs === st.ctimeNs ? w.hash : undefined;
}

/**
 * Replace path atomically: a new file with a random name beside it, then rename over path
 * (rename replaces a symlink, never follows it). For pidfiles and files outside a dump's stage.
 */
export function replaceFile(path: string, data: Uint8Array | string) {
  const dir = openDir(dirname(path));
  const tmp = join(dir.path, `.${basename(path)}.${randomHex(6)}`);
  try {
    const fd = createNew(tmp);
    try {
      writeAllFd(fd, typeof data === "string" ? Buffer.from(data) : data, `write ${path}`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, join(dir.path, basename(path)));
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {}
    throw e;
  } finally {
    dir.close();
  }
}

/** A directory held by an fd; path is /proc/self/fd/N, which names that directory whatever happens to its name. */
export interface DirHandle {
  fd: number;
  path: string;
  shown: string;
  close(): void;
}

export function openDir(dir: string): DirHandle {
  const fd = openSync(dir, O.RDONLY | O.DIRECTORY | O.CLOEXEC);
  const path = `/proc/self/fd/${fd}`;
  const unalias = aliasPath(path, dir);
  let open = true;
  return {
    fd,
    path,
    shown: dir,
    close() {
      if (open) {
        open = false;
        unalias();
        closeSync(fd);
      }
    },
  };
}

/** Run fn on dir held by an fd (its /proc/self/fd path); errors name dir by its real path. */
export function withDir<T>(dir: string, fn: (path: string) => T): T {
  const h = openDir(dir);
  try {
    try {
      aliasPath(h.path, realpathSync(dir));
    } catch {}
    return fn(h.path);
  } catch (e) {
    if (e instanceof Error) e.message = unalias(e.message);
    throw e;
  } finally {
    h.close();
  }
}

/** fdatasync a file by path (a new image's data and size; a symlink is neither followed nor synced). */
function syncFileData(path: string) {
  let fd: number;
  try {
    fd = openSync(path, O.RDONLY | O.NOFOLLOW | O.CLOEXEC | O.NONBLOCK);
  } catch (e) {
    if (errorCode(e) === "ELOOP") return;
    throw e;
  }
  try {
    let r: number;
    do r = syscall(NR.fdatasync, fd);
    while (r === -4 /* EINTR */);
    if (r < 0) throw new CriuError("dump", `fdatasync ${unalias(path)}: ${errnoText(-r)}`);
  } finally {
    closeSync(fd);
  }
}

/** Bytes the system has waiting for writeback (Dirty + Writeback of /proc/meminfo); Infinity
 *  when it cannot be read (then nothing is assumed small). */
function dirtyBytes(): number {
  let text: string;
  try {
    text = readProcText("/proc/meminfo");
  } catch {
    return Number.POSITIVE_INFINITY;
  }
  const kb = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(text);
    return m ? Number(m[1]) * 1024 : Number.POSITIVE_INFINITY;
  };
  return kb("Dirty") + kb("Writeback");
}
/** Others' data a syncfs at commit may write back along with the images' (4 MiB: ~40 ms at 100 MB/s). */
const SYNCFS_SLACK = 4 << 20;

const TMPFS_MAGIC = 0x01021994,
  RAMFS_MAGIC = 0x858458f6;
/** Whether fd's file system keeps its files in memory only (tmpfs, ramfs): its fsync and syncfs do
 *  nothing, so there is nothing to sync. */
function inMemoryFs(fd: number): boolean {
  const st = new BigInt64Array(15); // struct statfs: f_type first
  if (syscall(NR.fstatfs, fd, addr(st)) !== 0) return false;
  const type = Number(BigInt.asUintN(32, st[0]));
  return type === TMPFS_MAGIC || type === RAMFS_MAGIC;
}

/** dev:ino of what fd refers to ("" when it is not open) */
function inodeOf(fd: number): string {
  try {
    const s = fstatSync(fd);
    return `${s.dev}:${s.ino}`;
  } catch {
    return "";
  }
}

const STAGE_PREFIX = ".criu-bun-dump-";
/** what a dump may leave in an images directory: replaced (or removed when stale) at commit */
const IMAGE_NAME = /^[A-Za-z0-9_.-]+\.(img|lz4|idx)$/;

function pidAlive(pid: number): boolean {
  try {
    statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * A dump's private directory inside the images directory: every image is written there, then
 * commit() moves them into place, inventory.img last.
 */
export class DumpStage {
  readonly dir: DirHandle;
  /** where images are written during the dump (a /proc/self/fd path) */
  readonly path: string;
  private stageName: string;
  private stageFd: number;
  private done = false;
  /** dev:ino of the stage and of the images directory as opened (what a failed move compares) */
  private ids: { stage: string; dir: string };

  constructor(imagesDir: string, what = "dump") {
    let st: Stats;
    try {
      st = statSync(imagesDir);
    } catch (e) {
      throw new CriuError(what, `images directory '${imagesDir}' does not exist: ${errnoText(e)}`);
    }
    if (!st.isDirectory()) throw new CriuError(what, `images directory '${imagesDir}' is not a directory`);
    try {
      this.dir = openDir(imagesDir);
    } catch (e) {
      throw new CriuError(what, `cannot open images directory '${imagesDir}': ${code(e)}`);
    }
    try {
      removeDeadStages(this.dir.path);
      // mkdtemp: a new directory, mode 0700, with a name nobody can guess; it doubles as the
      // "is the directory writable" probe (root passes access(W_OK) even on read-only mounts)
      let stage: string;
      try {
        stage = mkdtempSync(join(this.dir.path, `${STAGE_PREFIX}${process.pid}-`));
      } catch (e) {
        throw new CriuError(what, `images directory '${imagesDir}' is not writable: ${code(e)}`);
      }
      this.stageName = basename(stage);
      this.stageFd = openSync(stage, O.RDONLY | O.DIRECTORY | O.NOFOLLOW | O.CLOEXEC);
      const s = fstatSync(this.stageFd);
      if (s.uid !== (process.geteuid?.() ?? 0) || s.mode & 0o077)
        throw new CriuError(what, `${imagesDir}/${this.stageName} was replaced while being created`);
      this.ids = { stage: `${s.dev}:${s.ino}`, dir: inodeOf(this.dir.fd) };
      this.path = `/proc/self/fd/${this.stageFd}`;
      aliasPath(this.path, imagesDir);
      log.debug(`writing images into ${imagesDir}/${this.stageName}, moved into place at the end`);
    } catch (e) {
      this.dir.close();
      throw e;
    }
  }

  /** Sync every image, then move them into the images directory: inventory.img last. */
  commit() {
    const names = readdirSync(this.path);
    // every image on disk before any is moved (syncImages), then the images directory after each
    // step below, through the fd held on it. On tmpfs and ramfs nothing is synced: their fsync
    // does nothing.
    const sync = !inMemoryFs(this.stageFd);
    const syncDir = (fd: number) => {
      if (sync) fsyncSync(fd);
    };
    if (sync) this.syncImages(names);
    const d = this.dir.path;
    // the old dump stops being one first: a kill from here on leaves no inventory.img
    try {
      unlinkSync(join(d, "inventory.img"));
    } catch (e) {
      if (errorCode(e) !== "ENOENT") throw e;
    }
    syncDir(this.dir.fd);
    const mine = new Set(names);
    for (const n of names) if (n !== "inventory.img") this.move(n, names);
    // images of the older dump that this one does not have would be mixed with it
    for (const n of readdirSync(d)) {
      if (mine.has(n) || n.startsWith(STAGE_PREFIX)) continue;
      let st: Stats;
      try {
        st = lstatSync(join(d, n));
      } catch {
        continue;
      }
      if ((IMAGE_NAME.test(n) && st.isFile()) || (n === "parent" && st.isSymbolicLink())) unlinkSync(join(d, n));
    }
    syncDir(this.dir.fd);
    if (mine.has("inventory.img")) this.move("inventory.img", names);
    syncDir(this.dir.fd);
    this.done = true;
    this.close();
    log.debug(`images committed into ${this.dir.shown}`);
  }

  /**
   * The stage's images on disk. One syncfs of their file system when little else is waiting to be
   * written back (one cache flush for all of them), else each image by itself (fdatasync, a flush
   * each: ~0.3-1 ms here), so that the cost is this dump's own data: a syncfs writes back every
   * dirty page of the file system while the tree stays frozen (1 s with 3 GB another program had
   * just written). What waits is the system's Dirty + Writeback (/proc/meminfo), less the images.
   */
  private syncImages(names: string[]) {
    const pending = dirtyBytes();
    let others = pending;
    if (others > SYNCFS_SLACK) for (const n of names) others -= lstatSync(join(this.path, n)).size;
    if (others <= SYNCFS_SLACK && syscall(NR.syncfs, this.stageFd) === 0) {
      log.debug(`images synced by syncfs (${Math.round(pending / 1024)} KiB waiting for writeback)`);
      return;
    }
    for (const n of names) syncFileData(join(this.path, n));
    log.debug(
      `images synced one by one (${names.length}): ${Math.round(pending / 1024)} KiB waited for writeback, the images' included`
    );
  }

  /** One image from the stage into the images directory. A failure says what each directory fd
   *  is now. (The ENOENT seen in CI-style runs with both in place was the rename's two paths given
   *  to the kernel by address only, one collected and reused before the call: sys/addr.ts.) */
  private move(n: string, listed: string[]) {
    try {
      renameSync(join(this.path, n), join(this.dir.path, n));
    } catch (e) {
      const src = lstatSync(join(this.path, n), { throwIfNoEntry: false });
      const twice = listed.filter((x) => x === n).length > 1;
      throw new CriuError(
        "dump",
        `cannot move ${n} from the stage ${this.stageName} into ${this.dir.shown}: ${errnoText(e)} (the file is ${src ? "" : "no longer "}in the stage; the stage's fd ${this.fdState(this.stageFd, this.ids.stage, join(this.dir.shown, this.stageName))}; the images directory's fd ${this.fdState(this.dir.fd, this.ids.dir, this.dir.shown)}${twice ? "; it was listed twice" : ""})`
      );
    }
  }

  /** What a failed move found of a directory fd: still the directory opened (same dev:ino), and
   *  that directory still under its name (not removed, not replaced by another). */
  private fdState(fd: number, id: string, name: string): string {
    const now = inodeOf(fd);
    if (now !== id) return now ? `is now another file (${now}, was ${id})` : "no longer resolves";
    const byName = statSync(name, { throwIfNoEntry: false });
    if (!byName) return `is the directory opened, which no longer has its name`;
    return `${byName.dev}:${byName.ino}` === id
      ? "is the directory opened, still under its name"
      : `is the directory opened, whose name is now another directory's (${byName.dev}:${byName.ino})`;
  }

  /** A failed dump: its stage goes, the directory keeps what it had. */
  abort() {
    if (this.done) return;
    this.done = true;
    try {
      rmSync(join(this.dir.path, this.stageName), { recursive: true, force: true });
    } catch (e) {
      log.warn(`cannot remove ${this.dir.shown}/${this.stageName}: ${code(e)}`);
    }
    this.close();
  }

  private close() {
    try {
      rmdirSync(join(this.dir.path, this.stageName));
    } catch {}
    try {
      closeSync(this.stageFd);
    } catch {}
    aliasPath(this.path, undefined);
    this.dir.close();
  }
}

/** Stages left by a criu-bun that was killed (its PID no longer runs) are removed. */
function removeDeadStages(dir: string) {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  const me = process.geteuid?.() ?? 0;
  for (const n of names) {
    const m = /^\.criu-bun-dump-(\d+)-[A-Za-z0-9]{6}$/.exec(n);
    if (!m || (Number(m[1]) !== process.pid && pidAlive(Number(m[1])))) continue;
    try {
      const st = lstatSync(join(dir, n));
      if (!st.isDirectory() || st.uid !== me) continue;
      rmSync(join(dir, n), { recursive: true, force: true });
      log.info(`removed ${n}, left by a dump that did not finish`);
    } catch {}
  }
}

/**
 * Restore as root: refuse images another user could have written (a directory or file writable
 * by group or others, or owned by a user other than root and us), following the parent links of
 * incremental dumps. --trust-images skips this.
 */
export function checkImagesTrusted(dir: string, depth = 0) {
  const euid = process.geteuid?.() ?? 0;
  if (euid !== 0) return; // an unprivileged restore can do nothing its user could not do anyway
  const bad = (st: Stats) =>
    st.uid !== 0 && st.uid !== euid
      ? `is owned by uid ${st.uid}`
      : st.mode & 0o022 && !st.isSymbolicLink()
        ? `is writable by ${st.mode & 0o002 ? "others" : "its group"}`
        : undefined;
  const refuse = (what: string, why: string) => {
    throw new CriuError(
      "restore",
      `${what} ${why}: as root, criu-bun restores only images no other user could have changed (--trust-images to restore it anyway)`
    );
  };
  const dst = statSync(dir);
  const why = bad(dst);
  if (why) refuse(`images directory '${dir}'`, why);
  for (const n of readdirSync(dir)) {
    if (n.startsWith(STAGE_PREFIX)) continue;
    const p = join(dir, n);
    const l = lstatSync(p);
    if (l.isSymbolicLink()) {
      if (n === "parent" && depth < 32) {
        checkImagesTrusted(join(dir, n), depth + 1);
        continue;
      }
      if (IMAGE_NAME.test(n)) refuse(`${p}`, "is a symbolic link");
      continue;
    }
    if (!l.isFile() || !IMAGE_NAME.test(n)) continue;
    const w = bad(l);
    if (w) refuse(p, w);
    if (l.nlink !== 1 && l.uid !== euid) refuse(p, "has other hard links");
  }
}
