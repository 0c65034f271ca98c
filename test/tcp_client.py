#!/usr/bin/env python3
"""Echo client for test/workloads/tcpserver.c, checking its own byte stream.

    tcp_client.py HOST PORT SEED DIR NAME

Sends a deterministic stream (a 65521-byte random pattern from SEED, repeated) as fast as the
server takes it, reads the echo slowly (4 KiB per 5 ms) and checks every byte. Writes
DIR/NAME.port (its local port) once connected and DIR/NAME.progress ("sent recvd") every 100 ms.
While DIR/NAME.pause exists it reads nothing (and still sends as much as the server takes), so
the server's queues towards it fill up and stay full. When DIR/stop exists it stops sending,
reads until every byte came back and writes DIR/NAME.result: "PASS sent=N" or "FAIL: reason".
Any reset, early EOF or wrong byte is a failure.
"""
import os, random, socket, sys, time

host, port, seed, d, name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
L = 65521
pat = random.Random(seed).randbytes(L)
pat2 = pat + pat


def chunk(off, n):
    i = off % L
    return pat2[i:i + n]


def write(fname, text):
    tmp = os.path.join(d, fname + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(d, fname))


sent = recvd = 0
try:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    s.settimeout(10)
    s.connect((host, port))
    s.setblocking(False)
    write(name + ".port", f"{s.getsockname()[1]}\n")
    pause = os.path.join(d, name + ".pause")
    stopping = False
    last = 0.0
    deadline = None
    while True:
        if not stopping and os.path.exists(os.path.join(d, "stop")):
            stopping = True
            deadline = time.time() + 60
        if not stopping:
            try:
                n = s.send(chunk(sent, 32768))
                sent += n
            except BlockingIOError:
                pass
        try:
            if os.path.exists(pause):
                raise BlockingIOError
            data = s.recv(4096)
            if not data:
                raise RuntimeError(f"server closed the connection after {recvd} of {sent} bytes")
            if data != chunk(recvd, len(data)):
                bad = next(i for i in range(len(data)) if data[i] != chunk(recvd, len(data))[i])
                raise RuntimeError(f"wrong byte at stream offset {recvd + bad}")
            recvd += len(data)
        except BlockingIOError:
            pass
        now = time.time()
        if now - last > 0.1:
            write(name + ".progress", f"{sent} {recvd}\n")
            last = now
        if stopping and recvd == sent:
            break
        if deadline and now > deadline:
            raise RuntimeError(f"echo incomplete: {recvd} of {sent} bytes back")
        time.sleep(0.005)
    s.close()
    write(name + ".progress", f"{sent} {recvd}\n")
    write(name + ".result", f"PASS sent={sent}\n")
except Exception as e:
    write(name + ".result", f"FAIL: {type(e).__name__}: {e} (sent={sent} recvd={recvd}, at {time.time():.3f})\n")
    sys.exit(1)
