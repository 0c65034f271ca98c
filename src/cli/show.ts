// `criu-bun show FILE`: decode one image to crit's JSON.
// `criu-bun show --dir DIR [ps|mems|fds]`: summarize an images directory (like `crit x DIR ...`).
import { CriuError } from "../log";
import type { Opts } from "./options";
import { openImage, readImage, imageExists } from "../images/image";
import { toCritJson, stringifyCrit, formatIp } from "../images/json";
import type { pstree_entry } from "../images/gen/pstree_pb";
import type { core_entry, task_kobj_ids_entry } from "../images/gen/core_pb";
import type { mm_entry } from "../images/gen/mm_pb";
import type { fdinfo_entry, file_entry } from "../images/gen/files_pb";
import { fd_types } from "../images/gen/files_pb";
import type { fs_entry } from "../images/gen/inventory_pb";

export async function run(opts: Opts, args: string[]): Promise<number> {
  if (opts.dir) {
    process.stdout.write(summarizeDir(opts.dir, args.length ? args : ["ps", "mems", "fds"]));
    return 0;
  }
  if (args.length !== 1) throw new CriuError("show", "usage: criu-bun show FILE | criu-bun show --dir DIR [ps|mems|fds]");
  const img = openImage(args[0]);
  process.stdout.write(stringifyCrit(toCritJson(img)) + "\n");
  return 0;
}

const pad = (s: string | number, n: number) => String(s).padStart(n);

class Dir {
  files?: Map<number, file_entry>;
  constructor(public dir: string) {}
  one<T>(file: string, kind: string): T | undefined {
    if (!imageExists(this.dir, file)) return undefined;
    return readImage(this.dir, file, kind)[0] as T | undefined;
  }
  fileEntry(id: number): file_entry | undefined {
    if (!this.files) {
      this.files = new Map();
      if (imageExists(this.dir, "files.img"))
        for (const f of readImage<file_entry>(this.dir, "files.img", "FILES")) this.files.set(f.id, f);
    }
    return this.files.get(id);
  }
  describe(type: fd_types, id: number): string {
    const f = this.fileEntry(id);
    if (type === fd_types.REG) return f?.reg?.name ?? "unknown path";
    if (type === fd_types.PIPE) return f?.pipe ? `pipe[${f.pipe.pipeId}]` : "pipe[?]";
    if (type === fd_types.FIFO) return f?.fifo ? `fifo[${f.fifo.pipeId}]` : "fifo[?]";
    if (type === fd_types.UNIXSK) {
      const u = f?.usk;
      if (!u) return "unix[?]";
      const name = u.name.length ? " " + Buffer.from(u.name).toString("latin1").replace(/\0/g, "@") : "";
      return `unix[${u.ino} (${u.peer})${name}]`;
    }
    if (type === fd_types.INETSK) {
      const s = f?.isk;
      if (!s) return "inet[?]";
      const proto = s.proto === 6 ? "tcp" : s.proto === 17 ? "udp" : `proto${s.proto}`;
      const v6 = s.family === 10 ? "6" : "";
      const src = s.srcAddr.length ? formatIp(s.srcAddr) : "*";
      const dst = s.dstAddr.length ? formatIp(s.dstAddr) : "*";
      return `${proto}${v6}[${s.ino}] ${src}:${s.srcPort} -> ${dst}:${s.dstPort}`;
    }
    return `${fd_types[type] ?? type}.${id}`;
  }
}

function summarizeDir(dir: string, what: string[]): string {
  const d = new Dir(dir);
  if (!imageExists(dir, "pstree.img")) throw new CriuError("show", `${dir}: no pstree.img (not an images directory?)`);
  const tree = readImage<pstree_entry>(dir, "pstree.img", "PSTREE");
  const out: string[] = [];
  for (const w of what) {
    if (w === "ps") {
      out.push(`${pad("PID", 7)}${pad("PPID", 7)}${pad("PGID", 7)}${pad("SID", 7)}   COMM`);
      const kids = new Map<number, pstree_entry[]>();
      const pids = new Set(tree.map((p) => p.pid));
      for (const p of tree) {
        const parent = pids.has(p.ppid) ? p.ppid : 0;
        if (!kids.has(parent)) kids.set(parent, []);
        kids.get(parent)!.push(p);
      }
      const walk = (p: pstree_entry, depth: number) => {
        const core = d.one<core_entry>(`core-${p.pid}.img`, "CORE");
        const comm = core?.tc?.comm ?? "?";
        const thr = p.threads.length > 1 ? ` (${p.threads.length} threads)` : "";
        out.push(`${pad(p.pid, 7)}${pad(p.ppid, 7)}${pad(p.pgid, 7)}${pad(p.sid, 7)}   ${" ".repeat(4 * depth)}${comm}${thr}`);
        for (const k of kids.get(p.pid) ?? []) walk(k, depth + 1);
      };
      for (const r of kids.get(0) ?? []) walk(r, 0);
    } else if (w === "mems") {
      for (const p of tree) {
        const mm = d.one<mm_entry>(`mm-${p.pid}.img`, "MM");
        out.push(`${p.pid}`);
        if (!mm) { out.push("\t(no mm image)"); continue; }
        out.push(`\t${"exe".padEnd(36)}    ${d.describe(fd_types.REG, mm.exeFileId)}`);
        for (const v of mm.vmas) {
          const st = v.status;
          let fn = "";
          if (st & (1 << 10)) fn = ` ipc[${v.shmid.toString(16)}]`;
          else if (st & (1 << 8)) fn = ` shmem[${v.shmid.toString(16)}]`;
          else if (st & (1 << 11)) fn = ` packet[${v.shmid.toString(16)}]`;
          else if (st & ((1 << 6) | (1 << 7))) {
            fn = " " + d.describe(fd_types.REG, Number(v.shmid));
            if (v.pgoff) fn += ` + 0x${v.pgoff.toString(16)}`;
            if (st & (1 << 7)) fn += " (s)";
          } else if (st & (1 << 1)) fn = " [stack]";
          else if (st & (1 << 2)) fn = " [vsyscall]";
          else if (st & (1 << 3)) fn = " [vdso]";
          else if (st & (1 << 12)) fn = " [vvar]";
          else if (st & (1 << 5)) fn = " [heap]";
          else if (v.flags & 0x100) fn = " [stack?]";
          if (!(st & 1)) fn += " *";
          const prot = (v.prot & 1 ? "r" : "-") + (v.prot & 2 ? "w" : "-") + (v.prot & 4 ? "x" : "-");
          const range = `${v.start.toString(16).padStart(8, "0")}-${v.end.toString(16).padStart(8, "0")}`;
          out.push(`\t${range.padEnd(36)}${prot}${fn}`);
        }
      }
    } else if (w === "fds") {
      for (const p of tree) {
        out.push(`${p.pid}`);
        const ids = d.one<task_kobj_ids_entry>(`ids-${p.pid}.img`, "IDS");
        const core = ids ? undefined : d.one<core_entry>(`core-${p.pid}.img`, "CORE");
        const filesId = ids?.filesId ?? core?.ids?.filesId;
        if (filesId !== undefined && imageExists(dir, `fdinfo-${filesId}.img`)) {
          for (const fd of readImage<fdinfo_entry>(dir, `fdinfo-${filesId}.img`, "FDINFO"))
            out.push(`\t${pad(fd.fd, 7)}: ${d.describe(fd.type, fd.id)}`);
        } else out.push("\t(no fdinfo image)");
        const fs = d.one<fs_entry>(`fs-${p.pid}.img`, "FS");
        if (fs) {
          out.push(`\t${pad("cwd", 7)}: ${d.describe(fd_types.REG, fs.cwdId)}`);
          out.push(`\t${pad("root", 7)}: ${d.describe(fd_types.REG, fs.rootId)}`);
        }
      }
    } else throw new CriuError("show", `unknown summary '${w}' (use ps, mems, fds)`);
  }
  return out.join("\n") + "\n";
}
