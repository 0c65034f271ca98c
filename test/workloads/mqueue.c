/*
 * mqueue: POSIX message queues with messages in flight.
 *   Q1 "/cbmq-PID-1": maxmsg 8, msgsize 200, mode 0640, five unread messages of priorities
 *      1,5,1,5,0 ("a1","b5","c1","d5", a 200-byte pattern at 0); held by an O_RDWR fd, an
 *      O_WRONLY|O_NONBLOCK fd and, in child C, an O_RDONLY fd of its own.
 *   Q2 "/cbmq-PID-2": empty, maxmsg 3, msgsize 16, held O_RDONLY|O_NONBLOCK.
 * At go: attributes (maxmsg, msgsize, curmsgs, O_NONBLOCK per fd), mode, the receive order
 * b5 d5 a1 c1 pattern with their priorities, then Q1 and Q2 are empty (EAGAIN on non-blocking
 * fds), C then gets "to-child" through its own fd, and both queues still take messages.
 * Both queues are unlinked at the end. --selftest-corrupt: receives one message after ready.
 */
#include "wl.h"
#include <mqueue.h>
#include <signal.h>
#include <sys/wait.h>

static char n1[64], n2[64];

static void child(void) {
	mqd_t r = mq_open(n1, O_RDONLY);
	if (r == (mqd_t)-1) _exit(3);
	wl_write_file("c-ready", "1\n", 2);
	while (!wl_go()) wl_sleep_ms(10);
	char buf[256];
	unsigned prio = 0;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 5;
	/* P takes the five dumped messages first, then sends "to-child" */
	while (!wl_exists("p-sent")) wl_sleep_ms(5);
	ssize_t n = mq_timedreceive(r, buf, sizeof buf, &prio, &ts);
	const char *res = (n == 8 && !memcmp(buf, "to-child", 8) && prio == 3) ? "PASS\n" : "FAIL\n";
	wl_write_file("r-child", res, strlen(res));
	_exit(0);
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	snprintf(n1, sizeof n1, "/cbmq-%d-1", (int)getpid());
	snprintf(n2, sizeof n2, "/cbmq-%d-2", (int)getpid());
	mq_unlink(n1); mq_unlink(n2);
	mode_t old = umask(0);
	struct mq_attr a1 = {.mq_maxmsg = 8, .mq_msgsize = 200}, a2 = {.mq_maxmsg = 3, .mq_msgsize = 16};
	mqd_t q1 = mq_open(n1, O_RDWR | O_CREAT | O_EXCL, 0640, &a1);
	mqd_t q2 = mq_open(n2, O_RDONLY | O_NONBLOCK | O_CREAT | O_EXCL, 0600, &a2);
	umask(old);
	if (q1 == (mqd_t)-1 || q2 == (mqd_t)-1) { perror("mq_open"); return 2; }
	mqd_t w1 = mq_open(n1, O_WRONLY | O_NONBLOCK);
	static char pat[200];
	wl_fill(pat, sizeof pat, 33);
	if (mq_send(w1, "a1", 2, 1) || mq_send(q1, "b5", 2, 5) || mq_send(w1, "c1", 2, 1) || mq_send(q1, "d5", 2, 5) || mq_send(q1, pat, sizeof pat, 0)) {
		perror("mq_send"); return 2;
	}
	pid_t c = fork();
	if (c == 0) child();
	for (int i = 0; i < 500 && !wl_exists("c-ready"); i++) wl_sleep_ms(10);
	wl_ready();
	if (wl_corrupting("recv", "recv")) { char b[256]; mq_receive(q1, b, sizeof b, NULL); }
	while (!wl_go()) wl_sleep_ms(10);

	struct mq_attr a;
	WL_CHECK(mq_getattr(q1, &a) == 0 && a.mq_maxmsg == 8 && a.mq_msgsize == 200 && a.mq_curmsgs == 5 && !(a.mq_flags & O_NONBLOCK),
		 "q1 attributes: maxmsg %ld msgsize %ld curmsgs %ld flags 0%lo", a.mq_maxmsg, a.mq_msgsize, a.mq_curmsgs, a.mq_flags);
	WL_CHECK(mq_getattr(w1, &a) == 0 && (a.mq_flags & O_NONBLOCK), "w1 lost O_NONBLOCK");
	WL_CHECK(mq_getattr(q2, &a) == 0 && a.mq_maxmsg == 3 && a.mq_msgsize == 16 && a.mq_curmsgs == 0 && (a.mq_flags & O_NONBLOCK),
		 "q2 attributes: maxmsg %ld msgsize %ld curmsgs %ld flags 0%lo", a.mq_maxmsg, a.mq_msgsize, a.mq_curmsgs, a.mq_flags);
	struct stat st;
	WL_CHECK(fstat(q1, &st) == 0 && (st.st_mode & 07777) == 0640, "q1 mode 0%o", st.st_mode & 07777);
	WL_CHECK(fcntl(w1, F_GETFL) >= 0 && (fcntl(w1, F_GETFL) & O_ACCMODE) == O_WRONLY, "w1 is not write-only");
	const char *want[4] = {"b5", "d5", "a1", "c1"};
	unsigned wprio[5] = {5, 5, 1, 1, 0};
	char buf[256];
	for (int i = 0; i < 5; i++) {
		unsigned prio = 99;
		struct timespec ts = {0, 0};
		ssize_t n = mq_timedreceive(q1, buf, sizeof buf, &prio, &ts);
		int ok = i < 4 ? (n == 2 && !memcmp(buf, want[i], 2)) : (n == 200 && !memcmp(buf, pat, 200));
		WL_CHECK(ok && prio == wprio[i], "message %d: got %zd bytes prio %u, want %s prio %u", i + 1, n, prio, i < 4 ? want[i] : "pattern", wprio[i]);
	}
	errno = 0;
	struct timespec ts0 = {0, 0};
	WL_CHECK(mq_timedreceive(q1, buf, sizeof buf, NULL, &ts0) < 0 && errno == ETIMEDOUT, "q1 not empty (errno %d)", errno);
	errno = 0;
	WL_CHECK(mq_receive(q2, buf, sizeof buf, NULL) < 0 && errno == EAGAIN, "q2 not empty (errno %d)", errno);
	WL_CHECK(mq_send(w1, "to-child", 8, 3) == 0, "send to-child: errno %d", errno);
	wl_write_file("p-sent", "1\n", 2);
	int status = 0;
	WL_CHECK(waitpid(c, &status, 0) == c && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status 0x%x", status);
	char rp[4200], rc[16] = "";
	wl_path(rp, sizeof rp, "r-child");
	int fd = open(rp, O_RDONLY);
	if (fd >= 0) { if (read(fd, rc, sizeof rc - 1) < 0) rc[0] = 0; close(fd); }
	WL_CHECK(!strncmp(rc, "PASS", 4), "child did not get to-child through its own fd");
	WL_CHECK(mq_send(q1, "z", 1, 0) == 0 && mq_receive(q1, buf, sizeof buf, NULL) == 1, "q1 round trip");
	mq_unlink(n1); mq_unlink(n2);
	wl_check_ids();
	wl_finish();
}
