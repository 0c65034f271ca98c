/*
 * exact: one piece of state that criu-bun restores exactly, named by MODE; at go the workload
 * checks it is all still there (so a dump/restore in between must have kept it).
 *
 *   exact DIR MODE
 *   pdeathsig   PR_SET_PDEATHSIG(SIGUSR2) on the process and on a child's thread (child reports by pipe)
 *   thp         PR_SET_THP_DISABLE
 *   tstp        a child in its own process group stopped by SIGTSTP (its stop reaped): still stopped,
 *               and a stop its parent sees again is by SIGTSTP; ttin: the same with SIGTTIN
 *   membarrier  membarrier registrations (private expedited and global expedited); -synccore: sync-core
 *               alone (PRIVATE_EXPEDITED still EPERM); -rseq: rseq and private expedited: the
 *               GET_REGISTRATIONS mask and each expedited command's answer (0 or EPERM) kept
 *   securebits  SECBIT_NOROOT (locked), SECBIT_NO_SETUID_FIXUP and SECBIT_KEEP_CAPS set: all still set
 *   mlock       an mlock()ed 256 KiB pattern and a MAP_LOCKED one: still locked (VmFlags lo), contents kept
 *   loginuid    /proc/self/loginuid set to 4242
 *   maywrite    MAP_SHARED PROT_READ mapping of a file opened O_RDWR (fd closed): mprotect RW works, writes reach the file
 *   pipesize    empty pipes of 4 KiB and 1 MiB capacity (F_SETPIPE_SZ) keep it
 *   peergone    unix stream, seqpacket and dgram sockets whose peer closed after sending: data, then EOF / ECONNREFUSED
 *   udpshut     connected UDP sockets shut down for writing (send: EPIPE) and for reading (recv: 0 at once)
 *   fown        a pipe owned by the process (F_SETOWN), F_SETSIG(SIGUSR1), O_ASYNC: a write raises SIGUSR1 with si_fd
 *   fownother   a pipe owned by a child (F_SETOWN), one by the child's process group (F_SETOWN_EX
 *               F_OWNER_PGRP), each with its F_SETSIG and O_ASYNC: owners kept, a write raises each
 *               signal in the child with the right si_fd
 *   ghost       a deleted sparse file: holes where they were (SEEK_DATA/SEEK_HOLE), mode 0640, mtime 2001-09-09
 *   zpgid       a zombie child that made its own process group: still a zombie, pgid its own, exit status 7
 *   wipeonfork  MADV_WIPEONFORK memory: kept in the process, a fork's child sees it zeroed
 *   memfdmode   a memfd with 5 bytes, fchmod()ed to 0640 and fchown()ed to 4242:4243: mode, owner, data kept
 *   memfdexec   an ELF in a memfd held read-only: execveat(AT_EMPTY_PATH) runs it (no ETXTBSY)
 *   ptyowner    a pty pair whose slave was chown()ed to 4242:4243: the slave keeps that owner, and its
 *               control characters (c_cc[0..16] = 0x41..0x51)
 *   linkremap   (dump with --link-remap) a file deleted while open and mapped shared, with another hard link
 *               "other": fd and mapping are that inode still (writes show through "other"), the fd
 *               reads "DIR/orig (deleted)", no link_remap.N is left in DIR
 *   deldircwd   cwd in a directory since removed (mode 0750): still that removed directory
 *   deldirfd    an O_DIRECTORY fd on a directory since removed: the same
 *   devnode     an fd on a character device node made with mknod (1:3) in DIR, one on /dev/zero
 *   fifodata    a FIFO in DIR opened read-write with 14 bytes unread
 *   opathlink   an O_PATH|O_NOFOLLOW fd on a dangling symlink: still the link (S_ISLNK, readlinkat)
 *   procpid     fds on /proc/CHILD/status and the /proc/CHILD directory of a child of the tree
 *   seccompthreads  a thread whose own seccomp filter kills the process on brk, prctl, membarrier,
 *               mmap and munmap and fails getppid (EPERM), beside a main thread whose filter fails
 *               getpgrp (EACCES): both filters still apply, each to its thread only
 *   pidfd       pidfds on itself, and two on a child: the child's share one inode, signal 0 reaches
 *               itself, SIGKILL through the child's kills it and waitid(P_PIDFD) reports it; the
 *               read end of a child's pipe pulled in with pidfd_getfd still holds the child's data;
 *               a pidfd on a grandchild names it (fdinfo Pid) and its SIGKILL makes it readable
 *   cttyclosed  as ctty, but the child closed its fd of the slave (it stays its controlling terminal)
 *   trapign     SIGTRAP ignored (SIG_IGN): still ignored, a raise() does nothing
 *   traphandler a SIGTRAP handler (SA_SIGINFO, sa_mask SIGUSR2) with SIGTRAP blocked: handler, flags,
 *               mask and the blocked bit kept; once unblocked, a pending SIGTRAP reaches the handler
 *   ctty        a child session leader with the pty slave as controlling terminal: open("/dev/tty")
 *               works in it, TIOCGSID on the master names it, closing the master sends it SIGHUP
 *   vmflags     one mapping per VmFlags mnemonic a dump reads: madvise DONTFORK, DONTDUMP, MERGEABLE,
 *               HUGEPAGE, NOHUGEPAGE, WIPEONFORK, SEQUENTIAL, RANDOM (dc dd mg hg nh wf sr rr), one with
 *               DONTFORK, DONTDUMP, HUGEPAGE and SEQUENTIAL together, mlock (lo), MAP_GROWSDOWN (gd), a
 *               MAP_SHARED PROT_READ mapping of a file opened O_RDWR (mw) and one of it opened O_RDONLY
 *               (no mw): each keeps its flags and its contents
 *   tls         two TLS GDT entries set (PTRACE_SET_THREAD_AREA from a child; a 32-bit data segment in
 *               pages, and a read-only one, byte-granular, "useable"): read back the same,
 *               and the third entry is still empty
 * --selftest-corrupt: damages the state before go, so the check must fail.
 */
#define WL_MODES
#include "wl.h"
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <poll.h>
#include <dirent.h>
#include <sys/sysmacros.h>
#include <pthread.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <asm/ldt.h>
#include <sys/ptrace.h>

/* SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | SECBIT_KEEP_CAPS */
#define SECUREBITS_WANT (0x1 | 0x2 | 0x4 | 0x10)

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#define MADV_KEEPONFORK 19
#endif

static int fds[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
static pid_t grandchild; /* pidfd: the child's child */
static char *mem, *mem2; /* mem2: mlock's MAP_LOCKED mapping */
/* vmflags: the regions, their VmFlags (space-separated), and the flags they must not have */
#define VF_N 13
static char *vf_mem[VF_N];
static const char *vf_want[VF_N] = {"dc", "dd", "mg", "hg", "nh", "wf", "sr", "rr", "dc dd hg sr", "lo", "gd", "mw", ""};
static const int vf_adv[VF_N][4] = {{MADV_DONTFORK}, {MADV_DONTDUMP}, {MADV_MERGEABLE}, {MADV_HUGEPAGE}, {MADV_NOHUGEPAGE}, {18 /* MADV_WIPEONFORK */}, {MADV_SEQUENTIAL}, {MADV_RANDOM}, {MADV_DONTFORK, MADV_DONTDUMP, MADV_HUGEPAGE, MADV_SEQUENTIAL}};
#define VF_LEN (64 << 10)
static const size_t MLEN = 256 << 10;
static pid_t child;
static const off_t HOLE_DATA2 = 1 << 20; /* second extent of the sparse file */
static const time_t MTIME = 1000000000;


/* membarrier: the registrations (GET_REGISTRATIONS) and what each expedited command answers (0 or -EPERM) */
enum { MB_PRIVATE = 1 << 3, MB_REGISTER_GLOBAL = 1 << 2, MB_REGISTER_PRIVATE = 1 << 4, MB_SYNC_CORE = 1 << 5,
	MB_REGISTER_SYNC_CORE = 1 << 6, MB_RSEQ = 1 << 7, MB_REGISTER_RSEQ = 1 << 8, MB_GET_REGISTRATIONS = 1 << 9 };
static long membarrier(int cmd, int flags) { long r = syscall(SYS_membarrier, cmd, flags, 0); return r < 0 ? -errno : r; }
static long mb_mask, mb_private, mb_sync_core, mb_rseq;
static void mb_record(void) {
	mb_mask = membarrier(MB_GET_REGISTRATIONS, 0);
	mb_private = membarrier(MB_PRIVATE, 0), mb_sync_core = membarrier(MB_SYNC_CORE, 0), mb_rseq = membarrier(MB_RSEQ, 0);
}

/* tls: the entries set */
static struct user_desc tls_want[2] = {
	{.entry_number = 12, .base_addr = 0x12345000, .limit = 0xfff, .seg_32bit = 1, .limit_in_pages = 1},
	{.entry_number = 13, .base_addr = 0xabc0, .limit = 0x7ff, .seg_32bit = 1, .read_exec_only = 1, .useable = 1},
};
/* set (set=1) or read back (set=0) entries 12..14 of this process's thread through a child that ptraces it:
 * set_thread_area and int $0x80 are not served for 64-bit processes on every kernel, PTRACE_SET_THREAD_AREA is */
static int tls_ptrace(int set, struct user_desc *d, int n) {
	pid_t me = getpid();
	int p[2];
	if (pipe(p)) return -1;
	prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
	pid_t c = fork();
	if (c == 0) {
		int st, ok = ptrace(PTRACE_SEIZE, me, 0, 0) == 0 && ptrace(PTRACE_INTERRUPT, me, 0, 0) == 0 && waitpid(me, &st, __WALL) == me;
		for (int i = 0; ok && i < n; i++)
			ok = ptrace(set ? PTRACE_SET_THREAD_AREA : PTRACE_GET_THREAD_AREA, me, (void *)(long)d[i].entry_number, &d[i]) == 0;
		ptrace(PTRACE_DETACH, me, 0, 0);
		if (ok && write(p[1], d, sizeof *d * n) != (ssize_t)(sizeof *d * n)) ok = 0;
		_exit(ok ? 0 : 1);
	}
	close(p[1]);
	int st = 0;
	ssize_t got = read(p[0], d, sizeof *d * n);
	close(p[0]);
	while (waitpid(c, &st, 0) < 0 && errno == EINTR) {}
	return got == (ssize_t)(sizeof *d * n) && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}
static int tls_same(const struct user_desc *a, const struct user_desc *b) {
	return a->entry_number == b->entry_number && a->base_addr == b->base_addr && a->limit == b->limit &&
	       a->seg_32bit == b->seg_32bit && a->contents == b->contents && a->read_exec_only == b->read_exec_only &&
	       a->limit_in_pages == b->limit_in_pages && a->seg_not_present == b->seg_not_present && a->useable == b->useable;
}

/* traphandler: SIGTRAPs that reached the handler */
static volatile sig_atomic_t traps;
static void on_trap(int sig, siginfo_t *si, void *uc) { (void)sig, (void)si, (void)uc; traps++; }


/* seccompthreads: a filter failing `errnr` with `err`, and killing the process on each of kill[] */
static int filter(int errnr, int err, const int *kill, int nkill) {
	struct sock_filter f[32];
	int n = 0;
	f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
	f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)errnr, 0, 1);
	f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)err);
	for (int i = 0; i < nkill; i++) {
		f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)kill[i], 0, 1);
		f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
	}
	f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	struct sock_fprog prog = {.len = (unsigned short)n, .filter = f};
	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}
static volatile int thr_state; /* 0 starting, 1 filtered, 2 asked to check, 3 checked */
static volatile long thr_ppid, thr_ppid_errno, thr_pgrp;
static void *filtered_thread(void *arg) {
	(void)arg;
	static const int kill[] = {SYS_brk, SYS_prctl, SYS_membarrier, SYS_mmap, SYS_munmap};
	if (filter(SYS_getppid, EPERM, kill, 5) != 0) { thr_state = -1; return NULL; }
	thr_state = 1;
	struct timespec t = {0, 5000000};
	while (thr_state != 2) syscall(SYS_nanosleep, &t, NULL);
	thr_ppid = syscall(SYS_getppid);
	thr_ppid_errno = errno;
	thr_pgrp = syscall(SYS_getpgrp);
	thr_state = 3;
	for (;;) syscall(SYS_nanosleep, &t, NULL);
	return NULL;
}

static char proc_stat(pid_t p, int *pgid) { /* state, and the pgid field */
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)p);
	int fd = open(path, O_RDONLY);
	if (fd < 0) return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0) return 0;
	buf[n] = 0;
	char *c = strrchr(buf, ')');
	char st = 0;
	int ppid = 0;
	if (!c || sscanf(c + 2, "%c %d %d", &st, &ppid, pgid) != 3) return 0;
	return st;
}

/* ctty child: a session leader on the pty slave; answers 'o' (open /dev/tty: 0 or errno), reports 'H' on SIGHUP */
static int ctty_rep = -1;
static void on_hup(int sig) { (void)sig; char h = 'H'; write(ctty_rep, &h, 1); }
static void ctty_child(const char *slave, int cmd, int rep, int keepfd) {
	ctty_rep = rep;
	signal(SIGHUP, on_hup);
	setsid();
	int s = open(slave, O_RDWR); /* no O_NOCTTY: becomes the controlling terminal */
	if (s < 0) _exit(3);
	if (!keepfd) close(s);
	char c = 'r';
	write(rep, &c, 1);
	while (read(cmd, &c, 1) == 1) {
		if (c != 'o') continue;
		int t = open("/dev/tty", O_RDWR);
		int e = t >= 0 ? 0 : errno;
		if (t >= 0) close(t);
		char r = (char)e;
		write(rep, &r, 1);
	}
	for (;;) pause();
}

static volatile sig_atomic_t usr1_fd = -1;
static void on_usr1(int sig, siginfo_t *si, void *uc) { (void)sig; (void)uc; usr1_fd = si->si_fd; }


static int smaps_flag(void *addr, const char *flag) {
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int in = 0, found = 0;
	while (f && fgets(line, sizeof line, f)) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2) in = (unsigned long)addr >= s && (unsigned long)addr < e;
		if (in && strncmp(line, "VmFlags:", 8) == 0) {
			char pat[8];
			snprintf(pat, sizeof pat, " %s", flag);
			found = strstr(line + 8, pat) != NULL;
			break;
		}
	}
	if (f) fclose(f);
	return found;
}

static void setup(void) {
	if (is("pdeathsig")) {
		NEED(prctl(PR_SET_PDEATHSIG, SIGUSR2) == 0);
		int p[2], q[2];
		NEED(pipe(p) == 0 && pipe(q) == 0);
		child = fork();
		if (child == 0) { /* asks its own pdeath signal when poked, answers on q */
			prctl(PR_SET_PDEATHSIG, SIGUSR1);
			close(p[1]), close(q[0]);
			char c;
			while (read(p[0], &c, 1) == 1) {
				int sig = -1;
				prctl(PR_GET_PDEATHSIG, &sig);
				write(q[1], &sig, sizeof sig);
			}
			_exit(0);
		}
		fds[0] = p[1], fds[1] = q[0];
		close(p[0]), close(q[1]);
	} else if (is("thp")) NEED(prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0);
	else if (is("tstp") || is("ttin")) { /* a child in a group of its own, stopped by SIGTSTP (SIGTTIN), its stop reaped */
		int sig = is("tstp") ? SIGTSTP : SIGTTIN;
		child = fork();
		if (child == 0) {
			setpgid(0, 0);
			for (;;) pause();
		}
		setpgid(child, child);
		int st;
		NEED(kill(child, sig) == 0);
		NEED(waitpid(child, &st, WUNTRACED) == child && WIFSTOPPED(st) && WSTOPSIG(st) == sig);
	}
	else if (is("membarrier")) { /* private expedited and global expedited */
		NEED(membarrier(MB_REGISTER_PRIVATE, 0) == 0 && membarrier(MB_REGISTER_GLOBAL, 0) == 0);
		mb_record();
	} else if (is("membarrier-synccore")) { /* sync-core alone: the private expedited command stays EPERM */
		NEED(membarrier(MB_REGISTER_SYNC_CORE, 0) == 0);
		mb_record();
		NEED(mb_private == -EPERM);
	} else if (is("membarrier-rseq")) { /* rseq and private expedited */
		NEED(membarrier(MB_REGISTER_RSEQ, 0) == 0 && membarrier(MB_REGISTER_PRIVATE, 0) == 0);
		mb_record();
	}
	else if (is("securebits")) NEED(prctl(PR_SET_SECUREBITS, SECUREBITS_WANT, 0, 0, 0) == 0);
	else if (is("tls")) {
		struct user_desc d[2] = {tls_want[0], tls_want[1]};
		NEED(tls_ptrace(1, d, 2) == 0);
	}
	else if (is("trapign")) NEED(signal(SIGTRAP, SIG_IGN) != SIG_ERR);
	else if (is("traphandler")) {
		struct sigaction sa = {0};
		sa.sa_sigaction = on_trap;
		sa.sa_flags = SA_SIGINFO | SA_RESTART;
		sigemptyset(&sa.sa_mask);
		sigaddset(&sa.sa_mask, SIGUSR2);
		NEED(sigaction(SIGTRAP, &sa, NULL) == 0);
		sigset_t b;
		sigemptyset(&b);
		sigaddset(&b, SIGTRAP);
		NEED(sigprocmask(SIG_BLOCK, &b, NULL) == 0);
	} else if (is("mlock")) {
		NEED((mem = mmap(NULL, MLEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)) != MAP_FAILED);
		wl_fill(mem, MLEN, 77);
		NEED(mlock(mem, MLEN) == 0);
		/* and one mapped MAP_LOCKED */
		NEED((mem2 = mmap(NULL, MLEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0)) != MAP_FAILED);
		wl_fill(mem2, MLEN, 78);
	} else if (is("vmflags")) {
		char p[4200];
		wl_path(p, sizeof p, "vmflags-file");
		int rw = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600), ro;
		NEED(rw >= 0 && ftruncate(rw, VF_LEN) == 0 && (ro = open(p, O_RDONLY)) >= 0);
		for (int i = 0; i < VF_N; i++) {
			if (i < 11) {
				NEED((vf_mem[i] = mmap(NULL, VF_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (i == 10 ? MAP_GROWSDOWN : 0), -1, 0)) != MAP_FAILED);
				wl_fill(vf_mem[i], VF_LEN, 100 + i);
			} else NEED((vf_mem[i] = mmap(NULL, VF_LEN, PROT_READ, MAP_SHARED, i == 11 ? rw : ro, 0)) != MAP_FAILED);
			for (int k = 0; k < 4 && i < 9 && vf_adv[i][k]; k++) NEED(madvise(vf_mem[i], VF_LEN, vf_adv[i][k]) == 0);
			if (i == 9) NEED(mlock(vf_mem[i], VF_LEN) == 0);
		}
		close(rw);
		close(ro);
	} else if (is("loginuid")) {
		int fd = open("/proc/self/loginuid", O_WRONLY);
		NEED(fd >= 0 && write(fd, "4242", 4) == 4);
		close(fd);
	} else if (is("maywrite")) {
		char p[4200];
		wl_path(p, sizeof p, "maywrite");
		int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
		NEED(fd >= 0 && ftruncate(fd, 8192) == 0);
		NEED((mem = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd, 0)) != MAP_FAILED);
		close(fd);
	} else if (is("pipesize")) {
		NEED(pipe(fds) == 0 && pipe(fds + 2) == 0);
		NEED(fcntl(fds[0], F_SETPIPE_SZ, 4096) == 4096);
		NEED(fcntl(fds[2], F_SETPIPE_SZ, 1 << 20) == 1 << 20);
	} else if (is("peergone")) {
		int types[3] = {SOCK_STREAM, SOCK_SEQPACKET, SOCK_DGRAM};
		for (int i = 0; i < 3; i++) {
			int s[2];
			NEED(socketpair(AF_UNIX, types[i], 0, s) == 0);
			NEED(send(s[1], "one", 3, 0) == 3 && send(s[1], "two!", 4, 0) == 4);
			close(s[1]);
			fds[i] = s[0];
		}
	} else if (is("udpshut")) {
		for (int i = 0; i < 2; i++) {
			struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
			NEED((fds[i] = socket(AF_INET, SOCK_DGRAM, 0)) >= 0 && connect(fds[i], (struct sockaddr *)&sa, sizeof sa) == 0);
			NEED(shutdown(fds[i], i == 0 ? SHUT_WR : SHUT_RD) == 0);
		}
	} else if (is("fown")) {
		struct sigaction sa = {.sa_sigaction = on_usr1, .sa_flags = SA_SIGINFO};
		sigaction(SIGUSR1, &sa, NULL);
		NEED(pipe(fds) == 0);
		NEED(fcntl(fds[0], F_SETOWN, getpid()) == 0 && fcntl(fds[0], F_SETSIG, SIGUSR1) == 0);
		NEED(fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_ASYNC) == 0);
	} else if (is("fownother")) {
		/* fds[0..1]: a pipe owned by the child (F_OWNER_PID), SIGUSR1; fds[2..3]: one owned by the
		 * child's process group (F_OWNER_PGRP), SIGUSR2; both O_ASYNC. The child reports each signal
		 * it gets (signo, si_fd) on fds[4..5] */
		int rep[2], ready[2];
		NEED(pipe(fds) == 0 && pipe(fds + 2) == 0 && pipe(rep) == 0 && pipe(ready) == 0);
		child = fork();
		if (child == 0) {
			setpgid(0, 0);
			sigset_t set;
			sigemptyset(&set);
			sigaddset(&set, SIGUSR1);
			sigaddset(&set, SIGUSR2);
			sigprocmask(SIG_BLOCK, &set, NULL);
			close(rep[0]);
			write(ready[1], "r", 1);
			for (int i = 0; i < 2; i++) {
				siginfo_t si;
				int sig;
				do sig = sigwaitinfo(&set, &si); while (sig < 0 && errno == EINTR);
				int msg[2] = {sig, si.si_fd};
				write(rep[1], msg, sizeof msg);
			}
			_exit(0);
		}
		setpgid(child, child);
		char c;
		NEED(read(ready[0], &c, 1) == 1);
		close(ready[0]), close(ready[1]), close(rep[1]);
		fds[4] = rep[0];
		struct f_owner_ex pgrp = {F_OWNER_PGRP, child};
		NEED(fcntl(fds[0], F_SETOWN, child) == 0 && fcntl(fds[0], F_SETSIG, SIGUSR1) == 0);
		NEED(fcntl(fds[2], F_SETOWN_EX, &pgrp) == 0 && fcntl(fds[2], F_SETSIG, SIGUSR2) == 0);
		NEED(fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_ASYNC) == 0);
		NEED(fcntl(fds[2], F_SETFL, fcntl(fds[2], F_GETFL) | O_ASYNC) == 0);
	} else if (is("ghost")) {
		char p[4200];
		wl_path(p, sizeof p, "sparse");
		int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
		char buf[4096];
		wl_fill(buf, sizeof buf, 5);
		NEED(fd >= 0 && pwrite(fd, buf, sizeof buf, 0) == sizeof buf && pwrite(fd, buf, sizeof buf, HOLE_DATA2) == sizeof buf);
		NEED(ftruncate(fd, HOLE_DATA2 + (2 << 20)) == 0); /* a hole at the end too */
		NEED(fchmod(fd, 0640) == 0);
		struct timespec ts[2] = {{MTIME, 0}, {MTIME, 500000000}};
		NEED(futimens(fd, ts) == 0);
		NEED(unlink(p) == 0);
		NEED(lseek(fd, 0, SEEK_HOLE) == 4096); /* the filesystem must keep holes for this check */
		fds[0] = fd;
	} else if (is("zpgid")) {
		child = fork();
		if (child == 0) { setpgid(0, 0); _exit(7); }
		siginfo_t si;
		NEED(waitid(P_PID, child, &si, WEXITED | WNOWAIT) == 0);
		int pg = 0;
		NEED(proc_stat(child, &pg) == 'Z' && pg == child);
	} else if (is("wipeonfork")) {
		NEED((mem = mmap(NULL, MLEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)) != MAP_FAILED);
		wl_fill(mem, MLEN, 31);
		NEED(madvise(mem, MLEN, MADV_WIPEONFORK) == 0);
	} else if (is("memfdmode")) {
		NEED((fds[0] = memfd_create("moded", 0)) >= 0);
		NEED(write(fds[0], "hello", 5) == 5);
		NEED(fchmod(fds[0], 0640) == 0 && fchown(fds[0], 4242, 4243) == 0);
	} else if (is("memfdexec")) {
		int m = memfd_create("exe", 0), src = open("/bin/true", O_RDONLY);
		NEED(m >= 0 && src >= 0);
		char buf[65536];
		ssize_t n;
		while ((n = read(src, buf, sizeof buf)) > 0) NEED(write(m, buf, (size_t)n) == n);
		close(src);
		char p[64];
		snprintf(p, sizeof p, "/proc/self/fd/%d", m);
		NEED((fds[0] = open(p, O_RDONLY)) >= 0);
		close(m);
	} else if (is("linkremap")) {
		char p[4200], q[4200];
		wl_path(p, sizeof p, "orig");
		wl_path(q, sizeof q, "other");
		NEED((fds[0] = open(p, O_RDWR | O_CREAT | O_TRUNC, 0640)) >= 0);
		NEED(ftruncate(fds[0], 8192) == 0 && pwrite(fds[0], "first", 5, 0) == 5);
		NEED((mem = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0)) != MAP_FAILED);
		NEED(link(p, q) == 0 && unlink(p) == 0);
		NEED(lseek(fds[0], 3, SEEK_SET) == 3);
	} else if (is("deldircwd") || is("deldirfd")) {
		char p[4200];
		wl_path(p, sizeof p, "gone");
		NEED(mkdir(p, 0750) == 0);
		if (is("deldircwd")) NEED(chdir(p) == 0);
		else NEED((fds[0] = open(p, O_RDONLY | O_DIRECTORY)) >= 0);
		NEED(rmdir(p) == 0);
	} else if (is("devnode")) {
		char p[4200];
		wl_path(p, sizeof p, "null");
		NEED(mknod(p, S_IFCHR | 0600, makedev(1, 3)) == 0);
		NEED((fds[0] = open(p, O_RDWR)) >= 0);
		NEED((fds[1] = open("/dev/zero", O_RDONLY)) >= 0);
	} else if (is("fifodata")) {
		char p[4200];
		wl_path(p, sizeof p, "fifo");
		NEED(mkfifo(p, 0600) == 0);
		NEED((fds[0] = open(p, O_RDWR)) >= 0);
		NEED((fds[1] = open(p, O_WRONLY)) >= 0);
		NEED(write(fds[1], "queued-in-fifo", 14) == 14);
	} else if (is("opathlink")) {
		char p[4200];
		wl_path(p, sizeof p, "lnk");
		NEED(symlink("nowhere/target", p) == 0);
		NEED((fds[0] = open(p, O_PATH | O_NOFOLLOW)) >= 0);
	} else if (is("procpid")) {
		child = fork();
		if (child == 0) { for (;;) pause(); }
		char p[64];
		snprintf(p, sizeof p, "/proc/%d/status", (int)child);
		NEED((fds[0] = open(p, O_RDONLY)) >= 0);
		snprintf(p, sizeof p, "/proc/%d", (int)child);
		NEED((fds[1] = open(p, O_RDONLY | O_DIRECTORY)) >= 0);
	} else if (is("seccompthreads")) {
		pthread_t th;
		NEED(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0);
		NEED(pthread_create(&th, NULL, filtered_thread, NULL) == 0);
		while (thr_state == 0) wl_sleep_ms(2);
		NEED(thr_state == 1);
		NEED(filter(SYS_getpgrp, EACCES, NULL, 0) == 0);
	} else if (is("pidfd")) {
		int r[2];
		NEED(pipe(r) == 0);
		child = fork();
		if (child == 0) { /* a pipe of its own with data queued; its read end's number to the parent */
			int q[2];
			close(r[0]);
			if (pipe(q) != 0 || write(q[1], "pulled", 6) != 6) _exit(3);
			pid_t g = fork(); /* a grandchild, for a pidfd on it */
			if (g == 0) for (;;) pause();
			write(r[1], &q[0], sizeof q[0]);
			write(r[1], &g, sizeof g);
			for (;;) pause();
		}
		close(r[1]);
		int q0 = -1;
		NEED(read(r[0], &q0, sizeof q0) == sizeof q0 && read(r[0], &grandchild, sizeof grandchild) == sizeof grandchild && grandchild > 0);
		close(r[0]);
		NEED((fds[4] = (int)syscall(SYS_pidfd_open, grandchild, 0)) >= 0);
		NEED((fds[0] = (int)syscall(SYS_pidfd_open, getpid(), 0)) >= 0);
		NEED((fds[1] = (int)syscall(SYS_pidfd_open, child, 0)) >= 0);
		NEED((fds[2] = (int)syscall(SYS_pidfd_open, child, O_NONBLOCK)) >= 0);
		NEED((fds[3] = (int)syscall(SYS_pidfd_getfd, fds[1], q0, 0)) >= 0); /* the child's pipe, pulled in */
	} else if (is("ptyowner") || is("ctty") || is("cttyclosed")) {
		NEED((fds[0] = posix_openpt(O_RDWR | O_NOCTTY)) >= 0);
		NEED(grantpt(fds[0]) == 0 && unlockpt(fds[0]) == 0);
		char slave[64];
		snprintf(slave, sizeof slave, "%s", ptsname(fds[0]));
		if (is("ptyowner")) {
			NEED(chown(slave, 4242, 4243) == 0);
			NEED((fds[1] = open(slave, O_RDWR | O_NOCTTY)) >= 0);
			/* control characters of its own (each at its place in c_cc) */
			struct termios t;
			NEED(tcgetattr(fds[1], &t) == 0);
			for (int i = 0; i < 17; i++) t.c_cc[i] = (cc_t)(0x41 + i);
			NEED(tcsetattr(fds[1], TCSANOW, &t) == 0);
		} else {
			int c[2], r[2];
			NEED(pipe(c) == 0 && pipe(r) == 0);
			child = fork();
			if (child == 0) { close(c[1]); close(r[0]); close(fds[0]); ctty_child(slave, c[0], r[1], is("ctty")); }
			close(c[0]), close(r[1]);
			fds[1] = c[1], fds[2] = r[0];
			char x = 0;
			NEED(read(fds[2], &x, 1) == 1 && x == 'r');
		}
	} else {
		fprintf(stderr, "exact: unknown mode %s\n", mode);
		exit(2);
	}
}

static void corrupt(void) {
	if (is("pdeathsig")) prctl(PR_SET_PDEATHSIG, 0);
	else if (is("thp")) prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0);
	else if (is("tstp") || is("ttin")) kill(child, SIGCONT), kill(child, SIGSTOP); /* stopped, by SIGSTOP now */
	/* registrations cannot be undone: one more, as an approximate restore would make */
	else if (is("membarrier")) membarrier(MB_REGISTER_SYNC_CORE, 0);
	else if (is("membarrier-synccore")) membarrier(MB_REGISTER_PRIVATE, 0);
	else if (is("membarrier-rseq")) membarrier(MB_REGISTER_GLOBAL, 0);
	else if (is("securebits")) prctl(PR_SET_SECUREBITS, SECUREBITS_WANT & ~0x4, 0, 0, 0); /* NO_SETUID_FIXUP off */
	else if (is("trapign") || is("traphandler")) signal(SIGTRAP, SIG_DFL);
	else if (is("tls")) { struct user_desc d = tls_want[1]; d.base_addr += 0x1000; tls_ptrace(1, &d, 1); }
	else if (is("mlock")) munlock(mem, MLEN), munlock(mem2, MLEN);
	else if (is("loginuid")) wl_failf("selftest: loginuid cannot be changed back");
	else if (is("maywrite")) { munmap(mem, 8192); mem = NULL; }
	else if (is("pipesize")) fcntl(fds[0], F_SETPIPE_SZ, 65536);
	else if (is("peergone")) { char b[8]; recv(fds[0], b, sizeof b, 0); }
	else if (is("udpshut")) { close(fds[0]); fds[0] = socket(AF_INET, SOCK_DGRAM, 0); }
	else if (is("fown")) fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) & ~O_ASYNC);
	else if (is("fownother")) fcntl(fds[0], F_SETOWN, getpid()); /* owned by itself, as a restore keeping only its own would */
	else if (is("ghost")) { struct timespec ts[2] = {{MTIME, 0}, {MTIME + 1, 0}}; futimens(fds[0], ts); }
	else if (is("zpgid")) waitpid(child, NULL, 0);
	else if (is("pidfd")) { close(fds[2]); fds[2] = (int)syscall(SYS_pidfd_open, getpid(), O_NONBLOCK); }
	else if (is("procpid")) { close(fds[0]); fds[0] = open("/proc/self/status", O_RDONLY); }
	else if (is("seccompthreads")) thr_state = -1;
	else if (is("deldircwd")) chdir(wl_dir);
	else if (is("deldirfd") || is("opathlink")) { close(fds[0]); fds[0] = open(wl_dir, O_RDONLY | O_DIRECTORY); }
	else if (is("devnode")) { close(fds[0]); fds[0] = open("/dev/zero", O_RDWR); }
	else if (is("fifodata")) { char b[4]; read(fds[0], b, sizeof b); }
	else if (is("linkremap")) { char q[4200]; wl_path(q, sizeof q, "other"); unlink(q); int f = open(q, O_RDWR | O_CREAT, 0640); close(f); }
	else if (is("wipeonfork")) madvise(mem, MLEN, MADV_KEEPONFORK);
	else if (is("vmflags")) madvise(vf_mem[8], VF_LEN, MADV_DOFORK);
	else if (is("memfdmode")) fchmod(fds[0], 0777);
	else if (is("memfdexec")) { char p[64]; snprintf(p, sizeof p, "/proc/self/fd/%d", fds[0]); fds[3] = open(p, O_RDWR); }
	else if (is("ptyowner")) fchown(fds[1], 0, 0);
	else if (is("ctty") || is("cttyclosed")) { kill(child, SIGKILL); waitpid(child, NULL, 0); }
}

static void check(void) {
	if (is("pdeathsig")) {
		int sig = -1, csig = -1;
		WL_CHECK(prctl(PR_GET_PDEATHSIG, &sig) == 0 && sig == SIGUSR2, "PR_GET_PDEATHSIG = %d, want %d", sig, SIGUSR2);
		WL_CHECK(write(fds[0], "?", 1) == 1 && read(fds[1], &csig, sizeof csig) == sizeof csig && csig == SIGUSR1, "child's pdeath signal = %d, want %d", csig, SIGUSR1);
		close(fds[0]);
		waitpid(child, NULL, 0);
	} else if (is("thp")) WL_CHECK(prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1, "THP not disabled");
	else if (is("tstp") || is("ttin")) {
		int sig = is("tstp") ? SIGTSTP : SIGTTIN, pgid = 0, st = 0;
		for (int i = 0; i < 200 && proc_stat(child, &pgid) != 'T'; i++) wl_sleep_ms(10);
		WL_CHECK(proc_stat(child, &pgid) == 'T', "the child is not stopped (%c)", proc_stat(child, &pgid));
		/* a restore stops it again: its parent may see that stop, and it must be by the same signal */
		pid_t r = waitpid(child, &st, WUNTRACED | WNOHANG);
		WL_CHECK(r == 0 || (r == child && WIFSTOPPED(st) && WSTOPSIG(st) == sig), "the child's stop reads as status 0x%x (signal %d), not a stop by %d", st, WIFSTOPPED(st) ? WSTOPSIG(st) : -1, sig);
		wl_detail("stop=%s", r == 0 ? "not reported again" : "reported again");
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	else if (is("tls")) {
		struct user_desc all[3] = {{.entry_number = 12}, {.entry_number = 13}, {.entry_number = 14}};
		WL_CHECK(tls_ptrace(0, all, 3) == 0, "PTRACE_GET_THREAD_AREA through a child failed");
		for (int i = 0; i < 3; i++) {
			struct user_desc got = all[i];
			if (i < 2)
				WL_CHECK(tls_same(&got, &tls_want[i]), "TLS entry %d: base 0x%x limit 0x%x 32bit %d contents %d ro %d pages %d notpresent %d useable %d, not as set", 12 + i, got.base_addr, got.limit, got.seg_32bit, got.contents, got.read_exec_only, got.limit_in_pages, got.seg_not_present, got.useable);
			else
				WL_CHECK(!got.base_addr && !got.limit && got.read_exec_only && got.seg_not_present, "TLS entry 14 is not empty (base 0x%x)", got.base_addr);
		}
	}
	else if (!strncmp(mode, "membarrier", 10)) {
		long mask = membarrier(MB_GET_REGISTRATIONS, 0);
		WL_CHECK(mask == mb_mask, "membarrier registrations 0x%lx, not 0x%lx", mask, mb_mask);
		WL_CHECK(membarrier(MB_PRIVATE, 0) == mb_private, "PRIVATE_EXPEDITED gives %ld, not %ld", membarrier(MB_PRIVATE, 0), mb_private);
		WL_CHECK(membarrier(MB_SYNC_CORE, 0) == mb_sync_core, "PRIVATE_EXPEDITED_SYNC_CORE gives %ld, not %ld", membarrier(MB_SYNC_CORE, 0), mb_sync_core);
		WL_CHECK(membarrier(MB_RSEQ, 0) == mb_rseq, "PRIVATE_EXPEDITED_RSEQ gives %ld, not %ld", membarrier(MB_RSEQ, 0), mb_rseq);
		wl_detail("membarrier=0x%lx private=%ld sync_core=%ld rseq=%ld", mb_mask, mb_private, mb_sync_core, mb_rseq);
	}
	else if (is("securebits")) WL_CHECK(prctl(PR_GET_SECUREBITS, 0, 0, 0, 0) == SECUREBITS_WANT, "securebits are 0x%x, not 0x%x", prctl(PR_GET_SECUREBITS, 0, 0, 0, 0), SECUREBITS_WANT);
	else if (is("trapign")) {
		struct sigaction old;
		WL_CHECK(sigaction(SIGTRAP, NULL, &old) == 0 && old.sa_handler == SIG_IGN, "SIGTRAP is no longer ignored");
		if (old.sa_handler == SIG_IGN) raise(SIGTRAP); /* ignored: nothing happens */
	} else if (is("traphandler")) {
		struct sigaction old;
		sigset_t cur;
		WL_CHECK(sigaction(SIGTRAP, NULL, &old) == 0 && old.sa_sigaction == on_trap, "SIGTRAP's handler is gone");
		WL_CHECK(old.sa_flags & SA_SIGINFO && old.sa_flags & SA_RESTART, "SIGTRAP's flags are 0x%x", (unsigned)old.sa_flags);
		WL_CHECK(sigismember(&old.sa_mask, SIGUSR2) == 1, "SIGTRAP's handler mask lost SIGUSR2");
		WL_CHECK(sigprocmask(SIG_SETMASK, NULL, &cur) == 0 && sigismember(&cur, SIGTRAP) == 1, "SIGTRAP is no longer blocked");
		if (old.sa_sigaction == on_trap && sigismember(&cur, SIGTRAP) == 1) {
			sigset_t b;
			sigemptyset(&b);
			sigaddset(&b, SIGTRAP);
			raise(SIGTRAP); /* pending while blocked */
			WL_CHECK(traps == 0, "a blocked SIGTRAP reached the handler");
			sigprocmask(SIG_UNBLOCK, &b, NULL);
			WL_CHECK(traps == 1, "the unblocked SIGTRAP reached the handler %d times", (int)traps);
		}
	}
	else if (is("mlock")) {
		WL_CHECK(smaps_flag(mem, "lo"), "memory is no longer locked");
		WL_CHECK(wl_verify_fill(mem, MLEN, 77) == (size_t)-1, "locked memory changed");
		WL_CHECK(smaps_flag(mem2, "lo"), "the MAP_LOCKED memory is no longer locked");
		WL_CHECK(wl_verify_fill(mem2, MLEN, 78) == (size_t)-1, "the MAP_LOCKED memory changed");
	} else if (is("loginuid")) {
		char b[32] = "";
		int fd = open("/proc/self/loginuid", O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, b, sizeof b - 1) : -1;
		if (fd >= 0) close(fd);
		WL_CHECK(n > 0 && atoi(b) == 4242, "loginuid is '%s'", b);
	} else if (is("maywrite")) {
		WL_CHECK(mem && mprotect(mem, 8192, PROT_READ | PROT_WRITE) == 0, "mprotect(RW) failed: %s", strerror(errno));
		if (mem && mprotect(mem, 8192, PROT_READ | PROT_WRITE) == 0) {
			memcpy(mem + 100, "written", 7);
			msync(mem, 8192, MS_SYNC);
			char p[4200], b[8] = "";
			wl_path(p, sizeof p, "maywrite");
			int fd = open(p, O_RDONLY);
			WL_CHECK(fd >= 0 && pread(fd, b, 7, 100) == 7 && memcmp(b, "written", 7) == 0, "the write did not reach the file");
			if (fd >= 0) close(fd);
		}
	} else if (is("pipesize")) {
		int a = fcntl(fds[0], F_GETPIPE_SZ), b = fcntl(fds[2], F_GETPIPE_SZ);
		WL_CHECK(a == 4096 && b == 1 << 20, "pipe capacities %d and %d, want 4096 and 1048576", a, b);
		char c = 0;
		WL_CHECK(write(fds[1], "z", 1) == 1 && read(fds[0], &c, 1) == 1 && c == 'z', "pipe does not carry data");
	} else if (is("peergone")) {
		const char *name[3] = {"stream", "seqpacket", "dgram"};
		for (int i = 0; i < 3; i++) {
			char b[16] = "";
			ssize_t n;
			if (i == 0) { /* a stream may give both sends at once */
				size_t got = 0;
				while (got < 7 && (n = recv(fds[i], b + got, sizeof b - 1 - got, MSG_DONTWAIT)) > 0) got += (size_t)n;
				WL_CHECK(got == 7 && memcmp(b, "onetwo!", 7) == 0, "%s: queued data lost (%zu bytes '%s')", name[i], got, b);
			} else {
				n = recv(fds[i], b, sizeof b, MSG_DONTWAIT);
				WL_CHECK(n == 3 && memcmp(b, "one", 3) == 0, "%s: first message lost (%zd)", name[i], n);
				n = recv(fds[i], b, sizeof b, MSG_DONTWAIT);
				WL_CHECK(n == 4 && memcmp(b, "two!", 4) == 0, "%s: second message lost (%zd)", name[i], n);
			}
			if (i < 2) {
				n = recv(fds[i], b, sizeof b, MSG_DONTWAIT);
				WL_CHECK(n == 0, "%s: no EOF after the data (%zd, %s)", name[i], n, n < 0 ? strerror(errno) : "");
			} else {
				n = send(fds[i], "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
				WL_CHECK(n < 0 && errno == ECONNREFUSED, "%s: send to the closed peer: %zd (%s), want ECONNREFUSED", name[i], n, n < 0 ? strerror(errno) : "");
			}
		}
	} else if (is("udpshut")) {
		ssize_t n = send(fds[0], "x", 1, MSG_NOSIGNAL);
		WL_CHECK(n < 0 && errno == EPIPE, "send on the socket shut for writing: %zd (%s), want EPIPE", n, n < 0 ? strerror(errno) : "sent");
		char b[4];
		alarm(5);
		n = recv(fds[1], b, sizeof b, 0);
		alarm(0);
		WL_CHECK(n == 0, "recv on the socket shut for reading: %zd (%s), want 0 at once", n, n < 0 ? strerror(errno) : "");
	} else if (is("fown")) {
		WL_CHECK(fcntl(fds[0], F_GETOWN) == getpid(), "F_GETOWN = %d, want %d", fcntl(fds[0], F_GETOWN), (int)getpid());
		WL_CHECK(fcntl(fds[0], F_GETSIG) == SIGUSR1, "F_GETSIG = %d", fcntl(fds[0], F_GETSIG));
		WL_CHECK(fcntl(fds[0], F_GETFL) & O_ASYNC, "O_ASYNC lost");
		WL_CHECK(write(fds[1], "x", 1) == 1, "write");
		for (int i = 0; i < 200 && usr1_fd < 0; i++) wl_sleep_ms(5);
		WL_CHECK(usr1_fd == fds[0], "no SIGUSR1 for fd %d (got si_fd %d)", fds[0], (int)usr1_fd);
	} else if (is("fownother")) {
		struct f_owner_ex o1 = {0, 0}, o2 = {0, 0};
		WL_CHECK(fcntl(fds[0], F_GETOWN_EX, &o1) == 0 && o1.type == F_OWNER_PID && o1.pid == child, "first pipe's owner: type %d pid %d, want the child %d", o1.type, o1.pid, (int)child);
		WL_CHECK(fcntl(fds[2], F_GETOWN_EX, &o2) == 0 && o2.type == F_OWNER_PGRP && o2.pid == child, "second pipe's owner: type %d pid %d, want group %d", o2.type, o2.pid, (int)child);
		WL_CHECK(fcntl(fds[0], F_GETSIG) == SIGUSR1 && fcntl(fds[2], F_GETSIG) == SIGUSR2, "F_GETSIG %d / %d", fcntl(fds[0], F_GETSIG), fcntl(fds[2], F_GETSIG));
		/* a write raises each pipe's signal in the child (a wrong owner: nothing, or not there) */
		int want[2][2] = {{SIGUSR1, fds[0]}, {SIGUSR2, fds[2]}};
		for (int i = 0; i < 2; i++) {
			WL_CHECK(write(fds[1 + 2 * i], "x", 1) == 1, "write");
			struct pollfd pf = {fds[4], POLLIN, 0};
			int msg[2] = {0, 0};
			WL_CHECK(poll(&pf, 1, 3000) == 1 && read(fds[4], msg, sizeof msg) == sizeof msg && msg[0] == want[i][0] && msg[1] == want[i][1],
				"the child got signal %d for fd %d, want %d for fd %d", msg[0], msg[1], want[i][0], want[i][1]);
		}
		int st = 0;
		kill(child, SIGKILL); /* if it still waits */
		WL_CHECK(waitpid(child, &st, 0) == child, "child");
	} else if (is("ghost")) {
		struct stat st;
		int fd = fds[0];
		WL_CHECK(fstat(fd, &st) == 0 && st.st_nlink == 0, "file is linked again");
		WL_CHECK((st.st_mode & 07777) == 0640, "mode 0%o, want 0640", st.st_mode & 07777);
		WL_CHECK(st.st_mtim.tv_sec == MTIME && st.st_mtim.tv_nsec / 1000 == 500000, "mtime %ld.%09ld, want %ld.5", (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, (long)MTIME);
		WL_CHECK(st.st_size == HOLE_DATA2 + (2 << 20), "size %lld", (long long)st.st_size);
		off_t h = lseek(fd, 0, SEEK_HOLE), d = lseek(fd, 4096, SEEK_DATA), h2 = lseek(fd, HOLE_DATA2, SEEK_HOLE);
		WL_CHECK(h == 4096 && d == HOLE_DATA2 && h2 == HOLE_DATA2 + 4096, "extents: hole at %lld, data at %lld, hole at %lld", (long long)h, (long long)d, (long long)h2);
		char buf[4096], back[4096];
		wl_fill(buf, sizeof buf, 5);
		WL_CHECK(pread(fd, back, sizeof back, 0) == sizeof back && memcmp(back, buf, sizeof buf) == 0, "first extent differs");
		WL_CHECK(pread(fd, back, sizeof back, HOLE_DATA2) == sizeof back && memcmp(back, buf, sizeof buf) == 0, "second extent differs");
	} else if (is("zpgid")) {
		int pg = 0;
		char st = proc_stat(child, &pg);
		WL_CHECK(st == 'Z', "child %d is not a zombie (%c)", (int)child, st ? st : '?');
		WL_CHECK(pg == child, "zombie's pgid %d, want its own %d", pg, (int)child);
		int status = 0;
		WL_CHECK(waitpid(child, &status, WNOHANG) == child && WIFEXITED(status) && WEXITSTATUS(status) == 7, "zombie's exit status 0x%x", status);
	} else if (is("vmflags")) {
		for (int i = 0; i < VF_N; i++) {
			char w[32], *save = NULL;
			snprintf(w, sizeof w, "%s", vf_want[i]);
			for (char *f = strtok_r(w, " ", &save); f; f = strtok_r(NULL, " ", &save))
				WL_CHECK(smaps_flag(vf_mem[i], f), "region %d lost VmFlags %s", i, f);
			if (i == 12) WL_CHECK(!smaps_flag(vf_mem[i], "mw"), "the read-only shared mapping has mw");
			if (i < 11) WL_CHECK(wl_verify_fill(vf_mem[i], VF_LEN, 100 + i) == (size_t)-1, "region %d: memory changed", i);
		}
	} else if (is("wipeonfork")) {
		WL_CHECK(smaps_flag(mem, "wf"), "MADV_WIPEONFORK lost (no wf in VmFlags)");
		WL_CHECK(wl_verify_fill(mem, MLEN, 31) == (size_t)-1, "memory changed");
		pid_t c = fork();
		if (c == 0) {
			size_t nz = 0;
			for (size_t i = 0; i < MLEN; i++) nz += mem[i] != 0;
			_exit(nz ? 1 : 0);
		}
		int status = -1;
		waitpid(c, &status, 0);
		WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the fork's child does not see the range zeroed (status 0x%x)", status);
	} else if (is("memfdmode")) {
		struct stat st;
		char b[8] = "";
		WL_CHECK(fstat(fds[0], &st) == 0 && (st.st_mode & 07777) == 0640, "memfd mode 0%o, want 0640", (unsigned)(st.st_mode & 07777));
		WL_CHECK(st.st_uid == 4242 && st.st_gid == 4243, "memfd owner %u:%u, want 4242:4243", (unsigned)st.st_uid, (unsigned)st.st_gid);
		WL_CHECK(pread(fds[0], b, sizeof b, 0) == 5 && memcmp(b, "hello", 5) == 0, "memfd data '%s'", b);
		char p[64];
		snprintf(p, sizeof p, "/proc/self/fd/%d", fds[0]);
		WL_CHECK(readlink(p, b, sizeof b) > 0 && strncmp(b, "/memfd:m", 8) == 0, "fd is no longer the memfd");
	} else if (is("memfdexec")) {
		pid_t c = fork();
		if (c == 0) {
			char *argv[] = {"true", NULL}, *envp[] = {NULL};
			syscall(SYS_execveat, fds[0], "", argv, envp, AT_EMPTY_PATH);
			_exit(errno == ETXTBSY ? 3 : 4);
		}
		int status = -1;
		waitpid(c, &status, 0);
		WL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "execveat of the memfd: status 0x%x (3: ETXTBSY)", status);
	} else if (is("linkremap")) {
		char p[4200], q[4200], want[4300], got[4300] = "";
		wl_path(p, sizeof p, "orig");
		wl_path(q, sizeof q, "other");
		struct stat a, b;
		WL_CHECK(fstat(fds[0], &a) == 0 && stat(q, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev, "the fd is not the inode of 'other' any more");
		WL_CHECK(a.st_nlink == 1, "nlink %d, want 1", (int)a.st_nlink);
		WL_CHECK(lseek(fds[0], 0, SEEK_CUR) == 3, "offset lost");
		snprintf(want, sizeof want, "%s (deleted)", p);
		char lp[64];
		snprintf(lp, sizeof lp, "/proc/self/fd/%d", fds[0]);
		ssize_t n = readlink(lp, got, sizeof got - 1);
		if (n > 0) got[n] = 0;
		WL_CHECK(strcmp(got, want) == 0, "the fd reads '%s', want '%s'", got, want);
		int o = open(q, O_RDWR);
		char c[8] = "";
		WL_CHECK(o >= 0 && pwrite(fds[0], "via-fd", 6, 100) == 6 && pread(o, c, 6, 100) == 6 && memcmp(c, "via-fd", 6) == 0, "a write through the fd does not show in 'other'");
		memcpy(mem + 200, "via-map", 7);
		WL_CHECK(o >= 0 && pread(o, c, 7, 200) == 7 && memcmp(c, "via-map", 7) == 0, "a write through the mapping does not show in 'other'");
		WL_CHECK(o >= 0 && pread(o, c, 5, 0) == 5 && memcmp(c, "first", 5) == 0, "contents lost");
		if (o >= 0) close(o);
		DIR *d = opendir(wl_dir);
		struct dirent *e;
		while (d && (e = readdir(d))) WL_CHECK(strncmp(e->d_name, "link_remap", 10) != 0, "'%s' left behind", e->d_name);
		if (d) closedir(d);
	} else if (is("deldircwd") || is("deldirfd")) {
		struct stat st;
		int d = is("deldircwd") ? AT_FDCWD : fds[0];
		WL_CHECK(fstatat(d, "", &st, AT_EMPTY_PATH) == 0 && S_ISDIR(st.st_mode) && st.st_nlink == 0 && (st.st_mode & 0777) == 0750, "not the removed directory (nlink %d mode 0%o)", (int)st.st_nlink, st.st_mode & 07777);
		WL_CHECK(openat(d, "x", O_CREAT | O_RDWR, 0600) < 0 && errno == ENOENT, "a file could be created in the removed directory");
	} else if (is("devnode")) {
		struct stat st;
		WL_CHECK(fstat(fds[0], &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3), "not the device node");
		WL_CHECK(write(fds[0], "x", 1) == 1, "write to the null device");
		char b[4] = {1, 1, 1, 1};
		WL_CHECK(read(fds[1], b, 4) == 4 && !b[0] && !b[3], "/dev/zero does not read zeros");
	} else if (is("fifodata")) {
		char b[32] = "";
		WL_CHECK(read(fds[0], b, sizeof b) == 14 && memcmp(b, "queued-in-fifo", 14) == 0, "fifo data lost ('%s')", b);
	} else if (is("opathlink")) {
		struct stat st;
		char b[64] = "";
		WL_CHECK(fstatat(fds[0], "", &st, AT_EMPTY_PATH) == 0 && S_ISLNK(st.st_mode), "the O_PATH fd is not on the symlink");
		WL_CHECK(readlinkat(fds[0], "", b, sizeof b - 1) == 14 && strcmp(b, "nowhere/target") == 0, "symlink reads '%s'", b);
		WL_CHECK(fcntl(fds[0], F_GETFL) & O_PATH, "not O_PATH");
	} else if (is("procpid")) {
		char b[2048] = "", want[64];
		ssize_t n = pread(fds[0], b, sizeof b - 1, 0);
		if (n > 0) b[n] = 0;
		snprintf(want, sizeof want, "\nPid:\t%d\n", (int)child);
		WL_CHECK(n > 0 && strstr(b, want), "the status fd is not the child's");
		char st[16] = "";
		int s = openat(fds[1], "stat", O_RDONLY);
		n = s >= 0 ? read(s, b, sizeof b - 1) : -1;
		if (s >= 0) close(s);
		if (n > 0) b[n] = 0;
		snprintf(st, sizeof st, "%d (", (int)child);
		WL_CHECK(n > 0 && strncmp(b, st, strlen(st)) == 0, "the /proc directory fd is not the child's");
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	} else if (is("seccompthreads")) {
		errno = 0;
		long pg = syscall(SYS_getpgrp);
		WL_CHECK(pg < 0 && errno == EACCES, "main thread: getpgrp = %ld (%s), want EACCES", pg, strerror(errno));
		WL_CHECK(syscall(SYS_getppid) > 0, "main thread: getppid fails");
		if (thr_state == 1) {
			thr_state = 2;
			for (int i = 0; i < 1000 && thr_state != 3; i++) wl_sleep_ms(5);
		}
		WL_CHECK(thr_state == 3, "the filtered thread did not answer (%d)", thr_state);
		WL_CHECK(thr_ppid < 0 && thr_ppid_errno == EPERM, "filtered thread: getppid = %ld, want EPERM", thr_ppid);
		WL_CHECK(thr_pgrp > 0, "filtered thread: getpgrp fails (the main thread's filter reached it)");
	} else if (is("pidfd")) {
		struct stat a, b;
		WL_CHECK(fstat(fds[1], &a) == 0 && fstat(fds[2], &b) == 0 && a.st_ino == b.st_ino, "the child's two pidfds are different inodes");
		WL_CHECK(fcntl(fds[2], F_GETFL) & O_NONBLOCK, "PIDFD_NONBLOCK lost");
		char pb[8] = "";
		WL_CHECK(read(fds[3], pb, sizeof pb) == 6 && memcmp(pb, "pulled", 6) == 0, "the pipe pulled in with pidfd_getfd lost its data ('%s')", pb);
		WL_CHECK(syscall(SYS_pidfd_send_signal, fds[0], 0, NULL, 0) == 0, "the pidfd on itself does not reach it: %m");
		/* the grandchild's pidfd names it (fdinfo Pid), a SIGKILL through it ends it: readable then */
		char l[64], info[512] = "";
		snprintf(l, sizeof l, "/proc/self/fdinfo/%d", fds[4]);
		int fi = open(l, O_RDONLY);
		if (fi >= 0) { ssize_t n = read(fi, info, sizeof info - 1); if (n > 0) info[n] = 0; close(fi); }
		char want[32];
		snprintf(want, sizeof want, "\nPid:\t%d\n", (int)grandchild);
		WL_CHECK(strstr(info, want) != NULL, "the grandchild's pidfd does not name %d", (int)grandchild);
		WL_CHECK(syscall(SYS_pidfd_send_signal, fds[4], SIGKILL, NULL, 0) == 0, "SIGKILL through the grandchild's pidfd: %m");
		struct pollfd pg = {.fd = fds[4], .events = POLLIN};
		WL_CHECK(poll(&pg, 1, 5000) == 1 && (pg.revents & POLLIN), "the grandchild's pidfd is not readable after its SIGKILL");
		WL_CHECK(syscall(SYS_pidfd_send_signal, fds[1], SIGKILL, NULL, 0) == 0, "SIGKILL through the child's pidfd: %m");
		siginfo_t si;
		memset(&si, 0, sizeof si);
		WL_CHECK(waitid(P_PIDFD, (id_t)fds[1], &si, WEXITED) == 0 && si.si_pid == child && si.si_status == SIGKILL, "waitid(P_PIDFD): pid %d status %d, want %d killed", (int)si.si_pid, si.si_status, (int)child);
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	} else if (is("ptyowner")) {
		struct stat st;
		WL_CHECK(fstat(fds[1], &st) == 0 && st.st_uid == 4242 && st.st_gid == 4243, "slave owned by %d:%d, want 4242:4243", (int)st.st_uid, (int)st.st_gid);
		struct termios t;
		WL_CHECK(tcgetattr(fds[1], &t) == 0, "tcgetattr: %s", strerror(errno));
		for (int i = 0; i < 17; i++) WL_CHECK(t.c_cc[i] == (cc_t)(0x41 + i), "c_cc[%d] = 0x%x, want 0x%x", i, t.c_cc[i], 0x41 + i);
		WL_CHECK(write(fds[0], "x\n", 2) == 2, "master write");
	} else if (is("ctty") || is("cttyclosed")) {
		int sid = -1;
		WL_CHECK(ioctl(fds[0], TIOCGSID, &sid) == 0 && sid == child, "TIOCGSID on the master = %d, want %d", sid, (int)child);
		char r = 1;
		WL_CHECK(write(fds[1], "o", 1) == 1 && read(fds[2], &r, 1) == 1 && r == 0, "open(/dev/tty) in the child: %s", strerror(r));
		close(fds[0]);
		struct pollfd pf = {.fd = fds[2], .events = POLLIN};
		char h = 0;
		WL_CHECK(poll(&pf, 1, 5000) == 1 && read(fds[2], &h, 1) == 1 && h == 'H', "no SIGHUP in the session when the master closed");
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	wl_detail("mode=%s", mode);
}

int main(int argc, char **argv) { wl_mode_main(argc, argv, "exact", setup, corrupt, check, 1); }
