"""`iptraf-mp report`: its figures against the store's own rows (summed another way) and against
tshark's totals of the corpus captures it was made from."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store.report import bucket_width, parse_duration, parse_time

from .conftest import CORPUS, need_corpus, reference
from .helpers.packets import ACK, SYN, eth, ip4, ipv4, tcp4_frame, udp, write_pcap

REPO = Path(__file__).resolve().parent.parent


def _iptraf(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iptraf_mp", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=120, check=check)


def _store(tmp_path: Path, *captures: Path) -> Path:
    db = tmp_path / "flows.db"
    for cap in captures:
        _iptraf("-r", str(cap), "-B", "--shards", "0", "--db", str(db))
    return db


def _report(db: Path, *args: str) -> dict:
    out = _iptraf("report", "--db", str(db), "--format", "json", *args)
    return json.loads(out.stdout)


def _udp(src: str, dst: str, sport: int, dport: int, payload: int) -> bytes:
    return eth(ipv4(ip4(src), ip4(dst), 17, udp(sport, dport, payload)))


@pytest.mark.parametrize("name", ["ssh_ssh.pcap", "ppp_quic-interop-retry.pcap", "http_get.pcap"])
def test_protocol_totals_equal_tshark_and_the_rows(tmp_path: Path, name: str) -> None:
    need_corpus("real")
    cap = CORPUS / "real" / name
    db = _store(tmp_path, cap)
    rows = {r["proto"]: r for r in _report(db, "--by", "proto")["rows"]}
    ref = reference(cap)["totals"]
    with sqlite3.connect(db) as c:
        tcp_rows = c.execute("SELECT sum(a_bytes + b_bytes), sum(a_packets + b_packets) "
                             "FROM tcp_connections").fetchone()
        other_rows = dict((k, (b, p)) for k, b, p in c.execute(
            "SELECT kind, sum(bytes), sum(packets) FROM other_flows GROUP BY kind"))
    if ref.get("tcp", {}).get("packets"):
        assert (rows["tcp"]["bytes"], rows["tcp"]["packets"]) == \
            (ref["tcp"]["bytes"], ref["tcp"]["packets"]) == tcp_rows
    else:
        assert "tcp" not in rows
    if ref.get("udp", {}).get("packets"):
        assert (rows["udp"]["bytes"], rows["udp"]["packets"]) == \
            (ref["udp"]["bytes"], ref["udp"]["packets"]) == other_rows["udp"]
    icmp = ref.get("icmpv6", {}).get("packets", 0) + ref.get("icmp", {}).get("packets", 0)
    if icmp:
        assert rows["icmp"]["packets"] == icmp == other_rows["icmp"][1]


def test_hosts_ports_ifaces_and_time_add_up_to_the_rows(tmp_path: Path) -> None:
    need_corpus("large")
    db = _store(tmp_path, CORPUS / "real" / "ssh_ssh.pcap",
                CORPUS / "large" / "zeek_echo-connections.pcap")
    total = _report(db, "--by", "proto")["total"]
    with sqlite3.connect(db) as c:
        # per host, from the connection rows' directions (not the samples the report sums)
        sent: dict[str, int] = {}
        received: dict[str, int] = {}
        for src, dst, nbytes in c.execute(
                "SELECT a_addr, b_addr, a_bytes FROM tcp_connections UNION ALL "
                "SELECT b_addr, a_addr, b_bytes FROM tcp_connections UNION ALL "
                "SELECT src, dst, bytes FROM other_flows"):
            sent[src] = sent.get(src, 0) + nbytes
            received[dst] = received.get(dst, 0) + nbytes
        row_bytes = c.execute("SELECT (SELECT sum(a_bytes + b_bytes) FROM tcp_connections) + "
                              "(SELECT sum(bytes) FROM other_flows)").fetchone()[0]
        b_ports: dict[int, int] = {}
        for port, nbytes in c.execute("SELECT b_port, a_bytes + b_bytes FROM tcp_connections"):
            b_ports[port] = b_ports.get(port, 0) + nbytes
        ifaces = dict(c.execute(
            "SELECT iface, sum(b) FROM (SELECT iface, a_bytes + b_bytes AS b FROM "
            "tcp_connections UNION ALL SELECT iface, bytes FROM other_flows) GROUP BY iface"))
    assert total["bytes"] == row_bytes
    hosts = _report(db, "--by", "host", "--top", "1000")["rows"]
    everyone = set(sent) | set(received)
    assert len(hosts) == len(everyone) < 1000
    assert {h["host"]: (h["sent_bytes"], h["received_bytes"]) for h in hosts} == \
        {k: (sent.get(k, 0), received.get(k, 0)) for k in everyone}
    assert hosts == sorted(hosts, key=lambda h: -h["bytes"])
    ports = _report(db, "--by", "port", "--top", "1000")["rows"]
    assert {p["port"]: p["bytes"] for p in ports if p["proto"] == "tcp"} == b_ports
    assert {r["iface"]: r["bytes"] for r in _report(db, "--by", "iface")["rows"]} == ifaces
    buckets = _report(db, "--by", "time", "--bucket", "1s")
    assert buckets["bucket_seconds"] == 1
    assert sum(b["bytes"] for b in buckets["rows"]) == row_bytes
    top3 = _report(db, "--by", "conn", "--top", "3")["rows"]
    assert len(top3) == 3 and top3[0]["bytes"] >= top3[1]["bytes"] >= top3[2]["bytes"]
    # one session alone: ssh_ssh.pcap's (the first replay)
    one = _report(db, "--by", "proto", "--session", "1")["total"]
    assert one["bytes"] == reference(CORPUS / "real" / "ssh_ssh.pcap")["totals"]["ip"]["bytes"]


def test_since_counts_only_the_recent_traffic(tmp_path: Path) -> None:
    now = time.time()
    old = [(now - 7200 + i * 0.01, tcp4_frame("10.0.0.1", 40000, "10.0.0.2", 80,
                                              SYN if i == 0 else ACK, 100)) for i in range(5)]
    new = [(now - 600 + i * 0.01, _udp("10.0.0.3", "10.0.0.4", 5353, 53, 50))
           for i in range(7)]
    cap = tmp_path / "t.pcap"
    write_pcap(cap, old + new)
    db = _store(tmp_path, cap)
    everything = _report(db, "--by", "proto")
    assert {r["proto"]: r["packets"] for r in everything["rows"]} == {"tcp": 5, "udp": 7}
    recent = _report(db, "--by", "proto", "--since", "1h")
    assert {r["proto"]: r["packets"] for r in recent["rows"]} == {"udp": 7}
    assert recent["total"] == {"packets": 7, "bytes": 7 * (20 + 8 + 50)}
    older = _report(db, "--by", "proto", "--until", "1h")
    assert {r["proto"]: r["packets"] for r in older["rows"]} == {"tcp": 5}


def test_table_draws_bars_and_csv_has_the_rows(tmp_path: Path) -> None:
    cap = tmp_path / "t.pcap"
    t0 = 1_700_000_000.0
    write_pcap(cap, [(t0 + i, _udp("10.0.0.1", "10.0.0.2", 1000 + i % 3, 53, 10 * (i % 7 + 1)))
                     for i in range(120)])
    db = _store(tmp_path, cap)
    table = _iptraf("report", "--db", str(db), "--by", "port").stdout
    assert "traffic per" in table and "█" in table
    assert "udp" in table and "bit/s" in table
    csv = _iptraf("report", "--db", str(db), "--by", "host", "--format", "csv").stdout
    lines = csv.strip().splitlines()
    assert lines[0] == "host,sent_bytes,received_bytes,bytes,packets,connections"
    assert {ln.split(",")[0] for ln in lines[1:]} == {"10.0.0.1", "10.0.0.2"}


def test_bad_input_is_one_line_and_the_store_untouched(tmp_path: Path) -> None:
    missing = _iptraf("report", "--db", str(tmp_path / "none.db"), check=False)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "no flow store" in missing.stderr
    for bad in (["--since", "yesterday-ish"], ["--bucket", "0s"], ["--top", "0"],
                ["--since", "1h", "--until", "2h"]):
        r = _iptraf("report", "--db", str(tmp_path / "none.db"), *bad, check=False)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, (bad, r.stderr)


def test_time_words() -> None:
    assert parse_duration("90s") == 90 and parse_duration("1h") == 3600
    assert parse_duration("2d") == 172800 and parse_duration("15") == 15
    assert parse_time("1h", 10_000.0) == 6400.0
    assert parse_time("1700000000", 0.0) == 1_700_000_000.0
    with pytest.raises(ValueError):
        parse_duration("1y")
    assert bucket_width(0, 3600) == 300  # 12 bars of 5 minutes
    assert bucket_width(0, 86400) == 3600
    assert bucket_width(0, 5) == 1


def test_serve_documents_every_table_and_column() -> None:
    from store.schema import COLUMNS
    from store.web import CANNED, TABLES, metadata

    assert {t: tuple(cols) for t, (_d, cols) in TABLES.items()} == \
        {t: tuple(cols) for t, cols in COLUMNS.items()}
    assert all(desc for _d, cols in TABLES.values() for desc in cols.values())
    meta = metadata("flows")["databases"]["flows"]
    assert set(meta["tables"]) == set(COLUMNS)
    assert {"top_hosts", "top_ports", "protocols", "traffic_per_minute"} <= set(meta["queries"])
    assert all(q["sql"].strip() and q["title"] for q in CANNED.values())
