// Resource limits of a process, both directions: read at dump from /proc/PID/limits (CRIU's
// RLIMIT_* order), set again at restore with prlimit64 in the process's own injected syscalls.
import { readLimits, type Rlimit } from "../sys/proc";
import { NR } from "../sys/nr";
import { errnoText } from "../sys/errno";
import type { InCall } from "../ptrace/inject";
import type * as S from "../images/schemas";
import { log } from "../log";

const RLIM_INFINITY = 0xffffffffffffffffn;
const show = (v: bigint) => (v === RLIM_INFINITY ? "unlimited" : String(v));

// ---------- dump ----------

/** rlimit_entry per RLIMIT_*, in the kernel's order */
export function dumpRlimits(pid: number): { cur: bigint; max: bigint }[] {
  const limits: Rlimit[] = readLimits(pid);
  log.debug(
    `rlimits: process ${pid}: ${limits.map((l) => `${l.name.trim()} ${show(l.cur)}/${show(l.max)}`).join(", ")}`
  );
  return limits.map((l) => ({ cur: l.cur, max: l.max }));
}

// ---------- restore ----------

/**
 * prlimit64(0, RLIMIT_i, new, NULL) per limit, for the restore's batch. A limit the kernel refuses
 * (a hard limit raised without CAP_SYS_RESOURCE) is a warning, as it has always been.
 */
export function rlimitRestoreCalls(pid: number, rl: S.rlimit_entry[]): InCall[] {
  log.debug(`rlimits: process ${pid}: ${rl.length} limits to set`);
  return rl.map((l, i) => ({
    nr: NR.prlimit64,
    data: [l.cur, l.max],
    args: (lim) => [0, i, lim, 0],
    check: (r) => {
      if (r < 0n) log.warn(`process ${pid}: rlimit ${i} (${l.cur}/${l.max}) not restored: ${errnoText(-r)}`);
    },
  }));
}
