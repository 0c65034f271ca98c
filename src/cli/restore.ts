import { join, isAbsolute } from "../sys/path";
import { CriuError, log } from "../log";
import type { Opts } from "./options";
import { restoreProcesses } from "../restore/restore";
import { awaitLazyMemory } from "../resources/lazymem";
import { wait4Raw, __WALL } from "../sys/ptrace";
import { CLONE } from "../sys/flags";
import { parseExtMounts } from "../resources/mounts";
import { scriptHooks } from "./scripts";
import { parseInheritFdArgs } from "../restore/inherit";
import { errnoText } from "../sys/errno";

/**
 * criu's --manage-cgroups modes as far as criu-bun keeps cgroups (membership, no properties):
 * soft, criu's default and the bare form, creates missing cgroups; none requires them to exist;
 * ignore leaves the tasks where restore runs. (props, full and strict are refused before this.)
 */
function cgroupMode(m: Opts["manageCgroups"]): { manageCgroups: boolean; ignoreCgroups: boolean } {
  const mode = m === undefined || m === true ? "soft" : String(m);
  return { manageCgroups: mode === "soft", ignoreCgroups: mode === "ignore" };
}

/** --cgroup-root [controller:]/newroot, as criu splits it: a controller before the first ':', else every controller */
function cgroupRoots(v: Opts["cgroupRoot"]): { ctrl?: string; path: string }[] | undefined {
  if (v === undefined) return undefined;
  return (Array.isArray(v) ? v : [v]).map((s) => {
    const at = String(s).indexOf(":");
    return at < 0 ? { path: String(s) } : { ctrl: String(s).slice(0, at), path: String(s).slice(at + 1) };
  });
}

export async function run(opts: Opts, args: string[]): Promise<number> {
  const pidfile = opts.pidfile
    ? isAbsolute(opts.pidfile)
      ? opts.pidfile
      : join(opts.workDir ?? opts.imagesDir, opts.pidfile)
    : undefined;
  const st = restoreProcesses({
    emptyNs: opts.emptyNs === "net" ? CLONE.NEWNET : undefined,
    dir: opts.imagesDir,
    workDir: opts.workDir,
    leaveStopped: !!opts.leaveStopped,
    shellJob: !!opts.shellJob,
    pidfile,
    tcpClose: !!opts.tcpClose,
    root: opts.root !== undefined ? String(opts.root) : undefined,
    extMounts: parseExtMounts(opts.external, opts.extMountMap, "restore"),
    trustImages: !!opts.trustImages,
    timeoutSec: opts.timeout !== undefined ? Number(opts.timeout) : undefined,
    ...cgroupMode(opts.manageCgroups),
    hooks: scriptHooks(opts),
    rstSibling: !!opts.restoreSibling,
    inheritFds: parseInheritFdArgs(opts.inheritFd),
    lazyPages: !!opts.lazyPages,
    cgRoots: cgroupRoots(opts.cgroupRoot),
    autoDedup: !!opts.autoDedup,
  });
  const pid = st.pid;
  if (opts.displayStats) {
    process.stdout.write(
      `Displaying restore stats:\nPages compared: 0\nPages skipped COW: 0\nPages restored: ${st.pages}\n` +
        `Restore time: ${(st.ms / 1000).toFixed(6)} s\nForking time: ${(st.forkMs / 1000).toFixed(6)} s\n`
    );
  }
  log.info(`Restore finished successfully (pid ${pid})`);
  if (st.lazy) awaitLazyMemory(st.lazy, st.pids, pid, !opts.restoreDetached);
  if (opts.restoreDetached) return 0;
  if (opts.execCmd) {
    // criu's --exec-cmd: this process becomes the command (same PID), the restored tree its children
    const { execvp } = await import("../sys/exec");
    log.info(`Executing ${args.join(" ")} as the parent of the restored tree (pid ${process.pid})`);
    const e = execvp(args);
    throw new CriuError("restore", `Failed to exec command ${args[0]}: ${errnoText(e)}`);
  }
  // stay the parent, as criu does, until every child is gone; criu then exits 0 whatever the
  // restored tree's exit status was (its reap_zombies())
  for (;;) {
    const { r } = wait4Raw(-1, __WALL);
    if (r === -4) continue; // EINTR
    if (r < 0) return 0; // ECHILD: nothing left
  }
}
