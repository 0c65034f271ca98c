/*
 * seccomp: installs a seccomp filter (allow everything) then waits for go. criu-bun must refuse
 * to dump it with a clear message until seccomp filters are supported, and leave it running.
 */
#include "wl.h"
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>

int main(int argc, char **argv) {
	wl_init(argc, argv);
	struct sock_filter f[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
	struct sock_fprog prog = { .len = 1, .filter = f };
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	if (!wl_corrupting("", "") && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) { perror("seccomp"); exit(2); }
	wl_ready();
	while (!wl_go()) wl_sleep_ms(5);
	wl_check_ids();
	FILE *st = fopen("/proc/self/status", "r");
	char line[256]; int mode = -1;
	while (st && fgets(line, sizeof line, st)) if (!strncmp(line, "Seccomp:", 8)) mode = atoi(line + 8);
	if (st) fclose(st);
	WL_CHECK(mode == 2, "seccomp mode %d, want 2 (filter)", mode);
	wl_finish();
}
