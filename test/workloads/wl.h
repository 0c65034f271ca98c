/*
 * wl.h - shared protocol helpers for the criu-bun test workloads.
 *
 * Protocol (every workload): `bin/<name> DIR [args...]`
 *   1. set up state, record what it must look like later;
 *   2. write DIR/ready ("<pid>\n") atomically (DIR/ready.tmp + rename);
 *   3. keep working, polling for DIR/go every ~10 ms (or, for workloads blocked in a
 *      syscall, wait for the wake-up signal named in DIR/wake, see block.c);
 *   4. on go: verify everything, write DIR/result ("PASS" or "FAIL: <reason>", then
 *      detail lines "key=value"), exit 0 on PASS and 1 on FAIL.
 *
 * A workload never relies on stdout/stderr (they may be /dev/null after a restore).
 * `--selftest-corrupt[=WHAT]` anywhere in the arguments makes the workload damage one piece
 * of its own state after `ready` (as a broken restore would), so tests can prove the
 * checks fail. Header-only on purpose: each workload is one gcc invocation.
 */
#ifndef CRIU_BUN_WL_H
#define CRIU_BUN_WL_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

static char wl_dir[4096];
static pid_t wl_pid, wl_tid;
static const char *wl_corrupt; /* NULL, or what to corrupt ("" = workload's default) */
static char wl_details[16384];
static size_t wl_details_len;
static char wl_fail[1024]; /* first failure reason */
static int wl_nfail;

static inline pid_t wl_gettid(void) { return (pid_t)syscall(SYS_gettid); }

static inline void wl_path(char *out, size_t n, const char *name) {
	snprintf(out, n, "%s/%s", wl_dir, name);
}

/* Write a whole file atomically: NAME.tmp then rename to NAME. */
static inline int wl_write_file(const char *name, const char *data, size_t len) {
	char tmp[4200], dst[4200];
	snprintf(tmp, sizeof tmp, "%s/%s.tmp", wl_dir, name);
	wl_path(dst, sizeof dst, name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) return -1;
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);
		if (w < 0) {
			if (errno == EINTR) continue;
			close(fd);
			return -1;
		}
		off += (size_t)w;
	}
	close(fd);
	return rename(tmp, dst);
}

static inline int wl_exists(const char *name) {
	char p[4200];
	wl_path(p, sizeof p, name);
	return access(p, F_OK) == 0;
}

static inline int wl_go(void) { return wl_exists("go"); }

/* Parse DIR and the generic flags, record pid and tid. */
static inline void wl_init(int argc, char **argv) {
	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR [args...]\n", argv[0]);
		exit(2);
	}
	snprintf(wl_dir, sizeof wl_dir, "%s", argv[1]);
	wl_pid = getpid();
	wl_tid = wl_gettid();
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--selftest-corrupt") == 0) wl_corrupt = "";
		else if (strncmp(argv[i], "--selftest-corrupt=", 19) == 0) wl_corrupt = argv[i] + 19;
	}
}

/* Is corruption WHAT requested? ("" selects the workload's default, named DEF) */
static inline int wl_corrupting(const char *what, const char *def) {
	if (!wl_corrupt) return 0;
	const char *c = wl_corrupt[0] ? wl_corrupt : def;
	return strcmp(c, what) == 0;
}

/* Non-option workload argument number IDX (0-based, after DIR), or NULL. */
static inline const char *wl_arg(int argc, char **argv, int idx) {
	for (int i = 2; i < argc; i++) {
		if (strncmp(argv[i], "--", 2) == 0) continue;
		if (idx-- == 0) return argv[i];
	}
	return NULL;
}

static inline void wl_detail(const char *fmt, ...) {
	if (wl_details_len >= sizeof wl_details - 2) return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(wl_details + wl_details_len, sizeof wl_details - wl_details_len - 1, fmt, ap);
	va_end(ap);
	if (n < 0) return;
	wl_details_len += (size_t)n;
	if (wl_details_len > sizeof wl_details - 2) wl_details_len = sizeof wl_details - 2;
	wl_details[wl_details_len++] = '\n';
	wl_details[wl_details_len] = 0;
}

/* Record a failed check (the first one becomes the FAIL reason; all go to details). */
static inline void wl_failf(const char *fmt, ...) {
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (wl_nfail++ == 0) snprintf(wl_fail, sizeof wl_fail, "%s", msg);
	wl_detail("check failed: %s", msg);
}

#define WL_CHECK(cond, ...)                  \
	do {                                     \
		if (!(cond)) wl_failf(__VA_ARGS__);  \
	} while (0)

static inline void wl_ready(void) {
	char buf[32];
	int n = snprintf(buf, sizeof buf, "%d\n", (int)wl_pid);
	if (wl_write_file("ready", buf, (size_t)n) != 0) {
		perror("write ready");
		exit(2);
	}
}

/* Announce that the wake-up needs signal SIG in addition to DIR/go. Call before wl_ready. */
static inline void wl_wake_signal(int sig) {
	char buf[32];
	int n = snprintf(buf, sizeof buf, "%d\n", sig);
	wl_write_file("wake", buf, (size_t)n);
}

static inline void wl_check_ids(void) {
	pid_t p = getpid(), t = wl_gettid();
	WL_CHECK(p == wl_pid, "pid changed: %d -> %d", (int)wl_pid, (int)p);
	WL_CHECK(t == wl_tid, "main tid changed: %d -> %d", (int)wl_tid, (int)t);
	wl_detail("pid=%d", (int)p);
}

/* Write DIR/result and exit. */
static inline void __attribute__((noreturn)) wl_finish(void) {
	static char out[sizeof wl_details + sizeof wl_fail + 64];
	int n;
	if (wl_nfail == 0) n = snprintf(out, sizeof out, "PASS\n%s", wl_details);
	else n = snprintf(out, sizeof out, "FAIL: %s (%d failed checks)\n%s", wl_fail, wl_nfail, wl_details);
	if (n < 0) n = 0;
	if ((size_t)n > sizeof out - 1) n = (int)sizeof out - 1;
	wl_write_file("result", out, (size_t)n);
	_exit(wl_nfail == 0 ? 0 : 1);
}

static inline void wl_sleep_ms(long ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

#ifdef WL_MODES
/*
 * Workloads with one piece of state per MODE (exact, refuse, inetsk, unixsk) define WL_MODES
 * before including this: `NAME DIR MODE`, mode/is()/NEED() for their setup, and their main().
 */
static const char *mode;
static inline int is(const char *m) { return strcmp(mode, m) == 0; }

#define NEED(cond)                                                             \
	do {                                                                       \
		if (!(cond)) {                                                         \
			fprintf(stderr, "setup %s: %s failed: %m\n", mode, #cond);         \
			exit(2);                                                           \
		}                                                                      \
	} while (0)

/* setup, ready, the self-test damage, wait for go, the pid/tid check (when check_ids), check, result */
static inline void __attribute__((noreturn)) wl_mode_main(int argc, char **argv, const char *name, void (*setup)(void),
                                                          void (*corrupt)(void), void (*check)(void), int check_ids) {
	wl_init(argc, argv);
	mode = wl_arg(argc, argv, 0);
	if (!mode) {
		fprintf(stderr, "usage: %s DIR MODE\n", name);
		_exit(2);
	}
	signal(SIGPIPE, SIG_IGN);
	setup();
	wl_ready();
	if (wl_corrupt) corrupt();
	while (!wl_go()) wl_sleep_ms(10);
	if (check_ids) wl_check_ids();
	check();
	wl_finish();
}
#endif

static inline double wl_now(clockid_t clk) {
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Deterministic pattern generator (xorshift64*). */
static inline uint64_t wl_rng(uint64_t *s) {
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 2685821657736338717ULL;
}

static inline void wl_fill(void *buf, size_t len, uint64_t seed) {
	uint64_t s = seed | 1, *p = buf;
	size_t n = len / 8;
	for (size_t i = 0; i < n; i++) p[i] = wl_rng(&s);
	unsigned char *tail = (unsigned char *)buf + n * 8;
	for (size_t i = 0; i < len % 8; i++) tail[i] = (unsigned char)wl_rng(&s);
}

/* Offset of the first byte that differs from wl_fill(seed), or (size_t)-1 if equal. */
static inline size_t wl_verify_fill(const void *buf, size_t len, uint64_t seed) {
	uint64_t s = seed | 1;
	const uint64_t *p = buf;
	size_t n = len / 8;
	for (size_t i = 0; i < n; i++)
		if (p[i] != wl_rng(&s)) return i * 8;
	const unsigned char *tail = (const unsigned char *)buf + n * 8;
	for (size_t i = 0; i < len % 8; i++)
		if (tail[i] != (unsigned char)wl_rng(&s)) return n * 8 + i;
	return (size_t)-1;
}

/* FNV-1a over 64-bit words (fast enough for hundreds of MiB). */
static inline uint64_t wl_hash(const void *buf, size_t len) {
	uint64_t h = 1469598103934665603ULL;
	const uint64_t *p = buf;
	for (size_t i = 0; i < len / 8; i++) h = (h ^ p[i]) * 1099511628211ULL;
	const unsigned char *t = (const unsigned char *)buf + (len / 8) * 8;
	for (size_t i = 0; i < len % 8; i++) h = (h ^ t[i]) * 1099511628211ULL;
	return h;
}

#endif
