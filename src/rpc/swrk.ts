// criu's RPC, the second front door: `criu-bun swrk <fd>` serves criu_req messages arriving on a
// SOCK_SEQPACKET socket at fd (runc, crun/libcriu, Podman and go-criu start it so), one request
// per packet, one criu_resp per request, until the caller closes its end. The requests run the
// same dump and restore pipelines as the command line (src/rpc/requests.ts maps their fields).
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { criu_reqSchema, criu_respSchema, criu_req_type, type criu_req } from "../images/rpc";
import { recvPacket, sendPacket, peerCred, socketType } from "../sys/seqpacket";
import { CriuError, log, logFd, setLogFile, setLogLevel, errorMessage } from "../log";
import { SysError, errnoText } from "../sys/errno";
import type { HookAction, HookContext, Hooks } from "../hooks";
import { handleRequest } from "./requests";

/** runc reads replies into 10 x 4096 bytes: a longer one is an error on its side */
const MAX_REPLY = 10 * 4096;
const MAX_ERRMSG = 4000;

export type RespInit = MessageInitShape<typeof criu_respSchema>;

/** The connection to one caller: its socket, who it is, and how to talk to it. */
export class RpcConn {
  readonly peer: { pid: number; uid: number; gid: number };
  constructor(readonly fd: number) {
    this.peer = peerCred(fd);
  }
  send(init: RespInit, passFd?: number) {
    const bytes = toBinary(criu_respSchema, create(criu_respSchema, init));
    if (bytes.length > MAX_REPLY)
      throw new CriuError("rpc", `reply of ${bytes.length} bytes is longer than callers accept (${MAX_REPLY})`);
    sendPacket(this.fd, bytes, passFd);
  }
  /** the next request; undefined when the caller has closed its end */
  recv(): { req?: criu_req; error?: string } | undefined {
    const p = recvPacket(this.fd, 1 << 20);
    for (const f of p.fds) closeFd(f); // requests carry no fds; do not leak any sent anyway
    if (p.data.length === 0) return undefined;
    if (p.truncated) return { error: "request longer than 1 MiB" };
    try {
      return { req: fromBinary(criu_reqSchema, p.data) };
    } catch (e) {
      return { error: `cannot decode the request (${p.data.length} bytes): ${errorMessage(e)}` };
    }
  }
}

function closeFd(fd: number) {
  try {
    require("../sys/fs").closeSync(fd);
  } catch {}
}

/**
 * Notifications over RPC: criu_resp{type NOTIFY, notify{script, pid}} (plus an fd for
 * orphan-pts-master), then the caller's criu_req{type NOTIFY, notify_success} before going on.
 */
export class RpcHooks implements Hooks {
  constructor(
    private conn: RpcConn,
    private scripts: boolean,
    private ptsMaster: boolean
  ) {}
  wants(action: HookAction) {
    if (action === "orphan-pts-master") return this.ptsMaster;
    return this.scripts;
  }
  run(action: HookAction, ctx: HookContext) {
    // criu names the pid only where the caller acts on it (runc adopts the restored init)
    const withPid = ctx.pid !== undefined && (action === "setup-namespaces" || action === "post-restore");
    this.conn.send(
      { type: criu_req_type.NOTIFY, success: true, notify: { script: action, ...(withPid ? { pid: ctx.pid } : {}) } },
      ctx.fd
    );
    const m = this.conn.recv();
    if (!m) throw new CriuError("rpc", `the caller closed the connection at ${action}`);
    if (m.error) throw new CriuError("rpc", `answer to ${action}: ${m.error}`);
    const r = m.req!;
    if (r.type !== criu_req_type.NOTIFY)
      throw new CriuError(
        "rpc",
        `the caller answered ${action} with a ${criu_req_type[r.type] ?? r.type} request instead of NOTIFY`
      );
    if (!r.notifySuccess) throw new CriuError("rpc", `the caller refused ${action}`);
    log.debug(`rpc: ${action} acknowledged`);
  }
}

/** A failure as a reply: one line, criu's cr_errno (the errno behind it when there is one). */
export function failure(type: number, e: unknown): RespInit {
  const err = e as { message?: unknown; crErrno?: number } | null | undefined;
  const msg = String(err?.message ?? e)
    .split("\n")[0]
    .slice(0, MAX_ERRMSG);
  const errno = e instanceof SysError ? e.errno : (err?.crErrno ?? 0);
  return { type, success: false, crErrno: errno, crErrmsg: msg };
}

/**
 * RESTORE's exec_cmd, as criu's service does it: the reply first, then this worker becomes the
 * command (same pid, so the restored tree stays its children unless rst_sibling made it the
 * caller's), its stdout and stderr the request's log, the connection closed. Returns (exit 1)
 * only when the command cannot run; the restored tree is then left running, as criu leaves it.
 */
async function execAfterRestore(conn: RpcConn, resp: RespInit, argv: string[]): Promise<number> {
  conn.send(resp);
  const { execvp } = await import("../sys/exec");
  const { syscall } = await import("../sys/syscall");
  const { NR } = await import("../sys/nr");
  const lf = logFd();
  if (lf !== 1) syscall(NR.dup2, lf, 1);
  if (lf !== 2) syscall(NR.dup2, lf, 2);
  closeFd(conn.fd);
  log.info(`rpc: executing ${argv.join(" ")} as the parent of the restored tree (pid ${process.pid})`);
  const e = execvp(argv);
  log.error("rpc", `Failed to exec cmd ${argv[0]}: ${errnoText(e)}`);
  return 1;
}

/** Serve one caller on FD until it closes. Returns the exit status for the worker process. */
export async function serve(fd: number): Promise<number> {
  const st = socketType(fd);
  if (st < 0) throw new CriuError("swrk", `fd ${fd} is not a socket: ${errnoText(-st)}`);
  if (st !== 5) throw new CriuError("swrk", `fd ${fd} is not a SOCK_SEQPACKET socket (type ${st})`);
  const conn = new RpcConn(fd);
  log.debug(`swrk: serving pid ${conn.peer.pid} (uid ${conn.peer.uid}) on fd ${fd}`);
  for (;;) {
    const m = conn.recv();
    if (!m) {
      log.debug("swrk: the caller closed the connection");
      return 0;
    }
    if (m.error) {
      conn.send(failure(criu_req_type.EMPTY, new CriuError("rpc", m.error)));
      continue;
    }
    const req = m.req!;
    let resp: RespInit;
    try {
      resp = await handleRequest(conn, req);
      if (req.type === criu_req_type.RESTORE && resp.success && req.opts?.execCmd.length)
        return await execAfterRestore(conn, resp, req.opts.execCmd); // before the log is reset below
    } catch (e) {
      log.error(e instanceof CriuError ? e.where : "rpc", errorMessage(e));
      if (process.env.CRIU_BUN_DEBUG) console.error(e instanceof Error ? e.stack : undefined);
      resp = failure(req.type, e);
    } finally {
      // each request has its own log file and level
      setLogFile(undefined);
      setLogLevel(2);
    }
    try {
      conn.send(resp);
    } catch (e) {
      if (e instanceof SysError && (e.errno === 32 || e.errno === 104)) return 0; // the caller went away
      conn.send(failure(req.type, e));
    }
  }
}
