// A small /proc file's text by raw system calls, without node:fs (sys/warm.ts reads /proc/self/maps
// before node:fs is loaded; proc.ts reads fdinfo files with it).
import { syscall, addr, cstr } from "./syscall";
import { NR } from "./nr";
import { errnoText, errnoName } from "./errno";

// one buffer for the small /proc files read once per fd (fdinfo): open, read (a short read is
// the end), close: three system calls and no Buffer per file (readFileSync makes five and a copy)
let small = new Uint8Array(16384);
/** A small /proc file's text (latin1); throws an Error with code (ENOENT ...) as readFileSync does.
 *  (dirfd, name: opened relative to dirfd by that NUL-terminated name, path only for errors) */
export function readProcText(path: string, dirfd = -100, name?: Uint8Array): string {
  const fd = syscall(NR.openat, dirfd, addr(name ?? cstr(path)), 0o2000000 /* O_RDONLY|O_CLOEXEC */, 0);
  if (fd < 0) throw Object.assign(new Error(`${path}: ${errnoText(-fd)}`), { code: errnoName(-fd) });
  let n = 0;
  try {
    for (;;) {
      if (n === small.length) {
        const b = new Uint8Array(small.length * 2);
        b.set(small);
        small = b;
      }
      const r = syscall(NR.read, fd, addr(small, n), small.length - n);
      if (r === -4) continue;
      if (r < 0) throw Object.assign(new Error(`${path}: ${errnoText(-r)}`), { code: errnoName(-r) });
      if (r === 0) break;
      n += r;
      // a short read is the end: a seq_file fills the buffer as far as its text goes
      if (n < small.length) break;
    }
  } finally {
    syscall(NR.close, fd);
  }
  return Buffer.from(small.buffer, small.byteOffset, n).toString("latin1");
}
