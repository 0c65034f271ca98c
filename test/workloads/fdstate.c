/*
 * fdstate: message queues, timerfds and OFD locks in states criu-bun got wrong once; each MODE holds
 * one, and at go checks it is all still there exactly (after a dump and restore, or after a dump
 * that refused it).
 *
 *   fdstate DIR MODE
 *   mqzero    POSIX message queues holding zero-length messages: /fdstate-PID-a (maxmsg 8, msgsize 64):
 *             "" at priority 10, "m1" "m2" at 5, "" at 5, "m3" at 5, a 64-byte message at 3, "" at 0;
 *             /fdstate-PID-b (maxmsg 4, msgsize 16, mode 0640): one "" at priority 0. At go: every
 *             message in receive order (length, priority, bytes), then both empty; maxmsg,
 *             msgsize and curmsgs as set
 *   mqfull    /fdstate-PID-f (maxmsg 2, msgsize 16) full with "m1" "m2" (priority 1), and a helper
 *             outside the tree (double-forked, its own session; pid in DIR/ext-pid) blocked in
 *             mq_send("X", priority 1) on it. At go: m1, m2, then X (the helper's, once there is
 *             room), then nothing. Refused at dump (mqueue-full): a dump that read the queue would
 *             let X in ahead of its time and could not put m1 back
 *   tfdflags  timerfds armed with every settime flag combination: REALTIME ABSTIME|CANCEL_ON_SET
 *             (now + 100 s, interval 7 s), MONOTONIC ABSTIME (+200 s), BOOTTIME ABSTIME (+300 s,
 *             interval 1 s), REALTIME CANCEL_ON_SET alone (relative 400 s), REALTIME
 *             ABSTIME|CANCEL_ON_SET disarmed, MONOTONIC relative (500 s), REALTIME ABSTIME (+600 s),
 *             MONOTONIC ABSTIME firing 1.5 s after setup. At go: fdinfo clockid and "settime flags"
 *             of each as set, interval as set, time left no more than it was and no less than it
 *             was minus the time since (one second of slack: CRIU's restore rounds to seconds),
 *             the disarmed one still disarmed, and the short one fires once, not before its time
 *   ofd       an OFD write lock on [5, 10) of DIR/lk, an OFD read lock on all of DIR/lk2 (through
 *             a second description of the process's) and a POSIX write lock on [0, 10) of DIR/lk3.
 *             At go the process opens and closes lk and lk2 again (which drops its POSIX locks on
 *             them, never OFD ones); then a child's F_OFD_GETLK sees the write lock on lk and the
 *             read lock on lk2 with l_pid -1 (OFD), and F_GETLK on lk3 the POSIX lock of the parent
 *
 * --selftest-corrupt: mqzero takes the first message (the zero-length one); mqfull takes m1 (X gets
 * in); tfdflags re-arms the first timer without its flags; ofd turns the lock on lk into a POSIX one.
 */
#define WL_MODES
#include "wl.h"
#include <mqueue.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <poll.h>
#include <inttypes.h>

static char qa[64], qb[64], qf[64];
static mqd_t mqa = -1, mqb = -1, mqf = -1;

struct msg {
	const char *data;
	size_t len;
	unsigned prio;
};
static char big[64];
static struct msg want_a[7];
static int nwant_a;

static void mq_setup_zero(void) {
	memset(big, 'B', sizeof big);
	big[0] = 'b';
	big[63] = 'e';
	snprintf(qa, sizeof qa, "/fdstate-%d-a", (int)getpid());
	snprintf(qb, sizeof qb, "/fdstate-%d-b", (int)getpid());
	mq_unlink(qa);
	mq_unlink(qb);
	struct mq_attr at = {.mq_maxmsg = 8, .mq_msgsize = 64};
	NEED((mqa = mq_open(qa, O_RDWR | O_CREAT | O_EXCL, 0600, &at)) >= 0);
	/* sent in this order; received by priority, then in order of sending */
	struct msg sent[] = {{"", 0, 10}, {"m1", 2, 5}, {"m2", 2, 5}, {"", 0, 5}, {"m3", 2, 5}, {big, 64, 3}, {"", 0, 0}};
	for (size_t i = 0; i < sizeof sent / sizeof sent[0]; i++) NEED(mq_send(mqa, sent[i].data, sent[i].len, sent[i].prio) == 0);
	memcpy(want_a, sent, sizeof sent);
	nwant_a = 7;
	struct mq_attr bt = {.mq_maxmsg = 4, .mq_msgsize = 16};
	mode_t um = umask(0);
	mqb = mq_open(qb, O_RDWR | O_CREAT | O_EXCL, 0640, &bt);
	umask(um);
	NEED(mqb >= 0);
	NEED(mq_send(mqb, "", 0, 0) == 0);
}

static void mq_check_attr(mqd_t q, const char *name, long maxmsg, long msgsize, long cur) {
	struct mq_attr g;
	if (mq_getattr(q, &g)) {
		wl_failf("%s: mq_getattr: %s", name, strerror(errno));
		return;
	}
	WL_CHECK(g.mq_maxmsg == maxmsg && g.mq_msgsize == msgsize && g.mq_curmsgs == cur,
	         "%s: maxmsg %ld msgsize %ld curmsgs %ld, want %ld %ld %ld", name, g.mq_maxmsg, g.mq_msgsize,
	         g.mq_curmsgs, maxmsg, msgsize, cur);
}

/* receive one message within 2 s: its length (-1: none) */
static ssize_t mq_take(mqd_t q, char *buf, size_t n, unsigned *prio) {
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 2;
	ssize_t r;
	while ((r = mq_timedreceive(q, buf, n, prio, &ts)) < 0 && errno == EINTR) {
	}
	return r;
}

static void mq_check_empty(mqd_t q, const char *name) {
	char buf[64];
	unsigned pr;
	struct timespec ts = {0, 0};
	ssize_t r = mq_timedreceive(q, buf, sizeof buf, &pr, &ts);
	WL_CHECK(r < 0 && errno == ETIMEDOUT, "%s: a message more (%zd bytes, priority %u)", name, r, pr);
}

static void mq_check_zero(void) {
	mq_check_attr(mqa, qa, 8, 64, nwant_a);
	mq_check_attr(mqb, qb, 4, 16, 1);
	/* receive order: priority 10, then the 5s in sending order, then 3, then 0: as they were sent */
	char buf[64];
	unsigned pr;
	for (int i = 0; i < nwant_a; i++) {
		const struct msg *w = &want_a[i];
		ssize_t r = mq_take(mqa, buf, sizeof buf, &pr);
		if (r < 0) {
			wl_failf("%s: message %d missing (%s), want %zu bytes at priority %u", qa, i, strerror(errno), w->len, w->prio);
			return;
		}
		WL_CHECK((size_t)r == w->len && pr == w->prio && !memcmp(buf, w->data, w->len),
		         "%s: message %d is %zd bytes at priority %u ('%.*s'), want %zu bytes at priority %u ('%.*s')", qa, i,
		         r, pr, (int)(r > 8 ? 8 : r), buf, w->len, w->prio, (int)(w->len > 8 ? 8 : w->len), w->data);
	}
	mq_check_empty(mqa, qa);
	ssize_t r = mq_take(mqb, buf, sizeof buf, &pr);
	WL_CHECK(r == 0 && pr == 0, "%s: the zero-length message came back as %zd bytes at priority %u (%s)", qb, r, pr,
	         r < 0 ? strerror(errno) : "");
	mq_check_empty(mqb, qb);
	struct stat st;
	char p[128];
	snprintf(p, sizeof p, "/dev/mqueue%s", qb);
	if (stat(p, &st) == 0) WL_CHECK((st.st_mode & 0777) == 0640, "%s: mode %o, want 640", qb, st.st_mode & 0777);
	wl_detail("mqueue: %d + 1 messages, zero-length ones kept", nwant_a);
	mq_unlink(qa);
	mq_unlink(qb);
}

static pid_t helper;

/* the helper's state: "242 ..." in /proc/PID/syscall once it waits in mq_timedsend */
static int helper_blocked(void) {
	char p[64], b[128] = "";
	snprintf(p, sizeof p, "/proc/%d/syscall", (int)helper);
	FILE *f = fopen(p, "r");
	if (!f) return 0;
	size_t n = fread(b, 1, sizeof b - 1, f);
	fclose(f);
	b[n] = 0;
	return strncmp(b, "242 ", 4) == 0;
}

static void mq_setup_full(void) {
	snprintf(qf, sizeof qf, "/fdstate-%d-f", (int)getpid());
	mq_unlink(qf);
	struct mq_attr at = {.mq_maxmsg = 2, .mq_msgsize = 16};
	NEED((mqf = mq_open(qf, O_RDWR | O_CREAT | O_EXCL, 0600, &at)) >= 0);
	NEED(mq_send(mqf, "m1", 2, 1) == 0 && mq_send(mqf, "m2", 2, 1) == 0);
	pid_t c = fork();
	NEED(c >= 0);
	if (c == 0) {
		setsid();
		pid_t g = fork();
		if (g) _exit(g < 0);
		char b[32];
		int n = snprintf(b, sizeof b, "%d\n", (int)getpid());
		wl_write_file("ext-pid", b, (size_t)n);
		mqd_t q2 = mq_open(qf, O_WRONLY);
		if (q2 < 0) _exit(2);
		mq_send(q2, "X", 1, 1); /* blocks until there is room */
		_exit(0);
	}
	int st;
	NEED(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	char p[4200];
	wl_path(p, sizeof p, "ext-pid");
	for (int i = 0; i < 5000 && !helper; i++) {
		FILE *f = fopen(p, "r");
		if (f) {
			int h = 0;
			if (fscanf(f, "%d", &h) == 1) helper = h;
			fclose(f);
		}
		if (!helper) wl_sleep_ms(2);
	}
	NEED(helper > 0);
	int i = 0;
	while (!helper_blocked() && i++ < 5000) wl_sleep_ms(2);
	NEED(helper_blocked());
}

static void mq_check_full(void) {
	char buf[16], got[64] = "";
	unsigned pr;
	for (int i = 0; i < 3; i++) {
		ssize_t r = mq_take(mqf, buf, sizeof buf, &pr);
		if (r < 0) break;
		buf[r] = 0;
		snprintf(got + strlen(got), sizeof got - strlen(got), "%s/%u ", buf, pr);
	}
	WL_CHECK(!strcmp(got, "m1/1 m2/1 X/1 "), "%s: received '%s', want 'm1/1 m2/1 X/1 '", qf, got);
	mq_check_empty(mqf, qf);
	wl_detail("mqueue full: %s", got);
	mq_unlink(qf);
}

/* ---- timerfd ---- */
struct tfd {
	int fd;
	clockid_t clk;
	int flags;
	long value, interval; /* seconds from setup (0: disarmed) */
};
static struct tfd tfds[8];
static int ntfd;
static double t_setup; /* CLOCK_MONOTONIC at setup */

static void tfd_arm(clockid_t clk, int flags, long value_ms, long interval) {
	struct tfd *t = &tfds[ntfd++];
	t->clk = clk;
	t->flags = flags;
	t->value = value_ms;
	t->interval = interval;
	NEED((t->fd = timerfd_create(clk, TFD_NONBLOCK | TFD_CLOEXEC)) >= 0);
	struct itimerspec its = {{interval, 0}, {0, 0}};
	if (value_ms) {
		its.it_value.tv_sec = value_ms / 1000;
		its.it_value.tv_nsec = (value_ms % 1000) * 1000000L;
		if (flags & TFD_TIMER_ABSTIME) {
			struct timespec now;
			clock_gettime(clk, &now);
			its.it_value.tv_sec += now.tv_sec;
			its.it_value.tv_nsec += now.tv_nsec;
			if (its.it_value.tv_nsec >= 1000000000L) {
				its.it_value.tv_sec++;
				its.it_value.tv_nsec -= 1000000000L;
			}
		}
	}
	NEED(timerfd_settime(t->fd, flags, &its, NULL) == 0);
}

static void tfd_setup(void) {
	t_setup = wl_now(CLOCK_MONOTONIC);
	tfd_arm(CLOCK_REALTIME, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, 100000, 7);
	tfd_arm(CLOCK_MONOTONIC, TFD_TIMER_ABSTIME, 200000, 0);
	tfd_arm(CLOCK_BOOTTIME, TFD_TIMER_ABSTIME, 300000, 1);
	tfd_arm(CLOCK_REALTIME, TFD_TIMER_CANCEL_ON_SET, 400000, 0);
	tfd_arm(CLOCK_REALTIME, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, 0, 0);
	tfd_arm(CLOCK_MONOTONIC, 0, 500000, 0);
	tfd_arm(CLOCK_REALTIME, TFD_TIMER_ABSTIME, 600000, 0);
	tfd_arm(CLOCK_MONOTONIC, TFD_TIMER_ABSTIME, 1500, 0);
}

static int fdinfo_field(int fd, const char *name, char *out, size_t n) {
	char p[64], line[256];
	snprintf(p, sizeof p, "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(p, "r");
	if (!f) return -1;
	int found = -1;
	size_t l = strlen(name);
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, name, l) && line[l] == ':') {
			snprintf(out, n, "%s", line + l + 1);
			found = 0;
			break;
		}
	fclose(f);
	return found;
}

static void tfd_check(void) {
	double since = wl_now(CLOCK_MONOTONIC) - t_setup;
	for (int i = 0; i < ntfd; i++) {
		struct tfd *t = &tfds[i];
		char v[128];
		unsigned flags = 99;
		int clk = -1;
		if (fdinfo_field(t->fd, "settime flags", v, sizeof v) == 0) sscanf(v, "%o", &flags);
		if (fdinfo_field(t->fd, "clockid", v, sizeof v) == 0) sscanf(v, "%d", &clk);
		WL_CHECK(flags == (unsigned)t->flags, "timerfd %d (clock %d): settime flags 0%o, want 0%o", i, (int)t->clk,
		         flags, (unsigned)t->flags);
		WL_CHECK(clk == (int)t->clk, "timerfd %d: clockid %d, want %d", i, clk, (int)t->clk);
		struct itimerspec g;
		if (timerfd_gettime(t->fd, &g)) {
			wl_failf("timerfd %d: timerfd_gettime: %s", i, strerror(errno));
			continue;
		}
		WL_CHECK(g.it_interval.tv_sec == t->interval && g.it_interval.tv_nsec == 0, "timerfd %d: interval %ld.%09ld, want %ld",
		         i, (long)g.it_interval.tv_sec, g.it_interval.tv_nsec, t->interval);
		if (i == 7) continue; /* the short one: below */
		double left = (double)g.it_value.tv_sec + g.it_value.tv_nsec / 1e9, total = t->value / 1000.0;
		if (!t->value)
			WL_CHECK(left == 0, "timerfd %d: armed (%.3f s left), want disarmed", i, left);
		else
			WL_CHECK(left <= total + 0.05 && left >= total - since - 1.1,
			         "timerfd %d: %.3f s left, want between %.3f and %.3f", i, left, total - since - 1.1, total + 0.05);
	}
	/* the short one fires once, not before its time (1.5 s from setup, less a second of slack) */
	struct pollfd pf = {tfds[7].fd, POLLIN, 0};
	int r = poll(&pf, 1, 10000);
	double at = wl_now(CLOCK_MONOTONIC) - t_setup;
	uint64_t ticks = 0;
	WL_CHECK(r == 1 && read(tfds[7].fd, &ticks, sizeof ticks) == 8 && ticks == 1, "short timerfd: poll %d, ticks %" PRIu64,
	         r, ticks);
	WL_CHECK(at >= 0.5, "short timerfd fired %.3f s after setup, want 1.5 s or later", at);
	wl_detail("timerfds: %d checked, short one fired at %.3f s", ntfd, at);
}

/* ---- OFD locks ---- */
static char lk[4200], lk2[4200], lk3[4200];
static int flk, flk2, flk3;

static void ofd_setup(void) {
	wl_path(lk, sizeof lk, "lk");
	wl_path(lk2, sizeof lk2, "lk2");
	wl_path(lk3, sizeof lk3, "lk3");
	NEED((flk = open(lk, O_RDWR | O_CREAT, 0644)) >= 0 && ftruncate(flk, 100) == 0);
	NEED((flk2 = open(lk2, O_RDWR | O_CREAT, 0644)) >= 0 && ftruncate(flk2, 100) == 0);
	NEED((flk3 = open(lk3, O_RDWR | O_CREAT, 0644)) >= 0 && ftruncate(flk3, 100) == 0);
	struct flock o = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 5, .l_len = 5};
	NEED(fcntl(flk, F_OFD_SETLK, &o) == 0);
	int other = open(lk2, O_RDONLY); /* a second description: the lock is its, not flk2's */
	NEED(other >= 0);
	struct flock r = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
	NEED(fcntl(other, F_OFD_SETLK, &r) == 0);
	struct flock p = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
	NEED(fcntl(flk3, F_SETLK, &p) == 0);
}

static void ofd_check(void) {
	close(open(lk, O_RDONLY));
	close(open(lk2, O_RDONLY));
	pid_t me = getpid();
	pid_t c = fork();
	if (c == 0) {
		int bad = 0;
		int g = open(lk, O_RDWR);
		struct flock q = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 6, .l_len = 1};
		if (fcntl(g, F_OFD_GETLK, &q) || q.l_type != F_WRLCK) bad |= 1;
		else if (q.l_pid != -1 || q.l_start != 5 || q.l_len != 5) bad |= 2;
		int g2 = open(lk2, O_RDWR);
		struct flock q2 = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 1000, .l_len = 1};
		if (fcntl(g2, F_OFD_GETLK, &q2) || q2.l_type != F_RDLCK) bad |= 4;
		else if (q2.l_pid != -1 || q2.l_start != 0 || q2.l_len != 0) bad |= 8;
		int g3 = open(lk3, O_RDWR);
		struct flock q3 = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 9, .l_len = 1};
		if (fcntl(g3, F_GETLK, &q3) || q3.l_type != F_WRLCK || q3.l_pid != me) bad |= 16;
		_exit(bad);
	}
	int st = 0;
	waitpid(c, &st, 0);
	int bad = WIFEXITED(st) ? WEXITSTATUS(st) : 255;
	WL_CHECK(!(bad & 1), "lk: the OFD write lock on [5,10) is gone (after an unrelated close: was it a POSIX lock?)");
	WL_CHECK(!(bad & 2), "lk: the lock on [5,10) is not an OFD lock (l_pid not -1) or not that range");
	WL_CHECK(!(bad & 4), "lk2: the OFD read lock is gone (after an unrelated close: was it a POSIX lock?)");
	WL_CHECK(!(bad & 8), "lk2: the read lock is not an OFD lock to EOF");
	WL_CHECK(!(bad & 16), "lk3: the POSIX write lock of %d is not held", (int)me);
	wl_detail("locks: OFD and POSIX as set (%d)", bad);
}

static void setup(void) {
	if (is("mqzero")) mq_setup_zero();
	else if (is("mqfull")) mq_setup_full();
	else if (is("tfdflags")) tfd_setup();
	else if (is("ofd")) ofd_setup();
	else {
		fprintf(stderr, "fdstate: unknown mode %s\n", mode);
		exit(2);
	}
}

static void corrupt(void) {
	char buf[64];
	unsigned pr;
	if (is("mqzero")) mq_take(mqa, buf, sizeof buf, &pr);
	else if (is("mqfull")) mq_take(mqf, buf, sizeof buf, &pr);
	else if (is("tfdflags")) {
		struct itimerspec its = {{7, 0}, {100, 0}};
		timerfd_settime(tfds[0].fd, 0, &its, NULL);
	} else if (is("ofd")) {
		struct flock o = {.l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = 5, .l_len = 5};
		fcntl(flk, F_OFD_SETLK, &o);
		o.l_type = F_WRLCK;
		fcntl(flk, F_SETLK, &o);
	}
}

static void check(void) {
	if (is("mqzero")) mq_check_zero();
	else if (is("mqfull")) mq_check_full();
	else if (is("tfdflags")) tfd_check();
	else if (is("ofd")) ofd_check();
}

int main(int argc, char **argv) { wl_mode_main(argc, argv, "fdstate", setup, corrupt, check, 1); }
