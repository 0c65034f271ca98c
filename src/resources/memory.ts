// Memory: VMAs from /proc/PID/smaps, classified as CRIU does, and the pages worth saving picked
// with /proc/PID/pagemap. The bytes themselves move through the page pipeline (src/codec/
// pipeline.ts); the restore side is in src/restore/task.ts.
import { readVmas, type Vma } from "../sys/proc";
import { openFd, closeFd, preadFull, O } from "../sys/mem";
import { VMA, MAP, PE, madvFromVmFlags } from "./vma";
import { CriuError } from "../log";

export interface DumpedVma {
  start: bigint; end: bigint; pgoff: bigint; shmid: bigint; prot: number; flags: number; status: number;
  fd: bigint; madv: bigint; fdflags: number;
  path: string; dev: string; inode: number;
}
export interface PageRun { vaddr: bigint; nrPages: number; flags: number }

export function classifyVmas(pid: number, brk: bigint, startBrk: bigint): { vmas: DumpedVma[]; raw: Vma[] } {
  const raw = readVmas(pid);
  const vmas: DumpedVma[] = [];
  for (const v of raw) {
    if (v.path === "[vsyscall]") continue;
    let status = VMA.REGULAR;
    let flags = v.shared ? MAP.SHARED : MAP.PRIVATE;
    if (v.path === "[vdso]") status |= VMA.VDSO;
    else if (v.path === "[vvar]" || v.path === "[vvar_vclock]") status = VMA.VVAR;
    else if (v.path === "[stack]") { status |= VMA.STACK | VMA.ANON_PRIVATE; flags |= MAP.ANONYMOUS | MAP.GROWSDOWN; }
    else if (v.path === "[heap]") { status |= VMA.HEAP | VMA.ANON_PRIVATE; flags |= MAP.ANONYMOUS; }
    else if (v.shared && v.path.startsWith("/dev/zero") && v.inode) {
      // MAP_SHARED|MAP_ANONYMOUS: a shmem object, dumped once (shmem.ts)
      status |= VMA.ANON_SHARED; flags |= MAP.ANONYMOUS;
    } else if (v.inode === 0 && (v.path === "" || v.path.startsWith("[anon:"))) {
      if (v.shared) throw new CriuError("mem", `process ${pid}: shared anonymous mapping at 0x${v.start.toString(16)} is not supported yet`);
      status |= VMA.ANON_PRIVATE; flags |= MAP.ANONYMOUS;
      if (v.vmflags.includes("gd")) flags |= MAP.GROWSDOWN;
    } else if (v.path.startsWith("/SYSV") && v.shared) {
      status |= VMA.SYSVIPC; // saved once per segment (sysvshm.ts)
    } else if (v.path.startsWith("/SYSV") || v.path.startsWith("/memfd:")) {
      throw new CriuError("mem", `process ${pid}: mapping of '${v.path}' at 0x${v.start.toString(16)} is not supported yet`);
    } else if (v.inode !== 0) {
      // a deleted file stays "(deleted)" in the path: dump.ts saves it as a ghost file
      status |= v.shared ? VMA.FILE_SHARED : VMA.FILE_PRIVATE;
    } else {
      throw new CriuError("mem", `process ${pid}: unsupported mapping '${v.path}' at 0x${v.start.toString(16)}`);
    }
    if (v.vmflags.includes("gd") && !(flags & MAP.GROWSDOWN)) flags |= MAP.GROWSDOWN;
    vmas.push({
      start: v.start, end: v.end, pgoff: v.pgoff, shmid: 0n, prot: v.prot, flags, status, fd: -1n,
      madv: madvFromVmFlags(v.vmflags), fdflags: 0, path: v.path, dev: v.dev, inode: v.inode,
    });
  }
  void brk; void startBrk;
  return { vmas, raw };
}

const PM_PRESENT = 1 << 31, PM_SWAP = 1 << 30, PM_FILE = 1 << 29; // bits 63,62,61 as seen in the high u32

/** Which pages of each VMA must be saved: runs of consecutive pages. */
export function pagesToDump(pid: number, vmas: DumpedVma[]): PageRun[] {
  const fd = openFd(`/proc/${pid}/pagemap`, O.RDONLY | O.CLOEXEC);
  const runs: PageRun[] = [];
  const chunkPages = 1 << 16;
  const buf = new Uint8Array(chunkPages * 8);
  const u32 = new Uint32Array(buf.buffer);
  try {
    for (const v of vmas) {
      const anon = (v.status & VMA.ANON_PRIVATE) !== 0;
      const filePriv = (v.status & VMA.FILE_PRIVATE) !== 0;
      if (!anon && !filePriv) continue;
      const first = v.start / 4096n, n = Number((v.end - v.start) / 4096n);
      let runStart = -1;
      for (let base = 0; base < n; base += chunkPages) {
        const cnt = Math.min(chunkPages, n - base);
        const got = preadFull(fd, buf, (first + BigInt(base)) * 8n, cnt * 8, 0, `read pagemap of ${pid}`);
        if (got < cnt * 8) throw new CriuError("mem", `short pagemap read for ${pid}`);
        for (let i = 0; i < cnt; i++) {
          const hi = u32[i * 2 + 1];
          const want = anon ? (hi & (PM_PRESENT | PM_SWAP)) !== 0 : (hi & (PM_PRESENT | PM_SWAP)) !== 0 && (hi & PM_FILE) === 0;
          const idx = base + i;
          if (want) { if (runStart < 0) runStart = idx; }
          else if (runStart >= 0) { runs.push({ vaddr: v.start + BigInt(runStart) * 4096n, nrPages: idx - runStart, flags: PE.PRESENT }); runStart = -1; }
        }
      }
      if (runStart >= 0) runs.push({ vaddr: v.start + BigInt(runStart) * 4096n, nrPages: n - runStart, flags: PE.PRESENT });
    }
  } finally { closeFd(fd); }
  return runs;
}
