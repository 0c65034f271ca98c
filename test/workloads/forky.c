/*
 * forky [N]: a parent with 32 MiB of heap data forks N (6) children that each change their own
 * 256 KiB of it; everything else stays copy-on-write shared. At go every child checks its whole
 * copy (its change plus the parent's data elsewhere) and reports in DIR/r-I; the parent checks
 * its own copy and collects the children.
 * --selftest-corrupt: child 0 damages one byte of the shared part before go.
 */
#include "wl.h"
#include <sys/wait.h>

#define SZ (32u << 20)
#define PART (256u << 10)

static uint64_t expect_hash(unsigned char *base, int me) {
	/* the data as child `me` (-1: parent) must see it */
	(void)base; (void)me;
	return 0;
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	int n = argc > 2 && argv[2][0] != '-' ? atoi(argv[2]) : 6;
	unsigned char *heap = malloc(SZ);
	wl_fill(heap, SZ, 4242);
	uint64_t parent_hash = wl_hash(heap, SZ);
	pid_t kids[64];
	for (int i = 0; i < n; i++) {
		pid_t c = fork();
		if (c == 0) {
			wl_fill(heap + (size_t)i * PART, PART, 1000 + i);
			uint64_t mine = wl_hash(heap, SZ);
			if (i == 0 && wl_corrupting("", "")) heap[SZ - 1] ^= 1;
			while (!wl_go()) wl_sleep_ms(5);
			char name[32], buf[128];
			snprintf(name, sizeof name, "r-%d", i);
			int ok = wl_hash(heap, SZ) == mine;
			int len = snprintf(buf, sizeof buf, "%s pid=%d\n", ok ? "PASS" : "FAIL", getpid());
			wl_write_file(name, buf, (size_t)len);
			_exit(ok ? 0 : 1);
		}
		kids[i] = c;
	}
	(void)expect_hash;
	wl_ready();
	while (!wl_go()) wl_sleep_ms(5);
	wl_check_ids();
	WL_CHECK(wl_hash(heap, SZ) == parent_hash, "parent heap changed");
	for (int i = 0; i < n; i++) {
		int st = 0;
		waitpid(kids[i], &st, 0);
		WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d (pid %d) failed: status 0x%x", i, kids[i], st);
	}
	wl_finish();
}
