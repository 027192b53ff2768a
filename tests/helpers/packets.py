"""Frames built by hand for tests, benchmarks and fixtures: Ethernet, IPv4/IPv6, TCP, UDP,
and a classic pcap writer. Each header's layout is declared once, here."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

ETH = struct.Struct("!6s6sH")
IPV4 = struct.Struct("!BBHHHBBH4s4s")
IPV6 = struct.Struct("!IHBB16s16s")
TCP = struct.Struct("!HHIIBBHHH")
UDP = struct.Struct("!HHHH")
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10


def ip4(text: str) -> bytes:
    return socket.inet_aton(text)


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ipid: int = 0,
         frag: int = 0x4000, total: int | None = None) -> bytes:
    """An IPv4 header (DF by default; `frag` is the flags+offset word) and its payload."""
    tl = 20 + len(payload) if total is None else total
    return IPV4.pack(0x45, 0, tl, ipid, frag, 64, proto, 0, src, dst) + payload


def tcp(sport: int, dport: int, flags: int, payload: int = 0, seq: int = 1000,
        ack: int = 0) -> bytes:
    return TCP.pack(sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + b"\x00" * payload


def udp(sport: int, dport: int, payload: int = 0) -> bytes:
    return UDP.pack(sport, dport, 8 + payload, 0) + b"\x00" * payload


def eth(l3: bytes, ethertype: int = 0x0800, smac: bytes = MAC_A, dmac: bytes = MAC_B) -> bytes:
    return ETH.pack(dmac, smac, ethertype) + l3


def tcp4_frame(src: str, sport: int, dst: str, dport: int, flags: int = ACK,
               payload: int = 0) -> bytes:
    return eth(ipv4(ip4(src), ip4(dst), 6, tcp(sport, dport, flags, payload)))


def write_pcap(path: Path, frames: list[tuple[float, bytes]]) -> Path:
    """Classic pcap, microsecond timestamps, Ethernet."""
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, f in frames:
            sec = int(ts)
            fh.write(struct.pack("<IIII", sec, round((ts - sec) * 1e6), len(f), len(f)))
            fh.write(f)
    return path
