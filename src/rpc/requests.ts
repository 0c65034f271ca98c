// One criu_req -> the same pipelines the command line runs. Every field a caller sets is either
// honoured or refused with criu-bun's one line for that option (the option table in
// src/cli/criu-options.ts says which); nothing set is silently dropped.
import {
  closeSync,
  fstatSync,
  openSync,
  readFileSync,
  realpathSync,
  statSync,
  writeSync,
  constants as C,
} from "../sys/fs";
import { isAbsolute, join } from "../sys/path";
import { isFieldSet, ScalarType } from "@bufbuild/protobuf";
import {
  criu_optsSchema,
  criu_featuresSchema,
  cgroup_rootSchema,
  criu_req_type,
  criu_cg_mode,
  type criu_opts,
  type criu_req,
} from "../images/rpc";
import { inheritFds } from "../restore/inherit";
import { CRIU_OPTIONS, refusal } from "../cli/criu-options";
import { readConfig } from "../cli/config";
import { CriuError, log, setLogFile, setLogLevel, errorMessage } from "../log";
import { GITID, CRIU_LEVEL } from "../version";
import { failure, RpcHooks, type RespInit, type RpcConn } from "./swrk";
import { wait4Raw, W } from "../sys/ptrace";
import { parseExtMounts, parseExtNetNs, type ExtMounts } from "../resources/mounts";
import { errnoText, errorCode } from "../sys/errno";

const T = criu_req_type;

/** criu_opts fields every request may carry: the RPC front door handles them itself */
const COMMON = [
  "images_dir_fd",
  "images_dir",
  "work_dir_fd",
  "log_file",
  "log_level",
  "log_to_stderr",
  "notify_scripts",
  "config_file",
  "display_stats",
  // criu-bun already behaves as these ask (noop rows of the option table)
  "track_mem",
  "link_remap",
  "weak_sysctls",
  "pre_dump_mode",
  "mntns_compat_mode",
  "network_lock",
  "manage_cgroups",
  "manage_cgroups_mode",
];
/** the fields each request maps onto its pipeline's options; any other field set is refused */
const MAPPED: Record<"dump" | "pre-dump" | "restore", Set<string>> = {
  dump: new Set([
    ...COMMON,
    "pid",
    "leave_running",
    "leave_stopped",
    "shell_job",
    "tcp_established",
    "tcp_close",
    "ext_unix_sk",
    "file_locks",
    "timeout",
    "parent_img",
    "ps",
    // lazy migration (runc checkpoint --lazy-pages): the dump serves the memory on ps's address
    // and port; status_fd (the older clients' readiness fd) or the status-ready notification
    "lazy_pages",
    "status_fd",
    "auto_dedup",
    "ghost_limit",
    "freeze_cgroup",
    "ext_mnt",
    "external",
    "auto_ext_mnt",
    "empty_ns",
    // used by criu on restore only (runc sends them on dump too)
    "root",
    "orphan_pts_master",
  ]),
  "pre-dump": new Set([
    ...COMMON,
    "pid",
    "auto_dedup",
    "shell_job",
    "tcp_established",
    "ext_unix_sk",
    "file_locks",
    "timeout",
    "parent_img",
    "ghost_limit",
    "freeze_cgroup",
    "ext_mnt",
    "external",
    "auto_ext_mnt",
    "root",
    "orphan_pts_master",
    "empty_ns",
  ]),
  restore: new Set([
    ...COMMON,
    "leave_stopped",
    "shell_job",
    "tcp_close",
    "tcp_established",
    "ext_unix_sk",
    "file_locks",
    "root",
    "ext_mnt",
    "external",
    "auto_ext_mnt",
    "orphan_pts_master",
    "empty_ns",
    "rst_sibling",
    "inherit_fd",
    // runc restore --lazy-pages: the memory comes from the lazy-pages daemon in the work dir
    "lazy_pages",
    "auto_dedup",
    "cg_root",
    // criu-bun opens a device file by its dumped path; evasive_devices only allows more (another
    // path to the same device when that one is gone), so a restore it would have saved fails naming the file
    "evasive_devices",
    // run by the worker after the reply (swrk.ts)
    "exec_cmd",
  ]),
};

/** Is FIELD (criu_opts' proto name) set to something that asks for behaviour? */
function given(o: criu_opts, field: string): boolean {
  const f = criu_optsSchema.fields.find((x) => x.name === field);
  if (!f || !isFieldSet(o, f)) return false;
  const v = (o as Record<string, unknown>)[f.localName];
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === "boolean") return v;
  if (typeof v === "string") return v !== "";
  if (typeof v === "number") return v !== 0;
  return v !== undefined;
}

/** Refuse the first set field this request does not map, with the option's one line where there is one. */
function refuseUnmapped(o: criu_opts, command: "dump" | "pre-dump" | "restore") {
  const set = criu_optsSchema.fields.filter((f) => given(o, f.name));
  log.debug(
    `rpc: ${command} with ${set.map((f) => `${f.name}=${JSON.stringify((o as Record<string, unknown>)[f.localName], (k, v) => (k === "$typeName" ? undefined : typeof v === "bigint" ? String(v) : v))}`).join(" ")}`
  );
  for (const f of set) {
    if (MAPPED[command].has(f.name)) continue;
    if (f.name === "cpu_cap" && o.cpuCap === 0xffffffff) continue; // its default
    if (f.name === "ghost_limit" || f.name === "file_validation_method" || f.name === "pre_dump_mode") continue; // defaults and noops
    const opt = CRIU_OPTIONS.find((x) => x.rpc === f.name);
    throw new CriuError(
      "rpc",
      `${f.name}: ${opt && opt.support === "no" ? refusal(opt.name) : `not supported by criu-bun's ${command} over RPC yet`}`
    );
  }
}

/** A directory fd of the caller, opened here through /proc/<caller>/fd/N. */
class CallerDir {
  readonly fd: number;
  readonly path: string;
  constructor(peer: number, n: number, what: string) {
    const src = `/proc/${peer}/fd/${n}`;
    try {
      this.fd = openSync(src, C.O_RDONLY | C.O_DIRECTORY | 0o2000000 /* O_CLOEXEC */);
    } catch (e) {
      if (errorCode(e) === "ENOTDIR")
        throw new CriuError("rpc", `${what} ${n} of the caller (pid ${peer}) is not a directory`);
      if (errorCode(e) === "ENOENT")
        throw new CriuError("rpc", `${what} ${n} is not an open fd of the caller (pid ${peer})`);
      throw new CriuError("rpc", `cannot open ${what} ${n} of the caller (pid ${peer}): ${errnoText(e)}`);
    }
    // by its own path when it has one here (relative paths such as parent_img "../pre" then mean
    // what the caller meant; /proc/self/fd/N/.. would not survive path joining), else by the fd
    const viaFd = `/proc/self/fd/${this.fd}`;
    this.path = viaFd;
    try {
      const real = realpathSync(viaFd),
        a = statSync(real),
        b = fstatSync(this.fd);
      if (a.dev === b.dev && a.ino === b.ino) this.path = real;
    } catch {}
  }
  close() {
    try {
      closeSync(this.fd);
    } catch {}
  }
}

interface Dirs {
  images: string;
  work: string;
  close(): void;
}

/** images_dir_fd (or images_dir), work_dir_fd; the log file in the work dir at log_level. */
function openDirs(conn: RpcConn, o: criu_opts | undefined, command: string): Dirs {
  if (!o) throw new CriuError("rpc", `${command} request without opts`);
  const held: CallerDir[] = [];
  const close = () => {
    for (const d of held) d.close();
  };
  try {
    // the config file last, over the request's own fields (as criu does for runc's runc.conf)
    const conf = applyConfigFile(o);
    let images: string;
    if (conf.imagesDir !== undefined) images = conf.imagesDir;
    else if (o.imagesDirFd >= 0) {
      const d = new CallerDir(conn.peer.pid, o.imagesDirFd, "images_dir_fd");
      held.push(d);
      images = d.path;
    } else if (o.imagesDir) images = o.imagesDir;
    else throw new CriuError("rpc", `${command}: neither images_dir_fd nor images_dir is set`);
    let work = images;
    if (conf.workDir !== undefined) work = conf.workDir;
    else if (isFieldSet(o, criu_optsSchema.field.workDirFd) && o.workDirFd >= 0) {
      const d = new CallerDir(conn.peer.pid, o.workDirFd, "work_dir_fd");
      held.push(d);
      work = d.path;
    }
    setLogLevel(o.logLevel);
    if (conf.logFile !== undefined) setLogFile(isAbsolute(conf.logFile) ? conf.logFile : join(work, conf.logFile));
    else if (o.logFile) {
      if (o.logFile.includes("/")) throw new CriuError("rpc", `log_file '${o.logFile}' must be a name in the work dir`);
      setLogFile(join(work, o.logFile));
    }
    return { images, work, close };
  } catch (e) {
    close();
    throw e;
  }
}

/**
 * config_file: criu reads it after the request and lets it override the request's fields (runc
 * points it at runc.conf); absent is fine. Each line, in criu's config syntax, sets the request
 * field the option table names for it (a flag true, --no-NAME false, a value as a string or a
 * number, a repeated value added); images-dir, work-dir and log-file are paths here, as on the
 * command line; verbosity sets log_level. An option criu-bun does not implement is refused with its
 * one line, and one it cannot set through a request field yet says so: both name the file and line.
 */
function applyConfigFile(o: criu_opts): { imagesDir?: string; workDir?: string; logFile?: string } {
  const over: { imagesDir?: string; workDir?: string; logFile?: string } = {};
  if (!o.configFile) return over;
  let lines;
  try {
    lines = readConfig(o.configFile);
  } catch (e) {
    throw new CriuError("rpc", `config_file ${errorMessage(e)}`);
  }
  for (const { line, argv } of lines ?? []) {
    const where = `${o.configFile}:${line}`;
    const bad = (why: string) => new CriuError("rpc", `config_file ${where}: ${why}`);
    let name = argv[0].slice(2),
      on = true;
    let opt = CRIU_OPTIONS.find((x) => x.name === name);
    if (!opt && name.startsWith("no-")) {
      opt = CRIU_OPTIONS.find((x) => x.name === name.slice(3) && x.negatable);
      if (opt) {
        on = false;
        name = opt.name;
      }
    }
    if (!opt) throw bad(`unrecognized option '--${name}'`);
    const val = argv[1];
    if ((opt.arg === "none" || !on) && val !== undefined) throw bad(`${argv[0].slice(2)} takes no value ('${val}')`);
    if (opt.arg === "required" && val === undefined) throw bad(`option '--${name}' requires an argument`);
    if (opt.values && val !== undefined && !opt.values.includes(val))
      throw bad(`--${name}: '${val}' is not one of ${opt.values.join(", ")}`);
    if (opt.name === "images-dir") {
      over.imagesDir = val;
      continue;
    }
    if (opt.name === "work-dir") {
      over.workDir = val;
      continue;
    }
    if (opt.name === "log-file") {
      over.logFile = val;
      continue;
    }
    if (opt.name === "verbosity") {
      if (val !== undefined && !/^\d+$/.test(val)) throw bad(`verbosity '${val}' is not a number`);
      o.logLevel = val === undefined ? o.logLevel + 1 : Number(val);
      continue;
    }
    if (opt.support === "no" && on) throw new CriuError("rpc", `${refusal(opt.name)} (${where})`);
    const f = opt.rpc ? criu_optsSchema.fields.find((x) => x.name === opt!.rpc) : undefined;
    const cannot = () => bad(`--${name} cannot be set from a config file over RPC by criu-bun yet`);
    if (!f) throw cannot();
    const target = o as Record<string, unknown>;
    if (f.fieldKind === "scalar" && f.scalar === ScalarType.BOOL && val === undefined) target[f.localName] = on;
    else if (f.fieldKind === "scalar" && f.scalar === ScalarType.STRING && val !== undefined) target[f.localName] = val;
    else if (
      f.fieldKind === "scalar" &&
      [ScalarType.INT32, ScalarType.UINT32].includes(f.scalar) &&
      val !== undefined
    ) {
      if (!/^\d+$/.test(val)) throw bad(`--${name}: '${val}' is not a number`);
      target[f.localName] = Number(val);
    } else if (f.fieldKind === "list" && f.listKind === "scalar" && f.scalar === ScalarType.STRING && val !== undefined)
      (target[f.localName] as string[]).push(val);
    else throw cannot();
    log.debug(`rpc: ${f.name} from config_file ${where}`);
  }
  return over;
}

/** ext_mnt (key/val pairs), external (mnt[KEY]:VAL) and auto_ext_mnt: as --ext-mount-map, --external and --ext-mount-map auto */
function rpcExtMounts(o: criu_opts, cmd: string): ExtMounts {
  const maps = o.extMnt.map((m) => `${m.key}:${m.val}`);
  if (o.autoExtMnt) maps.push("auto");
  return parseExtMounts(o.external, maps, cmd);
}

function manageCgroups(o: criu_opts): boolean {
  if (isFieldSet(o, criu_optsSchema.field.manageCgroupsMode)) {
    const m = o.manageCgroupsMode;
    return m !== criu_cg_mode.IGNORE && m !== criu_cg_mode.CG_NONE;
  }
  return o.manageCgroups;
}

/** The processes of a killed tree are gone (or dead, waiting for their parent) within the deadline. */
async function waitTreeGone(pids: number[], ms = 10000) {
  const deadline = Date.now() + ms;
  const alive = (p: number) => {
    try {
      const s = readFileSync(`/proc/${p}/stat`, "latin1").replace(/^.*\) /s, "")[0];
      return s !== "Z" && s !== "X";
    } catch {
      return false;
    }
  };
  for (;;) {
    const left = pids.filter(alive);
    if (!left.length) return;
    if (Date.now() > deadline)
      throw new CriuError("dump", `process(es) ${left.join(", ")} still running ${ms} ms after the dump killed them`);
    await Bun.sleep(5);
  }
}

/**
 * status_fd: an fd of the caller (a pipe runc reads), opened here through /proc/<caller>/fd/N for
 * writing; ready() writes criu's one \0 byte and closes it, as criu's status_ready does.
 */
function callerStatusFd(conn: RpcConn, n: number): { ready: () => void; close: () => void } {
  let fd: number;
  try {
    fd = openSync(`/proc/${conn.peer.pid}/fd/${n}`, C.O_WRONLY | 0o2000000 /* O_CLOEXEC */);
  } catch (e) {
    throw new CriuError("rpc", `cannot open status_fd ${n} of the caller (pid ${conn.peer.pid}): ${errnoText(e)}`);
  }
  let open = true;
  const close = () => {
    if (!open) return;
    open = false;
    try {
      closeSync(fd);
    } catch {}
  };
  const ready = () => {
    try {
      writeSync(fd, new Uint8Array(1));
    } catch (e) {
      throw new CriuError("dump", `status_fd ${n}: ${errnoText(e)}`);
    } finally {
      close();
    }
  };
  return { ready, close };
}

async function dumpRequest(conn: RpcConn, req: criu_req, pre: boolean): Promise<RespInit> {
  const o = req.opts;
  const dirs = openDirs(conn, o, pre ? "PRE_DUMP" : "DUMP");
  let statusFd: ReturnType<typeof callerStatusFd> | undefined;
  try {
    refuseUnmapped(o!, pre ? "pre-dump" : "dump");
    if (!isFieldSet(o!, criu_optsSchema.field.pid) || o!.pid <= 0) {
      throw new CriuError(
        "rpc",
        `${pre ? "PRE_DUMP" : "DUMP"}: no pid to dump (set opts.pid; dumping the calling process itself is not supported)`
      );
    }
    const { dumpProcess } = await import("../dump/dump");
    const ps = o!.ps;
    const lazy = !pre && o!.lazyPages;
    if (lazy) {
      // criu's lazy dump serves on ps's port, on every address when ps names none
      if (!ps?.port) throw new CriuError("rpc", "lazy_pages: the dump serves the memory on ps.port, which is not set");
    } else if (ps && (ps.fd || !ps.address || !ps.port))
      throw new CriuError("rpc", "ps: a page server needs address and port (an fd is not supported)");
    if (lazy && isFieldSet(o!, criu_optsSchema.field.statusFd)) statusFd = callerStatusFd(conn, o!.statusFd);
    const hooks = new RpcHooks(conn, o!.notifyScripts, false);
    const stats = dumpProcess({
      pid: o!.pid,
      dir: dirs.images,
      preDump: pre,
      trackMem: o!.trackMem,
      leaveRunning: pre || o!.leaveRunning,
      leaveStopped: !pre && o!.leaveStopped,
      shellJob: o!.shellJob,
      tcpEstablished: o!.tcpEstablished,
      tcpClose: o!.tcpClose,
      skipInFlight: o!.tcpSkipInFlight,
      extUnixSk: o!.extUnixSk,
      fileLocks: o!.fileLocks,
      timeoutSec: o!.timeout || undefined,
      prevImagesDir: o!.parentImg || undefined,
      autoDedup: !!o!.autoDedup,
      pageServer: ps && !lazy ? { address: ps.address, port: ps.port } : undefined,
      lazyPages: lazy ? { address: ps!.address || "0.0.0.0", port: ps!.port, ready: statusFd?.ready } : undefined,
      hooks,
      extMounts: rpcExtMounts(o!, "dump"),
      freezeCgroup: o!.freezeCgroup || undefined,
      emptyNs: o!.emptyNs,
      workDir: dirs.work,
      extNetNs: parseExtNetNs(o!.external, "dump"),
      ghostLimit: isFieldSet(o!, criu_optsSchema.field.ghostLimit) ? o!.ghostLimit : undefined,
      linkRemap: !!o!.linkRemap,
    });
    // a caller such as runc checks that the container is gone as soon as the reply arrives
    if (!pre && !o!.leaveRunning && !o!.leaveStopped) await waitTreeGone(stats.pids);
    log.info(`${pre ? "Pre-dump" : "Dumping"} finished successfully`);
    return pre ? { type: req.type, success: true } : { type: req.type, success: true, dump: { restored: false } };
  } finally {
    statusFd?.close();
    dirs.close();
  }
}

async function restoreRequest(conn: RpcConn, req: criu_req): Promise<RespInit> {
  const o = req.opts;
  const dirs = openDirs(conn, o, "RESTORE");
  try {
    refuseUnmapped(o!, "restore");
    const { restoreProcesses } = await import("../restore/restore");
    const hooks = new RpcHooks(conn, o!.notifyScripts, o!.orphanPtsMaster);
    const st = restoreProcesses({
      dir: dirs.images,
      workDir: dirs.work,
      leaveStopped: o!.leaveStopped,
      shellJob: o!.shellJob,
      tcpClose: o!.tcpClose,
      manageCgroups: manageCgroups(o!),
      ignoreCgroups:
        isFieldSet(o!, criu_optsSchema.field.manageCgroupsMode) && o!.manageCgroupsMode === criu_cg_mode.IGNORE,
      hooks,
      root: o!.root || undefined,
      extMounts: rpcExtMounts(o!, "restore"),
      emptyNs: o!.emptyNs,
      rstSibling: o!.rstSibling,
      inheritFds: inheritFds(o!.inheritFd.map((i) => ({ key: i.key, fd: i.fd }))),
      lazyPages: o!.lazyPages,
      autoDedup: !!o!.autoDedup,
      cgRoots: o!.cgRoot.map((c) => ({
        ctrl: isFieldSet(c, cgroup_rootSchema.field.ctrl) ? c.ctrl : undefined,
        path: c.path,
      })),
    });
    if (st.lazy) {
      // the reply says the restore worked only once the daemon has brought every page in (the
      // caller, runc, waits for this process to exit anyway); if the daemon goes first, the tree
      // is killed and the reply is the failure
      const { awaitLazyMemory } = await import("../resources/lazymem");
      awaitLazyMemory(st.lazy, st.pids, st.pid, !o!.rstSibling);
    }
    log.info(`Restore finished successfully (pid ${st.pid})`);
    return { type: req.type, success: true, restore: { pid: st.pid } };
  } finally {
    dirs.close();
  }
}

async function checkRequest(req: criu_req): Promise<RespInit> {
  const { PROBES, runProbe } = await import("../check/index");
  const failed = PROBES.filter((p) => p.basic)
    .map(runProbe)
    .filter((r) => !r.ok);
  if (failed.length)
    return {
      type: req.type,
      success: false,
      crErrno: 0,
      crErrmsg: failed
        .map((r) => `${r.name}: ${r.text}`)
        .join("; ")
        .slice(0, 4000),
    };
  return { type: req.type, success: true };
}

/** the lazy_pages probe of `check` */
async function lazyPagesWork(): Promise<boolean> {
  const { PROBES, runProbe } = await import("../check/index");
  const p = PROBES.find((x) => x.name === "lazy_pages");
  return !!p && runProbe(p).ok;
}

async function featureCheck(req: criu_req): Promise<RespInit> {
  // criu-bun compares pages against the previous images itself (no soft-dirty needed): a
  // pre-dump followed by a dump with parent_img works on every kernel it runs on
  // lazy_pages: what `criu-bun check --feature lazy_pages` finds (a non-cooperative userfaultfd that
  // fills a page, pidfd_getfd), asked only when the caller names it
  const wantsLazy = !req.features || isFieldSet(req.features, criu_featuresSchema.field.lazyPages);
  const have: Record<string, boolean> = {
    mem_track: true,
    lazy_pages: wantsLazy && (await lazyPagesWork()),
    pidfd_store: false,
  };
  const f: Record<string, boolean> = {};
  // the caller names the features it wants to know about by setting them; none named: all
  for (const field of criu_featuresSchema.fields) {
    if (!req.features || isFieldSet(req.features, field)) f[field.localName] = have[field.name];
  }
  return { type: req.type, success: true, features: f };
}

function waitPid(req: criu_req): RespInit {
  if (!req.pid) throw new CriuError("rpc", "WAIT_PID: no pid given");
  for (;;) {
    const { r, status } = wait4Raw(req.pid, 0);
    if (r === -4) continue;
    if (r < 0) {
      const e = new CriuError("rpc", `WAIT_PID: ${req.pid} is not a child of criu-bun: ${errnoText(-r)}`);
      throw Object.assign(e, { crErrno: -r });
    }
    if (W.exited(status) || W.signaled(status)) return { type: req.type, success: true, status };
  }
}

export async function handleRequest(conn: RpcConn, req: criu_req): Promise<RespInit> {
  log.debug(`rpc: ${T[req.type] ?? req.type} request`);
  switch (req.type) {
    case T.VERSION:
      return {
        type: req.type,
        success: true,
        version: {
          majorNumber: Number(CRIU_LEVEL.split(".")[0]),
          minorNumber: Number(CRIU_LEVEL.split(".")[1]),
          gitid: GITID,
          name: "criu-bun",
        },
      };
    case T.FEATURE_CHECK:
      return featureCheck(req);
    case T.CHECK:
      return checkRequest(req);
    case T.DUMP:
      return dumpRequest(conn, req, false);
    case T.PRE_DUMP:
    case T.SINGLE_PRE_DUMP:
      return dumpRequest(conn, req, true);
    case T.RESTORE:
      return restoreRequest(conn, req);
    case T.WAIT_PID:
      return waitPid(req);
    case T.PAGE_SERVER:
    case T.PAGE_SERVER_CHLD:
      return failure(
        req.type,
        new CriuError(
          "rpc",
          `${T[req.type]}: a page server over RPC is not supported by criu-bun yet (run 'criu-bun page-server')`
        )
      );
    case T.CPUINFO_DUMP:
    case T.CPUINFO_CHECK:
      return failure(
        req.type,
        new CriuError("rpc", `${T[req.type]}: not supported by criu-bun (restore checks the CPU's xsave layout itself)`)
      );
    case T.NOTIFY:
      return failure(req.type, new CriuError("rpc", "NOTIFY: there is no notification waiting for an answer"));
    default:
      return failure(req.type ?? 0, new CriuError("rpc", `unknown request type ${req.type}`));
  }
}
