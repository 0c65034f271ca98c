/*
 * memfd: "wl-data" (5 pages + 100 bytes, page 3 a hole of zeroes, seals SHRINK|GROW, offset 123)
 * with a second read-only description of it (opened through /proc/self/fd, offset 5000), and
 * "wl-plain" created without MFD_ALLOW_SEALING (so F_SEAL_SEAL) holding "plain". After go:
 * names, sizes, contents, seals, offsets, access modes, and one inode shared by both descriptions.
 * --selftest-corrupt[=data|seal]: change one byte (default) / drop to an unsealed copy.
 */
#include "wl.h"
#include <sys/mman.h>

#define SZ (5 * 4096 + 100)

static int name_is(int fd, const char *want) {
	char p[64], l[256];
	snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(p, l, sizeof l - 1);
	if (n < 0) return 0;
	l[n] = 0;
	return strcmp(l, want) == 0;
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	static unsigned char data[SZ], got[SZ];
	wl_fill(data, SZ, 0x3e3f);
	memset(data + 3 * 4096, 0, 4096);
	int m = memfd_create("wl-data", MFD_ALLOW_SEALING);
	int plain = memfd_create("wl-plain", MFD_CLOEXEC);
	if (m < 0 || plain < 0 || write(m, data, SZ) != SZ || write(plain, "plain", 5) != 5) { perror("memfd"); return 2; }
	fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
	lseek(m, 123, SEEK_SET);
	char p[64];
	snprintf(p, sizeof p, "/proc/self/fd/%d", m);
	int ro = open(p, O_RDONLY);
	lseek(ro, 5000, SEEK_SET);
	wl_ready();
	if (wl_corrupting("data", "data")) pwrite(m, "\x01", 1, 7);
	if (wl_corrupting("seal", "data")) {
		int c = memfd_create("wl-data", MFD_ALLOW_SEALING);
		write(c, data, SZ);
		lseek(c, 123, SEEK_SET);
		dup2(c, m);
	}
	while (!wl_go()) wl_sleep_ms(10);

	wl_check_ids();
	WL_CHECK(name_is(m, "/memfd:wl-data (deleted)") && name_is(ro, "/memfd:wl-data (deleted)") && name_is(plain, "/memfd:wl-plain (deleted)"), "memfd names changed");
	struct stat a, b;
	fstat(m, &a);
	fstat(ro, &b);
	WL_CHECK(a.st_size == SZ, "size %lld", (long long)a.st_size);
	WL_CHECK(a.st_ino == b.st_ino && a.st_dev == b.st_dev, "the two descriptions are on different inodes");
	WL_CHECK(pread(m, got, SZ, 0) == SZ && !memcmp(got, data, SZ), "contents differ");
	WL_CHECK(fcntl(m, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW), "seals 0x%x", fcntl(m, F_GET_SEALS));
	WL_CHECK(ftruncate(m, 10) < 0 && errno == EPERM, "shrinking was allowed");
	WL_CHECK(lseek(m, 0, SEEK_CUR) == 123 && lseek(ro, 0, SEEK_CUR) == 5000, "offsets %lld %lld", (long long)lseek(m, 0, SEEK_CUR), (long long)lseek(ro, 0, SEEK_CUR));
	WL_CHECK((fcntl(ro, F_GETFL) & O_ACCMODE) == O_RDONLY && (fcntl(m, F_GETFL) & O_ACCMODE) == O_RDWR, "access modes");
	WL_CHECK(fcntl(plain, F_GET_SEALS) == F_SEAL_SEAL, "plain memfd seals 0x%x", fcntl(plain, F_GET_SEALS));
	WL_CHECK(fcntl(plain, F_GETFD) == FD_CLOEXEC, "plain memfd lost FD_CLOEXEC");
	char s[8] = {0};
	WL_CHECK(pread(plain, s, 8, 0) == 5 && !strcmp(s, "plain"), "plain contents");
	pwrite(m, "shared", 6, 5000);
	WL_CHECK(read(ro, s, 6) == 6 && !memcmp(s, "shared", 6), "write through one description not seen by the other");
	wl_finish();
}
