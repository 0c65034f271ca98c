/*
 * sysvshm: SysV shared memory segments attached by a parent and its child (run it in an IPC
 * namespace of its own, `unshare --ipc`, for CRIU to dump them).
 *  A  5 pages + 100 bytes, IPC_PRIVATE, mode 0600, marked IPC_RMID: a pattern in pages 0, 1, 3 and
 *     in the 100 tail bytes, page 2 never touched, page 4 written then zeroed; parent and child rw.
 *  B  key 0x5e<pid>, mode 0640, owner 4242:4243 (IPC_SET), 2 pages: the child attached it rw and
 *     wrote a pattern, the parent attached it SHM_RDONLY (maps r--s).
 *  C  3 pages, the parent's alone, attached rw, then its middle page mprotect()ed to PROT_READ
 *     (3 VMAs: the kernel counts 3 attaches).
 * With the argument `nodest` A is not marked IPC_RMID (CRIU 4.2's restore loses that mark).
 * At go: each segment's key, size, mode, owner and attach count (IPC_STAT on the ids it had:
 * same ids), A's and B's contents (hash), C's first page; the parent writes A and the child sees
 * it, the child writes B and the parent sees it through its read-only mapping (still shared);
 * B stays r--s in the parent; C's parts are rw-s r--s rw-s and mprotect(PROT_WRITE) of the middle
 * works (the segment was attached writable).
 * --selftest-corrupt: the parent changes a byte of A's page 3 before go.
 */
#include "wl.h"
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define PG 4096
#define ASZ (5 * PG + 100)

/* the perms column of the /proc/self/maps line that starts at addr ("" if none) */
static void perms_at(const void *addr, char out[5]) {
	out[0] = 0;
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f) return;
	char line[512];
	unsigned long want = (unsigned long)addr;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e;
		char p[5];
		if (sscanf(line, "%lx-%lx %4s", &s, &e, p) == 3 && s == want) { memcpy(out, p, 5); break; }
	}
	fclose(f);
}

static int stat_ok(const char *name, int id, key_t key, size_t size, unsigned mode, uid_t uid, gid_t gid, unsigned long nattch) {
	struct shmid_ds ds;
	if (shmctl(id, IPC_STAT, &ds) != 0) { wl_failf("%s: IPC_STAT of id %d: %s", name, id, strerror(errno)); return 0; }
	int ok = 1;
#define SAME(what, got, want, fmt) if ((got) != (want)) { wl_failf("%s: " what " " fmt ", want " fmt, name, got, want); ok = 0; }
	SAME("key", (unsigned)ds.shm_perm.__key, (unsigned)key, "0x%x");
	SAME("size", (unsigned long)ds.shm_segsz, (unsigned long)size, "%lu");
	SAME("mode", (unsigned)(ds.shm_perm.mode & 07777), mode, "0%o");
	SAME("uid", (unsigned)ds.shm_perm.uid, (unsigned)uid, "%u");
	SAME("gid", (unsigned)ds.shm_perm.gid, (unsigned)gid, "%u");
	SAME("nattch", (unsigned long)ds.shm_nattch, nattch, "%lu");
#undef SAME
	wl_detail("%s: id=%d key=0x%x size=%lu mode=0%o nattch=%lu", name, id, (unsigned)ds.shm_perm.__key, (unsigned long)ds.shm_segsz,
	          (unsigned)(ds.shm_perm.mode & 07777), (unsigned long)ds.shm_nattch);
	return ok;
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	key_t BKEY = (key_t)(0x5e000000 | (getpid() & 0xffffff));
	int a = shmget(IPC_PRIVATE, ASZ, IPC_CREAT | 0600);
	int b = shmget(BKEY, 2 * PG, IPC_CREAT | IPC_EXCL | 0640);
	int c = shmget(IPC_PRIVATE, 3 * PG, IPC_CREAT | 0600);
	if (a < 0 || b < 0 || c < 0) { perror("shmget"); return 2; }
	struct shmid_ds ds;
	if (shmctl(b, IPC_STAT, &ds)) return 2;
	ds.shm_perm.uid = 4242;
	ds.shm_perm.gid = 4243;
	if (shmctl(b, IPC_SET, &ds)) { perror("IPC_SET"); return 2; }
	volatile uint32_t *A = shmat(a, NULL, 0);
	unsigned char *C = shmat(c, NULL, 0);
	if (A == (void *)-1 || C == (void *)-1) return 2;
	int dest = !(wl_arg(argc, argv, 0) && strcmp(wl_arg(argc, argv, 0), "nodest") == 0);
	if (dest) shmctl(a, IPC_RMID, NULL); /* gone once nobody is attached */
	unsigned char *ab = (unsigned char *)A;
	wl_fill(ab + 64, PG - 64, 11); /* page 0 after 16 control words */
	wl_fill(ab + PG, PG, 12);
	wl_fill(ab + 3 * PG, PG, 13);
	wl_fill(ab + 5 * PG, 100, 14);
	memset(ab + 4 * PG, 0x5a, PG);
	memset(ab + 4 * PG, 0, PG);
	wl_fill(C, PG, 15);
	wl_fill(C + 2 * PG, PG, 16);
	if (mprotect(C + PG, PG, PROT_READ)) { perror("mprotect"); return 2; }
	uint64_t ha = wl_hash(ab + 64, ASZ - 64), hc = wl_hash(C, PG);

	pid_t child = fork();
	if (child == 0) {
		shmdt(C);
		volatile uint32_t *B = shmat(b, NULL, 0);
		if (B == (void *)-1) _exit(2);
		wl_fill((void *)(B + 16), 2 * PG - 64, 21);
		B[0] = 1; /* pattern written */
		while (A[0] != 1) wl_sleep_ms(2);
		/* after go: A as dumped plus the parent's word, then an answer through B */
		uint32_t ok = wl_hash(ab + 64, ASZ - 64) == ha && A[1] == 0xA11CE;
		B[1] = 0xB0B;
		A[2] = ok ? 2 : 3;
		_exit(ok ? 0 : 3);
	}
	volatile uint32_t *B = shmat(b, NULL, SHM_RDONLY);
	if (B == (void *)-1) return 2;
	while (B[0] != 1) wl_sleep_ms(2);
	uint64_t hb = wl_hash((void *)(B + 16), 2 * PG - 64);
	wl_ready();
	if (wl_corrupting("", "")) ab[3 * PG + 7] ^= 1;
	while (!wl_go()) wl_sleep_ms(5);
	wl_check_ids();

	stat_ok("A", a, IPC_PRIVATE, ASZ, dest ? 01600 /* SHM_DEST */ : 0600, 0, 0, 2);
	stat_ok("B", b, BKEY, 2 * PG, 0640, 4242, 4243, 2);
	stat_ok("C", c, IPC_PRIVATE, 3 * PG, 0600, 0, 0, 3);
	WL_CHECK(wl_hash(ab + 64, ASZ - 64) == ha, "A's contents changed");
	WL_CHECK(wl_hash((void *)(B + 16), 2 * PG - 64) == hb, "B's contents changed");
	WL_CHECK(wl_hash(C, PG) == hc, "C's first page changed");
	char p[5];
	perms_at((void *)B, p);
	WL_CHECK(strcmp(p, "r--s") == 0, "B is mapped %s in the parent, want r--s", p);
	perms_at(C, p);
	WL_CHECK(strcmp(p, "rw-s") == 0, "C's first page is %s, want rw-s", p);
	perms_at(C + PG, p);
	WL_CHECK(strcmp(p, "r--s") == 0, "C's middle page is %s, want r--s", p);
	perms_at(C + 2 * PG, p);
	WL_CHECK(strcmp(p, "rw-s") == 0, "C's last page is %s, want rw-s", p);
	WL_CHECK(mprotect(C + PG, PG, PROT_READ | PROT_WRITE) == 0, "mprotect(PROT_WRITE) of C's middle page: %s (attached read-only?)", strerror(errno));
	C[PG + 1] = 7;
	/* the child: sees the parent's word in A, answers in B */
	A[1] = 0xA11CE;
	A[0] = 1;
	int waited = 0;
	while (A[2] == 0 && waited < 5000) { wl_sleep_ms(5); waited += 5; }
	WL_CHECK(A[2] == 2, "the child saw A changed or not shared (answer %u)", A[2]);
	WL_CHECK(B[1] == 0xB0B, "the child's write to B not seen (0x%x)", B[1]);
	int st = 0;
	if (A[2] == 0) kill(child, SIGKILL);
	waitpid(child, &st, 0);
	WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status 0x%x", st);
	shmctl(a, IPC_RMID, NULL);
	shmctl(b, IPC_RMID, NULL);
	shmctl(c, IPC_RMID, NULL);
	wl_finish();
}
