/*
 * unixfix: unix socket states a dump used to lose or change silently; at go the workload checks each.
 *
 *   unixfix DIR MODE [ARG]
 *   opts       stream, dgram and seqpacket pairs with every socket option the images keep set on
 *              one end (SO_KEEPALIVE, SO_OOBINLINE, SO_LINGER 1/7, SO_REUSEADDR, SO_BROADCAST,
 *              SO_DONTROUTE, SO_NO_CHECK, SO_PASSCRED, SO_PASSSEC, SO_PRIORITY, SO_MARK,
 *              SO_RCVLOWAT, SO_SNDTIMEO/SO_RCVTIMEO, SO_SNDBUF) and none on the other, data queued
 *              both ways: every option of every end as before (getsockopt), the data, SO_PEEK_OFF -1
 *   zero       dgram and seqpacket pairs with empty messages queued between others, first and
 *              last ("", "a", "", "", "b", ""), the head's empty one peeked by the program before
 *              the dump on a third pair, and a dgram and a seqpacket pair whose sender closed
 *              after "a", "", "b", "": every message in order with its length, then EAGAIN (or
 *              EOF); SO_PASSCRED and SO_PEEK_OFF of the receivers as before
 *   leftrun [refuse]  (for dump -R) a stream pair, a dgram pair with empty messages among others
 *              queued and a seqpacket pair whose sender closed; with refuse, then a socket with
 *              SO_TIMESTAMP (a dump is refused after the others were read): each queue as
 *              before, SO_PEEK_OFF still -1, SO_PASSCRED still off (both changed for the dump's look)
 *   refused (the dump must fail, the state kept):
 *   passcred   a dgram message queued on a receiver with SO_PASSCRED (credentials it would get)
 *   passcred-stream  the same on a stream pair
 *   oob        a stream pair with "abc", an out-of-band "X" and "def" queued: read "abc", the mark,
 *              the byte with MSG_OOB, "def"
 *   oob-inline the same with SO_OOBINLINE: "abc", the mark, then "Xdef"
 *   oobread    the same with the out-of-band byte read already (MSG_OOB): "abc", the mark, "def"
 *   oobmark    the same with "abc" and the byte read: the mark at the head, then "def"
 *   peekoff    a stream pair with SO_PEEK_OFF 2 moved to 5 by a peek: still 5, a peek gives "56"
 *   unkept NAME   an option the images have no field for set on a dgram socket (SO_TIMESTAMP,
 *              SO_TIMESTAMPNS, SO_TIMESTAMPING, SO_RXQ_OVFL, SO_BUSY_POLL, SO_SELECT_ERR_QUEUE,
 *              SO_WIFI_STATUS): still set
 * --selftest-corrupt: changes what the mode checks (an option reset, a message read, the mark
 *   consumed...), so the checks must fail.
 */
#define WL_MODES
#include "wl.h"
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>

#ifndef SO_RCVMARK
#define SO_RCVMARK 75
#endif

static const char *arg1;
static int pairs[8][2];
static int npairs;
static int extra = -1;

static int geti(int fd, int opt) {
	int v = -999;
	socklen_t l = sizeof v;
	if (getsockopt(fd, SOL_SOCKET, opt, &v, &l)) return -1000 - errno;
	return v;
}
static void seti(int fd, int opt, int v) { NEED(setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v) == 0); }
static int pair(int type) {
	NEED(npairs < 8);
	NEED(socketpair(AF_UNIX, type, 0, pairs[npairs]) == 0);
	return npairs++;
}

/* ---- opts ---- */
static const struct {
	int opt;
	const char *name;
	int val;
} OPTS[] = {
	{SO_KEEPALIVE, "SO_KEEPALIVE", 1}, {SO_OOBINLINE, "SO_OOBINLINE", 1}, {SO_REUSEADDR, "SO_REUSEADDR", 1},
	{SO_BROADCAST, "SO_BROADCAST", 1}, {SO_DONTROUTE, "SO_DONTROUTE", 1}, {SO_NO_CHECK, "SO_NO_CHECK", 1},
	{SO_PASSCRED, "SO_PASSCRED", 1},   {SO_PASSSEC, "SO_PASSSEC", 1},     {SO_PRIORITY, "SO_PRIORITY", 5},
	{SO_MARK, "SO_MARK", 77},          {SO_RCVLOWAT, "SO_RCVLOWAT", 3},
};
#define NOPTS (int)(sizeof OPTS / sizeof OPTS[0])
/* every option read back: ints, then linger, timeouts, buffers, buf lock, peek offset */
struct optsnap {
	int v[NOPTS];
	struct linger lg;
	struct timeval snd, rcv;
	int sndbuf, rcvbuf, buflock, peekoff, passcred;
};
static struct optsnap before[8][2];
static void snap(int fd, struct optsnap *s) {
	for (int i = 0; i < NOPTS; i++) s->v[i] = geti(fd, OPTS[i].opt);
	socklen_t l = sizeof s->lg;
	memset(&s->lg, 0, sizeof s->lg);
	getsockopt(fd, SOL_SOCKET, SO_LINGER, &s->lg, &l);
	l = sizeof s->snd;
	getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &s->snd, &l);
	l = sizeof s->rcv;
	getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &s->rcv, &l);
	s->sndbuf = geti(fd, SO_SNDBUF);
	s->rcvbuf = geti(fd, SO_RCVBUF);
	s->buflock = geti(fd, 72 /* SO_BUF_LOCK */);
	s->peekoff = geti(fd, SO_PEEK_OFF);
}
static void cmpsnap(const char *what, int fd, const struct optsnap *b) {
	struct optsnap n;
	snap(fd, &n);
	for (int i = 0; i < NOPTS; i++)
		WL_CHECK(n.v[i] == b->v[i], "%s: %s %d, was %d", what, OPTS[i].name, n.v[i], b->v[i]);
	WL_CHECK(n.lg.l_onoff == b->lg.l_onoff && n.lg.l_linger == b->lg.l_linger, "%s: SO_LINGER %d/%d, was %d/%d",
	         what, n.lg.l_onoff, n.lg.l_linger, b->lg.l_onoff, b->lg.l_linger);
	WL_CHECK(n.snd.tv_sec == b->snd.tv_sec && n.snd.tv_usec == b->snd.tv_usec, "%s: SO_SNDTIMEO %ld.%06ld", what,
	         (long)n.snd.tv_sec, (long)n.snd.tv_usec);
	WL_CHECK(n.rcv.tv_sec == b->rcv.tv_sec && n.rcv.tv_usec == b->rcv.tv_usec, "%s: SO_RCVTIMEO %ld.%06ld", what,
	         (long)n.rcv.tv_sec, (long)n.rcv.tv_usec);
	WL_CHECK(n.sndbuf == b->sndbuf, "%s: SO_SNDBUF %d, was %d", what, n.sndbuf, b->sndbuf);
	WL_CHECK(n.rcvbuf == b->rcvbuf, "%s: SO_RCVBUF %d, was %d", what, n.rcvbuf, b->rcvbuf);
	WL_CHECK(n.buflock == b->buflock, "%s: SO_BUF_LOCK %d, was %d", what, n.buflock, b->buflock);
	WL_CHECK(n.peekoff == b->peekoff, "%s: SO_PEEK_OFF %d, was %d", what, n.peekoff, b->peekoff);
}
static const char *TYPES[] = {"?", "stream", "dgram", "?", "?", "seqpacket"};
static void setup_opts(void) {
	int types[] = {SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET};
	for (int t = 0; t < 3; t++) {
		int p = pair(types[t]);
		int fd = pairs[p][0];
		for (int i = 0; i < NOPTS; i++) {
			/* SO_PASSCRED on the end that receives nothing here (credentials would refuse a queue) */
			if (OPTS[i].opt == SO_PASSCRED) continue;
			seti(fd, OPTS[i].opt, OPTS[i].val);
		}
		seti(pairs[p][1], SO_PASSCRED, 1);
		struct linger lg = {1, 7};
		NEED(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
		struct timeval tv = {2, 500000};
		NEED(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0);
		tv.tv_sec = 3;
		NEED(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
		seti(fd, SO_SNDBUF, 100000);
		/* data both ways: into the end without SO_PASSCRED only (it would get credentials) */
		NEED(send(pairs[p][1], "to-0", 4, 0) == 4);
		for (int e = 0; e < 2; e++) snap(pairs[p][e], &before[p][e]);
	}
}
static void corrupt_opts(void) {
	seti(pairs[0][0], SO_KEEPALIVE, 0);
	struct linger lg = {0, 0};
	setsockopt(pairs[1][0], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}
static void check_opts(void) {
	for (int p = 0; p < npairs; p++) {
		int t = geti(pairs[p][0], SO_TYPE);
		char what[64];
		for (int e = 0; e < 2; e++) {
			snprintf(what, sizeof what, "%s end %d", TYPES[t > 0 && t < 6 ? t : 0], e);
			cmpsnap(what, pairs[p][e], &before[p][e]);
		}
		char b[8];
		int r = recv(pairs[p][0], b, sizeof b, MSG_DONTWAIT);
		WL_CHECK(r == 4 && memcmp(b, "to-0", 4) == 0, "%s: queued data: %d", TYPES[t > 0 && t < 6 ? t : 0], r);
	}
}

/* ---- zero ---- */
/* queued per pair: "" a "" "" b "" (pairs 0, 1, 2); a "" b "" then the sender closed (3, 4) */
static const char *ZQ[] = {"", "a", "", "", "b", ""};
static const char *ZC[] = {"a", "", "b", ""};
static int zpassb[8], zpeekb[8], zclosed[8];
static void sendall(int fd, const char **q, int n) {
	for (int i = 0; i < n; i++) NEED(send(fd, q[i], strlen(q[i]), 0) == (ssize_t)strlen(q[i]));
}
static void setup_zero(void) {
	int a = pair(SOCK_DGRAM), b = pair(SOCK_SEQPACKET), c = pair(SOCK_DGRAM);
	sendall(pairs[a][0], ZQ, 6);
	sendall(pairs[b][0], ZQ, 6);
	sendall(pairs[c][0], ZQ, 6);
	char x[4];
	NEED(recv(pairs[c][1], x, sizeof x, MSG_PEEK | MSG_DONTWAIT) == 0); /* the head's empty one, peeked */
	int d = pair(SOCK_DGRAM), e = pair(SOCK_SEQPACKET);
	sendall(pairs[d][0], ZC, 4);
	sendall(pairs[e][0], ZC, 4);
	close(pairs[d][0]), close(pairs[e][0]);
	zclosed[d] = zclosed[e] = 1;
	for (int p = 0; p < npairs; p++) {
		zpassb[p] = geti(pairs[p][1], SO_PASSCRED);
		zpeekb[p] = geti(pairs[p][1], SO_PEEK_OFF);
	}
}
static void corrupt_zero(void) {
	char x[4];
	recv(pairs[0][1], x, sizeof x, MSG_DONTWAIT);
	recv(pairs[4][1], x, sizeof x, MSG_DONTWAIT);
}
static void check_queue(const char *what, int fd, const char **q, int n, int closed, int type) {
	char b[16];
	for (int i = 0; i < n; i++) {
		int r = recv(fd, b, sizeof b, MSG_DONTWAIT);
		int want = strlen(q[i]);
		WL_CHECK(r == want && memcmp(b, q[i], want) == 0, "%s: message %d: %d bytes (%s), want %d", what, i, r,
		         r < 0 ? strerror(errno) : "", want);
	}
	int r = recv(fd, b, sizeof b, MSG_DONTWAIT);
	int e = errno;
	if (closed && type == SOCK_SEQPACKET) WL_CHECK(r == 0, "%s: after the queue: %d, want 0 (EOF)", what, r);
	else WL_CHECK(r < 0 && e == EAGAIN, "%s: after the queue: %d (%s), want EAGAIN", what, r, strerror(e));
}
static void check_zero(void) {
	for (int p = 0; p < npairs; p++) {
		WL_CHECK(geti(pairs[p][1], SO_PASSCRED) == zpassb[p], "pair %d: SO_PASSCRED %d", p, geti(pairs[p][1], SO_PASSCRED));
		WL_CHECK(geti(pairs[p][1], SO_PEEK_OFF) == zpeekb[p], "pair %d: SO_PEEK_OFF %d", p, geti(pairs[p][1], SO_PEEK_OFF));
		int t = geti(pairs[p][1], SO_TYPE);
		char what[64];
		snprintf(what, sizeof what, "%s pair %d%s", TYPES[t > 0 && t < 6 ? t : 0], p, zclosed[p] ? " (sender closed)" : "");
		if (zclosed[p]) check_queue(what, pairs[p][1], ZC, 4, 1, t);
		else check_queue(what, pairs[p][1], ZQ, 6, 0, t);
	}
}

/* ---- oob, oob-inline, oobread ---- */
static void setup_oob(void) {
	int p = pair(SOCK_STREAM);
	if (is("oob-inline")) seti(pairs[p][1], SO_OOBINLINE, 1);
	NEED(send(pairs[p][0], "abc", 3, 0) == 3);
	NEED(send(pairs[p][0], "X", 1, MSG_OOB) == 1);
	NEED(send(pairs[p][0], "def", 3, 0) == 3);
	if (is("oobread") || is("oobmark")) {
		char c, b[4];
		if (is("oobmark")) NEED(recv(pairs[p][1], b, 3, 0) == 3);
		NEED(recv(pairs[p][1], &c, 1, MSG_OOB) == 1 && c == 'X');
	}
}
static void corrupt_oob(void) {
	char b[8];
	if (is("oob")) recv(pairs[0][1], b, 1, MSG_OOB | MSG_DONTWAIT);
	else if (is("oobmark")) recv(pairs[0][1], b, 1, MSG_DONTWAIT);
	else recv(pairs[0][1], b, 3, MSG_DONTWAIT);
}
static void check_oob(void) {
	int fd = pairs[0][1], mark = -1, r;
	char b[16];
	if (is("oobmark")) {
		NEED(ioctl(fd, SIOCATMARK, &mark) == 0);
		WL_CHECK(mark == 1, "SIOCATMARK %d, want 1 (the mark of the byte read)", mark);
		r = recv(fd, b, sizeof b, MSG_DONTWAIT);
		WL_CHECK(r == 3 && memcmp(b, "def", 3) == 0, "read %d '%.*s', want def", r, r > 0 ? r : 0, b);
		r = recv(fd, b, 1, MSG_OOB | MSG_DONTWAIT);
		WL_CHECK(r < 0 && errno == EINVAL, "MSG_OOB after: %d, want EINVAL", r);
		return;
	}
	if (is("oobread")) {
		r = recv(fd, b, sizeof b, MSG_DONTWAIT);
		WL_CHECK(r == 3 && memcmp(b, "abc", 3) == 0, "first read %d '%.*s', want abc (up to the mark)", r, r > 0 ? r : 0, b);
		NEED(ioctl(fd, SIOCATMARK, &mark) == 0);
		WL_CHECK(mark == 1, "SIOCATMARK %d after abc, want 1", mark);
		r = recv(fd, b, sizeof b, MSG_DONTWAIT);
		WL_CHECK(r == 3 && memcmp(b, "def", 3) == 0, "rest %d '%.*s', want def", r, r > 0 ? r : 0, b);
		return;
	}
	WL_CHECK(geti(fd, SO_OOBINLINE) == is("oob-inline"), "SO_OOBINLINE %d", geti(fd, SO_OOBINLINE));
	r = recv(fd, b, sizeof b, MSG_DONTWAIT);
	WL_CHECK(r == 3 && memcmp(b, "abc", 3) == 0, "first read %d '%.*s', want abc", r, r > 0 ? r : 0, b);
	NEED(ioctl(fd, SIOCATMARK, &mark) == 0);
	WL_CHECK(mark == 1, "SIOCATMARK %d, want 1", mark);
	if (is("oob")) {
		char c = 0;
		r = recv(fd, &c, 1, MSG_OOB | MSG_DONTWAIT);
		WL_CHECK(r == 1 && c == 'X', "MSG_OOB read %d '%c'", r, c);
		r = recv(fd, b, sizeof b, MSG_DONTWAIT);
		WL_CHECK(r == 3 && memcmp(b, "def", 3) == 0, "rest %d '%.*s', want def", r, r > 0 ? r : 0, b);
	} else {
		r = recv(fd, b, sizeof b, MSG_DONTWAIT);
		WL_CHECK(r == 4 && memcmp(b, "Xdef", 4) == 0, "rest %d '%.*s', want Xdef", r, r > 0 ? r : 0, b);
	}
}

/* ---- peekoff ---- */
static void setup_peekoff(void) {
	int p = pair(SOCK_STREAM);
	NEED(send(pairs[p][0], "0123456789", 10, 0) == 10);
	seti(pairs[p][1], SO_PEEK_OFF, 2);
	char b[4];
	NEED(recv(pairs[p][1], b, 3, MSG_PEEK) == 3 && memcmp(b, "234", 3) == 0);
}
static void corrupt_peekoff(void) { seti(pairs[0][1], SO_PEEK_OFF, -1); }
static void check_peekoff(void) {
	int off = geti(pairs[0][1], SO_PEEK_OFF);
	WL_CHECK(off == 5, "SO_PEEK_OFF %d, want 5", off);
	char b[4];
	int r = recv(pairs[0][1], b, 2, MSG_PEEK | MSG_DONTWAIT);
	WL_CHECK(r == 2 && memcmp(b, "56", 2) == 0, "peek %d '%.*s', want 56", r, r > 0 ? r : 0, b);
	r = recv(pairs[0][1], b, 4, MSG_DONTWAIT);
	WL_CHECK(r == 4 && memcmp(b, "0123", 4) == 0, "read %d '%.*s', want 0123", r, r > 0 ? r : 0, b);
}

/* ---- passcred, passcred-stream ---- */
static void setup_passcred(void) {
	int p = pair(is("passcred") ? SOCK_DGRAM : SOCK_STREAM);
	seti(pairs[p][1], SO_PASSCRED, 1);
	NEED(send(pairs[p][0], "m1", 2, 0) == 2);
}
static void corrupt_passcred(void) { seti(pairs[0][1], SO_PASSCRED, 0); }
static void check_passcred(void) {
	char b[16], cb[CMSG_SPACE(sizeof(struct ucred))];
	struct iovec io = {b, sizeof b};
	struct msghdr mh = {0};
	mh.msg_iov = &io, mh.msg_iovlen = 1, mh.msg_control = cb, mh.msg_controllen = sizeof cb;
	int r = recvmsg(pairs[0][1], &mh, MSG_DONTWAIT);
	WL_CHECK(r == 2 && memcmp(b, "m1", 2) == 0, "recv %d", r);
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	WL_CHECK(c && c->cmsg_type == SCM_CREDENTIALS, "no SCM_CREDENTIALS");
	if (c && c->cmsg_type == SCM_CREDENTIALS) {
		struct ucred *u = (struct ucred *)CMSG_DATA(c);
		WL_CHECK(u->pid == getpid() && u->uid == getuid() && u->gid == getgid(), "credentials pid %d uid %d gid %d",
		         u->pid, u->uid, u->gid);
	}
}

/* ---- unkept NAME ---- */
static const struct {
	const char *name;
	int opt, val;
} UNKEPT[] = {
	{"SO_TIMESTAMP", SO_TIMESTAMP, 1},       {"SO_TIMESTAMPNS", SO_TIMESTAMPNS, 1},
	{"SO_TIMESTAMPING", SO_TIMESTAMPING, 0x18}, {"SO_RXQ_OVFL", SO_RXQ_OVFL, 1},
	{"SO_BUSY_POLL", SO_BUSY_POLL, 10},      {"SO_SELECT_ERR_QUEUE", SO_SELECT_ERR_QUEUE, 1},
	{"SO_WIFI_STATUS", SO_WIFI_STATUS, 1},
};
static int unkept = -1;
static void setup_unkept(void) {
	for (int i = 0; i < (int)(sizeof UNKEPT / sizeof UNKEPT[0]); i++)
		if (arg1 && strcmp(arg1, UNKEPT[i].name) == 0) unkept = i;
	NEED(unkept >= 0);
	int p = pair(SOCK_DGRAM);
	seti(pairs[p][1], UNKEPT[unkept].opt, UNKEPT[unkept].val);
}
static void corrupt_unkept(void) { seti(pairs[0][1], UNKEPT[unkept].opt, 0); }
static void check_unkept(void) {
	int v = geti(pairs[0][1], UNKEPT[unkept].opt);
	WL_CHECK(v == UNKEPT[unkept].val, "%s %d, want %d", UNKEPT[unkept].name, v, UNKEPT[unkept].val);
}

/* ---- leftrun ---- */
static void setup_leftrun(void) {
	int s = pair(SOCK_STREAM), d = pair(SOCK_DGRAM), q = pair(SOCK_SEQPACKET);
	NEED(send(pairs[s][0], "stream-data", 11, 0) == 11);
	sendall(pairs[d][0], ZQ, 6);
	sendall(pairs[q][0], ZC, 4);
	close(pairs[q][0]);
	zclosed[q] = 1;
	if (arg1 && strcmp(arg1, "refuse") == 0) {
		NEED((extra = socket(AF_UNIX, SOCK_DGRAM, 0)) >= 0);
		seti(extra, SO_TIMESTAMP, 1);
	}
}
static void corrupt_leftrun(void) { seti(pairs[0][1], SO_PEEK_OFF, 0); }
static void check_leftrun(void) {
	for (int p = 0; p < npairs; p++) {
		WL_CHECK(geti(pairs[p][1], SO_PEEK_OFF) == -1, "pair %d: SO_PEEK_OFF %d", p, geti(pairs[p][1], SO_PEEK_OFF));
		WL_CHECK(geti(pairs[p][1], SO_PASSCRED) == 0, "pair %d: SO_PASSCRED %d", p, geti(pairs[p][1], SO_PASSCRED));
	}
	char b[16];
	int r = recv(pairs[0][1], b, sizeof b, MSG_DONTWAIT);
	WL_CHECK(r == 11 && memcmp(b, "stream-data", 11) == 0, "stream: %d", r);
	check_queue("dgram", pairs[1][1], ZQ, 6, 0, SOCK_DGRAM);
	check_queue("seqpacket (sender closed)", pairs[2][1], ZC, 4, 1, SOCK_SEQPACKET);
	if (extra >= 0) WL_CHECK(geti(extra, SO_TIMESTAMP) == 1, "SO_TIMESTAMP %d", geti(extra, SO_TIMESTAMP));
}

static void setup(void) {
	if (is("opts")) setup_opts();
	else if (is("zero")) setup_zero();
	else if (is("oob") || is("oob-inline") || is("oobread") || is("oobmark")) setup_oob();
	else if (is("peekoff")) setup_peekoff();
	else if (is("passcred") || is("passcred-stream")) setup_passcred();
	else if (is("unkept")) setup_unkept();
	else if (is("leftrun")) setup_leftrun();
	else {
		fprintf(stderr, "unixfix: unknown mode %s\n", mode);
		exit(2);
	}
}
static void corrupt(void) {
	if (is("opts")) corrupt_opts();
	else if (is("zero")) corrupt_zero();
	else if (is("oob") || is("oob-inline") || is("oobread") || is("oobmark")) corrupt_oob();
	else if (is("peekoff")) corrupt_peekoff();
	else if (is("passcred") || is("passcred-stream")) corrupt_passcred();
	else if (is("unkept")) corrupt_unkept();
	else if (is("leftrun")) corrupt_leftrun();
}
static void check(void) {
	if (is("opts")) check_opts();
	else if (is("zero")) check_zero();
	else if (is("oob") || is("oob-inline") || is("oobread") || is("oobmark")) check_oob();
	else if (is("peekoff")) check_peekoff();
	else if (is("passcred") || is("passcred-stream")) check_passcred();
	else if (is("unkept")) check_unkept();
	else if (is("leftrun")) check_leftrun();
}

int main(int argc, char **argv) {
	arg1 = wl_arg(argc, argv, 1);
	wl_mode_main(argc, argv, "unixfix", setup, corrupt, check, 1);
}
