// The VmFlags a dump uses (smaps's two-letter mnemonics) from vm_flags read by the BPF VMA iterator
// (bpfvma.ts), without smaps's page-table walk. A bit -> mnemonic table, the kernel's VM_* values
// for the 17 mnemonics criu-bun reads, CHECKED on the running kernel before it is used (calibrate):
// criu-bun maps regions in itself with every one of those flags set (madvise, mlock, mlock2 on fault, MAP_GROWSDOWN,
// MAP_DROPPABLE, MAP_HUGETLB, shared mappings with and without VM_MAYWRITE), reads its own smaps
// and its own iterator output, and requires that for every VMA of itself the 17 mnemonics the table
// derives from vm_flags are exactly smaps's, and that each mnemonic was seen at least once (or that
// the kernel refuses to set it at all). The droppable bit moves between kernels: it is taken from
// the calibration (the one bit a droppable mapping has that its twin without MAP_DROPPABLE lacks),
// and so does the sealed one (mseal).
// Anything else (a mismatch, a region that cannot be made, any BPF step failing) and the caller
// reads smaps for the whole run: a wrong table never reaches an image.
import { syscall, addr, cstr } from "./syscall";
import { NR } from "./nr";
import { MADV, MADV_VMFLAGS } from "./flags";
import { errnoText } from "./errno";
import { readVmas, readMaps, type Vma } from "./proc";
import { VmaIterator, BpfVmaError } from "./bpfvma";

/** The mnemonics criu-bun reads from VmFlags (resources/memory.ts, vma.ts). */
const CONSUMED = [
  "dc",
  "dd",
  "mg",
  "hg",
  "nh",
  "wf",
  "sr",
  "rr",
  "dp",
  "ht",
  "gd",
  "lo",
  "mw",
  "nr",
  "ac",
  "lf",
  "sl",
] as const;

/** The kernel's VM_* bits of the mnemonics (include/linux/mm.h; stable since long before 6.x). */
const KNOWN: [string, bigint][] = [
  ["mw", 0x20n], // VM_MAYWRITE
  ["gd", 0x100n], // VM_GROWSDOWN
  ["lo", 0x2000n], // VM_LOCKED
  ["lf", 0x80000n], // VM_LOCKONFAULT
  ["ac", 0x100000n], // VM_ACCOUNT
  ["sr", 0x8000n], // VM_SEQ_READ
  ["rr", 0x10000n], // VM_RAND_READ
  ["dc", 0x20000n], // VM_DONTCOPY
  ["ht", 0x400000n], // VM_HUGETLB
  ["nr", 0x200000n], // VM_NORESERVE
  ["wf", 0x2000000n], // VM_WIPEONFORK
  ["dd", 0x4000000n], // VM_DONTDUMP
  ["hg", 0x20000000n], // VM_HUGEPAGE
  ["nh", 0x40000000n], // VM_NOHUGEPAGE
  ["mg", 0x80000000n], // VM_MERGEABLE
];

/** A checked table: the mnemonics (of CONSUMED) and their bits. */
export interface VmFlagTable {
  bits: [string, bigint][];
}

/** The mnemonics (of CONSUMED) the table gives vm_flags. */
function mnemonics(t: VmFlagTable, flags: bigint): string[] {
  const out: string[] = [];
  for (const [m, b] of t.bits) if (flags & b) out.push(m);
  return out;
}

const PROT_RW = 3,
  MAP_SHARED = 1,
  MAP_PRIVATE = 2,
  MAP_DROPPABLE = 8,
  MAP_FIXED = 0x10,
  MAP_ANONYMOUS = 0x20,
  MAP_GROWSDOWN = 0x100,
  MAP_NORESERVE = 0x4000,
  MAP_HUGETLB = 0x40000;
const PAGE = 4096n,
  HUGE = 2n * 1024n * 1024n;

/** A mapping made or a madvise given failed with errno e: the kernel has no such flag at all. */
const notInKernel = (e: number) => e === 22 /* EINVAL */ || e === 95 /* EOPNOTSUPP */ || e === 524; /* ENOTSUPP */

/**
 * Check the table on this kernel (see above). swap: two mnemonics whose bits are exchanged first (a
 * test's way to give it a wrong table: CRIU_BUN_VMFLAGS_SWAP). The checked table, or why not.
 */
export function calibrate(it: VmaIterator, swap?: [string, string]): { table: VmFlagTable } | { reason: string } {
  const bits = KNOWN.map(([m, b]) => [m, b] as [string, bigint]);
  if (swap) {
    const a = bits.find((x) => x[0] === swap[0]),
      b = bits.find((x) => x[0] === swap[1]);
    if (a && b) [a[1], b[1]] = [b[1], a[1]];
  }
  const maps: [bigint, bigint][] = [];
  const fds: number[] = [];
  const mmap = (at: bigint, len: bigint, prot: number, flags: number, fd = -1): bigint | number => {
    const r = BigInt(syscall(NR.mmap, at, len, prot, flags, fd, 0));
    if (r < 0n && r > -4096n) return Number(-r);
    maps.push([r, len]);
    return r;
  };
  try {
    // a reservation, each region one page of it with a PROT_NONE page between (no two merge); the
    // reservation itself is MAP_NORESERVE (nr)
    const slots = 16n;
    const base = mmap(0n, slots * 2n * PAGE, 0, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
    if (typeof base === "number") return { reason: `calibration: mmap: ${errnoText(base)}` };
    let slot = 0n;
    const region = (flags = MAP_PRIVATE | MAP_ANONYMOUS, fd = -1) => {
      const at = base + (2n * slot++ + 1n) * PAGE;
      return mmap(at, PAGE, PROT_RW, flags | MAP_FIXED, fd);
    };
    const unsupported = new Set<string>();
    const fail = (what: string, e: number) => ({ reason: `calibration: ${what}: ${errnoText(e)}` });
    // madvise on a region of its own: dc dd mg hg nh wf sr rr
    for (const [m, adv] of MADV_VMFLAGS) {
      const at = region();
      if (typeof at === "number") return fail("mmap", at);
      const r = syscall(NR.madvise, at, PAGE, adv);
      if (r < 0) {
        // THP and KSM are build options: without them no VMA can carry hg, nh, mg
        if (notInKernel(-r) && (m === "hg" || m === "nh" || m === "mg")) unsupported.add(m);
        else return fail(`madvise for ${m}`, -r);
      }
    }
    // lo: mlock()ed
    const locked = region();
    if (typeof locked === "number") return fail("mmap", locked);
    const lr = syscall(NR.mlock, locked, PAGE);
    if (lr < 0) return fail("mlock", -lr);
    // lf: locked on fault (mlock2 MLOCK_ONFAULT); ac: any private writable region has it
    const onfault = region();
    if (typeof onfault === "number") return fail("mmap", onfault);
    const lf = syscall(NR.mlock2, onfault, PAGE, 1 /* MLOCK_ONFAULT */);
    if (lf < 0) return fail("mlock2", -lf);
    // gd: MAP_GROWSDOWN
    const gd = region(MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN);
    if (typeof gd === "number") return fail("mmap MAP_GROWSDOWN", gd);
    // dp: MAP_DROPPABLE (Linux 6.11+), beside its twin without it (MAP_NORESERVE, wiped on fork, not
    // dumped: what the kernel adds to a droppable mapping); the one bit between them is VM_DROPPABLE
    let dpAt = -1n,
      twinAt = -1n;
    const dp = region(MAP_DROPPABLE | MAP_ANONYMOUS);
    if (typeof dp === "number") {
      if (!notInKernel(dp)) return fail("mmap MAP_DROPPABLE", dp);
      unsupported.add("dp");
      slot++;
    } else {
      dpAt = dp;
      const twin = region(MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
      if (typeof twin === "number") return fail("mmap", twin);
      for (const adv of [MADV.WIPEONFORK, MADV.DONTDUMP]) {
        const r = syscall(NR.madvise, twin, PAGE, adv);
        if (r < 0) return fail("madvise", -r);
      }
      twinAt = twin;
    }
    // mw: a shared mapping of a file open for writing has VM_MAYWRITE, one of a read-only fd not
    const mfd = syscall(NR.memfd_create, addr(cstr("criu-bun-vmflags")), 1 /* MFD_CLOEXEC */);
    if (mfd < 0) return fail("memfd_create", -mfd);
    fds.push(mfd);
    const tr = syscall(NR.ftruncate, mfd, Number(PAGE));
    if (tr < 0) return fail("ftruncate", -tr);
    const rofd = syscall(NR.openat, -100, addr(cstr(`/proc/self/fd/${mfd}`)), 0o2000000 /* O_RDONLY|O_CLOEXEC */, 0);
    if (rofd < 0) return fail("open of the memfd read-only", -rofd);
    fds.push(rofd);
    const mwAt = region(MAP_SHARED, mfd);
    if (typeof mwAt === "number") return fail("mmap MAP_SHARED", mwAt);
    const roAt = base + (2n * slot++ + 1n) * PAGE;
    const ro = mmap(roAt, PAGE, 1 /* PROT_READ */, MAP_SHARED | MAP_FIXED, rofd);
    if (typeof ro === "number") return fail("mmap MAP_SHARED of a read-only fd", ro);
    // ht: MAP_HUGETLB|MAP_NORESERVE needs no free huge page until it is touched
    const ht = mmap(0n, HUGE, PROT_RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_NORESERVE);
    if (typeof ht === "number") {
      if (!notInKernel(ht) && ht !== 38 /* ENOSYS */) return fail("mmap MAP_HUGETLB", ht);
      unsupported.add("ht");
    }
    // sl: a page sealed with mseal (Linux 6.10+), beside an unsealed twin; a sealed page cannot be
    // unmapped: it stays, once, in criu-bun's own memory (a calibration is made once a process), in
    // a PROT_NONE reservation of its own (so that it merges with nothing)
    let slAt = -1n;
    const slTwin = region();
    if (typeof slTwin === "number") return fail("mmap", slTwin);
    const slRes = BigInt(syscall(NR.mmap, 0, 3n * PAGE, 0, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (slRes < 0n && slRes > -4096n) return fail("mmap", Number(-slRes));
    const sl = BigInt(syscall(NR.mmap, slRes + PAGE, PAGE, PROT_RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0));
    if (sl < 0n && sl > -4096n) return fail("mmap", Number(-sl));
    const sr = syscall(NR.mseal, sl, PAGE, 0);
    if (sr < 0) {
      if (!notInKernel(-sr) && -sr !== 38 /* ENOSYS */) return fail("mseal", -sr);
      unsupported.add("sl");
      syscall(NR.munmap, slRes, 3n * PAGE);
    } else slAt = sl;
    if (slot > slots) return { reason: "calibration: too few slots" };

    // the droppable bit, from the twins' vm_flags
    const it1 = records(it.read(process.pid));
    const smaps = readVmas(process.pid);
    const it2 = records(it.read(process.pid));
    if (dpAt >= 0n) {
      const a = it1.get(dpAt),
        b = it1.get(twinAt);
      if (!a || !b) return { reason: "calibration: the droppable mapping is not in the iterator's output" };
      const diff = a[1] ^ b[1];
      if (diff === 0n || (diff & (diff - 1n)) !== 0n || bits.some(([, x]) => x === diff))
        return {
          reason: `calibration: droppable and its twin differ in vm_flags 0x${diff.toString(16)}, not one new bit`,
        };
      bits.push(["dp", diff]);
    }
    // the sealed bit, the same way
    if (slAt >= 0n) {
      const a = it1.get(slAt),
        b = it1.get(slTwin);
      if (!a || !b) return { reason: "calibration: the sealed page is not in the iterator's output" };
      const diff = a[1] ^ b[1];
      if (diff === 0n || (diff & (diff - 1n)) !== 0n || bits.some(([, x]) => x === diff))
        return {
          reason: `calibration: a sealed page and its twin differ in vm_flags 0x${diff.toString(16)}, not one new bit`,
        };
      bits.push(["sl", diff]);
    }
    const table = { bits };
    // every VMA of this process that the iterator gave the same (range and flags) before and after smaps
    const seen = new Set<string>();
    let compared = 0;
    for (const v of smaps) {
      const want = v.vmflags.filter((m) => (CONSUMED as readonly string[]).includes(m)).sort();
      if (v.path === "[vsyscall]") {
        // not in the iterator: given no flags (vmas below), which must be smaps's
        if (want.length) return { reason: `calibration: [vsyscall] has VmFlags ${want.join(" ")}` };
        continue;
      }
      const a = it1.get(v.start),
        b = it2.get(v.start);
      if (!a || !b || a[0] !== v.end || b[0] !== v.end || a[1] !== b[1]) continue; // changed meanwhile
      compared++;
      const got = mnemonics(table, a[1]).sort();
      if (got.join(" ") !== want.join(" "))
        return {
          reason: `calibration: VMA 0x${v.start.toString(16)} has VmFlags "${want.join(" ")}" in smaps but "${got.join(" ")}" from vm_flags 0x${a[1].toString(16)}`,
        };
      for (const m of want) seen.add(m);
    }
    const unseen = CONSUMED.filter((m) => !seen.has(m) && !unsupported.has(m));
    if (unseen.length) return { reason: `calibration: VmFlags ${unseen.join(" ")} not seen on any VMA` };
    // a flag the kernel cannot set on any VMA: its bit must be clear everywhere
    if (unsupported.has("dp")) bits.push(["dp", 0n]);
    if (unsupported.has("sl")) bits.push(["sl", 0n]);
    for (const m of unsupported) {
      const b = bits.find((x) => x[0] === m)?.[1] ?? 0n;
      for (const [, [, f]] of it1)
        if (f & b)
          return { reason: `calibration: ${m} cannot be set here, yet vm_flags bit 0x${b.toString(16)} is set` };
    }
    table.bits = bits.filter(([, b]) => b !== 0n);
    return {
      table,
    };
  } catch (e) {
    return { reason: `calibration: ${e instanceof BpfVmaError ? e.message : (e as Error).message}` };
  } finally {
    for (const [a, l] of maps.reverse()) syscall(NR.munmap, a, l);
    for (const fd of fds) syscall(NR.close, fd);
  }
}

/** start -> [end, flags] of the iterator's records */
function records(r: BigUint64Array): Map<bigint, [bigint, bigint]> {
  const m = new Map<bigint, [bigint, bigint]>();
  for (let i = 0; i + 2 < r.length; i += 3) m.set(r[i], [r[i + 1], r[i + 2]]);
  return m;
}

/**
 * The VMAs of frozen process pid as /proc/PID/maps lists them, their vmflags (the mnemonics of
 * CONSUMED only) from the iterator through the checked table. [vsyscall] (not in the iterator) gets
 * none (checked too). A string when the two lists are not the very same VMAs (the caller reads smaps).
 */
export function vmasWithTable(it: VmaIterator, t: VmFlagTable, pid: number): Vma[] | string {
  const maps = readMaps(pid);
  const rec = it.read(pid);
  let j = 0;
  for (const v of maps) {
    if (v.path === "[vsyscall]") continue;
    if (j + 2 >= rec.length || rec[j] !== v.start || rec[j + 1] !== v.end)
      return `maps has 0x${v.start.toString(16)}-0x${v.end.toString(16)}, the iterator ${j + 2 < rec.length ? `0x${rec[j].toString(16)}-0x${rec[j + 1].toString(16)}` : "no more"}`;
    v.vmflags = mnemonics(t, rec[j + 2]);
    j += 3;
  }
  if (j !== rec.length) return `the iterator has a VMA at 0x${rec[j].toString(16)} that maps has not`;
  return maps;
}
