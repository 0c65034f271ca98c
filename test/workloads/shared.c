/*
 * shared: what a parent and its child share must stay shared after restore.
 *  - a 4 MiB MAP_SHARED|MAP_ANONYMOUS region with a pattern (one page left zero);
 *  - one open file description (DIR/data, opened before fork): the offset moves for both;
 *  - a POSIX shared memory object (shm_open, MAP_SHARED) and a SysV segment (shmget, shmat,
 *    marked IPC_RMID), both mapped by parent and child;
 * At go the parent raises a flag in shared memory; the child (which only sees it if the memory
 * is really shared) reads 10 bytes from the shared fd, checks the pattern, answers in shared
 * memory and exits 0. The parent checks the answer, that its own offset moved by those 10 bytes
 * and the child's exit status.
 * --selftest-corrupt: the parent unshares its view (mremap to a private copy) before go.
 */
#include "wl.h"
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define SZ (4u << 20)

int main(int argc, char **argv) {
	wl_init(argc, argv);
	char p[4200];
	wl_path(p, sizeof p, "data");
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
	char data[4096];
	for (int i = 0; i < 4096; i++) data[i] = (char)('a' + i % 26);
	if (write(fd, data, sizeof data) != sizeof data) exit(2);
	lseek(fd, 100, SEEK_SET);
	volatile uint32_t *shm = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED) exit(2);
	wl_fill((void *)(shm + 1024), SZ - 8192, 77); /* page 0 = control words, last page zero */
	char pname[64];
	snprintf(pname, sizeof pname, "/criu-bun-shared-%d", getpid());
	int pfd = shm_open(pname, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (pfd < 0 || ftruncate(pfd, 8192)) exit(2);
	volatile uint32_t *pshm = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, pfd, 0);
	close(pfd);
	int sid = shmget(IPC_PRIVATE, 3 * 4096, IPC_CREAT | 0600);
	volatile uint32_t *sshm = shmat(sid, NULL, 0);
	if (pshm == MAP_FAILED || sid < 0 || sshm == (void *)-1) exit(2);
	shmctl(sid, IPC_RMID, NULL); /* gone once nobody is attached */
	sshm[100] = 0x5EED;
	uint64_t h = wl_hash((void *)(shm + 1024), SZ - 8192);
	pid_t c = fork();
	if (c == 0) {
		while (shm[0] != 1) wl_sleep_ms(2);
		char buf[10];
		ssize_t n = read(fd, buf, sizeof buf);
		uint32_t ok = n == 10 && !memcmp(buf, data + 100, 10) && wl_hash((void *)(shm + 1024), SZ - 8192) == h &&
		              pshm[0] == 0xABCD && sshm[0] == 0xBEEF && sshm[100] == 0x5EED;
		pshm[1] = 1;
		sshm[1] = 1;
		shm[2] = ok;
		shm[1] = 2;
		_exit(ok ? 0 : 3);
	}
	wl_ready();
	while (!wl_go()) wl_sleep_ms(5);
	wl_check_ids();
	if (wl_corrupting("", "")) {
		void *copy = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		memcpy(copy, (void *)shm, SZ);
		shm = mremap(copy, SZ, SZ, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)shm);
	}
	WL_CHECK(wl_hash((void *)(shm + 1024), SZ - 8192) == h, "shared pattern changed");
	pshm[0] = 0xABCD;
	sshm[0] = 0xBEEF;
	shm[0] = 1;
	int waited = 0;
	while (shm[1] != 2 && waited < 2000) { wl_sleep_ms(5); waited += 5; }
	WL_CHECK(shm[1] == 2, "child never answered through shared memory");
	WL_CHECK(shm[2] == 1, "child saw wrong data (fd or shared memory)");
	WL_CHECK(pshm[1] == 1, "child's write to the POSIX shared memory not seen");
	WL_CHECK(sshm[1] == 1, "child's write to the SysV segment not seen");
	shm_unlink(pname);
	off_t pos = lseek(fd, 0, SEEK_CUR);
	WL_CHECK(pos == 110, "shared offset is %ld, want 110 (child's read must move it)", (long)pos);
	int st = 0;
	if (shm[1] != 2) kill(c, SIGKILL);
	waitpid(c, &st, 0);
	WL_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status 0x%x", st);
	wl_finish();
}
