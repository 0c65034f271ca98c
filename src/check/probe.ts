// What a probe is: a named test that exercises one kernel feature for real.
// A probe returns normally when the feature works (optionally with a detail for the log) and
// throws when it does not; the thrown message becomes the reason shown by `check --all`.
import { syscall, addr, cstr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { SysError, errnoText } from "../sys/errno";
import { closeFd } from "../sys/mem";

export interface Probe {
  /** criu's feature name where criu has one, else ours */
  name: string;
  /** basic: `criu-bun check` fails without it; others are reported by --all / --feature */
  basic: boolean;
  /** what criu-bun uses it for */
  desc: string;
  run(): string | void;
}

/** A feature that is not there (as opposed to a probe that broke). */
export class Missing extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "Missing";
  }
}

export function need(cond: unknown, reason: string): asserts cond {
  if (!cond) throw new Missing(reason);
}

/** Raw syscall that must succeed; a failure is reported as the feature missing. */
export function sys(what: string, nr: number, ...a: (number | bigint)[]): number {
  const r = syscall(nr, a[0] ?? 0, a[1] ?? 0, a[2] ?? 0, a[3] ?? 0, a[4] ?? 0, a[5] ?? 0);
  if (r < 0 && r > -4096) throw new Missing(`${what}: ${errnoText(-r)}`);
  return r;
}

export function errText(e: unknown): string {
  if (e instanceof SysError) return e.message;
  return (e as Error)?.message ?? String(e);
}

/** Run fn with fds collected in `fds`; close them all afterwards. */
export function withFds<T>(fn: (fds: number[]) => T): T {
  const fds: number[] = [];
  try {
    return fn(fds);
  } finally {
    for (const fd of fds) if (fd >= 0) closeFd(fd);
  }
}

export const MFD = { CLOEXEC: 1, ALLOW_SEALING: 2, HUGETLB: 4 } as const;
export function memfd(name: string, flags: number = MFD.CLOEXEC): number {
  const n = cstr(name);
  return sys("memfd_create", NR.memfd_create, addr(n), flags);
}

export const hex = (v: bigint | number) => "0x" + v.toString(16);
