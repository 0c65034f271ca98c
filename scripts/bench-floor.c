/*
 * The floor the page pipeline is measured against (scripts/bench.ts builds and runs it):
 *
 *   bench-floor dump PID OUT     process_vm_readv every private writable anonymous mapping of PID
 *                                (4 MiB chunks, one reused buffer) and write the bytes to OUT
 *   bench-floor splice PID OUT   the zero-copy floor: copy the same mappings into this process
 *                                (untimed), then time vmsplice (SPLICE_F_GIFT) of them into a pipe
 *                                (1 MiB) and splice from the pipe into OUT, as CRIU moves pages
 *   bench-floor restore IN       fork a fresh process with one anonymous mapping of IN's size,
 *                                then process_vm_writev IN's bytes into it (4 MiB chunks)
 *   bench-floor warm MIB         map MIB of anonymous memory with MAP_POPULATE and exit: on a VM with
 *                                free page reporting (virtio-balloon), memory the guest freed has
 *                                been handed back to the host and its first touch again faults into
 *                                the host; touching it just before a timed run measures the tool,
 *                                not the hypervisor (scripts/bench.ts, BENCH_WARM)
 *
 * Prints "bytes seconds" on stdout. Only the copy is timed (not the fork, not the mmap).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (4UL << 20)

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void wfull(int fd, const char *b, size_t n) {
	while (n) {
		ssize_t r = write(fd, b, n);
		if (r <= 0) { perror("write"); exit(1); }
		b += r; n -= (size_t)r;
	}
}

static int dump(int pid, const char *out) {
	char path[64], line[512];
	snprintf(path, sizeof path, "/proc/%d/maps", pid);
	FILE *f = fopen(path, "r");
	if (!f) { perror(path); return 1; }
	struct { unsigned long s, e; } r[4096];
	int n = 0;
	while (fgets(line, sizeof line, f) && n < 4096) {
		unsigned long s, e, off, ino; char perm[8], dev[16];
		if (sscanf(line, "%lx-%lx %7s %lx %15s %lu", &s, &e, perm, &off, dev, &ino) != 6) continue;
		if (perm[0] != 'r' || perm[1] != 'w' || perm[3] != 'p' || ino != 0) continue;
		if (strstr(line, "[vvar") || strstr(line, "[vdso") || strstr(line, "[vsyscall")) continue;
		r[n].s = s; r[n].e = e; n++;
	}
	fclose(f);
	char *buf = aligned_alloc(4096, CHUNK);
	memset(buf, 0, CHUNK); /* fault the buffer in before timing */
	int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) { perror(out); return 1; }
	double t0 = now();
	unsigned long total = 0;
	for (int i = 0; i < n; i++) {
		for (unsigned long a = r[i].s; a < r[i].e; a += CHUNK) {
			size_t len = r[i].e - a < CHUNK ? r[i].e - a : CHUNK;
			struct iovec l = { buf, len }, rv = { (void *)a, len };
			ssize_t got = process_vm_readv(pid, &l, 1, &rv, 1, 0);
			if (got <= 0) continue;
			wfull(fd, buf, (size_t)got);
			total += (unsigned long)got;
		}
	}
	close(fd);
	printf("%lu %.6f\n", total, now() - t0);
	return 0;
}

static int zsplice(int pid, const char *out) {
	char path[64], line[512];
	snprintf(path, sizeof path, "/proc/%d/maps", pid);
	FILE *f = fopen(path, "r");
	if (!f) { perror(path); return 1; }
	unsigned long total = 0, cap = 0;
	char *mem = NULL;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e, off, ino; char perm[8], dev[16];
		if (sscanf(line, "%lx-%lx %7s %lx %15s %lu", &s, &e, perm, &off, dev, &ino) != 6) continue;
		if (perm[0] != 'r' || perm[1] != 'w' || perm[3] != 'p' || ino != 0) continue;
		if (strstr(line, "[vvar") || strstr(line, "[vdso") || strstr(line, "[vsyscall")) continue;
		if (total + (e - s) > cap) {
			unsigned long ncap = (total + (e - s)) * 2;
			char *n = mmap(NULL, ncap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (n == MAP_FAILED) { perror("mmap"); return 1; }
			if (mem) { memcpy(n, mem, total); munmap(mem, cap); }
			mem = n; cap = ncap;
		}
		struct iovec l = { mem + total, e - s }, rv = { (void *)s, e - s };
		ssize_t got = process_vm_readv(pid, &l, 1, &rv, 1, 0);
		if (got > 0) total += (unsigned long)got;
	}
	fclose(f);
	int p[2];
	if (pipe(p)) return 1;
	size_t psz = (size_t)fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
	int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) { perror(out); return 1; }
	double t0 = now();
	for (unsigned long a = 0; a < total; a += psz) {
		size_t len = total - a < psz ? total - a : psz;
		struct iovec v = { mem + a, len };
		size_t in = 0;
		while (in < len) {
			ssize_t r = vmsplice(p[1], &v, 1, SPLICE_F_GIFT);
			if (r <= 0) { perror("vmsplice"); return 1; }
			v.iov_base = (char *)v.iov_base + r; v.iov_len -= (size_t)r; in += (size_t)r;
		}
		while (in) {
			ssize_t r = splice(p[0], NULL, fd, NULL, in, SPLICE_F_MOVE);
			if (r <= 0) { perror("splice"); return 1; }
			in -= (size_t)r;
		}
	}
	close(fd);
	printf("%lu %.6f\n", total, now() - t0);
	return 0;
}

static int restore(const char *in) {
	int fd = open(in, O_RDONLY);
	if (fd < 0) { perror(in); return 1; }
	struct stat st;
	fstat(fd, &st);
	size_t size = (size_t)st.st_size;
	int pfd[2];
	if (pipe(pfd)) return 1;
	pid_t child = fork();
	if (child == 0) {
		void *m = mmap(NULL, size ? size : 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (write(pfd[1], &m, sizeof m) != sizeof m) _exit(1);
		pause();
		_exit(0);
	}
	char *dst;
	if (read(pfd[0], &dst, sizeof dst) != sizeof dst) return 1;
	char *buf = aligned_alloc(4096, CHUNK);
	memset(buf, 0, CHUNK);
	double t0 = now();
	size_t done = 0;
	while (done < size) {
		ssize_t n = read(fd, buf, CHUNK);
		if (n <= 0) break;
		struct iovec l = { buf, (size_t)n }, rv = { dst + done, (size_t)n };
		if (process_vm_writev(child, &l, 1, &rv, 1, 0) != n) { perror("process_vm_writev"); break; }
		done += (size_t)n;
	}
	double t = now() - t0;
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	printf("%zu %.6f\n", done, t);
	return 0;
}

static int warm(long mib) {
	size_t n = (size_t)mib << 20;
	double t0 = now();
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p == MAP_FAILED) { perror("mmap"); return 1; }
	printf("%zu %.6f\n", n, now() - t0);
	return 0;
}

int main(int argc, char **argv) {
	if (argc == 4 && !strcmp(argv[1], "dump")) return dump(atoi(argv[2]), argv[3]);
	if (argc == 4 && !strcmp(argv[1], "splice")) return zsplice(atoi(argv[2]), argv[3]);
	if (argc == 3 && !strcmp(argv[1], "restore")) return restore(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "warm") && atol(argv[2]) > 0) return warm(atol(argv[2]));
	fprintf(stderr, "usage: bench-floor dump PID OUT | splice PID OUT | restore IN | warm MIB\n");
	return 2;
}
