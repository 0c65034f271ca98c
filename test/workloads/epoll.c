/*
 * epoll: an epoll set watching an eventfd with a count (ready, data 0xfeedface00000001), a pipe
 * read end with unread bytes (ready, EPOLLIN|EPOLLRDHUP, data 7), an empty pipe (not ready,
 * EPOLLIN|EPOLLET, data 8) and a second epoll fd (nested, data 9; ready because its eventfd is).
 * After go: epoll_wait reports exactly the ready ones with their data; writing to the empty pipe
 * makes it ready; EPOLL_CTL_ADD of a watched fd fails with EEXIST (it is in the set).
 * --selftest-corrupt: remove the eventfd from the set.
 */
#include "wl.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>

int main(int argc, char **argv) {
	wl_init(argc, argv);
	int ep = epoll_create1(EPOLL_CLOEXEC), inner = epoll_create1(0);
	int ev = eventfd(5, 0), ev2 = eventfd(1, 0);
	int p1[2], p2[2];
	if (ep < 0 || inner < 0 || ev < 0 || pipe(p1) || pipe(p2)) { perror("setup"); return 2; }
	write(p1[1], "hello", 5);
	struct epoll_event e;
	e.events = EPOLLIN; e.data.u64 = 0xfeedface00000001ULL; epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e);
	e.events = EPOLLIN | EPOLLRDHUP; e.data.u64 = 7; epoll_ctl(ep, EPOLL_CTL_ADD, p1[0], &e);
	e.events = EPOLLIN | EPOLLET; e.data.u64 = 8; epoll_ctl(ep, EPOLL_CTL_ADD, p2[0], &e);
	e.events = EPOLLIN; e.data.u64 = 9; epoll_ctl(ep, EPOLL_CTL_ADD, inner, &e);
	e.events = EPOLLIN; e.data.u64 = 10; epoll_ctl(inner, EPOLL_CTL_ADD, ev2, &e);
	wl_ready();
	if (wl_corrupting("del", "del")) epoll_ctl(ep, EPOLL_CTL_DEL, ev, NULL);
	while (!wl_go()) wl_sleep_ms(10);

	wl_check_ids();
	struct epoll_event out[8];
	int n = epoll_wait(ep, out, 8, 100);
	int seen1 = 0, seen7 = 0, seen9 = 0, other = 0;
	for (int i = 0; i < n; i++) {
		if (out[i].data.u64 == 0xfeedface00000001ULL && (out[i].events & EPOLLIN)) seen1++;
		else if (out[i].data.u64 == 7 && (out[i].events & EPOLLIN)) seen7++;
		else if (out[i].data.u64 == 9) seen9++;
		else other++;
	}
	WL_CHECK(n == 3 && seen1 == 1 && seen7 == 1 && seen9 == 1 && !other, "epoll_wait gave %d events (eventfd %d, pipe %d, inner %d, other %d)", n, seen1, seen7, seen9, other);
	n = epoll_wait(inner, out, 8, 100);
	WL_CHECK(n == 1 && out[0].data.u64 == 10, "inner epoll gave %d events", n);
	write(p2[1], "x", 1);
	n = epoll_wait(ep, out, 8, 100);
	int seen8 = 0;
	for (int i = 0; i < n; i++) if (out[i].data.u64 == 8) seen8++;
	WL_CHECK(seen8 == 1, "empty pipe did not become ready after a write");
	e.events = EPOLLIN; e.data.u64 = 1;
	errno = 0;
	WL_CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, p1[0], &e) < 0 && errno == EEXIST, "pipe fd is not in the set (errno %d)", errno);
	WL_CHECK(fcntl(ep, F_GETFD) == FD_CLOEXEC, "epoll lost FD_CLOEXEC");
	char buf[8] = {0};
	WL_CHECK(read(p1[0], buf, 8) == 5 && !memcmp(buf, "hello", 5), "pipe data lost");
	wl_finish();
}
