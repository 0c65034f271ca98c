// membarrier registrations of a process (per mm): which MEMBARRIER_CMD_REGISTER_* commands it
// made, kept in task_core_entry.membarrier_registration_mask as CRIU 4.2 keeps them, and made
// again at restore in the restored process.
import { CriuError, log } from "../log";
import { NR } from "../sys/nr";
import { errnoText } from "../sys/errno";
import type { Injector } from "../ptrace/inject";

/** the REGISTER_* commands (as MEMBARRIER_CMD_GET_REGISTRATIONS reports them) */
const MEMBARRIER_REGISTER = {
  GLOBAL_EXPEDITED: 1 << 2,
  PRIVATE_EXPEDITED: 1 << 4,
  SYNC_CORE: 1 << 6,
  RSEQ: 1 << 8,
} as const;
export const MEMBARRIER_KNOWN =
  MEMBARRIER_REGISTER.GLOBAL_EXPEDITED |
  MEMBARRIER_REGISTER.PRIVATE_EXPEDITED |
  MEMBARRIER_REGISTER.SYNC_CORE |
  MEMBARRIER_REGISTER.RSEQ;
const CMD_PRIVATE_EXPEDITED = 1 << 3;

/**
 * Dump: `got` is what MEMBARRIER_CMD_GET_REGISTRATIONS answered in the process (Linux 6.3+;
 * older kernels answer EINVAL: nothing seen). It shows REGISTER_PRIVATE_EXPEDITED also for a
 * process that registered only sync-core or rseq (those set the private expedited state, not its
 * ready bit), so the PRIVATE_EXPEDITED command itself is asked (EPERM unless registered): the
 * mask written is the commands that bring back exactly what was.
 */
export function dumpMembarrier(pid: number, inj: Injector, got: bigint): number {
  if (got <= 0n) return 0;
  let mask = Number(got);
  // a registration a later kernel adds: not known here, so not made again
  if (mask & ~MEMBARRIER_KNOWN)
    throw new CriuError(
      "dump",
      `process ${pid}: membarrier registrations 0x${(mask & ~MEMBARRIER_KNOWN).toString(16)} (of 0x${mask.toString(16)}) are not supported yet`
    );
  if (
    mask & MEMBARRIER_REGISTER.PRIVATE_EXPEDITED &&
    mask & (MEMBARRIER_REGISTER.SYNC_CORE | MEMBARRIER_REGISTER.RSEQ)
  ) {
    const r = inj.call(NR.membarrier, CMD_PRIVATE_EXPEDITED, 0, 0);
    if (r === -1n /* EPERM: not registered itself */) mask &= ~MEMBARRIER_REGISTER.PRIVATE_EXPEDITED;
    else if (r !== 0n)
      throw new CriuError("dump", `process ${pid}: membarrier(PRIVATE_EXPEDITED) failed: ${errnoText(Number(-r))}`);
  }
  log.debug(`process ${pid}: membarrier registrations 0x${mask.toString(16)}`);
  return mask;
}

/** Restore: each REGISTER_* command of the mask, in the restored process. A CRIU 4.2 image keeps
 *  GET_REGISTRATIONS' mask as it is: there REGISTER_PRIVATE_EXPEDITED beside sync-core or rseq
 *  registers it too, as CRIU's own restore does. */
export function restoreMembarrier(pid: number, inj: Injector, mask: number) {
  for (const [name, cmd] of Object.entries(MEMBARRIER_REGISTER)) {
    if (mask & cmd) inj.ok(`membarrier(REGISTER_${name})`, NR.membarrier, cmd, 0, 0);
  }
  if (mask) log.debug(`process ${pid}: membarrier registrations 0x${mask.toString(16)} made again`);
}
