// Checks of every image field restore uses, before anything is created: one validator per
// image kind, each naming the file and the entry at fault. Readers (src/images, src/resources)
// decode; these decide whether what was decoded can be restored exactly. The rules are the
// kernel's and the restore code's own assumptions: page alignment, address ranges that do not
// overlap and are sorted, ids that refer to entries that exist, counts that fit their sizes.
// Anything else would make restore loop, write to the wrong place, or build a wrong process.
import { MEMBARRIER_KNOWN } from "../resources/membarrier";
import { join } from "../sys/path";
import { imageExists } from "../images/image";
import { kindByType } from "../resources/kinds";
import type { RestoreRun } from "../resources/fdkind";
import type * as S from "../images/schemas";
import type { PagemapTable } from "../images/pagemap";
import { CriuError } from "../log";
import { VMA, PE, PAGE, MAP } from "../resources/vma";
import { userAddressTop, xfeaturesPermitted } from "../sys/syscall";

const P = BigInt(PAGE);
/** Highest user address on x86_64 (5-level paging); a VMA or page run must end at or below it. */
const TASK_SIZE_MAX = 0x00fffffffffff000n;
/** Highest PID Linux hands out (PID_MAX_LIMIT). */
const PID_MAX = 4 * 1024 * 1024;
/** The kernel's bound on open files per process (fs.nr_open can be raised up to this). */
const FD_MAX = 1 << 30;

const hex = (v: bigint | number) => "0x" + v.toString(16);

function bad(dir: string, file: string, what: string): CriuError {
  return new CriuError("restore", `${join(dir, file)}: ${what}`);
}

const okId = (n: number) => Number.isInteger(n) && n > 0 && n < PID_MAX;

/** pstree.img: positive unique PIDs and TIDs, parents listed before their children. */
export function validatePstree(dir: string, pstree: S.pstree_entry[]) {
  const f = "pstree.img";
  if (!pstree.length) throw bad(dir, f, "lists no process");
  const pids = new Set<number>();
  const owner = new Map<number, number>(); // every PID and TID -> the process it belongs to
  pstree.forEach((p, i) => {
    const what = `entry ${i} (pid ${p.pid})`;
    if (!okId(p.pid)) throw bad(dir, f, `entry ${i}: PID ${p.pid} is out of range`);
    if (pids.has(p.pid)) throw bad(dir, f, `PID ${p.pid} is listed twice`);
    if (!okId(p.pgid) || !okId(p.sid))
      throw bad(dir, f, `${what}: process group ${p.pgid} / session ${p.sid} out of range`);
    if (i > 0) {
      if (p.ppid === p.pid) throw bad(dir, f, `${what} is its own parent`);
      if (!pids.has(p.ppid)) throw bad(dir, f, `${what}: parent ${p.ppid} is not listed before it`);
    } else if (p.ppid >= PID_MAX) throw bad(dir, f, `${what}: parent ${p.ppid} out of range`);
    if (owner.has(p.pid)) throw bad(dir, f, `${what}: PID ${p.pid} is also a thread listed before`);
    owner.set(p.pid, p.pid);
    pids.add(p.pid);
  });
}

/** pstree.img's threads of the live processes (a zombie's list means nothing: CRIU may leave anything there). */
export function validateThreads(dir: string, pstree: S.pstree_entry[], live: (pid: number) => boolean) {
  const f = "pstree.img";
  const owner = new Map<number, number>(pstree.map((p) => [p.pid, p.pid]));
  for (const p of pstree) {
    if (!live(p.pid) || !p.threads.length) continue;
    const what = `process ${p.pid}`;
    if (!p.threads.includes(p.pid)) throw bad(dir, f, `${what}: its threads do not include the leader`);
    const mine = new Set<number>();
    for (const t of p.threads) {
      if (!okId(t)) throw bad(dir, f, `${what}: thread ${t} out of range`);
      if (mine.has(t) || (owner.has(t) && owner.get(t) !== p.pid))
        throw bad(dir, f, `${what}: TID ${t} is listed twice`);
      mine.add(t);
      owner.set(t, p.pid);
    }
  }
}

/** core-TID.img of a live thread: registers present, lists within the kernel's sizes. */
export function validateCore(dir: string, file: string, c: S.core_entry, leader: boolean) {
  const ti = c.threadInfo;
  if (!ti?.gpregs || !ti.fpregs) throw bad(dir, file, "has no registers");
  const tc = c.tc;
  if (leader) {
    if (!tc) throw bad(dir, file, "has no task core");
    if (tc.taskState !== 1 && tc.taskState !== 3) throw bad(dir, file, `unknown task state ${tc.taskState}`);
    if (tc.sigactions.length > 64) throw bad(dir, file, `${tc.sigactions.length} signal handlers (at most 64)`);
    if ((tc.rlimits?.rlimits.length ?? 0) > 16)
      throw bad(dir, file, `${tc.rlimits!.rlimits.length} rlimits (at most 16)`);
    for (const s of tc.signalsS?.signals ?? [])
      if (s.siginfo.length !== 128)
        throw bad(dir, file, `a pending signal's siginfo is ${s.siginfo.length} bytes, not 128`);
    const ids = new Set<number>();
    for (const t of tc.timers?.posix ?? []) {
      // ids are handed out from 0 up; restore may have to walk up to this one
      if (t.itId > 0xffff) throw bad(dir, file, `POSIX timer id ${t.itId} out of range`);
      if (ids.has(t.itId)) throw bad(dir, file, `POSIX timer id ${t.itId} is listed twice`);
      ids.add(t.itId);
    }
    if ((tc.comm?.length ?? 0) > 64) throw bad(dir, file, "command name too long");
    if (tc.stopSigno && ![19, 20, 21, 22].includes(tc.stopSigno))
      throw bad(dir, file, `stop signal ${tc.stopSigno} is no stop signal`);
    // the REGISTER_* commands restore repeats (resources/membarrier.ts); any other bit is not one
    const mb = tc.membarrierRegistrationMask ?? 0;
    if (mb & ~MEMBARRIER_KNOWN)
      throw bad(
        dir,
        file,
        `membarrier registrations (mask 0x${mb.toString(16)}) hold a command that is no registration`
      );
  }
  const cet = ti.fpregs.xsave?.cet;
  if (cet && (cet.cet || cet.ssp))
    throw bad(
      dir,
      file,
      `CET shadow stack state (cet 0x${cet.cet.toString(16)}, ssp 0x${cet.ssp.toString(16)}) cannot be restored by criu-bun yet`
    );
  validateRegs(dir, file, ti.gpregs, ti.fpregs);
  validateTls(dir, file, ti.tls);
  const th = c.threadCore;
  if (th) {
    for (const s of th.signalsP?.signals ?? [])
      if (s.siginfo.length !== 128)
        throw bad(dir, file, `a pending signal's siginfo is ${s.siginfo.length} bytes, not 128`);
    if (th.creds && th.creds.groups.length > 65536)
      throw bad(dir, file, `${th.creds.groups.length} supplementary groups (at most 65536)`);
    if ((th.comm?.length ?? 0) > 64) throw bad(dir, file, "thread name too long");
  }
}

/**
 * Registers as PTRACE_SETREGS and the NT_X86_XSTATE regset take them (the kernel's putreg and
 * copy_uabi_to_xstate): selectors of 16 bits with RPL 3 (cs and ss not null), fs/gs bases below the
 * top of user space, MXCSR without reserved bits, only xstate components this kernel gives a process.
 * The kernel would refuse the rest with EIO or EINVAL once the tree was made.
 */
function validateRegs(dir: string, file: string, g: S.user_x86_regs_entry, fp: S.user_x86_fpregs_entry) {
  for (const [name, v, nonNull] of [
    ["cs", g.cs, true],
    ["ss", g.ss, true],
    ["ds", g.ds, false],
    ["es", g.es, false],
    ["fs", g.fs, false],
    ["gs", g.gs, false],
  ] as const) {
    const sel = BigInt(v);
    if (sel > 0xffffn || (sel !== 0n && (sel & 3n) !== 3n) || (nonNull && sel === 0n))
      throw bad(dir, file, `segment register ${name} ${hex(sel)} is not a user selector`);
  }
  for (const [name, v] of [
    ["fs_base", g.fsBase],
    ["gs_base", g.gsBase],
  ] as const)
    if (BigInt(v) >= userAddressTop()) throw bad(dir, file, `${name} ${hex(BigInt(v))} is outside user space`);
  if (fp.mxcsr > 0xffff) throw bad(dir, file, `MXCSR ${hex(fp.mxcsr)} has reserved bits set`);
  if (fp.xsave) {
    const extra = BigInt(fp.xsave.xstateBv) & ~xfeaturesPermitted();
    if (extra)
      throw bad(
        dir,
        file,
        `xstate components ${hex(extra)} (xstate_bv ${hex(BigInt(fp.xsave.xstateBv))}) are not available to a process on this machine`
      );
  }
}

/**
 * The TLS GDT entries (12..14) as PTRACE_SET_THREAD_AREA takes them: an empty or all-zero entry, or a
 * present 32-bit data segment (the kernel's tls_desc_okay); anything else the kernel refuses with EINVAL
 * only once the registers are set, so it is refused here, before anything is created.
 */
function validateTls(dir: string, file: string, tls: S.user_desc_t[]) {
  if (tls.length > 3) throw bad(dir, file, `${tls.length} TLS entries (at most 3)`);
  const seen = new Set<number>();
  for (const [i, d] of tls.entries()) {
    const at = `TLS entry ${i} (GDT ${d.entryNumber})`;
    if (d.entryNumber < 12 || d.entryNumber > 14) throw bad(dir, file, `${at}: not one of the TLS entries 12..14`);
    if (seen.has(d.entryNumber)) throw bad(dir, file, `${at}: listed twice`);
    seen.add(d.entryNumber);
    const blank =
      !d.baseAddr && !d.limit && !d.contentsH && !d.contentsL && !d.seg32bit && !d.limitInPages && !d.usable;
    const zero = blank && !d.readExecOnly && !d.segNotPresent;
    const empty = blank && d.readExecOnly && d.segNotPresent;
    if (zero || empty) continue;
    if (!d.seg32bit || d.contentsH || d.segNotPresent)
      throw bad(dir, file, `${at}: not a segment the kernel accepts (a present 32-bit data segment or an empty entry)`);
  }
}

const KINDS = VMA.ANON_PRIVATE | VMA.ANON_SHARED | VMA.FILE_PRIVATE | VMA.FILE_SHARED | VMA.SYSVIPC;
const UNSUPPORTED: [number, string][] = [
  [VMA.AIORING, "AIO ring"],
  [VMA.SOCKET, "socket"],
  [VMA.MEMFD, "memfd"],
  [VMA.UNSUPP >>> 0, "unsupported"],
];
/** [vsyscall]: the kernel's own page, listed by CRIU (restore leaves it to the kernel) */
const VSYSCALL_START = 0xffffffffff600000n,
  VSYSCALL_END = 0xffffffffff601000n;

/** mm-PID.img: VMAs page aligned, inside user space, sorted, not overlapping; one kind each. */
export function validateMm(dir: string, file: string, mm: S.mm_entry | undefined, files: Map<number, S.file_entry>) {
  if (!mm) throw bad(dir, file, "has no entry");
  let prevEnd = 0n;
  for (const [i, v] of mm.vmas.entries()) {
    const at = `VMA ${i} (${hex(v.start)}-${hex(v.end)})`;
    if (v.start % P || v.end % P) throw bad(dir, file, `${at} is not page aligned`);
    if (v.start >= v.end) throw bad(dir, file, `${at} is empty or reversed`);
    if (v.status & VMA.VSYSCALL) {
      if (v.start !== VSYSCALL_START || v.end !== VSYSCALL_END)
        throw bad(dir, file, `${at}: a vsyscall mapping is where the kernel puts it or nowhere`);
    } else if (v.end > TASK_SIZE_MAX) throw bad(dir, file, `${at} lies beyond user space`);
    if (v.start < prevEnd) throw bad(dir, file, `${at} overlaps or precedes the VMA before it`);
    prevEnd = v.end;
    if (v.prot & ~7) throw bad(dir, file, `${at}: bad protection ${hex(v.prot)}`);
    const st = v.status >>> 0;
    for (const [bit, name] of UNSUPPORTED)
      if (st & bit) throw bad(dir, file, `${at}: ${name} mappings are not supported`);
    // a SysV segment is a shared anonymous mapping too (CRIU sets both bits; criu-bun's older dumps only SYSVIPC)
    const kind = st & VMA.SYSVIPC ? st & KINDS & ~VMA.ANON_SHARED : st & KINDS;
    if (kind & (kind - 1)) throw bad(dir, file, `${at}: status ${hex(st)} names more than one kind of mapping`);
    if (kind & VMA.SYSVIPC) {
      // one shmat() maps the segment from its first VMA (pgoff 0); other parts follow it directly
      if (v.pgoff % P) throw bad(dir, file, `${at}: SysV segment offset ${v.pgoff} is not page aligned`);
      if (v.pgoff) {
        const prev = mm.vmas[i - 1];
        if (
          !prev ||
          !(prev.status & VMA.SYSVIPC) ||
          prev.shmid !== v.shmid ||
          prev.end !== v.start ||
          prev.pgoff + (prev.end - prev.start) !== v.pgoff
        )
          throw bad(
            dir,
            file,
            `${at}: part of SysV segment ${v.shmid} at offset ${v.pgoff} does not follow on from the part before it (holes in an attached segment are not supported)`
          );
      }
    }
    if (kind & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) {
      if (v.pgoff % P) throw bad(dir, file, `${at}: file offset ${v.pgoff} is not page aligned`);
      if (!files.get(Number(v.shmid))?.reg)
        throw bad(dir, file, `${at} maps file id ${v.shmid}, which files.img does not have`);
    }
    if (kind & VMA.ANON_SHARED && v.pgoff % P)
      throw bad(dir, file, `${at}: shared memory offset ${v.pgoff} is not page aligned`);
    if (v.lockOnfault && !(v.flags & MAP.LOCKED)) throw bad(dir, file, `${at}: locked on fault but not locked`);
  }
  // mlockall's flags for later mappings: MCL_FUTURE (2), with MCL_ONFAULT (4)
  if (mm.mlockFuture && mm.mlockFuture !== 2 && mm.mlockFuture !== 6)
    throw bad(dir, file, `mlock_future ${hex(mm.mlockFuture)} is not MCL_FUTURE or MCL_FUTURE|MCL_ONFAULT`);
  if (mm.mmSavedAuxv.length > 128 || mm.mmSavedAuxv.length % 2)
    throw bad(dir, file, `auxv of ${mm.mmSavedAuxv.length} words`);
  if (mm.mmStartBrk > mm.mmBrk) throw bad(dir, file, `brk ${hex(mm.mmBrk)} below its start ${hex(mm.mmStartBrk)}`);
  if (mm.exeFileId && !files.get(mm.exeFileId)?.reg)
    throw bad(dir, file, `executable file id ${mm.exeFileId} is not in files.img`);
}

/**
 * pagemap-PID.img: runs page aligned, non-empty, sorted, not overlapping, each stored in the pages
 * file or the parent's, and wholly inside private mappings of mm-PID.img (pages are written there).
 */
export function validatePagemap(dir: string, file: string, pm: PagemapTable, mm: S.mm_entry) {
  const vmas = mm.vmas;
  // in doubles (page-aligned addresses are exact in them far beyond user space's end): a migrate's
  // final pagemap may have a hundred thousand runs, each checked in the frozen window
  const starts = vmas.map((v) => Number(v.start)),
    ends = vmas.map((v) => Number(v.end));
  const max = Number(TASK_SIZE_MAX);
  const { va: vas, nr: nrs, flags: fls, length } = pm;
  let prevEnd = 0,
    vi = 0;
  const at = (i: number) => `entry ${i} (${hex(BigInt(vas[i]))}, ${nrs[i]} pages)`;
  for (let i = 0; i < length; i++) {
    const va = vas[i],
      nrPages = nrs[i],
      flags = fls[i];
    if (va % PAGE !== 0) throw bad(dir, file, `${at(i)}: address not page aligned`);
    if (!Number.isSafeInteger(nrPages) || nrPages <= 0) throw bad(dir, file, `${at(i)}: bad page count`);
    // (page-aligned sums below 2^57 are exact in doubles; anything larger is beyond user space anyway)
    const end = va + nrPages * PAGE;
    if (end > max) throw bad(dir, file, `${at(i)} lies beyond user space`);
    if (va < prevEnd)
      throw bad(dir, file, `${at(i)} overlaps or precedes the entry before it (entries must be sorted)`);
    prevEnd = end;
    if (flags & ~(PE.PARENT | PE.LAZY | PE.PRESENT)) throw bad(dir, file, `${at(i)}: unknown flags ${hex(flags)}`);
    // PE_LAZY alone: the pages stayed with the source of a lazy dump (restore --lazy-pages)
    if (flags !== PE.LAZY && !!(flags & PE.PARENT) === !!(flags & PE.PRESENT))
      throw bad(dir, file, `${at(i)}: flags ${hex(flags)} must say either in this dump or in the parent's`);
    // inside private VMAs, possibly several adjacent ones
    let a = va;
    while (vi < vmas.length && ends[vi] <= a) vi++;
    for (let k = vi; a < end; k++) {
      const v = vmas[k];
      if (!v || starts[k] > a)
        throw bad(dir, file, `${at(i)}: page ${hex(BigInt(a))} is outside every VMA of the mm image`);
      if (!(v.status & (VMA.ANON_PRIVATE | VMA.FILE_PRIVATE)) || v.status & (VMA.VVAR | VMA.VSYSCALL))
        throw bad(
          dir,
          file,
          `${at(i)}: page ${hex(BigInt(a))} lies in a mapping whose pages are not dumped (${hex(v.start)}-${hex(v.end)}, status ${hex(v.status)})`
        );
      a = ends[k];
    }
  }
}

/** fdinfo-N.img: fd numbers in range and unique, each naming a file of files.img. */
export function validateFdinfo(dir: string, file: string, fds: S.fdinfo_entry[], files: Map<number, S.file_entry>) {
  const seen = new Set<number>();
  for (const fd of fds) {
    if (!Number.isInteger(fd.fd) || fd.fd < 0 || fd.fd >= FD_MAX) throw bad(dir, file, `fd ${fd.fd} out of range`);
    if (seen.has(fd.fd)) throw bad(dir, file, `fd ${fd.fd} is listed twice`);
    seen.add(fd.fd);
    const f = files.get(fd.id);
    if (!f) throw bad(dir, file, `fd ${fd.fd} refers to file id ${fd.id}, which files.img does not have`);
    if (f.type !== fd.type)
      throw bad(dir, file, `fd ${fd.fd} is of type ${fd.type} but file id ${fd.id} in files.img is of type ${f.type}`);
  }
}

/** files.img: every id once. */
export function validateFiles(dir: string, entries: S.file_entry[]): Map<number, S.file_entry> {
  const files = new Map<number, S.file_entry>();
  for (const f of entries) {
    if (files.has(f.id)) throw bad(dir, "files.img", `file id ${f.id} is listed twice`);
    files.set(f.id, f);
  }
  return files;
}

/**
 * Images that what other images reference needs, as each fd kind says (FdKind.requireImages). A
 * dump marked all_images (criu-bun's) wrote each of them even when empty, so a missing one is
 * damage; CRIU leaves empty ones out, so for its dumps only what is never empty is required.
 */
export function requireImages(run: RestoreRun, files: Map<number, S.file_entry>) {
  const dir = run.dir;
  // as CRIU: connections dumped without their state come back closed only when asked to
  if (run.inventory.tcpClose && !run.tcpClose)
    throw new CriuError("restore", `${dir}: the images were dumped with --tcp-close; restore needs --tcp-close too`);
  const need = (file: string, why: string) => {
    if (!imageExists(dir, file)) throw new CriuError("restore", `${join(dir, file)} is missing (${why})`);
  };
  for (const f of files.values()) kindByType(f.type)?.requireImages?.(f, run, need);
}
