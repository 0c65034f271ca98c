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
// priorities, before this fd's dump returns, whatever happens later in the dump. Every buffer is
// made before the first receive and each message is sent back whatever the others' sends gave, so
// that no failure of criu-bun's own between the two loses a message of the running target.
// Zero-length messages are messages like the others ("data":""). A queue with an mq_notify
// registration is refused (refilling an emptied queue would fire it), so is an unlinked one, and
// a full one (mqueue-full: a sender blocked on it, outside the tree, would slip its message in as
// soon as one is taken out, and the taken one could not go back). Messages sent by processes
// outside the tree while it is drained would be interleaved: the dumped tree is frozen, outsiders
// are not (the count differs afterwards and the dump fails).
// Restore: the first process needing the queue mq_unlink()s a leftover of the same name (the
// queue outlives the killed process, with the dumped messages still in it), creates it
// (mq_open 240, O_CREAT|O_EXCL, maxmsg/msgsize), sets mode and owner, holds that fd for the
// tree, and criu-bun sends the messages through a pidfd_getfd copy. Every description is then
// its own mq_open with its flags (access mode, O_NONBLOCK).
import type { FdKind, RestoreCtx } from "./fdkind";
import { removedFromName } from "../sys/proc";
import { FOWN0 } from "./fdkind";
import { syscall, addr, cstr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { openFd, closeFd, O } from "../sys/mem";
import { CriuError, log } from "../log";
import { refuse } from "./unsupported";
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
  EAGAIN = 11,
  EINTR = 4;
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

/** One message taken from a queue: its priority and its bytes (data.length 0 for an empty message). */
interface Msg {
  prio: number;
  data: Uint8Array;
}
// a byte that is never read: the address mq_timedsend is given for a zero-length message (the FFI
// has no address for an empty typed array, and the kernel reads none of it)
const ONE = new Uint8Array(1);
/** mq_timedsend of one message with an expired timeout (never blocks): 0 or -errno, never throws */
function sendOne(q: number, m: Msg, ts: BigInt64Array): number {
  for (;;) {
    const r = syscall(SYS.mq_timedsend, q, addr(m.data.length ? m.data : ONE), m.data.length, m.prio, addr(ts));
    if (r !== -EINTR) return r;
  }
}

/**
 * Receive every message of queue fd q (never blocks), then send them all back in order. The
 * messages' bytes go to one buffer made before the first is taken (qsize bytes, what the queue's
 * messages hold together, and room for one more), so that nothing between the first receive and
 * the last send can fail but the kernel's calls, and each message is sent back whatever the
 * others' sends gave. A full queue never gets here (refused by the caller: a receive would let in
 * the message of a sender blocked on it). A sender outside the tree may still add messages while
 * the queue is read: the reading stops when the buffer has no room for another, and the caller
 * finds the count changed.
 */
function drainAndRefill(q: number, maxmsg: number, msgsize: number, qsize: number, where: string): Msg[] {
  const ts = new BigInt64Array(2); // absolute time 0: already expired
  const pool = new Uint8Array(qsize + msgsize);
  const prio = new Uint32Array(maxmsg + 1),
    start = new Float64Array(maxmsg + 1),
    len = new Float64Array(maxmsg + 1);
  let n = 0,
    used = 0,
    err: string | undefined;
  while (n <= maxmsg && used + msgsize <= pool.length) {
    const r = syscall(SYS.mq_timedreceive, q, addr(pool, used), msgsize, addr(prio, n * 4), addr(ts));
    if (r === -EINTR) continue;
    if (r === -ETIMEDOUT || r === -EAGAIN) break;
    if (r < 0) {
      err = `mq_timedreceive failed: ${errnoText(-r)}`;
      break;
    }
    start[n] = used;
    len[n++] = r;
    used += r;
  }
  const msgs: Msg[] = [];
  for (let i = 0; i < n; i++) msgs.push({ prio: prio[i], data: pool.subarray(start[i], start[i] + len[i]) });
  const lost: string[] = [];
  for (const m of msgs) {
    const r = sendOne(q, m, ts);
    if (r < 0) lost.push(`a message of ${m.data.length} bytes at priority ${m.prio}: ${errnoText(-r)}`);
  }
  if (lost.length)
    throw new CriuError(
      "files",
      `${where}: putting the messages read back into the queue failed for ${lost.length} of ${n} (${lost.join("; ")}); a sender outside the tree filled it meanwhile`
    );
  if (err) throw new CriuError("files", `${where}: ${err}`);
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
    if (removedFromName(`/proc/${ctx.pid}/root`, target, st))
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
        const text = new TextDecoder().decode(status.subarray(0, Math.max(n, 0)));
        const notify = /NOTIFY_PID:(\d+)/.exec(text)?.[1];
        if (notify && notify !== "0")
          throw new CriuError(
            "files",
            `${ctx.where}: message queue '${target}' has an mq_notify registration (process ${notify}); not supported yet`
          );
        // a sender blocked on a full queue (outside the tree: the tree's own are stopped out of the
        // call) would put its message in as soon as one is taken out, and the taken one could not
        // go back: a full queue is not read at all
        if (curmsgs >= maxmsg)
          refuse("files", ctx.where, "mqueue-full", `'${target}' holds ${curmsgs} of ${maxmsg} messages`);
        const qsize = Number(/QSIZE:\s*(\d+)/.exec(text)?.[1] ?? NaN);
        if (!Number.isFinite(qsize))
          throw new CriuError("files", `${ctx.where}: message queue '${target}': no QSIZE in '${text.trim()}'`);
        const msgs = drainAndRefill(q, maxmsg, msgsize, qsize, ctx.where);
        log.debug(
          `mqueue: ${ctx.where}: '${target}' (maxmsg ${maxmsg}, msgsize ${msgsize}): ${msgs.length} message(s), ${qsize} bytes, read and put back in order${msgs.some((m) => !m.data.length) ? " (zero-length ones among them)" : ""}`
        );
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
      const r = sendOne(fd, { prio: m.prio, data: new Uint8Array(Buffer.from(m.data, "base64")) }, ts);
      if (r < 0)
        throw new CriuError("restore", `${ctx.where}: sending a message to '${q.name}' failed: ${errnoText(-r)}`);
    }
    log.debug(`mqueue: ${ctx.where}: '${q.name}': ${q.msgs.length} message(s) sent in their order`);
  } finally {
    closeFd(fd);
  }
}
