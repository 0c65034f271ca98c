# python3 workload (protocol of wl.h): makes itself a child subreaper (prctl through ctypes);
# at go it checks the flag is still set.
import ctypes, os, sys, time
libc = ctypes.CDLL(None)
d = sys.argv[1]
def put(name, text):
    with open(os.path.join(d, name + ".tmp"), "w") as f: f.write(text)
    os.rename(os.path.join(d, name + ".tmp"), os.path.join(d, name))
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
put("ready", f"{os.getpid()}\n")
while not os.path.exists(os.path.join(d, "go")): time.sleep(0.01)
v = ctypes.c_int(0)
libc.prctl(37, ctypes.byref(v), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
put("result", "PASS\n" if v.value == 1 else f"FAIL: child subreaper flag is {v.value}\n")
sys.exit(0 if v.value == 1 else 1)
