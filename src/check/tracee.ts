// A throwaway tracee for the probes: the restore puppet (seized, interrupt-stopped), a syscall
// injector on its `syscall; int3` and one page of scratch memory mapped inside it. Every process
// started here is killed and reaped before withTracee returns.
import { syscall } from "../sys/syscall";
import { NR } from "../sys/nr";
import { wait4Raw, W, __WALL } from "../sys/ptrace";
import { startPuppet, PUPPET_SYSCALL } from "../ptrace/puppet";
import { Injector, RemoteMem } from "../ptrace/inject";
import { Missing, hex } from "./probe";
import { errnoText } from "../sys/errno";

export interface Tracee {
  pid: number;
  inj: Injector;
  mem: RemoteMem;
  /** a 4 KiB RW page inside the tracee */
  scratch: bigint;
  /** run a syscall in the tracee; failures throw Missing */
  ok(what: string, nr: number, ...args: (number | bigint)[]): bigint;
  /** processes the probe created (clone3 children ...): killed and reaped with the tracee */
  extra: number[];
}

/** SIGKILL pid and wait until it is gone (it must be our child or tracee). */
export function killReap(pid: number) {
  syscall(NR.kill, pid, 9);
  for (;;) {
    const { r, status } = wait4Raw(pid, __WALL);
    if (r === -4) continue;
    if (r < 0 || !W.stopped(status)) return;
  }
}

export function withTracee<T>(fn: (t: Tracee) => T): T {
  const pid = startPuppet();
  let mem: RemoteMem | undefined;
  const extra: number[] = [];
  try {
    mem = new RemoteMem(pid);
    const inj = new Injector(pid, PUPPET_SYSCALL, "trap", mem);
    const ok = (what: string, nr: number, ...args: (number | bigint)[]) => {
      const r = inj.call(nr, ...args);
      if (r < 0n && r > -4096n) throw new Missing(`${what} in the tracee: ${errnoText(Number(-r))}`);
      return r;
    };
    const scratch = ok("mmap", NR.mmap, 0, 4096, 3, 0x22 /* PRIVATE|ANONYMOUS */, -1, 0);
    if (scratch & 0xfffn) throw new Error(`odd scratch address ${hex(scratch)}`);
    return fn({ pid, inj, mem, scratch, ok, extra });
  } finally {
    mem?.close();
    for (const p of extra) killReap(p);
    killReap(pid);
  }
}
