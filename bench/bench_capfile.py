"""Benchmark iptraf_mp.capture.capfile against pypcap and dpkt on a generated capture.

    python bench/bench_capfile.py [--packets 1000000] [--repeat 3] [--keep]

Writes a pcap of Ethernet/IPv4/TCP frames (sizes like real traffic: ACKs,
mid-size and full-size segments) to /tmp, then times one pass over it with
each reader and prints packets per second. Each figure is the best of
--repeat runs, from CPU time (wall time alongside), because the question is
what the reader costs, not what the machine's other tenants cost. The same
packets are also written as pcapng with PcapngWriter to time the writer and
the pcapng read path.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import dpkt
import pcap

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iptraf_mp.capture.capfile import PcapngWriter, open_capture  # noqa: E402


def make_frames() -> list[bytes]:
    """A few Ethernet/IPv4/TCP frames of the sizes that dominate real links."""
    frames = []
    for payload_len, sport in ((0, 40000), (512, 40001), (1460, 40002), (100, 40003)):
        tcp = dpkt.tcp.TCP(
            sport=sport, dport=443, seq=1, ack=1, flags=dpkt.tcp.TH_ACK, data=b"x" * payload_len
        )
        ip = dpkt.ip.IP(
            src=bytes([10, 0, 0, 1]), dst=bytes([10, 0, 0, 2]), p=dpkt.ip.IP_PROTO_TCP, data=tcp
        )
        eth = dpkt.ethernet.Ethernet(
            src=b"\x02\0\0\0\0\x01",
            dst=b"\x02\0\0\0\0\x02",
            type=dpkt.ethernet.ETH_TYPE_IP,
            data=ip,
        )
        frames.append(bytes(eth))
    return frames


def write_pcap(path: str, count: int, frames: list[bytes]) -> None:
    """Classic little-endian microsecond pcap, written with struct for speed."""
    rec = struct.Struct("<IIII")
    # Mix of a bulk transfer: 2 bare ACKs per 3 data segments (mean ~480 bytes).
    order = [frames[0], frames[2], frames[0], frames[1], frames[3]]
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        sec = 1_700_000_000
        chunk: list[bytes] = []
        for i in range(count):
            frame = order[i % len(order)]
            chunk.append(rec.pack(sec + i // 100_000, (i * 7) % 1_000_000, len(frame), len(frame)))
            chunk.append(frame)
            if len(chunk) >= 20_000:
                f.write(b"".join(chunk))
                chunk.clear()
        f.write(b"".join(chunk))


def best_of(repeat: int, run: Callable[[], int]) -> tuple[float, float, int]:
    """Best wall and best CPU seconds of `repeat` runs, and the packets seen.

    CPU time is the steadier figure on a shared machine: it does not count
    the time other processes held the core.
    """
    wall = cpu = float("inf")
    n = 0
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        n = run()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, n


def run_capfile(path: str) -> int:
    n = 0
    with open_capture(path) as r:
        for _ts, _ifi, _data, _wirelen in r:
            n += 1
    return n


def run_capfile_drain(path: str) -> int:
    # deque(maxlen=0) consumes in C: what is left is the reader's own cost.
    with open_capture(path) as r:
        it = iter(r)
        deque(it, maxlen=0)
    return -1


def run_pypcap(path: str) -> int:
    n = 0
    for _ts, _data in pcap.pcap(name=path):
        n += 1
    return n


def run_dpkt(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        for _ts, _data in dpkt.pcap.Reader(f):
            n += 1
    return n


def convert_to_pcapng(src: str, dst: str) -> int:
    n = 0
    with open_capture(src) as r, PcapngWriter(dst, comment="bench") as w:
        ifi = w.add_interface("eth0", 1)
        write = w.write
        for ts, _i, data, wirelen in r:
            write(ifi, ts, data, wirelen)
            n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the generated files in /tmp")
    args = ap.parse_args()

    tmpdir = tempfile.mkdtemp(prefix="bench_capfile_")
    pcap_path = os.path.join(tmpdir, "bench.pcap")
    ng_path = os.path.join(tmpdir, "bench.pcapng")
    t0 = time.perf_counter()
    write_pcap(pcap_path, args.packets, make_frames())
    print(
        f"generated {args.packets:,} packets, {os.path.getsize(pcap_path) / 1e6:.1f} MB "
        f"in {time.perf_counter() - t0:.1f} s: {pcap_path}"
    )

    results: list[tuple[str, float, float, int]] = []

    def measure(label: str, fn: Callable[[], int], expected: int) -> None:
        wall, cpu, n = best_of(args.repeat, fn)
        if n not in (-1, expected):
            print(f"  !! {label} saw {n} packets, expected {expected}")
        results.append((label, wall, cpu, expected))

    measure("capfile pcap, for-loop unpacking tuples", lambda: run_capfile(pcap_path), args.packets)
    measure("capfile pcap, drained by deque", lambda: run_capfile_drain(pcap_path), args.packets)
    measure("pypcap pcap.pcap(name=FILE)", lambda: run_pypcap(pcap_path), args.packets)
    measure("dpkt.pcap.Reader", lambda: run_dpkt(pcap_path), args.packets)
    measure(
        "PcapngWriter (reading pcap + writing pcapng)",
        lambda: convert_to_pcapng(pcap_path, ng_path),
        args.packets,
    )
    measure("capfile pcapng, for-loop unpacking tuples", lambda: run_capfile(ng_path), args.packets)
    measure("capfile pcapng, drained by deque", lambda: run_capfile_drain(ng_path), args.packets)

    print(f"best of {args.repeat} runs; packets/s and ns/packet from CPU time (wall in brackets)")
    print(f"{'':46s} {'packets/s':>12s} {'ns/packet':>10s} {'(wall ns)':>10s}")
    for label, wall, cpu, n in results:
        print(f"{label:46s} {n / cpu:12,.0f} {cpu / n * 1e9:10.0f} {wall / n * 1e9:10.0f}")

    if args.keep:
        print(f"kept {tmpdir}")
    else:
        for p in (pcap_path, ng_path):
            os.unlink(p)
        os.rmdir(tmpdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
