/*
 * ipcobjects: SysV objects of the tree's own IPC namespace that no process holds (run it in an
 * IPC namespace of its own, `unshare --ipc`): a parent and a child, and
 *  Q   a message queue, key 0x51c0001, mode 0640, owner 4242:4243, creator 1001:1002 (made with
 *      those effective ids), qbytes 5000, its id not the first (a queue made and removed before
 *      it), holding 5 messages of types 5, 1, 7, 5, 3 and 0, 1, 100,
 *      4000, 17 bytes (a pattern each);
 *  E   an empty queue, IPC_PRIVATE, mode 0600;
 *  S   a semaphore set, key 0x5e0001, mode 0660, owner 4242:4243, creator 1001:1002, values
 *      0 1 32767 42;
 *  T   a semaphore set, IPC_PRIVATE, mode 0600, one semaphore at 9;
 *  L   a segment, key 0x5a0001, 3 pages + 50 bytes, mode 0604, owner 4242:4243, creator
 *      1001:1002, a pattern in pages 0 and 2 and the tail, page 1 zero: attached by nobody;
 *  B   a segment, 1 page, IPC_PRIVATE, attached by the child alone (a pattern).
 * Arguments: `criu` (CRIU 4.2 restores: it leaves a queue's qbytes at the namespace's msgmnb and
 * makes its objects as root, so Q keeps the default qbytes and every creator is 0:0); `locked`
 * (also a segment locked in memory, SHM_LOCK, attached by nobody: the dump refuses it); `waiter`
 * (a process outside the tree, double-forked, pid in DIR/ext-pid, waits for T to be zero: the
 * dump refuses it).
 * At go: each object's key, mode, owner, creator (IPC_STAT on the ids it had: same ids); Q's
 * qbytes, count and bytes, then its messages taken one by one (type, size, bytes, order) and the
 * queue empty after them; E empty; S's and T's values (GETALL); L's size, attach count 0 and
 * contents; B's contents through the child.
 * --selftest-corrupt: the parent takes Q's first message after ready.
 */
#include "wl.h"
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define PG 4096
#define LSZ (3 * PG + 50)
#define NMSG 5
static const long mtypes[NMSG] = {5, 1, 7, 5, 3};
static const size_t msizes[NMSG] = {0, 1, 100, 4000, 17};
static const unsigned short svals[4] = {0, 1, 32767, 42};

union semun {
	int val;
	struct semid_ds *buf;
	unsigned short *array;
};

static int creator_cuid = 1001, creator_cgid = 1002;

/* run as the creator (effective ids 1001:1002) unless CRIU restores */
static void as_creator(int on) {
	if (!on) return;
	if (setresgid(-1, creator_cgid, -1) || setresuid(-1, creator_cuid, -1)) { perror("set creator ids"); exit(2); }
}
static void as_root(int on) {
	if (!on) return;
	if (setresuid(-1, 0, -1) || setresgid(-1, 0, -1)) { perror("back to root"); exit(2); }
}

static int perm_ok(const char *name, struct ipc_perm *p, key_t key, unsigned mode, uid_t uid, gid_t gid, uid_t cuid, gid_t cgid) {
	int ok = 1;
#define SAME(what, got, want, fmt) if ((got) != (want)) { wl_failf("%s: " what " " fmt ", want " fmt, name, got, want); ok = 0; }
	SAME("key", (unsigned)p->__key, (unsigned)key, "0x%x");
	SAME("mode", (unsigned)(p->mode & 07777), mode, "0%o");
	SAME("uid", (unsigned)p->uid, (unsigned)uid, "%u");
	SAME("gid", (unsigned)p->gid, (unsigned)gid, "%u");
	SAME("cuid", (unsigned)p->cuid, (unsigned)cuid, "%u");
	SAME("cgid", (unsigned)p->cgid, (unsigned)cgid, "%u");
#undef SAME
	return ok;
}

static void set_owner_msg(int id) {
	struct msqid_ds ds;
	if (msgctl(id, IPC_STAT, &ds)) { perror("msgctl"); exit(2); }
	ds.msg_perm.uid = 4242;
	ds.msg_perm.gid = 4243;
	if (msgctl(id, IPC_SET, &ds)) { perror("msgctl IPC_SET"); exit(2); }
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	int criu = 0, locked = 0, waiter = 0;
	for (int i = 0; wl_arg(argc, argv, i); i++) {
		if (!strcmp(wl_arg(argc, argv, i), "waiter")) waiter = 1;
		if (!strcmp(wl_arg(argc, argv, i), "criu")) criu = 1;
		if (!strcmp(wl_arg(argc, argv, i), "locked")) locked = 1;
	}
	int cr = !criu; /* made with a creator of its own */
	uid_t cu = cr ? creator_cuid : 0;
	gid_t cg = cr ? creator_cgid : 0;

	/* Q: its id past the first (a queue made and removed at that slot before) */
	int gone = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
	if (gone < 0 || msgctl(gone, IPC_RMID, NULL)) { perror("msgget"); return 2; }
	as_creator(cr);
	int q = msgget(0x51c0001, IPC_CREAT | IPC_EXCL | 0640);
	int s = semget(0x5e0001, 4, IPC_CREAT | IPC_EXCL | 0660);
	int l = shmget(0x5a0001, LSZ, IPC_CREAT | IPC_EXCL | 0604);
	as_root(cr);
	int e = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
	int t = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
	int b = shmget(IPC_PRIVATE, PG, IPC_CREAT | 0600);
	if (q < 0 || s < 0 || l < 0 || e < 0 || t < 0 || b < 0) { perror("get"); return 2; }
	set_owner_msg(q);
	struct msqid_ds mds;
	msgctl(q, IPC_STAT, &mds);
	unsigned long qbytes = criu ? mds.msg_qbytes : 5000;
	if (!criu) {
		mds.msg_qbytes = qbytes;
		if (msgctl(q, IPC_SET, &mds)) { perror("qbytes"); return 2; }
	}
	static char mbuf[8 + 4096];
	for (int i = 0; i < NMSG; i++) {
		*(long *)mbuf = mtypes[i];
		wl_fill(mbuf + 8, msizes[i], 100 + i);
		if (msgsnd(q, mbuf, msizes[i], IPC_NOWAIT)) { perror("msgsnd"); return 2; }
	}
	struct semid_ds sds;
	union semun su = {.buf = &sds};
	semctl(s, 0, IPC_STAT, su);
	sds.sem_perm.uid = 4242;
	sds.sem_perm.gid = 4243;
	if (semctl(s, 0, IPC_SET, su)) { perror("sem IPC_SET"); return 2; }
	su.array = (unsigned short *)svals;
	if (semctl(s, 0, SETALL, su)) { perror("SETALL"); return 2; }
	su.val = 9;
	if (semctl(t, 0, SETVAL, su)) { perror("SETVAL"); return 2; }
	struct shmid_ds hds;
	shmctl(l, IPC_STAT, &hds);
	hds.shm_perm.uid = 4242;
	hds.shm_perm.gid = 4243;
	if (shmctl(l, IPC_SET, &hds)) { perror("shm IPC_SET"); return 2; }
	unsigned char *L = shmat(l, NULL, 0);
	if (L == (void *)-1) return 2;
	wl_fill(L, PG, 31);
	wl_fill(L + 2 * PG, PG + 50, 32);
	uint64_t hl = wl_hash(L, LSZ);
	shmdt(L);
	int k = -1;
	if (locked) {
		k = shmget(IPC_PRIVATE, PG, IPC_CREAT | 0600);
		if (k < 0 || shmctl(k, SHM_LOCK, NULL)) { perror("SHM_LOCK"); return 2; }
	}

	if (waiter) {
		pid_t h = fork();
		if (h == 0) {
			if (fork() == 0) {
				char b[32];
				int n = snprintf(b, sizeof b, "%d\n", (int)getpid());
				wl_write_file("ext-pid", b, (size_t)n);
				struct sembuf op = {0, 0, 0}; /* until T is zero */
				for (;;) semop(t, &op, 1);
			}
			_exit(0);
		}
		waitpid(h, NULL, 0);
		while (semctl(t, 0, GETZCNT) != 1) wl_sleep_ms(2);
	}

	pid_t child = fork();
	if (child == 0) {
		volatile uint32_t *B = shmat(b, NULL, 0);
		if (B == (void *)-1) _exit(2);
		wl_fill((void *)(B + 16), PG - 64, 41);
		B[0] = 1;
		while (B[1] == 0) wl_sleep_ms(5);
		_exit((uint32_t)wl_hash((void *)(B + 16), PG - 64) == B[2] ? 0 : 3);
	}
	/* the parent reads B once the child wrote it, then lets go of it (the child alone attaches it) */
	volatile uint32_t *B = shmat(b, NULL, 0);
	if (B == (void *)-1) return 2;
	while (B[0] != 1) wl_sleep_ms(2);
	uint32_t hb = (uint32_t)wl_hash((void *)(B + 16), PG - 64);
	shmdt((void *)B);
	wl_ready();
	if (wl_corrupting("", "")) msgrcv(q, mbuf, 4096, 0, IPC_NOWAIT);
	while (!wl_go()) wl_sleep_ms(5);
	wl_check_ids();

	/* Q */
	if (msgctl(q, IPC_STAT, &mds) == 0) {
		perm_ok("Q", &mds.msg_perm, 0x51c0001, 0640, 4242, 4243, cu, cg);
		WL_CHECK(mds.msg_qbytes == qbytes, "Q: qbytes %lu, want %lu", (unsigned long)mds.msg_qbytes, qbytes);
		WL_CHECK(mds.msg_qnum == NMSG, "Q: %lu messages, want %d", (unsigned long)mds.msg_qnum, NMSG);
		wl_detail("Q: id=%d qbytes=%lu qnum=%lu cbytes=%lu", q, (unsigned long)mds.msg_qbytes, (unsigned long)mds.msg_qnum,
		          (unsigned long)mds.__msg_cbytes);
	} else
		wl_failf("Q: IPC_STAT of id %d: %s", q, strerror(errno));
	for (int i = 0; i < NMSG; i++) {
		ssize_t n = msgrcv(q, mbuf, 4096, 0, IPC_NOWAIT);
		if (n < 0) { wl_failf("Q: message %d: %s", i, strerror(errno)); break; }
		WL_CHECK(*(long *)mbuf == mtypes[i], "Q: message %d has type %ld, want %ld", i, *(long *)mbuf, mtypes[i]);
		WL_CHECK((size_t)n == msizes[i], "Q: message %d has %zd bytes, want %zu", i, n, msizes[i]);
		WL_CHECK(wl_verify_fill(mbuf + 8, msizes[i], 100 + i) == (size_t)-1, "Q: message %d's bytes differ", i);
	}
	WL_CHECK(msgrcv(q, mbuf, 4096, 0, IPC_NOWAIT) < 0 && errno == ENOMSG, "Q: more messages than %d", NMSG);
	/* E */
	if (msgctl(e, IPC_STAT, &mds) == 0) {
		perm_ok("E", &mds.msg_perm, IPC_PRIVATE, 0600, 0, 0, 0, 0);
		WL_CHECK(mds.msg_qnum == 0, "E: %lu messages", (unsigned long)mds.msg_qnum);
	} else
		wl_failf("E: IPC_STAT of id %d: %s", e, strerror(errno));
	/* S, T */
	su.buf = &sds;
	if (semctl(s, 0, IPC_STAT, su) == 0) {
		perm_ok("S", &sds.sem_perm, 0x5e0001, 0660, 4242, 4243, cu, cg);
		WL_CHECK(sds.sem_nsems == 4, "S: %lu semaphores", (unsigned long)sds.sem_nsems);
		unsigned short got[4] = {0};
		su.array = got;
		semctl(s, 0, GETALL, su);
		for (int i = 0; i < 4; i++) WL_CHECK(got[i] == svals[i], "S: semaphore %d is %u, want %u", i, got[i], svals[i]);
		wl_detail("S: id=%d values=%u %u %u %u", s, got[0], got[1], got[2], got[3]);
	} else
		wl_failf("S: IPC_STAT of id %d: %s", s, strerror(errno));
	su.buf = &sds;
	if (semctl(t, 0, IPC_STAT, su) == 0) {
		perm_ok("T", &sds.sem_perm, IPC_PRIVATE, 0600, 0, 0, 0, 0);
		WL_CHECK(semctl(t, 0, GETVAL) == 9, "T: semaphore 0 is %d, want 9", semctl(t, 0, GETVAL));
	} else
		wl_failf("T: IPC_STAT of id %d: %s", t, strerror(errno));
	/* L */
	if (shmctl(l, IPC_STAT, &hds) == 0) {
		perm_ok("L", &hds.shm_perm, 0x5a0001, 0604, 4242, 4243, cu, cg);
		WL_CHECK(hds.shm_segsz == LSZ, "L: %lu bytes, want %d", (unsigned long)hds.shm_segsz, LSZ);
		WL_CHECK(hds.shm_nattch == 0, "L: attached %lu times", (unsigned long)hds.shm_nattch);
		L = shmat(l, NULL, SHM_RDONLY);
		WL_CHECK(L != (void *)-1 && wl_hash(L, LSZ) == hl, "L's contents differ");
		if (L != (void *)-1) {
			size_t z = 0;
			for (size_t i = PG; i < 2 * PG; i++) z += L[i] != 0;
			WL_CHECK(z == 0, "L's page 1 has %zu bytes not zero", z);
		}
		wl_detail("L: id=%d size=%lu", l, (unsigned long)hds.shm_segsz);
	} else
		wl_failf("L: IPC_STAT of id %d: %s", l, strerror(errno));
	/* B, through the child */
	B = shmat(b, NULL, 0);
	if (B != (void *)-1) {
		B[2] = hb;
		B[1] = 1;
	}
	int st = 0;
	if (B == (void *)-1) kill(child, SIGKILL);
	waitpid(child, &st, 0);
	WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status 0x%x (B's contents differ?)", st);
	/* gone with the namespace; removed anyway, for a run in criu-bun's own one */
	if (k >= 0) shmctl(k, IPC_RMID, NULL);
	msgctl(q, IPC_RMID, NULL), msgctl(e, IPC_RMID, NULL);
	semctl(s, 0, IPC_RMID), semctl(t, 0, IPC_RMID);
	shmctl(l, IPC_RMID, NULL), shmctl(b, IPC_RMID, NULL);
	wl_finish();
}
