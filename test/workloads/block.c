/*
 * block DIR MODE [--selftest-corrupt]
 *
 * Single-threaded; after `ready` the main thread sits in one blocking syscall with no
 * timeout, which is where a dump should catch it. MODE:
 *   read        read(2) on a pipe it created (keeps the write end). SIGUSR2 handler with
 *               SA_RESTART writes one byte 'G' into the pipe: the interrupted read must be
 *               restarted and return exactly that byte (EINTR = restart was lost).
 *   read-eintr  the same without SA_RESTART: read must fail with EINTR after the handler ran.
 *   nanosleep   clock_nanosleep(CLOCK_MONOTONIC, relative 3600 s, &rem); SIGUSR2 handler sets
 *               a flag; the sleep must end with EINTR after the handler ran, and rem must be a
 *               sane remainder: 0 < rem <= 3600 s, rem >= 3600 - elapsed - 0.5 s, tv_nsec valid.
 *   futex       FUTEX_WAIT (private, no timeout) on a word that is 0; SIGUSR2 handler
 *               (SA_RESTART) sets the word to 1: the wait is restarted by the kernel and must
 *               then return EAGAIN (word changed); EINTR means the restart was lost.
 *   poll        poll(2) on the pipe's read end, infinite timeout; SIGUSR2 handler writes 'G'.
 *               poll returns EINTR (poll is never restarted after a handler) and the next
 *               poll must report POLLIN, the byte read must be 'G'.
 * Wake-up: the test writes DIR/go and then sends SIGUSR2 (the workload writes "12" into
 * DIR/wake so the harness knows which signal). Any return of the call before the handler
 * ran, an unexpected errno (EINTR where SA_RESTART applies, 512..516 kernel-internal
 * restart codes leaking out) or being woken without DIR/go existing is a FAIL.
 * Between ready and the call there is a window of a few microseconds: tests should let the
 * workload settle (the harness waits for the task to be sleeping) before dumping/waking.
 * --selftest-corrupt: arms a one-shot 100 ms ITIMER_REAL whose SIGALRM handler (no
 * SA_RESTART) interrupts the call early, as a broken restore would: the workload must FAIL.
 */
#include "wl.h"
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/time.h>

static int pfd[2];
static volatile sig_atomic_t woken, alarmed;
static volatile uint32_t futex_word;
static const char *mode;

static void on_usr2(int sig) {
	(void)sig;
	int e = errno;
	woken = 1;
	if (!strcmp(mode, "futex")) futex_word = 1;
	if (!strcmp(mode, "read") || !strcmp(mode, "read-eintr") || !strcmp(mode, "poll")) {
		char c = 'G';
		if (write(pfd[1], &c, 1) != 1) woken = 2;
	}
	errno = e;
}

static void on_alrm(int sig) {
	(void)sig;
	alarmed = 1;
}

static const char *errname(int e) {
	static char buf[32];
	switch (e) {
	case 0: return "0";
	case EINTR: return "EINTR";
	case EAGAIN: return "EAGAIN";
	case EFAULT: return "EFAULT";
	case EINVAL: return "EINVAL";
	case 512: return "ERESTARTSYS(512)";
	case 513: return "ERESTARTNOINTR(513)";
	case 514: return "ERESTARTNOHAND(514)";
	case 516: return "ERESTART_RESTARTBLOCK(516)";
	default: snprintf(buf, sizeof buf, "errno %d", e); return buf;
	}
}

/* A return from the blocking call: it must come after the wake-up handler. */
static void check_woken(const char *call, long ret, int err) {
	wl_detail("%s returned %ld errno=%s woken=%d", call, ret, errname(err), (int)woken);
	if (alarmed) wl_detail("%s: SIGALRM arrived first (selftest corruption)", call);
	WL_CHECK(woken == 1, "%s returned %ld (%s) before the wake-up signal", call, ret, errname(err));
	WL_CHECK(wl_go(), "%s woke up but DIR/go does not exist", call);
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	mode = wl_arg(argc, argv, 0);
	if (!mode) mode = "read";
	int restart = strcmp(mode, "read-eintr") != 0 && strcmp(mode, "nanosleep") != 0;
	if (strcmp(mode, "read") && strcmp(mode, "read-eintr") && strcmp(mode, "nanosleep") && strcmp(mode, "futex") &&
	    strcmp(mode, "poll")) {
		wl_failf("unknown mode '%s'", mode);
		wl_finish();
	}
	if (pipe(pfd) != 0) return 2;

	struct sigaction sa = {0};
	sa.sa_handler = on_usr2;
	sa.sa_flags = restart ? SA_RESTART : 0;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR2, &sa, NULL);
	struct sigaction saa = {0};
	saa.sa_handler = on_alrm;
	sigaction(SIGALRM, &saa, NULL);

	wl_detail("mode=%s sa_restart=%d", mode, restart);
	wl_wake_signal(SIGUSR2);
	if (wl_corrupt) {
		struct itimerval it = {{0, 0}, {0, 100000}};
		setitimer(ITIMER_REAL, &it, NULL);
	}
	const double t0 = wl_now(CLOCK_MONOTONIC);
	wl_ready();

	if (!strcmp(mode, "read") || !strcmp(mode, "read-eintr")) {
		char c = 0;
		ssize_t r = read(pfd[0], &c, 1);
		int e = r < 0 ? errno : 0;
		check_woken("read", (long)r, e);
		if (restart) {
			WL_CHECK(r == 1 && c == 'G', "read returned %zd (%s) byte 0x%02x, expected 1 byte 'G'", r, errname(e),
			         (unsigned char)c);
		} else {
			WL_CHECK(r == -1 && e == EINTR, "read returned %zd (%s), expected -1 EINTR", r, errname(e));
			fcntl(pfd[0], F_SETFL, O_NONBLOCK);
			r = read(pfd[0], &c, 1);
			WL_CHECK(r == 1 && c == 'G', "byte written by the handler missing: read %zd", r);
		}
	} else if (!strcmp(mode, "nanosleep")) {
		struct timespec req = {3600, 0}, rem = {-1, -1};
		int r = clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &rem); /* returns the error number */
		const double elapsed = wl_now(CLOCK_MONOTONIC) - t0;
		check_woken("clock_nanosleep", r, r);
		WL_CHECK(r == EINTR, "clock_nanosleep returned %s, expected EINTR", errname(r));
		const double remd = (double)rem.tv_sec + (double)rem.tv_nsec / 1e9;
		wl_detail("elapsed=%.3f rem=%ld.%09ld", elapsed, (long)rem.tv_sec, (long)rem.tv_nsec);
		if (r == EINTR) {
			WL_CHECK(rem.tv_nsec >= 0 && rem.tv_nsec < 1000000000L, "rem.tv_nsec garbage: %ld", (long)rem.tv_nsec);
			WL_CHECK(remd > 0 && remd <= 3600.0, "rem %.3f s out of (0, 3600]", remd);
			WL_CHECK(remd >= 3600.0 - elapsed - 0.5, "rem %.3f s: slept longer than the %.3f s that passed", remd,
			         elapsed);
		}
	} else if (!strcmp(mode, "futex")) {
		long r = syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
		int e = r < 0 ? errno : 0;
		check_woken("futex", r, e);
		WL_CHECK(r == -1 && e == EAGAIN, "futex returned %ld (%s), expected -1 EAGAIN (restarted wait)", r,
		         errname(e));
		WL_CHECK(futex_word == 1, "futex word is %u, expected 1", (unsigned)futex_word);
	} else { /* poll */
		struct pollfd p = {pfd[0], POLLIN, 0};
		int r = poll(&p, 1, -1);
		int e = r < 0 ? errno : 0;
		check_woken("poll", r, e);
		WL_CHECK((r == -1 && e == EINTR) || (r == 1 && (p.revents & POLLIN)),
		         "poll returned %d (%s) revents=%#x, expected EINTR or POLLIN", r, errname(e), p.revents);
		p.revents = 0;
		r = poll(&p, 1, 1000);
		WL_CHECK(r == 1 && (p.revents & POLLIN), "second poll returned %d revents=%#x, expected POLLIN", r,
		         p.revents);
		char c = 0;
		ssize_t n = read(pfd[0], &c, 1);
		WL_CHECK(n == 1 && c == 'G', "read after poll got %zd byte 0x%02x, expected 'G'", n, (unsigned char)c);
	}
	/* The pipe still works both ways after the wake-up. */
	char msg[] = "after", back[sizeof msg] = {0};
	fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	WL_CHECK(write(pfd[1], msg, sizeof msg) == (ssize_t)sizeof msg, "pipe write failed: %s", strerror(errno));
	WL_CHECK(read(pfd[0], back, sizeof back) == (ssize_t)sizeof back && !memcmp(msg, back, sizeof msg),
	         "pipe round trip failed");
	wl_check_ids();
	wl_finish();
}
