// Start processes with libc posix_spawn (Bun never reaps or watches them, unlike Bun.spawn).
import { ptr } from "bun:ffi";
import { libc } from "./libc";
import { callCode, codePage, cstr, keepAlive } from "./syscall";
import { SysError } from "./errno";
import { CLONE } from "./flags";

const POSIX_SPAWN = { RESETIDS: 1, SETPGROUP: 2, SETSIGDEF: 4, SETSIGMASK: 8, SETSID: 0x80 } as const;

interface SpawnOpts {
  env?: Record<string, string | undefined>;
  /** fd in the child -> fd in this process to dup2 there */
  fds?: Record<number, number>;
  setsid?: boolean;
  pgroup?: number;
  /** reset all signal dispositions to default and unblock everything (Bun ignores SIGPIPE etc.) */
  cleanSignals?: boolean;
}

export function spawn(path: string, argv: string[], opts: SpawnOpts = {}): number {
  const keep: Uint8Array[] = [];
  const vec = (items: string[]) => {
    const a = new BigUint64Array(items.length + 1);
    items.forEach((s, i) => {
      const c = cstr(s);
      keep.push(c);
      a[i] = BigInt(ptr(c));
    });
    return a;
  };
  const argvA = vec(argv);
  const envObj = opts.env ?? process.env;
  const envA = vec(
    Object.entries(envObj)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${v}`)
  );
  const fa = new Uint8Array(256),
    attr = new Uint8Array(512);
  libc.posix_spawn_file_actions_init(fa);
  libc.posix_spawnattr_init(attr);
  let flags = 0;
  for (const [child, parent] of Object.entries(opts.fds ?? {})) {
    libc.posix_spawn_file_actions_adddup2(fa, parent, Number(child));
  }
  if (opts.setsid) flags |= POSIX_SPAWN.SETSID;
  if (opts.pgroup !== undefined) {
    flags |= POSIX_SPAWN.SETPGROUP;
    libc.posix_spawnattr_setpgroup(attr, opts.pgroup);
  }
  if (opts.cleanSignals !== false) {
    const all = new BigUint64Array(16).fill(0xffffffffffffffffn); // sigset_t is 128 bytes in glibc
    const none = new BigUint64Array(16);
    libc.posix_spawnattr_setsigdefault(attr, all);
    libc.posix_spawnattr_setsigmask(attr, none);
    flags |= POSIX_SPAWN.SETSIGDEF | POSIX_SPAWN.SETSIGMASK;
  }
  libc.posix_spawnattr_setflags(attr, flags);
  const pidBuf = new Int32Array(1);
  const pathC = cstr(path);
  const r = libc.posix_spawn(pidBuf, pathC, fa, attr, argvA, envA);
  libc.posix_spawn_file_actions_destroy(fa);
  libc.posix_spawnattr_destroy(attr);
  keepAlive(keep);
  if (r !== 0) throw new SysError(`posix_spawn(${path})`, r);
  return pidBuf[0];
}

// ---------------------------------------------------------------------------------------------
// A child of our parent (CLONE_PARENT), as criu's rst_sibling needs: the restored tree's root is
// made from a puppet that must be the caller's child, not ours. posix_spawn cannot ask for
// CLONE_PARENT, so a small stub does what it does: block every signal, clone(CLONE_VM|CLONE_VFORK|
// CLONE_PARENT) (we wait until the child has exec'd; it runs only the stub's next instructions,
// no library code, no stack), execve in the child, restore the signal mask in the parent.
// Param block (u64 each): 0 flags, 8 child stack, 16 path, 24 argv, 32 envp, 40 &all, 48 &old, 56 result.
// biome-ignore format: machine code, one instruction a line
const SIBLING_STUB = [
  0x53,                                     // push rbx
  0x48, 0x89, 0xfb,                         // mov rbx, rdi
  0xb8, 14, 0, 0, 0,                        // mov eax, rt_sigprocmask
  0xbf, 2, 0, 0, 0,                         // mov edi, SIG_SETMASK
  0x48, 0x8b, 0x73, 0x28,                   // mov rsi, [rbx+40]
  0x48, 0x8b, 0x53, 0x30,                   // mov rdx, [rbx+48]
  0x41, 0xba, 8, 0, 0, 0,                   // mov r10d, 8
  0x0f, 0x05,                               // syscall
  0xb8, 56, 0, 0, 0,                        // mov eax, clone
  0x48, 0x8b, 0x3b,                         // mov rdi, [rbx]
  0x48, 0x8b, 0x73, 0x08,                   // mov rsi, [rbx+8]
  0x31, 0xd2,                               // xor edx, edx
  0x45, 0x31, 0xd2,                         // xor r10d, r10d
  0x45, 0x31, 0xc0,                         // xor r8d, r8d
  0x0f, 0x05,                               // syscall
  0x48, 0x85, 0xc0,                         // test rax, rax
  0x75, 31,                                 // jnz parent
  0xb8, 59, 0, 0, 0,                        // mov eax, execve
  0x48, 0x8b, 0x7b, 0x10,                   // mov rdi, [rbx+16]
  0x48, 0x8b, 0x73, 0x18,                   // mov rsi, [rbx+24]
  0x48, 0x8b, 0x53, 0x20,                   // mov rdx, [rbx+32]
  0x0f, 0x05,                               // syscall
  0xb8, 231, 0, 0, 0,                       // mov eax, exit_group
  0xbf, 127, 0, 0, 0,                       // mov edi, 127
  0x0f, 0x05,                               // syscall
  // parent:
  0x48, 0x89, 0x43, 0x38,                   // mov [rbx+56], rax
  0xb8, 14, 0, 0, 0,                        // mov eax, rt_sigprocmask
  0xbf, 2, 0, 0, 0,                         // mov edi, SIG_SETMASK
  0x48, 0x8b, 0x73, 0x30,                   // mov rsi, [rbx+48]
  0x31, 0xd2,                               // xor edx, edx
  0x41, 0xba, 8, 0, 0, 0,                   // mov r10d, 8
  0x0f, 0x05,                               // syscall
  0x48, 0x8b, 0x43, 0x38,                   // mov rax, [rbx+56]
  0x5b,                                     // pop rbx
  0xc3,                                     // ret
];

let siblingAt: bigint | undefined;

/** Start path as a child of our own parent (a sibling); returns its pid. It inherits every fd of
 *  ours that is not close-on-exec (the caller closes them in it), our cgroups and namespaces. */
export function spawnSibling(path: string, argv: string[]): number {
  siblingAt ??= codePage([[0, SIBLING_STUB]], "the sibling stub");
  const keep: Uint8Array[] = [];
  const c = (s: string) => {
    const b = cstr(s);
    keep.push(b);
    return BigInt(ptr(b));
  };
  const argvA = new BigUint64Array(argv.length + 1);
  argv.forEach((s, i) => {
    argvA[i] = c(s);
  });
  const envA = new BigUint64Array(1);
  const stack = new BigUint64Array(2048); // never used by the child's few instructions; given anyway
  const all = new BigUint64Array([0xffffffffffffffffn]),
    old = new BigUint64Array(1);
  const p = new BigUint64Array(8);
  const SIGCHLD = 17;
  p[0] = BigInt(CLONE.VM | CLONE.VFORK | CLONE.PARENT | SIGCHLD);
  p[1] = (BigInt(ptr(stack)) + BigInt(stack.byteLength)) & ~15n;
  p[2] = c(path);
  p[3] = BigInt(ptr(argvA));
  p[4] = BigInt(ptr(envA));
  p[5] = BigInt(ptr(all));
  p[6] = BigInt(ptr(old));
  const r = Number(BigInt.asIntN(64, callCode(siblingAt, BigInt(ptr(p)))));
  keepAlive(keep, stack, argvA, envA, all, old, p);
  if (r < 0) throw new SysError("clone(CLONE_PARENT)", -r);
  return r;
}
