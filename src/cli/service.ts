// criu service: criu's RPC over a listening unix SOCK_SEQPACKET socket (--address PATH, default
// ./criu_service.socket, mode 0666 as criu makes it). Each connection is served by its own
// worker, `criu-bun swrk <fd>` (the same server runc and go-criu start), until the caller closes
// it; the service itself only accepts. -d/--daemon, --pidfile and --status-fd as criu's.
import { closeSync, chmodSync, constants, lstatSync, openSync, unlinkSync, writeSync } from "../sys/fs";
import { isAbsolute, join } from "../sys/path";
import { CriuError, log, errorMessage } from "../log";
import type { Opts } from "./options";
import { atoi } from "./getopt";
import { seqpacketListen, seqpacketAccept } from "../sys/seqpacket";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { selfCommand } from "../version";
import { errnoText, sysFailed, errorCode } from "../sys/errno";

const DAEMON_FD_ENV = "CRIU_BUN_SERVICE_FD";
const DEFAULT_ADDRESS = "./criu_service.socket";

function ready(fd: number) {
  try {
    writeSync(fd, new Uint8Array(1));
  } catch (e) {
    throw new CriuError("service", `--status-fd ${fd}: ${errnoText(e)}`);
  }
  try {
    closeSync(fd);
  } catch {}
}

function writePidfile(opts: Opts) {
  const f = String(opts.pidfile);
  const path = isAbsolute(f) ? f : join(opts.workDir ?? opts.imagesDir, f);
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  } catch (e) {
    throw new CriuError("service", `cannot create pidfile ${path}: ${errnoText(e)}`);
  }
  writeSync(fd, String(process.pid));
  closeSync(fd);
}

/** -d: a copy of this command in its own session, stdio on /dev/null; returns once it listens. */
function daemonize(opts: Opts): number {
  const fds = new Int32Array(2);
  const p = syscall(NR.pipe2, addr(fds), 0o2000000);
  if (p < 0) throw new CriuError("service", sysFailed("", "pipe2 for --daemon", p));
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
  if (n !== 1)
    throw new CriuError("service", `the service daemon (pid ${child.pid}) exited before listening; see its log`);
  child.unref();
  log.info(`Service daemon ${child.pid} is listening`);
  if (opts.statusFd !== undefined) ready(atoi(String(opts.statusFd)));
  return 0;
}

export async function run(opts: Opts, _args: string[]): Promise<number> {
  const daemonFd = process.env[DAEMON_FD_ENV];
  if (opts.restoreDetached && daemonFd === undefined) return daemonize(opts);
  let path = opts.address !== undefined ? String(opts.address) : "";
  if (!path) {
    log.warn("Binding to local dir address!");
    path = DEFAULT_ADDRESS;
  }
  // criu replaces what is at the path; criu-bun only an old socket (never a file or a link)
  try {
    const st = lstatSync(path);
    if (!st.isSocket()) throw new CriuError("service", `${path} exists and is not a socket; not replaced`);
    unlinkSync(path);
  } catch (e) {
    if (e instanceof CriuError) throw e;
    if (errorCode(e) !== "ENOENT") throw new CriuError("service", `${path}: ${errnoText(e)}`);
  }
  let fd: number;
  try {
    fd = seqpacketListen(path, 16);
  } catch (e) {
    throw new CriuError("service", `cannot listen on ${path}: ${errorMessage(e)}`);
  }
  chmodSync(path, 0o666); // anyone may connect, as criu's service socket
  log.info(`The service socket is bound to ${path}`);
  if (opts.pidfile) writePidfile(opts);
  if (daemonFd !== undefined) ready(atoi(daemonFd));
  else if (opts.statusFd !== undefined) ready(atoi(String(opts.statusFd)));
  for (;;) {
    const c = seqpacketAccept(fd, 200);
    if (c < 0) {
      await Bun.sleep(0);
      continue;
    } // let finished workers be reaped
    const w = Bun.spawn([...selfCommand(), "swrk", "3"], { stdio: ["ignore", "inherit", "inherit", c] });
    closeSync(c);
    log.info(`Connection accepted: worker ${w.pid}`);
  }
}
