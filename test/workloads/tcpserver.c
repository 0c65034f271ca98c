/*
 * tcpserver - a rate-limited TCP echo server (single thread, poll loop).
 *
 *   tcpserver DIR PORT [--addr=ADDR] [--expect=N] [--selftest-corrupt]
 *
 * Listens on ADDR:PORT (default 127.0.0.1; "::" = dual stack, v4-mapped peers) with
 * SO_REUSEADDR (its clients inherit it), then writes DIR/ready. Every accepted client gets TCP_NODELAY, SO_KEEPALIVE
 * (idle 77 s) and fixed 64 KiB buffers; it is echoed byte for byte, at most 8 KiB per client per
 * 5 ms round, so bytes pile up in the server's receive queue, and clients that read slowly keep
 * its send queue full: a dump catches data in flight both ways. The byte streams are checked by
 * the clients (test/tcp_client.py). At DIR/go the server checks: no socket error ever (reset,
 * broken pipe), at least N clients accepted, every live client socket still has its options, the
 * listener still listens on the same address. --selftest-corrupt: clears SO_KEEPALIVE on the
 * clients after ready (as a restore that loses socket options would).
 */
#include "wl.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#define MAXC 64
#define CHUNK 8192

struct client {
	int fd;
	char pend[CHUNK];
	size_t plen, poff;
	unsigned long long echoed;
	int eof;
};
static struct client cl[MAXC];
static int ncl, accepted, errors;
static unsigned long long total;

static void check_opts(int fd, const char *who) {
	int v = 0;
	socklen_t l = sizeof v;
	getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &l);
	WL_CHECK(v == 1, "%s: TCP_NODELAY lost", who);
	getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, &l);
	WL_CHECK(v == 1, "%s: SO_KEEPALIVE lost", who);
	getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &l);
	WL_CHECK(v == 77, "%s: TCP_KEEPIDLE is %d, not 77", who, v);
	getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &l);
	WL_CHECK(v == 2 * 65536, "%s: SO_RCVBUF is %d", who, v);
	/* inherited from the listener; TCP repair mode resets it, so a dump must put it back */
	getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, &l);
	WL_CHECK(v == 1, "%s: SO_REUSEADDR is %d", who, v);
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	const char *port_s = wl_arg(argc, argv, 0);
	const char *addr = "127.0.0.1";
	int expect = 0;
	for (int i = 2; i < argc; i++) {
		if (strncmp(argv[i], "--addr=", 7) == 0) addr = argv[i] + 7;
		if (strncmp(argv[i], "--expect=", 9) == 0) expect = atoi(argv[i] + 9);
	}
	if (!port_s) { fprintf(stderr, "usage: tcpserver DIR PORT\n"); return 2; }
	int port = atoi(port_s);
	int v6 = strchr(addr, ':') != NULL;
	int ls = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	int one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	if (v6) {
		int zero = 0;
		setsockopt(ls, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
		struct sockaddr_in6 *a = (void *)&ss;
		a->sin6_family = AF_INET6; a->sin6_port = htons(port);
		inet_pton(AF_INET6, addr, &a->sin6_addr);
		sl = sizeof *a;
	} else {
		struct sockaddr_in *a = (void *)&ss;
		a->sin_family = AF_INET; a->sin_port = htons(port);
		inet_pton(AF_INET, addr, &a->sin_addr);
		sl = sizeof *a;
	}
	if (bind(ls, (void *)&ss, sl) || listen(ls, 17)) { perror("bind/listen"); return 2; }
	wl_ready();
	int corrupted = 0;
	for (;;) {
		if (wl_go()) break;
		if (wl_corrupt && !corrupted) {
			for (int i = 0; i < ncl; i++) { int z = 0; setsockopt(cl[i].fd, SOL_SOCKET, SO_KEEPALIVE, &z, sizeof z); corrupted = 1; }
		}
		struct pollfd p = {ls, POLLIN, 0};
		poll(&p, 1, 5);
		for (;;) {
			int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
			if (fd < 0) break;
			if (ncl == MAXC) { close(fd); continue; }
			int buf = 65536, idle = 77;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
			setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
			setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
			setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
			setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
			cl[ncl++] = (struct client){.fd = fd};
			accepted++;
		}
		for (int i = 0; i < ncl; i++) {
			struct client *c = &cl[i];
			if (c->fd < 0) continue;
			if (c->plen == c->poff && !c->eof) {
				ssize_t n = recv(c->fd, c->pend, CHUNK, 0);
				if (n > 0) { c->plen = (size_t)n; c->poff = 0; }
				else if (n == 0) c->eof = 1;
				else if (errno != EAGAIN) { errors++; wl_detail("client %d: recv: %s", i, strerror(errno)); fprintf(stderr, "client %d: recv: %s\n", i, strerror(errno)); close(c->fd); c->fd = -1; continue; }
			}
			if (c->poff < c->plen) {
				ssize_t w = send(c->fd, c->pend + c->poff, c->plen - c->poff, MSG_NOSIGNAL);
				if (w > 0) { c->poff += (size_t)w; c->echoed += (unsigned long long)w; total += (unsigned long long)w; }
				else if (w < 0 && errno != EAGAIN) { errors++; wl_detail("client %d: send: %s", i, strerror(errno)); fprintf(stderr, "client %d: send: %s\n", i, strerror(errno)); close(c->fd); c->fd = -1; continue; }
			}
			if (c->eof && c->poff == c->plen) { close(c->fd); c->fd = -1; }
		}
	}
	wl_check_ids();
	WL_CHECK(errors == 0, "%d socket errors", errors);
	WL_CHECK(accepted >= expect, "accepted %d clients, expected %d", accepted, expect);
	int live = 0;
	for (int i = 0; i < ncl; i++) if (cl[i].fd >= 0) { char who[32]; snprintf(who, sizeof who, "client %d", i); check_opts(cl[i].fd, who); live++; }
	int acc = 0;
	socklen_t l = sizeof acc;
	getsockopt(ls, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l);
	WL_CHECK(acc == 1, "listener does not listen");
	struct sockaddr_storage now = {0};
	socklen_t nl = sizeof now;
	getsockname(ls, (void *)&now, &nl);
	WL_CHECK(nl == sl && memcmp(&now, &ss, sl) == 0, "listener address changed");
	wl_detail("accepted=%d", accepted);
	wl_detail("live=%d", live);
	wl_detail("echoed=%llu", total);
	wl_finish();
}
