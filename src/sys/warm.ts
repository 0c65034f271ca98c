// Pages populated ahead: the pages of the runtime's heap arena that a dump or a restore will touch,
// mapped by one madvise(MADV_POPULATE_WRITE) (Linux 5.14) per run of pages, on a thread of their
// own, instead of one page fault per page on the main thread as the command's code first writes them.
//
// Why: a `sleep` dump or restore takes ~2,500-3,000 page faults, ~1,900 of them in the 1 GiB arena
// the runtime allocates JavaScript's objects from. On a VM whose page faults trap to the hypervisor
// (paravirtual page tables, as on VMs criu-bun is measured on) a fault costs 7-12 us of CPU and a
// page populated by madvise ~1-2 us. Which pages a command touches, counted from the arena's start, is
// the same from run to run (the allocator hands out its pages in the order the same code asks for
// them; argv, the environment and the target's size moved little in the measurements).
//
// The table: the build runs the executable it just compiled (scripts/warm-record.ts: dumps and
// restores of a sleep with CRIU_BUN_WARM_RECORD, below), then compiles again with the runs in
// (bun build --define CRIU_BUN_WARM). Running from sources, or built where a dump cannot run, there
// is no table and nothing is done. A page the command ends up not touching costs only its memory;
// populating never changes what a page holds (an anonymous page reads zero until written, and a
// present one is left as it is).
//
// CRIU_BUN_WARM=0: off (A/B measurements); =sync: populated on the main thread before the command's
// modules load (test/warm.test.ts counts the faults it saves).
import { toArrayBuffer, type Pointer } from "bun:ffi";
import { libc } from "./libc";
import { callCode, codePage, syscall } from "./syscall";
import { assemble, cloneBlocked, d32, movEax, parentSide, syscallOp } from "./asm";
import { NR } from "./nr";
import { sysFailed } from "./errno";
import { O, PAGE_IS, PagemapScanner, closeFd, openFd, writeFull } from "./mem";
import { readProcText } from "./procfile";
import { CLONE, MADV } from "./flags";

/** The compiled-in table (scripts/build.ts), JSON: per command, [first page, pages, first page, pages,
 *  ...] from the arena's start. Absent when running from sources or when the build could not record. */
declare const CRIU_BUN_WARM: string | undefined;

const ARENA = 0x40000000; // the heap arena's size: the one 1 GiB rw-p anonymous mapping at start
const PAGE = 4096;

/** What was populated, for the -v4 log (cli/index.ts). */
export let warmed:
  | { command: string; pages: number; runs: number; ms: number; thread?: number; error?: string }
  | undefined;

/** The arena's start: the only private read-write anonymous mapping of exactly 1 GiB in
 *  /proc/self/maps, or 0 (none, or two: not the layout the table was recorded on).
 *  The lines are found by their text, not parsed one by one (parseMaps: a regular expression and
 *  three BigInts a line, 2-6 ms for a start's ~300 lines while the code is interpreted); addresses
 *  of user space fit a double. */
function arenaStart(): number {
  const text = readProcText("/proc/self/maps");
  const TAIL = " rw-p 00000000 00:00 0";
  let found = 0;
  let n = 0;
  for (let at = text.indexOf(TAIL); at >= 0; at = text.indexOf(TAIL, at + TAIL.length)) {
    // an anonymous mapping: nothing but spaces up to the line's end
    let end = at + TAIL.length;
    while (text.charCodeAt(end) === 32) end++;
    if (end < text.length && text.charCodeAt(end) !== 10) continue;
    const line = text.lastIndexOf("\n", at) + 1;
    const dash = text.indexOf("-", line);
    if (dash < 0 || dash > at) continue;
    const start = Number.parseInt(text.slice(line, dash), 16);
    const stop = Number.parseInt(text.slice(dash + 1, at), 16);
    if (stop - start !== ARENA) continue;
    found = start;
    n++;
  }
  return n === 1 ? found : 0;
}

/** Populate `runs` ([first, count, ...], pages from base, checked by validRuns) here. Returns pages
 *  populated, and an error text if one failed (that stops it: an older kernel answers EINVAL). */
function populate(base: number, runs: number[]): { pages: number; error?: string } {
  let pages = 0;
  for (let i = 0; i + 1 < runs.length; i += 2) {
    const first = runs[i],
      count = runs[i + 1];
    const r = syscall(NR.madvise, base + first * PAGE, count * PAGE, MADV.POPULATE_WRITE);
    if (r < 0) return { pages, error: sysFailed("", "madvise(MADV_POPULATE_WRITE)", r) };
    pages += count;
  }
  return { pages };
}

// The populating thread: a thread of criu-bun's (clone with CLONE_THREAD, on its own page as stack,
// which it never uses) that runs only the machine code below: one madvise per run, then exit. It
// runs on the other CPU while the command's modules load, and is gone a few ms later. Every signal
// is blocked around the clone, so the thread starts (and stays) with all of them blocked: no signal
// handler of the runtime ever runs on it. Its page: the runs' count, the masks, then the runs.
const T_COUNT = 0,
  T_ALL = 8, // an all-ones signal set
  T_OLD = 16, // the caller's signal mask
  T_RESULT = 24, // clone's result
  T_FLAGS = 32,
  T_STACK = 40,
  T_RUNS = 64; // [address, length] u64 pairs
const CLONE_THREAD_FLAGS = CLONE.VM | CLONE.FS | CLONE.FILES | CLONE.SIGHAND | CLONE.THREAD | CLONE.SYSVSEM;

const CLONE_AT = { all: T_ALL, old: T_OLD, flags: T_FLAGS, stack: T_STACK, result: T_RESULT };
// biome-ignore format: machine code, one instruction a line
const THREAD = assemble([
  [0x53],                                   // push rbx
  [0x48, 0x89, 0xfb],                       // mov rbx, rdi              (the page)
  ...cloneBlocked(CLONE_AT),
  // the thread: r12 = runs left, r13 walks them
  [0x4c, 0x8b, 0xa3, ...d32(T_COUNT)],      // mov r12, [rbx+T_COUNT]
  [0x4c, 0x8d, 0xab, ...d32(T_RUNS)],       // lea r13, [rbx+T_RUNS]
  "run",
  [0x4d, 0x85, 0xe4],                       // test r12, r12
  { jump: [0x0f, 0x84], to: "exit" },       // jz exit
  movEax(NR.madvise),
  [0x49, 0x8b, 0x7d, 0x00],                 // mov rdi, [r13]
  [0x49, 0x8b, 0x75, 0x08],                 // mov rsi, [r13+8]
  [0xba, ...d32(MADV.POPULATE_WRITE)],      // mov edx, MADV_POPULATE_WRITE
  syscallOp,
  [0x49, 0x83, 0xc5, 0x10],                 // add r13, 16
  [0x49, 0xff, 0xcc],                       // dec r12
  { jump: [0xe9], to: "run" },              // jmp run
  "exit",
  movEax(NR.exit),
  [0x31, 0xff],                             // xor edi, edi
  syscallOp,
  ...parentSide(CLONE_AT),
  [0x5b],                                   // pop rbx
  [0xc3],                                   // ret
]);

/** Start the populating thread over `runs` (checked by validRuns). Its thread id, or -errno (then
 *  nothing was started). Its page stays mapped for the rest of criu-bun's life (the thread may
 *  outlive this call by a few ms). */
function populateInThread(base: number, runs: number[]): number {
  const n = runs.length / 2;
  const bytes = Math.ceil((T_RUNS + n * 16) / PAGE) * PAGE;
  const map = libc.mmap(null, bytes, 3 /* RW */, 0x22 /* PRIVATE|ANONYMOUS */, -1, 0) as Pointer;
  if (!map || Number(map) === -1) return -12; // ENOMEM
  const at = Number(map);
  const page = new DataView(toArrayBuffer(map, 0, bytes));
  page.setBigUint64(T_ALL, 0xffffffffffffffffn, true);
  page.setBigUint64(T_FLAGS, BigInt(CLONE_THREAD_FLAGS), true);
  page.setBigUint64(T_STACK, BigInt(at + bytes), true);
  for (let i = 0; i < n; i++) {
    page.setBigUint64(T_RUNS + i * 16, BigInt(base + runs[2 * i] * PAGE), true);
    page.setBigUint64(T_RUNS + i * 16 + 8, BigInt(runs[2 * i + 1] * PAGE), true);
  }
  page.setBigUint64(T_COUNT, BigInt(n), true);
  const code = codePage([[0, THREAD]], "the warm thread's code");
  const r = Number(BigInt.asIntN(64, callCode(code, BigInt(at))));
  if (r < 0) syscall(NR.munmap, at, bytes);
  return r;
}

/** The present pages of [base, base + ARENA), as [first, count] runs from base (PAGEMAP_SCAN, Linux 6.7). */
function presentRuns(base: number): number[] {
  const runs: number[] = [];
  let fd: number;
  try {
    fd = openFd("/proc/self/pagemap", O.RDONLY | O.CLOEXEC);
  } catch {
    return runs; // nothing seen: the recording adds nothing
  }
  try {
    const regions = new PagemapScanner(fd).walk(
      BigInt(base),
      BigInt(base + ARENA),
      { mask: PAGE_IS.PRESENT, ret: PAGE_IS.PRESENT },
      "criu-bun's heap arena"
    );
    if (Array.isArray(regions))
      for (const { a, b } of regions) runs.push((Number(a) - base) / PAGE, Number(b - a) / PAGE);
  } finally {
    closeFd(fd);
  }
  return runs;
}

/**
 * CRIU_BUN_WARM_RECORD=FILE (scripts/warm-record.ts): the command runs as it would with the table in
 * CRIU_BUN_WARM_TABLE (JSON, as compiled in), and at exit FILE gets every arena page that was not
 * present before the table's runs were populated and is present at exit ("first count" lines). The
 * script adds them to the table and runs the command again, until the rounds converge. Before and
 * after are one PAGEMAP_SCAN each (runs of present pages): quick, so that the runtime's own
 * threads touch little in between, and small, so that recording moves little in the arena.
 */
function record(file: string, base: number, runs: number[]): void {
  const before = presentRuns(base);
  populate(base, runs);
  process.on("exit", () => {
    const old = new Set<number>();
    for (let i = 0; i < before.length; i += 2) for (let p = before[i]; p < before[i] + before[i + 1]; p++) old.add(p);
    const after = presentRuns(base);
    const lines: string[] = [];
    for (let i = 0; i < after.length; i += 2)
      for (let p = after[i]; p < after[i] + after[i + 1]; p++) if (!old.has(p)) lines.push(`${p} 1`);
    let fd: number;
    try {
      fd = openFd(file, O.WRONLY | O.CREAT | O.TRUNC | O.NOFOLLOW | O.CLOEXEC, 0o600);
    } catch {
      return; // the recording is only ever a saving: no file, no table (the build says so)
    }
    try {
      writeFull(fd, new TextEncoder().encode(lines.join("\n") + "\n"), file);
    } catch {
      // as above
    } finally {
      closeFd(fd);
    }
  });
}

/** The runs up to the first that is not whole pages inside the arena (a table is checked before use). */
function validRuns(runs: unknown): number[] {
  const ok: number[] = [];
  if (!Array.isArray(runs)) return ok;
  for (let i = 0; i + 1 < runs.length; i += 2) {
    const first = runs[i],
      count = runs[i + 1];
    if (!(Number.isInteger(first) && Number.isInteger(count) && first >= 0 && count > 0)) break;
    if ((first + count) * PAGE > ARENA) break;
    ok.push(first, count);
  }
  return ok;
}

/**
 * At the start of a command (main.ts, before the command's modules load). CRIU_BUN_WARM=0: nothing;
 * CRIU_BUN_WARM=sync: populated here, before returning, instead of on a thread (the same pages every
 * run, for test/warm.test.ts's count of page faults). Never fails the command: warming is only ever
 * a saving.
 */
export function warmUp(argv: string[]): void {
  const mode = process.env.CRIU_BUN_WARM;
  if (mode === "0") return;
  const rec = process.env.CRIU_BUN_WARM_RECORD;
  const json = rec
    ? (process.env.CRIU_BUN_WARM_TABLE ?? "{}")
    : typeof CRIU_BUN_WARM === "string"
      ? CRIU_BUN_WARM
      : undefined;
  if (json === undefined) return;
  try {
    const t0 = performance.now();
    const table = JSON.parse(json) as Record<string, unknown>;
    const command = argv.find((a) => Object.hasOwn(table, a));
    const base = arenaStart();
    if (!base) return;
    const runs = validRuns(command ? table[command] : []);
    if (rec) return record(rec, base, runs);
    if (!command || !runs.length) return;
    let pages = 0;
    for (let i = 1; i < runs.length; i += 2) pages += runs[i];
    // on a thread of its own, or here (sync, or if no thread can be started)
    const tid = mode === "sync" ? 0 : populateInThread(base, runs);
    if (tid > 0) warmed = { command, pages, runs: runs.length / 2, ms: performance.now() - t0, thread: tid };
    else {
      const r = populate(base, runs);
      warmed = { command, pages: r.pages, runs: runs.length / 2, ms: performance.now() - t0, error: r.error };
    }
  } catch {
    // a table that does not parse, a failed mapping: the command runs as without one
  }
}
