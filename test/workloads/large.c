/*
 * large: a process with many fds and many VMAs (default 10000 fds, 5000 VMAs).
 * args: [NFDS] [NVMAS]
 *
 * fds, in groups of 10, spread over numbers 3 .. ~1.2*NFDS with holes (every 6th number is left
 * free): a regular file O_RDWR at its own offset, the same file O_RDONLY|O_NONBLOCK at another
 * offset, a pipe (both ends, the read end with unread data "pipe <i>"), a unix socketpair (both
 * ends, one with a queued datagram-like message "sock <i>"), an eventfd holding its index, a dup of
 * the O_RDWR fd (same description), an O_PATH fd; FD_CLOEXEC on every other one. Every fd is
 * recorded (number, kind, inode for files, offset, status flags, FD_CLOEXEC).
 * VMAs: NVMAS anonymous private mappings of 1..3 pages, separated by unmapped holes, with
 * protections cycling r--, rw-, r-x, --- and contents wl_fill(seed = index).
 *
 * At go: every fd is checked (kind from fstat / its link, inode of the files, offset, flags,
 * FD_CLOEXEC, the dup shares its offset, queued data read back, eventfd counter), no fd exists
 * that was not made, /proc/self/maps holds each mapping with its protection, and each mapping's
 * contents (PROT_NONE ones after mprotect) are the pattern. Reports fds=N vmas=N.
 * --selftest-corrupt[=fd|vma|offset]: close one fd (default) / change one byte of one mapping /
 * move one file offset.
 */
#include "wl.h"
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>

enum { K_FILE_RW, K_FILE_RO, K_PIPE_R, K_PIPE_W, K_SOCK_A, K_SOCK_B, K_EVENTFD, K_DUP, K_PATH, K_SOCK_C };
static const char *kname[] = {"file-rw", "file-ro", "pipe-r", "pipe-w", "sock-a", "sock-b", "eventfd", "dup", "opath", "sock-c"};

struct fdrec {
	int fd, kind, group, cloexec, flags;
	ino_t ino;
	off_t off;
};
struct vmarec {
	char *addr;
	size_t len;
	int prot;
};

static struct fdrec *fds;
static int nfd;
static struct vmarec *vmas;
static int nvma;
static int nextnum = 3;

/* the next fd number to use: holes at every 6th number */
static int slot(void) {
	if (nextnum % 6 == 0) nextnum++;
	return nextnum++;
}

static int high; /* raw fds wait above every slot until placed */
static int lift(int fd) {
	int h = fcntl(fd, F_DUPFD, high);
	if (fd < 0 || h < 0) { perror("lift"); exit(2); }
	close(fd);
	return h;
}

static int place(int fd, int kind, int group) {
	int want = slot();
	if (fd != want) {
		if (dup3(fd, want, 0) < 0) { perror("dup3"); exit(2); }
		close(fd);
	}
	struct fdrec *r = &fds[nfd++];
	r->fd = want;
	r->kind = kind;
	r->group = group;
	r->cloexec = (nfd & 1) != 0;
	if (r->cloexec) fcntl(want, F_SETFD, FD_CLOEXEC);
	return want;
}

static void record(struct fdrec *r) {
	struct stat st;
	fstat(r->fd, &st);
	r->ino = st.st_ino;
	r->flags = fcntl(r->fd, F_GETFL);
	r->off = (r->kind == K_FILE_RW || r->kind == K_FILE_RO || r->kind == K_DUP) ? lseek(r->fd, 0, SEEK_CUR) : 0;
}

static const char *linkof(int fd, char *buf, size_t n) {
	char p[64];
	snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
	ssize_t l = readlink(p, buf, n - 1);
	buf[l < 0 ? 0 : l] = 0;
	return buf;
}

static int check_fd(struct fdrec *r, const char *filename) {
	struct stat st;
	char ln[4200], want[64];
	int fails = wl_nfail;
	if (fstat(r->fd, &st) < 0) {
		wl_failf("fd %d (%s %d) is gone", r->fd, kname[r->kind], r->group);
		return 0;
	}
	int fl = fcntl(r->fd, F_GETFL), cl = fcntl(r->fd, F_GETFD);
	WL_CHECK(fl == r->flags, "fd %d (%s): flags 0%o, want 0%o", r->fd, kname[r->kind], fl, r->flags);
	WL_CHECK((cl == FD_CLOEXEC) == (r->cloexec != 0), "fd %d (%s): FD_CLOEXEC %d, want %d", r->fd, kname[r->kind], cl, r->cloexec);
	switch (r->kind) {
	case K_FILE_RW: case K_FILE_RO: case K_DUP: case K_PATH:
		WL_CHECK(S_ISREG(st.st_mode) && st.st_ino == r->ino, "fd %d (%s): not the same file", r->fd, kname[r->kind]);
		WL_CHECK(strcmp(linkof(r->fd, ln, sizeof ln), filename) == 0, "fd %d (%s): '%s', want '%s'", r->fd, kname[r->kind], ln, filename);
		if (r->kind != K_PATH) {
			off_t o = lseek(r->fd, 0, SEEK_CUR);
			WL_CHECK(o == r->off, "fd %d (%s): offset %lld, want %lld", r->fd, kname[r->kind], (long long)o, (long long)r->off);
		}
		break;
	case K_PIPE_R: case K_PIPE_W:
		WL_CHECK(S_ISFIFO(st.st_mode), "fd %d (%s): not a pipe", r->fd, kname[r->kind]);
		break;
	case K_SOCK_A: case K_SOCK_B: case K_SOCK_C:
		WL_CHECK(S_ISSOCK(st.st_mode), "fd %d (%s): not a socket", r->fd, kname[r->kind]);
		break;
	case K_EVENTFD:
		snprintf(want, sizeof want, "anon_inode:[eventfd]");
		WL_CHECK(strcmp(linkof(r->fd, ln, sizeof ln), want) == 0, "fd %d (eventfd): '%s'", r->fd, ln);
		break;
	}
	return fails == wl_nfail;
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	const char *a0 = wl_arg(argc, argv, 0), *a1 = wl_arg(argc, argv, 1);
	int want_fds = a0 ? atoi(a0) : 10000, want_vmas = a1 ? atoi(a1) : 5000;
	int groups = (want_fds + 9) / 10;
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	high = want_fds * 6 / 5 + 32;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < (rlim_t)high + 64) {
		fprintf(stderr, "RLIMIT_NOFILE %llu too low\n", (unsigned long long)rl.rlim_cur);
		return 2;
	}
	fds = calloc((size_t)groups * 10, sizeof *fds);
	vmas = calloc((size_t)want_vmas, sizeof *vmas);

	/* a data file; its fds hold different offsets */
	char filename[4200];
	wl_path(filename, sizeof filename, "data");
	int f0 = open(filename, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (f0 < 0 || ftruncate(f0, 1 << 20) < 0) { perror("data"); return 2; }
	close(f0);

	for (int g = 0; g < groups && nfd < want_fds; g++) {
		int p[2], s[2];
		char msg[64];
		/* regular files at offsets of their own */
		int rw = place(lift(open(filename, O_RDWR)), K_FILE_RW, g);
		lseek(rw, 17 * g + 1, SEEK_SET);
		int ro = place(lift(open(filename, O_RDONLY | O_NONBLOCK)), K_FILE_RO, g);
		lseek(ro, 31 * g + 5, SEEK_SET);
		if (pipe(p) < 0 || socketpair(AF_UNIX, (g & 1) ? SOCK_SEQPACKET : SOCK_STREAM, 0, s) < 0) { perror("pipe/socketpair"); return 2; }
		int n = snprintf(msg, sizeof msg, "pipe %d", g);
		if (write(p[1], msg, (size_t)n) != n) return 2;
		n = snprintf(msg, sizeof msg, "sock %d", g);
		if (write(s[1], msg, (size_t)n) != n) return 2;
		p[0] = lift(p[0]), p[1] = lift(p[1]), s[0] = lift(s[0]), s[1] = lift(s[1]);
		place(p[0], K_PIPE_R, g);
		place(p[1], K_PIPE_W, g);
		place(s[0], K_SOCK_A, g);
		place(s[1], K_SOCK_B, g);
		place(lift(eventfd((unsigned)g + 1, (g & 2) ? EFD_NONBLOCK : 0)), K_EVENTFD, g);
		place(lift(dup(rw)), K_DUP, g);
		place(lift(open(filename, O_PATH)), K_PATH, g);
		place(lift(socket(AF_UNIX, SOCK_DGRAM, 0)), K_SOCK_C, g);
	}
	for (int i = 0; i < nfd; i++) record(&fds[i]);

	/* VMAs: 1..3 pages each, one unmapped page between neighbours */
	long pg = sysconf(_SC_PAGESIZE);
	size_t total = 0;
	for (int i = 0; i < want_vmas; i++) total += (size_t)(1 + i % 3 + 1) * (size_t)pg;
	char *base = mmap(NULL, total + (size_t)pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED) { perror("reserve"); return 2; }
	munmap(base, total + (size_t)pg);
	static const int prots[] = {PROT_READ, PROT_READ | PROT_WRITE, PROT_READ | PROT_EXEC, PROT_NONE};
	char *at = base;
	for (int i = 0; i < want_vmas; i++) {
		size_t len = (size_t)(1 + i % 3) * (size_t)pg;
		char *m = mmap(at, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (m != at) { perror("mmap"); return 2; }
		wl_fill(m, len, (uint64_t)i * 7919 + 1);
		int prot = prots[(i / 3) % 4];
		if (mprotect(m, len, prot) < 0) { perror("mprotect"); return 2; }
		vmas[nvma++] = (struct vmarec){m, len, prot};
		at += len + (size_t)pg;
	}

	wl_ready();
	if (wl_corrupting("fd", "fd")) close(fds[nfd / 2].fd);
	if (wl_corrupting("offset", "fd")) lseek(fds[(nfd / 20) * 10].fd, 1, SEEK_CUR);
	if (wl_corrupting("vma", "fd")) {
		int i = nvma / 2;
		while (vmas[i].prot != (PROT_READ | PROT_WRITE)) i++;
		struct vmarec *v = &vmas[i];
		mprotect(v->addr, v->len, PROT_READ | PROT_WRITE);
		v->addr[v->len - 1] ^= 1;
		mprotect(v->addr, v->len, v->prot);
	}
	while (!wl_go()) wl_sleep_ms(10);

	wl_check_ids();
	/* every fd as recorded */
	int good = 0;
	for (int i = 0; i < nfd; i++) good += check_fd(&fds[i], filename);
	/* nothing else open: the numbers not recorded (up to 64 above the last) are free */
	int extra = 0, last = fds[nfd - 1].fd;
	for (int fd = 3, j = 0; fd <= last + 64; fd++) {
		if (j < nfd && fds[j].fd == fd) { j++; continue; }
		if (fcntl(fd, F_GETFD) >= 0) extra++;
	}
	WL_CHECK(extra == 0, "%d fds open that were not made", extra);
	/* the data behind them */
	char buf[128], want[64];
	for (int i = 0; i + 9 < nfd; i += 10) {
		int g = fds[i].group, n;
		if (fds[i].kind != K_FILE_RW || fds[i + 7].kind != K_DUP) { wl_failf("group %d out of order", g); break; }
		/* the dup moves with its original */
		if (lseek(fds[i].fd, 3, SEEK_CUR) >= 0)
			WL_CHECK(lseek(fds[i + 7].fd, 0, SEEK_CUR) == fds[i].off + 3, "group %d: the dup of fd %d does not share its offset", g, fds[i].fd);
		/* nothing may block here: a lost queue must be reported, not waited for */
		for (int k = 2; k <= 6; k++) fcntl(fds[i + k].fd, F_SETFL, fcntl(fds[i + k].fd, F_GETFL) | O_NONBLOCK);
		n = snprintf(want, sizeof want, "pipe %d", g);
		ssize_t r = read(fds[i + 2].fd, buf, sizeof buf);
		WL_CHECK(r == n && memcmp(buf, want, (size_t)n) == 0, "group %d: pipe fd %d read %zd", g, fds[i + 2].fd, r);
		r = write(fds[i + 3].fd, "x", 1);
		WL_CHECK(r == 1 && read(fds[i + 2].fd, buf, 1) == 1 && buf[0] == 'x', "group %d: pipe %d->%d broken", g, fds[i + 3].fd, fds[i + 2].fd);
		n = snprintf(want, sizeof want, "sock %d", g);
		r = recv(fds[i + 4].fd, buf, sizeof buf, MSG_DONTWAIT);
		WL_CHECK(r == n && memcmp(buf, want, (size_t)n) == 0, "group %d: socket fd %d read %zd", g, fds[i + 4].fd, r);
		r = send(fds[i + 4].fd, "y", 1, 0);
		WL_CHECK(r == 1 && recv(fds[i + 5].fd, buf, 1, MSG_DONTWAIT) == 1 && buf[0] == 'y', "group %d: socketpair %d->%d broken", g, fds[i + 4].fd, fds[i + 5].fd);
		uint64_t v = 0;
		WL_CHECK(read(fds[i + 6].fd, &v, 8) == 8 && v == (uint64_t)g + 1, "group %d: eventfd %d holds %llu", g, fds[i + 6].fd, (unsigned long long)v);
	}
	wl_detail("fds=%d", good);

	/* VMAs: /proc/self/maps lists each one with its protection */
	FILE *mf = fopen("/proc/self/maps", "r");
	char line[512];
	int vi = 0, seen = 0;
	while (mf && fgets(line, sizeof line, mf)) {
		unsigned long s, e;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &s, &e, perms) != 3) continue;
		if (s < (unsigned long)base || s >= (unsigned long)(base + total)) continue;
		while (vi < nvma && (unsigned long)vmas[vi].addr < s) {
			wl_failf("mapping %d at %p missing", vi, vmas[vi].addr);
			vi++;
		}
		if (vi >= nvma || (unsigned long)vmas[vi].addr != s) { wl_failf("unexpected mapping %lx-%lx", s, e); continue; }
		struct vmarec *v = &vmas[vi];
		char wp[5] = {v->prot & PROT_READ ? 'r' : '-', v->prot & PROT_WRITE ? 'w' : '-', v->prot & PROT_EXEC ? 'x' : '-', 'p', 0};
		WL_CHECK(e - s == v->len && strncmp(perms, wp, 4) == 0, "mapping %d: %lx-%lx %s, want len %zu %s", vi, s, e, perms, v->len, wp);
		if (e - s == v->len && strncmp(perms, wp, 4) == 0) seen++;
		vi++;
	}
	if (mf) fclose(mf);
	WL_CHECK(vi == nvma, "%d mappings of %d in /proc/self/maps", vi, nvma);
	int contents = 0;
	for (int i = 0; i < nvma; i++) {
		struct vmarec *v = &vmas[i];
		if (!(v->prot & PROT_READ)) mprotect(v->addr, v->len, PROT_READ);
		size_t bad = wl_verify_fill(v->addr, v->len, (uint64_t)i * 7919 + 1);
		WL_CHECK(bad == (size_t)-1, "mapping %d at %p: contents differ at +%zu", i, v->addr, bad);
		if (bad == (size_t)-1) contents++;
	}
	wl_detail("vmas=%d", seen);
	wl_detail("contents=%d", contents);
	wl_finish();
}
