/*
 * inetsk: inet sockets in the states and with the options criu-bun keeps; at go the workload
 * checks each socket (names, type, options through getsockopt) and uses it.
 *
 *   inetsk DIR MODE
 *   tcpclose  two loopback connections (one half-closed: FIN_WAIT2 / CLOSE_WAIT), all four ends
 *             kept; dumped and restored with --tcp-close, each must say 0 to recv() and EPIPE to
 *             send() (closed, not a never-connected socket: that says ENOTCONN)
 *   reset     a connection reset by its peer (error already read): recv() 0, send() EPIPE
 *   states    unbound and bound TCP (v4, v6, v4-mapped), UDP (unbound, bound v6, connected
 *             v4-mapped), UDP-Lite connected to itself, ping sockets (v4 bound, v6), raw sockets
 *             (IPPROTO_RAW, ICMP with IP_HDRINCL and ICMP_FILTER, ICMPv6 with a filter); names,
 *             types and protocols kept, and each still works (connect, send to itself, ping
 *             127.0.0.1 and ::1, the raw ICMP socket sees the echo reply)
 *   opts      every option CRIU keeps, set to non-default values on TCP, UDP and UDPv6 sockets
 *             (SO_PRIORITY ... SO_ATTACH_FILTER, IP_FREEBIND on a non-local address, IP_TOS ...)
 *   inflight  a listener with one connection not accepted yet (the client is a helper outside
 *             the tree): refused unless --skip-in-flight, then the listener still listens
 *   synrecv   the same with a listener set TCP_DEFER_ACCEPT, so the client's connection stays
 *             half-open (a request socket in SYN_RECV, seen in /proc/net/tcp before ready):
 *             refused unless --skip-in-flight (and TCP_DEFER_ACCEPT, not kept, refused then)
 *   halfest   a half-closed connection (FIN_WAIT2 and CLOSE_WAIT ends): refused with
 *             --tcp-established
 *   finwait1  a connection whose FIN waits unsent behind data the peer has no room for
 *             (FIN_WAIT1, the peer ESTABLISHED): refused with --tcp-established
 *   lastack   the same after the peer's FIN (LAST_ACK, the peer FIN_WAIT2): refused likewise
 *   closewait a half-closed connection whose CLOSE_WAIT end the dump meets first: refused likewise
 *   closing   a simultaneous close: both ends shut down for writing, each FIN stuck behind data
 *             the other has no room for; one end reads all its data and the other's FIN, so it is
 *             in CLOSING (FIN received before its own FIN was acknowledged; the dump meets it
 *             first), its peer in FIN_WAIT2: refused likewise; at go the peer drains and gets
 *             every byte and the end of stream
 *   synsent   a connect() whose SYN a full accept queue drops (SYN_SENT; the listener is a
 *             helper outside the tree): refused likewise
 *   sockerr   a TCP socket whose connection was reset, error not read yet: refused
 *   rawconn   a raw ICMP socket connected to 127.0.0.1: refused
 *   mptcp     an MPTCP socket (a kind criu-bun does not keep): refused
 *   lockfilter a UDP socket whose filter is locked (SO_LOCK_FILTER): refused
 * --selftest-corrupt: replaces the sockets by new unconfigured ones, so the checks must fail.
 */
#define WL_MODES
#include "wl.h"
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <netinet/icmp6.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <arpa/inet.h>
#include <linux/filter.h>
#include <poll.h>

#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif
#ifndef IPPROTO_UDPLITE
#define IPPROTO_UDPLITE 136
#endif
#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78
#endif
/* <linux/icmp.h>'s, which clashes with <netinet/ip_icmp.h> */
#define ICMP_FILTER 1
struct icmp_filter {
	uint32_t data;
};



/* one socket under test: its fd, what it is, and its name as set up */
struct sk {
	const char *what;
	int fd, family, type, proto;
	struct sockaddr_storage name;
	socklen_t namelen;
};
static struct sk sks[32];
static int nsk;

static struct sk *add(const char *what, int fd, int family, int type, int proto) {
	struct sk *s = &sks[nsk++];
	s->what = what, s->fd = fd, s->family = family, s->type = type, s->proto = proto;
	s->namelen = sizeof s->name;
	NEED(getsockname(fd, (struct sockaddr *)&s->name, &s->namelen) == 0);
	return s;
}
static struct sk *find(const char *what) {
	for (int i = 0; i < nsk; i++)
		if (strcmp(sks[i].what, what) == 0) return &sks[i];
	fprintf(stderr, "no socket %s\n", what);
	exit(2);
}

static struct sockaddr_in sin4(const char *a, int port) {
	struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, a, &s.sin_addr);
	return s;
}
static struct sockaddr_in6 sin6(const char *a, int port) {
	struct sockaddr_in6 s = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
	inet_pton(AF_INET6, a, &s.sin6_addr);
	return s;
}
static int geti(int fd, int lvl, int opt) {
	int v = -12345;
	socklen_t l = sizeof v;
	if (getsockopt(fd, lvl, opt, &v, &l) < 0) return -99999;
	return v;
}
static int seti(int fd, int lvl, int opt, int v) { return setsockopt(fd, lvl, opt, &v, sizeof v); }

static int listener4(struct sockaddr_in *where) {
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = sin4("127.0.0.1", 0);
	socklen_t al = sizeof a;
	NEED(l >= 0 && bind(l, (void *)&a, sizeof a) == 0 && listen(l, 8) == 0 && getsockname(l, (void *)&a, &al) == 0);
	*where = a;
	return l;
}
/* a connected pair over loopback: *c the client, return the accepted end */
static int tcp_pair(int *c) {
	struct sockaddr_in a;
	int l = listener4(&a);
	*c = socket(AF_INET, SOCK_STREAM, 0);
	NEED(*c >= 0 && connect(*c, (void *)&a, sizeof a) == 0);
	int s = accept(l, NULL, NULL);
	NEED(s >= 0);
	close(l);
	return s;
}
/* recv with a deadline: a broken restore must fail the check, not hang it */
static ssize_t recv_wait(int fd, void *b, size_t n, int ms) {
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (poll(&p, 1, ms) != 1) return -1;
	return recv(fd, b, n, MSG_DONTWAIT);
}
static int tcp_state(int fd) {
	struct tcp_info ti;
	socklen_t l = sizeof ti;
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0) return -1;
	return ti.tcpi_state;
}
static void wait_state(int fd, int st) {
	for (int i = 0; i < 500 && tcp_state(fd) != st; i++) wl_sleep_ms(10);
	NEED(tcp_state(fd) == st);
}

/* --- closed connections: recv 0, send EPIPE --- */
static void check_closed(struct sk *s) {
	char b[8];
	errno = 0;
	ssize_t n = recv(s->fd, b, sizeof b, MSG_DONTWAIT);
	WL_CHECK(n == 0, "%s: recv gave %zd (errno %d %s), not 0 (end of stream)", s->what, n, errno, strerror(errno));
	errno = 0;
	n = send(s->fd, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	WL_CHECK(n == -1 && errno == EPIPE, "%s: send gave %zd (errno %d %s), not EPIPE", s->what, n, errno, strerror(errno));
	WL_CHECK(geti(s->fd, SOL_SOCKET, SO_TYPE) == SOCK_STREAM, "%s: not a stream socket", s->what);
	WL_CHECK(geti(s->fd, SOL_SOCKET, SO_ERROR) == 0, "%s: an error is pending", s->what);
	wl_detail("%s: closed (state %d)", s->what, tcp_state(s->fd));
}

/* --- states --- */
static uint16_t csum(const void *p, size_t n) {
	const uint16_t *w = p;
	uint32_t s = 0;
	for (; n > 1; n -= 2) s += *w++;
	if (n) s += *(const uint8_t *)w;
	while (s >> 16) s = (s & 0xffff) + (s >> 16);
	return ~s;
}
static int ping(struct sk *s, const char *to, uint16_t seq) {
	char pkt[64] = {0};
	int v6 = s->family == AF_INET6;
	struct icmphdr *h = (void *)pkt;
	h->type = v6 ? ICMP6_ECHO_REQUEST : ICMP_ECHO;
	h->un.echo.sequence = htons(seq);
	memcpy(pkt + 8, "criu-bun", 8);
	struct sockaddr_storage ss;
	socklen_t sl;
	if (v6) { struct sockaddr_in6 a = sin6(to, 0); memcpy(&ss, &a, sizeof a); sl = sizeof a; }
	else { struct sockaddr_in a = sin4(to, 0); memcpy(&ss, &a, sizeof a); sl = sizeof a; }
	if (sendto(s->fd, pkt, 16, 0, (void *)&ss, sl) != 16) return -1;
	char r[128];
	ssize_t n = recv_wait(s->fd, r, sizeof r, 2000);
	struct icmphdr *rh = (void *)r;
	if (n < 16 || rh->type != (v6 ? ICMP6_ECHO_REPLY : ICMP_ECHOREPLY) || ntohs(rh->un.echo.sequence) != seq) return -3;
	return 0;
}

static void setup_states(void) {
	int fd;
	struct sockaddr_in a4;
	struct sockaddr_in6 a6;
	/* TCP */
	NEED((fd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	add("tcp-unbound", fd, AF_INET, SOCK_STREAM, IPPROTO_TCP);
	NEED((fd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	a4 = sin4("127.0.0.1", 0);
	NEED(bind(fd, (void *)&a4, sizeof a4) == 0);
	add("tcp-bound4", fd, AF_INET, SOCK_STREAM, IPPROTO_TCP);
	NEED((fd = socket(AF_INET6, SOCK_STREAM, 0)) >= 0);
	NEED(seti(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1) == 0);
	a6 = sin6("::1", 0);
	NEED(bind(fd, (void *)&a6, sizeof a6) == 0);
	add("tcp-bound6", fd, AF_INET6, SOCK_STREAM, IPPROTO_TCP);
	NEED((fd = socket(AF_INET6, SOCK_STREAM, 0)) >= 0);
	a6 = sin6("::ffff:127.0.0.1", 0);
	NEED(bind(fd, (void *)&a6, sizeof a6) == 0);
	add("tcp-mapped", fd, AF_INET6, SOCK_STREAM, IPPROTO_TCP);
	/* a listener the unbound TCP socket connects to after restore */
	NEED((fd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	a4 = sin4("127.0.0.1", 0);
	NEED(bind(fd, (void *)&a4, sizeof a4) == 0 && listen(fd, 4) == 0);
	add("tcp-listen", fd, AF_INET, SOCK_STREAM, IPPROTO_TCP);
	/* UDP */
	NEED((fd = socket(AF_INET, SOCK_DGRAM, 0)) >= 0);
	add("udp-unbound", fd, AF_INET, SOCK_DGRAM, IPPROTO_UDP);
	NEED((fd = socket(AF_INET6, SOCK_DGRAM, 0)) >= 0);
	a6 = sin6("::1", 0);
	NEED(bind(fd, (void *)&a6, sizeof a6) == 0);
	add("udp-bound6", fd, AF_INET6, SOCK_DGRAM, IPPROTO_UDP);
	NEED((fd = socket(AF_INET6, SOCK_DGRAM, 0)) >= 0);
	a6 = sin6("::ffff:127.0.0.1", 0);
	socklen_t l6 = sizeof a6;
	NEED(bind(fd, (void *)&a6, sizeof a6) == 0 && getsockname(fd, (void *)&a6, &l6) == 0 && connect(fd, (void *)&a6, sizeof a6) == 0);
	add("udp-mapped-self", fd, AF_INET6, SOCK_DGRAM, IPPROTO_UDP);
	/* UDP-Lite connected to itself */
	NEED((fd = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE)) >= 0);
	a4 = sin4("127.0.0.1", 0);
	socklen_t l4 = sizeof a4;
	NEED(bind(fd, (void *)&a4, sizeof a4) == 0 && getsockname(fd, (void *)&a4, &l4) == 0 && connect(fd, (void *)&a4, sizeof a4) == 0);
	add("udplite-self", fd, AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE);
	/* ping sockets (the test allows them: net.ipv4.ping_group_range) */
	NEED((fd = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)) >= 0);
	a4 = sin4("127.0.0.1", 4242);
	NEED(bind(fd, (void *)&a4, sizeof a4) == 0);
	add("ping4", fd, AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
	NEED((fd = socket(AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6)) >= 0);
	add("ping6", fd, AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6);
	/* raw sockets */
	NEED((fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW)) >= 0);
	add("raw-raw", fd, AF_INET, SOCK_RAW, IPPROTO_RAW);
	NEED((fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)) >= 0);
	NEED(seti(fd, IPPROTO_IP, IP_HDRINCL, 1) == 0);
	struct icmp_filter f = {.data = ~(1u << ICMP_ECHOREPLY)}; /* only echo replies */
	NEED(setsockopt(fd, SOL_RAW, ICMP_FILTER, &f, sizeof f) == 0);
	a4 = sin4("127.0.0.1", 0);
	NEED(bind(fd, (void *)&a4, sizeof a4) == 0);
	add("raw-icmp", fd, AF_INET, SOCK_RAW, IPPROTO_ICMP);
	NEED((fd = socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6)) >= 0);
	struct icmp6_filter f6;
	ICMP6_FILTER_SETBLOCKALL(&f6);
	ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &f6);
	NEED(setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &f6, sizeof f6) == 0);
	add("raw-icmp6", fd, AF_INET6, SOCK_RAW, IPPROTO_ICMPV6);
}

static void check_states(void) {
	for (int i = 0; i < nsk; i++) {
		struct sk *s = &sks[i];
		struct sockaddr_storage n;
		socklen_t nl = sizeof n;
		WL_CHECK(getsockname(s->fd, (void *)&n, &nl) == 0 && nl == s->namelen && memcmp(&n, &s->name, nl) == 0, "%s: name changed", s->what);
		WL_CHECK(geti(s->fd, SOL_SOCKET, SO_DOMAIN) == s->family && geti(s->fd, SOL_SOCKET, SO_TYPE) == s->type &&
		             geti(s->fd, SOL_SOCKET, SO_PROTOCOL) == s->proto,
		         "%s: family/type/protocol %d/%d/%d", s->what, geti(s->fd, SOL_SOCKET, SO_DOMAIN), geti(s->fd, SOL_SOCKET, SO_TYPE), geti(s->fd, SOL_SOCKET, SO_PROTOCOL));
	}
	struct sk *l = find("tcp-listen");
	WL_CHECK(geti(l->fd, SOL_SOCKET, SO_ACCEPTCONN) == 1, "tcp-listen does not listen");
	WL_CHECK(geti(find("tcp-bound4")->fd, SOL_SOCKET, SO_ACCEPTCONN) == 0, "tcp-bound4 listens");
	WL_CHECK(geti(find("tcp-bound6")->fd, IPPROTO_IPV6, IPV6_V6ONLY) == 1, "tcp-bound6 lost IPV6_V6ONLY");
	WL_CHECK(geti(find("tcp-mapped")->fd, IPPROTO_IPV6, IPV6_V6ONLY) == 0, "tcp-mapped is v6only");
	/* the unbound TCP socket connects to the listener */
	int c = find("tcp-unbound")->fd;
	WL_CHECK(connect(c, (void *)&l->name, l->namelen) == 0, "tcp-unbound: connect: %m");
	int a = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK);
	WL_CHECK(a >= 0 && send(c, "hi", 2, MSG_DONTWAIT) == 2, "tcp: accept or send failed: %m");
	char b[8] = {0};
	WL_CHECK(a >= 0 && recv_wait(a, b, 2, 2000) == 2 && memcmp(b, "hi", 2) == 0, "tcp: data did not arrive");
	/* the bound TCP socket can listen on its port */
	WL_CHECK(listen(find("tcp-bound4")->fd, 2) == 0, "tcp-bound4: listen on the kept port: %m");
	/* UDP: self-connected ones talk to themselves; the unbound one sends to the bound v6 one */
	for (const char **w = (const char *[]){"udp-mapped-self", "udplite-self", NULL}; *w; w++) {
		int fd = find(*w)->fd;
		memset(b, 0, sizeof b);
		WL_CHECK(send(fd, "dg", 2, MSG_DONTWAIT) == 2 && recv_wait(fd, b, sizeof b, 2000) == 2 && memcmp(b, "dg", 2) == 0, "%s: send to itself failed: %m", *w);
	}
	WL_CHECK(geti(find("udplite-self")->fd, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_UDPLITE, "udplite-self is not UDP-Lite");
	struct sk *u6 = find("udp-bound6");
	int u = socket(AF_INET6, SOCK_DGRAM, 0);
	memset(b, 0, sizeof b);
	WL_CHECK(sendto(u, "v6", 2, 0, (void *)&u6->name, u6->namelen) == 2 && recv_wait(u6->fd, b, sizeof b, 2000) == 2 && memcmp(b, "v6", 2) == 0, "udp-bound6: nothing arrived: %m");
	close(u);
	/* ping sockets answer; the raw ICMP socket (echo replies only) sees the v4 one */
	WL_CHECK(ping(find("ping4"), "127.0.0.1", 7) == 0, "ping4: no echo reply (%m)");
	WL_CHECK(ping(find("ping6"), "::1", 8) == 0, "ping6: no echo reply (%m)");
	struct sk *r = find("raw-icmp");
	char pkt[256];
	ssize_t n = recv_wait(r->fd, pkt, sizeof pkt, 2000);
	WL_CHECK(n >= 28 && pkt[20] == ICMP_ECHOREPLY, "raw-icmp: the echo reply was not seen (%zd)", n);
	WL_CHECK(geti(r->fd, IPPROTO_IP, IP_HDRINCL) == 1, "raw-icmp lost IP_HDRINCL");
	struct icmp_filter f = {0};
	socklen_t fl = sizeof f;
	WL_CHECK(getsockopt(r->fd, SOL_RAW, ICMP_FILTER, &f, &fl) == 0 && f.data == ~(1u << ICMP_ECHOREPLY), "raw-icmp: ICMP_FILTER %#x", f.data);
	WL_CHECK(geti(find("raw-raw")->fd, IPPROTO_IP, IP_HDRINCL) == 1, "raw-raw without IP_HDRINCL");
	struct icmp6_filter f6;
	socklen_t f6l = sizeof f6;
	WL_CHECK(getsockopt(find("raw-icmp6")->fd, IPPROTO_ICMPV6, ICMP6_FILTER, &f6, &f6l) == 0 && !ICMP6_FILTER_WILLBLOCK(ICMP6_ECHO_REPLY, &f6) &&
	             ICMP6_FILTER_WILLBLOCK(ICMP6_ECHO_REQUEST, &f6), "raw-icmp6: ICMP6_FILTER changed");
	/* raw IPPROTO_RAW sends a whole IPv4 packet (an ICMP echo to 127.0.0.1: the ping4 socket... no,
	 * the raw ICMP socket sees the reply) */
	struct {
		struct iphdr ip;
		struct icmphdr icmp;
	} __attribute__((packed)) q = {0};
	q.ip.version = 4, q.ip.ihl = 5, q.ip.ttl = 9, q.ip.protocol = IPPROTO_ICMP, q.ip.tot_len = htons(sizeof q);
	q.ip.saddr = q.ip.daddr = htonl(INADDR_LOOPBACK);
	q.icmp.type = ICMP_ECHO, q.icmp.un.echo.id = htons(77), q.icmp.un.echo.sequence = htons(9);
	q.icmp.checksum = csum(&q.icmp, sizeof q.icmp);
	struct sockaddr_in dst = sin4("127.0.0.1", 0);
	WL_CHECK(sendto(find("raw-raw")->fd, &q, sizeof q, MSG_DONTWAIT, (void *)&dst, sizeof dst) == sizeof q, "raw-raw: send: %m");
	n = recv_wait(r->fd, pkt, sizeof pkt, 2000);
	WL_CHECK(n >= 28 && pkt[20] == ICMP_ECHOREPLY && ntohs(*(uint16_t *)(pkt + 26)) == 9, "raw-raw: its echo request got no reply (%zd)", n);
	wl_detail("sockets=%d", nsk);
}

/* --- options --- */
static struct sock_filter insns[] = {
	{BPF_LD | BPF_W | BPF_LEN, 0, 0, 0},
	{BPF_JMP | BPF_JGT | BPF_K, 0, 1, 1000},
	{BPF_RET | BPF_K, 0, 0, 0},
	{BPF_RET | BPF_K, 0, 0, 0xffff},
};
static int passcred_ok;

static void setup_opts(void) {
	int t, u, v6, lst;
	NEED((t = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	/* IP_TOS sets the priority too: the program's order is TOS, then SO_PRIORITY */
	NEED(seti(t, IPPROTO_IP, IP_TOS, 0x10) == 0);
	NEED(seti(t, SOL_SOCKET, SO_PRIORITY, 5) == 0 && seti(t, SOL_SOCKET, SO_RCVLOWAT, 7) == 0 && seti(t, SOL_SOCKET, SO_MARK, 0x42) == 0);
	NEED(seti(t, SOL_SOCKET, SO_DONTROUTE, 1) == 0 && seti(t, SOL_SOCKET, SO_OOBINLINE, 1) == 0 && seti(t, SOL_SOCKET, SO_BROADCAST, 1) == 0);
	NEED(setsockopt(t, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3) == 0);
	struct linger lg = {1, 13};
	NEED(setsockopt(t, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
	NEED(seti(t, SOL_SOCKET, SO_KEEPALIVE, 1) == 0 && seti(t, IPPROTO_TCP, TCP_KEEPCNT, 3) == 0 && seti(t, IPPROTO_TCP, TCP_KEEPIDLE, 77) == 0 &&
	     seti(t, IPPROTO_TCP, TCP_KEEPINTVL, 11) == 0);
	NEED(seti(t, IPPROTO_TCP, TCP_CORK, 1) == 0 && seti(t, IPPROTO_TCP, TCP_NODELAY, 1) == 0);
	NEED(seti(t, SOL_SOCKET, SO_SNDBUF, 65536) == 0 && seti(t, SOL_SOCKET, SO_REUSEPORT, 1) == 0 && seti(t, SOL_SOCKET, SO_REUSEADDR, 1) == 0);
	NEED(seti(t, IPPROTO_IP, IP_FREEBIND, 1) == 0 && seti(t, IPPROTO_IP, IP_TTL, 33) == 0);
	struct timeval tv = {3, 500000};
	NEED(setsockopt(t, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0 && setsockopt(t, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0);
	struct sock_fprog prog = {sizeof insns / sizeof insns[0], insns};
	NEED(setsockopt(t, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) == 0);
	/* bound with freebind to an address this host does not have */
	struct sockaddr_in a4 = sin4("192.0.2.77", 0);
	NEED(bind(t, (void *)&a4, sizeof a4) == 0);
	add("tcp-opts", t, AF_INET, SOCK_STREAM, IPPROTO_TCP);
	/* SO_PASSCRED/PASSSEC: newer kernels keep them to unix and netlink sockets */
	passcred_ok = seti(t, SOL_SOCKET, SO_PASSCRED, 1) == 0;

	NEED((u = socket(AF_INET, SOCK_DGRAM, 0)) >= 0);
	NEED(seti(u, SOL_SOCKET, SO_NO_CHECK, 1) == 0 && seti(u, IPPROTO_IP, IP_PKTINFO, 1) == 0 && seti(u, SOL_SOCKET, SO_BROADCAST, 1) == 0);
	NEED(seti(u, IPPROTO_IP, IP_TOS, 0x08) == 0 && seti(u, IPPROTO_IP, IP_TTL, 200) == 0 && seti(u, SOL_SOCKET, SO_RCVBUF, 40000) == 0);
	add("udp-opts", u, AF_INET, SOCK_DGRAM, IPPROTO_UDP);

	NEED((v6 = socket(AF_INET6, SOCK_DGRAM, 0)) >= 0);
	NEED(seti(v6, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1) == 0 && seti(v6, IPPROTO_IPV6, IPV6_TCLASS, 0x20) == 0 &&
	     seti(v6, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 17) == 0 && seti(v6, IPPROTO_IPV6, IPV6_FREEBIND, 1) == 0);
	struct sockaddr_in6 a6 = sin6("2001:db8::77", 0);
	NEED(bind(v6, (void *)&a6, sizeof a6) == 0);
	add("udp6-opts", v6, AF_INET6, SOCK_DGRAM, IPPROTO_UDP);

	/* a listener with TCP_NODELAY: accepted sockets inherit it */
	struct sockaddr_in la;
	lst = listener4(&la);
	NEED(seti(lst, IPPROTO_TCP, TCP_NODELAY, 1) == 0 && seti(lst, SOL_SOCKET, SO_KEEPALIVE, 1) == 0);
	add("tcp-listen-nodelay", lst, AF_INET, SOCK_STREAM, IPPROTO_TCP);
}

static void check_opts(void) {
	int t = find("tcp-opts")->fd, u = find("udp-opts")->fd, v6 = find("udp6-opts")->fd, lst = find("tcp-listen-nodelay")->fd;
#define EQ(fd, lvl, opt, want) WL_CHECK(geti(fd, lvl, opt) == (want), #fd " " #opt " is %d, not %d", geti(fd, lvl, opt), (int)(want))
	EQ(t, SOL_SOCKET, SO_PRIORITY, 5);
	EQ(t, SOL_SOCKET, SO_RCVLOWAT, 7);
	EQ(t, SOL_SOCKET, SO_MARK, 0x42);
	EQ(t, SOL_SOCKET, SO_DONTROUTE, 1);
	EQ(t, SOL_SOCKET, SO_OOBINLINE, 1);
	EQ(t, SOL_SOCKET, SO_BROADCAST, 1);
	EQ(t, SOL_SOCKET, SO_KEEPALIVE, 1);
	EQ(t, IPPROTO_TCP, TCP_KEEPCNT, 3);
	EQ(t, IPPROTO_TCP, TCP_KEEPIDLE, 77);
	EQ(t, IPPROTO_TCP, TCP_KEEPINTVL, 11);
	EQ(t, IPPROTO_TCP, TCP_CORK, 1);
	EQ(t, IPPROTO_TCP, TCP_NODELAY, 1);
	EQ(t, SOL_SOCKET, SO_SNDBUF, 131072);
	EQ(t, SOL_SOCKET, SO_BUF_LOCK, 1);
	EQ(t, SOL_SOCKET, SO_REUSEPORT, 1);
	EQ(t, SOL_SOCKET, SO_REUSEADDR, 1);
	EQ(t, IPPROTO_IP, IP_FREEBIND, 1);
	EQ(t, IPPROTO_IP, IP_TOS, 0x10);
	EQ(t, IPPROTO_IP, IP_TTL, 33);
	if (passcred_ok) EQ(t, SOL_SOCKET, SO_PASSCRED, 1);
	char dev[16] = {0};
	socklen_t dl = sizeof dev;
	WL_CHECK(getsockopt(t, SOL_SOCKET, SO_BINDTODEVICE, dev, &dl) == 0 && strcmp(dev, "lo") == 0, "SO_BINDTODEVICE is '%s'", dev);
	struct linger lg = {0};
	socklen_t ll = sizeof lg;
	WL_CHECK(getsockopt(t, SOL_SOCKET, SO_LINGER, &lg, &ll) == 0 && lg.l_onoff == 1 && lg.l_linger == 13, "SO_LINGER %d/%d", lg.l_onoff, lg.l_linger);
	struct timeval tv = {0};
	socklen_t tl = sizeof tv;
	WL_CHECK(getsockopt(t, SOL_SOCKET, SO_RCVTIMEO, &tv, &tl) == 0 && tv.tv_sec == 3 && tv.tv_usec == 500000, "SO_RCVTIMEO %ld.%06ld", (long)tv.tv_sec, (long)tv.tv_usec);
	tl = sizeof tv;
	WL_CHECK(getsockopt(t, SOL_SOCKET, SO_SNDTIMEO, &tv, &tl) == 0 && tv.tv_sec == 3 && tv.tv_usec == 500000, "SO_SNDTIMEO %ld.%06ld", (long)tv.tv_sec, (long)tv.tv_usec);
	struct sock_filter got[8];
	socklen_t gl = 8;
	WL_CHECK(getsockopt(t, SOL_SOCKET, SO_GET_FILTER, got, &gl) == 0 && gl == 4 && memcmp(got, insns, sizeof insns) == 0, "SO_ATTACH_FILTER program changed (%u instructions)", gl);
	struct sockaddr_in a;
	socklen_t al = sizeof a;
	char s[64];
	WL_CHECK(getsockname(t, (void *)&a, &al) == 0 && strcmp(inet_ntop(AF_INET, &a.sin_addr, s, sizeof s), "192.0.2.77") == 0, "tcp-opts bound to %s, not 192.0.2.77", s);

	EQ(u, SOL_SOCKET, SO_NO_CHECK, 1);
	EQ(u, IPPROTO_IP, IP_PKTINFO, 1);
	EQ(u, SOL_SOCKET, SO_BROADCAST, 1);
	EQ(u, IPPROTO_IP, IP_TOS, 0x08);
	EQ(u, IPPROTO_IP, IP_TTL, 200);
	EQ(u, SOL_SOCKET, SO_RCVBUF, 80000);
	EQ(u, SOL_SOCKET, SO_BUF_LOCK, 2);

	EQ(v6, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1);
	EQ(v6, IPPROTO_IPV6, IPV6_TCLASS, 0x20);
	EQ(v6, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 17);
	EQ(v6, IPPROTO_IPV6, IPV6_FREEBIND, 1);
	struct sockaddr_in6 b6;
	socklen_t b6l = sizeof b6;
	WL_CHECK(getsockname(v6, (void *)&b6, &b6l) == 0 && strcmp(inet_ntop(AF_INET6, &b6.sin6_addr, s, sizeof s), "2001:db8::77") == 0, "udp6-opts bound to %s", s);

	EQ(lst, IPPROTO_TCP, TCP_NODELAY, 1);
	EQ(lst, SOL_SOCKET, SO_KEEPALIVE, 1);
	/* accepted connections inherit TCP_NODELAY */
	struct sk *l = find("tcp-listen-nodelay");
	int c = socket(AF_INET, SOCK_STREAM, 0);
	WL_CHECK(connect(c, (void *)&l->name, l->namelen) == 0, "connect to the listener: %m");
	int acc = accept4(lst, NULL, NULL, SOCK_NONBLOCK);
	WL_CHECK(acc >= 0 && geti(acc, IPPROTO_TCP, TCP_NODELAY) == 1, "the accepted socket has no TCP_NODELAY");
	wl_detail("passcred=%s", passcred_ok ? "set" : "refused by the kernel for inet sockets");
#undef EQ
}

/* --- refusals --- */
static pid_t helper;
static long closing_sent; /* closing: bytes the CLOSING end sent its peer */

static void setup(void) {
	if (is("tcpclose")) {
		int c1, c2;
		int a1 = tcp_pair(&c1), a2 = tcp_pair(&c2);
		NEED(shutdown(c2, SHUT_WR) == 0);
		wait_state(c2, TCP_FIN_WAIT2);
		wait_state(a2, TCP_CLOSE_WAIT);
		add("client", c1, AF_INET, SOCK_STREAM, IPPROTO_TCP);
		add("server", a1, AF_INET, SOCK_STREAM, IPPROTO_TCP);
		add("fin-wait2", c2, AF_INET, SOCK_STREAM, IPPROTO_TCP);
		add("close-wait", a2, AF_INET, SOCK_STREAM, IPPROTO_TCP);
	} else if (is("reset") || is("sockerr")) {
		int c;
		int a = tcp_pair(&c);
		struct linger lg = {1, 0};
		NEED(setsockopt(a, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0 && close(a) == 0);
		wait_state(c, TCP_CLOSE);
		if (is("reset")) {
			char b;
			NEED(recv(c, &b, 1, 0) == -1 && errno == ECONNRESET);
		}
		add("reset", c, AF_INET, SOCK_STREAM, IPPROTO_TCP);
	} else if (is("states")) {
		setup_states();
	} else if (is("opts")) {
		setup_opts();
	} else if (is("halfest")) {
		int c;
		int a = tcp_pair(&c);
		NEED(shutdown(c, SHUT_WR) == 0);
		wait_state(a, TCP_CLOSE_WAIT);
		add("fin-wait2", c, AF_INET, SOCK_STREAM, IPPROTO_TCP);
		add("close-wait", a, AF_INET, SOCK_STREAM, IPPROTO_TCP);
	} else if (is("closewait")) {
		int c;
		int a = tcp_pair(&c);
		int lo = dup(a); /* the CLOSE_WAIT end below its peer's fd number: the dump meets it first */
		NEED(lo >= 0 && lo < c);
		close(a);
		NEED(shutdown(c, SHUT_WR) == 0);
		wait_state(lo, TCP_CLOSE_WAIT);
		add("close-wait", lo, AF_INET, SOCK_STREAM, IPPROTO_TCP);
		add("fin-wait2", c, AF_INET, SOCK_STREAM, IPPROTO_TCP);
	} else if (is("closing")) {
		/* both ends fill the other's small receive buffer and shut down for writing: both FINs wait
		 * unsent behind data (FIN_WAIT1 both). The CLOSING end then reads everything its peer sent,
		 * which opens its window: the peer's last data and FIN arrive while its own FIN is still
		 * stuck (the peer reads nothing), so it moves to CLOSING, its peer (FIN acknowledged) to
		 * FIN_WAIT2, for good */
		int c;
		int a = tcp_pair(&c);
		int lo = dup(a);
		NEED(lo >= 0 && lo < c);
		close(a);
		a = lo;
		int small = 4096;
		NEED(seti(a, SOL_SOCKET, SO_RCVBUF, small) == 0 && seti(c, SOL_SOCKET, SO_RCVBUF, small) == 0);
		NEED(seti(a, SOL_SOCKET, SO_SNDBUF, small) == 0 && seti(c, SOL_SOCKET, SO_SNDBUF, small) == 0);
		char junk[4096];
		memset(junk, 'j', sizeof junk);
		for (int round = 0; round < 2; round++) {
			ssize_t n;
			for (int i = 0; i < 10000 && (n = send(a, junk, sizeof junk, MSG_DONTWAIT)) > 0; i++) closing_sent += n;
			for (int i = 0; i < 10000 && send(c, junk, sizeof junk, MSG_DONTWAIT) > 0; i++) {}
			wl_sleep_ms(50); /* what can still go goes; both windows are closed */
		}
		NEED(shutdown(a, SHUT_WR) == 0 && shutdown(c, SHUT_WR) == 0);
		wait_state(a, TCP_FIN_WAIT1);
		wait_state(c, TCP_FIN_WAIT1);
		/* the CLOSING end reads to the end of stream (its peer's FIN), with a deadline */
		char b[65536];
		ssize_t n = -1;
		for (int i = 0; i < 1000; i++) {
			struct pollfd pa = {.fd = a, .events = POLLIN};
			if (poll(&pa, 1, 10) < 0) break;
			n = recv(a, b, sizeof b, MSG_DONTWAIT);
			if (n == 0 || (n < 0 && errno != EAGAIN)) break;
		}
		NEED(n == 0);
		wait_state(a, TCP_CLOSING);
		wait_state(c, TCP_FIN_WAIT2);
		add("closing", a, AF_INET, SOCK_STREAM, IPPROTO_TCP);
		add("peer", c, AF_INET, SOCK_STREAM, IPPROTO_TCP);
	} else if (is("finwait1") || is("lastack")) {
		/* the FIN waits behind data the peer has no room for (a zero window), so it stays unsent
		 * and unacknowledged: FIN_WAIT1 (or LAST_ACK after the peer's own FIN) for good */
		int c;
		int a = tcp_pair(&c);
		if (is("lastack")) { /* the LAST_ACK end below its peer's fd number: the dump meets it first */
			int lo = dup(a);
			NEED(lo >= 0 && lo < c);
			close(a);
			a = lo;
		}
		int small = 4096;
		int *snd = is("finwait1") ? &c : &a, *rcv = is("finwait1") ? &a : &c;
		NEED(seti(*rcv, SOL_SOCKET, SO_RCVBUF, small) == 0 && seti(*snd, SOL_SOCKET, SO_SNDBUF, small) == 0);
		if (is("lastack")) {
			NEED(shutdown(c, SHUT_WR) == 0);
			wait_state(a, TCP_CLOSE_WAIT);
		}
		char junk[4096];
		memset(junk, 'j', sizeof junk);
		for (int i = 0; i < 10000 && send(*snd, junk, sizeof junk, MSG_DONTWAIT) > 0; i++) {}
		wl_sleep_ms(50); /* what can still go goes; the peer's window is closed */
		for (int i = 0; i < 10000 && send(*snd, junk, sizeof junk, MSG_DONTWAIT) > 0; i++) {}
		NEED(shutdown(*snd, SHUT_WR) == 0);
		wait_state(*snd, is("finwait1") ? TCP_FIN_WAIT1 : TCP_LAST_ACK);
		add(is("finwait1") ? "fin-wait1" : "last-ack", *snd, AF_INET, SOCK_STREAM, IPPROTO_TCP);
		add("peer", *rcv, AF_INET, SOCK_STREAM, IPPROTO_TCP);
	} else if (is("synsent")) {
		/* a helper outside the tree listens with backlog 0 and one connection it never accepts:
		 * the accept queue is full, so our SYN is dropped and retried (SYN_SENT for a minute) */
		int p[2];
		NEED(pipe(p) == 0);
		pid_t c = fork();
		if (c == 0) {
			setsid();
			if (fork() == 0) {
				int l = socket(AF_INET, SOCK_STREAM, 0);
				struct sockaddr_in a = sin4("127.0.0.1", 0);
				socklen_t al = sizeof a;
				if (l < 0 || bind(l, (void *)&a, sizeof a) != 0 || listen(l, 0) != 0 || getsockname(l, (void *)&a, &al) != 0) _exit(1);
				int s = socket(AF_INET, SOCK_STREAM, 0);
				if (connect(s, (void *)&a, sizeof a) != 0) _exit(1);
				pid_t me = getpid();
				write(p[1], &me, sizeof me);
				write(p[1], &a, sizeof a);
				for (;;) pause();
			}
			_exit(0);
		}
		waitpid(c, NULL, 0);
		struct sockaddr_in la;
		NEED(read(p[0], &helper, sizeof helper) == sizeof helper && read(p[0], &la, sizeof la) == sizeof la);
		close(p[0]), close(p[1]);
		char b[32];
		snprintf(b, sizeof b, "%d\n", helper);
		wl_write_file("ext-pid", b, strlen(b));
		wl_sleep_ms(100); /* the helper's connection settles in its accept queue */
		int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		NEED(s >= 0 && connect(s, (void *)&la, sizeof la) == -1 && errno == EINPROGRESS);
		wl_sleep_ms(200);
		NEED(tcp_state(s) == TCP_SYN_SENT);
		add("syn-sent", s, AF_INET, SOCK_STREAM, IPPROTO_TCP);
	} else if (is("inflight") || is("synrecv")) {
		struct sockaddr_in la;
		int l = listener4(&la);
		/* synrecv: with TCP_DEFER_ACCEPT the handshake's last ACK (no data) is dropped, so the
		 * connection stays a request socket (SYN_RECV) in the listener's SYN queue */
		if (is("synrecv")) NEED(seti(l, IPPROTO_TCP, TCP_DEFER_ACCEPT, 60) == 0);
		add("listener", l, AF_INET, SOCK_STREAM, IPPROTO_TCP);
		int p[2];
		NEED(pipe(p) == 0);
		/* the client is a grandchild outside the tree: it connects and waits to be killed */
		pid_t c = fork();
		if (c == 0) {
			setsid();
			if (fork() == 0) {
				close(l); /* the listener is the tree's alone */
				int s = socket(AF_INET, SOCK_STREAM, 0);
				if (connect(s, (void *)&la, sizeof la) != 0) _exit(1);
				pid_t me = getpid();
				write(p[1], &me, sizeof me);
				for (;;) pause();
			}
			_exit(0);
		}
		waitpid(c, NULL, 0);
		NEED(read(p[0], &helper, sizeof helper) == sizeof helper);
		close(p[0]), close(p[1]);
		char b[32];
		snprintf(b, sizeof b, "%d\n", helper);
		wl_write_file("ext-pid", b, strlen(b));
		if (is("synrecv")) {
			/* wait (5 s at most) until /proc/net/tcp shows the request: local port ours, state 03 */
			char want[32], line[512];
			snprintf(want, sizeof want, ":%04X", ntohs(la.sin_port));
			int seen = 0;
			for (int i = 0; i < 500 && !seen; i++) {
				FILE *f = fopen("/proc/net/tcp", "r");
				NEED(f != NULL);
				while (fgets(line, sizeof line, f)) {
					char loc[64], rem[64], st[8];
					if (sscanf(line, "%*d: %63s %63s %7s", loc, rem, st) == 3 && strstr(loc, want) && !strcmp(st, "03")) seen = 1;
				}
				fclose(f);
				if (!seen) wl_sleep_ms(10);
			}
			NEED(seen);
		}
	} else if (is("rawconn")) {
		int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
		struct sockaddr_in a = sin4("127.0.0.1", 0);
		NEED(fd >= 0 && connect(fd, (void *)&a, sizeof a) == 0);
		add("rawconn", fd, AF_INET, SOCK_RAW, IPPROTO_ICMP);
	} else if (is("mptcp")) {
		int fd = socket(AF_INET, SOCK_STREAM, 262 /* IPPROTO_MPTCP */);
		NEED(fd >= 0);
		add("mptcp", fd, AF_INET, SOCK_STREAM, 262);
	} else if (is("lockfilter")) {
		int fd = socket(AF_INET, SOCK_DGRAM, 0);
		struct sock_fprog prog = {sizeof insns / sizeof insns[0], insns};
		NEED(fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) == 0 && seti(fd, SOL_SOCKET, SO_LOCK_FILTER, 1) == 0);
		add("lockfilter", fd, AF_INET, SOCK_DGRAM, IPPROTO_UDP);
	} else {
		fprintf(stderr, "inetsk: unknown mode %s\n", mode);
		exit(2);
	}
}

static void corrupt(void) {
	/* what a wrong restore would give: new sockets of the same kind, nothing set, never connected */
	for (int i = 0; i < nsk; i++) {
		struct sk *s = &sks[i];
		int n = socket(s->family, s->type, s->proto);
		if (n >= 0) dup2(n, s->fd), close(n);
	}
}

static void check(void) {
	if (is("tcpclose")) {
		for (int i = 0; i < nsk; i++) check_closed(&sks[i]);
	} else if (is("reset")) {
		check_closed(find("reset"));
		struct sk *s = find("reset");
		struct sockaddr_storage n;
		socklen_t nl = sizeof n;
		WL_CHECK(getsockname(s->fd, (void *)&n, &nl) == 0 && nl == s->namelen && memcmp(&n, &s->name, nl) == 0, "reset: name changed");
	} else if (is("states")) {
		check_states();
	} else if (is("opts")) {
		check_opts();
	} else if (is("inflight") || is("synrecv")) {
		/* dump refused or (--skip-in-flight) restored: either way the listener still listens */
		struct sk *l = find("listener");
		WL_CHECK(geti(l->fd, SOL_SOCKET, SO_ACCEPTCONN) == 1, "listener does not listen");
		int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		WL_CHECK(connect(c, (void *)&l->name, l->namelen) == 0 || errno == EINPROGRESS, "connect to the listener: %m");
		struct pollfd pc = {.fd = c, .events = POLLOUT};
		WL_CHECK(poll(&pc, 1, 2000) == 1 && geti(c, SOL_SOCKET, SO_ERROR) == 0, "the connection to the listener failed");
		if (helper > 0) kill(helper, SIGKILL);
	} else if (is("halfest")) {
		WL_CHECK(tcp_state(find("fin-wait2")->fd) == TCP_FIN_WAIT2, "fin-wait2 is in state %d", tcp_state(find("fin-wait2")->fd));
		WL_CHECK(tcp_state(find("close-wait")->fd) == TCP_CLOSE_WAIT, "close-wait is in state %d", tcp_state(find("close-wait")->fd));
	} else if (is("closewait")) {
		WL_CHECK(tcp_state(find("close-wait")->fd) == TCP_CLOSE_WAIT, "close-wait is in state %d", tcp_state(find("close-wait")->fd));
		WL_CHECK(tcp_state(find("fin-wait2")->fd) == TCP_FIN_WAIT2, "fin-wait2 is in state %d", tcp_state(find("fin-wait2")->fd));
	} else if (is("closing")) {
		int a = find("closing")->fd, c = find("peer")->fd;
		WL_CHECK(tcp_state(a) == TCP_CLOSING, "closing is in state %d", tcp_state(a));
		WL_CHECK(tcp_state(c) == TCP_FIN_WAIT2, "its peer is in state %d", tcp_state(c));
		/* the peer reads: every byte the CLOSING end sent, then its FIN */
		long got = 0;
		ssize_t n = -1;
		char b[65536];
		for (int i = 0; i < 1000; i++) {
			struct pollfd pc = {.fd = c, .events = POLLIN};
			if (poll(&pc, 1, 10) < 0) break;
			n = recv(c, b, sizeof b, MSG_DONTWAIT);
			if (n > 0) got += n;
			else if (n == 0 || errno != EAGAIN) break;
		}
		WL_CHECK(n == 0 && got == closing_sent, "the peer read %ld of %ld bytes (last recv %zd)", got, closing_sent, n);
	} else if (is("synsent")) {
		WL_CHECK(tcp_state(find("syn-sent")->fd) == TCP_SYN_SENT, "syn-sent is in state %d", tcp_state(find("syn-sent")->fd));
	} else if (is("finwait1") || is("lastack")) {
		const char *n = is("finwait1") ? "fin-wait1" : "last-ack";
		int want = is("finwait1") ? TCP_FIN_WAIT1 : TCP_LAST_ACK;
		WL_CHECK(tcp_state(find(n)->fd) == want, "%s is in state %d", n, tcp_state(find(n)->fd));
		WL_CHECK(tcp_state(find("peer")->fd) == (is("finwait1") ? TCP_ESTABLISHED : TCP_FIN_WAIT2), "its peer is in state %d", tcp_state(find("peer")->fd));
	} else if (is("sockerr")) {
		WL_CHECK(geti(find("reset")->fd, SOL_SOCKET, SO_ERROR) == ECONNRESET, "the pending ECONNRESET is gone");
	} else if (is("mptcp")) {
		WL_CHECK(geti(find("mptcp")->fd, SOL_SOCKET, SO_PROTOCOL) == 262, "not an MPTCP socket any more");
	} else if (is("lockfilter")) {
		WL_CHECK(geti(find("lockfilter")->fd, SOL_SOCKET, SO_LOCK_FILTER) == 1, "the filter is not locked any more");
	} else if (is("rawconn")) {
		struct sockaddr_in p;
		socklen_t pl = sizeof p;
		WL_CHECK(tcp_state(find("rawconn")->fd) == -1 && getpeername(find("rawconn")->fd, (void *)&p, &pl) == -1, "rawconn: unexpected");
		WL_CHECK(send(find("rawconn")->fd, "\x08\0\0\0\0\0\0\0", 8, 0) == 8, "rawconn: send without an address failed: %m");
	}
}

int main(int argc, char **argv) { wl_mode_main(argc, argv, "inetsk", setup, corrupt, check, 1); }
