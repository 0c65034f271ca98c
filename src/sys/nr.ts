// x86_64 system call numbers used by criu-bun.
export const NR = {
  read: 0, write: 1, open: 2, close: 3, stat: 4, fstat: 5, lstat: 6, poll: 7, lseek: 8, mmap: 9,
  shmget: 29, shmat: 30, shmctl: 31, shmdt: 67,
  mprotect: 10, munmap: 11, brk: 12, rt_sigaction: 13, rt_sigprocmask: 14, ioctl: 16, pread64: 17,
  pwrite64: 18, readv: 19, writev: 20, access: 21, pipe: 22, mremap: 25, madvise: 28, dup: 32,
  dup2: 33, pause: 34, nanosleep: 35, getitimer: 36, alarm: 37, setitimer: 38, getpid: 39,
  socket: 41, connect: 42, accept: 43, accept4: 288, sendto: 44, recvfrom: 45, sendmsg: 46, recvmsg: 47,
  shutdown: 48, bind: 49, listen: 50, getsockname: 51, getpeername: 52, socketpair: 53,
  setsockopt: 54, getsockopt: 55, clone: 56, fork: 57, execve: 59, exit: 60, wait4: 61, kill: 62,
  uname: 63, fcntl: 72, flock: 73, fsync: 74, ftruncate: 77, getcwd: 79, chdir: 80, fchdir: 81,
  rename: 82, mkdir: 83, rmdir: 84, link: 86, unlink: 87, symlink: 88, readlink: 89, chmod: 90,
  fchmod: 91, chown: 92, fchown: 93, umask: 95, getrlimit: 97, getrusage: 98, ptrace: 101,
  getuid: 102, getgid: 104, setuid: 105, setgid: 106, geteuid: 107, getegid: 108, setpgid: 109,
  getppid: 110, getpgrp: 111, setsid: 112, setreuid: 113, setregid: 114, getgroups: 115,
  setgroups: 116, setresuid: 117, getresuid: 118, setresgid: 119, getresgid: 120, getpgid: 121,
  setfsuid: 122, setfsgid: 123, getsid: 124, capget: 125, capset: 126, rt_sigpending: 127,
  rt_sigtimedwait: 128, rt_sigqueueinfo: 129, sigaltstack: 131, personality: 135, prctl: 157,
  arch_prctl: 158, setrlimit: 160, chroot: 161, sync: 162, gettid: 186, tkill: 200, futex: 202,
  set_tid_address: 218, timer_create: 222, timer_settime: 223, timer_gettime: 224,
  timer_getoverrun: 225, timer_delete: 226, clock_gettime: 228, clock_nanosleep: 230,
  exit_group: 231, epoll_wait: 232, epoll_ctl: 233, tgkill: 234, openat: 257, mkdirat: 258, fchownat: 260, linkat: 265,
  newfstatat: 262, getxattr: 191, fgetxattr: 193, unlinkat: 263, ppoll: 271, unshare: 272, set_robust_list: 273,
  get_robust_list: 274, splice: 275, tee: 276, signalfd4: 289, eventfd2: 290, epoll_create1: 291,
  dup3: 292, pipe2: 293, inotify_init1: 294, preadv: 295, pwritev: 296, rt_tgsigqueueinfo: 297,
  perf_event_open: 298, prlimit64: 302, setns: 308, process_vm_readv: 310, process_vm_writev: 311,
  kcmp: 312, seccomp: 317, getrandom: 318, memfd_create: 319, userfaultfd: 323, statx: 332,
  rseq: 334, pidfd_send_signal: 424, io_uring_setup: 425, open_tree: 428, fsopen: 430,
  clone3: 435, close_range: 436, pidfd_open: 434, pidfd_getfd: 438, process_madvise: 440,
  timerfd_create: 283, timerfd_settime: 286, timerfd_gettime: 287, fadvise64: 221,
  sched_getaffinity: 204, sched_setaffinity: 203, getpriority: 140, setpriority: 141,
  mincore: 27, mount: 165, umount2: 166, sethostname: 170, setdomainname: 171, msync: 26, membarrier: 324, pkey_mprotect: 329, map_shadow_stack: 453,
  syncfs: 306, fchmodat: 268, openat2: 437, inotify_add_watch: 254, inotify_rm_watch: 255, open_by_handle_at: 304,
  io_setup: 206, io_destroy: 207, io_getevents: 208, pivot_root: 155, mknodat: 259, move_mount: 429, mlock: 149, utimensat: 280,
} as const;

let names: Map<number, string> | undefined;
/** The name of a syscall number, for logs ("syscall 999" when criu-bun does not know it). */
export function syscallName(nr: number): string {
  names ??= new Map(Object.entries(NR).map(([k, v]) => [v as number, k]));
  return names.get(nr) ?? `syscall ${nr}`;
}
