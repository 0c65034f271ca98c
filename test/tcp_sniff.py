#!/usr/bin/env python3
"""A packet capture without tcpdump: counts TCP segments with RST or FIN set on one interface.

    tcp_sniff.py IFACE DIR PORT...

AF_PACKET sees what really left or entered the interface (after the nftables output hook:
packets the network lock drops never show up). Writes DIR/sniff.ready once listening, then
DIR/sniff ("rst=N fin=N packets=N" and one line per RST/FIN) after every matching segment
and every second. Only segments to or from one of the PORTs count.
"""
import os, socket, struct, sys, time

iface, d, ports = sys.argv[1], sys.argv[2], {int(p) for p in sys.argv[3:]}
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
s.bind((iface, 0))
s.settimeout(1.0)
rst = fin = packets = 0
lines = []


def write():
    tmp = os.path.join(d, "sniff.tmp")
    with open(tmp, "w") as f:
        f.write(f"rst={rst} fin={fin} packets={packets}\n" + "".join(lines[-50:]))
    os.rename(tmp, os.path.join(d, "sniff"))


write()
open(os.path.join(d, "sniff.ready"), "w").close()
last = time.time()
while True:
    try:
        pkt, info = s.recvfrom(65536)
    except socket.timeout:
        pkt = None
    if pkt and info[2] != socket.PACKET_OUTGOING:  # lo shows each packet twice: count it once
        eth = struct.unpack("!H", pkt[12:14])[0]
        tcp = None
        if eth == 0x0800 and pkt[14 + 9] == 6:
            tcp = 14 + (pkt[14] & 15) * 4
        elif eth == 0x86DD and pkt[14 + 6] == 6:
            tcp = 14 + 40
        if tcp is not None and len(pkt) >= tcp + 14:
            sport, dport = struct.unpack("!HH", pkt[tcp:tcp + 4])
            if sport in ports or dport in ports:
                packets += 1
                flags = pkt[tcp + 13]
                if flags & 4:
                    rst += 1
                    lines.append(f"RST {sport} -> {dport} at {time.time():.3f}\n")
                if flags & 1:
                    fin += 1
                    lines.append(f"FIN {sport} -> {dport} at {time.time():.3f}\n")
                if flags & 5:
                    write()
    if time.time() - last > 1:
        write()
        last = time.time()
