# python3 workload (protocol of wl.h): a session leader that holds both ends of a pty pair, with
# the slave as its controlling terminal, ECHO off and a 40x100 window. At go: same pts name,
# termios and window size kept, it is still its controlling terminal, data flows both ways.
# Two more masters: one never unlocked (as /dev/ptmx opens) and one locked again after its slave was
# opened: both still locked (TIOCGPTLCK), the first one's slave not openable (EIO); the open slave works.
import fcntl, os, pty, struct, sys, termios, time
d = sys.argv[1]
def put(name, text):
    with open(os.path.join(d, name + ".tmp"), "w") as f: f.write(text)
    os.rename(os.path.join(d, name + ".tmp"), os.path.join(d, name))
if os.getsid(0) != os.getpid(): os.setsid()
m, s = pty.openpty()
name = os.ttyname(s)
fcntl.ioctl(s, termios.TIOCSCTTY, 0)
attrs = termios.tcgetattr(s); attrs[3] &= ~termios.ECHO; termios.tcsetattr(s, termios.TCSANOW, attrs)
fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
TIOCGPTLCK, TIOCSPTLCK, TIOCGPTN = 0x80045439, 0x40045431, 0x80045430
def ptlocked(fd): return struct.unpack("i", fcntl.ioctl(fd, TIOCGPTLCK, b"\0" * 4))[0]
def ptsname(fd): return "/dev/pts/%d" % struct.unpack("I", fcntl.ioctl(fd, TIOCGPTN, b"\0" * 4))[0]
never = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)  # locked, as it opens
relocked = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
fcntl.ioctl(relocked, TIOCSPTLCK, struct.pack("i", 0))
rs = os.open(ptsname(relocked), os.O_RDWR | os.O_NOCTTY)
fcntl.ioctl(relocked, TIOCSPTLCK, struct.pack("i", 1))
def slave_refused(fd):
    try: os.close(os.open(ptsname(fd), os.O_RDWR | os.O_NOCTTY))
    except OSError as e: return e.errno == 5
    return False
if "--selftest-corrupt" in sys.argv: fcntl.ioctl(never, TIOCSPTLCK, struct.pack("i", 0))
put("ready", f"{os.getpid()}\n")
while not os.path.exists(os.path.join(d, "go")): time.sleep(0.01)
fails = []
if os.ttyname(s) != name: fails.append(f"slave is {os.ttyname(s)}, was {name}")
if termios.tcgetattr(s)[3] & termios.ECHO: fails.append("ECHO came back on")
if struct.unpack("HHHH", fcntl.ioctl(s, termios.TIOCGWINSZ, b"\0" * 8))[:2] != (40, 100): fails.append("window size changed")
with open("/proc/self/stat") as f: tty_nr = int(f.read().rsplit(")", 1)[1].split()[4])
if tty_nr != os.stat(name).st_rdev: fails.append(f"controlling terminal {tty_nr} is not {name}")
os.write(relocked, b"x\n")
if os.read(rs, 100) != b"x\n": fails.append("the locked-again pair's open slave")
for what, fd in (("never unlocked", never), ("locked again", relocked)):
    if ptlocked(fd) != 1: fails.append(f"the {what} master is no longer locked")
# (a failed open of a slave that is open already hangs it up: tried only where none is open)
if not slave_refused(never): fails.append("the slave of the never unlocked master opens")
os.write(m, b"ping\n")
if os.read(s, 100) != b"ping\n": fails.append("master -> slave")
os.write(s, b"pong")
if not os.read(m, 100).endswith(b"pong"): fails.append("slave -> master")
put("result", ("PASS\n" if not fails else f"FAIL: {fails[0]}\n") + f"pid={os.getpid()}\n")
sys.exit(0 if not fails else 1)
