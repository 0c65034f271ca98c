/*
 * unixtree: unix socket pairs whose two ends live in different processes of the tree, the
 * shapes that used to hang after restore (each process got a pair of its own).
 *
 *   unixtree DIR seqpair   a child blocked in read() on a SEQPACKET pair whose other end is the
 *                          parent's; at go the parent writes, the child answers and exits 0
 *   unixtree DIR seqpair-cow     the same, with 16 MiB of heap shared copy-on-write between
 *                          them (the child rewrote half of it): each checks its own copy at go
 *   unixtree DIR seqpair-strict  the same, the child in seccomp strict mode (it answers and
 *                          leaves with the calls strict mode allows: read, write, exit)
 *   unixtree DIR seqpair-filter  the same, the child under a seccomp filter inherited from the
 *                          parent (getppid fails with EPERM in both)
 *   unixtree DIR seqpair-tsync   the same, the filter set with SECCOMP_FILTER_FLAG_TSYNC by a
 *                          parent with a second thread: both parent threads and the child keep it
 *   unixtree DIR ring      4 processes in a ring of stream socketpairs, each link filled with as
 *                          much as it holds (about 200 KiB to 1 MiB, SO_SNDBUFFORCE 1 MiB), then
 *                          each one blocked in a read of a token; at go the data is drained and
 *                          checked in every process, the token goes round once
 *   unixtree DIR server    a named listener in the parent with 3 accepted connections; each client
 *                          child sent 64 KiB and blocks for the answer; at go the server checks
 *                          each stream and answers, every client checks its answer
 *   unixtree DIR writers   the same with clients writing continuously (2 MiB each, more than the
 *                          socket holds: each is blocked in write() at dump); at go the server
 *                          reads and checks every stream whole, then answers
 * --selftest-corrupt: the parent drops (reads) part of what it should check, so it must FAIL.
 */
#include "wl.h"
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <stddef.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#define RING 4
#define CLIENTS 3
#define CLIENT_BYTES (64 << 10)
#define WRITER_BYTES (2 << 20)

static ssize_t readn(int fd, void *buf, size_t n) {
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, (char *)buf + got, n - got);
		if (r < 0 && errno == EINTR) continue;
		if (r <= 0) return r < 0 ? r : (ssize_t)got;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* fill a stream socket with a seeded pattern until it would block; returns the bytes written */
static size_t fill(int fd, uint64_t seed) {
	static char buf[1 << 20];
	wl_fill(buf, sizeof buf, seed);
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	size_t total = 0;
	for (;;) {
		ssize_t w = write(fd, buf + total, sizeof buf - total);
		if (w <= 0) break;
		total += (size_t)w;
		if (total == sizeof buf) break;
	}
	fcntl(fd, F_SETFL, fl);
	return total;
}

/* read exactly n bytes and compare with the pattern; 0 if equal */
static int drain_check(int fd, size_t n, uint64_t seed) {
	static char want[WRITER_BYTES], got[WRITER_BYTES];
	wl_fill(want, sizeof want, seed);
	if (readn(fd, got, n) != (ssize_t)n) return -1;
	return memcmp(want, got, n) != 0;
}

/* seqpair-filter, -tsync: getppid fails with EPERM, everything else is allowed */
static int install_filter(unsigned flags) {
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}
static int filtered(void) { errno = 0; return syscall(SYS_getppid) == -1 && errno == EPERM; }

/* seqpair-tsync: the parent's second thread, asked at go whether the filter holds for it */
static volatile int thr_ask, thr_answer;
static void *thr_main(void *a) {
	(void)a;
	while (!thr_ask) wl_sleep_ms(5);
	thr_answer = filtered() ? 1 : 2;
	return NULL;
}

#define COW_LEN (16 << 20)
static int seqpair(const char *variant) {
	int cow = !strcmp(variant, "cow"), strict = !strcmp(variant, "strict");
	int filter = !strcmp(variant, "filter"), tsync = !strcmp(variant, "tsync");
	char *heap = NULL;
	pthread_t thr;
	if (cow) { /* shared copy-on-write with the child, which rewrites the second half */
		if (!(heap = malloc(COW_LEN))) return 2;
		wl_fill(heap, COW_LEN, 7);
	}
	if (tsync) {
		if (pthread_create(&thr, NULL, thr_main, NULL) != 0) return 2;
		if (install_filter(SECCOMP_FILTER_FLAG_TSYNC) != 0) return 2;
	}
	if (filter && install_filter(0) != 0) return 2;
	int s[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, s) != 0) return 2;
	int ready[2];
	if (pipe(ready) != 0) return 2;
	pid_t c = fork();
	if (c == 0) {
		close(s[0]);
		close(ready[0]);
		int ok = 1;
		if (cow) wl_fill(heap + COW_LEN / 2, COW_LEN / 2, 8);
		if (strict) {
			if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0) != 0) _exit(9);
			write(ready[1], "s", 1);
			char b[16];
			ssize_t n = read(s[1], b, sizeof b); /* strict from here on: read, write, exit */
			if (n == 5 && memcmp(b, "ping!", 5) == 0) write(s[1], "pong!", 5);
			syscall(SYS_exit, n == 5 ? 0 : 1);
		}
		write(ready[1], "s", 1);
		char b[16];
		ssize_t n = read(s[1], b, sizeof b);
		if (cow) ok = wl_verify_fill(heap, COW_LEN / 2, 7) == (size_t)-1 && wl_verify_fill(heap + COW_LEN / 2, COW_LEN / 2, 8) == (size_t)-1;
		if (filter || tsync) ok = filtered();
		if (n == 5 && memcmp(b, "ping!", 5) == 0 && ok) write(s[1], "pong!", 5);
		_exit(n == 5 ? (ok ? 0 : 6) : 1);
	}
	close(s[1]);
	close(ready[1]);
	char r;
	if (read(ready[0], &r, 1) != 1) return 2; /* the child set up (strict mode entered) */
	close(ready[0]);
	wl_ready();
	if (wl_corrupt) { close(s[0]); socketpair(AF_UNIX, SOCK_SEQPACKET, 0, s); }
	while (!wl_go()) wl_sleep_ms(10);
	wl_check_ids();
	if (cow) WL_CHECK(wl_verify_fill(heap, COW_LEN, 7) == (size_t)-1, "the parent's copy-on-write heap changed");
	if (filter || tsync) WL_CHECK(filtered(), "the parent's seccomp filter is gone");
	if (tsync) {
		thr_ask = 1;
		for (int i = 0; i < 500 && !thr_answer; i++) wl_sleep_ms(10);
		WL_CHECK(thr_answer == 1, "the second thread's filter (TSYNC) is gone (%d)", thr_answer);
	}
	if (strict) {
		char path[64], st[4096] = "";
		snprintf(path, sizeof path, "/proc/%d/status", (int)c);
		int f = open(path, O_RDONLY);
		ssize_t k = f >= 0 ? read(f, st, sizeof st - 1) : -1;
		if (f >= 0) close(f);
		WL_CHECK(k > 0 && strstr(st, "\nSeccomp:\t1\n"), "the child is not in seccomp strict mode");
	}
	WL_CHECK(write(s[0], "ping!", 5) == 5, "write to the child: %s", strerror(errno));
	struct pollfd p = {s[0], POLLIN, 0};
	char b[16];
	ssize_t n = poll(&p, 1, wl_corrupt ? 300 : 5000) == 1 ? read(s[0], b, sizeof b) : -1;
	WL_CHECK(n == 5 && memcmp(b, "pong!", 5) == 0, "no answer from the child blocked in read() (%zd)", n);
	int st = 0;
	if (n != 5) kill(c, SIGKILL);
	WL_CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status 0x%x", st);
	return 0;
}

/* member i of the ring reads from in (link i-1 -> i) and writes to out (link i -> i+1) */
static int ring_member(int i, int in, int out, size_t inbytes) {
	int bad = drain_check(in, inbytes, 100 + (uint64_t)((i + RING - 1) % RING));
	char tok;
	if (i != 0) { /* wait for the token, then pass it on */
		if (readn(in, &tok, 1) != 1) return 3;
		if (write(out, &tok, 1) != 1) return 4;
	}
	return bad ? 5 : 0;
}

static int ring(void) {
	int link[RING][2];
	size_t bytes[RING];
	for (int i = 0; i < RING; i++) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, link[i]) != 0) return 2;
		int big = 1 << 20;
		setsockopt(link[i][0], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
		setsockopt(link[i][1], SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
		bytes[i] = fill(link[i][0], 100 + (uint64_t)i); /* link i: written by member i, read by i+1 */
	}
	/* every member but 0 is a child; each keeps link[i-1][1] (in) and link[i][0] (out) */
	pid_t kids[RING];
	for (int i = 1; i < RING; i++) {
		kids[i] = fork();
		if (kids[i] == 0) {
			for (int j = 0; j < RING; j++) {
				if (j != i) close(link[j][0]);
				if (j != (i + RING - 1) % RING) close(link[j][1]);
			}
			while (!wl_go()) wl_sleep_ms(10); /* the data stays in flight until then */
			_exit(ring_member(i, link[i - 1][1], link[i][0], bytes[i - 1]));
		}
	}
	for (int j = 0; j < RING; j++) {
		if (j != 0) close(link[j][0]);
		if (j != RING - 1) close(link[j][1]);
	}
	int in = link[RING - 1][1], out = link[0][0];
	wl_ready();
	while (!wl_go()) wl_sleep_ms(10);
	wl_check_ids();
	/* member 0 starts the token, then drains its own link and waits for the token back */
	if (wl_corrupt) { char x; read(in, &x, 1); }
	int r = drain_check(in, bytes[RING - 1] - (wl_corrupt ? 1 : 0), 100 + RING - 1);
	WL_CHECK(r == 0, "member 0: data on its incoming link differs or is short");
	WL_CHECK(write(out, "T", 1) == 1, "member 0: token not sent");
	struct pollfd p = {in, POLLIN, 0};
	char tok = 0;
	WL_CHECK(poll(&p, 1, 8000) == 1 && read(in, &tok, 1) == 1 && tok == 'T', "the token did not come round");
	for (int i = 1; i < RING; i++) {
		int st = 0;
		if (tok != 'T') kill(kids[i], SIGKILL);
		WL_CHECK(waitpid(kids[i], &st, 0) == kids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0, "member %d status 0x%x", i, st);
	}
	wl_detail("link_bytes=%zu,%zu,%zu,%zu", bytes[0], bytes[1], bytes[2], bytes[3]);
	return 0;
}

static int server(int writers) {
	const size_t each = writers ? WRITER_BYTES : CLIENT_BYTES;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "srv.sock"); /* relative to DIR (our cwd) */
	if (chdir(wl_dir) != 0) return 2;
	unlink(sa.sun_path);
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 8) != 0) return 2;
	pid_t kids[CLIENTS];
	int conns[CLIENTS];
	for (int i = 0; i < CLIENTS; i++) {
		kids[i] = fork();
		if (kids[i] == 0) {
			close(l);
			for (int j = 0; j < i; j++) close(conns[j]);
			int c = socket(AF_UNIX, SOCK_STREAM, 0);
			if (connect(c, (struct sockaddr *)&sa, sizeof sa) != 0) _exit(2);
			static char buf[WRITER_BYTES];
			wl_fill(buf, each, 500 + (uint64_t)i);
			/* writers: more than the socket holds, so this blocks in write() until the server reads */
			for (size_t off = 0; off < each;) {
				ssize_t w = write(c, buf + off, writers ? 4096 < each - off ? 4096 : each - off : each - off);
				if (w < 0 && errno == EINTR) continue;
				if (w <= 0) _exit(3);
				off += (size_t)w;
			}
			char ans[32] = "";
			ssize_t n = readn(c, ans, 8);
			char want[16];
			snprintf(want, sizeof want, "ok-%04d", i);
			_exit(n == 8 && memcmp(ans, want, 8) == 0 ? 0 : 4);
		}
		conns[i] = accept(l, NULL, NULL);
		if (conns[i] < 0) return 2;
	}
	/* until every client has written all it has (writers: until each is blocked, its socket full) */
	for (int i = 0; i < CLIENTS; i++) {
		int last = -1;
		for (int t = 0; t < 500; t++) {
			int q = 0;
			ioctl(conns[i], FIONREAD, &q);
			if (!writers && q >= CLIENT_BYTES) break;
			if (writers && q > 0 && q == last) break;
			last = q;
			wl_sleep_ms(10);
		}
	}
	wl_ready();
	while (!wl_go()) wl_sleep_ms(10);
	wl_check_ids();
	for (int i = 0; i < CLIENTS; i++) {
		if (wl_corrupt && i == 1) { char x; read(conns[i], &x, 1); }
		int bad = drain_check(conns[i], each - (wl_corrupt && i == 1 ? 1 : 0), 500 + (uint64_t)i);
		WL_CHECK(bad == 0, "client %d: its %zu bytes differ or are short", i, each);
		char ans[16];
		snprintf(ans, sizeof ans, "ok-%04d", i);
		WL_CHECK(write(conns[i], ans, 8) == 8, "answer to client %d: %s", i, strerror(errno));
	}
	for (int i = 0; i < CLIENTS; i++) {
		int st = 0;
		WL_CHECK(waitpid(kids[i], &st, 0) == kids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0, "client %d status 0x%x", i, st);
	}
	unlink(sa.sun_path);
	return 0;
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	const char *mode = wl_arg(argc, argv, 0);
	signal(SIGPIPE, SIG_IGN);
	int r = !mode ? 2 : !strcmp(mode, "seqpair") ? seqpair("")
		: !strncmp(mode, "seqpair-", 8) ? seqpair(mode + 8)
		: !strcmp(mode, "ring") ? ring() : !strcmp(mode, "server") ? server(0) : !strcmp(mode, "writers") ? server(1) : 2;
	if (r) {
		fprintf(stderr, "unixtree: setup of %s failed (%d): %s\n", mode ? mode : "(none)", r, strerror(errno));
		return 2;
	}
	if (mode) wl_detail("mode=%s", mode);
	wl_finish();
}
