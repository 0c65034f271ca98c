/*
 * lazy DIR [MiB] (512)
 *
 * Lazy restore (post-copy): MiB of pseudo-random anonymous memory, its hash taken at setup, plus a
 * page left untouched in the middle of it (must read as zeroes) and one zeroed after being written.
 * Then, until go: every 5 ms DIR/counter gets the next value of a counter, and each round reads one
 * page of the memory chosen at random (after a lazy restore those faults are served on demand,
 * out of order with the background stream). At go: the memory hash matches the one taken at setup,
 * the two zero pages are zero, the counter grew since ready.
 */
#include "wl.h"
#include <sys/mman.h>
#include <sys/wait.h>

static volatile uint64_t counter, sink;

int main(int argc, char **argv) {
	wl_init(argc, argv);
	const char *a = wl_arg(argc, argv, 0);
	size_t mib = a ? strtoul(a, NULL, 10) : 512;
	size_t len = mib << 20, pages = len / 4096;
	unsigned char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) return 2;
	size_t hole = pages / 2, zeroed = pages / 3;
	wl_fill(mem, hole * 4096, 0x1a2e);
	wl_fill(mem + (hole + 1) * 4096, len - (hole + 1) * 4096, 0x2b3f);
	memset(mem + zeroed * 4096, 0, 4096);
	const uint64_t hash = wl_hash(mem, len);
	pid_t child = 0;
	wl_ready();
	const uint64_t at_ready = counter;
	uint64_t s = 0x77;
	char line[64];
	do { /* one round at least, however soon go comes */
		counter++;
		int n = snprintf(line, sizeof line, "%llu\n", (unsigned long long)counter);
		wl_write_file("counter", line, (size_t)n);
		sink += mem[(wl_rng(&s) % pages) * 4096 + 8];
		if (!child && wl_exists("fork")) {
			child = fork();
			if (child == 0) {
				int ok = wl_hash(mem, len) == hash;
				for (size_t i = 0; i < 4096; i++)
					if (mem[hole * 4096 + i] || mem[zeroed * 4096 + i]) ok = 0;
				wl_write_file("child", ok ? "OK\n" : "BAD\n", ok ? 3 : 4);
				_exit(ok ? 0 : 1);
			}
		}
		wl_sleep_ms(5);
	} while (!wl_go());
	wl_check_ids();
	int zero_ok = 1;
	for (size_t i = 0; i < 4096; i++)
		if (mem[hole * 4096 + i] || mem[zeroed * 4096 + i]) zero_ok = 0;
	WL_CHECK(zero_ok, "a page that was never written (or zeroed) is not zero");
	const uint64_t h = wl_hash(mem, len);
	WL_CHECK(h == hash, "memory hash %016llx, expected %016llx (%zu MiB)", (unsigned long long)h, (unsigned long long)hash, mib);
	if (child > 0) {
		int st = 0;
		WL_CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the forked child failed its memory check (status %d)", st);
		char c[8] = {0}, p2[4200];
		wl_path(p2, sizeof p2, "child");
		FILE *f = fopen(p2, "r");
		if (f) { if (!fgets(c, sizeof c, f)) c[0] = 0; fclose(f); }
		WL_CHECK(!strcmp(c, "OK\n"), "the forked child says '%s'", c);
	}
	WL_CHECK(counter > at_ready, "counter did not grow: ready=%llu now=%llu", (unsigned long long)at_ready, (unsigned long long)counter);
	wl_detail("mib=%zu counter=%llu hash=%016llx forked=%d", mib, (unsigned long long)counter, (unsigned long long)h, child > 0);
	wl_finish();
}
