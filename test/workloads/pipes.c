/*
 * pipes: unread data in pipes at dump time, within one process and across processes.
 *  - p1: a pipe inside the parent holding 3000 bytes written before ready (never read before go);
 *  - p2: parent -> child, 5000 bytes in flight; p3: child -> parent, 7000 bytes in flight;
 *  - p4: an O_NONBLOCK pipe with a 1 MiB buffer (F_SETPIPE_SZ) holding 200 KiB.
 * At go both sides read everything back and compare with the patterns; the child reports its
 * part through p3 after the data, the parent checks flags, sizes and the child's exit status.
 * --selftest-corrupt: the parent reads one byte of p1 early (and puts another at the end).
 */
#include "wl.h"
#include <sys/wait.h>

static void pat(unsigned char *b, size_t n, int seed) { for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(i * 7 + seed); }
static int readall(int fd, unsigned char *b, size_t n) {
	size_t got = 0;
	while (got < n) { ssize_t r = read(fd, b + got, n - got); if (r <= 0) { if (r < 0 && errno == EINTR) continue; return -1; } got += (size_t)r; }
	return 0;
}
static int writeall(int fd, const unsigned char *b, size_t n) {
	size_t w = 0;
	while (w < n) { ssize_t r = write(fd, b + w, n - w); if (r <= 0) { if (r < 0 && errno == EINTR) continue; return -1; } w += (size_t)r; }
	return 0;
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	int p1[2], p2[2], p3[2], p4[2];
	if (pipe(p1) || pipe(p2) || pipe(p3) || pipe2(p4, O_NONBLOCK)) exit(2);
	static unsigned char a[3000], b[5000], c[7000], d[200 << 10], t[200 << 10];
	pat(a, sizeof a, 1); pat(b, sizeof b, 2); pat(c, sizeof c, 3); pat(d, sizeof d, 4);
	if (fcntl(p4[1], F_SETPIPE_SZ, 1 << 20) < (1 << 20)) exit(2);
	writeall(p1[1], a, sizeof a);
	writeall(p4[1], d, sizeof d);
	pid_t k = fork();
	if (k == 0) {
		close(p2[1]); close(p3[0]);
		writeall(p3[1], c, sizeof c);
		while (!wl_go()) wl_sleep_ms(5);
		int ok = readall(p2[0], t, sizeof b) == 0 && !memcmp(t, b, sizeof b);
		unsigned char verdict = ok ? 'Y' : 'N';
		writeall(p3[1], &verdict, 1);
		_exit(ok ? 0 : 1);
	}
	close(p2[0]); close(p3[1]);
	writeall(p2[1], b, sizeof b);
	wl_ready();
	if (wl_corrupting("", "")) { unsigned char x; if (read(p1[0], &x, 1) != 1 || write(p1[1], "X", 1) != 1) exit(2); }
	while (!wl_go()) wl_sleep_ms(5);
	wl_check_ids();
	WL_CHECK(readall(p1[0], t, sizeof a) == 0 && !memcmp(t, a, sizeof a), "p1 data differs");
	WL_CHECK(readall(p3[0], t, sizeof c) == 0 && !memcmp(t, c, sizeof c), "p3 data from the child differs");
	unsigned char v = 0;
	WL_CHECK(readall(p3[0], &v, 1) == 0 && v == 'Y', "child saw wrong p2 data (verdict %c)", v ? v : '?');
	WL_CHECK(fcntl(p4[0], F_GETPIPE_SZ) >= (1 << 20), "p4 buffer size %d", fcntl(p4[0], F_GETPIPE_SZ));
	WL_CHECK(fcntl(p4[0], F_GETFL) & O_NONBLOCK, "p4 lost O_NONBLOCK");
	WL_CHECK(readall(p4[0], t, sizeof d) == 0 && !memcmp(t, d, sizeof d), "p4 data differs");
	unsigned char extra;
	WL_CHECK(read(p4[0], &extra, 1) == -1 && errno == EAGAIN, "p4 has more data than written");
	int st = 0;
	waitpid(k, &st, 0);
	WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status 0x%x", st);
	wl_finish();
}
