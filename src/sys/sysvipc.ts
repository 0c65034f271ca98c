// SysV message queues and semaphore sets in criu-bun's own thread (x86_64 raw calls and the
// kernel's 64-bit structs): their attributes (IPC_STAT / IPC_SET on struct msqid64_ds,
// semid64_ds), a queue's messages read without taking them (msgrcv MSG_COPY), messages sent
// again, semaphore values (GETALL / SETALL) and waiter counts; and an object made with a given
// creator (cuid/cgid come from the creating thread's effective ids: this thread's are switched
// for the one call, the other threads of criu-bun keep theirs).
import { ptr } from "bun:ffi";
import { syscall } from "./syscall";
import { NR } from "./nr";
import { SysError } from "./errno";

const SYS = { semget: 64, semctl: 66, msgget: 68, msgsnd: 69, msgrcv: 70, msgctl: 71, geteuid: 107, getegid: 108 };
const IPC_CREAT = 0o1000,
  IPC_EXCL = 0o2000,
  IPC_NOWAIT = 0o4000,
  MSG_COPY = 0o40000,
  IPC_SET = 1,
  IPC_STAT = 2,
  SHM_RDONLY = 0o10000,
  GETNCNT = 14,
  GETZCNT = 15,
  GETALL = 13,
  SETALL = 17;

/** struct ipc64_perm, the first 48 bytes of each *id64_ds */
interface IpcPerm {
  key: number;
  uid: number;
  gid: number;
  cuid: number;
  cgid: number;
  mode: number;
}
interface MsqStat extends IpcPerm {
  cbytes: number;
  qnum: number;
  qbytes: number;
}
interface SemStat extends IpcPerm {
  nsems: number;
}

function perm(v: DataView): IpcPerm {
  return {
    key: v.getUint32(0, true),
    uid: v.getUint32(4, true),
    gid: v.getUint32(8, true),
    cuid: v.getUint32(12, true),
    cgid: v.getUint32(16, true),
    mode: v.getUint32(20, true),
  };
}

const check = (r: number, what: string) => {
  if (r < 0 && r > -4096) throw new SysError(what, -r);
  return r;
};

/** msgctl IPC_STAT of queue id */
export function msqStat(id: number): MsqStat {
  const ds = new Uint8Array(120); // struct msqid64_ds
  const v = new DataView(ds.buffer);
  check(syscall(SYS.msgctl, id, IPC_STAT, ptr(ds)), `msgctl IPC_STAT of queue ${id}`);
  return {
    ...perm(v),
    cbytes: Number(v.getBigUint64(72, true)),
    qnum: Number(v.getBigUint64(80, true)),
    qbytes: Number(v.getBigUint64(88, true)),
  };
}

/** msgctl IPC_SET of queue id: owner, mode and qbytes */
export function msqSet(id: number, uid: number, gid: number, mode: number, qbytes: number) {
  const ds = new Uint8Array(120);
  const v = new DataView(ds.buffer);
  check(syscall(SYS.msgctl, id, IPC_STAT, ptr(ds)), `msgctl IPC_STAT of queue ${id}`);
  v.setUint32(4, uid, true);
  v.setUint32(8, gid, true);
  v.setUint32(20, mode, true);
  v.setBigUint64(88, BigInt(qbytes), true);
  check(
    syscall(SYS.msgctl, id, IPC_SET, ptr(ds)),
    `msgctl IPC_SET of queue ${id} (owner ${uid}:${gid}, qbytes ${qbytes})`
  );
}

/** Message number `index` of queue id (0 = the head), copied, not taken (MSG_COPY); max: its largest size. */
export function msgCopy(id: number, index: number, max: number): { mtype: bigint; data: Uint8Array } {
  const buf = new Uint8Array(8 + Math.max(max, 8));
  const n = check(
    syscall(SYS.msgrcv, id, ptr(buf), buf.length - 8, index, IPC_NOWAIT | MSG_COPY),
    `msgrcv MSG_COPY of message ${index} of queue ${id}`
  );
  return { mtype: new DataView(buf.buffer).getBigInt64(0, true), data: buf.slice(8, 8 + n) };
}

/** msgsnd without waiting */
export function msgSend(id: number, mtype: bigint, data: Uint8Array) {
  const buf = new Uint8Array(8 + data.length);
  new DataView(buf.buffer).setBigInt64(0, mtype, true);
  buf.set(data, 8);
  check(syscall(SYS.msgsnd, id, ptr(buf), data.length, IPC_NOWAIT), `msgsnd of ${data.length} bytes to queue ${id}`);
}

/** semctl IPC_STAT of set id */
export function semStat(id: number): SemStat {
  const ds = new Uint8Array(104); // struct semid64_ds
  const v = new DataView(ds.buffer);
  check(syscall(SYS.semctl, id, 0, IPC_STAT, ptr(ds)), `semctl IPC_STAT of semaphore set ${id}`);
  return { ...perm(v), nsems: Number(v.getBigUint64(80, true)) };
}

/** semctl IPC_SET of set id: owner and mode */
export function semSet(id: number, uid: number, gid: number, mode: number) {
  const ds = new Uint8Array(104);
  const v = new DataView(ds.buffer);
  check(syscall(SYS.semctl, id, 0, IPC_STAT, ptr(ds)), `semctl IPC_STAT of semaphore set ${id}`);
  v.setUint32(4, uid, true);
  v.setUint32(8, gid, true);
  v.setUint32(20, mode, true);
  check(syscall(SYS.semctl, id, 0, IPC_SET, ptr(ds)), `semctl IPC_SET of semaphore set ${id} (owner ${uid}:${gid})`);
}

/** every value of set id (GETALL: unsigned shorts) */
export function semGetAll(id: number, nsems: number): Uint16Array {
  const vals = new Uint16Array(Math.max(nsems, 1));
  check(syscall(SYS.semctl, id, 0, GETALL, ptr(vals)), `semctl GETALL of semaphore set ${id}`);
  return vals.subarray(0, nsems);
}

/** set every value of set id (SETALL) */
export function semSetAll(id: number, vals: Uint16Array) {
  const copy = new Uint16Array(Math.max(vals.length, 1));
  copy.set(vals);
  check(syscall(SYS.semctl, id, 0, SETALL, ptr(copy)), `semctl SETALL of semaphore set ${id}`);
}

/** how many processes wait on semaphore num of set id: for it to grow, for it to be zero */
export function semWaiters(id: number, num: number): number {
  return (
    check(syscall(SYS.semctl, id, num, GETNCNT, 0), `semctl GETNCNT of semaphore set ${id}`) +
    check(syscall(SYS.semctl, id, num, GETZCNT, 0), `semctl GETZCNT of semaphore set ${id}`)
  );
}

/** msgget / semget with IPC_CREAT | IPC_EXCL: the new object's id, or -errno */
export function msgCreate(key: number, mode: number): number {
  return syscall(SYS.msgget, key | 0, IPC_CREAT | IPC_EXCL | mode);
}
export function semCreate(key: number, nsems: number, mode: number): number {
  return syscall(SYS.semget, key | 0, nsems, IPC_CREAT | IPC_EXCL | mode);
}

/**
 * fn run with this thread's effective uid and gid set to uid and gid (the creator ids a new SysV
 * object gets), back to what they were after; raw calls, so criu-bun's other threads keep theirs.
 */
export function asCreator<T>(uid: number, gid: number, fn: () => T): T {
  const eu = syscall(SYS.geteuid),
    eg = syscall(SYS.getegid);
  if (uid === eu && gid === eg) return fn();
  check(syscall(NR.setresgid, -1, gid, -1), `setresgid to effective gid ${gid}`);
  const r = syscall(NR.setresuid, -1, uid, -1);
  if (r < 0) {
    syscall(NR.setresgid, -1, eg, -1);
    check(r, `setresuid to effective uid ${uid}`);
  }
  try {
    return fn();
  } finally {
    const a = syscall(NR.setresuid, -1, eu, -1),
      b = syscall(NR.setresgid, -1, eg, -1);
    if (a < 0 || b < 0) throw new SysError(`setting effective ids back to ${eu}:${eg}`, -(a < 0 ? a : b));
  }
}

/** Attach SysV segment id read-only here, hand fn its address, detach. */
export function withShmAttachedRO<T>(id: number, fn: (addr: bigint) => T): T {
  const a = syscall(NR.shmat, id, 0, SHM_RDONLY);
  check(a, `shmat of SysV segment ${id}`);
  try {
    return fn(BigInt(a));
  } finally {
    syscall(NR.shmdt, a);
  }
}
