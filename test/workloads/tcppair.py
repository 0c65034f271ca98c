# python3 workload (protocol of wl.h): both ends of an established TCP connection on 127.0.0.1,
# SO_REUSEADDR on both (the accepted end inherits it from the listener, the connecting end sets
# it), a few bytes queued in each direction. It touches the sockets only at go (it sleeps until
# then), so a test can act between a dump and the program's next use of them. At go: the queued
# bytes arrive in order, a round trip works both ways, SO_REUSEADDR is still 1 on both ends.
# --threads=N: N more threads counting in a loop; at go each must still count (none left asleep).
# --fork: a child process shares both sockets (forked once they are up) and counts into DIR/child;
# at go its count must still grow.
import os, socket, sys, threading, time
d = sys.argv[1]
nthreads = int(next((a.split("=")[1] for a in sys.argv[2:] if a.startswith("--threads=")), "0"))
counts = [0] * nthreads
def count(i):
    while True:
        counts[i] += 1
        time.sleep(0.01)
for i in range(nthreads): threading.Thread(target=count, args=(i,), daemon=True).start()
def put(name, text):
    with open(os.path.join(d, name + ".tmp"), "w") as f: f.write(text)
    os.rename(os.path.join(d, name + ".tmp"), os.path.join(d, name))
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", 0)); l.listen(1)
c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
c.connect(l.getsockname()); s, _ = l.accept()
c.sendall(b"queued-c2s"); s.sendall(b"queued-s2c")
child = 0
if "--fork" in sys.argv[2:]:
    child = os.fork()
    if child == 0:
        n = 0
        while True:
            n += 1
            put("child", str(n))
            time.sleep(0.01)
put("ready", f"{os.getpid()}\n")
while not os.path.exists(os.path.join(d, "go")): time.sleep(0.05)
fails = []
def exactly(sock, n):
    got = b""
    while len(got) < n:
        b = sock.recv(n - len(got))
        if not b: raise EOFError("connection closed")
        got += b
    return got
try:
    for sock in (c, s): sock.settimeout(5)
    if exactly(s, 10) != b"queued-c2s": fails.append("client to server bytes wrong")
    if exactly(c, 10) != b"queued-s2c": fails.append("server to client bytes wrong")
    c.sendall(b"ping"); s.sendall(exactly(s, 4) + b"-pong")
    if exactly(c, 9) != b"ping-pong": fails.append("round trip wrong")
except Exception as e: fails.append(f"{type(e).__name__}: {e}")
before = list(counts)
deadline = time.time() + 10
while time.time() < deadline and any(counts[i] == before[i] for i in range(nthreads)): time.sleep(0.01)
for i in range(nthreads):
    if counts[i] == before[i]: fails.append(f"thread {i} no longer counts")
if child:
    def child_count():
        try: return int(open(os.path.join(d, "child")).read())
        except (OSError, ValueError): return 0
    n0 = child_count()
    deadline = time.time() + 10
    while time.time() < deadline and child_count() == n0: time.sleep(0.01)
    if child_count() == n0: fails.append("the child no longer counts")
    os.kill(child, 9); os.waitpid(child, 0)
for sock, n in ((c, "connecting end"), (s, "accepted end")):
    v = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    if v != 1: fails.append(f"{n}: SO_REUSEADDR is {v}")
put("result", ("PASS\n" if not fails else f"FAIL: {fails[0]}\n"))
sys.exit(0 if not fails else 1)
