/*
 * taskfix: task and thread states a dump used to lose or crash on; at go the workload checks each.
 *
 *   taskfix DIR MODE
 *   sched      scheduling policies: the main thread SCHED_BATCH (nice 3), a thread SCHED_IDLE, a
 *              thread SCHED_RR priority 7 with SCHED_RESET_ON_FORK, a thread SCHED_FIFO priority 3:
 *              each thread's policy, flag, priority and nice as before
 *   dumpable   PR_SET_DUMPABLE 0: still 0
 *   cputimer   POSIX timers on CPU clocks of a single-threaded process: CLOCK_PROCESS_CPUTIME_ID
 *              (clock id -6), CLOCK_THREAD_CPUTIME_ID (-2), the process's own clock by its pid
 *              (clock_getcpuclockid), 100 s interval and value: each id armed, its interval 100 s,
 *              its value at most 100 s and counting CPU time
 *   altstack   a sigaltstack with SS_AUTODISARM: the same stack, size and flags
 *   refused (the dump must fail, the state kept):
 *   deadline   the main thread under SCHED_DEADLINE (runtime 1 ms, period 100 ms): still so
 *   suiddump   dumpable 2 (fs.suid_dumpable set to 2 for an euid change, put back): still 2
 *   threadclock  two threads, a POSIX timer on the main thread's CLOCK_THREAD_CPUTIME_ID: armed
 *   sigpend    6 real-time signals queued (blocked), then RLIMIT_SIGPENDING lowered to 2/3: the limit,
 *              the 6 signals in order
 * --selftest-corrupt: changes what the mode checks, so the checks must fail.
 */
#define WL_MODES
#include "wl.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#ifndef SCHED_RESET_ON_FORK
#define SCHED_RESET_ON_FORK 0x40000000
#endif
#ifndef SS_AUTODISARM
#define SS_AUTODISARM (1U << 31)
#endif
#define SCHED_DEADLINE_ 6

struct sched_attr_ {
	uint32_t size, sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime, sched_deadline, sched_period;
};

/* sched: the threads' wanted policy, priority, nice; each reports what it finds at go */
struct th {
	int policy, prio, nice;
	pthread_t t;
	pid_t tid;
	_Atomic int state; /* 0 starting, 1 set up, 2 check, 3 checked */
	char got[160];
	int ok;
};
static struct th ths[3] = {
	{SCHED_IDLE, 0, 0},
	{SCHED_RR | SCHED_RESET_ON_FORK, 7, -2},
	{SCHED_FIFO, 3, 5},
};
static int nthreads;

static int check_sched(const char *who, int policy, int prio, int nice, char *got, size_t n) {
	int p = sched_getscheduler(0);
	struct sched_param sp = {0};
	sched_getparam(0, &sp);
	errno = 0;
	int ni = getpriority(PRIO_PROCESS, (id_t)wl_gettid());
	snprintf(got, n, "%s policy %#x prio %d nice %d (want %#x %d %d)", who, p, sp.sched_priority, ni, policy, prio,
	         nice);
	return p == policy && sp.sched_priority == prio && ni == nice;
}

static void *sched_thread(void *a) {
	struct th *t = a;
	t->tid = wl_gettid();
	if (setpriority(PRIO_PROCESS, (id_t)t->tid, t->nice)) t->tid = -errno;
	struct sched_param sp = {t->prio};
	if (sched_setscheduler(0, t->policy, &sp)) t->tid = -errno;
	t->state = 1;
	while (t->state < 2) wl_sleep_ms(5);
	t->ok = check_sched("thread", t->policy, t->prio, t->nice, t->got, sizeof t->got);
	t->state = 3;
	return NULL;
}

static timer_t timers[3];
static int ntimers;
static clockid_t clocks[3];
static void *alt;
static int rtsig;
static _Atomic int spin_stop;
static pthread_t spinner;

static void *idle_thread(void *a) {
	(void)a;
	while (!spin_stop) wl_sleep_ms(5);
	return NULL;
}

static void arm(clockid_t c) {
	struct sigevent ev = {0};
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGRTMIN + 5;
	NEED(timer_create(c, &ev, &timers[ntimers]) == 0);
	struct itimerspec its = {{100, 0}, {100, 0}};
	NEED(timer_settime(timers[ntimers], 0, &its, NULL) == 0);
	clocks[ntimers++] = c;
}

static void setup(void) {
	if (is("sched")) {
		NEED(setpriority(PRIO_PROCESS, 0, 3) == 0);
		struct sched_param sp = {0};
		NEED(sched_setscheduler(0, SCHED_BATCH, &sp) == 0);
		for (nthreads = 0; nthreads < 3; nthreads++) {
			NEED(pthread_create(&ths[nthreads].t, NULL, sched_thread, &ths[nthreads]) == 0);
			while (ths[nthreads].state < 1) wl_sleep_ms(2);
			NEED(ths[nthreads].tid > 0);
		}
	} else if (is("dumpable")) {
		NEED(prctl(PR_SET_DUMPABLE, 0) == 0);
	} else if (is("cputimer")) {
		signal(SIGRTMIN + 5, SIG_IGN);
		clockid_t own;
		NEED(clock_getcpuclockid(getpid(), &own) == 0);
		arm(CLOCK_PROCESS_CPUTIME_ID);
		arm(CLOCK_THREAD_CPUTIME_ID);
		arm(own);
	} else if (is("altstack")) {
		alt = mmap(0, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		NEED(alt != MAP_FAILED);
		stack_t ss = {.ss_sp = alt, .ss_size = 65536, .ss_flags = (int)SS_AUTODISARM};
		NEED(sigaltstack(&ss, NULL) == 0);
	} else if (is("deadline")) {
		struct sched_attr_ a = {sizeof a, SCHED_DEADLINE_, 0, 0, 0, 1000000, 100000000, 100000000};
		NEED(syscall(SYS_sched_setattr, 0, &a, 0) == 0);
	} else if (is("suiddump")) {
		char was[16] = {0};
		int fd = open("/proc/sys/fs/suid_dumpable", O_RDWR);
		NEED(fd >= 0);
		NEED(read(fd, was, sizeof was - 1) > 0);
		NEED(pwrite(fd, "2", 1, 0) == 1);
		/* an euid change sets the mm's dumpable to suid_dumpable; euid 0 again for the write back */
		int r1 = seteuid(65534), r2 = seteuid(0);
		int r3 = pwrite(fd, was, strlen(was), 0) == (ssize_t)strlen(was);
		close(fd);
		NEED(r1 == 0 && r2 == 0 && r3);
		NEED(prctl(PR_GET_DUMPABLE) == 2);
	} else if (is("threadclock")) {
		signal(SIGRTMIN + 5, SIG_IGN);
		NEED(pthread_create(&spinner, NULL, idle_thread, NULL) == 0);
		arm(CLOCK_THREAD_CPUTIME_ID);
	} else if (is("sigpend")) {
		rtsig = SIGRTMIN + 1;
		sigset_t s;
		sigemptyset(&s);
		sigaddset(&s, rtsig);
		NEED(sigprocmask(SIG_BLOCK, &s, NULL) == 0);
		for (int i = 0; i < 6; i++) {
			union sigval v = {.sival_int = i};
			NEED(sigqueue(getpid(), rtsig, v) == 0);
		}
		struct rlimit r = {2, 3};
		NEED(setrlimit(RLIMIT_SIGPENDING, &r) == 0);
	} else {
		fprintf(stderr, "taskfix: unknown mode %s\n", mode);
		exit(2);
	}
}

static void corrupt(void) {
	if (is("sched")) {
		struct sched_param sp = {0};
		sched_setscheduler(0, SCHED_OTHER, &sp);
	} else if (is("dumpable") || is("suiddump")) {
		prctl(PR_SET_DUMPABLE, 1);
	} else if (is("cputimer") || is("threadclock")) {
		timer_delete(timers[0]);
	} else if (is("altstack")) {
		stack_t ss = {.ss_flags = SS_DISABLE};
		sigaltstack(&ss, NULL);
	} else if (is("deadline")) {
		struct sched_param sp = {0};
		sched_setscheduler(0, SCHED_OTHER, &sp);
	} else if (is("sigpend")) {
		struct rlimit r = {3, 3};
		setrlimit(RLIMIT_SIGPENDING, &r);
	}
}

static void check(void) {
	if (is("sched")) {
		char got[160];
		WL_CHECK(check_sched("main", SCHED_BATCH, 0, 3, got, sizeof got), "%s", got);
		wl_detail("%s", got);
		for (int i = 0; i < nthreads; i++) {
			ths[i].state = 2;
			while (ths[i].state < 3) wl_sleep_ms(2);
			WL_CHECK(ths[i].ok, "%s", ths[i].got);
			wl_detail("%s", ths[i].got);
		}
	} else if (is("dumpable")) {
		int d = prctl(PR_GET_DUMPABLE);
		WL_CHECK(d == 0, "dumpable %d, want 0", d);
	} else if (is("suiddump")) {
		int d = prctl(PR_GET_DUMPABLE);
		WL_CHECK(d == 2, "dumpable %d, want 2", d);
	} else if (is("cputimer") || is("threadclock")) {
		for (int i = 0; i < ntimers; i++) {
			struct itimerspec g;
			int r = timer_gettime(timers[i], &g);
			WL_CHECK(r == 0, "timer %d (clock %d): timer_gettime: %s", i, (int)clocks[i], strerror(errno));
			if (r) continue;
			WL_CHECK(g.it_interval.tv_sec == 100 && g.it_interval.tv_nsec == 0, "timer %d (clock %d): interval %ld.%09ld",
			         i, (int)clocks[i], (long)g.it_interval.tv_sec, g.it_interval.tv_nsec);
			/* CPU time: barely used, so nearly 100 s left, never more */
			WL_CHECK(g.it_value.tv_sec >= 90 && (g.it_value.tv_sec < 100 || (g.it_value.tv_sec == 100 && !g.it_value.tv_nsec)),
			         "timer %d (clock %d): value %ld.%09ld", i, (int)clocks[i], (long)g.it_value.tv_sec, g.it_value.tv_nsec);
			wl_detail("timer%d=clock %d value %ld.%09ld", i, (int)clocks[i], (long)g.it_value.tv_sec, g.it_value.tv_nsec);
		}
		/* and the process clock counts: burn 20 ms of CPU, the first timer's value drops */
		struct itimerspec a, b;
		if (is("cputimer") && timer_gettime(timers[0], &a) == 0) {
			double t0 = wl_now(CLOCK_PROCESS_CPUTIME_ID);
			while (wl_now(CLOCK_PROCESS_CPUTIME_ID) - t0 < 0.02) {
			}
			timer_gettime(timers[0], &b);
			double da = a.it_value.tv_sec + a.it_value.tv_nsec / 1e9, db = b.it_value.tv_sec + b.it_value.tv_nsec / 1e9;
			WL_CHECK(da - db >= 0.015, "process CPU timer moved %.3f s over 20 ms of CPU", da - db);
		}
		if (is("threadclock")) {
			spin_stop = 1;
			pthread_join(spinner, NULL);
		}
	} else if (is("altstack")) {
		stack_t cur;
		sigaltstack(NULL, &cur);
		WL_CHECK(cur.ss_sp == alt && cur.ss_size == 65536 && (unsigned)cur.ss_flags == SS_AUTODISARM,
		         "altstack sp %p size %zu flags %#x", cur.ss_sp, cur.ss_size, (unsigned)cur.ss_flags);
	} else if (is("deadline")) {
		int p = sched_getscheduler(0);
		WL_CHECK(p == SCHED_DEADLINE_, "policy %d, want SCHED_DEADLINE", p);
	} else if (is("sigpend")) {
		struct rlimit r;
		getrlimit(RLIMIT_SIGPENDING, &r);
		WL_CHECK(r.rlim_cur == 2 && r.rlim_max == 3, "RLIMIT_SIGPENDING %lu/%lu", (unsigned long)r.rlim_cur,
		         (unsigned long)r.rlim_max);
		sigset_t s;
		sigemptyset(&s);
		sigaddset(&s, rtsig);
		siginfo_t si;
		struct timespec z = {0, 0};
		int n = 0, inorder = 1;
		while (sigtimedwait(&s, &si, &z) > 0) {
			if (si.si_value.sival_int != n) inorder = 0;
			n++;
		}
		WL_CHECK(n == 6 && inorder, "%d signals queued (in order: %d), want 6", n, inorder);
	}
}

int main(int argc, char **argv) { wl_mode_main(argc, argv, "taskfix", setup, corrupt, check, 1); }
