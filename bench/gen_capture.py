"""Generate the benchmark capture: N packets over C TCP connections (plus some UDP), Ethernet.

Connections open with a handshake, exchange data in both directions, and close with FIN/ACK,
interleaved so that about `--concurrent` are open at once. Deterministic for a given seed.
Usage: gen_capture.py OUT.pcap [--packets 1000000] [--connections 20000]
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# the headers as the tests build them (declared once, there)
from tests.helpers.packets import ETH, MAC_A, MAC_B, TCP, UDP  # noqa: E402
from tests.helpers.packets import IPV4 as IP  # noqa: E402

REC = struct.Struct("<IIII")


def frame(src: bytes, dst: bytes, sport: int, dport: int, flags: int, seq: int, ack: int,
          payload: int, smac: bytes, dmac: bytes) -> bytes:
    tcp = TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
    tlen = 20 + 20 + payload
    ip = IP.pack(0x45, 0, tlen, 0, 0x4000, 64, 6, 0, src, dst)
    return ETH.pack(dmac, smac, 0x0800) + ip + tcp + b"\x00" * payload


def udp_frame(src: bytes, dst: bytes, sport: int, dport: int, payload: int) -> bytes:
    ip = IP.pack(0x45, 0, 28 + payload, 0, 0, 64, 17, 0, src, dst)
    return (ETH.pack(MAC_B, MAC_A, 0x0800) + ip + UDP.pack(sport, dport, 8 + payload, 0)
            + b"\x00" * payload)


def conversation(i: int, per_conn: int, rng: random.Random):
    """Yield frames of one TCP connection: SYN, SYN/ACK, ACK, data..., FIN/ACK x2, ACK."""
    c = struct.pack("!I", 0x0A000000 + (i % 60000) + 1)
    s = struct.pack("!I", 0xC0A80000 + (i * 7919) % 65000 + 1)
    cp, sp = 1024 + i % 60000, (80, 443, 22, 25, 8080)[i % 5]
    cs, ss = rng.randrange(1 << 32), rng.randrange(1 << 32)
    yield frame(c, s, cp, sp, 0x02, cs, 0, 0, MAC_A, MAC_B)
    yield frame(s, c, sp, cp, 0x12, ss, cs + 1, 0, MAC_B, MAC_A)
    yield frame(c, s, cp, sp, 0x10, cs + 1, ss + 1, 0, MAC_A, MAC_B)
    cs += 1
    ss += 1
    for k in range(max(0, per_conn - 7)):
        if k % 2 == 0:
            n = rng.choice((100, 500, 1460))
            yield frame(c, s, cp, sp, 0x18, cs, ss, n, MAC_A, MAC_B)
            cs += n
        else:
            n = rng.choice((0, 1460, 1460, 200))
            yield frame(s, c, sp, cp, 0x18 if n else 0x10, ss, cs, n, MAC_B, MAC_A)
            ss += n
    yield frame(c, s, cp, sp, 0x11, cs, ss, 0, MAC_A, MAC_B)
    yield frame(s, c, sp, cp, 0x11, ss, cs + 1, 0, MAC_B, MAC_A)
    yield frame(c, s, cp, sp, 0x10, cs + 1, ss + 1, 0, MAC_A, MAC_B)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--connections", type=int, default=20_000)
    ap.add_argument("--concurrent", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    udp_share = 0.05
    per_conn = int(a.packets * (1 - udp_share) / a.connections)
    ts = 1_700_000_000.0
    written = 0
    with open(a.out, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        active: list = []
        nxt = 0
        while written < a.packets:
            while len(active) < a.concurrent and nxt < a.connections:
                active.append(conversation(nxt, per_conn, rng))
                nxt += 1
            if rng.random() < udp_share or not active:
                f = udp_frame(b"\x0a\x00\x00\x05", b"\x0a\x00\x00\x35", 5353, 53,
                              rng.randrange(20, 200))
            else:
                j = rng.randrange(len(active))
                try:
                    f = next(active[j])
                except StopIteration:
                    active[j] = active[-1]
                    active.pop()
                    continue
            ts += 0.00002
            sec = int(ts)
            fh.write(REC.pack(sec, int(round((ts - sec) * 1e6)) % 1000000, len(f), len(f)))
            fh.write(f)
            written += 1
    print(f"{a.out}: {written} packets, {nxt} connections")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
