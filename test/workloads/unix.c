/*
 * unix: socketpairs of each type with unread data both ways at dump time (stream: "s-a2b-1"
 * "s-a2b-2" to b and "s-b2a" to a; dgram: 3000/1/100-byte messages to b, one to a; seqpacket:
 * two each way), a stream pair whose one end sent "bye" then shut down writing, a listening
 * socket bound to DIR/sock (backlog 7) and a listening abstract socket. After go: every queue
 * reads back in order with message boundaries, nothing more is queued, EOF after "bye",
 * both listeners accept new connections under their names, pairs still talk both ways.
 * --selftest-corrupt[=queue|listen]: read one queued message (default) / close the listener.
 */
#include "wl.h"
#include <sys/socket.h>
#include <sys/un.h>
#include <stddef.h>

static int sp[3][2], shut[2], lpath, lab;
static char abs_name[108];

static void expect_msg(int fd, const char *what, const void *want, size_t len, int flags) {
	static char buf[70000];
	ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT | flags);
	WL_CHECK(n == (ssize_t)len && !memcmp(buf, want, len), "%s: got %zd bytes (errno %d), want %zu", what, n, n < 0 ? errno : 0, len);
}
static void expect_empty(int fd, const char *what) {
	char b[8];
	errno = 0;
	ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
	WL_CHECK(n < 0 && errno == EAGAIN, "%s: more data queued (n=%zd)", what, n);
}
static int connect_to(const char *name, size_t len) {
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, name, len);
	int c = socket(AF_UNIX, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&sa, offsetof(struct sockaddr_un, sun_path) + len) < 0) { close(c); return -1; }
	return c;
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	static char big[3000];
	wl_fill(big, sizeof big, 77);
	int types[3] = {SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET};
	for (int i = 0; i < 3; i++)
		if (socketpair(AF_UNIX, types[i], 0, sp[i])) { perror("socketpair"); return 2; }
	send(sp[0][0], "s-a2b-1", 7, 0);
	send(sp[0][0], "s-a2b-2", 7, 0);
	send(sp[0][1], "s-b2a", 5, 0);
	send(sp[1][0], big, sizeof big, 0);
	send(sp[1][0], "x", 1, 0);
	send(sp[1][0], big + 1000, 100, 0);
	send(sp[1][1], "d-b2a", 5, 0);
	send(sp[2][0], "q-a2b-1", 7, 0);
	send(sp[2][0], "q-a2b-22", 8, 0);
	send(sp[2][1], "q-b2a-1", 7, 0);
	send(sp[2][1], "q-b2a-22", 8, 0);
	socketpair(AF_UNIX, SOCK_STREAM, 0, shut);
	send(shut[0], "bye", 3, 0);
	shutdown(shut[0], SHUT_WR);

	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char sp_path[4200];
	wl_path(sp_path, sizeof sp_path, "sock");
	if (strlen(sp_path) >= sizeof sa.sun_path) { fprintf(stderr, "DIR too long\n"); return 2; }
	memcpy(sa.sun_path, sp_path, strlen(sp_path) + 1);
	lpath = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (bind(lpath, (struct sockaddr *)&sa, sizeof sa) || listen(lpath, 7)) { perror("bind path"); return 2; }
	snprintf(abs_name + 1, sizeof abs_name - 1, "criu-bun-wl-%d", (int)getpid());
	size_t alen = 1 + strlen(abs_name + 1);
	struct sockaddr_un sb = {.sun_family = AF_UNIX};
	memcpy(sb.sun_path, abs_name, alen);
	lab = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	if (bind(lab, (struct sockaddr *)&sb, offsetof(struct sockaddr_un, sun_path) + alen) || listen(lab, 3)) { perror("bind abstract"); return 2; }
	wl_ready();
	if (wl_corrupting("queue", "queue")) { char b[8]; recv(sp[2][0], b, 8, 0); }
	if (wl_corrupting("listen", "queue")) close(lpath);
	while (!wl_go()) wl_sleep_ms(10);

	wl_check_ids();
	expect_msg(sp[0][1], "stream a->b", "s-a2b-1s-a2b-2", 14, MSG_WAITALL);
	expect_empty(sp[0][1], "stream a->b");
	expect_msg(sp[0][0], "stream b->a", "s-b2a", 5, 0);
	expect_empty(sp[0][0], "stream b->a");
	expect_msg(sp[1][1], "dgram a->b #1", big, sizeof big, 0);
	expect_msg(sp[1][1], "dgram a->b #2", "x", 1, 0);
	expect_msg(sp[1][1], "dgram a->b #3", big + 1000, 100, 0);
	expect_empty(sp[1][1], "dgram a->b");
	expect_msg(sp[1][0], "dgram b->a", "d-b2a", 5, 0);
	expect_msg(sp[2][1], "seqpacket a->b #1", "q-a2b-1", 7, 0);
	expect_msg(sp[2][1], "seqpacket a->b #2", "q-a2b-22", 8, 0);
	expect_empty(sp[2][1], "seqpacket a->b");
	expect_msg(sp[2][0], "seqpacket b->a #1", "q-b2a-1", 7, 0);
	expect_msg(sp[2][0], "seqpacket b->a #2", "q-b2a-22", 8, 0);
	expect_empty(sp[2][0], "seqpacket b->a");
	int t;
	socklen_t tl = sizeof t;
	for (int i = 0; i < 3; i++) {
		getsockopt(sp[i][0], SOL_SOCKET, SO_TYPE, &t, &tl);
		WL_CHECK(t == types[i], "pair %d has type %d", i, t);
		WL_CHECK(send(sp[i][0], "ping", 4, 0) == 4, "pair %d: send a->b failed", i);
		expect_msg(sp[i][1], "new message a->b", "ping", 4, 0);
		WL_CHECK(send(sp[i][1], "pong", 4, 0) == 4, "pair %d: send b->a failed", i);
		expect_msg(sp[i][0], "new message b->a", "pong", 4, 0);
	}
	expect_msg(shut[1], "before shutdown", "bye", 3, 0);
	char b[4];
	WL_CHECK(recv(shut[1], b, 4, MSG_DONTWAIT) == 0, "no EOF after the peer's shutdown");
	WL_CHECK(send(shut[0], "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE, "shut end can still send");
	WL_CHECK(send(shut[1], "back", 4, 0) == 4, "other direction closed");
	expect_msg(shut[0], "other direction", "back", 4, 0);

	int c = connect_to(sa.sun_path, strlen(sa.sun_path) + 1);
	int a = c >= 0 ? accept(lpath, NULL, NULL) : -1;
	WL_CHECK(c >= 0 && a >= 0, "path listener does not accept (errno %d)", errno);
	if (a >= 0) { send(c, "hi", 2, 0); expect_msg(a, "accepted", "hi", 2, 0); }
	struct sockaddr_un got;
	socklen_t gl = sizeof got;
	getsockname(lpath, (struct sockaddr *)&got, &gl);
	WL_CHECK(!strcmp(got.sun_path, sa.sun_path), "path listener name '%s'", got.sun_path);
	WL_CHECK(fcntl(lpath, F_GETFL) & O_NONBLOCK, "path listener lost O_NONBLOCK");
	int ac = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	WL_CHECK(connect(ac, (struct sockaddr *)&sb, offsetof(struct sockaddr_un, sun_path) + alen) == 0, "abstract listener refuses (errno %d)", errno);
	gl = sizeof got;
	getsockname(lab, (struct sockaddr *)&got, &gl);
	WL_CHECK(gl == offsetof(struct sockaddr_un, sun_path) + alen && !memcmp(got.sun_path, abs_name, alen), "abstract name changed");
	wl_finish();
}
