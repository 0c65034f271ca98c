// SysV shared memory segments that dumped processes have attached (maps show "/SYSV<key>
// (deleted)", inode = shmid). Each segment is saved once, as CRIU 4 saves it: an ipc_shm_entry with
// in_pagemaps in ipcns-shm-<ns id>.img, its contents in pagemap-shmem-<shmid>.img + a pages file
// (offsets in the segment, zero pages left out); each mapping is a VMA with VMA_ANON_SHARED |
// VMA_AREA_SYSVIPC, MAP_SHARED | MAP_ANONYMOUS, shmid = the segment's id, fdflags O_RDWR when it
// may be written (VM_MAYWRITE), O_RDONLY for a SHM_RDONLY attach. Restore also reads CRIU's older
// form (contents right after each entry, padded to 4 bytes). It recreates the segment with the same
// id (kernel.shm_next_id), key, mode, owner, creator and contents, every process shmat()s it at its old
// address (task.ts), and a segment that was marked for removal (IPC_RMID) is removed again once
// everyone is attached. In a tree's own IPC namespace the segments no process of the tree has
// attached are saved too, the same way (CRIU 4 saves every segment of the namespace): ipcns.ts
// asks for them (looseSegments, dumpLooseSegments); the creator (cuid/cgid) is made again by
// creating each segment with those effective ids. Refused at dump: a segment locked in memory
// (SHM_LOCK: CRIU's restore drops the lock), and of the unattached ones a segment marked for
// removal (attached only outside the tree), one of huge pages, and any while kernel.shm_rmid_forced
// is 1 (attaching one to read it would destroy it at the detach).
import { readFileSync, writeFileSync, fstatSync, statSync } from "../sys/fs";
import { syscall } from "../sys/syscall";
import { openFd, closeFd, O } from "../sys/mem";
import { withShmBytes, setShmOwner } from "../sys/shm";
import { asCreator, withShmAttachedRO } from "../sys/sysvipc";
import { refuse } from "./unsupported";
import { dumpShmemContents, shmemRuns, dumpShmem } from "./shmem";
import { withNs } from "../sys/netns";
import { VMA } from "./vma";
import type { DumpedVma } from "./memory";
import type { ImageSink } from "./fdkind";
import * as S from "../images/schemas";
import { readImagePayloads, imageExists } from "../images/image";
import { CriuError, log } from "../log";
import { sysFailed } from "../sys/errno";
import { NR } from "../sys/nr";

const SHM = { get: NR.shmget, at: NR.shmat, ctl: NR.shmctl, dt: NR.shmdt } as const;
const IPC_CREAT = 0o1000,
  IPC_EXCL = 0o2000,
  IPC_RMID = 0,
  SHM_DEST = 0o1000,
  SHM_LOCKED = 0o2000;
const SHM_IMAGE = "ipcns-shm-1.img";
/** the segments' image: CRIU's ipcns-shm-<ns id>.img for a tree's own IPC namespace, ipcns-shm-1.img
 *  (criu-bun's own) for segments of the namespace criu-bun shares with the tree, which CRIU does not dump */
function shmImage(ownNsId?: number): string {
  return ownNsId ? `ipcns-shm-${ownNsId}.img` : SHM_IMAGE;
}

interface SegInfo {
  key: number;
  id: number;
  mode: number;
  size: bigint;
  nattch: number;
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
}

/** /proc/sysvipc/shm rows of this IPC namespace. */
function segments(): Map<number, SegInfo> {
  const out = new Map<number, SegInfo>();
  for (const l of readFileSync("/proc/sysvipc/shm", "latin1").split("\n").slice(1)) {
    const f = l.trim().split(/\s+/);
    if (f.length < 11) continue;
    out.set(Number(f[1]), {
      key: Number(f[0]) >>> 0,
      id: Number(f[1]),
      mode: parseInt(f[2], 8),
      size: BigInt(f[3]),
      nattch: Number(f[6]),
      uid: Number(f[7]),
      gid: Number(f[8]),
      cuid: Number(f[9]),
      cgid: Number(f[10]),
    });
  }
  return out;
}

/** Save the segment attached at start..end in process pid (the caller does it once per shmid). */
/**
 * The shared memory a process maps, each segment or object once per dump: SysV segments (their
 * contents and attributes in FILE, read in the process's IPC namespace) and shared anonymous
 * memory (pagemap-shmem-N.img); each VMA gets its shmid (and a SysV one its open flags).
 */
export function dumpSharedVmas(pid: number, vmas: DumpedVma[], extra: ImageSink, ownNsId?: number) {
  const file = shmImage(ownNsId);
  for (const v of vmas) {
    if (v.status & VMA.SYSVIPC) {
      v.shmid = BigInt(v.inode);
      // as CRIU: O_RDWR when the mapping may be written (the segment is attached writable), else O_RDONLY
      v.fdflags = v.mayWrite ? 2 /* O_RDWR */ : 0;
      if (!extra.has(`sysv:${v.inode}`)) {
        withNs(pid, "ipc", () => dumpSysvShm(pid, v.start, v.end, v.inode, extra, file));
        extra.mark(`sysv:${v.inode}`);
      }
    } else if (v.status & VMA.ANON_SHARED) {
      v.shmid = BigInt(v.inode);
      if (extra.has(`sysv:${v.inode}`))
        throw new CriuError(
          "dump",
          `process ${pid}: shared memory at 0x${v.start.toString(16)} has the id of SysV segment ${v.inode} (pagemap-shmem-${v.inode}.img), which CRIU's images cannot tell apart`
        );
      if (!extra.has(`pagemap-shmem-${v.inode}.img`)) dumpShmem(pid, v.start, v.end, v.inode, extra);
    }
  }
}

/**
 * Once every process's VMAs are known, for a tree without an IPC namespace of its own: each SysV
 * segment it attached is attached by nobody else (the kernel counts an attach per VMA, split
 * mappings and forks included). One attached outside too is refused: the restore makes the segment
 * again, and a process outside the tree would keep the old one, no longer shared with the tree.
 * (CRIU 4.2 refuses every SysV mapping of a tree in the host's IPC namespace.)
 */
export function checkHostSysvAttaches(procs: { pid: number; vmas: DumpedVma[] }[]) {
  const mine = new Map<number, { pid: number; n: number }>();
  for (const p of procs)
    for (const v of p.vmas)
      if (v.status & VMA.SYSVIPC) {
        const m = mine.get(v.inode) ?? { pid: p.pid, n: 0 };
        m.n++;
        mine.set(v.inode, m);
      }
  if (!mine.size) return;
  const live = segments();
  for (const [id, m] of mine) {
    const seg = live.get(id);
    if (seg && seg.nattch > m.n)
      refuse(
        "dump",
        `process ${m.pid}`,
        "sysv-shared-outside",
        `segment ${id}, key 0x${seg.key.toString(16)}: ${seg.nattch} attaches, ${m.n} of them in the tree`
      );
    log.debug(`SysV shared memory ${id}: its ${m.n} attaches are all the tree's`);
  }
}

function dumpSysvShm(pid: number, start: bigint, end: bigint, shmid: number, images: ImageSink, file = SHM_IMAGE) {
  const seg = segments().get(shmid);
  if (!seg)
    throw new CriuError(
      "mem",
      `process ${pid}: SysV shared memory ${shmid} at 0x${start.toString(16)} is not in /proc/sysvipc/shm (another IPC namespace?)`
    );
  const path = `/proc/${pid}/map_files/${start.toString(16)}-${end.toString(16)}`;
  const fd = openFd(path, O.RDONLY | O.CLOEXEC);
  try {
    if (BigInt(fstatSync(fd).size) < seg.size)
      throw new CriuError("mem", `process ${pid}: SysV segment ${shmid} is smaller than /proc says`);
  } finally {
    closeFd(fd);
  }
  if (seg.mode & SHM_LOCKED)
    refuse(
      "dump",
      `process ${pid}`,
      "ipcns-objects",
      `SysV shared memory segment ${shmid} is locked in memory (SHM_LOCK)`
    );
  saveSegment(seg, path, images, file, `process ${pid}: SysV shared memory ${shmid}`);
}

/** The segment's entry (in_pagemaps, as CRIU 4) and its contents, read through PATH (a mapping of it). */
function saveSegment(seg: SegInfo, path: string, images: ImageSink, file: string, where: string) {
  images.add(
    file,
    "IPCNS_SHM",
    S.ipc_shm_entrySchema,
    {
      desc: { key: seg.key, uid: seg.uid, gid: seg.gid, cuid: seg.cuid, cgid: seg.cgid, mode: seg.mode, id: seg.id },
      size: seg.size,
      inPagemaps: true,
    },
    new Uint8Array(0)
  ); // no contents after the entry: they are in the pagemap
  dumpShmemContents(path, seg.size, seg.id, images, where);
  log.debug(
    `${where} (key 0x${seg.key.toString(16)}, ${seg.size} bytes, mode 0${seg.mode.toString(8)}, owner ${seg.uid}:${seg.gid}, creator ${seg.cuid}:${seg.cgid}) saved in ${file} and pagemap-shmem-${seg.id}.img`
  );
}

/** The SysV segments the processes PIDS attach (maps: "/SYSV<key> (deleted)", inode = shmid). */
function treeAttached(pids: number[]): Set<number> {
  const out = new Set<number>();
  for (const p of pids)
    for (const l of readFileSync(`/proc/${p}/maps`, "latin1").split("\n")) {
      const f = l.split(/\s+/);
      if (f[5]?.startsWith("/SYSV")) out.add(Number(f[4]));
    }
  return out;
}

/**
 * In the tree's own IPC namespace (the caller is in it): the segments no process of PIDS has
 * attached, after the refusals (a segment locked in memory, attached or not; an unattached one
 * marked for removal; any unattached one while kernel.shm_rmid_forced is 1).
 */
export function looseSegments(root: number, pids: number[], rmidForced: boolean): SegInfo[] {
  const attached = treeAttached(pids);
  const out: SegInfo[] = [];
  for (const s of segments().values()) {
    const what = `SysV shared memory segment ${s.id}`;
    if (s.mode & SHM_LOCKED)
      refuse("dump", `process ${root}`, "ipcns-objects", `${what} is locked in memory (SHM_LOCK)`);
    if (attached.has(s.id)) continue;
    if (s.mode & SHM_DEST)
      refuse(
        "dump",
        `process ${root}`,
        "ipcns-objects",
        `${what} is marked for removal and attached only outside the tree`
      );
    if (rmidForced)
      refuse(
        "dump",
        `process ${root}`,
        "ipcns-objects",
        `${what} is attached by no process of the tree and kernel.shm_rmid_forced is 1: reading it would destroy it`
      );
    out.push(s);
  }
  return out;
}

/** Save each of SEGS (looseSegments) in ipcns-shm-NSID.img: attached here read-only to read it. */
export function dumpLooseSegments(root: number, segs: SegInfo[], images: ImageSink, nsId: number) {
  for (const s of segs)
    withShmAttachedRO(s.id, (addr) => {
      const end = addr + ((s.size + 4095n) & ~4095n);
      const path = `/proc/self/map_files/${addr.toString(16)}-${end.toString(16)}`;
      if (statSync(path).blksize > 4096)
        refuse("dump", `process ${root}`, "ipcns-objects", `SysV shared memory segment ${s.id} is of huge pages`);
      saveSegment(
        s,
        path,
        images,
        shmImage(nsId),
        `process ${root}: SysV shared memory ${s.id} (attached by no process of the tree)`
      );
      images.mark(`sysv:${s.id}`);
    });
}

/** Before any process exists: make every saved segment exist again with its id, owner and contents. */
function restoreSysvShm(dir: string, file = SHM_IMAGE): { id: number; dest: boolean }[] {
  if (!imageExists(dir, file)) return [];
  const out: { id: number; dest: boolean }[] = [];
  const live = segments();
  const items = readImagePayloads(dir, file, "IPCNS_SHM");
  // everything is read and checked before the first segment is made
  const contents = items.map(({ msg, payload }) => {
    const where = `${file}: SysV shared memory ${msg.desc!.id}`;
    if (msg.desc!.mode & SHM_LOCKED)
      throw new CriuError(
        "restore",
        `${where}: locked in memory (SHM_LOCKED, mode 0${msg.desc!.mode.toString(8)}): criu-bun does not restore the lock`
      );
    if (msg.hugetlbFlag)
      throw new CriuError(
        "restore",
        `${where}: a hugetlb segment (hugetlb_flag 0x${msg.hugetlbFlag.toString(16)}) cannot be restored by criu-bun yet`
      );
    if (!msg.inPagemaps) return { raw: payload.subarray(0, Number(msg.size)) };
    const saved = shmemRuns(dir, msg.desc!.id, msg.size, where, true);
    if (!saved)
      throw new CriuError(
        "restore",
        `${where}: its contents are in pagemaps (in_pagemaps), but pagemap-shmem-${msg.desc!.id}.img is missing`
      );
    return { saved };
  });
  try {
    for (const [i, { msg }] of items.entries()) {
      const d = msg.desc!;
      const old = live.get(d.id);
      if (old) {
        if (old.nattch > 0)
          throw new CriuError(
            "restore",
            `SysV shared memory ${d.id} exists and is attached by ${old.nattch} process(es)`
          );
        // left over from the dumped tree (same key, size and creator): replaced with the image;
        // another segment that took the id since is someone else's
        if (old.key !== d.key >>> 0 || old.size !== msg.size || old.cuid !== d.cuid || old.cgid !== d.cgid)
          throw new CriuError(
            "restore",
            `SysV shared memory ${d.id} exists and is another segment (key 0x${old.key.toString(16)}, ${old.size} bytes, creator ${old.cuid}:${old.cgid}; the image's: key 0x${(d.key >>> 0).toString(16)}, ${msg.size} bytes, creator ${d.cuid}:${d.cgid})`
          );
        syscall(SHM.ctl, d.id, IPC_RMID, 0);
      }
      writeFileSync("/proc/sys/kernel/shm_next_id", String(d.id));
      // made with the creator's effective ids: they become its cuid/cgid
      const id = asCreator(d.cuid, d.cgid, () =>
        syscall(SHM.get, d.key, Number(msg.size), IPC_CREAT | IPC_EXCL | (d.mode & 0o777))
      ); // resets shm_next_id
      if (id < 0)
        throw new CriuError(
          "restore",
          sysFailed(`${file}: SysV shared memory ${d.id}`, `shmget (key 0x${d.key.toString(16)})`, id)
        );
      if (id !== d.id) {
        syscall(SHM.ctl, id, IPC_RMID, 0);
        throw new CriuError("restore", `SysV shared memory came back as ${id}, not ${d.id}`);
      }
      out.push({ id, dest: (d.mode & SHM_DEST) !== 0 });
      const e = setShmOwner(id, d.uid, d.gid);
      if (e)
        throw new CriuError(
          "restore",
          sysFailed(`${file}: SysV shared memory ${id}`, `IPC_SET of its owner to ${d.uid}:${d.gid}`, e)
        );
      withShmBytes(id, Number(msg.size), (mem) => {
        const c = contents[i];
        if (c.raw) mem.set(c.raw);
        else
          for (const r of c.saved!.runs) {
            const len = r.vaddr + BigInt(r.len) > msg.size ? Number(msg.size - r.vaddr) : r.len;
            mem.set(c.saved!.pages.subarray(r.off, r.off + len), Number(r.vaddr));
          }
      });
      log.info(
        `SysV shared memory ${id} recreated (${msg.size} bytes${msg.inPagemaps ? `, ${contents[i].saved!.runs.reduce((n, r) => n + r.len, 0) / 4096} pages from pagemap-shmem-${id}.img` : ""})`
      );
    }
  } catch (e) {
    dropSysvShm(out);
    throw e;
  }
  return out;
}

/** After every process is attached: segments that were marked for removal are marked again. */
function finishSysvShm(segs: { id: number; dest: boolean }[]) {
  for (const s of segs) if (s.dest) syscall(SHM.ctl, s.id, IPC_RMID, 0);
}

/** Undo on a failed restore. */
function dropSysvShm(segs: { id: number }[]) {
  for (const s of segs) syscall(SHM.ctl, s.id, IPC_RMID, 0);
}

/**
 * The tree's SysV segments at restore: made before anything attaches them, in this IPC namespace
 * (inHost) or in the tree's new one once its root exists (inNewNs); marked for removal again after
 * the last attach (finish); removed when the restore fails (drop: a new IPC namespace takes its
 * own along).
 */
export class SysvShmRestore {
  private segs: { id: number; dest: boolean }[] = [];
  /** newNs: the tree has its own IPC namespace, nsId its id in the images (its ipcns-shm-ID.img) */
  constructor(
    private dir: string,
    private newNs: boolean,
    private nsId?: number
  ) {}
  /** before any process exists, when the tree shares this IPC namespace */
  inHost() {
    if (!this.newNs) this.segs = restoreSysvShm(this.dir);
  }
  /** in the tree's new IPC namespace (enter runs fn there), before any process attaches */
  inNewNs(enter: <T>(fn: () => T) => T) {
    const file = shmImage(this.nsId);
    this.segs = enter(() => restoreSysvShm(this.dir, file));
  }
  finish(enter: <T>(fn: () => T) => T) {
    enter(() => finishSysvShm(this.segs));
  }
  drop() {
    if (!this.newNs) dropSysvShm(this.segs); // in a new IPC namespace they die with it
  }
}

export const SHMAT = SHM.at;
