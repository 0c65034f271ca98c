// Every feature name CRIU 4.2's `check --feature` knows (criu/cr-check.c, in its order). Each is
// answered by a real probe (criu-bun's own, or one of the few below), or, where criu-bun does not
// implement what the feature is for, by "unsupported by criu-bun" and a non-zero exit, so scripts
// and test suites that gate on a feature get the truth about this tool, not only about the kernel.
import { readFileSync } from "../sys/fs";
import { syscall, addr, cstr } from "../sys/syscall";
import { NR } from "../sys/nr";
import { PR } from "../sys/flags";
import { errnoText } from "../sys/errno";
import { AF, SOCK, SOL, SO, socketFd, getsockoptBuf } from "../sys/sock";
import { IPV6_FREEBIND, setsockoptInt } from "../sys/inetsock";
import { Missing, need, withFds, type Probe } from "./probe";

export const CRIU_FEATURE_NAMES = [
  "mnt_id",
  "mem_dirty_track",
  "aio_remap",
  "timerfd",
  "tun",
  "tun_ns",
  "userns",
  "fdinfo_lock",
  "seccomp_suspend",
  "seccomp_filters",
  "loginuid",
  "cgroupns",
  "autofs",
  "tcp_half_closed",
  "compat_cr",
  "uffd",
  "uffd-noncoop",
  "can_map_vdso",
  "sk_ns",
  "sk_unix_file",
  "net_diag_raw",
  "nsid",
  "link_nsid",
  "kcmp_epoll",
  "timens",
  "external_net_ns",
  "clone3_set_tid",
  "newifindex",
  "nftables",
  "has_ipt_legacy",
  "pidfd_store",
  "ns_pid",
  "apparmor_stacking",
  "network_lock_nftables",
  "sockopt_buf_lock",
  "memfd_hugetlb",
  "move_mount_set_group",
  "openat2",
  "get_rseq_conf",
  "ipv6_freebind",
  "pagemap_scan",
  "timer_cr_ids",
  "overlayfs_maps",
  "breakpoints",
  "pagemap_scan_guard_pages",
] as const;

/** CRIU features criu-bun does not use or implement, with why (the answer to `check --feature NAME`). */
export const UNSUPPORTED_FEATURES: Record<string, string> = {
  tun_ns: "tun/tap devices are not checkpointed",
  autofs: "mounts other than a fresh /proc are not restored (autofs)",
  tcp_half_closed: "TCP connections in half-closed states are refused at dump",
  compat_cr: "32-bit (compat) tasks are not checkpointed",
  net_diag_raw: "raw sockets are refused at dump",
  nsid: "network namespaces with interfaces (veth peers) are not saved",
  link_nsid: "network namespaces with interfaces (veth peers) are not saved",
  newifindex: "network interfaces are not restored",
  has_ipt_legacy: "the network is locked with nftables, never iptables",
  apparmor_stacking: "LSM profiles are not restored (--lsm-profile)",
  move_mount_set_group: "mount namespaces beyond a fresh /proc are not restored (no mount engine)",
  overlayfs_maps: "files on overlayfs mounts of a container root are not restored (mounts are not restored)",
  breakpoints: "tasks are stopped at syscalls with ptrace, not with hardware breakpoints",
  pagemap_scan_guard_pages: "MADV_GUARD_INSTALL guard regions are not saved",
};

const SIOCGSKNS = 0x894c,
  SIOCUNIXFILE = 0x89e0;

function sock(fds: number[], domain: number, type: number): number {
  try {
    const fd = socketFd(domain, type);
    fds.push(fd);
    return fd;
  } catch (e) {
    throw new Missing((e as Error).message);
  }
}

/** /proc/<pid>/fdinfo shows mnt_id (files are matched to their mount). */
function mntId(): string {
  return withFds((fds) => {
    const p = cstr("/");
    const fd = syscall(NR.openat, -100, addr(p), 0o200000 /* O_DIRECTORY */ | 0o2000000);
    need(fd >= 0, `open /: ${errnoText(-fd)}`);
    fds.push(fd);
    const m = /^mnt_id:\s*(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "latin1"));
    need(m, "no mnt_id in /proc/self/fdinfo");
    return `mnt_id ${m[1]}`;
  });
}

/** SIOCGSKNS: the network namespace of a socket, as an fd. */
function skNs(): string {
  return withFds((fds) => {
    const s = sock(fds, AF.UNIX, SOCK.DGRAM);
    const ns = syscall(NR.ioctl, s, SIOCGSKNS, 0);
    need(ns >= 0, `SIOCGSKNS: ${errnoText(-ns)}`);
    fds.push(ns);
    return "socket's netns as an fd";
  });
}

/** SIOCUNIXFILE: the file a unix socket is bound to (an unbound socket answers ENOENT). */
function skUnixFile(): string {
  return withFds((fds) => {
    const s = sock(fds, AF.UNIX, SOCK.STREAM);
    const r = syscall(NR.ioctl, s, SIOCUNIXFILE, 0);
    if (r >= 0) fds.push(r);
    need(r >= 0 || r === -2, `SIOCUNIXFILE: ${errnoText(-r)}`);
    return "SIOCUNIXFILE";
  });
}

/** SO_BUF_LOCK can be read (criu-bun saves and restores it with TCP and UDP sockets). */
function bufLock(): string {
  return withFds((fds) => {
    const s = sock(fds, AF.INET, SOCK.STREAM);
    const r = getsockoptBuf(s, SOL.SOCKET, SO.BUF_LOCK, new Uint8Array(4));
    need(r === 4, `getsockopt(SO_BUF_LOCK): ${r < 0 ? errnoText(-r) : `${r} bytes`}`);
    return "SO_BUF_LOCK";
  });
}

/** IPV6_FREEBIND can be set (criu-bun restores it before bind). */
function ipv6Freebind(): string {
  return withFds((fds) => {
    const s = sock(fds, AF.INET6, SOCK.STREAM);
    const r = setsockoptInt(s, SOL.IPV6, IPV6_FREEBIND, 1);
    need(r === 0, `setsockopt(IPV6_FREEBIND): ${errnoText(-r)}`);
    return "IPV6_FREEBIND";
  });
}

/** openat2(2) with RESOLVE_NO_MAGICLINKS. */
function openat2(): string {
  return withFds((fds) => {
    const how = new BigUint64Array([BigInt(0o200000 | 0o2000000), 0n, 0x02n /* RESOLVE_NO_MAGICLINKS */]);
    const p = cstr("/");
    const fd = syscall(NR.openat2, -100, addr(p), addr(how), 24);
    need(fd >= 0, `openat2: ${errnoText(-fd)}`);
    fds.push(fd);
    return "openat2";
  });
}

/** PR_TIMER_CREATE_RESTORE_IDS: POSIX timers recreated with their ids (criu-bun's restore uses it). */
function timerCrIds(): string {
  const r = syscall(NR.prctl, PR.TIMER_CREATE_RESTORE_IDS, PR.TIMER_CREATE_RESTORE_IDS_GET, 0, 0, 0);
  need(r >= 0, `prctl(PR_TIMER_CREATE_RESTORE_IDS): ${errnoText(-r)}`);
  return "PR_TIMER_CREATE_RESTORE_IDS";
}

/** Probes for CRIU names criu-bun's own probe groups do not cover (network_lock_nftables: see index.ts). */
export const CRIU_EXTRA_PROBES: Probe[] = [
  { name: "mnt_id", basic: false, desc: "mount ids of open files (fdinfo)", run: mntId },
  { name: "sk_ns", basic: false, desc: "a socket's network namespace (SIOCGSKNS)", run: skNs },
  { name: "sk_unix_file", basic: false, desc: "the file of a bound unix socket (SIOCUNIXFILE)", run: skUnixFile },
  { name: "sockopt_buf_lock", basic: false, desc: "SO_BUF_LOCK of TCP/UDP sockets", run: bufLock },
  { name: "ipv6_freebind", basic: false, desc: "IPV6_FREEBIND of IPv6 sockets", run: ipv6Freebind },
  { name: "openat2", basic: false, desc: "openat2(2)", run: openat2 },
  { name: "timer_cr_ids", basic: false, desc: "POSIX timers restored with their ids", run: timerCrIds },
  // as criu's: a check of the tool, not of the kernel (setns into a network namespace fd is old)
  {
    name: "external_net_ns",
    basic: false,
    desc: "external network namespaces (dump --external net[INODE]:KEY, restore joins inherit_fd KEY)",
    run: () => {},
  },
];
