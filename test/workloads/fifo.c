/*
 * fifo: named pipes with data in flight, ends split across parent P and child C.
 *   DIR/f1: C writes (blocking O_WRONLY) 3000 pattern bytes + "c2p-end"; P holds the read end
 *           (opened O_NONBLOCK, then switched to blocking) and has not read anything yet.
 *   DIR/f2: P writes (blocking O_WRONLY, pipe grown to 256 KiB) 150000 pattern bytes; C holds
 *           the read end with O_NONBLOCK.
 *   DIR/f3: P holds one O_RDWR fd with "self-data" queued.
 * At go: each end still is the FIFO at its path (same inode), flags are as set up (blocking or
 * not, access mode), every queue reads back exactly and then is empty, f2 is still >= 150000
 * bytes big, and both directions still work (C sends "after-c2p" once it checked f2, then P
 * sends "after-p2c"). C reports to DIR/r-child,
 * P reaps C and writes DIR/result.
 * --selftest-corrupt: P reads one byte of f1 after ready.
 */
#include "wl.h"
#include <poll.h>
#include <sys/wait.h>
#include <signal.h>

#define F1_LEN 3000
#define F2_LEN 150000

static char p1[4200], p2[4200], p3[4200];

static int wait_readable(int fd, int ms) {
	struct pollfd pf = {.fd = fd, .events = POLLIN};
	return poll(&pf, 1, ms) == 1 && (pf.revents & POLLIN);
}

/* read exactly len bytes within a few seconds (fd blocking or not) */
static ssize_t read_all(int fd, char *buf, size_t len) {
	size_t got = 0;
	while (got < len) {
		if (!wait_readable(fd, 2000)) break;
		ssize_t n = read(fd, buf + got, len - got);
		if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
		if (n <= 0) break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static void check_same_fifo(int fd, const char *path, const char *what) {
	struct stat a, b;
	WL_CHECK(fstat(fd, &a) == 0 && stat(path, &b) == 0 && S_ISFIFO(a.st_mode) && a.st_ino == b.st_ino && a.st_dev == b.st_dev,
		 "%s is not the fifo %s any more", what, path);
}

static void check_empty(int fd, const char *what) {
	WL_CHECK(!wait_readable(fd, 0), "%s: more data queued", what);
}

static void child(void) {
	static char big[F2_LEN], buf[F2_LEN + 16];
	int w1 = open(p1, O_WRONLY); /* P's read end exists: does not block */
	int r2 = open(p2, O_RDONLY | O_NONBLOCK);
	if (w1 < 0 || r2 < 0) _exit(3);
	wl_fill(big, F1_LEN, 11);
	if (write(w1, big, F1_LEN) != F1_LEN || write(w1, "c2p-end", 7) != 7) _exit(3);
	wl_write_file("c-ready", "1\n", 2);
	while (!wl_go()) wl_sleep_ms(10);
	const char *bad = NULL;
	char why[256] = "";
	int fl1 = fcntl(w1, F_GETFL), fl2 = fcntl(r2, F_GETFL);
	if ((fl1 & O_ACCMODE) != O_WRONLY || (fl1 & O_NONBLOCK)) { bad = "f1 write end flags"; snprintf(why, sizeof why, "0%o", fl1); }
	else if ((fl2 & O_ACCMODE) != O_RDONLY || !(fl2 & O_NONBLOCK)) { bad = "f2 read end flags"; snprintf(why, sizeof why, "0%o", fl2); }
	wl_fill(big, F2_LEN, 22);
	ssize_t n = read_all(r2, buf, F2_LEN);
	if (!bad && (n != F2_LEN || memcmp(buf, big, F2_LEN))) { bad = "f2 data"; snprintf(why, sizeof why, "got %zd of %d bytes", n, F2_LEN); }
	if (!bad) {
		errno = 0;
		if (read(r2, buf, 16) != -1 || errno != EAGAIN) bad = "f2 not empty after its data";
	}
	if (!bad && write(w1, "after-c2p", 9) != 9) bad = "write after-c2p";
	if (!bad && (read_all(r2, buf, 9) != 9 || memcmp(buf, "after-p2c", 9))) bad = "after-p2c never arrived";
	char out[512];
	int k = snprintf(out, sizeof out, "%s %s %s\n", bad ? "FAIL" : "PASS", bad ? bad : "-", why);
	wl_write_file("r-child", out, (size_t)k);
	_exit(0);
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	signal(SIGPIPE, SIG_IGN); /* a failed check on one side must not kill the other */
	static char big[F2_LEN], buf[F2_LEN + 16];
	wl_path(p1, sizeof p1, "f1");
	wl_path(p2, sizeof p2, "f2");
	wl_path(p3, sizeof p3, "f3");
	unlink(p1); unlink(p2); unlink(p3);
	if (mkfifo(p1, 0600) || mkfifo(p2, 0600) || mkfifo(p3, 0600)) { perror("mkfifo"); return 2; }
	int r1 = open(p1, O_RDONLY | O_NONBLOCK);
	int t2 = open(p2, O_RDONLY | O_NONBLOCK); /* keeps f2 readable until C has its own end */
	if (r1 < 0 || t2 < 0) { perror("open fifo"); return 2; }
	fcntl(r1, F_SETFL, 0);
	pid_t c = fork();
	if (c == 0) { close(r1); close(t2); child(); }
	for (int i = 0; i < 500 && !wl_exists("c-ready"); i++) wl_sleep_ms(10);
	if (!wl_exists("c-ready")) { fprintf(stderr, "child not ready\n"); return 2; }
	int w2 = open(p2, O_WRONLY | O_NONBLOCK);
	if (w2 < 0 || fcntl(w2, F_SETPIPE_SZ, 262144) < 0) { perror("f2"); return 2; }
	wl_fill(big, F2_LEN, 22);
	if (write(w2, big, F2_LEN) != F2_LEN) { perror("write f2"); return 2; }
	fcntl(w2, F_SETFL, 0);
	close(t2);
	int rw3 = open(p3, O_RDWR);
	if (rw3 < 0 || write(rw3, "self-data", 9) != 9) { perror("f3"); return 2; }
	wl_ready();
	if (wl_corrupting("read", "read")) { wl_sleep_ms(20); char x; if (read(r1, &x, 1) != 1) fprintf(stderr, "corrupt read\n"); }
	while (!wl_go()) wl_sleep_ms(10);

	check_same_fifo(r1, p1, "f1 read end");
	check_same_fifo(w2, p2, "f2 write end");
	check_same_fifo(rw3, p3, "f3 rw fd");
	int fl;
	WL_CHECK(((fl = fcntl(r1, F_GETFL)) & (O_ACCMODE | O_NONBLOCK)) == O_RDONLY, "f1 read end flags 0%o", fl);
	WL_CHECK(((fl = fcntl(w2, F_GETFL)) & (O_ACCMODE | O_NONBLOCK)) == O_WRONLY, "f2 write end flags 0%o", fl);
	WL_CHECK(((fl = fcntl(rw3, F_GETFL)) & (O_ACCMODE | O_NONBLOCK)) == O_RDWR, "f3 flags 0%o", fl);
	int sz = fcntl(w2, F_GETPIPE_SZ);
	WL_CHECK(sz >= F2_LEN, "f2 pipe size %d < %d", sz, F2_LEN);
	wl_detail("f2_pipe_size=%d", sz);

	wl_fill(big, F1_LEN, 11);
	memcpy(big + F1_LEN, "c2p-end", 7);
	ssize_t n = read_all(r1, buf, F1_LEN + 7);
	WL_CHECK(n == F1_LEN + 7 && !memcmp(buf, big, F1_LEN + 7), "f1 data: got %zd of %d bytes%s", n, F1_LEN + 7,
		 n == F1_LEN + 7 ? " (differ)" : "");
	n = read_all(r1, buf, 9); /* C writes it once it has checked f2 */
	WL_CHECK(n == 9 && !memcmp(buf, "after-c2p", 9), "after-c2p never arrived (%zd)", n);
	check_empty(r1, "f1");
	n = read_all(rw3, buf, 9);
	WL_CHECK(n == 9 && !memcmp(buf, "self-data", 9), "f3 data: got %zd bytes", n);
	check_empty(rw3, "f3");
	WL_CHECK(write(rw3, "again", 5) == 5 && read_all(rw3, buf, 5) == 5 && !memcmp(buf, "again", 5), "f3 round trip");

	WL_CHECK(write(w2, "after-p2c", 9) == 9, "write after-p2c: errno %d", errno);

	int st = 0;
	WL_CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child exit status 0x%x", st);
	char rc[512] = "";
	char rp[4200];
	wl_path(rp, sizeof rp, "r-child");
	int fd = open(rp, O_RDONLY);
	if (fd >= 0) { ssize_t k = read(fd, rc, sizeof rc - 1); if (k > 0) rc[k] = 0; close(fd); }
	rc[strcspn(rc, "\n")] = 0;
	WL_CHECK(strncmp(rc, "PASS", 4) == 0, "child: %s", rc[0] ? rc : "no report");
	wl_detail("child=%s", rc);
	wl_check_ids();
	wl_finish();
}
