/*
 * threads DIR [N] [--selftest-corrupt[=stack|tls|exit|total]]
 *
 * N worker threads (default 8, max 256). Each has its own counter, a __thread value, a
 * 1 KiB pattern on its own stack, and adds to a shared mutex-protected total (also
 * counting its own contribution). Wake-up: DIR/go, polled by the main thread every 10 ms.
 * At go the main thread checks pid/tid, that every counter grew since ready, then asks
 * every thread to verify itself (gettid unchanged, TLS value and address, stack pattern
 * and address) and waits until every thread has reported and progressed further. Finally
 * it stops and joins them, checks total == sum of contributions and that /proc/self/task
 * holds exactly the TIDs recorded at setup.
 */
#include "wl.h"
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>

#define MAXT 256

struct worker {
	pthread_t th;
	int idx;
	pid_t tid;
	_Atomic uint64_t counter;
	uint64_t contrib; /* under mu */
	uint64_t *tls_addr;
	void *stack_addr;
	_Atomic int status; /* 0 pending, 1 ok, 2 failed */
	char why[256];
};

static struct worker W[MAXT];
static int nthreads = 8;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t total; /* under mu */
static _Atomic int phase;   /* 0 run, 1 verify, 2 stop */
static _Atomic int started;
static _Atomic int corrupt_now; /* set after ready when a corruption was requested */
static __thread uint64_t tls_value;

static uint64_t tls_magic(int idx) { return 0x7157000000000000ULL + (uint64_t)idx * 0x10001ULL + (uint64_t)wl_pid; }

static void *worker_main(void *arg) {
	struct worker *w = arg;
	unsigned char stack_pat[1024];
	const uint64_t seed = 0xABCD0000ULL + (uint64_t)w->idx;
	wl_fill(stack_pat, sizeof stack_pat, seed);
	tls_value = tls_magic(w->idx);
	w->tid = wl_gettid();
	w->tls_addr = &tls_value;
	w->stack_addr = stack_pat;
	atomic_fetch_add(&started, 1);
	int corrupted = 0;
	while (atomic_load(&phase) != 2) {
		atomic_fetch_add(&w->counter, 1);
		pthread_mutex_lock(&mu);
		total++;
		w->contrib++;
		pthread_mutex_unlock(&mu);
		if (atomic_load(&corrupt_now) && !corrupted) {
			corrupted = 1;
			if (w->idx == 0 && wl_corrupting("stack", "stack")) stack_pat[512] ^= 0x10;
			if (w->idx == 1 % nthreads && wl_corrupting("tls", "stack")) tls_value ^= 1;
			if (w->idx == nthreads - 1 && wl_corrupting("exit", "stack")) return NULL;
			if (w->idx == 0 && wl_corrupting("total", "stack")) {
				pthread_mutex_lock(&mu);
				total += 3;
				pthread_mutex_unlock(&mu);
			}
		}
		if (atomic_load(&phase) == 1 && atomic_load(&w->status) == 0) {
			const char *why = NULL;
			char buf[256];
			pid_t t = wl_gettid();
			size_t bad = wl_verify_fill(stack_pat, sizeof stack_pat, seed);
			if (t != w->tid) snprintf(buf, sizeof buf, "tid changed %d -> %d", (int)w->tid, (int)t), why = buf;
			else if (&tls_value != w->tls_addr)
				snprintf(buf, sizeof buf, "TLS moved %p -> %p", (void *)w->tls_addr, (void *)&tls_value), why = buf;
			else if (tls_value != tls_magic(w->idx))
				snprintf(buf, sizeof buf, "TLS value %llx expected %llx", (unsigned long long)tls_value,
				         (unsigned long long)tls_magic(w->idx)), why = buf;
			else if ((void *)stack_pat != w->stack_addr)
				snprintf(buf, sizeof buf, "stack moved %p -> %p", w->stack_addr, (void *)stack_pat), why = buf;
			else if (bad != (size_t)-1)
				snprintf(buf, sizeof buf, "stack pattern differs at offset %zu", bad), why = buf;
			if (why) snprintf(w->why, sizeof w->why, "%s", why);
			atomic_store(&w->status, why ? 2 : 1);
		}
		wl_sleep_ms(1);
	}
	return NULL;
}

static int cmp_pid(const void *a, const void *b) { return *(const pid_t *)a - *(const pid_t *)b; }

/* Sorted TIDs from /proc/self/task into out (max n); returns the count. */
static int list_tasks(pid_t *out, int n) {
	DIR *d = opendir("/proc/self/task");
	if (!d) return -1;
	int k = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.') continue;
		if (k < n) out[k] = (pid_t)atoi(e->d_name);
		k++;
	}
	closedir(d);
	if (k <= n) qsort(out, (size_t)k, sizeof *out, cmp_pid);
	return k;
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	const char *a = wl_arg(argc, argv, 0);
	if (a) nthreads = atoi(a);
	if (nthreads < 1 || nthreads > MAXT) nthreads = 8;
	tls_value = tls_magic(-1);

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 << 10);
	for (int i = 0; i < nthreads; i++) {
		W[i].idx = i;
		if (pthread_create(&W[i].th, &attr, worker_main, &W[i]) != 0) return 2;
	}
	while (atomic_load(&started) < nthreads) wl_sleep_ms(1);
	for (int i = 0; i < nthreads; i++)
		while (atomic_load(&W[i].counter) == 0) wl_sleep_ms(1);

	pid_t tids[MAXT + 1];
	tids[0] = wl_tid;
	for (int i = 0; i < nthreads; i++) tids[i + 1] = W[i].tid;
	qsort(tids, (size_t)nthreads + 1, sizeof *tids, cmp_pid);

	uint64_t at_ready[MAXT], at_go[MAXT];
	for (int i = 0; i < nthreads; i++) at_ready[i] = atomic_load(&W[i].counter);
	wl_ready();
	if (wl_corrupt) atomic_store(&corrupt_now, 1);

	while (!wl_go()) wl_sleep_ms(10);
	/* however soon go comes, every thread gets up to a second to make progress since ready */
	for (int k = 0; k < 200; k++) {
		int all = 1;
		for (int i = 0; i < nthreads; i++) all &= atomic_load(&W[i].counter) > at_ready[i];
		if (all) break;
		wl_sleep_ms(5);
	}

	wl_check_ids();
	WL_CHECK(tls_value == tls_magic(-1), "main thread TLS value %llx", (unsigned long long)tls_value);
	wl_detail("threads=%d", nthreads);
	for (int i = 0; i < nthreads; i++) {
		at_go[i] = atomic_load(&W[i].counter);
		WL_CHECK(at_go[i] > at_ready[i], "thread %d (tid %d) made no progress before go: counter %llu", i,
		         (int)W[i].tid, (unsigned long long)at_go[i]);
	}

	pid_t now_tids[MAXT + 2];
	int ntask = list_tasks(now_tids, MAXT + 2);
	WL_CHECK(ntask == nthreads + 1, "/proc/self/task has %d tasks, expected %d", ntask, nthreads + 1);
	if (ntask == nthreads + 1)
		for (int i = 0; i < ntask; i++)
			WL_CHECK(now_tids[i] == tids[i], "task list differs: tid %d where %d was expected", (int)now_tids[i],
			         (int)tids[i]);

	atomic_store(&phase, 1);
	const double deadline = wl_now(CLOCK_MONOTONIC) + 3.0;
	for (;;) {
		int pending = 0;
		for (int i = 0; i < nthreads; i++)
			if (atomic_load(&W[i].status) == 0 || atomic_load(&W[i].counter) < at_go[i] + 3) pending++;
		if (!pending || wl_now(CLOCK_MONOTONIC) > deadline) break;
		wl_sleep_ms(2);
	}
	for (int i = 0; i < nthreads; i++) {
		int st = atomic_load(&W[i].status);
		uint64_t c = atomic_load(&W[i].counter);
		WL_CHECK(st != 0, "thread %d (tid %d) did not report after go (counter %llu)", i, (int)W[i].tid,
		         (unsigned long long)c);
		WL_CHECK(st != 2, "thread %d (tid %d): %s", i, (int)W[i].tid, W[i].why);
		WL_CHECK(c >= at_go[i] + 3, "thread %d (tid %d) stopped progressing after go: %llu -> %llu", i,
		         (int)W[i].tid, (unsigned long long)at_go[i], (unsigned long long)c);
		wl_detail("thread%d tid=%d counter_at_ready=%llu counter_at_go=%llu counter=%llu", i, (int)W[i].tid,
		          (unsigned long long)at_ready[i], (unsigned long long)at_go[i], (unsigned long long)c);
	}

	atomic_store(&phase, 2);
	for (int i = 0; i < nthreads; i++) pthread_join(W[i].th, NULL);
	uint64_t sum = 0;
	for (int i = 0; i < nthreads; i++) sum += W[i].contrib;
	WL_CHECK(sum == total, "shared total %llu != sum of contributions %llu", (unsigned long long)total,
	         (unsigned long long)sum);
	wl_detail("total=%llu", (unsigned long long)total);
	wl_finish();
}
