/*
 * signalfd: a non-blocking signalfd for SIGUSR1 + SIGRTMIN+2 (blocked), and a second for SIGUSR2.
 * After go the process sends itself SIGUSR1 and SIGRTMIN+2 and reads both from the first
 * signalfd; the second must see SIGUSR2 only. A pending SIGRTMIN+2 queued before the dump
 * (value 77) must be read too.
 * --selftest-corrupt: replace the first signalfd's mask with SIGUSR2 only.
 */
#include "wl.h"
#include <signal.h>
#include <sys/signalfd.h>
#include <poll.h>

int main(int argc, char **argv) {
	wl_init(argc, argv);
	sigset_t m1, m2, all;
	sigemptyset(&m1); sigaddset(&m1, SIGUSR1); sigaddset(&m1, SIGRTMIN + 2);
	sigemptyset(&m2); sigaddset(&m2, SIGUSR2);
	sigemptyset(&all); sigaddset(&all, SIGUSR1); sigaddset(&all, SIGUSR2); sigaddset(&all, SIGRTMIN + 2);
	sigprocmask(SIG_BLOCK, &all, NULL);
	int f1 = signalfd(-1, &m1, SFD_NONBLOCK | SFD_CLOEXEC);
	int f2 = signalfd(-1, &m2, 0);
	if (f1 < 0 || f2 < 0) { perror("signalfd"); return 2; }
	union sigval sv = {.sival_int = 77};
	sigqueue(getpid(), SIGRTMIN + 2, sv);
	wl_ready();
	if (wl_corrupting("mask", "mask")) signalfd(f1, &m2, 0);
	while (!wl_go()) wl_sleep_ms(10);

	wl_check_ids();
	WL_CHECK((fcntl(f1, F_GETFL) & O_NONBLOCK) != 0, "signalfd lost O_NONBLOCK");
	WL_CHECK((fcntl(f2, F_GETFL) & O_NONBLOCK) == 0, "second signalfd became O_NONBLOCK");
	struct signalfd_siginfo si;
	ssize_t n = read(f1, &si, sizeof si);
	WL_CHECK(n == sizeof si && si.ssi_signo == (uint32_t)SIGRTMIN + 2 && si.ssi_int == 77,
		 "queued SIGRTMIN+2 not read from signalfd (n=%zd signo=%u int=%d)", n, n > 0 ? si.ssi_signo : 0, n > 0 ? si.ssi_int : 0);
	kill(getpid(), SIGUSR2);
	kill(getpid(), SIGUSR1);
	n = read(f1, &si, sizeof si);
	WL_CHECK(n == sizeof si && si.ssi_signo == SIGUSR1, "SIGUSR1 not read from first signalfd (n=%zd signo=%u)", n, n > 0 ? si.ssi_signo : 0);
	errno = 0;
	n = read(f1, &si, sizeof si);
	WL_CHECK(n < 0 && errno == EAGAIN, "first signalfd returned more (n=%zd signo=%u)", n, n > 0 ? si.ssi_signo : 0);
	struct pollfd pf = {f2, POLLIN, 0};
	n = poll(&pf, 1, 100) == 1 ? read(f2, &si, sizeof si) : -1;
	WL_CHECK(n == sizeof si && si.ssi_signo == SIGUSR2, "SIGUSR2 not read from second signalfd");
	wl_finish();
}
