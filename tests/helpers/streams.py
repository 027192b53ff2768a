"""Generated packet streams that stress what decides time and state per connection: gaps
around the TCP timeout, its retirement and the flow idle, FINs and RSTs after timeouts,
ICMP errors quoting connections, fragments in and out of order, several interfaces with
clocks that step back, and mutated real frames (the malformed corpus and the fixtures).

`stream(seed, ...)` is a pure function of its arguments, so a failing hypothesis example
names the stream that failed.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

from iptraf_mp.capture.capfile import CaptureFileError, PcapngWriter, open_capture

from .packets import ACK, FIN, MAC_A, MAC_B, PSH, RST, SYN, TCP, UDP, eth, ipv4

TIMEOUT = 900.0
FLOW_IDLE = 120.0
# gaps (s) just below, at and above every boundary the engine keys on: the closed linger
# (60), the flow idle (120), the TCP timeout (900) and the retirement at twice it
GAPS = (0.2, 0.999, 1.0, 59.5, 60.0, 61.0, 119.5, 120.0, 121.0, 899.5, 900.0, 900.5,
        1799.0, 1800.0, 1801.0, 2500.0)
LINK_TYPES = (1, 1, 1, 113, 101)  # Ethernet (three interfaces), Linux SLL, raw IP


def segment(sport: int, dport: int, flags: int, seq: int, ack: int, data: bytes = b"") -> bytes:
    return TCP.pack(sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + data


def seed_frames(folders: list[Path]) -> list[tuple[int, bytes]]:
    """(link type, frame) of every frame in the captures of `folders`."""
    out = []
    for folder in folders:
        for path in sorted(folder.glob("*.pcap*")):
            try:
                with open_capture(str(path)) as rd:
                    for _ts, ifidx, data, _wl in rd:
                        out.append((rd.interfaces[ifidx].linktype, data))
            except CaptureFileError:
                continue
    return out


def mutate(rng: random.Random, frame: bytes) -> bytes:
    """One of the usual damages: bytes flipped, cut short, a 16-bit length set to an
    extreme, bytes added, or the frame's halves swapped."""
    b = bytearray(frame)
    op = rng.randrange(5)
    if op == 0 and b:  # flip bytes
        for _ in range(rng.randrange(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 1:  # truncate
        del b[rng.randrange(len(b) + 1):]
    elif op == 2 and b:  # lengths are the usual liars
        i = rng.randrange(len(b))
        b[i:i + 2] = rng.choice((b"\x00\x00", b"\xff\xff", b"\x00\x01", b"\x05\xdc"))
    elif op == 3:  # grow
        b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    else:  # splice two halves
        cut = rng.randrange(len(b) + 1)
        b = b[cut:] + b[:cut]
    return bytes(b)


def stream(seed: int, frames: int, seeds: list[tuple[int, bytes]], path: Path,
           mutated: float = 0.25, back: float = 0.05, gaps: float = 0.03,
           connections: int = 24) -> Path:
    """A pcapng of `frames` frames on five interfaces, written to `path`."""
    rng = random.Random(seed)
    w = PcapngWriter(path)
    ifaces = [w.add_interface(f"eth{i}", lt) for i, lt in enumerate(LINK_TYPES)]
    eth_ifaces = [i for i, lt in enumerate(LINK_TYPES) if lt == 1]
    by_lt: dict[int, list[int]] = {}
    for i, lt in enumerate(LINK_TYPES):
        by_lt.setdefault(lt, []).append(i)
    ts = 1_700_000_000.0 + rng.random()
    hosts = [bytes((10, 0, c // 8, 1 + c % 8)) for c in range(connections)]
    servers = [bytes((10, 1, 0, 1 + c % 5)) for c in range(connections)]
    pending: list[tuple[int, bytes]] = []  # later fragments held back to come first
    for _n in range(frames):
        r = rng.random()
        if r < gaps:
            ts += rng.choice(GAPS)
        else:
            ts += rng.random() * 0.02
        # another interface's clock, slightly behind (merged captures interleave)
        stamp = ts - rng.random() * 3.0 if rng.random() < back else ts
        r = rng.random()
        if r < mutated and seeds:
            lt, fr = rng.choice(seeds)
            if rng.random() < 0.7:
                fr = mutate(rng, fr)
            idx = rng.choice(by_lt.get(lt, [ifaces[0]]))
            w.write(idx, stamp, fr, len(fr))
            continue
        c = rng.randrange(connections)
        cli, srv = hosts[c], servers[c]
        cport, sport = 20000 + c % 7, rng.choice((80, 443))
        iface = eth_ifaces[c % len(eth_ifaces)] if rng.random() < 0.9 else rng.choice(eth_ifaces)
        fwd = rng.random() < 0.5
        src, dst, sp, dp = (cli, srv, cport, sport) if fwd else (srv, cli, sport, cport)
        r = rng.random()
        if r < 0.08:
            body = UDP.pack(sp, 53, 8 + 12, 0) + b"q" * 12
            l3 = ipv4(src, dst, 17, body)
        elif r < 0.13:  # an ICMP error (port or host unreachable) quoting the connection
            quoted = ipv4(cli, srv, 6, segment(cport, sport, 0x10, 1, 1))[:28]
            code = rng.choice((1, 3))
            l3 = ipv4(bytes((10, 9, 9, 9)), cli, 1, struct.pack("!BBHI", 3, code, 0, 0) + quoted)
        elif r < 0.20:  # a fragmented segment; sometimes its later fragments come first
            seg = segment(sp, dp, 0x18, rng.randrange(1 << 32), 1, b"d" * 120)
            ipid = rng.randrange(1 << 16)
            parts = [ipv4(src, dst, 6, seg[o:o + 64], ipid, (0x2000 if o + 64 < len(seg)
                                                           else 0) | (o // 8))
                     for o in range(0, len(seg), 64)]
            if rng.random() < 0.3:
                for p in parts[1:]:
                    w.write(iface, stamp, eth(p), len(p) + 14)
                parts = parts[:1]
            elif rng.random() < 0.3:
                pending.extend((iface, p) for p in parts[1:])
                parts = parts[:1]
            for p in parts:
                w.write(iface, stamp, eth(p), len(p) + 14)
            continue
        else:
            flags = rng.choice((SYN, SYN | ACK, ACK, ACK, ACK | PSH, ACK | PSH, FIN | ACK,
                                FIN | ACK, RST, RST | ACK, ACK))
            data = b"x" * rng.choice((0, 0, 0, 10, 200))
            seq, ack = rng.choice(((1, 1), (2, 2), (rng.randrange(1 << 32), 2)))
            l3 = ipv4(src, dst, 6, segment(sp, dp, flags, seq, ack, data))
        fr = eth(l3, smac=MAC_A if fwd else MAC_B, dmac=MAC_B if fwd else MAC_A)
        w.write(iface, stamp, fr, len(fr))
        if pending and rng.random() < 0.5:
            idx, p = pending.pop(0)
            w.write(idx, stamp, eth(p), len(p) + 14)
    w.close()
    return path
