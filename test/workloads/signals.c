/*
 * signals DIR [--selftest-corrupt[=flags|pending|altstack|timer|itimer]]
 *
 * Single-threaded signal state. Setup:
 *   - SIGUSR1: SA_SIGINFO|SA_RESTART|SA_ONSTACK handler, sa_mask {SIGWINCH, SIGTERM};
 *   - an alternate signal stack (64 KiB, mmap'ed);
 *   - SIGUSR2 blocked, one pending, sent with sigqueue(value 0x5eed) (process-wide pending);
 *   - SIGRTMIN+3 blocked, two queued to the thread with rt_tgsigqueueinfo (values 11, 22);
 *   - ITIMER_REAL every 10 ms, SIGALRM handler counting ticks;
 *   - POSIX timer (CLOCK_MONOTONIC, SIGEV_SIGNAL SIGRTMIN, sival 0xabc) every 15 ms.
 * Wake-up: DIR/go, polled every 10 ms. At go it checks: pid/tid; the sigaltstack; every
 * handler's address, flags and mask (against read-backs taken at setup); the blocked mask;
 * that SIGUSR2 and SIGRTMIN+3 are still pending; the itimer and POSIX timer settings and
 * that both ticked between ready and go. Then it raises SIGUSR1 (handler must run on the
 * alternate stack with its sa_mask applied), unblocks SIGUSR2 / SIGRTMIN+3 (one SIGUSR2
 * with value 0x5eed, then 11 and 22 in order, all SI_QUEUE from our pid) and checks both
 * timers keep ticking for 60 ms more.
 */
#include "wl.h"
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/time.h>

#define ALT_SIZE (64 << 10)
#define RT_Q (SIGRTMIN + 3)

static _Atomic int usr1_count, usr1_code, usr1_pid, usr1_onstack, usr1_masked;
static _Atomic int usr2_count, usr2_code, usr2_value, usr2_pid;
static _Atomic int rtq_count, rtq_values[8], rtq_bad;
static _Atomic long alrm_ticks, tmr_ticks, tmr_bad;
static char *alt_base;

static void on_usr1(int sig, siginfo_t *si, void *uc) {
	(void)sig;
	(void)uc;
	char here;
	usr1_onstack = (&here >= alt_base && &here < alt_base + ALT_SIZE);
	sigset_t cur;
	sigprocmask(SIG_BLOCK, NULL, &cur);
	usr1_masked = sigismember(&cur, SIGWINCH) && sigismember(&cur, SIGTERM) && sigismember(&cur, SIGUSR1);
	usr1_code = si->si_code;
	usr1_pid = si->si_pid;
	usr1_count++;
}

static void on_usr2(int sig, siginfo_t *si, void *uc) {
	(void)sig;
	(void)uc;
	usr2_code = si->si_code;
	usr2_value = si->si_value.sival_int;
	usr2_pid = si->si_pid;
	usr2_count++;
}

static void on_rtq(int sig, siginfo_t *si, void *uc) {
	(void)sig;
	(void)uc;
	int n = rtq_count;
	if (n < 8) rtq_values[n] = si->si_value.sival_int;
	if (si->si_code != SI_QUEUE || si->si_pid != wl_pid) rtq_bad++;
	rtq_count = n + 1;
}

static void on_alrm(int sig) {
	(void)sig;
	alrm_ticks++;
}

static void on_tmr(int sig, siginfo_t *si, void *uc) {
	(void)sig;
	(void)uc;
	if (si->si_code != SI_TIMER || si->si_value.sival_int != 0xabc) tmr_bad++;
	tmr_ticks++;
}

struct handler {
	int sig;
	const char *name;
	struct sigaction set, readback;
};

static int same_mask(const sigset_t *a, const sigset_t *b, int *which) {
	for (int s = 1; s < 65; s++) {
		if (s == SIGKILL || s == SIGSTOP) continue;
		if (sigismember(a, s) != sigismember(b, s)) {
			*which = s;
			return 0;
		}
	}
	return 1;
}

int main(int argc, char **argv) {
	wl_init(argc, argv);

	alt_base = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (alt_base == MAP_FAILED) return 2;
	stack_t ss = {.ss_sp = alt_base, .ss_size = ALT_SIZE, .ss_flags = 0};
	if (sigaltstack(&ss, NULL) != 0) return 2;

	struct handler H[5] = {
		{.sig = SIGUSR1, .name = "SIGUSR1"}, {.sig = SIGUSR2, .name = "SIGUSR2"},
		{.sig = 0, .name = "SIGRTMIN+3"},    {.sig = SIGALRM, .name = "SIGALRM"},
		{.sig = 0, .name = "SIGRTMIN"},
	};
	H[2].sig = RT_Q;
	H[4].sig = SIGRTMIN;
	H[0].set.sa_sigaction = on_usr1;
	H[0].set.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
	sigemptyset(&H[0].set.sa_mask);
	sigaddset(&H[0].set.sa_mask, SIGWINCH);
	sigaddset(&H[0].set.sa_mask, SIGTERM);
	H[1].set.sa_sigaction = on_usr2;
	H[1].set.sa_flags = SA_SIGINFO;
	sigemptyset(&H[1].set.sa_mask);
	H[2].set.sa_sigaction = on_rtq;
	H[2].set.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&H[2].set.sa_mask);
	sigaddset(&H[2].set.sa_mask, SIGALRM);
	H[3].set.sa_handler = on_alrm;
	H[3].set.sa_flags = SA_RESTART;
	sigemptyset(&H[3].set.sa_mask);
	H[4].set.sa_sigaction = on_tmr;
	H[4].set.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&H[4].set.sa_mask);
	for (int i = 0; i < 5; i++) {
		if (sigaction(H[i].sig, &H[i].set, NULL) != 0) return 2;
		sigaction(H[i].sig, NULL, &H[i].readback);
	}

	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR2);
	sigaddset(&block, RT_Q);
	sigprocmask(SIG_BLOCK, &block, NULL);
	sigset_t blocked_setup;
	sigprocmask(SIG_BLOCK, NULL, &blocked_setup);

	union sigval v = {.sival_int = 0x5eed};
	if (sigqueue(wl_pid, SIGUSR2, v) != 0) return 2;
	for (int i = 0; i < 2; i++) {
		siginfo_t si;
		memset(&si, 0, sizeof si);
		si.si_signo = RT_Q;
		si.si_code = SI_QUEUE;
		si.si_pid = wl_pid;
		si.si_uid = getuid();
		si.si_value.sival_int = 11 * (i + 1);
		if (syscall(SYS_rt_tgsigqueueinfo, wl_pid, wl_tid, RT_Q, &si) != 0) return 2;
	}

	struct itimerval it = {{0, 10000}, {0, 10000}};
	if (setitimer(ITIMER_REAL, &it, NULL) != 0) return 2;
	struct sigevent sev;
	memset(&sev, 0, sizeof sev);
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = SIGRTMIN;
	sev.sigev_value.sival_int = 0xabc;
	timer_t tid;
	if (timer_create(CLOCK_MONOTONIC, &sev, &tid) != 0) return 2;
	struct itimerspec its = {{0, 15000000}, {0, 15000000}};
	if (timer_settime(tid, 0, &its, NULL) != 0) return 2;

	while (alrm_ticks < 2 || tmr_ticks < 2) wl_sleep_ms(5);
	const long alrm_ready = alrm_ticks, tmr_ready = tmr_ticks;
	wl_ready();

	if (wl_corrupting("flags", "flags")) {
		struct sigaction bad = H[0].set;
		bad.sa_flags &= ~SA_RESTART;
		sigaction(SIGUSR1, &bad, NULL);
	}
	if (wl_corrupting("pending", "flags")) sigprocmask(SIG_UNBLOCK, &block, NULL), sigprocmask(SIG_BLOCK, &block, NULL);
	if (wl_corrupting("altstack", "flags")) {
		stack_t off = {.ss_flags = SS_DISABLE};
		sigaltstack(&off, NULL);
	}
	if (wl_corrupting("timer", "flags")) {
		struct itimerspec zero = {{0, 0}, {0, 0}};
		timer_settime(tid, 0, &zero, NULL);
	}
	if (wl_corrupting("itimer", "flags")) {
		struct itimerval zero = {{0, 0}, {0, 0}};
		setitimer(ITIMER_REAL, &zero, NULL);
	}

	while (!wl_go()) wl_sleep_ms(10);
	/* however soon go comes, the timers get up to a second to tick once more than at ready */
	for (int i = 0; i < 200 && (alrm_ticks <= alrm_ready || tmr_ticks <= tmr_ready); i++) wl_sleep_ms(5);
	const long alrm_go = alrm_ticks, tmr_go = tmr_ticks;

	wl_check_ids();
	stack_t cur;
	sigaltstack(NULL, &cur);
	WL_CHECK(cur.ss_sp == alt_base && cur.ss_size == ALT_SIZE && cur.ss_flags == 0,
	         "sigaltstack is sp=%p size=%zu flags=%d, expected sp=%p size=%d flags=0", cur.ss_sp, cur.ss_size,
	         cur.ss_flags, (void *)alt_base, ALT_SIZE);

	for (int i = 0; i < 5; i++) {
		struct sigaction now;
		sigaction(H[i].sig, NULL, &now);
		int s = 0;
		WL_CHECK((void *)now.sa_sigaction == (void *)H[i].readback.sa_sigaction, "%s handler %p, expected %p",
		         H[i].name, (void *)now.sa_sigaction, (void *)H[i].readback.sa_sigaction);
		WL_CHECK(now.sa_flags == H[i].readback.sa_flags, "%s sa_flags %#x, expected %#x", H[i].name,
		         (unsigned)now.sa_flags, (unsigned)H[i].readback.sa_flags);
		WL_CHECK(same_mask(&now.sa_mask, &H[i].readback.sa_mask, &s), "%s sa_mask differs in signal %d", H[i].name,
		         s);
		WL_CHECK((void *)now.sa_restorer == (void *)H[i].readback.sa_restorer, "%s sa_restorer %p, expected %p",
		         H[i].name, (void *)now.sa_restorer, (void *)H[i].readback.sa_restorer);
		wl_detail("%s flags=%#x", H[i].name, (unsigned)now.sa_flags);
	}

	sigset_t blocked_now, pending;
	sigprocmask(SIG_BLOCK, NULL, &blocked_now);
	int s = 0;
	WL_CHECK(same_mask(&blocked_now, &blocked_setup, &s), "blocked mask differs in signal %d", s);
	sigpending(&pending);
	WL_CHECK(sigismember(&pending, SIGUSR2), "SIGUSR2 is not pending any more");
	WL_CHECK(sigismember(&pending, RT_Q), "SIGRTMIN+3 is not pending any more");
	WL_CHECK(usr2_count == 0 && rtq_count == 0, "blocked signals delivered early: usr2=%d rtq=%d", usr2_count,
	         rtq_count);

	struct itimerval itv;
	getitimer(ITIMER_REAL, &itv);
	WL_CHECK(itv.it_interval.tv_sec == 0 && itv.it_interval.tv_usec == 10000, "itimer interval %ld.%06ld, expected 0.010",
	         (long)itv.it_interval.tv_sec, (long)itv.it_interval.tv_usec);
	struct itimerspec ts;
	int tr = timer_gettime(tid, &ts);
	WL_CHECK(tr == 0, "timer_gettime(%p) failed: %s", (void *)tid, strerror(errno));
	if (tr == 0)
		WL_CHECK(ts.it_interval.tv_sec == 0 && ts.it_interval.tv_nsec == 15000000,
		         "POSIX timer interval %ld.%09ld, expected 0.015", (long)ts.it_interval.tv_sec,
		         (long)ts.it_interval.tv_nsec);
	WL_CHECK(alrm_go > alrm_ready, "itimer did not tick between ready and go (%ld)", alrm_go);
	WL_CHECK(tmr_go > tmr_ready, "POSIX timer did not tick between ready and go (%ld)", tmr_go);
	wl_detail("itimer_ticks ready=%ld go=%ld", alrm_ready, alrm_go);
	wl_detail("timer_ticks ready=%ld go=%ld", tmr_ready, tmr_go);

	/* Delivery after go. */
	kill(wl_pid, SIGUSR1);
	WL_CHECK(usr1_count == 1, "SIGUSR1 handler ran %d times, expected 1", usr1_count);
	WL_CHECK(usr1_code == SI_USER && usr1_pid == wl_pid, "SIGUSR1 si_code=%d si_pid=%d, expected SI_USER from %d",
	         usr1_code, usr1_pid, (int)wl_pid);
	WL_CHECK(usr1_onstack, "SIGUSR1 handler did not run on the alternate stack");
	WL_CHECK(usr1_masked, "SIGUSR1 handler ran without its sa_mask (SIGWINCH, SIGTERM) blocked");

	sigprocmask(SIG_UNBLOCK, &block, NULL);
	WL_CHECK(usr2_count == 1, "pending SIGUSR2 delivered %d times, expected 1", usr2_count);
	WL_CHECK(usr2_code == SI_QUEUE && usr2_value == 0x5eed && usr2_pid == wl_pid,
	         "SIGUSR2 si_code=%d value=%#x pid=%d, expected SI_QUEUE 0x5eed %d", usr2_code, usr2_value, usr2_pid,
	         (int)wl_pid);
	WL_CHECK(rtq_count == 2, "SIGRTMIN+3 delivered %d times, expected 2", rtq_count);
	WL_CHECK(rtq_values[0] == 11 && rtq_values[1] == 22, "SIGRTMIN+3 values %d,%d expected 11,22", rtq_values[0],
	         rtq_values[1]);
	WL_CHECK(rtq_bad == 0, "SIGRTMIN+3 with wrong si_code/si_pid: %d", rtq_bad);

	wl_sleep_ms(60);
	WL_CHECK(alrm_ticks > alrm_go, "itimer stopped ticking after go (%ld)", (long)alrm_ticks);
	WL_CHECK(tmr_ticks > tmr_go, "POSIX timer stopped ticking after go (%ld)", (long)tmr_ticks);
	WL_CHECK(tmr_bad == 0, "POSIX timer signals with wrong si_code/value: %ld", (long)tmr_bad);
	wl_detail("itimer_ticks_final=%ld timer_ticks_final=%ld", (long)alrm_ticks, (long)tmr_ticks);

	struct itimerval off = {{0, 0}, {0, 0}};
	setitimer(ITIMER_REAL, &off, NULL);
	timer_delete(tid);
	wl_finish();
}
