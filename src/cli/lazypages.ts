import { existsSync, statSync } from "node:fs";
import { CriuError, log } from "../log";
import type { Opts } from "./options";
import { atoi } from "./getopt";
import { runLazyDaemon } from "../net/lazy-daemon";
import { daemonize, writePidfile, signalReady, DAEMON_FD_ENV } from "./pageserver";

/** criu lazy-pages --page-server --address A --port P -D DIR: serve one lazy restore, then exit. */
export async function run(opts: Opts, _args: string[]): Promise<number> {
  if (!opts.pageServer) throw new CriuError("lazy-pages", "criu-bun takes lazy pages only from a dump serving them: give --page-server --address A --port P");
  const port = atoi(String(opts.port ?? ""));
  if (!opts.address || !(port > 0 && port < 65536)) throw new CriuError("lazy-pages", "--page-server needs --address and --port (where `dump --lazy-pages` listens)");
  const dir = opts.imagesDir;
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new CriuError("lazy-pages", `images directory '${dir}' does not exist`);
  const daemonFd = process.env[DAEMON_FD_ENV];
  if (opts.restoreDetached && daemonFd === undefined) return daemonize(opts, "lazy-pages");
  const r = runLazyDaemon({
    dir, workDir: String(opts.workDir ?? dir), address: String(opts.address), port,
    timeoutSec: opts.timeout !== undefined ? atoi(String(opts.timeout)) : 10,
    onListening: () => {
      if (opts.pidfile) writePidfile(opts, process.pid);
      if (daemonFd !== undefined) signalReady(atoi(daemonFd));
      else if (opts.statusFd !== undefined) signalReady(atoi(String(opts.statusFd)));
    },
  });
  log.info(`lazy-pages finished: ${r.served} of ${r.total} pages served`);
  return 0;
}
