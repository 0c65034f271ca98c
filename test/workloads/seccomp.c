/*
 * seccomp: no_new_privs and two seccomp filters: the first makes getppid() fail with EPERM,
 * the second makes getpgrp() fail with EACCES; everything else is allowed. At go: both filters
 * still apply (in that order: getppid EPERM, getpgrp EACCES), the mode is 2 (filter), and
 * no_new_privs is still set. --selftest-corrupt: no filters are installed.
 */
#include "wl.h"
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>

static int install(int nr, int err) {
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = 4, .filter = f };
	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	if (!wl_corrupting("", "") && (install(SYS_getppid, EPERM) || install(SYS_getpgrp, EACCES))) { perror("seccomp"); exit(2); }
	wl_ready();
	while (!wl_go()) wl_sleep_ms(5);
	wl_check_ids();
	FILE *st = fopen("/proc/self/status", "r");
	char line[256]; int mode = -1;
	while (st && fgets(line, sizeof line, st)) if (!strncmp(line, "Seccomp:", 8)) mode = atoi(line + 8);
	if (st) fclose(st);
	WL_CHECK(mode == 2, "seccomp mode %d, want 2 (filter)", mode);
	errno = 0;
	long pp = syscall(SYS_getppid);
	WL_CHECK(pp == -1 && errno == EPERM, "getppid() = %ld errno %d, the first filter should give EPERM", pp, errno);
	errno = 0;
	long pg = syscall(SYS_getpgrp);
	WL_CHECK(pg == -1 && errno == EACCES, "getpgrp() = %ld errno %d, the second filter should give EACCES", pg, errno);
	WL_CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "no_new_privs is not set");
	wl_finish();
}
