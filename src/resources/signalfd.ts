// signalfd: the signal mask (fdinfo sigmask, hex) and flags.
import type { FdKind } from "./fdkind";
import { FOWN0 } from "./fdkind";
import { NR } from "../sys/nr";
import { O } from "../sys/mem";
import { CriuError } from "../log";
import { errnoText } from "../sys/errno";
import { fd_types } from "../images/schemas";

export const signalfdKind: FdKind = {
  name: "signalfd",
  type: fd_types.SIGNALFD,
  match: (target) => target === "anon_inode:[signalfd]",
  dump(ctx) {
    const m = ctx.fdinfo.sigmask;
    if (m === undefined) throw new CriuError("files", `${ctx.where}: signalfd without sigmask in fdinfo`);
    const sigmask = BigInt("0x" + m);
    return ctx.files.add(null, (id) => ({ id, type: 9, sgfd: { id, flags: ctx.flags, fown: FOWN0, sigmask } }));
  },
  restore(ctx, f) {
    const s = f.sgfd!;
    const a = ctx.scratch(0n, new Uint8Array(new BigUint64Array([s.sigmask]).buffer));
    const fd = Number(ctx.inj.call(NR.signalfd4, -1, a, 8, (s.flags & O.NONBLOCK) | O.CLOEXEC));
    if (fd < 0) throw new CriuError("restore", `${ctx.where}: signalfd4 failed: ${errnoText(-fd)}`);
    return ctx.high(fd, ctx.where);
  },
};
