#!/usr/bin/env python3
"""Live-migration workload (python3): a counter that keeps writing its memory, and checks it.

    migcounter.py DIR MIB [--echo ADDR:PORT] [--rate PAGES_PER_S] [--selftest-corrupt]

MIB MiB of bytearray, page i filled with a pattern of i. Step k (one every 2 ms) rewrites page
(k * 7919) mod npages with a pattern of k, so about 500 pages a second are written whatever the
size (--rate: that many a second instead). DIR/count holds the step count (every 20 steps). With --echo it also listens on ADDR:PORT,
accepts one client and echoes everything it sends (tcp_client.py checks the stream), between steps.
Writes DIR/ready once set up. When DIR/go appears it replays steps 1..k and compares every page
with what the replay says it holds (a migration that lost or mixed up a page fails), then writes
DIR/result: "PASS steps=K" or "FAIL: reason", and exits.
--selftest-corrupt: one byte of one page changed behind the bookkeeping's back after ready.
--flip-flags: four more private anonymous mappings of 16 pages whose VmFlags it flips at every step, one
mapping after the other (MADV_DONTFORK/DOFORK, MADV_DONTDUMP/DODUMP, MADV_HUGEPAGE/NOHUGEPAGE,
mlock/munlock); at the check each must show in /proc/self/smaps the state it last set (either one
when it was stopped between noting a flip and making it), and still hold its bytes.
"""
import os, select, socket, sys, time

d, mib = sys.argv[1], int(sys.argv[2])
echo = sys.argv[sys.argv.index("--echo") + 1] if "--echo" in sys.argv else None
corrupt = "--selftest-corrupt" in sys.argv
rate = float(sys.argv[sys.argv.index("--rate") + 1]) if "--rate" in sys.argv else 500.0
PAGE = 4096
npages = (mib << 20) // PAGE


def initial(i):
    return (i.to_bytes(4, "little") + b"\x5a\xa5\x3c\xc3") * (PAGE // 8)


def stepped(k):
    return (k.to_bytes(8, "little")) * (PAGE // 8)


def write(name, text):
    tmp = os.path.join(d, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(d, name))


os.setsid()  # its own session (and group): the init of its PID namespace has none inside it otherwise
mem = bytearray(npages * PAGE)
for i in range(npages):
    mem[i * PAGE:(i + 1) * PAGE] = initial(i)

ls = conn = None
if echo:
    host, port = echo.rsplit(":", 1)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, int(port)))
    ls.listen(1)
write("ready", "ready\n")
if ls:
    conn, _ = ls.accept()
    conn.setblocking(False)

flip = "--flip-flags" in sys.argv
regions = []
if flip:
    import ctypes, mmap

    libc = ctypes.CDLL(None, use_errno=True)
    FL = 16 * PAGE
    # (advice that sets the flag, advice that clears it, its VmFlags mnemonic); None: mlock/munlock
    for on, off, name in [
        (mmap.MADV_DONTFORK, mmap.MADV_DOFORK, "dc"),
        (mmap.MADV_DONTDUMP, mmap.MADV_DODUMP, "dd"),
        (mmap.MADV_HUGEPAGE, mmap.MADV_NOHUGEPAGE, "hg"),
        (None, None, "lo"),
    ]:
        m = mmap.mmap(-1, FL, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        m[:] = bytes([len(regions) + 0x41]) * FL
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        regions.append({"m": m, "addr": addr, "on": on, "off": off, "name": name, "want": False, "done": False})
    flips = 0


def flip_one(r, state):
    r["want"] = state  # noted first: stopped between the two, either state is right
    if r["on"] is None:
        if (libc.mlock if state else libc.munlock)(ctypes.c_void_p(r["addr"]), ctypes.c_size_t(FL)) != 0:
            raise OSError(ctypes.get_errno(), "mlock/munlock")
    else:
        r["m"].madvise(r["on"] if state else r["off"])
    r["done"] = state


if corrupt:
    mem[(npages // 3) * PAGE + 100] ^= 0x40
k = 0
pending = b""
next_step = time.monotonic()
while not os.path.exists(os.path.join(d, "go")):
    now = time.monotonic()
    if next_step < now - 0.1:
        next_step = now  # do not catch up after a stop (dump, migration)
    while now >= next_step:
        k += 1
        p = (k * 7919) % npages
        mem[p * PAGE:(p + 1) * PAGE] = stepped(k)
        if regions:
            r = regions[k % len(regions)]
            flip_one(r, not r["done"])
            flips += 1
        if k % 20 == 0:
            write("count", str(k))
        next_step += 1.0 / rate
    wait = max(0.0, min(0.002, next_step - time.monotonic()))
    if conn:
        r, w, _ = select.select([conn] if len(pending) < (1 << 20) else [], [conn] if pending else [], [], wait)
        if r:
            b = conn.recv(65536)
            if not b:  # the client is done (it checked its own stream)
                conn.close()
                conn = None
                continue
            pending += b
        if w:
            n = conn.send(pending)
            pending = pending[n:]
    else:
        time.sleep(wait)

# the check: every page holds what a replay of steps 1..k says it must (page by page, so that a
# large workload needs no second copy of its memory)
last = {}
for j in range(1, k + 1):
    last[(j * 7919) % npages] = j
bad = 0
for i in range(npages):
    want = stepped(last[i]) if i in last else initial(i)
    if mem[i * PAGE:(i + 1) * PAGE] != want:
        bad += 1
if bad:
    write("result", f"FAIL: memory differs in {bad} of {npages} pages after {k} steps\n")
    sys.exit(1)
if regions:
    smaps = open("/proc/self/smaps").read().split("\n")
    for i, r in enumerate(regions):
        flags = None
        for j, line in enumerate(smaps):
            a = line.split(" ", 1)[0]
            if "-" in a and all(c in "0123456789abcdef-" for c in a):
                lo, hi = (int(x, 16) for x in a.split("-"))
                if lo <= r["addr"] < hi:
                    for f in smaps[j + 1 :]:
                        if f.startswith("VmFlags:"):
                            flags = f.split()[1:]
                            break
                    break
        has = flags is not None and r["name"] in flags
        if flags is None or (r["want"] == r["done"] and has != r["done"]):
            write("result", f"FAIL: mapping {i} shows {flags} after {flips} flips, '{r['name']}' should be {r['done']}\n")
            sys.exit(1)
        if r["m"][:] != bytes([i + 0x41]) * FL:
            write("result", f"FAIL: mapping {i} does not hold its bytes\n")
            sys.exit(1)
    write("result", f"PASS steps={k} flips={flips}\n")
    sys.exit(0)
write("result", f"PASS steps={k}\n")
