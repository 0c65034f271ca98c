// A kernel timer that ends criu-bun with a line when it expires: the restore watchdog
// (src/watchdog.ts) re-arms it as the restore moves on. When it expires, SIGALRM runs a
// 90-byte machine-code handler (no JavaScript: the thread it lands on may be stuck in a system
// call or a loop) that writes the log lines buffered in log.ts's shared buffer, then the line
// prepared here, then sends criu-bun SIGKILL. This replaced a Worker polling a progress counter,
// whose start (a second JavaScript VM) cost every restore ~30 ms of CPU and 6 MiB of RSS.
import { toArrayBuffer, type Pointer } from "bun:ffi";
import { libc } from "./libc";
import { addr, codePage, syscall, sysOk } from "./syscall";
import { NR } from "./nr";

const SIGALRM = 14,
  SA_SIGINFO = 4,
  SA_RESTORER = 0x04000000,
  SIGEV_SIGNAL = 0,
  CLOCK_MONOTONIC = 1;
const MSG_BYTES = 4096 - 8;

let code: bigint | undefined; // the handler's page (read + execute)
let data: Uint8Array | undefined; // [0..4) fd, [4..8) length, [8..) the line
let dataView: DataView | undefined;
let timer = -1;
let armedLog: number | undefined;

function le64(v: number): number[] {
  const b: number[] = [];
  for (let i = 0; i < 8; i++) {
    b.push(v % 256);
    v = Math.floor(v / 256);
  }
  return b;
}

/**
 * The handler: logBuf's first 8 bytes are [length, fd] of the bytes buffered after them (log.ts);
 * the data page holds [fd, length] of the line, then the line.
 */
function handlerCode(logBuf: number, msg: number): number[] {
  // biome-ignore format: machine code, one instruction a line
  return [
    0x48, 0xbb, ...le64(logBuf), //    movabs rbx, logBuf
    0x31, 0xc0, //                     xor eax, eax
    0x87, 0x03, //                     xchg [rbx], eax       (take the buffered length, leave 0)
    0x85, 0xc0, //                     test eax, eax
    0x7e, 0x10, //                     jle line
    0x89, 0xc2, //                     mov edx, eax
    0x8b, 0x7b, 0x04, //               mov edi, [rbx+4]
    0x48, 0x8d, 0x73, 0x08, //         lea rsi, [rbx+8]
    0xb8, 0x01, 0x00, 0x00, 0x00, //   mov eax, 1            (write)
    0x0f, 0x05, //                     syscall
    0x48, 0xbb, ...le64(msg), //       line: movabs rbx, msg
    0x8b, 0x3b, //                     mov edi, [rbx]
    0x8b, 0x53, 0x04, //               mov edx, [rbx+4]
    0x48, 0x8d, 0x73, 0x08, //         lea rsi, [rbx+8]
    0xb8, 0x01, 0x00, 0x00, 0x00, //   mov eax, 1            (write)
    0x0f, 0x05, //                     syscall
    0xb8, 0x27, 0x00, 0x00, 0x00, //   mov eax, 39           (getpid)
    0x0f, 0x05, //                     syscall
    0x89, 0xc7, //                     mov edi, eax
    0xbe, 0x09, 0x00, 0x00, 0x00, //   mov esi, 9            (SIGKILL)
    0xb8, 0x3e, 0x00, 0x00, 0x00, //   mov eax, 62           (kill)
    0x0f, 0x05, //                     syscall
    0xeb, 0xfe, //                     jmp $
  ];
}
// the kernel wants a restorer for an x86-64 handler (SA_RESTORER); this one is never reached
const RESTORER = [0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05]; // mov eax, 15 (rt_sigreturn); syscall

function mapPage(): Pointer {
  const p = libc.mmap(null, 4096, 3 /* RW */, 0x22 /* MAP_PRIVATE|MAP_ANONYMOUS */, -1, 0) as Pointer;
  if (!p || (p as unknown as number) === -1) throw new Error("criu-bun: cannot map the watchdog's page");
  return p;
}

/**
 * Install the handler and create the timer (not armed). logBuf: log.ts's shared buffer, which
 * never moves. Once per process; later calls only create the timer again.
 */
export function stallKillerStart(logBuf: SharedArrayBuffer) {
  if (!code) {
    const d = mapPage();
    data = new Uint8Array(toArrayBuffer(d, 0, 4096));
    dataView = new DataView(data.buffer);
    code = codePage(
      [
        [0, handlerCode(addr(new Uint8Array(logBuf)), d as unknown as number)],
        [128, RESTORER],
      ],
      "the watchdog's handler"
    );
    armedLog = addr(new Uint8Array(logBuf));
  } else if (armedLog !== addr(new Uint8Array(logBuf))) throw new Error("criu-bun: the log buffer moved");
  // struct kernel_sigaction: handler, flags, restorer, mask (all blocked while it runs)
  const act = new BigUint64Array([code, BigInt(SA_SIGINFO | SA_RESTORER), code + 128n, ~0n]);
  sysOk("rt_sigaction(SIGALRM)", NR.rt_sigaction, SIGALRM, addr(act), 0, 8);
  // struct sigevent: value, signo, notify (SIGEV_SIGNAL: to the process), padding to 64 bytes
  const ev = new Int32Array(16);
  ev[2] = SIGALRM;
  ev[3] = SIGEV_SIGNAL;
  const id = new Int32Array(1);
  sysOk("timer_create", NR.timer_create, CLOCK_MONOTONIC, addr(ev), addr(id));
  timer = id[0];
}

/** The line written when the timer expires (and the fd it goes to). */
export function stallKillerLine(fd: number, line: string) {
  if (!data) return;
  const b = new TextEncoder().encode(line).subarray(0, MSG_BYTES);
  data.set(b, 8);
  dataView!.setInt32(0, fd, true);
  dataView!.setInt32(4, b.length, true);
}

const spec = new BigInt64Array(4); // struct itimerspec: interval (sec, nsec), value (sec, nsec)
/** Expire in ms milliseconds from now (0: disarm). */
export function stallKillerArm(ms: number) {
  if (timer < 0) return;
  spec[2] = BigInt(Math.floor(ms / 1000));
  spec[3] = BigInt(Math.round(ms % 1000) * 1e6);
  syscall(NR.timer_settime, timer, 0, addr(spec), 0);
}

/** Delete the timer and give SIGALRM its default action back. */
export function stallKillerStop() {
  if (timer < 0) return;
  syscall(NR.timer_delete, timer);
  timer = -1;
  const act = new BigUint64Array(4);
  syscall(NR.rt_sigaction, SIGALRM, addr(act), 0, 8);
}
