// File descriptor probes, run in criu-bun on descriptors made for the probe and closed after.
import { syscall, addr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { F } from "../sys/mem";
import { errnoText } from "../sys/errno";
import { readFdinfo, readLink } from "../sys/proc";
import { need, sys, withFds, memfd, type Probe } from "./probe";

const KCMP_FILE = 0,
  KCMP_EPOLL_TFD = 7;

function kcmp(type: number, a: number | bigint, b: number | bigint): number {
  return syscall(NR.kcmp, process.pid, process.pid, type, a, b);
}

/** kcmp(KCMP_FILE): a dup'ed fd is the same file, another memfd is not. */
function kcmpFile(): string {
  return withFds((fds) => {
    const a = memfd("criu-bun-kcmp-a");
    fds.push(a);
    const b = memfd("criu-bun-kcmp-b");
    fds.push(b);
    const d = sys("dup", NR.fcntl, a, F.DUPFD_CLOEXEC, 0);
    fds.push(d);
    const same = kcmp(KCMP_FILE, a, d),
      other = kcmp(KCMP_FILE, a, b);
    need(same !== -38, "no kcmp system call (CONFIG_CHECKPOINT_RESTORE off?)");
    need(same === 0, `kcmp of an fd and its dup gave ${same < 0 ? errnoText(-same) : same}`);
    need(other === 1 || other === 2, `kcmp of two memfds gave ${other < 0 ? errnoText(-other) : other}`);
    return "same and different files told apart";
  });
}

/** kcmp(KCMP_EPOLL_TFD): the file an epoll watches is found by (efd, tfd, toff). */
function kcmpEpoll(): string {
  return withFds((fds) => {
    const ep = sys("epoll_create1", NR.epoll_create1, 0o2000000);
    fds.push(ep);
    const p = new Int32Array(2);
    sys("pipe2", NR.pipe2, addr(p), 0o2000000);
    fds.push(p[0], p[1]);
    const ev = new Uint8Array(12); // struct epoll_event (packed): u32 events, u64 data
    new DataView(ev.buffer).setUint32(0, 1 /* EPOLLIN */, true);
    sys("epoll_ctl", NR.epoll_ctl, ep, 1 /* ADD */, p[0], addr(ev));
    const slot = new Uint32Array([ep, p[0], 0]);
    const r = kcmp(KCMP_EPOLL_TFD, p[0], addr(slot));
    need(r === 0, `kcmp(KCMP_EPOLL_TFD) of the watched pipe gave ${r < 0 ? errnoText(-r) : r}`);
    const r2 = kcmp(KCMP_EPOLL_TFD, p[1], addr(slot));
    need(r2 > 0, "kcmp(KCMP_EPOLL_TFD) confuses the two ends of a pipe");
    return "watched file found";
  });
}

function pidfdOpen(fds: number[]): number {
  const fd = syscall(NR.pidfd_open, process.pid, 0);
  need(fd !== -38, "no pidfd_open system call");
  need(fd >= 0, `pidfd_open: ${errnoText(-fd)}`);
  fds.push(fd);
  return fd;
}

/** pidfd_open: its fdinfo names our PID. */
function pidfdOpenProbe(): string {
  return withFds((fds) => {
    const fd = pidfdOpen(fds);
    const info = readFdinfo(process.pid, fd);
    need(info.Pid === String(process.pid), `the pidfd's fdinfo says Pid ${info.Pid}`);
    return readLink(`/proc/self/fd/${fd}`);
  });
}

/** pidfd_getfd: a copy of one of our fds taken through a pidfd is the same file (kcmp). */
function pidfdGetfd(): string {
  return withFds((fds) => {
    const pfd = pidfdOpen(fds);
    const m = memfd("criu-bun-getfd");
    fds.push(m);
    const got = syscall(NR.pidfd_getfd, pfd, m, 0);
    need(got !== -38, "no pidfd_getfd system call");
    need(got >= 0, `pidfd_getfd: ${errnoText(-got)}`);
    fds.push(got);
    need(got !== m && kcmp(KCMP_FILE, m, got) === 0, "pidfd_getfd gave another file");
    return "fd copied";
  });
}

function pidfdStore(): string {
  pidfdOpenProbe();
  pidfdGetfd();
  return "pidfd_open and pidfd_getfd";
}

/** timerfd: TFD_IOC_SET_TICKS and the fdinfo fields a dump reads. */
function timerfd(): string {
  return withFds((fds) => {
    const fd = sys("timerfd_create", NR.timerfd_create, 1 /* CLOCK_MONOTONIC */, 0o2000000);
    fds.push(fd);
    const its = new BigUint64Array([0n, 0n, 1000n, 0n]); // interval 0, value 1000 s
    sys("timerfd_settime", NR.timerfd_settime, fd, 0, addr(its), 0);
    const ticks = new BigUint64Array([7n]);
    const r = syscall(NR.ioctl, fd, 0x40085400 /* TFD_IOC_SET_TICKS */, addr(ticks));
    need(r === 0, `TFD_IOC_SET_TICKS: ${errnoText(-r)}`);
    const info = readFdinfo(process.pid, fd);
    need(info.clockid === "1", `timerfd fdinfo clockid is ${info.clockid}`);
    need(info.ticks === "7", `timerfd fdinfo ticks is ${info.ticks} after setting 7`);
    need(/^\(\d+, \d+\)$/.test(info.it_value ?? ""), `timerfd fdinfo it_value is ${info.it_value}`);
    return `it_value ${info.it_value}`;
  });
}

/** A flock shows up as a "lock:" line in /proc/PID/fdinfo. */
function fdinfoLock(): string {
  return withFds((fds) => {
    const fd = memfd("criu-bun-lock");
    fds.push(fd);
    sys("flock", NR.flock, fd, 2 /* LOCK_EX */);
    const info = readFdinfo(process.pid, fd);
    need(info.lock && /FLOCK\s+ADVISORY\s+WRITE/.test(info.lock), `fdinfo lock field: ${info.lock ?? "missing"}`);
    return info.lock;
  });
}

export const FILE_PROBES: Probe[] = [
  { name: "kcmp", basic: true, desc: "find shared file descriptions", run: kcmpFile },
  { name: "kcmp_epoll", basic: false, desc: "files watched by epoll", run: kcmpEpoll },
  { name: "pidfd_open", basic: false, desc: "pidfds", run: pidfdOpenProbe },
  { name: "pidfd_getfd", basic: false, desc: "take fds from other tasks", run: pidfdGetfd },
  { name: "pidfd_store", basic: false, desc: "pidfd_open and pidfd_getfd together", run: pidfdStore },
  { name: "timerfd", basic: false, desc: "timerfd state", run: timerfd },
  { name: "fdinfo_lock", basic: false, desc: "file locks in fdinfo", run: fdinfoLock },
];
