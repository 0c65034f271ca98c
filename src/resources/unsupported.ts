// What criu-bun cannot restore exactly, decided once: every fd kind, task attribute, memory
// property and socket state listed here makes `dump` fail with one line naming the process (and
// fd) and this resource, before anything is killed. Nothing here is ever restored approximately.
// kinds.ts lists the kinds that are saved; FD_TYPES_REFUSED below names every other fd_types
// value, so a new kind is either added to kinds.ts or here (test/refusals.test.ts checks both
// lists together, and starts a process holding each entry of UNSUPPORTED to prove the refusal).
import { CriuError } from "../log";

/** key -> the words the error line uses for it (after "process PID[ fd N]: ") */
export const UNSUPPORTED = {
  // fd kinds without a dumper (checked in files.ts, unix.ts, inet.ts)
  "netlink-socket": "netlink socket",
  "packet-socket": "packet socket",
  "fanotify": "fanotify",
  "inotify-deleted": "inotify watch on a deleted file",
  "inotify-queued": "unread inotify events",
  "io_uring": "io_uring",
  "pidfd": "pidfd of a process that is gone, outside the tree, or of a thread",
  "userfaultfd": "userfaultfd",
  "perf_event": "perf_event",
  "nsfs": "namespace file",
  "tun": "tun/tap device attached to an interface",
  "bpf-map": "BPF map",
  "chardev": "character device other than null, zero, full, random, urandom, a terminal or an unattached tun",
  // task attributes (dump/task.ts)
  "timens-children": "time namespace for children differing from its own",
  "chroot": "root directory other than criu-bun's",
  "cgroupns": "cgroup namespace of its own",
  "ipcns-mqueue": "POSIX message queue no fd of the tree holds, in its own IPC namespace",
  "ipcns-objects": "SysV IPC state restore cannot make again",
  "sigtrap": "pending SIGTRAP",
  "personality": "personality with bits Linux does not define",
  // threads (resources/threads.ts), signals (resources/signals.ts), timers (resources/timers.ts)
  "posix-timer-clock": "POSIX timer on a dynamic clock or on the CPU clock of another process or thread",
  "sigpending-rlimit": "queued signals over RLIMIT_SIGPENDING, which restore could not queue again",
  "sched-deadline": "SCHED_DEADLINE scheduling policy (its runtime, deadline and period have no place in the images)",
  "session-outside-pidns": "session or process group led from outside its PID namespace",
  "session-leader-gone": "session whose leader is not in the tree",
  "pgrp-leader-gone": "process group whose leader lives outside the tree",
  "session-not-parents": "session other than its parent's, not led by a zombie whose exit hands it to that parent",
  "vfork": "vfork in progress (a child sharing its memory that has not exec'd or exited yet)",
  "leader-exited": "thread group leader that has exited while its other threads run",
  // memory (resources/memory.ts)
  "droppable": "MAP_DROPPABLE mapping",
  "sealed": "memory sealed with mseal",
  "vdso-layout": "vDSO and vvar not side by side as the kernel maps them (one moved or unmapped apart)",
  "shmem-private": "private mapping of a shared memory object",
  "sysv-shared-outside": "SysV shared memory of the host's IPC namespace attached outside the tree too",
  "hugetlb": "hugetlb mapping",
  "aio": "AIO ring",
  "memfd-map": "mapping of a memfd",
  "special-map": "mapping of a socket or other special file",
  "guard": "guard region (MADV_GUARD_INSTALL)",
  "lease": "file lease",
  "proc-gone": "directory of a process that is gone (/proc/PID)",
  "dumpable-suid": "dumpable mode 2 (suid_dumpable), which PR_SET_DUMPABLE cannot set",
  // files (resources/files.ts and the kinds)
  "fown": "file owner that is a thread or outside the tree (F_SETOWN)",
  "memfd-shared": "memfd opened by several processes through separate descriptions",
  "deleted-linked": "deleted file that still has another hard link",
  "deleted-special": "deleted file that is not a regular file or a directory",
  "tmpfile": "O_TMPFILE file never linked",
  "tmpfs-xattr": "file with extended attributes in a tmpfs the dump saves (the tar keeps none)",
  "path-hidden":
    "file, cwd or mapped file whose path leads to another file now (a mount on top of it or of a directory above it)",
  "tty-queued": "bytes queued in a terminal",
  "tty-mode": "terminal in packet mode (TIOCPKT) or exclusive mode (TIOCEXCL)",
  "terminal": "terminal whose master is not in the tree (without --shell-job)",
  "tty-foreground": "terminal whose foreground process group has no process in the tree",
  "memfd-hugetlb": "memfd of huge pages (MFD_HUGETLB)",
  "epoll-stale": "epoll target whose fd number was closed or reused since it was added",
  "epoll-oneshot-fired": "EPOLLONESHOT epoll target that fired already (disarmed until EPOLL_CTL_MOD)",
  "pipe-packets": "packets queued in a pipe or FIFO (written in packet mode, O_DIRECT)",
  "scm-rights": "file descriptors in flight (SCM_RIGHTS)",
  "unix-dgram-queue": "queued datagrams on an unconnected unix socket",
  "udp-cork": "corked UDP socket",
  "mqueue-full": "full POSIX message queue (reading it would let in a blocked sender's message)",
  // inet and unix sockets (resources/inet.ts, resources/unix.ts)
  "inet-kind": "inet socket of this type and protocol",
  "inet-connected-raw": "connected raw or ping socket",
  "sock-error": "socket with a pending error",
  "sockopt": "socket option criu-bun does not keep",
  "inet-queue": "data waiting to be read on an inet socket that is not an established TCP connection",
  "inet-multicast": "multicast group membership of an inet socket",
  "tcp-half-closed": "half-closed or connecting TCP connection with --tcp-established",
  "tcp-in-flight": "TCP connection not accepted yet (--skip-in-flight drops it)",
  "unix-in-flight": "unix connection not accepted yet",
  "unix-oneway-queue": "queued datagrams on a unix socket connected one way",
  "unix-queue-named-sender": "queued message from a named sender restore cannot send from",
  "unix-connection-name": "unix connection whose abstract name restore cannot give back",
  "unkept-state": "process or thread setting no field of CRIU's images holds",
  "unix-ext-peer":
    "unix connection to a peer outside the tree other than a datagram socket to a named one (--ext-unix-sk)",
  "unix-queue-cmsg": "queued message with control data other than fds (SCM_CREDENTIALS, a timestamp)",
  "unix-oob": "out-of-band byte (MSG_OOB), or the mark of one read, on a unix stream socket",
} as const;
export type UnsupportedKey = keyof typeof UNSUPPORTED;

/** fd_types values (files.ts FD_TYPE) that have no FdKind, and the UNSUPPORTED entry that refuses them */
export const FD_TYPES_REFUSED: Record<number, UnsupportedKey> = {
  10: "packet-socket",
  12: "fanotify",
  13: "netlink-socket",
  14: "nsfs",
  15: "tun",
  19: "bpf-map",
};

/** fd_types values that are CRIU's own bookkeeping, not a kind of open file a process can hold:
 *  UND (unset), CTL_TTY (the controlling terminal's entry), AUTOFS_PIPE (autofs's pipe, a PIPE
 *  with a different restore) */
export const FD_TYPES_NOT_FILES: Record<number, string> = {
  0: "UND",
  65534: "CTL_TTY",
  65535: "AUTOFS_PIPE",
};

/** anon_inode:[NAME] targets with no FdKind (files.ts refuses them by these names) */
export const ANON_REFUSED: Record<string, UnsupportedKey> = {
  io_uring: "io_uring",
  userfaultfd: "userfaultfd",
  perf_event: "perf_event",
  "[fanotify]": "fanotify",
  fanotify: "fanotify",
  "bpf-map": "bpf-map",
};

/** Refuse the dump: "WHERE: RESOURCE (detail) is not supported yet". */
export function refuse(area: string, where: string, key: UnsupportedKey, detail?: string): never {
  throw new CriuError(area, `${where}: ${UNSUPPORTED[key]}${detail ? ` (${detail})` : ""} is not supported yet`);
}
