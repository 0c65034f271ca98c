// `criu-bun show`: crit, CRIU's image tool, in the same executable, with crit's verbs:
//   show decode [-i IN] [-o OUT] [--pretty] [--nopl]   image -> JSON (stdin/stdout by default)
//   show encode [-i IN] [-o OUT]                       JSON -> image, byte for byte what was decoded
//   show info [-i IN]                                  {"magic": ..., "count": N}
//   show show IN                                       decode --pretty
//   show x DIR ps|fds|mems|rss                         summaries of an images directory
//   show FILE, show --dir DIR [ps|mems|fds|rss]        criu-bun's older spellings
// Everything after the word `show` belongs to show (so -o is the output file here, not the log).
import { closeSync, constants, openSync, readFileSync, writeSync } from "../sys/fs";
import { CriuError, errorMessage } from "../log";
import type { Opts } from "./options";
import { readImage, imageExists, decodeImage, encodeImage, pagemapNrPages } from "../images/image";
import type { MessageKind } from "../images/magic";
import {
  toCritJson,
  stringifyCrit,
  stringifyCritCompact,
  parseCritJson,
  fromCritJson,
  formatIp,
  type CritJson,
} from "../images/json";
import {
  fd_types,
  type pstree_entry,
  type core_entry,
  type task_kobj_ids_entry,
  type mm_entry,
  type file_entry,
  type fs_entry,
  type pagemap_entry,
} from "../images/schemas";
import { errnoText, errorCode } from "../sys/errno";

const USAGE =
  "usage: criu-bun show decode|encode|info [-i IN] [-o OUT] [--pretty] [--nopl] | show show IN | show x DIR ps|fds|mems|rss";

interface ShowArgs {
  verb?: string;
  rest: string[];
  input?: string;
  output?: string;
  pretty: boolean;
  nopl: boolean;
  dir?: string;
}

function parseShowArgs(args: string[]): ShowArgs {
  const a: ShowArgs = { rest: [], pretty: false, nopl: false };
  for (let i = 0; i < args.length; i++) {
    const x = args[i];
    const val = (name: string) => {
      const eq = x.indexOf("=");
      if (x.startsWith("--") && eq > 0) return x.slice(eq + 1);
      if (i + 1 >= args.length) throw new CriuError("show", `${name} needs a value (${USAGE})`);
      return args[++i];
    };
    if (x === "-i" || x === "--in" || x.startsWith("--in=")) a.input = val("-i");
    else if (x === "-o" || x === "--out" || x.startsWith("--out=")) a.output = val("-o");
    else if (x === "--pretty" || x === "-p") a.pretty = true;
    else if (x === "--nopl") a.nopl = true;
    else if (x === "--dir" || x.startsWith("--dir=")) a.dir = val("--dir");
    else if (x.startsWith("-") && x !== "-") throw new CriuError("show", `unknown option '${x}' (${USAGE})`);
    else if (a.verb === undefined) a.verb = x;
    else a.rest.push(x);
  }
  return a;
}

function readInput(path: string | undefined): Uint8Array {
  try {
    return path === undefined || path === "-" ? readFileSync(0) : readFileSync(path);
  } catch (e) {
    throw new CriuError("show", `cannot read ${path ?? "stdin"}: ${errnoText(e)}`);
  }
}

/** Write the result: stdout, or a new file (0600, never through a symlink). */
function writeOutput(path: string | undefined, data: Uint8Array | string) {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const all = (fd: number) => {
    // a pipe takes what fits: write until everything is out
    for (let off = 0; off < bytes.length; ) {
      try {
        off += writeSync(fd, bytes, off, bytes.length - off);
      } catch (e) {
        if (errorCode(e) !== "EAGAIN") throw new CriuError("show", `cannot write ${path ?? "stdout"}: ${errnoText(e)}`);
        Bun.sleepSync(1);
      }
    }
  };
  if (path === undefined || path === "-") {
    all(1);
    return;
  }
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o600);
  } catch (e) {
    throw new CriuError("show", `cannot write ${path}: ${errnoText(e)}`);
  }
  try {
    all(fd);
  } finally {
    closeSync(fd);
  }
}

function decodeText(buf: Uint8Array, name: string, pretty: boolean, nopl: boolean): string {
  const j = toCritJson(decodeImage(buf, name), pretty);
  if (nopl) for (const e of j.entries) delete e.extra;
  return (pretty ? stringifyCrit(j) : stringifyCritCompact(j)) + "\n";
}

export async function run(opts: Opts, args: string[]): Promise<number> {
  const a = parseShowArgs(args);
  const dir = a.dir ?? (opts.dir !== undefined ? String(opts.dir) : undefined);
  if (dir !== undefined) {
    const what = [a.verb, ...a.rest].filter((x): x is string => !!x);
    writeOutput(a.output, summarizeDir(dir, what.length ? what : ["ps", "mems", "fds"]));
    return 0;
  }
  switch (a.verb) {
    case "decode":
      writeOutput(a.output, decodeText(readInput(a.input), a.input ?? "<stdin>", a.pretty, a.nopl));
      return 0;
    case "show": {
      const f = a.input ?? a.rest[0];
      if (f === undefined) throw new CriuError("show", `show show needs an image (${USAGE})`);
      writeOutput(a.output, decodeText(readInput(f), f, true, a.nopl));
      return 0;
    }
    case "encode": {
      const text = new TextDecoder().decode(readInput(a.input));
      let j: CritJson;
      try {
        j = parseCritJson(text);
      } catch (e) {
        throw new CriuError("show", `${a.input ?? "stdin"}: not JSON: ${errorMessage(e)}`);
      }
      const { kind, items } = fromCritJson(j);
      writeOutput(a.output, encodeImage(kind, items));
      return 0;
    }
    case "info": {
      const img = decodeImage(readInput(a.input ?? a.rest[0]), a.input ?? a.rest[0] ?? "<stdin>");
      // crit counts a pagemap's runs, not its head
      const count = img.entries.length - (img.kind === "PAGEMAP" && img.entries.length ? 1 : 0);
      writeOutput(a.output, stringifyCrit({ magic: img.kind, count }) + "\n");
      return 0;
    }
    case "x": {
      const [d, ...what] = a.rest;
      if (!d || !what.length)
        throw new CriuError("show", `show x needs a directory and ps, fds, mems or rss (${USAGE})`);
      writeOutput(a.output, summarizeDir(d, what, true));
      return 0;
    }
    case undefined:
      throw new CriuError("show", USAGE);
    default:
      // criu-bun's first spelling: show FILE (pretty JSON)
      if (a.rest.length) throw new CriuError("show", USAGE);
      writeOutput(a.output, decodeText(readInput(a.verb), a.verb, true, a.nopl));
      return 0;
  }
}

const pad = (s: string | number, n: number) => String(s).padStart(n);

class Dir {
  files?: Map<number, file_entry>;
  constructor(public dir: string) {}
  one<T>(file: string, kind: string): T | undefined {
    if (!imageExists(this.dir, file)) return undefined;
    return readImage(this.dir, file, kind as MessageKind)[0] as T | undefined;
  }
  fileEntry(id: number): file_entry | undefined {
    if (!this.files) {
      this.files = new Map();
      if (imageExists(this.dir, "files.img"))
        for (const f of readImage(this.dir, "files.img", "FILES")) this.files.set(f.id, f);
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

/** `crit`: exactly crit's text (show x); else criu-bun's richer one (show --dir: PPID, threads, [heap], [vvar]). */
function summarizeDir(dir: string, what: string[], crit = false): string {
  const d = new Dir(dir);
  if (!imageExists(dir, "pstree.img")) throw new CriuError("show", `${dir}: no pstree.img (not an images directory?)`);
  const tree = readImage(dir, "pstree.img", "PSTREE");
  const out: string[] = [];
  for (const w of what) {
    if (w === "ps") {
      out.push(`${pad("PID", 7)}${crit ? "" : pad("PPID", 7)}${pad("PGID", 7)}${pad("SID", 7)}   COMM`);
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
        const thr = p.threads.length > 1 && !crit ? ` (${p.threads.length} threads)` : "";
        out.push(
          `${pad(p.pid, 7)}${crit ? "" : pad(p.ppid, 7)}${pad(p.pgid, 7)}${pad(p.sid, 7)}   ${" ".repeat(4 * depth)}${comm}${thr}`
        );
        for (const k of kids.get(p.pid) ?? []) walk(k, depth + 1);
      };
      for (const r of kids.get(0) ?? []) walk(r, 0);
    } else if (w === "mems") {
      for (const p of tree) {
        const mm = d.one<mm_entry>(`mm-${p.pid}.img`, "MM");
        out.push(`${p.pid}`);
        if (!mm) {
          out.push("\t(no mm image)");
          continue;
        }
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
          else if (st & (1 << 12) && !crit) fn = " [vvar]";
          else if (st & (1 << 5) && !crit) fn = " [heap]";
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
          for (const fd of readImage(dir, `fdinfo-${filesId}.img`, "FDINFO"))
            out.push(`\t${pad(fd.fd, 7)}: ${d.describe(fd.type, fd.id)}`);
        } else out.push("\t(no fdinfo image)");
        const fs = d.one<fs_entry>(`fs-${p.pid}.img`, "FS");
        if (fs) {
          out.push(`\t${pad("cwd", 7)}: ${d.describe(fd_types.REG, fs.cwdId)}`);
          out.push(`\t${pad("root", 7)}: ${d.describe(fd_types.REG, fs.rootId)}`);
        }
      }
    } else if (w === "rss") {
      // crit x DIR rss: each run of pages in the dump beside the VMAs it falls in
      for (const p of tree) {
        out.push(`${p.pid}`);
        const mm = d.one<mm_entry>(`mm-${p.pid}.img`, "MM");
        if (!mm || !imageExists(dir, `pagemap-${p.pid}.img`)) {
          out.push("\t(no mm or pagemap image)");
          continue;
        }
        const vmas = mm.vmas;
        const pms = readImage(dir, `pagemap-${p.pid}.img`, "PAGEMAP").slice(1) as pagemap_entry[];
        let vi = 0,
          prev = -1;
        for (const pm of pms) {
          const va = BigInt(pm.vaddr),
            nr = pagemapNrPages(pm);
          const pstr = `\t${va.toString(16)} / ${String(nr).padEnd(8)}`;
          while (vi < vmas.length && BigInt(vmas[vi].end) <= va) vi++;
          const end = va + (BigInt(nr) << 12n);
          let vstr = "";
          while (vi < vmas.length && BigInt(vmas[vi].start) < end) {
            const v = vmas[vi];
            if (vi === prev) vstr += " ~";
            else {
              vstr += ` ${BigInt(v.start).toString(16).padStart(8, "0")} / ${String((BigInt(v.end) - BigInt(v.start)) >> 12n).padEnd(8)}`;
              if (v.status & ((1 << 6) | (1 << 7))) vstr += " " + d.describe(fd_types.REG, Number(v.shmid));
              prev = vi;
            }
            vstr += "\n\t" + " ".repeat(23);
            vi++;
          }
          vi = Math.max(0, vi - 1);
          out.push(pstr.padEnd(24) + vstr);
        }
      }
    } else throw new CriuError("show", `unknown summary '${w}' (use ps, mems, fds, rss)`);
  }
  return out.join("\n") + "\n";
}
