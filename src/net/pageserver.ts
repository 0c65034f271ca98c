// CRIU's page server protocol, both ends. The dumping side sends, per process, PS_IOV_OPEN2
// (answered with one has-parent byte), then one PS_IOV_ADD_F header per pagemap run followed by
// the run's pages when PE_PRESENT, and finally PS_IOV_FLUSH(_N_CLOSE) (answered with an int
// status). `criu-bun page-server` writes what it receives as pagemap-N.img + pages-N.img in its
// images directory, so that directory plus the dumper's other images restore as usual.
// Headers are struct page_server_iov { u32 cmd; u32 nr_pages; u64 vaddr; u64 dst_id } in host
// order; cmd = flags << 16 | command; dst_id = id << 8 | type (1: process pagemap, 2: shmem).
import { openSync, closeSync, readSync, appendFileSync } from "node:fs";
import { createNew, writeNewFile } from "../images/safefs";
import { join } from "node:path";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { closeFd } from "../sys/mem";
import { encodePagemap, type PagemapRun } from "../images/pagemap";
import { CriuError, log } from "../log";

export const PS = { ADD: 1, HOLE: 2, OPEN: 3, OPEN2: 4, PARENT: 5, ADD_F: 6, GET: 7, FLUSH: 0x1023, FLUSH_N_CLOSE: 0x1024 } as const;
const TYPE_PID = 1, TYPE_SHMEM = 2;
const PAGE = 4096, PE_PRESENT = 4, PE_PARENT = 1;

function sockaddrIn(address: string, port: number): Uint8Array {
  const b = new Uint8Array(16), dv = new DataView(b.buffer);
  dv.setUint16(0, 2, true); // AF_INET
  dv.setUint16(2, port, false);
  const parts = address.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !(p >= 0 && p <= 255))) throw new CriuError("page-server", `'${address}' is not an IPv4 address`);
  b.set(parts, 4);
  return b;
}

/** sockets with a deadline: EAGAIN on them means the peer did not answer in time */
const deadlineSec = new Map<number, number>();

function must(what: string, r: number, fd = -1): number {
  if (r === -11 /* EAGAIN: SO_RCVTIMEO/SO_SNDTIMEO ran out */ && deadlineSec.has(fd)) {
    throw new CriuError("page-server", `${what}: the page server did not answer within ${deadlineSec.get(fd)} s (--timeout)`);
  }
  if (r < 0) throw new CriuError("page-server", `${what} failed (errno ${-r})`);
  return r;
}

function writeAll(fd: number, b: Uint8Array, what: string) {
  for (let off = 0; off < b.length;) {
    const r = syscall(NR.write, fd, addr(b, off), b.length - off);
    if (r === -4) continue;
    must(what, r, fd);
    off += r;
  }
}
/** Read exactly len bytes; false on a clean end of stream before the first byte. */
function readAll(fd: number, b: Uint8Array, what: string, len = b.length): boolean {
  for (let off = 0; off < len;) {
    const r = syscall(NR.read, fd, addr(b, off), len - off);
    if (r === -4) continue;
    must(what, r, fd);
    if (r === 0) {
      if (off === 0) return false;
      throw new CriuError("page-server", `${what}: the connection ended in the middle of a message`);
    }
    off += r;
  }
  return true;
}

function psi(cmd: number, nrPages: number, vaddr: bigint, dstId: bigint): Uint8Array {
  const b = new Uint8Array(24), dv = new DataView(b.buffer);
  dv.setUint32(0, cmd, true); dv.setUint32(4, nrPages, true);
  dv.setBigUint64(8, vaddr, true); dv.setBigUint64(16, dstId, true);
  return b;
}

// ---- the dumping side ------------------------------------------------------------------------

export class PageServerClient {
  private fd: number;
  /** timeoutSec: the deadline of every connect, read and write (SO_SNDTIMEO/SO_RCVTIMEO): a page
   * server that accepts and then goes silent fails the dump, which then lets the tree go. */
  constructor(public address: string, public port: number, timeoutSec = 10) {
    this.fd = must("socket", syscall(NR.socket, 2, 1 | 0o2000000 /* SOCK_STREAM|SOCK_CLOEXEC */, 0));
    const tv = new BigInt64Array([BigInt(Math.max(1, timeoutSec)), 0n]);
    for (const opt of [20 /* SO_RCVTIMEO */, 21 /* SO_SNDTIMEO */]) syscall(NR.setsockopt, this.fd, 1 /* SOL_SOCKET */, opt, addr(tv), 16);
    const sa = sockaddrIn(address, port);
    const r = syscall(NR.connect, this.fd, addr(sa), sa.length);
    if (r < 0) { closeFd(this.fd); throw new CriuError("page-server", `cannot connect to the page server at ${address}:${port} (errno ${-r})`); }
    deadlineSec.set(this.fd, timeoutSec);
  }

  /** One process's pages: runs in order, their bytes packed in dataFile in the same order. */
  sendPagemap(id: number, runs: Iterable<PagemapRun>, dataFile: string) {
    const dst = (BigInt(id) << 8n) | BigInt(TYPE_PID);
    writeAll(this.fd, psi(PS.OPEN2, 0, 0n, dst), "sending PS_IOV_OPEN2");
    const parent = new Uint8Array(1);
    if (!readAll(this.fd, parent, "reading the page server's answer")) throw new CriuError("page-server", "the page server closed the connection");
    const src = openSync(dataFile, "r");
    const buf = new Uint8Array(1 << 20);
    try {
      for (const r of runs) {
        writeAll(this.fd, psi(PS.ADD_F | (r.flags << 16), r.nrPages, r.vaddr, dst), "sending a pagemap entry");
        if (!(r.flags & PE_PRESENT)) continue;
        for (let left = r.nrPages * PAGE; left > 0;) {
          const n = readSync(src, buf, 0, Math.min(buf.length, left), null);
          if (n <= 0) throw new CriuError("page-server", `${dataFile} ended early`);
          writeAll(this.fd, buf.subarray(0, n), "sending pages");
          left -= n;
        }
      }
    } finally { closeSync(src); }
  }

  /** Tell the server we are done; it answers with a status. */
  close() {
    writeAll(this.fd, psi(PS.FLUSH_N_CLOSE, 0, 0n, 0n), "sending PS_IOV_FLUSH_N_CLOSE");
    const st = new Int32Array(1);
    const ok = readAll(this.fd, new Uint8Array(st.buffer), "reading the page server's status");
    deadlineSec.delete(this.fd);
    closeFd(this.fd);
    if (!ok || st[0] !== 0) throw new CriuError("page-server", `the page server reported a failure (status ${ok ? st[0] : "none"})`);
  }
}

// ---- the receiving side ----------------------------------------------------------------------

interface OpenMap { file: string; pagesId: number; runs: PagemapRun[]; pagesFd: number }

/** Listen on address:port, serve one dumper, write its pages into dir. Returns pages received. */
export function servePages(dir: string, address: string, port: number, onListening?: () => void): number {
  const ls = must("socket", syscall(NR.socket, 2, 1 | 0o2000000, 0));
  let conn = -1;
  const open = new Map<bigint, OpenMap>();
  let nextPagesId = 1, pages = 0;
  const finish = () => {
    for (const m of open.values()) {
      closeSync(m.pagesFd);
      writeNewFile(join(dir, m.file), encodePagemap(m.pagesId, m.runs));
    }
    open.clear();
  };
  try {
    const one = new Int32Array([1]);
    syscall(NR.setsockopt, ls, 1 /* SOL_SOCKET */, 2 /* SO_REUSEADDR */, addr(one), 4);
    const sa = sockaddrIn(address, port);
    const r = syscall(NR.bind, ls, addr(sa), sa.length);
    if (r < 0) throw new CriuError("page-server", `cannot listen on ${address}:${port} (errno ${-r})`);
    must("listen", syscall(NR.listen, ls, 1));
    log.info(`Page server listening on ${address}:${port}`);
    onListening?.();
    conn = must("accept", syscall(NR.accept, ls, 0, 0));
    const head = new Uint8Array(24), dv = new DataView(head.buffer);
    const buf = new Uint8Array(1 << 20);
    for (;;) {
      if (!readAll(conn, head, "reading a request")) { finish(); break; }
      const cmd = dv.getUint32(0, true), nr = dv.getUint32(4, true), vaddr = dv.getBigUint64(8, true), dst = dv.getBigUint64(16, true);
      const op = cmd & 0xffff;
      log.debug(`page server: request 0x${cmd.toString(16)} nr_pages ${nr} vaddr 0x${vaddr.toString(16)} dst_id 0x${dst.toString(16)}`);
      if (op === PS.OPEN || op === PS.OPEN2) {
        const type = Number(dst & 0xffn), id = dst >> 8n;
        if (type !== TYPE_PID && type !== TYPE_SHMEM) throw new CriuError("page-server", `unknown pagemap type ${type}`);
        const file = type === TYPE_PID ? `pagemap-${id}.img` : `pagemap-shmem-${id}.img`;
        const pagesId = nextPagesId++;
        const pagesFile = join(dir, `pages-${pagesId}.img`);
        open.set(dst, { file, pagesId, runs: [], pagesFd: createNew(pagesFile, true) });
        if (op === PS.OPEN2) writeAll(conn, new Uint8Array([0]), "answering PS_IOV_OPEN2"); // no parent images here
      } else if (op === PS.ADD || op === PS.ADD_F || op === PS.HOLE) {
        const m = open.get(dst);
        if (!m) throw new CriuError("page-server", `pages for 0x${dst.toString(16)} that was never opened`);
        const flags = op === PS.ADD_F ? cmd >>> 16 : op === PS.ADD ? PE_PRESENT : PE_PARENT;
        m.runs.push({ vaddr, nrPages: nr, flags });
        if (flags & PE_PRESENT) {
          for (let left = nr * PAGE; left > 0;) {
            const n = Math.min(buf.length, left);
            if (!readAll(conn, buf, "receiving pages", n)) throw new CriuError("page-server", "the connection ended in the middle of the pages");
            appendFileSync(m.pagesFd, buf.subarray(0, n));
            left -= n;
          }
          pages += nr;
        }
      } else if (op === PS.FLUSH || op === PS.FLUSH_N_CLOSE) {
        finish();
        writeAll(conn, new Uint8Array(new Int32Array([0]).buffer), "answering a flush");
        if (op === PS.FLUSH_N_CLOSE) break;
      } else {
        throw new CriuError("page-server", `unsupported request ${op} (0x${cmd.toString(16)})`);
      }
    }
  } finally {
    for (const m of open.values()) closeSync(m.pagesFd);
    if (conn >= 0) closeFd(conn);
    closeFd(ls);
  }
  log.info(`Page server received ${pages} pages`);
  return pages;
}
