// timerfd: clock, settime flags, remaining time and period, and expirations not read yet.
// The remaining time comes from timerfd_gettime on a grabbed copy (fdinfo shows it_value 0 for a
// periodic timer that expired and was not read yet; gettime forwards it and counts the ticks).
// Restore re-arms with the settime flags it had (an absolute timer at the process's clock now plus
// the time left, as CRIU does) and puts back the unread ticks with TFD_IOC_SET_TICKS.
import { readFileSync } from "../sys/fs";
import type { FdKind } from "./fdkind";
import { FOWN0 } from "./fdkind";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { O } from "../sys/mem";
import { CriuError, log } from "../log";
import { errnoText, sysFailed } from "../sys/errno";
import { fd_types } from "../images/schemas";

const TFD_IOC_SET_TICKS = 0x40085400; // _IOW('T', 0, u64)
const TFD_TIMER_ABSTIME = 1,
  TFD_TIMER_CANCEL_ON_SET = 2;

function field(text: string, name: string): string | undefined {
  const m = new RegExp(`^${name}:\\s*(.*)$`, "m").exec(text);
  return m?.[1].trim();
}

export const timerfdKind: FdKind = {
  name: "timerfd",
  type: fd_types.TIMERFD,
  match: (target) => target === "anon_inode:[timerfd]",
  dump(ctx) {
    const fd = ctx.grab();
    const its = new BigInt64Array(4); // it_interval {sec, nsec}, it_value {sec, nsec}
    const r = syscall(NR.timerfd_gettime, fd, addr(its));
    if (r < 0) throw new CriuError("files", sysFailed(ctx.where, "timerfd_gettime", r));
    // read fdinfo again: gettime may have moved expirations into ticks
    const text = readFileSync(`/proc/${ctx.pid}/fdinfo/${ctx.fd}`, "latin1");
    const clockid = Number(field(text, "clockid") ?? NaN);
    const ticks = BigInt(field(text, "ticks") ?? "0");
    const settimeFlags = parseInt(field(text, "settime flags") ?? "0", 8);
    if (!Number.isFinite(clockid)) throw new CriuError("files", `${ctx.where}: timerfd without clockid in fdinfo`);
    return ctx.files.add(null, (id) => ({
      id,
      type: 17,
      tfd: {
        id,
        flags: ctx.flags,
        fown: FOWN0,
        clockid,
        ticks,
        settimeFlags,
        vsec: its[2],
        vnsec: its[3],
        isec: its[0],
        insec: its[1],
      },
    }));
  },
  restore(ctx, f) {
    const t = f.tfd!,
      inj = ctx.inj;
    const fd = Number(inj.call(NR.timerfd_create, t.clockid, (t.flags & O.NONBLOCK) | O.CLOEXEC));
    if (fd < 0)
      throw new CriuError("restore", `${ctx.where}: timerfd_create(clock ${t.clockid}) failed: ${errnoText(-fd)}`);
    let vsec = t.vsec,
      vnsec = t.vnsec;
    // a periodic timer whose first expiry was not seen: arm for one period
    if (vsec === 0n && vnsec === 0n && (t.isec || t.insec)) {
      vsec = t.isec;
      vnsec = t.insec;
    }
    // the settime flags as they were (fdinfo "settime flags", CRIU's settime_flags): TFD_TIMER_ABSTIME
    // and TFD_TIMER_CANCEL_ON_SET. The image holds the time left, as CRIU's does (timerfd_gettime,
    // fdinfo it_value); an absolute timer is armed at the process's own clock now plus that (read
    // in the process: a time namespace moves its monotonic and boot clocks). A disarmed timer with
    // flags is set too (zero value): the kernel keeps the flags and CANCEL_ON_SET's watch.
    const flags = t.settimeFlags ?? 0;
    if (flags & ~(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET))
      throw new CriuError("restore", `${ctx.where}: timerfd settime flags ${flags.toString(8)} are not known`);
    if (vsec || vnsec || flags) {
      if (flags & TFD_TIMER_ABSTIME && (vsec || vnsec)) {
        const ts = ctx.scratch(64n, new Uint8Array(16));
        const r = inj.call(NR.clock_gettime, t.clockid, ts);
        if (r < 0n)
          throw new CriuError("restore", `${ctx.where}: clock_gettime(${t.clockid}) failed: ${errnoText(-r)}`);
        const now = new BigInt64Array(ctx.mem.read(ts, 16).buffer);
        const ns = now[1] + BigInt(vnsec);
        vsec = BigInt(vsec) + now[0] + ns / 1_000_000_000n;
        vnsec = ns % 1_000_000_000n;
      }
      const a = ctx.scratch(0n, new Uint8Array(new BigUint64Array([t.isec, t.insec, vsec, vnsec]).buffer));
      const r = inj.call(NR.timerfd_settime, fd, flags, a, 0);
      if (r < 0n) throw new CriuError("restore", `${ctx.where}: timerfd_settime failed: ${errnoText(-r)}`);
      log.debug(
        `timerfd: ${ctx.where}: clock ${t.clockid}, settime flags ${flags.toString(8).padStart(2, "0")}, ${flags & TFD_TIMER_ABSTIME ? "absolute" : "relative"} value ${vsec}.${String(vnsec).padStart(9, "0")} s, interval ${t.isec}.${String(t.insec).padStart(9, "0")} s`
      );
    }
    if (t.ticks) {
      const a = ctx.scratch(64n, new Uint8Array(new BigUint64Array([t.ticks]).buffer));
      const r = inj.call(NR.ioctl, fd, TFD_IOC_SET_TICKS, a);
      if (r < 0n)
        throw new CriuError(
          "restore",
          `${ctx.where}: TFD_IOC_SET_TICKS(${t.ticks}) failed: ${errnoText(-r)}; the kernel needs CONFIG_CHECKPOINT_RESTORE`
        );
    }
    return ctx.high(fd, ctx.where);
  },
};
