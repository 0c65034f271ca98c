# python3 workload (protocol of wl.h): UDP sockets keep their bindings and connections.
# A bound socket on 127.0.0.1:PORT and [::1]:PORT+1, and a socket connected to 127.0.0.1:PORT+2.
# At go it answers one datagram on each bound socket ("ping" -> "pong:<name>") and checks names.
import os, socket, sys, time
d, port = sys.argv[1], int(sys.argv[2])
def put(name, text):
    with open(os.path.join(d, name + ".tmp"), "w") as f: f.write(text)
    os.rename(os.path.join(d, name + ".tmp"), os.path.join(d, name))
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", port))
b = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); b.bind(("::1", port + 1))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.connect(("127.0.0.1", port + 2))
names = (a.getsockname(), b.getsockname()[:2], c.getsockname(), c.getpeername())
put("ready", f"{os.getpid()}\n")
while not os.path.exists(os.path.join(d, "go")): time.sleep(0.01)
fails = []
if (a.getsockname(), b.getsockname()[:2], c.getsockname(), c.getpeername()) != names: fails.append("names changed")
for s, n in ((a, "v4"), (b, "v6")):
    s.settimeout(5)
    try:
        data, peer = s.recvfrom(100)
        s.sendto(b"pong:" + n.encode() + b":" + data, peer)
    except Exception as e: fails.append(f"{n}: {e}")
c.send(b"hello from the connected socket")
put("result", ("PASS\n" if not fails else f"FAIL: {fails[0]}\n") + f"names={names}\n")
sys.exit(0 if not fails else 1)
