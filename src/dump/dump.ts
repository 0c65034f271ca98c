// The dump pipeline: freeze the process, collect its state, write CRIU images, then kill,
// release (-R) or leave it stopped (-s). Any failure before the end releases the process
// untouched (registers were restored after every injection).
import { create, type DescMessage } from "@bufbuild/protobuf";
import { accessSync, constants, mkdirSync, openSync, closeSync, writeSync, statSync, existsSync } from "node:fs";
import { join } from "node:path";
import { freezeProcess, releaseProcess, type FrozenProcess } from "../ptrace/seize";
import { RemoteMem } from "../ptrace/inject";
import { setRegs } from "../sys/ptrace";
import { syscall } from "../sys/syscall";
import { NR } from "../sys/nr";
import { dumpTask, type TaskDump } from "./task";
import { pagesToDump, readPages } from "../resources/memory";
import { dumpFds, FileTable, type FdDump } from "../resources/files";
import { ImageSink } from "../resources/fdkind";
import { VMA } from "../resources/vma";
import { writeImage, writeImageWithPayload } from "../images/image";
import * as S from "../images/schemas";
import { CriuError, log } from "../log";

export interface DumpOptions {
  pid: number; dir: string; leaveRunning?: boolean; leaveStopped?: boolean; shellJob?: boolean;
  timeoutSec?: number; displayStats?: boolean; compress?: boolean;
}
export interface DumpStats { freezingTime: number; frozenTime: number; memdumpTime: number; memwriteTime: number; pagesScanned: number; pagesWritten: number }

function msg<T extends DescMessage>(schema: T, init: Record<string, any>) { return create(schema, init as any); }

function checkImagesDir(dir: string) {
  if (!existsSync(dir)) throw new CriuError("dump", `images directory '${dir}' does not exist`);
  try { if (!statSync(dir).isDirectory()) throw new Error("not a directory"); accessSync(dir, constants.W_OK); }
  catch (e: any) { throw new CriuError("dump", `images directory '${dir}' is not writable (${e.code ?? e.message})`); }
  // root passes access(W_OK) even on read-only mounts: really try
  const probe = join(dir, `.criu-bun-probe-${process.pid}`);
  try { closeSync(openSync(probe, "w")); require("node:fs").unlinkSync(probe); }
  catch (e: any) { throw new CriuError("dump", `images directory '${dir}' is not writable (${e.code ?? e.message})`); }
}

export function dumpProcess(o: DumpOptions): DumpStats {
  const { pid, dir } = o;
  if (!Number.isInteger(pid) || pid <= 0) throw new CriuError("dump", `invalid PID '${o.pid}'`);
  if (!existsSync(`/proc/${pid}`)) throw new CriuError("dump", `process ${pid} does not exist`);
  if (pid === process.pid) throw new CriuError("dump", `cannot dump criu-bun itself`);
  checkImagesDir(dir);
  const t0 = performance.now();
  const fp = freezeProcess(pid, (o.timeoutSec ?? 10) * 1000);
  const tFrozen = performance.now();
  const mem = new RemoteMem(pid);
  let stats: DumpStats;
  try {
    stats = collectAndWrite(fp, mem, o, tFrozen - t0);
  } catch (e) {
    mem.close();
    releaseProcess(fp);
    log.info(`Dump of ${pid} failed; process released`);
    throw e;
  }
  mem.close();
  stats.frozenTime = Math.round((performance.now() - tFrozen) * 1000);
  if (o.leaveStopped) {
    // leave it stopped: detach with SIGSTOP so it stays in a group stop
    for (const t of fp.threads) syscall(NR.ptrace, 17 /*DETACH*/, t.tid, 0, 19);
    log.info(`Process ${pid} left stopped`);
  } else if (o.leaveRunning) {
    releaseProcess(fp);
    log.info(`Process ${pid} left running`);
  } else {
    syscall(NR.kill, pid, 9);
    for (const t of fp.threads) syscall(NR.ptrace, 17, t.tid, 0, 0);
    log.info(`Process ${pid} killed after dump`);
  }
  return stats;
}

function collectAndWrite(fp: FrozenProcess, mem: RemoteMem, o: DumpOptions, freezeMs: number): DumpStats {
  const pid = fp.pid;
  const task: TaskDump = dumpTask(fp, mem);
  const files = new FileTable();
  const extra = new ImageSink();
  const fds: FdDump[] = dumpFds(pid, files, extra, { shellJob: o.shellJob });
  const cwdId = files.addPath(task.cwd, 0o10000000 /* O_PATH */);
  const rootId = files.addPath(task.root, 0o10000000);
  task.mm.exeFileId = files.addPath(task.exe, 0o10000000);
  for (const v of task.vmas) {
    if (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) {
      const rw = v.status & VMA.FILE_SHARED && v.prot & 2 ? 2 /* O_RDWR */ : 0;
      v.shmid = BigInt(files.addPath(v.path, rw));
      v.fdflags = rw;
    }
  }
  task.mm.vmas = task.vmas.map((v) => ({
    start: v.start, end: v.end, pgoff: v.pgoff, shmid: v.shmid, prot: v.prot, flags: v.flags, status: v.status,
    fd: v.fd, madv: v.madv, fdflags: v.fdflags,
  }));

  // memory
  const tMem = performance.now();
  const runs = pagesToDump(pid, task.vmas);
  const pagesPath = join(dir(o), `pages-1.img`);
  const pfd = openSync(pagesPath, "w");
  let pr;
  try {
    pr = readPages(pid, task.vmas, runs, mem, {
      write(_va, data, off, n) { writeSync(pfd, data, off, n * 4096); },
    });
  } finally { closeSync(pfd); }
  const memMs = performance.now() - tMem;

  // images
  const d = dir(o);
  const stat = task.stat;
  const tids = task.threads.map((t) => t.tid);
  writeImage(d, "inventory.img", "INVENTORY", [msg(S.inventory_entrySchema, {
    imgVersion: 2, fdinfoPerId: true, nsPerId: true, lsmtype: 0,
    rootIds: { vmId: 1, filesId: 1, fsId: 1, sighandId: 1, pidNsId: 1, netNsId: 2, ipcNsId: 3, utsNsId: 4, mntNsId: 5, userNsId: 6, cgroupNsId: 7, timeNsId: 8 },
    dumpUptime: BigInt(Math.round(performance.now() * 1000)),
  })]);
  writeImage(d, "pstree.img", "PSTREE", [msg(S.pstree_entrySchema, { pid, ppid: 0, pgid: stat.pgid, sid: stat.sid, threads: tids })]);
  for (const t of task.threads) {
    const core = { ...t.core };
    if (t.tid === pid) core.tc = task.threads[0].core.tc;
    writeImage(d, `core-${t.tid}.img`, "CORE", [msg(S.core_entrySchema, core)]);
  }
  writeImage(d, `ids-${pid}.img`, "IDS", [msg(S.task_kobj_ids_entrySchema, { vmId: 1, filesId: 1, fsId: 1, sighandId: 1, pidNsId: 1, netNsId: 2, ipcNsId: 3, utsNsId: 4, mntNsId: 5, userNsId: 6, cgroupNsId: 7, timeNsId: 8 })]);
  writeImage(d, `mm-${pid}.img`, "MM", [msg(S.mm_entrySchema, task.mm)]);
  writeImage(d, `pagemap-${pid}.img`, "PAGEMAP", [
    msg(S.pagemap_headSchema, { pagesId: 1 }),
    ...pr.runs.map((r) => msg(S.pagemap_entrySchema, { vaddr: r.vaddr, compatNrPages: r.nrPages, nrPages: BigInt(r.nrPages), flags: r.flags })),
  ]);
  writeImage(d, `fs-${pid}.img`, "FS", [msg(S.fs_entrySchema, { cwdId, rootId, umask: task.umask })]);
  writeImage(d, "files.img", "FILES", files.files.map((f) => msg(S.file_entrySchema, f)));
  writeImage(d, `fdinfo-1.img`, "FDINFO", fds.map((f) => msg(S.fdinfo_entrySchema, { id: f.id, flags: f.cloexec ? 1 : 0, type: f.type, fd: f.fd })));
  extra.writeAll(d);
  const stats: DumpStats = {
    freezingTime: Math.round(freezeMs * 1000), frozenTime: 0, memdumpTime: Math.round(memMs * 1000), memwriteTime: 0,
    pagesScanned: pr.scanned, pagesWritten: pr.written,
  };
  writeImage(d, "stats-dump.img", "STATS", [msg(S.stats_entrySchema, { dump: {
    freezingTime: stats.freezingTime, frozenTime: stats.frozenTime, memdumpTime: stats.memdumpTime, memwriteTime: 0,
    pagesScanned: BigInt(pr.scanned), pagesSkippedParent: 0n, pagesWritten: BigInt(pr.written), pagesLazy: 0n,
  } })]);
  void setRegs;
  return stats;
}
function dir(o: DumpOptions) { return o.dir; }
void mkdirSync;
