// POSIX message queues (mq_open fds: a file on the ipc namespace's mqueue fs, link "/NAME").
//
// CRIU has no image for them (criu 3.x/4.x refuses such fds; upstream issue #2285), so this is a
// criu-bun extension, and crit does not decode the queue part:
//   files.img:  file_entry { type: EXT (16), ext: ext_file_entry { id, fown } } per description
//               (CRIU would hand EXT files to a plugin and fail cleanly without one);
//   mqueue.criu-bun.jsonl: JSON lines, written raw, one per queue and one per description:
//     {"k":"queue","ino":N,"name":"/q","mode":416,"uid":0,"gid":0,"maxmsg":8,"msgsize":128,
//      "msgs":[{"prio":5,"data":"<base64>"}, ...]}            messages in receive order
//     {"k":"file","id":FILE_ID,"ino":N,"flags":O_FLAGS}
// Dump: the queue has no peek, so every message is received (mq_timedreceive, syscall 243, with
// an already expired timeout: never blocks) through criu-bun's own O_RDWR open of
// /proc/PID/fd/N, and all are sent back at once (mq_timedsend 242) in the same order with their
// priorities, before this fd's dump returns, whatever happens later in the dump. A queue with an
// mq_notify registration is refused (refilling an emptied queue would fire it), so is an
// unlinked one. Messages sent by processes outside the tree while it is drained would be
// interleaved: the dumped tree is frozen, outsiders are not.
// Restore: the first process needing the queue mq_unlink()s a leftover of the same name (the
// queue outlives the killed process, with the dumped messages still in it), creates it
// (mq_open 240, O_CREAT|O_EXCL, maxmsg/msgsize), sets mode and owner, holds that fd for the
// tree, and criu-bun sends the messages through a pidfd_getfd copy. Every description is then
// its own mq_open with its flags (access mode, O_NONBLOCK).
import type { FdKind, RestoreCtx } from "./fdkind";
import { FOWN0 } from "./fdkind";
import { syscall, addr, cstr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { openFd, closeFd, O } from "../sys/mem";
import { CriuError } from "../log";
import { readFileSync, existsSync } from "../sys/fs";
import { join } from "../sys/path";
import { errnoText, sysFailed } from "../sys/errno";
import { fd_types } from "../images/schemas";

const MQUEUE_MAGIC = 0x19800202;
const SYS = {
  mq_open: 240,
  mq_unlink: 241,
  mq_timedsend: 242,
  mq_timedreceive: 243,
  mq_getsetattr: 245,
  statfs: 137,
  fchmod: 91,
  fchown: 93,
};
const ETIMEDOUT = 110,
  EAGAIN = 11;
const MQ_IMAGE = "mqueue.criu-bun.jsonl";

interface QueueLine {
  k: "queue";
  ino: number;
  name: string;
  mode: number;
  uid: number;
  gid: number;
  maxmsg: number;
  msgsize: number;
  msgs: { prio: number; data: string }[];
}
interface FileLine {
  k: "file";
  id: number;
  ino: number;
  flags: number;
}

function isMqueue(path: string): boolean {
  const buf = new BigInt64Array(16);
  const p = cstr(path);
  return syscall(SYS.statfs, addr(p), addr(buf)) === 0 && Number(buf[0]) === MQUEUE_MAGIC;
}

/** mqueue's state for one dump: whether each device seen is an mqueue file system */
type MqueueDump = Map<bigint, boolean>;
/** is the file system of device dev (an fd of it at fdPath) mqueue; remembered for the dump */
function mqueueDev(dev: bigint, fdPath: string, m: MqueueDump): boolean {
  let r = m.get(dev);
  if (r === undefined) m.set(dev, (r = isMqueue(fdPath)));
  return r;
}

const line = (o: object) => new TextEncoder().encode(JSON.stringify(o) + "\n");

/** Receive every message of queue fd q (never blocks), then send them all back in order. */
function drainAndRefill(q: number, msgsize: number, where: string): { prio: number; data: Uint8Array }[] {
  const msgs: { prio: number; data: Uint8Array }[] = [];
  const ts = new BigInt64Array(2); // absolute time 0: already expired
  const buf = new Uint8Array(Math.max(msgsize, 1));
  const prio = new Uint32Array(1);
  let err: CriuError | undefined;
  try {
    for (;;) {
      const n = syscall(SYS.mq_timedreceive, q, addr(buf), buf.length, addr(prio), addr(ts));
      if (n === -ETIMEDOUT || n === -EAGAIN) break;
      if (n < 0) {
        err = new CriuError("files", `${where}: mq_timedreceive failed: ${errnoText(-n)}`);
        break;
      }
      msgs.push({ prio: prio[0], data: buf.slice(0, n) });
    }
  } finally {
    for (const m of msgs) {
      const r = syscall(SYS.mq_timedsend, q, addr(m.data), m.data.length, m.prio, addr(ts));
      if (r < 0 && !err)
        err = new CriuError(
          "files",
          `${where}: putting a message back into the queue failed: ${errnoText(-r)}; it is lost`
        );
    }
  }
  if (err) throw err;
  return msgs;
}

export const mqueueKind: FdKind<MqueueDump> = {
  name: "POSIX message queue",
  type: fd_types.EXT,
  // one statfs per file system and dump, not per fd (10,000 fds on one file system: 1 call)
  dumpBegin: () => new Map(),
  match: (target, st, fdPath, _opts, _copy, s) => st.isFile() && target.startsWith("/") && mqueueDev(st.dev, fdPath, s),
  dump(ctx) {
    const { target, st } = ctx;
    if (target.endsWith(" (deleted)"))
      throw new CriuError(
        "files",
        `${ctx.where}: message queue '${target.slice(0, -10)}' was unlinked while open; not supported yet`
      );
    const ino = Number(st.ino);
    const key = `mqueue:${st.dev}:${st.ino}`;
    if (!ctx.files.byKey.has(key)) {
      ctx.files.byKey.set(key, 0);
      const q = openFd(`/proc/${ctx.pid}/fd/${ctx.fd}`, O.RDWR | O.CLOEXEC);
      try {
        const attr = new BigInt64Array(8);
        const r = syscall(SYS.mq_getsetattr, q, 0, addr(attr));
        if (r < 0) throw new CriuError("files", `${ctx.where}: mq_getsetattr failed: ${errnoText(-r)}`);
        const [maxmsg, msgsize, curmsgs] = [Number(attr[1]), Number(attr[2]), Number(attr[3])];
        const status = new Uint8Array(256);
        const n = syscall(NR.read, q, addr(status), status.length);
        const notify = /NOTIFY_PID:(\d+)/.exec(new TextDecoder().decode(status.subarray(0, Math.max(n, 0))))?.[1];
        if (notify && notify !== "0")
          throw new CriuError(
            "files",
            `${ctx.where}: message queue '${target}' has an mq_notify registration (process ${notify}); not supported yet`
          );
        const msgs = drainAndRefill(q, msgsize, ctx.where);
        if (msgs.length !== curmsgs)
          throw new CriuError(
            "files",
            `${ctx.where}: message queue '${target}' changed while dumped (${msgs.length} messages, ${curmsgs} expected)`
          );
        const ql: QueueLine = {
          k: "queue",
          ino,
          name: target,
          mode: Number(st.mode) & 0o7777,
          uid: Number(st.uid),
          gid: Number(st.gid),
          maxmsg,
          msgsize,
          msgs: msgs.map((m) => ({ prio: m.prio, data: Buffer.from(m.data).toString("base64") })),
        };
        ctx.images.raw(MQ_IMAGE, line(ql));
      } finally {
        closeFd(q);
      }
    }
    const id = ctx.files.add(null, (id) => ({ id, type: 16, ext: { id, fown: FOWN0 } }));
    ctx.images.raw(MQ_IMAGE, line({ k: "file", id, ino, flags: ctx.flags } satisfies FileLine));
    return id;
  },
  precheck(f, dir, where) {
    if (!existsSync(join(dir, MQ_IMAGE)))
      throw new CriuError("restore", `${where}: external file ${f.id} needs ${MQ_IMAGE}, which is missing`);
    if (!readLines(dir).some((l) => l.k === "file" && l.id === f.id))
      throw new CriuError("restore", `${where}: external file ${f.id} is not a message queue known to ${MQ_IMAGE}`);
  },
  restore(ctx, f) {
    const lines = cachedLines(ctx);
    const fl = lines.find((l): l is FileLine => l.k === "file" && l.id === f.id)!;
    const q = lines.find((l): l is QueueLine => l.k === "queue" && l.ino === fl.ino);
    if (!q) throw new CriuError("restore", `${ctx.where}: message queue ${fl.ino} is not in ${MQ_IMAGE}`);
    const inj = ctx.inj,
      name = q.name.replace(/^\//, "");
    const heldKey = `mqueue:${q.ino}` as const;
    if (!ctx.tree.held.has(heldKey)) {
      inj.call(SYS.mq_unlink, ctx.str(name)); // the queue outlived the dumped process: start afresh
      const attr = new BigInt64Array([0n, BigInt(q.maxmsg), BigInt(q.msgsize), 0n, 0n, 0n, 0n, 0n]);
      const a = ctx.scratch(0n, new Uint8Array(attr.buffer));
      const r = Number(inj.call(SYS.mq_open, ctx.str(name), O.RDWR | O.CREAT | O.EXCL | O.CLOEXEC, q.mode, a));
      if (r < 0)
        throw new CriuError(
          "restore",
          `${ctx.where}: mq_open('${q.name}', maxmsg ${q.maxmsg}, msgsize ${q.msgsize}) failed: ${errnoText(-r)}`
        );
      const h = ctx.high(r, ctx.where);
      ctx.hold(heldKey, h);
      inj.call(SYS.fchmod, h, q.mode);
      inj.call(SYS.fchown, h, q.uid, q.gid);
      if (q.msgs.length) refill(ctx, h, q);
    }
    const r = Number(inj.call(SYS.mq_open, ctx.str(name), (fl.flags & (3 | O.NONBLOCK)) | O.CLOEXEC, 0, 0));
    if (r < 0) throw new CriuError("restore", `${ctx.where}: mq_open('${q.name}') failed: ${errnoText(-r)}`);
    return ctx.high(r, ctx.where);
  },
};

function readLines(dir: string): (QueueLine | FileLine)[] {
  return readFileSync(join(dir, MQ_IMAGE), "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}
function cachedLines(ctx: RestoreCtx): (QueueLine | FileLine)[] {
  return ctx.state.once(MQ_IMAGE, () => readLines(ctx.dir));
}

function refill(ctx: RestoreCtx, targetFd: number, q: QueueLine) {
  const pfd = syscall(NR.pidfd_open, ctx.pid, 0);
  if (pfd < 0) throw new CriuError("restore", sysFailed(ctx.where, "pidfd_open", pfd));
  const fd = syscall(NR.pidfd_getfd, pfd, targetFd, 0);
  closeFd(pfd);
  if (fd < 0) throw new CriuError("restore", sysFailed(ctx.where, "pidfd_getfd", fd));
  const ts = new BigInt64Array(2);
  try {
    for (const m of q.msgs) {
      const data = new Uint8Array(Buffer.from(m.data, "base64"));
      const r = syscall(SYS.mq_timedsend, fd, addr(data), data.length, m.prio, addr(ts));
      if (r < 0)
        throw new CriuError("restore", `${ctx.where}: sending a message to '${q.name}' failed: ${errnoText(-r)}`);
    }
  } finally {
    closeFd(fd);
  }
}
