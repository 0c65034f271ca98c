/*
 * clonefiles: a child created with clone(CLONE_FILES | CLONE_FS) shares its parent's fd table
 * and fs (cwd, umask); a second child shares neither. At go:
 *  - the parent opens DIR/late: the sharing child must see the new fd, the other must not;
 *  - the parent chdir()s to DIR/sub and sets umask 077: the sharing child sees both, the other not;
 * each child reports in DIR/r-share and DIR/r-alone; the parent collects and checks exit codes.
 * --selftest-corrupt: the parent claims the sharing child saw nothing.
 */
#include "wl.h"
#include <sched.h>
#include <sys/wait.h>

static char stack1[1 << 16], stack2[1 << 16];
static int late_fd = -1; /* parent writes the fd number here (same memory only before the clone) */

static int child(void *arg) {
	int share = (int)(intptr_t)arg;
	const char *name = share ? "r-share" : "r-alone";
	while (!wl_go()) wl_sleep_ms(5);
	/* wait for the parent to do its part */
	while (!wl_exists("parent-done")) wl_sleep_ms(2);
	char p[4200];
	wl_path(p, sizeof p, "late-fd");
	FILE *f = fopen(p, "r");
	int fd = -1;
	if (f) { if (fscanf(f, "%d", &fd) != 1) fd = -1; fclose(f); }
	int sees_fd = fd >= 0 && fcntl(fd, F_GETFD) >= 0;
	char cwd[4200];
	if (!getcwd(cwd, sizeof cwd)) cwd[0] = 0;
	mode_t um = umask(0); umask(um);
	int in_sub = strstr(cwd, "/sub") != NULL;
	int ok = share ? (sees_fd && in_sub && um == 077) : (!sees_fd && !in_sub && um != 077);
	char buf[256];
	int n = snprintf(buf, sizeof buf, "%s fd=%d sees=%d cwd=%s umask=%o\n", ok ? "PASS" : "FAIL", fd, sees_fd, cwd, um);
	/* write by absolute path: the sharing child's cwd moved */
	wl_write_file(name, buf, (size_t)n);
	return ok ? 0 : 1;
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	char p[4200];
	wl_path(p, sizeof p, "sub");
	mkdir(p, 0755);
	umask(022);
	pid_t a = clone(child, stack1 + sizeof stack1, CLONE_FILES | CLONE_FS | SIGCHLD, (void *)1);
	pid_t b = clone(child, stack2 + sizeof stack2, SIGCHLD, (void *)0);
	if (a < 0 || b < 0) { perror("clone"); exit(2); }
	wl_ready();
	while (!wl_go()) wl_sleep_ms(5);
	wl_check_ids();
	wl_path(p, sizeof p, "late");
	late_fd = open(p, O_RDWR | O_CREAT, 0644);
	char buf[32];
	int n = snprintf(buf, sizeof buf, "%d\n", late_fd);
	wl_write_file("late-fd", buf, (size_t)n);
	wl_path(p, sizeof p, "sub");
	if (chdir(p)) wl_failf("chdir");
	umask(077);
	wl_write_file("parent-done", "", 0);
	int st;
	waitpid(a, &st, 0);
	WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && !wl_corrupting("", ""), "sharing child failed (0x%x)", st);
	waitpid(b, &st, 0);
	WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "non-sharing child failed (0x%x)", st);
	for (int i = 0; i < 2; i++) {
		const char *nm = i ? "r-alone" : "r-share";
		char q[4200], line[256] = "";
		wl_path(q, sizeof q, nm);
		FILE *f = fopen(q, "r");
		if (f) { if (!fgets(line, sizeof line, f)) line[0] = 0; fclose(f); }
		line[strcspn(line, "\n")] = 0;
		wl_detail("%s: %s", nm, line);
	}
	wl_finish();
}
