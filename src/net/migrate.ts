// criu-bun migrate: live migration of a process tree to another criu-bun, criu-bun's own command.
//
// Source: `migrate -t PID --to HOST:PORT`; destination: `migrate --listen PORT`. Iterative pre-copy
// with memory tracking (memtrack.ts): round 1 is a pre-dump sending every page, each later round a
// pre-dump sending only the pages written since the round before (each reads its pages after
// letting the tree go, tracking already armed: dumpProcess liveRead), until the dirty set stops
// shrinking (or is small, or MAX_ROUNDS). Then the final dump: the tree is frozen, the last dirty
// pages and all the state go over, the destination restores, and only when it reports success is
// the source killed. Any failure before that (the peer dies or goes silent, the restore fails)
// lets the source go on as it was: running, not traced, its tracking userfaultfd closed, its
// connections out of repair mode and no network lock left.
//
// Post-copy (the destination's default; --no-post-copy: off): the destination starts a lazy-pages
// daemon reading its received images (`criu-bun lazy-pages -D WORK/final -W WORK`, before round 1,
// so it waits when it is needed) and restores the final round with lazyPages + lazyParents: the
// pages of private anonymous memory, pre-copied or sent in the final round, are not written by the
// restore but registered with userfaultfd and copied in by the daemon after the tree runs (faults
// first). So the restore after the freeze does not grow with memory. The destination reports
// success once the tree runs (every page is on the destination by then), then waits for the daemon;
// if it fails, the restored tree is killed (its memory would be missing).
//
// Protocol: one TCP connection, the source connects. Every message is a 16-byte header
// { u32 magic 0x474d4243 ("CBMG"); u32 type; u64 length } (little endian) and `length` bytes:
//   HELLO   (1) both ways, first: JSON { version: 1 }
//   ROUND   (2) source: JSON { round: n, final?: true }; then a CRIU page-server session (pageserver.ts: PS_IOV_*
//               requests up to PS_IOV_CLOSE and its int status) on the same connection; the
//               destination keeps it in DIR/<n>, whose `parent` is ../<n-1>
//   FILE    (3) source: u32 name length, the name, the bytes: an image of the final dump (the
//               round just sent), written 0600 into its directory
//   RESTORE (4) source: JSON {}: restore from the last round's directory now
//   RESULT  (5) destination: JSON { ok: true, pid, restoreMs } or { ok: false, error }
// Every read has a deadline (--timeout, default 30 s; 10 times that for the destination within a
// round, whose pages the source reads before it sends them; the restore's RESULT: at least 120 s),
// so a peer that dies or goes silent fails the migration cleanly instead of hanging it.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, lstatSync } from "node:fs";
import { join } from "node:path";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { closeFd } from "../sys/mem";
import { CriuError, log, logLevel } from "../log";
import { awaitLazyMemory } from "../resources/lazymem";
import { selfCommand } from "../cli/pageserver";
import { pausePoint } from "../fault";
import { writeNewFile } from "../images/safefs";
import {
  PageServerClient, serveSession, sockaddrIn, setDeadline, forgetSocket, writeAll, readAll, must, setInt, TCP_NODELAY,
  wireBytes,
} from "./pageserver";
import { dumpProcess } from "../dump/dump";
import { restoreProcesses, type RestoreOptions } from "../restore/restore";
import { dropTracking } from "../resources/memtrack";
import { linkParent } from "../codec/incremental";
import { errnoText } from "../sys/errno";
import { runLockTableName, dumpRunId, listLockTables } from "./netlock";

const MAGIC = 0x474d4243;
export const MSG = { HELLO: 1, ROUND: 2, FILE: 3, RESTORE: 4, RESULT: 5 } as const;
const VERSION = 1;
/** pre-copy rounds at most (the final dump comes after them) */
const MAX_ROUNDS = Number(process.env.CRIU_BUN_MIGRATE_ROUNDS ?? 8);
/** a dirty set this small (pages) is sent in the final dump at once */
const SMALL_DIRTY = 256;

const te = new TextEncoder(), td = new TextDecoder();

function send(fd: number, type: number, payload: Uint8Array, what: string) {
  const h = new Uint8Array(16), dv = new DataView(h.buffer);
  dv.setUint32(0, MAGIC, true); dv.setUint32(4, type, true); dv.setBigUint64(8, BigInt(payload.length), true);
  writeAll(fd, h, what);
  if (payload.length) writeAll(fd, payload, what);
}
const sendJson = (fd: number, type: number, v: unknown, what: string) => send(fd, type, te.encode(JSON.stringify(v)), what);

/** The next message; undefined at a clean end of stream. */
function recv(fd: number, what: string, maxLen = 1 << 30): { type: number; data: Uint8Array } | undefined {
  const h = new Uint8Array(16), dv = new DataView(h.buffer);
  if (!readAll(fd, h, what)) return undefined;
  if (dv.getUint32(0, true) !== MAGIC) throw new CriuError("migrate", `${what}: the peer does not speak criu-bun's migrate protocol`);
  const len = dv.getBigUint64(8, true);
  if (len > BigInt(maxLen)) throw new CriuError("migrate", `${what}: a message of ${len} bytes`);
  const data = new Uint8Array(Number(len));
  if (data.length && !readAll(fd, data, what)) throw new CriuError("migrate", `${what}: the connection ended in the middle of a message`);
  return { type: dv.getUint32(4, true), data };
}
function json(m: { data: Uint8Array }, what: string): any {
  try { return JSON.parse(td.decode(m.data)); } catch { throw new CriuError("migrate", `${what}: a damaged message`); }
}

const mib = (b: number) => (b / (1 << 20)).toFixed(1);
const out = (s: string) => { process.stdout.write(`migrate: ${s}\n`); log.info(s); };

// ---- source ----------------------------------------------------------------------------------

export interface MigrateSource {
  pid: number; host: string; port: number;
  /** local work directory (the rounds' metadata images; removed at the end) */
  dir: string;
  tcpEstablished?: boolean; timeoutSec?: number;
}

export interface RoundStat { round: number; pages: number; bytes: number; ms: number; frozenMs?: number }

export function migrateOut(o: MigrateSource): { rounds: RoundStat[]; downtimeMs: number; remotePid: number } {
  const timeoutSec = o.timeoutSec ?? 30;
  const fd = connect(o.host, o.port, timeoutSec);
  const work = mkdtempSync(join(o.dir, ".criu-bun-migrate-"));
  const rounds: RoundStat[] = [];
  let closed = false;
  let done = 0; // the last pre-copy round whose images are complete on both sides
  try {
    sendJson(fd, MSG.HELLO, { version: VERSION }, "sending HELLO to the destination");
    const hello = recv(fd, "reading the destination's HELLO");
    if (!hello || hello.type !== MSG.HELLO) throw new CriuError("migrate", "the destination did not answer HELLO");
    if (json(hello, "HELLO").version !== VERSION) throw new CriuError("migrate", `the destination speaks migrate protocol version ${json(hello, "HELLO").version}, not ${VERSION}`);
    const common = { pid: o.pid, tcpEstablished: !!o.tcpEstablished, timeoutSec };
    // pre-copy
    for (let n = 1; n <= MAX_ROUNDS; n++) {
      const sub = join(work, String(n));
      mkdirSync(sub, { mode: 0o700 });
      const b0 = wireBytes, t0 = performance.now();
      sendJson(fd, MSG.ROUND, { round: n }, "sending ROUND to the destination");
      const st = dumpProcess({ ...common, dir: sub, leaveRunning: true, preDump: true, liveRead: true, psClient: new PageServerClient(o.host, o.port, timeoutSec, fd),
        prevImagesDir: n > 1 ? `../${n - 1}` : undefined });
      done = n;
      const r = { round: n, pages: st.pagesWritten, bytes: wireBytes - b0, ms: performance.now() - t0, frozenMs: (st.freezingTime + st.frozenTime) / 1000 };
      rounds.push(r);
      // a pre-copy round freezes the tree only to find its state and which pages to send (liveRead)
      out(`round ${n}: ${r.pages} pages, ${r.bytes} bytes (${mib(r.bytes)} MiB) sent in ${r.ms.toFixed(0)} ms, the tree frozen ${r.frozenMs.toFixed(0)} ms of it`);
      pausePoint("migrate-round");
      const prev = rounds[rounds.length - 2];
      if (r.pages <= SMALL_DIRTY) break;
      if (prev && r.pages > prev.pages * 0.9) { log.info(`the dirty set stopped shrinking (${prev.pages} -> ${r.pages} pages)`); break; }
    }
    // the final dump: frozen until the destination runs the tree, then killed
    const n = done + 1;
    const sub = join(work, String(n));
    mkdirSync(sub, { mode: 0o700 });
    const b0 = wireBytes, t0 = performance.now();
    let downtimeMs = 0, remotePid = 0, restoreMs = 0, finalPages = 0, pagesBytes = 0;
    sendJson(fd, MSG.ROUND, { round: n, final: true }, "sending ROUND to the destination");
    const st = dumpProcess({ ...common, dir: sub, prevImagesDir: `../${done}`, psClient: new PageServerClient(o.host, o.port, timeoutSec, fd),
      handOff: (dir, frozenAt) => {
        pagesBytes = wireBytes - b0;
        for (const f of readdirSync(dir).sort()) {
          if (f === "parent" || !lstatSync(join(dir, f)).isFile() || f.startsWith("memtrack-") || f.endsWith(".log")) continue;
          const name = te.encode(f), data = readFileSync(join(dir, f));
          const p = new Uint8Array(4 + name.length + data.length);
          new DataView(p.buffer).setUint32(0, name.length, true);
          p.set(name, 4); p.set(data, 4 + name.length);
          send(fd, MSG.FILE, p, "sending images to the destination");
        }
        sendJson(fd, MSG.RESTORE, {}, "sending RESTORE to the destination");
        setDeadline(fd, Math.max(120, timeoutSec), "the destination");
        const res = recv(fd, "waiting for the destination's restore");
        if (!res) throw new CriuError("migrate", "the destination closed the connection before it reported the restore");
        if (res.type !== MSG.RESULT) throw new CriuError("migrate", `unexpected message ${res.type} instead of the restore's result`);
        const v = json(res, "RESULT");
        if (!v.ok) throw new CriuError("migrate", `the destination could not restore: ${v.error}`);
        downtimeMs = performance.now() - frozenAt;
        remotePid = v.pid; restoreMs = v.restoreMs;
      } });
    finalPages = st.pagesWritten;
    const r = { round: n, pages: finalPages, bytes: wireBytes - b0, ms: performance.now() - t0 };
    rounds.push(r);
    out(`final: ${r.pages} pages (${pagesBytes} bytes with the page stream), ${r.bytes} bytes in all (${mib(r.bytes)} MiB)`);
    out(`downtime ${downtimeMs.toFixed(1)} ms (frozen here until running there; the restore took ${Number(restoreMs).toFixed(1)} ms of it)`);
    out(`process ${o.pid} runs on ${o.host} as pid ${remotePid}; ${rounds.reduce((s, x) => s + x.bytes, 0)} bytes sent in ${rounds.length} round(s)`);
    // the dump's network lock stays here, as CRIU leaves it after a dump: the peers' packets that
    // still come here until the network sends them to the destination are dropped by it; without
    // it this kernel would answer them with RST and the moved connections would die
    const lock = runLockTableName(dumpRunId(o.pid));
    if (o.tcpEstablished && listLockTables().includes(lock)) {
      out(`the network lock (nftables table inet ${lock}) stays here: it keeps this host from resetting the moved connections while their peers' packets still come here; once they go to the destination: nft delete table inet ${lock}`);
    }
    return { rounds, downtimeMs, remotePid };
  } catch (e) {
    // the tree was let go by the dump that failed; the tracking the pre-copy armed ends too
    // (the connection first: a destination still waiting learns at once that it is over)
    forgetSocket(fd); closeFd(fd); closed = true;
    if (done) dropTracking(join(work, String(done)));
    log.info(`migration of ${o.pid} failed; it goes on running here`);
    // the page stream's errors are the migration's
    throw e instanceof CriuError && e.where === "page-server" ? new CriuError("migrate", e.message.replace(/the page server|the peer/g, "the destination")) : e;
  } finally {
    if (!closed) { forgetSocket(fd); closeFd(fd); }
    rmSync(work, { recursive: true, force: true });
  }
}

function connect(host: string, port: number, timeoutSec: number): number {
  const fd = must("socket", syscall(NR.socket, 2, 1 | 0o2000000, 0));
  try {
    setDeadline(fd, timeoutSec, "the destination");
    const sa = sockaddrIn(host, port);
    const r = syscall(NR.connect, fd, addr(sa), sa.length);
    if (r < 0) {
      throw new CriuError("migrate", r === -115 || r === -11 ? `cannot connect to the destination ${host}:${port} within ${timeoutSec} s (--timeout)`
        : `cannot connect to the destination ${host}:${port} (${errnoText(-r)}${r === -111 ? ": nothing listens there" : ""})`);
    }
    TCP_NODELAY(fd, true);
    return fd;
  } catch (e) { forgetSocket(fd); closeFd(fd); throw e; }
}

// ---- destination -----------------------------------------------------------------------------

export interface MigrateListen {
  address: string; port: number;
  /** where the rounds' images are received (a private directory inside, removed at the end) */
  dir: string;
  timeoutSec?: number;
  restore: Omit<RestoreOptions, "dir">;
  /**
   * post-copy (the default): the final restore leaves the pre-copied pages of private anonymous
   * memory to a lazy-pages daemon reading them from the received images, so the tree runs without
   * waiting for them; false: the restore writes every page first
   */
  postCopy?: boolean;
  onListening?: () => void;
}

/**
 * The lazy-pages daemon of a post-copy restore (`criu-bun lazy-pages -D WORK/final -W WORK`, pages
 * from the images), started before the rounds so that it is waiting when the restore needs it. Its
 * stdin is a pipe from here: if this process goes before any restore, so does it.
 */
function startImageDaemon(work: string, logDir: string, timeoutSec: number): { pid: number; proc: ReturnType<typeof Bun.spawn> } {
  const final = join(work, "final");
  mkdirSync(final, { mode: 0o700 });
  const fds = new Int32Array(2);
  must("pipe2", syscall(NR.pipe2, addr(fds), 0o2000000));
  let proc;
  try {
    proc = Bun.spawn([...selfCommand(), "lazy-pages", "-D", final, "-W", work, "--status-fd", "3", `-v${logLevel()}`, "-o", join(logDir, "lazy-pages.log")], {
      stdio: ["pipe", "ignore", "inherit", fds[1]], env: { ...process.env, CRIU_BUN_LAZY_WATCH_FD: "0" },
    });
  } finally { closeFd(fds[1]); }
  try {
    const pfd = new Int32Array([fds[0], 1]);
    const until = performance.now() + timeoutSec * 1000;
    for (;;) {
      const left = Math.max(0, Math.ceil(until - performance.now()));
      const n = syscall(NR.poll, addr(pfd), 1, left);
      if (n === -4) continue;
      const b = new Uint8Array(1);
      if (n > 0 && syscall(NR.read, fds[0], addr(b), 1) === 1) break;
      proc.kill(9);
      throw new CriuError("migrate", n === 0 ? `the lazy-pages daemon (pid ${proc.pid}) did not start within ${timeoutSec} s` : `the lazy-pages daemon (pid ${proc.pid}) exited before listening; see ${join(logDir, "lazy-pages.log")}`);
    }
  } finally { closeFd(fds[0]); }
  log.info(`post-copy: lazy-pages daemon ${proc.pid} waits for the restore at ${work}`);
  return { pid: proc.pid, proc };
}

export function migrateIn(o: MigrateListen): { pid: number } {
  const timeoutSec = o.timeoutSec ?? 30;
  const ls = must("socket", syscall(NR.socket, 2, 1 | 0o2000000, 0));
  let conn = -1;
  let work: string | undefined;
  let daemon: ReturnType<typeof startImageDaemon> | undefined;
  let served = false;
  try {
    setInt(ls, 1 /* SOL_SOCKET */, 2 /* SO_REUSEADDR */, 1);
    const sa = sockaddrIn(o.address, o.port);
    const r = syscall(NR.bind, ls, addr(sa), sa.length);
    if (r < 0) throw new CriuError("migrate", `cannot listen on ${o.address}:${o.port} (${errnoText(-r)})`);
    must("listen", syscall(NR.listen, ls, 1));
    out(`listening on ${o.address}:${o.port}`);
    o.onListening?.();
    for (;;) {
      conn = syscall(NR.accept, ls, 0, 0);
      if (conn !== -4) break;
    }
    must("accept", conn);
    TCP_NODELAY(conn, true);
    setDeadline(conn, timeoutSec, "the source");
    work = mkdtempSync(join(o.dir, ".criu-bun-migrate-in-"));
    let cur = "", round = 0, final = false;
    for (;;) {
      const m = recv(conn, round ? `waiting for the source (after round ${round})` : "waiting for the source's HELLO");
      if (!m) throw new CriuError("migrate", `the source closed the connection ${round ? `after round ${round}` : "before HELLO"}, before the restore; nothing was restored`);
      if (m.type === MSG.HELLO) {
        const v = json(m, "HELLO").version;
        sendJson(conn, MSG.HELLO, { version: VERSION }, "answering HELLO");
        if (v !== VERSION) throw new CriuError("migrate", `the source speaks migrate protocol version ${v}, not ${VERSION}`);
        if (o.postCopy !== false && !daemon) daemon = startImageDaemon(work!, o.dir, timeoutSec);
      } else if (m.type === MSG.ROUND) {
        const v = json(m, "ROUND"), n = Number(v.round);
        if (n !== round + 1) throw new CriuError("migrate", `round ${n} after round ${round}`);
        // the final round goes where the post-copy daemon reads it
        final = v.final === true && n > 1 && !!daemon;
        cur = join(work, final ? "final" : String(n));
        if (!final) mkdirSync(cur, { mode: 0o700 });
        if (n > 1) linkParent(cur, `../${n - 1}`);
        const b0 = wireBytes, t0 = performance.now();
        // within a round the source reads all of a process's pages before it sends them (a
        // pre-dump of GiBs under load): a longer deadline there; a source that dies still ends it at once
        setDeadline(conn, timeoutSec * 10, "the source");
        const pages = serveSession(conn, cur, timeoutSec, true);
        round = n;
        log.info(`round ${n}: ${pages} pages received in ${(performance.now() - t0).toFixed(0)} ms (${wireBytes - b0} bytes sent back)`);
        setDeadline(conn, timeoutSec, "the source");
      } else if (m.type === MSG.FILE) {
        if (!cur) throw new CriuError("migrate", "an image before any round");
        const dv = new DataView(m.data.buffer, m.data.byteOffset, m.data.byteLength);
        const nl = m.data.length >= 4 ? dv.getUint32(0, true) : -1;
        if (nl < 1 || 4 + nl > m.data.length) throw new CriuError("migrate", "a damaged FILE message");
        const name = td.decode(m.data.subarray(4, 4 + nl));
        if (!/^[A-Za-z0-9_.+-]+$/.test(name) || name.startsWith(".") || name === "parent" || /^pages-\d+\.img$|^pagemap-/.test(name)) {
          throw new CriuError("migrate", `the source sent an image named '${name}', which it may not`);
        }
        writeNewFile(join(cur, name), m.data.subarray(4 + nl), false);
      } else if (m.type === MSG.RESTORE) {
        if (!cur) throw new CriuError("migrate", "RESTORE before any round");
        const t0 = performance.now();
        let res: Record<string, unknown>;
        // post-copy: the pre-copied pages of private anonymous memory come after the tree runs
        const post = final && daemon ? { lazyPages: true, lazyParents: true, workDir: work } : {};
        if (!final && daemon) { daemon.proc.kill(9); daemon = undefined; }
        let st;
        try {
          st = restoreProcesses({ ...o.restore, ...post, dir: cur, timeoutSec: o.restore.timeoutSec });
          res = { ok: true, pid: st.pid, restoreMs: performance.now() - t0 };
          out(`restored pid ${st.pid} in ${(performance.now() - t0).toFixed(1)} ms${st.lazy ? " (its pre-copied memory follows)" : ""}`);
        } catch (e: any) {
          res = { ok: false, error: e?.message ?? String(e) };
          sendJson(conn, MSG.RESULT, res, "reporting the restore's failure");
          throw e;
        }
        // the source may go now: the tree runs here and all its memory is here
        try { sendJson(conn, MSG.RESULT, res, "reporting the restore"); }
        catch (e) { st.lazy?.close(); throw e; }
        served = true;
        if (st.lazy) {
          // the daemon copies the rest in; if it fails the tree cannot go on (its memory is missing): killed
          awaitLazyMemory(st.lazy, st.pids, st.pid, false);
          out(`all memory of pid ${st.pid} in ${(performance.now() - t0).toFixed(1)} ms after the restore began`);
        }
        return { pid: res.pid as number };
      } else {
        throw new CriuError("migrate", `unknown message ${m.type} from the source`);
      }
    }
  } finally {
    if (conn >= 0) { forgetSocket(conn); closeFd(conn); }
    closeFd(ls);
    // a daemon with no restore served (the migration failed before): gone
    if (daemon && !served) daemon.proc.kill(9);
    if (work) rmSync(work, { recursive: true, force: true });
  }
}
