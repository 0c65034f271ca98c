// Parsers for /proc/PID/*. Addresses are BigInt ([vsyscall] sits above 2^53).
import { readFileSync, readdirSync, readlinkSync, statSync, lstatSync, type BigIntStats } from "./fs";
import { syscall } from "./syscall";
import { NR } from "./nr";
import { MAPS_RE, mapsEntry, parseMaps, readProcText, type Vma } from "./procfile";

export type { Vma } from "./procfile";

export function readText(path: string): string {
  return readFileSync(path, "latin1");
}

const numName = new Uint8Array(16);
/** "N\0" of a non-negative integer in a shared buffer (an fd's name in /proc/PID/fdinfo) */
function numberName(n: number): Uint8Array {
  const t = String(n);
  for (let i = 0; i < t.length; i++) numName[i] = t.charCodeAt(i);
  numName[t.length] = 0;
  return numName;
}
/** The fdinfo of fd, through an fd of criu-bun's on /proc/PID/fdinfo (no walk from /proc each time). */
export function readFdinfoAt(dirfd: number, fd: number): string {
  return readProcText(`fdinfo/${fd}`, dirfd, numberName(fd));
}
/** /proc/PID/maps: the mappings without VmFlags. Cheap: smaps walks the page tables of every
 * mapping (tens of ms for a GiB of resident memory), maps does not. */
export function readMaps(pid: number): Vma[] {
  return parseMaps(readText(`/proc/${pid}/maps`));
}

/** maps with VmFlags from smaps (a walk of the page tables: read it once per dump). */
export function readVmas(pid: number): Vma[] {
  return parseSmaps(readText(`/proc/${pid}/smaps`));
}

/** The lines of smaps text that parseSmaps reads (mapping lines and VmFlags), in order: the same
 * VMAs from a few percent of the text (a page Worker hands them over this way: vmaserve.ts). */
export function smapsSkeleton(text: string): string {
  const keep: string[] = [];
  for (let at = 0; at < text.length; ) {
    let nl = text.indexOf("\n", at);
    if (nl < 0) nl = text.length;
    const c = text.charCodeAt(at);
    if ((c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c === 86 && text.startsWith("VmFlags:", at)))
      keep.push(text.slice(at, nl));
    at = nl + 1;
  }
  return keep.join("\n");
}

/** VMAs with their VmFlags from the text of /proc/PID/smaps (or its smapsSkeleton). */
export function parseSmaps(text: string): Vma[] {
  const vmas: Vma[] = [];
  let cur: Vma | undefined;
  // line by line without splitting the text: a process with 5,000 mappings has 125,000 lines of
  // which only the mapping lines and VmFlags are read
  for (let at = 0; at < text.length; ) {
    let nl = text.indexOf("\n", at);
    if (nl < 0) nl = text.length;
    // field lines start with a capital ("Rss:", "VmFlags:"), mapping lines with a hex address
    const c = text.charCodeAt(at);
    if ((c >= 48 && c <= 57) || (c >= 97 && c <= 102)) {
      const m = MAPS_RE.exec(text.slice(at, nl));
      if (m) {
        cur = mapsEntry(m);
        vmas.push(cur);
      }
    } else if (c === 86 /* V */ && cur && text.startsWith("VmFlags:", at)) {
      cur.vmflags = text
        .slice(at + 8, nl)
        .trim()
        .split(/\s+/);
    }
    at = nl + 1;
  }
  return vmas;
}

export interface ProcStat {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
  pgid: number;
  sid: number;
  ttyNr: number;
  flags: number;
  nice: number;
  numThreads: number;
  startTime: bigint;
  exitSignal: number;
  /** the CPU it last ran on */
  processor: number;
  startCode: bigint;
  endCode: bigint;
  startStack: bigint;
  startData: bigint;
  endData: bigint;
  startBrk: bigint;
  argStart: bigint;
  argEnd: bigint;
  envStart: bigint;
  envEnd: bigint;
  exitCode: number;
  fields: string[];
}

function parseStat(text: string): ProcStat {
  const l = text.indexOf("("),
    r = text.lastIndexOf(")");
  const pid = Number(text.slice(0, l).trim());
  const comm = text.slice(l + 1, r);
  const f = text
    .slice(r + 2)
    .trim()
    .split(" "); // f[0] = field 3 (state)
  const F = (n: number) => f[n - 3];
  const B = (n: number) => BigInt(F(n));
  return {
    pid,
    comm,
    state: F(3),
    ppid: +F(4),
    pgid: +F(5),
    sid: +F(6),
    ttyNr: +F(7),
    flags: +F(9),
    nice: +F(19),
    numThreads: +F(20),
    startTime: B(22),
    exitSignal: +F(38),
    processor: +F(39),
    startCode: B(26),
    endCode: B(27),
    startStack: B(28),
    startData: B(45),
    endData: B(46),
    startBrk: B(47),
    argStart: B(48),
    argEnd: B(49),
    envStart: B(50),
    envEnd: B(51),
    exitCode: +F(52),
    fields: f,
  };
}
export function readStat(pid: number, tid?: number): ProcStat {
  return parseStat(readText(tid ? `/proc/${pid}/task/${tid}/stat` : `/proc/${pid}/stat`));
}

export function readStatus(pid: number, tid?: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readText(tid ? `/proc/${pid}/task/${tid}/status` : `/proc/${pid}/status`).split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}

/** A SIGKILL pending for the thread, in its own queue or its process's (status as readStatus gives it): it is dying. */
export function sigkillPending(status: Record<string, string>): boolean {
  return ["SigPnd", "ShdPnd"].some((k) => status[k] !== undefined && (BigInt(`0x${status[k]}`) & 0x100n) !== 0n);
}

export function listTids(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`)
    .map(Number)
    .sort((a, b) => (a === pid ? -1 : b === pid ? 1 : a - b));
}
export function listFds(pid: number): number[] {
  return readdirSync(`/proc/${pid}/fd`)
    .map(Number)
    .sort((a, b) => a - b);
}
/** Each fd of pid with what it points to; [] for a process that is gone, an fd closed meanwhile is left out. */
export function fdLinks(pid: number): [fd: number, target: string][] {
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return [];
  }
  const out: [number, string][] = [];
  for (const fd of fds) {
    try {
      out.push([Number(fd), readlinkSync(`/proc/${pid}/fd/${fd}`)]);
    } catch {}
  }
  return out.sort((a, b) => a[0] - b[0]);
}
export function readFdinfo(pid: number, fd: number): Record<string, string> {
  return parseFdinfo(readText(`/proc/${pid}/fdinfo/${fd}`));
}
/** "key:\tvalue" lines of an fdinfo text (the first of each key). */
export function parseFdinfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const i = line.indexOf(":");
    if (i > 0 && !(line.slice(0, i) in out)) out[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return out;
}
export function readLink(path: string): string {
  return readlinkSync(path);
}
/** Children listed by the kernel for every thread of pid. */
export function listChildren(pid: number): number[] {
  const kids: number[] = [];
  for (const tid of listTids(pid)) {
    try {
      const t = readText(`/proc/${pid}/task/${tid}/children`).trim();
      if (t) kids.push(...t.split(/\s+/).map(Number));
    } catch {}
  }
  return kids;
}

export interface Rlimit {
  name: string;
  cur: bigint;
  max: bigint;
}
const RLIM_INF = 0xffffffffffffffffn;
// /proc/PID/limits rows, in RLIMIT_* order (0..15)
const LIMIT_ROWS = [
  "Max cpu time",
  "Max file size",
  "Max data size",
  "Max stack size",
  "Max core file size",
  "Max resident set",
  "Max processes",
  "Max open files",
  "Max locked memory",
  "Max address space",
  "Max file locks",
  "Max pending signals",
  "Max msgqueue size",
  "Max nice priority",
  "Max realtime priority",
  "Max realtime timeout",
];
export function readLimits(pid: number): Rlimit[] {
  const text = readText(`/proc/${pid}/limits`);
  const out: Rlimit[] = [];
  for (const name of LIMIT_ROWS) {
    const line = text.split("\n").find((l) => l.startsWith(name));
    if (!line) throw new Error(`/proc/${pid}/limits: no row '${name}'`);
    const parts = line.slice(26).trim().split(/\s+/);
    const v = (s: string) => (s === "unlimited" ? RLIM_INF : BigInt(s));
    out.push({ name, cur: v(parts[0]), max: v(parts[1]) });
  }
  return out;
}

export function readAuxv(pid: number): BigUint64Array {
  const b = readFileSync(`/proc/${pid}/auxv`);
  return new BigUint64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
}

/** Thread tid (of this process) set to nice value `nice`; false when it could not be. */
export function setTidNice(tid: number, nice: number): boolean {
  return syscall(NR.setpriority, 0 /* PRIO_PROCESS */, tid, nice) === 0;
}

/** The calling thread's effective capabilities (CapEff), or undefined when they cannot be read. */
export function capEffective(): bigint | undefined {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync("/proc/thread-self/status", "latin1"));
    return m ? BigInt(`0x${m[1]}`) : undefined;
  } catch {
    return undefined;
  }
}

/** The calling thread's id. */
export function gettid(): number {
  return syscall(NR.gettid);
}

/** The calling thread's nice value, or undefined when it cannot be read. */
export function threadNice(): number | undefined {
  const r = syscall(NR.getpriority, 0 /* PRIO_PROCESS */, syscall(NR.gettid));
  return r < 0 ? undefined : 20 - r; // the kernel returns 20 - nice
}

/**
 * The calling thread's nice value set to `nice` (Linux keeps nice per thread: the others, and
 * processes started later from other threads, keep theirs); returns the value it had, or undefined
 * when it could not be changed (without CAP_SYS_NICE a lower value is refused).
 */
export function setThreadNice(nice: number): number | undefined {
  const tid = syscall(NR.gettid);
  const r = syscall(NR.getpriority, 0 /* PRIO_PROCESS */, tid);
  if (r < 0) return undefined;
  return syscall(NR.setpriority, 0, tid, nice) < 0 ? undefined : 20 - r; // the kernel returns 20 - nice
}

/** How an error line names thread TID of process PID: "process PID", or "process PID thread TID". */
export function taskWhere(pid: number, tid: number): string {
  return `process ${pid}${tid !== pid ? ` thread ${tid}` : ""}`;
}

/**
 * Whether PATH, a file's name as /proc shows it (an fd's link, cwd, exe, a mapping; seen from
 * ROOT, e.g. /proc/PID/root, or "" for criu-bun's own root), names a file removed from its
 * directory, or a live file whose name itself ends in " (deleted)". Decided as CRIU 4.2 decides
 * (files-reg.c): a file with no links left is removed; one with links is live if its name as read
 * is that inode (CRIU opens it by that name), else it is removed from that name (kept under another).
 */
export function removedFromName(root: string, path: string, st: BigIntStats): boolean {
  if (!path.endsWith(" (deleted)")) return false;
  if (st.nlink === 0n) return true;
  const named = (st.isSymbolicLink() ? lstatSync : statSync)(`${root}${path}`, { bigint: true, throwIfNoEntry: false });
  return !(named !== undefined && named.ino === st.ino && named.dev === st.dev);
}
