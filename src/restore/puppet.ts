// The puppet: a 130-byte static ELF that loops in pause(). criu-bun starts it with posix_spawn,
// seizes it, and drives it with injected syscalls until it becomes the restored process.
import { syscall, sysOk, cstr, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { spawn } from "../sys/spawn";
import { seize, interrupt, wait4Raw, W, PTRACE_O, __WALL, describeStatus } from "../sys/ptrace";
import { CriuError } from "../log";

export const PUPPET_BASE = 0x13370000n;
const CODE_OFF = 120;
/** offset of `syscall; int3` inside the puppet image */
export const PUPPET_SYSCALL = PUPPET_BASE + BigInt(CODE_OFF + 9);

function puppetElf(): Uint8Array {
  const code = [0xb8, 34, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7, /* syscall; int3 */ 0x0f, 0x05, 0xcc];
  const size = CODE_OFF + code.length;
  const b = new Uint8Array(size);
  const dv = new DataView(b.buffer);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]);
  dv.setUint16(16, 2, true);            // ET_EXEC
  dv.setUint16(18, 0x3e, true);         // x86_64
  dv.setUint32(20, 1, true);
  dv.setBigUint64(24, PUPPET_BASE + BigInt(CODE_OFF), true); // entry
  dv.setBigUint64(32, 64n, true);       // phoff
  dv.setUint16(52, 64, true);           // ehsize
  dv.setUint16(54, 56, true);           // phentsize
  dv.setUint16(56, 1, true);            // phnum
  // program header
  dv.setUint32(64, 1, true);            // PT_LOAD
  dv.setUint32(68, 5, true);            // R+X
  dv.setBigUint64(72, 0n, true);        // offset
  dv.setBigUint64(80, PUPPET_BASE, true);
  dv.setBigUint64(88, PUPPET_BASE, true);
  dv.setBigUint64(96, BigInt(size), true);
  dv.setBigUint64(104, BigInt(size), true);
  dv.setBigUint64(112, 0x1000n, true);
  b.set(code, CODE_OFF);
  return b;
}

let memfd = -1;
/** Start a puppet, seized (EXITKILL: if criu-bun dies, so does everything it was building) and stopped. */
export function startPuppet(): number {
  if (memfd < 0) {
    const name = cstr("criu-bun-puppet");
    memfd = sysOk("memfd_create", NR.memfd_create, addr(name), 0);
    const elf = puppetElf();
    sysOk("write puppet", NR.write, memfd, addr(elf), elf.length);
  }
  const pid = spawn(`/proc/self/fd/${memfd}`, ["criu-bun-puppet"], { env: {} });
  const r = seize(pid, PTRACE_O.EXITKILL | PTRACE_O.TRACEFORK | PTRACE_O.TRACECLONE | PTRACE_O.TRACESYSGOOD);
  if (r < 0) { syscall(NR.kill, pid, 9); throw new CriuError("restore", `cannot seize the puppet process (${-r})`); }
  interrupt(pid);
  for (;;) {
    const { r: w, status } = wait4Raw(pid, __WALL);
    if (w === -4) continue;
    if (w < 0) throw new CriuError("restore", `puppet vanished (${-w})`);
    if (!W.stopped(status)) throw new CriuError("restore", `puppet ${describeStatus(status)}`);
    if (W.event(status) === 128) break; // interrupt stop
    // exec stop or signal stop before the interrupt lands: keep going
    syscall(NR.ptrace, 7, pid, 0, 0);
    interrupt(pid);
  }
  return pid;
}
