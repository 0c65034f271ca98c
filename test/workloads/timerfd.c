/*
 * timerfd: A periodic CLOCK_MONOTONIC 50 ms timer (keeps ticking after restore, period kept);
 * B CLOCK_BOOTTIME non-blocking, first expiry after 20 ms then every 60 s: 1 expiration unread
 * at dump time must still be readable, next expiry 30..60 s away; C one-shot CLOCK_REALTIME in
 * 20 s (remaining 10..20 s); D disarmed CLOCK_REALTIME. Clock ids are checked in fdinfo.
 * --selftest-corrupt[=ticks|period]: read B's tick (default) / change A's period.
 */
#include "wl.h"
#include <sys/timerfd.h>

static int clockid_of(int fd) {
	char p[64], buf[512];
	snprintf(p, sizeof p, "/proc/self/fdinfo/%d", fd);
	int f = open(p, O_RDONLY);
	if (f < 0) return -1;
	ssize_t n = read(f, buf, sizeof buf - 1);
	close(f);
	if (n <= 0) return -1;
	buf[n] = 0;
	char *c = strstr(buf, "clockid:");
	return c ? atoi(c + 8) : -1;
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	int A = timerfd_create(CLOCK_MONOTONIC, 0);
	int B = timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK);
	int C = timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC);
	int D = timerfd_create(CLOCK_REALTIME, 0);
	if (A < 0 || B < 0 || C < 0 || D < 0) { perror("timerfd_create"); return 2; }
	struct itimerspec a = {{0, 50000000}, {0, 50000000}}, b = {{60, 0}, {0, 20000000}}, c = {{0, 0}, {20, 0}};
	timerfd_settime(A, 0, &a, NULL);
	timerfd_settime(B, 0, &b, NULL);
	timerfd_settime(C, 0, &c, NULL);
	wl_sleep_ms(60);
	wl_ready();
	uint64_t t;
	if (wl_corrupting("ticks", "ticks")) read(B, &t, 8);
	if (wl_corrupting("period", "ticks")) { a.it_interval.tv_nsec = 70000000; timerfd_settime(A, 0, &a, NULL); }
	while (!wl_go()) wl_sleep_ms(10);

	wl_check_ids();
	struct itimerspec g;
	timerfd_gettime(A, &g);
	WL_CHECK(g.it_interval.tv_sec == 0 && g.it_interval.tv_nsec == 50000000, "A period %ld.%09ld", (long)g.it_interval.tv_sec, g.it_interval.tv_nsec);
	t = 0;
	WL_CHECK(read(A, &t, 8) == 8 && t >= 1, "A gave no ticks");
	t = 0;
	WL_CHECK(read(A, &t, 8) == 8 && t >= 1, "A stopped ticking");
	double t0 = wl_now(CLOCK_MONOTONIC);
	t = 0;
	WL_CHECK(read(A, &t, 8) == 8 && t >= 1, "A stopped ticking");
	double dt = wl_now(CLOCK_MONOTONIC) - t0;
	WL_CHECK(dt > 0.03 && dt < 0.2, "A next tick after %.3f s", dt);
	t = 0;
	ssize_t n = read(B, &t, 8);
	WL_CHECK(n == 8 && t == 1, "B unread ticks lost (n=%zd ticks=%llu errno=%d)", n, (unsigned long long)t, errno);
	timerfd_gettime(B, &g);
	WL_CHECK(g.it_interval.tv_sec == 60 && g.it_value.tv_sec >= 30 && g.it_value.tv_sec < 60, "B next expiry in %ld s, period %ld", (long)g.it_value.tv_sec, (long)g.it_interval.tv_sec);
	WL_CHECK((fcntl(B, F_GETFL) & O_NONBLOCK) != 0, "B lost O_NONBLOCK");
	timerfd_gettime(C, &g);
	WL_CHECK(g.it_interval.tv_sec == 0 && g.it_value.tv_sec >= 10 && g.it_value.tv_sec < 20, "C remaining %ld s", (long)g.it_value.tv_sec);
	WL_CHECK(fcntl(C, F_GETFD) == FD_CLOEXEC, "C lost FD_CLOEXEC");
	timerfd_gettime(D, &g);
	WL_CHECK(g.it_value.tv_sec == 0 && g.it_value.tv_nsec == 0, "D got armed");
	WL_CHECK(clockid_of(A) == CLOCK_MONOTONIC && clockid_of(B) == CLOCK_BOOTTIME && clockid_of(C) == CLOCK_REALTIME && clockid_of(D) == CLOCK_REALTIME,
		 "clock ids %d %d %d %d", clockid_of(A), clockid_of(B), clockid_of(C), clockid_of(D));
	wl_finish();
}
