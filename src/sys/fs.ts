// The part of node:fs criu-bun uses, on raw system calls: same names, arguments and results
// (Stats, Dirent, errors with code / errno / syscall / path), so that a module imports it instead
// of node:fs. Why: importing the runtime's node:fs took a compiled program 4-7 ms on a 2-core
// paravirtual VM (node:path 0.4-3 ms more), paid by every command and by every page Worker; this
// is plain code over the syscall stub. (A whole `sleep` dump or restore gained 1-2 ms of median
// wall: part of that import was first uses that now happen elsewhere. BENCHMARKS.md.)
// Files inside the compiled executable (/$bunfs/...) only the runtime can read: for those paths
// readFileSync, existsSync and statSync load node:fs after all.
// As Bun's node:fs: every open adds O_CLOEXEC, directories list in the kernel's order, realpath is
// the kernel's name of the opened file.
import { syscall, addr, cstr as cString } from "./syscall";
import { NR } from "./nr";
import { errnoName, strerror } from "./errno";

const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;
const EINTR = 4;
const ENOENT = 2;
const EEXIST = 17;
const EISDIR = 21;

export const constants = {
  F_OK: 0,
  R_OK: 4,
  W_OK: 2,
  X_OK: 1,
  O_RDONLY: 0,
  O_WRONLY: 1,
  O_RDWR: 2,
  O_CREAT: 0o100,
  O_EXCL: 0o200,
  O_NOCTTY: 0o400,
  O_TRUNC: 0o1000,
  O_APPEND: 0o2000,
  O_NONBLOCK: 0o4000,
  O_DSYNC: 0o10000,
  O_DIRECT: 0o40000,
  O_LARGEFILE: 0o100000,
  O_DIRECTORY: 0o200000,
  O_NOFOLLOW: 0o400000,
  O_NOATIME: 0o1000000,
  O_CLOEXEC: 0o2000000,
  O_SYNC: 0o4010000,
  O_PATH: 0o10000000,
  S_IFMT: 0o170000,
  S_IFREG: 0o100000,
  S_IFDIR: 0o40000,
  S_IFCHR: 0o20000,
  S_IFBLK: 0o60000,
  S_IFIFO: 0o10000,
  S_IFLNK: 0o120000,
  S_IFSOCK: 0o140000,
} as const;
const C = constants;

type PathLike = string;
type Data = string | ArrayBufferView;
type Encoding = "utf8" | "utf-8" | "latin1" | "ascii" | "binary" | "hex" | "base64";

// node:fs words these (libuv's texts) unlike strerror; the others are strerror's, lower-cased
const UV_TEXT: Record<number, string> = {
  5: "i/o error",
  12: "not enough memory",
  14: "bad address in system call argument",
  16: "resource busy or locked",
  17: "file already exists",
  18: "cross-device link not permitted",
  21: "illegal operation on a directory",
  23: "file table overflow",
  26: "text file is busy",
  29: "invalid seek",
  36: "name too long",
  40: "too many symbolic links encountered",
  95: "operation not supported on socket",
};

/** A path as the kernel takes it; one with a NUL byte is refused as node:fs refuses it (the kernel
 *  would read a shorter path: another file). */
function cstr(path: string): Uint8Array {
  if (path.includes("\0"))
    throw Object.assign(
      new TypeError(
        `The argument 'path' must be a string, Uint8Array, or URL without null bytes. Received ${JSON.stringify(path)}`
      ),
      { code: "ERR_INVALID_ARG_VALUE" }
    );
  return cString(path);
}

/** a path inside the compiled executable (Bun's /$bunfs/), which only the runtime's node:fs reads */
const embedded = (p: unknown): p is string => typeof p === "string" && p.startsWith("/$bunfs/");
const runtimeFs = () => require("node:fs") as typeof import("node:fs");

/** A failed call as node:fs reports it: "ENOENT: no such file or directory, open '/x'". */
class FsError extends Error {
  errno: number;
  code: string;
  syscall: string;
  path?: string;
  dest?: string;
  constructor(errno: number, call: string, path?: string, dest?: string) {
    const code = errnoName(errno);
    const text = strerror(errno);
    const t = UV_TEXT[errno] ?? (text ? text[0].toLowerCase() + text.slice(1) : code);
    super(
      `${code}: ${t}, ${call}${path !== undefined ? ` '${path}'` : ""}${dest !== undefined ? ` -> '${dest}'` : ""}`
    );
    this.errno = -errno;
    this.code = code;
    this.syscall = call;
    if (path !== undefined) this.path = path;
    if (dest !== undefined) this.dest = dest;
  }
}

/** r: a raw result; a failure (-errno) thrown as node:fs throws it */
function check(r: number, call: string, path?: string, dest?: string): number {
  if (r < 0 && r > -4096) throw new FsError(-r, call, path, dest);
  return r;
}
/** the call again while it is interrupted */
function retry(fn: () => number): number {
  for (;;) {
    const r = fn();
    if (r !== -EINTR) return r;
  }
}

const FLAGS: Record<string, number> = {
  r: C.O_RDONLY,
  rs: C.O_RDONLY | C.O_SYNC,
  "r+": C.O_RDWR,
  "rs+": C.O_RDWR | C.O_SYNC,
  w: C.O_WRONLY | C.O_CREAT | C.O_TRUNC,
  wx: C.O_WRONLY | C.O_CREAT | C.O_TRUNC | C.O_EXCL,
  "w+": C.O_RDWR | C.O_CREAT | C.O_TRUNC,
  "wx+": C.O_RDWR | C.O_CREAT | C.O_TRUNC | C.O_EXCL,
  a: C.O_WRONLY | C.O_CREAT | C.O_APPEND,
  ax: C.O_WRONLY | C.O_CREAT | C.O_APPEND | C.O_EXCL,
  "a+": C.O_RDWR | C.O_CREAT | C.O_APPEND,
  "ax+": C.O_RDWR | C.O_CREAT | C.O_APPEND | C.O_EXCL,
};
function flagsOf(f: number | string | undefined, dflt: number): number {
  if (f === undefined) return dflt;
  if (typeof f === "number") return f;
  const n = FLAGS[f];
  if (n === undefined) throw new TypeError(`invalid file open flags '${f}'`);
  return n;
}

export function openSync(path: PathLike, flags: number | string = "r", mode = 0o666): number {
  const p = cstr(path);
  return check(
    retry(() => syscall(NR.openat, AT_FDCWD, addr(p), flagsOf(flags, 0) | C.O_CLOEXEC | C.O_LARGEFILE, mode)),
    "open",
    path
  );
}

export function closeSync(fd: number): void {
  check(syscall(NR.close, fd), "close");
}

function bytesOf(b: ArrayBufferView): Uint8Array {
  return b instanceof Uint8Array ? b : new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** read(2), or pread(2) when position is a number (null / undefined: the file's offset) */
export function readSync(
  fd: number,
  buffer: ArrayBufferView,
  offset = 0,
  length?: number,
  position?: number | bigint | null
): number {
  const b = bytesOf(buffer);
  const len = length ?? b.length - offset;
  if (offset < 0 || len < 0 || offset + len > b.length) throw new RangeError("readSync: out of the buffer's range");
  if (len === 0) return 0;
  const at = addr(b, offset);
  return check(
    retry(() =>
      position === null || position === undefined || position === -1
        ? syscall(NR.read, fd, at, len)
        : syscall(NR.pread64, fd, at, len, position)
    ),
    "read"
  );
}

/** One write(2) (or pwrite(2)); the count it wrote, which may be short. Strings go as UTF-8. */
export function writeSync(
  fd: number,
  data: Data,
  offsetOrPosition?: number | null,
  lengthOrEncoding?: number | string | null,
  position?: number | null
): number {
  let b: Uint8Array;
  let off = 0;
  let len: number;
  let pos: number | null | undefined;
  if (typeof data === "string") {
    b = Buffer.from(data, (typeof lengthOrEncoding === "string" ? lengthOrEncoding : "utf8") as Encoding);
    len = b.length;
    pos = offsetOrPosition;
  } else {
    b = bytesOf(data);
    off = offsetOrPosition ?? 0;
    len = typeof lengthOrEncoding === "number" ? lengthOrEncoding : b.length - off;
    pos = position;
    if (off < 0 || len < 0 || off + len > b.length) throw new RangeError("writeSync: out of the buffer's range");
  }
  if (len === 0) return 0;
  const at = addr(b, off);
  return check(
    retry(() =>
      pos === null || pos === undefined ? syscall(NR.write, fd, at, len) : syscall(NR.pwrite64, fd, at, len, pos)
    ),
    "write"
  );
}

/** Every byte written: write(2) again after a short one; a write that makes no progress at all is
 *  an error, not a loop (no errno says why: an Error, not an FsError). safefs.ts's writeAllFd is its
 *  twin with a CriuError. */
function writeAll(fd: number, b: Uint8Array, what = `fd ${fd}`) {
  for (let off = 0; off < b.length; ) {
    const n = writeSync(fd, b, off, b.length - off);
    if (n <= 0) throw new Error(`write ${what}: short write`);
    off += n;
  }
}

function encode(b: Uint8Array, enc: string | undefined | null): string | Buffer {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.length);
  return enc ? buf.toString(enc as Encoding) : buf;
}
function encodingOf(o: unknown): string | undefined {
  if (typeof o === "string") return o;
  if (o && typeof o === "object") return (o as { encoding?: string }).encoding ?? undefined;
  return undefined;
}

/**
 * isatty(3): whether fd is a terminal (TCGETS answers only there, as glibc's isatty asks). Not
 * process.stderr.isTTY: reading that builds the runtime's Node stream for stderr, 2.2-2.8 ms of a
 * large restore's start before its first page (the progress line's check).
 */
export function isTerminal(fd: number): boolean {
  return syscall(NR.ioctl, fd, 0x5401 /* TCGETS */, addr(new Uint8Array(64))) === 0;
}

/** All of fd from its offset to the end (regular files and /proc files alike). */
function readAll(fd: number, sizeHint: number): Uint8Array {
  let b = new Uint8Array(Math.max(sizeHint + 1, 4096));
  let n = 0;
  for (;;) {
    if (n === b.length) {
      const nb = new Uint8Array(b.length * 2);
      nb.set(b);
      b = nb;
    }
    const r = readSync(fd, b, n, b.length - n);
    if (r === 0) break;
    n += r;
  }
  return b.subarray(0, n);
}

export function readFileSync(path: PathLike | number, options: Encoding | { encoding: Encoding }): string;
export function readFileSync(path: PathLike | number, options?: { encoding?: null } | null): Buffer;
export function readFileSync(path: PathLike | number, options?: unknown): string | Buffer {
  const enc = encodingOf(options);
  if (embedded(path)) return runtimeFs().readFileSync(path, enc as Encoding);
  if (typeof path === "number") return encode(readAll(path, 0), enc);
  const fd = openSync(path, C.O_RDONLY);
  try {
    const st = statBuf(fd, undefined, 0, "fstat");
    const size = Number(st[6]);
    // /proc and /sys files say 0 or a page; read from those until the end
    return encode(readAll(fd, size > 0 && size < 1 << 30 ? size : 0), enc);
  } finally {
    syscall(NR.close, fd);
  }
}

interface WriteOptions {
  encoding?: string | null;
  mode?: number;
  flag?: string | number;
}
function dataBytes(data: Data, enc?: string | null): Uint8Array {
  return typeof data === "string" ? Buffer.from(data, (enc ?? "utf8") as Encoding) : bytesOf(data);
}

export function writeFileSync(path: PathLike | number, data: Data, options?: WriteOptions | string): void {
  const o: WriteOptions = typeof options === "string" ? { encoding: options } : (options ?? {});
  const b = dataBytes(data, o.encoding);
  if (typeof path === "number") return writeAll(path, b);
  const fd = openSync(path, flagsOf(o.flag, FLAGS.w), o.mode ?? 0o666);
  try {
    writeAll(fd, b, path);
  } finally {
    syscall(NR.close, fd);
  }
}

export function appendFileSync(path: PathLike | number, data: Data, options?: WriteOptions | string): void {
  const o: WriteOptions = typeof options === "string" ? { encoding: options } : (options ?? {});
  writeFileSync(path, data, { ...o, flag: o.flag ?? "a" });
}

export function existsSync(path: PathLike): boolean {
  if (typeof path !== "string" || path.includes("\0")) return false;
  if (embedded(path)) return runtimeFs().existsSync(path);
  const p = cstr(path);
  return syscall(NR.access, addr(p), C.F_OK) === 0;
}

// struct stat (x86_64): dev, ino, nlink (u64); mode, uid, gid (u32); pad; rdev, size, blksize,
// blocks (64-bit); atime, atime_nsec, mtime, mtime_nsec, ctime, ctime_nsec
const statArea = new BigInt64Array(18);
/** fstat (path undefined) or newfstatat into statArea: the raw result */
function rawStat(fd: number, path: string | undefined, flags: number): number {
  const p = path === undefined ? undefined : cstr(path);
  return retry(() =>
    p === undefined ? syscall(NR.fstat, fd, addr(statArea)) : syscall(NR.newfstatat, fd, addr(p), addr(statArea), flags)
  );
}
function statBuf(fd: number, path: string | undefined, flags: number, call: string): BigInt64Array {
  check(rawStat(fd, path, flags), call, path);
  return statArea;
}

const NS = 1000000000n;
abstract class StatsBase<T extends number | bigint> {
  abstract mode: T;
  isFile() {
    return (Number(this.mode) & C.S_IFMT) === C.S_IFREG;
  }
  isDirectory() {
    return (Number(this.mode) & C.S_IFMT) === C.S_IFDIR;
  }
  isSymbolicLink() {
    return (Number(this.mode) & C.S_IFMT) === C.S_IFLNK;
  }
  isCharacterDevice() {
    return (Number(this.mode) & C.S_IFMT) === C.S_IFCHR;
  }
  isBlockDevice() {
    return (Number(this.mode) & C.S_IFMT) === C.S_IFBLK;
  }
  isFIFO() {
    return (Number(this.mode) & C.S_IFMT) === C.S_IFIFO;
  }
  isSocket() {
    return (Number(this.mode) & C.S_IFMT) === C.S_IFSOCK;
  }
}

export class Stats extends StatsBase<number> {
  dev: number;
  ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  blksize: number;
  blocks: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  birthtimeMs = 0;
  constructor(s: BigInt64Array) {
    super();
    const u = new BigUint64Array(s.buffer, s.byteOffset, 18);
    const w = new Uint32Array(s.buffer, s.byteOffset, 36);
    this.dev = Number(u[0]);
    this.ino = Number(u[1]);
    this.nlink = Number(u[2]);
    this.mode = w[6];
    this.uid = w[7];
    this.gid = w[8];
    this.rdev = Number(u[5]);
    this.size = Number(s[6]);
    this.blksize = Number(s[7]);
    this.blocks = Number(s[8]);
    this.atimeMs = Number(s[9]) * 1000 + Number(s[10]) / 1e6;
    this.mtimeMs = Number(s[11]) * 1000 + Number(s[12]) / 1e6;
    this.ctimeMs = Number(s[13]) * 1000 + Number(s[14]) / 1e6;
  }
  get atime() {
    return new Date(this.atimeMs);
  }
  get mtime() {
    return new Date(this.mtimeMs);
  }
  get ctime() {
    return new Date(this.ctimeMs);
  }
}

export class BigIntStats extends StatsBase<bigint> {
  dev: bigint;
  ino: bigint;
  mode: bigint;
  nlink: bigint;
  uid: bigint;
  gid: bigint;
  rdev: bigint;
  size: bigint;
  blksize: bigint;
  blocks: bigint;
  atimeMs: bigint;
  mtimeMs: bigint;
  ctimeMs: bigint;
  birthtimeMs = 0n;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  birthtimeNs = 0n;
  constructor(s: BigInt64Array) {
    super();
    const u = new BigUint64Array(s.buffer, s.byteOffset, 18);
    const w = new Uint32Array(s.buffer, s.byteOffset, 36);
    this.dev = u[0];
    this.ino = u[1];
    this.nlink = u[2];
    this.mode = BigInt(w[6]);
    this.uid = BigInt(w[7]);
    this.gid = BigInt(w[8]);
    this.rdev = u[5];
    this.size = s[6];
    this.blksize = s[7];
    this.blocks = s[8];
    this.atimeNs = s[9] * NS + s[10];
    this.mtimeNs = s[11] * NS + s[12];
    this.ctimeNs = s[13] * NS + s[14];
    this.atimeMs = this.atimeNs / 1000000n;
    this.mtimeMs = this.mtimeNs / 1000000n;
    this.ctimeMs = this.ctimeNs / 1000000n;
  }
}

interface StatOptions {
  bigint?: boolean;
  throwIfNoEntry?: boolean;
}
function statOf(fd: number, path: string | undefined, flags: number, call: string, o?: StatOptions) {
  const r = rawStat(fd, path, flags);
  // no such entry, asked not to throw: undefined without an error made and thrown
  if (r === -ENOENT && o?.throwIfNoEntry === false && path !== undefined) return undefined;
  check(r, call, path);
  return o?.bigint ? new BigIntStats(statArea) : new Stats(statArea);
}

export function statSync(
  path: PathLike,
  o: StatOptions & { bigint: true; throwIfNoEntry: false }
): BigIntStats | undefined;
export function statSync(path: PathLike, o: StatOptions & { bigint: true }): BigIntStats;
export function statSync(path: PathLike, o: StatOptions & { throwIfNoEntry: false }): Stats | undefined;
export function statSync(path: PathLike, o?: StatOptions): Stats;
export function statSync(path: PathLike, o?: StatOptions) {
  if (embedded(path)) return runtimeFs().statSync(path, o);
  return statOf(AT_FDCWD, path, 0, "stat", o);
}
export function lstatSync(
  path: PathLike,
  o: StatOptions & { bigint: true; throwIfNoEntry: false }
): BigIntStats | undefined;
export function lstatSync(path: PathLike, o: StatOptions & { bigint: true }): BigIntStats;
export function lstatSync(path: PathLike, o: StatOptions & { throwIfNoEntry: false }): Stats | undefined;
export function lstatSync(path: PathLike, o?: StatOptions): Stats;
export function lstatSync(path: PathLike, o?: StatOptions) {
  return statOf(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, "lstat", o);
}
export function fstatSync(fd: number, o: { bigint: true }): BigIntStats;
export function fstatSync(fd: number, o?: { bigint?: false }): Stats;
export function fstatSync(fd: number, o?: { bigint?: boolean }) {
  return statOf(fd, undefined, 0, "fstat", o);
}

const DT_TYPE: Record<number, number> = {
  1: C.S_IFIFO,
  2: C.S_IFCHR,
  4: C.S_IFDIR,
  6: C.S_IFBLK,
  8: C.S_IFREG,
  10: C.S_IFLNK,
  12: C.S_IFSOCK,
};
class Dirent extends StatsBase<number> {
  constructor(
    public name: string,
    public parentPath: string,
    public mode: number
  ) {
    super();
  }
}

const utf8 = new TextDecoder();
let dents = new Uint8Array(32768);
/** readdirSync(path): the names (or Dirents) but . and .., in the order getdents64 gives them */
export function readdirSync(path: PathLike, o: { withFileTypes: true }): Dirent[];
export function readdirSync(path: PathLike, o?: { withFileTypes?: false } | string): string[];
export function readdirSync(path: PathLike, o?: { withFileTypes?: boolean } | string): string[] | Dirent[] {
  const types = typeof o === "object" && o?.withFileTypes === true;
  const fd = check(
    retry(() => syscall(NR.openat, AT_FDCWD, addr(cstr(path)), C.O_RDONLY | C.O_DIRECTORY | C.O_CLOEXEC, 0)),
    "scandir",
    path
  );
  const names: string[] = [];
  const ents: Dirent[] = [];
  try {
    const buf = dents;
    const dv = new DataView(buf.buffer);
    for (;;) {
      const n = check(
        retry(() => syscall(NR.getdents64, fd, addr(buf), buf.length)),
        "scandir",
        path
      );
      if (n === 0) break;
      // linux_dirent64: d_ino u64, d_off s64, d_reclen u16, d_type u8, d_name (NUL-terminated)
      for (let at = 0; at < n; ) {
        const reclen = dv.getUint16(at + 16, true);
        if (reclen < 20 || at + reclen > n) throw new FsError(5 /* EIO */, "scandir", path);
        const type = buf[at + 18];
        let end = at + 19;
        while (end < at + reclen && buf[end] !== 0) end++;
        const name = utf8.decode(buf.subarray(at + 19, end));
        at += reclen;
        if (name === "." || name === "..") continue;
        if (!types) names.push(name);
        else {
          let mode = DT_TYPE[type] ?? 0;
          if (!mode) mode = (lstatSync(`${path}/${name}`, { throwIfNoEntry: false })?.mode ?? 0) & C.S_IFMT;
          ents.push(new Dirent(name, path, mode));
        }
      }
    }
  } finally {
    syscall(NR.close, fd);
  }
  return types ? ents : names;
}

let linkBuf = new Uint8Array(4096);
function readlinkAt(path: string, call: string): string {
  const p = cstr(path);
  for (;;) {
    const n = check(syscall(NR.readlink, addr(p), addr(linkBuf), linkBuf.length), call, path);
    if (n < linkBuf.length) return utf8.decode(linkBuf.subarray(0, n));
    linkBuf = new Uint8Array(linkBuf.length * 2);
  }
}
export function readlinkSync(path: PathLike): string {
  return readlinkAt(path, "readlink");
}

/** The kernel's name for the file path leads to (every symlink followed). */
export function realpathSync(path: PathLike): string {
  const fd = check(
    retry(() => syscall(NR.openat, AT_FDCWD, addr(cstr(path)), C.O_PATH | C.O_CLOEXEC, 0)),
    "lstat",
    path
  );
  try {
    return readlinkAt(`/proc/self/fd/${fd}`, "realpath");
  } finally {
    syscall(NR.close, fd);
  }
}

const TEMP_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/** A new directory prefix + 6 random characters, mode 0700 (mkdtemp(3)). */
export function mkdtempSync(prefix: string): string {
  const rnd = new Uint8Array(6);
  for (let tries = 0; ; tries++) {
    crypto.getRandomValues(rnd);
    let s = prefix;
    for (const x of rnd) s += TEMP_CHARS[x % TEMP_CHARS.length];
    const r = syscall(NR.mkdir, addr(cstr(s)), 0o700);
    if (r === 0) return s;
    if (r !== -EEXIST || tries >= 100) throw new FsError(-r, "mkdtemp", `${prefix}XXXXXX`);
  }
}

/** mkdir(2); recursive: the missing parents too, and the first directory made (or undefined) */
export function mkdirSync(path: PathLike, o?: number | { recursive?: boolean; mode?: number }): string | undefined {
  const mode = (typeof o === "number" ? o : o?.mode) ?? 0o777;
  const recursive = typeof o === "object" && o?.recursive === true;
  const r = syscall(NR.mkdir, addr(cstr(path)), mode);
  if (r === 0) return recursive ? path : undefined;
  if (!recursive) throw new FsError(-r, "mkdir", path);
  if (r === -EEXIST) {
    if (statSync(path, { throwIfNoEntry: false })?.isDirectory()) return undefined;
    throw new FsError(EEXIST, "mkdir", path);
  }
  if (r !== -ENOENT) throw new FsError(-r, "mkdir", path);
  const slash = path.replace(/\/+$/, "").lastIndexOf("/");
  if (slash <= 0) throw new FsError(ENOENT, "mkdir", path);
  const first = mkdirSync(path.slice(0, slash), { recursive: true, mode });
  const r2 = syscall(NR.mkdir, addr(cstr(path)), mode);
  if (r2 < 0 && !(r2 === -EEXIST && statSync(path, { throwIfNoEntry: false })?.isDirectory()))
    throw new FsError(-r2, "mkdir", path);
  return first ?? path;
}

export function renameSync(from: PathLike, to: PathLike): void {
  check(syscall(NR.rename, addr(cstr(from)), addr(cstr(to))), "rename", from, to);
}
export function unlinkSync(path: PathLike): void {
  check(syscall(NR.unlink, addr(cstr(path))), "unlink", path);
}
export function rmdirSync(path: PathLike): void {
  check(syscall(NR.rmdir, addr(cstr(path))), "rmdir", path);
}

/** rm -r[f]: symlinks are removed, never followed */
export function rmSync(path: PathLike, o?: { recursive?: boolean; force?: boolean }): void {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st) {
    if (o?.force) return;
    throw new FsError(ENOENT, "rm", path);
  }
  if (!st.isDirectory()) return unlinkSync(path);
  if (!o?.recursive) throw new FsError(EISDIR, "rm", path);
  for (const n of readdirSync(path)) rmSync(`${path}/${n}`, { recursive: true, force: o.force });
  const r = syscall(NR.rmdir, addr(cstr(path)));
  if (r < 0 && !(o.force && r === -ENOENT)) throw new FsError(-r, "rm", path);
}

export function symlinkSync(target: PathLike, path: PathLike): void {
  check(syscall(NR.symlink, addr(cstr(target)), addr(cstr(path))), "symlink", target, path);
}
export function linkSync(existing: PathLike, path: PathLike): void {
  check(syscall(NR.link, addr(cstr(existing)), addr(cstr(path))), "link", existing, path);
}
export function chmodSync(path: PathLike, mode: number): void {
  check(syscall(NR.chmod, addr(cstr(path)), mode), "chmod", path);
}
export function fchmodSync(fd: number, mode: number): void {
  check(syscall(NR.fchmod, fd, mode), "fchmod");
}
export function chownSync(path: PathLike, uid: number, gid: number): void {
  check(syscall(NR.chown, addr(cstr(path)), uid, gid), "chown", path);
}
export function lchownSync(path: PathLike, uid: number, gid: number): void {
  check(syscall(NR.fchownat, AT_FDCWD, addr(cstr(path)), uid, gid, AT_SYMLINK_NOFOLLOW), "lchown", path);
}
export function fchownSync(fd: number, uid: number, gid: number): void {
  check(syscall(NR.fchown, fd, uid, gid), "fchown");
}

type Time = number | string | Date;
/** seconds (a Date, a number of seconds, or a numeric string) as a timespec pair */
function timespec(t: Time, out: BigInt64Array, i: number) {
  const s = t instanceof Date ? t.getTime() / 1000 : Number(t);
  if (!Number.isFinite(s)) throw new TypeError(`invalid time '${String(t)}'`);
  const sec = Math.floor(s);
  out[i] = BigInt(sec);
  out[i + 1] = BigInt(Math.round((s - sec) * 1e9));
}
function utimens(fd: number, path: string | undefined, atime: Time, mtime: Time, flags: number, call: string) {
  const ts = new BigInt64Array(4);
  timespec(atime, ts, 0);
  timespec(mtime, ts, 2);
  const p = path === undefined ? 0 : addr(cstr(path));
  check(syscall(NR.utimensat, fd, p, addr(ts), flags), call, path);
}
export function utimesSync(path: PathLike, atime: Time, mtime: Time): void {
  utimens(AT_FDCWD, path, atime, mtime, 0, "utime");
}
export function lutimesSync(path: PathLike, atime: Time, mtime: Time): void {
  utimens(AT_FDCWD, path, atime, mtime, AT_SYMLINK_NOFOLLOW, "lutime");
}
export function futimesSync(fd: number, atime: Time, mtime: Time): void {
  utimens(fd, undefined, atime, mtime, 0, "futime");
}
export function ftruncateSync(fd: number, len = 0): void {
  check(syscall(NR.ftruncate, fd, len), "ftruncate");
}
export function fsyncSync(fd: number): void {
  check(
    retry(() => syscall(NR.fsync, fd)),
    "fsync"
  );
}

/** node:os tmpdir(): $TMPDIR without its trailing slash, or /tmp */
export function tmpdir(): string {
  const t = process.env.TMPDIR;
  return t ? t.replace(/(.)\/+$/, "$1") : "/tmp";
}
