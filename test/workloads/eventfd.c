/*
 * eventfd: a plain eventfd holding 41, a non-blocking semaphore eventfd holding 3, one with a
 * counter above 2^32, and a dup of the first (same description). After go: the counters read
 * back exactly, the semaphore hands out 1 three times then EAGAIN, flags are kept.
 * --selftest-corrupt[=count|sem]: add 1 to the plain counter (default) / drain the semaphore.
 */
#include "wl.h"
#include <sys/eventfd.h>

int main(int argc, char **argv) {
	wl_init(argc, argv);
	int a = eventfd(41, EFD_CLOEXEC);
	int s = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
	int big = eventfd(0, EFD_NONBLOCK);
	uint64_t v = 0x123456789ULL;
	if (a < 0 || s < 0 || big < 0 || write(big, &v, 8) != 8) { perror("eventfd"); return 2; }
	int a2 = dup(a);
	wl_ready();
	if (wl_corrupting("count", "count")) { v = 1; write(a, &v, 8); }
	if (wl_corrupting("sem", "count")) { for (int i = 0; i < 3; i++) read(s, &v, 8); }
	while (!wl_go()) wl_sleep_ms(10);

	wl_check_ids();
	WL_CHECK(fcntl(a, F_GETFD) == FD_CLOEXEC, "plain eventfd lost FD_CLOEXEC");
	WL_CHECK(fcntl(a2, F_GETFD) == 0, "dup got FD_CLOEXEC");
	WL_CHECK((fcntl(s, F_GETFL) & O_NONBLOCK) != 0, "semaphore eventfd lost O_NONBLOCK");
	WL_CHECK((fcntl(a, F_GETFL) & O_NONBLOCK) == 0, "plain eventfd became O_NONBLOCK");
	/* write through the dup, read through the original: one description */
	v = 1;
	WL_CHECK(write(a2, &v, 8) == 8, "write to dup failed");
	v = 0;
	WL_CHECK(read(a, &v, 8) == 8 && v == 42, "plain counter %llu, want 42", (unsigned long long)v);
	for (int i = 0; i < 3; i++) {
		v = 0;
		ssize_t n = read(s, &v, 8);
		WL_CHECK(n == 8 && v == 1, "semaphore read %d gave %zd/%llu, want 1", i, n, (unsigned long long)v);
	}
	errno = 0;
	WL_CHECK(read(s, &v, 8) < 0 && errno == EAGAIN, "semaphore not empty after 3 reads (errno %d)", errno);
	v = 0;
	WL_CHECK(read(big, &v, 8) == 8 && v == 0x123456789ULL, "big counter %llx", (unsigned long long)v);
	wl_finish();
}
