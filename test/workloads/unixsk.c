/*
 * unixsk: unix sockets with names and one-way connections; at go the workload checks each.
 *
 *   unixsk DIR MODE
 *   dgram     a datagram server on a path (mode 0640, owner 4321:8765) with 3 clients connected one
 *             way (unnamed, abstract-named, and one in a child process), an abstract server with
 *             a client, a socket connected to itself with a datagram queued to itself, and a
 *             relative name bound from DIR: names, peers, path mode/owner kept; every client's
 *             datagram reaches its server with the client's name as source; the server's
 *             SO_PASSCRED, SO_PASSSEC and SO_RCVTIMEO kept
 *   deleted   names whose file is gone: unlinked (a client still connected one way), directory
 *             removed (a stream listener), a FIFO sitting at the path now: names kept, no file
 *             made, the FIFO untouched (same inode), the sockets still work
 *   inflight  a listener with a connection not accepted yet: refused
 *   onewayq   a client connected one way with a datagram queued from its server: refused
 *   accepted  accepted connections keep their names: a path stream listener with an unnamed
 *             client, a client bound to a path of its own, and a client that closed after
 *             sending (data then EOF); an abstract SEQPACKET listener; an abstract listener
 *             closed since (its name free again after restore); a datagram pair bound to an
 *             abstract and a path name connected both ways: getsockname and getpeername of
 *             every end as before, queued data, both ways still work, the listeners accept
 *   accname   a client bound to an abstract name of its own connected to an abstract listener
 *             closed since: which end was accepted is unknown at restore, refused
 *   accext    both ends of a connection accepted by a helper outside the tree (pid in
 *             DIR/ext-pid) whose listener still holds the abstract name: refused
 * --selftest-corrupt: replaces the sockets by new unnamed ones, so the checks must fail.
 */
#define WL_MODES
#include "wl.h"
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <stddef.h>



struct sk {
	const char *what;
	int fd, type;
	struct sockaddr_un name, peer;
	socklen_t namelen, peerlen; /* peerlen 0: not checked */
};
static struct sk sks[32];
static int nsk;
static pid_t child;
static int to_child = -1;
static ino_t fifo_ino;
static char path_srv[4200], path_gone[4200], path_dir[4200], path_ddir[4200], path_fifo[4200];

static struct sk *add(const char *what, int fd) {
	struct sk *s = &sks[nsk++];
	int t;
	socklen_t tl = sizeof t;
	s->what = what, s->fd = fd;
	NEED(getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &tl) == 0);
	s->type = t;
	s->namelen = sizeof s->name;
	NEED(getsockname(fd, (struct sockaddr *)&s->name, &s->namelen) == 0);
	return s;
}
/* a connected socket: its peer's name is checked too */
static struct sk *addp(const char *what, int fd) {
	struct sk *s = add(what, fd);
	s->peerlen = sizeof s->peer;
	NEED(getpeername(fd, (struct sockaddr *)&s->peer, &s->peerlen) == 0);
	return s;
}
static struct sk *find(const char *what) {
	for (int i = 0; i < nsk; i++)
		if (strcmp(sks[i].what, what) == 0) return &sks[i];
	fprintf(stderr, "no socket %s\n", what);
	exit(2);
}
static socklen_t mkaddr(struct sockaddr_un *a, const char *path, int abstract) {
	memset(a, 0, sizeof *a);
	a->sun_family = AF_UNIX;
	if (abstract) {
		a->sun_path[0] = 0;
		snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "%s", path);
		return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(path);
	}
	snprintf(a->sun_path, sizeof a->sun_path, "%s", path);
	return offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1;
}
static int bound(int type, const char *path, int abstract) {
	struct sockaddr_un a;
	socklen_t l = mkaddr(&a, path, abstract);
	int fd = socket(AF_UNIX, type, 0);
	NEED(fd >= 0 && bind(fd, (void *)&a, l) == 0);
	return fd;
}
static void conn(int fd, struct sk *srv) { NEED(connect(fd, (void *)&srv->name, srv->namelen) == 0); }

/* recv with a deadline; the source name into *from */
static ssize_t recv_from(int fd, void *b, size_t n, struct sockaddr_un *from, socklen_t *fl) {
	for (int i = 0; i < 200; i++) {
		ssize_t r = recvfrom(fd, b, n, MSG_DONTWAIT, (void *)from, fl);
		if (r >= 0 || errno != EAGAIN) return r;
		wl_sleep_ms(10);
	}
	return -1;
}
static int same_name(const struct sockaddr_un *a, socklen_t al, const struct sockaddr_un *b, socklen_t bl) { return al == bl && memcmp(a, b, al) == 0; }

static void check_names(void) {
	for (int i = 0; i < nsk; i++) {
		struct sk *s = &sks[i];
		struct sockaddr_un n;
		socklen_t nl = sizeof n;
		WL_CHECK(getsockname(s->fd, (void *)&n, &nl) == 0 && same_name(&n, nl, &s->name, s->namelen), "%s: name changed (%u bytes, '%s')", s->what, nl, n.sun_path[0] ? n.sun_path : n.sun_path + 1);
		int t;
		socklen_t tl = sizeof t;
		WL_CHECK(getsockopt(s->fd, SOL_SOCKET, SO_TYPE, &t, &tl) == 0 && t == s->type, "%s: type changed", s->what);
		if (s->peerlen) {
			nl = sizeof n;
			WL_CHECK(getpeername(s->fd, (void *)&n, &nl) == 0 && same_name(&n, nl, &s->peer, s->peerlen), "%s: peer name changed (%u bytes, '%s')", s->what, nl, n.sun_path[0] ? n.sun_path : n.sun_path + 1);
		}
	}
}
/* client sends its tag; the server gets it with the client's name as source */
static void check_path(struct sk *cl, struct sk *srv, const char *tag) {
	WL_CHECK(send(cl->fd, tag, strlen(tag), MSG_DONTWAIT) == (ssize_t)strlen(tag), "%s: send to its server failed: %m", cl->what);
	char b[64] = {0};
	struct sockaddr_un from;
	socklen_t fl = sizeof from;
	ssize_t n = recv_from(srv->fd, b, sizeof b, &from, &fl);
	WL_CHECK(n == (ssize_t)strlen(tag) && memcmp(b, tag, n) == 0, "%s: its datagram did not reach %s (%zd)", cl->what, srv->what, n);
	if (cl->namelen > sizeof(sa_family_t)) WL_CHECK(same_name(&from, fl, &cl->name, cl->namelen), "%s: source name differs", cl->what);
	struct sockaddr_un p;
	socklen_t pl = sizeof p;
	WL_CHECK(getpeername(cl->fd, (void *)&p, &pl) == 0 && same_name(&p, pl, &srv->name, srv->namelen), "%s: peer is not %s", cl->what, srv->what);
}

static void setup(void) {
	char tag[64];
	snprintf(tag, sizeof tag, "criu-bun-%d", (int)getpid());
	if (is("dgram")) {
		snprintf(path_srv, sizeof path_srv, "%s/srv.sock", wl_dir);
		int s = bound(SOCK_DGRAM, path_srv, 0);
		NEED(chmod(path_srv, 0640) == 0 && chown(path_srv, 4321, 8765) == 0);
		/* socket options CRIU keeps for unix sockets too */
		int one = 1;
		struct timeval tv = {2, 500000};
		NEED(setsockopt(s, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) == 0 && setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
		NEED(setsockopt(s, SOL_SOCKET, SO_PASSSEC, &one, sizeof one) == 0);
		struct sk *srv = add("server", s);
		int c1 = socket(AF_UNIX, SOCK_DGRAM, 0);
		NEED(c1 >= 0);
		conn(c1, srv);
		add("client-unnamed", c1);
		char an[80];
		snprintf(an, sizeof an, "%s-c2", tag);
		int c2 = bound(SOCK_DGRAM, an, 1);
		conn(c2, srv);
		add("client-abstract", c2);
		int c3 = socket(AF_UNIX, SOCK_DGRAM, 0);
		NEED(c3 >= 0);
		conn(c3, srv);
		/* the child has c3: it sends "c3" when the parent says so */
		int p[2];
		NEED(pipe(p) == 0);
		child = fork();
		if (child == 0) {
			close(p[1]);
			char c;
			if (read(p[0], &c, 1) != 1) _exit(3);
			struct sockaddr_un pn;
			socklen_t pl = sizeof pn;
			if (getpeername(c3, (void *)&pn, &pl) != 0 || strcmp(pn.sun_path, path_srv) != 0) _exit(4);
			_exit(send(c3, "c3", 2, 0) == 2 ? 0 : 5);
		}
		close(p[0]);
		close(c3);
		to_child = p[1];
		snprintf(an, sizeof an, "%s-asrv", tag);
		struct sk *as = add("abstract-server", bound(SOCK_DGRAM, an, 1));
		int ac = socket(AF_UNIX, SOCK_DGRAM, 0);
		NEED(ac >= 0);
		conn(ac, as);
		add("abstract-client", ac);
		snprintf(an, sizeof an, "%s-self", tag);
		struct sk *self = add("self", bound(SOCK_DGRAM, an, 1));
		conn(self->fd, self);
		NEED(send(self->fd, "queued-to-itself", 16, 0) == 16);
		NEED(chdir(wl_dir) == 0);
		add("relative", bound(SOCK_DGRAM, "rel.sock", 0));
	} else if (is("deleted")) {
		snprintf(path_dir, sizeof path_dir, "%s/gone", wl_dir);
		NEED(mkdir(path_dir, 0700) == 0);
		snprintf(path_gone, sizeof path_gone, "%s/gone/s1", wl_dir);
		struct sk *s1 = add("unlinked", bound(SOCK_DGRAM, path_gone, 0));
		int c = socket(AF_UNIX, SOCK_DGRAM, 0);
		NEED(c >= 0);
		conn(c, s1);
		add("unlinked-client", c);
		NEED(unlink(path_gone) == 0);
		snprintf(path_ddir, sizeof path_ddir, "%s/rmdir", wl_dir);
		NEED(mkdir(path_ddir, 0700) == 0);
		char p2[4300];
		snprintf(p2, sizeof p2, "%s/s2", path_ddir);
		int l = bound(SOCK_STREAM, p2, 0);
		NEED(listen(l, 4) == 0);
		add("dir-removed", l);
		NEED(unlink(p2) == 0 && rmdir(path_ddir) == 0);
		snprintf(path_fifo, sizeof path_fifo, "%s/fifo-here", wl_dir);
		add("fifo-there", bound(SOCK_DGRAM, path_fifo, 0));
		NEED(unlink(path_fifo) == 0 && mkfifo(path_fifo, 0600) == 0);
		struct stat st;
		NEED(stat(path_fifo, &st) == 0);
		fifo_ino = st.st_ino;
	} else if (is("inflight")) {
		snprintf(path_srv, sizeof path_srv, "%s/listen.sock", wl_dir);
		int l = bound(SOCK_STREAM, path_srv, 0);
		NEED(listen(l, 4) == 0);
		struct sk *ls = add("listener", l);
		int c = socket(AF_UNIX, SOCK_STREAM, 0);
		NEED(c >= 0);
		conn(c, ls);
	} else if (is("onewayq")) {
		char an[80];
		snprintf(an, sizeof an, "%s-qs", tag);
		struct sk *srv = add("server", bound(SOCK_DGRAM, an, 1));
		snprintf(an, sizeof an, "%s-qc", tag);
		struct sk *cl = add("client", bound(SOCK_DGRAM, an, 1));
		conn(cl->fd, srv);
		NEED(sendto(srv->fd, "back", 4, 0, (void *)&cl->name, cl->namelen) == 4);
	} else if (is("accepted")) {
		snprintf(path_srv, sizeof path_srv, "%s/acc.sock", wl_dir);
		struct sk *l = add("listener", bound(SOCK_STREAM, path_srv, 0));
		NEED(listen(l->fd, 8) == 0);
		int c1 = socket(AF_UNIX, SOCK_STREAM, 0);
		NEED(c1 >= 0);
		conn(c1, l);
		addp("a1", accept(l->fd, NULL, NULL));
		addp("c1", c1);
		NEED(write(c1, "to-a1", 5) == 5 && write(find("a1")->fd, "to-c1", 5) == 5);
		snprintf(path_gone, sizeof path_gone, "%s/own.sock", wl_dir);
		int c2 = bound(SOCK_STREAM, path_gone, 0);
		conn(c2, l);
		addp("a2", accept(l->fd, NULL, NULL));
		addp("c2", c2);
		int c4 = socket(AF_UNIX, SOCK_STREAM, 0);
		NEED(c4 >= 0);
		conn(c4, l);
		add("a4", accept(l->fd, NULL, NULL));
		NEED(write(c4, "bye", 3) == 3);
		close(c4);
		char an[80];
		snprintf(an, sizeof an, "%s-sp", tag);
		struct sk *sp = add("seqpacket-listener", bound(SOCK_SEQPACKET, an, 1));
		NEED(listen(sp->fd, 4) == 0);
		int c3 = socket(AF_UNIX, SOCK_SEQPACKET, 0);
		NEED(c3 >= 0);
		conn(c3, sp);
		addp("a3", accept(sp->fd, NULL, NULL));
		addp("c3", c3);
		NEED(send(c3, "m1", 2, 0) == 2);
		snprintf(an, sizeof an, "%s-gone", tag);
		int lg = bound(SOCK_STREAM, an, 1);
		NEED(listen(lg, 1) == 0);
		struct sk tmp = {0};
		tmp.namelen = sizeof tmp.name;
		NEED(getsockname(lg, (void *)&tmp.name, &tmp.namelen) == 0);
		int c5 = socket(AF_UNIX, SOCK_STREAM, 0);
		NEED(c5 >= 0);
		conn(c5, &tmp);
		addp("a5", accept(lg, NULL, NULL));
		addp("c5", c5);
		close(lg);
		snprintf(an, sizeof an, "%s-d1", tag);
		int d1 = bound(SOCK_DGRAM, an, 1);
		snprintf(path_dir, sizeof path_dir, "%s/d2.sock", wl_dir);
		int d2 = bound(SOCK_DGRAM, path_dir, 0);
		struct sk *s1 = add("d1", d1), *s2 = add("d2", d2);
		conn(d1, s2);
		conn(d2, s1);
		s1->peerlen = sizeof s1->peer, s2->peerlen = sizeof s2->peer;
		NEED(getpeername(d1, (void *)&s1->peer, &s1->peerlen) == 0 && getpeername(d2, (void *)&s2->peer, &s2->peerlen) == 0);
		NEED(send(d1, "dq", 2, 0) == 2);
	} else if (is("accext")) {
		/* a helper outside the tree (pid in DIR/ext-pid) listens on an abstract name and hands us
		 * the connection it accepted from our client: both ends ours, the name its listener's */
		char an[80];
		snprintf(an, sizeof an, "%s-ext", tag);
		int sv[2];
		NEED(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0);
		pid_t c = fork();
		if (c == 0) {
			setsid();
			if (fork() == 0) {
				close(sv[0]);
				struct sockaddr_un a;
				socklen_t l = mkaddr(&a, an, 1);
				int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
				if (lfd < 0 || bind(lfd, (void *)&a, l) != 0 || listen(lfd, 1) != 0) _exit(1);
				pid_t me = getpid();
				if (send(sv[1], &me, sizeof me, 0) != sizeof me) _exit(1);
				int acc = accept(lfd, NULL, NULL);
				char cb[CMSG_SPACE(sizeof(int))] = {0};
				struct iovec iov = {.iov_base = "a", .iov_len = 1};
				struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb, .msg_controllen = sizeof cb};
				struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
				cm->cmsg_level = SOL_SOCKET, cm->cmsg_type = SCM_RIGHTS, cm->cmsg_len = CMSG_LEN(sizeof(int));
				memcpy(CMSG_DATA(cm), &acc, sizeof acc);
				if (acc < 0 || sendmsg(sv[1], &m, 0) != 1) _exit(1);
				close(acc);
				for (;;) pause();
			}
			_exit(0);
		}
		waitpid(c, NULL, 0);
		close(sv[1]);
		pid_t helper = 0;
		NEED(recv(sv[0], &helper, sizeof helper, 0) == sizeof helper && helper > 0);
		char b[32];
		snprintf(b, sizeof b, "%d\n", (int)helper);
		wl_write_file("ext-pid", b, strlen(b));
		struct sk l = {0};
		l.namelen = mkaddr(&l.name, an, 1);
		int cl = socket(AF_UNIX, SOCK_STREAM, 0);
		NEED(cl >= 0);
		conn(cl, &l);
		char cb[CMSG_SPACE(sizeof(int))] = {0}, one;
		struct iovec iov = {.iov_base = &one, .iov_len = 1};
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb, .msg_controllen = sizeof cb};
		NEED(recvmsg(sv[0], &m, 0) == 1);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		NEED(cm && cm->cmsg_type == SCM_RIGHTS);
		int acc;
		memcpy(&acc, CMSG_DATA(cm), sizeof acc);
		close(sv[0]);
		addp("accepted", acc);
		addp("client", cl);
	} else if (is("accname")) {
		char an[80];
		snprintf(an, sizeof an, "%s-ln", tag);
		int lg = bound(SOCK_STREAM, an, 1);
		NEED(listen(lg, 1) == 0);
		struct sk l = {0};
		l.namelen = sizeof l.name;
		NEED(getsockname(lg, (void *)&l.name, &l.namelen) == 0);
		snprintf(an, sizeof an, "%s-own", tag);
		int c = bound(SOCK_STREAM, an, 1);
		conn(c, &l);
		addp("accepted", accept(lg, NULL, NULL));
		addp("client", c);
		close(lg);
	} else {
		fprintf(stderr, "unixsk: unknown mode %s\n", mode);
		exit(2);
	}
}

static void corrupt(void) {
	for (int i = 0; i < nsk; i++) {
		int n = socket(AF_UNIX, sks[i].type, 0);
		if (n >= 0) dup2(n, sks[i].fd), close(n);
	}
}

static void check_mode(void) {
	check_names();
	if (is("dgram")) {
		struct sk *srv = find("server");
		check_path(find("client-unnamed"), srv, "c1");
		check_path(find("client-abstract"), srv, "c2");
		WL_CHECK(write(to_child, "g", 1) == 1, "poking the child failed");
		int st = -1;
		WL_CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's client failed (status %#x)", st);
		char b[64] = {0};
		struct sockaddr_un from;
		socklen_t fl = sizeof from;
		WL_CHECK(recv_from(srv->fd, b, sizeof b, &from, &fl) == 2 && memcmp(b, "c3", 2) == 0, "the child's datagram did not arrive");
		check_path(find("abstract-client"), find("abstract-server"), "ac");
		struct sk *self = find("self");
		memset(b, 0, sizeof b);
		fl = sizeof from;
		WL_CHECK(recv_from(self->fd, b, sizeof b, &from, &fl) == 16 && memcmp(b, "queued-to-itself", 16) == 0, "self: its queued datagram is gone");
		check_path(self, self, "again");
		int v = 0;
		socklen_t vl = sizeof v;
		WL_CHECK(getsockopt(srv->fd, SOL_SOCKET, SO_PASSCRED, &v, &vl) == 0 && v == 1, "server: SO_PASSCRED is off");
		v = 0, vl = sizeof v;
		WL_CHECK(getsockopt(srv->fd, SOL_SOCKET, SO_PASSSEC, &v, &vl) == 0 && v == 1, "server: SO_PASSSEC is off");
		struct timeval tv = {0};
		socklen_t tl = sizeof tv;
		WL_CHECK(getsockopt(srv->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &tl) == 0 && tv.tv_sec == 2 && tv.tv_usec == 500000, "server: SO_RCVTIMEO %ld.%06ld", (long)tv.tv_sec, (long)tv.tv_usec);
		struct stat s;
		WL_CHECK(lstat(path_srv, &s) == 0 && S_ISSOCK(s.st_mode) && (s.st_mode & 07777) == 0640 && s.st_uid == 4321 && s.st_gid == 8765,
		         "server path: mode %o owner %d:%d", s.st_mode & 07777, (int)s.st_uid, (int)s.st_gid);
		WL_CHECK(lstat("rel.sock", &s) == 0 && S_ISSOCK(s.st_mode), "relative name: no socket file in DIR");
	} else if (is("deleted")) {
		struct stat s;
		WL_CHECK(lstat(path_gone, &s) == -1 && errno == ENOENT, "unlinked: a file is back at its path");
		check_path(find("unlinked-client"), find("unlinked"), "u1");
		WL_CHECK(lstat(path_ddir, &s) == -1 && errno == ENOENT, "dir-removed: its directory is back");
		int v = 0;
		socklen_t vl = sizeof v;
		WL_CHECK(getsockopt(find("dir-removed")->fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) == 0 && v == 1, "dir-removed does not listen");
		WL_CHECK(stat(path_fifo, &s) == 0 && S_ISFIFO(s.st_mode) && s.st_ino == fifo_ino, "the FIFO at fifo-here was replaced");
	} else if (is("inflight")) {
		int v = 0;
		socklen_t vl = sizeof v;
		WL_CHECK(getsockopt(find("listener")->fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) == 0 && v == 1, "listener does not listen");
		int a = accept4(find("listener")->fd, NULL, NULL, SOCK_NONBLOCK);
		WL_CHECK(a >= 0, "the pending connection is gone: %m");
	} else if (is("accepted") || is("accname") || is("accext")) {
		/* queued data first, then both ways on every pair */
		char b[16] = {0};
		if (is("accepted")) {
			WL_CHECK(recv(find("a1")->fd, b, sizeof b, MSG_DONTWAIT) == 5 && memcmp(b, "to-a1", 5) == 0, "a1: its queued data is gone");
			WL_CHECK(recv(find("c1")->fd, b, sizeof b, MSG_DONTWAIT) == 5 && memcmp(b, "to-c1", 5) == 0, "c1: its queued data is gone");
			WL_CHECK(recv(find("a3")->fd, b, sizeof b, MSG_DONTWAIT) == 2 && memcmp(b, "m1", 2) == 0, "a3: its queued message is gone");
			WL_CHECK(recv(find("a4")->fd, b, sizeof b, MSG_DONTWAIT) == 3 && memcmp(b, "bye", 3) == 0, "a4: its closed peer's data is gone");
			WL_CHECK(recv(find("a4")->fd, b, sizeof b, MSG_DONTWAIT) == 0, "a4: no EOF after its closed peer's data");
			WL_CHECK(recv(find("d2")->fd, b, sizeof b, MSG_DONTWAIT) == 2 && memcmp(b, "dq", 2) == 0, "d2: its queued datagram is gone");
		}
		static const char *pairs[][2] = {{"a1", "c1"}, {"a2", "c2"}, {"a3", "c3"}, {"a5", "c5"}, {"d1", "d2"}, {"accepted", "client"}};
		for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
			if ((is("accname") || is("accext")) != (i == 5)) continue;
			struct sk *x = find(pairs[i][0]), *y = find(pairs[i][1]);
			WL_CHECK(send(x->fd, "ping", 4, MSG_DONTWAIT) == 4 && recv_from(y->fd, b, sizeof b, NULL, NULL) == 4, "%s -> %s: no data", x->what, y->what);
			WL_CHECK(send(y->fd, "pong", 4, MSG_DONTWAIT) == 4 && recv_from(x->fd, b, sizeof b, NULL, NULL) == 4, "%s -> %s: no data", y->what, x->what);
		}
		if (is("accepted")) {
			/* the listeners still accept; the closed listener's abstract name is free */
			struct sk *ls[] = {find("listener"), find("seqpacket-listener")};
			for (int i = 0; i < 2; i++) {
				int c = socket(AF_UNIX, ls[i]->type, 0);
				WL_CHECK(c >= 0 && connect(c, (void *)&ls[i]->name, ls[i]->namelen) == 0, "%s: connect failed: %m", ls[i]->what);
				int a = accept4(ls[i]->fd, NULL, NULL, SOCK_NONBLOCK);
				WL_CHECK(a >= 0, "%s: accept failed: %m", ls[i]->what);
				close(a), close(c);
			}
			int f = socket(AF_UNIX, SOCK_STREAM, 0);
			struct sk *a5 = find("a5");
			WL_CHECK(f >= 0 && bind(f, (void *)&a5->name, a5->namelen) == 0, "the closed listener's name is taken: %m");
			close(f);
			struct stat st;
			WL_CHECK(lstat(path_gone, &st) == 0 && S_ISSOCK(st.st_mode), "own.sock: its file is gone");
			WL_CHECK(lstat(path_srv, &st) == 0 && S_ISSOCK(st.st_mode), "acc.sock: its file is gone");
		}
	} else if (is("onewayq")) {
		char b[8] = {0};
		struct sockaddr_un from;
		socklen_t fl = sizeof from;
		WL_CHECK(recv_from(find("client")->fd, b, sizeof b, &from, &fl) == 4 && memcmp(b, "back", 4) == 0, "the queued datagram is gone");
	}
}

/* the mode's checks, then its helper child goes */
static void check(void) {
	check_mode();
	if (child > 0) kill(child, SIGKILL);
}

int main(int argc, char **argv) { wl_mode_main(argc, argv, "unixsk", setup, corrupt, check, 1); }
