// Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, shown as "/dev/zero (deleted)"): the
// contents are dumped once per shmem inode into pagemap-shmem-<ino>.img + pages-<N>.img (N from
// the dump's one counter; vaddr = offset in the object, zero pages left out), as CRIU does. At restore the first
// process that maps it creates shared anonymous memory of the right size (an fd on it through
// map_files), fills it and holds it; every other process takes the same object with pidfd_getfd,
// so writes are seen across processes again.
import { existsSync, readFileSync, fstatSync } from "../sys/fs";
import { join } from "../sys/path";
import { openFd, closeFd, O, preadFull, pwriteFull, F } from "../sys/mem";
import { NR } from "../sys/nr";
import { readImage, pagemapNrPages } from "../images/image";
import * as S from "../images/schemas";
import type { ImageSink, TreeFiles } from "./fdkind";
import type { Injector } from "../ptrace/inject";
import { CriuError, log } from "../log";
import { errnoText } from "../sys/errno";

const PAGE = 4096;

/**
 * The contents of a shmem object (shared anonymous memory, memfd ...), read through `path`, as
 * CRIU stores them: pagemap-shmem-<id>.img (vaddr = offset, zero pages left out) + pages-<N>.img
 * (N a number of the dump's own, named in the pagemap's head).
 */
export function dumpShmemContents(path: string, size: bigint, id: number, images: ImageSink, where: string) {
  const fd = openFd(path, O.RDONLY | O.CLOEXEC);
  try {
    const runs: { vaddr: bigint; nrPages: number }[] = [];
    const buf = new Uint8Array(1 << 20);
    const u32 = new Uint32Array(buf.buffer);
    const file = `pagemap-shmem-${id}.img`;
    if (images.has(file))
      throw new CriuError(
        "dump",
        `${where}: two shared memory objects have id ${id} (pagemap-shmem-${id}.img), which CRIU's images cannot tell apart`
      );
    const pagesId = images.pagesId();
    images.add(file, "PAGEMAP", S.pagemap_headSchema, { pagesId });
    images.raw(`pages-${pagesId}.img`, new Uint8Array(0)); // exists even when every page is zero
    for (let off = 0n; off < size; off += BigInt(buf.length)) {
      const want = Number(size - off < BigInt(buf.length) ? size - off : BigInt(buf.length));
      buf.fill(0);
      preadFull(fd, buf, off, want, 0, `${where}: reading shared memory`);
      for (let p = 0; p * PAGE < want; p++) {
        let zero = true;
        for (let i = p * 1024; i < (p + 1) * 1024; i++)
          if (u32[i]) {
            zero = false;
            break;
          }
        if (zero) continue;
        const va = off + BigInt(p * PAGE);
        const last = runs[runs.length - 1];
        if (last && last.vaddr + BigInt(last.nrPages * PAGE) === va) last.nrPages++;
        else runs.push({ vaddr: va, nrPages: 1 });
        images.raw(`pages-${pagesId}.img`, buf.slice(p * PAGE, (p + 1) * PAGE));
      }
    }
    for (const r of runs)
      images.add(file, "PAGEMAP", S.pagemap_entrySchema, {
        vaddr: r.vaddr,
        compatNrPages: r.nrPages,
        nrPages: BigInt(r.nrPages),
        flags: 4,
      });
  } finally {
    closeFd(fd);
  }
}

/**
 * The saved contents of shmem object `id` (pagemap-shmem-<id>.img and the pages file its head
 * names), checked against an object of `size` bytes: each run's place in the object and in the pages
 * file (strict: a run past the end is refused; else it is cut there, as CRIU reads shared anonymous
 * memory, whose object may be larger than what is still mapped). Undefined when the object has no
 * pagemap (criu-bun's older dumps of an all-zero object).
 */
export function shmemRuns(
  dir: string,
  id: number | bigint,
  size: bigint,
  where: string,
  strict = false
): { pages: Uint8Array; runs: { vaddr: bigint; off: number; len: number }[] } | undefined {
  const pm = `pagemap-shmem-${id}.img`;
  if (!existsSync(join(dir, pm))) return undefined;
  const items = readImage(dir, pm, "PAGEMAP");
  const pagesFile = `pages-${(items[0] as S.pagemap_head | undefined)?.pagesId}.img`;
  if (!items.length || !existsSync(join(dir, pagesFile)))
    throw new CriuError("restore", `${where}: ${pm} names ${pagesFile}, which is missing`);
  const pages = readFileSync(join(dir, pagesFile));
  const limit = (size + BigInt(PAGE - 1)) & ~BigInt(PAGE - 1);
  const runs: { vaddr: bigint; off: number; len: number }[] = [];
  let off = 0;
  for (const e of items.slice(1) as S.pagemap_entry[]) {
    const len = pagemapNrPages(e) * PAGE;
    if (e.flags !== 4 /* PE_PRESENT */)
      throw new CriuError(
        "restore",
        `${where}: ${pm}: a run at offset ${e.vaddr} has flags ${e.flags} (only present pages are read for shared memory)`
      );
    if (e.vaddr % BigInt(PAGE) || (strict && e.vaddr + BigInt(len) > limit))
      throw new CriuError(
        "restore",
        `${where}: ${pm}: a run of ${len / PAGE} pages at offset ${e.vaddr} lies outside the object's ${size} bytes`
      );
    if (off + len > pages.length) throw new CriuError("restore", `${where}: ${pagesFile} is truncated`);
    if (e.vaddr < limit)
      runs.push({ vaddr: e.vaddr, off, len: e.vaddr + BigInt(len) > limit ? Number(limit - e.vaddr) : len });
    off += len;
  }
  return { pages, runs };
}

/** Write the saved contents of shmem object `id` into the target's fd (through /proc), up to size. */
export function fillShmemContents(
  dir: string,
  id: number | bigint,
  pid: number,
  fd: number,
  size: bigint,
  where: string
) {
  const saved = shmemRuns(dir, id, size, where);
  if (!saved) return;
  const wfd = openFd(`/proc/${pid}/fd/${fd}`, O.RDWR | O.CLOEXEC);
  try {
    for (const r of saved.runs) {
      const end = r.vaddr + BigInt(r.len) > size ? Number(size - r.vaddr) : r.len;
      pwriteFull(wfd, saved.pages, r.vaddr, end, r.off, `${where}: writing shared memory contents`);
    }
  } finally {
    closeFd(wfd);
  }
}

/** MAP_SHARED anonymous memory attached at start..end in process pid. */
export function dumpShmem(pid: number, start: bigint, end: bigint, ino: number, images: ImageSink) {
  const path = `/proc/${pid}/map_files/${start.toString(16)}-${end.toString(16)}`;
  const fd = openFd(path, O.RDONLY | O.CLOEXEC);
  let size: bigint;
  try {
    size = BigInt(fstatSync(fd).size);
  } finally {
    closeFd(fd);
  }
  dumpShmemContents(path, size, ino, images, `process ${pid}`);
}

/** The shared object for shmid in this process (created and filled here, or taken from the holder). */
export function shmemFd(o: {
  pid: number;
  inj: Injector;
  dir: string;
  tree: TreeFiles;
  shmid: bigint;
  size: bigint;
  /** object sizes the images name, by shmid (RestoreSet.shmemSizes) */
  namedSizes?: Map<bigint, bigint>;
  /** the held fd goes at or above this number, clear of the fds the process will get back */
  floor: number;
  vpid: number;
  str: (s: string) => bigint;
  importFd: (owner: { pid: number; vpid?: number; fd: number }) => number;
}): { fd: number; own: boolean } {
  const key = `shmem:${o.shmid}` as const;
  const held = o.tree.held.get(key);
  if (held) return { fd: o.importFd(held), own: held.pid === o.pid };
  // the size the images name (CRIU's memfd inode: anonFromCriuMemfd), when larger than the VMAs' reach
  const named = o.namedSizes?.get(o.shmid);
  const want = named !== undefined && named > o.size ? named : o.size;
  const size = (want + BigInt(PAGE - 1)) & ~BigInt(PAGE - 1);
  // made as the process made it, shared anonymous memory (the kernel's "/dev/zero" object, which
  // maps and map_files show as "/dev/zero (deleted)" and a later dump takes for what it is, not a
  // memfd): a PROT_NONE MAP_SHARED|MAP_ANONYMOUS mapping of its size, opened through
  // /proc/self/map_files, unmapped again
  const fail = (what: string, r: bigint | number) =>
    new CriuError("restore", `process ${o.pid}: ${what} for shared memory ${o.shmid} failed: ${errnoText(-Number(r))}`);
  const at = o.inj.call(NR.mmap, 0, size, 0, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (at < 0n && at > -4096n) throw fail("mmap", at);
  const end = at + size;
  const low = Number(
    o.inj.call(
      NR.openat,
      -100,
      o.str(`/proc/self/map_files/${at.toString(16)}-${end.toString(16)}`),
      O.RDWR | O.CLOEXEC,
      0
    )
  );
  const un = o.inj.call(NR.munmap, at, size);
  if (low < 0) throw fail("opening it through /proc/self/map_files", low);
  if (un !== 0n) throw fail("munmap", un);
  const fd = Number(o.inj.call(NR.fcntl, low, F.DUPFD_CLOEXEC, o.floor));
  o.inj.call(NR.close, low);
  if (fd < 0) throw new CriuError("restore", `process ${o.pid}: moving shared memory fd failed: ${errnoText(-fd)}`);
  fillShmemContents(o.dir, o.shmid, o.pid, fd, size, `process ${o.pid}: shared memory ${o.shmid}`);
  o.tree.held.set(key, { pid: o.pid, vpid: o.vpid, fd });
  const l = o.tree.toClose.get(o.pid) ?? [];
  l.push(fd);
  o.tree.toClose.set(o.pid, l);
  return { fd, own: true };
}

const VMA_ANON_SHARED = 1 << 8,
  VMA_FILE_SHARED = 1 << 7,
  VMA_AREA_MEMFD = 1 << 14,
  VMA_AREA_REGULAR = 1,
  MAP_SHARED = 1,
  MAP_ANONYMOUS = 0x20;

/**
 * CRIU 4.2 dumps MAP_SHARED anonymous memory (and MAP_SHARED mappings of /dev/zero, the same
 * kernel object) on this kernel as a memfd mapping: status VMA_FILE_SHARED | VMA_AREA_MEMFD, shmid
 * a MEMFD file of files.img whose inode (memfd.img) is named "/dev/zero" (the map_files link of
 * shared anonymous memory is "/dev/zero (deleted)"; a memfd's is "/memfd:NAME (deleted)") and has
 * its pages in pagemap-shmem-<inode shmid>.img. Such a VMA is read here as the shared anonymous
 * memory it is (VMA_ANON_SHARED, shmid the inode's, as CRIU's and criu-bun's own images of it
 * have), so it is restored as those are: one object for every process that maps the inode, its
 * size the inode's (into `sizes`, by shmid). Other memfd mappings stay as they are (the restore
 * refuses them). The count of VMAs read so.
 */
export function anonFromCriuMemfd(
  file: string,
  mm: S.mm_entry | undefined,
  files: Map<number, S.file_entry>,
  inodes: () => S.memfd_inode_entry[],
  sizes: Map<bigint, bigint>
): number {
  let n = 0;
  for (const v of mm?.vmas ?? []) {
    if (!(v.status & VMA_AREA_MEMFD) || !(v.flags & MAP_SHARED)) continue;
    const f = files.get(Number(v.shmid))?.memfd;
    if (!f) continue;
    const ino = inodes().find((i) => i.inodeId === BigInt(f.inodeId));
    if (!ino || ino.name !== "/dev/zero") continue;
    const was = v.status;
    v.status = (VMA_AREA_REGULAR | VMA_ANON_SHARED | (v.status & ~(VMA_AREA_MEMFD | VMA_FILE_SHARED))) >>> 0;
    v.flags |= MAP_ANONYMOUS;
    v.shmid = BigInt(ino.shmid);
    sizes.set(v.shmid, ino.size);
    log.debug(
      `${file}: VMA 0x${v.start.toString(16)}-0x${v.end.toString(16)} (status 0x${was.toString(16)}, memfd file ${f.id} of inode "/dev/zero" ${ino.shmid}, ${ino.size} bytes) is shared anonymous memory: read as VMA_ANON_SHARED shmid ${ino.shmid}`
    );
    n++;
  }
  return n;
}
