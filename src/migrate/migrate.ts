// criu-bun migrate: live migration of a process tree to another criu-bun, criu-bun's own command.
//
// Source: `migrate -t PID --to HOST:PORT`; destination: `migrate --listen PORT`. Iterative pre-copy
// with memory tracking (memtrack.ts): round 1 is a pre-dump sending every page, each later round a
// pre-dump sending only the pages written since the round before (each reads its pages after
// letting the tree go, tracking already armed: dumpProcess liveRead), until the dirty set stops
// shrinking (or is small, or MAX_ROUNDS). Then the final dump: the tree is frozen, the state (and
// the last dirty pages that cannot be post-copied) go over, the destination restores and says
// READY, the source commits (COMMIT), the destination lets the copy run and reports it (RESULT).
//
// At most one copy ever runs. Before the commit any failure (the peer dies or goes silent, the
// restore fails, no COMMIT comes) kills the destination's copy, which never ran, and lets the
// source go on as it was: running, not traced, its tracking userfaultfd closed, its connections out
// of repair mode and no network lock left. At the commit the source queues a SIGSTOP to each of its
// processes: from then on it never runs again. It is killed once the copy has all its memory;
// if the post-copy fails (the source, the destination or the link dies) the destination kills its
// copy (its memory is incomplete) and the source tree is left stopped, whole: not resumed (its
// copy ran, and may have spoken to the world), not killed (it is the only whole copy): the
// operator kills it, or resumes it (kill -CONT) knowing that the copy ran. If criu-bun itself dies
// after the commit, the queued SIGSTOP leaves the tree stopped in the same way. (CRIU's lazy
// migration resumes the source when its lazy-pages daemon goes away, even though the restored
// copy already ran.)
//
// Post-copy from the source (both sides' default; --no-post-copy on the source: off): the final
// round sends no page of private anonymous memory; those runs go as PE_LAZY, and the source serves
// them from the frozen tree (PS_IOV_GET, /proc/PID/mem) on a second connection it opens at HELLO,
// which the destination hands to its lazy-pages daemon. The daemon takes them first (faults first),
// then tells the source (PS_IOV_CLOSE), which kills the tree; the pre-copied pages come from the
// images after. The frozen window holds: freeze, state dump, its transfer, the restore of state.
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
//   READY   (6) destination: JSON { restoreMs }: restored, waiting for COMMIT to let it run
//   COMMIT  (7) source: JSON {}: the source will never run again; let the copy run
//   RESULT  (5) destination: JSON { ok: true, pid, restoreMs } (the copy runs) or { ok: false, error }
//   LAZYCONN (8) source, first on its second connection: JSON { token } (HELLO's answer gave the token)
//   PRECHECK (9) source, after a pre-copy round's FILEs (its state images): JSON { round }: the
//               destination checks them as a restore would, creating nothing; a problem is logged
//               (a warning: the final round's state may differ), and the restore after the freeze
//               finds its code compiled and the mapped files read; { round, last: true } for the
//               last pre-copy round: the destination answers PRECHECKED once done, and only then
//               does the source freeze the tree for the final round
//   PRECHECKED (10) destination: JSON { round }: the last pre-copy round is checked
// HELLO's JSON: source { version, postCopySource }, destination { version, postCopySource, token }.
// Every read has a deadline (--timeout, default 30 s; 10 times that for the destination within a
// round, whose pages the source reads before it sends them; the restore's RESULT: at least 120 s),
// so a peer that dies or goes silent fails the migration cleanly instead of hanging it.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, lstatSync } from "../sys/fs";
import { join } from "../sys/path";
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { closeFd, O } from "../sys/mem";
import { AF, SOCK, SOL, SO } from "../sys/sock";
import { CriuError, log, logLevel, errorMessage } from "../log";
import { prestartPuppet, renicePuppet, dropPuppet } from "../ptrace/puppet";
import { awaitLazyMemory } from "../resources/lazymem";
import { selfCommand } from "../version";
import { pausePoint } from "../fault";
import { writeNewFile } from "../images/safefs";
import {
  PageServerClient,
  serveSession,
  sockaddrIn,
  setDeadline,
  forgetSocket,
  writeAll,
  readAll,
  must,
  setInt,
  TCP_NODELAY,
  wireBytes,
  LazyPageServer,
  type LazySource,
  warmCoverage,
} from "../net/pageserver";
import { dumpProcess } from "../dump/dump";
import { warmPageBuffers } from "../codec/pipeline";
import { restoreProcesses, checkRestorable, type RestoreOptions } from "../restore/restore";
import { dropTracking } from "../resources/memtrack";
import { linkParent, warmParentRuns } from "../codec/incremental";
import { errnoText } from "../sys/errno";
import { runLockTableName, dumpRunId, listLockTables } from "../net/netlock";
import { setThreadNice, readStat } from "../sys/proc";

/**
 * The frozen window (the final round on the source; its pages, images and restore on the
 * destination) runs at nice -20: the tree waits on it, and a busy machine's other work would
 * otherwise stretch the downtime. Only criu-bun's own thread (a restored thread gets its dumped
 * nice back: threads.ts); CRIU_BUN_MIGRATE_NICE=0: not raised. Returns what undoes it.
 */
function boost(): () => void {
  if (process.env.CRIU_BUN_MIGRATE_NICE === "0") return () => {};
  const old = setThreadNice(-20);
  if (old === undefined) {
    log.debug("migrate: the frozen window runs at this thread's nice (it cannot be raised)");
    return () => {};
  }
  log.debug(`migrate: the frozen window runs at nice -20 (from ${old})`);
  let done = false;
  return () => {
    if (!done) {
      done = true;
      setThreadNice(old);
    }
  };
}

const MAGIC = 0x474d4243;
const MSG = {
  HELLO: 1,
  ROUND: 2,
  FILE: 3,
  RESTORE: 4,
  RESULT: 5,
  READY: 6,
  COMMIT: 7,
  LAZYCONN: 8,
  PRECHECK: 9,
  PRECHECKED: 10,
} as const;
const VERSION = 3;
/** pre-copy rounds at most (the final dump comes after them) */
const MAX_ROUNDS = Number(process.env.CRIU_BUN_MIGRATE_ROUNDS ?? 8);
/** a dirty set this small (pages) is sent in the final dump at once */
const SMALL_DIRTY = 256;

const te = new TextEncoder(),
  td = new TextDecoder();

function send(fd: number, type: number, payload: Uint8Array, what: string) {
  const h = new Uint8Array(16),
    dv = new DataView(h.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, type, true);
  dv.setBigUint64(8, BigInt(payload.length), true);
  writeAll(fd, h, what);
  if (payload.length) writeAll(fd, payload, what);
}
const sendJson = (fd: number, type: number, v: unknown, what: string) =>
  send(fd, type, te.encode(JSON.stringify(v)), what);

/** The next message; undefined at a clean end of stream. */
function recv(fd: number, what: string, maxLen = 1 << 30): { type: number; data: Uint8Array } | undefined {
  const h = new Uint8Array(16),
    dv = new DataView(h.buffer);
  if (!readAll(fd, h, what)) return undefined;
  if (dv.getUint32(0, true) !== MAGIC)
    throw new CriuError("migrate", `${what}: the peer does not speak criu-bun's migrate protocol`);
  const len = dv.getBigUint64(8, true);
  if (len > BigInt(maxLen)) throw new CriuError("migrate", `${what}: a message of ${len} bytes`);
  const data = new Uint8Array(Number(len));
  if (data.length && !readAll(fd, data, what))
    throw new CriuError("migrate", `${what}: the connection ended in the middle of a message`);
  return { type: dv.getUint32(4, true), data };
}
/** A protocol message's JSON body, as the peer sent it: each field is checked where it is read. */
type WireBody = Record<string, unknown>;
function json(m: { data: Uint8Array }, what: string): WireBody {
  try {
    return JSON.parse(td.decode(m.data));
  } catch {
    throw new CriuError("migrate", `${what}: a damaged message`);
  }
}

const mib = (b: number) => (b / (1 << 20)).toFixed(1);
const out = (s: string) => {
  process.stdout.write(`migrate: ${s}\n`);
  log.info(s);
};

// ---- source ----------------------------------------------------------------------------------

interface MigrateSource {
  pid: number;
  host: string;
  port: number;
  /** local work directory (the rounds' metadata images; removed at the end) */
  dir: string;
  tcpEstablished?: boolean;
  timeoutSec?: number;
  /**
   * post-copy from the source (default; --no-post-copy: off): the final round sends no page of
   * private anonymous memory; the destination's lazy-pages daemon takes them from the frozen tree
   * after its copy runs (a second connection), and only then is the tree killed
   */
  postCopy?: boolean;
}

interface RoundStat {
  round: number;
  pages: number;
  bytes: number;
  ms: number;
  frozenMs?: number;
}

export function migrateOut(o: MigrateSource): { rounds: RoundStat[]; downtimeMs: number; remotePid: number } {
  const timeoutSec = o.timeoutSec ?? 30;
  const fd = connect(o.host, o.port, timeoutSec);
  const work = mkdtempSync(join(o.dir, ".criu-bun-migrate-"));
  const rounds: RoundStat[] = [];
  let closed = false;
  /** post-copy from the source: the connection the destination's lazy-pages daemon asks on */
  let lazyFd = -1;
  let done = 0; // the last pre-copy round whose images are complete on both sides
  try {
    sendJson(
      fd,
      MSG.HELLO,
      { version: VERSION, postCopySource: o.postCopy !== false },
      "sending HELLO to the destination"
    );
    const hello = recv(fd, "reading the destination's HELLO");
    if (!hello || hello.type !== MSG.HELLO) throw new CriuError("migrate", "the destination did not answer HELLO");
    const hv = json(hello, "HELLO");
    if (hv.version !== VERSION)
      throw new CriuError("migrate", `the destination speaks migrate protocol version ${hv.version}, not ${VERSION}`);
    // post-copy from the source: the destination's lazy-pages daemon gets its own connection
    if (hv.postCopySource === true && typeof hv.token === "string") {
      lazyFd = connect(o.host, o.port, timeoutSec);
      sendJson(lazyFd, MSG.LAZYCONN, { token: hv.token }, "opening the post-copy connection to the destination");
      log.info(
        "post-copy from the source: the final round's pages of private anonymous memory stay here until the copy runs"
      );
    }
    const common = { pid: o.pid, tcpEstablished: !!o.tcpEstablished, timeoutSec };
    // pre-copy
    for (let n = 1; n <= MAX_ROUNDS; n++) {
      const sub = join(work, String(n));
      mkdirSync(sub, { mode: 0o700 });
      const b0 = wireBytes,
        t0 = performance.now();
      sendJson(fd, MSG.ROUND, { round: n }, "sending ROUND to the destination");
      const st = dumpProcess({
        ...common,
        dir: sub,
        leaveRunning: true,
        preDump: true,
        liveRead: true,
        psClient: new PageServerClient(o.host, o.port, timeoutSec, fd),
        prevImagesDir: n > 1 ? `../${n - 1}` : undefined,
      });
      done = n;
      // its state images too: the destination checks them now (PRECHECK), not after the freeze
      sendImages(fd, sub);
      const r = {
        round: n,
        pages: st.pagesWritten,
        bytes: wireBytes - b0,
        ms: performance.now() - t0,
        frozenMs: (st.freezingTime + st.frozenTime) / 1000,
      };
      rounds.push(r);
      const prev = rounds[rounds.length - 2];
      const shrinking = !prev || r.pages <= prev.pages * 0.9;
      const last = r.pages <= SMALL_DIRTY || !shrinking || n === MAX_ROUNDS;
      sendJson(fd, MSG.PRECHECK, { round: n, last }, "sending PRECHECK to the destination");
      // a pre-copy round freezes the tree only to find its state and which pages to send (liveRead)
      out(
        `round ${n}: ${r.pages} pages, ${r.bytes} bytes (${mib(r.bytes)} MiB) sent in ${r.ms.toFixed(0)} ms, the tree frozen ${r.frozenMs.toFixed(0)} ms of it`
      );
      if (last) {
        // the final round freezes the tree only once the destination is done with this one's
        // check (it would answer the final round's first request only after it, the tree frozen)
        const t1 = performance.now();
        const a = recv(fd, "waiting for the destination's check of the last pre-copy round");
        if (!a) throw new CriuError("migrate", "the destination closed the connection after the last pre-copy round");
        if (a.type !== MSG.PRECHECKED)
          throw new CriuError("migrate", `unexpected message ${a.type} from the destination instead of PRECHECKED`);
        log.info(`round ${n}: the destination checked it; waited ${(performance.now() - t1).toFixed(1)} ms for that`);
      }
      pausePoint("migrate-round");
      if (!shrinking && r.pages > SMALL_DIRTY)
        log.info(`the dirty set stopped shrinking (${prev.pages} -> ${r.pages} pages)`);
      if (last) break;
    }
    // the final dump: frozen until the destination runs the tree, then killed
    const n = done + 1;
    const sub = join(work, String(n));
    mkdirSync(sub, { mode: 0o700 });
    const b0 = wireBytes,
      t0 = performance.now();
    let downtimeMs = 0,
      remotePid = 0,
      restoreMs = 0,
      finalPages = 0,
      pagesBytes = 0;
    const lazySources = lazyFd >= 0 ? new Map<number, LazySource>() : undefined;
    let srv: LazyPageServer | undefined;
    let lazyOpen = false;
    const tFrozen = { at: 0 };
    const unboost = boost();
    sendJson(fd, MSG.ROUND, { round: n, final: true }, "sending ROUND to the destination");
    const st = dumpProcess({
      ...common,
      dir: sub,
      prevImagesDir: `../${done}`,
      psClient: new PageServerClient(o.host, o.port, timeoutSec, fd),
      lazySources,
      handOff: (dir, frozenAt, commit) => {
        tFrozen.at = frozenAt;
        pagesBytes = wireBytes - b0;
        log.info(
          `migrate: images of the final round written and their pages sent, ${(performance.now() - frozenAt).toFixed(1)} ms after the freeze`
        );
        sendImages(fd, dir);
        sendJson(fd, MSG.RESTORE, {}, "sending RESTORE to the destination");
        log.info(
          `migrate: images sent, RESTORE asked ${(performance.now() - frozenAt).toFixed(1)} ms after the freeze`
        );
        if (lazySources) {
          srv = new LazyPageServer(lazyFd, lazySources, timeoutSec, true);
          lazyOpen = true;
        }
        // the restore's own faults on the copy's memory (the kernel touching it: rseq, robust
        // list...) are answered while it waits; READY: the copy is restored and waits for COMMIT
        const waitSec = Math.max(120, timeoutSec),
          until = performance.now() + waitSec * 1000;
        let committed = false,
          lazyLost: Error | undefined;
        for (;;) {
          const left = Math.ceil(until - performance.now());
          if (left <= 0)
            throw new CriuError("migrate", `the destination did not report its restore within ${waitSec} s`);
          const pfd = new Int32Array(lazyOpen ? [fd, 1, lazyFd, 1] : [fd, 1]);
          const r = syscall(NR.poll, addr(pfd), lazyOpen ? 2 : 1, left);
          if (r === -4 || r === 0) continue;
          if (r < 0) throw new CriuError("migrate", `poll failed: ${errnoText(-r)}`);
          if (lazyOpen && pfd[3] >>> 16) {
            try {
              if (!srv!.serveOne()) lazyOpen = false; // the copy has all it needs already
            } catch (e) {
              // before the commit: the restore failing ends its daemon too; its RESULT says why
              if (committed) throw e;
              lazyOpen = false;
              lazyLost = e as Error;
            }
            continue;
          }
          if (!(pfd[1] >>> 16)) continue;
          const res = recv(fd, "waiting for the destination's restore");
          if (!res)
            throw new CriuError("migrate", "the destination closed the connection before it reported the restore");
          if (res.type === MSG.READY && !committed) {
            if (lazyLost)
              throw new CriuError(
                "migrate",
                `the destination's lazy-pages daemon went away before the copy ran (${lazyLost.message})`
              );
            commit();
            committed = true;
            sendJson(fd, MSG.COMMIT, {}, "letting the destination run the copy");
            log.info(
              `migrate: the destination restored the tree in ${Number(json(res, "READY").restoreMs).toFixed(1)} ms; committed to it ${(performance.now() - frozenAt).toFixed(1)} ms after the freeze`
            );
            continue;
          }
          if (res.type !== MSG.RESULT)
            throw new CriuError("migrate", `unexpected message ${res.type} instead of the restore's result`);
          const v = json(res, "RESULT");
          if (!v.ok) throw new CriuError("migrate", `the destination could not restore: ${v.error}`);
          if (!committed) throw new CriuError("migrate", "the destination reported a restore it was not let run");
          downtimeMs = performance.now() - frozenAt;
          remotePid = v.pid as number; // (RESULT as the destination sends it, below)
          restoreMs = v.restoreMs as number;
          unboost();
          break;
        }
        if (srv)
          out(
            `the tree runs on the destination (pid ${remotePid}) after ${downtimeMs.toFixed(1)} ms frozen; ${srv.total - srv.served} of its pages go from here now (post-copy)`
          );
      },
      // the copy runs: the pages still here go to it; once it has them all the tree is killed
      afterHandOff: lazySources
        ? () => {
            pausePoint("migrate-post-copy");
            while (lazyOpen && srv!.serveOne());
            lazyOpen = false;
          }
        : undefined,
    });
    srv?.close();
    unboost();
    finalPages = st.pagesWritten;
    const r = { round: n, pages: finalPages, bytes: wireBytes - b0, ms: performance.now() - t0 };
    rounds.push(r);
    out(
      `final: ${r.pages} pages (${pagesBytes} bytes with the page stream), ${r.bytes} bytes in all (${mib(r.bytes)} MiB)${srv ? `; ${srv.served} pages post-copied from here after the copy ran (of ${srv.total} left here)` : ""}`
    );
    out(
      `downtime ${downtimeMs.toFixed(1)} ms (frozen here until running there; the restore took ${Number(restoreMs).toFixed(1)} ms of it)`
    );
    out(
      `process ${o.pid} runs on ${o.host} as pid ${remotePid}; ${rounds.reduce((s, x) => s + x.bytes, 0)} bytes sent in ${rounds.length} round(s)`
    );
    // the dump's network lock stays here, as CRIU leaves it after a dump: the peers' packets that
    // still come here until the network sends them to the destination are dropped by it; without
    // it this kernel would answer them with RST and the moved connections would die
    const lock = runLockTableName(dumpRunId(o.pid));
    if (o.tcpEstablished && listLockTables().includes(lock)) {
      out(
        `the network lock (nftables table inet ${lock}) stays here: it keeps this host from resetting the moved connections while their peers' packets still come here; once they go to the destination: nft delete table inet ${lock}`
      );
    }
    return { rounds, downtimeMs, remotePid };
  } catch (e) {
    // the tree was let go by the dump that failed; the tracking the pre-copy armed ends too
    // (the connection first: a destination still waiting learns at once that it is over)
    forgetSocket(fd);
    closeFd(fd);
    closed = true;
    if (lazyFd >= 0) {
      forgetSocket(lazyFd);
      closeFd(lazyFd);
      lazyFd = -1;
    }
    if (done) dropTracking(join(work, String(done)));
    log.info(
      `migration of ${o.pid} failed; ${/is left stopped/.test(e instanceof Error ? e.message : "") ? "it is left stopped here (its copy ran)" : "it goes on running here"}`
    );
    // the page stream's errors are the migration's
    throw e instanceof CriuError && e.where === "page-server"
      ? new CriuError("migrate", e.message.replace(/the page server|the peer/g, "the destination"))
      : e;
  } finally {
    if (!closed) {
      forgetSocket(fd);
      closeFd(fd);
    }
    if (lazyFd >= 0) {
      forgetSocket(lazyFd);
      closeFd(lazyFd);
    }
    rmSync(work, { recursive: true, force: true });
  }
}

/** A round's images but its pages (those went through the page server) to the destination, as FILEs. */
function sendImages(fd: number, dir: string) {
  for (const f of readdirSync(dir).sort()) {
    if (f === "parent" || !lstatSync(join(dir, f)).isFile() || f.startsWith("memtrack-") || f.endsWith(".log"))
      continue;
    const name = te.encode(f),
      data = readFileSync(join(dir, f));
    const p = new Uint8Array(4 + name.length + data.length);
    new DataView(p.buffer).setUint32(0, name.length, true);
    p.set(name, 4);
    p.set(data, 4 + name.length);
    send(fd, MSG.FILE, p, "sending images to the destination");
  }
}

function connect(host: string, port: number, timeoutSec: number): number {
  const fd = must("socket", syscall(NR.socket, AF.INET, SOCK.STREAM | SOCK.CLOEXEC, 0));
  try {
    setDeadline(fd, timeoutSec, "the destination");
    const sa = sockaddrIn(host, port);
    const r = syscall(NR.connect, fd, addr(sa), sa.length);
    if (r < 0) {
      throw new CriuError(
        "migrate",
        r === -115 || r === -11
          ? `cannot connect to the destination ${host}:${port} within ${timeoutSec} s (--timeout)`
          : `cannot connect to the destination ${host}:${port}: ${errnoText(-r)}${r === -111 ? ": nothing listens there" : ""}`
      );
    }
    TCP_NODELAY(fd, true);
    return fd;
  } catch (e) {
    forgetSocket(fd);
    closeFd(fd);
    throw e;
  }
}

// ---- destination -----------------------------------------------------------------------------

interface MigrateListen {
  address: string;
  port: number;
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
function startImageDaemon(
  work: string,
  logDir: string,
  timeoutSec: number,
  sourceFd?: number
): { pid: number; proc: ReturnType<typeof Bun.spawn> } {
  const final = join(work, "final");
  mkdirSync(final, { mode: 0o700 });
  const fds = new Int32Array(2);
  must("pipe2", syscall(NR.pipe2, addr(fds), O.CLOEXEC));
  let proc;
  try {
    // post-copy from the source: its connection is the daemon's fd 4
    proc = Bun.spawn(
      [
        ...selfCommand(),
        "lazy-pages",
        "-D",
        final,
        "-W",
        work,
        "--status-fd",
        "3",
        `-v${logLevel()}`,
        "-o",
        join(logDir, "lazy-pages.log"),
        "--timeout",
        String(timeoutSec),
      ],
      {
        stdio:
          sourceFd !== undefined
            ? ["pipe", "ignore", "inherit", fds[1], sourceFd]
            : ["pipe", "ignore", "inherit", fds[1]],
        env: {
          ...process.env,
          CRIU_BUN_LAZY_WATCH_FD: "0",
          ...(sourceFd !== undefined ? { CRIU_BUN_LAZY_SOURCE_FD: "4" } : {}),
        },
      }
    );
  } finally {
    closeFd(fds[1]);
  }
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
      throw new CriuError(
        "migrate",
        n === 0
          ? `the lazy-pages daemon (pid ${proc.pid}) did not start within ${timeoutSec} s`
          : `the lazy-pages daemon (pid ${proc.pid}) exited before listening; see ${join(logDir, "lazy-pages.log")}`
      );
    }
  } finally {
    closeFd(fds[0]);
  }
  log.info(
    `post-copy: lazy-pages daemon ${proc.pid} waits for the restore at ${work}${sourceFd !== undefined ? " (the final round's pages of private anonymous memory from the source)" : ""}`
  );
  return { pid: proc.pid, proc };
}

/** The source's second connection (post-copy from the source), which must carry the token HELLO gave it. */
function acceptLazyConn(ls: number, token: string, timeoutSec: number): number {
  const pfd = new Int32Array([ls, 1]);
  const until = performance.now() + timeoutSec * 1000;
  for (;;) {
    const left = Math.ceil(until - performance.now());
    if (left <= 0)
      throw new CriuError("migrate", `the source did not open its post-copy connection within ${timeoutSec} s`);
    const n = syscall(NR.poll, addr(pfd), 1, left);
    if (n === -4 || n === 0) continue;
    if (n < 0) throw new CriuError("migrate", `poll failed: ${errnoText(-n)}`);
    break;
  }
  const c = must("accept", syscall(NR.accept4, ls, 0, 0, SOCK.CLOEXEC));
  try {
    setDeadline(c, timeoutSec, "the source");
    const m = recv(c, "reading the source's post-copy connection");
    if (!m || m.type !== MSG.LAZYCONN || json(m, "LAZYCONN").token !== token)
      throw new CriuError("migrate", "a connection that is not the source's post-copy connection came instead of it");
    TCP_NODELAY(c, true);
    forgetSocket(c);
    return c;
  } catch (e) {
    forgetSocket(c);
    closeFd(c);
    throw e;
  }
}

export function migrateIn(o: MigrateListen): { pid: number } {
  const timeoutSec = o.timeoutSec ?? 30;
  const ls = must("socket", syscall(NR.socket, AF.INET, SOCK.STREAM | SOCK.CLOEXEC, 0));
  let conn = -1;
  let work: string | undefined;
  let daemon: ReturnType<typeof startImageDaemon> | undefined;
  let served = false;
  let unboost = () => {};
  try {
    setInt(ls, SOL.SOCKET, SO.REUSEADDR, 1);
    const sa = sockaddrIn(o.address, o.port);
    const r = syscall(NR.bind, ls, addr(sa), sa.length);
    if (r < 0) throw new CriuError("migrate", `cannot listen on ${o.address}:${o.port}: ${errnoText(-r)}`);
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
    let cur = "",
      round = 0,
      final = false;
    for (;;) {
      const m = recv(conn, round ? `waiting for the source (after round ${round})` : "waiting for the source's HELLO");
      if (!m)
        throw new CriuError(
          "migrate",
          `the source closed the connection ${round ? `after round ${round}` : "before HELLO"}, before the restore; nothing was restored`
        );
      if (m.type === MSG.HELLO) {
        const hv = json(m, "HELLO"),
          v = hv.version;
        // post-copy from the source too: the source opens a second connection for the daemon
        const fromSource = o.postCopy !== false && hv.postCopySource === true && !daemon;
        const token = fromSource ? Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex") : undefined;
        sendJson(conn, MSG.HELLO, { version: VERSION, postCopySource: fromSource, token }, "answering HELLO");
        if (v !== VERSION)
          throw new CriuError("migrate", `the source speaks migrate protocol version ${v}, not ${VERSION}`);
        // the puppet the restored root is cloned from (spawned and seized: tens of ms) now, not in the frozen window
        if (!o.restore.rstSibling) prestartPuppet();
        let lazyConn: number | undefined;
        if (token) lazyConn = acceptLazyConn(ls, token, timeoutSec);
        try {
          if (o.postCopy !== false && !daemon) daemon = startImageDaemon(work!, o.dir, timeoutSec, lazyConn);
        } finally {
          if (lazyConn !== undefined) closeFd(lazyConn);
        }
      } else if (m.type === MSG.ROUND) {
        const v = json(m, "ROUND"),
          n = Number(v.round);
        if (n !== round + 1) throw new CriuError("migrate", `round ${n} after round ${round}`);
        // the final round goes where the post-copy daemon reads it
        final = v.final === true && n > 1 && !!daemon;
        if (v.final === true) {
          unboost = boost();
          // the restored root inherits the puppet's nice until its threads get their own back
          if (process.env.CRIU_BUN_MIGRATE_NICE !== "0" && renicePuppet(-20))
            log.debug("migrate: the puppet runs at nice -20 too");
        }
        cur = join(work, final ? "final" : String(n));
        if (!final) mkdirSync(cur, { mode: 0o700 });
        if (n > 1) linkParent(cur, `../${n - 1}`);
        const b0 = wireBytes,
          t0 = performance.now();
        // within a round the source reads all of a process's pages before it sends them (a
        // pre-dump of GiBs under load): a longer deadline there; a source that dies still ends it at once
        setDeadline(conn, timeoutSec * 10, "the source");
        const pages = serveSession(conn, cur, timeoutSec, true);
        round = n;
        log.info(
          `round ${n}: ${pages} pages received in ${(performance.now() - t0).toFixed(0)} ms (${wireBytes - b0} bytes sent back)`
        );
        setDeadline(conn, timeoutSec, "the source");
      } else if (m.type === MSG.FILE) {
        if (!cur) throw new CriuError("migrate", "an image before any round");
        const dv = new DataView(m.data.buffer, m.data.byteOffset, m.data.byteLength);
        const nl = m.data.length >= 4 ? dv.getUint32(0, true) : -1;
        if (nl < 1 || 4 + nl > m.data.length) throw new CriuError("migrate", "a damaged FILE message");
        const name = td.decode(m.data.subarray(4, 4 + nl));
        if (
          !/^[A-Za-z0-9_.+-]+$/.test(name) ||
          name.startsWith(".") ||
          name === "parent" ||
          /^pages-\d+\.img$|^pagemap-/.test(name)
        ) {
          throw new CriuError("migrate", `the source sent an image named '${name}', which it may not`);
        }
        writeNewFile(join(cur, name), m.data.subarray(4 + nl), false);
        log.debug(`migrate: image ${name} received (${m.data.length - 4 - nl} bytes)`);
      } else if (m.type === MSG.PRECHECK) {
        if (!cur || final) throw new CriuError("migrate", "PRECHECK outside a pre-copy round");
        const t0 = performance.now();
        try {
          warmCoverage(cur);
        } catch (e) {
          log.debug(`round ${round}: coverage not computed ahead (${errorMessage(e)})`);
        }
        warmPageBuffers();
        // the final restore reads pages through this round as a parent: decoded now, not frozen
        warmParentRuns(cur);
        const last = json(m, "PRECHECK").last === true;
        try {
          // the last round is the final restore's parent: with post-copy, what it writes from there is read now
          checkRestorable({ ...o.restore, dir: cur }, last && !!daemon);
          log.info(`round ${round}: its images would restore (checked in ${(performance.now() - t0).toFixed(1)} ms)`);
        } catch (e) {
          log.warn(`round ${round}: its images would not restore as they are: ${errorMessage(e)}`);
        }
        // the last pre-copy round: the source freezes the tree for the final one once told
        if (last) sendJson(conn, MSG.PRECHECKED, { round }, "telling the source its round is checked");
      } else if (m.type === MSG.RESTORE) {
        if (!cur) throw new CriuError("migrate", "RESTORE before any round");
        log.info(`migrate: RESTORE: the final round's images are in; restoring from ${cur}`);
        const t0 = performance.now();
        let res: Record<string, unknown>;
        // post-copy: the pre-copied pages of private anonymous memory come after the tree runs
        const post = final && daemon ? { lazyPages: true, lazyParents: true, workDir: work } : {};
        if (!final && daemon) {
          killDaemon(daemon.proc.pid);
          daemon = undefined;
        }
        let st;
        // restored, not yet running: the source lets it run (COMMIT) only once it will never run
        // itself again; no COMMIT (the source or the link gone) fails the restore: the copy, which
        // never ran, is killed, and the source goes on
        const commit = () => {
          sendJson(conn, MSG.READY, { restoreMs: performance.now() - t0 }, "telling the source the copy is restored");
          setDeadline(conn, timeoutSec, "the source");
          const c = recv(conn, "waiting for the source to let the copy run");
          if (!c)
            throw new CriuError(
              "migrate",
              "the source closed the connection before it let the restored copy run; the copy never ran"
            );
          if (c.type !== MSG.COMMIT)
            throw new CriuError("migrate", `unexpected message ${c.type} from the source instead of COMMIT`);
          log.info(
            `migrate: the source committed; the copy runs ${(performance.now() - t0).toFixed(1)} ms after the restore began`
          );
        };
        try {
          st = restoreProcesses({ ...o.restore, ...post, dir: cur, timeoutSec: o.restore.timeoutSec, commit });
          res = { ok: true, pid: st.pid, restoreMs: performance.now() - t0 };
          out(
            `restored pid ${st.pid} in ${(performance.now() - t0).toFixed(1)} ms${st.lazy ? " (its pre-copied memory follows)" : ""}`
          );
        } catch (e) {
          res = { ok: false, error: errorMessage(e) };
          try {
            sendJson(conn, MSG.RESULT, res, "reporting the restore's failure");
          } catch (x) {
            log.warn(`cannot tell the source: ${errorMessage(x)}`);
          }
          throw e;
        }
        // the source may go now: the tree runs here and all its memory is here
        try {
          sendJson(conn, MSG.RESULT, res, "reporting the restore");
        } catch (e) {
          st.lazy?.close();
          throw e;
        }
        served = true;
        unboost();
        if (st.lazy) {
          // the daemon copies the rest in; if it fails the tree cannot go on (its memory is missing): killed
          try {
            awaitLazyMemory(st.lazy, st.pids, st.pid, false);
          } catch (e) {
            // the daemon's own reason (the source gone, ...) from its log
            const why = (() => {
              try {
                return readFileSync(join(o.dir, "lazy-pages.log"), "utf8")
                  .split("\n")
                  .filter((l) => l.includes("Error ("))
                  .pop();
              } catch {
                return undefined;
              }
            })();
            if (why && e instanceof CriuError)
              e.message += ` (the daemon: ${why.replace(/^\([\d.]+\) Error \([^)]*\): /, "")})`;
            throw e;
          }
          out(`all memory of pid ${st.pid} in ${(performance.now() - t0).toFixed(1)} ms after the restore began`);
        }
        return { pid: res.pid as number };
      } else {
        throw new CriuError("migrate", `unknown message ${m.type} from the source`);
      }
    }
  } finally {
    dropPuppet(); // (started ahead, taken by the restore; first: it may hold the connection)
    if (conn >= 0) {
      forgetSocket(conn);
      closeFd(conn);
    }
    closeFd(ls);
    // a daemon with no restore served (the migration failed before): gone
    if (daemon && !served) killDaemon(daemon.proc.pid);
    unboost();
    if (work) rmSync(work, { recursive: true, force: true });
  }
}

/** The local lazy-pages daemon killed, and dead (a zombie or gone) before this returns: nothing of
 *  a failed migration runs on after criu-bun has said so. */
function killDaemon(pid: number) {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    return;
  }
  const until = Date.now() + 5000;
  for (;;) {
    let st;
    try {
      st = readStat(pid);
    } catch {
      return;
    }
    if (st.state === "Z" || st.state === "X") return;
    if (Date.now() > until) {
      log.warn(`the lazy-pages daemon ${pid} was killed but is still there after 5 s`);
      return;
    }
    Bun.sleepSync(2);
  }
}
