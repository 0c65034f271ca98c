// Raw system calls: a 30-byte stub in an executable page, called through bun:ffi.
// It returns -errno directly, so no thread-local errno is involved.
import { CFunction, FFIType, ptr as ffiPtr, toArrayBuffer, type Pointer } from "bun:ffi";
import { libc } from "./libc";
import { SysError } from "./errno";
import { NR } from "./nr";

const PROT_READ = 1,
  PROT_WRITE = 2,
  PROT_EXEC = 4;
const MAP_PRIVATE = 2,
  MAP_ANONYMOUS = 0x20;

// A first argument below 0x10000 is a syscall number: mov rax,rdi; mov rdi,rsi; mov rsi,rdx; mov rdx,rcx;
// mov r10,r8; mov r8,r9; mov r9,[rsp+8]; syscall; ret. Above, it is the address of machine code of our
// own (callCode): jumped to with the second argument as its first, as a function (no second FFI
// trampoline to compile for it).
// biome-ignore format: machine code
const STUB = [
  0x48, 0x81, 0xff, 0x00, 0x00, 0x01, 0x00, // cmp rdi, 0x10000
  0x73, 0x1a, //                               jae code
  0x48, 0x89, 0xf8, 0x48, 0x89, 0xf7, 0x48, 0x89, 0xd6, 0x48, 0x89, 0xca, 0x4d, 0x89, 0xc2, 0x4d, 0x89, 0xc8, 0x4c,
  0x8b, 0x4c, 0x24, 0x08, 0x0f, 0x05, 0xc3,
  0x48, 0x89, 0xf8, //                         code: mov rax, rdi
  0x48, 0x89, 0xf7, //                         mov rdi, rsi
  0xff, 0xe0, //                               jmp rax
];

/**
 * A fresh page of our own machine code: each [offset, bytes] written into it, then the page made
 * read + execute (never writable and executable at once). Its address.
 */
export function codePage(parts: [number, ArrayLike<number>][], what: string): bigint {
  const p = libc.mmap(null, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) as Pointer;
  if (!p || (p as unknown as number) === -1) throw new Error(`criu-bun: cannot map ${what}`);
  const bytes = new Uint8Array(toArrayBuffer(p, 0, 4096));
  for (const [at, code] of parts) bytes.set(code, at);
  if (libc.mprotect(p, 4096, PROT_READ | PROT_EXEC) !== 0) throw new Error(`criu-bun: cannot make ${what} executable`);
  return BigInt(p as unknown as number);
}

// cpuid(leaf=edi, subleaf=esi, out=rdx -> u32[4] eax,ebx,ecx,edx)
const CPUID = [
  0x53, 0x49, 0x89, 0xd0, 0x89, 0xf8, 0x89, 0xf1, 0x0f, 0xa2, 0x41, 0x89, 0x00, 0x41, 0x89, 0x58, 0x04, 0x41, 0x89,
  0x48, 0x08, 0x41, 0x89, 0x50, 0x0c, 0x5b, 0xc3,
];
// killAndRelease(pid | pidfd << 32): kill(pid, SIGKILL), then, when it worked, process_mrelease(pidfd, 0);
// rax of the last call made
// biome-ignore format: machine code
const KILL_RELEASE = [
  0x49, 0x89, 0xf8, //                         mov r8, rdi
  0x49, 0xc1, 0xe8, 0x20, //                   shr r8, 32 (the pidfd)
  0x89, 0xff, //                               mov edi, edi (the pid)
  0xbe, 0x09, 0x00, 0x00, 0x00, //             mov esi, 9 (SIGKILL)
  0xb8, 0x3e, 0x00, 0x00, 0x00, //             mov eax, 62 (kill)
  0x0f, 0x05, //                               syscall
  0x48, 0x85, 0xc0, //                         test rax, rax
  0x75, 0x0c, //                               jnz done
  0x4c, 0x89, 0xc7, //                         mov rdi, r8
  0x31, 0xf6, //                               xor esi, esi
  0xb8, 0xc0, 0x01, 0x00, 0x00, //             mov eax, 448 (process_mrelease)
  0x0f, 0x05, //                               syscall
  0xc3, //                                     done: ret
];
const page = Number(
  codePage(
    [
      [0, STUB],
      [64, CPUID],
      [128, KILL_RELEASE],
    ],
    "the syscall stub"
  )
) as unknown as Pointer;

const { i64, i64_fast } = FFIType;
const raw = CFunction({ ptr: page, args: [i64, i64, i64, i64, i64, i64, i64], returns: i64_fast }) as unknown as (
  ...a: (number | bigint)[]
) => number | bigint;

const rawCpuid = CFunction({
  ptr: ((page as unknown as number) + 64) as unknown as Pointer,
  args: [FFIType.u32, FFIType.u32, FFIType.ptr],
  returns: FFIType.void,
}) as unknown as (a: number, b: number, p: number) => void;
/** The cpuid instruction: [eax, ebx, ecx, edx] for leaf/subleaf. */
export function cpuid(leaf: number, subleaf = 0): Uint32Array {
  const out = new Uint32Array(4);
  rawCpuid(leaf, subleaf, ffiPtr(out) as unknown as number);
  return out;
}

/**
 * The xstate components a new process may hold: ARCH_GET_XCOMP_PERM of this process (one that asked for no
 * extra permission, Linux 5.16); on older kernels the CPU's XCR0 set from CPUID 0xD.
 */
let xcompPerm: bigint | undefined;
export function xfeaturesPermitted(): bigint {
  if (xcompPerm === undefined) {
    const out = new BigUint64Array(1);
    if (syscall(NR.arch_prctl, 0x1022 /* ARCH_GET_XCOMP_PERM */, ffiPtr(out) as unknown as number) === 0)
      xcompPerm = out[0];
    else {
      const r = cpuid(0xd, 0);
      xcompPerm = (BigInt(r[3]) << 32n) | BigInt(r[0]);
    }
  }
  return xcompPerm;
}

/** The top of user space here: 4-level paging unless the kernel runs 5-level (la57 among cpuinfo's flags). */
let userTop: bigint | undefined;
export function userAddressTop(): bigint {
  if (userTop === undefined) {
    // sys/fs.ts on first use: it imports this module (the syscall stub)
    const { readFileSync } = require("./fs") as typeof import("./fs");
    userTop = / la57( |$)/m.test(readFileSync("/proc/cpuinfo", "latin1")) ? 0x00fffffffffff000n : 0x00007ffffffff000n;
  }
  return userTop;
}

type Arg = number | bigint;

/** A raw syscall. Returns the kernel's result: >= 0 on success, -errno on failure. */
export function syscall(
  nr: number,
  a = 0 as Arg,
  b = 0 as Arg,
  c = 0 as Arg,
  d = 0 as Arg,
  e = 0 as Arg,
  f = 0 as Arg
): number {
  return Number(raw(nr, a, b, c, d, e, f));
}

/** Call machine code of ours at `code` (an executable page criu-bun wrote) as fn(arg); its rax. */
export function callCode(code: bigint, arg: Arg): bigint {
  return BigInt(raw(code, arg, 0, 0, 0, 0, 0));
}

/**
 * SIGKILL to pid and, when it was sent, its memory freed from this thread too (process_mrelease
 * through pidfd, opened before): both calls in one piece of machine code, so that the second comes
 * a few instructions after the first. A killed process lets go of its memory before it frees it
 * (exit_mm), and process_mrelease finds nothing to help with after that (ESRCH); from JavaScript
 * the process woke on the other CPU and got there first in about half of the tries. The result of
 * the last call made: 0, or kill's or process_mrelease's -errno.
 */
export function killAndRelease(pid: number, pidfd: number): number {
  return Number(callCode(BigInt(page as unknown as number) + 128n, BigInt(pid) | (BigInt(pidfd) << 32n)));
}

/** A raw syscall that throws SysError on failure. */
export function sysOk(
  name: string,
  nr: number,
  a: Arg = 0,
  b: Arg = 0,
  c: Arg = 0,
  d: Arg = 0,
  e: Arg = 0,
  f: Arg = 0
): number {
  const r = syscall(nr, a, b, c, d, e, f);
  if (r < 0 && r > -4096) throw new SysError(name, -r);
  return r;
}

export { addr, keepAlive } from "./addr";

/** NUL-terminated C string in a fresh buffer (addr() holds it for the call that gets its address). */
export function cstr(s: string): Uint8Array {
  const b = Buffer.from(s + "\0", "utf8");
  return new Uint8Array(b.buffer, b.byteOffset, b.length);
}
