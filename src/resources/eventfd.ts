// eventfd: the counter (fdinfo eventfd-count) and semaphore mode. CRIU's eventfd_file_entry has
// no semaphore field; criu-bun keeps EFD_SEMAPHORE as bit 0 of flags (an eventfd is always O_RDWR,
// so that access-mode bit is otherwise never set, and F_SETFL ignores it).
import type { FdKind } from "./fdkind";
import { FOWN0 } from "./fdkind";
import { NR } from "../sys/nr";
import { O } from "../sys/mem";
import { CriuError } from "../log";
import { errnoText, sysFailed } from "../sys/errno";
import { fd_types } from "../images/schemas";

const EFD_SEMAPHORE = 1;

export const eventfdKind: FdKind = {
  name: "eventfd",
  type: fd_types.EVENTFD,
  match: (target) => target === "anon_inode:[eventfd]",
  dump(ctx) {
    const count = ctx.fdinfo["eventfd-count"];
    if (count === undefined) throw new CriuError("files", `${ctx.where}: eventfd without eventfd-count in fdinfo`);
    const sem = ctx.fdinfo["eventfd-semaphore"] === "1";
    const counter = BigInt("0x" + count.trim());
    return ctx.files.add(null, (id) => ({
      id,
      type: 6,
      efd: { id, flags: ctx.flags | (sem ? EFD_SEMAPHORE : 0), fown: FOWN0, counter },
    }));
  },
  restore(ctx, f) {
    const e = f.efd!;
    const flags = (e.flags & EFD_SEMAPHORE) | (e.flags & O.NONBLOCK) | O.CLOEXEC;
    const small = e.counter <= 0xffffffffn;
    const fd = Number(ctx.inj.call(NR.eventfd2, small ? e.counter : 0n, flags));
    if (fd < 0) throw new CriuError("restore", `${ctx.where}: eventfd2 failed: ${errnoText(-fd)}`);
    if (!small) {
      const a = ctx.scratch(0n, new Uint8Array(new BigUint64Array([e.counter]).buffer));
      const r = ctx.inj.call(NR.write, fd, a, 8);
      if (r !== 8n)
        throw new CriuError(
          "restore",
          r < 0n
            ? sysFailed(ctx.where, `setting eventfd counter ${e.counter}`, r)
            : `${ctx.where}: setting eventfd counter ${e.counter} wrote ${r} of 8 bytes`
        );
    }
    return ctx.high(fd, ctx.where);
  },
};
