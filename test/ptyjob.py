# Runs a workload as a shell job on a new pseudo-terminal: its own session, the pty as its
# controlling terminal and stdio. Prints "PID /dev/pts/N"; reaps children; keeps the pty open
# until DIR/quit exists.
import fcntl, os, pty, subprocess, sys, termios, time
bin_, d = sys.argv[1], sys.argv[2]
master, slave = pty.openpty()
def pre():
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
p = subprocess.Popen([bin_, d], stdin=slave, stdout=slave, stderr=slave, preexec_fn=pre, close_fds=True)
print(p.pid, os.ttyname(slave), flush=True)
os.set_blocking(master, False)
while not os.path.exists(os.path.join(d, "quit")):
    try: os.read(master, 65536)
    except (BlockingIOError, OSError): pass
    try: os.waitpid(-1, os.WNOHANG)
    except ChildProcessError: pass
    time.sleep(0.02)
