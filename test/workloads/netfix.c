/*
 * netfix: inet socket and shared task states criu-bun once restored wrong (session 28); each
 * refused mode holds the state at go unchanged (the dump must refuse it and leave it alone), the
 * exact one checks every piece after restore.
 *
 *   netfix DIR MODE [ARG]
 *   shared     exact: a UDP socket with an owner, a signal and O_ASYNC|O_NONBLOCK (a datagram sent at
 *              go raises SIGUSR1 once); a child sharing the fd table (CLONE_FILES) and another
 *              sharing cwd and umask (CLONE_FS): at go each changes something the parent must see
 *              (a new fd, umask 077 and cwd /); a file opened O_NOATIME at fd 1000 whose open file
 *              description a forked child shares: the child sets O_APPEND|O_NONBLOCK on it and moves
 *              the offset at go, and the parent sees both (ARG nofs: no CLONE_FS child, for CRIU 4.2)
 *   reuseport  exact: two TCP listeners and two UDP sockets sharing a port each with SO_REUSEPORT (the
 *              restore set it after bind: the second bind failed); at go 64 connections and 64
 *              datagrams from new sockets are spread over both of each pair
 *   shutwr     exact: a bound TCP socket shut down for writing before it ever connected (the shutdown
 *              was lost); at go it connects to a listener of its own and send() says EPIPE
 *   opt NAME   refused (sockopt): an option no image field holds, set on a new socket (a table below:
 *              SO_TIMESTAMP, IP_TRANSPARENT, TCP_USER_TIMEOUT, IP_TOS of an IPv6 socket, ...); at go
 *              getsockopt still says so
 *   udpqueue   refused (inet-queue): a bound UDP socket with two datagrams from itself queued (the
 *              second empty); at go both are read in order
 *   udpshutq   refused (inet-queue): the same socket shut down for reading, one empty datagram queued
 *   pingqueue  refused (inet-queue): an ICMP ping socket with the echo reply queued (needs
 *              net.ipv4.ping_group_range)
 *   rstdata    refused (inet-queue): a TCP connection reset by its peer after 5 bytes, the error taken
 *              with SO_ERROR: the bytes still wait (recv gives them, then 0)
 *   mcast      refused (inet-multicast): a UDP socket in group 239.1.2.3 on lo (joining again says
 *              EADDRINUSE at go)
 *   mcast6     refused (inet-multicast): an IPv6 UDP socket in group ff05::1:3 on lo
 * --selftest-corrupt: undoes the state (reads the queue, leaves the group, resets the option, closes
 *   the shared fd), so the checks must fail.
 */
#define WL_MODES
#include "wl.h"
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <net/if.h>

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

static int a, b, rp[4], rport[2];
static int *shm; /* [0] go for the children, [1] the CLONE_FILES child's new fd, [2] children done */
static pid_t kids[3];
static char stacks[2][1 << 16] __attribute__((aligned(16)));
static volatile sig_atomic_t sigs;
static void on_usr1(int s) {
	(void)s;
	sigs++;
}
static struct sockaddr_in lo4(int port) {
	struct sockaddr_in x = {AF_INET, htons(port), {htonl(INADDR_LOOPBACK)}, {0}};
	return x;
}
static int port_of(int fd) {
	struct sockaddr_in6 x;
	socklen_t l = sizeof x;
	getsockname(fd, (void *)&x, &l);
	return ntohs(x.sin6_port);
}

/* opt NAME: family, type, protocol, level, option, value (an int; TCP_CONGESTION a name) */
struct opt {
	const char *name;
	int fam, type, proto, lvl, opt, val;
	const char *str;
	int listen;
};
static const struct opt opts[] = {
    {"timestamp", AF_INET, SOCK_DGRAM, 0, SOL_SOCKET, SO_TIMESTAMP, 1, NULL, 0},
    {"transparent", AF_INET, SOCK_STREAM, 0, SOL_IP, IP_TRANSPARENT, 1, NULL, 0},
    {"recverr", AF_INET, SOCK_DGRAM, 0, SOL_IP, IP_RECVERR, 1, NULL, 0},
    {"mcttl", AF_INET, SOCK_DGRAM, 0, SOL_IP, IP_MULTICAST_TTL, 7, NULL, 0},
    {"v6tos", AF_INET6, SOCK_DGRAM, 0, SOL_IP, IP_TOS, 0x20, NULL, 0},
    {"v6recverr", AF_INET6, SOCK_DGRAM, 0, SOL_IPV6, IPV6_RECVERR, 1, NULL, 0},
    {"usertimeout", AF_INET, SOCK_STREAM, 0, SOL_TCP, TCP_USER_TIMEOUT, 12345, NULL, 1},
    {"maxseg", AF_INET, SOCK_STREAM, 0, SOL_TCP, TCP_MAXSEG, 1000, NULL, 1},
    {"congestion", AF_INET, SOCK_STREAM, 0, SOL_TCP, TCP_CONGESTION, 0, "reno", 0},
    {"udpgro", AF_INET, SOCK_DGRAM, 0, IPPROTO_UDP, UDP_GRO, 1, NULL, 0},
    {NULL, 0, 0, 0, 0, 0, 0, NULL, 0},
};
static const struct opt *cur;
static const char *optname = "";
static int nofs; /* shared nofs */
static char want[32];
static socklen_t wantlen;

static int child_files(void *x) {
	(void)x;
	while (!shm[0]) usleep(1000);
	shm[1] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	__sync_fetch_and_add(&shm[2], 1);
	for (;;) pause();
	return 0;
}
static int child_fs(void *x) {
	(void)x;
	while (!shm[0]) usleep(1000);
	umask(077);
	if (chdir("/") != 0) _exit(3);
	__sync_fetch_and_add(&shm[2], 1);
	for (;;) pause();
	return 0;
}

static void setup(void) {
	if (is("shared")) {
		shm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		NEED(shm != MAP_FAILED);
		signal(SIGUSR1, on_usr1);
		a = socket(AF_INET, SOCK_DGRAM, 0);
		struct sockaddr_in x = lo4(0);
		NEED(bind(a, (void *)&x, sizeof x) == 0);
		NEED(fcntl(a, F_SETOWN, getpid()) == 0);
		NEED(fcntl(a, F_SETSIG, SIGUSR1) == 0);
		NEED(fcntl(a, F_SETFL, O_ASYNC | O_NONBLOCK) == 0);
		char p[4200];
		wl_path(p, sizeof p, "noatime");
		int f = open(p, O_RDWR | O_CREAT | O_NOATIME, 0600);
		NEED(f >= 0);
		NEED(write(f, "0123456789", 10) == 10);
		NEED(dup2(f, 1000) == 1000);
		close(f);
		umask(022);
		NEED(chdir(wl_dir) == 0);
		kids[0] = clone(child_files, stacks[0] + sizeof stacks[0], CLONE_FILES | SIGCHLD, NULL);
		/* (nofs: CRIU 4.2 refuses a shared fs at dump, and its restore does not share one) */
		if (!nofs) kids[1] = clone(child_fs, stacks[1] + sizeof stacks[1], CLONE_FS | SIGCHLD, NULL);
		else kids[1] = fork();
		if (kids[1] == 0) {
			while (!shm[0]) usleep(1000);
			__sync_fetch_and_add(&shm[2], 1);
			for (;;) pause();
		}
		NEED(kids[0] > 0 && kids[1] > 0);
		kids[2] = fork();
		NEED(kids[2] >= 0);
		if (kids[2] == 0) {
			while (!shm[0]) usleep(1000);
			fcntl(1000, F_SETFL, fcntl(1000, F_GETFL) | O_APPEND | O_NONBLOCK);
			lseek(1000, 3, SEEK_SET);
			__sync_fetch_and_add(&shm[2], 1);
			for (;;) pause();
		}
	} else if (is("reuseport")) {
		for (int i = 0; i < 4; i++) {
			int one = 1, tcp = i < 2;
			rp[i] = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
			NEED(setsockopt(rp[i], SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0);
			struct sockaddr_in x = lo4(rport[!tcp]);
			NEED(bind(rp[i], (void *)&x, sizeof x) == 0);
			rport[!tcp] = port_of(rp[i]);
			if (tcp) NEED(listen(rp[i], 128) == 0);
			NEED(fcntl(rp[i], F_SETFL, O_NONBLOCK) == 0);
		}
	} else if (is("shutwr")) {
		int one = 1;
		b = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in x = lo4(0);
		NEED(setsockopt(b, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
		NEED(bind(b, (void *)&x, sizeof x) == 0 && listen(b, 4) == 0);
		a = socket(AF_INET, SOCK_STREAM, 0);
		NEED(bind(a, (void *)&x, sizeof x) == 0);
		/* not connected: ENOTCONN, but shut down all the same */
		NEED(shutdown(a, SHUT_WR) == 0 || errno == ENOTCONN);
	} else if (is("opt")) {
		for (cur = opts; cur->name && strcmp(cur->name, optname); cur++) {
		}
		NEED(cur->name != NULL);
		a = socket(cur->fam, cur->type, cur->proto);
		NEED(a >= 0);
		if (cur->str) NEED(setsockopt(a, cur->lvl, cur->opt, cur->str, strlen(cur->str)) == 0);
		else NEED(setsockopt(a, cur->lvl, cur->opt, &cur->val, sizeof cur->val) == 0);
		struct sockaddr_in6 x6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
		struct sockaddr_in x = lo4(0);
		if (cur->fam == AF_INET6) NEED(bind(a, (void *)&x6, sizeof x6) == 0);
		else NEED(bind(a, (void *)&x, sizeof x) == 0);
		if (cur->listen) NEED(listen(a, 4) == 0);
		wantlen = sizeof want;
		NEED(getsockopt(a, cur->lvl, cur->opt, want, &wantlen) == 0);
	} else if (is("udpqueue") || is("udpshutq")) {
		a = socket(AF_INET, SOCK_DGRAM, 0);
		struct sockaddr_in x = lo4(0);
		NEED(bind(a, (void *)&x, sizeof x) == 0);
		x = lo4(port_of(a));
		if (is("udpqueue")) NEED(sendto(a, "one", 3, 0, (void *)&x, sizeof x) == 3);
		NEED(sendto(a, "", 0, 0, (void *)&x, sizeof x) == 0);
		/* not connected: ENOTCONN, but shut down all the same */
		if (is("udpshutq")) NEED(shutdown(a, SHUT_RD) == 0 || errno == ENOTCONN);
	} else if (is("pingqueue")) {
		a = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
		NEED(a >= 0);
		struct icmphdr h = {.type = ICMP_ECHO, .un.echo.sequence = htons(7)};
		struct sockaddr_in x = lo4(0);
		NEED(sendto(a, &h, sizeof h, 0, (void *)&x, sizeof x) == sizeof h);
	} else if (is("rstdata")) {
		int l = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in x = lo4(0);
		NEED(bind(l, (void *)&x, sizeof x) == 0 && listen(l, 1) == 0);
		a = socket(AF_INET, SOCK_STREAM, 0);
		x = lo4(port_of(l));
		NEED(connect(a, (void *)&x, sizeof x) == 0);
		b = accept(l, NULL, NULL);
		NEED(b >= 0);
		close(l);
		NEED(write(b, "hello", 5) == 5);
		struct linger lg = {1, 0};
		NEED(setsockopt(b, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
		close(b);
		int e = 0;
		socklen_t el = sizeof e;
		for (int i = 0; i < 500 && e != ECONNRESET; i++) {
			wl_sleep_ms(2);
			getsockopt(a, SOL_SOCKET, SO_ERROR, &e, &el);
		}
		NEED(e == ECONNRESET);
	} else if (is("mcast")) {
		a = socket(AF_INET, SOCK_DGRAM, 0);
		struct ip_mreqn m = {{inet_addr("239.1.2.3")}, {0}, (int)if_nametoindex("lo")};
		NEED(setsockopt(a, SOL_IP, IP_ADD_MEMBERSHIP, &m, sizeof m) == 0);
	} else if (is("mcast6")) {
		a = socket(AF_INET6, SOCK_DGRAM, 0);
		struct ipv6_mreq m = {.ipv6mr_interface = if_nametoindex("lo")};
		inet_pton(AF_INET6, "ff05::1:3", &m.ipv6mr_multiaddr);
		NEED(setsockopt(a, SOL_IPV6, IPV6_ADD_MEMBERSHIP, &m, sizeof m) == 0);
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		exit(2);
	}
}

static void corrupt(void) {
	char buf[16];
	if (is("shared")) {
		close(1000);
	} else if (is("shutwr")) {
		int t = socket(AF_INET, SOCK_STREAM, 0);
		dup2(t, a);
		close(t);
	} else if (is("reuseport")) {
		close(rp[1]);
		close(rp[3]);
	} else if (is("opt")) {
		char fresh[32];
		socklen_t fl = sizeof fresh;
		int t = socket(cur->fam, cur->type, cur->proto);
		getsockopt(t, cur->lvl, cur->opt, fresh, &fl);
		setsockopt(a, cur->lvl, cur->opt, fresh, cur->str ? strlen(fresh) : fl);
		close(t);
	} else if (is("udpqueue") || is("udpshutq") || is("pingqueue")) {
		while (recv(a, buf, sizeof buf, MSG_DONTWAIT) >= 0) {
		}
	} else if (is("rstdata")) {
		(void)!read(a, buf, sizeof buf);
	} else if (is("mcast")) {
		struct ip_mreqn m = {{inet_addr("239.1.2.3")}, {0}, (int)if_nametoindex("lo")};
		setsockopt(a, SOL_IP, IP_DROP_MEMBERSHIP, &m, sizeof m);
	} else if (is("mcast6")) {
		struct ipv6_mreq m = {.ipv6mr_interface = if_nametoindex("lo")};
		inet_pton(AF_INET6, "ff05::1:3", &m.ipv6mr_multiaddr);
		setsockopt(a, SOL_IPV6, IPV6_DROP_MEMBERSHIP, &m, sizeof m);
	}
}

static void check_shared(void) {
	shm[0] = 1;
	for (int i = 0; i < 500 && shm[2] < 3; i++) wl_sleep_ms(10);
	WL_CHECK(shm[2] == 3, "only %d of 3 children answered", shm[2]);
	/* the CLONE_FILES child's new fd is in this table too */
	WL_CHECK(shm[1] > 0 && fcntl(shm[1], F_GETFD) == FD_CLOEXEC, "fd %d the CLONE_FILES child opened: not here", shm[1]);
	/* the CLONE_FS child's umask and cwd are ours */
	mode_t m = umask(0);
	WL_CHECK(m == (nofs ? 022 : 077), "umask %03o, the CLONE_FS child set 077", (unsigned)m);
	char cwd[256] = "";
	WL_CHECK(getcwd(cwd, sizeof cwd) && strcmp(cwd, nofs ? wl_dir : "/") == 0, "cwd %s, the CLONE_FS child went to /", cwd);
	/* one open file description with the forked child: its flags and offset */
	int fl = fcntl(1000, F_GETFL);
	WL_CHECK(fl >= 0 && (fl & (O_APPEND | O_NONBLOCK | O_NOATIME)) == (O_APPEND | O_NONBLOCK | O_NOATIME),
	         "fd 1000 flags 0%o: want O_APPEND|O_NONBLOCK (set by the child) and O_NOATIME", fl);
	off_t off = lseek(1000, 0, SEEK_CUR);
	WL_CHECK(off == 3, "fd 1000 offset %lld, the child moved it to 3", (long long)off);
	/* the socket's owner, signal and flags: a datagram raises SIGUSR1 */
	WL_CHECK(fcntl(a, F_GETOWN) == getpid(), "socket owner %d", fcntl(a, F_GETOWN));
	WL_CHECK(fcntl(a, F_GETSIG) == SIGUSR1, "socket signal %d", fcntl(a, F_GETSIG));
	fl = fcntl(a, F_GETFL);
	WL_CHECK((fl & (O_ASYNC | O_NONBLOCK)) == (O_ASYNC | O_NONBLOCK), "socket flags 0%o", fl);
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in x = lo4(port_of(a));
	WL_CHECK(sendto(s, "z", 1, 0, (void *)&x, sizeof x) == 1, "sendto the socket: %m");
	for (int i = 0; i < 200 && !sigs; i++) wl_sleep_ms(5);
	WL_CHECK(sigs == 1, "%d SIGUSR1 for a datagram, want 1", (int)sigs);
	for (int i = 0; i < 3; i++) {
		kill(kids[i], SIGKILL);
		waitpid(kids[i], NULL, 0);
	}
}

/* 64 connections (TCP) or datagrams (UDP) from new sockets: how many each of a pair got */
static void spread(int tcp) {
	int got[2] = {0, 0};
	char c;
	for (int i = 0; i < 64; i++) {
		int s = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
		struct sockaddr_in x = lo4(rport[!tcp]);
		if (tcp) WL_CHECK(connect(s, (void *)&x, sizeof x) == 0, "connect to the listeners: %m");
		else WL_CHECK(sendto(s, "x", 1, 0, (void *)&x, sizeof x) == 1, "sendto the UDP pair: %m");
		close(s);
	}
	for (int t = 0; t < 200 && got[0] + got[1] < 64; t++) {
		for (int k = 0; k < 2; k++) {
			int fd = rp[(tcp ? 0 : 2) + k], r;
			while ((r = tcp ? accept(fd, NULL, NULL) : (int)recv(fd, &c, 1, MSG_DONTWAIT)) >= 0) {
				got[k]++;
				if (tcp) close(r);
			}
		}
		if (got[0] + got[1] < 64) wl_sleep_ms(5);
	}
	WL_CHECK(got[0] > 0 && got[1] > 0 && got[0] + got[1] == 64, "%s reuseport pair: %d and %d of 64", tcp ? "TCP" : "UDP",
	         got[0], got[1]);
}

static void check(void) {
	char buf[32] = "";
	ssize_t n;
	if (is("shared")) {
		check_shared();
	} else if (is("shutwr")) {
		struct sockaddr_in x = lo4(port_of(b));
		WL_CHECK(connect(a, (void *)&x, sizeof x) == 0, "connect: %m");
		n = send(a, "x", 1, MSG_NOSIGNAL);
		WL_CHECK(n < 0 && errno == EPIPE, "send after shutdown(SHUT_WR): %zd (%m), want EPIPE", n);
		/* (no FIN goes out: the peer's side just stays open) */
		WL_CHECK(accept(b, NULL, NULL) >= 0, "accept: %m");
	} else if (is("reuseport")) {
		spread(1);
		spread(0);
	} else if (is("opt")) {
		char got[32] = "";
		socklen_t gl = sizeof got;
		WL_CHECK(getsockopt(a, cur->lvl, cur->opt, got, &gl) == 0 && gl == wantlen && memcmp(got, want, gl) == 0,
		         "%s: option changed", cur->name);
	} else if (is("udpqueue")) {
		n = recv(a, buf, sizeof buf, MSG_DONTWAIT);
		WL_CHECK(n == 3 && memcmp(buf, "one", 3) == 0, "first datagram: %zd", n);
		n = recv(a, buf, sizeof buf, MSG_DONTWAIT);
		WL_CHECK(n == 0, "second (empty) datagram: %zd (%m)", n);
		n = recv(a, buf, sizeof buf, MSG_DONTWAIT);
		WL_CHECK(n < 0 && errno == EAGAIN, "a third datagram: %zd", n);
	} else if (is("udpshutq")) {
		/* an empty datagram and a read shutdown both say 0: its source tells them apart */
		struct sockaddr_in from = {0};
		socklen_t fl = sizeof from;
		n = recvfrom(a, buf, sizeof buf, MSG_DONTWAIT, (void *)&from, &fl);
		WL_CHECK(n == 0 && from.sin_family == AF_INET && ntohs(from.sin_port) == port_of(a),
		         "the empty datagram: %zd, from port %d", n, ntohs(from.sin_port));
	} else if (is("pingqueue")) {
		struct icmphdr h;
		n = recv(a, &h, sizeof h, MSG_DONTWAIT);
		WL_CHECK(n == sizeof h && h.type == ICMP_ECHOREPLY && ntohs(h.un.echo.sequence) == 7, "echo reply: %zd", n);
	} else if (is("rstdata")) {
		n = recv(a, buf, sizeof buf, MSG_DONTWAIT);
		WL_CHECK(n == 5 && memcmp(buf, "hello", 5) == 0, "the peer's bytes: %zd (%m)", n);
		n = recv(a, buf, sizeof buf, MSG_DONTWAIT);
		WL_CHECK(n == 0, "then the end: %zd (%m)", n);
	} else if (is("mcast")) {
		struct ip_mreqn m = {{inet_addr("239.1.2.3")}, {0}, (int)if_nametoindex("lo")};
		int r = setsockopt(a, SOL_IP, IP_ADD_MEMBERSHIP, &m, sizeof m);
		WL_CHECK(r < 0 && errno == EADDRINUSE, "joining 239.1.2.3 again: %d (%m): not a member", r);
	} else if (is("mcast6")) {
		struct ipv6_mreq m = {.ipv6mr_interface = if_nametoindex("lo")};
		inet_pton(AF_INET6, "ff05::1:3", &m.ipv6mr_multiaddr);
		int r = setsockopt(a, SOL_IPV6, IPV6_ADD_MEMBERSHIP, &m, sizeof m);
		WL_CHECK(r < 0 && errno == EADDRINUSE, "joining ff05::1:3 again: %d (%m): not a member", r);
	}
}

int main(int argc, char **argv) {
	const char *o = wl_arg(argc, argv, 1);
	if (o) optname = o;
	nofs = o && strcmp(o, "nofs") == 0;
	wl_mode_main(argc, argv, "netfix", setup, corrupt, check, 1);
}
