"""Benchmark the IPFIX encoder and the UDP exporter.

    .venv/bin/python bench/bench_ipfix.py [--records N] [--batch B] [--mtu M]

Prints records/s for IpfixEncoder.encode alone, and for IpfixExporter.export to a
UDP sink on 127.0.0.1 that a thread drains (so the figure includes the send
syscalls but not collector-side decoding).
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iptraf_mp.outputs.ipfix.encoder import FlowRecord, IpfixEncoder  # noqa: E402
from iptraf_mp.outputs.ipfix.transport import IpfixExporter  # noqa: E402


def make_records(n: int, v6_share: float, seed: int = 1) -> list[FlowRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        width = 16 if rng.random() < v6_share else 4
        out.append(
            FlowRecord(
                src=rng.randbytes(width),
                dst=rng.randbytes(width),
                sport=rng.randrange(1024, 65536),
                dport=rng.choice([53, 80, 443, 22]),
                proto=rng.choice([6, 6, 6, 17]),
                packets=rng.randrange(1, 10_000),
                octets=rng.randrange(40, 10_000_000),
                tcp_flags=0x18,
                ifindex=rng.randrange(1, 9),
                direction=rng.randrange(2),
                icmp_type_code=0,
                start_ms=1_700_000_000_000 + i,
                end_ms=1_700_000_030_000 + i,
                end_reason=2,
            )
        )
    return out


def bench_encode(records: list[FlowRecord], batch: int, mtu: int, rounds: int) -> tuple[float, int]:
    best = float("inf")
    size = 0
    for _ in range(rounds):
        enc = IpfixEncoder(odid=1, mtu=mtu)
        t0 = time.perf_counter()
        size = 0
        for i in range(0, len(records), batch):
            for msg in enc.encode(records[i : i + batch], 1_700_000_000):
                size += len(msg)
        best = min(best, time.perf_counter() - t0)
    return len(records) / best, size


@dataclass(slots=True)
class SinkCounts:
    datagrams: int = 0
    records: int = 0


def drain(sock: socket.socket, counts: SinkCounts, stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            msg = sock.recv(65535)
        except TimeoutError:
            continue
        counts.datagrams += 1
        off = 16
        while off + 4 <= len(msg):
            set_id, length = struct.unpack_from("!HH", msg, off)
            if set_id == 256:
                counts.records += (length - 4) // 56
            elif set_id == 257:
                counts.records += (length - 4) // 80
            off += max(length, 4)


def bench_export(records: list[FlowRecord], batch: int, mtu: int) -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    sink.bind(("127.0.0.1", 0))
    counts = SinkCounts()
    stop = threading.Event()
    thread = threading.Thread(target=drain, args=(sink, counts, stop), daemon=True)
    thread.start()
    exp = IpfixExporter(f"127.0.0.1:{sink.getsockname()[1]}", odid=1, mtu=mtu)
    t0 = time.perf_counter()
    for i in range(0, len(records), batch):
        exp.export(records[i : i + batch])
    elapsed = time.perf_counter() - t0
    exp.close()
    time.sleep(0.5)
    stop.set()
    thread.join()
    sink.close()
    s = exp.stats
    print(
        f"export UDP: {s.sent_records / elapsed:,.0f} records/s, "
        f"{s.sent_messages / elapsed:,.0f} messages/s, "
        f"{s.sent_bytes * 8 / elapsed / 1e6:,.0f} Mbit/s"
        f" (sent {s.sent_records:,}, dropped {s.dropped_records:,}, errors {s.errors}; "
        f"sink got {counts.records:,} records in {counts.datagrams:,} datagrams)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=1000, help="records per encode/export call")
    ap.add_argument("--mtu", type=int, default=1400)
    ap.add_argument("--v6-share", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    records = make_records(args.records, args.v6_share)
    print(
        f"{args.records:,} records ({args.v6_share:.0%} IPv6), batches of {args.batch}, "
        f"mtu {args.mtu}, Python {sys.version.split()[0]}"
    )
    rate, size = bench_encode(records, args.batch, args.mtu, args.rounds)
    print(f"encode:     {rate:,.0f} records/s, {rate * size / len(records) / 1e6:,.1f} MB/s")
    bench_export(records, args.batch, args.mtu)


if __name__ == "__main__":
    main()
