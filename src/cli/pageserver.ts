import { CriuError, log } from "../log";
import type { Opts } from "./options";
import { servePages } from "../net/pageserver";
import { closeSync, constants, existsSync, openSync, statSync, writeSync } from "../sys/fs";
import { isAbsolute, join } from "../sys/path";
import { atoi } from "./getopt";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { runHook } from "../hooks";
import { scriptHooks } from "./scripts";
import { linkParent } from "../codec/incremental";
import { selfCommand } from "../version";
import { errnoText, sysFailed } from "../sys/errno";

/** the daemon child learns from this variable which fd tells its parent it is listening */
export const DAEMON_FD_ENV = "CRIU_BUN_DAEMON_FD";

/** criu's write_pidfile: created exclusively, 0600, never through a symlink; relative to the work dir. */
export function writePidfile(opts: Opts, pid: number) {
  const f = String(opts.pidfile);
  const path = isAbsolute(f) ? f : join(opts.workDir ?? opts.imagesDir, f);
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  } catch (e) {
    throw new CriuError("page-server", `cannot create pidfile ${path}: ${errnoText(e)}`);
  }
  writeSync(fd, String(pid));
  closeSync(fd);
}

/** criu's --status-fd: one \0 byte, then the fd is closed. */
export function signalReady(fd: number, where = "page-server") {
  try {
    writeSync(fd, new Uint8Array(1));
  } catch (e) {
    throw new CriuError(where, `--status-fd ${fd}: ${errnoText(e)}`);
  }
  try {
    closeSync(fd);
  } catch {}
}

/**
 * criu -d/--daemon: run a copy of this command in the background (its own session, stdio on
 * /dev/null), wait until it listens, then return; the copy writes the pidfile with its own pid.
 */
export function daemonize(opts: Opts, what = "page server"): number {
  const fds = new Int32Array(2);
  const cmd = what === "page server" ? "page-server" : "lazy-pages";
  const p = syscall(NR.pipe2, addr(fds), 0o2000000);
  if (p < 0) throw new CriuError(cmd, sysFailed("", "pipe2 for --daemon", p));
  const child = Bun.spawn([...selfCommand(), ...process.argv.slice(2)], {
    stdio: ["ignore", "ignore", "ignore", fds[1]],
    detached: true,
    env: { ...process.env, [DAEMON_FD_ENV]: "3" },
  });
  closeSync(fds[1]);
  const b = new Uint8Array(1);
  let n: number;
  do n = syscall(NR.read, fds[0], addr(b), 1);
  while (n === -4);
  closeSync(fds[0]);
  if (n !== 1) throw new CriuError(cmd, `the ${what} daemon (pid ${child.pid}) exited before listening; see its log`);
  child.unref();
  log.info(`The ${what} daemon ${child.pid} is listening`);
  if (opts.statusFd !== undefined) signalReady(atoi(String(opts.statusFd)));
  return 0;
}

/** criu page-server: receive one dump's pages into -D DIR, then exit. */
export async function run(opts: Opts, _args: string[]): Promise<number> {
  const port = atoi(String(opts.port ?? ""));
  if (!(port > 0 && port < 65536)) throw new CriuError("page-server", "give the port to listen on with --port");
  const dir = opts.imagesDir;
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new CriuError("page-server", `images directory '${dir}' does not exist`);
  const daemonFd = process.env[DAEMON_FD_ENV];
  if (opts.restoreDetached && daemonFd === undefined) return daemonize(opts);
  // as criu: the images dir's "parent" link names the previous images (pre-dump), relative to it
  if (opts.prevImagesDir) linkParent(dir, String(opts.prevImagesDir));
  const timeoutSec = opts.timeout !== undefined ? atoi(String(opts.timeout)) : 10;
  const pages = servePages(
    dir,
    String(opts.address ?? "0.0.0.0"),
    port,
    () => {
      if (opts.pidfile) writePidfile(opts, process.pid);
      runHook(scriptHooks(opts), "status-ready");
      // as the daemon, tell the parent; the parent answers the caller's --status-fd
      if (daemonFd !== undefined) signalReady(atoi(daemonFd));
      else if (opts.statusFd !== undefined) signalReady(atoi(String(opts.statusFd)));
    },
    timeoutSec
  );
  log.info(`Page server finished: ${pages} pages written to ${dir}`);
  return 0;
}
