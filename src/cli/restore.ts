import { join, isAbsolute } from "node:path";
import { log } from "../log";
import type { Opts } from "./options";
import { restoreProcesses } from "../restore/restore";
import { wait4Raw, W } from "../sys/ptrace";

export async function run(opts: Opts, _args: string[]): Promise<number> {
  const pidfile = opts.pidfile ? (isAbsolute(opts.pidfile) ? opts.pidfile : join(opts.workDir ?? opts.imagesDir, opts.pidfile)) : undefined;
  const st = restoreProcesses({ dir: opts.imagesDir, leaveStopped: !!opts.leaveStopped, shellJob: !!opts.shellJob, pidfile, tcpClose: !!opts.tcpClose,
    manageCgroups: opts.manageCgroups !== undefined && opts.manageCgroups !== false && opts.manageCgroups !== "none" });
  const pid = st.pid;
  if (opts.displayStats) {
    process.stdout.write(`Displaying restore stats:\nPages compared: 0\nPages skipped COW: 0\nPages restored: ${st.pages}\n` +
      `Restore time: ${(st.ms / 1000).toFixed(6)} s\nForking time: ${(st.forkMs / 1000).toFixed(6)} s\n`);
  }
  log.info(`Restore finished successfully (pid ${pid})`);
  if (opts.restoreDetached) return 0;
  // stay the parent, as criu does, and exit with the restored tree's status
  for (;;) {
    const { r, status } = wait4Raw(pid, 0);
    if (r === -4) continue;
    if (r < 0) return 0;
    if (W.exited(status)) return W.exitStatus(status);
    if (W.signaled(status)) return 128 + W.termSig(status);
  }
}
