// Pipes: both ends, flags, and the unread bytes (pipes-data.img), shared across fds and processes.
import type { FdKind, HeldKey, RestoreCtx } from "./fdkind";
import { FOWN0, cachedPayloadsBy } from "./fdkind";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { openFd, closeFd, O, writeFull, F } from "../sys/mem";
import * as S from "../images/schemas";
import { CriuError, log } from "../log";
import { errnoText, sysFailed } from "../sys/errno";
import { fd_types } from "../images/schemas";
import { refuse } from "./unsupported";

/** A pipe's unread bytes, read without consuming them: tee() into a scratch pipe, then read that.
 *  readable: an fd of criu-bun's own that may already read the pipe (a grabbed read end of a
 *  FIFO); without it the end is reopened read-only through /proc.
 *  packets: some of the bytes are packets (written in packet mode, O_DIRECT), whose boundaries
 *  the bytes alone do not keep. tee() copies each buffer with its packet flag, and a read() ends
 *  at the end of a packet: the copy, with one more byte written after it, is read in reads that
 *  each ask for all that is left, so a read ending short of that is a packet's end. */
export function peekPipe(
  pid: number,
  fd: number,
  where: string,
  readable?: number
): { data: Uint8Array; size: number; packets: boolean } {
  const rfd = readable ?? openFd(`/proc/${pid}/fd/${fd}`, O.RDONLY | O.NONBLOCK | O.CLOEXEC);
  const pair = new Int32Array(2);
  try {
    const size = syscall(NR.fcntl, rfd, F.GETPIPE_SZ);
    if (size < 0) throw new CriuError("files", sysFailed(where, "F_GETPIPE_SZ", size));
    const r = syscall(NR.pipe2, addr(pair), O.NONBLOCK | O.CLOEXEC);
    if (r < 0) throw new CriuError("files", sysFailed(where, "pipe2 (for a copy of the pipe)", r));
    // room for every buffer of the pipe and the one-byte mark after them
    if (syscall(NR.fcntl, pair[1], F.SETPIPE_SZ, size * 2) < 0) syscall(NR.fcntl, pair[1], F.SETPIPE_SZ, size);
    const n = syscall(NR.tee, rfd, pair[1], size, 2 /* SPLICE_F_NONBLOCK */);
    if (n === -11) return { data: new Uint8Array(0), size, packets: false };
    if (n < 0) throw new CriuError("files", sysFailed(where, "tee", n));
    // without the mark (no room for it) a packet that is the last buffer goes unseen
    const mark = syscall(NR.write, pair[1], addr(new Uint8Array([0x5a])), 1) === 1 ? 1 : 0;
    if (!mark) log.debug(`${where}: no room after the copy of the pipe for the mark: a last packet would go unseen`);
    const all = new Uint8Array(n + mark);
    let got = 0,
      reads = 0;
    while (got < all.length) {
      const k = syscall(NR.read, pair[0], addr(all, got), all.length - got);
      if (k <= 0)
        throw new CriuError(
          "files",
          k < 0
            ? sysFailed(where, "reading the pipe's copy", k)
            : `${where}: the pipe's copy ended after ${got} of ${n} bytes`
        );
      got += k;
      reads++;
    }
    return { data: all.subarray(0, n), size, packets: reads > 1 };
  } finally {
    if (readable === undefined) closeFd(rfd);
    if (pair[0]) closeFd(pair[0]);
    if (pair[1]) closeFd(pair[1]);
  }
}

/** Refill a freshly made pipe in the target through its write end (from criu-bun, via /proc). */
export function fillPipe(pid: number, wfd: number, data: Uint8Array, what: string) {
  const fd = openFd(`/proc/${pid}/fd/${wfd}`, O.WRONLY | O.NONBLOCK | O.CLOEXEC);
  try {
    writeFull(fd, data, what);
  } finally {
    closeFd(fd);
  }
}

export const pipeKind: FdKind = {
  name: "pipe",
  type: fd_types.PIPE,
  match: (target) => target.startsWith("pipe:["),
  requireImages(f, run, need) {
    if (f.pipe && run.inventory.allImages) need("pipes-data.img", `files.img has pipe ${f.pipe.pipeId}`);
  },
  dump(ctx) {
    const pipeId = Number(/^pipe:\[(\d+)\]$/.exec(ctx.target)![1]);
    const id = ctx.files.add(null, (id) => ({ id, type: 2, pipe: { id, pipeId, flags: ctx.flags, fown: FOWN0 } }));
    const key = `pipe:${pipeId}`;
    if (!ctx.files.byKey.has(key)) {
      ctx.files.byKey.set(key, id);
      const { data, size, packets } = peekPipe(ctx.pid, ctx.fd, ctx.where);
      // a restored pipe is refilled with plain writes: packet boundaries would be lost
      if (packets) refuse("files", ctx.where, "pipe-packets", `pipe:[${pipeId}], ${data.length} bytes queued`);
      // an empty pipe too when its capacity is not the default (F_SETPIPE_SZ)
      ctx.images.ensure("pipes-data.img", "PIPES_DATA");
      if (data.length || size !== 65536)
        ctx.images.add(
          "pipes-data.img",
          "PIPES_DATA",
          S.pipe_data_entrySchema,
          { pipeId, bytes: data.length, size },
          data
        );
    }
    return id;
  },
  restore(ctx, f) {
    const p = f.pipe!;
    const inj = ctx.inj;
    // inherit_fd pipe:[ino]: the caller's fd takes this pipe's place (a container's stdio, whose
    // other end is the runtime's); its unread bytes are still in the pipe the caller kept
    const inheritKey = `inherit:pipe:[${p.pipeId}]` as const;
    if (ctx.tree.held.has(inheritKey)) return inheritedPipe(ctx, p, inheritKey);
    const rKey = `pipe:${p.pipeId}:r` as const,
      wKey = `pipe:${p.pipeId}:w` as const;
    if (!ctx.tree.held.has(rKey)) {
      // first use of this pipe anywhere in the tree: make it here, refill it, hold both ends
      const a = ctx.scratch(0n, new Uint8Array(8));
      inj.ok("pipe2", NR.pipe2, a, O.CLOEXEC);
      const v = new Int32Array(ctx.mem.read(a, 8).buffer);
      const [r, w] = ctx.highMany([v[0], v[1]], ctx.where);
      ctx.hold(rKey, r);
      ctx.hold(wKey, w);
      const item = cachedPayloadsBy(ctx, "pipes-data.img", "PIPES_DATA", (m) => m.pipeId).get(p.pipeId)?.[0];
      if (item) {
        const want = Math.max(item.msg.size || 65536, item.payload.length);
        if (want !== 65536) {
          const r = inj.call(NR.fcntl, w, F.SETPIPE_SZ, want);
          if (r < 0n)
            throw new CriuError(
              "restore",
              `${ctx.where}: F_SETPIPE_SZ(${want}) on pipe ${p.pipeId} failed: ${errnoText(-r)}`
            );
        }
        if (item.payload.length) fillPipe(ctx.pid, w, item.payload, `refill pipe ${p.pipeId}`);
      }
    }
    const key = (p.flags & 3) === O.WRONLY ? wKey : rKey;
    let fd: number;
    if (ctx.tree.taken.has(key)) {
      // another open description of the same end: reopen through /proc gives a new one
      const h = ctx.tree.held.get(key)!;
      const r = Number(inj.call(NR.openat, -100, ctx.str(`/proc/${h.pid}/fd/${h.fd}`), (p.flags & 3) | O.CLOEXEC, 0));
      if (r < 0) throw new CriuError("restore", `${ctx.where}: reopening pipe ${p.pipeId} failed: ${errnoText(-r)}`);
      fd = ctx.high(r, ctx.where);
    } else {
      ctx.tree.taken.add(key);
      // our own description of this end (dup of the held one: the held fd is closed later)
      const src = ctx.fdFrom(key)!;
      fd = ctx.dupHigh(src, `${ctx.where}: pipe ${p.pipeId}`);
      if (src !== ctx.tree.held.get(key)!.fd || ctx.tree.held.get(key)!.pid !== ctx.pid) inj.call(NR.close, src);
    }
    // status flags, O_DIRECT (packet mode) too: F_SETFL takes it on a pipe
    const sr = inj.call(NR.fcntl, fd, F.SETFL, p.flags & ~3);
    if (sr < 0n)
      throw new CriuError(
        "restore",
        `${ctx.where}: F_SETFL(${(p.flags & ~3).toString(8)}) on pipe ${p.pipeId} failed: ${errnoText(-sr)}`
      );
    if (p.flags & O.DIRECT) log.debug(`${ctx.where}: pipe ${p.pipeId} end in packet mode (O_DIRECT)`);
    return fd;
  },
};

const ACCMODE = ["read-only", "write-only", "read-write"];

/** An end of a pipe the caller handed over (inherit_fd): one more fd of the same open file description. */
function inheritedPipe(ctx: RestoreCtx, p: S.pipe_entry, key: HeldKey): number {
  const inj = ctx.inj;
  const src = ctx.fdFrom(key)!;
  const fl = Number(inj.call(NR.fcntl, src, F.GETFL));
  if (fl < 0)
    throw new CriuError(
      "restore",
      `${ctx.where}: F_GETFL on the inherited fd for pipe:[${p.pipeId}] failed: ${errnoText(-fl)}`
    );
  if ((fl & 3) !== (p.flags & 3)) {
    throw new CriuError(
      "restore",
      `${ctx.where}: the fd inherited for pipe:[${p.pipeId}] is ${ACCMODE[fl & 3] ?? fl & 3}, the dumped end was ${ACCMODE[p.flags & 3] ?? p.flags & 3}`
    );
  }
  const d = Number(inj.call(NR.fcntl, src, F.DUPFD_CLOEXEC, 0));
  if (d < 0)
    throw new CriuError(
      "restore",
      `${ctx.where}: dup of the inherited fd for pipe:[${p.pipeId}] failed: ${errnoText(-d)}`
    );
  const h = ctx.tree.held.get(key)!;
  if (src !== h.fd || h.pid !== ctx.pid) inj.call(NR.close, src);
  const fd = ctx.high(d, ctx.where);
  // status flags live in the shared description: set only what differs from the dump
  const want = p.flags & (O.NONBLOCK | O.APPEND | O.ASYNC | O.DIRECT);
  if ((fl & (O.NONBLOCK | O.APPEND | O.ASYNC | O.DIRECT)) !== want) {
    const sr = inj.call(NR.fcntl, fd, F.SETFL, p.flags & ~3);
    if (sr < 0n)
      throw new CriuError(
        "restore",
        `${ctx.where}: F_SETFL on the inherited fd for pipe:[${p.pipeId}] failed: ${errnoText(-sr)}`
      );
  }
  ctx.tree.taken.add(key);
  log.debug(
    `${ctx.where}: pipe:[${p.pipeId}] is the inherited fd (inherit_fd), its dumped bytes stay with the caller's pipe`
  );
  return fd;
}
