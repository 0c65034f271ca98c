// execvp(3) for criu-bun itself: replace this process with a program, keeping its PID (restore
// --exec-cmd: the command becomes the parent of the restored tree, as criu's execvp does).
// Signal dispositions Bun set and the signal mask go back to the defaults first, so the program
// starts as it would from criu.
import { existsSync } from "node:fs";
import { syscall, addr, cstr } from "./syscall";
import { NR } from "./nr";

/** Replace this process with argv[0] (looked up in PATH unless it holds a '/'). Returns only on
 * failure, with the errno of the last candidate tried. */
export function execvp(argv: string[], env: Record<string, string | undefined> = process.env): number {
  const strs: Uint8Array[] = [];
  const vec = (list: string[]) => {
    const v = new BigUint64Array(list.length + 1);
    list.forEach((s, i) => { const c = cstr(s); strs.push(c); v[i] = BigInt(addr(c)); });
    return v;
  };
  const av = vec(argv);
  const ev = vec(Object.entries(env).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`));
  const cands = argv[0].includes("/") ? [argv[0]]
    : (env.PATH ?? "/usr/local/bin:/usr/bin:/bin").split(":").map((d) => `${d || "."}/${argv[0]}`).filter((p) => existsSync(p));
  if (!cands.length) return 2; // ENOENT
  // default dispositions (SIG_IGN survives execve) and an empty mask
  const sa = new BigUint64Array(4); // handler SIG_DFL, flags 0, restorer 0, mask 0
  for (let s = 1; s <= 64; s++) if (s !== 9 && s !== 19 && s !== 32 && s !== 33) syscall(NR.rt_sigaction, s, addr(sa), 0, 8);
  const none = new BigUint64Array(1);
  syscall(NR.rt_sigprocmask, 2 /* SIG_SETMASK */, addr(none), 0, 8);
  let err = 2;
  for (const p of cands) {
    const path = cstr(p);
    err = -syscall(NR.execve, addr(path), addr(av), addr(ev));
    if (err !== 2 && err !== 13 && err !== 20) break; // ENOENT, EACCES, ENOTDIR: try the next
  }
  void strs;
  return err;
}
