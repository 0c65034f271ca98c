/*
 * mntfix: terminal and cgroup states criu-bun got wrong once (session 28's hunt in mount
 * namespaces, ttys and cgroups); each MODE holds one, and at go checks it is all still there
 * exactly (after a dump and restore, or after a dump that refused it).
 *
 *   mntfix DIR MODE
 *   fgpgrp     a pty pair: the process holds the master; its child S makes a session whose
 *              controlling terminal is the slave, S's child G a process group of its own, which S
 *              makes the terminal's foreground group (tcsetpgrp). At go: TIOCGPGRP on the master
 *              says G, TIOCGSID says S; S sees G in the foreground too
 *   fggone     as fgpgrp, then G exits (S reaps it): the terminal's foreground group is one no process
 *              is in. At go: TIOCGPGRP still says G. S is named in DIR/culprit. Refused
 *              (tty-foreground): restore could not make that group the foreground one
 *   slavegone  a pty master whose slave was opened and closed again (the master reads EIO and
 *              polls POLLHUP). At go: the same
 *   baud       a pty pair whose slave runs at a rate no Bnnn constant names (termios2: BOTHER, 12345 in,
 *              23456 out). At go: TCGETS2 gives the same flags and speeds
 *   mqloose    in an IPC namespace of its own (unshare CLONE_NEWIPC), a POSIX message queue /mntfix
 *              holding "hello" (priority 3) that no fd holds (closed after mq_send). At go: it opens and
 *              receives it. Refused (ipcns-mqueue): the namespace alone keeps it
 *   thrcg      a second thread in a cgroup v1 cpu cgroup of its own (/sys/fs/cgroup/cpu/
 *              criu-bun-mntfix-PID/t: tasks take thread ids), the main thread in its parent. At go:
 *              each thread's /proc/self/task/TID/cgroup as before; the cgroups are removed after
 *   thrcg2     the same in cgroup v2 (/sys/fs/cgroup/unified): the process in criu-bun-mntfix-PID, the
 *              thread in its threaded child t (cgroup.type threaded, cgroup.threads)
 *
 * --selftest-corrupt: fgpgrp makes S the foreground group; slavegone opens the slave again;
 * thrcg moves the thread to its parent's cgroup; baud sets 38400; mqloose unlinks the queue.
 */
#define WL_MODES
#include "wl.h"
#include <poll.h>
#include <pthread.h>
#include <mqueue.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <termios.h>

static int master = -1;
static pid_t s_pid, g_pid;
static char slave_name[64];

static void kid_wait(void) {
	for (;;) pause();
}

static void setup_fgpgrp(void) {
	NEED((master = posix_openpt(O_RDWR | O_NOCTTY)) >= 0);
	NEED(grantpt(master) == 0 && unlockpt(master) == 0);
	snprintf(slave_name, sizeof slave_name, "%s", ptsname(master));
	int p[2];
	NEED(pipe(p) == 0);
	s_pid = fork();
	NEED(s_pid >= 0);
	if (s_pid == 0) {
		close(p[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves no S (nor G) behind */
		setsid();
		int s = open(slave_name, O_RDWR); /* the session's controlling terminal */
		if (s < 0) _exit(3);
		pid_t g = fork();
		if (g == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			setpgid(0, 0);
			kid_wait();
		}
		setpgid(g, g);
		signal(SIGTTOU, SIG_IGN);
		if (tcsetpgrp(s, g) != 0) _exit(4);
		if (is("fggone")) {
			kill(g, SIGKILL);
			waitpid(g, NULL, 0);
		}
		if (write(p[1], &g, sizeof g) != sizeof g) _exit(5);
		/* at SIGUSR1: is G still the foreground group, as S sees it? exit 0 if so */
		sigset_t ss;
		sigemptyset(&ss);
		sigaddset(&ss, SIGUSR1);
		sigaddset(&ss, SIGUSR2);
		sigprocmask(SIG_BLOCK, &ss, NULL);
		int sig;
		/* SIGUSR2 (the self-test's damage): S's own group in the foreground */
		while (sigwait(&ss, &sig) == 0 && sig == SIGUSR2) tcsetpgrp(s, getpgrp());
		int ok = tcgetpgrp(s) == g;
		if (!is("fggone")) kill(g, SIGKILL);
		waitpid(g, NULL, 0);
		_exit(ok ? 0 : 6);
	}
	close(p[1]);
	NEED(read(p[0], &g_pid, sizeof g_pid) == sizeof g_pid);
	close(p[0]);
	pid_t fg = -1;
	NEED(ioctl(master, TIOCGPGRP, &fg) == 0 && fg == g_pid);
	if (is("fggone")) {
		char b[32];
		int n = snprintf(b, sizeof b, "%d\n", (int)s_pid);
		NEED(wl_write_file("culprit", b, n) == 0);
	}
}

static void check_fgpgrp(void) {
	pid_t fg = -1, sid = -1;
	WL_CHECK(ioctl(master, TIOCGPGRP, &fg) == 0 && fg == g_pid, "foreground group of %s: %d (errno %d), expected %d",
	         slave_name, (int)fg, errno, (int)g_pid);
	WL_CHECK(ioctl(master, TIOCGSID, &sid) == 0 && sid == s_pid, "session of %s: %d, expected %d", slave_name, (int)sid,
	         (int)s_pid);
	kill(s_pid, SIGUSR1);
	int st = 0;
	waitpid(s_pid, &st, 0);
	WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "S: tcgetpgrp of its terminal is not G (status 0x%x)", st);
	wl_detail("fg=%d sid=%d", (int)fg, (int)sid);
}

static void corrupt_fgpgrp(void) {
	/* S's own group back in the foreground (TIOCSPGRP needs the caller's terminal: through S) */
	kill(s_pid, SIGUSR2);
	pid_t fg = -1;
	for (int i = 0; i < 500 && (ioctl(master, TIOCGPGRP, &fg) != 0 || fg == g_pid); i++) wl_sleep_ms(2);
}

static int gone_state(char *what, size_t n) {
	struct pollfd pf = {master, POLLIN, 0};
	int r = poll(&pf, 1, 0);
	char b[8];
	ssize_t got = read(master, b, sizeof b);
	int e = errno;
	snprintf(what, n, "poll %d revents 0x%x read %zd errno %d", r, pf.revents, got, got < 0 ? e : 0);
	return r == 1 && (pf.revents & POLLHUP) && got < 0 && e == EIO;
}

static void setup_slavegone(void) {
	NEED((master = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK)) >= 0);
	NEED(grantpt(master) == 0 && unlockpt(master) == 0);
	snprintf(slave_name, sizeof slave_name, "%s", ptsname(master));
	int s = open(slave_name, O_RDWR | O_NOCTTY);
	NEED(s >= 0);
	close(s);
	char what[128];
	if (!gone_state(what, sizeof what)) {
		fprintf(stderr, "setup slavegone: %s\n", what);
		exit(2);
	}
}

static int reopened = -1;
static void corrupt_slavegone(void) {
	reopened = open(slave_name, O_RDWR | O_NOCTTY);
}

static void check_slavegone(void) {
	char what[128];
	WL_CHECK(gone_state(what, sizeof what), "master of %s after its slave closed: %s (expected POLLHUP, EIO)", slave_name,
	         what);
	wl_detail("%s", what);
}

/* struct termios2 (asm/termbits.h, which clashes with termios.h) */
struct wl_termios2 {
	unsigned c_iflag, c_oflag, c_cflag, c_lflag;
	unsigned char c_line, c_cc[19];
	unsigned c_ispeed, c_ospeed;
};
#define WL_TCGETS2 _IOR('T', 0x2A, struct wl_termios2)
#define WL_TCSETS2 _IOW('T', 0x2B, struct wl_termios2)
#define WL_BOTHER 0010000
#define WL_CBAUD 0010017
static int slave = -1;
static struct wl_termios2 baud_want;

static void setup_baud(void) {
	NEED((master = posix_openpt(O_RDWR | O_NOCTTY)) >= 0);
	NEED(grantpt(master) == 0 && unlockpt(master) == 0);
	snprintf(slave_name, sizeof slave_name, "%s", ptsname(master));
	NEED((slave = open(slave_name, O_RDWR | O_NOCTTY)) >= 0);
	struct wl_termios2 t;
	NEED(ioctl(slave, WL_TCGETS2, &t) == 0);
	t.c_cflag &= ~(WL_CBAUD | (WL_CBAUD << 16));
	t.c_cflag |= WL_BOTHER | (WL_BOTHER << 16);
	t.c_ispeed = 12345;
	t.c_ospeed = 23456;
	NEED(ioctl(slave, WL_TCSETS2, &t) == 0);
	NEED(ioctl(slave, WL_TCGETS2, &baud_want) == 0 && baud_want.c_ospeed == 23456 && baud_want.c_ispeed == 12345);
}
static void corrupt_baud(void) {
	struct wl_termios2 t = baud_want;
	t.c_ispeed = t.c_ospeed = 38400;
	ioctl(slave, WL_TCSETS2, &t);
}
static void check_baud(void) {
	struct wl_termios2 t;
	memset(&t, 0, sizeof t);
	ioctl(master, WL_TCGETS2, &t);
	WL_CHECK(t.c_ispeed == baud_want.c_ispeed && t.c_ospeed == baud_want.c_ospeed && t.c_cflag == baud_want.c_cflag,
	         "%s: speeds %u in %u out, c_cflag 0%o; want %u, %u, 0%o", slave_name, t.c_ispeed, t.c_ospeed, t.c_cflag,
	         baud_want.c_ispeed, baud_want.c_ospeed, baud_want.c_cflag);
	wl_detail("ispeed=%u ospeed=%u", t.c_ispeed, t.c_ospeed);
}

static void setup_mqloose(void) {
	NEED(unshare(CLONE_NEWIPC) == 0);
	mqd_t q = mq_open("/mntfix", O_CREAT | O_RDWR | O_CLOEXEC, 0600, NULL);
	NEED(q != (mqd_t)-1);
	NEED(mq_send(q, "hello", 5, 3) == 0);
	mq_close(q);
}
static void check_mqloose(void) {
	char b[65536];
	unsigned pr = 0;
	mqd_t q = mq_open("/mntfix", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	ssize_t n = q == (mqd_t)-1 ? -1 : mq_receive(q, b, sizeof b, &pr);
	WL_CHECK(n == 5 && pr == 3 && !memcmp(b, "hello", 5), "queue /mntfix: opened %d, received %zd bytes, priority %u (errno %d)",
	         q != (mqd_t)-1, n, pr, errno);
	mq_unlink("/mntfix");
}

static char cg_dir[256], cg_sub[300];
static volatile pid_t thr_tid;
static volatile int thr_stop;
static void *thr_main(void *a) {
	(void)a;
	thr_tid = wl_gettid();
	while (!thr_stop) wl_sleep_ms(5);
	return NULL;
}
static pthread_t thr;

static void cg_write(const char *dir, const char *file, long v) {
	char p[400], b[32];
	snprintf(p, sizeof p, "%s/%s", dir, file);
	int fd = open(p, O_WRONLY);
	NEED(fd >= 0);
	int n = snprintf(b, sizeof b, "%ld\n", v);
	NEED(write(fd, b, n) == n);
	close(fd);
}

static int v2;
static const char *cg_root(void) { return v2 ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup/cpu"; }

/* the cpu line (v2: the 0:: line) of /proc/self/task/TID/cgroup */
static void cpu_cg(pid_t tid, char *out, size_t n) {
	char p[64], buf[4096];
	snprintf(p, sizeof p, "/proc/self/task/%d/cgroup", (int)tid);
	out[0] = 0;
	int fd = open(p, O_RDONLY);
	if (fd < 0) return;
	ssize_t r = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (r <= 0) return;
	buf[r] = 0;
	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n")) {
		char *c = strchr(l, ':');
		if (!v2 && c && !strncmp(c + 1, "cpu:", 4)) snprintf(out, n, "%s", c + 5);
		if (v2 && !strncmp(l, "0::", 3)) snprintf(out, n, "%s", l + 3);
	}
}

static char main_cg[256], thr_cg[256];
static void setup_thrcg(void) {
	v2 = is("thrcg2");
	snprintf(cg_dir, sizeof cg_dir, "%s/criu-bun-mntfix-%d", cg_root(), (int)getpid());
	snprintf(cg_sub, sizeof cg_sub, "%s/t", cg_dir);
	NEED(mkdir(cg_dir, 0755) == 0);
	NEED(mkdir(cg_sub, 0755) == 0);
	if (v2) {
		char tp[400];
		snprintf(tp, sizeof tp, "%s/cgroup.type", cg_sub);
		int fd = open(tp, O_WRONLY);
		NEED(fd >= 0 && write(fd, "threaded", 8) == 8);
		close(fd);
	}
	cg_write(cg_dir, "cgroup.procs", getpid());
	NEED(pthread_create(&thr, NULL, thr_main, NULL) == 0);
	while (!thr_tid) wl_sleep_ms(1);
	cg_write(cg_sub, v2 ? "cgroup.threads" : "tasks", thr_tid);
	cpu_cg(wl_gettid(), main_cg, sizeof main_cg);
	cpu_cg(thr_tid, thr_cg, sizeof thr_cg);
	NEED(strcmp(main_cg, thr_cg) != 0);
}
static void corrupt_thrcg(void) {
	cg_write(cg_dir, v2 ? "cgroup.threads" : "tasks", thr_tid);
}
static void check_thrcg(void) {
	char m[256], t[256];
	cpu_cg(wl_gettid(), m, sizeof m);
	cpu_cg(thr_tid, t, sizeof t);
	WL_CHECK(!strcmp(m, main_cg), "main thread in %s cgroup '%s', was '%s'", v2 ? "v2" : "cpu", m, main_cg);
	WL_CHECK(!strcmp(t, thr_cg), "thread %d in %s cgroup '%s', was '%s'", (int)thr_tid, v2 ? "v2" : "cpu", t, thr_cg);
	wl_detail("main=%s thread=%s", m, t);
	thr_stop = 1;
	pthread_join(thr, NULL);
	/* leave no cgroup behind: back to the root, then remove both */
	cg_write(cg_root(), "cgroup.procs", getpid());
	rmdir(cg_sub);
	rmdir(cg_dir);
}

static void setup(void) {
	if (is("fgpgrp") || is("fggone")) setup_fgpgrp();
	else if (is("slavegone")) setup_slavegone();
	else if (is("baud")) setup_baud();
	else if (is("mqloose")) setup_mqloose();
	else if ((is("thrcg") || is("thrcg2"))) setup_thrcg();
	else {
		fprintf(stderr, "unknown mode %s\n", mode);
		exit(2);
	}
}
static void corrupt(void) {
	if (is("fgpgrp") || is("fggone")) corrupt_fgpgrp();
	else if (is("slavegone")) corrupt_slavegone();
	else if (is("baud")) corrupt_baud();
	else if (is("mqloose")) mq_unlink("/mntfix");
	else if ((is("thrcg") || is("thrcg2"))) corrupt_thrcg();
}
static void check(void) {
	if (is("fgpgrp") || is("fggone")) check_fgpgrp();
	else if (is("slavegone")) check_slavegone();
	else if (is("baud")) check_baud();
	else if (is("mqloose")) check_mqloose();
	else if ((is("thrcg") || is("thrcg2"))) check_thrcg();
}

int main(int argc, char **argv) {
	wl_mode_main(argc, argv, "mntfix", setup, corrupt, check, 1);
}
