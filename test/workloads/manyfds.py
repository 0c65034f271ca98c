# python3 workload (protocol of wl.h) for the -v4 log test: a regular file, a pipe with data, a
# unix socketpair and a second thread; at go it checks each is still there and works.
import os, socket, sys, threading, time
d = sys.argv[1]
def put(name, text):
    with open(os.path.join(d, name + ".tmp"), "w") as f: f.write(text)
    os.rename(os.path.join(d, name + ".tmp"), os.path.join(d, name))
f = open(os.path.join(d, "data"), "w+"); f.write("hello"); f.flush()
r, w = os.pipe(); os.write(w, b"in the pipe")
a, b = socket.socketpair(); a.send(b"queued")
stop = threading.Event()
t = threading.Thread(target=stop.wait); t.start()
put("ready", f"{os.getpid()}\n")
while not os.path.exists(os.path.join(d, "go")): time.sleep(0.01)
f.seek(0)
ok = [f.read() == "hello", os.read(r, 64) == b"in the pipe", b.recv(64) == b"queued", t.is_alive()]
stop.set(); t.join()
put("result", "PASS\n" if all(ok) else f"FAIL: file, pipe, socket, thread = {ok}\n")
