import { CriuError, log } from "../log";
import type { Opts } from "./options";
import { dumpProcess } from "../dump/dump";
import { scriptHooks } from "./scripts";
import { atoi } from "./getopt";
import { displayStats, pageServerOpt } from "./dump";

/**
 * criu pre-dump: save the tree's state and memory while it keeps running; a later
 * `dump --prev-images-dir DIR` then stores only the pages that changed since.
 */
export async function run(opts: Opts, _args: string[]): Promise<number> {
  if (opts.tree === undefined || Number.isNaN(opts.tree))
    throw new CriuError("pre-dump", "no process to pre-dump: give -t PID");
  const stats = dumpProcess({
    freezeCgroup: opts.freezeCgroup ? String(opts.freezeCgroup) : undefined,
    pid: opts.tree,
    dir: opts.imagesDir,
    workDir: opts.workDir,
    leaveRunning: true,
    preDump: true,
    shellJob: !!opts.shellJob,
    tcpEstablished: !!opts.tcpEstablished,
    extUnixSk: !!opts.extUnixSk,
    fileLocks: !!opts.fileLocks,
    timeoutSec: opts.timeout !== undefined ? atoi(String(opts.timeout)) : undefined,
    hooks: scriptHooks(opts),
    prevImagesDir: opts.prevImagesDir ? String(opts.prevImagesDir) : undefined,
    autoDedup: !!opts.autoDedup,
    compress: !!opts.compress,
    pageServer: pageServerOpt(opts, "pre-dump"),
  });
  if (opts.displayStats) displayStats(stats);
  log.info("Pre-dump finished successfully");
  return 0;
}
