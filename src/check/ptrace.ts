// Probes that need a tracee: ptrace requests, injected syscalls, clone3 with set_tid, time
// namespaces, the vDSO mapping API.
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { PR, CLONE, CLONE_ARGS_SIZE } from "../sys/flags";
import {
  PTRACE,
  PTRACE_O,
  NT,
  ptrace,
  seize,
  interrupt,
  getRegs,
  R,
  getSigmask,
  setSigmask,
  peekSiginfo,
} from "../sys/ptrace";
import { readVmas, readStatus, readLink, listFds, readText, type Vma } from "../sys/proc";
import { openFd, closeFd, preadFull, O, PagemapScanner, PAGE_IS } from "../sys/mem";
import { PUPPET_BASE, PUPPET_SYSCALL, startPuppet } from "../ptrace/puppet";
import { RemoteMem } from "../ptrace/inject";
import { withTracee, killReap, type Tracee } from "./tracee";
import { Missing, need, hex, type Probe } from "./probe";
import { E, errnoText } from "../sys/errno";
import { existsSync } from "../sys/fs";

/** PTRACE_SEIZE + PTRACE_INTERRUPT on a fresh child (startPuppet waits for PTRACE_EVENT_STOP). */
function ptraceSeize(): string {
  let pid = -1;
  try {
    pid = startPuppet();
  } catch (e) {
    throw new Missing((e as Error).message);
  }
  try {
    const st = readStatus(pid);
    need(st.State?.startsWith("t"), `the child is not in a tracing stop (${st.State})`);
    need(st.TracerPid === String(process.pid), `the child's tracer is ${st.TracerPid}`);
    // a second interrupt of a stopped tracee is accepted, a seize of a traced one is refused
    need(interrupt(pid) === 0, "PTRACE_INTERRUPT of a stopped tracee failed");
    const again = seize(pid, 0);
    need(again === -1, `seizing a traced task again gave ${again}, expected EPERM`);
    return `seized and interrupted ${pid}`;
  } finally {
    killReap(pid);
  }
}

/** NT_PRSTATUS and NT_X86_XSTATE register sets of a stopped tracee. */
function ptraceRegsets(): string {
  return withTracee((t) => {
    const regs = getRegs(t.pid);
    const rip = regs[R.rip];
    need(rip >= PUPPET_BASE && rip < PUPPET_BASE + 0x1000n, `rip ${hex(rip)} is not inside the tracee's code`);
    const xs = new Uint8Array(16384);
    const iov = new BigUint64Array([BigInt(addr(xs)), BigInt(xs.length)]);
    const r = ptrace(PTRACE.GETREGSET, t.pid, NT.X86_XSTATE, addr(iov));
    need(r === 0, `PTRACE_GETREGSET NT_X86_XSTATE: ${errnoText(-r)}`);
    need(iov[1] >= 576n, `xstate area of ${iov[1]} bytes is too small`);
    return `rip ${hex(rip)}, xstate ${iov[1]} bytes`;
  });
}

/** /proc/PID/mem reads the tracee's code; process_vm_readv agrees. */
function procMem(): string {
  return withTracee((t) => {
    const code = t.mem.read(PUPPET_SYSCALL, 3);
    need(code[0] === 0x0f && code[1] === 0x05 && code[2] === 0xcc, "/proc/PID/mem returned the wrong bytes");
    // write a pattern into scratch through /proc/PID/mem, read it back with process_vm_readv
    const pat = new Uint8Array(64).map((_, i) => (i * 7 + 1) & 0xff);
    t.mem.write(t.scratch, pat);
    const back = new Uint8Array(64);
    const liov = new BigUint64Array([BigInt(addr(back)), 64n]),
      riov = new BigUint64Array([t.scratch, 64n]);
    const n = syscall(NR.process_vm_readv, t.pid, addr(liov), 1, addr(riov), 1, 0);
    need(n === 64, `process_vm_readv: ${n < 0 ? errnoText(-n) : `${n} bytes`}`);
    need(
      back.every((b, i) => b === pat[i]),
      "process_vm_readv saw other bytes than were written"
    );
    return "read and written";
  });
}

/** PTRACE_SETSIGMASK then PTRACE_GETSIGMASK gives the same mask back. */
function ptraceSigmask(): string {
  return withTracee((t) => {
    const want = 0x0000_0005_0000_4a00n; // SIGUSR1, SIGUSR2, SIGALRM, two RT signals
    setSigmask(t.pid, want);
    const got = getSigmask(t.pid);
    need(got === want, `GETSIGMASK gave ${hex(got)} after SETSIGMASK ${hex(want)}`);
    need(BigInt("0x" + readStatus(t.pid).SigBlk) === want, "/proc/PID/status SigBlk disagrees");
    return hex(got);
  });
}

/** A siginfo queued by the tracee to itself (positive si_code) is seen by PTRACE_PEEKSIGINFO. */
function ptracePeeksiginfo(): string {
  return withTracee((t) => {
    setSigmask(t.pid, 1n << 9n); // keep SIGUSR1 pending
    const info = new Uint8Array(128);
    const dv = new DataView(info.buffer);
    dv.setInt32(0, 10, true);
    dv.setInt32(8, 1, true); // si_signo SIGUSR1, si_code 1 (positive: only allowed to self)
    dv.setInt32(16, t.pid, true);
    dv.setInt32(24, 0x5eed, true); // si_pid, si_int
    t.mem.write(t.scratch, info);
    t.ok("rt_sigqueueinfo", NR.rt_sigqueueinfo, t.pid, 10, t.scratch);
    const got = peekSiginfo(t.pid, true);
    need(got.length === 1, `PEEKSIGINFO found ${got.length} queued signals, expected 1`);
    const g = new DataView(got[0].buffer);
    need(
      g.getInt32(0, true) === 10 && g.getInt32(8, true) === 1 && g.getInt32(24, true) === 0x5eed,
      "PEEKSIGINFO returned another siginfo than was queued"
    );
    return "siginfo with si_code 1 read back";
  });
}

/**
 * PTRACE_GET_RSEQ_CONFIGURATION reports an rseq area the tracee registered. The struct is read
 * here by hand: u64 rseq_abi_pointer, u32 rseq_abi_size, u32 signature, u32 flags, u32 pad.
 */
function getRseqConf(): string {
  return withTracee((t) => {
    const area = t.scratch + 1024n,
      sig = 0x53053053;
    t.ok("rseq", NR.rseq, area, 32, 0, sig);
    const b = new ArrayBuffer(24);
    const r = ptrace(PTRACE.GET_RSEQ_CONFIGURATION, t.pid, 24, addr(b));
    need(r !== -5, "the kernel does not know PTRACE_GET_RSEQ_CONFIGURATION (EIO)");
    need(r === 24, `PTRACE_GET_RSEQ_CONFIGURATION: ${r < 0 ? errnoText(-r) : `${r} bytes`}`);
    const dv = new DataView(b);
    const ptr = dv.getBigUint64(0, true),
      len = dv.getUint32(8, true),
      got = dv.getUint32(12, true);
    need(
      ptr === area && len === 32 && got === sig,
      `rseq config ${hex(ptr)}/${len}/${hex(got)} is not what was registered (${hex(area)}/32/${hex(sig)})`
    );
    return `rseq at ${hex(ptr)}`;
  });
}

/** BPF: kill the process on syscall `nr`, allow everything else. */
function killOnSyscall(nr: number): Uint8Array {
  const b = new Uint8Array(32),
    dv = new DataView(b.buffer);
  const insn = (i: number, code: number, jt: number, jf: number, k: number) => {
    dv.setUint16(i * 8, code, true);
    b[i * 8 + 2] = jt;
    b[i * 8 + 3] = jf;
    dv.setUint32(i * 8 + 4, k >>> 0, true);
  };
  insn(0, 0x20, 0, 0, 0); // ld  [0] (seccomp_data.nr)
  insn(1, 0x15, 0, 1, nr); // jeq #nr
  insn(2, 0x06, 0, 0, 0x80000000); // ret SECCOMP_RET_KILL_PROCESS
  insn(3, 0x06, 0, 0, 0x7fff0000); // ret SECCOMP_RET_ALLOW
  return b;
}

/** Install a seccomp filter in the tracee (program at scratch+64, sock_fprog at scratch). */
function installFilter(t: Tracee, prog: Uint8Array) {
  t.mem.write(t.scratch + 64n, prog);
  t.mem.write(t.scratch, new Uint8Array(new BigUint64Array([BigInt(prog.length / 8), t.scratch + 64n]).buffer));
  t.ok("prctl(PR_SET_NO_NEW_PRIVS)", NR.prctl, PR.SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  t.ok("seccomp(SECCOMP_SET_MODE_FILTER)", NR.seccomp, 1, 0, t.scratch);
  need(readStatus(t.pid).Seccomp === "2", "the tracee is not in seccomp filter mode");
}

/** PTRACE_O_SUSPEND_SECCOMP: a syscall the tracee's filter kills for runs when injected. */
function seccompSuspend(): string {
  return withTracee((t) => {
    installFilter(t, killOnSyscall(NR.getppid));
    const r = ptrace(PTRACE.SETOPTIONS, t.pid, 0, PTRACE_O.EXITKILL | PTRACE_O.TRACECLONE | PTRACE_O.SUSPEND_SECCOMP);
    need(
      r === 0,
      r === -22
        ? "the kernel does not know PTRACE_O_SUSPEND_SECCOMP (or no CAP_SYS_ADMIN)"
        : `PTRACE_SETOPTIONS: ${errnoText(-r)}`
    );
    const ppid = t.inj.call(NR.getppid);
    need(ppid === BigInt(process.pid), `getppid in the filtered tracee gave ${ppid}`);
    return "filtered syscall ran";
  });
}

/** A seccomp filter installed in the tracee is read back with PTRACE_SECCOMP_GET_FILTER. */
function seccompFilters(): string {
  return withTracee((t) => {
    const insn = killOnSyscall(NR.getppid);
    installFilter(t, insn);
    const n = ptrace(PTRACE.SECCOMP_GET_FILTER, t.pid, 0, 0);
    need(n === 4, n < 0 ? `PTRACE_SECCOMP_GET_FILTER: ${errnoText(-n)}` : `filter has ${n} instructions, expected 4`);
    const back = new Uint8Array(32);
    const r = ptrace(PTRACE.SECCOMP_GET_FILTER, t.pid, 0, addr(back));
    need(r === 4 && back.every((b, i) => b === insn[i]), "the filter read back differs");
    return "4 instructions read back";
  });
}

/** A free PID above the last one handed out (nobody has it right now). */
function freePid(skip: number): number {
  const max = Number(readText("/proc/sys/kernel/pid_max").trim());
  const last = Number(readText("/proc/sys/kernel/ns_last_pid").trim());
  for (let i = 0, p = last + 300 + skip * 97; i < 1000; i++, p++) {
    if (p >= max) p = 300;
    if (!existsSync(`/proc/${p}`)) return p;
  }
  throw new Missing("no free PID found");
}

/** clone3 with set_tid in the tracee creates a process with exactly the PID asked for. */
function clone3SetTid(): string {
  return withTracee((t) => {
    for (let attempt = 0; attempt < 5; attempt++) {
      const want = freePid(attempt);
      const args = new BigUint64Array(CLONE_ARGS_SIZE / 8); // struct clone_args
      args[0] = BigInt(CLONE.PARENT); // the child is ours to reap
      args[4] = 0n; // exit_signal (CLONE_PARENT takes the tracee's)
      args[8] = t.scratch + 512n;
      args[9] = 1n; // set_tid = [want]
      t.mem.write(t.scratch + 512n, new Uint8Array(new BigUint64Array([BigInt(want)]).buffer));
      t.mem.write(t.scratch, new Uint8Array(args.buffer));
      const r = t.inj.call(NR.clone3, t.scratch, CLONE_ARGS_SIZE);
      if (r === -17n) continue; // EEXIST: somebody took it meanwhile
      if (r === -38n) throw new Missing("no clone3 system call");
      if (r === -7n) throw new Missing("clone3 does not know set_tid (E2BIG)");
      need(
        r > 0n,
        `clone3 with set_tid: ${errnoText(Number(-r))}${r === -1n ? "; needs CAP_SYS_ADMIN over the PID namespace" : ""}`
      );
      const child = Number(r);
      t.extra.push(child);
      need(child === want, `clone3 gave PID ${child} instead of ${want}`);
      need(readStatus(child).PPid === String(process.pid), "the clone3 child is not criu-bun's child");
      return `PID ${want}`;
    }
    throw new Missing("every PID tried was taken");
  });
}

/** unshare(CLONE_NEWTIME) in the tracee: its time_for_children namespace differs from ours. */
function timens(): string {
  need(existsSync("/proc/self/ns/time"), "/proc/self/ns/time is missing");
  const mine = readLink("/proc/self/ns/time");
  return withTracee((t) => {
    t.ok("unshare(CLONE_NEWTIME)", NR.unshare, CLONE.NEWTIME);
    const theirs = readLink(`/proc/${t.pid}/ns/time_for_children`);
    need(theirs.startsWith("time:[") && theirs !== mine, `time_for_children is ${theirs}, ours is ${mine}`);
    return theirs;
  });
}

/** close_range(0, ~0) in the tracee closes all of its descriptors. */
function closeRange(): string {
  return withTracee((t) => {
    t.ok("pipe2", NR.pipe2, t.scratch, 0);
    const before = listFds(t.pid).length;
    need(before >= 2, "pipe2 in the tracee made no descriptors");
    t.ok("close_range", NR.close_range, 0, 0xffffffff, 0);
    const after = listFds(t.pid).length;
    need(after === 0, `${after} descriptors are still open after close_range`);
    return `${before} descriptors closed`;
  });
}

/** [vvar], optional [vvar_vclock], [vdso]: contiguous, in that order. */
function vdsoLayout(vmas: Vma[]): { start: bigint; end: bigint; parts: Vma[] } {
  const names = ["[vvar]", "[vvar_vclock]", "[vdso]"];
  const parts = vmas.filter((v) => names.includes(v.path));
  need(parts.length > 0, "no vDSO mapping");
  const order = parts.map((v) => v.path).join(" ");
  need(order === "[vvar] [vdso]" || order === "[vvar] [vvar_vclock] [vdso]", `unexpected vDSO layout: ${order}`);
  for (let i = 1; i < parts.length; i++)
    need(parts[i].start === parts[i - 1].end, `vDSO areas are not contiguous: ${order}`);
  return { start: parts[0].start, end: parts[parts.length - 1].end, parts };
}

/**
 * can_map_vdso: our vDSO layout is understood, and arch_prctl(ARCH_MAP_VDSO_64) in a tracee
 * whose vDSO was unmapped maps the same layout at the address asked for, with the same code.
 */
function canMapVdso(): string {
  const own = vdsoLayout(readVmas(process.pid));
  const sizes = (l: ReturnType<typeof vdsoLayout>) =>
    l.parts.map((v) => `${v.path}:${(v.end - v.start) / 4096n}`).join(" ");
  return withTracee((t) => {
    const before = vdsoLayout(readVmas(t.pid));
    need(sizes(before) === sizes(own), `the tracee's vDSO (${sizes(before)}) differs from ours (${sizes(own)})`);
    t.ok("munmap vDSO", NR.munmap, before.start, before.end - before.start);
    const target = 0x5a000000000n;
    // returns the size of the vDSO image (older kernels: 0)
    const r = t.inj.call(NR.arch_prctl, 0x2003 /* ARCH_MAP_VDSO_64 */, target);
    if (r === -22n) throw new Missing("arch_prctl(ARCH_MAP_VDSO_64) is not supported");
    need(r >= 0n, `arch_prctl(ARCH_MAP_VDSO_64): ${errnoText(Number(-r))}`);
    const after = vdsoLayout(readVmas(t.pid));
    need(after.start === target, `vDSO mapped at ${hex(after.start)}, asked for ${hex(target)}`);
    need(sizes(after) === sizes(before), `vDSO layout changed: ${sizes(after)} vs ${sizes(before)}`);
    const vd = own.parts[own.parts.length - 1],
      len = Number(vd.end - vd.start);
    const selfMem = new RemoteMem(process.pid);
    try {
      const a = selfMem.read(vd.start, len),
        b = t.mem.read(after.parts[after.parts.length - 1].start, len);
      need(
        a.every((x, i) => x === b[i]),
        "the remapped vDSO code differs from ours"
      );
    } finally {
      selfMem.close();
    }
    return sizes(after);
  });
}

/** soft-dirty: clear_refs 4 clears pagemap bit 55, a write sets it again. */
function memDirtyTrack(): string {
  return withTracee((t) => {
    const page = t.scratch;
    t.mem.write(page, new Uint8Array([1]));
    const pm = openFd(`/proc/${t.pid}/pagemap`, O.RDONLY | O.CLOEXEC);
    try {
      const ent = new BigUint64Array(1);
      const read = () => {
        preadFull(pm, new Uint8Array(ent.buffer), (page / 4096n) * 8n, 8, 0, "pagemap");
        return ent[0];
      };
      const SD = 1n << 55n,
        PRESENT = 1n << 63n;
      need(read() & PRESENT, "the written page is not present");
      const cr = openFd(`/proc/${t.pid}/clear_refs`, O.WRONLY | O.CLOEXEC);
      try {
        const four = new Uint8Array([0x34]);
        const w = syscall(NR.write, cr, addr(four), 1);
        need(w === 1, `writing 4 to clear_refs: ${errnoText(-w)}`);
      } finally {
        closeFd(cr);
      }
      need(!(read() & SD), "the soft-dirty bit survived clear_refs");
      t.mem.write(page, new Uint8Array([2]));
      need(read() & SD, "no soft-dirty bit after a write (kernel without CONFIG_MEM_SOFT_DIRTY?)");
      return "bit 55 cleared and set";
    } finally {
      closeFd(pm);
    }
  });
}

/** PAGEMAP_SCAN ioctl; returns [start, end, categories] regions. */
export function pagemapScan(
  pagemapFd: number,
  start: bigint,
  end: bigint,
  mask: number,
  ret: number
): [bigint, bigint, number][] {
  const sc = new PagemapScanner(pagemapFd, 16);
  const n = sc.scan(start, end, { mask, ret });
  if (n === -E.ENOTTY || n === -E.EINVAL) throw new Missing("no PAGEMAP_SCAN ioctl (kernel < 6.7?)");
  need(n >= 0, `PAGEMAP_SCAN: ${errnoText(-n)}`);
  const out: [bigint, bigint, number][] = [];
  for (let i = 0; i < n; i++) out.push([sc.vec[i * 3], sc.vec[i * 3 + 1], Number(sc.vec[i * 3 + 2])]);
  return out;
}

/** PAGEMAP_SCAN on a tracee: of four fresh pages, exactly the two written ones are present. */
function pagemapScanProbe(): string {
  return withTracee((t) => {
    const base = t.ok("mmap", NR.mmap, 0, 4 * 4096, 3, 0x22, -1, 0);
    t.mem.write(base, new Uint8Array([1]));
    t.mem.write(base + 2n * 4096n, new Uint8Array([1]));
    const pm = openFd(`/proc/${t.pid}/pagemap`, O.RDONLY | O.CLOEXEC);
    try {
      const regs = pagemapScan(pm, base, base + 4n * 4096n, PAGE_IS.PRESENT, PAGE_IS.PRESENT);
      const s = regs.map(([a, b]) => `${(a - base) / 4096n}-${(b - base) / 4096n}`).join(",");
      need(s === "0-1,2-3", `PAGEMAP_SCAN reported pages ${s || "none"}, expected 0-1,2-3`);
      return "2 of 4 pages found";
    } finally {
      closeFd(pm);
    }
  });
}

export const TRACEE_PROBES: Probe[] = [
  { name: "ptrace_seize", basic: true, desc: "freeze tasks with PTRACE_SEIZE/INTERRUPT", run: ptraceSeize },
  { name: "ptrace_regsets", basic: true, desc: "registers and FPU/xsave state", run: ptraceRegsets },
  { name: "proc_pid_mem", basic: true, desc: "read and write memory of a stopped task", run: procMem },
  { name: "ptrace_sigmask", basic: true, desc: "blocked signals (PTRACE_GET/SETSIGMASK)", run: ptraceSigmask },
  { name: "ptrace_peeksiginfo", basic: true, desc: "pending signals with their siginfo", run: ptracePeeksiginfo },
  { name: "clone3_set_tid", basic: true, desc: "restore tasks with their PIDs", run: clone3SetTid },
  { name: "close_range", basic: true, desc: "empty the restore puppet's fd table", run: closeRange },
  { name: "can_map_vdso", basic: true, desc: "place the vDSO where it was", run: canMapVdso },
  { name: "get_rseq_conf", basic: false, desc: "rseq registration of a task", run: getRseqConf },
  { name: "seccomp_suspend", basic: false, desc: "inject into tasks under seccomp", run: seccompSuspend },
  { name: "seccomp_filters", basic: false, desc: "dump seccomp filters", run: seccompFilters },
  { name: "timens", basic: false, desc: "time namespaces", run: timens },
  { name: "mem_dirty_track", basic: false, desc: "soft-dirty bits for incremental dumps", run: memDirtyTrack },
  { name: "pagemap_scan", basic: false, desc: "fast page scan (PAGEMAP_SCAN ioctl)", run: pagemapScanProbe },
];
