/*
 * tree: a 3-level tree of 6 live processes in 2 sessions and 3 process groups, plus a zombie.
 *
 *   R  root: session S1 = R, group R
 *   +- A   group R            +- A1  group A1 (new)     +- A2  group A1
 *   +- B   setsid: session B, group B                   +- B1  group B
 *   +- Z   exits with 42 at once and stays a zombie (R reaps it only at go)
 *
 * Every process records getpid/getppid/getpgid/getsid at setup and keeps counting; at go each
 * re-checks its ids and that its counter moved on, and writes DIR/r-NAME; R waits for all of
 * them, reaps Z (must be exit status 42) and writes DIR/result.
 * --selftest-corrupt: R forgets to wait for B's report and claims B failed.
 */
#include "wl.h"
#include <sys/wait.h>

static volatile unsigned long counter;

static void member(const char *name) {
	pid_t pid = getpid(), ppid = getppid(), pgid = getpgid(0), sid = getsid(0);
	char buf[256];
	int n = snprintf(buf, sizeof buf, "%d %d %d %d\n", pid, ppid, pgid, sid);
	char sname[64];
	snprintf(sname, sizeof sname, "s-%s", name);
	/* counting before it is set up (R is ready only once every member is): at go it has counted */
	for (int i = 0; i < 3; i++) { counter++; wl_sleep_ms(5); }
	wl_write_file(sname, buf, (size_t)n);
	unsigned long at_go;
	while (!wl_go()) { counter++; wl_sleep_ms(5); }
	at_go = counter;
	wl_sleep_ms(20);
	const char *bad = NULL;
	if (getpid() != pid) bad = "pid";
	else if (getppid() != ppid) bad = "ppid";
	else if (getpgid(0) != pgid) bad = "pgid";
	else if (getsid(0) != sid) bad = "sid";
	else if (at_go < 3) bad = "counter";
	n = snprintf(buf, sizeof buf, "%s %s pid=%d ppid=%d/%d pgid=%d/%d sid=%d/%d\n", bad ? "FAIL" : "PASS", bad ? bad : "-",
		     getpid(), getppid(), ppid, getpgid(0), pgid, getsid(0), sid);
	char rname[64];
	snprintf(rname, sizeof rname, "r-%s", name);
	wl_write_file(rname, buf, (size_t)n);
}

static pid_t spawn(const char *name, void (*setup)(void), void (*kids)(void)) {
	pid_t p = fork();
	if (p == 0) {
		if (setup) setup();
		if (kids) kids();
		member(name);
		/* parents wait for their children so nobody is reparented */
		while (wait(NULL) > 0) {}
		_exit(0);
	}
	return p;
}

static void new_group(void) { setpgid(0, 0); }
static void new_session(void) { setsid(); }
static pid_t a1_pid;
static void join_a1(void) { setpgid(0, a1_pid); }
static void a_kids(void) {
	a1_pid = spawn("A1", new_group, NULL);
	setpgid(a1_pid, a1_pid); /* avoid the race with A1's own call */
	spawn("A2", join_a1, NULL);
}
static void b_kids(void) { spawn("B1", NULL, NULL); }

static int wait_file(const char *name, int ms) {
	for (int i = 0; i < ms / 5; i++) { if (wl_exists(name)) return 1; wl_sleep_ms(5); }
	return 0;
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	if (getsid(0) != getpid()) setsid();
	pid_t z = fork();
	if (z == 0) _exit(42);
	spawn("A", NULL, a_kids);
	spawn("B", new_session, b_kids);
	const char *names[] = {"A", "A1", "A2", "B", "B1"};
	char sname[64];
	for (int i = 0; i < 5; i++) {
		snprintf(sname, sizeof sname, "s-%s", names[i]);
		if (!wait_file(sname, 5000)) { wl_failf("%s never set up", names[i]); wl_finish(); }
	}
	/* the zombie must be there before ready */
	for (int i = 0; i < 400; i++) {
		char p[64]; snprintf(p, sizeof p, "/proc/%d/stat", z);
		FILE *f = fopen(p, "r"); char st = 0;
		if (f) { fscanf(f, "%*d %*s %c", &st); fclose(f); }
		if (st == 'Z') break;
		wl_sleep_ms(5);
	}
	wl_detail("zombie=%d", z);
	wl_ready();
	while (!wl_go()) { counter++; wl_sleep_ms(5); }
	wl_check_ids();
	for (int i = 0; i < 5; i++) {
		char rname[64];
		snprintf(rname, sizeof rname, "r-%s", names[i]);
		if (wl_corrupting("", "") && !strcmp(names[i], "B")) { wl_failf("B: (selftest) report ignored"); continue; }
		if (!wait_file(rname, 5000)) { wl_failf("%s did not report", names[i]); continue; }
		char p[4200]; wl_path(p, sizeof p, rname);
		FILE *f = fopen(p, "r"); char line[256] = "";
		if (f) { if (!fgets(line, sizeof line, f)) line[0] = 0; fclose(f); }
		line[strcspn(line, "\n")] = 0;
		wl_detail("%s: %s", names[i], line);
		if (strncmp(line, "PASS", 4)) wl_failf("%s: %s", names[i], line);
	}
	int status = 0;
	pid_t w = waitpid(z, &status, WNOHANG);
	if (w != z) wl_failf("zombie %d not there to reap (waitpid=%d errno=%d)", z, w, errno);
	else if (!WIFEXITED(status) || WEXITSTATUS(status) != 42) wl_failf("zombie status 0x%x, want exit 42", status);
	wl_finish();
}
