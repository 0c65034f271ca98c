/*
 * prctlfix MODE: a setting of the process or of a thread that no field of CRIU's images holds, so
 * `dump` must refuse it (unkept-state) and leave the process as it was. MODE:
 *   tsc     the main thread makes rdtsc fault (PR_SET_TSC PR_TSC_SIGSEGV)
 *   mce     a second thread asks for early machine-check kills (PR_MCE_KILL, PR_MCE_KILL_EARLY)
 *   mdwe    memory-deny-write-execute (PR_SET_MDWE PR_MDWE_REFUSE_EXEC_GAIN, Linux 6.3)
 *   slack   a second thread's timer slack is 1 ms (PR_SET_TIMERSLACK)
 *   ioprio  the main thread's I/O priority is best-effort 7 (ioprio_set)
 *   sud     syscall user dispatch on, with the selector allowing every syscall (Linux 5.11)
 * At go each checks its setting is still there (and the other threads' counters go on).
 * --selftest-corrupt: the setting is undone after ready.
 */
#include "wl.h"
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <signal.h>

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_GET_MDWE 66
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif
#ifndef PR_SET_SYSCALL_USER_DISPATCH
#define PR_SET_SYSCALL_USER_DISPATCH 59
#define PR_SYS_DISPATCH_OFF 0
#define PR_SYS_DISPATCH_ON 1
#endif
#define SYSCALL_DISPATCH_FILTER_ALLOW 0
#define SYSCALL_DISPATCH_FILTER_BLOCK 1
#define IOPRIO_WHO_PROCESS 1
#define IOPRIO_BE7 ((2 << 13) | 7)

static volatile unsigned long ticks;
static volatile int mode_set, undo, stop;
static const char *mode;
static volatile char selector = SYSCALL_DISPATCH_FILTER_ALLOW;
static volatile int dispatched;
static int thread_ok = 1;

static int thread_setting(void) {
	if (!strcmp(mode, "mce")) return prctl(PR_MCE_KILL_GET, 0, 0, 0, 0) == PR_MCE_KILL_EARLY;
	if (!strcmp(mode, "slack")) return prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) == 1000000;
	return 1;
}

static void *worker(void *a) {
	(void)a;
	if (!strcmp(mode, "mce") && prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, 0, 0)) { perror("PR_MCE_KILL"); exit(2); }
	if (!strcmp(mode, "slack") && prctl(PR_SET_TIMERSLACK, 1000000, 0, 0, 0)) { perror("PR_SET_TIMERSLACK"); exit(2); }
	mode_set = 1;
	while (!stop) {
		if (undo == 1) {
			if (!strcmp(mode, "mce")) prctl(PR_MCE_KILL, PR_MCE_KILL_CLEAR, 0, 0, 0);
			if (!strcmp(mode, "slack")) prctl(PR_SET_TIMERSLACK, 0, 0, 0, 0); /* back to the default */
			undo = 2;
		}
		ticks++;
		wl_sleep_ms(1);
	}
	thread_ok = thread_setting();
	return NULL;
}

static int main_setting(void) {
	if (!strcmp(mode, "tsc")) {
		int v = 0;
		return prctl(PR_GET_TSC, &v, 0, 0, 0) == 0 && v == PR_TSC_SIGSEGV;
	}
	if (!strcmp(mode, "mdwe")) return prctl(PR_GET_MDWE, 0, 0, 0, 0) == PR_MDWE_REFUSE_EXEC_GAIN;
	if (!strcmp(mode, "ioprio")) return syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) == IOPRIO_BE7;
	if (!strcmp(mode, "sud")) {
		/* on: with the selector at BLOCK a syscall made outside the allowed range is sent to
		 * SIGSYS (whose handler puts the selector back to ALLOW, so its own return works) */
		dispatched = 0;
		selector = SYSCALL_DISPATCH_FILTER_BLOCK;
		syscall(SYS_getppid);
		selector = SYSCALL_DISPATCH_FILTER_ALLOW;
		return dispatched;
	}
	return 1;
}

static void on_sigsys(int sig) {
	(void)sig;
	selector = SYSCALL_DISPATCH_FILTER_ALLOW;
	dispatched = 1;
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	mode = wl_arg(argc, argv, 0);
	if (!mode) { fprintf(stderr, "usage: prctlfix DIR tsc|mce|mdwe|slack|ioprio|sud\n"); return 2; }
	pthread_t th;
	if (pthread_create(&th, NULL, worker, NULL)) return 2;
	while (!mode_set) wl_sleep_ms(1);
	if (!strcmp(mode, "tsc") && prctl(PR_SET_TSC, PR_TSC_SIGSEGV, 0, 0, 0)) { perror("PR_SET_TSC"); return 2; }
	if (!strcmp(mode, "mdwe") && prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0)) { perror("PR_SET_MDWE"); return 2; }
	if (!strcmp(mode, "ioprio") && syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, IOPRIO_BE7)) { perror("ioprio_set"); return 2; }
	/* dispatch on for everything but this program's own code: the libc and the vDSO are outside
	 * [main's page, +1 page), so with the selector at ALLOW every syscall runs as usual */
	if (!strcmp(mode, "sud")) signal(SIGSYS, on_sigsys);
	if (!strcmp(mode, "sud") &&
	    prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, (unsigned long)main & ~4095UL, 4096, &selector)) {
		perror("PR_SET_SYSCALL_USER_DISPATCH");
		return 2;
	}
	WL_CHECK(main_setting(), "the setting did not take (mode %s)", mode);
	wl_ready();
	if (wl_corrupting("undo", "undo")) {
		if (!strcmp(mode, "tsc")) prctl(PR_SET_TSC, PR_TSC_ENABLE, 0, 0, 0);
		if (!strcmp(mode, "ioprio")) syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, 0);
		if (!strcmp(mode, "sud")) prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0);
		undo = 1;
		while (undo == 1) wl_sleep_ms(1);
	}
	while (!wl_go()) wl_sleep_ms(10);
	unsigned long t0 = ticks;
	wl_sleep_ms(30);
	WL_CHECK(ticks > t0, "the thread's counter stopped");
	WL_CHECK(main_setting(), "the main thread's setting is gone (mode %s)", mode);
	if (!strcmp(mode, "sud")) prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0);
	stop = 1;
	pthread_join(th, NULL);
	WL_CHECK(thread_ok, "the thread's setting is gone (mode %s)", mode);
	wl_check_ids();
	wl_finish();
}
