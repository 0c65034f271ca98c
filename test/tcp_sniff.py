#!/usr/bin/env python3
"""A packet capture without tcpdump: counts TCP segments with RST or FIN set on one interface.

    tcp_sniff.py IFACE DIR PORT...      (IFACE "any": every interface of the namespace)

AF_PACKET sees what really left or entered the interface (after the nftables output hook:
packets the network lock drops never show up). Writes DIR/sniff.ready once listening, then
DIR/sniff ("rst=N fin=N packets=N" and one line per RST/FIN) after every matching segment
and every second. Only segments to or from one of the PORTs count. Each RST or FIN line names
the segment whole (addresses, seq, ack, window, length) and is preceded, for the first RST, by
the segments of its connection seen before it, so a test failing on a reset shows who sent it
and what it answered.
"""
import collections, os, socket, struct, sys, time

iface, d, ports = sys.argv[1], sys.argv[2], {int(p) for p in sys.argv[3:]}
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
if iface != "any":
    s.bind((iface, 0))
s.settimeout(1.0)
rst = fin = packets = 0
lines = []
recent = collections.deque(maxlen=400)  # the last segments (any connection on the ports)


def write():
    tmp = os.path.join(d, "sniff.tmp")
    with open(tmp, "w") as f:
        f.write(f"rst={rst} fin={fin} packets={packets}\n" + "".join(lines[-80:]))
    os.rename(tmp, os.path.join(d, "sniff"))


def describe(t, src, dst, sport, dport, seq, ack, flags, win, ln, out):
    names = "".join(n for b, n in ((2, "S"), (1, "F"), (4, "R"), (8, "P"), (16, "."))
                    if flags & b)
    return (f"{t:.3f} {'out' if out else 'in '} {src}:{sport} > {dst}:{dport} [{names}] "
            f"seq={seq} ack={ack} win={win} len={ln}\n")


write()
open(os.path.join(d, "sniff.ready"), "w").close()
last = time.time()
while True:
    try:
        pkt, info = s.recvfrom(65536)
    except socket.timeout:
        pkt = None
    if pkt and not (iface == "lo" and info[2] == socket.PACKET_OUTGOING):  # lo shows each packet twice: count it once
        eth = struct.unpack("!H", pkt[12:14])[0]
        tcp = None
        if eth == 0x0800 and pkt[14 + 9] == 6:
            tcp = 14 + (pkt[14] & 15) * 4
            src, dst = socket.inet_ntop(socket.AF_INET, pkt[26:30]), socket.inet_ntop(socket.AF_INET, pkt[30:34])
            end = 14 + struct.unpack("!H", pkt[16:18])[0]
        elif eth == 0x86DD and pkt[14 + 6] == 6:
            tcp = 14 + 40
            src, dst = socket.inet_ntop(socket.AF_INET6, pkt[22:38]), socket.inet_ntop(socket.AF_INET6, pkt[38:54])
            end = tcp + struct.unpack("!H", pkt[18:20])[0]
        if tcp is not None and len(pkt) >= tcp + 20:
            sport, dport, seq, ack, off, flags, win = struct.unpack("!HHIIBBH", pkt[tcp:tcp + 16])
            if sport in ports or dport in ports:
                packets += 1
                ln = end - tcp - (off >> 4) * 4
                seg = (time.time(), src, dst, sport, dport, seq, ack, flags, win, ln, info[2] == socket.PACKET_OUTGOING)
                recent.append(seg)
                if flags & 4:
                    if not rst:
                        conn = {(src, sport), (dst, dport)}
                        lines.append("segments of that connection before the first RST:\n")
                        lines.extend(["  " + describe(*x) for x in list(recent)[:-1] if {(x[1], x[3]), (x[2], x[4])} == conn][-40:])
                    rst += 1
                    lines.append("RST " + describe(*seg))
                if flags & 1:
                    fin += 1
                    lines.append("FIN " + describe(*seg))
                if flags & 5:
                    write()
    if time.time() - last > 1:
        write()
        last = time.time()
