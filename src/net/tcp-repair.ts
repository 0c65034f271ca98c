// TCP repair (our soccr): read an established connection's state out of a socket put in repair
// mode, and rebuild it in a fresh socket. The kernel interface: TCP_REPAIR turns a socket into
// a passive object (close sends nothing, connect sends no SYN), TCP_REPAIR_QUEUE selects the
// send or receive queue for TCP_QUEUE_SEQ and for peeking/filling data, TCP_REPAIR_OPTIONS sets
// what the SYN exchange negotiated, TCP_REPAIR_WINDOW the window state, TCP_TIMESTAMP the clock.
import {
  getsockoptBytes,
  getsockoptInt,
  setsockoptInt,
  ioctlInt,
  recvBytes,
  int32,
  SOL,
  SO,
  TCP,
  MSG,
  SIOCINQ,
  SIOCOUTQ,
  SIOCOUTQNSD,
} from "../sys/inetsock";
import { SysError, errnoText, sysFailed } from "../sys/errno";
import { CriuError, log } from "../log";
import { armUndo } from "../sys/sentinel";
import { diePoint, fault } from "../fault";
import { NR } from "../sys/nr";

export const TCP_STATE = {
  ESTABLISHED: 1,
  SYN_SENT: 2,
  SYN_RECV: 3,
  FIN_WAIT1: 4,
  FIN_WAIT2: 5,
  TIME_WAIT: 6,
  CLOSE: 7,
  CLOSE_WAIT: 8,
  LAST_ACK: 9,
  LISTEN: 10,
  CLOSING: 11,
} as const;
export const TCP_STATE_NAME: Record<number, string> = {};
for (const k in TCP_STATE) TCP_STATE_NAME[TCP_STATE[k as keyof typeof TCP_STATE]] = k;
const QUEUE = { NONE: 0, RECV: 1, SEND: 2 };
/** tcpi_options bits (= tcp_stream_entry.opt_mask) */
const TCPI_OPT = { TIMESTAMPS: 1, SACK: 2, WSCALE: 4 } as const;
const TCPOPT = { MSS: 2, WINDOW: 3, SACK_PERM: 4, TIMESTAMP: 8 };

interface TcpStreamState {
  inqLen: number;
  inqSeq: number;
  outqLen: number;
  outqSeq: number;
  optMask: number;
  sndWscale: number;
  rcvWscale: number;
  mssClamp: number;
  timestamp: number;
  cork: boolean;
  nodelay: boolean;
  unsqLen: number;
  sndWl1?: number;
  sndWnd?: number;
  maxWindow?: number;
  rcvWnd?: number;
  rcvWup?: number;
}
export interface TcpStream {
  state: TcpStreamState;
  inq: Uint8Array;
  outq: Uint8Array;
}

/** TCP state byte from TCP_INFO (works on any TCP socket). */
export function tcpInfo(fd: number): { state: number; options: number; sndWscale: number; rcvWscale: number } {
  const b = getsockoptBytes(fd, SOL.TCP, TCP.INFO, 104);
  return { state: b[0], options: b[5], sndWscale: b[6] & 15, rcvWscale: b[6] >> 4 };
}

export function repairOn(fd: number, where: string) {
  const r = setsockoptInt(fd, SOL.TCP, TCP.REPAIR, 1);
  if (r < 0)
    throw new CriuError(
      "tcp",
      sysFailed(where, "TCP_REPAIR (putting the connection in repair mode)", r, "needs CAP_NET_ADMIN")
    );
}
/** Leave repair mode; the kernel sends a window probe so the peer learns we are back. */
function repairOff(fd: number, noProbe = false): number {
  return setsockoptInt(fd, SOL.TCP, TCP.REPAIR, noProbe ? -1 /* TCP_REPAIR_OFF_NO_WP */ : 0);
}

/**
 * Leave repair mode on a live connection's socket and put its SO_REUSEADDR back: the kernel resets
 * sk_reuse when repair mode ends (on sets it to "force", off to none), so a program that had set
 * SO_REUSEADDR would lose it, and a dump reading it afterwards would write false.
 */
function repairOffLive(fd: number, reuseaddr: number, noProbe = false): number {
  const e = repairOff(fd, noProbe);
  if (e < 0 || !reuseaddr) return e;
  diePoint(noProbe ? "tcp-repair-off" : "tcp-window-probe");
  return setsockoptInt(fd, SOL.SOCKET, SO.REUSEADDR, reuseaddr);
}

/** at most this many parked threads per window (the sentinel's undo calls hold a tgkill each) */
export const PARK_MAX = 48;

/**
 * Run fn with a live connection's socket in repair mode (the dump reading its queues), and leave
 * repair mode even if criu-bun dies meanwhile: TCP_REPAIR belongs to the socket, not to our fd,
 * so a criu-bun killed in the window would leave it on in a process that runs on (its reads fail,
 * nothing is sent). SO_REUSEADDR is read by the caller before repair mode changes it, and put back
 * after. See liveWindow for the sentinel and the parked threads.
 */
export function withLiveRepair<T>(
  fd: number,
  reuseaddr: number,
  threads: ParkedThread[],
  hold: { park(): void; unpark(): void },
  where: string,
  fn: () => T
): T {
  return liveWindow(fd, reuseaddr, threads, hold, `${where}: sentinel takes the socket out of repair mode`, () => {
    repairOn(fd, where);
    try {
      diePoint("tcp-repair");
      return fn();
    } finally {
      const e = repairOffLive(fd, reuseaddr, true);
      if (e < 0) log.warn(`${where}: leaving TCP repair mode failed: ${errnoText(-e)}`);
    }
  });
}

/**
 * The dump's last step on a live connection once its lock is gone (-R, or a dump that failed):
 * out of repair mode again, now with a window probe, so the peer learns at once that the socket is
 * back. Leaving repair mode resets SO_REUSEADDR, so a criu-bun killed between the two calls would
 * leave the running program's socket without it for good; the same sentinel and parked threads as
 * withLiveRepair's cover that. A socket without SO_REUSEADDR has nothing to lose there and needs
 * neither (threads is then empty and hold does nothing). Returns 0 or -errno.
 */
export function liveWindowProbe(
  fd: number,
  reuseaddr: number,
  threads: ParkedThread[],
  hold: { park(): void; unpark(): void },
  where: string
): number {
  if (!reuseaddr) return repairOff(fd);
  fault("tcp-window-probe", "dump"); // (tests: no sentinel to be had)
  return liveWindow(fd, reuseaddr, threads, hold, `${where}: sentinel puts SO_REUSEADDR back`, () =>
    repairOffLive(fd, reuseaddr)
  );
}

/** a thread parked for a window (Injector.park), and the signal that wakes it */
interface ParkedThread {
  tgid: number;
  tid: number;
  sig: number;
}

/**
 * Run body (which changes a live socket's repair state) with a sentinel (sys/sentinel.ts) holding
 * the socket: if criu-bun dies before body is done, it takes the socket out of repair mode, puts
 * its SO_REUSEADDR back (the two calls of repairOffLive), then wakes the process's threads the
 * caller parked (Injector.park: asleep in the kernel until their signal, so none of them uses the
 * socket before it is as the program left it; a tracer's death lets traced threads run at once,
 * before the sentinel can act).
 */
function liveWindow<T>(
  fd: number,
  reuseaddr: number,
  threads: ParkedThread[],
  hold: { park(): void; unpark(): void },
  what: string,
  body: () => T
): T {
  const undo: { nr: number; args: (number | { int32: number })[] }[] = [
    { nr: NR.setsockopt, args: [fd, SOL.TCP, TCP.REPAIR, { int32: -1 /* OFF_NO_WP */ }, 4] },
  ];
  if (reuseaddr) undo.push({ nr: NR.setsockopt, args: [fd, SOL.SOCKET, SO.REUSEADDR, { int32: reuseaddr }, 4] });
  for (const p of threads) undo.push({ nr: NR.tgkill, args: [p.tgid, p.tid, p.sig] });
  const sentinel = armUndo([fd], undo);
  log.debug(`${what} if criu-bun dies meanwhile (pid ${sentinel.pid}), then wakes ${threads.length} parked thread(s)`);
  // armed before the threads sleep and disarmed after they are awake: were criu-bun to die in
  // between, the sentinel's signals wake them (a signal to a thread not parked changes nothing)
  try {
    hold.park();
    try {
      return body();
    } finally {
      hold.unpark();
    }
  } finally {
    sentinel.disarm();
  }
}

function seqOf(fd: number, q: number): number {
  const r = setsockoptInt(fd, SOL.TCP, TCP.REPAIR_QUEUE, q);
  if (r < 0) throw new SysError("TCP_REPAIR_QUEUE", -r);
  return getsockoptInt(fd, SOL.TCP, TCP.QUEUE_SEQ) >>> 0;
}

/** Read the whole connection state from a socket already in repair mode (nothing is consumed). */
export function dumpTcpStream(fd: number, where: string): TcpStream {
  try {
    const info = tcpInfo(fd);
    if (info.state !== TCP_STATE.ESTABLISHED)
      throw new CriuError(
        "tcp",
        `${where}: TCP state ${TCP_STATE_NAME[info.state] ?? info.state} cannot be dumped yet (only ESTABLISHED)`
      );
    const outqLen = ioctlInt(fd, SIOCOUTQ);
    const unsqLen = ioctlInt(fd, SIOCOUTQNSD);
    const inqLen = ioctlInt(fd, SIOCINQ);
    const inqSeq = seqOf(fd, QUEUE.RECV);
    const inq = recvBytes(fd, inqLen, MSG.PEEK | MSG.DONTWAIT);
    const outqSeq = seqOf(fd, QUEUE.SEND);
    const outq = recvBytes(fd, outqLen, MSG.PEEK | MSG.DONTWAIT);
    setsockoptInt(fd, SOL.TCP, TCP.REPAIR_QUEUE, QUEUE.NONE);
    if (inq.length !== inqLen || outq.length !== outqLen) {
      throw new CriuError(
        "tcp",
        `${where}: queues changed while reading them (receive ${inq.length}/${inqLen}, send ${outq.length}/${outqLen} bytes)`
      );
    }
    const st: TcpStreamState = {
      inqLen,
      inqSeq,
      outqLen,
      outqSeq,
      unsqLen,
      optMask: info.options,
      sndWscale: info.sndWscale,
      rcvWscale: info.rcvWscale,
      mssClamp: getsockoptInt(fd, SOL.TCP, TCP.MAXSEG),
      timestamp: getsockoptInt(fd, SOL.TCP, TCP.TIMESTAMP) >>> 0,
      nodelay: getsockoptInt(fd, SOL.TCP, TCP.NODELAY) !== 0,
      cork: getsockoptInt(fd, SOL.TCP, TCP.CORK) !== 0,
    };
    try {
      const w = getsockoptBytes(fd, SOL.TCP, TCP.REPAIR_WINDOW, 20);
      const dv = new DataView(w.buffer, w.byteOffset);
      if (w.length >= 20) {
        st.sndWl1 = dv.getUint32(0, true);
        st.sndWnd = dv.getUint32(4, true);
        st.maxWindow = dv.getUint32(8, true);
        st.rcvWnd = dv.getUint32(12, true);
        st.rcvWup = dv.getUint32(16, true);
      }
    } catch {
      /* kernels before 4.8: no window state */
    }
    return { state: st, inq, outq };
  } catch (e) {
    if (e instanceof SysError) throw new CriuError("tcp", `${where}: ${e.message}`);
    throw e;
  }
}

/** What restoring needs to do to the new socket; implemented by injection into the target. */
export interface SockOps {
  setsockopt(level: number, opt: number, val: Uint8Array): number;
  connect(sockaddr: Uint8Array): number;
  /** send with flags; returns bytes sent or -errno */
  send(data: Uint8Array, flags: number): number;
}

function must(r: number, what: string, where: string) {
  if (r < 0) throw new CriuError("tcp", `${where}: ${what} failed: ${errnoText(-r)}`);
}

/** Fill one queue in repair mode, in chunks that shrink when the kernel runs short of memory. */
function fillQueue(ops: SockOps, q: number, data: Uint8Array, where: string) {
  if (!data.length) return;
  must(ops.setsockopt(SOL.TCP, TCP.REPAIR_QUEUE, int32(q)), "TCP_REPAIR_QUEUE", where);
  let chunk = q === QUEUE.RECV ? 64 * 1024 : 1 << 20;
  for (let off = 0; off < data.length; ) {
    const n = ops.send(data.subarray(off, Math.min(data.length, off + chunk)), 0);
    if (n === -12 /* ENOMEM */ || n === -11 /* EAGAIN */) {
      if (chunk <= 1024) must(n, `refilling the ${q === QUEUE.RECV ? "receive" : "send"} queue`, where);
      chunk >>= 1;
      continue;
    }
    must(n, `refilling the ${q === QUEUE.RECV ? "receive" : "send"} queue`, where);
    off += n;
  }
}

/**
 * Rebuild an established connection in a socket that is in repair mode and bound to its local
 * address: sequence numbers, connect (no SYN), negotiated options, clock, both queues, windows.
 * The unsent tail of the send queue is returned: send it normally once repair mode is off.
 */
export function restoreTcpStream(ops: SockOps, s: TcpStream, peer: Uint8Array, where: string): Uint8Array {
  const st = s.state;
  must(ops.setsockopt(SOL.TCP, TCP.REPAIR_QUEUE, int32(QUEUE.SEND)), "TCP_REPAIR_QUEUE", where);
  must(ops.setsockopt(SOL.TCP, TCP.QUEUE_SEQ, int32((st.outqSeq - st.outqLen) | 0)), "TCP_QUEUE_SEQ (send)", where);
  must(ops.setsockopt(SOL.TCP, TCP.REPAIR_QUEUE, int32(QUEUE.RECV)), "TCP_REPAIR_QUEUE", where);
  must(ops.setsockopt(SOL.TCP, TCP.QUEUE_SEQ, int32((st.inqSeq - st.inqLen) | 0)), "TCP_QUEUE_SEQ (receive)", where);
  must(ops.connect(peer), "connect in repair mode", where);
  const opts: [number, number][] = [[TCPOPT.MSS, st.mssClamp]];
  if (st.optMask & TCPI_OPT.WSCALE) opts.push([TCPOPT.WINDOW, st.sndWscale | (st.rcvWscale << 16)]);
  if (st.optMask & TCPI_OPT.SACK) opts.push([TCPOPT.SACK_PERM, 0]);
  if (st.optMask & TCPI_OPT.TIMESTAMPS) opts.push([TCPOPT.TIMESTAMP, 0]);
  const ob = new Uint32Array(opts.flat());
  must(ops.setsockopt(SOL.TCP, TCP.REPAIR_OPTIONS, new Uint8Array(ob.buffer)), "TCP_REPAIR_OPTIONS", where);
  if (st.optMask & TCPI_OPT.TIMESTAMPS)
    must(ops.setsockopt(SOL.TCP, TCP.TIMESTAMP, int32(st.timestamp | 0)), "TCP_TIMESTAMP", where);
  fillQueue(ops, QUEUE.RECV, s.inq, where);
  const sent = st.outqLen - st.unsqLen;
  fillQueue(ops, QUEUE.SEND, s.outq.subarray(0, sent), where);
  must(ops.setsockopt(SOL.TCP, TCP.REPAIR_QUEUE, int32(QUEUE.NONE)), "TCP_REPAIR_QUEUE", where);
  if (st.rcvWnd !== undefined) {
    const w = new Uint32Array([st.sndWl1!, st.sndWnd!, st.maxWindow!, st.rcvWnd, st.rcvWup!]);
    must(ops.setsockopt(SOL.TCP, TCP.REPAIR_WINDOW, new Uint8Array(w.buffer)), "TCP_REPAIR_WINDOW", where);
  }
  if (st.nodelay) ops.setsockopt(SOL.TCP, TCP.NODELAY, int32(1));
  if (st.cork) ops.setsockopt(SOL.TCP, TCP.CORK, int32(1));
  return s.outq.subarray(sent);
}
