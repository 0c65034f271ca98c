// Memory: VMAs from /proc/PID/smaps, classified as CRIU does, and the pages worth saving picked
// with /proc/PID/pagemap. The bytes themselves move through the page pipeline (src/codec/
// pipeline.ts); the restore side is in src/restore/task.ts.
import { readVmas, type Vma } from "../sys/proc";
import { VmaIterator } from "../sys/bpfvma";
import { calibrate, vmasWithTable, type VmFlagTable } from "../sys/vmflags";
import { openFd, closeFd, preadFull, O, PagemapScanner, PAGE_IS } from "../sys/mem";
import { E, errnoText } from "../sys/errno";
import { VMA, MAP, PE, madvFromVmFlags } from "./vma";
import { CriuError, log, errorMessage, logLevel, LOG_DEBUG } from "../log";
import { refuse } from "./unsupported";

export interface DumpedVma {
  start: bigint;
  end: bigint;
  pgoff: bigint;
  shmid: bigint;
  prot: number;
  flags: number;
  status: number;
  fd: bigint;
  madv: bigint;
  fdflags: number;
  path: string;
  dev: string;
  inode: number;
  /** VM_MAYWRITE on a shared mapping: mprotect(PROT_WRITE) must keep working after restore */
  mayWrite?: boolean;
  /** VM_ACCOUNT (VmFlags "ac"): charged to the commit limit, as a private mapping writable once */
  accounted?: boolean;
  /** VM_LOCKONFAULT (VmFlags "lf"): locked on fault, not populated (with MAP_LOCKED) */
  lockOnFault?: boolean;
}
export interface PageRun {
  vaddr: bigint;
  nrPages: number;
  flags: number;
}

// Where a dump's VmFlags come from: smaps (a walk of every page table of the process), or, once
// prepareVmFlags made it ready for this run, the BPF task_vma iterator with its bit table checked on
// this kernel (sys/vmflags.ts). undefined: not tried yet; null: smaps for this run. Kept for the
// process's life (a swrk service's later requests use it too): the table is a fact of the kernel.
let bpfSource: { it: VmaIterator; table: VmFlagTable } | null | undefined;

/**
 * Make the BPF VmFlags source ready for this run, once, before any freeze: when `amortized` (migrate's
 * rounds: one preparation, 50-200 ms, serves every round) or CRIU_BUN_VMFLAGS=bpf; never with
 * CRIU_BUN_VMFLAGS=smaps. Anything failing (no BPF, no BTF, the table not matching this kernel):
 * smaps for the run, and one -v4 line saying why.
 */
export function prepareVmFlags(amortized: boolean) {
  const env = process.env.CRIU_BUN_VMFLAGS;
  if (bpfSource !== undefined || env === "smaps" || (!amortized && env !== "bpf")) return;
  bpfSource = null;
  const t0 = performance.now();
  let it: VmaIterator | undefined;
  try {
    it = VmaIterator.load();
    // (a test's wrong table: two mnemonics' bits exchanged, which the calibration must refuse)
    const swap = process.env.CRIU_BUN_VMFLAGS_SWAP?.split(",");
    const c = calibrate(it, swap?.length === 2 ? [swap[0], swap[1]] : undefined);
    if ("reason" in c) throw new Error(c.reason);
    bpfSource = { it, table: c.table };
    log.debug(
      `VmFlags from a BPF task_vma iterator for this run (its table checked on this kernel in ${(performance.now() - t0).toFixed(1)} ms: ${c.table.bits.map(([m, b]) => `${m} 0x${b.toString(16)}`).join(", ")})`
    );
  } catch (e) {
    it?.close();
    log.debug(`VmFlags from smaps for this run: ${errorMessage(e)}`);
  }
}
/** Whether this run's VmFlags come from the BPF iterator (prepareVmFlags succeeded). */
export const vmFlagsFromBpf = () => !!bpfSource;

/** A frozen process's VMAs with their VmFlags: from maps and the BPF iterator when ready, else smaps. */
function readVmasFlags(pid: number): Vma[] {
  const t0 = performance.now();
  if (bpfSource) {
    let why: string;
    try {
      const v = vmasWithTable(bpfSource.it, bpfSource.table, pid);
      if (typeof v !== "string") {
        log.debug(
          `process ${pid}: ${v.length} VMAs read from maps, their flags from the BPF iterator, in ${(performance.now() - t0).toFixed(1)} ms`
        );
        return v;
      }
      why = `maps and the iterator differ: ${v}`;
    } catch (e) {
      why = errorMessage(e);
    }
    log.debug(`process ${pid}: no VMAs from the BPF iterator (${why}): smaps read`);
  }
  const raw = readVmas(pid);
  log.debug(`process ${pid}: ${raw.length} VMAs read from smaps in ${(performance.now() - t0).toFixed(1)} ms`);
  return raw;
}

/** The kernel's own mappings (a kernel built with MSEAL_SYSTEM_MAPPINGS seals them itself). */
const KERNEL_MAPPINGS = new Set(["[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]", "[sigpage]"]);

/**
 * The VMAs of a frozen process classified as CRIU does, from /proc/PID/smaps (or maps and the BPF
 * iterator: readVmasFlags), or from `raw` when given: /proc/PID/maps without VmFlags (their flags
 * come later: completeVmas) or smaps read elsewhere.
 */
export function classifyVmas(pid: number, raw?: Vma[]): DumpedVma[] {
  raw ??= readVmasFlags(pid);
  const vmas: DumpedVma[] = [];
  const mayWrite = new Set<bigint>();
  for (const v of raw) {
    let status: number = VMA.REGULAR;
    let flags: number = v.shared ? MAP.SHARED : MAP.PRIVATE;
    // sealed with mseal (Linux 6.10+): no image field keeps it, and a VMA comes back unsealed (the
    // kernel's own mappings, sealed by the kernel where it does so, are the kernel's again)
    if (v.vmflags.includes("sl") && !KERNEL_MAPPINGS.has(v.path))
      refuse("mem", `process ${pid}`, "sealed", `${v.path ? `'${v.path}'` : "memory"} at 0x${v.start.toString(16)}`);
    // the kernel's own mappings, encoded as CRIU encodes them: [vsyscall] (restore leaves the
    // kernel's in place), [vdso] (its pages are stored, restore maps this kernel's vDSO there) and
    // [vvar] with the [vvar_vclock] after it as one VMA (never read: restore maps them with the vDSO)
    if (v.path === "[vsyscall]") {
      vmas.push({
        start: v.start,
        end: v.end,
        pgoff: 0n,
        shmid: 0n,
        prot: v.prot,
        flags: MAP.PRIVATE | MAP.ANONYMOUS,
        status: VMA.VSYSCALL | VMA.ANON_PRIVATE,
        fd: -1n,
        madv: madvFromVmFlags(v.vmflags),
        fdflags: 0,
        path: v.path,
        dev: v.dev,
        inode: 0,
      });
      continue;
    }
    if (v.path === "[vvar_vclock]") {
      const prev = vmas[vmas.length - 1];
      if (prev && prev.status & VMA.VVAR && prev.end === v.start && prev.prot === v.prot) {
        prev.end = v.end;
        continue;
      }
    }
    if (v.path === "[vdso]") {
      status |= VMA.VDSO | VMA.ANON_PRIVATE;
      flags |= MAP.ANONYMOUS;
    } else if (v.path === "[vvar]" || v.path === "[vvar_vclock]") {
      status |= VMA.VVAR | VMA.ANON_PRIVATE;
      flags |= MAP.ANONYMOUS;
    } else if (v.path === "[stack]") {
      status |= VMA.ANON_PRIVATE;
      flags |= MAP.ANONYMOUS | MAP.GROWSDOWN;
    } // CRIU: no VMA_AREA_STACK
    else if (v.path === "[heap]") {
      status |= VMA.HEAP | VMA.ANON_PRIVATE;
      flags |= MAP.ANONYMOUS;
    } else if (v.vmflags.includes("dp")) refuse("mem", `process ${pid}`, "droppable", `at 0x${v.start.toString(16)}`);
    else if (v.vmflags.includes("ht"))
      refuse("mem", `process ${pid}`, "hugetlb", `'${v.path}' at 0x${v.start.toString(16)}`);
    else if (v.path.startsWith("/[aio]")) refuse("mem", `process ${pid}`, "aio", `at 0x${v.start.toString(16)}`);
    else if (v.path.startsWith("/memfd:"))
      refuse("mem", `process ${pid}`, "memfd-map", `'${v.path}' at 0x${v.start.toString(16)}`);
    else if (!v.shared && v.path.startsWith("/dev/zero") && v.inode) {
      // MAP_PRIVATE of a shmem object (through /proc/PID/map_files): its untouched pages are the object's
      refuse("mem", `process ${pid}`, "shmem-private", `'${v.path}' at 0x${v.start.toString(16)}`);
    } else if (v.shared && v.path.startsWith("/dev/zero") && v.inode) {
      // MAP_SHARED|MAP_ANONYMOUS: a shmem object, dumped once (shmem.ts)
      status |= VMA.ANON_SHARED;
      flags |= MAP.ANONYMOUS;
    } else if (v.inode === 0 && (v.path === "" || v.path.startsWith("[anon:"))) {
      if (v.shared)
        throw new CriuError(
          "mem",
          `process ${pid}: shared anonymous mapping at 0x${v.start.toString(16)} is not supported yet`
        );
      status |= VMA.ANON_PRIVATE;
      flags |= MAP.ANONYMOUS;
      if (v.vmflags.includes("gd")) flags |= MAP.GROWSDOWN;
    } else if (v.path.startsWith("/SYSV") && v.shared) {
      // saved once per segment (sysvshm.ts); encoded as CRIU encodes it: a shared anonymous mapping
      // that is a SysV segment (shmid and fdflags are set by the dump)
      status |= VMA.ANON_SHARED | VMA.SYSVIPC;
      flags |= MAP.ANONYMOUS;
    } else if (v.path.startsWith("/SYSV") || v.path.startsWith("/memfd:")) {
      throw new CriuError(
        "mem",
        `process ${pid}: mapping of '${v.path}' at 0x${v.start.toString(16)} is not supported yet`
      );
    } else if (v.inode !== 0 && !v.path.startsWith("/")) {
      // socket:[N] (a packet ring), anon_inode:[io_uring], [anon_shmem:NAME] ...: no file to map again
      refuse("mem", `process ${pid}`, "special-map", `'${v.path}' at 0x${v.start.toString(16)}`);
    } else if (v.inode !== 0) {
      // a deleted file stays "(deleted)" in the path: dump.ts saves it as a ghost file
      status |= v.shared ? VMA.FILE_SHARED : VMA.FILE_PRIVATE;
    } else {
      throw new CriuError("mem", `process ${pid}: unsupported mapping '${v.path}' at 0x${v.start.toString(16)}`);
    }
    if (v.vmflags.includes("gd") && !(flags & MAP.GROWSDOWN)) flags |= MAP.GROWSDOWN;
    if (v.vmflags.includes("lo")) flags |= MAP.LOCKED; // mlock()ed: locked again after its pages are back
    // MAP_NORESERVE (VM_NORESERVE, smaps "nr"): not charged to the commit limit; CRIU writes it too
    if (v.vmflags.includes("nr")) flags |= MAP.NORESERVE;
    // a MAP_SHARED file mapping that may be made writable (the file was opened read-write)
    if (v.shared && v.vmflags.includes("mw")) mayWrite.add(v.start);
    vmas.push({
      start: v.start,
      end: v.end,
      pgoff: v.pgoff,
      shmid: 0n,
      prot: v.prot,
      flags,
      status,
      fd: -1n,
      madv: madvFromVmFlags(v.vmflags),
      fdflags: 0,
      path: v.path,
      dev: v.dev,
      inode: v.inode,
      mayWrite: mayWrite.has(v.start),
      accounted: v.vmflags.includes("ac"),
      lockOnFault: v.vmflags.includes("lf"),
    });
  }
  // the restore maps the vDSO with its vvar before it (ARCH_MAP_VDSO), as the kernel places them:
  // one moved (mremap) or unmapped apart from the other cannot come back where it was
  const vdso = vmas.filter((v) => v.status & VMA.VDSO),
    vvar = vmas.filter((v) => v.status & VMA.VVAR);
  if (
    vdso.length > 1 ||
    vvar.length > 1 ||
    vdso.length !== vvar.length ||
    (vdso.length && vvar[0].end !== vdso[0].start)
  )
    refuse(
      "mem",
      `process ${pid}`,
      "vdso-layout",
      vdso.length
        ? `[vdso] at 0x${vdso[0].start.toString(16)}${vvar.length ? `, [vvar] at 0x${vvar[0].start.toString(16)}` : ", no [vvar]"}`
        : `[vvar] at 0x${vvar[0].start.toString(16)}, no [vdso]`
    );
  return vmas;
}

/** The VMAs' -v4 lines, once they are complete. */
export function logVmas(pid: number, vmas: DumpedVma[]) {
  if (logLevel() < LOG_DEBUG) return; // (the lines' text is made only when they are written)
  for (const v of vmas) log.debug(`process ${pid}: ${vmaLine(v)}`);
}

/**
 * VMAs classified from /proc/PID/maps (classifyVmas(pid, readMaps(pid))) completed with what their
 * VmFlags decide, from smaps (`raw`) read while the process stayed frozen: refusals (hugetlb,
 * droppable), MAP_GROWSDOWN and MAP_LOCKED, madvise advice, may-write, accounting, lock on fault; the same as classifyVmas of
 * smaps alone. smaps must list the very VMAs maps did (the process was frozen between the two
 * reads and its map untouched): anything else fails the dump.
 */
export function completeVmas(pid: number, vmas: DumpedVma[], raw: Vma[]) {
  const full = classifyVmas(pid, raw);
  const changed = (at: bigint) =>
    new CriuError("mem", `process ${pid}: its memory map changed while it was frozen (at 0x${at.toString(16)})`);
  if (full.length !== vmas.length) throw changed(vmas[Math.min(full.length, vmas.length) - 1]?.start ?? 0n);
  for (let i = 0; i < vmas.length; i++) {
    const a = vmas[i],
      b = full[i];
    if (
      a.start !== b.start ||
      a.end !== b.end ||
      a.prot !== b.prot ||
      a.status !== b.status ||
      a.pgoff !== b.pgoff ||
      a.inode !== b.inode ||
      a.dev !== b.dev ||
      a.path !== b.path
    )
      throw changed(a.start);
    a.flags = b.flags;
    a.madv = b.madv;
    a.mayWrite = b.mayWrite;
    a.accounted = b.accounted;
    a.lockOnFault = b.lockOnFault;
  }
}

/** One VMA as the -v4 logs show it, on dump and on restore. */
export function vmaLine(v: {
  start: bigint;
  end: bigint;
  prot: number;
  flags: number;
  status: number;
  pgoff: bigint;
  path?: string;
}): string {
  const prot = `${v.prot & 1 ? "r" : "-"}${v.prot & 2 ? "w" : "-"}${v.prot & 4 ? "x" : "-"}`;
  return `vma 0x${v.start.toString(16)}-0x${v.end.toString(16)} ${prot} flags 0x${v.flags.toString(16)} status 0x${v.status.toString(16)} pgoff 0x${v.pgoff.toString(16)}${v.path ? ` ${v.path}` : ""}`;
}

const PAGE_IS_GUARD = 1 << 8;
const PM_PRESENT = 1 << 31,
  PM_SWAP = 1 << 30,
  PM_FILE = 1 << 29; // bits 63,62,61 as seen in the high u32

/**
 * A pagemap entry that is a userfaultfd write-protect marker: what memory tracking (memtrack.ts)
 * leaves in the page table of a tracked file mapping for a page that is not there (the file's page
 * comes back on the next access). pagemap and PAGEMAP_SCAN report it as swapped (PM_SWAP, swap
 * type 31: the kernel's PTE marker type, the last one; offset 1: PTE_MARKER_UFFD_WP, never a guard
 * region's 4): it is no private page. (Swap type and offset show only to CAP_SYS_ADMIN: otherwise
 * 0, and such an entry stays a page, as before.)
 */
function isWpMarker(lo: number, hi: number): boolean {
  return (hi & PM_SWAP) !== 0 && lo === ((1 << 5) | 31) && (hi & 0x7fffff) === 0;
}

/** [start, end) ranges of a file mapping's pages reported swapped, without the write-protect markers among them. */
export function withoutWpMarkers(pagemapFd: number, pid: number, ranges: [bigint, bigint][]): [bigint, bigint][] {
  const out: [bigint, bigint][] = [];
  const CHUNK = 4096;
  const buf = new Uint8Array(CHUNK * 8),
    u32 = new Uint32Array(buf.buffer);
  for (const [a, b] of ranges) {
    for (let at = a; at < b; ) {
      const n = Number((b - at) / 4096n) < CHUNK ? Number((b - at) / 4096n) : CHUNK;
      const got = preadFull(pagemapFd, buf, (at / 4096n) * 8n, n * 8, 0, `read pagemap of ${pid}`);
      if (got < n * 8) throw new CriuError("mem", `short pagemap read for ${pid}`);
      for (let i = 0; i < n; i++) {
        if (isWpMarker(u32[i * 2], u32[i * 2 + 1])) continue;
        const p = at + BigInt(i) * 4096n,
          last = out[out.length - 1];
        if (last && last[1] === p) last[1] = p + 4096n;
        else out.push([p, p + 4096n]);
      }
      at += BigInt(n) * 4096n;
    }
  }
  return out;
}

/** Append the run [vaddr, +nrPages) to runs, extending the last one when they touch and it is not
 * before `floor` (runs stop at VMA ends, as CRIU writes them). */
function addRun(runs: PageRun[], floor: number, vaddr: bigint, nrPages: number) {
  const last = runs.length > floor ? runs[runs.length - 1] : undefined;
  if (last && last.vaddr + BigInt(last.nrPages) * 4096n === vaddr) last.nrPages += nrPages;
  else runs.push({ vaddr, nrPages, flags: PE.PRESENT });
}

/**
 * Which pages of each VMA must be saved: runs of consecutive pages. Private anonymous memory: every
 * page present or swapped; private file mappings: only pages that are no longer the file's (COW
 * copies). PAGEMAP_SCAN (Linux 6.7+) finds them by walking the page tables; where the kernel lacks it
 * (or CRIU_BUN_PAGEMAP=read) the pagemap is read, 8 bytes per page.
 */
export function pagesToDump(pid: number, vmas: DumpedVma[]): PageRun[] {
  const fd = openFd(`/proc/${pid}/pagemap`, O.RDONLY | O.CLOEXEC);
  const runs: PageRun[] = [];
  let scanner: PagemapScanner | undefined =
    process.env.CRIU_BUN_PAGEMAP === "read" ? undefined : new PagemapScanner(fd);
  let reader: PagemapReader | undefined;
  // guard regions (MADV_GUARD_INSTALL) are page table markers no image keeps: found with the
  // pages (PAGE_IS_GUARD, Linux 6.14+), refused
  const probe = vmas.find((v) => v.status & VMA.ANON_PRIVATE && !(v.status & (VMA.VVAR | VMA.VSYSCALL | VMA.VDSO)));
  const guard =
    scanner &&
    probe &&
    scanner.scan(probe.start, probe.start + 4096n, { anyof: PAGE_IS_GUARD, ret: PAGE_IS_GUARD }) >= 0
      ? PAGE_IS_GUARD
      : 0;
  const t0 = performance.now();
  try {
    for (const v of vmas) {
      const anon = (v.status & VMA.ANON_PRIVATE) !== 0;
      const filePriv = (v.status & VMA.FILE_PRIVATE) !== 0;
      // as CRIU: [vdso] pages are stored, [vvar] and [vsyscall] ones are not (not readable)
      if ((!anon && !filePriv) || v.status & (VMA.VVAR | VMA.VSYSCALL)) continue;
      // and every [vdso] page, present or not: CRIU's restore reads the dumped vDSO's ELF header
      if (v.status & VMA.VDSO) {
        runs.push({ vaddr: v.start, nrPages: Number((v.end - v.start) / 4096n), flags: PE.PRESENT });
        continue;
      }
      if (scanner) {
        const r = scanVma(pid, scanner, v, anon, runs, guard, fd);
        if (r === "done") continue;
        if (r === "unsupported") scanner = undefined; // kernel without PAGEMAP_SCAN: read from now on
      }
      (reader ??= new PagemapReader(pid, fd)).vma(v, anon, runs);
    }
  } finally {
    closeFd(fd);
  }
  const how = scanner && reader ? "PAGEMAP_SCAN and read" : scanner ? "PAGEMAP_SCAN" : "read";
  log.debug(
    `Pagemap of ${pid}: ${runs.length} runs of pages to dump (pagemap by ${how}) in ${(performance.now() - t0).toFixed(1)} ms`
  );
  return runs;
}

/** One VMA by PAGEMAP_SCAN. "vma": this VMA refused (nothing added), read it instead. */
function scanVma(
  pid: number,
  sc: PagemapScanner,
  v: DumpedVma,
  anon: boolean,
  runs: PageRun[],
  guard = 0,
  pagemapFd = -1
): "done" | "vma" | "unsupported" {
  const q = anon
    ? { anyof: PAGE_IS.PRESENT | PAGE_IS.SWAPPED | guard, ret: PAGE_IS.PRESENT | PAGE_IS.SWAPPED | guard }
    : {
        inverted: PAGE_IS.FILE,
        mask: PAGE_IS.FILE,
        anyof: PAGE_IS.PRESENT | PAGE_IS.SWAPPED,
        ret: PAGE_IS.PRESENT | PAGE_IS.SWAPPED,
      };
  const floor = runs.length;
  let at = v.start;
  while (at < v.end) {
    const n = sc.scan(at, v.end, q);
    if (n < 0) {
      if (at === v.start && (n === -E.ENOTTY || n === -E.EINVAL)) return n === -E.ENOTTY ? "unsupported" : "vma";
      throw new CriuError("mem", `PAGEMAP_SCAN of process ${pid} at 0x${at.toString(16)}: ${errnoText(-n)}`);
    }
    const vec = sc.vec,
      end = sc.walkEnd;
    if (end <= at)
      throw new CriuError("mem", `PAGEMAP_SCAN of process ${pid} made no progress at 0x${at.toString(16)}`);
    // only what lies below walk_end counts: 6.18 was seen returning regions past it when it stopped
    // early, and the next call (from walk_end) reports them again
    for (let i = 0; i < n; i++) {
      const a = vec[i * 3],
        b = vec[i * 3 + 1] < end ? vec[i * 3 + 1] : end;
      const cat = Number(vec[i * 3 + 2]);
      if (guard && cat & guard && a < b) refuse("mem", `process ${pid}`, "guard", `at 0x${a.toString(16)}`);
      // a file mapping's "swapped" pages may be memory tracking's write-protect markers: no pages
      if (!anon && a < b && !(cat & PAGE_IS.PRESENT) && pagemapFd >= 0) {
        for (const [x, y] of withoutWpMarkers(pagemapFd, pid, [[a, b]]))
          addRun(runs, floor, x, Number((y - x) / 4096n));
        continue;
      }
      if (a < b) addRun(runs, floor, a, Number((b - a) / 4096n));
    }
    at = end;
  }
  return "done";
}

/** The pagemap read 8 bytes per page, in chunks of 64 Ki pages. */
class PagemapReader {
  private static readonly CHUNK = 1 << 16;
  private readonly buf = new Uint8Array(PagemapReader.CHUNK * 8);
  private readonly u32 = new Uint32Array(this.buf.buffer);
  constructor(
    private readonly pid: number,
    private readonly fd: number
  ) {}

  vma(v: DumpedVma, anon: boolean, runs: PageRun[]) {
    const { buf, u32 } = this;
    const first = v.start / 4096n,
      n = Number((v.end - v.start) / 4096n);
    const floor = runs.length;
    let runStart = -1;
    for (let base = 0; base < n; base += PagemapReader.CHUNK) {
      const cnt = Math.min(PagemapReader.CHUNK, n - base);
      const got = preadFull(this.fd, buf, (first + BigInt(base)) * 8n, cnt * 8, 0, `read pagemap of ${this.pid}`);
      if (got < cnt * 8) throw new CriuError("mem", `short pagemap read for ${this.pid}`);
      for (let i = 0; i < cnt; i++) {
        const hi = u32[i * 2 + 1];
        const want =
          (hi & (PM_PRESENT | PM_SWAP)) !== 0 && (anon || ((hi & PM_FILE) === 0 && !isWpMarker(u32[i * 2], hi)));
        const idx = base + i;
        if (want) {
          if (runStart < 0) runStart = idx;
        } else if (runStart >= 0) {
          addRun(runs, floor, v.start + BigInt(runStart) * 4096n, idx - runStart);
          runStart = -1;
        }
      }
    }
    if (runStart >= 0) addRun(runs, floor, v.start + BigInt(runStart) * 4096n, n - runStart);
  }
}
