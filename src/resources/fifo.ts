// FIFOs (named pipes), in CRIU's layout: file_entry FIFO with fifo_entry {id, pipe_id = the
// FIFO's inode, regf_id}, where regf_id is a separate REG file_entry holding the path and the
// open flags (no fd uses that entry directly). Unread bytes go to fifo-data.img (FIFO_DATA:
// pipe_data_entry + payload), once per FIFO, peeked with tee() so the dumped process keeps them.
// Restore: the first process of the tree that needs a FIFO opens it O_RDWR (never blocks on
// Linux: it is reader and writer at once), holds that fd until every process has its files
// (ctx.hold) and refills the data through it. Every end is then opened by path with its flags
// | O_NONBLOCK (the held fd is the other end, so neither O_RDONLY nor O_WRONLY waits) and
// O_NONBLOCK is cleared again with F_SETFL unless the dumped end had it. An end in packet mode
// (O_DIRECT, set with F_SETFL: open() refuses it on a FIFO with EINVAL) is opened without it and
// gets it with that F_SETFL; packets queued in the FIFO are refused at dump (pipe.ts peekPipe).
import { statSync } from "../sys/fs";
import { removedFromName } from "../sys/proc";
import type { FdKind } from "./fdkind";
import { cachedPayloadsBy } from "./fdkind";
import { regEntry } from "./reg";
import { peekPipe, fillPipe } from "./pipe";
import { NR } from "../sys/nr";
import { O, F } from "../sys/mem";
import * as S from "../images/schemas";
import { refuse } from "./unsupported";
import { CriuError, log } from "../log";
import { errnoText } from "../sys/errno";
import { fd_types } from "../images/schemas";

function fifoPath(ctx: { files: Map<number, S.file_entry> }, f: S.file_entry, where: string): S.reg_file_entry {
  const reg = ctx.files.get(f.fifo!.regfId ?? -1)?.reg;
  if (!reg)
    throw new CriuError("restore", `${where}: fifo ${f.id} has no path entry (regf_id ${f.fifo!.regfId}) in files.img`);
  return reg;
}

export const fifoKind: FdKind = {
  name: "fifo",
  type: fd_types.FIFO,
  match: (target, st) => st.isFIFO() && target.startsWith("/"),
  dump(ctx) {
    const { target, st } = ctx;
    if (removedFromName(`/proc/${ctx.pid}/root`, target, st)) {
      refuse("files", ctx.where, "deleted-special", `'${target.slice(0, -10)}', a FIFO`);
    }
    const pipeId = Number(st.ino);
    const regfId = ctx.files.add(null, (id) => ({
      id,
      type: 1,
      reg: regEntry(id, target, ctx.flags, 0n, undefined, Number(st.mode)),
    }));
    const id = ctx.files.add(null, (id) => ({ id, type: 3, fifo: { id, pipeId, regfId } }));
    const key = `fifo:${st.dev}:${st.ino}`;
    if (!ctx.files.byKey.has(key)) {
      ctx.files.byKey.set(key, id);
      // a grabbed read end peeks in place; a write-only end is reopened read-only through /proc
      const readable = (ctx.flags & 3) !== O.WRONLY ? ctx.grab() : undefined;
      const { data, size, packets } = peekPipe(ctx.pid, ctx.fd, ctx.where, readable);
      if (packets) refuse("files", ctx.where, "pipe-packets", `FIFO '${target}', ${data.length} bytes queued`);
      ctx.images.ensure("fifo-data.img", "FIFO_DATA");
      if (data.length || size !== 65536)
        ctx.images.add(
          "fifo-data.img",
          "FIFO_DATA",
          S.pipe_data_entrySchema,
          { pipeId, bytes: data.length, size },
          data
        );
    }
    return id;
  },
  requireImages(f, run, need) {
    if (f.fifo && run.inventory.allImages) need("fifo-data.img", `files.img has FIFO ${f.fifo.pipeId}`);
  },
  precheck(f, _dir, where) {
    if (!f.fifo) throw new CriuError("restore", `${where}: fifo file ${f.id} has no fifo entry`);
  },
  restore(ctx, f) {
    const fi = f.fifo!,
      inj = ctx.inj;
    const reg = fifoPath(ctx, f, ctx.where);
    let st;
    try {
      // seen from the process's root: in a container that is its rootfs (its mount namespace is
      // made before its files), not criu-bun's
      st = statSync(`/proc/${ctx.pid}/root${reg.name}`);
    } catch (e) {
      throw new CriuError("restore", `${ctx.where}: fifo '${reg.name}' does not exist any more: ${errnoText(e)}`);
    }
    if (!st.isFIFO()) throw new CriuError("restore", `${ctx.where}: '${reg.name}' is not a fifo any more`);
    const key = `fifo:${fi.pipeId}:${reg.name}` as const;
    if (!ctx.tree.held.has(key)) {
      // first use in the tree: hold the pipe open (reader and writer) and put the data back
      const h = Number(inj.call(NR.openat, -100, ctx.str(reg.name), O.RDWR | O.NONBLOCK | O.CLOEXEC, 0));
      if (h < 0) throw new CriuError("restore", `${ctx.where}: cannot open fifo '${reg.name}': ${errnoText(-h)}`);
      const held = ctx.high(h, ctx.where);
      ctx.hold(key, held);
      const item = cachedPayloadsBy(ctx, "fifo-data.img", "FIFO_DATA", (m) => m.pipeId).get(fi.pipeId)?.[0];
      if (item) {
        const want = Math.max(item.msg.size || 65536, item.payload.length);
        if (want !== 65536) {
          const r = inj.call(NR.fcntl, held, F.SETPIPE_SZ, want);
          if (r < 0n)
            throw new CriuError(
              "restore",
              `${ctx.where}: F_SETPIPE_SZ(${want}) on fifo '${reg.name}' failed: ${errnoText(-r)}`
            );
        }
        if (item.payload.length) fillPipe(ctx.pid, held, item.payload, `refill fifo '${reg.name}'`);
      }
    }
    const flags = reg.flags & ~(O.CREAT | O.EXCL | O.TRUNC | O.CLOEXEC);
    const r = Number(inj.call(NR.openat, -100, ctx.str(reg.name), (flags & ~O.DIRECT) | O.NONBLOCK | O.CLOEXEC, 0));
    if (r < 0) throw new CriuError("restore", `${ctx.where}: cannot open fifo '${reg.name}': ${errnoText(-r)}`);
    const fd = ctx.high(r, ctx.where);
    if (flags & O.DIRECT) log.debug(`${ctx.where}: fifo '${reg.name}' end in packet mode: O_DIRECT set with F_SETFL`);
    if (!(flags & O.NONBLOCK) || flags & O.DIRECT) {
      const s = inj.call(NR.fcntl, fd, F.SETFL, flags & ~3);
      if (s < 0n)
        throw new CriuError("restore", `${ctx.where}: F_SETFL on fifo '${reg.name}' failed: ${errnoText(-s)}`);
    }
    return fd;
  },
};
