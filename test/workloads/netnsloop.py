# python3 workload (protocol of wl.h) for a process alone in its own network namespace (loopback
# only): a listener on 127.0.0.1:PORT, a client connected to it and the accepted end, with unread
# data both ways at dump time. At go: the queued bytes arrive intact, more flows both ways, and the
# listener accepts a new client.
import os, socket, sys, time
d, port = sys.argv[1], int(sys.argv[2])
def put(name, text):
    with open(os.path.join(d, name + ".tmp"), "w") as f: f.write(text)
    os.rename(os.path.join(d, name + ".tmp"), os.path.join(d, name))
def pattern(n, seed): return bytes((i * 7 + seed) & 255 for i in range(n))
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind(("127.0.0.1", port)); ls.listen(4)
c = socket.create_connection(("127.0.0.1", port)); s, _ = ls.accept()
up, down = pattern(100_000, 1), pattern(50_000, 2)
c.sendall(up); s.sendall(down)          # nobody reads yet: data in flight both ways
put("ready", f"{os.getpid()}\n")
while not os.path.exists(os.path.join(d, "go")): time.sleep(0.01)
def recvn(sock, n):
    b = b""
    sock.settimeout(5)
    while len(b) < n:
        x = sock.recv(n - len(b))
        if not x: break
        b += x
    return b
fails = []
if recvn(s, len(up)) != up: fails.append("client->server bytes differ")
if recvn(c, len(down)) != down: fails.append("server->client bytes differ")
c.sendall(b"again"); 
if recvn(s, 5) != b"again": fails.append("new data does not flow")
n = socket.create_connection(("127.0.0.1", port), timeout=5); a, _ = ls.accept()
n.sendall(b"hello")
if recvn(a, 5) != b"hello": fails.append("listener does not accept new clients")
put("result", ("PASS\n" if not fails else f"FAIL: {fails[0]}\n") + f"pid={os.getpid()}\n")
sys.exit(0 if not fails else 1)
