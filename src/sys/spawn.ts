// Start processes with libc posix_spawn (Bun never reaps or watches them, unlike Bun.spawn).
import { ptr } from "bun:ffi";
import { libc } from "./libc";
import { cstr } from "./syscall";
import { SysError } from "./errno";

export const POSIX_SPAWN = { RESETIDS: 1, SETPGROUP: 2, SETSIGDEF: 4, SETSIGMASK: 8, SETSID: 0x80 } as const;

export interface SpawnOpts {
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
    items.forEach((s, i) => { const c = cstr(s); keep.push(c); a[i] = BigInt(ptr(c)); });
    return a;
  };
  const argvA = vec(argv);
  const envObj = opts.env ?? process.env;
  const envA = vec(Object.entries(envObj).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`));
  const fa = new Uint8Array(256), attr = new Uint8Array(512);
  libc.posix_spawn_file_actions_init(fa);
  libc.posix_spawnattr_init(attr);
  let flags = 0;
  for (const [child, parent] of Object.entries(opts.fds ?? {})) {
    libc.posix_spawn_file_actions_adddup2(fa, parent, Number(child));
  }
  if (opts.setsid) flags |= POSIX_SPAWN.SETSID;
  if (opts.pgroup !== undefined) { flags |= POSIX_SPAWN.SETPGROUP; libc.posix_spawnattr_setpgroup(attr, opts.pgroup); }
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
  void keep;
  if (r !== 0) throw new SysError(`posix_spawn(${path})`, r);
  return pidBuf[0];
}
