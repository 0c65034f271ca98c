/*
 * regs DIR [--selftest-corrupt[=gpr|vec|mxcsr]]
 *
 * A process whose threads notice any change of their registers or of an interrupted syscall,
 * for dumps killed half-way (the target must run on as if nothing happened):
 *  - main thread: in turns, a burst of an assembly loop holding patterns in rbx, rbp, r12-r15,
 *    xmm0-xmm14 (ymm0-ymm14 with AVX: upper halves too), a non-default MXCSR and an x87 value,
 *    checking them all on every turn (no call, no syscall inside), then a blocking read() of a
 *    pipe a helper thread feeds one byte every 2 ms (an interrupted read must be restarted:
 *    it returns that one byte, never EINTR);
 *  - a second thread runs the same assembly loop without pause;
 *  - a third sleeps in nanosleep(2 ms, &rem) (restarted with what is left: never EINTR) and
 *    feeds the pipe.
 * Any difference is written to DIR/result at once ("FAIL: ...") and the process exits 1. At go
 * (polled by a fourth thread): every loop made progress since ready and again since go: PASS.
 * --selftest-corrupt: the main loop changes one of its own registers (gpr: r13, vec: ymm7's
 * upper half or xmm7, mxcsr: the rounding mode), as a tracer dying mid-injection used to.
 */
#include "wl.h"
#include <pthread.h>
#include <cpuid.h>

static volatile uint64_t spins[2];      /* assembly loop turns: main thread, second thread */
static volatile uint64_t reads, sleeps; /* completed read()s of the main thread, nanosleeps */
static volatile int stop;
static int pfd[2];
static int avx;
static int corrupt_mode; /* 0 none, 1 gpr, 2 vec, 3 mxcsr */

/* 16 vectors of 32 bytes: the patterns of ymm0..ymm14 (xmm: the low 16 bytes) */
static uint8_t pat[16][32] __attribute__((aligned(32)));

static __attribute__((noreturn)) void failnow(const char *what, long code) {
	wl_failf("%s (code %ld)", what, code);
	wl_finish();
}

/*
 * ITERS turns of the checking loop; returns 0, or which check failed: 1..6 the general registers
 * (rbx rbp r12 r13 r14 r15), 10+i vector register i, 30 MXCSR, 31 x87.
 * CORRUPT (self-test): after the first turn, damage that register class once.
 */
static long spin(volatile uint64_t *counter, long iters, int corrupt) {
	/* fixed registers: rbx, rbp and r12-r15 are the patterns' (saved on the stack meanwhile) */
	register long bad __asm__("rax");
	register volatile uint64_t *cnt __asm__("rdi") = counter;
	register uint8_t(*pp)[32] __asm__("rsi") = pat;
	register long av __asm__("rdx") = avx;
	register long it __asm__("rcx") = iters;
	register long cor __asm__("r8") = corrupt;
	__asm__ volatile(
		"sub $128, %%rsp\n\t" /* the compiler's red zone */
		"push %%rbx\n\tpush %%rbp\n\tpush %%r12\n\tpush %%r13\n\tpush %%r14\n\tpush %%r15\n\t"
		"sub $8, %%rsp\n\t"
		"stmxcsr (%%rsp)\n\t"
		"push (%%rsp)\n\t"              /* 0(rsp) old mxcsr copy, 8(rsp) scratch */
		"movl $0x7f80, 8(%%rsp)\n\t"    /* round toward zero, all exceptions masked */
		"ldmxcsr 8(%%rsp)\n\t"
		"fldpi\n\t"
		"movabs $0x1111111111111111, %%rbx\n\t"
		"movabs $0x2222222222222222, %%rbp\n\t"
		"movabs $0x3333333333333333, %%r12\n\t"
		"movabs $0x4444444444444444, %%r13\n\t"
		"movabs $0x5555555555555555, %%r14\n\t"
		"movabs $0x6666666666666666, %%r15\n\t"
		/* load the vector patterns */
		"test %[avx], %[avx]\n\tjz 20f\n\t"
		"vmovdqa 0(%[pat]), %%ymm0\n\tvmovdqa 32(%[pat]), %%ymm1\n\tvmovdqa 64(%[pat]), %%ymm2\n\t"
		"vmovdqa 96(%[pat]), %%ymm3\n\tvmovdqa 128(%[pat]), %%ymm4\n\tvmovdqa 160(%[pat]), %%ymm5\n\t"
		"vmovdqa 192(%[pat]), %%ymm6\n\tvmovdqa 224(%[pat]), %%ymm7\n\tvmovdqa 256(%[pat]), %%ymm8\n\t"
		"vmovdqa 288(%[pat]), %%ymm9\n\tvmovdqa 320(%[pat]), %%ymm10\n\tvmovdqa 352(%[pat]), %%ymm11\n\t"
		"vmovdqa 384(%[pat]), %%ymm12\n\tvmovdqa 416(%[pat]), %%ymm13\n\tvmovdqa 448(%[pat]), %%ymm14\n\t"
		"jmp 21f\n"
		"20:\n\t"
		"movdqa 0(%[pat]), %%xmm0\n\tmovdqa 32(%[pat]), %%xmm1\n\tmovdqa 64(%[pat]), %%xmm2\n\t"
		"movdqa 96(%[pat]), %%xmm3\n\tmovdqa 128(%[pat]), %%xmm4\n\tmovdqa 160(%[pat]), %%xmm5\n\t"
		"movdqa 192(%[pat]), %%xmm6\n\tmovdqa 224(%[pat]), %%xmm7\n\tmovdqa 256(%[pat]), %%xmm8\n\t"
		"movdqa 288(%[pat]), %%xmm9\n\tmovdqa 320(%[pat]), %%xmm10\n\tmovdqa 352(%[pat]), %%xmm11\n\t"
		"movdqa 384(%[pat]), %%xmm12\n\tmovdqa 416(%[pat]), %%xmm13\n\tmovdqa 448(%[pat]), %%xmm14\n"
		"21:\n\t"
		/* the loop: count, then check everything */
		"1:\n\t"
		"incq (%[cnt])\n\t"
		"movabs $0x1111111111111111, %%rax\n\tcmp %%rax, %%rbx\n\tmov $1, %%eax\n\tjne 8f\n\t"
		"movabs $0x2222222222222222, %%rax\n\tcmp %%rax, %%rbp\n\tmov $2, %%eax\n\tjne 8f\n\t"
		"movabs $0x3333333333333333, %%rax\n\tcmp %%rax, %%r12\n\tmov $3, %%eax\n\tjne 8f\n\t"
		"movabs $0x4444444444444444, %%rax\n\tcmp %%rax, %%r13\n\tmov $4, %%eax\n\tjne 8f\n\t"
		"movabs $0x5555555555555555, %%rax\n\tcmp %%rax, %%r14\n\tmov $5, %%eax\n\tjne 8f\n\t"
		"movabs $0x6666666666666666, %%rax\n\tcmp %%rax, %%r15\n\tmov $6, %%eax\n\tjne 8f\n\t"
		"stmxcsr 8(%%rsp)\n\tcmpl $0x7f80, 8(%%rsp)\n\tmov $30, %%eax\n\tjne 8f\n\t"
		/* x87: st0 still pi (compare with a fresh pi; fcomip pops nothing of ours) */
		"fldpi\n\tfucomip %%st(1), %%st\n\tmov $31, %%eax\n\tjne 8f\n\tjp 8f\n\t"
		"test %[avx], %[avx]\n\tjz 30f\n\t"
#define VCHK(i, off)                                                          \
		"vpxor " #off "(%[pat]), %%ymm" #i ", %%ymm15\n\t"                    \
		"vptest %%ymm15, %%ymm15\n\tmov $" #i "+10, %%eax\n\tjnz 8f\n\t"
		VCHK(0, 0) VCHK(1, 32) VCHK(2, 64) VCHK(3, 96) VCHK(4, 128) VCHK(5, 160) VCHK(6, 192)
		VCHK(7, 224) VCHK(8, 256) VCHK(9, 288) VCHK(10, 320) VCHK(11, 352) VCHK(12, 384)
		VCHK(13, 416) VCHK(14, 448)
		"jmp 31f\n"
		"30:\n\t"
#define XCHK(i, off)                                                          \
		"movdqa %%xmm" #i ", %%xmm15\n\tpcmpeqb " #off "(%[pat]), %%xmm15\n\t" \
		"pmovmskb %%xmm15, %%eax\n\tcmp $0xffff, %%eax\n\tmov $" #i "+10, %%eax\n\tjne 8f\n\t"
		XCHK(0, 0) XCHK(1, 32) XCHK(2, 64) XCHK(3, 96) XCHK(4, 128) XCHK(5, 160) XCHK(6, 192)
		XCHK(7, 224) XCHK(8, 256) XCHK(9, 288) XCHK(10, 320) XCHK(11, 352) XCHK(12, 384)
		XCHK(13, 416) XCHK(14, 448)
		"31:\n\t"
		/* the self-test's damage, once, after the first turn */
		"test %[corrupt], %[corrupt]\n\tjz 40f\n\t"
		"cmp $1, %[corrupt]\n\tjne 41f\n\tinc %%r13\n\tjmp 49f\n"
		"41:\n\tcmp $2, %[corrupt]\n\tjne 42f\n\t"
		"test %[avx], %[avx]\n\tjz 43f\n\tvpcmpeqb %%ymm7, %%ymm7, %%ymm7\n\tjmp 49f\n"
		"43:\n\tpcmpeqb %%xmm7, %%xmm7\n\tjmp 49f\n"
		"42:\n\tmovl $0x1f80, 8(%%rsp)\n\tldmxcsr 8(%%rsp)\n"
		"49:\n\txor %[corrupt], %[corrupt]\n"
		"40:\n\t"
		"dec %[iters]\n\tjnz 1b\n\t"
		"xor %%eax, %%eax\n"
		"8:\n\t"
		"fstp %%st(0)\n\t"
		"ldmxcsr (%%rsp)\n\t"
		"add $16, %%rsp\n\t"
		"pop %%r15\n\tpop %%r14\n\tpop %%r13\n\tpop %%r12\n\tpop %%rbp\n\tpop %%rbx\n\t"
		"add $128, %%rsp\n\t"
		: "=r"(bad), [iters] "+r"(it), [corrupt] "+r"(cor)
		: [cnt] "r"(cnt), [pat] "r"(pp), [avx] "r"(av)
		: "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
		  "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "st");
	if (avx) __asm__ volatile("vzeroupper");
	return bad;
}

static const char *what(long code) {
	static char b[32];
	static const char *gpr[] = {"", "rbx", "rbp", "r12", "r13", "r14", "r15"};
	if (code >= 1 && code <= 6) return gpr[code];
	if (code == 30) return "mxcsr";
	if (code == 31) return "x87 st0";
	snprintf(b, sizeof b, "%s%ld", avx ? "ymm" : "xmm", code - 10);
	return b;
}

static void *spinner(void *arg) {
	(void)arg;
	while (!stop) {
		long bad = spin(&spins[1], 1 << 16, 0);
		if (bad) failnow(what(bad), bad);
	}
	return NULL;
}

static void *sleeper(void *arg) {
	(void)arg;
	while (!stop) {
		struct timespec req = {0, 2000000}, rem = {0, 0};
		int r = (int)syscall(SYS_nanosleep, &req, &rem);
		if (r != 0) failnow("nanosleep did not sleep its time", errno);
		sleeps++;
		if (write(pfd[1], "x", 1) != 1) failnow("write to the pipe", errno);
	}
	return NULL;
}

static void *poller(void *arg) {
	(void)arg;
	while (!wl_go()) wl_sleep_ms(10);
	uint64_t s0 = spins[0], s1 = spins[1], r0 = reads, n0 = sleeps;
	wl_sleep_ms(50);
	WL_CHECK(spins[0] > s0, "main thread's loop stopped at %llu", (unsigned long long)s0);
	WL_CHECK(spins[1] > s1, "second thread's loop stopped at %llu", (unsigned long long)s1);
	WL_CHECK(reads > r0, "reads stopped at %llu", (unsigned long long)r0);
	WL_CHECK(sleeps > n0, "sleeps stopped at %llu", (unsigned long long)n0);
	wl_detail("spins=%llu,%llu reads=%llu sleeps=%llu avx=%d", (unsigned long long)spins[0], (unsigned long long)spins[1],
	          (unsigned long long)reads, (unsigned long long)sleeps, avx);
	WL_CHECK(getpid() == wl_pid, "pid changed: %d -> %d", (int)wl_pid, (int)getpid());
	wl_detail("pid=%d", (int)getpid());
	stop = 1;
	wl_finish();
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	unsigned a, b, c, d;
	if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_AVX) && (c & bit_OSXSAVE)) {
		unsigned lo, hi;
		__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
		avx = (lo & 6) == 6;
	}
	uint64_t s = 0x7e95ULL;
	for (int i = 0; i < 16; i++)
		for (int j = 0; j < 32; j += 8) { uint64_t v = wl_rng(&s); memcpy(&pat[i][j], &v, 8); }
	if (wl_corrupt) corrupt_mode = wl_corrupting("vec", "gpr") ? 2 : wl_corrupting("mxcsr", "gpr") ? 3 : 1;
	if (pipe(pfd) != 0) return 2;
	pthread_t t;
	if (pthread_create(&t, NULL, spinner, NULL) || pthread_create(&t, NULL, sleeper, NULL) || pthread_create(&t, NULL, poller, NULL)) return 2;
	/* every loop has turned once before ready */
	long bad = spin(&spins[0], 1000, 0);
	if (bad) failnow(what(bad), bad);
	while (!spins[1] || !sleeps) wl_sleep_ms(1);
	wl_ready();
	int corrupt = corrupt_mode;
	for (;;) {
		bad = spin(&spins[0], 1 << 15, corrupt);
		corrupt = 0;
		if (bad) failnow(what(bad), bad);
		char ch;
		ssize_t n = read(pfd[0], &ch, 1);
		if (n != 1) failnow(n < 0 ? "read of the pipe failed (not restarted)" : "read of the pipe returned nothing", n < 0 ? errno : n);
		reads++;
	}
}
