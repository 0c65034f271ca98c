import { existsSync, statSync } from "../sys/fs";
import { CriuError, log } from "../log";
import type { Opts } from "./options";
import { atoi } from "./getopt";
import { runLazyDaemon } from "../restore/lazy-daemon";
import { daemonize, writePidfile, signalReady, DAEMON_FD_ENV } from "./pageserver";

/**
 * criu lazy-pages --page-server --address A --port P -D DIR: serve one lazy restore, then exit.
 * Without --page-server: the pages come from DIR's own images (its parents' pages of private
 * anonymous memory, for a restore that left them lazy: migrate's post-copy).
 */
export async function run(opts: Opts, _args: string[]): Promise<number> {
  const port = opts.pageServer ? atoi(String(opts.port ?? "")) : undefined;
  if (opts.pageServer && (!opts.address || !(port! > 0 && port! < 65536)))
    throw new CriuError("lazy-pages", "--page-server needs --address and --port (where `dump --lazy-pages` listens)");
  const dir = opts.imagesDir;
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new CriuError("lazy-pages", `images directory '${dir}' does not exist`);
  const daemonFd = process.env[DAEMON_FD_ENV];
  if (opts.restoreDetached && daemonFd === undefined) return daemonize(opts, "lazy-pages");
  const r = runLazyDaemon({
    dir,
    workDir: String(opts.workDir ?? dir),
    address: opts.pageServer ? String(opts.address) : undefined,
    port,
    timeoutSec: opts.timeout !== undefined ? atoi(String(opts.timeout)) : 10,
    // started by migrate --listen: its pipe on this fd ends when it goes
    watchFd: process.env.CRIU_BUN_LAZY_WATCH_FD !== undefined ? atoi(process.env.CRIU_BUN_LAZY_WATCH_FD) : undefined,
    // started by migrate --listen with post-copy from the source: the source's connection
    sourceFd: process.env.CRIU_BUN_LAZY_SOURCE_FD !== undefined ? atoi(process.env.CRIU_BUN_LAZY_SOURCE_FD) : undefined,
    onListening: () => {
      if (opts.pidfile) writePidfile(opts, process.pid);
      if (daemonFd !== undefined) signalReady(atoi(daemonFd));
      else if (opts.statusFd !== undefined) signalReady(atoi(String(opts.statusFd)));
    },
  });
  log.info(`lazy-pages finished: ${r.served} of ${r.total} pages served`);
  return 0;
}
