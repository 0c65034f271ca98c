/*
 * freezefix: states that made the freeze hang, lose signals or kill the target once (test/freeze.test.ts);
 * each MODE holds one and at go checks it is all still there exactly (after a dump and restore,
 * a dump -R, or a dump that refused it).
 *
 *   freezefix DIR MODE [ARG]
 *   stoppend  a child stopped by SIGSTOP, SIGUSR2 blocked, with SIGUSR1 (handled, unblocked) and
 *             SIGRTMAX (sigqueue'd, value 64) pending for the process. At go: the child still
 *             stopped, both pending (ShdPnd), nothing pending for its thread (no stray SIGSTOP),
 *             SigBlk just SIGUSR2; then SIGCONT: each handler runs once, SIGRTMAX with value 64
 *   strict    a thread in seccomp strict mode blocked in read() on a pipe, the main thread without
 *             seccomp. At go: the thread's Seccomp 1, the main thread's 0; the thread echoes the
 *             byte it reads plus one, then SYS_exit
 *   seckill NR  a filter installed by a thread only (SECCOMP_RET_KILL_PROCESS on syscall NR,
 *             ERRNO 77 for getppid, else allow), the main thread without seccomp. At go: the
 *             thread's Seccomp 2, the main thread's 0, and getppid in the thread fails with errno 77
 *   vfork     the process blocked in vfork(): its child (sharing its memory) writes ready once the
 *             parent sleeps in the vfork wait, polls for go, sets a shared variable and _exit(9).
 *             At go (in the parent, once the child is gone): the variable as the child set it, the
 *             child's status 9. Refused at dump (vfork)
 *   leaderexit  the main thread gone (pthread_exit) while two threads run; ready once the leader
 *             is a zombie. At go: same pid, the leader still a zombie, the second thread still
 *             counting. Refused at dump (leader-exited)
 *
 * --selftest-corrupt: stoppend continues the child (its handlers run early); strict feeds the
 * thread before go; seckill's thread installs a second filter (ERRNO 78 for getppid); vfork's child
 * leaves the shared variable alone; leaderexit stops the second thread.
 */
#include "wl.h"
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static const char *mode;
static int is(const char *m) { return strcmp(mode, m) == 0; }
#define NEEDC(cond)                                                    \
	do {                                                               \
		if (!(cond)) {                                                 \
			fprintf(stderr, "setup %s: %s failed: %m\n", mode, #cond); \
			exit(2);                                                   \
		}                                                              \
	} while (0)

/* a line KEY of /proc/PID/task/TID/status (or /proc/PID/status with tid 0), "" if none */
static void status_line(pid_t pid, pid_t tid, const char *key, char *out, size_t n) {
	char p[128], buf[8192];
	if (tid) snprintf(p, sizeof p, "/proc/%d/task/%d/status", (int)pid, (int)tid);
	else snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
	out[0] = 0;
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return;
	ssize_t r = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (r <= 0) return;
	buf[r] = 0;
	size_t kl = strlen(key);
	for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		if (strncmp(l, key, kl) == 0 && l[kl] == ':') {
			l += kl + 1;
			while (*l == ' ' || *l == '\t') l++;
			size_t i = 0;
			while (l[i] && l[i] != '\n' && i + 1 < n) {
				out[i] = l[i];
				i++;
			}
			out[i] = 0;
			return;
		}
	}
}
static unsigned long long status_hex(pid_t pid, pid_t tid, const char *key) {
	char v[64];
	status_line(pid, tid, key, v, sizeof v);
	return strtoull(v, NULL, 16);
}
/* state letter of /proc/PID/task/TID/stat, '?' if none (no stdio: safe in a vfork child) */
static char task_state(pid_t pid, pid_t tid) {
	char p[128], buf[1024];
	snprintf(p, sizeof p, "/proc/%d/task/%d/stat", (int)pid, (int)tid);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return '?';
	ssize_t r = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (r <= 0) return '?';
	buf[r] = 0;
	char *q = strrchr(buf, ')');
	return q && q[1] && q[2] ? q[2] : '?';
}

/* ---------- stoppend ---------- */
static volatile sig_atomic_t u1, rt, rtv;
static void on_sig(int s, siginfo_t *si, void *uc) {
	(void)uc;
	if (s == SIGUSR1) u1++;
	else {
		rt++;
		rtv = si->si_value.sival_int;
	}
}
static pid_t child;
static void stoppend_setup(void) {
	child = fork();
	NEEDC(child >= 0);
	if (!child) {
		struct sigaction sa = {0};
		sa.sa_sigaction = on_sig;
		sa.sa_flags = SA_SIGINFO;
		sigaction(SIGUSR1, &sa, NULL);
		sigaction(SIGRTMAX, &sa, NULL);
		sigset_t b;
		sigemptyset(&b);
		sigaddset(&b, SIGUSR2);
		sigprocmask(SIG_BLOCK, &b, NULL);
		for (;;) {
			if (u1 || rt) {
				wl_sleep_ms(50); /* both, if both come */
				_exit(u1 == 1 && rt == 1 && rtv == 64 ? 0 : 10 + u1 * 3 + rt);
			}
			wl_sleep_ms(5);
		}
	}
	wl_sleep_ms(20);
	kill(child, SIGSTOP);
	int st;
	NEEDC(waitpid(child, &st, WUNTRACED) == child && WIFSTOPPED(st));
	kill(child, SIGUSR1);
	union sigval v = {.sival_int = 64};
	NEEDC(sigqueue(child, SIGRTMAX, v) == 0);
	for (int i = 0; i < 500 && status_hex(child, 0, "ShdPnd") != 0x8000000000000200ULL; i++) wl_sleep_ms(2);
	NEEDC(status_hex(child, 0, "ShdPnd") == 0x8000000000000200ULL);
}
static void stoppend_check(void) {
	char st = task_state(child, child);
	unsigned long long shd = status_hex(child, 0, "ShdPnd"), pnd = status_hex(child, child, "SigPnd"),
	                   blk = status_hex(child, child, "SigBlk");
	WL_CHECK(st == 'T', "child state %c, want T (stopped)", st);
	WL_CHECK(shd == 0x8000000000000200ULL, "child ShdPnd %llx, want 8000000000000200 (SIGUSR1, SIGRTMAX)", shd);
	WL_CHECK(pnd == 0, "child SigPnd %llx, want 0", pnd);
	WL_CHECK(blk == 0x800, "child SigBlk %llx, want 800 (SIGUSR2)", blk);
	kill(child, SIGCONT);
	int ws = 0;
	WL_CHECK(waitpid(child, &ws, 0) == child, "waitpid: %s", strerror(errno));
	WL_CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "child status %x (exit 0: each handler once, value 64)", ws);
	wl_detail("child_state=%c shdpnd=%llx sigpnd=%llx sigblk=%llx", st, shd, pnd, blk);
}

/* ---------- strict ---------- */
static int pa[2], pb[2];
static volatile int entered;
static pid_t thread_tid;
static void *strict_thread(void *x) {
	(void)x;
	thread_tid = wl_gettid();
	prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT);
	entered = 1;
	char c;
	syscall(SYS_read, pa[0], &c, 1);
	c++;
	syscall(SYS_write, pb[1], &c, 1);
	syscall(SYS_exit, 0);
	return NULL;
}
static void strict_setup(void) {
	NEEDC(pipe(pa) == 0 && pipe(pb) == 0);
	pthread_t t;
	NEEDC(pthread_create(&t, NULL, strict_thread, NULL) == 0);
	while (!entered) wl_sleep_ms(1);
	/* in its read */
	for (int i = 0; i < 1000 && task_state(getpid(), thread_tid) != 'S'; i++) wl_sleep_ms(1);
}
static void strict_check(void) {
	char m[16], tm[16];
	status_line(getpid(), wl_tid, "Seccomp", m, sizeof m);
	status_line(getpid(), thread_tid, "Seccomp", tm, sizeof tm);
	WL_CHECK(strcmp(m, "0") == 0, "main thread seccomp mode %s, want 0", m);
	WL_CHECK(strcmp(tm, "1") == 0, "thread seccomp mode %s, want 1 (strict)", tm);
	NEEDC(write(pa[1], "A", 1) == 1);
	char c = 0;
	WL_CHECK(read(pb[0], &c, 1) == 1 && c == 'B', "echo '%c', want 'B'", c);
	wl_detail("thread_seccomp=%s", tm);
}

/* ---------- seckill ---------- */
static int kill_nr;
static volatile int up, asked, answered, answer;
static void install(int nr, unsigned err) {
	struct sock_filter f[] = {
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
		fprintf(stderr, "seccomp: %m\n");
		_exit(2);
	}
}
static void *kill_thread(void *x) {
	(void)x;
	thread_tid = wl_gettid();
	install(kill_nr, 77);
	up = 1;
	for (;;) {
		struct timespec t = {0, 5000000};
		syscall(SYS_nanosleep, &t, NULL);
		if (up == 2) {
			install(kill_nr, 78);
			up = 1;
		}
		if (asked && !answered) {
			long r = syscall(SYS_getppid);
			answer = r < 0 ? errno : 0;
			answered = 1;
		}
	}
	return NULL;
}
static void seckill_setup(void) {
	pthread_t t;
	NEEDC(pthread_create(&t, NULL, kill_thread, NULL) == 0);
	while (!up) wl_sleep_ms(1);
}
static void seckill_check(void) {
	char m[16], tm[16];
	status_line(getpid(), wl_tid, "Seccomp", m, sizeof m);
	status_line(getpid(), thread_tid, "Seccomp", tm, sizeof tm);
	WL_CHECK(strcmp(m, "0") == 0, "main thread seccomp mode %s, want 0", m);
	WL_CHECK(strcmp(tm, "2") == 0, "thread seccomp mode %s, want 2 (filter)", tm);
	asked = 1;
	for (int i = 0; i < 2000 && !answered; i++) wl_sleep_ms(1);
	WL_CHECK(answered && answer == 77, "getppid in the thread: errno %d, want 77 (its filter)", answer);
	wl_detail("thread_seccomp=%s kill_nr=%d", tm, kill_nr);
}

/* ---------- vfork ---------- */
static int run_vfork(void) {
	volatile int shared = 5;
	pid_t me = getpid();
	pid_t c = vfork();
	if (c == 0) {
		/* in the vfork child (the parent's memory): system calls only, then _exit */
		for (int i = 0; i < 5000 && task_state(me, me) != 'D'; i++) {
			struct timespec t = {0, 1000000};
			nanosleep(&t, NULL);
		}
		wl_ready();
		while (!wl_go()) {
			struct timespec t = {0, 10000000};
			nanosleep(&t, NULL);
		}
		if (!wl_corrupting("shared", "shared")) shared = 7;
		_exit(9);
	}
	int st = 0;
	WL_CHECK(c > 0, "vfork: %s", strerror(errno));
	WL_CHECK(waitpid(c, &st, 0) == c, "waitpid: %s", strerror(errno));
	WL_CHECK(shared == 7, "shared variable %d, want 7 (set by the vfork child)", shared);
	WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 9, "vfork child status %x, want exit 9", st);
	wl_check_ids();
	wl_finish();
}

/* ---------- leaderexit ---------- */
static _Atomic long cnt2;
static volatile int stop2;
static void *count_thread(void *a) {
	(void)a;
	while (!stop2) {
		cnt2++;
		wl_sleep_ms(1);
	}
	return NULL;
}
static void *leader_gone_thread(void *a) {
	(void)a;
	pthread_t t;
	NEEDC(pthread_create(&t, NULL, count_thread, NULL) == 0);
	for (int i = 0; i < 5000 && task_state(wl_pid, wl_pid) != 'Z'; i++) wl_sleep_ms(1);
	NEEDC(task_state(wl_pid, wl_pid) == 'Z');
	wl_ready();
	if (wl_corrupt) stop2 = 1;
	while (!wl_go()) wl_sleep_ms(10);
	WL_CHECK(getpid() == wl_pid, "pid %d, want %d", (int)getpid(), (int)wl_pid);
	char s = task_state(wl_pid, wl_pid);
	WL_CHECK(s == 'Z', "leader state %c, want Z (exited)", s);
	long c = cnt2;
	wl_sleep_ms(50);
	WL_CHECK(cnt2 > c, "the second thread stopped counting");
	wl_detail("pid=%d leader=%c", (int)getpid(), s);
	wl_finish();
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	mode = wl_arg(argc, argv, 0);
	if (!mode) {
		fprintf(stderr, "usage: freezefix DIR MODE [ARG]\n");
		_exit(2);
	}
	signal(SIGPIPE, SIG_IGN);
	if (is("vfork")) return run_vfork();
	if (is("leaderexit")) {
		pthread_t t;
		NEEDC(pthread_create(&t, NULL, leader_gone_thread, NULL) == 0);
		pthread_exit(NULL);
	}
	void (*check)(void);
	if (is("stoppend")) {
		stoppend_setup();
		check = stoppend_check;
	} else if (is("strict")) {
		strict_setup();
		check = strict_check;
	} else if (is("seckill")) {
		const char *a = wl_arg(argc, argv, 1);
		kill_nr = a ? atoi(a) : SYS_sigaltstack;
		seckill_setup();
		check = seckill_check;
	} else {
		wl_failf("unknown mode '%s'", mode);
		wl_finish();
	}
	wl_ready();
	if (wl_corrupt) {
		if (is("stoppend")) kill(child, SIGCONT);
		if (is("strict")) {
			NEEDC(write(pa[1], "A", 1) == 1);
			wl_sleep_ms(20);
		}
		if (is("seckill")) {
			up = 2;
			while (up == 2) wl_sleep_ms(1);
		}
	}
	while (!wl_go()) wl_sleep_ms(10);
	wl_check_ids();
	check();
	wl_finish();
}
