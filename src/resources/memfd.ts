// memfd: name (from the link "/memfd:NAME (deleted)"), size, seals, contents, and each open
// description's flags and offset. CRIU 4 layout: file_entry.memfd (memfd_file_entry) points at
// a memfd_inode_entry in memfd.img; contents are shmem pages in pagemap-shmem-<shmid>.img
// (vaddr = offset in the file) with bytes in pages-<pages_id>.img; all-zero pages are left out.
// Restore: memfd_create in the target, contents written from criu-bun through /proc/PID/fd/N,
// then F_ADD_SEALS, F_SETFL and lseek.
import { readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import type { FdKind, RestoreCtx } from "./fdkind";
import { FOWN0, cachedImage } from "./fdkind";
import { syscall } from "../sys/syscall";
import { NR } from "../sys/nr";
import { openFd, closeFd, O, preadFull, pwriteFull } from "../sys/mem";
import { readImage, pagemapNrPages } from "../images/image";
import * as S from "../images/schemas";
import { CriuError } from "../log";

const F_ADD_SEALS = 1033, F_GET_SEALS = 1034, F_SEAL_SEAL = 1;
const MFD_CLOEXEC = 1, MFD_ALLOW_SEALING = 2;
const PAGE = 4096;

export const memfdKind: FdKind = {
  name: "memfd",
  type: 18,
  match: (target, st) => target.startsWith("/memfd:") && st.isFile(),
  dump(ctx) {
    const ino = Number(ctx.st.ino);
    const m = /^\/memfd:(.*) \(deleted\)$/.exec(ctx.target);
    const name = m ? m[1] : ctx.target.slice(7);
    const key = `memfd:${ctx.st.dev}:${ino}`;
    if (!ctx.files.byKey.has(key)) {
      ctx.files.byKey.set(key, 0);
      const fd = ctx.grab();
      const seals = syscall(NR.fcntl, fd, F_GET_SEALS);
      if (seals < 0) throw new CriuError("files", `${ctx.where}: F_GET_SEALS failed (${-seals})`);
      const size = ctx.st.size;
      const rfd = openFd(`/proc/self/fd/${fd}`, O.RDONLY | O.CLOEXEC);
      const runs: { vaddr: bigint; nrPages: number }[] = [];
      const chunks: Uint8Array[] = [];
      try {
        const buf = new Uint8Array(PAGE);
        for (let off = 0n; off < size; off += BigInt(PAGE)) {
          buf.fill(0);
          const want = Number(size - off < BigInt(PAGE) ? size - off : BigInt(PAGE));
          preadFull(rfd, buf, off, want, 0, `${ctx.where}: reading memfd`);
          if (buf.every((b) => b === 0)) continue;
          const last = runs[runs.length - 1];
          if (last && last.vaddr + BigInt(last.nrPages * PAGE) === off) last.nrPages++;
          else runs.push({ vaddr: off, nrPages: 1 });
          chunks.push(buf.slice());
        }
      } finally { closeFd(rfd); }
      const pagesId = ino;
      ctx.images.add(`pagemap-shmem-${ino}.img`, "PAGEMAP", S.pagemap_headSchema, { pagesId });
      for (const r of runs) ctx.images.add(`pagemap-shmem-${ino}.img`, "PAGEMAP", S.pagemap_entrySchema, { vaddr: r.vaddr, compatNrPages: r.nrPages, nrPages: BigInt(r.nrPages), flags: 4 /* PE_PRESENT */ });
      for (const c of chunks) ctx.images.raw(`pages-${pagesId}.img`, c);
      if (!chunks.length) ctx.images.raw(`pages-${pagesId}.img`, new Uint8Array(0));
      ctx.images.add("memfd.img", "MEMFD_INODE", S.memfd_inode_entrySchema, {
        name, uid: Number(ctx.st.uid), gid: Number(ctx.st.gid), size, shmid: ino, seals, inodeId: BigInt(ino),
      });
    }
    return ctx.files.add(null, (id) => ({ id, type: 18, memfd: { id, flags: ctx.flags, pos: ctx.pos, fown: FOWN0, inodeId: ino } }));
  },
  precheck(f, dir, where) {
    const ino = f.memfd!.inodeId;
    if (!readImage<S.memfd_inode_entry>(dir, "memfd.img", "MEMFD_INODE").some((i) => Number(i.inodeId) === ino))
      throw new CriuError("restore", `${where}: memfd inode ${ino} is not in memfd.img`);
  },
  restore(ctx, f) {
    const e = f.memfd!, inj = ctx.inj;
    const key = `memfd:${e.inodeId}`;
    let base = ctx.state.get(key) as number | undefined;
    let fd: number;
    if (base === undefined) {
      const ie = cachedImage<S.memfd_inode_entry>(ctx, "memfd.img", "MEMFD_INODE").find((i) => Number(i.inodeId) === e.inodeId)!;
      const sealable = ie.seals !== F_SEAL_SEAL;
      const r = Number(inj.call(NR.memfd_create, ctx.str(ie.name), MFD_CLOEXEC | (sealable ? MFD_ALLOW_SEALING : 0)));
      if (r < 0) throw new CriuError("restore", `${ctx.where}: memfd_create('${ie.name}') failed (errno ${-r})`);
      fd = ctx.high(r, ctx.where);
      const t = inj.call(NR.ftruncate, fd, ie.size);
      if (t < 0n) throw new CriuError("restore", `${ctx.where}: ftruncate of memfd to ${ie.size} failed (errno ${-t})`);
      fillMemfd(ctx, fd, ie);
      if (sealable && ie.seals) {
        const s = inj.call(NR.fcntl, fd, F_ADD_SEALS, ie.seals);
        if (s < 0n) throw new CriuError("restore", `${ctx.where}: F_ADD_SEALS(0x${ie.seals.toString(16)}) failed (errno ${-s})`);
      }
      ctx.state.set(key, fd);
      (ctx.state.get("closeLater") as Set<number>).add(fd);
      base = fd;
    }
    // every description is its own open of the same inode
    const r = Number(inj.call(NR.openat, -100, ctx.str(`/proc/self/fd/${base}`), (e.flags & ~(O.CLOEXEC | O.CREAT | O.TRUNC | O.EXCL)) | O.CLOEXEC, 0));
    if (r < 0) throw new CriuError("restore", `${ctx.where}: reopening memfd failed (errno ${-r})`);
    fd = ctx.high(r, ctx.where);
    if (e.pos) inj.call(NR.lseek, fd, e.pos, 0);
    return fd;
  },
};

function fillMemfd(ctx: RestoreCtx, fd: number, ie: S.memfd_inode_entry) {
  const pm = `pagemap-shmem-${ie.shmid}.img`;
  if (!existsSync(join(ctx.dir, pm))) return;
  const items = readImage<any>(ctx.dir, pm, "PAGEMAP");
  const pages = readFileSync(join(ctx.dir, `pages-${items[0].pagesId}.img`));
  const wfd = openFd(`/proc/${ctx.pid}/fd/${fd}`, O.RDWR | O.CLOEXEC);
  try {
    let off = 0;
    for (const e of items.slice(1) as S.pagemap_entry[]) {
      const len = pagemapNrPages(e) * PAGE;
      const end = e.vaddr + BigInt(len) > ie.size ? Number(ie.size - e.vaddr) : len;
      if (off + len > pages.length) throw new CriuError("restore", `${ctx.where}: pages of memfd '${ie.name}' are truncated`);
      pwriteFull(wfd, pages, e.vaddr, end, off, `${ctx.where}: writing memfd contents`);
      off += len;
    }
  } finally { closeFd(wfd); }
}
