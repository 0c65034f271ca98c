/*
 * locks: file locks held at dump time must be held again after restore:
 *  - DIR/a: flock(LOCK_EX);  DIR/b: POSIX write lock on bytes [10, 20);  DIR/c: OFD read lock
 *    on [0, 100) of an O_RDWR description.
 * At go a freshly forked child probes each one: flock(LOCK_EX|LOCK_NB) on its own open of a must
 * fail with EWOULDBLOCK; F_GETLK for a write lock on b [15, 16) must name the parent; F_OFD_GETLK
 * for a write lock on c [50, 51) must report a read lock. The parent collects the verdict.
 * --selftest-corrupt: the POSIX lock is dropped before go.
 */
#include "wl.h"
#include <sys/file.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
	wl_init(argc, argv);
	char pa[4200], pb[4200], pc[4200];
	wl_path(pa, sizeof pa, "a"); wl_path(pb, sizeof pb, "b"); wl_path(pc, sizeof pc, "c");
	int a = open(pa, O_RDWR | O_CREAT, 0644), b = open(pb, O_RDWR | O_CREAT, 0644), c = open(pc, O_RDWR | O_CREAT, 0644);
	if (a < 0 || b < 0 || c < 0 || ftruncate(b, 100) || ftruncate(c, 100)) exit(2);
	if (flock(a, LOCK_EX)) exit(2);
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 10 };
	if (fcntl(b, F_SETLK, &fl)) exit(2);
	struct flock ofd = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100 };
	if (fcntl(c, F_OFD_SETLK, &ofd)) exit(2);
	wl_ready();
	if (wl_corrupting("", "")) { fl.l_type = F_UNLCK; fcntl(b, F_SETLK, &fl); }
	while (!wl_go()) wl_sleep_ms(5);
	wl_check_ids();
	pid_t me = getpid();
	pid_t k = fork();
	if (k == 0) {
		int bad = 0;
		int a2 = open(pa, O_RDWR);
		if (!(flock(a2, LOCK_EX | LOCK_NB) == -1 && errno == EWOULDBLOCK)) bad |= 1;
		int b2 = open(pb, O_RDWR);
		struct flock q = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 15, .l_len = 1 };
		if (fcntl(b2, F_GETLK, &q) || q.l_type != F_WRLCK || q.l_pid != me) bad |= 2;
		int c2 = open(pc, O_RDWR);
		struct flock o = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 50, .l_len = 1 };
		if (fcntl(c2, F_OFD_GETLK, &o) || o.l_type != F_RDLCK) bad |= 4;
		_exit(bad);
	}
	int st = 0;
	waitpid(k, &st, 0);
	int bad = WIFEXITED(st) ? WEXITSTATUS(st) : 255;
	WL_CHECK(!(bad & 1), "flock on a is not held");
	WL_CHECK(!(bad & 2), "POSIX lock on b [10,20) is not held by %d", me);
	WL_CHECK(!(bad & 4), "OFD read lock on c is not held");
	wl_finish();
}
