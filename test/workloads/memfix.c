/*
 * memfix: memory states criu-bun restored wrong once (session 28); each MODE holds one and at go
 * checks it is all still there exactly: besides its own checks, the whole memory map is compared
 * with the one taken before ready (every VMA's range, protection, offset, file and smaps VmFlags,
 * the mm fields of /proc/self/stat, the auxv, brk, VmLck).
 *
 *   memfix DIR MODE
 *   account     anonymous regions written then made read-only, PROT_NONE and PROT_EXEC (VmFlags
 *               "ac": charged once writable); a MAP_PRIVATE file mapping written then made
 *               read-only (a copy-on-write page in it); every library's RELRO. At go: contents,
 *               and the map as it was ("ac" on each)
 *   accountempty  an anonymous region written, emptied with MADV_DONTNEED, made read-only ("ac",
 *               no page to dump). At go: zero, and the map as it was
 *   roshared    a file mapped MAP_SHARED twice, read-only and read-write (CRIU 4.2 writes one file
 *               id with fdflags 0 and 2). At go: a write through the read-write mapping is seen
 *               through the read-only one and in the file
 *   lockonfault 64 pages locked on fault (mlock2 MLOCK_ONFAULT), 2 of them touched. At go: "lo lf",
 *               the 62 others not resident (mincore), the contents
 *   lockfuture  mlockall(MCL_FUTURE). At go: a new mapping is locked ("lo") and resident
 *   lockfutureonfault  mlockall(MCL_FUTURE|MCL_ONFAULT). At go: a new mapping is "lo lf", not resident
 *   shanon      8 pages of MAP_SHARED|MAP_ANONYMOUS memory with a pattern, the first 2 unmapped and 2
 *               made read-only, shared with a child (its pid in DIR/child). At go: "/dev/zero
 *               (deleted)" in the map as before (not a memfd: the inode number aside, a new
 *               object's), the pattern; the child writes into it and exits, the parent sees it
 *   sealed      2 pages of 4 sealed with mseal. Refused (sealed). At go: munmap of them fails EPERM
 *   vdsomove    the vDSO moved away from its vvar (mremap). Refused (vdso-layout). At go: the map as it was
 *
 * --selftest-corrupt: account and accountempty make a region writable; shanon maps private memory
 * over part of the shared one; lock modes munlockall; roshared breaks the
 * sharing (MAP_PRIVATE over it); sealed and vdsomove change the map (a new mapping).
 */
#define WL_MODES
#include "wl.h"
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define PG 4096UL
static char *A, *B, *C, *D, *F;
static int fd = -1, gofd[2];
static pid_t child;
static char path[4200];

/* ---- the memory map: smaps (ranges, protection, offset, file, VmFlags), stat's mm fields, auxv ---- */
static char raw[1 << 20], map0[1 << 18], map1[1 << 18];
static int rd(const char *p, char *b, int n) {
	int f = open(p, O_RDONLY), t = 0, r;
	if (f < 0) return -1;
	while (t < n - 1 && (r = read(f, b + t, n - 1 - t)) > 0) t += r;
	close(f);
	b[t] = 0;
	return t;
}
static void add(char *o, const char *s, size_t n) {
	size_t l = strlen(o);
	if (l + n + 2 >= sizeof map0) return;
	memcpy(o + l, s, n);
	o[l + n] = '\n';
	o[l + n + 1] = 0;
}
static void snapshot(char *o) {
	o[0] = 0;
	rd("/proc/self/smaps", raw, sizeof raw);
	for (char *l = raw, *nl; *l; l = nl) {
		nl = strchr(l, '\n');
		size_t n = nl ? (size_t)(nl - l) : strlen(l);
		nl = nl ? nl + 1 : l + n;
		if (l[strspn(l, "0123456789abcdef")] == '-' && n > 20 && !strncmp(l + n - 19, "/dev/zero (deleted)", 19)) {
			/* shared anonymous memory: a restore makes a new object (a new inode number) */
			char line[512];
			int k = snprintf(line, sizeof line, "%.*s /dev/zero (deleted)", (int)strcspn(l, " ") + 20, l);
			add(o, line, (size_t)k);
		} else if (l[strspn(l, "0123456789abcdef")] == '-' || !strncmp(l, "VmFlags:", 8))
			add(o, l, n);
	}
	rd("/proc/self/status", raw, sizeof raw);
	char *lk = strstr(raw, "VmLck:");
	if (lk) add(o, lk, strcspn(lk, "\n"));
	rd("/proc/self/stat", raw, sizeof raw);
	char *p = strrchr(raw, ')') + 2, line[64];
	int i = 3;
	for (char *t = strtok(p, " \n"); t; t = strtok(NULL, " \n"), i++)
		if (i == 26 || i == 27 || i == 28 || (i >= 45 && i <= 51)) add(o, line, snprintf(line, sizeof line, "stat%d %s", i, t));
	unsigned long av[128];
	int f = open("/proc/self/auxv", O_RDONLY), n = f < 0 ? 0 : (int)read(f, av, sizeof av);
	if (f >= 0) close(f);
	for (int k = 0; k + 1 < n / 8; k += 2) add(o, line, snprintf(line, sizeof line, "auxv %lu %lx", av[k], av[k + 1]));
	add(o, line, snprintf(line, sizeof line, "brk %p", sbrk(0)));
}
/* the first line that differs */
static void same_map(void) {
	const char *a = map0, *b = map1;
	while (*a || *b) {
		size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
		if (la != lb || memcmp(a, b, la)) {
			wl_failf("memory map differs: was [%.*s] now [%.*s]", (int)la, a, (int)lb, b);
			return;
		}
		a += la + (a[la] ? 1 : 0);
		b += lb + (b[lb] ? 1 : 0);
	}
}
/* smaps VmFlags of the VMA at addr, in map1 */
static const char *flags_at(void *addr) {
	static char out[256];
	char pat[32];
	snprintf(pat, sizeof pat, "%lx-", (unsigned long)addr);
	for (const char *l = map1; *l; l += strcspn(l, "\n") + 1) {
		if (strncmp(l, pat, strlen(pat))) continue;
		const char *v = l + strcspn(l, "\n") + 1;
		snprintf(out, sizeof out, "%.*s", (int)strcspn(v, "\n"), v);
		return out;
	}
	return "(no VMA)";
}
static int has_flag(const char *flags, const char *f) {
	char pat[8];
	snprintf(pat, sizeof pat, " %s ", f);
	char buf[260];
	snprintf(buf, sizeof buf, "%s ", flags);
	return strstr(buf, pat) != NULL;
}
static int resident(void *a, size_t pages) {
	unsigned char v[256];
	if (mincore(a, pages * PG, v)) return -1;
	int n = 0;
	for (size_t i = 0; i < pages; i++) n += v[i] & 1;
	return n;
}
static char *anon(size_t pages) {
	char *p = mmap(NULL, pages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	NEED(p != MAP_FAILED);
	return p;
}

static void setup(void) {
	if (is("accountempty")) {
		D = anon(4);
		wl_fill(D, 4 * PG, 4);
		NEED(!madvise(D, 4 * PG, MADV_DONTNEED)); /* touched once, emptied: no page to dump */
		NEED(!mprotect(D, 4 * PG, PROT_READ));
	} else if (is("account")) {
		/* each region apart (a PROT_NONE hole between, unaccounted: never writable) */
		char *r = mmap(NULL, 40 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		NEED(r != MAP_FAILED);
		A = mmap(r + PG, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		B = mmap(r + 6 * PG, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		C = mmap(r + 11 * PG, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		NEED(A != MAP_FAILED && B != MAP_FAILED && C != MAP_FAILED);
		wl_fill(A, 4 * PG, 1);
		wl_fill(B, 4 * PG, 2);
		unsigned char ret[] = {0x8d, 0x44, 0x3f, 0x07, 0xc3}; /* lea eax,[rdi+rdi+7]; ret */
		memcpy(C, ret, sizeof ret);
		NEED(!mprotect(A, 4 * PG, PROT_READ));
		NEED(!mprotect(B, 4 * PG, PROT_NONE));
		NEED(!mprotect(C, 4 * PG, PROT_READ | PROT_EXEC));
		snprintf(path, sizeof path, "%s/file", wl_dir);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
		char buf[4 * PG];
		wl_fill(buf, sizeof buf, 5);
		NEED(write(fd, buf, sizeof buf) == (ssize_t)sizeof buf);
		F = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		NEED(F != MAP_FAILED);
		memset(F + PG, 'c', PG);
		NEED(!mprotect(F, 4 * PG, PROT_READ));
	} else if (is("roshared")) {
		snprintf(path, sizeof path, "%s/file", wl_dir);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
		NEED(!ftruncate(fd, 4 * PG));
		A = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		NEED(A != MAP_FAILED);
		wl_fill(A, 4 * PG, 6);
		close(fd);
		fd = open(path, O_RDONLY);
		B = mmap(NULL, 2 * PG, PROT_READ, MAP_SHARED, fd, PG);
		NEED(B != MAP_FAILED);
		close(fd);
		fd = -1;
	} else if (is("shanon")) {
		A = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		NEED(A != MAP_FAILED);
		wl_fill(A, 8 * PG, 8);
		NEED(!munmap(A, 2 * PG));
		NEED(!mprotect(A + 4 * PG, 2 * PG, PROT_READ));
		NEED(!pipe(gofd));
		child = fork();
		NEED(child >= 0);
		if (child == 0) {
			char c;
			if (read(gofd[0], &c, 1) != 1) _exit(3);
			A[3 * PG] = 'q';
			A[7 * PG] = 'r';
			_exit(0);
		}
		char b[32];
		wl_write_file("child", b, (size_t)snprintf(b, sizeof b, "%d", (int)child));
	} else if (is("lockonfault")) {
		A = anon(64);
		A[0] = 'a';
		A[10 * PG] = 'b';
		NEED(!syscall(SYS_mlock2, A, 64 * PG, 1 /* MLOCK_ONFAULT */));
	} else if (is("lockfuture")) {
		NEED(!mlockall(MCL_FUTURE));
	} else if (is("lockfutureonfault")) {
		NEED(!mlockall(MCL_FUTURE | MCL_ONFAULT));
	} else if (is("sealed")) {
		A = anon(4);
		wl_fill(A, 4 * PG, 7);
		NEED(!syscall(462 /* mseal */, A, 2 * PG, 0));
	} else if (is("vdsomove")) {
		unsigned long v = getauxval(AT_SYSINFO_EHDR);
		NEED(v);
		char *r = mmap(NULL, 16 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		NEED(r != MAP_FAILED);
		/* (the vDSO is not called after this: libc keeps pointers into it) */
		NEED(mremap((void *)v, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, r + 4 * PG) != MAP_FAILED);
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		exit(2);
	}
	snapshot(map0);
}

static void corrupt(void) {
	if (is("account")) mprotect(A, 4 * PG, PROT_READ | PROT_WRITE);
	else if (is("accountempty")) mprotect(D, 4 * PG, PROT_READ | PROT_WRITE);
	else if (is("lockonfault") || is("lockfuture") || is("lockfutureonfault")) munlockall();
	else if (is("roshared")) mmap(B, 2 * PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	else if (is("shanon")) mmap(A + 2 * PG, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	else mmap(NULL, PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

static void check(void) {
	snapshot(map1);
	same_map();
	if (is("account")) {
		WL_CHECK(wl_verify_fill(A, 4 * PG, 1) == (size_t)-1, "read-only region's contents");
		WL_CHECK(!mprotect(B, 4 * PG, PROT_READ) && wl_verify_fill(B, 4 * PG, 2) == (size_t)-1, "PROT_NONE region's contents");
		int (*f)(int) = (int (*)(int))C;
		WL_CHECK(f(5) == 17, "code in the PROT_EXEC region");
		char buf[4 * PG];
		wl_fill(buf, sizeof buf, 5);
		WL_CHECK(!memcmp(F, buf, PG) && !memcmp(F + 2 * PG, buf + 2 * PG, 2 * PG), "file pages of the private mapping");
		WL_CHECK(F[PG] == 'c' && F[2 * PG - 1] == 'c', "copy-on-write page of the private mapping");
		char *regions[] = {A, C, F};
		for (int i = 0; i < 3; i++) WL_CHECK(has_flag(flags_at(regions[i]), "ac"), "region %d not accounted: %s", i, flags_at(regions[i]));
	} else if (is("accountempty")) {
		for (size_t i = 0; i < 4 * PG; i++)
			if (D[i]) {
				wl_failf("emptied region not zero at %zu", i);
				break;
			}
		WL_CHECK(has_flag(flags_at(D), "ac"), "not accounted: %s", flags_at(D));
	} else if (is("roshared")) {
		WL_CHECK(wl_verify_fill(A, 4 * PG, 6) == (size_t)-1, "contents");
		WL_CHECK(!memcmp(B, A + PG, 2 * PG), "read-only mapping differs");
		A[PG + 9] ^= 0x55;
		WL_CHECK(B[9] == A[PG + 9], "a write through the read-write mapping is not seen through the read-only one");
		int f = open(path, O_RDONLY);
		char c = 0;
		WL_CHECK(f >= 0 && pread(f, &c, 1, PG + 9) == 1 && c == A[PG + 9], "the write is not in the file");
		if (f >= 0) close(f);
	} else if (is("shanon")) {
		char pat[8 * PG];
		wl_fill(pat, sizeof pat, 8);
		WL_CHECK(!memcmp(A + 2 * PG, pat + 2 * PG, 6 * PG), "contents");
		WL_CHECK(write(gofd[1], "g", 1) == 1, "waking the child");
		int st = 0;
		WL_CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && !WEXITSTATUS(st), "child: %x", st);
		WL_CHECK(A[3 * PG] == 'q' && A[7 * PG] == 'r', "the child's writes are not seen: %d %d", A[3 * PG], A[7 * PG]);
	} else if (is("lockonfault")) {
		WL_CHECK(A[0] == 'a' && A[10 * PG] == 'b', "contents");
		const char *fl = flags_at(A);
		WL_CHECK(has_flag(fl, "lo") && has_flag(fl, "lf"), "not locked on fault: %s", fl);
		int n = resident(A, 64);
		WL_CHECK(n == 2, "%d pages resident, 2 touched", n);
	} else if (is("lockfuture") || is("lockfutureonfault")) {
		char *p = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		snapshot(map1);
		const char *fl = flags_at(p);
		int onfault = is("lockfutureonfault"), n = resident(p, 8);
		WL_CHECK(has_flag(fl, "lo"), "a new mapping is not locked: %s", fl);
		WL_CHECK(has_flag(fl, "lf") == onfault, "a new mapping's lock on fault: %s", fl);
		WL_CHECK(n == (onfault ? 0 : 8), "%d pages of a new mapping resident", n);
	} else if (is("sealed")) {
		WL_CHECK(wl_verify_fill(A, 4 * PG, 7) == (size_t)-1, "contents");
		WL_CHECK(munmap(A, PG) != 0 && errno == EPERM, "munmap of sealed memory did not fail with EPERM");
		WL_CHECK(!munmap(A + 2 * PG, PG), "munmap of memory beside it failed");
	}
}

int main(int argc, char **argv) { wl_mode_main(argc, argv, "memfix", setup, corrupt, check, 1); }
