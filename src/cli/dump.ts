import { CriuError, log, logLevel, LOG_DEBUG } from "../log";
import { peakRssKb } from "../codec/pipeline";
import type { Opts } from "./options";
import { dumpProcess, type DumpStats } from "../dump/dump";
import { parseExtMounts, parseExtNetNs } from "../resources/mounts";
import { scriptHooks } from "./scripts";
import { atoi } from "./getopt";

/** "1048576", "64K", "1M", "2G" -> bytes */
function parseSize(s: string): number {
  const m = /^(\d+)([kKmMgG]?)$/.exec(s.trim());
  if (!m) throw new CriuError("dump", `--ghost-limit: '${s}' is not a size`);
  const unit: Record<string, number> = { "": 1, k: 1 << 10, m: 1 << 20, g: 1 << 30 };
  return Number(m[1]) * unit[m[2].toLowerCase()];
}

/** --page-server --address A --port P */
export function pageServerOpt(opts: Opts, where: string): { address: string; port: number } | undefined {
  if (!opts.pageServer) return undefined;
  const port = atoi(String(opts.port ?? ""));
  if (!opts.address || !(port > 0 && port < 65536))
    throw new CriuError(where, "--page-server needs --address and --port");
  return { address: String(opts.address), port };
}

export async function run(opts: Opts, _args: string[]): Promise<number> {
  if (opts.tree === undefined || Number.isNaN(opts.tree))
    throw new CriuError("dump", "no process to dump: give -t PID");
  const ghostLimit = opts.ghostLimit !== undefined ? parseSize(String(opts.ghostLimit)) : undefined;
  const pageServer = pageServerOpt(opts, "dump");
  let lazyPages: { address: string; port: number; ready?: () => void } | undefined;
  if (opts.lazyPages) {
    const port = atoi(String(opts.port ?? ""));
    if (!(port > 0 && port < 65536))
      throw new CriuError("dump", "--lazy-pages needs --port (and --address, default 0.0.0.0) to serve the memory on");
    lazyPages = { address: String(opts.address ?? "0.0.0.0"), port };
    // --status-fd: its byte once the memory is served (as criu's lazy dump writes it)
    if (opts.statusFd !== undefined) {
      const fd = atoi(String(opts.statusFd));
      const { signalReady } = await import("./pageserver");
      lazyPages.ready = () => signalReady(fd, "dump");
    }
  }
  const t0 = performance.now();
  const stats = dumpProcess({
    pid: opts.tree,
    dir: opts.imagesDir,
    workDir: opts.workDir,
    leaveRunning: !!opts.leaveRunning,
    leaveStopped: !!opts.leaveStopped,
    shellJob: !!opts.shellJob,
    tcpEstablished: !!opts.tcpEstablished,
    tcpClose: !!opts.tcpClose,
    skipInFlight: !!opts.skipInFlight,
    extUnixSk: !!opts.extUnixSk,
    fileLocks: !!opts.fileLocks,
    timeoutSec: opts.timeout !== undefined ? atoi(String(opts.timeout)) : undefined,
    compress: !!opts.compress,
    displayStats: !!opts.displayStats,
    pageServer,
    lazyPages,
    hooks: scriptHooks(opts),
    freezeCgroup: opts.freezeCgroup ? String(opts.freezeCgroup) : undefined,
    prevImagesDir: opts.prevImagesDir ? String(opts.prevImagesDir) : undefined,
    autoDedup: !!opts.autoDedup,
    trackMem: !!opts.trackMem,
    extMounts: parseExtMounts(opts.external, opts.extMountMap, "dump"),
    extNetNs: parseExtNetNs(opts.external, "dump"),
    networkLockSkip: opts.networkLock === "skip" || opts.networkLock === "none",
    ghostLimit,
    linkRemap: !!opts.linkRemap,
  });
  if (opts.displayStats) displayStats(stats);
  if (logLevel() >= LOG_DEBUG) log.debug(`criu-bun peak RSS (VmHWM) over the whole dump: ${peakRssKb()} kB`);
  log.info(`Dumping finished successfully in ${(performance.now() - t0).toFixed(1)} ms`);
  return 0;
}

/** --display-stats, as criu prints it after a dump or pre-dump */
export function displayStats(stats: DumpStats) {
  const ms = (us: number) => (us / 1e6).toFixed(6);
  process.stdout.write(
    `Displaying dump stats:\nFreezing time: ${ms(stats.freezingTime)} s\nFrozen time: ${ms(stats.frozenTime)} s\n` +
      `Memory dump time: ${ms(stats.memdumpTime)} s\nMemory write time: ${ms(stats.memwriteTime)} s\n` +
      `Memory pages scanned: ${stats.pagesScanned} (0x${stats.pagesScanned.toString(16)})\n` +
      `Memory pages skipped from parent: ${stats.pagesSkippedParent} (0x${stats.pagesSkippedParent.toString(16)})\n` +
      `Memory pages written: ${stats.pagesWritten} (0x${stats.pagesWritten.toString(16)})\n`
  );
}
