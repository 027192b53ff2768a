"""Floods: the TCP table is bounded, and IPTraf's manual's SYN-flood sign is counted."""

from __future__ import annotations

import socket
import struct

from iptraf_mp.core.decode import decode
from iptraf_mp.core.engine import Engine, Settings

from .conftest import CORPUS, need_corpus, reference, run_cli_json

SYN, ACK, RST = 0x02, 0x10, 0x04


def frame(src: int, sport: int, dst: str, dport: int, flags: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 1000, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, struct.pack("!I", src),
                     socket.inet_aton(dst))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp


def feed(engine: Engine, f: bytes, ts: float, n: int) -> None:
    engine.feed(ts, "eth0", decode(1, f, len(f)), n)


def test_table_is_bounded_and_new_connections_are_counted_not_tracked():
    e = Engine(Settings(max_pairs=1000))
    for i in range(5000):
        feed(e, frame(0x0B000000 + i, 1000 + i % 60000, "10.0.0.2", 80, SYN), 100.0, i + 1)
    assert len(e.tcp.pairs) == 1000
    e.sync_counters()
    assert e.summary.untracked == 4000
    assert e.summary.tcp.packets == 5000  # every packet still counts in the summary


def test_full_table_evicts_oldest_ended_pairs_first():
    e = Engine(Settings(max_pairs=10))
    for i in range(10):
        feed(e, frame(0x0B000000 + i, 1000, "10.0.0.2", 80, SYN), 100.0 + i, i + 1)
    # the server refuses connections 3 and 7: they end (RESET) and become evictable
    for i in (3, 7):
        tcp = struct.pack("!HHIIBBHHH", 80, 1000, 0, 2, 5 << 4, RST | ACK, 0, 0, 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0,
                         socket.inet_aton("10.0.0.2"), struct.pack("!I", 0x0B000000 + i))
        f = b"\x04" * 6 + b"\x02" * 6 + b"\x08\x00" + ip + tcp
        feed(e, f, 120.0 + i, 100 + i)
    for j in range(3):
        feed(e, frame(0x0C000000 + j, 2000, "10.0.0.2", 80, SYN), 130.0 + j, 200 + j)
    ids = sorted(e.tcp.pairs)
    assert 4 not in ids and 8 not in ids  # pairs 4 and 8 (frames 4, 8) were the ended ones
    assert len(ids) == 10 and e.tcp.evicted == 2 and e.tcp.untracked == 1
    written = [p.id for _tick, group in e.sealed for p in group] + [p.id for p in e.tcp.retired]
    assert sorted(written) == [4, 8]  # evicted pairs are still written


def test_syn_flood_sign_counts_lone_syns_per_destination():
    e = Engine()
    for i in range(300):
        feed(e, frame(0x0B000000 + i, 1000, "10.0.0.2", 80, SYN), 100.0, i + 1)
    for i in range(20):
        feed(e, frame(0x0D000000 + i, 1000, "10.0.0.3", 22, SYN), 100.0, 500 + i)
    key = ("eth0", socket.inet_aton("10.0.0.2"))
    assert e.tcp.halfopen[key] == 300
    # an answer (SYN/ACK from the server) takes a pair off the list
    tcp = struct.pack("!HHIIBBHHH", 80, 1000, 9, 2, 5 << 4, SYN | ACK, 1000, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, socket.inet_aton("10.0.0.2"),
                     struct.pack("!I", 0x0B000000))
    feed(e, b"\x04" * 6 + b"\x02" * 6 + b"\x08\x00" + ip + tcp, 101.0, 1000)
    assert e.tcp.halfopen[key] == 299
    assert e.tcp.halfopen[("eth0", socket.inet_aton("10.0.0.3"))] == 20


def test_spoofed_synflood_capture_with_a_small_table(tmp_path):
    need_corpus("large")
    cap = CORPUS / "large" / "stopddos_pkt.TCP.synflood.spoofed.pcap"
    ref = reference(cap)["totals"]
    rc, recs = run_cli_json(tmp_path, "-r", str(cap), "-B", "--max-connections", "5000")
    assert rc == 0
    s = recs[-1]
    assert s["tcp"] == {"packets": ref["tcp"]["packets"], "bytes": ref["tcp"]["bytes"]}
    assert s["untracked"] > 0
    assert sum(1 for r in recs if r["type"] == "tcp") <= 2 * 5000


def test_store_records_the_syn_flood_sign(tmp_path):
    """The console and the store flag destinations with many lone SYNs."""
    import sqlite3

    from iptraf_mp.app.cli import main

    need_corpus("large")
    cap = CORPUS / "large" / "stopddos_pkt.TCP.synflood.spoofed.pcap"
    db = tmp_path / "flows.db"
    assert main(["-r", str(cap), "-B", "--db", str(db), "--checkpoint", "0",
                 "--syn-warn", "1000", "--json", str(tmp_path / "o.jsonl")]) == 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = conn.execute("SELECT dst, max(halfopen) FROM syn_warnings GROUP BY dst").fetchall()
    conn.close()
    assert rows, "no SYN-flood warning recorded"
    assert all(n >= 1000 for _dst, n in rows)


def test_max_flows_bounds_the_non_tcp_flow_table():
    """300,000 spoofed UDP sources held 363 MiB in one process: --max-flows bounds the
    table; a new flow beyond it ends the longest idle one early, counted in the summary."""
    from iptraf_mp.core.decode import decode
    from iptraf_mp.core.engine import Engine, Settings

    e = Engine(Settings(max_flows=1000))
    for i in range(5000):
        src = bytes((10, i >> 16 & 255, i >> 8 & 255, i & 255))
        frame = _udp_frame(src, b"\x0a\xff\x00\x01", 1024 + i % 60000, 53)
        e.feed(1_700_000_000.0 + i * 0.001, "eth0", decode(1, frame, len(frame)), i + 1)
        assert len(e.other.flows) <= 1000
    e.sync_counters()
    assert e.summary.evicted_flows == 4000
    assert e.summary.udp.packets == 5000  # every packet still counted
    # the evicted ones are the longest idle: the newest thousand remain
    assert min(f.id for f in e.other.flows.values()) == 4001


def _udp_frame(src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    import struct

    udp = struct.pack("!HHHH", sport, dport, 8 + 4, 0) + b"qqqq"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src, dst)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp
