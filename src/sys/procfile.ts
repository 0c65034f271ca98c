// A small /proc file's text by raw system calls into one reused buffer, and the parser of maps
// lines (sys/warm.ts reads /proc/self/maps at start, before sys/fs.ts loads; proc.ts reads fdinfo
// files and parses maps and smaps with them).
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

export interface Vma {
  start: bigint;
  end: bigint;
  prot: number; // PROT_READ|WRITE|EXEC
  shared: boolean; // 's' vs 'p'
  pgoff: bigint;
  dev: string;
  inode: number;
  path: string; // "" for anonymous
  vmflags: string[]; // from smaps
}

export const MAPS_RE =
  /^([0-9a-f]+)-([0-9a-f]+) ([r-])([w-])([x-])([sp]) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+)\s*(.*)$/;

export function parseMaps(text: string): Vma[] {
  const out: Vma[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const m = MAPS_RE.exec(line);
    if (!m) continue;
    out.push(mapsEntry(m));
  }
  return out;
}
export function mapsEntry(m: RegExpExecArray): Vma {
  return {
    start: BigInt("0x" + m[1]),
    end: BigInt("0x" + m[2]),
    prot: (m[3] === "r" ? 1 : 0) | (m[4] === "w" ? 2 : 0) | (m[5] === "x" ? 4 : 0),
    shared: m[6] === "s",
    pgoff: BigInt("0x" + m[7]),
    dev: m[8],
    inode: Number(m[9]),
    path: m[10],
    vmflags: [],
  };
}
