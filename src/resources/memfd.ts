// memfd: name (from the link "/memfd:NAME (deleted)"), size, seals, contents, and each open
// description's flags and offset. CRIU 4 layout: file_entry.memfd (memfd_file_entry) points at
// a memfd_inode_entry in memfd.img; contents are shmem pages in pagemap-shmem-<shmid>.img
// (vaddr = offset in the file) with bytes in pages-<pages_id>.img; all-zero pages are left out.
// Restore: memfd_create in the target, contents written from criu-bun through /proc/PID/fd/N,
// then F_ADD_SEALS, F_SETFL and lseek.
import type { FdKind, RestoreCtx } from "./fdkind";
import { FOWN0, cachedImage } from "./fdkind";
import { syscall } from "../sys/syscall";
import { NR } from "../sys/nr";
import { O, F } from "../sys/mem";
import { readImage } from "../images/image";
import * as S from "../images/schemas";
import { CriuError } from "../log";
import { dumpShmemContents, fillShmemContents } from "./shmem";
import { refuse } from "./unsupported";
import { isFieldSet } from "@bufbuild/protobuf";
import { errnoText, sysFailed } from "../sys/errno";
import { fd_types } from "../images/schemas";

const F_SEAL_SEAL = 1;
const MFD_CLOEXEC = 1,
  MFD_ALLOW_SEALING = 2;

export const memfdKind: FdKind = {
  name: "memfd",
  type: fd_types.MEMFD,
  match: (target, st) => target.startsWith("/memfd:") && st.isFile(),
  dump(ctx) {
    const ino = Number(ctx.st.ino);
    const m = /^\/memfd:(.*) \(deleted\)$/.exec(ctx.target);
    const name = m ? m[1] : ctx.target.slice(7);
    const key = `memfd:${ctx.st.dev}:${ino}`;
    // restore makes the memfd once per process: the same inode opened by two processes would split
    const seenBy = ctx.files.byKey.get(key);
    if (seenBy !== undefined && seenBy !== ctx.pid)
      refuse("files", ctx.where, "memfd-shared", `'${name}' also opened by process ${seenBy}`);
    // MFD_HUGETLB: a hugetlbfs file (its block size is the huge page size), which memfd_create here would not make
    if (ctx.st.blksize > 4096n)
      refuse("files", ctx.where, "memfd-hugetlb", `'${name}', pages of ${ctx.st.blksize} bytes`);
    if (seenBy === undefined) {
      ctx.files.byKey.set(key, ctx.pid);
      const fd = ctx.grab();
      const seals = syscall(NR.fcntl, fd, F.GET_SEALS);
      if (seals < 0) throw new CriuError("files", sysFailed(ctx.where, "F_GET_SEALS", seals));
      const size = ctx.st.size;
      dumpShmemContents(`/proc/self/fd/${fd}`, size, ino, ctx.images, ctx.where);
      ctx.images.add("memfd.img", "MEMFD_INODE", S.memfd_inode_entrySchema, {
        name,
        uid: Number(ctx.st.uid),
        gid: Number(ctx.st.gid),
        size,
        shmid: ino,
        seals,
        inodeId: BigInt(ino),
        mode: Number(ctx.st.mode), // st_mode, as CRIU 4.2 writes it
      });
    }
    return ctx.files.add(null, (id) => ({
      id,
      type: 18,
      memfd: { id, flags: ctx.flags, pos: ctx.pos, fown: FOWN0, inodeId: ino },
    }));
  },
  precheck(f, dir, where) {
    const ino = f.memfd!.inodeId;
    if (!readImage(dir, "memfd.img", "MEMFD_INODE").some((i) => Number(i.inodeId) === ino))
      throw new CriuError("restore", `${where}: memfd inode ${ino} is not in memfd.img`);
  },
  restore(ctx, f) {
    const e = f.memfd!,
      inj = ctx.inj;
    let base = ctx.state.memfds.get(e.inodeId);
    let fd: number;
    if (base === undefined) {
      const ie = cachedImage(ctx, "memfd.img", "MEMFD_INODE").find((i) => Number(i.inodeId) === e.inodeId)!;
      // CRIU 4.2's hugetlb_flag: memfd_create here would make an ordinary memfd of it
      if (ie.hugetlbFlag)
        throw new CriuError(
          "restore",
          `${ctx.where}: memfd '${ie.name}' of huge pages (hugetlb_flag 0x${ie.hugetlbFlag.toString(16)}) cannot be restored by criu-bun yet`
        );
      const sealable = ie.seals !== F_SEAL_SEAL;
      const r = Number(inj.call(NR.memfd_create, ctx.str(ie.name), MFD_CLOEXEC | (sealable ? MFD_ALLOW_SEALING : 0)));
      if (r < 0) throw new CriuError("restore", `${ctx.where}: memfd_create('${ie.name}') failed: ${errnoText(-r)}`);
      fd = ctx.high(r, ctx.where);
      const t = inj.call(NR.ftruncate, fd, ie.size);
      if (t < 0n)
        throw new CriuError("restore", `${ctx.where}: ftruncate of memfd to ${ie.size} failed: ${errnoText(-t)}`);
      fillMemfd(ctx, fd, ie);
      // owner, then mode (st_mode, in CRIU 4.2's field and criu-bun's): memfd_create makes 0777,
      // owned by whoever restores
      const o = inj.call(NR.fchown, fd, ie.uid, ie.gid);
      if (o < 0n)
        throw new CriuError(
          "restore",
          `${ctx.where}: fchown of memfd '${ie.name}' to ${ie.uid}:${ie.gid} failed: ${errnoText(-o)}`
        );
      if (isFieldSet(ie, S.memfd_inode_entrySchema.field.mode) && (ie.mode & 0o7777) !== 0o777) {
        const c = inj.call(NR.fchmod, fd, ie.mode & 0o7777);
        if (c < 0n)
          throw new CriuError(
            "restore",
            `${ctx.where}: fchmod of memfd '${ie.name}' to 0${(ie.mode & 0o7777).toString(8)} failed: ${errnoText(-c)}`
          );
      }
      if (sealable && ie.seals) {
        const s = inj.call(NR.fcntl, fd, F.ADD_SEALS, ie.seals);
        if (s < 0n)
          throw new CriuError(
            "restore",
            `${ctx.where}: F_ADD_SEALS(0x${ie.seals.toString(16)}) failed: ${errnoText(-s)}`
          );
      }
      ctx.state.memfds.set(e.inodeId, fd);
      ctx.state.closeLater.add(fd);
      base = fd;
    }
    // every description is its own open of the same inode
    const r = Number(
      inj.call(
        NR.openat,
        -100,
        ctx.str(`/proc/self/fd/${base}`),
        (e.flags & ~(O.CLOEXEC | O.CREAT | O.TRUNC | O.EXCL)) | O.CLOEXEC,
        0
      )
    );
    if (r < 0) throw new CriuError("restore", `${ctx.where}: reopening memfd failed: ${errnoText(-r)}`);
    fd = ctx.high(r, ctx.where);
    if (e.pos) inj.call(NR.lseek, fd, e.pos, 0);
    return fd;
  },
};

function fillMemfd(ctx: RestoreCtx, fd: number, ie: S.memfd_inode_entry) {
  fillShmemContents(ctx.dir, ie.shmid, ctx.pid, fd, ie.size, `${ctx.where}: memfd '${ie.name}'`);
}
