// ptrace and wait4. All calls must stay on the main JS thread (ptrace is per-thread).
import { syscall, addr } from "./syscall";
import { NR } from "./nr";
import { SysError } from "./errno";

export const PTRACE = {
  PEEKDATA: 2,
  POKEDATA: 5,
  POKEUSER: 6,
  CONT: 7,
  KILL: 8,
  SINGLESTEP: 9,
  GETREGS: 12,
  SETREGS: 13,
  GETFPREGS: 14,
  SETFPREGS: 15,
  ATTACH: 16,
  DETACH: 17,
  SYSCALL: 24,
  SETOPTIONS: 0x4200,
  GETEVENTMSG: 0x4201,
  GETSIGINFO: 0x4202,
  SETSIGINFO: 0x4203,
  GETREGSET: 0x4204,
  SETREGSET: 0x4205,
  SEIZE: 0x4206,
  INTERRUPT: 0x4207,
  LISTEN: 0x4208,
  PEEKSIGINFO: 0x4209,
  GETSIGMASK: 0x420a,
  SETSIGMASK: 0x420b,
  SECCOMP_GET_FILTER: 0x420c,
  GET_SYSCALL_INFO: 0x420e,
  GET_RSEQ_CONFIGURATION: 0x420f,
} as const;
export const PTRACE_O = {
  TRACESYSGOOD: 1,
  TRACEFORK: 2,
  TRACEVFORK: 4,
  TRACECLONE: 8,
  TRACEEXEC: 0x10,
  TRACEVFORKDONE: 0x20,
  TRACEEXIT: 0x40,
  TRACESECCOMP: 0x80,
  EXITKILL: 0x100000,
  SUSPEND_SECCOMP: 0x200000,
} as const;
export const PTRACE_EVENT = {
  FORK: 1,
  VFORK: 2,
  CLONE: 3,
  EXEC: 4,
  VFORK_DONE: 5,
  EXIT: 6,
  SECCOMP: 7,
  STOP: 128,
} as const;
export const NT = { PRSTATUS: 1, PRFPREG: 2, X86_XSTATE: 0x202 } as const;
export const __WALL = 0x40000000;
export const WNOHANG = 1;

/** Index of each register in user_regs_struct (27 x u64). */
export const R = {
  r15: 0,
  r14: 1,
  r13: 2,
  r12: 3,
  rbp: 4,
  rbx: 5,
  r11: 6,
  r10: 7,
  r9: 8,
  r8: 9,
  rax: 10,
  rcx: 11,
  rdx: 12,
  rsi: 13,
  rdi: 14,
  orig_rax: 15,
  rip: 16,
  cs: 17,
  eflags: 18,
  rsp: 19,
  ss: 20,
  fs_base: 21,
  gs_base: 22,
  ds: 23,
  es: 24,
  fs: 25,
  gs: 26,
} as const;
export const REG_NAMES = Object.keys(R) as (keyof typeof R)[];
export type Regs = BigUint64Array; // length 27

export function ptrace(req: number, pid: number, a: number | bigint = 0, data: number | bigint = 0): number {
  return syscall(NR.ptrace, req, pid, a, data);
}
function ptraceOk(what: string, req: number, pid: number, a: number | bigint = 0, data: number | bigint = 0): number {
  const r = ptrace(req, pid, a, data);
  if (r < 0) throw new SysError(`ptrace(${what}) on ${pid}`, -r);
  return r;
}

export function seize(pid: number, options = 0): number {
  return ptrace(PTRACE.SEIZE, pid, 0, options);
}
export function interrupt(pid: number): number {
  return ptrace(PTRACE.INTERRUPT, pid);
}
export function detach(pid: number, sig = 0): number {
  return ptrace(PTRACE.DETACH, pid, 0, sig);
}

const iov = new BigUint64Array(2);
export function getRegs(pid: number): Regs {
  const regs = new BigUint64Array(27);
  iov[0] = BigInt(addr(regs));
  iov[1] = 216n;
  ptraceOk("GETREGSET prstatus", PTRACE.GETREGSET, pid, NT.PRSTATUS, addr(iov));
  return regs;
}
export function setRegs(pid: number, regs: Regs) {
  iov[0] = BigInt(addr(regs));
  iov[1] = 216n;
  ptraceOk("SETREGSET prstatus", PTRACE.SETREGSET, pid, NT.PRSTATUS, addr(iov));
}
/** Full xsave area; the kernel tells its size (varies per CPU). */
export function getXstate(pid: number): Uint8Array {
  const buf = new Uint8Array(16384);
  iov[0] = BigInt(addr(buf));
  iov[1] = BigInt(buf.length);
  ptraceOk("GETREGSET xstate", PTRACE.GETREGSET, pid, NT.X86_XSTATE, addr(iov));
  return buf.slice(0, Number(iov[1]));
}
export function setXstate(pid: number, xs: Uint8Array) {
  const buf = new Uint8Array(xs);
  iov[0] = BigInt(addr(buf));
  iov[1] = BigInt(buf.length);
  ptraceOk("SETREGSET xstate", PTRACE.SETREGSET, pid, NT.X86_XSTATE, addr(iov));
}
export function getSigmask(pid: number): bigint {
  const m = new BigUint64Array(1);
  ptraceOk("GETSIGMASK", PTRACE.GETSIGMASK, pid, 8, addr(m));
  return m[0];
}
export function setSigmask(pid: number, mask: bigint) {
  const m = new BigUint64Array([mask]);
  ptraceOk("SETSIGMASK", PTRACE.SETSIGMASK, pid, 8, addr(m));
}
export function getEventMsg(pid: number): number {
  const m = new BigUint64Array(1);
  ptraceOk("GETEVENTMSG", PTRACE.GETEVENTMSG, pid, 0, addr(m));
  return Number(m[0]);
}
/** struct ptrace_rseq_configuration: u64 rseq_abi_pointer, u32 rseq_abi_size, u32 signature, u32 flags, u32 pad */
export function getRseqConfig(pid: number): { ptr: bigint; len: number; flags: number; sig: number } | null {
  const b = new ArrayBuffer(24);
  const r = ptrace(PTRACE.GET_RSEQ_CONFIGURATION, pid, 24, addr(b));
  if (r < 0) return null;
  const dv = new DataView(b);
  return {
    ptr: dv.getBigUint64(0, true),
    len: dv.getUint32(8, true),
    sig: dv.getUint32(12, true),
    flags: dv.getUint32(16, true),
  };
}
/** One of the 3 TLS GDT entries (12..14) of a thread, as struct user_desc (ptrace GET_THREAD_AREA). */
interface UserDesc {
  entryNumber: number;
  baseAddr: number;
  limit: number;
  seg32bit: boolean;
  contentsH: boolean;
  contentsL: boolean;
  readExecOnly: boolean;
  limitInPages: boolean;
  segNotPresent: boolean;
  usable: boolean;
}
export const GDT_ENTRY_TLS_MIN = 12,
  GDT_ENTRY_TLS_ENTRIES = 3;
export function getThreadArea(pid: number, entry: number): UserDesc {
  const b = new Uint32Array(4);
  ptraceOk("GET_THREAD_AREA", 25, pid, entry, addr(b));
  const f = b[3];
  return {
    entryNumber: b[0],
    baseAddr: b[1],
    limit: b[2],
    seg32bit: !!(f & 1),
    contentsH: !!(f & 4),
    contentsL: !!(f & 2),
    readExecOnly: !!(f & 8),
    limitInPages: !!(f & 16),
    segNotPresent: !!(f & 32),
    usable: !!(f & 64),
  };
}
export function setThreadArea(pid: number, d: UserDesc) {
  const f =
    (d.seg32bit ? 1 : 0) |
    (d.contentsL ? 2 : 0) |
    (d.contentsH ? 4 : 0) |
    (d.readExecOnly ? 8 : 0) |
    (d.limitInPages ? 16 : 0) |
    (d.segNotPresent ? 32 : 0) |
    (d.usable ? 64 : 0);
  const b = new Uint32Array([d.entryNumber, d.baseAddr, d.limit, f]);
  ptraceOk("SET_THREAD_AREA", 26, pid, d.entryNumber, addr(b));
}

/** Pending siginfos (128 bytes each) of a thread's private queue or (shared=true) the process queue. */
export function peekSiginfo(pid: number, shared: boolean): Uint8Array[] {
  const out: Uint8Array[] = [];
  const args = new BigUint64Array(2); // u64 off, u32 flags, s32 nr
  const n = 32;
  const buf = new Uint8Array(128 * n);
  for (let off = 0; ; off += n) {
    const dv = new DataView(args.buffer);
    dv.setBigUint64(0, BigInt(off), true);
    dv.setUint32(8, shared ? 1 : 0, true);
    dv.setInt32(12, n, true);
    const r = ptrace(PTRACE.PEEKSIGINFO, pid, addr(args), addr(buf));
    if (r < 0) throw new SysError(`ptrace(PEEKSIGINFO) on ${pid}`, -r);
    for (let i = 0; i < r; i++) out.push(buf.slice(i * 128, (i + 1) * 128));
    if (r < n) break;
  }
  return out;
}

const st = new Int32Array(1);
export function wait4Raw(pid: number, flags = __WALL): { r: number; status: number } {
  const r = syscall(NR.wait4, pid, addr(st), flags, 0);
  return { r, status: st[0] };
}
const ts = new BigInt64Array(2);
/** This thread asleep for `us` microseconds (nanosleep; Bun.sleepSync takes whole milliseconds). */
export function sleepUs(us: number) {
  ts[0] = BigInt(Math.floor(us / 1e6));
  ts[1] = BigInt(Math.round((us % 1e6) * 1000));
  syscall(NR.nanosleep, addr(ts), 0);
}
export const W = {
  exited: (s: number) => (s & 0x7f) === 0,
  exitStatus: (s: number) => (s >> 8) & 0xff,
  signaled: (s: number) => (s & 0x7f) !== 0 && (s & 0xff) !== 0x7f,
  termSig: (s: number) => s & 0x7f,
  stopped: (s: number) => (s & 0xff) === 0x7f,
  stopSig: (s: number) => (s >> 8) & 0xff,
  event: (s: number) => (s >>> 16) & 0xff,
};
export function describeStatus(s: number): string {
  if (W.exited(s)) return `exited with ${W.exitStatus(s)}`;
  if (W.signaled(s)) return `killed by signal ${W.termSig(s)}`;
  if (W.stopped(s)) return `stopped by signal ${W.stopSig(s)}${W.event(s) ? ` event ${W.event(s)}` : ""}`;
  return `status 0x${s.toString(16)}`;
}
