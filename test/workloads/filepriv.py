# python3 workload (same protocol as wl.h): a private writable mapping of its own file DIR/data
# (64 pages, page i holding "F<i>" over and over). Before ready it writes pages 0-15 (copied on
# write: private pages "P0") and reads the others (the file's pages). When DIR/step-1 appears it
# writes pages 2, 3 (private already) and 20, 21 (the file's until then) with "P1", drops pages 5
# and 6 (MADV_DONTNEED: the file's pages come back) and drops then writes page 7 ("P1"); it writes
# DIR/stepped-1. At go it checks every page against that.
import mmap, os, sys, time

d = sys.argv[1]
PAGE, N = 4096, 64


def fill(tag, i):
    t = f"{tag}{i}.".encode()
    return (t * (PAGE // len(t) + 1))[:PAGE]


def put(name, text):
    with open(os.path.join(d, name + ".tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(d, name + ".tmp"), os.path.join(d, name))


with open(os.path.join(d, "data"), "wb") as f:
    for i in range(N):
        f.write(fill("F", i))
fd = os.open(os.path.join(d, "data"), os.O_RDWR)
m = mmap.mmap(fd, N * PAGE, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
want = {}
for i in range(N):
    if i < 16:
        m[i * PAGE : (i + 1) * PAGE] = fill("P0", i)
        want[i] = fill("P0", i)
    else:
        _ = m[i * PAGE]
        want[i] = fill("F", i)
put("ready", f"{os.getpid()}\n")
stepped = False
while not os.path.exists(os.path.join(d, "go")):
    if not stepped and os.path.exists(os.path.join(d, "step-1")):
        for i in (2, 3, 20, 21):
            m[i * PAGE : (i + 1) * PAGE] = fill("P1", i)
            want[i] = fill("P1", i)
        for i in (5, 6):
            m.madvise(mmap.MADV_DONTNEED, i * PAGE, PAGE)
            want[i] = fill("F", i)
        m.madvise(mmap.MADV_DONTNEED, 7 * PAGE, PAGE)
        m[7 * PAGE : 8 * PAGE] = fill("P1", 7)
        want[7] = fill("P1", 7)
        stepped = True
        put("stepped-1", "done\n")
    time.sleep(0.005)
bad = [i for i in range(N) if m[i * PAGE : (i + 1) * PAGE] != want[i]]
if bad:
    put("result", f"FAIL: pages {bad} differ (page {bad[0]} starts {m[bad[0] * PAGE : bad[0] * PAGE + 8]!r})\n")
    sys.exit(1)
put("result", "PASS\n")
