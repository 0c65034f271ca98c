/*
 * extunix: unix sockets whose peers live outside the process tree (for --ext-unix-sk).
 * A helper is double-forked (reparented away, so it is not in the tree; its pid goes to
 * DIR/ext-pid) and holds: a datagram socket bound to DIR/ext-d.sock that answers every
 * datagram with "echo:<it>" to the sender, a stream listener at DIR/ext-s.sock (it accepts and
 * keeps the connection) and one end of a stream socketpair made before the fork.
 * The workload keeps: D, a datagram socket bound to DIR/wl-d.sock and connected to
 * DIR/ext-d.sock, with the answer "echo:ping1" queued and unread (data in flight); with argument
 * "streams" also S, a stream socket connected to DIR/ext-s.sock, and P, its end of the socketpair
 * (--ext-unix-sk refuses those, as CRIU does: a stream connection cannot be given back without its
 * other end).
 * At go: D still has its name and peer name, reads "echo:ping1" first, then "ping2" gets its
 * "echo:ping2" back; S and P (when held) are still stream sockets, connected (detail lines
 * s=connected, p=connected). Then DIR/ext-stop ends the helper (so does DIR vanishing, or 2 minutes).
 * The queued datagram's sender is checked too (recvfrom): the helper's name ext-d.sock, or with
 * argument "unnamed" or "streams", no name: there "echo:ping1" is sent to D by an unnamed socket
 * of the workload (closed at once) before D connects, and "ping1" is not sent.
 * --selftest-corrupt: reads the queued "echo:ping1" after ready.
 */
#include "wl.h"
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static socklen_t mkaddr(struct sockaddr_un *sa, const char *name) {
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	char tmp[4200];
	wl_path(tmp, sizeof tmp, name);
	if (strlen(tmp) >= sizeof sa->sun_path) { fprintf(stderr, "path too long: %s\n", tmp); exit(2); }
	memcpy(sa->sun_path, tmp, strlen(tmp) + 1);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(sa->sun_path) + 1);
}

static void helper(int pair_end) {
	struct sockaddr_un sa;
	socklen_t l;
	int d = socket(AF_UNIX, SOCK_DGRAM, 0), ls = socket(AF_UNIX, SOCK_STREAM, 0), conn = -1;
	l = mkaddr(&sa, "ext-d.sock"); unlink(sa.sun_path);
	if (bind(d, (struct sockaddr *)&sa, l)) _exit(3);
	l = mkaddr(&sa, "ext-s.sock"); unlink(sa.sun_path);
	if (bind(ls, (struct sockaddr *)&sa, l) || listen(ls, 4)) _exit(3);
	char buf[64];
	int n = snprintf(buf, sizeof buf, "%d\n", getpid());
	wl_write_file("ext-pid", buf, (size_t)n);
	wl_write_file("ext-ready", "1\n", 2);
	for (int i = 0; i < 120 * 50 && !wl_exists("ext-stop") && access(wl_dir, F_OK) == 0; i++) {
		struct pollfd pf[4] = {{d, POLLIN, 0}, {ls, POLLIN, 0}, {pair_end, POLLIN, 0}, {conn, POLLIN, 0}};
		if (poll(pf, conn >= 0 ? 4 : 3, 20) <= 0) continue;
		if (pf[0].revents & POLLIN) {
			char msg[256], out[300];
			struct sockaddr_un from;
			socklen_t fl = sizeof from;
			ssize_t k = recvfrom(d, msg, sizeof msg - 1, 0, (struct sockaddr *)&from, &fl);
			if (k > 0) {
				int m = snprintf(out, sizeof out, "echo:%.*s", (int)k, msg);
				sendto(d, out, (size_t)m, MSG_DONTWAIT, (struct sockaddr *)&from, fl);
			}
		}
		if ((pf[1].revents & POLLIN) && conn < 0) conn = accept(ls, NULL, NULL);
		if (pf[2].revents & POLLIN) { if (read(pair_end, buf, sizeof buf) <= 0) wl_sleep_ms(5); }
		if (conn >= 0 && (pf[3].revents & (POLLIN | POLLHUP))) { if (read(conn, buf, sizeof buf) <= 0) wl_sleep_ms(5); }
	}
	_exit(0);
}

static const char *stream_state(int fd, const char *what) {
	int type = 0;
	socklen_t tl = sizeof type;
	WL_CHECK(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM, "%s is not a stream socket any more", what);
	struct sockaddr_un sa;
	socklen_t l = sizeof sa;
	if (getpeername(fd, (struct sockaddr *)&sa, &l) == 0) {
		WL_CHECK(send(fd, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1, "%s: send on a connected socket failed (errno %d)", what, errno);
		return "connected";
	}
	errno = 0;
	ssize_t n = send(fd, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	WL_CHECK(n < 0 && errno == ENOTCONN, "%s: unconnected but send gave %zd (errno %d)", what, n, errno);
	return "unconnected";
}

static ssize_t recv_wait(int fd, char *buf, size_t len, int ms) {
	struct pollfd pf = {fd, POLLIN, 0};
	if (poll(&pf, 1, ms) != 1) return -1;
	return recv(fd, buf, len, MSG_DONTWAIT);
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp)) { perror("socketpair"); return 2; }
	pid_t c = fork();
	if (c == 0) {
		if (fork() == 0) { close(sp[0]); setsid(); helper(sp[1]); }
		_exit(0);
	}
	waitpid(c, NULL, 0);
	close(sp[1]);
	for (int i = 0; i < 500 && !wl_exists("ext-ready"); i++) wl_sleep_ms(10);
	if (!wl_exists("ext-ready")) { fprintf(stderr, "helper not ready\n"); return 2; }

	struct sockaddr_un own, peer, s_addr;
	socklen_t ol = mkaddr(&own, "wl-d.sock"), pl = mkaddr(&peer, "ext-d.sock"), sl = mkaddr(&s_addr, "ext-s.sock");
	unlink(own.sun_path);
	int d = socket(AF_UNIX, SOCK_DGRAM, 0);
	const char *mode = wl_arg(argc, argv, 0);
	int streams = mode && !strcmp(mode, "streams");
	int unnamed = streams || (mode && !strcmp(mode, "unnamed"));
	if (bind(d, (struct sockaddr *)&own, ol)) { perror("bind"); return 2; }
	if (unnamed) {
		int u = socket(AF_UNIX, SOCK_DGRAM, 0);
		if (sendto(u, "echo:ping1", 10, 0, (struct sockaddr *)&own, ol) != 10) { perror("sendto"); return 2; }
		close(u);
	}
	if (connect(d, (struct sockaddr *)&peer, pl)) { perror("connect"); return 2; }
	if (!unnamed && send(d, "ping1", 5, 0) != 5) { perror("send"); return 2; }
	struct pollfd pf = {d, POLLIN, 0};
	if (poll(&pf, 1, 3000) != 1) { fprintf(stderr, "no echo\n"); return 2; } /* left queued */
	int s = -1, p = -1;
	if (streams) {
		s = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(s, (struct sockaddr *)&s_addr, sl)) { perror("stream"); return 2; }
		p = sp[0];
	} else close(sp[0]);
	wl_ready();
	if (wl_corrupting("queue", "queue")) { char b[64]; recv(d, b, sizeof b, MSG_DONTWAIT); }
	while (!wl_go()) wl_sleep_ms(10);

	struct sockaddr_un got;
	socklen_t gl = sizeof got;
	WL_CHECK(getsockname(d, (struct sockaddr *)&got, &gl) == 0 && !strcmp(got.sun_path, own.sun_path), "dgram socket lost its name");
	gl = sizeof got;
	WL_CHECK(getpeername(d, (struct sockaddr *)&got, &gl) == 0 && !strcmp(got.sun_path, peer.sun_path), "dgram socket lost its peer (errno %d)", errno);
	char buf[128];
	struct sockaddr_un from;
	socklen_t fl = sizeof from;
	memset(&from, 0, sizeof from);
	ssize_t n = recvfrom(d, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
	WL_CHECK(n == 10 && !memcmp(buf, "echo:ping1", 10), "queued echo:ping1 missing (got %zd)", n);
	if (unnamed) WL_CHECK(fl == 0, "queued echo:ping1 came from a named sender (address length %u)", (unsigned)fl);
	else WL_CHECK(fl > offsetof(struct sockaddr_un, sun_path) && !strcmp(from.sun_path, peer.sun_path), "queued echo:ping1 lost its sender's name (address length %u)", (unsigned)fl);
	WL_CHECK(send(d, "ping2", 5, 0) == 5, "send ping2: errno %d", errno);
	n = recv_wait(d, buf, sizeof buf, 3000);
	WL_CHECK(n == 10 && !memcmp(buf, "echo:ping2", 10), "no echo:ping2 from the external peer (got %zd)", n);
	if (streams) {
		wl_detail("s=%s", stream_state(s, "stream socket"));
		wl_detail("p=%s", stream_state(p, "socketpair end"));
	}
	wl_write_file("ext-stop", "1\n", 2);
	wl_check_ids();
	wl_finish();
}
