/*
 * refuse: holds one thing criu-bun cannot restore exactly (src/resources/unsupported.ts), named by
 * the first argument, so that `dump` must refuse it while the workload runs on. At go it checks
 * that the thing is still there as it set it up (a refused dump must not have disturbed it).
 * A helper process, if the mode needs one, writes its pid to DIR/culprit when it is the one named.
 *
 *   refuse DIR MODE      MODE: a key of UNSUPPORTED (netlink-socket, scm-rights ...; special-map:
 *                       a packet socket's TPACKET_V2 receive ring mapped, the socket's fd closed)
 *                       or a further case of one (pidfd-outside, deleted-fifo, unix-closed-named:
 *                       a datagram queued by a named sender since closed; console, vt, devtty:
 *                       /dev/console, /dev/tty1, and /dev/tty of a child's session, all terminal;
 *                       scm-rights-stream: a stream pair, plain bytes then one message of two
 *                       SCM_RIGHTS cmsgs (a pipe's two ends and a memfd; an epoll fd), every fd
 *                       only in flight; scm-rights-seqpacket: a plain message, then one carrying an
 *                       epoll fd its sender closed; tmpfile-rodir: O_TMPFILE in a directory made read-only
 *                       since; epoll-closed: a target's fd number closed, not reused; aio-events:
 *                       an AIO ring with a completed read not reaped; lease-write: a write lease;
 *                       memfd-map-private: a memfd mapped private, its fd open; packet-opts: a
 *                       packet socket bound to lo with AUXDATA, FANOUT and a multicast membership;
 *                       special-map-uring: io_uring's rings mapped, its fd closed;
 *                       sock-packet: a SOCK_PACKET socket; netlink-bound: a bound netlink socket
 *                       in a multicast group and one connected to the kernel; fanotify-marks:
 *                       inode and mount marks and an ignore mask; tty-queued-master: a slave's
 *                       output the master has not read; fown-outside: a pipe owned by a process
 *                       outside the tree; pidfd-dead2: two pidfds on one dead child;
 *                       tty-exclusive: a pty master in exclusive mode; sysv-shared-outside: a SysV
 *                       segment of the host's IPC namespace a helper outside the tree (DIR/ext-pid)
 *                       has attached too)
 * --selftest-corrupt: undoes the thing before go, so the check fails.
 */
#define WL_MODES
#include "wl.h"
#include <arpa/inet.h>
#include <linux/capability.h>
#include <linux/io_uring.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <sys/fanotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/sysmacros.h>
#include <sys/msg.h>
#include <sys/shm.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <linux/aio_abi.h>
#include <linux/bpf.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>

#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_IS_SET 1
#endif

static char cgns_before[64]; /* cgroupns: the namespace it left */
static int ipc_msq = -1, ipc_sem = -1, ipc_shm = -1; /* ipcns-objects: a message queue, a semaphore set and a segment locked in memory that nobody attaches, in its own IPC namespace */
static int fd_a = -1, fd_b = -1;
static int sysv_id = -1; /* sysv-shared-outside: a segment of the host's IPC namespace */
static char *sysv_mem;
static pid_t child, leader;
static char *mem;
static size_t memlen = 1 << 20;
static unsigned long aio_ctx;
static char aio_buf[64]; /* aio-events: where the completed read put the file's bytes */
static int wfd = -1; /* fanotify-marks: the marked file, written at go */
static dev_t marked_dev; static ino_t marked_ino;

/* one message with an SCM_RIGHTS cmsg per group of fds (counts n[0..ng-1]) */
static int sendfds(int sock, const int *fds, const int *n, int ng) {
	char data = 'x';
	struct iovec iov = {&data, 1};
	char ctl[CMSG_SPACE(8 * sizeof(int)) * 4];
	memset(ctl, 0, sizeof ctl);
	size_t len = 0;
	for (int g = 0; g < ng; g++) len += CMSG_SPACE((size_t)n[g] * sizeof(int));
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = len};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	for (int g = 0, k = 0; g < ng; g++, c = CMSG_NXTHDR(&m, c)) {
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN((size_t)n[g] * sizeof(int));
		memcpy(CMSG_DATA(c), fds + k, (size_t)n[g] * sizeof(int));
		k += n[g];
	}
	return sendmsg(sock, &m, 0) == 1 ? 0 : -1;
}
/* the fds of the next message (after `plain` bytes without any), in order; their count */
static int recvfds(int sock, size_t plain, int *out, int max) {
	char b[64];
	if (plain && recv(sock, b, plain, MSG_DONTWAIT) != (ssize_t)plain) return -1;
	char data, ctl[CMSG_SPACE(8 * sizeof(int)) * 4];
	struct iovec iov = {&data, 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
	if (recvmsg(sock, &m, MSG_DONTWAIT) != 1) return -1;
	int k = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) return -1;
		int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < n && k < max; i++) memcpy(&out[k++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
	}
	return k;
}
static int is_anon(int fd, const char *name) { /* an anon_inode fd of that name */
	char l[64], t[64] = "";
	snprintf(l, sizeof l, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(l, t, sizeof t - 1);
	return n > 0 && strstr(t, name) != NULL;
}

static volatile pid_t idle_tid; /* fown: the thread that owns the pipe */
static void *idle_thread(void *a) {
	(void)a;
	idle_tid = (pid_t)syscall(SYS_gettid);
	for (;;) pause();
	return NULL;
}

static int geti_(int fd, int lvl, int opt) {
	int v = -1;
	socklen_t l = sizeof v;
	return getsockopt(fd, lvl, opt, &v, &l) == 0 ? v : -1;
}

static void culprit(pid_t p) {
	char b[32];
	int n = snprintf(b, sizeof b, "%d\n", (int)p);
	wl_write_file("culprit", b, (size_t)n);
}


static int sendfd(int sock, int fd) {
	char data = 'x';
	struct iovec iov = {&data, 1};
	char ctl[CMSG_SPACE(sizeof(int))];
	memset(ctl, 0, sizeof ctl);
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &m, 0) == 1 ? 0 : -1;
}

static void udp_connected(void) {
	fd_a = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (fd_a < 0 || connect(fd_a, (struct sockaddr *)&sa, sizeof sa) != 0) {
		perror("udp");
		exit(2);
	}
}


static void setup(void) {
	int p[2];
	if (is("netlink-socket")) NEED((fd_a = socket(AF_NETLINK, SOCK_RAW, 0)) >= 0);
	else if (is("packet-socket")) NEED((fd_a = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL))) >= 0);
	else if (is("fanotify")) NEED((fd_a = fanotify_init(FAN_CLASS_NOTIF, O_RDONLY)) >= 0);
	else if (is("io_uring")) {
		struct io_uring_params prm;
		memset(&prm, 0, sizeof prm);
		NEED((fd_a = (int)syscall(SYS_io_uring_setup, 4, &prm)) >= 0);
	} else if (is("pidfd")) { /* on a child since reaped */
		child = fork();
		if (child == 0) { for (;;) pause(); }
		NEED((fd_a = (int)syscall(SYS_pidfd_open, child, 0)) >= 0);
		kill(child, SIGKILL);
		NEED(waitpid(child, NULL, 0) == child);
		child = 0;
	} else if (is("pidfd-dead2")) { /* two pidfds on one child since reaped (one inode) */
		child = fork();
		if (child == 0) { for (;;) pause(); }
		NEED((fd_a = (int)syscall(SYS_pidfd_open, child, 0)) >= 0 && (fd_b = (int)syscall(SYS_pidfd_open, child, 0)) >= 0);
		kill(child, SIGKILL);
		NEED(waitpid(child, NULL, 0) == child);
		child = 0;
	} else if (is("pidfd-outside")) NEED((fd_a = (int)syscall(SYS_pidfd_open, getppid(), 0)) >= 0);
	else if (is("pidfd-thread")) NEED((fd_a = (int)syscall(SYS_pidfd_open, getpid(), O_EXCL /* PIDFD_THREAD */)) >= 0);
	else if (is("deleted-fifo")) { /* a FIFO removed while open, with data in it */
		char q[4200];
		wl_path(q, sizeof q, "fifo");
		NEED(mkfifo(q, 0600) == 0);
		NEED((fd_a = open(q, O_RDWR)) >= 0);
		NEED(write(fd_a, "abc", 3) == 3);
		NEED(unlink(q) == 0);
	} else if (is("deleted-symlink")) { /* O_PATH|O_NOFOLLOW on a symlink since removed */
		char q[4200];
		wl_path(q, sizeof q, "lnk");
		NEED(symlink("nowhere", q) == 0);
		NEED((fd_a = open(q, O_PATH | O_NOFOLLOW)) >= 0);
		NEED(unlink(q) == 0);
	}
	else if (is("userfaultfd")) NEED((fd_a = (int)syscall(SYS_userfaultfd, O_CLOEXEC)) >= 0);
	else if (is("perf_event")) {
		struct perf_event_attr a;
		memset(&a, 0, sizeof a);
		a.type = PERF_TYPE_SOFTWARE;
		a.size = sizeof a;
		a.config = PERF_COUNT_SW_TASK_CLOCK;
		NEED((fd_a = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, 0)) >= 0);
	} else if (is("nsfs")) NEED((fd_a = open("/proc/self/ns/net", O_RDONLY)) >= 0);
	else if (is("chardev")) { /* /dev/kmsg, one record read: its read position is the open file's */
		char rec[8192];
		NEED((fd_a = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC)) >= 0);
		NEED(read(fd_a, rec, sizeof rec) > 0);
	}
	else if (is("tun")) { /* a tap device the kernel names (cbrfN), gone with its last fd */
		struct ifreq ifr;
		memset(&ifr, 0, sizeof ifr);
		ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
		strcpy(ifr.ifr_name, "cbrf%d");
		NEED((fd_a = open("/dev/net/tun", O_RDWR | O_CLOEXEC)) >= 0);
		NEED(ioctl(fd_a, TUNSETIFF, &ifr) == 0);
	} else if (is("bpf-map")) { /* an array map whose element 0 holds 42 */
		union bpf_attr a;
		memset(&a, 0, sizeof a);
		a.map_type = BPF_MAP_TYPE_ARRAY;
		a.key_size = 4;
		a.value_size = 8;
		a.max_entries = 1;
		NEED((fd_a = (int)syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a)) >= 0);
		uint32_t k = 0; uint64_t v = 42;
		memset(&a, 0, sizeof a);
		a.map_fd = (uint32_t)fd_a; a.key = (uintptr_t)&k; a.value = (uintptr_t)&v;
		NEED(syscall(SYS_bpf, BPF_MAP_UPDATE_ELEM, &a, sizeof a) == 0);
	}
	else if (is("timens-children")) NEED(unshare(CLONE_NEWTIME) == 0);
	else if (is("session-outside-pidns")) {
		/* the init of a PID namespace of its own whose session (ours) is led from outside it:
		 * getsid() is 0 there. It is the process dumped (DIR/ready names it). */
		NEED(unshare(CLONE_NEWPID) == 0);
		NEED((child = fork()) >= 0);
		if (child == 0) { for (;;) pause(); }
		wl_pid = child;
		culprit(child);
		leader = getpid();
	} else if (is("session-leader-gone") || is("pgrp-leader-gone")) {
		/* a child whose session (or process group) leader exited: it came back to us, a
		 * subreaper, and its session (group) id names a process that is no more */
		int p[2];
		NEED(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0 && pipe(p) == 0);
		pid_t a = fork();
		NEED(a >= 0);
		if (a == 0) {
			if (is("session-leader-gone") ? setsid() < 0 : setpgid(0, 0) != 0) _exit(1);
			pid_t b = fork();
			if (b < 0) _exit(1);
			if (b == 0) { close(p[0]); write(p[1], "y", 1); for (;;) pause(); }
			_exit(0);
		}
		close(p[1]);
		char c = 0;
		NEED(read(p[0], &c, 1) == 1 && c == 'y');
		close(p[0]);
		NEED(waitpid(a, NULL, 0) == a);
		for (int i = 0; i < 1000 && !child; i++) { /* the grandchild, reparented to us */
			char l[64], b[512];
			snprintf(l, sizeof l, "/proc/self/task/%d/children", (int)getpid());
			int f = open(l, O_RDONLY);
			ssize_t n = f >= 0 ? read(f, b, sizeof b - 1) : -1;
			if (f >= 0) close(f);
			if (n > 0) b[n] = 0, child = (pid_t)atoi(b);
			if (!child) wl_sleep_ms(5);
		}
		NEED(child > 0);
		leader = a;
		culprit(child);
	}
	else if (is("cgroupns")) {
		readlink("/proc/self/ns/cgroup", cgns_before, sizeof cgns_before - 1);
		NEED(unshare(CLONE_NEWCGROUP) == 0);
	}
	else if (is("ipcns-objects")) {
		NEED(unshare(CLONE_NEWIPC) == 0);
		struct { long type; char text[8]; } m = { 7, "queued" };
		NEED((ipc_msq = msgget(IPC_PRIVATE, IPC_CREAT | 0600)) >= 0 && msgsnd(ipc_msq, &m, sizeof m.text, 0) == 0);
		NEED((ipc_sem = semget(IPC_PRIVATE, 2, IPC_CREAT | 0600)) >= 0 && semctl(ipc_sem, 1, SETVAL, 5) == 0);
		NEED((ipc_shm = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600)) >= 0 && shmctl(ipc_shm, SHM_LOCK, NULL) == 0);
	}
	else if (is("sigtrap")) {
		sigset_t s;
		sigemptyset(&s);
		sigaddset(&s, SIGTRAP);
		sigprocmask(SIG_BLOCK, &s, NULL);
		raise(SIGTRAP);
	} else if (is("droppable")) {
		NEED((mem = mmap(NULL, memlen, PROT_READ | PROT_WRITE, MAP_DROPPABLE | MAP_ANONYMOUS, -1, 0)) != MAP_FAILED);
		memset(mem, 0x5a, memlen);
	} else if (is("shmem-private")) {
		char *sh = mmap(NULL, memlen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		NEED(sh != MAP_FAILED);
		memset(sh, 0x33, memlen);
		char path[128];
		snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", (unsigned long)sh, (unsigned long)sh + memlen);
		int fd;
		NEED((fd = open(path, O_RDWR)) >= 0);
		NEED((mem = mmap(NULL, memlen, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0)) != MAP_FAILED);
		close(fd);
		NEED(munmap(sh, memlen) == 0);
	} else if (is("fown")) { /* owned by a thread of its own (F_OWNER_TID: threads come after files at restore) */
		NEED(pipe(p) == 0);
		fd_a = p[0], fd_b = p[1];
		pthread_t t;
		NEED(pthread_create(&t, NULL, idle_thread, NULL) == 0);
		while (!idle_tid) wl_sleep_ms(1);
		struct f_owner_ex o = {F_OWNER_TID, idle_tid};
		NEED(fcntl(fd_a, F_SETOWN_EX, &o) == 0);
	} else if (is("chardev")) {
		struct stat k;
		WL_CHECK(fd_a >= 0 && fstat(fd_a, &k) == 0 && S_ISCHR(k.st_mode) && major(k.st_rdev) == 1 && minor(k.st_rdev) == 11, "the /dev/kmsg fd is gone");
	} else if (is("tun")) {
		struct ifreq ifr;
		memset(&ifr, 0, sizeof ifr);
		WL_CHECK(fd_a >= 0 && ioctl(fd_a, TUNGETIFF, &ifr) == 0 && !strncmp(ifr.ifr_name, "cbrf", 4), "the tap fd is attached to no interface: %m");
	} else if (is("bpf-map")) {
		uint32_t k = 0; uint64_t v = 0;
		union bpf_attr a;
		memset(&a, 0, sizeof a);
		a.map_fd = (uint32_t)fd_a; a.key = (uintptr_t)&k; a.value = (uintptr_t)&v;
		WL_CHECK(fd_a >= 0 && syscall(SYS_bpf, BPF_MAP_LOOKUP_ELEM, &a, sizeof a) == 0 && v == 42, "element 0 of the map is %llu, not 42: %m", (unsigned long long)v);
	} else if (is("sysv-shared-outside")) { /* a SysV segment (host IPC namespace) a helper outside the tree has attached too */
		NEED((sysv_id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600)) >= 0);
		NEED((sysv_mem = shmat(sysv_id, NULL, 0)) != (void *)-1);
		strcpy(sysv_mem, "outside");
		NEED(shmctl(sysv_id, IPC_RMID, NULL) == 0); /* gone with its last attach */
		pid_t c = fork();
		NEED(c >= 0);
		if (c == 0) { /* double-forked, its own session: not in the tree; it inherits the attach */
			setsid();
			pid_t g = fork();
			if (g) _exit(g < 0);
			char b[32];
			int n = snprintf(b, sizeof b, "%d\n", (int)getpid());
			wl_write_file("ext-pid", b, (size_t)n);
			for (int i = 0; i < 3000 && access(wl_dir, F_OK) == 0; i++) wl_sleep_ms(100); /* killed after the test */
			_exit(0);
		}
		int st;
		NEED(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0);
		struct shmid_ds ds;
		for (int i = 0; i < 500 && shmctl(sysv_id, IPC_STAT, &ds) == 0 && ds.shm_nattch < 2; i++) wl_sleep_ms(10);
		NEED(shmctl(sysv_id, IPC_STAT, &ds) == 0 && ds.shm_nattch == 2);
	} else if (is("fown-outside")) { /* owned by a process outside the tree (its parent) */
		NEED(pipe(p) == 0);
		fd_a = p[0], fd_b = p[1];
		NEED(fcntl(fd_a, F_SETOWN, getppid()) == 0);
	} else if (is("memfd-shared")) {
		NEED((fd_a = memfd_create("shared", 0)) >= 0);
		NEED(write(fd_a, "abc", 3) == 3);
		child = fork();
		if (child == 0) {
			char path[64];
			snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)getppid(), fd_a);
			close(fd_a);
			int fd = open(path, O_RDWR);
			(void)fd;
			for (;;) pause();
		}
		for (int i = 0; i < 500; i++) { /* until the child has its own description */
			char path[64], link[128];
			snprintf(path, sizeof path, "/proc/%d/fd/3", (int)child);
			ssize_t n = readlink(path, link, sizeof link - 1);
			if (n > 0 && strncmp(link, "/memfd:", 7) == 0) break;
			wl_sleep_ms(10);
		}
		culprit(child); /* the second process to open it is the one named */
	} else if (is("tty-queued")) {
		NEED((fd_a = posix_openpt(O_RDWR | O_NOCTTY)) >= 0);
		NEED(grantpt(fd_a) == 0 && unlockpt(fd_a) == 0);
		NEED((fd_b = open(ptsname(fd_a), O_RDWR | O_NOCTTY)) >= 0);
		NEED(write(fd_a, "queued\n", 7) == 7);
	} else if (is("tty-mode") || is("tty-exclusive")) { /* packet mode, or exclusive mode, on the master */
		int one = 1;
		NEED((fd_a = posix_openpt(O_RDWR | O_NOCTTY)) >= 0);
		NEED(grantpt(fd_a) == 0 && unlockpt(fd_a) == 0);
		NEED((fd_b = open(ptsname(fd_a), O_RDWR | O_NOCTTY)) >= 0);
		NEED(ioctl(fd_a, is("tty-mode") ? TIOCPKT : TIOCEXCL, &one) == 0);
	} else if (is("tty-queued-master")) { /* the other way: output of the slave the master has not read */
		NEED((fd_a = posix_openpt(O_RDWR | O_NOCTTY)) >= 0);
		NEED(grantpt(fd_a) == 0 && unlockpt(fd_a) == 0);
		NEED((fd_b = open(ptsname(fd_a), O_RDWR | O_NOCTTY)) >= 0);
		NEED(write(fd_b, "output\n", 7) == 7);
		int n = 0;
		for (int i = 0; i < 200 && (ioctl(fd_a, FIONREAD, &n) != 0 || n == 0); i++) wl_sleep_ms(5);
		NEED(n > 0);
	} else if (is("deleted-linked")) {
		char q[4200], r[4200];
		wl_path(q, sizeof q, "orig");
		wl_path(r, sizeof r, "other");
		NEED((fd_a = open(q, O_RDWR | O_CREAT | O_TRUNC, 0600)) >= 0);
		NEED(link(q, r) == 0 && unlink(q) == 0);
	} else if (is("deleted-special")) { /* a device node removed while open */
		char q[4200];
		wl_path(q, sizeof q, "null");
		NEED(mknod(q, S_IFCHR | 0600, makedev(1, 3)) == 0);
		NEED((fd_a = open(q, O_RDWR)) >= 0);
		NEED(unlink(q) == 0);
	} else if (is("tmpfile")) {
		NEED((fd_a = open(wl_dir, O_TMPFILE | O_RDWR, 0600)) >= 0);
		NEED(write(fd_a, "tmp", 3) == 3);
	} else if (is("epoll-stale") || is("epoll-closed")) {
		/* a pipe added as fd N; N closed (the pipe lives on as fd_b), and reused (stale) or not (closed) */
		NEED(pipe(p) == 0);
		NEED((fd_a = epoll_create1(0)) >= 0);
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
		NEED(epoll_ctl(fd_a, EPOLL_CTL_ADD, p[0], &ev) == 0);
		NEED((fd_b = dup(p[0])) >= 0);
		close(p[0]);
		if (is("epoll-stale")) NEED(open("/dev/null", O_RDONLY) == p[0]);
		NEED(write(p[1], "x", 1) == 1);
	} else if (is("hugetlb")) { /* the test makes hugepages available */
		NEED((mem = mmap(NULL, memlen = 2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0)) != MAP_FAILED);
		memset(mem, 0x5a, memlen);
	} else if (is("aio")) {
		NEED(syscall(SYS_io_setup, 8, &aio_ctx) == 0);
	} else if (is("memfd-map")) {
		NEED((fd_a = memfd_create("mapped", 0)) >= 0);
		NEED(ftruncate(fd_a, (off_t)memlen) == 0);
		NEED((mem = mmap(NULL, memlen, PROT_READ | PROT_WRITE, MAP_SHARED, fd_a, 0)) != MAP_FAILED);
		memset(mem, 0x5a, memlen);
	} else if (is("guard")) {
		NEED((mem = mmap(NULL, memlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)) != MAP_FAILED);
		memset(mem, 0x5a, memlen);
		NEED(madvise(mem + 4096, 4096, 102 /* MADV_GUARD_INSTALL */) == 0);
	} else if (is("lease")) {
		char q[4200];
		wl_path(q, sizeof q, "leased");
		int w = open(q, O_WRONLY | O_CREAT, 0600);
		close(w);
		NEED((fd_a = open(q, O_RDONLY)) >= 0);
		NEED(fcntl(fd_a, F_SETLEASE, F_RDLCK) == 0);
	} else if (is("proc-gone")) { /* cwd in /proc/CHILD of a child since reaped */
		child = fork();
		if (child == 0) { for (;;) pause(); }
		char q[64];
		snprintf(q, sizeof q, "/proc/%d", (int)child);
		NEED(chdir(q) == 0);
		kill(child, SIGKILL);
		NEED(waitpid(child, NULL, 0) == child);
		child = 0;
	} else if (is("chroot")) { /* a child chroot()ed to DIR/root, its cwd left outside at DIR */
		char q[4200];
		wl_path(q, sizeof q, "root");
		NEED(mkdir(q, 0755) == 0);
		NEED(pipe(p) == 0);
		child = fork();
		if (child == 0) {
			close(p[0]);
			write(p[1], chdir(wl_dir) == 0 && chroot(q) == 0 ? "y" : "n", 1);
			for (;;) pause();
		}
		close(p[1]);
		char c = 0;
		NEED(read(p[0], &c, 1) == 1 && c == 'y');
		close(p[0]);
		culprit(child);
	} else if (is("terminal")) { /* a pty slave whose master was closed */
		int m;
		NEED((m = posix_openpt(O_RDWR | O_NOCTTY)) >= 0);
		NEED(grantpt(m) == 0 && unlockpt(m) == 0);
		NEED((fd_a = open(ptsname(m), O_RDWR | O_NOCTTY)) >= 0);
		close(m);
	} else if (is("console")) { /* /dev/console held by a process that is no shell job */
		NEED((fd_a = open("/dev/console", O_RDONLY | O_NOCTTY)) >= 0);
	} else if (is("vt")) { /* a virtual terminal */
		NEED((fd_a = open("/dev/tty1", O_RDONLY | O_NOCTTY)) >= 0);
	} else if (is("devtty")) { /* /dev/tty of a session whose pty is the tree's own (master here) */
		NEED((fd_b = posix_openpt(O_RDWR | O_NOCTTY)) >= 0);
		NEED(grantpt(fd_b) == 0 && unlockpt(fd_b) == 0);
		char *pts = ptsname(fd_b);
		int p[2];
		NEED(pipe(p) == 0);
		child = fork();
		if (child == 0) {
			close(p[0]);
			int s = -1, t = -1;
			if (setsid() < 0 || (s = open(pts, O_RDWR)) < 0 || (t = open("/dev/tty", O_RDWR)) < 0) _exit(1);
			write(p[1], "y", 1);
			for (;;) pause();
		}
		close(p[1]);
		char c = 0;
		NEED(read(p[0], &c, 1) == 1 && c == 'y');
		close(p[0]);
		culprit(child);
	} else if (is("memfd-hugetlb")) {
		NEED((fd_a = memfd_create("huge", MFD_HUGETLB)) >= 0);
		NEED(ftruncate(fd_a, 2 << 20) == 0);
	} else if (is("inotify-deleted")) { /* a watch on a file deleted since (kept alive by fd_b) */
		char q[4200];
		wl_path(q, sizeof q, "watched");
		NEED((fd_b = open(q, O_RDWR | O_CREAT, 0600)) >= 0);
		NEED((fd_a = inotify_init1(0)) >= 0);
		NEED(inotify_add_watch(fd_a, q, IN_MODIFY) >= 0);
		NEED(unlink(q) == 0);
	} else if (is("scm-rights")) {
		int s[2];
		NEED(socketpair(AF_UNIX, SOCK_DGRAM, 0, s) == 0);
		NEED(pipe(p) == 0);
		NEED(sendfd(s[0], p[0]) == 0);
		close(p[0]);
		close(p[1]);
		fd_a = s[0], fd_b = s[1];
	} else if (is("unix-dgram-queue")) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		int len = snprintf(sa.sun_path + 1, sizeof sa.sun_path - 1, "criu-bun-refuse-%d", (int)getpid()) + 1;
		socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
		NEED((fd_a = socket(AF_UNIX, SOCK_DGRAM, 0)) >= 0);
		NEED(bind(fd_a, (struct sockaddr *)&sa, salen) == 0);
		int s = socket(AF_UNIX, SOCK_DGRAM, 0);
		NEED(sendto(s, "hello", 5, 0, (struct sockaddr *)&sa, salen) == 5);
		close(s);
	} else if (is("unix-closed-named")) {
		/* a datagram socket connected to a named sender that sent one datagram and closed */
		struct sockaddr_un ra = {.sun_family = AF_UNIX}, sa = {.sun_family = AF_UNIX};
		int rl = snprintf(ra.sun_path + 1, sizeof ra.sun_path - 1, "criu-bun-refuse-r-%d", (int)getpid()) + 1;
		int sl = snprintf(sa.sun_path + 1, sizeof sa.sun_path - 1, "criu-bun-refuse-s-%d", (int)getpid()) + 1;
		socklen_t ral = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + rl), sal = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + sl);
		int s = socket(AF_UNIX, SOCK_DGRAM, 0);
		NEED((fd_a = socket(AF_UNIX, SOCK_DGRAM, 0)) >= 0 && s >= 0);
		NEED(bind(fd_a, (struct sockaddr *)&ra, ral) == 0 && bind(s, (struct sockaddr *)&sa, sal) == 0);
		NEED(connect(fd_a, (struct sockaddr *)&sa, sal) == 0);
		NEED(sendto(s, "hello", 5, 0, (struct sockaddr *)&ra, ral) == 5);
		close(s);
	} else if (is("scm-rights-stream") || is("scm-rights-seqpacket")) {
		int s[2];
		NEED(socketpair(AF_UNIX, is("scm-rights-stream") ? SOCK_STREAM : SOCK_SEQPACKET, 0, s) == 0);
		NEED(send(s[0], "plain", 5, 0) == 5); /* a message without fds comes first */
		int ep = epoll_create1(0);
		NEED(ep >= 0);
		if (is("scm-rights-stream")) {
			int mf = memfd_create("inflight", 0);
			NEED(pipe(p) == 0 && mf >= 0);
			int fds[4] = {p[0], p[1], mf, ep}, n[2] = {3, 1};
			NEED(sendfds(s[0], fds, n, 2) == 0);
			close(p[0]), close(p[1]), close(mf);
		} else {
			int n[1] = {1};
			NEED(sendfds(s[0], &ep, n, 1) == 0);
		}
		close(ep);
		fd_a = s[0], fd_b = s[1];
	} else if (is("tmpfile-rodir")) {
		char q[4200];
		wl_path(q, sizeof q, "ro");
		NEED(mkdir(q, 0700) == 0);
		NEED((fd_a = open(q, O_TMPFILE | O_RDWR, 0600)) >= 0);
		NEED(write(fd_a, "tmp", 3) == 3);
		NEED(chmod(q, 0500) == 0);
	} else if (is("aio-events")) { /* a read completed in the ring, not reaped */
		char q[4200];
		wl_path(q, sizeof q, "aiofile");
		int f = open(q, O_RDWR | O_CREAT | O_TRUNC, 0600);
		NEED(f >= 0 && write(f, "completed-read", 14) == 14);
		NEED(syscall(SYS_io_setup, 8, &aio_ctx) == 0);
		struct iocb cb;
		memset(&cb, 0, sizeof cb);
		cb.aio_lio_opcode = IOCB_CMD_PREAD;
		cb.aio_fildes = (uint32_t)f;
		cb.aio_buf = (uint64_t)(uintptr_t)aio_buf;
		cb.aio_nbytes = 14;
		cb.aio_data = 0x5eed;
		struct iocb *cbs[1] = {&cb};
		NEED(syscall(SYS_io_submit, aio_ctx, 1, cbs) == 1);
		struct aio_ring { unsigned id, nr, head, tail; } *ring = (void *)aio_ctx;
		for (int i = 0; i < 500 && ring->head == ring->tail; i++) wl_sleep_ms(10);
		NEED(ring->head != ring->tail);
		fd_a = f;
	} else if (is("lease-write")) {
		char q[4200];
		wl_path(q, sizeof q, "leased");
		NEED((fd_a = open(q, O_RDWR | O_CREAT, 0600)) >= 0);
		NEED(fcntl(fd_a, F_SETLEASE, F_WRLCK) == 0);
	} else if (is("memfd-map-private")) {
		NEED((fd_a = memfd_create("mapped", 0)) >= 0);
		NEED(ftruncate(fd_a, (off_t)memlen) == 0);
		NEED((mem = mmap(NULL, memlen, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd_a, 0)) != MAP_FAILED);
		memset(mem, 0x5a, memlen);
	} else if (is("packet-opts")) {
		NEED((fd_a = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_ALL))) >= 0);
		struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = (int)if_nametoindex("lo")};
		NEED(ll.sll_ifindex > 0 && bind(fd_a, (struct sockaddr *)&ll, sizeof ll) == 0);
		int one = 1;
		NEED(setsockopt(fd_a, SOL_PACKET, PACKET_AUXDATA, &one, sizeof one) == 0);
		struct packet_mreq mr = {.mr_ifindex = ll.sll_ifindex, .mr_type = PACKET_MR_MULTICAST, .mr_alen = 6, .mr_address = {0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb}};
		NEED(setsockopt(fd_a, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) == 0);
		int fanout = (getpid() & 0xffff) | (PACKET_FANOUT_HASH << 16);
		NEED(setsockopt(fd_a, SOL_PACKET, PACKET_FANOUT, &fanout, sizeof fanout) == 0);
	} else if (is("special-map")) {
		int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
		int v = TPACKET_V2;
		NEED(s >= 0 && setsockopt(s, SOL_PACKET, PACKET_VERSION, &v, sizeof v) == 0);
		struct tpacket_req rq = {.tp_block_size = 4096, .tp_block_nr = 4, .tp_frame_size = 2048, .tp_frame_nr = 8};
		NEED(setsockopt(s, SOL_PACKET, PACKET_RX_RING, &rq, sizeof rq) == 0);
		NEED((mem = mmap(NULL, memlen = 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, s, 0)) != MAP_FAILED);
		close(s); /* the ring lives on in the mapping alone */
	} else if (is("special-map-uring")) {
		struct io_uring_params prm;
		memset(&prm, 0, sizeof prm);
		int u = (int)syscall(SYS_io_uring_setup, 4, &prm);
		NEED(u >= 0);
		memlen = prm.sq_off.array + prm.sq_entries * sizeof(unsigned);
		NEED((mem = mmap(NULL, memlen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u, IORING_OFF_SQ_RING)) != MAP_FAILED);
		close(u); /* the rings live on in the mapping alone */
	} else if (is("sock-packet")) NEED((fd_a = socket(AF_PACKET, SOCK_PACKET, htons(ETH_P_ALL))) >= 0);
	else if (is("netlink-bound")) {
		NEED((fd_a = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)) >= 0);
		struct sockaddr_nl nl = {.nl_family = AF_NETLINK, .nl_groups = RTMGRP_LINK};
		NEED(bind(fd_a, (struct sockaddr *)&nl, sizeof nl) == 0);
		NEED((fd_b = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)) >= 0);
		struct sockaddr_nl k = {.nl_family = AF_NETLINK};
		NEED(connect(fd_b, (struct sockaddr *)&k, sizeof k) == 0);
	} else if (is("fanotify-marks")) {
		char q[4200], r[4200];
		wl_path(q, sizeof q, "marked");
		wl_path(r, sizeof r, "ignored");
		NEED((wfd = open(q, O_RDWR | O_CREAT, 0600)) >= 0);
		int ig = open(r, O_RDWR | O_CREAT, 0600);
		NEED(ig >= 0);
		close(ig);
		struct stat st;
		NEED(fstat(wfd, &st) == 0);
		marked_dev = st.st_dev, marked_ino = st.st_ino;
		NEED((fd_a = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY)) >= 0);
		NEED(fanotify_mark(fd_a, FAN_MARK_ADD, FAN_MODIFY, AT_FDCWD, q) == 0);
		NEED(fanotify_mark(fd_a, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN, AT_FDCWD, wl_dir) == 0);
		NEED(fanotify_mark(fd_a, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_OPEN, AT_FDCWD, r) == 0);
	} else if (is("udp-cork")) {
		udp_connected();
		int one = 1;
		NEED(setsockopt(fd_a, IPPROTO_UDP, UDP_CORK, &one, sizeof one) == 0);
		NEED(send(fd_a, "corked", 6, 0) == 6);
	} else {
		fprintf(stderr, "refuse: unknown mode %s\n", mode);
		exit(2);
	}
}

/* undo the thing (selftest): the check at go must then fail */
static void undo(void) {
	if (fd_a >= 0) close(fd_a), fd_a = -1;
	if (is("scm-rights")) { char b; recv(fd_b, &b, 1, MSG_DONTWAIT); } /* the message goes, its fd with it */
	if (is("sigtrap")) { sigset_t s; sigemptyset(&s); sigaddset(&s, SIGTRAP); int sig; sigwait(&s, &sig); }
	if (mem) munmap(mem, memlen), mem = NULL;
	if (aio_ctx) syscall(SYS_io_destroy, aio_ctx), aio_ctx = 0;
	if (is("proc-gone")) chdir("/");
	if (is("devtty")) kill(child, SIGKILL), waitpid(child, NULL, 0), child = 0;
	if (is("ipcns-objects")) { struct { long type; char text[8]; } m; msgrcv(ipc_msq, &m, sizeof m.text, 0, IPC_NOWAIT); }
	if (is("scm-rights-stream") || is("scm-rights-seqpacket")) close(fd_b), fd_b = -1; /* the receiver, messages and all */
	if (is("fanotify-marks")) close(wfd), wfd = -1;
	if (is("sysv-shared-outside") && sysv_mem) shmdt(sysv_mem), sysv_mem = NULL;
	if (is("timens-children") || is("cgroupns")) wl_failf("selftest: cannot undo %s", mode);
	if (is("session-outside-pidns") || is("session-leader-gone") || is("pgrp-leader-gone")) leader = -1; /* the check then sees another */
}

static void check(void) {
	struct stat st;
	if (is("session-outside-pidns")) {
		WL_CHECK(kill(child, 0) == 0 && getsid(child) == leader, "the namespace's init left our session (%d)", (int)getsid(child));
		kill(child, SIGKILL), waitpid(child, NULL, 0);
		wl_pid = getpid(); /* DIR/ready named the child */
	} else if (is("session-leader-gone") || is("pgrp-leader-gone")) {
		pid_t now = is("session-leader-gone") ? getsid(child) : getpgid(child);
		WL_CHECK(now == leader, "the child's %s is %d, not %d", is("session-leader-gone") ? "session" : "process group", (int)now, (int)leader);
		kill(child, SIGKILL), waitpid(child, NULL, 0);
	} else if (is("timens-children")) {
		char a[64] = "", b[64] = "";
		readlink("/proc/self/ns/time", a, sizeof a - 1);
		readlink("/proc/self/ns/time_for_children", b, sizeof b - 1);
		WL_CHECK(strcmp(a, b) != 0, "time namespace for children is its own again");
	} else if (is("ipcns-objects")) {
		struct { long type; char text[8]; } m = { 0, "" };
		WL_CHECK(msgrcv(ipc_msq, &m, sizeof m.text, 0, IPC_NOWAIT) == (ssize_t)sizeof m.text && m.type == 7 && !strcmp(m.text, "queued"), "the queued message is gone: %m");
		WL_CHECK(semctl(ipc_sem, 1, GETVAL) == 5, "semaphore 1 is %d, not 5", semctl(ipc_sem, 1, GETVAL));
		struct shmid_ds ds;
		WL_CHECK(shmctl(ipc_shm, IPC_STAT, &ds) == 0 && (ds.shm_perm.mode & SHM_LOCKED), "the segment is no longer locked: %m");
	} else if (is("cgroupns")) {
		char a[64] = "";
		readlink("/proc/self/ns/cgroup", a, sizeof a - 1);
		WL_CHECK(a[0] && strcmp(a, cgns_before) != 0, "back in the cgroup namespace it left (%s)", a);
	} else if (is("sigtrap")) {
		sigset_t s;
		sigpending(&s);
		WL_CHECK(sigismember(&s, SIGTRAP) == 1, "SIGTRAP no longer pending");
	} else if (is("droppable") || is("shmem-private")) {
		WL_CHECK(mem != NULL, "mapping gone");
		if (mem) {
			int c = is("droppable") ? 0x5a : 0x33;
			size_t bad = 0;
			for (size_t i = 0; i < memlen; i++) bad += (unsigned char)mem[i] != c;
			WL_CHECK(bad == 0, "%zu bytes of the mapping changed", bad);
		}
	} else if (is("fown")) {
		struct f_owner_ex o = {0, 0};
		WL_CHECK(fd_a >= 0 && fcntl(fd_a, F_GETOWN_EX, &o) == 0 && o.type == F_OWNER_TID && o.pid == idle_tid, "F_GETOWN_EX lost (%d %d)", o.type, o.pid);
	} else if (is("fown-outside")) {
		WL_CHECK(fd_a >= 0 && fcntl(fd_a, F_GETOWN) == getppid(), "F_GETOWN lost");
	}
	else if (is("memfd-shared")) {
		WL_CHECK(fd_a >= 0 && pwrite(fd_a, "xyz", 3, 0) == 3, "memfd write");
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	} else if (is("tty-queued")) {
		int n = -1;
		WL_CHECK(fd_b >= 0 && ioctl(fd_b, FIONREAD, &n) == 0 && n == 7, "terminal input queue has %d bytes, not 7", n);
	} else if (is("tty-mode") || is("tty-exclusive")) {
		int v = 0;
		WL_CHECK(fd_a >= 0 && ioctl(fd_a, is("tty-mode") ? TIOCGPKT : TIOCGEXCL, &v) == 0 && v == 1,
			"the master's %s mode is gone", is("tty-mode") ? "packet" : "exclusive");
	} else if (is("tty-queued-master")) {
		int n = -1;
		WL_CHECK(fd_a >= 0 && ioctl(fd_a, FIONREAD, &n) == 0 && n == 8, "the master has %d bytes to read, not 8 (output\\r\\n)", n);
	} else if (is("deleted-linked")) {
		char r[4200];
		wl_path(r, sizeof r, "other");
		struct stat o;
		WL_CHECK(fd_a >= 0 && fstat(fd_a, &st) == 0 && stat(r, &o) == 0 && st.st_ino == o.st_ino, "the fd is not the inode of 'other'");
	} else if (is("epoll-stale") || is("epoll-closed")) {
		struct epoll_event ev = {0};
		WL_CHECK(fd_a >= 0 && epoll_wait(fd_a, &ev, 1, 0) == 1 && ev.data.u64 == 42, "the pipe's event is gone");
	} else if (is("hugetlb") || is("memfd-map") || is("guard")) {
		WL_CHECK(mem != NULL, "mapping gone");
		size_t bad = 0;
		for (size_t i = 0; mem && i < memlen; i++) if (!is("guard") || i < 4096 || i >= 8192) bad += (unsigned char)mem[i] != 0x5a;
		WL_CHECK(bad == 0, "%zu bytes of the mapping changed", bad);
		if (is("guard") && mem) {
			uint64_t e = 0;
			int pm = open("/proc/self/pagemap", O_RDONLY);
			WL_CHECK(pm >= 0 && pread(pm, &e, 8, (off_t)((uintptr_t)(mem + 4096) / 4096 * 8)) == 8 && (e >> 58 & 1), "no guard region any more (pagemap 0x%llx)", (unsigned long long)e);
			if (pm >= 0) close(pm);
		}
	} else if (is("aio")) {
		struct timespec z = {0, 0};
		char ev[32 * 4];
		WL_CHECK(aio_ctx && syscall(SYS_io_getevents, aio_ctx, 0, 4, ev, &z) == 0, "the AIO context is gone: %m");
	} else if (is("lease")) {
		WL_CHECK(fd_a >= 0 && fcntl(fd_a, F_GETLEASE) == F_RDLCK, "lease lost");
	} else if (is("proc-gone")) {
		char cwd[256] = "";
		ssize_t n = readlink("/proc/self/cwd", cwd, sizeof cwd - 1);
		WL_CHECK(n > 6 && strncmp(cwd, "/proc/", 6) == 0, "cwd is '%s', not the gone /proc/PID", cwd);
	} else if (is("chroot")) {
		char q[4200], want[4200], l[64];
		wl_path(want, sizeof want, "root");
		snprintf(l, sizeof l, "/proc/%d/root", (int)child);
		ssize_t n = readlink(l, q, sizeof q - 1);
		if (n > 0) q[n] = 0;
		WL_CHECK(n > 0 && strcmp(q, want) == 0, "the child's root is '%s'", n > 0 ? q : "?");
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	} else if (is("terminal")) {
		char b[4];
		ssize_t n = fd_a >= 0 ? read(fd_a, b, sizeof b) : 1;
		WL_CHECK(n == 0 || (n < 0 && errno == EIO), "the slave is not hung up (read %zd)", n);
	} else if (is("console") || is("vt")) {
		WL_CHECK(fd_a >= 0 && fstat(fd_a, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == (is("vt") ? makedev(4, 1) : makedev(5, 1)) && isatty(fd_a), "the terminal fd is gone");
	} else if (is("devtty")) {
		char l[64], q[64] = {0};
		int found = 0;
		for (int i = 0; i < 1024 && !found; i++) {
			snprintf(l, sizeof l, "/proc/%d/fd/%d", (int)child, i);
			ssize_t n = readlink(l, q, sizeof q - 1);
			found = n > 0 && (q[n] = 0, strcmp(q, "/dev/tty") == 0);
		}
		WL_CHECK(found, "the child holds no /dev/tty");
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	} else if (is("memfd-hugetlb")) {
		WL_CHECK(fd_a >= 0 && fstat(fd_a, &st) == 0 && st.st_blksize == 2 << 20 && st.st_size == 2 << 20, "not the huge page memfd");
	} else if (is("inotify-deleted")) {
		WL_CHECK(fd_a >= 0 && fd_b >= 0 && write(fd_b, "x", 1) == 1, "write to the watched file");
		char b[256];
		WL_CHECK(fd_a >= 0 && read(fd_a, b, sizeof b) > 0 && ((struct inotify_event *)b)->mask & IN_MODIFY, "no IN_MODIFY from the watch");
	} else if (is("sysv-shared-outside")) {
		struct shmid_ds ds;
		WL_CHECK(shmctl(sysv_id, IPC_STAT, &ds) == 0 && ds.shm_nattch == 2, "the segment has %lu attaches, want 2 (ours, the helper's): %m",
		         (unsigned long)ds.shm_nattch);
		WL_CHECK(sysv_mem && strcmp(sysv_mem, "outside") == 0, "the segment's contents changed");
	} else if (is("pidfd-outside") || is("pidfd-thread")) {
		WL_CHECK(fd_a >= 0 && syscall(SYS_pidfd_send_signal, fd_a, 0, NULL, 0) == 0, "the pidfd no longer reaches its process: %m");
	} else if (is("pidfd")) {
		WL_CHECK(fd_a >= 0 && syscall(SYS_pidfd_send_signal, fd_a, 0, NULL, 0) < 0 && errno == ESRCH, "the pidfd of the dead child: %m");
	} else if (is("pidfd-dead2")) {
		struct stat a, b;
		WL_CHECK(fd_a >= 0 && fd_b >= 0 && fstat(fd_a, &a) == 0 && fstat(fd_b, &b) == 0 && a.st_ino == b.st_ino, "the two pidfds are not one inode");
		WL_CHECK(fd_a >= 0 && syscall(SYS_pidfd_send_signal, fd_a, 0, NULL, 0) < 0 && errno == ESRCH, "the pidfd of the dead child: %m");
	} else if (is("scm-rights")) {
		char data, ctl[CMSG_SPACE(sizeof(int))];
		struct iovec iov = {&data, 1};
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
		ssize_t n = fd_b >= 0 ? recvmsg(fd_b, &m, MSG_DONTWAIT) : -1;
		struct cmsghdr *c = n == 1 ? CMSG_FIRSTHDR(&m) : NULL;
		WL_CHECK(c && c->cmsg_type == SCM_RIGHTS, "no fd arrived with the message (n=%zd)", n);
		if (c) {
			int fd;
			memcpy(&fd, CMSG_DATA(c), sizeof fd);
			WL_CHECK(fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode), "the fd in flight is not the pipe");
		}
	} else if (is("unix-dgram-queue")) {
		char buf[16] = "";
		WL_CHECK(fd_a >= 0 && recv(fd_a, buf, sizeof buf, MSG_DONTWAIT) == 5 && memcmp(buf, "hello", 5) == 0, "queued datagram lost");
	} else if (is("unix-closed-named")) {
		char buf[16] = "";
		struct sockaddr_un from;
		socklen_t fl = sizeof from;
		WL_CHECK(fd_a >= 0 && recvfrom(fd_a, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl) == 5 && memcmp(buf, "hello", 5) == 0, "queued datagram lost");
		WL_CHECK(fl > offsetof(struct sockaddr_un, sun_path) + 1 && !strncmp(from.sun_path + 1, "criu-bun-refuse-s-", 18), "the datagram lost its sender's name (address length %u)", (unsigned)fl);
	} else if (is("scm-rights-stream") || is("scm-rights-seqpacket")) {
		int got[8], n = fd_b >= 0 ? recvfds(fd_b, 5, got, 8) : -1;
		if (is("scm-rights-stream")) {
			WL_CHECK(n == 4, "%d fds arrived, not 4", n);
			if (n == 4) {
				struct stat a, b;
				WL_CHECK(fstat(got[0], &a) == 0 && fstat(got[1], &b) == 0 && S_ISFIFO(a.st_mode) && a.st_ino == b.st_ino, "not the two ends of one pipe");
				WL_CHECK(write(got[1], "p", 1) == 1 && read(got[0], aio_buf, 1) == 1 && aio_buf[0] == 'p', "the pipe in flight does not carry data");
				WL_CHECK(is_anon(got[2], "memfd:inflight") || (fstat(got[2], &a) == 0 && S_ISREG(a.st_mode)), "the third fd is not the memfd");
				WL_CHECK(is_anon(got[3], "[eventpoll]"), "the fourth fd is not the epoll fd");
			}
		} else WL_CHECK(n == 1 && is_anon(got[0], "[eventpoll]"), "the epoll fd did not arrive (%d fds)", n);
	} else if (is("tmpfile-rodir")) {
		char b[4] = "";
		WL_CHECK(fd_a >= 0 && pread(fd_a, b, 3, 0) == 3 && !memcmp(b, "tmp", 3) && fstat(fd_a, &st) == 0 && st.st_nlink == 0, "the O_TMPFILE file is gone");
	} else if (is("aio-events")) {
		struct io_event ev;
		struct timespec z = {0, 0};
		long n = aio_ctx ? syscall(SYS_io_getevents, aio_ctx, 1, 1, &ev, &z) : -1;
		WL_CHECK(n == 1 && ev.data == 0x5eed && ev.res == 14 && !memcmp(aio_buf, "completed-read", 14), "the completed read is gone (%ld)", n);
	} else if (is("lease-write")) {
		WL_CHECK(fd_a >= 0 && fcntl(fd_a, F_GETLEASE) == F_WRLCK, "write lease lost");
	} else if (is("memfd-map-private")) {
		size_t bad = 0;
		for (size_t i = 0; mem && i < memlen; i++) bad += (unsigned char)mem[i] != 0x5a;
		WL_CHECK(mem && bad == 0, "%zu bytes of the mapping changed", bad);
	} else if (is("packet-opts")) {
		int v = 0;
		socklen_t l = sizeof v;
		WL_CHECK(fd_a >= 0 && getsockopt(fd_a, SOL_PACKET, PACKET_AUXDATA, &v, &l) == 0 && v == 1, "PACKET_AUXDATA lost");
		l = sizeof v;
		WL_CHECK(fd_a >= 0 && getsockopt(fd_a, SOL_PACKET, PACKET_FANOUT, &v, &l) == 0 && (v & 0xffff) == (getpid() & 0xffff), "PACKET_FANOUT lost (%x)", v);
	} else if (is("special-map")) {
		char l[128];
		snprintf(l, sizeof l, "/proc/self/map_files/%lx-%lx", (unsigned long)mem, (unsigned long)mem + memlen);
		char t[64] = "";
		ssize_t n = mem ? readlink(l, t, sizeof t - 1) : -1;
		WL_CHECK(n > 0 && !strncmp(t, "socket:[", 8), "the ring is not mapped (%s)", t);
	} else if (is("special-map-uring")) {
		char l[128];
		snprintf(l, sizeof l, "/proc/self/map_files/%lx-%lx", (unsigned long)mem, (unsigned long)mem + ((memlen + 4095) & ~4095UL));
		char t[64] = "";
		ssize_t n = mem ? readlink(l, t, sizeof t - 1) : -1;
		WL_CHECK(n > 0 && strstr(t, "io_uring"), "the rings are not mapped (%s)", t);
	} else if (is("sock-packet")) {
		WL_CHECK(fd_a >= 0 && geti_(fd_a, SOL_SOCKET, SO_TYPE) == SOCK_PACKET, "not a SOCK_PACKET socket");
	} else if (is("netlink-bound")) {
		struct sockaddr_nl nl;
		socklen_t l = sizeof nl;
		WL_CHECK(fd_a >= 0 && getsockname(fd_a, (struct sockaddr *)&nl, &l) == 0 && nl.nl_groups == RTMGRP_LINK, "the netlink socket left its group");
		l = sizeof nl;
		WL_CHECK(fd_b >= 0 && getpeername(fd_b, (struct sockaddr *)&nl, &l) == 0 && nl.nl_family == AF_NETLINK, "the connected netlink socket");
	} else if (is("fanotify-marks")) {
		WL_CHECK(wfd >= 0 && pwrite(wfd, "m", 1, 0) == 1, "write to the marked file");
		int found = 0;
		for (int i = 0; i < 100 && !found && fd_a >= 0; i++) {
			struct pollfd pf = {.fd = fd_a, .events = POLLIN};
			poll(&pf, 1, 20);
			char b[4096];
			ssize_t n = read(fd_a, b, sizeof b);
			for (struct fanotify_event_metadata *e = (void *)b; n > 0 && FAN_EVENT_OK(e, n); e = FAN_EVENT_NEXT(e, n)) {
				struct stat es;
				if (e->fd >= 0 && fstat(e->fd, &es) == 0 && es.st_dev == marked_dev && es.st_ino == marked_ino && (e->mask & FAN_MODIFY)) found = 1;
				if (e->fd >= 0) close(e->fd);
			}
		}
		WL_CHECK(found, "no FAN_MODIFY from the inode mark");
	} else if (is("udp-cork")) {
		int n = -1;
		WL_CHECK(fd_a >= 0 && ioctl(fd_a, TIOCOUTQ, &n) == 0 && n > 0, "cork is empty (%d)", n);
	} else WL_CHECK(fd_a >= 0 && fstat(fd_a, &st) == 0, "fd of %s is gone", mode); /* the fd kinds */
	wl_check_ids();
	wl_detail("mode=%s", mode);
}

int main(int argc, char **argv) { wl_mode_main(argc, argv, "refuse", setup, undo, check, 0); }
