// The puppet: a 170-byte static ELF that loops in pause(). criu-bun starts it with posix_spawn,
// seizes it, and drives it with injected syscalls until it becomes the restored process. Its
// first instructions make it die with criu-bun (PR_SET_PDEATHSIG SIGKILL, then exit at once if
// its parent is no longer the criu-bun that started it), so no moment leaves an orphan behind:
// from the seize on, PTRACE_O_EXITKILL covers it and everything cloned from it.
import { syscall, sysOk, cstr, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { spawn, spawnSibling } from "../sys/spawn";
import { seize, interrupt, wait4Raw, W, PTRACE_O, __WALL, describeStatus } from "../sys/ptrace";
import { CriuError } from "../log";
import { sysFailed } from "../sys/errno";
import { readFileSync } from "../sys/fs";
import { Injector, RemoteMem } from "./inject";

export const PUPPET_BASE = 0x13370000n;
const CODE_OFF = 120;
/** offset of `syscall; int3` inside the puppet image */
export const PUPPET_SYSCALL = PUPPET_BASE + BigInt(CODE_OFF + 49);

function puppetElf(parent: number): Uint8Array {
  const le32 = (v: number) => [v & 255, (v >> 8) & 255, (v >> 16) & 255, (v >>> 24) & 255];
  // biome-ignore format: machine code, one instruction a line
  const code = [
    0xbf, 1, 0, 0, 0,            // mov edi, PR_SET_PDEATHSIG
    0xbe, 9, 0, 0, 0,            // mov esi, SIGKILL
    0xb8, 157, 0, 0, 0,          // mov eax, prctl
    0x0f, 0x05,                  // syscall
    0xb8, 110, 0, 0, 0,          // mov eax, getppid
    0x0f, 0x05,                  // syscall
    0x3d, ...le32(parent),       // cmp eax, criu-bun's pid
    0x74, 0x09,                  // je pause loop
    0xb8, 231, 0, 0, 0,          // mov eax, exit_group: criu-bun died before the prctl
    0x31, 0xff,                  // xor edi, edi
    0x0f, 0x05,                  // syscall
    0xb8, 34, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7, // pause loop
    /* syscall; int3 */ 0x0f, 0x05, 0xcc];
  if (code.length !== 52) throw new Error("puppet code size");
  const size = CODE_OFF + code.length;
  const b = new Uint8Array(size);
  const dv = new DataView(b.buffer);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]);
  dv.setUint16(16, 2, true); // ET_EXEC
  dv.setUint16(18, 0x3e, true); // x86_64
  dv.setUint32(20, 1, true);
  dv.setBigUint64(24, PUPPET_BASE + BigInt(CODE_OFF), true); // entry
  dv.setBigUint64(32, 64n, true); // phoff
  dv.setUint16(52, 64, true); // ehsize
  dv.setUint16(54, 56, true); // phentsize
  dv.setUint16(56, 1, true); // phnum
  // program header
  dv.setUint32(64, 1, true); // PT_LOAD
  dv.setUint32(68, 5, true); // R+X
  dv.setBigUint64(72, 0n, true); // offset
  dv.setBigUint64(80, PUPPET_BASE, true);
  dv.setBigUint64(88, PUPPET_BASE, true);
  dv.setBigUint64(96, BigInt(size), true);
  dv.setBigUint64(104, BigInt(size), true);
  dv.setBigUint64(112, 0x1000n, true);
  b.set(code, CODE_OFF);
  return b;
}

const memfds = new Map<number, number>();
/**
 * Start a puppet, seized (EXITKILL: if criu-bun dies, so does everything it was building) and
 * stopped. sibling (criu's rst_sibling): the puppet is a child of criu-bun's parent, so the root
 * it clones (CLONE_PARENT) is the caller's child too; it then dies with that parent, and with
 * criu-bun from the seize on.
 */
export function startPuppet(sibling = false): number {
  if (!sibling && ahead !== undefined) {
    // started ahead (prestartPuppet): still there and stopped as it was left
    const pid = ahead;
    ahead = undefined;
    try {
      if (/\) t /.test(readFileSync(`/proc/${pid}/stat`, "utf8"))) return pid;
    } catch {}
    syscall(NR.kill, pid, 9);
    reap(pid);
  }
  const parent = sibling ? process.ppid : process.pid;
  let memfd = memfds.get(parent) ?? -1;
  if (memfd < 0) {
    const name = cstr("criu-bun-puppet");
    memfd = sysOk("memfd_create", NR.memfd_create, addr(name), 0);
    const elf = puppetElf(parent);
    sysOk("write puppet", NR.write, memfd, addr(elf), elf.length);
    memfds.set(parent, memfd);
  }
  const pid = sibling
    ? spawnSibling(`/proc/self/fd/${memfd}`, ["criu-bun-puppet"])
    : spawn(`/proc/self/fd/${memfd}`, ["criu-bun-puppet"], { env: {} });
  const r = seize(pid, PTRACE_O.EXITKILL | PTRACE_O.TRACEFORK | PTRACE_O.TRACECLONE | PTRACE_O.TRACESYSGOOD);
  if (r < 0) {
    syscall(NR.kill, pid, 9);
    throw new CriuError("restore", sysFailed(`puppet process ${pid}`, "PTRACE_SEIZE", r));
  }
  interrupt(pid);
  for (;;) {
    const { r: w, status } = wait4Raw(pid, __WALL);
    if (w === -4) continue;
    if (w < 0) throw new CriuError("restore", sysFailed(`puppet process ${pid}`, "wait4", w));
    if (!W.stopped(status)) throw new CriuError("restore", `puppet process ${pid} ${describeStatus(status)}`);
    if (W.event(status) === 128) break; // interrupt stop
    // exec stop or signal stop before the interrupt lands: keep going
    syscall(NR.ptrace, 7, pid, 0, 0);
    interrupt(pid);
  }
  return pid;
}

/** a puppet started ahead of its restore (prestartPuppet), seized and stopped */
let ahead: number | undefined;

/**
 * Start the next restore's puppet now (migrate's destination, before the frozen window: spawning
 * and seizing it takes tens of ms on a busy machine). The restore's startPuppet takes it;
 * dropPuppet ends it if no restore did. NICE: its nice (the restored root inherits it until its
 * threads get their own back), set again later with renicePuppet.
 */
export function prestartPuppet() {
  if (ahead !== undefined) return;
  const pid = startPuppet(false);
  ahead = pid;
  // it keeps none of criu-bun's fds while it waits (a connection held open here would not end
  // when criu-bun closes it); the restore closes them all again in any case
  const mem = new RemoteMem(pid);
  try {
    const inj = new Injector(pid, PUPPET_SYSCALL, "trap", mem);
    const r = inj.call(NR.close_range, 0, 0xffffffff, 0);
    inj.restore();
    if (r !== 0n) throw new CriuError("restore", sysFailed(`puppet process ${pid}`, "close_range", -r));
  } catch (e) {
    dropPuppet();
    throw e;
  } finally {
    mem.close();
  }
}

/** The puppet started ahead, at NICE (migrate's frozen window runs at -20); false if none. */
export function renicePuppet(nice: number): boolean {
  return ahead !== undefined && syscall(NR.setpriority, 0 /* PRIO_PROCESS */, ahead, nice) === 0;
}

/** The puppet started ahead and not used: killed and reaped. */
export function dropPuppet() {
  if (ahead === undefined) return;
  const pid = ahead;
  ahead = undefined;
  syscall(NR.kill, pid, 9);
  reap(pid);
}

function reap(pid: number) {
  for (;;) {
    const { r, status } = wait4Raw(pid, __WALL);
    if (r === -4) continue;
    if (r < 0 || !W.stopped(status)) break;
  }
}
