// The ELF build-id of a regular file, as CRIU 4 keeps it in reg_file_entry.build_id: the
// descriptor of the first NT_GNU_BUILD_ID note found in a PT_NOTE segment within the file's first
// MiB, zero-padded to whole 32-bit words (little-endian). Restore compares it with the file found
// at the path, so another binary of the same size is not taken for the dumped one.
import { closeSync, openSync, readSync, constants as FS } from "../sys/fs";

const MAP = 1 << 20,
  PT_NOTE = 4,
  NT_GNU_BUILD_ID = 3;

/** The build-id words of path (an ELF file), or undefined (not ELF, no note, unreadable). */
export function buildIdOf(path: string): number[] | undefined {
  let fd: number;
  try {
    fd = openSync(path, FS.O_RDONLY | FS.O_NONBLOCK | 0o2000000 /* O_CLOEXEC: not in fs.constants */);
  } catch {
    return undefined;
  }
  try {
    const read = (off: number, len: number): Uint8Array | undefined => {
      if (off < 0 || len <= 0 || off + len > MAP) return undefined;
      const b = new Uint8Array(len);
      let got = 0;
      while (got < len) {
        const n = readSync(fd, b, got, len - got, off + got);
        if (n <= 0) break;
        got += n;
      }
      return got === len ? b : undefined;
    };
    const eh = read(0, 64);
    if (!eh || eh[0] !== 0x7f || eh[1] !== 0x45 || eh[2] !== 0x4c || eh[3] !== 0x46) return undefined;
    const is64 = eh[4] === 2;
    if (eh[4] !== 1 && !is64) return undefined;
    if (eh[5] !== 1) return undefined; // big-endian ELF: not this machine's
    const dv = new DataView(eh.buffer);
    const phoff = is64 ? Number(dv.getBigUint64(32, true)) : dv.getUint32(28, true);
    const phentsize = dv.getUint16(is64 ? 54 : 42, true),
      phnum = dv.getUint16(is64 ? 56 : 44, true);
    if (!phnum || phentsize < (is64 ? 56 : 32)) return undefined;
    const ph = read(phoff, phentsize * phnum);
    if (!ph) return undefined;
    const pv = new DataView(ph.buffer);
    for (let i = 0; i < phnum; i++) {
      const o = i * phentsize;
      if (pv.getUint32(o, true) !== PT_NOTE) continue;
      const off = is64 ? Number(pv.getBigUint64(o + 8, true)) : pv.getUint32(o + 4, true);
      const size = is64 ? Number(pv.getBigUint64(o + 32, true)) : pv.getUint32(o + 16, true);
      const notes = read(off, Math.min(size, MAP - off));
      if (!notes) continue;
      const nv = new DataView(notes.buffer);
      for (let p = 0; p + 12 <= notes.length; ) {
        const namesz = nv.getUint32(p, true),
          descsz = nv.getUint32(p + 4, true),
          type = nv.getUint32(p + 8, true);
        const desc = p + 12 + ((namesz + 3) & ~3);
        if (type === NT_GNU_BUILD_ID) {
          if (descsz === 0 || descsz > 512 || desc + descsz > notes.length) return undefined;
          const words = new Uint8Array((descsz + 3) & ~3);
          words.set(notes.subarray(desc, desc + descsz));
          const wv = new DataView(words.buffer);
          return Array.from({ length: words.length / 4 }, (_, k) => wv.getUint32(k * 4, true));
        }
        p = desc + ((descsz + 3) & ~3);
      }
    }
    return undefined;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

export const buildIdHex = (w: number[]) => Buffer.from(new Uint32Array(w).buffer).toString("hex");
