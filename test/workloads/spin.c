/*
 * spin DIR [MiB] [--pattern=mixed|heap|zero-rep-random|random|text|zero] [--selftest-corrupt]
 *
 * Minimal busy workload for speed tests: no files beyond the protocol ones, one thread
 * incrementing a counter flat out (checking the vDSO clock every 64 Ki iterations and
 * DIR/go every 10 ms). Optional MiB (default 0) allocates and fills that much anonymous
 * memory before ready: pattern mixed (default; each 4 KiB page half random, half repeated
 * text: compresses about 2:1), heap (heap-like: about 30% zero pages, 55% pages of pointers,
 * small integers, short strings and zero runs, 15% random pages), zero-rep-random (whole pages
 * of three kinds: about 30% zero, 55% repetitive text, 15% random), random, text, or zero
 * (allocated and touched, all zeroes).
 * At go: pid/tid, the counter grew since ready, the memory hash matches the one taken at
 * setup, and the counter keeps growing for 20 ms more; the counter
 * must never have gone backwards between checks.
 * --selftest-corrupt flips a byte of the memory (or resets the counter with no memory).
 */
#include "wl.h"
#include <sys/mman.h>

static volatile uint64_t counter;

/* one page of heap-like structures: pointers into one heap, small integers, words, zero runs */
static void struct_page(unsigned char *m, uint64_t *s) {
	static const char *words[] = {"malloc", "heap", "checkpoint", "restore", "page", "counter", "socket", "thread", "vma"};
	uint64_t base = 0x7f0000000000ULL + (wl_rng(s) & 0xffff) * 0x10000;
	int p = 0;
	while (p < 4096) {
		unsigned k = (unsigned)(wl_rng(s) % 10);
		if (k < 4 && p + 8 <= 4096) { uint64_t v = base + (wl_rng(s) & 0xfff) * 16; memcpy(m + p, &v, 8); p += 8; }
		else if (k < 7 && p + 8 <= 4096) { uint64_t v = wl_rng(s) % 256; memcpy(m + p, &v, 8); p += 8; }
		else if (k < 9) { const char *w = words[wl_rng(s) % 9]; for (int i = 0; w[i] && p < 4096; i++) m[p++] = (unsigned char)w[i]; }
		else p += 8 * (int)(1 + wl_rng(s) % 8);
	}
}

static void fill(unsigned char *m, size_t len, const char *pattern) {
	static const char text[] = "criu-bun spin workload: checkpoint me, restore me, verify me. ";
	uint64_t s = 0x5917ULL;
	for (size_t off = 0; off < len; off += 4096) {
		uint64_t *w = (uint64_t *)(m + off);
		if (!strcmp(pattern, "zero")) {
			m[off] = 0;
		} else if (!strcmp(pattern, "random")) {
			for (int i = 0; i < 512; i++) w[i] = wl_rng(&s);
		} else if (!strcmp(pattern, "heap")) {
			unsigned k = (unsigned)(wl_rng(&s) % 100);
			if (k < 30) m[off] = 0;
			else if (k < 85) struct_page(m + off, &s);
			else for (int i = 0; i < 512; i++) w[i] = wl_rng(&s);
		} else if (!strcmp(pattern, "zero-rep-random")) {
			unsigned k = (unsigned)(wl_rng(&s) % 100);
			if (k < 30) m[off] = 0;
			else if (k < 85) for (int i = 0; i < 4096; i++) m[off + i] = (unsigned char)text[(off / 4096 + i) % (sizeof text - 1)];
			else for (int i = 0; i < 512; i++) w[i] = wl_rng(&s);
		} else if (!strcmp(pattern, "text")) {
			for (int i = 0; i < 4096; i++) m[off + i] = (unsigned char)text[(off / 4096 + i) % (sizeof text - 1)];
		} else {
			for (int i = 0; i < 256; i++) w[i] = wl_rng(&s);
			for (int i = 2048; i < 4096; i++) m[off + i] = (unsigned char)text[(off / 4096 + i) % (sizeof text - 1)];
		}
	}
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	const char *a = wl_arg(argc, argv, 0);
	size_t mib = a ? strtoul(a, NULL, 10) : 0;
	const char *pattern = "mixed";
	for (int i = 2; i < argc; i++)
		if (!strncmp(argv[i], "--pattern=", 10)) pattern = argv[i] + 10;
	size_t len = mib << 20;
	unsigned char *mem = NULL;
	uint64_t hash = 0;
	if (len) {
		mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mem == MAP_FAILED) return 2;
		fill(mem, len, pattern);
		hash = wl_hash(mem, len);
	}
	for (int i = 0; i < 1000; i++) counter++;
	wl_ready();
	const uint64_t at_ready = counter;
	if (wl_corrupt) {
		if (mem) mem[len / 3] ^= 1;
		else counter = 0;
	}

	double next = wl_now(CLOCK_MONOTONIC) + 0.01;
	uint64_t last = at_ready, backwards = 0;
	for (;;) {
		const uint64_t c = counter;
		if (c < last) backwards++;
		last = c;
		for (int i = 0; i < 65536; i++) counter++;
		double t = wl_now(CLOCK_MONOTONIC);
		if (t >= next) {
			if (wl_go()) break;
			next = t + 0.01;
		}
	}
	const uint64_t at_go = counter;
	wl_check_ids();
	WL_CHECK(backwards == 0, "counter went backwards %llu times", (unsigned long long)backwards);
	WL_CHECK(at_go > at_ready, "counter did not grow: ready=%llu go=%llu", (unsigned long long)at_ready,
	         (unsigned long long)at_go);
	if (len) {
		uint64_t h = wl_hash(mem, len);
		WL_CHECK(h == hash, "memory hash %016llx, expected %016llx (%zu MiB, %s)", (unsigned long long)h,
		         (unsigned long long)hash, mib, pattern);
	}
	const double t0 = wl_now(CLOCK_MONOTONIC);
	while (wl_now(CLOCK_MONOTONIC) - t0 < 0.02)
		for (int i = 0; i < 65536; i++) counter++;
	WL_CHECK(counter > at_go, "counter stuck after go");
	wl_detail("mib=%zu pattern=%s counter_at_ready=%llu counter_at_go=%llu counter=%llu", mib, pattern,
	          (unsigned long long)at_ready, (unsigned long long)at_go, (unsigned long long)counter);
	wl_finish();
}
