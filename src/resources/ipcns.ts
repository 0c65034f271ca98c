// A tree's own IPC namespace, both directions: its sysctls (the SysV limits, the POSIX mqueue
// limits and the next-id knobs) saved in CRIU's ipcns-var-<id>.img and written again inside the new
// namespace at restore. SysV shared memory the tree has attached is sysvshm.ts's; SysV message
// queues, semaphore sets and segments nobody in the tree has attached are not saved by criu-bun:
// the dump refuses them (they would be lost), and restore refuses CRIU images that hold them.
import { readFileSync, writeFileSync, existsSync, readdirSync, statSync } from "../sys/fs";
import { syscall, addr, cstr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { closeFd } from "../sys/mem";
import { withNs } from "../sys/netns";
import { readImage, imageExists, writeImage } from "../images/image";
import * as S from "../images/schemas";
import { create, isFieldSet } from "@bufbuild/protobuf";
import { refuse } from "./unsupported";
import { CriuError, log } from "../log";
import { errnoText } from "../sys/errno";

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

/**
 * The tree's own IPC namespace (entered through ROOT): refused if it holds what criu-bun does not
 * save, else its sysctls into ipcns-var-NSID.img.
 */
export function dumpIpcNs(root: number, dir: string, nsId: number, pids: number[] = [root]) {
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
    const msg = sysvRows("msg"),
      sem = sysvRows("sem");
    // /proc/sysvipc/shm: key shmid perms size cpid lpid nattch ...
    const loose = sysvRows("shm").filter((f) => Number(f[6]) === 0);
    const what = [
      msg.length ? `${msg.length} SysV message queue(s) (ids ${msg.map((f) => f[1]).join(", ")})` : "",
      sem.length ? `${sem.length} SysV semaphore set(s) (ids ${sem.map((f) => f[1]).join(", ")})` : "",
      loose.length
        ? `${loose.length} SysV shared memory segment(s) nobody has attached (ids ${loose.map((f) => f[1]).join(", ")})`
        : "",
    ].filter(Boolean);
    if (what.length) refuse("dump", `process ${root}`, "ipcns-objects", what.join(", "));
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

/**
 * ipcns-var-NSID.img of the tree's own IPC namespace (required: without it the new namespace's
 * limits would silently be the kernel's defaults), checked before anything is made. CRIU's SysV
 * message queues and semaphore sets are refused here: criu-bun does not restore them.
 */
export function readIpcNs(dir: string, nsId: number): S.ipc_var_entry {
  for (const [kind, file] of [
    ["IPCNS_MSG", `ipcns-msg-${nsId}.img`],
    ["IPCNS_SEM", `ipcns-sem-${nsId}.img`],
  ] as const) {
    if (imageExists(dir, file) && readImage(dir, file, kind).length) {
      throw new CriuError(
        "restore",
        `${dir}/${file}: SysV ${kind === "IPCNS_MSG" ? "message queues" : "semaphore sets"} of the tree's IPC namespace are not restored by criu-bun yet`
      );
    }
  }
  const file = `ipcns-var-${nsId}.img`;
  if (!imageExists(dir, file))
    throw new CriuError("restore", `${dir}/${file} is missing: the tree had an IPC namespace of its own`);
  const v = readImage(dir, file, "IPC_VAR")[0];
  if (!v) throw new CriuError("restore", `${dir}/${file} has no entry`);
  if (v.semCtls.length !== 4)
    throw new CriuError("restore", `${dir}/${file}: sem_ctls has ${v.semCtls.length} values, not 4`);
  return v;
}

/**
 * Inside the new IPC namespace of ROOT: its sysctls as they were, in three steps: the limits before
 * the SysV objects are made, the next ids after them, shm_rmid_forced once they are attached.
 */
export function restoreIpcNs(root: number, v: S.ipc_var_entry, phase: "limits" | "next-ids" | "after-attach") {
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
    } else if (phase === "next-ids") {
      for (const [k, f] of NEXT_IDS) if (isSet(v, k)) put(f, v[k]);
    } else {
      // once every process has attached its segments: set earlier, it destroys those not attached yet
      put("kernel/shm_rmid_forced", v.shmRmidForced);
    }
  });
}
