/*
 * deleted DIR [--selftest-corrupt[=offset|data]]
 *
 * Holds an open fd (O_RDWR, positioned at 1000) on DIR/deleted, a 32 KiB patterned file it
 * unlinked right after creating it. The dumper saves it as a ghost file; after a restore it
 * is a new inode with the same contents. Wake-up: DIR/go, polled every 10 ms. At go it
 * checks the fd is still a regular file of mode 0600 and size 32 KiB, still unlinked
 * (st_nlink == 0, path absent, /proc/self/fd link ends in " (deleted)"), offset 1000,
 * contents intact, and that it can still write and read back through it.
 *
 * deleted DIR named: besides, a live file literally named "named (deleted)" (linked, nlink 1), held
 * by an fd (O_RDWR, at 77), mapped MAP_SHARED and watched by inotify (IN_MODIFY, wd 1), and a FIFO
 * named "fifo (deleted)" held O_RDWR with "abc" in it: at go the fd is still that file (the same
 * inode as its path, nlink 1), at 77, its contents intact; a write through the mapping is read
 * back through the path (the same file, not a copy); a write through the path gives IN_MODIFY on
 * wd 1; the FIFO fd is the FIFO at its path and gives back "abc". --selftest-corrupt=named: the named file is
 * replaced by a copy (unlinked, made again) before go.
 */
#include "wl.h"
#include <sys/mman.h>
#include <sys/inotify.h>

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
	const char *named = wl_arg(argc, argv, 0);
	int nfd = -1, ino = -1, ffd = -1;
	char np[4200], fp[4200];
	unsigned char *nmap = NULL;
	if (named && strcmp(named, "named") == 0) {
		wl_path(np, sizeof np, "named (deleted)");
		nfd = open(np, O_RDWR | O_CREAT | O_TRUNC, 0640);
		if (nfd < 0 || write(nfd, buf, 8192) != 8192 || lseek(nfd, 77, SEEK_SET) != 77) return 2;
		nmap = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, nfd, 0);
		if (nmap == MAP_FAILED) return 2;
		if ((ino = inotify_init1(IN_NONBLOCK)) < 0 || inotify_add_watch(ino, np, IN_MODIFY) != 1) return 2;
		wl_path(fp, sizeof fp, "fifo (deleted)");
		if (mkfifo(fp, 0600) || (ffd = open(fp, O_RDWR | O_NONBLOCK)) < 0 || write(ffd, "abc", 3) != 3) return 2;
	}
	wl_ready();
	if (nfd >= 0 && wl_corrupting("named", "offset")) {
		unlink(np);
		int c = open(np, O_RDWR | O_CREAT, 0640);
		if (c < 0 || write(c, buf, 8192) != 8192) return 2;
		close(c);
	}

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
	if (nfd >= 0) {
		struct stat ns, ps;
		WL_CHECK(fstat(nfd, &ns) == 0 && stat(np, &ps) == 0, "named: stat: %s", strerror(errno));
		WL_CHECK(ns.st_nlink == 1 && ns.st_ino == ps.st_ino && ns.st_dev == ps.st_dev,
		         "named: the fd is inode %lu (%lu links), the path inode %lu", (unsigned long)ns.st_ino,
		         (unsigned long)ns.st_nlink, (unsigned long)ps.st_ino);
		WL_CHECK(lseek(nfd, 0, SEEK_CUR) == 77, "named: offset %lld, expected 77", (long long)lseek(nfd, 0, SEEK_CUR));
		WL_CHECK(memcmp(nmap, buf, 8192) == 0, "named: the mapping's contents differ");
		nmap[100] ^= 0xff;
		unsigned char b = 0;
		int pf = open(np, O_RDONLY);
		WL_CHECK(pf >= 0 && pread(pf, &b, 1, 100) == 1 && b == (unsigned char)(buf[100] ^ 0xff),
		         "named: a write through the mapping is not in the file at its path");
		if (pf >= 0) close(pf);
		struct inotify_event ev[8];
		int pw = open(np, O_WRONLY);
		WL_CHECK(pw >= 0 && pwrite(pw, "z", 1, 200) == 1, "named: write through the path: %s", strerror(errno));
		if (pw >= 0) close(pw);
		ssize_t r = read(ino, ev, sizeof ev);
		WL_CHECK(r >= (ssize_t)sizeof ev[0] && ev[0].wd == 1 && (ev[0].mask & IN_MODIFY), "named: no IN_MODIFY on wd 1 (read %zd)", r);
		struct stat fs1, fs2;
		char fb[8] = "";
		WL_CHECK(fstat(ffd, &fs1) == 0 && stat(fp, &fs2) == 0 && fs1.st_ino == fs2.st_ino && S_ISFIFO(fs1.st_mode),
		         "fifo: the fd is not the FIFO at its path");
		WL_CHECK(read(ffd, fb, sizeof fb) == 3 && memcmp(fb, "abc", 3) == 0, "fifo: its bytes are not \"abc\"");
	}
	wl_detail("fd=%d link=%s loops=%llu", fd, target, (unsigned long long)loops);
	wl_finish();
}
