// SysV shared memory segments that dumped processes have attached (maps show "/SYSV<key>
// (deleted)", inode = shmid). Each segment is saved once in ipcns-shm-1.img (CRIU's
// ipc_shm_entry + contents). Restore recreates it with the same id (kernel.shm_next_id), key,
// mode and contents, every process shmat()s it at its old address, and a segment that was
// marked for removal (IPC_RMID) is removed again once everyone is attached.
import { readFileSync, writeFileSync, fstatSync } from "node:fs";
import { toArrayBuffer } from "bun:ffi";
import { syscall } from "../sys/syscall";
import { openFd, closeFd, O, preadFull } from "../sys/mem";
import type { ImageSink } from "./fdkind";
import * as S from "../images/schemas";
import { readImagePayloads, imageExists } from "../images/image";
import { CriuError, log } from "../log";
import { errnoText } from "../sys/errno";

const SHM = { get: 29, at: 30, ctl: 31, dt: 67 } as const;
const IPC_CREAT = 0o1000, IPC_EXCL = 0o2000, IPC_RMID = 0, SHM_DEST = 0o1000;
export const SHM_IMAGE = "ipcns-shm-1.img";
/** the segments' image: CRIU's ipcns-shm-<ns id>.img for a tree's own IPC namespace, ipcns-shm-1.img
 *  (criu-bun's own) for segments of the namespace criu-bun shares with the tree, which CRIU does not dump */
export function shmImage(ownNsId?: number): string { return ownNsId ? `ipcns-shm-${ownNsId}.img` : SHM_IMAGE; }

interface SegInfo { key: number; id: number; mode: number; size: bigint; nattch: number; uid: number; gid: number; cuid: number; cgid: number }

/** /proc/sysvipc/shm rows of this IPC namespace. */
export function segments(): Map<number, SegInfo> {
  const out = new Map<number, SegInfo>();
  for (const l of readFileSync("/proc/sysvipc/shm", "latin1").split("\n").slice(1)) {
    const f = l.trim().split(/\s+/);
    if (f.length < 11) continue;
    out.set(Number(f[1]), { key: Number(f[0]) >>> 0, id: Number(f[1]), mode: parseInt(f[2], 8), size: BigInt(f[3]), nattch: Number(f[6]),
      uid: Number(f[7]), gid: Number(f[8]), cuid: Number(f[9]), cgid: Number(f[10]) });
  }
  return out;
}

/** Save the segment attached at start..end in process pid (the caller does it once per shmid). */
export function dumpSysvShm(pid: number, start: bigint, end: bigint, shmid: number, images: ImageSink, file = SHM_IMAGE) {
  const seg = segments().get(shmid);
  if (!seg) throw new CriuError("mem", `process ${pid}: SysV shared memory ${shmid} at 0x${start.toString(16)} is not in /proc/sysvipc/shm (another IPC namespace?)`);
  const fd = openFd(`/proc/${pid}/map_files/${start.toString(16)}-${end.toString(16)}`, O.RDONLY | O.CLOEXEC);
  try {
    const size = Number(seg.size);
    if (BigInt(fstatSync(fd).size) < seg.size) throw new CriuError("mem", `process ${pid}: SysV segment ${shmid} is smaller than /proc says`);
    const data = new Uint8Array(size);
    preadFull(fd, data, 0n, size, 0, `process ${pid}: reading SysV shared memory ${shmid}`);
    images.add(file, "IPCNS_SHM", S.ipc_shm_entrySchema, {
      desc: { key: seg.key, uid: seg.uid, gid: seg.gid, cuid: seg.cuid, cgid: seg.cgid, mode: seg.mode, id: shmid }, size: seg.size,
    }, data);
  } finally { closeFd(fd); }
}

/** Before any process exists: make every saved segment exist again with its id and contents. */
export function restoreSysvShm(dir: string, file = SHM_IMAGE): { id: number; dest: boolean }[] {
  if (!imageExists(dir, file)) return [];
  const out: { id: number; dest: boolean }[] = [];
  const live = segments();
  for (const { msg, payload } of readImagePayloads<S.ipc_shm_entry>(dir, file, "IPCNS_SHM")) {
    const d = msg.desc!;
    const old = live.get(d.id);
    if (old) {
      if (old.nattch > 0) throw new CriuError("restore", `SysV shared memory ${d.id} exists and is attached by ${old.nattch} process(es)`);
      syscall(SHM.ctl, d.id, IPC_RMID, 0); // left over from the dumped tree: replace with the image
    }
    writeFileSync("/proc/sys/kernel/shm_next_id", String(d.id));
    const id = syscall(SHM.get, d.key, Number(msg.size), IPC_CREAT | IPC_EXCL | (d.mode & 0o777)); // resets shm_next_id
    if (id < 0) throw new CriuError("restore", `cannot recreate SysV shared memory ${d.id} (key 0x${d.key.toString(16)}): ${errnoText(-id)}`);
    if (id !== d.id) { syscall(SHM.ctl, id, IPC_RMID, 0); throw new CriuError("restore", `SysV shared memory came back as ${id}, not ${d.id}`); }
    const addr = syscall(SHM.at, id, 0, 0);
    if (addr < 0 && addr > -4096) throw new CriuError("restore", `shmat of segment ${id} failed (${errnoText(-addr)})`);
    new Uint8Array(toArrayBuffer(addr as any, 0, Number(msg.size))).set(payload.subarray(0, Number(msg.size)));
    syscall(SHM.dt, addr);
    out.push({ id, dest: (d.mode & SHM_DEST) !== 0 });
    log.info(`SysV shared memory ${id} recreated (${msg.size} bytes)`);
  }
  return out;
}

/** After every process is attached: segments that were marked for removal are marked again. */
export function finishSysvShm(segs: { id: number; dest: boolean }[]) {
  for (const s of segs) if (s.dest) syscall(SHM.ctl, s.id, IPC_RMID, 0);
}

/** Undo on a failed restore. */
export function dropSysvShm(segs: { id: number }[]) {
  for (const s of segs) syscall(SHM.ctl, s.id, IPC_RMID, 0);
}

export const SHMAT = SHM.at;
