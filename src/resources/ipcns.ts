// A tree's own IPC namespace, both directions, as CRIU 4.2 saves it: its sysctls (the SysV limits,
// the POSIX mqueue limits and the next-id knobs) in ipcns-var-<id>.img, its SysV message queues in
// ipcns-msg-<id>.img, its semaphore sets in ipcns-sem-<id>.img, and its shared memory segments in
// ipcns-shm-<id>.img (sysvshm.ts: the attached ones as their mappings are met, those no process of
// the tree has attached from here).
//
// Dump (in the namespace, the tree frozen): each queue's id, key, owner, creator, mode, qbytes and
// every message (type and bytes) in order, read with msgrcv(MSG_COPY), which leaves the queue as
// it is (a dump that fails or is refused takes nothing); each semaphore set's id, key, owner,
// creator, mode and values (GETALL). Restore (in the new namespace, after its limits, before the
// next-id knobs): each object made with its id (kernel.msg_next_id / sem_next_id before each
// msgget / semget), its key and mode, by a thread whose effective ids are the old creator's (so
// cuid/cgid are exact), then its owner, mode and qbytes (IPC_SET), its messages sent again in order
// and its values set (SETALL).
//
// Not saved, as CRIU does not save them: the times (msg_stime/rtime/ctime, sem_otime/ctime, a
// segment's atime/dtime/ctime), the last pids (msg_lspid/lrpid, sempid, shm_lpid): the kernel
// sets them itself and offers no call to set them. Refused at dump (one line, key ipcns-objects):
// a semaphore a process outside the tree waits on (GETNCNT/GETZCNT; a process of the tree is not
// counted: the freeze ends its wait, and semop, never restarted, returns EINTR, which the restored
// process sees as it would after a dump -R; CRIU's restore gives the same), a message larger than
// kernel.msgmax (it could not be sent again), a kernel without MSG_COPY (CONFIG_CHECKPOINT_RESTORE),
// and the segments sysvshm.ts refuses. Restore refuses an image field it cannot make exactly (a
// mode with bits beyond the permissions, a message over the namespace's msgmax, a semaphore value
// over SEMVMX, an id twice) before anything is made. A POSIX message queue of the namespace that
// no fd of the tree holds lives in the namespace only and would be lost with it: refused
// (ipcns-mqueue); one the tree holds is mqueue.ts's. A SEM_UNDO adjustment is kept by the kernel per process, out of sight: not handled
// (test/EXACT-OR-REFUSED.md, Known gaps), as in CRIU.
import { readFileSync, writeFileSync, existsSync, readdirSync, statSync } from "../sys/fs";
import { syscall, addr, cstr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { closeFd } from "../sys/mem";
import { withNs } from "../sys/netns";
import {
  readImage,
  imageExists,
  writeImage,
  readImagePayloads,
  ipcMsgPayload,
  parseIpcMsgPayload,
} from "../images/image";
import * as S from "../images/schemas";
import { create, isFieldSet } from "@bufbuild/protobuf";
import { refuse } from "./unsupported";
import { CriuError, log } from "../log";
import { errnoText, errnoOf, E } from "../sys/errno";
import {
  msqStat,
  msqSet,
  msgCopy,
  msgSend,
  msgCreate,
  semStat,
  semSet,
  semGetAll,
  semSetAll,
  semWaiters,
  semCreate,
  asCreator,
} from "../sys/sysvipc";
import { looseSegments, dumpLooseSegments } from "./sysvshm";
import type { ImageSink } from "./fdkind";

/** ipc_var_entry field -> its file under /proc/sys (the namespace's own view of it) */
const U32_VARS: [keyof S.ipc_var_entry, string][] = [
  ["msgCtlmax", "kernel/msgmax"],
  ["msgCtlmnb", "kernel/msgmnb"],
  ["msgCtlmni", "kernel/msgmni"],
  ["shmCtlmni", "kernel/shmmni"],
  ["mqQueuesMax", "fs/mqueue/queues_max"],
  ["mqMsgMax", "fs/mqueue/msg_max"],
  ["mqMsgsizeMax", "fs/mqueue/msgsize_max"],
];
const U64_VARS: [keyof S.ipc_var_entry, string][] = [
  ["shmCtlmax", "kernel/shmmax"],
  ["shmCtlall", "kernel/shmall"],
];
/** optional in CRIU's image, and on kernels */
const OPT_VARS: [keyof S.ipc_var_entry, string][] = [
  ["mqMsgDefault", "fs/mqueue/msg_default"],
  ["mqMsgsizeDefault", "fs/mqueue/msgsize_default"],
];
/** the next id a new object gets; -1 (not set) is left out */
const NEXT_IDS: [keyof S.ipc_var_entry, string][] = [
  ["msgNextId", "kernel/msg_next_id"],
  ["semNextId", "kernel/sem_next_id"],
  ["shmNextId", "kernel/shm_next_id"],
];

const sys = (f: string) => `/proc/sys/${f}`;
const readSys = (f: string) => readFileSync(sys(f), "latin1").trim();
/** rows of /proc/sysvipc/KIND in the caller's IPC namespace (the header line left out) */
function sysvRows(kind: "msg" | "sem" | "shm"): string[][] {
  return readFileSync(`/proc/sysvipc/${kind}`, "latin1")
    .split("\n")
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length > 4);
}

// ---------- dump ----------

/**
 * The POSIX message queues of the caller's IPC namespace: a new mqueue instance of it (fsopen
 * takes the caller's thread's IPC namespace), listed through its detached mount.
 */
function mqueues(): { name: string; dev: bigint; ino: bigint }[] {
  const fs = syscall(NR.fsopen, addr(cstr("mqueue")), 1 /* FSOPEN_CLOEXEC */);
  if (fs < 0) throw new CriuError("dump", `fsopen(mqueue): ${errnoText(-fs)}`);
  let mnt = -1;
  try {
    const c = syscall(NR.fsconfig, fs, 6 /* FSCONFIG_CMD_CREATE */, 0, 0, 0);
    if (c < 0) throw new CriuError("dump", `fsconfig(mqueue, create): ${errnoText(-c)}`);
    mnt = syscall(NR.fsmount, fs, 1 /* FSMOUNT_CLOEXEC */, 0);
    if (mnt < 0) throw new CriuError("dump", `fsmount(mqueue): ${errnoText(-mnt)}`);
    const at = `/proc/self/fd/${mnt}/.`;
    return readdirSync(at).map((name) => {
      const st = statSync(`${at}/${name}`, { bigint: true });
      return { name, dev: st.dev, ino: st.ino };
    });
  } finally {
    if (mnt >= 0) closeFd(mnt);
    closeFd(fs);
  }
}

const desc = (id: number, p: { key: number; uid: number; gid: number; cuid: number; cgid: number; mode: number }) => ({
  key: p.key,
  uid: p.uid,
  gid: p.gid,
  cuid: p.cuid,
  cgid: p.cgid,
  mode: p.mode,
  id,
});

/** Every message of queue id, copied in order (MSG_COPY: the queue keeps them). */
function copyQueue(root: number, id: number, msgmax: number) {
  const st = msqStat(id);
  const msgs: { mtype: bigint; data: Uint8Array }[] = [];
  for (let i = 0; i < st.qnum; i++) {
    let m: { mtype: bigint; data: Uint8Array };
    try {
      m = msgCopy(id, i, st.cbytes);
    } catch (e) {
      if (errnoOf(e) === E.ENOSYS)
        refuse(
          "dump",
          `process ${root}`,
          "ipcns-objects",
          `SysV message queue ${id}: the kernel has no msgrcv(MSG_COPY) to read its messages (CONFIG_CHECKPOINT_RESTORE)`
        );
      throw new CriuError("dump", `process ${root}: SysV message queue ${id}: ${errnoText(e)}`);
    }
    if (m.data.length > msgmax)
      refuse(
        "dump",
        `process ${root}`,
        "ipcns-objects",
        `SysV message queue ${id}: message ${i} has ${m.data.length} bytes, more than kernel.msgmax ${msgmax}, and could not be sent again`
      );
    msgs.push(m);
  }
  const after = msqStat(id);
  if (after.qnum !== st.qnum || after.cbytes !== msgs.reduce((n, m) => n + m.data.length, 0))
    throw new CriuError(
      "dump",
      `process ${root}: SysV message queue ${id} changed while it was read (by a process outside the tree?)`
    );
  return { st, msgs };
}

/**
 * The tree's own IPC namespace (entered through ROOT; PIDS the tree's live processes): its
 * message queues, semaphore sets and the segments nobody in the tree has attached into IMAGES,
 * refused if one cannot be made again as it is; its sysctls into ipcns-var-NSID.img.
 */
export function dumpIpcNs(root: number, pids: number[], dir: string, nsId: number, images: ImageSink) {
  const e = withNs(root, "ipc", () => {
    // POSIX message queues of the namespace: one the tree holds open is saved with its fd
    // (mqueue.ts); one nobody holds lives on in the namespace only, and would be lost with it
    const held = new Set<string>();
    for (const p of pids)
      for (const fd of readdirSync(`/proc/${p}/fd`)) {
        try {
          const st = statSync(`/proc/${p}/fd/${fd}`, { bigint: true });
          held.add(`${st.dev}:${st.ino}`);
        } catch {}
      }
    const unheld = mqueues().filter((q) => !held.has(`${q.dev}:${q.ino}`));
    if (unheld.length)
      refuse(
        "dump",
        `process ${root}`,
        "ipcns-mqueue",
        `${unheld.map((q) => `/${q.name}`).join(", ")}; open it in the tree or remove it`
      );
    const msgmax = Number(readSys("kernel/msgmax"));
    // /proc/sysvipc/msg and sem: key id ...
    const queues = sysvRows("msg").map((f) => ({ id: Number(f[1]), ...copyQueue(root, Number(f[1]), msgmax) }));
    const sets = sysvRows("sem").map((f) => {
      const id = Number(f[1]);
      const st = semStat(id);
      for (let i = 0; i < st.nsems; i++)
        if (semWaiters(id, i))
          refuse(
            "dump",
            `process ${root}`,
            "ipcns-objects",
            `SysV semaphore set ${id}: semaphore ${i} has a process outside the tree waiting on it`
          );
      return { id, st, vals: semGetAll(id, st.nsems) };
    });
    const loose = looseSegments(root, pids, readSys("kernel/shm_rmid_forced") !== "0");
    dumpLooseSegments(root, loose, images, nsId);
    for (const q of queues) {
      images.add(
        `ipcns-msg-${nsId}.img`,
        "IPCNS_MSG",
        S.ipc_msg_entrySchema,
        { desc: desc(q.id, q.st), qbytes: q.st.qbytes, qnum: q.msgs.length },
        ipcMsgPayload(
          q.msgs.map((m) => ({ msg: create(S.ipc_msgSchema, { mtype: m.mtype, msize: m.data.length }), data: m.data }))
        )
      );
      log.debug(
        `process ${root}: SysV message queue ${q.id} (key 0x${q.st.key.toString(16)}, mode 0${q.st.mode.toString(8)}, owner ${q.st.uid}:${q.st.gid}, creator ${q.st.cuid}:${q.st.cgid}, qbytes ${q.st.qbytes}): ${q.msgs.length ? `${q.msgs.length} message(s) (${q.msgs.map((m) => `type ${m.mtype} ${m.data.length} bytes`).join(", ")}) copied (MSG_COPY)` : "empty"}, saved in ipcns-msg-${nsId}.img`
      );
    }
    for (const s of sets) {
      images.add(
        `ipcns-sem-${nsId}.img`,
        "IPCNS_SEM",
        S.ipc_sem_entrySchema,
        { desc: desc(s.id, s.st), nsems: s.st.nsems },
        new Uint8Array(s.vals.buffer.slice(s.vals.byteOffset, s.vals.byteOffset + s.st.nsems * 2))
      );
      log.debug(
        `process ${root}: SysV semaphore set ${s.id} (key 0x${s.st.key.toString(16)}, mode 0${s.st.mode.toString(8)}, owner ${s.st.uid}:${s.st.gid}, creator ${s.st.cuid}:${s.st.cgid}): values ${[...s.vals].join(" ")} saved in ipcns-sem-${nsId}.img`
      );
    }
    const v: Record<string, unknown> = { semCtls: readSys("kernel/sem").split(/\s+/).map(Number) };
    for (const [k, f] of U32_VARS) v[k] = Number(readSys(f));
    v.shmRmidForced = Number(readSys("kernel/shm_rmid_forced"));
    for (const [k, f] of U64_VARS) v[k] = BigInt(readSys(f));
    // auto_msgmni is gone from today's kernels (CRIU writes 0 then)
    v.autoMsgmni = existsSync(sys("kernel/auto_msgmni")) ? Number(readSys("kernel/auto_msgmni")) : 0;
    for (const [k, f] of OPT_VARS) if (existsSync(sys(f))) v[k] = Number(readSys(f));
    for (const [k, f] of NEXT_IDS)
      if (existsSync(sys(f))) {
        const n = Number(readSys(f));
        if (n >= 0) v[k] = n;
      }
    return v;
  });
  writeImage(dir, `ipcns-var-${nsId}.img`, "IPC_VAR", [
    create(S.ipc_var_entrySchema, e as S.Init<typeof S.ipc_var_entrySchema>),
  ]);
  log.debug(
    `process ${root}: IPC namespace ${nsId}: sem ${(e.semCtls as number[]).join(" ")}, msgmax ${e.msgCtlmax}, msgmnb ${e.msgCtlmnb}, msgmni ${e.msgCtlmni}, shmmax ${e.shmCtlmax}, shmall ${e.shmCtlall}, shmmni ${e.shmCtlmni}, mqueue ${e.mqQueuesMax}/${e.mqMsgMax}/${e.mqMsgsizeMax}`
  );
}

// ---------- restore ----------

/** an optional field of the image that was written (proto2: an unset one reads as 0) */
const isSet = (v: S.ipc_var_entry, k: keyof S.ipc_var_entry) =>
  isFieldSet(v, S.ipc_var_entrySchema.field[k as keyof typeof S.ipc_var_entrySchema.field]);

/** What restore makes in the tree's new IPC namespace: its sysctls, queues and semaphore sets. */
export interface IpcNsImage {
  vars: S.ipc_var_entry;
  msgs: { e: S.ipc_msg_entry; msgs: { mtype: bigint; data: Uint8Array }[] }[];
  sems: { e: S.ipc_sem_entry; vals: Uint16Array }[];
}

const SEMVMX = 32767;

/** an ipc_desc_entry checked: id a valid one, mode permission bits only (KIND: "message queue" ...) */
function checkDesc(where: string, d: S.ipc_desc_entry | undefined, ids: Set<number>): S.ipc_desc_entry {
  if (!d) throw new CriuError("restore", `${where}: has no desc`);
  if (d.id > 0x7fffffff) throw new CriuError("restore", `${where}: id ${d.id} is not a SysV id`);
  if (ids.has(d.id)) throw new CriuError("restore", `${where}: id ${d.id} is there twice`);
  ids.add(d.id);
  if (d.mode & ~0o777)
    throw new CriuError("restore", `${where}: mode 0${d.mode.toString(8)} has bits other than the permissions`);
  return d;
}

/**
 * The images of the tree's own IPC namespace (ipcns-var-NSID.img required: without it the new
 * namespace's limits would silently be the kernel's defaults; ipcns-msg and ipcns-sem when there),
 * every field checked before anything is made.
 */
export function readIpcNs(dir: string, nsId: number): IpcNsImage {
  const file = `ipcns-var-${nsId}.img`;
  if (!imageExists(dir, file))
    throw new CriuError("restore", `${dir}/${file} is missing: the tree had an IPC namespace of its own`);
  const vars = readImage(dir, file, "IPC_VAR")[0];
  if (!vars) throw new CriuError("restore", `${dir}/${file} has no entry`);
  if (vars.semCtls.length !== 4)
    throw new CriuError("restore", `${dir}/${file}: sem_ctls has ${vars.semCtls.length} values, not 4`);
  const out: IpcNsImage = { vars, msgs: [], sems: [] };
  const msgFile = `ipcns-msg-${nsId}.img`;
  if (imageExists(dir, msgFile)) {
    const ids = new Set<number>();
    for (const { msg: e, payload } of readImagePayloads(dir, msgFile, "IPCNS_MSG")) {
      const where = `${dir}/${msgFile}: SysV message queue ${e.desc?.id}`;
      checkDesc(where, e.desc, ids);
      const msgs = parseIpcMsgPayload(payload, e.qnum, msgFile).map(({ msg, data }, i) => {
        const m = msg as S.ipc_msg;
        if (m.mtype < 1n || m.mtype > 0x7fffffffffffffffn)
          throw new CriuError("restore", `${where}: message ${i} has type ${m.mtype} (a message's type is 1 or more)`);
        if (m.msize > vars.msgCtlmax)
          throw new CriuError(
            "restore",
            `${where}: message ${i} has ${m.msize} bytes, more than the namespace's msgmax ${vars.msgCtlmax}`
          );
        return { mtype: m.mtype, data };
      });
      out.msgs.push({ e, msgs });
    }
  }
  const semFile = `ipcns-sem-${nsId}.img`;
  if (imageExists(dir, semFile)) {
    const ids = new Set<number>();
    for (const { msg: e, payload } of readImagePayloads(dir, semFile, "IPCNS_SEM")) {
      const where = `${dir}/${semFile}: SysV semaphore set ${e.desc?.id}`;
      checkDesc(where, e.desc, ids);
      if (e.nsems < 1 || e.nsems > vars.semCtls[0])
        throw new CriuError(
          "restore",
          `${where}: ${e.nsems} semaphores (the namespace's semmsl is ${vars.semCtls[0]}, at least 1)`
        );
      const vals = new Uint16Array(e.nsems);
      for (let i = 0; i < e.nsems; i++) vals[i] = payload[2 * i] | (payload[2 * i + 1] << 8);
      const bad = vals.findIndex((x) => x > SEMVMX);
      if (bad >= 0)
        throw new CriuError("restore", `${where}: semaphore ${bad} is ${vals[bad]}, more than SEMVMX ${SEMVMX}`);
      out.sems.push({ e, vals });
    }
  }
  return out;
}

/** In the new IPC namespace: each queue and semaphore set as it was (see the top of this file). */
function restoreObjects(root: number, img: IpcNsImage, put: (f: string, val: unknown) => void) {
  const fail = (what: string, e: unknown) => {
    throw new CriuError("restore", `process ${root}: ${what}: ${errnoText(e)}`);
  };
  for (const { e, msgs } of img.msgs) {
    const d = e.desc!;
    const what = `SysV message queue ${d.id}`;
    put("kernel/msg_next_id", d.id);
    const id = asCreator(d.cuid, d.cgid, () => msgCreate(d.key, d.mode));
    if (id < 0) fail(`${what}: msgget (key 0x${d.key.toString(16)})`, -id);
    if (id !== d.id) throw new CriuError("restore", `process ${root}: ${what} came back as ${id}`);
    const bytes = msgs.reduce((n, m) => n + m.data.length, 0);
    // room for every message first (the kernel also counts messages against qbytes), its own qbytes after
    const room = Math.max(e.qbytes, bytes, msgs.length);
    try {
      msqSet(id, d.uid, d.gid, d.mode, room);
      for (const m of msgs) msgSend(id, m.mtype, m.data);
      if (room !== e.qbytes) msqSet(id, d.uid, d.gid, d.mode, e.qbytes);
    } catch (x) {
      fail(what, x);
    }
    log.debug(
      `process ${root}: ${what} made again (key 0x${d.key.toString(16)}, mode 0${d.mode.toString(8)}, owner ${d.uid}:${d.gid}, creator ${d.cuid}:${d.cgid}, qbytes ${e.qbytes}), ${msgs.length} message(s) sent again`
    );
  }
  for (const { e, vals } of img.sems) {
    const d = e.desc!;
    const what = `SysV semaphore set ${d.id}`;
    put("kernel/sem_next_id", d.id);
    const id = asCreator(d.cuid, d.cgid, () => semCreate(d.key, e.nsems, d.mode));
    if (id < 0) fail(`${what}: semget (key 0x${d.key.toString(16)}, ${e.nsems} semaphores)`, -id);
    if (id !== d.id) throw new CriuError("restore", `process ${root}: ${what} came back as ${id}`);
    try {
      semSet(id, d.uid, d.gid, d.mode);
      semSetAll(id, vals);
    } catch (x) {
      fail(what, x);
    }
    log.debug(
      `process ${root}: ${what} made again (key 0x${d.key.toString(16)}, mode 0${d.mode.toString(8)}, owner ${d.uid}:${d.gid}, creator ${d.cuid}:${d.cgid}), values ${[...vals].join(" ")}`
    );
  }
}

/**
 * Inside the new IPC namespace of ROOT: its sysctls as they were and its objects, in four steps:
 * the limits before the SysV objects are made, the queues and semaphore sets (objects), the next
 * ids after them, shm_rmid_forced once the segments are attached.
 */
export function restoreIpcNs(root: number, img: IpcNsImage, phase: "limits" | "objects" | "next-ids" | "after-attach") {
  const v = img.vars;
  withNs(root, "ipc", () => {
    const put = (f: string, val: unknown) => {
      try {
        writeFileSync(sys(f), `${val}\n`);
      } catch (e) {
        throw new CriuError(
          "restore",
          `process ${root}: cannot set ${f.replace(/\//g, ".")} to ${val} in its IPC namespace: ${errnoText(e)}`
        );
      }
    };
    if (phase === "limits") {
      put("kernel/sem", v.semCtls.join(" "));
      for (const [k, f] of [...U32_VARS, ...U64_VARS]) put(f, v[k]);
      for (const [k, f] of OPT_VARS) if (isSet(v, k) && existsSync(sys(f))) put(f, v[k]);
      log.debug(`process ${root}: IPC namespace limits restored`);
    } else if (phase === "objects") {
      restoreObjects(root, img, put);
    } else if (phase === "next-ids") {
      for (const [k, f] of NEXT_IDS) if (isSet(v, k)) put(f, v[k]);
    } else {
      // once every process has attached its segments: set earlier, it destroys those not attached yet;
      // one nobody attaches would go when criu-bun, its creator now, exits (the dump refuses it)
      const loose = sysvRows("shm").filter((f) => Number(f[6]) === 0);
      if (v.shmRmidForced && loose.length)
        throw new CriuError(
          "restore",
          `process ${root}: SysV shared memory ${loose.map((f) => f[1]).join(", ")} attached by no process, with kernel.shm_rmid_forced 1: it would be destroyed once criu-bun exits`
        );
      put("kernel/shm_rmid_forced", v.shmRmidForced);
    }
  });
}
