/*
 * deleted DIR [--selftest-corrupt[=offset|data]]
 *
 * Holds an open fd (O_RDWR, positioned at 1000) on DIR/deleted, a 32 KiB patterned file it
 * unlinked right after creating it. The dumper saves it as a ghost file; after a restore it
 * is a new inode with the same contents. Wake-up: DIR/go, polled every 10 ms. At go it
 * checks the fd is still a regular file of mode 0600 and size 32 KiB, still unlinked
 * (st_nlink == 0, path absent, /proc/self/fd link ends in " (deleted)"), offset 1000,
 * contents intact, and that it can still write and read back through it.
 */
#include "wl.h"

#define SIZE (32 << 10)

int main(int argc, char **argv) {
	wl_init(argc, argv);
	const uint64_t seed = 0xDE1E7EDULL;
	char p[4200];
	wl_path(p, sizeof p, "deleted");
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) return 2;
	unsigned char *buf = malloc(SIZE), tmp[256];
	wl_fill(buf, SIZE, seed);
	if (write(fd, buf, SIZE) != SIZE || lseek(fd, 1000, SEEK_SET) != 1000 || unlink(p) != 0) return 2;
	struct stat st0;
	fstat(fd, &st0);
	wl_ready();

	if (wl_corrupting("offset", "offset")) lseek(fd, 1001, SEEK_SET);
	if (wl_corrupting("data", "offset")) pwrite(fd, "X", 1, 5000);
	uint64_t loops = 0;
	while (!wl_go()) {
		loops++;
		wl_sleep_ms(10);
	}

	wl_check_ids();
	struct stat st;
	WL_CHECK(fstat(fd, &st) == 0, "fstat on the deleted file failed: %s", strerror(errno));
	WL_CHECK(st.st_nlink == 0, "file has %lu links, expected 0 (unlinked)", (unsigned long)st.st_nlink);
	WL_CHECK(st.st_size == SIZE, "file size %lld, expected %d", (long long)st.st_size, SIZE);
	WL_CHECK(S_ISREG(st.st_mode) && (st.st_mode & 07777) == (st0.st_mode & 07777), "mode 0%o, was 0%o",
	         (unsigned)st.st_mode, (unsigned)st0.st_mode);
	WL_CHECK(access(p, F_OK) != 0, "%s exists again", p);
	char link[64], target[4400];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, target, sizeof target - 1);
	target[n > 0 ? n : 0] = 0;
	WL_CHECK(n > 10 && strstr(target, " (deleted)"), "fd link is '%s', expected '... (deleted)'", target);
	off_t pos = lseek(fd, 0, SEEK_CUR);
	WL_CHECK(pos == 1000, "offset %lld, expected 1000", (long long)pos);
	unsigned char *now = malloc(SIZE);
	n = pread(fd, now, SIZE, 0);
	size_t bad = (size_t)-1;
	for (size_t i = 0; i < SIZE && n == SIZE; i++)
		if (now[i] != buf[i]) {
			bad = i;
			break;
		}
	WL_CHECK(n == SIZE && bad == (size_t)-1, "contents differ at offset %zd (read %zd)", (ssize_t)bad, n);
	memset(tmp, 0x5A, sizeof tmp);
	WL_CHECK(write(fd, tmp, sizeof tmp) == (ssize_t)sizeof tmp, "write failed: %s", strerror(errno));
	unsigned char back[256] = {0};
	WL_CHECK(pread(fd, back, sizeof back, pos) == (ssize_t)sizeof back && !memcmp(back, tmp, sizeof tmp),
	         "write at the offset not read back");
	wl_detail("fd=%d link=%s loops=%llu", fd, target, (unsigned long long)loops);
	wl_finish();
}
