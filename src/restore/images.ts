// Loading and validating everything a restore needs before anything is created.
import { existsSync } from "../sys/fs";
import { join } from "../sys/path";
import { readImage, imageExists, trackReads, endReads } from "../images/image";
import { decodePagemapTable, PagemapTable, type PagemapRunAt } from "../images/pagemap";
import * as S from "../images/schemas";
import { create } from "@bufbuild/protobuf";
import { CriuError, log } from "../log";
import { jitForLoops, jitIfLarge, WORK_JIT } from "../jit";
import { checkPages } from "../codec/pipeline";
import { taskCgSet, readCgroups } from "../resources/cgroup";
import { verifyManifest } from "../images/manifest";
import { readSeccomp } from "../resources/seccomp";
import { sigactionTable } from "../resources/signals";
import { loadNamespaces, type RestoreNamespaces } from "../resources/namespaces";
import { readIpcNs, type IpcNsImage } from "../resources/ipcns";
import { anonFromCriuMemfd } from "../resources/shmem";
import { personalityFromImages } from "../resources/taskattrs";
import {
  validatePstree,
  validateThreads,
  validateCore,
  validateMm,
  validatePagemap,
  validateFdinfo,
  validateFiles,
} from "./validate";

export interface TaskImages {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  tids: number[];
  /** a zombie: only its exit status is restored (its mm and fs are empty entries, its pagemap and fds empty) */
  zombie?: { exitCode: number };
  cores: Map<number, S.core_entry>;
  ids?: S.task_kobj_ids_entry;
  mm: S.mm_entry;
  /** the pagemap's runs in typed arrays (what a restore's own paths read) */
  pm: PagemapTable;
  /** the same runs as objects, made on first use (lazy pages, parent images) */
  readonly pagemap: PagemapRunAt[];
  pagesFile: string;
  fs: S.fs_entry;
  fds: S.fdinfo_entry[];
}
/** with the namespaces to make again (namespaces.ts) */
export interface RestoreSet extends RestoreNamespaces {
  dir: string;
  /** the tree's own mount namespace (a container's), from mountpoints-<id>.img: built before anything runs */
  mounts?: S.mnt_entry[];
  /** where its root goes (--root, or where it was) and the external mounts' paths (set by precheck) */
  mountOpts?: { root: string; ext: import("../resources/mounts").ExtMounts };
  /** empty_ns net: the new network namespace is left empty (not even lo up), the caller fills it */
  emptyNetNs?: boolean;
  /** rst_sibling: the root becomes a child of criu-bun's parent (the caller), not of criu-bun */
  rstSibling?: boolean;
  /** restore --lazy-pages for migrate: the parent images' pages of lazy memory come from the daemon too (lazyParentRuns) */
  lazyParents?: boolean;
  /** restore --auto-dedup: each block of the pages file is punched out once its pages are in (codec/dedup.ts) */
  autoDedup?: boolean;
  /** inherit_fd / --inherit-fd: KEY (e.g. "pipe:[123]") -> an fd of criu-bun's that takes that file's place */
  inheritFds?: Map<string, number>;
  /** the tree's own IPC namespace: its sysctls (ipcns-var), queues (ipcns-msg), semaphore sets (ipcns-sem) */
  ipcNs?: IpcNsImage;
  /** seccomp filters from seccomp.img (threads point at their newest with seccomp_filter) */
  seccomp: S.seccomp_filter[];
  /** cgroup sets from cgroup.img (tasks point at them with tc.cgSet) */
  cgroups: Map<number, S.cg_set_entry>;
  inventory: S.inventory_entry;
  files: Map<number, S.file_entry>;
  tasks: TaskImages[];
  /** shared memory objects whose size the images name (CRIU's memfd inodes of shared anonymous memory), by shmid */
  shmemSizes?: Map<bigint, bigint>;
}

/** runs of a pagemap from which its checks run at the JIT's own thresholds (about LARGE_IMAGE's bytes) */
const LARGE_PAGEMAP = 4096;

function need(dir: string, file: string) {
  if (!imageExists(dir, file)) throw new CriuError("restore", `${join(dir, file)} is missing`);
}

export function loadImages(dir: string): RestoreSet {
  const read = trackReads();
  try {
    return loadImagesFrom(dir, read);
  } finally {
    endReads();
  }
}

function loadImagesFrom(dir: string, read: Map<string, bigint>): RestoreSet {
  if (!existsSync(dir)) throw new CriuError("restore", `images directory '${dir}' does not exist`);
  need(dir, "inventory.img");
  const [inventory] = readImage(dir, "inventory.img", "INVENTORY");
  if (!inventory) throw new CriuError("restore", `${dir}/inventory.img has no entry`);
  if (inventory.imgVersion !== 2)
    throw new CriuError("restore", `${dir}/inventory.img: unsupported image version ${inventory.imgVersion}`);
  need(dir, "pstree.img");
  const pstree = readImage(dir, "pstree.img", "PSTREE");
  validatePstree(dir, pstree);
  const files = validateFiles(dir, imageExists(dir, "files.img") ? readImage(dir, "files.img", "FILES") : []);
  let inodes: S.memfd_inode_entry[] | undefined;
  const shmemSizes = new Map<bigint, bigint>();
  const memfdInodes = () =>
    (inodes ??= imageExists(dir, "memfd.img")
      ? (readImage(dir, "memfd.img", "MEMFD_INODE") as S.memfd_inode_entry[])
      : []);
  const tasks: TaskImages[] = [];
  for (const p of pstree) {
    const pid = p.pid;
    // a zombie has only its core-PID.img (CRIU may leave anything in its pstree threads)
    need(dir, `core-${pid}.img`);
    const leader = readImage(dir, `core-${pid}.img`, "CORE")[0];
    const tids = leader?.tc?.taskState === 2 || !p.threads.length ? [pid] : [...p.threads];
    const cores = new Map<number, S.core_entry>();
    if (jitIfLarge(tids.length, 64))
      log.debug(`JIT tier-up thresholds x${WORK_JIT} from here on (${tids.length} threads)`);
    for (const tid of tids) {
      // the leader's core was read above (to know its threads): not decoded twice
      if (tid !== pid) need(dir, `core-${tid}.img`);
      const c = tid === pid ? leader : readImage(dir, `core-${tid}.img`, "CORE")[0];
      if (!c) throw new CriuError("restore", `${dir}/core-${tid}.img has no entry`);
      if (!c.threadInfo && c.tc?.taskState !== 2)
        throw new CriuError("restore", `${dir}/core-${tid}.img has no x86_64 thread info`);
      if (c.mtype !== 1) throw new CriuError("restore", `${dir}/core-${tid}.img is not an x86_64 image`);
      if (tid === pid && !c.tc) throw new CriuError("restore", `${dir}/core-${pid}.img has no task core`);
      if (c.tc?.taskState !== 2) validateCore(dir, `core-${tid}.img`, c, tid === pid);
      cores.set(tid, c);
    }
    const tc = cores.get(pid)?.tc;
    if (!tc) throw new CriuError("restore", `${dir}/core-${pid}.img has no task core`);
    if (tc.taskState !== 2) sigactionTable(`${dir}/core-${pid}.img`, tc);
    if (tc.taskState !== 2) personalityFromImages(tc, !!inventory.allImages, `${dir}/core-${pid}.img`);
    if (tc.taskState === 2 /* TASK_DEAD */) {
      tasks.push({
        pid,
        ppid: p.ppid,
        pgid: p.pgid,
        sid: p.sid,
        tids: [pid],
        cores,
        zombie: { exitCode: tc.exitCode },
        mm: create(S.mm_entrySchema),
        pm: PagemapTable.empty,
        pagemap: [],
        pagesFile: "",
        fs: create(S.fs_entrySchema),
        fds: [],
      });
      continue;
    }
    need(dir, `mm-${pid}.img`);
    const [mm] = readImage(dir, `mm-${pid}.img`, "MM");
    // CRIU 4.2's shared anonymous memory, written as a memfd mapping: read as what it is (shmem.ts)
    anonFromCriuMemfd(`mm-${pid}.img`, mm, files, memfdInodes, shmemSizes);
    validateMm(dir, `mm-${pid}.img`, mm, files);
    need(dir, `pagemap-${pid}.img`);
    const t0 = performance.now();
    const pm = decodePagemapTable(dir, `pagemap-${pid}.img`); // each run with the offset of its pages in the page stream
    const t1 = performance.now();
    let t2 = 0;
    const pagesFile = `pages-${pm.pagesId}.img`;
    const check = () => {
      validatePagemap(dir, `pagemap-${pid}.img`, pm, mm);
      t2 = performance.now();
      checkPages(dir, { pid, pm, pagesFile, mm }); // pages-N.img or criu-bun's pages-N.lz4: present, sizes match
    };
    // a large pagemap's runs (a 1 GiB heap: 55,000) go through these loops once each, before any
    // process is made: at the JIT's own thresholds (jit.ts)
    if (pm.length >= LARGE_PAGEMAP) jitForLoops(check);
    else check();
    log.debug(
      `pagemap-${pid}.img: ${pm.length} runs decoded in ${(t1 - t0).toFixed(1)} ms, checked against the VMAs in ${(t2 - t1).toFixed(1)} ms, against ${pagesFile}'s index in ${(performance.now() - t2).toFixed(1)} ms`
    );
    need(dir, `fs-${pid}.img`);
    const [fs] = readImage(dir, `fs-${pid}.img`, "FS");
    if (inventory.allImages) need(dir, `ids-${pid}.img`);
    const ids = imageExists(dir, `ids-${pid}.img`) ? readImage(dir, `ids-${pid}.img`, "IDS")[0] : undefined;
    const fdFile = ids ? `fdinfo-${ids.filesId}.img` : `fdinfo-1.img`;
    // criu-bun writes it even for a process without fds; CRIU leaves it out then
    if (inventory.allImages) need(dir, fdFile);
    const fds = imageExists(dir, fdFile) ? readImage(dir, fdFile, "FDINFO") : [];
    validateFdinfo(dir, fdFile, fds, files);
    tasks.push({
      pid,
      ppid: p.ppid,
      pgid: p.pgid,
      sid: p.sid,
      tids,
      cores,
      ids,
      mm,
      pm,
      get pagemap() {
        return pm.runs();
      },
      pagesFile,
      fs,
      fds,
    });
  }
  const live = new Set(tasks.filter((t) => !t.zombie).map((t) => t.pid));
  validateThreads(dir, pstree, (pid) => live.has(pid));
  const pids = new Set(tasks.map((t) => t.pid));
  const byPid = new Map(tasks.map((t) => [t.pid, t]));
  // an fd table or fs shared between processes can only be recreated between parent and child
  for (const [key, what] of [
    ["filesId", "fd table"],
    ["fsId", "fs (cwd, umask)"],
  ] as const) {
    const first = new Map<number, TaskImages>();
    for (const t of tasks) {
      if (!t.ids) continue;
      const id = t.ids[key];
      const f = first.get(id);
      if (!f) {
        first.set(id, t);
        continue;
      }
      const parent = byPid.get(t.ppid);
      if (!parent?.ids || parent.ids[key] !== id) {
        throw new CriuError(
          "restore",
          `process ${t.pid} shares its ${what} with process ${f.pid}, which is not its parent: not supported`
        );
      }
    }
  }
  for (const t of tasks.slice(1)) {
    if (!pids.has(t.ppid))
      throw new CriuError(
        "restore",
        `${dir}/pstree.img: process ${t.pid} has parent ${t.ppid}, which is not in the images`
      );
  }
  const rootIds = tasks[0].ids,
    dumper = inventory.rootIds;
  const { newPidNs, newMntNs, uts, timens, newNetNs, extNetKey, newIpcNs } = loadNamespaces(
    dir,
    rootIds,
    dumper,
    tasks[0].pid
  );
  const cgroups = new Map<number, S.cg_set_entry>();
  if (imageExists(dir, "cgroup.img"))
    for (const cs of readImage(dir, "cgroup.img", "CGROUP")[0]?.sets ?? []) cgroups.set(cs.id, cs);
  // root_cg_set (the dumper's set) means the restorer's own cgroups: a task in it whose parent is
  // elsewhere moves back there
  const rootCg = inventory.rootCgSet;
  if (cgroups.size && rootCg && !cgroups.has(rootCg))
    cgroups.set(rootCg, { id: rootCg, ctls: readCgroups("self") } as S.cg_set_entry);
  for (const t of tasks) {
    // the dumper's own set (root_cg_set) is not in cgroup.img: the task stays in the restorer's
    const cg = taskCgSet(t.cores.get(t.pid));
    if (cg && cg !== inventory.rootCgSet && !cgroups.has(cg))
      throw new CriuError("restore", `${dir}/core-${t.pid}.img: cgroup set ${cg} is not in cgroup.img`);
    // each thread's (CRIU 4 keeps it per thread)
    for (const [tid, c] of t.cores) {
      const tcg = c.threadCore?.cgSet;
      if (tcg && tcg !== inventory.rootCgSet && !cgroups.has(tcg))
        throw new CriuError("restore", `${dir}/core-${tid}.img: cgroup set ${tcg} is not in cgroup.img`);
    }
  }
  const seccomp = readSeccomp(
    dir,
    tasks.flatMap((t) => [...t.cores.values()].map((c) => ({ pid: t.pid, tc: c.threadCore })))
  );
  const ipcNs = newIpcNs ? readIpcNs(dir, rootIds!.ipcNsId) : undefined;
  const mntImg = rootIds ? `mountpoints-${rootIds.mntNsId}.img` : "";
  const mounts = newMntNs && imageExists(dir, mntImg) ? readImage(dir, mntImg, "MNTS") : undefined;
  // criu-bun's dump: every image as written. Last, so that damage the checks above understand is
  // named by them (file, offset, field); this catches what still looks plausible
  if (inventory.allImages) verifyManifest(dir, read);
  return {
    dir,
    inventory,
    files,
    tasks,
    newPidNs,
    newMntNs,
    mounts,
    newNetNs,
    extNetKey,
    newIpcNs,
    ipcNs,
    uts,
    timens,
    cgroups,
    seccomp,
    shmemSizes,
  };
}
