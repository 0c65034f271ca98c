// A pseudo-terminal pair held inside a container's own devpts (mount -t devpts -o newinstance):
// run in the container (built static by test/mounts.test.ts), it opens /dev/pts/ptmx, its slave
// in raw mode with a window size, writes its index to /work/pty-index and waits for /work/go.
// Then: the same index, the slave still /dev/pts/N of that devpts, window size and raw mode kept,
// bytes flow both ways; "PASS" or "FAIL: why" into /work/pty-result, exit 0.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

static void put(const char *path, const char *s) {
  char tmp[256];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) exit(2);
  fputs(s, f);
  fclose(f);
  rename(tmp, path);
}

static int fail(const char *why) {
  char b[300];
  snprintf(b, sizeof b, "FAIL: %s\n", why);
  put("/work/pty-result", b);
  return 0;
}

int main(void) {
  int m = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY);
  if (m < 0 || unlockpt(m) != 0) return fail("open /dev/pts/ptmx");
  int index;
  if (ioctl(m, TIOCGPTN, &index) != 0) return fail("TIOCGPTN");
  char name[64];
  snprintf(name, sizeof name, "/dev/pts/%d", index);
  int s = open(name, O_RDWR | O_NOCTTY);
  if (s < 0) return fail("open slave");
  struct termios t;
  tcgetattr(s, &t);
  cfmakeraw(&t);
  tcsetattr(s, TCSANOW, &t);
  struct winsize ws = { .ws_row = 33, .ws_col = 111 };
  ioctl(s, TIOCSWINSZ, &ws);
  struct stat st0;
  fstat(s, &st0);
  char b[64];
  snprintf(b, sizeof b, "%d\n", index);
  put("/work/pty-index", b);
  while (access("/work/go", F_OK) != 0) usleep(20000);
  int now;
  if (ioctl(m, TIOCGPTN, &now) != 0 || now != index) return fail("the master's index changed");
  struct stat st1, sp;
  if (fstat(s, &st1) != 0 || stat(name, &sp) != 0 || st1.st_rdev != st0.st_rdev || sp.st_rdev != st1.st_rdev || sp.st_dev != st1.st_dev)
    return fail("the slave fd is not /dev/pts/N of the container's devpts");
  struct winsize w2;
  if (ioctl(s, TIOCGWINSZ, &w2) != 0 || w2.ws_row != 33 || w2.ws_col != 111) return fail("window size lost");
  struct termios t2;
  if (tcgetattr(s, &t2) != 0 || (t2.c_lflag & (ICANON | ECHO))) return fail("raw mode lost");
  if (write(m, "ping", 4) != 4) return fail("write master");
  char r[8] = {0};
  if (read(s, r, 4) != 4 || memcmp(r, "ping", 4)) return fail("slave did not read what the master wrote");
  if (write(s, "pong", 4) != 4) return fail("write slave");
  memset(r, 0, sizeof r);
  if (read(m, r, 4) != 4 || memcmp(r, "pong", 4)) return fail("master did not read what the slave wrote");
  put("/work/pty-result", "PASS\n");
  return 0;
}
