/*
 * memsess: memory, session and personality states criu-bun got wrong once; each MODE holds one, and at
 * go checks it is all still there exactly (after a dump and restore, or after a dump that refused it).
 *
 *   memsess DIR MODE
 *   noreserve   a 64 GiB MAP_NORESERVE PROT_NONE reservation and a 4 MiB MAP_NORESERVE read-write
 *               region holding a pattern. At go: both still "nr" in smaps VmFlags, the pattern
 *               intact, and mprotect(PROT_READ|PROT_WRITE) of the whole reservation works (without
 *               MAP_NORESERVE the kernel charges 64 GiB to the commit limit and says ENOMEM), its
 *               first and last pages writable
 *   shanon      16 KiB of MAP_SHARED|MAP_ANONYMOUS memory and 8 KiB of a MAP_SHARED mapping of
 *               /dev/zero, both with a pattern, shared with a child. At go: the patterns in both
 *               processes; the child writes a mark into each and exits; the parent sees both marks
 *   zlead       the process is a child subreaper; its child A calls setsid, forks B and exits 11
 *               (an unreaped zombie, leader of session and group A); B is handed to the process
 *               and stays in A's session and group; B's child C makes its own group. At go: B has
 *               sid A, pgid A, parent the process; C sid A, pgid C, parent B; A is a zombie that
 *               exited 11 (then reaped), B and C exit 0
 *   zleadalive  as zlead, but A stays alive: A's child X forks B and exits (A reaps it), B is handed
 *               to the process in A's session. At go the same checks (B: sid A, parent the
 *               process); A exits 0. B is named in DIR/culprit. Refused (session-not-parents):
 *               restore cannot make B in a session whose leader lives on and is not its parent
 *   pgrporphan  the process is a child subreaper; its child A makes its own process group, forks B
 *               and exits (reaped): B, handed to the process, and B's child C stay in group A,
 *               whose leader is gone. At go: B and C in group A, session the process's, B's parent
 *               the process
 *   pgrpalive   a process group led by A, a process outside the tree (double-forked, pid in
 *               DIR/ext-pid) in the process's session, which its child B joined. At go: B still in
 *               group A. B is named in DIR/culprit. Refused (pgrp-leader-gone): restore cannot make
 *               the group of a leader that lives on elsewhere
 *   pers        personality PER_LINUX|ADDR_NO_RANDOMIZE|UNAME26|SHORT_INODE (0x1060000). At go: the same
 *   persbits    personality 0x10000, a bit Linux does not define. At go: the same. Refused (personality)
 *
 * --selftest-corrupt: noreserve and shanon damage a pattern; zlead and zleadalive make B leave A's session (setsid), pgrporphan B leave group A;
 * pers and persbits change the personality.
 */
#define WL_MODES
#include "wl.h"
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define RES_SZ (64UL << 30)
#define RW_SZ (4UL << 20)
static char *res, *rw;
static char *anon, *zero;
static pid_t child, A, B;
static int pers_want;

/* smaps VmFlags of the VMA starting at addr contain flag */
static int vmflag(void *addr, const char *flag) {
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f) return -1;
	char line[512];
	int in = 0, got = 0;
	unsigned long a = (unsigned long)addr;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = s == a;
			continue;
		}
		if (in && !strncmp(line, "VmFlags:", 8)) {
			char pat[8];
			snprintf(pat, sizeof pat, " %s", flag);
			for (char *p = line + 8; (p = strstr(p, pat)); p++)
				if (p[3] == ' ' || p[3] == '\n') got = 1;
			break;
		}
	}
	fclose(f);
	return got;
}

static uint8_t pat(size_t i, int salt) { return (uint8_t)(i * 31 + salt + (i >> 12)); }

static char state_of(pid_t p) {
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)p);
	int fd = open(path, O_RDONLY);
	if (fd < 0) return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0) return 0;
	buf[n] = 0;
	char *q = strrchr(buf, ')');
	return q && q[1] ? q[2] : 0;
}

static pid_t ppid_of(pid_t p) {
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)p);
	int fd = open(path, O_RDONLY);
	if (fd < 0) return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0) return -1;
	buf[n] = 0;
	char *q = strrchr(buf, ')');
	char st;
	int pp;
	return q && sscanf(q + 2, "%c %d", &st, &pp) == 2 ? pp : -1;
}

/* B (and C): wait for go, then check its session, group and parent; exit 0 when all is as set up */
static void __attribute__((noreturn)) run_b(pid_t sid, pid_t root, int alive) {
	pid_t c = alive ? 0 : fork();
	if (c == 0 && !alive) {
		setpgid(0, 0);
		while (!wl_go()) wl_sleep_ms(10);
		_exit(getsid(0) == sid && getpgrp() == getpid() ? 0 : 3);
	}
	while (!wl_go()) wl_sleep_ms(10);
	if (wl_corrupt) setsid();
	int bad = getsid(0) != sid || getpgrp() != sid || getppid() != root;
	if (bad) fprintf(stderr, "B: sid %d (want %d) pgid %d ppid %d (want %d)\n", getsid(0), sid, getpgrp(), getppid(), root);
	int st = 0;
	if (c > 0 && waitpid(c, &st, 0) != c) st = 0x100 * 4;
	_exit(bad ? 1 : WIFEXITED(st) ? WEXITSTATUS(st) : 5);
}

static void setup(void) {
	if (is("noreserve")) {
		res = mmap(0, RES_SZ, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		NEED(res != MAP_FAILED);
		rw = mmap(0, RW_SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		NEED(rw != MAP_FAILED);
		for (size_t i = 0; i < RW_SZ; i++) rw[i] = (char)pat(i, 7);
		NEED(vmflag(res, "nr") == 1 && vmflag(rw, "nr") == 1);
	} else if (is("shanon")) {
		anon = mmap(0, 16384, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		NEED(anon != MAP_FAILED);
		int z = open("/dev/zero", O_RDWR | O_CLOEXEC);
		NEED(z >= 0);
		zero = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, z, 0);
		NEED(zero != MAP_FAILED);
		close(z);
		for (size_t i = 0; i < 16384; i++) anon[i] = (char)pat(i, 1);
		for (size_t i = 0; i < 8192; i++) zero[i] = (char)pat(i, 2);
		child = fork();
		NEED(child >= 0);
		if (child == 0) {
			while (!wl_go()) wl_sleep_ms(10);
			int bad = 0;
			for (size_t i = 0; i < 16384; i++) bad |= anon[i] != (char)pat(i, 1);
			for (size_t i = 0; i < 8192; i++) bad |= zero[i] != (char)pat(i, 2);
			anon[100] = 'M';
			zero[200] = 'Z';
			_exit(bad ? 1 : 0);
		}
	} else if (is("zlead") || is("zleadalive")) {
		int alive = is("zleadalive");
		NEED(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
		pid_t root = getpid();
		int pp[2];
		NEED(pipe(pp) == 0);
		A = fork();
		NEED(A >= 0);
		if (A == 0) {
			setsid();
			pid_t sid = getpid();
			pid_t x = fork();
			if (x == 0) {
				if (alive) {
					pid_t b = fork();
					if (b == 0) run_b(sid, root, 1);
					write(pp[1], &b, sizeof b);
					_exit(0);
				}
				run_b(sid, root, 0);
			}
			if (alive) {
				int st;
				waitpid(x, &st, 0);
				while (!wl_go()) wl_sleep_ms(10);
				_exit(0);
			}
			write(pp[1], &x, sizeof x);
			_exit(11);
		}
		NEED(read(pp[0], &B, sizeof B) == sizeof B);
		close(pp[0]);
		close(pp[1]);
		/* ready once B is the process's and (zlead) A a zombie */
		for (int i = 0; i < 1000 && ppid_of(B) != root; i++) wl_sleep_ms(5);
		NEED(ppid_of(B) == root);
		if (!alive) {
			for (int i = 0; i < 1000 && state_of(A) != 'Z'; i++) wl_sleep_ms(5);
			NEED(state_of(A) == 'Z');
		}
		if (alive) {
			char b[32];
			int n = snprintf(b, sizeof b, "%d\n", (int)B);
			wl_write_file("culprit", b, (size_t)n);
		}
		NEED(getsid(B) == A);
	} else if (is("pgrporphan")) {
		NEED(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
		pid_t root = getpid(), sess = getsid(0);
		int pp[2];
		NEED(pipe(pp) == 0);
		A = fork();
		NEED(A >= 0);
		if (A == 0) {
			setpgid(0, 0);
			pid_t grp = getpid();
			pid_t b = fork();
			if (b == 0) {
				pid_t c = fork();
				if (c == 0) {
					while (!wl_go()) wl_sleep_ms(10);
					_exit(getpgrp() == grp && getsid(0) == sess ? 0 : 3);
				}
				while (!wl_go()) wl_sleep_ms(10);
				if (wl_corrupt) setpgid(0, 0);
				int bad = getpgrp() != grp || getsid(0) != sess || getppid() != root;
				if (bad) fprintf(stderr, "B: pgid %d (want %d) sid %d ppid %d\n", getpgrp(), grp, getsid(0), getppid());
				int st = 0;
				if (waitpid(c, &st, 0) != c) st = 4 << 8;
				_exit(bad ? 1 : WIFEXITED(st) ? WEXITSTATUS(st) : 5);
			}
			write(pp[1], &b, sizeof b);
			_exit(0);
		}
		NEED(read(pp[0], &B, sizeof B) == sizeof B);
		close(pp[0]);
		close(pp[1]);
		int st;
		NEED(waitpid(A, &st, 0) == A);
		for (int i = 0; i < 1000 && ppid_of(B) != root; i++) wl_sleep_ms(5);
		NEED(ppid_of(B) == root && getpgid(B) == A);
	} else if (is("pgrpalive")) {
		/* A: a group leader outside the tree (double-forked, handed to init), in our session */
		int pp[2];
		NEED(pipe(pp) == 0);
		pid_t p = fork();
		NEED(p >= 0);
		if (p == 0) {
			pid_t a = fork();
			if (a == 0) {
				setpgid(0, 0);
				pid_t me = getpid();
				write(pp[1], &me, sizeof me);
				for (;;) pause();
			}
			_exit(0);
		}
		NEED(read(pp[0], &A, sizeof A) == sizeof A);
		NEED(waitpid(p, NULL, 0) == p);
		for (int i = 0; i < 1000 && getpgid(A) != A; i++) wl_sleep_ms(5);
		char b[32];
		int n = snprintf(b, sizeof b, "%d\n", (int)A);
		wl_write_file("ext-pid", b, (size_t)n);
		B = fork();
		NEED(B >= 0);
		if (B == 0) {
			if (setpgid(0, A) != 0) _exit(2);
			while (!wl_go()) wl_sleep_ms(10);
			_exit(getpgrp() == A ? 0 : 1);
		}
		for (int i = 0; i < 1000 && getpgid(B) != A; i++) wl_sleep_ms(5);
		NEED(getpgid(B) == A);
		n = snprintf(b, sizeof b, "%d\n", (int)B);
		wl_write_file("culprit", b, (size_t)n);
	} else if (is("pers")) {
		NEED(personality(PER_LINUX | ADDR_NO_RANDOMIZE | UNAME26 | SHORT_INODE) >= 0);
		pers_want = personality(0xffffffff);
		NEED(pers_want == (PER_LINUX | ADDR_NO_RANDOMIZE | UNAME26 | SHORT_INODE));
	} else if (is("persbits")) {
		NEED(personality(0x10000) >= 0);
		pers_want = personality(0xffffffff);
		NEED(pers_want == 0x10000);
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		exit(2);
	}
}

static void corrupt(void) {
	if (is("noreserve")) rw[12345] ^= 1;
	else if (is("shanon")) anon[5] ^= 1;
	else if (is("pers") || is("persbits")) personality(PER_LINUX);
}

static void check(void) {
	if (is("noreserve")) {
		WL_CHECK(vmflag(res, "nr") == 1, "the reservation lost MAP_NORESERVE (smaps VmFlags without nr)");
		WL_CHECK(vmflag(rw, "nr") == 1, "the read-write region lost MAP_NORESERVE (smaps VmFlags without nr)");
		size_t bad = 0;
		for (size_t i = 0; i < RW_SZ; i++) bad += rw[i] != (char)pat(i, 7);
		WL_CHECK(bad == 0, "%zu bytes of the NORESERVE region differ", bad);
		int r = mprotect(res, RES_SZ, PROT_READ | PROT_WRITE);
		WL_CHECK(r == 0, "mprotect(RW) of the 64 GiB NORESERVE reservation: %s", strerror(errno));
		if (r == 0) {
			res[0] = 1;
			res[RES_SZ - 1] = 2;
			WL_CHECK(res[0] == 1 && res[RES_SZ - 1] == 2, "reservation pages not writable");
		}
	} else if (is("shanon")) {
		size_t bad = 0;
		for (size_t i = 0; i < 16384; i++) bad += i != 100 && anon[i] != (char)pat(i, 1);
		for (size_t i = 0; i < 8192; i++) bad += i != 200 && zero[i] != (char)pat(i, 2);
		WL_CHECK(bad == 0, "%zu bytes of the shared patterns differ", bad);
		int st;
		WL_CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		         "the child saw other shared contents (status 0x%x)", st);
		WL_CHECK(anon[100] == 'M', "the child's write to shared anonymous memory is not seen (0x%x)", anon[100]);
		WL_CHECK(zero[200] == 'Z', "the child's write to the /dev/zero mapping is not seen (0x%x)", zero[200]);
	} else if (is("zlead") || is("zleadalive")) {
		int st = 0;
		if (is("zlead")) {
			siginfo_t si = {0};
			WL_CHECK(waitid(P_PID, A, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == A && si.si_status == 11,
			         "A (%d) is not a zombie that exited 11 (pid %d status %d)", (int)A, si.si_pid, si.si_status);
		}
		pid_t w = waitpid(B, &st, 0);
		WL_CHECK(w == B && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		         "B (%d): wrong session, group or parent, or C's (status 0x%x, waitpid %d: %s)", (int)B, st, (int)w,
		         w < 0 ? strerror(errno) : "");
		w = waitpid(A, &st, 0);
		WL_CHECK(w == A && WIFEXITED(st) && WEXITSTATUS(st) == (is("zlead") ? 11 : 0), "A status 0x%x", st);
	} else if (is("pgrporphan") || is("pgrpalive")) {
		int st = 0;
		pid_t want = A;
		WL_CHECK(getpgid(B) == want, "B (%d): wrong group %d, not %d", (int)B, (int)getpgid(B), (int)want);
		pid_t w = waitpid(B, &st, 0);
		WL_CHECK(w == B && WIFEXITED(st) && WEXITSTATUS(st) == 0, "B (%d): wrong group, session or parent, or C's (status 0x%x)", (int)B, st);
		if (is("pgrpalive")) kill(A, SIGKILL);
	} else if (is("pers") || is("persbits")) {
		int p = personality(0xffffffff);
		WL_CHECK(p == pers_want, "personality 0x%x, want 0x%x", p, pers_want);
	}
}

int main(int argc, char **argv) { wl_mode_main(argc, argv, "memsess", setup, corrupt, check, 1); }
