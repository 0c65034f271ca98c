/*
 * cowdrop DIR: a child that shares a private mapping with its parent (same VMA, copy-on-write)
 * but never touched a page of it the parent wrote after the fork.
 *
 * Three pages mapped before the fork, split into two VMAs by mprotect: Q (page 0) and R (pages
 * 1-2). After the fork the child changes Q's protection (so Q is no longer the parent's VMA)
 * and writes R's page 2 only; the parent writes Q and R's page 1, so its written pages make one
 * run going on from Q into R. After restore, the child's page 1 of R must still read as zeroes
 * (it never wrote it: the parent's data must not show through), its page 2 must be its own; the
 * parent's pages must be the parent's. The child reports into DIR/r-child at go.
 * --selftest-corrupt: the child copies the parent's page into its own page 1 before go.
 */
#include "wl.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096

int main(int argc, char **argv) {
	wl_init(argc, argv);
	unsigned char *m = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) return 2;
	if (mprotect(m, PG, PROT_READ | PROT_WRITE | PROT_EXEC) != 0) return 2; /* Q and R: two VMAs */
	int p[2];
	if (pipe(p) != 0) return 2;
	pid_t c = fork();
	if (c < 0) return 2;
	if (c == 0) {
		close(p[0]);
		if (mprotect(m, PG, PROT_READ) != 0) _exit(2); /* Q differs from the parent's now */
		memset(m + 2 * PG, 0xc2, PG);                  /* R page 2: the child's own */
		if (write(p[1], "r", 1) != 1) _exit(2);
		int corrupt = wl_corrupting("", "");
		if (corrupt) memset(m + PG, 0x91, 16);
		while (!wl_go()) wl_sleep_ms(5);
		int zero = 1, own = 1;
		for (int i = 0; i < PG; i++) {
			if (m[PG + i]) zero = 0;
			if (m[2 * PG + i] != 0xc2) own = 0;
		}
		char buf[128];
		int n = snprintf(buf, sizeof buf, "%s page1_zero=%d page2_own=%d\n", zero && own ? "PASS" : "FAIL", zero, own);
		wl_write_file("r-child", buf, (size_t)n);
		_exit(zero && own ? 0 : 1);
	}
	close(p[1]);
	char x;
	if (read(p[0], &x, 1) != 1) return 2;
	memset(m, 0xa0, PG);      /* Q */
	memset(m + PG, 0xa1, PG); /* R page 1: a run from Q into R */
	wl_ready();
	while (!wl_go()) wl_sleep_ms(5);
	wl_check_ids();
	int st = 0;
	WL_CHECK(waitpid(c, &st, 0) == c, "waitpid(%d): %s", (int)c, strerror(errno));
	char r[256] = "";
	char path[4200];
	wl_path(path, sizeof path, "r-child");
	FILE *f = fopen(path, "r");
	if (f) { if (!fgets(r, sizeof r, f)) r[0] = 0; fclose(f); }
	r[strcspn(r, "\n")] = 0;
	WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: %s", r[0] ? r : "no report");
	int parent_ok = 1;
	for (int i = 0; i < PG; i++) if (m[i] != 0xa0 || m[PG + i] != 0xa1 || m[2 * PG + i] != 0) parent_ok = 0;
	WL_CHECK(parent_ok, "the parent's pages changed");
	wl_detail("child=%s", r);
	wl_finish();
}
