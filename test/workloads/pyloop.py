# python3 workload (same protocol as wl.h): state in a dict and a list, a counter that must keep
# growing; at go it checks its state and that it is still the same process.
import os, sys, time, hashlib
d = sys.argv[1]
state = {"n": 0, "words": {f"k{i}": i * i for i in range(5000)}, "pid": os.getpid()}
blob = bytes(range(256)) * 4096
digest = hashlib.sha256(blob).hexdigest()
def put(name, text):
    with open(os.path.join(d, name + ".tmp"), "w") as f: f.write(text)
    os.rename(os.path.join(d, name + ".tmp"), os.path.join(d, name))
# ready once the counter has moved (10 turns): the dump then holds a counter that must not go back
while not os.path.exists(os.path.join(d, "go")):
    state["n"] += 1
    if state["n"] == 10: put("ready", f"{os.getpid()}\n")
    time.sleep(0.005)
n_at_go = state["n"]
time.sleep(0.05)
fails = []
if state["pid"] != os.getpid(): fails.append(f"pid changed {state['pid']} -> {os.getpid()}")
if any(state["words"][f"k{i}"] != i * i for i in range(5000)): fails.append("dict contents changed")
if hashlib.sha256(blob).hexdigest() != digest: fails.append("blob changed")
if n_at_go < 10: fails.append(f"counter too small {n_at_go}")
put("result", ("PASS\n" if not fails else f"FAIL: {fails[0]}\n") + f"n={n_at_go}\n")
sys.exit(0 if not fails else 1)
