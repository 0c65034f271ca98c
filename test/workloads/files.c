/*
 * files DIR [--selftest-corrupt[=offset|log|cloexec|shm|dup|ro]]
 *
 * Single-threaded file descriptor state; every file lives in DIR:
 *   - DIR/log    O_WRONLY|O_APPEND, gets "line NNNNNNNN\n" lines continuously (5 per 10 ms);
 *   - DIR/rw     O_RDWR|O_CLOEXEC, 64 KiB pattern, positioned at offset 12345, plus a dup()
 *                of it (shares the offset; no close-on-exec);
 *   - DIR/ro     O_RDONLY, 8 KiB pattern, positioned at 777 by reading;
 *   - DIR/ro     again as an O_PATH fd;
 *   - /dev/null  O_WRONLY and /dev/zero O_RDONLY;
 *   - DIR/shared 16 KiB, mapped MAP_SHARED read-write, pattern A written through the mapping.
 * Wake-up: DIR/go, polled every 10 ms. At go it checks, for every fd: same number, same
 * file (dev/ino against stat of the path, rdev for devices), open flags and FD_CLOEXEC as
 * read back at setup, offsets (and that the dup still shares its offset), contents at the
 * offsets; the log holds a gapless sequence of exactly the lines written (also after 10
 * more lines); the shared mapping still holds A (in memory and in the file), and pattern B
 * written through it after go reaches the file (msync + pread through another fd).
 */
#include "wl.h"
#include <sys/mman.h>
#include <sys/sysmacros.h>

#define RW_SIZE (64 << 10)
#define RO_SIZE (8 << 10)
#define SHM_SIZE (16 << 10)

struct fdrec {
	const char *name;
	int fd;
	int fl, fdfl;
	dev_t dev, rdev;
	ino_t ino;
};

static int logfd;
static uint64_t lines;

static void log_lines(int n) {
	char buf[64];
	for (int i = 0; i < n; i++) {
		int k = snprintf(buf, sizeof buf, "line %08llu\n", (unsigned long long)lines);
		if (write(logfd, buf, (size_t)k) == k) lines++;
	}
}

static void make_file(const char *name, size_t size, uint64_t seed) {
	char p[4200];
	wl_path(p, sizeof p, name);
	unsigned char *b = malloc(size);
	wl_fill(b, size, seed);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, b, size) != (ssize_t)size) exit(2);
	close(fd);
	free(b);
}

static void record(struct fdrec *r, const char *name, int fd) {
	struct stat st;
	r->name = name;
	r->fd = fd;
	r->fl = fcntl(fd, F_GETFL);
	r->fdfl = fcntl(fd, F_GETFD);
	fstat(fd, &st);
	r->dev = st.st_dev;
	r->ino = st.st_ino;
	r->rdev = st.st_rdev;
}

static void check_fd(const struct fdrec *r) {
	struct stat st;
	if (fstat(r->fd, &st) != 0) {
		wl_failf("fd %d (%s) is gone: %s", r->fd, r->name, strerror(errno));
		return;
	}
	WL_CHECK(st.st_dev == r->dev && st.st_ino == r->ino && st.st_rdev == r->rdev,
	         "fd %d (%s) is another file: dev %lx ino %lu rdev %lx, expected %lx %lu %lx", r->fd, r->name,
	         (unsigned long)st.st_dev, (unsigned long)st.st_ino, (unsigned long)st.st_rdev, (unsigned long)r->dev,
	         (unsigned long)r->ino, (unsigned long)r->rdev);
	int fl = fcntl(r->fd, F_GETFL), fdfl = fcntl(r->fd, F_GETFD);
	WL_CHECK(fl == r->fl, "fd %d (%s) flags %#o, expected %#o", r->fd, r->name, fl, r->fl);
	WL_CHECK(fdfl == r->fdfl, "fd %d (%s) FD_CLOEXEC %d, expected %d", r->fd, r->name, fdfl, r->fdfl);
	wl_detail("fd %d %s flags=%#o cloexec=%d pos=%lld", r->fd, r->name, fl, fdfl,
	          (long long)lseek(r->fd, 0, SEEK_CUR));
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	const uint64_t seed = 0xF11E5ULL;
	char p[4200];

	wl_path(p, sizeof p, "log");
	logfd = open(p, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, 0644);
	make_file("rw", RW_SIZE, seed + 1);
	wl_path(p, sizeof p, "rw");
	int rwfd = open(p, O_RDWR | O_CLOEXEC);
	int rwdup = dup(rwfd);
	make_file("ro", RO_SIZE, seed + 2);
	wl_path(p, sizeof p, "ro");
	int rofd = open(p, O_RDONLY);
	int pathfd = open(p, O_PATH);
	int nullfd = open("/dev/null", O_WRONLY);
	int zerofd = open("/dev/zero", O_RDONLY);
	make_file("shared", SHM_SIZE, seed + 3);
	wl_path(p, sizeof p, "shared");
	int shmfd = open(p, O_RDWR);
	if (logfd < 0 || rwfd < 0 || rwdup < 0 || rofd < 0 || pathfd < 0 || nullfd < 0 || zerofd < 0 || shmfd < 0)
		return 2;
	unsigned char *shm = mmap(NULL, SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, shmfd, 0);
	if (shm == MAP_FAILED) return 2;
	close(shmfd); /* the mapping alone keeps the file */
	wl_fill(shm, SHM_SIZE, seed + 4);
	msync(shm, SHM_SIZE, MS_SYNC);

	if (lseek(rwfd, 12345, SEEK_SET) != 12345) return 2;
	unsigned char tmp[1024];
	if (read(rofd, tmp, 777) != 777) return 2;

	struct fdrec R[7];
	record(&R[0], "log", logfd);
	record(&R[1], "rw", rwfd);
	record(&R[2], "rw-dup", rwdup);
	record(&R[3], "ro", rofd);
	record(&R[4], "ro-opath", pathfd);
	record(&R[5], "/dev/null", nullfd);
	record(&R[6], "/dev/zero", zerofd);
	if (R[5].rdev != makedev(1, 3) || R[6].rdev != makedev(1, 5) || !(R[0].fl & O_APPEND) || !(R[4].fl & O_PATH) ||
	    !(R[1].fdfl & FD_CLOEXEC) || (R[2].fdfl & FD_CLOEXEC))
		return 2;

	log_lines(5);
	wl_ready();

	if (wl_corrupting("offset", "offset")) lseek(rwfd, 12346, SEEK_SET);
	if (wl_corrupting("log", "offset")) lines++;
	if (wl_corrupting("cloexec", "offset")) fcntl(rwdup, F_SETFD, FD_CLOEXEC);
	if (wl_corrupting("shm", "offset")) shm[SHM_SIZE - 10] ^= 0x20;
	if (wl_corrupting("dup", "offset")) {
		int fd = open(p, O_RDWR); /* p is DIR/shared: a different file at the dup's number */
		dup2(fd, rwdup);
		close(fd);
	}
	if (wl_corrupting("ro", "offset")) {
		char c;
		if (read(rofd, &c, 1) != 1) return 2;
	}

	while (!wl_go()) {
		log_lines(5);
		wl_sleep_ms(10);
	}

	wl_check_ids();
	for (int i = 0; i < 7; i++) check_fd(&R[i]);

	/* rw: offset shared with its dup, contents at the offset, writes at the offset. */
	off_t pos = lseek(rwfd, 0, SEEK_CUR), dpos = lseek(rwdup, 0, SEEK_CUR);
	WL_CHECK(pos == 12345 && dpos == 12345, "rw offset %lld (dup %lld), expected 12345", (long long)pos,
	         (long long)dpos);
	unsigned char *rwexp = malloc(RW_SIZE);
	wl_fill(rwexp, RW_SIZE, seed + 1);
	ssize_t n = read(rwfd, tmp, 100);
	WL_CHECK(n == 100 && !memcmp(tmp, rwexp + pos, 100), "rw read at offset %lld returned %zd, contents %s",
	         (long long)pos, n, n == 100 && !memcmp(tmp, rwexp + 12345, 100) ? "ok" : "wrong");
	dpos = lseek(rwdup, 0, SEEK_CUR);
	WL_CHECK(dpos == pos + 100, "dup offset %lld after reading 100 bytes from %lld: offset not shared",
	         (long long)dpos, (long long)pos);
	const char stamp[] = "written-after-go";
	WL_CHECK(write(rwfd, stamp, sizeof stamp) == (ssize_t)sizeof stamp, "write to rw failed: %s", strerror(errno));
	WL_CHECK(pread(rwdup, tmp, sizeof stamp, 12445) == (ssize_t)sizeof stamp && !memcmp(tmp, stamp, sizeof stamp),
	         "write at offset 12445 of rw not visible");

	/* ro: offset, contents, read-only. */
	unsigned char roexp[RO_SIZE];
	wl_fill(roexp, RO_SIZE, seed + 2);
	pos = lseek(rofd, 0, SEEK_CUR);
	WL_CHECK(pos == 777, "ro offset %lld, expected 777", (long long)pos);
	n = read(rofd, tmp, 100);
	WL_CHECK(n == 100 && !memcmp(tmp, roexp + 777, 100), "ro read at 777 returned %zd or wrong bytes", n);
	WL_CHECK(write(rofd, "x", 1) < 0 && errno == EBADF, "ro fd is writable");

	/* O_PATH: usable for fstatat, not for reading. */
	struct stat st;
	WL_CHECK(fstatat(pathfd, "", &st, AT_EMPTY_PATH) == 0 && st.st_size == RO_SIZE, "O_PATH fstatat failed");
	WL_CHECK(read(pathfd, tmp, 1) < 0 && errno == EBADF, "O_PATH fd is readable");

	/* Devices. */
	WL_CHECK(write(nullfd, tmp, 100) == 100, "/dev/null write failed: %s", strerror(errno));
	memset(tmp, 0xAA, sizeof tmp);
	n = read(zerofd, tmp, sizeof tmp);
	int nz = 0;
	for (size_t i = 0; i < sizeof tmp; i++) nz += tmp[i] != 0;
	WL_CHECK(n == (ssize_t)sizeof tmp && nz == 0, "/dev/zero read %zd bytes, %d non-zero", n, nz);

	/* Log: gapless sequence, also with lines written after go. */
	log_lines(10);
	off_t logpos = lseek(logfd, 0, SEEK_CUR);
	wl_path(p, sizeof p, "log");
	int lfd = open(p, O_RDONLY);
	off_t lsize = lseek(lfd, 0, SEEK_END);
	WL_CHECK(logpos == lsize, "log fd offset %lld, file size %lld", (long long)logpos, (long long)lsize);
	char *logbuf = malloc((size_t)lsize + 1);
	n = pread(lfd, logbuf, (size_t)lsize, 0);
	logbuf[n > 0 ? n : 0] = 0;
	close(lfd);
	uint64_t seen = 0;
	char want[64];
	for (char *line = logbuf; *line;) {
		char *nl = strchr(line, '\n');
		if (!nl) {
			wl_failf("log has a partial last line after %llu lines", (unsigned long long)seen);
			break;
		}
		int k = snprintf(want, sizeof want, "line %08llu\n", (unsigned long long)seen);
		if ((nl - line + 1) != k || memcmp(line, want, (size_t)k)) {
			*nl = 0;
			wl_failf("log line %llu is '%s'", (unsigned long long)seen, line);
			break;
		}
		seen++;
		line = nl + 1;
	}
	WL_CHECK(seen == lines, "log holds %llu lines, %llu were written", (unsigned long long)seen,
	         (unsigned long long)lines);
	wl_detail("log_lines=%llu", (unsigned long long)lines);

	/* Shared mapping: old contents, then writes reach the file. */
	wl_path(p, sizeof p, "shared");
	int sfd = open(p, O_RDONLY);
	unsigned char *sbuf = malloc(SHM_SIZE);
	size_t bad = wl_verify_fill(shm, SHM_SIZE, seed + 4);
	WL_CHECK(bad == (size_t)-1, "shared mapping differs at offset %zd", (ssize_t)bad);
	n = pread(sfd, sbuf, SHM_SIZE, 0);
	bad = wl_verify_fill(sbuf, SHM_SIZE, seed + 4);
	WL_CHECK(n == SHM_SIZE && bad == (size_t)-1, "shared file differs at offset %zd (read %zd)", (ssize_t)bad, n);
	wl_fill(shm, SHM_SIZE, seed + 5);
	WL_CHECK(msync(shm, SHM_SIZE, MS_SYNC) == 0, "msync failed: %s", strerror(errno));
	n = pread(sfd, sbuf, SHM_SIZE, 0);
	bad = wl_verify_fill(sbuf, SHM_SIZE, seed + 5);
	WL_CHECK(n == SHM_SIZE && bad == (size_t)-1,
	         "write through the MAP_SHARED mapping did not reach the file (first difference at %zd)", (ssize_t)bad);
	close(sfd);
	wl_finish();
}
