// Regular files, directories and character devices opened by path.
import { statSync, readlinkSync } from "node:fs";
import type { FdKind } from "./fdkind";
import { FOWN0 } from "./fdkind";
import { NR } from "../sys/nr";
import { O } from "../sys/mem";
import { CriuError } from "../log";

export function regEntry(id: number, name: string, flags: number, pos: bigint, size: bigint | undefined, mode: number | undefined) {
  return { id, flags, pos, fown: FOWN0, name, ...(size !== undefined ? { size } : {}), ...(mode !== undefined ? { mode } : {}) };
}

/** /dev/pts/N, /dev/ttyN, /dev/console ... */
export function isTtyPath(p: string) { return /^\/dev\/(pts\/\d+|tty\w*|console)$/.test(p); }
/** the terminal criu-bun itself runs on (its stdin, else stdout/stderr), if any */
export function shellTty(): string | undefined {
  for (const fd of [0, 1, 2]) {
    try { const p = readlinkSync(`/proc/self/fd/${fd}`); if (isTtyPath(p)) return p; } catch {}
  }
  return undefined;
}

function isTty(rdev: bigint) {
  const major = Number(rdev >> 8n) & 0xfff;
  return major === 4 || major === 5 || (major >= 136 && major <= 143);
}

export const regKind: FdKind = {
  name: "regular file",
  type: 1,
  match: (target, st) => target.startsWith("/") && (st.isFile() || st.isDirectory() || st.isCharacterDevice() || st.isBlockDevice()),
  dump(ctx) {
    const { target, st } = ctx;
    if (target.endsWith(" (deleted)")) {
      throw new CriuError("files", `${ctx.where}: '${target.slice(0, -10)}' was deleted while open; deleted files are not supported yet`);
    }
    if (st.isCharacterDevice() && isTty(st.rdev) && !ctx.opts.shellJob) {
      throw new CriuError("files", `${ctx.where}: terminal '${target}' is open; use --shell-job to dump a shell job`);
    }
    const size = st.isFile() ? st.size : undefined;
    return ctx.files.add(null, (id) => ({ id, type: 1, reg: regEntry(id, target, ctx.flags, ctx.pos, size, Number(st.mode)) }));
  },
  precheck(f, _dir, where, opts) {
    const reg = f.reg!;
    if (opts?.shellJob && isTtyPath(reg.name) && shellTty()) return; // it gets our terminal
    let st;
    try { st = statSync(reg.name, { bigint: true }); }
    catch { throw new CriuError("restore", `${where}: '${reg.name}' does not exist any more`); }
    if (reg.size !== undefined && st.isFile() && st.size !== reg.size && !(reg.flags & O.PATH)) {
      throw new CriuError("restore", `${where}: '${reg.name}' has changed size (${st.size} bytes, dumped with ${reg.size})`);
    }
  },
  restore(ctx, f) {
    const reg = f.reg!;
    const flags = reg.flags & ~(O.CREAT | O.EXCL | O.TRUNC | O.CLOEXEC);
    // a shell job's terminal: as criu does, the restored job is attached to criu-bun's terminal
    const name = ctx.opts?.shellJob && isTtyPath(reg.name) ? shellTty() ?? reg.name : reg.name;
    const fd = Number(ctx.inj.call(NR.openat, -100, ctx.str(name), flags, 0));
    if (fd < 0) throw new CriuError("restore", `${ctx.where}: cannot open '${reg.name}' (errno ${-fd})`);
    if (reg.pos && !(reg.flags & O.PATH)) {
      const r = ctx.inj.call(NR.lseek, fd, reg.pos, 0);
      if (r < 0n && r !== -29n) throw new CriuError("restore", `${ctx.where}: lseek to ${reg.pos} in '${reg.name}' failed (errno ${-r})`);
    }
    return ctx.high(fd, ctx.where);
  },
};
