// CRIU's page server protocol (CRIU 4.x wire format), both ends.
//
// Every request is a struct page_server_iov { u32 cmd; (4 bytes padding) u64 nr_pages; u64 vaddr;
// u64 dst_id } in host order, 32 bytes. cmd = flags << 16 | command; dst_id = id << 8 | type (1: a
// process's pagemap, id its pid; 2: a shared-memory pagemap, id its shmid). The dumping side sends,
// per pagemap, PS_IOV_OPEN2 (answered with one byte: 1 when the server has parent images for it),
// then one PS_IOV_ADD_F per pagemap run, its flags the run's PE_* flags, followed by the run's pages
// when PE_PRESENT (a PE_PARENT run is a hole whose pages the parent images hold). PS_IOV_PARENT asks
// whether the parent has a pagemap (answered with an int). PS_IOV_CLOSE (or PS_IOV_FORCE_CLOSE)
// ends the session, answered with an int status 0; after CLOSE the server waits for the dumper to
// close the connection. `criu-bun page-server` writes what it receives as pagemap-N.img +
// pages-M.img (M from 0x10001 up, as CRIU's page server numbers them, so they never clash with the
// dumper's own pages files) in its images directory; that directory plus the dumper's other images
// restore with criu-bun or CRIU. With --prev-images-dir its "parent" link names the previous images.
import {
  openSync,
  closeSync,
  readSync,
  appendFileSync,
  existsSync,
  rmSync,
  statSync,
  realpathSync,
  readdirSync,
} from "../sys/fs";
import { createNew, writeNewFile } from "../images/safefs";
import { join } from "../sys/path";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { closeFd, preadFull, openFd, O } from "../sys/mem";
import { decodePagemap, encodePagemap, type PagemapRun } from "../images/pagemap";
import { CriuError, log } from "../log";
import { errnoText } from "../sys/errno";
import { AF, SOCK, SOL, SO, MSG, TCP } from "../sys/inetsock";

const PS = {
  ADD: 1,
  HOLE: 2,
  OPEN: 3,
  OPEN2: 4,
  PARENT: 5,
  ADD_F: 6,
  GET: 7,
  CLOSE: 0x1023,
  FORCE_CLOSE: 0x1024,
} as const;
const TYPE_PID = 1,
  TYPE_SHMEM = 2;
const PAGE = 4096,
  PE_PARENT = 1,
  PE_LAZY = 2,
  PE_PRESENT = 4;
const PSI_SIZE = 32;
/** the first pages-N.img id of a page server (CRIU: page ids base raised by 0x10000) */
const PAGE_IDS_BASE = 0x10001;

export function sockaddrIn(address: string, port: number): Uint8Array {
  const b = new Uint8Array(16),
    dv = new DataView(b.buffer);
  dv.setUint16(0, AF.INET, true);
  dv.setUint16(2, port, false);
  const parts = address.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !(p >= 0 && p <= 255)))
    throw new CriuError("page-server", `'${address}' is not an IPv4 address`);
  b.set(parts, 4);
  return b;
}

/** Forget a socket's deadline and peer name (before it is closed). */
export function forgetSocket(fd: number) {
  deadlineSec.delete(fd);
  peerOf.delete(fd);
}

/** sockets with a deadline: EAGAIN on them means the peer did not answer in time */
const deadlineSec = new Map<number, number>();
/** who is at the other end of a socket, for messages */
const peerOf = new Map<number, string>();

export function setDeadline(fd: number, sec: number, peer?: string) {
  if (peer) peerOf.set(fd, peer);
  const tv = new BigInt64Array([BigInt(Math.max(1, sec)), 0n]);
  for (const opt of [SO.RCVTIMEO, SO.SNDTIMEO]) syscall(NR.setsockopt, fd, SOL.SOCKET, opt, addr(tv), 16);
  deadlineSec.set(fd, sec);
}

export function must(what: string, r: number, fd = -1): number {
  if (r === -11 /* EAGAIN: SO_RCVTIMEO/SO_SNDTIMEO ran out */ && deadlineSec.has(fd)) {
    throw new CriuError(
      "page-server",
      `${what}: ${peerOf.get(fd) ?? "the peer"} did not answer within ${deadlineSec.get(fd)} s (--timeout)`
    );
  }
  if (r === -32 /* EPIPE */ || r === -104 /* ECONNRESET */)
    throw new CriuError("page-server", `${what}: the peer closed the connection`);
  if (r < 0) throw new CriuError("page-server", `${what} failed: ${errnoText(-r)}`);
  return r;
}

/** bytes written to every socket by writeAll, for statistics (migrate counts each round's) */
export let wireBytes = 0;
export function writeAll(fd: number, b: Uint8Array, what: string) {
  for (let off = 0; off < b.length; ) {
    const r = syscall(NR.sendto, fd, addr(b, off), b.length - off, MSG.NOSIGNAL, 0, 0);
    if (r === -4) continue;
    must(what, r, fd);
    off += r;
    wireBytes += r;
  }
}
/** Read exactly len bytes; false on a clean end of stream before the first byte. */
export function readAll(fd: number, b: Uint8Array, what: string, len = b.length): boolean {
  for (let off = 0; off < len; ) {
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

/** One page_server_iov (cmd, its padding, nr_pages, vaddr, dst_id) written at dv's offset o. */
function putPsi(dv: DataView, o: number, cmd: number, nrPages: number, vaddr: bigint, dstId: bigint) {
  dv.setUint32(o, cmd, true);
  dv.setUint32(o + 4, 0, true);
  dv.setBigUint64(o + 8, BigInt(nrPages), true);
  dv.setBigUint64(o + 16, vaddr, true);
  dv.setBigUint64(o + 24, dstId, true);
}
function psi(cmd: number, nrPages: number, vaddr: bigint, dstId: bigint): Uint8Array {
  const b = new Uint8Array(PSI_SIZE);
  putPsi(new DataView(b.buffer), 0, cmd, nrPages, vaddr, dstId);
  return b;
}

export function setInt(fd: number, level: number, opt: number, v: number) {
  const one = new Int32Array([v]);
  syscall(NR.setsockopt, fd, level, opt, addr(one), 4);
}
export const TCP_NODELAY = (fd: number, on: boolean) => setInt(fd, SOL.TCP, TCP.NODELAY, on ? 1 : 0);
const TCP_CORK = (fd: number, on: boolean) => setInt(fd, SOL.TCP, TCP.CORK, on ? 1 : 0);

/** dst_id -> [kind, id]; older CRIUs used other type numbers, kept readable as CRIU keeps them. */
function decodeDst(dst: bigint): { file: string; kind: "pid" | "shmem"; id: bigint } | undefined {
  const type = Number(dst & 0xffn),
    id = dst >> 8n;
  if ([TYPE_PID, 10, 11, 16, 17].includes(type)) return { file: `pagemap-${id}.img`, kind: "pid", id };
  if ([TYPE_SHMEM, 27, 28, 29, 32, 33, 34].includes(type))
    return { file: `pagemap-shmem-${id}.img`, kind: "shmem", id };
  return undefined;
}

// ---- the dumping side ------------------------------------------------------------------------

export class PageServerClient {
  private fd: number;
  private dst = 0n;
  /** pages sent so far */
  pagesSent = 0;
  /** timeoutSec: the deadline of every connect, read and write (SO_SNDTIMEO/SO_RCVTIMEO): a page
   * server that accepts and then goes silent fails the dump, which then lets the tree go. */
  /** on a connection that carries more than this session (migrate's control channel): close()
   * ends the session with PS_IOV_CLOSE and its status but leaves the connection open */
  private shared = false;
  constructor(
    public address: string,
    public port: number,
    timeoutSec = 10,
    existingFd?: number
  ) {
    if (existingFd !== undefined) {
      this.fd = existingFd;
      this.shared = true;
      return;
    }
    this.fd = must("socket", syscall(NR.socket, AF.INET, SOCK.STREAM | SOCK.CLOEXEC, 0));
    setDeadline(this.fd, timeoutSec);
    peerOf.set(this.fd, "the page server");
    const sa = sockaddrIn(address, port);
    const r = syscall(NR.connect, this.fd, addr(sa), sa.length);
    if (r < 0) {
      deadlineSec.delete(this.fd);
      peerOf.delete(this.fd);
      closeFd(this.fd);
      throw new CriuError(
        "page-server",
        r === -115 || r === -11
          ? `cannot connect to the page server at ${address}:${port} within ${timeoutSec} s (--timeout)`
          : `cannot connect to the page server at ${address}:${port}: ${errnoText(-r)}`
      );
    }
    TCP_CORK(this.fd, true); // headers and pages go out in full segments; answers are pushed
  }

  /** Start one process's pagemap (PS_IOV_OPEN2). Returns whether the server has parent images for it. */
  open(vpid: number): boolean {
    return this.openLater(vpid)();
  }

  /** PS_IOV_OPEN2 sent now; its answer (as open's) read by the function returned, once the caller
   *  needs it: the round trip passes while it does other work. Nothing else may be sent before. */
  openLater(vpid: number): () => boolean {
    this.dst = (BigInt(vpid) << 8n) | BigInt(TYPE_PID);
    writeAll(this.fd, psi(PS.OPEN2, 0, 0n, this.dst), "sending PS_IOV_OPEN2 to the page server");
    this.push();
    let answer: boolean | undefined;
    return () => {
      if (answer !== undefined) return answer;
      const parent = new Uint8Array(1);
      if (!readAll(this.fd, parent, "reading the page server's answer to PS_IOV_OPEN2"))
        throw new CriuError("page-server", "the page server closed the connection");
      log.debug(`page server: pagemap of ${vpid} opened; the server ${parent[0] ? "has" : "has no"} parent images`);
      answer = parent[0] !== 0;
      return answer;
    };
  }

  /** The opened pagemap's runs in order, the PE_PRESENT runs' bytes packed in dataFile in the same order. */
  sendRuns(runs: Iterable<PagemapRun>, dataFile: string) {
    const src = openSync(dataFile, "r");
    // every entry and its pages go out through one buffer, a write per MiB: a migrate's final round
    // has hundreds of one-page runs, and three system calls for each (entry, read, pages) took
    // 6-18 ms of its frozen window. The bytes on the wire are the same.
    const out = new Uint8Array(1 << 20),
      ov = new DataView(out.buffer);
    let n = 0;
    const flush = () => {
      if (n) {
        writeAll(this.fd, out.subarray(0, n), "sending pagemap entries and pages to the page server");
        n = 0;
      }
    };
    try {
      for (const r of runs) {
        if (n + PSI_SIZE > out.length) flush();
        putPsi(ov, n, PS.ADD_F | (r.flags << 16), r.nrPages, r.vaddr, this.dst);
        n += PSI_SIZE;
        if (!(r.flags & PE_PRESENT)) continue;
        // its pages, read from the data file straight behind the entry
        for (let left = r.nrPages * PAGE; left > 0; ) {
          if (n === out.length) flush();
          const got = readSync(src, out, n, Math.min(out.length - n, left), null);
          if (got <= 0) throw new CriuError("page-server", `${dataFile} ended early`);
          n += got;
          left -= got;
        }
        this.pagesSent += r.nrPages;
      }
      flush();
    } finally {
      closeSync(src);
    }
  }

  /** one PS_IOV_OPEN2 and its runs */
  sendPagemap(vpid: number, runs: Iterable<PagemapRun>, dataFile: string) {
    this.open(vpid);
    this.sendRuns(runs, dataFile);
  }

  private push() {
    TCP_CORK(this.fd, false);
    TCP_CORK(this.fd, true);
  }

  /** PS_IOV_CLOSE: the server answers with its status once everything is written; then we hang up. */
  close() {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    try {
      writeAll(fd, psi(PS.CLOSE, 0, 0n, 0n), "sending PS_IOV_CLOSE to the page server");
      TCP_CORK(fd, false);
      const st = new Int32Array(1);
      const ok = readAll(fd, new Uint8Array(st.buffer), "reading the page server's status");
      if (!ok || st[0] !== 0)
        throw new CriuError(
          "page-server",
          `the page server reported a failure (status ${ok ? st[0] : "none: it closed the connection"})`
        );
    } finally {
      if (!this.shared) {
        deadlineSec.delete(fd);
        peerOf.delete(fd);
        closeFd(fd);
      }
    }
  }

  /** Drop the connection without the close handshake (a failed dump): the server sees no
   * PS_IOV_CLOSE. On a shared connection its owner closes it (the stream is broken now). */
  abort() {
    if (this.fd >= 0) {
      if (!this.shared) {
        deadlineSec.delete(this.fd);
        peerOf.delete(this.fd);
        closeFd(this.fd);
      }
      this.fd = -1;
    }
  }
}

// ---- the receiving side ----------------------------------------------------------------------

/** pagemapCoverage's answers, by the file's real path and identity (warmCoverage) */
const coverageCache = new Map<string, { id: string; cov: [bigint, bigint][] }>();
function coverageKey(dir: string, file: string): { path: string; id: string } | undefined {
  try {
    const path = join(realpathSync(dir), file),
      st = statSync(path, { bigint: true });
    return { path, id: `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}` };
  } catch {
    return undefined;
  }
}

/**
 * The coverage of every pagemap in DIR computed now (migrate's destination, once a pre-copy round
 * is in): the next round's PS_IOV_OPEN2 finds it ready instead of decoding the parent's pagemap
 * then, the final round's in the frozen window.
 */
export function warmCoverage(dir: string) {
  for (const f of readdirSync(dir)) if (/^pagemap-\d+\.img$/.test(f)) pagemapCoverage(dir, f);
}

/** The address ranges (sorted, joined) whose pages dir's pagemap holds, stored or in its own parents. */
function pagemapCoverage(dir: string, file: string): [bigint, bigint][] {
  const key = coverageKey(dir, file),
    hit = key && coverageCache.get(key.path);
  if (key && hit && hit.id === key.id) return hit.cov;
  const cov = computeCoverage(dir, file);
  if (key) coverageCache.set(key.path, { id: key.id, cov });
  return cov;
}

function computeCoverage(dir: string, file: string): [bigint, bigint][] {
  const out: [bigint, bigint][] = [];
  const runs = [...decodePagemap(dir, file).runs].sort((a, b) => (a.vaddr < b.vaddr ? -1 : a.vaddr > b.vaddr ? 1 : 0));
  for (const r of runs) {
    if (!(r.flags & (PE_PRESENT | PE_PARENT))) continue;
    const a = r.vaddr,
      b = r.vaddr + BigInt(r.nrPages * PAGE);
    const last = out[out.length - 1];
    if (last && last[1] >= a) {
      if (b > last[1]) last[1] = b;
    } else out.push([a, b]);
  }
  return out;
}

/** Whether [a, b) lies inside the ranges COV (sorted, joined: touching ranges are one, so one must hold it all). */
function covered(cov: [bigint, bigint][], a: bigint, b: bigint): boolean {
  if (a >= b) return true;
  // the last range starting at or before a (a binary search: a round's thousands of parent runs each check)
  let lo = 0,
    hi = cov.length - 1,
    k = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (cov[mid][0] <= a) {
      k = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return k >= 0 && cov[k][1] >= b;
}

interface OpenMap {
  file: string;
  dst: bigint;
  pagesId: number;
  runs: PagemapRun[];
  pagesFd: number;
  parent?: [bigint, bigint][];
}

/** A listening TCP socket on address:port (SO_REUSEADDR). */
function listenOn(address: string, port: number, what: string): number {
  const ls = must("socket", syscall(NR.socket, AF.INET, SOCK.STREAM | SOCK.CLOEXEC, 0));
  try {
    setInt(ls, SOL.SOCKET, SO.REUSEADDR, 1);
    const sa = sockaddrIn(address, port);
    const r = syscall(NR.bind, ls, addr(sa), sa.length);
    if (r < 0) throw new CriuError("page-server", `cannot listen on ${address}:${port}: ${errnoText(-r)}`);
    must("listen", syscall(NR.listen, ls, 1));
  } catch (e) {
    closeFd(ls);
    throw e;
  }
  log.info(`${what} listening on ${address}:${port}`);
  return ls;
}

/**
 * Listen on address:port, serve one dumper, write its pages into dir (and its parent link when
 * parentDir is given). Returns pages received. A session that fails or ends without PS_IOV_CLOSE
 * leaves none of its files behind.
 */
export function servePages(
  dir: string,
  address: string,
  port: number,
  onListening?: () => void,
  timeoutSec = 10
): number {
  const ls = listenOn(address, port, "Page server");
  let conn = -1;
  try {
    onListening?.();
    conn = must("accept", syscall(NR.accept, ls, 0, 0));
    TCP_NODELAY(conn, true); // the has-parent byte and the status go out at once
    return serveSession(conn, dir, timeoutSec, false);
  } finally {
    if (conn >= 0) {
      deadlineSec.delete(conn);
      peerOf.delete(conn);
      closeFd(conn);
    }
    closeFd(ls);
  }
}

/**
 * One dumper's session on connection conn, its pages into dir, until PS_IOV_CLOSE. shared: the
 * connection carries more than this session (migrate): after answering PS_IOV_CLOSE the session
 * ends at once (CRIU's server waits for the dumper to hang up instead). Returns pages received;
 * a session that fails leaves none of its files behind. The caller closes conn.
 */
export function serveSession(conn: number, dir: string, timeoutSec: number, shared: boolean): number {
  let cur: OpenMap | undefined;
  const written: string[] = [];
  let nextPagesId = PAGE_IDS_BASE,
    pages = 0,
    ok = false;
  const hasParentDir = existsSync(join(dir, "parent"));
  const closeCur = () => {
    if (!cur) return;
    closeSync(cur.pagesFd);
    writeNewFile(join(dir, cur.file), encodePagemap(cur.pagesId, cur.runs));
    written.push(cur.file);
    log.info(`page server: ${cur.file} written (${cur.runs.length} runs, pages-${cur.pagesId}.img)`);
    cur = undefined;
  };
  try {
    const head = new Uint8Array(PSI_SIZE),
      dv = new DataView(head.buffer);
    const buf = new Uint8Array(1 << 20);
    let closed = 0;
    for (;;) {
      if (!readAll(conn, head, "reading a request")) break;
      const cmd = dv.getUint32(0, true),
        nrBig = dv.getBigUint64(8, true),
        vaddr = dv.getBigUint64(16, true),
        dst = dv.getBigUint64(24, true);
      const op = cmd & 0xffff;
      // (a pagemap's runs, tens of thousands for scattered pages, are summed up when it is written)
      if (op !== PS.ADD && op !== PS.ADD_F && op !== PS.HOLE)
        log.debug(
          `page server: request 0x${cmd.toString(16)} nr_pages ${nrBig} vaddr 0x${vaddr.toString(16)} dst_id 0x${dst.toString(16)}`
        );
      if (op === PS.CLOSE || op === PS.FORCE_CLOSE) {
        closeCur();
        writeAll(conn, new Uint8Array(new Int32Array([0]).buffer), "answering PS_IOV_CLOSE");
        closed = op;
        break;
      }
      if (op === PS.OPEN || op === PS.OPEN2 || op === PS.PARENT) {
        const d = decodeDst(dst);
        if (!d)
          throw new CriuError(
            "page-server",
            `unknown pagemap type ${Number(dst & 0xffn)} in request 0x${cmd.toString(16)} (dst_id 0x${dst.toString(16)})`
          );
        const parentHas = hasParentDir && existsSync(join(dir, "parent", d.file));
        if (op === PS.PARENT) {
          writeAll(conn, new Uint8Array(new Int32Array([parentHas ? 1 : 0]).buffer), "answering PS_IOV_PARENT");
          continue;
        }
        closeCur();
        if (written.includes(d.file)) throw new CriuError("page-server", `${d.file} was sent twice`);
        const pagesId = nextPagesId++;
        const pagesFile = join(dir, `pages-${pagesId}.img`);
        cur = {
          file: d.file,
          dst,
          pagesId,
          runs: [],
          pagesFd: createNew(pagesFile, true),
          parent: parentHas ? pagemapCoverage(join(dir, "parent"), d.file) : undefined,
        };
        written.push(`pages-${pagesId}.img`);
        log.info(`page server: opening ${d.file} (parent images: ${parentHas ? "yes" : "no"})`);
        if (op === PS.OPEN2) writeAll(conn, new Uint8Array([parentHas ? 1 : 0]), "answering PS_IOV_OPEN2");
      } else if (op === PS.ADD || op === PS.ADD_F || op === PS.HOLE) {
        if (!cur || cur.dst !== dst)
          throw new CriuError("page-server", `pages for dst_id 0x${dst.toString(16)}, which is not the opened pagemap`);
        if (nrBig === 0n || nrBig > 0xffffffffn)
          throw new CriuError("page-server", `a run of ${nrBig} pages at 0x${vaddr.toString(16)}`);
        const nr = Number(nrBig);
        const flags = op === PS.ADD_F ? cmd >>> 16 : op === PS.ADD ? PE_PRESENT : PE_PARENT;
        if (flags & ~(PE_PARENT | PE_LAZY | PE_PRESENT))
          throw new CriuError(
            "page-server",
            `unknown pagemap flags 0x${flags.toString(16)} at 0x${vaddr.toString(16)}`
          );
        if (flags & PE_PARENT && !(flags & PE_PRESENT)) {
          // a hole: its pages must be in the parent images, or a restore could not find them
          const end = vaddr + BigInt(nr * PAGE);
          if (!cur.parent)
            throw new CriuError(
              "page-server",
              `${cur.file}: pages 0x${vaddr.toString(16)}-0x${end.toString(16)} are in the parent images, but ${dir} has none (page-server --prev-images-dir)`
            );
          if (!covered(cur.parent, vaddr, end))
            throw new CriuError(
              "page-server",
              `${cur.file}: pages 0x${vaddr.toString(16)}-0x${end.toString(16)} are not in the parent images`
            );
        }
        cur.runs.push({ vaddr, nrPages: nr, flags });
        if (flags & PE_PRESENT) {
          for (let left = nr * PAGE; left > 0; ) {
            const n = Math.min(buf.length, left);
            if (!readAll(conn, buf, "receiving pages", n))
              throw new CriuError("page-server", "the connection ended in the middle of the pages");
            appendFileSync(cur.pagesFd, buf.subarray(0, n));
            left -= n;
          }
          pages += nr;
        }
      } else if (op === PS.GET) {
        throw new CriuError(
          "page-server",
          "PS_IOV_GET (lazy pages): this page server receives a dump; the pages of a lazy restore are served by `dump --lazy-pages`"
        );
      } else {
        throw new CriuError("page-server", `unknown request ${op} (0x${cmd.toString(16)})`);
      }
    }
    if (!closed)
      throw new CriuError(
        "page-server",
        "the dumper closed the connection without PS_IOV_CLOSE: the data were not flushed"
      );
    if (closed === PS.CLOSE && !shared) {
      // as CRIU: wait for the dumper to hang up (it reads our status first), with a deadline
      setDeadline(conn, timeoutSec);
      peerOf.set(conn, "the dumper");
      const b = new Uint8Array(1);
      if (readAll(conn, b, "waiting for the dumper to close the connection"))
        throw new CriuError("page-server", "unexpected data after PS_IOV_CLOSE");
    }
    ok = true;
  } finally {
    if (cur) {
      closeSync(cur.pagesFd);
      cur = undefined;
    }
    if (!ok) for (const f of written) rmSync(join(dir, f), { force: true });
  }
  log.info(`Page server received ${pages} pages`);
  return pages;
}

// ---- lazy pages: the dump serves its frozen tree's pages on demand (PS_IOV_GET) -----------------
//
// `dump --lazy-pages` writes every image but the contents of private anonymous memory (pagemap runs
// flagged PE_LAZY alone, as CRIU writes them) and then listens here. The lazy-pages daemon of the
// restore side asks PS_IOV_GET { nr_pages, vaddr, dst_id = the process's pid as the images name it }
// and gets back a PS_IOV_ADD_F header with the pages it is given (nr_pages may be fewer than asked:
// a reply never crosses the end of a lazy run) followed by their bytes, read from the frozen process.
// PS_IOV_CLOSE (answered with an int status 0) says the restore has all its memory: the caller then
// kills the source. A daemon that goes away without it leaves the source to the caller (CRIU resumes it).

/** The lazy runs of one dumped process: pid here, and its runs sorted by address. */
export interface LazySource {
  pid: number;
  runs: { vaddr: bigint; nrPages: number }[];
}

/** The client of a lazy dump (the lazy-pages daemon): PS_IOV_GET requests and their answers. */
export class LazyPagesClient {
  private fd: number;
  private head = new Uint8Array(PSI_SIZE);
  /** fd: a connection to the dump made already (migrate's post-copy from the source: the source connected it) */
  constructor(
    public address: string,
    public port: number,
    public timeoutSec = 10,
    fd?: number
  ) {
    if (fd !== undefined) {
      this.fd = fd;
      setDeadline(fd, timeoutSec, "the source serving lazy pages");
      TCP_NODELAY(fd, true);
      return;
    }
    this.fd = must("socket", syscall(NR.socket, AF.INET, SOCK.STREAM | SOCK.CLOEXEC, 0));
    setDeadline(this.fd, timeoutSec);
    peerOf.set(this.fd, "the dump serving lazy pages");
    const sa = sockaddrIn(address, port);
    const r = syscall(NR.connect, this.fd, addr(sa), sa.length);
    if (r < 0) {
      this.drop();
      throw new CriuError(
        "lazy-pages",
        `cannot connect to the dump serving lazy pages at ${address}:${port} (${r === -111 ? "nothing listens there" : errnoText(-r)})`
      );
    }
    TCP_NODELAY(this.fd, true);
  }

  /**
   * Up to nrPages pages of process dstPid from vaddr, into buf; returns how many came (at least
   * one: the dump answers only what it holds, never more than asked).
   */
  get(dstPid: number, vaddr: bigint, nrPages: number, buf: Uint8Array): number {
    writeAll(this.fd, psi(PS.GET, nrPages, vaddr, BigInt(dstPid)), "asking the dump for pages (PS_IOV_GET)");
    if (!readAll(this.fd, this.head, "reading the dump's answer to PS_IOV_GET"))
      throw new CriuError("lazy-pages", "the dump serving lazy pages closed the connection");
    const dv = new DataView(this.head.buffer);
    const op = dv.getUint32(0, true) & 0xffff,
      n = dv.getBigUint64(8, true),
      va = dv.getBigUint64(16, true),
      dst = dv.getBigUint64(24, true);
    if (
      (op !== PS.ADD_F && op !== PS.ADD) ||
      va !== vaddr ||
      dst !== BigInt(dstPid) ||
      n === 0n ||
      n > BigInt(nrPages)
    ) {
      throw new CriuError(
        "lazy-pages",
        `the dump answered PS_IOV_GET of ${nrPages} page(s) at 0x${vaddr.toString(16)} of process ${dstPid} with request ${op}, ${n} page(s) at 0x${va.toString(16)} of ${dst}`
      );
    }
    const len = Number(n) * PAGE;
    if (!readAll(this.fd, buf, "receiving lazy pages", len))
      throw new CriuError("lazy-pages", "the dump serving lazy pages closed the connection in the middle of pages");
    return Number(n);
  }

  /** PS_IOV_CLOSE: the restore has everything; the dump answers its status, then kills the source. */
  close() {
    if (this.fd < 0) return;
    try {
      writeAll(this.fd, psi(PS.CLOSE, 0, 0n, 0n), "sending PS_IOV_CLOSE to the dump");
      const st = new Int32Array(1);
      const ok = readAll(this.fd, new Uint8Array(st.buffer), "reading the dump's status");
      if (!ok || st[0] !== 0)
        throw new CriuError(
          "lazy-pages",
          `the dump serving lazy pages reported a failure (status ${ok ? st[0] : "none: it closed the connection"})`
        );
    } finally {
      this.drop();
    }
  }

  drop() {
    if (this.fd >= 0) {
      deadlineSec.delete(this.fd);
      peerOf.delete(this.fd);
      closeFd(this.fd);
      this.fd = -1;
    }
  }
}

/**
 * The dump's side: listen on address:port, serve one lazy-pages daemon the lazy runs of sources
 * (by pid as the images name it) from the frozen processes until it sends PS_IOV_CLOSE. Returns
 * the pages served; throws (one line) when the daemon goes away first or asks for what is not lazy.
 * Waiting for a request has no deadline (the restore may come much later); each answer has one.
 */
export function serveLazyPages(
  address: string,
  port: number,
  sources: Map<number, LazySource>,
  onListening?: () => void,
  timeoutSec = 10
): number {
  const total = lazyTotal(sources);
  const ls = listenOn(address, port, `Lazy pages (${total} pages of ${sources.size} process(es))`);
  let conn = -1,
    srv: LazyPageServer | undefined;
  try {
    onListening?.();
    log.info(`lazy pages: waiting for the lazy-pages daemon on ${address}:${port}`);
    for (;;) {
      conn = syscall(NR.accept, ls, 0, 0);
      if (conn !== -4) break;
    }
    must("accept", conn);
    log.info("lazy pages: the lazy-pages daemon connected");
    // waiting for a request has no deadline (the restore may come much later); each answer has one
    srv = new LazyPageServer(conn, sources, timeoutSec, false);
    while (srv.serveOne());
    return srv.served;
  } finally {
    srv?.close();
    if (conn >= 0) {
      deadlineSec.delete(conn);
      peerOf.delete(conn);
      closeFd(conn);
    }
    closeFd(ls);
  }
}

const lazyTotal = (sources: Map<number, LazySource>) =>
  [...sources.values()].reduce((s, x) => s + x.runs.reduce((m, r) => m + r.nrPages, 0), 0);

/**
 * One lazy-pages daemon's requests on connection conn, answered from the frozen processes of
 * sources: serveOne() answers one request (false once it was PS_IOV_CLOSE: the restore has all its
 * memory). readDeadline: reads have the deadline too (otherwise only the answers). The caller closes conn.
 */
export class LazyPageServer {
  served = 0;
  readonly total: number;
  private memFds = new Map<number, number>();
  private head = new Uint8Array(PSI_SIZE);
  private buf = new Uint8Array(1 << 20);
  private lastLog = 0;
  constructor(
    private conn: number,
    private sources: Map<number, LazySource>,
    timeoutSec: number,
    readDeadline: boolean
  ) {
    this.total = lazyTotal(sources);
    TCP_NODELAY(conn, true);
    if (readDeadline) setDeadline(conn, timeoutSec);
    else {
      const tv = new BigInt64Array([BigInt(Math.max(1, timeoutSec)), 0n]);
      syscall(NR.setsockopt, conn, SOL.SOCKET, SO.SNDTIMEO, addr(tv), 16);
      deadlineSec.set(conn, timeoutSec);
    }
    peerOf.set(conn, "the lazy-pages daemon");
  }
  private gone() {
    return new CriuError(
      "lazy-pages",
      `the lazy-pages daemon closed the connection before the restore had all its memory (${this.served} of ${this.total} pages sent)`
    );
  }
  /** the daemon going away (a clean end, or a reset with pages in flight) is said as that */
  private io<T>(fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      if (/the peer closed the connection/.test(e instanceof Error ? e.message : "")) throw this.gone();
      throw e;
    }
  }
  serveOne(): boolean {
    const conn = this.conn,
      head = this.head,
      dv = new DataView(head.buffer),
      buf = this.buf;
    if (!this.io(() => readAll(conn, head, "reading a request of the lazy-pages daemon"))) throw this.gone();
    const cmd = dv.getUint32(0, true),
      nrBig = dv.getBigUint64(8, true),
      vaddr = dv.getBigUint64(16, true),
      dst = dv.getBigUint64(24, true);
    const op = cmd & 0xffff;
    if (op === PS.CLOSE || op === PS.FORCE_CLOSE) {
      writeAll(conn, new Uint8Array(new Int32Array([0]).buffer), "answering PS_IOV_CLOSE");
      log.info(
        `lazy pages: the restore has its memory (${this.served} of ${this.total} lazy pages were sent; the others it never needed or they were zero)`
      );
      return false;
    }
    if (op !== PS.GET)
      throw new CriuError("lazy-pages", `unexpected request ${op} (0x${cmd.toString(16)}) from the lazy-pages daemon`);
    const src = dst <= 0x7fffffffn ? this.sources.get(Number(dst)) : undefined;
    if (!src)
      throw new CriuError(
        "lazy-pages",
        `the lazy-pages daemon asked for pages of process ${dst}, which is not in the dump`
      );
    const run = findRun(src.runs, vaddr);
    if (!run || nrBig === 0n)
      throw new CriuError(
        "lazy-pages",
        `the lazy-pages daemon asked for ${nrBig} page(s) at 0x${vaddr.toString(16)} of process ${dst}, which are not lazy pages of the dump`
      );
    const left = Number((run.vaddr + BigInt(run.nrPages * PAGE) - vaddr) / BigInt(PAGE));
    const n = Math.min(Number(nrBig > 0xffffn ? 0xffffn : nrBig), left, buf.length / PAGE);
    let fd = this.memFds.get(src.pid);
    if (fd === undefined) {
      fd = openFd(`/proc/${src.pid}/mem`, O.RDONLY | O.CLOEXEC);
      this.memFds.set(src.pid, fd);
    }
    if (
      preadFull(fd, buf, vaddr, n * PAGE, 0, `read lazy pages of ${src.pid} at 0x${vaddr.toString(16)}`) !==
      n * PAGE
    ) {
      throw new CriuError("lazy-pages", `process ${src.pid}: short read of its memory at 0x${vaddr.toString(16)}`);
    }
    this.io(() => writeAll(conn, psi(PS.ADD_F | (PE_PRESENT << 16), n, vaddr, dst), "answering PS_IOV_GET"));
    this.io(() => writeAll(conn, buf.subarray(0, n * PAGE), "sending lazy pages"));
    this.served += n;
    if (this.served - this.lastLog >= 16384) {
      this.lastLog = this.served;
      log.info(`lazy pages: ${this.served} of ${this.total} pages sent`);
    }
    return true;
  }
  close() {
    for (const fd of this.memFds.values()) closeFd(fd);
    this.memFds.clear();
  }
}

/** The run of sorted runs that holds vaddr (binary search). */
function findRun(runs: { vaddr: bigint; nrPages: number }[], vaddr: bigint) {
  let lo = 0,
    hi = runs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1,
      r = runs[mid];
    if (vaddr < r.vaddr) hi = mid - 1;
    else if (vaddr >= r.vaddr + BigInt(r.nrPages * PAGE)) lo = mid + 1;
    else return (vaddr - r.vaddr) % BigInt(PAGE) === 0n ? r : undefined;
  }
  return undefined;
}
