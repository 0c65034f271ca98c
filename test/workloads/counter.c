/*
 * counter DIR [--selftest-corrupt[=heap|tls|brk|zero|anon|guard|stack|counter]]
 *
 * Single-threaded memory workload. Setup:
 *   - a global counter (data segment) and a counter on main's stack, incremented in a loop;
 *   - a 4 MiB malloc'ed heap filled with a seeded pattern, its hash recorded;
 *   - a __thread variable (exercises the fs base) holding a value derived from the pid;
 *   - the program break grown with sbrk by 256 KiB, filled with a pattern;
 *   - calloc(64 MiB) with one word written in every 16th page (the rest must stay zero);
 *   - a 1 MiB private anonymous mmap followed by a PROT_NONE guard page;
 *   - a 4 KiB pattern on main's stack.
 * Wake-up: DIR/go (polled every 10 ms). At go it checks all of the above (contents,
 * addresses, break position, that the guard page still faults, /proc/self/maps
 * permissions), then that the counter and the monotonic clock keep moving for 50 ms more.
 */
#include "wl.h"
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>

#define HEAP_SIZE (4u << 20)
#define BRK_SIZE (256u << 10)
#define ZERO_SIZE (64u << 20)
#define ANON_SIZE (1u << 20)
#define PAGE 4096u

static volatile uint64_t counter;
static __thread uint64_t tls_value;
static sigjmp_buf segv_jmp;
static volatile void *segv_addr;

static void on_segv(int sig, siginfo_t *si, void *uc) {
	(void)sig;
	(void)uc;
	segv_addr = si->si_addr;
	siglongjmp(segv_jmp, 1);
}

/* Permissions of the mapping containing ADDR, from /proc/self/maps ("rw-p"...), or "". */
static void maps_perms(uintptr_t addr, char out[8]) {
	out[0] = 0;
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f) return;
	char line[512];
	while (fgets(line, sizeof line, f)) {
		unsigned long lo, hi;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3) continue;
		if (addr >= lo && addr < hi) {
			memcpy(out, perms, 5);
			out[4] = 0;
			break;
		}
	}
	fclose(f);
}

static void work(volatile uint64_t *stack_counter) {
	for (int i = 0; i < 20000; i++) {
		counter++;
		(*stack_counter)++;
	}
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	const uint64_t seed = 0xC0FFEE00ULL ^ (uint64_t)wl_pid;
	volatile uint64_t stack_counter = 0;
	unsigned char stack_pat[4096];
	wl_fill(stack_pat, sizeof stack_pat, seed + 7);

	unsigned char *heap = malloc(HEAP_SIZE);
	if (!heap) return 2;
	wl_fill(heap, HEAP_SIZE, seed + 1);
	const uint64_t heap_hash = wl_hash(heap, HEAP_SIZE);

	tls_value = seed * 31 + 5;
	uint64_t *const tls_addr = &tls_value;
	const uint64_t tls_expect = tls_value;

	unsigned char *brk_area = sbrk(BRK_SIZE);
	if (brk_area == (void *)-1) return 2;
	wl_fill(brk_area, BRK_SIZE, seed + 2);
	void *const brk_end = sbrk(0);

	uint64_t *zero = calloc(1, ZERO_SIZE);
	if (!zero) return 2;
	for (size_t pg = 0; pg < ZERO_SIZE / PAGE; pg += 16) zero[pg * (PAGE / 8) + (pg % 7)] = pg * 2654435761u + 1;

	unsigned char *anon = mmap(NULL, ANON_SIZE + PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (anon == MAP_FAILED) return 2;
	unsigned char *guard = anon + ANON_SIZE;
	if (mprotect(guard, PAGE, PROT_NONE) != 0) return 2;
	wl_fill(anon, ANON_SIZE, seed + 3);

	struct sigaction sa = {0};
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);

	work(&stack_counter);
	const double t_ready = wl_now(CLOCK_MONOTONIC);
	wl_ready();

	/* A broken restore, simulated. */
	if (wl_corrupting("heap", "heap")) heap[HEAP_SIZE / 2 + 3] ^= 0x40;
	if (wl_corrupting("tls", "heap")) tls_value++;
	if (wl_corrupting("brk", "heap")) brk_area[BRK_SIZE - 1] ^= 1;
	if (wl_corrupting("zero", "heap")) zero[(ZERO_SIZE / 8) - 3] = 1;
	if (wl_corrupting("anon", "heap")) anon[12345] ^= 0x80;
	if (wl_corrupting("guard", "heap")) mprotect(guard, PAGE, PROT_READ);
	if (wl_corrupting("stack", "heap")) stack_pat[100] ^= 2;

	uint64_t counter_at_ready = counter;
	uint64_t polls = 0;
	do { /* one round at least, however soon go comes */
		work(&stack_counter);
		polls++;
		wl_sleep_ms(10);
	} while (!wl_go());
	if (wl_corrupting("counter", "heap")) counter = 0, stack_counter = 0;

	/* --- verification --- */
	wl_check_ids();
	const uint64_t counter_at_go = counter, stack_at_go = stack_counter;
	WL_CHECK(counter_at_go > counter_at_ready, "counter did not grow: ready=%llu go=%llu",
	         (unsigned long long)counter_at_ready, (unsigned long long)counter_at_go);
	WL_CHECK(stack_at_go == counter_at_go, "stack counter %llu != global counter %llu",
	         (unsigned long long)stack_at_go, (unsigned long long)counter_at_go);
	wl_detail("counter_at_ready=%llu", (unsigned long long)counter_at_ready);
	wl_detail("counter_at_go=%llu", (unsigned long long)counter_at_go);
	wl_detail("polls=%llu", (unsigned long long)polls);

	size_t bad = wl_verify_fill(stack_pat, sizeof stack_pat, seed + 7);
	WL_CHECK(bad == (size_t)-1, "stack pattern differs at offset %zu", bad);

	uint64_t h = wl_hash(heap, HEAP_SIZE);
	bad = wl_verify_fill(heap, HEAP_SIZE, seed + 1);
	WL_CHECK(h == heap_hash && bad == (size_t)-1, "heap differs: hash %016llx expected %016llx, first bad offset %zd",
	         (unsigned long long)h, (unsigned long long)heap_hash, (ssize_t)bad);
	wl_detail("heap=%p hash=%016llx", (void *)heap, (unsigned long long)h);

	WL_CHECK(&tls_value == tls_addr, "TLS variable moved: %p -> %p", (void *)tls_addr, (void *)&tls_value);
	WL_CHECK(tls_value == tls_expect, "TLS value %llu expected %llu", (unsigned long long)tls_value,
	         (unsigned long long)tls_expect);

	void *now_brk = sbrk(0);
	WL_CHECK(now_brk == brk_end, "program break moved: %p -> %p", brk_end, now_brk);
	bad = wl_verify_fill(brk_area, BRK_SIZE, seed + 2);
	WL_CHECK(bad == (size_t)-1, "sbrk area differs at offset %zd", (ssize_t)bad);
	wl_detail("brk=%p", now_brk);

	size_t zero_bad = 0, first_zero_bad = (size_t)-1;
	for (size_t pg = 0; pg < ZERO_SIZE / PAGE; pg++) {
		const uint64_t *w = zero + pg * (PAGE / 8);
		for (size_t i = 0; i < PAGE / 8; i++) {
			uint64_t want = (pg % 16 == 0 && i == pg % 7) ? pg * 2654435761u + 1 : 0;
			if (w[i] != want) {
				if (zero_bad++ == 0) first_zero_bad = pg * PAGE + i * 8;
			}
		}
	}
	WL_CHECK(zero_bad == 0, "zero region: %zu bad words, first at offset %zd", zero_bad, (ssize_t)first_zero_bad);

	bad = wl_verify_fill(anon, ANON_SIZE, seed + 3);
	WL_CHECK(bad == (size_t)-1, "anonymous mapping differs at offset %zd", (ssize_t)bad);
	char perms[8];
	maps_perms((uintptr_t)anon, perms);
	WL_CHECK(strcmp(perms, "rw-p") == 0, "anonymous mapping perms '%s' expected rw-p", perms);
	maps_perms((uintptr_t)guard, perms);
	WL_CHECK(strcmp(perms, "---p") == 0, "guard page perms '%s' expected ---p", perms);
	segv_addr = NULL;
	if (sigsetjmp(segv_jmp, 1) == 0) {
		volatile unsigned char c = *(volatile unsigned char *)guard;
		(void)c;
		wl_failf("reading the PROT_NONE guard page at %p did not fault", (void *)guard);
	} else {
		WL_CHECK(segv_addr == guard, "guard fault at %p expected %p", (void *)segv_addr, (void *)guard);
	}

	/* The loop continues after go: counter and time move on. */
	const double t_go = wl_now(CLOCK_MONOTONIC);
	WL_CHECK(t_go > t_ready, "monotonic clock went back: ready=%.6f go=%.6f", t_ready, t_go);
	for (int i = 0; i < 5; i++) {
		work(&stack_counter);
		wl_sleep_ms(10);
	}
	const double t_end = wl_now(CLOCK_MONOTONIC);
	WL_CHECK(counter > counter_at_go, "counter stuck after go at %llu", (unsigned long long)counter);
	WL_CHECK(t_end - t_go >= 0.045, "slept %.3f s after go, expected >= 0.045", t_end - t_go);
	wl_detail("counter_final=%llu", (unsigned long long)counter);
	wl_finish();
}
