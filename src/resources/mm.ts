// Memory layout of a process, both directions: at dump its VMAs (memory.ts classifies them),
// brk, THP setting, auxv, exe and the mm fields of /proc/PID/stat, as CRIU's mm_entry; at restore
// the puppet's memory unmapped, the vDSO put where it was, every VMA mapped again (anonymous ones
// batched, files and shared memory from their fds, SysV segments attached, VMAs a forked child
// shares with its parent kept), its pages filled (codec), mlock()ed ranges locked again, and the
// mm fields, auxv and exe link set in one PR_SET_MM_MAP. Page contents are the codec's
// (src/codec), shared memory's shmem.ts and sysvshm.ts.
import { readAuxv, readLink, readMaps, readStatus, readVmas, type ProcStat, type Vma } from "../sys/proc";
import { NR } from "../sys/nr";
import { PR, MADV } from "../sys/flags";
import { O, openFd, closeFd, preadFull } from "../sys/mem";
import { sysFailed } from "../sys/errno";
import { dataWords, type Injector, type InCall, type OutCall } from "../ptrace/inject";
import * as S from "../images/schemas";
import { isFieldSet } from "@bufbuild/protobuf";
import { CriuError, log, logLevel, LOG_DEBUG } from "../log";
import { classifyVmas, logVmas, vmaLine, type DumpedVma } from "./memory";
import { VMA, MAP, PAGE, PE, firstEndAfter } from "./vma";
import { SHMAT } from "./sysvshm";
import { refuse } from "./unsupported";

function hex(v: bigint | number) {
  return "0x" + v.toString(16);
}
function mmapFailed(proc: { vpid: number }, v: S.vma_entry, r: bigint): CriuError {
  const who = `process ${proc.vpid} VMA ${hex(v.start)}-${hex(v.end)}`;
  return new CriuError("restore", r < 0n ? sysFailed(who, "mmap", r) : `${who}: mmap placed it at ${hex(r)}`);
}

// ---------- dump ----------

/** brk(0), PR_GET_THP_DISABLE, PR_GET_DUMPABLE and PR_GET_MDWE, for the dump's batch */
export function mmCalls(): OutCall[] {
  return [
    { nr: NR.brk, args: () => [0], out: 0 },
    { nr: NR.prctl, args: () => [PR.GET_THP_DISABLE, 0, 0, 0, 0], out: 0 },
    { nr: NR.prctl, args: () => [PR.GET_DUMPABLE, 0, 0, 0, 0], out: 0 },
    { nr: NR.prctl, args: () => [PR.GET_MDWE, 0, 0, 0, 0], out: 0 },
  ];
}

/**
 * the batch's answers to mmCalls(). Dumpable 2 (SUID_DUMP_ROOT: set by a credential change under
 * fs.suid_dumpable=2) cannot be set again: PR_SET_DUMPABLE takes 0 or 1 only.
 */
export function decodeMmCalls(
  pid: number,
  got: { r: bigint }[]
): { brk: bigint; thpDisabled: boolean; dumpable: number } {
  const d = got[2].r;
  if (d < 0n) throw new CriuError("dump", sysFailed(`process ${pid}`, "injected prctl(PR_GET_DUMPABLE)", d));
  if (d !== 0n && d !== 1n) refuse("dump", `process ${pid}`, "dumpable-suid", `dumpable ${d}`);
  // memory-deny-write-execute (Linux 6.3; systemd's MemoryDenyWriteExecute= sets it): no field of
  // CRIU's images holds it (older kernels answer EINVAL: not set)
  const mdwe = got[3].r;
  if (mdwe > 0n) refuse("dump", `process ${pid}`, "unkept-state", `PR_SET_MDWE 0x${mdwe.toString(16)}`);
  return { brk: BigInt.asUintN(64, got[0].r), thpDisabled: got[1].r > 0n, dumpable: Number(d) };
}

const MCL_FUTURE = 2,
  MCL_ONFAULT = 4;

/** VmLck of /proc/PID/status in kB */
function lockedKb(status: Record<string, string>): number {
  return Number.parseInt(status.VmLck ?? "0", 10) || 0;
}

/**
 * Whether mlockall(MCL_FUTURE) is in force (mm->def_flags: what later mappings are made with, shown
 * nowhere) and with MCL_ONFAULT: 0, or mlockall's flags MCL_FUTURE, or MCL_FUTURE|MCL_ONFAULT, as
 * mm_entry's mlock_future keeps it. Told by a probe: one page mapped PROT_READ in the stopped process (an
 * injected mmap) counts in VmLck when the mapping is made locked, and is populated at once unless
 * locked on fault (its pagemap entry present); then unmapped (the memory map as it was). VmLck
 * before: the status read before the process's injected calls (nothing since locks or unlocks).
 */
export function probeMlockFuture(pid: number, inj: Injector, statusBefore: Record<string, string>): number {
  const r = inj.call(NR.mmap, 0, PAGE, 1 /* PROT_READ */, MAP.PRIVATE | MAP.ANONYMOUS, -1, 0);
  // EAGAIN: a locked mapping over RLIMIT_MEMLOCK (only a locked one is checked against it)
  if (r === -11n)
    throw new CriuError(
      "dump",
      `process ${pid}: mlockall(MCL_FUTURE) in force and RLIMIT_MEMLOCK reached: whether with MCL_ONFAULT cannot be told`
    );
  if (r < 0n && r > -4096n)
    throw new CriuError("dump", sysFailed(`process ${pid}`, "injected mmap (mlockall probe)", r));
  const at = BigInt.asUintN(64, r);
  let future = 0;
  try {
    if (lockedKb(readStatus(pid)) > lockedKb(statusBefore)) {
      const fd = openFd(`/proc/${pid}/pagemap`, O.RDONLY | O.CLOEXEC);
      try {
        const e = new Uint8Array(8);
        if (preadFull(fd, e, (at / BigInt(PAGE)) * 8n, 8, 0, `read pagemap of ${pid}`) !== 8)
          throw new CriuError("dump", `short pagemap read for ${pid}`);
        future = e[7] & 0x80 ? MCL_FUTURE : MCL_FUTURE | MCL_ONFAULT; // present (populated at mmap): not on fault
      } finally {
        closeFd(fd);
      }
    }
  } finally {
    const u = inj.call(NR.munmap, at, PAGE);
    if (u !== 0n)
      throw new CriuError(
        "dump",
        sysFailed(`process ${pid}`, `injected munmap of the mlockall probe at ${hex(at)}`, u)
      );
  }
  if (future)
    log.debug(
      `mm: process ${pid}: mlockall(MCL_FUTURE${future & MCL_ONFAULT ? "|MCL_ONFAULT" : ""}) in force (a probe mapping was locked)`
    );
  return future;
}

/**
 * The memory layout of a frozen process: its VMAs and CRIU's mm_entry fields (its vmas and
 * exe_file_id are filled in once the files they map have ids: mmVmaEntries, the dump's file table).
 */
export function dumpMm(
  pid: number,
  stat: ProcStat,
  brk: bigint,
  thpDisabled: boolean,
  dumpable: number,
  mlockFuture: number,
  raw?: Vma[]
) {
  const vmas = classifyVmas(pid, raw);
  if (!raw) logVmas(pid, vmas); // (else once completeVmas gave them their flags)
  const exe = readLink(`/proc/${pid}/exe`);
  const auxv = readAuxv(pid);
  const mm: S.Init<typeof S.mm_entrySchema> = {
    mmStartCode: stat.startCode,
    mmEndCode: stat.endCode,
    mmStartData: stat.startData,
    mmEndData: stat.endData,
    mmStartStack: stat.startStack,
    mmStartBrk: stat.startBrk,
    mmBrk: brk,
    mmArgStart: stat.argStart,
    mmArgEnd: stat.argEnd,
    mmEnvStart: stat.envStart,
    mmEnvEnd: stat.envEnd,
    exeFileId: 0,
    ...auxvFields(auxv),
    vmas: [],
    dumpable,
    thpDisabled,
    mlockFuture: mlockFuture || undefined,
  };
  log.debug(
    `mm: process ${pid}: ${vmas.length} VMAs, code ${hex(stat.startCode)}-${hex(stat.endCode)}, brk ${hex(stat.startBrk)}-${hex(brk)}, ` +
      `stack ${hex(stat.startStack)}, auxv ${auxv.length / 2} entries, exe ${exe}${thpDisabled ? ", THP disabled" : ""}, dumpable ${dumpable}`
  );
  return { vmas, mm, exe };
}

/** CRIU's AT_VECTOR_SIZE: mm_saved_auxv holds at most this many words (CRIU refuses more). */
const AT_VECTOR_SIZE = 44;

/** auxv as CRIU stores it: the first 44 words (the AT_NULL pair that ends it is implied: the kernel
 * adds it); an auxv with more than that is also kept whole in criu-bun's full_auxv. */
function auxvFields(auxv: ArrayLike<bigint>): { mmSavedAuxv: bigint[]; fullAuxv: bigint[] } {
  const all = Array.from(auxv);
  let n = all.length;
  while (n >= 2 && all[n - 2] === 0n && all[n - 1] === 0n) n -= 2; // trailing AT_NULL pairs
  if (n <= AT_VECTOR_SIZE) return { mmSavedAuxv: all.slice(0, Math.min(all.length, AT_VECTOR_SIZE)), fullAuxv: [] };
  return { mmSavedAuxv: all.slice(0, AT_VECTOR_SIZE), fullAuxv: all };
}

/**
 * File ids of what the process maps: its executable and each file mapping (O_RDWR for a shared
 * writable one), through fileId(path, source, flags): the dump's file table, a ghost file for a
 * deleted one read through SOURCE.
 */
export function linkMmFiles(
  pid: number,
  mm: S.Init<typeof S.mm_entrySchema>,
  exe: string,
  vmas: DumpedVma[],
  fileId: (path: string, source: string, flags: number) => number
) {
  mm.exeFileId = fileId(exe, `/proc/${pid}/exe`, 0);
  const debug = logLevel() >= LOG_DEBUG;
  for (const v of vmas) {
    if (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) {
      const rw = v.status & VMA.FILE_SHARED && (v.prot & 2 || v.mayWrite) ? 2 /* O_RDWR */ : 0;
      v.shmid = BigInt(fileId(v.path, `/proc/${pid}/map_files/${v.start.toString(16)}-${v.end.toString(16)}`, rw));
      v.fdflags = rw;
      if (debug)
        log.debug(`mm: process ${pid}: mapping at ${hex(v.start)} is file id ${v.shmid}${rw ? " (O_RDWR)" : ""}`);
    }
  }
  log.debug(`mm: process ${pid}: executable ${exe} is file id ${mm.exeFileId}`);
}

/**
 * vma_entry of each VMA, as CRIU writes them: madv only when set, fdflags only for file mappings and
 * SysV segments; and criu-bun's accounted (every private VMA but the kernel's: set or not, so that
 * CRIU's images, without it, are told apart) and lock_onfault (when set)
 */
export function mmVmaEntries(vmas: DumpedVma[]) {
  const kernels = VMA.VDSO | VMA.VVAR | VMA.VSYSCALL;
  return vmas.map((v) => ({
    start: v.start,
    end: v.end,
    pgoff: v.pgoff,
    shmid: v.shmid,
    prot: v.prot,
    flags: v.flags,
    status: v.status,
    fd: v.fd,
    madv: v.madv ? v.madv : undefined,
    fdflags: v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED | VMA.SYSVIPC) ? v.fdflags : undefined,
    accounted: v.flags & MAP.PRIVATE && !(v.status & kernels) ? !!v.accounted : undefined,
    lockOnfault: v.lockOnFault ? true : undefined,
  }));
}

// ---------- restore ----------

/** What the memory restore of one process needs from the restore of its tree. */
export interface MmRestoreCtx {
  /** the process as criu-bun sees it, and as the images name it */
  pid: number;
  vpid: number;
  inj: Injector;
  mm: S.mm_entry;
  pagemap: { vaddr: bigint; nrPages: number; flags: number }[];
  /** the restored process it was forked from: VMAs it shares with it are kept (copy-on-write) */
  parent?: { pagemap: { vaddr: bigint; nrPages: number; flags: number }[] };
  files: Map<number, S.file_entry>;
  /** criu-bun's trampoline in the process: left mapped */
  tramp: bigint;
  /** every VMA of the tree (shared anonymous memory is as large as its largest extent in any) */
  treeVmas: () => S.vma_entry[];
  /** independent syscalls in as few stops as fit (mappings, closes) */
  batch: (calls: (number | bigint)[][]) => bigint[];
  /** calls that each pass bytes (a path), in as few stops as fit; each call's check sees its result */
  batchData: (calls: InCall[]) => void;
  str: (s: string, slot?: number) => bigint;
  scratch: (off: bigint, data: Uint8Array) => bigint;
  /** a deleted file (ghost) opened in the process, or undefined when it is not one */
  openDeleted: (f: S.file_entry, flags: number, what: string) => number | undefined;
  /** an fd of shared anonymous memory SHMID in the process; own: the process holds it for the others */
  shmem: (shmid: bigint, size: bigint) => { fd: number; own: boolean };
  /** the inode of shared anonymous memory SHMID made by the restore so far (none: undefined) */
  shmemIno: (shmid: bigint) => number | undefined;
  /** the pages of the process's memory, once every VMA is mapped */
  fill: () => void;
}

/**
 * The vma_entry.flags an mmap of the VMA passes on as they are (CRIU's restore maps with the dumped
 * flags too): MAP_NORESERVE keeps a reservation out of the commit charge, as it was.
 */
const KEPT_FLAGS = MAP.SHARED | MAP.PRIVATE | MAP.ANONYMOUS | MAP.GROWSDOWN | MAP.NORESERVE;

/**
 * A private VMA charged to the commit limit (criu-bun's accounted, VmFlags "ac") that is not
 * writable: it was writable once (a mapping made read-only since, RELRO). Mapped writable and made
 * read-only again it is charged as it was (and stays apart from an uncharged neighbour, as in the
 * dumped maps). CRIU's images do not say: an anonymous one with pages stored (written, so
 * writable once) is taken to be, and a file mapping's that is not executable (RELRO, its pages
 * relocated); not an executable file mapping's (CRIU's dump itself writes into the first one: its
 * parasite's syscall instruction, copy-on-write).
 */
function writableOnce(v: S.vma_entry, stored: (v: S.vma_entry) => boolean): boolean {
  if (v.prot & 2 || v.flags & (MAP.SHARED | MAP.NORESERVE)) return false;
  if (isFieldSet(v, S.vma_entrySchema.field.accounted)) return v.accounted;
  if (v.status & (VMA.VDSO | VMA.VVAR | VMA.VSYSCALL)) return false;
  if (v.status & VMA.ANON_PRIVATE) return stored(v);
  return (v.status & VMA.FILE_PRIVATE) !== 0 && !(v.prot & 4) && stored(v);
}

/** A VMA the child inherited from its parent that is exactly the dumped one. */
function sameVma(
  v: S.vma_entry,
  c: {
    start: bigint;
    end: bigint;
    prot: number;
    shared: boolean;
    pgoff: bigint;
    inode: number;
    path: string;
    vmflags: string[];
  },
  files: Map<number, S.file_entry>,
  shmemIno: (shmid: bigint) => number | undefined
): boolean {
  if (v.start !== c.start || v.end !== c.end || v.prot !== c.prot) return false;
  if (((v.flags & MAP.SHARED) !== 0) !== c.shared) return false;
  if (((v.flags & MAP.GROWSDOWN) !== 0) !== c.vmflags.includes("gd")) return false;
  if (((v.flags & MAP.NORESERVE) !== 0) !== c.vmflags.includes("nr")) return false;
  if (isFieldSet(v, S.vma_entrySchema.field.accounted) && v.accounted !== c.vmflags.includes("ac")) return false;
  if (v.status & VMA.ANON_PRIVATE) return c.inode === 0 && !c.path.startsWith("/");
  if (v.status & VMA.SYSVIPC) return c.path.startsWith("/SYSV") && BigInt(c.inode) === v.shmid && c.pgoff === v.pgoff;
  if (v.status & VMA.ANON_SHARED) return c.path.startsWith("/dev/zero") && c.inode === shmemIno(v.shmid);
  if (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED))
    return c.pgoff === v.pgoff && files.get(Number(v.shmid))?.reg?.name === c.path;
  return false;
}

/** Unmap the puppet's memory, put the vDSO where it was, map every VMA and fill the pages. */
export function restoreMemory(proc: MmRestoreCtx) {
  const inj = proc.inj,
    mm = proc.mm,
    pid = proc.pid;
  const special = new Set(["[vdso]", "[vvar]", "[vvar_vclock]"]);
  const cur = readVmas(pid);
  // A child forked from its restored parent already has the parent's memory: every VMA it
  // shares with the parent stays, so its pages stay copy-on-write shared as they were.
  const kept = new Set<bigint>();
  const drop: typeof cur = [];
  for (const c of cur) {
    if (c.start === proc.tramp || special.has(c.path) || c.path === "[vsyscall]") continue;
    const v = proc.parent && mm.vmas.find((x) => sameVma(x, c, proc.files, proc.shmemIno));
    if (v) kept.add(v.start);
    else drop.push(c);
  }
  // a SysV segment stays only when all its parts are the dumped ones (one shmat maps it whole)
  for (const v of mm.vmas) {
    if (!(v.status & VMA.SYSVIPC) || kept.has(v.start)) continue;
    for (const x of mm.vmas) {
      if (!(x.status & VMA.SYSVIPC) || x.shmid !== v.shmid || !kept.has(x.start)) continue;
      kept.delete(x.start);
      drop.push(...cur.filter((c) => c.start === x.start));
    }
  }
  // the puppet's (or parent's) memory unmapped and the vDSO placed in one batch of injected calls
  const unmap: Batched[] = drop.map((c) => ({
    call: [NR.munmap, c.start, c.end - c.start],
    check: (r) => {
      if (r < 0n)
        throw new CriuError("restore", sysFailed(`process ${proc.vpid}`, `munmap of ${hex(c.start)}-${hex(c.end)}`, r));
    },
  }));
  const dv = mm.vmas.find((x) => x.status & VMA.VDSO),
    cv = cur.find((c) => c.path === "[vdso]");
  if (!(proc.parent && dv && cv && dv.start === cv.start && dv.end === cv.end)) placeVdso(proc, cur, unmap);
  else runBatched(proc, unmap);
  if (kept.size) forgetParentPages(proc, kept);
  // map every VMA
  const fileFds = new Map<bigint, number>();
  // anonymous and file mappings (and their madvise) wait here and go in one batch of injected
  // syscalls (Injector.callMany) before any other call, so they are made in the same order as ever
  const pending: { v: S.vma_entry; calls: (number | bigint)[][]; fd: number }[] = [];
  const flush = (last = false) => {
    const closes = last ? [...fileFds.values()].map((fd) => [NR.close, fd]) : [];
    if (last) fileFds.clear(); // (closed whatever happens next)
    if (!pending.length && !closes.length) return;
    const calls = pending.flatMap((p) => p.calls);
    const res = proc.batch([...calls, ...closes]);
    let k = 0;
    // (the line made only when it is written: a process may have thousands of VMAs)
    const debug = logLevel() >= LOG_DEBUG;
    for (const { v, calls: cs, fd } of pending) {
      const r = res[k];
      if (r !== v.start) throw mmapFailed(proc, v, r);
      if (once.has(v) && fd >= 0 && res[k + 1] !== 0n)
        throw new CriuError(
          "restore",
          sysFailed(
            `process ${proc.vpid} VMA ${hex(v.start)}-${hex(v.end)}`,
            "mprotect after mapping it writable",
            res[k + 1]
          )
        );
      if (debug) log.debug(`process ${proc.pid}: mapped ${vmaLine(v)}${fd >= 0 ? ` from fd ${fd}` : ""}`);
      k += cs.length;
    }
    pending.length = 0;
  };
  // mmap, and for a VMA charged once writable and read-only now, mmap writable (which charges it:
  // VM_ACCOUNT) then mprotect to its protection: a file mapping's at once, an anonymous one's once
  // its pages are in (protectLater: the kernel uncharges an anonymous VMA made read-only before any
  // page of it was touched)
  const protectLater: S.vma_entry[] = [];
  const runs = proc.pagemap
    .filter((e) => e.flags & PE.PRESENT)
    .map((e) => [e.vaddr, e.vaddr + BigInt(e.nrPages * PAGE)] as const);
  const stored = (v: S.vma_entry) => {
    const i = firstEndAfter(runs, v.start);
    return i < runs.length && runs[i][0] < v.end;
  };
  const once = new Set(mm.vmas.filter((v) => writableOnce(v, stored)));
  const mapCalls = (v: S.vma_entry, flags: number, fd: number, pgoff: bigint) => {
    const map = [NR.mmap, v.start, v.end - v.start, once.has(v) ? v.prot | 2 : v.prot, flags, fd, pgoff];
    if (!once.has(v)) return [map];
    if (fd < 0) {
      protectLater.push(v);
      return [map];
    }
    return [map, [NR.mprotect, v.start, v.end - v.start, v.prot]];
  };
  const madvCalls = (v: S.vma_entry) => {
    const calls: (number | bigint)[][] = [];
    if (v.madv)
      for (let b = 0n; b < 64n; b++) if (v.madv & (1n << b)) calls.push([NR.madvise, v.start, v.end - v.start, b]);
    return calls;
  };
  const isFile = (v: S.vma_entry) =>
    (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) !== 0 && !(v.status & VMA.SYSVIPC) && !kept.has(v.start);
  try {
    openMappedFiles(proc, mm.vmas.filter(isFile), fileFds);
    for (const v of mm.vmas) {
      const anon =
        !(v.status & (VMA.SYSVIPC | VMA.FILE_PRIVATE | VMA.FILE_SHARED | VMA.ANON_SHARED)) &&
        !kept.has(v.start) &&
        !(v.status & (VMA.VDSO | VMA.VVAR | VMA.VSYSCALL));
      if (anon) {
        const flags = (v.flags & KEPT_FLAGS) | MAP.FIXED | MAP.ANONYMOUS;
        pending.push({ v, calls: [...mapCalls(v, flags, -1, 0n), ...madvCalls(v)], fd: -1 });
        continue;
      }
      if (isFile(v)) {
        // its file opened above (openMappedFiles)
        const fd = fileFds.get(fileKey(v))!;
        const flags = (v.flags & KEPT_FLAGS & ~MAP.ANONYMOUS) | MAP.FIXED;
        pending.push({ v, calls: [...mapCalls(v, flags, fd, v.pgoff), ...madvCalls(v)], fd });
        continue;
      }
      // the kernel's mappings: the vDSO and vvar were placed above, [vsyscall] is the kernel's own
      if (v.status & (VMA.VDSO | VMA.VVAR | VMA.VSYSCALL)) continue;
      flush();
      if (v.status & VMA.SYSVIPC) {
        if (kept.has(v.start)) continue;
        // one shmat() maps the whole segment at its first VMA (pgoff 0); the VMAs after it (parts
        // given another protection since, validate.ts checks they follow on) only get theirs back.
        // Attached writable when any of its VMAs may be written (fdflags O_RDWR; images without
        // fdflags: PROT_WRITE), read-only (SHM_RDONLY) otherwise, as CRIU attaches it
        const mine = mm.vmas.filter((x) => x.status & VMA.SYSVIPC && x.shmid === v.shmid);
        const rw = mine.some((x) =>
          isFieldSet(x, S.vma_entrySchema.field.fdflags) ? (x.fdflags & 3) === 2 : (x.prot & 2) !== 0
        );
        const exec = mine.some((x) => x.prot & 4);
        const attached = 1 | (rw ? 2 : 0) | (exec ? 4 : 0);
        if (v.pgoff === 0n) {
          const r = inj.call(
            SHMAT,
            v.shmid,
            v.start,
            (rw ? 0 : 0o10000) /* SHM_RDONLY */ | (exec ? 0o100000 /* SHM_EXEC */ : 0)
          );
          if (r !== v.start)
            throw new CriuError(
              "restore",
              r < 0n
                ? sysFailed(
                    `process ${proc.vpid} VMA ${hex(v.start)}-${hex(v.end)}`,
                    `shmat of SysV segment ${v.shmid}`,
                    r
                  )
                : `process ${proc.vpid} VMA ${hex(v.start)}-${hex(v.end)}: shmat of SysV segment ${v.shmid} attached it at ${hex(r)}`
            );
        }
        if (v.prot !== attached) {
          const r = inj.call(NR.mprotect, v.start, v.end - v.start, v.prot);
          if (r < 0n)
            throw new CriuError(
              "restore",
              sysFailed(
                `process ${proc.vpid} VMA ${hex(v.start)}-${hex(v.end)}`,
                `mprotect of SysV segment ${v.shmid}`,
                r
              )
            );
        }
        log.debug(
          `process ${proc.pid}: ${v.pgoff === 0n ? `attached SysV segment ${v.shmid} (${rw ? "rw" : "ro"}${exec ? ", exec" : ""}) at` : "protection of"} ${vmaLine(v)}`
        );
        continue;
      }
      if (kept.has(v.start)) {
        if (v.madv)
          for (let b = 0n; b < 64n; b++) if (v.madv & (1n << b)) inj.call(NR.madvise, v.start, v.end - v.start, b);
        continue;
      }
      const len = v.end - v.start;
      let fd = -1;
      let flags = (v.flags & KEPT_FLAGS) | MAP.FIXED;
      if (v.status & VMA.ANON_SHARED) {
        fd = fileFds.get(-v.shmid - 1n) ?? -1;
        if (fd < 0) {
          const size = proc
            .treeVmas()
            .filter((x) => x.status & VMA.ANON_SHARED && !(x.status & VMA.SYSVIPC) && x.shmid === v.shmid)
            .reduce((m, x) => {
              const e = x.pgoff + (x.end - x.start);
              return e > m ? e : m;
            }, 0n);
          const got = proc.shmem(v.shmid, size);
          fd = got.fd;
          if (!got.own) fileFds.set(-v.shmid - 1n, fd); // imported: close after mapping; the holder closes its own later
        }
        flags = (flags & ~MAP.ANONYMOUS & ~MAP.PRIVATE) | MAP.SHARED;
      } else flags |= MAP.ANONYMOUS;
      const r = inj.call(NR.mmap, v.start, len, v.prot, flags, fd, fd >= 0 ? v.pgoff : 0n);
      if (r !== v.start) throw mmapFailed(proc, v, r);
      log.debug(`process ${proc.pid}: mapped ${vmaLine(v)}${fd >= 0 ? ` from fd ${fd}` : ""}`);
      if (v.madv) {
        for (let b = 0n; b < 64n; b++) if (v.madv & (1n << b)) inj.call(NR.madvise, v.start, len, b);
      }
    }
    // the files' fds closed in the same batch as the last mappings
    flush(true);
  } finally {
    const closes = [...fileFds.values()].map((fd) => [NR.close, fd]);
    if (closes.length) proc.batch(closes);
  }
  proc.fill();
  if (protectLater.length) protectAfterFill(proc, protectLater);
  // mlock()ed memory is locked again once its contents are back
  // (on fault, as it was: MLOCK_ONFAULT, its pages not populated)
  for (const v of mm.vmas) {
    if (!(v.flags & MAP.LOCKED)) continue;
    const r = v.lockOnfault
      ? inj.call(NR.mlock2, v.start, v.end - v.start, 1 /* MLOCK_ONFAULT */)
      : inj.call(NR.mlock, v.start, v.end - v.start);
    if (r < 0n)
      throw new CriuError(
        "restore",
        sysFailed(
          `process ${proc.vpid} VMA ${hex(v.start)}-${hex(v.end)}`,
          v.lockOnfault ? "mlock2(MLOCK_ONFAULT)" : "mlock",
          r
        )
      );
  }
  log.debug(
    `mm: process ${proc.vpid}: ${mm.vmas.length} VMAs in place${kept.size ? `, ${kept.size} kept from its parent` : ""}`
  );
}

/**
 * The key of a file VMA's fd in fileFds: its file id and access mode. CRIU 4.2 writes one file id
 * for every mapping of a file, each VMA with its own fdflags (a read-only and a read-write shared
 * mapping of one file: one id, fdflags 0 and 2), so each mode is opened apart.
 */
function fileKey(v: S.vma_entry): bigint {
  return (v.shmid << 2n) | BigInt((v.fdflags ?? 0) & 3);
}

/**
 * Anonymous VMAs charged once writable, read-only now (mapped writable, their pages in): made
 * read-only, charged as they were. One the dump kept no page of was touched all the same in the
 * dumped process (the kernel uncharges an untouched one made read-only): a page of it is touched
 * (MADV_POPULATE_WRITE) and dropped again (MADV_DONTNEED: zero, as dumped) before.
 */
function protectAfterFill(proc: MmRestoreCtx, vmas: S.vma_entry[]) {
  const pages = proc.pagemap
    .filter((e) => e.flags & 4)
    .map((e) => [e.vaddr, e.vaddr + BigInt(e.nrPages * PAGE)] as [bigint, bigint]);
  const calls: Batched[] = [];
  for (const v of vmas) {
    const who = `process ${proc.vpid} VMA ${hex(v.start)}-${hex(v.end)}`;
    const check = (what: string) => (r: bigint) => {
      if (r !== 0n) throw new CriuError("restore", sysFailed(who, what, r));
    };
    if (!pages.some(([a, e]) => a < v.end && e > v.start)) {
      calls.push({
        call: [NR.madvise, v.start, PAGE, MADV.POPULATE_WRITE],
        check: check("madvise(MADV_POPULATE_WRITE)"),
      });
      calls.push({ call: [NR.madvise, v.start, PAGE, MADV.DONTNEED], check: check("madvise(MADV_DONTNEED)") });
    }
    calls.push({
      call: [NR.mprotect, v.start, v.end - v.start, v.prot],
      check: check("mprotect after mapping it writable"),
    });
  }
  runBatched(proc, calls);
  log.debug(`mm: process ${proc.vpid}: ${vmas.length} anonymous VMA(s) charged once writable made read-only again`);
}

/**
 * The files the VMAs map, each opened once per access mode in the process (O_RDWR for a shared
 * writable mapping, as dumped), into fileFds (fileKey -> fd): a deleted one through its kind (a
 * ghost file or link remap), the others by path in one batch of injected openat calls.
 */
function openMappedFiles(proc: MmRestoreCtx, vmas: S.vma_entry[], fileFds: Map<bigint, number>) {
  const byPath: InCall[] = [];
  const asked = new Set<bigint>();
  for (const v of vmas) {
    const key = fileKey(v);
    if (fileFds.has(key) || asked.has(key)) continue;
    const f = proc.files.get(Number(v.shmid));
    const who = `process ${proc.vpid} VMA ${hex(v.start)}-${hex(v.end)}`;
    if (!f?.reg) throw new CriuError("restore", `${who}: file id ${v.shmid} not in files.img`);
    const oflags = ((v.fdflags ?? 0) & 3) | O.CLOEXEC;
    const removed = proc.openDeleted(f, oflags, `mapping at ${hex(v.start)}`);
    if (removed !== undefined) {
      fileFds.set(key, removed);
      continue;
    }
    asked.add(key);
    const name = f.reg.name;
    const path = new Uint8Array((Buffer.byteLength(name) + 8) & ~7);
    path.set(Buffer.from(name));
    byPath.push({
      nr: NR.openat,
      data: dataWords(path),
      args: (at) => [-100, at, oflags, 0],
      check: (r) => {
        if (r < 0n) throw new CriuError("restore", sysFailed(who, `opening '${name}' to map it`, r));
        fileFds.set(key, Number(r));
      },
    });
  }
  proc.batchData(byPath);
}

/** One injected call of a batch and the check of its result. */
interface Batched {
  call: (number | bigint)[];
  check: (r: bigint) => void;
}
/** Calls in as few stops as fit, then each one's check, in order. */
function runBatched(proc: MmRestoreCtx, calls: Batched[]) {
  if (!calls.length) return;
  const res = proc.batch(calls.map((c) => c.call));
  calls.forEach((c, i) => c.check(res[i]));
}

/** The vDSO (and vvar) moved where they were, after the calls `before` (unmaps), in one batch. */
function placeVdso(proc: MmRestoreCtx, cur: ReturnType<typeof readVmas>, before: Batched[]) {
  const dumpedVdso = proc.mm.vmas.find((v) => v.status & VMA.VDSO);
  const dumpedVvar = proc.mm.vmas.filter((v) => v.status & VMA.VVAR);
  const have = cur.filter((v) => v.path === "[vvar]" || v.path === "[vvar_vclock]" || v.path === "[vdso]");
  const calls = [
    ...before,
    ...have.map(
      (v): Batched => ({
        call: [NR.munmap, v.start, v.end - v.start],
        check: (r) => {
          if (r < 0n) throw new CriuError("restore", sysFailed(`process ${proc.vpid}`, `munmap of its ${v.path}`, r));
        },
      })
    ),
  ];
  if (!dumpedVdso) {
    runBatched(proc, calls);
    return;
  }
  const ourVdso = have.find((v) => v.path === "[vdso]")!;
  const ourVvarSize = have.filter((v) => v.path !== "[vdso]").reduce((s, v) => s + (v.end - v.start), 0n);
  const dumpedVvarSize = dumpedVvar.reduce((s, v) => s + (v.end - v.start), 0n);
  if (ourVdso.end - ourVdso.start !== dumpedVdso.end - dumpedVdso.start || ourVvarSize !== dumpedVvarSize) {
    throw new CriuError(
      "restore",
      `process ${proc.vpid}: the vDSO of this kernel differs from the dumped one (images from another kernel are not supported yet)`
    );
  }
  const vvarStart = dumpedVvar.length
    ? dumpedVvar.reduce((m, v) => (v.start < m ? v.start : m), dumpedVvar[0].start)
    : dumpedVdso.start;
  calls.push({
    call: [NR.arch_prctl, 0x2003 /* ARCH_MAP_VDSO_64 */, dumpedVvar.length ? vvarStart : dumpedVdso.start],
    check: (r) => {
      if (r < 0n)
        throw new CriuError("restore", sysFailed(`process ${proc.vpid}`, `ARCH_MAP_VDSO_64 at ${hex(vvarStart)}`, r));
    },
  });
  runBatched(proc, calls);
  const now = readMaps(proc.pid).find((v) => v.path === "[vdso]"); // maps: no page-table walk
  if (!now || now.start !== dumpedVdso.start) {
    throw new CriuError(
      "restore",
      `process ${proc.vpid}: vDSO landed at ${now ? hex(now.start) : "nowhere"}, expected ${hex(dumpedVdso.start)}`
    );
  }
}

/**
 * In kept VMAs: pages the parent wrote that this process does not have go back to zero / file.
 * A run of the parent's pagemap may span several VMAs (a .data run going on into the .bss after
 * it): each kept VMA takes its own part of every run.
 */
function forgetParentPages(proc: MmRestoreCtx, kept: Set<bigint>) {
  const mine = proc.pagemap
    .filter((e) => e.flags & 4)
    .map((e) => [e.vaddr, e.vaddr + BigInt(e.nrPages * PAGE)] as [bigint, bigint]);
  const keptVmas = proc.mm.vmas.filter(
    (x) => kept.has(x.start) && !(x.status & (VMA.ANON_SHARED | VMA.FILE_SHARED | VMA.SYSVIPC))
  );
  let dropped = 0n;
  const drop = (a: bigint, e: bigint) => {
    proc.inj.ok("madvise(MADV_DONTNEED)", NR.madvise, a, e - a, MADV.DONTNEED);
    dropped += (e - a) / BigInt(PAGE);
  };
  for (const pe of proc.parent!.pagemap) {
    if (!(pe.flags & 4)) continue;
    const runEnd = pe.vaddr + BigInt(pe.nrPages * PAGE);
    for (const v of keptVmas) {
      // [max(run, vma) .. min(run, vma)) minus my own runs
      let a = pe.vaddr > v.start ? pe.vaddr : v.start;
      const end = runEnd < v.end ? runEnd : v.end;
      if (a >= end) continue;
      for (const [s, e] of mine) {
        if (e <= a || s >= end) continue;
        if (s > a) drop(a, s);
        a = e > a ? e : a;
        if (a >= end) break;
      }
      if (a < end) drop(a, end);
    }
  }
  if (dropped)
    log.debug(`process ${proc.vpid}: ${dropped} page(s) inherited from the parent that it did not have dropped`);
}

/**
 * The process's dumpable flag (mm_entry.dumpable, as CRIU), set through its leader late: after
 * every thread's credentials (a change of them resets it to fs.suid_dumpable) and after the
 * injections that need it as it was; an image without it (older CRIU) leaves it alone, as CRIU.
 */
export function restoreDumpable(proc: { vpid: number; inj: Injector }, mm: S.mm_entry) {
  if (!isFieldSet(mm, S.mm_entrySchema.field.dumpable)) return;
  if (mm.dumpable !== 0 && mm.dumpable !== 1)
    throw new CriuError("restore", `process ${proc.vpid}: dumpable ${mm.dumpable} of the image cannot be set`);
  const r = proc.inj.call(NR.prctl, PR.SET_DUMPABLE, mm.dumpable, 0, 0, 0);
  if (r < 0n) throw new CriuError("restore", sysFailed(`process ${proc.vpid}`, "prctl(PR_SET_DUMPABLE)", r));
  log.debug(`mm: process ${proc.vpid}: dumpable ${mm.dumpable}`);
}

/**
 * mlockall(MCL_FUTURE), with MCL_ONFAULT, in force again (mm_entry.mlock_future, criu-bun's): set
 * last, from finish(), so that no mapping of the restore itself is made locked.
 */
export function restoreMlockFuture(proc: { vpid: number; inj: Injector }, mm: S.mm_entry) {
  if (!mm.mlockFuture) return;
  if (mm.mlockFuture !== MCL_FUTURE && mm.mlockFuture !== (MCL_FUTURE | MCL_ONFAULT))
    throw new CriuError(
      "restore",
      `process ${proc.vpid}: mlock_future 0x${mm.mlockFuture.toString(16)} of the image is no mlockall flags for later mappings`
    );
  const r = proc.inj.call(NR.mlockall, mm.mlockFuture);
  if (r < 0n) throw new CriuError("restore", sysFailed(`process ${proc.vpid}`, "mlockall(MCL_FUTURE)", r));
  log.debug(`mm: process ${proc.vpid}: mlockall(MCL_FUTURE${mm.mlockFuture & MCL_ONFAULT ? "|MCL_ONFAULT" : ""})`);
}

/** mm fields, auxv and exe link in one PR_SET_MM_MAP. */
export function restoreMmFields(proc: MmRestoreCtx) {
  const mm = proc.mm,
    inj = proc.inj;
  const exeFile = proc.files.get(mm.exeFileId);
  const exe = exeFile?.reg?.name;
  let exeFd = -1;
  const deleted = exe ? proc.openDeleted(exeFile!, O.RDONLY | O.CLOEXEC, "executable") : undefined;
  if (deleted !== undefined) exeFd = deleted;
  else if (exe) {
    exeFd = Number(inj.call(NR.openat, -100, proc.str(exe), O.RDONLY | O.CLOEXEC, 0));
    if (exeFd < 0)
      throw new CriuError("restore", sysFailed(`process ${proc.vpid}`, `opening its executable '${exe}'`, exeFd));
  }
  const b = new ArrayBuffer(104);
  const dv = new DataView(b);
  const f = [
    mm.mmStartCode,
    mm.mmEndCode,
    mm.mmStartData,
    mm.mmEndData,
    mm.mmStartBrk,
    mm.mmBrk,
    mm.mmStartStack,
    mm.mmArgStart,
    mm.mmArgEnd,
    mm.mmEnvStart,
    mm.mmEnvEnd,
  ];
  f.forEach((v, i) => dv.setBigUint64(i * 8, v, true));
  // criu-bun's full_auxv when CRIU's 44 words could not hold it (see auxvFields)
  const auxv = new BigUint64Array((mm.fullAuxv?.length ? mm.fullAuxv : mm.mmSavedAuxv).map((x) => BigInt(x)));
  const auxAddr = proc.scratch(512n, new Uint8Array(auxv.buffer));
  dv.setBigUint64(88, auxAddr, true);
  dv.setUint32(96, auxv.length * 8, true);
  dv.setUint32(100, exeFd < 0 ? 0xffffffff : exeFd, true);
  const mapAddr = proc.scratch(0n, new Uint8Array(b));
  // the close (whatever the prctl returned) in the same stop
  const call = [NR.prctl, PR.SET_MM, PR.SET_MM_MAP, mapAddr, 104, 0];
  const r = exeFd >= 0 ? proc.batch([call, [NR.close, exeFd]])[0] : inj.call(NR.prctl, ...call.slice(1));
  if (r < 0n) throw new CriuError("restore", sysFailed(`process ${proc.vpid}`, "prctl(PR_SET_MM_MAP)", r));
  log.debug(
    `mm: process ${proc.vpid}: PR_SET_MM_MAP: brk ${hex(mm.mmStartBrk)}-${hex(mm.mmBrk)}, stack ${hex(mm.mmStartStack)}, ${auxv.length / 2} auxv entries, exe ${exe ?? "none"}${deleted !== undefined ? " (deleted)" : ""}`
  );
}
