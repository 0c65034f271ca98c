/*
 * inotify: a blocking instance watching DIR/w (IN_CREATE|IN_DELETE, wd 1) and DIR/f
 * (IN_MODIFY, wd 3; wd 2 was removed, so numbers have a gap), and a non-blocking instance
 * watching DIR (IN_ATTRIB|IN_ONESHOT). After go: creating DIR/w/new gives IN_CREATE with wd 1
 * and its name, writing DIR/f gives IN_MODIFY with wd 3, nothing else is queued (no stray
 * IN_IGNORED), re-adding DIR/w returns wd 1, a new watch gets wd 4, chmod DIR gives IN_ATTRIB.
 * --selftest-corrupt: remove the watch on DIR/w.
 */
#include "wl.h"
#include <poll.h>
#include <sys/inotify.h>

static char pw[4200], pf[4200], px[4200], pn[4200], pm[4200];

static int read_one(int fd, struct inotify_event *ev, size_t sz, char *name, size_t nlen) {
	struct pollfd p = {fd, POLLIN, 0};
	if (poll(&p, 1, 200) != 1) return -1;
	char buf[4096] __attribute__((aligned(8)));
	buf[4095] = 0;
	ssize_t n = read(fd, buf, sizeof buf);
	if (n < (ssize_t)sizeof *ev) return -1;
	memcpy(ev, buf, sizeof *ev);
	name[0] = 0;
	if (ev->len) snprintf(name, nlen, "%.200s", buf + sizeof *ev);
	return (int)(n / (sizeof *ev)); /* rough: >1 if more than one event came */
}

int main(int argc, char **argv) {
	wl_init(argc, argv);
	wl_path(pw, sizeof pw, "w");
	wl_path(pf, sizeof pf, "f");
	wl_path(px, sizeof px, "x");
	wl_path(pn, sizeof pn, "w/new");
	wl_path(pm, sizeof pm, "m");
	mkdir(pw, 0755);
	mkdir(px, 0755);
	mkdir(pm, 0755);
	close(open(pf, O_CREAT | O_WRONLY, 0644));
	int in = inotify_init1(0), in2 = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (in < 0 || in2 < 0) { perror("inotify_init1"); return 2; }
	int w1 = inotify_add_watch(in, pw, IN_CREATE | IN_DELETE);
	int w2 = inotify_add_watch(in, px, IN_CREATE);
	int w3 = inotify_add_watch(in, pf, IN_MODIFY);
	inotify_rm_watch(in, w2);
	char ign[512];
	read(in, ign, sizeof ign); /* the IN_IGNORED of w2 */
	inotify_add_watch(in2, wl_dir, IN_ATTRIB | IN_ONESHOT);
	if (w1 != 1 || w3 != 3) { fprintf(stderr, "unexpected wds %d %d\n", w1, w3); return 2; }
	wl_ready();
	if (wl_corrupting("rm", "rm")) { inotify_rm_watch(in, 1); read(in, ign, sizeof ign); }
	while (!wl_go()) wl_sleep_ms(10);

	wl_check_ids();
	struct inotify_event ev;
	char name[256];
	close(open(pn, O_CREAT | O_WRONLY, 0644));
	int n = read_one(in, &ev, sizeof ev, name, sizeof name);
	WL_CHECK(n >= 1 && ev.wd == 1 && (ev.mask & IN_CREATE) && !strcmp(name, "new"), "no IN_CREATE for w/new on wd 1 (n=%d wd=%d mask=%x name=%s)", n, n >= 1 ? ev.wd : -1, n >= 1 ? ev.mask : 0, n >= 1 ? name : "");
	int f = open(pf, O_WRONLY);
	write(f, "x", 1);
	close(f);
	n = read_one(in, &ev, sizeof ev, name, sizeof name);
	WL_CHECK(n >= 1 && ev.wd == 3 && (ev.mask & IN_MODIFY), "no IN_MODIFY on wd 3 (n=%d wd=%d mask=%x)", n, n >= 1 ? ev.wd : -1, n >= 1 ? ev.mask : 0);
	struct pollfd p = {in, POLLIN, 0};
	WL_CHECK(poll(&p, 1, 0) == 0, "more events queued than expected");
	WL_CHECK(inotify_add_watch(in, pw, IN_CREATE | IN_DELETE) == 1, "re-adding w did not give wd 1");
	int w4 = inotify_add_watch(in, pm, IN_CREATE);
	WL_CHECK(w4 == 4, "new watch got wd %d, want 4", w4);
	chmod(wl_dir, 0751);
	n = read_one(in2, &ev, sizeof ev, name, sizeof name);
	WL_CHECK(n >= 1 && ev.wd == 1 && (ev.mask & IN_ATTRIB), "no IN_ATTRIB on the second instance");
	WL_CHECK((fcntl(in2, F_GETFL) & O_NONBLOCK) && fcntl(in2, F_GETFD) == FD_CLOEXEC, "second instance flags");
	WL_CHECK(!(fcntl(in, F_GETFL) & O_NONBLOCK), "first instance became non-blocking");
	wl_finish();
}
