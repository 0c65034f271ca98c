// inotify: the watches (fdinfo "inotify wd:W ino:I sdev:D mask:M ignored_mask:X fhandle-bytes:B
// fhandle-type:T f_handle:H", every number in hex, wd too). Dump resolves each file handle to a
// path (open_by_handle_at on a mount of that device, from criu-bun) and keeps it in fh_entry.path;
// events queued and not read yet are refused (they are not saved). Restore adds watches in wd
// order, and re-adds (rm + add) until the kernel's cyclic wd counter gives back the same number.
// A watch on a symlink itself (added with IN_DONT_FOLLOW, which fdinfo does not show) is saved
// without a path, as CRIU 4.2 saves it (CRIU's restore follows a path: the symlink's would give it
// the target's inode, so it fails on the handle instead, as it does on its own image). Restore finds
// the file of a watch without a path through its file handle; a name of a symlink of the watched
// inode in the target is added with IN_DONT_FOLLOW again.
import { readFileSync, readlinkSync, fstatSync } from "../sys/fs";
import type { FdKind } from "./fdkind";
import { FOWN0 } from "./fdkind";
import { syscall, addr, cstr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { closeFd, O, F } from "../sys/mem";
import { CriuError, log } from "../log";
import { refuse } from "./unsupported";
import { errnoText } from "../sys/errno";
import { fd_types } from "../images/schemas";
import { removedFromName } from "../sys/proc";
import type * as S from "../images/schemas";

const FIONREAD = 0x541b;
const IN_DONT_FOLLOW = 0x02000000;
const AT_SYMLINK_NOFOLLOW = 0x100;

interface Wd {
  wd: number;
  ino: bigint;
  sdev: number;
  mask: number;
  ignoredMask: number;
  bytes: number;
  type: number;
  handle: Uint8Array;
}

function parseInotify(text: string): Wd[] {
  const out: Wd[] = [];
  for (const line of text.split("\n")) {
    const m =
      /^inotify wd:([0-9a-f]+) ino:([0-9a-f]+) sdev:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+) fhandle-bytes:([0-9a-f]+) fhandle-type:([0-9a-f]+) f_handle:([0-9a-f]*)/.exec(
        line
      );
    if (!m) continue;
    const hex = m[8];
    const handle = new Uint8Array(hex.length / 2);
    for (let i = 0; i < handle.length; i++) handle[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
    out.push({
      wd: parseInt(m[1], 16),
      ino: BigInt("0x" + m[2]),
      sdev: parseInt(m[3], 16),
      mask: parseInt(m[4], 16),
      ignoredMask: parseInt(m[5], 16),
      bytes: parseInt(m[6], 16),
      type: parseInt(m[7], 16),
      handle,
    });
  }
  return out;
}

/** kernel dev_t (major << 20 | minor) -> a mount point of that device in the process's view */
function mountOf(pid: number, sdev: number): string[] {
  const major = sdev >>> 20,
    minor = sdev & 0xfffff;
  const out: string[] = [];
  for (const line of readFileSync(`/proc/${pid}/mountinfo`, "utf8").split("\n")) {
    const f = line.split(" ");
    if (f[2] === `${major}:${minor}`) out.push(`/proc/${pid}/root${f[4].replace(/\\040/g, " ")}`);
  }
  return out;
}

/** open_by_handle_at of a watch's file handle on a mount of its device in pid's view, then fn on the
 *  O_PATH fd; null when no mount of that device opens it */
function withHandle<T>(pid: number, w: Wd, fn: (fd: number) => T): T | null {
  const fh = new Uint8Array(8 + w.handle.length);
  const dv = new DataView(fh.buffer);
  dv.setUint32(0, w.bytes, true);
  dv.setInt32(4, w.type, true);
  fh.set(w.handle, 8);
  for (const mnt of mountOf(pid, w.sdev)) {
    const mfd = syscall(NR.openat, -100, addr(cstr(mnt)), O.RDONLY | O.DIRECTORY | O.CLOEXEC, 0);
    if (mfd < 0) continue;
    try {
      const fd = syscall(NR.open_by_handle_at, mfd, addr(fh), O.PATH | O.CLOEXEC);
      if (fd < 0) continue;
      try {
        return fn(fd);
      } finally {
        closeFd(fd);
      }
    } finally {
      closeFd(mfd);
    }
  }
  return null;
}

/** The path saved for a watch: its file's name, or undefined for a watch on a symlink itself, for
 *  which CRIU 4.2 saves none (its path would lead CRIU's restore, which follows it, to the symlink's
 *  target: another inode); restore finds that one through the file handle. */
function resolveHandle(pid: number, w: Wd, where: string): string | undefined {
  const got = withHandle(pid, w, (fd) => {
    const p = readlinkSync(`/proc/self/fd/${fd}`);
    const st = fstatSync(fd, { bigint: true });
    if (removedFromName("", p, st)) refuse("files", where, "inotify-deleted", `watch ${w.wd} on '${p.slice(0, -10)}'`);
    const symlink = st.isSymbolicLink();
    if (symlink) log.debug(`${where}: inotify watch ${w.wd} is on the symlink '${p}' itself: saved without a path`);
    return { p: symlink ? undefined : p };
  });
  if (got) return got.p;
  throw new CriuError(
    "files",
    `${where}: cannot find the file of inotify watch ${w.wd} (inode ${w.ino}, device ${w.sdev >>> 20}:${w.sdev & 0xfffff})`
  );
}

/** the path of a watch saved without one, from its file handle (criu-bun's view of the target's mounts) */
function handlePath(pid: number, e: S.inotify_wd_entry, where: string): string {
  const fh = e.fHandle;
  const bytes = fh?.bytes ?? 0;
  if (!fh || bytes <= 0 || bytes > 128 || fh.handle.length * 8 < bytes)
    throw new CriuError("restore", `${where}: inotify watch ${e.wd} has neither a path nor a valid file handle`);
  const raw = new Uint8Array(fh.handle.length * 8);
  const dv = new DataView(raw.buffer);
  fh.handle.forEach((v, i) => dv.setBigUint64(i * 8, BigInt.asUintN(64, BigInt(v)), true));
  const w: Wd = {
    wd: e.wd,
    ino: BigInt(e.iIno),
    sdev: e.sDev,
    mask: e.mask,
    ignoredMask: e.ignoredMask,
    bytes,
    type: fh.type,
    handle: raw.subarray(0, bytes),
  };
  const p = withHandle(pid, w, (fd) => ({
    path: readlinkSync(`/proc/self/fd/${fd}`),
    st: fstatSync(fd, { bigint: true }),
  }));
  if (p === null || removedFromName("", p.path, p.st))
    throw new CriuError(
      "restore",
      `${where}: inotify watch ${e.wd} has no path and its file handle opens no file (inode ${e.iIno}, device ${e.sDev >>> 20}:${e.sDev & 0xfffff})`
    );
  log.debug(`${where}: inotify watch ${e.wd} has no path: its file handle names '${p.path}'`);
  return p.path;
}

function toU64s(b: Uint8Array): bigint[] {
  const p = new Uint8Array(Math.ceil(b.length / 8) * 8);
  p.set(b);
  const dv = new DataView(p.buffer);
  return Array.from({ length: p.length / 8 }, (_, i) => dv.getBigUint64(i * 8, true));
}

export const inotifyKind: FdKind = {
  name: "inotify",
  type: fd_types.INOTIFY,
  match: (target) => target === "anon_inode:inotify",
  dump(ctx) {
    // events queued and not read yet are not saved (a restored instance starts empty): refused;
    // FIONREAD on criu-bun's copy of the fd counts their bytes without reading them
    const queued = new Int32Array(1);
    const q = syscall(NR.ioctl, ctx.grab(), FIONREAD, addr(queued));
    if (q < 0) throw new CriuError("files", `${ctx.where}: FIONREAD on the inotify fd failed: ${errnoText(-q)}`);
    if (queued[0] > 0) refuse("files", ctx.where, "inotify-queued", `${queued[0]} bytes queued`);
    const wds = parseInotify(ctx.fdinfoText).sort((a, b) => a.wd - b.wd);
    return ctx.files.add(null, (id) => ({
      id,
      type: 8,
      ify: {
        id,
        flags: ctx.flags,
        fown: FOWN0,
        wd: wds.map((w) => ({
          id,
          iIno: w.ino,
          mask: w.mask,
          ignoredMask: w.ignoredMask,
          sDev: w.sdev,
          wd: w.wd,
          fHandle: {
            bytes: w.bytes,
            type: w.type,
            handle: toU64s(w.handle),
            path: resolveHandle(ctx.pid, w, ctx.where),
          },
        })),
      },
    }));
  },
  restore(ctx, f) {
    const e = f.ify!,
      inj = ctx.inj;
    const fd = Number(inj.call(NR.inotify_init1, (e.flags & O.NONBLOCK) | O.CLOEXEC));
    if (fd < 0) throw new CriuError("restore", `${ctx.where}: inotify_init1 failed: ${errnoText(-fd)}`);
    let removed = false;
    const done = new Set<number>();
    for (const w of [...e.wd].sort((a, b) => a.wd - b.wd)) {
      // no path (CRIU saves none for a watch on a symlink itself, nor for a file its path does not
      // open): the file handle names the file, opened on a mount of its device in the target's view
      const path = w.fHandle?.path || handlePath(ctx.pid, w, ctx.where);
      const p = ctx.str(path);
      // a watch on a symlink itself: the path names a symlink whose inode is the watched one (in
      // the target's view: lstat there); added without following it. Any other path is the
      // watched file's own name, followed as the kernel would have.
      const stAt = ctx.scratch(0n, new Uint8Array(144));
      const inoAt = (flags: number) => {
        if (inj.call(NR.newfstatat, -100, p, stAt, flags) !== 0n) return null;
        const st = new DataView(ctx.mem.read(stAt, 144).buffer);
        return { mode: st.getUint32(24, true), ino: st.getBigUint64(8, true) };
      };
      const l = inoAt(AT_SYMLINK_NOFOLLOW);
      let mask = w.mask;
      if (l && (l.mode & 0o170000) === 0o120000 && l.ino === w.iIno) {
        mask |= IN_DONT_FOLLOW;
        log.debug(`${ctx.where}: inotify watch ${w.wd} is on the symlink '${path}' itself: added with IN_DONT_FOLLOW`);
      } else if (!w.fHandle?.path && inoAt(0)?.ino !== w.iIno)
        throw new CriuError(
          "restore",
          `${ctx.where}: inotify watch ${w.wd}: its file handle names '${path}', which is not inode ${w.iIno} in the process's view`
        );
      for (let tries = 0; ; tries++) {
        const got = Number(inj.call(NR.inotify_add_watch, fd, p, mask));
        if (got < 0)
          throw new CriuError("restore", `${ctx.where}: inotify_add_watch('${path}') failed: ${errnoText(-got)}`);
        // the kernel gave back a watch restored already: this path reached that watch's inode,
        // whose mask the add just changed (removing it would lose that watch)
        if (done.has(got))
          throw new CriuError(
            "restore",
            `${ctx.where}: inotify watch ${w.wd} on '${path}' reached the inode of watch ${got} (restored already)`
          );
        if (got === w.wd) break;
        if (got > w.wd || tries > 1_000_000)
          throw new CriuError("restore", `${ctx.where}: inotify watch on '${path}' got wd ${got}, wanted ${w.wd}`);
        inj.call(NR.inotify_rm_watch, fd, got);
        removed = true;
      }
      done.add(w.wd);
      log.debug(`${ctx.where}: inotify watch ${w.wd} on '${path}' mask ${w.mask.toString(16)}`);
    }
    if (removed) {
      // each rm_watch queued an IN_IGNORED event: drain them
      inj.call(NR.fcntl, fd, F.SETFL, O.NONBLOCK);
      const buf = ctx.scratch(0n, new Uint8Array(1024));
      while (inj.call(NR.read, fd, buf, 1024) > 0n);
      inj.call(NR.fcntl, fd, F.SETFL, e.flags & O.NONBLOCK);
    }
    return ctx.high(fd, ctx.where);
  },
};
