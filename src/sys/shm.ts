// SysV shared memory in criu-bun's own process (restore fills a recreated segment): attach, view
// its bytes, detach; and the segment's owner (struct shmid64_ds through IPC_STAT / IPC_SET).
import { ptr, toArrayBuffer } from "bun:ffi";
import { syscall } from "./syscall";
import { NR } from "./nr";
import { SysError } from "./errno";

const IPC_SET = 1,
  IPC_STAT = 2;

/** Attach segment id here, hand its first `size` bytes to fill, detach. */
export function withShmBytes<T>(id: number, size: number, fill: (mem: Uint8Array) => T): T {
  const addr = syscall(NR.shmat, id, 0, 0);
  if (addr < 0 && addr > -4096) throw new SysError(`shmat of SysV segment ${id}`, -addr);
  try {
    return fill(new Uint8Array(toArrayBuffer(addr, 0, size)));
  } finally {
    syscall(NR.shmdt, addr);
  }
}

/** The owner (uid, gid) of segment id; set them when they differ. Returns the errno of a failure, 0 on success. */
export function setShmOwner(id: number, uid: number, gid: number): number {
  const ds = new Uint8Array(112); // struct shmid64_ds (x86_64): ipc64_perm { key, uid, gid, cuid, cgid, mode ... } first
  const v = new DataView(ds.buffer);
  let r = syscall(NR.shmctl, id, IPC_STAT, ptr(ds));
  if (r < 0) return -r;
  if (v.getUint32(4, true) === uid && v.getUint32(8, true) === gid) return 0;
  v.setUint32(4, uid, true);
  v.setUint32(8, gid, true);
  r = syscall(NR.shmctl, id, IPC_SET, ptr(ds));
  return r < 0 ? -r : 0;
}
