// epoll: the interest list from fdinfo lines "tfd: N events: X data: Y pos: P ino: I sdev: D".
// Kept in file_entry.epfd.tfd (CRIU 3.15+ layout; older eventpoll-tfd.img is read too).
// Restored in the late pass: epoll_create1 first, epoll_ctl(ADD) once every fd has its number.
// An EPOLLONESHOT target that fired already is disarmed: the kernel keeps only the private bits
// (EPOLLONESHOT, EPOLLET, EPOLLWAKEUP, EPOLLEXCLUSIVE) of its events. No epoll_ctl makes that
// state (ADD and MOD always arm EPOLLERR|EPOLLHUP): refused at dump, and at restore too when an
// image holds one. (An EPOLLET target whose edge was reported already is reported again after a
// restore, as with CRIU: a known gap, see test/EXACT-OR-REFUSED.md.)
import type { FdKind } from "./fdkind";
import { FOWN0, cachedImage } from "./fdkind";
import { NR } from "../sys/nr";
import { F } from "../sys/mem";
import { CriuError, log } from "../log";
import { syscall, addr } from "../sys/syscall";
import { refuse } from "./unsupported";
import { errnoText } from "../sys/errno";
import { fd_types } from "../images/schemas";

const EPOLL_CLOEXEC = 0o2000000;
const EPOLLONESHOT = 1 << 30;
/** EPOLLEXCLUSIVE | EPOLLWAKEUP | EPOLLONESHOT | EPOLLET: the bits a fired one-shot keeps */
const EP_PRIVATE_BITS = (1 << 28) | (1 << 29) | EPOLLONESHOT | (1 << 31);
/** a one-shot target that fired: disarmed, nothing but the private bits left */
const disarmed = (events: number) => (events & EPOLLONESHOT) !== 0 && (events & ~EP_PRIVATE_BITS) === 0;

function parseEpollTfds(
  text: string
): { tfd: number; events: number; data: bigint; pos: bigint; inode: bigint; dev: number }[] {
  const out = [];
  for (const line of text.split("\n")) {
    const m =
      /^tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)\s+pos:\s*(\d+)\s+ino:\s*([0-9a-f]+)\s+sdev:\s*([0-9a-f]+)/.exec(
        line
      );
    if (m)
      out.push({
        tfd: +m[1],
        events: parseInt(m[2], 16),
        data: BigInt("0x" + m[3]),
        pos: BigInt(m[4]),
        inode: BigInt("0x" + m[5]),
        dev: parseInt(m[6], 16),
      });
  }
  return out;
}

function oneshotFired(where: string, t: { tfd: number; events: number }): never {
  throw new CriuError(
    "restore",
    `${where}: epoll target fd ${t.tfd} is a one-shot that fired already (events ${(t.events >>> 0).toString(16)}): epoll_ctl cannot make it disarmed again`
  );
}

export const epollKind: FdKind = {
  name: "epoll",
  type: fd_types.EVENTPOLL,
  match: (target) => target === "anon_inode:[eventpoll]",
  dump(ctx) {
    const tfds = parseEpollTfds(ctx.fdinfoText);
    // restore adds each target through its fd number: that number must still be the very file
    // the target was added as (not closed since, not reused for another file)
    const seen = new Map<number, number>();
    for (const t of tfds) {
      const toff = seen.get(t.tfd) ?? 0;
      seen.set(t.tfd, toff + 1);
      const slot = new Uint32Array([ctx.fd, t.tfd, toff]);
      const r = syscall(NR.kcmp, ctx.pid, ctx.pid, 7 /* KCMP_EPOLL_TFD */, t.tfd, addr(slot));
      if (r !== 0)
        refuse(
          "files",
          ctx.where,
          "epoll-stale",
          `target added as fd ${t.tfd}, which ${r === -9 ? "is closed" : "is another file"} now`
        );
      if (disarmed(t.events))
        refuse(
          "files",
          ctx.where,
          "epoll-oneshot-fired",
          `target fd ${t.tfd}, events ${(t.events >>> 0).toString(16)}`
        );
    }
    return ctx.files.add(null, (id) => ({
      id,
      type: 7,
      epfd: {
        id,
        flags: ctx.flags,
        fown: FOWN0,
        tfd: tfds.map((t) => ({
          id,
          tfd: t.tfd,
          events: t.events,
          data: t.data,
          dev: t.dev,
          inode: t.inode,
          pos: t.pos,
        })),
      },
    }));
  },
  precheck(f, _dir, where) {
    // before anything is made (the old layout's eventpoll-tfd.img is checked in restoreLate)
    for (const t of f.epfd?.tfd ?? []) if (disarmed(t.events)) oneshotFired(where, t);
  },
  restore(ctx) {
    const fd = Number(ctx.inj.call(NR.epoll_create1, EPOLL_CLOEXEC));
    if (fd < 0) throw new CriuError("restore", `${ctx.where}: epoll_create1 failed: ${errnoText(-fd)}`);
    return ctx.high(fd, ctx.where);
  },
  restoreLate(ctx, f, epfd) {
    const e = f.epfd!;
    let tfds = e.tfd;
    if (!tfds.length) tfds = cachedImage(ctx, "eventpoll-tfd.img", "EVENTPOLL_TFD").filter((t) => t.id === e.id);
    for (const t of tfds) if (disarmed(t.events)) oneshotFired(ctx.where, t);
    for (const t of tfds) {
      const ev = new Uint8Array(12); // struct epoll_event is packed on x86_64
      const dv = new DataView(ev.buffer);
      dv.setUint32(0, t.events, true);
      dv.setBigUint64(4, t.data, true);
      const r = ctx.inj.call(NR.epoll_ctl, epfd, 1 /* EPOLL_CTL_ADD */, t.tfd, ctx.scratch(0n, ev));
      if (r < 0n) throw new CriuError("restore", `${ctx.where}: epoll_ctl(ADD fd ${t.tfd}) failed: ${errnoText(-r)}`);
      log.debug(`${ctx.where}: epoll target fd ${t.tfd} added, events ${(t.events >>> 0).toString(16)}`);
    }
    if (e.flags & 0o4000) ctx.inj.call(NR.fcntl, epfd, F.SETFL, e.flags);
  },
};
