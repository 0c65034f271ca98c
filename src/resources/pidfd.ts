// pidfd: a file that names a process (pidfd_open, clone's CLONE_PIDFD). One on a live process of
// the dumped tree comes back as pidfd_open of the same PID (restore keeps PIDs; since Linux 6.9
// every pidfd of one process shares its pidfs inode, as before). One on a process that is gone
// or outside the tree, or a thread pidfd (PIDFD_THREAD), is refused. Image: file_entry.pidfd
// (CRIU 4.2's pidfd_entry: nspid is the PID as the holder sees it).
import type { FdKind } from "./fdkind";
import { FOWN0 } from "./fdkind";
import { NR } from "../sys/nr";
import { O } from "../sys/mem";
import { CriuError } from "../log";
import { refuse } from "./unsupported";
import { errnoText } from "../sys/errno";
import { fd_types } from "../images/schemas";

const PIDFD_THREAD = O.EXCL;

export const pidfdKind: FdKind = {
  name: "pidfd",
  type: fd_types.PIDFD,
  match: (target) => target === "anon_inode:[pidfd]",
  dump(ctx) {
    const pid = Number(ctx.fdinfo["Pid"] ?? NaN);
    if (!Number.isInteger(pid) || pid <= 0) refuse("files", ctx.where, "pidfd", "of a process that is gone");
    if (!ctx.opts.tree.includes(pid)) refuse("files", ctx.where, "pidfd", `of process ${pid}, outside the tree`);
    if (ctx.flags & PIDFD_THREAD) refuse("files", ctx.where, "pidfd", "of a thread (PIDFD_THREAD)");
    const ns = (ctx.fdinfo["NSpid"] ?? String(pid)).split(/\s+/).filter(Boolean);
    const nspid = Number(ns[ns.length - 1]);
    // flags as CRIU writes them, without the access mode (a pidfd is always O_RDWR): CRIU 4.2 passes
    // them to pidfd_open(), which refuses O_RDWR (EINVAL)
    return ctx.files.add(null, (id) => ({
      id,
      type: 20,
      pidfd: { id, ino: Number(ctx.st.ino & 0xffffffffn), flags: ctx.flags & ~3, nspid, fown: FOWN0 },
    }));
  },
  restore(ctx, f) {
    const e = f.pidfd!;
    if (e.nspid <= 0)
      throw new CriuError("restore", `${ctx.where}: pidfd of a process that is gone cannot be restored`);
    const fd = Number(ctx.inj.call(NR.pidfd_open, e.nspid, e.flags & O.NONBLOCK));
    if (fd < 0) throw new CriuError("restore", `${ctx.where}: pidfd_open(${e.nspid}) failed: ${errnoText(-fd)}`);
    return ctx.high(fd, ctx.where);
  },
};
