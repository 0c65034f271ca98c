// execvp(3) for criu-bun itself: replace this process with a program, keeping its PID (restore
// --exec-cmd: the command becomes the parent of the restored tree, as criu's execvp does).
// Signal dispositions Bun set and the signal mask go back to the defaults first, so the program
// starts as it would from criu.
import { existsSync } from "./fs";
import { syscall, addr, cstr, keepAlive } from "./syscall";
import { NR } from "./nr";

/** Replace this process with argv[0] (looked up in PATH unless it holds a '/'). Returns only on
 * failure, with the errno of the last candidate tried. */
export function execvp(argv: string[], env: Record<string, string | undefined> = process.env): number {
  const strs: Uint8Array[] = [];
  const vec = (list: string[]) => {
    const v = new BigUint64Array(list.length + 1);
    list.forEach((s, i) => {
      const c = cstr(s);
      strs.push(c);
      v[i] = BigInt(addr(c));
    });
    return v;
  };
  const av = vec(argv);
  const ev = vec(
    Object.entries(env)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${v}`)
  );
  const cands = argv[0].includes("/")
    ? [argv[0]]
    : (env.PATH ?? "/usr/local/bin:/usr/bin:/bin")
        .split(":")
        .map((d) => `${d || "."}/${argv[0]}`)
        .filter((p) => existsSync(p));
  if (!cands.length) return 2; // ENOENT
  // The program starts with default dispositions (SIG_IGN would survive execve) and an empty
  // mask, as from criu. Bun's own threads must not kill it on the way: JavaScriptCore suspends
  // the main thread for its collector with SIGPWR, and a SIGPWR arriving once its disposition is
  // back to the default (or pending across execve) would kill the new program (exit 158). So:
  // a full collection first (no suspension due soon), every signal blocked while the
  // dispositions change, a SIGPWR already sent discarded (SIG_IGN drops pending ones; the
  // collector then waits for an answer that never comes, and sends no other), and the mask
  // emptied only right before each execve. If every execve fails, Bun's handlers and mask come
  // back, and a discarded SIGPWR is sent again so the collector gets its answer.
  Bun.gc(true);
  const full = new BigUint64Array([0xffffffffffffffffn]),
    none = new BigUint64Array(1),
    oldMask = new BigUint64Array(1);
  syscall(NR.rt_sigprocmask, 2 /* SIG_SETMASK */, addr(full), addr(oldMask), 8);
  const pending = new BigUint64Array(1);
  const old = new Map<number, BigUint64Array>();
  const dfl = new BigUint64Array(4),
    ign = new BigUint64Array([1n, 0n, 0n, 0n]); // {handler, flags, restorer, mask}
  for (let s = 1; s <= 64; s++) {
    if (s === 9 || s === 19 || s === 32 || s === 33) continue; // SIGKILL, SIGSTOP, glibc's own
    const o = new BigUint64Array(4);
    if (syscall(NR.rt_sigaction, s, 0, addr(o), 8) === 0) old.set(s, o);
    if (s === 30 /* SIGPWR */) {
      syscall(NR.rt_sigpending, addr(pending), 8);
      syscall(NR.rt_sigaction, s, addr(ign), 0, 8);
    }
    syscall(NR.rt_sigaction, s, addr(dfl), 0, 8);
  }
  let err = 2;
  for (const p of cands) {
    const path = cstr(p);
    syscall(NR.rt_sigprocmask, 2, addr(none), 0, 8);
    err = -syscall(NR.execve, addr(path), addr(av), addr(ev));
    syscall(NR.rt_sigprocmask, 2, addr(full), 0, 8);
    if (err !== 2 && err !== 13 && err !== 20) break; // ENOENT, EACCES, ENOTDIR: try the next
  }
  for (const [s, o] of old) syscall(NR.rt_sigaction, s, addr(o), 0, 8);
  syscall(NR.rt_sigprocmask, 2, addr(oldMask), 0, 8);
  if (pending[0] & (1n << 29n)) syscall(NR.tgkill, syscall(NR.getpid), syscall(NR.gettid), 30);
  keepAlive(strs);
  return err;
}
