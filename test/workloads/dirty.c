/*
 * dirty DIR [MiB=64] [--selftest-corrupt]
 *
 * Memory-tracking workload. Setup: MiB of private anonymous memory, every page filled with a
 * seeded pattern (page i holds generation 0 of page i). Then it idles, except when asked to write:
 * for each file DIR/touch-N that appears (N = 1, 2, ...), it rewrites the pages listed in it (one
 * page index per line) with generation N, records them, and answers DIR/touched-N. At go it checks
 * every page holds the generation it last wrote (a restore that took a written page from an older
 * pre-dump, or lost an untouched one, fails), that no userfaultfd is among its own fds (tracking
 * never shows in the restored process), and that writing still works.
 * DIR/close-fds: it closes every fd from 3 up (close_range, as daemons do) and answers
 * DIR/closed-fds.
 * --selftest-corrupt: one page changed behind the bookkeeping's back after ready.
 */
#include "wl.h"
#include <dirent.h>
#include <sys/mman.h>

#define PAGE 4096u

static uint8_t *mem;
static uint8_t *gen; /* generation of each page */
static size_t npages;

/* distinct even seeds per (page, generation): wl_fill ORs in 1 */
static uint64_t seed(size_t i, uint8_t g) { return (((uint64_t)i << 8) | g) << 1; }
static void fill_page(size_t i, uint8_t g) { wl_fill(mem + i * PAGE, PAGE, seed(i, g)); }

static int has_uffd(void) {
	DIR *d = opendir("/proc/self/fd");
	if (!d) return -1;
	struct dirent *e;
	int found = 0;
	while ((e = readdir(d))) {
		char p[512], t[256];
		snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
		ssize_t n = readlink(p, t, sizeof t - 1);
		if (n <= 0) continue;
		t[n] = 0;
		if (strstr(t, "userfaultfd")) found = 1;
	}
	closedir(d);
	return found;
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	const char *a = wl_arg(argc, argv, 0);
	size_t mib = a ? strtoul(a, NULL, 10) : 64;
	npages = (mib << 20) / PAGE;
	mem = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	gen = calloc(npages, 1);
	if (mem == MAP_FAILED || !gen) { perror("mmap"); return 2; }
	for (size_t i = 0; i < npages; i++) fill_page(i, 0);
	wl_ready();
	if (wl_corrupting("page", "page")) mem[npages / 2 * PAGE] ^= 1;
	int next = 1;
	while (!wl_go()) {
		char name[64];
		if (wl_exists("close-fds") && !wl_exists("closed-fds")) {
			syscall(SYS_close_range, 3u, ~0u, 0u);
			wl_write_file("closed-fds", "1\n", 2);
		}
		snprintf(name, sizeof name, "touch-%d", next);
		if (!wl_exists(name)) { wl_sleep_ms(5); continue; }
		char p[4200];
		wl_path(p, sizeof p, name);
		FILE *f = fopen(p, "re");
		unsigned long idx;
		size_t n = 0;
		while (f && fscanf(f, "%lu", &idx) == 1) {
			if (idx < npages) { fill_page(idx, (uint8_t)next); gen[idx] = (uint8_t)next; n++; }
		}
		if (f) fclose(f);
		char done[64], body[32];
		snprintf(done, sizeof done, "touched-%d", next);
		int len = snprintf(body, sizeof body, "%zu\n", n);
		wl_write_file(done, body, (size_t)len);
		next++;
	}
	size_t bad = 0, first = (size_t)-1;
	for (size_t i = 0; i < npages; i++) {
		if (wl_verify_fill(mem + i * PAGE, PAGE, seed(i, gen[i])) != (size_t)-1) {
			if (first == (size_t)-1) first = i;
			bad++;
		}
	}
	WL_CHECK(bad == 0, "%zu of %zu pages wrong (first: page %zu, generation %d)", bad, npages, first, first == (size_t)-1 ? -1 : gen[first]);
	int u = has_uffd();
	WL_CHECK(u == 0, "a userfaultfd is among my fds (%d)", u);
	fill_page(0, 200);
	WL_CHECK(wl_verify_fill(mem, PAGE, seed(0, 200)) == (size_t)-1, "page 0 not writable after restore");
	wl_detail("pages=%zu touches=%d", npages, next - 1);
	wl_check_ids();
	wl_finish();
}
