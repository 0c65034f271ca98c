/*
 * notifyfix: inotify, epoll, pipe and FIFO states that criu-bun restores exactly or refuses, named
 * by MODE; at go the workload checks its state.
 *
 *   notifyfix DIR MODE
 *   inomany      one inotify instance watching 30 files f0..f29 (IN_MODIFY), watch 12 (0xc)
 *                removed (a gap): wds 1..11, 13..30 (fdinfo prints them in hex). Writing each file
 *                gives one IN_MODIFY with that file's wd, nothing else is queued, a new watch gets
 *                wd 31, and the inotify lines of fdinfo (wd, inode, mask, handle) are as before
 *   dontfollow   a directory d (IN_CREATE|IN_DELETE|IN_EXCL_UNLINK, wd 1), a symlink l to d watched
 *                itself (IN_ATTRIB|IN_DONT_FOLLOW, wd 2), a symlink fl to a file f watched through
 *                it (IN_MODIFY, so on f, wd 3): fdinfo as before; touching l (utimensat
 *                AT_SYMLINK_NOFOLLOW) gives IN_ATTRIB on wd 2, creating d/new IN_CREATE on wd 1
 *                with its name, writing f IN_MODIFY on wd 3, chmod d nothing
 *   pipedirect   an empty pipe made with pipe2(O_DIRECT) (the write end gets O_DIRECT), and a pipe
 *                holding "plain" written in normal mode whose ends were switched to O_DIRECT after:
 *                every end's status flags as set up, "plain" read in one read, then writes of 3
 *                and 5 bytes read back as 2 packets
 *   fifodirect   a FIFO opened O_RDWR holding "plain" (normal mode), then switched to O_DIRECT with
 *                F_SETFL, and its O_RDONLY|O_NONBLOCK end switched too: the same checks
 *   oneshot      an epoll set with an EPOLLONESHOT eventfd target not fired yet (armed), one that
 *                fired and was re-armed with EPOLL_CTL_MOD, and a level-triggered one: each armed
 *                one-shot reported once, then no more; the level one every time
 *   (refused, the state checked as it was set up:)
 *   inoqueue     an inotify instance with an IN_CREATE event queued, not read (inotify-queued)
 *   oneshotfired an EPOLLONESHOT target that fired already (epoll-oneshot-fired): nothing
 *                reported at go, even with the target's writer closed (no EPOLLHUP); re-armed
 *                with EPOLL_CTL_MOD, it is reported with its data
 *   pipepkt      3 packets (3, 5, 1 bytes) queued in a pipe2(O_DIRECT) pipe (pipe-packets): read
 *                back as 3 reads of 3, 5 and 1 bytes
 *   fifopkt      the same 3 packets in a FIFO switched to O_DIRECT with F_SETFL
 * --selftest-corrupt: the state undone (a watch removed, O_DIRECT cleared, a packet read ...).
 */
#define WL_MODES
#include "wl.h"
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>

#define NW 30
static int in = -1, ep = -1, efd[3] = {-1, -1, -1}, pr[2] = {-1, -1}, p2[2] = {-1, -1}, ff = -1, fr = -1;
static int wd[NW];
static char files[NW][4200], pd[4200], pl[4200], pf[4200], pfl[4200], pnew[4200], pfifo[4200];
static char fdinfo_before[16384];
static int queued_before;

/* the "inotify wd:" lines of fd's fdinfo, sorted (the kernel lists marks in its own order) */
static void ino_lines(int fd, char *out, size_t n) {
	char p[64], buf[16384];
	snprintf(p, sizeof p, "/proc/self/fdinfo/%d", fd);
	int f = open(p, O_RDONLY);
	ssize_t len = f >= 0 ? read(f, buf, sizeof buf - 1) : -1;
	if (f >= 0) close(f);
	if (len < 0) len = 0;
	buf[len] = 0;
	char *lines[256];
	int k = 0;
	for (char *s = strtok(buf, "\n"); s && k < 256; s = strtok(NULL, "\n"))
		if (!strncmp(s, "inotify wd:", 11)) lines[k++] = s;
	for (int i = 1; i < k; i++)
		for (int j = i; j > 0 && strcmp(lines[j - 1], lines[j]) > 0; j--) {
			char *t = lines[j];
			lines[j] = lines[j - 1];
			lines[j - 1] = t;
		}
	out[0] = 0;
	size_t o = 0;
	for (int i = 0; i < k && o < n - 1; i++) o += (size_t)snprintf(out + o, n - o, "%s\n", lines[i]);
}

/* one inotify event within 200 ms: its wd and mask (name into name), or -1 */
static int one_event(int fd, uint32_t *mask, char *name, size_t nlen) {
	struct pollfd p = {fd, POLLIN, 0};
	if (poll(&p, 1, 200) != 1) return -1;
	char buf[4096] __attribute__((aligned(8)));
	ssize_t r = read(fd, buf, sizeof buf);
	if (r < (ssize_t)sizeof(struct inotify_event)) return -1;
	struct inotify_event *e = (struct inotify_event *)buf;
	*mask = e->mask;
	if (name) snprintf(name, nlen, "%.200s", e->len ? e->name : "");
	if (r > (ssize_t)(sizeof *e + e->len)) wl_failf("more than one event at once (%zd bytes) after wd %d", r, e->wd);
	return e->wd;
}

static void append(const char *path) {
	int f = open(path, O_WRONLY | O_APPEND);
	if (f >= 0) {
		write(f, "x", 1);
		close(f);
	}
}

static int ev_wait(int epfd, struct epoll_event *out, int n) {
	int r;
	do r = epoll_wait(epfd, out, n, 0);
	while (r < 0 && errno == EINTR);
	return r;
}

/* status flags of the fds checked, as set up */
static int flags_fd[4], flags_was[4], nflags;
static void keep_flags(int fd) {
	flags_fd[nflags] = fd;
	flags_was[nflags++] = fcntl(fd, F_GETFL);
}
static void check_flags(void) {
	for (int i = 0; i < nflags; i++) {
		int fl = fcntl(flags_fd[i], F_GETFL);
		WL_CHECK(fl == flags_was[i], "fd %d: flags %o, want %o", flags_fd[i], fl, flags_was[i]);
	}
}
static void setup(void) {
	if (is("inomany")) {
		NEED((in = inotify_init1(IN_NONBLOCK)) >= 0);
		for (int i = 0; i < NW; i++) {
			snprintf(files[i], sizeof files[i], "%s/f%d", wl_dir, i);
			close(open(files[i], O_CREAT | O_WRONLY, 0644));
			NEED((wd[i] = inotify_add_watch(in, files[i], IN_MODIFY)) == i + 1);
		}
		NEED(inotify_rm_watch(in, 12) == 0);
		char ign[256];
		NEED(read(in, ign, sizeof ign) > 0); /* its IN_IGNORED */
		wd[11] = -1;
		ino_lines(in, fdinfo_before, sizeof fdinfo_before);
	} else if (is("dontfollow")) {
		wl_path(pd, sizeof pd, "d");
		wl_path(pl, sizeof pl, "l");
		wl_path(pf, sizeof pf, "f");
		wl_path(pfl, sizeof pfl, "fl");
		wl_path(pnew, sizeof pnew, "d/new");
		NEED(mkdir(pd, 0755) == 0);
		NEED(symlink(pd, pl) == 0);
		close(open(pf, O_CREAT | O_WRONLY, 0644));
		NEED(symlink(pf, pfl) == 0);
		NEED((in = inotify_init1(IN_NONBLOCK)) >= 0);
		NEED(inotify_add_watch(in, pd, IN_CREATE | IN_DELETE | IN_EXCL_UNLINK | IN_ONLYDIR) == 1);
		NEED(inotify_add_watch(in, pl, IN_ATTRIB | IN_DONT_FOLLOW) == 2);
		NEED(inotify_add_watch(in, pfl, IN_MODIFY) == 3);
		ino_lines(in, fdinfo_before, sizeof fdinfo_before);
	} else if (is("inoqueue")) {
		wl_path(pd, sizeof pd, "d");
		wl_path(pnew, sizeof pnew, "d/queued");
		NEED(mkdir(pd, 0755) == 0);
		NEED((in = inotify_init1(IN_NONBLOCK)) >= 0);
		NEED(inotify_add_watch(in, pd, IN_CREATE) == 1);
		close(open(pnew, O_CREAT | O_WRONLY, 0644));
		NEED(ioctl(in, FIONREAD, &queued_before) == 0 && queued_before > 0);
	} else if (is("pipedirect")) {
		NEED(pipe2(pr, O_DIRECT | O_NONBLOCK) == 0);
		NEED(pipe2(p2, O_NONBLOCK) == 0);
		NEED(write(p2[1], "pl", 2) == 2 && write(p2[1], "ain", 3) == 3);
		NEED(fcntl(p2[0], F_SETFL, O_NONBLOCK | O_DIRECT) == 0 && fcntl(p2[1], F_SETFL, O_NONBLOCK | O_DIRECT) == 0);
		keep_flags(pr[0]), keep_flags(pr[1]), keep_flags(p2[0]), keep_flags(p2[1]);
		NEED(flags_was[1] & O_DIRECT); /* pipe2 gives O_DIRECT to the write end */
	} else if (is("fifodirect") || is("fifopkt")) {
		wl_path(pfifo, sizeof pfifo, "pf");
		NEED(mkfifo(pfifo, 0600) == 0);
		NEED((ff = open(pfifo, O_RDWR | O_NONBLOCK)) >= 0);
		NEED((fr = open(pfifo, O_RDONLY | O_NONBLOCK)) >= 0);
		if (is("fifodirect")) NEED(write(ff, "pl", 2) == 2 && write(ff, "ain", 3) == 3);
		NEED(fcntl(ff, F_SETFL, O_NONBLOCK | O_DIRECT) == 0 && fcntl(fr, F_SETFL, O_NONBLOCK | O_DIRECT) == 0);
		keep_flags(ff), keep_flags(fr);
		if (is("fifopkt")) NEED(write(ff, "aaa", 3) == 3 && write(ff, "bbbbb", 5) == 5 && write(ff, "c", 1) == 1);
	} else if (is("pipepkt")) {
		NEED(pipe2(pr, O_DIRECT | O_NONBLOCK) == 0);
		NEED(write(pr[1], "aaa", 3) == 3 && write(pr[1], "bbbbb", 5) == 5 && write(pr[1], "c", 1) == 1);
	} else if (is("oneshot") || is("oneshotfired")) {
		NEED((ep = epoll_create1(0)) >= 0);
		for (int i = 0; i < 3; i++) NEED((efd[i] = eventfd(0, EFD_NONBLOCK)) >= 0);
		struct epoll_event ev = {EPOLLIN | EPOLLONESHOT, {.u64 = 11}}, out[4];
		NEED(epoll_ctl(ep, EPOLL_CTL_ADD, efd[0], &ev) == 0);
		if (is("oneshotfired")) {
			NEED(pipe(pr) == 0 && write(pr[1], "x", 1) == 1);
			ev.data.u64 = 22;
			NEED(epoll_ctl(ep, EPOLL_CTL_ADD, pr[0], &ev) == 0);
			NEED(ev_wait(ep, out, 4) == 1 && out[0].data.u64 == 22); /* fired: disarmed */
			return;
		}
		/* efd[1]: fired once, re-armed with MOD */
		ev.data.u64 = 22;
		NEED(epoll_ctl(ep, EPOLL_CTL_ADD, efd[1], &ev) == 0);
		uint64_t one = 1;
		NEED(write(efd[1], &one, 8) == 8);
		NEED(ev_wait(ep, out, 4) == 1 && out[0].data.u64 == 22);
		NEED(epoll_ctl(ep, EPOLL_CTL_MOD, efd[1], &ev) == 0);
		ev.events = EPOLLIN;
		ev.data.u64 = 33;
		NEED(epoll_ctl(ep, EPOLL_CTL_ADD, efd[2], &ev) == 0);
	} else {
		fprintf(stderr, "notifyfix: unknown mode %s\n", mode);
		exit(2);
	}
}

static void corrupt(void) {
	char b[64];
	if (is("inomany")) inotify_rm_watch(in, 20), read(in, b, sizeof b);
	else if (is("dontfollow")) inotify_rm_watch(in, 2), read(in, b, sizeof b);
	else if (is("inoqueue")) read(in, b, sizeof b);
	else if (is("pipedirect")) fcntl(pr[1], F_SETFL, O_NONBLOCK);
	else if (is("fifodirect")) fcntl(fr, F_SETFL, O_NONBLOCK);
	else if (is("pipepkt")) read(pr[0], b, 1);
	else if (is("fifopkt")) read(fr, b, 1);
	else if (is("oneshot")) {
		struct epoll_event ev = {EPOLLIN, {.u64 = 11}};
		epoll_ctl(ep, EPOLL_CTL_MOD, efd[0], &ev); /* no longer one-shot */
	} else if (is("oneshotfired")) {
		struct epoll_event ev = {EPOLLIN | EPOLLONESHOT, {.u64 = 22}};
		epoll_ctl(ep, EPOLL_CTL_MOD, pr[0], &ev); /* armed again */
	}
}

/* writes of 3 and 5 bytes come back as 2 packets through rd (a packet-mode writer wr) */
static void check_packets(const char *what, int wr, int rd) {
	char b[64];
	WL_CHECK(write(wr, "AAA", 3) == 3 && write(wr, "BBBBB", 5) == 5, "%s: writing 2 packets: %m", what);
	ssize_t r1 = read(rd, b, sizeof b), r2 = read(rd, b, sizeof b);
	WL_CHECK(r1 == 3 && r2 == 5, "%s: packets read back as %zd and %zd bytes, want 3 and 5", what, r1, r2);
}



static void check(void) {
	char now[16384], name[256];
	uint32_t mask = 0;
	if (is("inomany")) {
		ino_lines(in, now, sizeof now);
		WL_CHECK(!strcmp(now, fdinfo_before), "inotify fdinfo differs:\nbefore:\n%s\nnow:\n%s", fdinfo_before, now);
		int bad = 0;
		for (int i = 0; i < NW; i++) {
			append(files[i]);
			int got = one_event(in, &mask, NULL, 0);
			if (wd[i] < 0) {
				if (got != -1 && bad++ < 5) wl_failf("f%d (watch removed) gave an event on wd %d", i, got);
			} else if (got != wd[i] || mask != IN_MODIFY) {
				if (bad++ < 5) wl_failf("f%d: event on wd %d mask %x, want wd %d IN_MODIFY", i, got, mask, wd[i]);
			}
		}
		WL_CHECK(!bad, "%d of %d files gave the wrong event", bad, NW);
		struct pollfd p = {in, POLLIN, 0};
		WL_CHECK(poll(&p, 1, 0) == 0, "more events queued than written");
		int w = inotify_add_watch(in, wl_dir, IN_ATTRIB);
		WL_CHECK(w == NW + 1, "a new watch got wd %d, want %d", w, NW + 1);
		wl_detail("watches=%d", NW - 1);
	} else if (is("dontfollow")) {
		ino_lines(in, now, sizeof now);
		WL_CHECK(!strcmp(now, fdinfo_before), "inotify fdinfo differs:\nbefore:\n%s\nnow:\n%s", fdinfo_before, now);
		struct timespec ts[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
		WL_CHECK(utimensat(AT_FDCWD, pl, ts, AT_SYMLINK_NOFOLLOW) == 0, "touching the symlink: %m");
		int got = one_event(in, &mask, name, sizeof name);
		WL_CHECK(got == 2 && (mask & IN_ATTRIB), "touching the symlink gave wd %d mask %x, want IN_ATTRIB on wd 2", got, mask);
		close(open(pnew, O_CREAT | O_WRONLY, 0644));
		got = one_event(in, &mask, name, sizeof name);
		WL_CHECK(got == 1 && (mask & IN_CREATE) && !strcmp(name, "new"), "creating d/new gave wd %d mask %x name '%s', want IN_CREATE on wd 1", got, mask, name);
		append(pf);
		got = one_event(in, &mask, name, sizeof name);
		WL_CHECK(got == 3 && mask == IN_MODIFY, "writing f gave wd %d mask %x, want IN_MODIFY on wd 3", got, mask);
		chmod(pd, 0751);
		got = one_event(in, &mask, name, sizeof name);
		WL_CHECK(got == -1, "chmod of d gave an event on wd %d mask %x (no watch of d has IN_ATTRIB)", got, mask);
	} else if (is("inoqueue")) {
		int q = -1;
		WL_CHECK(ioctl(in, FIONREAD, &q) == 0 && q == queued_before, "%d bytes queued, want %d", q, queued_before);
		int got = one_event(in, &mask, name, sizeof name);
		WL_CHECK(got == 1 && (mask & IN_CREATE) && !strcmp(name, "queued"), "queued event: wd %d mask %x name '%s'", got, mask, name);
	} else if (is("pipedirect")) {
		check_flags();
		char b[64];
		ssize_t r = read(p2[0], b, sizeof b);
		WL_CHECK(r == 5 && !memcmp(b, "plain", 5), "the bytes written before packet mode: read %zd, want 'plain' at once", r);
		check_packets("empty pipe", pr[1], pr[0]);
		check_packets("pipe with data", p2[1], p2[0]);
	} else if (is("fifodirect")) {
		check_flags();
		char b[64];
		ssize_t r = read(fr, b, sizeof b);
		WL_CHECK(r == 5 && !memcmp(b, "plain", 5), "the bytes written before packet mode: read %zd, want 'plain' at once", r);
		check_packets("fifo", ff, fr);
	} else if (is("pipepkt") || is("fifopkt")) {
		int rd = is("pipepkt") ? pr[0] : fr;
		char b[64];
		ssize_t r1 = read(rd, b, sizeof b), r2 = read(rd, b, sizeof b), r3 = read(rd, b, sizeof b);
		WL_CHECK(r1 == 3 && r2 == 5 && r3 == 1, "packets read as %zd, %zd, %zd bytes, want 3, 5, 1", r1, r2, r3);
	} else if (is("oneshot")) {
		uint64_t one = 1;
		for (int i = 0; i < 3; i++) WL_CHECK(write(efd[i], &one, 8) == 8, "eventfd write: %m");
		struct epoll_event out[4];
		int r = ev_wait(ep, out, 4);
		uint64_t seen = 0;
		for (int i = 0; i < r; i++) seen |= 1ull << out[i].data.u64;
		WL_CHECK(r == 3 && seen == ((1ull << 11) | (1ull << 22) | (1ull << 33)), "first wait: %d events (mask %llx), want 11, 22, 33", r, (unsigned long long)seen);
		r = ev_wait(ep, out, 4);
		WL_CHECK(r == 1 && out[0].data.u64 == 33, "second wait: %d events (first %llu), want only the level one (33)", r, r > 0 ? (unsigned long long)out[0].data.u64 : 0ull);
	} else if (is("oneshotfired")) {
		struct epoll_event out[4];
		close(pr[1]);
		int r = ev_wait(ep, out, 4);
		WL_CHECK(r == 0, "the fired one-shot reported %d event(s) (events %x)", r, r > 0 ? out[0].events : 0);
		struct epoll_event ev = {EPOLLIN | EPOLLONESHOT, {.u64 = 22}};
		WL_CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, pr[0], &ev) == 0, "EPOLL_CTL_MOD: %m");
		r = ev_wait(ep, out, 4);
		WL_CHECK(r == 1 && out[0].data.u64 == 22, "re-armed: %d events, want data 22", r);
	}
}

int main(int argc, char **argv) { wl_mode_main(argc, argv, "notifyfix", setup, corrupt, check, 1); }
