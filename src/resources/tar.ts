// The contents of a tmpfs as CRIU saves them: a gzip-compressed tar stream (GNU format, what
// `tar --create --gzip` writes and `tar --extract --gzip` reads), made and read by criu-bun itself.
// Writing walks a directory without following any symlink and without leaving its file system
// (a mount below it is recorded as the directory it is mounted on, as tar --one-file-system does).
// Reading accepts what GNU tar writes: ustar/GNU headers, GNU long names (L, K) and pax headers.
import {
  closeSync,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  symlinkSync,
  writeSync,
  chmodSync,
  chownSync,
  utimesSync,
} from "../sys/fs";
import { syscall, cstr, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { O } from "../sys/mem";
import { CriuError, log } from "../log";
import { errnoText } from "../sys/errno";
import { refuse } from "./unsupported";

/** node:zlib when a tar is made or read (it loads the Node streams modules: not at every start-up) */
const zlib = (): typeof import("node:zlib") => require("node:zlib");

const BLOCK = 512;
const TYPE = {
  FILE: "0",
  LINK: "1",
  SYMLINK: "2",
  CHR: "3",
  BLK: "4",
  DIR: "5",
  FIFO: "6",
  LONGNAME: "L",
  LONGLINK: "K",
  PAX: "x",
  PAXG: "g",
} as const;

function octal(n: number | bigint, width: number): string {
  const s = n.toString(8);
  if (s.length > width - 1) throw new CriuError("tar", `value ${n} does not fit a tar field`);
  return s.padStart(width - 1, "0") + "\0";
}

function header(
  name: string,
  type: string,
  o: {
    mode?: number;
    uid?: number;
    gid?: number;
    size?: number;
    mtime?: number;
    link?: string;
    major?: number;
    minor?: number;
  }
): Uint8Array {
  const h = new Uint8Array(BLOCK);
  const put = (off: number, len: number, s: string) => {
    const b = Buffer.from(s, "utf8");
    h.set(b.subarray(0, len), off);
  };
  put(0, 100, name);
  put(100, 8, octal(o.mode ?? 0, 8));
  put(108, 8, octal(o.uid ?? 0, 8));
  put(116, 8, octal(o.gid ?? 0, 8));
  put(124, 12, octal(o.size ?? 0, 12));
  put(136, 12, octal(o.mtime ?? 0, 12));
  put(148, 8, "        ");
  put(156, 1, type);
  put(157, 100, o.link ?? "");
  put(257, 8, "ustar  \0"); // GNU magic and version
  put(329, 8, octal(o.major ?? 0, 8));
  put(337, 8, octal(o.minor ?? 0, 8));
  let sum = 0;
  for (const b of h) sum += b;
  put(148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

class TarWriter {
  parts: Uint8Array[] = [];
  private pad(n: number) {
    const r = n % BLOCK;
    if (r) this.parts.push(new Uint8Array(BLOCK - r));
  }
  private longField(type: string, s: string) {
    const b = Buffer.from(s + "\0", "utf8");
    this.parts.push(header("././@LongLink", type, { size: b.length }), b);
    this.pad(b.length);
  }
  entry(name: string, type: string, o: Parameters<typeof header>[2], data?: Uint8Array) {
    if (Buffer.byteLength(name) > 100) this.longField(TYPE.LONGNAME, name);
    if (o.link && Buffer.byteLength(o.link) > 100) this.longField(TYPE.LONGLINK, o.link);
    this.parts.push(header(name, type, { ...o, size: data?.length ?? 0 }));
    if (data?.length) {
      this.parts.push(data);
      this.pad(data.length);
    }
  }
  finish(): Uint8Array {
    this.parts.push(new Uint8Array(BLOCK * 2));
    return Buffer.concat(this.parts);
  }
}

/**
 * tar of everything below `dir` (a tmpfs's mountpoint, reached through /proc/PID/root), names
 * relative to it as "./x", gzip-compressed. `dev` is the file system's st_dev: other mounts
 * below are not entered.
 */
/** `owner`: the process a refusal names, and where the directory is mounted in its namespace */
export function tarDirectory(dir: string, dev: bigint, where: string, owner: { who: string; at: string }): Uint8Array {
  const w = new TarWriter();
  const links = new Map<string, string>();
  let files = 0,
    bytes = 0;
  const walk = (rel: string) => {
    const path = rel === "." ? dir : `${dir}/${rel.slice(2)}`;
    const st = lstatSync(path, { bigint: true });
    const name = st.isDirectory() ? `${rel}/` : rel;
    const base = {
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtime: Number(st.mtimeMs / 1000n),
    };
    if (st.dev !== dev) {
      // another mount: its mountpoint only. A file mount (runc's /dev/console, a bind of the
      // terminal's slave) needs a non-directory there: what the tree sees at that path, without
      // contents (what lies under the mount is hidden from it; CRIU's tar keeps the same)
      if (st.isDirectory()) w.entry(name, TYPE.DIR, base);
      else if (st.isCharacterDevice() || st.isBlockDevice()) {
        const r = st.rdev;
        const major = Number(((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn)),
          minor = Number((r & 0xffn) | ((r >> 12n) & ~0xffn));
        w.entry(rel, st.isCharacterDevice() ? TYPE.CHR : TYPE.BLK, { ...base, major, minor });
      } else w.entry(rel, TYPE.FILE, base, new Uint8Array(0));
      return;
    }
    // extended attributes (user.*, trusted.*, ACLs, file capabilities) are not written to the tar
    // (nor read from one): a file that has any is refused rather than restored without them
    const xa = new Uint8Array(4096);
    const nx = syscall(NR.llistxattr, addr(cstr(path)), addr(xa), xa.length);
    if (nx > 0 || nx === -34 /* ERANGE: a longer list */)
      refuse(
        "dump",
        owner.who,
        "tmpfs-xattr",
        `'${(owner.at === "/" ? "" : owner.at) + (rel.slice(1) || "/")}': ${
          nx > 0
            ? new TextDecoder()
                .decode(xa.subarray(0, nx - 1))
                .split("\0")
                .join(", ")
            : "many"
        }`
      );
    if (!st.isDirectory() && st.nlink > 1n) {
      const k = `${st.ino}`;
      const first = links.get(k);
      if (first) {
        w.entry(rel, TYPE.LINK, { ...base, link: first });
        return;
      }
      links.set(k, rel);
    }
    files++;
    if (st.isDirectory()) {
      w.entry(name, TYPE.DIR, base);
      for (const e of readdirSync(path).sort()) walk(`${rel}/${e}`);
    } else if (st.isFile()) {
      const data = readFileSync(path);
      bytes += data.length;
      w.entry(rel, TYPE.FILE, base, data);
    } else if (st.isSymbolicLink()) {
      w.entry(rel, TYPE.SYMLINK, { ...base, link: readlinkSync(path) });
    } else if (st.isCharacterDevice() || st.isBlockDevice()) {
      const r = st.rdev; // the kernel's new_encode_dev
      const major = Number(((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn)),
        minor = Number((r & 0xffn) | ((r >> 12n) & ~0xffn));
      w.entry(rel, st.isCharacterDevice() ? TYPE.CHR : TYPE.BLK, { ...base, major, minor });
    } else if (st.isFIFO()) {
      w.entry(rel, TYPE.FIFO, base);
    } else {
      log.info(`${where}: socket ${rel} left out of the tmpfs contents (tar does the same)`);
      files--;
    }
  };
  walk(".");
  const out = zlib().gzipSync(w.finish());
  log.debug(`${where}: ${files} entries, ${bytes} bytes of file data, ${out.length} bytes compressed`);
  return out;
}

interface Entry {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  link: string;
  major: number;
  minor: number;
  data: Uint8Array;
}

function str(b: Uint8Array, off: number, len: number): string {
  let e = off;
  while (e < off + len && b[e]) e++;
  return Buffer.from(b.subarray(off, e)).toString("utf8");
}
function num(b: Uint8Array, off: number, len: number): number {
  if (b[off] & 0x80) {
    // base-256
    let v = 0n;
    for (let i = off + 1; i < off + len; i++) v = (v << 8n) | BigInt(b[i]);
    return Number(v);
  }
  const s = str(b, off, len).trim();
  return s ? parseInt(s, 8) : 0;
}

/** The entries of a (gzip-compressed or plain) tar stream, long names and pax paths applied. */
function readTar(buf: Uint8Array, what: string): Entry[] {
  const b = buf[0] === 0x1f && buf[1] === 0x8b ? new Uint8Array(zlib().gunzipSync(buf)) : buf;
  const out: Entry[] = [];
  let off = 0,
    longName: string | undefined,
    longLink: string | undefined,
    pax: Record<string, string> = {};
  const bad = (why: string) => new CriuError("restore", `${what}: ${why}`);
  while (off + BLOCK <= b.length) {
    const h = b.subarray(off, off + BLOCK);
    if (h.every((x) => x === 0)) break;
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i];
    if (sum !== num(h, 148, 8)) throw bad(`bad tar header checksum at offset ${off}`);
    const type = String.fromCharCode(h[156] || 48);
    const size = num(h, 124, 12);
    const data = b.subarray(off + BLOCK, off + BLOCK + size);
    if (data.length !== size) throw bad(`truncated tar stream`);
    off += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    if (type === TYPE.LONGNAME) {
      longName = str(data, 0, size);
      continue;
    }
    if (type === TYPE.LONGLINK) {
      longLink = str(data, 0, size);
      continue;
    }
    if (type === TYPE.PAXG) continue;
    if (type === TYPE.PAX) {
      const text = Buffer.from(data).toString("utf8");
      for (let p = 0; p < text.length; ) {
        const sp = text.indexOf(" ", p),
          len = parseInt(text.slice(p, sp), 10);
        if (!(len > 0)) throw bad(`bad pax header`);
        const rec = text.slice(sp + 1, p + len - 1),
          eq = rec.indexOf("=");
        pax[rec.slice(0, eq)] = rec.slice(eq + 1);
        p += len;
      }
      continue;
    }
    const prefix = str(h, 345, 155);
    const magic = str(h, 257, 6);
    let name = longName ?? pax.path ?? (magic === "ustar" && prefix ? `${prefix}/${str(h, 0, 100)}` : str(h, 0, 100));
    const link = longLink ?? pax.linkpath ?? str(h, 157, 100);
    for (const k of Object.keys(pax))
      if (k.startsWith("SCHILY.xattr.") || k.startsWith("LIBARCHIVE.xattr."))
        throw bad(`'${name}' has extended attributes, which criu-bun does not restore yet`);
    if (type === "S") throw bad(`'${name}' is a GNU sparse file, which criu-bun does not read yet`);
    name = name.replace(/\/+$/, "");
    out.push({
      name,
      type,
      mode: num(h, 100, 8),
      uid: pax.uid ? +pax.uid : num(h, 108, 8),
      gid: pax.gid ? +pax.gid : num(h, 116, 8),
      mtime: pax.mtime ? Math.floor(+pax.mtime) : num(h, 136, 12),
      link,
      major: num(h, 329, 8),
      minor: num(h, 337, 8),
      data,
    });
    longName = longLink = undefined;
    pax = {};
  }
  return out;
}

/** A name from the stream made safe: relative, no "..", no empty parts. */
function safeName(name: string, what: string): string | undefined {
  const parts = name.split("/").filter((p) => p && p !== ".");
  if (parts.some((p) => p === ".."))
    throw new CriuError("restore", `${what}: tar entry '${name}' leaves its directory`);
  return parts.length ? parts.join("/") : undefined;
}

/**
 * Recreate the entries below `dir` (a freshly mounted, empty tmpfs). No symlink is followed:
 * parents come before their contents in the stream, and a path whose parent is not a directory
 * made here is refused. Directory times are set last (their contents change them).
 */
export function extractTar(buf: Uint8Array, dir: string, what: string): number {
  const entries = readTar(buf, what);
  const made = new Set<string>([""]);
  const dirs: Entry[] = [];
  for (const e of entries) {
    const rel = safeName(e.name, what);
    if (rel === undefined) {
      // the root of the tmpfs itself
      chmodSync(dir, e.mode);
      chownSync(dir, e.uid, e.gid);
      dirs.push({ ...e, name: "" });
      continue;
    }
    const parent = rel.includes("/") ? rel.slice(0, rel.lastIndexOf("/")) : "";
    if (!made.has(parent)) throw new CriuError("restore", `${what}: tar entry '${e.name}' comes before its directory`);
    const path = `${dir}/${rel}`;
    switch (e.type) {
      case TYPE.DIR:
        mkdirSync(path, { mode: 0o700 });
        chownSync(path, e.uid, e.gid);
        chmodSync(path, e.mode);
        made.add(rel);
        dirs.push({ ...e, name: rel });
        continue;
      case TYPE.FILE:
      case "\0":
      case "7": {
        const fd = openSync(path, O.WRONLY | O.CREAT | O.EXCL | O.NOFOLLOW | O.CLOEXEC, 0o600);
        try {
          for (let p = 0; p < e.data.length; ) p += writeSync(fd, e.data, p, e.data.length - p);
          fchownSync(fd, e.uid, e.gid);
          fchmodSync(fd, e.mode);
          futimesSync(fd, e.mtime, e.mtime);
        } finally {
          closeSync(fd);
        }
        continue;
      }
      case TYPE.SYMLINK:
        symlinkSync(e.link, path);
        lchownSync(path, e.uid, e.gid);
        lutimesSync(path, e.mtime, e.mtime);
        continue;
      case TYPE.LINK: {
        const target = safeName(e.link, what);
        if (!target) throw new CriuError("restore", `${what}: hard link '${e.name}' to nothing`);
        linkSync(`${dir}/${target}`, path);
        continue;
      }
      case TYPE.CHR:
      case TYPE.BLK:
      case TYPE.FIFO: {
        const kind = e.type === TYPE.CHR ? 0o020000 : e.type === TYPE.BLK ? 0o060000 : 0o010000;
        const dev =
          BigInt((e.minor & 0xff) | ((e.major & 0xfff) << 8)) |
          (BigInt(e.minor & ~0xff) << 12n) |
          (BigInt(e.major & ~0xfff) << 32n);
        const r = syscall(NR.mknodat, -100, addr(cstr(path)), kind | (e.mode & 0o7777), dev);
        if (r < 0) throw new CriuError("restore", `${what}: cannot create device node '${e.name}': ${errnoText(-r)}`);
        lchownSync(path, e.uid, e.gid);
        chmodSync(path, e.mode);
        utimesSync(path, e.mtime, e.mtime);
        continue;
      }
      default:
        throw new CriuError("restore", `${what}: tar entry '${e.name}' of type '${e.type}' is not supported`);
    }
  }
  for (const d of dirs.reverse()) utimesSync(d.name ? `${dir}/${d.name}` : dir, d.mtime, d.mtime);
  return entries.length;
}
