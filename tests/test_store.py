"""The flow store: schema, checkpoints, read-only queries, crash safety, and that
the database agrees exactly with the `--json` output of the same run."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import stat
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from iptraf_mp.app.cli import build_parser, main, settings_from
from iptraf_mp.app.localrun import LocalRun
from iptraf_mp.app.monitor import Monitor
from iptraf_mp.core.snapshot import pair_snapshots
from iptraf_mp.core.tcptable import Entry, Pair
from iptraf_mp.outputs.jsonout import JsonWriter
from store import query
from store import writer as cp
from store.paths import default_db_path
from store.schema import COLUMNS, SCHEMA_VERSION, SchemaError, connect
from store.session import SessionInfo, open_session
from store.sink import StoreSink

from .conftest import corpus_files, need_corpus

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
IPTRAF = [sys.executable, "-m", "iptraf_mp.app.cli"]
TABLES = {"meta", "sessions", "interfaces", "tcp_connections", "flow_samples", "other_flows",
          "other_samples", "counters"}


# ---- a synthetic capture: TCP conversations, half-open SYNs, resets, UDP, ICMP ----------

def _eth(src_mac: int, dst_mac: int, payload: bytes) -> bytes:
    return (struct.pack("!6s6sH", dst_mac.to_bytes(6, "big"), src_mac.to_bytes(6, "big"),
                        0x0800) + payload)


def _ip(proto: int, src: int, dst: int, body: bytes) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0x4000, 64, proto, 0,
                       struct.pack("!I", src), struct.pack("!I", dst)) + body


def _tcp(src, sport, dst, dport, flags, seq, ack, data=0):
    body = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4,
                       flags, 4096, 0, 0) + b"\0" * data
    return _eth(src, dst, _ip(6, src, dst, body))


def make_capture(path: Path, conns: int = 2000, span: float = 20.0, seed: int = 7) -> int:
    """About 8 packets per connection spread over `span` seconds of capture time, plus
    UDP and ICMP. Returns the number of frames."""
    rng = random.Random(seed)
    frames: list[tuple[float, bytes]] = []
    for i in range(conns):
        c, s = 0x0A000000 + i + 1, 0xC0A80000 + (i % 50) + 1
        cp, sp = 1024 + i, (80, 443, 22)[i % 3]
        t = rng.uniform(0, span * 0.9)
        kind = i % 10
        seq, ack = rng.randrange(1 << 32), rng.randrange(1 << 32)
        pk = [(c, cp, s, sp, 0x02, seq, 0, 0)]
        if kind == 0:
            pass  # a lone SYN: half-open, S---
        elif kind == 1:
            pk.append((s, sp, c, cp, 0x14, 0, seq + 1, 0))  # refused: RST/ACK
        else:
            pk += [(s, sp, c, cp, 0x12, ack, seq + 1, 0), (c, cp, s, sp, 0x10, seq + 1, ack + 1, 0)]
            seq, ack = seq + 1, ack + 1
            for k in range(rng.randrange(1, 6)):
                n = rng.choice((100, 500, 1460))
                if k % 2 == 0:
                    pk.append((c, cp, s, sp, 0x18, seq, ack, n))
                    seq += n
                else:
                    pk.append((s, sp, c, cp, 0x18, ack, seq, n))
                    ack += n
            if kind != 9:  # kind 9 stays open
                pk += [(c, cp, s, sp, 0x11, seq, ack, 0), (s, sp, c, cp, 0x11, ack, seq + 1, 0),
                       (c, cp, s, sp, 0x10, seq + 1, ack + 1, 0)]
        for j, p in enumerate(pk):
            frames.append((t + j * 0.01, _tcp(*p)))
    for i in range(conns // 4):
        t = rng.uniform(0, span)
        body = struct.pack("!HHHH", 5353 + i % 7, 53, 8 + 40, 0) + b"\0" * 40
        frames.append((t, _eth(0x020000000005, 0x020000000006,
                               _ip(17, 0x0A000005, 0x0A000035 + i % 3, body))))
        if i % 5 == 0:
            icmp = struct.pack("!BBHHH", 8, 0, 0, 1, i) + b"\0" * 20
            frames.append((t, _eth(0x020000000005, 0x020000000006,
                                   _ip(1, 0x0A000005, 0x08080808, icmp))))
    frames.sort(key=lambda f: f[0])
    base = 1_700_000_000.0
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for t, f in frames:
            ts = base + t
            sec = int(ts)
            usec = min(999999, int(round((ts - sec) * 1e6)))
            fh.write(struct.pack("<IIII", sec, usec, len(f), len(f)) + f)
    return len(frames)


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cap") / "synthetic.pcap"
    make_capture(path)
    return path


# ---- helpers -----------------------------------------------------------------------------

def replay(tmp_path: Path, cap: Path, db: Path, *extra: str) -> tuple[int, list[dict]]:
    out = tmp_path / f"out-{time.monotonic_ns()}.jsonl"
    rc = main(["-r", str(cap), "-B", "--json", str(out), "--db", str(db), *extra])
    recs = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return rc, recs


def ro(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def last_session(db: Path) -> int:
    with ro(db) as c:
        return c.execute("SELECT max(id) FROM sessions").fetchone()[0]


def assert_db_equals_json(db: Path, sid: int, recs: list[dict]) -> None:
    """Point 5: the rows, the sums of the deltas and the last counters row are the JSON."""
    conn = ro(db)
    tcp = [r for r in recs if r["type"] == "tcp"]
    summary = [r for r in recs if r["type"] == "summary"][-1]
    rows = {r["pair_id"]: r for r in conn.execute(
        "SELECT * FROM tcp_connections WHERE session_id = ?", (sid,))}
    by_pair: dict[int, list[dict]] = defaultdict(list)
    for r in tcp:
        by_pair[r["pair"]].append(r)
    assert set(rows) == set(by_pair), "one row per pair the JSON wrote, no more"
    sums = defaultdict(lambda: [0, 0])
    for s in conn.execute("SELECT pair_id, sum(a_packets) ap, sum(a_bytes) ab, "
                          "sum(b_packets) bp, sum(b_bytes) bb "
                          "FROM flow_samples WHERE session_id = ? GROUP BY 1", (sid,)):
        sums[(s["pair_id"], "a")] = [s["ap"], s["ab"]]
        sums[(s["pair_id"], "b")] = [s["bp"], s["bb"]]
    per_direction = defaultdict(lambda: [0, 0])
    for s in conn.execute("SELECT pair_id, direction, sum(packets), sum(bytes) "
                          "FROM tcp_traffic WHERE session_id = ? GROUP BY 1, 2", (sid,)):
        per_direction[(s[0], s[1])] = [s[2], s[3]]
    for pid, (ja, jb) in by_pair.items():
        row = rows[pid]
        assert row["retired"] == 1
        assert row["iface"] == ja["iface"] and bool(row["partial"]) == ja["partial"]
        for d, j in (("a", ja), ("b", jb)):
            src, dst = ("a", "b") if d == "a" else ("b", "a")
            got = {
                "type": "tcp", "pair": pid, "iface": row["iface"],
                "src": row[f"{src}_addr"], "sport": row[f"{src}_port"],
                "dst": row[f"{dst}_addr"], "dport": row[f"{dst}_port"],
                "packets": row[f"{d}_packets"], "bytes": row[f"{d}_bytes"],
                "flags": row[f"{d}_flags"], "state": row[f"{d}_state"],
                "partial": bool(row["partial"]),
                "first_seen": None if row[f"{d}_first_seen"] is None
                else round(row[f"{d}_first_seen"], 6),
                "last_seen": None if row[f"{d}_last_seen"] is None
                else round(row[f"{d}_last_seen"], 6),
                "last_size": row[f"{d}_last_size"], "window": row[f"{d}_window"],
                "mac": row[f"{d}_mac"], "end": row["ended_by"],
            }
            assert got == {k: j[k] for k in got}, (pid, d)
            assert sums[(pid, d)] == [j["packets"], j["bytes"]], (pid, d)
            assert per_direction[(pid, d)] == [j["packets"], j["bytes"]], (pid, d)
    c = dict(conn.execute("SELECT * FROM counters WHERE session_id = ? "
                          "ORDER BY checkpoint DESC LIMIT 1", (sid,)).fetchone())
    assert c["final"] == 1
    got = {"type": "summary", "frames": c["frames"], "malformed": c["malformed"],
           "untracked": c["untracked"], "evicted_flows": c["evicted_flows"]}
    for k in ("ip", "tcp", "udp", "icmp", "other_ip", "non_ip"):
        got[k] = {"packets": c[f"{k}_packets"], "bytes": c[f"{k}_bytes"]}
    assert {k: got.get(k) for k in summary} == summary
    # other flows: their deltas add up, and they hold every non-TCP frame that was readable
    bad = conn.execute(
        "SELECT f.flow_id FROM other_flows f LEFT JOIN (SELECT flow_id, sum(packets) p, "
        "sum(bytes) b FROM other_samples WHERE session_id = ? GROUP BY 1) s "
        "USING (flow_id) WHERE f.session_id = ? AND (f.packets IS NOT s.p OR "
        "f.bytes IS NOT s.b)", (sid, sid)).fetchall()
    assert not bad
    kinds = dict(conn.execute("SELECT kind, sum(packets) FROM other_flows WHERE session_id = ? "
                              "GROUP BY kind", (sid,)).fetchall())
    non_tcp = sum(summary[k]["packets"] for k in ("udp", "icmp", "other_ip", "non_ip"))
    for k, n in kinds.items():
        assert n <= summary[k]["packets"], k
    assert 0 <= non_tcp - sum(kinds.values()) <= summary["malformed"]
    sess = conn.execute("SELECT * FROM sessions WHERE id = ?", (sid,)).fetchone()
    assert (sess["status"], sess["clean"]) == ("closed", 1)
    assert sess["checkpoints"] == c["checkpoint"]
    conn.close()


def check_committed_state(db: Path, ref: dict[int, dict] | None = None) -> None:
    """Point 4: every committed checkpoint is whole: deltas add up to the rows they belong
    to, counters are numbered without a gap, and (given a complete run's rows) a row marked
    final is exactly the complete run's, others are a prefix of it."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sessions'").fetchone():
        conn.close()
        return  # killed before the schema's transaction committed: an empty file, no harm
    for sess in conn.execute("SELECT * FROM sessions").fetchall():
        sid = sess["id"]
        seqs = [r[0] for r in conn.execute("SELECT checkpoint FROM counters WHERE session_id = ? "
                                           "ORDER BY 1", (sid,))]
        assert seqs == list(range(1, sess["checkpoints"] + 1)), sid
        bad = conn.execute(
            "SELECT c.pair_id FROM tcp_connections c LEFT JOIN (SELECT pair_id, "
            "sum(a_packets) ap, sum(a_bytes) ab, sum(b_packets) bp, sum(b_bytes) bb "
            "FROM flow_samples WHERE session_id = ? GROUP BY pair_id) s USING (pair_id) "
            "WHERE c.session_id = ? AND (coalesce(s.ap, 0) != c.a_packets OR "
            "coalesce(s.ab, 0) != c.a_bytes OR coalesce(s.bp, 0) != c.b_packets OR "
            "coalesce(s.bb, 0) != c.b_bytes)", (sid, sid)).fetchall()
        assert not bad, (sid, bad[:5])
        orphans = conn.execute(
            "SELECT count(*) FROM flow_samples s WHERE s.session_id = ? AND (s.checkpoint > ? "
            "OR NOT EXISTS (SELECT 1 FROM tcp_connections c WHERE c.session_id = s.session_id "
            "AND c.pair_id = s.pair_id))", (sid, sess["checkpoints"])).fetchone()[0]
        assert orphans == 0
        if ref is not None:
            for row in conn.execute("SELECT * FROM tcp_connections WHERE session_id = ?",
                                    (sid,)):
                full = ref[row["pair_id"]]
                if row["retired"]:
                    skip = ("id", "session_id", "checkpoint")
                    assert {k: row[k] for k in full if k not in skip} \
                        == {k: v for k, v in full.items() if k not in skip}
                else:
                    for k in ("a_packets", "a_bytes", "b_packets", "b_bytes"):
                        assert row[k] <= full[k]
    conn.close()


# ---- 1. schema ---------------------------------------------------------------------------

def test_schema_created_versioned_wal_private(tmp_path):
    db = tmp_path / "sub" / "flows.db"
    sid = open_session(db, SessionInfo("live", None, ["eth0"]))
    assert sid == 1
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert TABLES <= names
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] \
        == str(SCHEMA_VERSION)
    # the WAL SQLite makes while a connection writes is as private as the file
    conn.execute("UPDATE sessions SET host = host")
    conn.commit()
    wal = Path(str(db) + "-wal")
    assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600
    conn.close()
    assert open_session(db, SessionInfo("live")) == 2  # migrating again changes nothing


def test_newer_schema_is_refused_with_one_line(tmp_path, capsys):
    db = tmp_path / "flows.db"
    open_session(db, SessionInfo("live"))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(SchemaError):
        open_session(db, SessionInfo("live"))
    rc = main(["-r", str(ROOT / "fixtures" / "handshake_close.pcap"), "-B", "--json",
               str(tmp_path / "o.jsonl"), "--db", str(db)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "schema version 99" in err[0]


def _traffic(db: Path) -> dict[str, list]:
    """What the views and tables say of a store, whatever its version's layout."""
    with ro(db) as c:
        return {
            "tcp": [tuple(r) for r in c.execute(
                "SELECT session_id, pair_id, direction, checkpoint, ts, iface, src, sport, dst, "
                "dport, packets, bytes FROM tcp_traffic ORDER BY 1, 2, 3, 4")],
            "other": [tuple(r) for r in c.execute(
                "SELECT * FROM other_traffic ORDER BY session_id, flow_id, checkpoint")],
            "conns": [tuple(r) for r in c.execute("SELECT * FROM tcp_connections ORDER BY id")],
            "sessions": [tuple(r)[:3] for r in c.execute("SELECT * FROM sessions ORDER BY id")],
        }


def test_version_3_store_is_migrated_with_its_history(tmp_path, capture, monkeypatch):
    """A store written by schema version 3 (sample tables with a rowid and a ts index, a
    (session_id, pair_id) index) becomes version 4 when a monitor opens it: every sample
    kept (the views give the same rows), the new layout in place, and it takes the next
    session's checkpoints."""
    import store.schema as schema

    db = tmp_path / "flows.db"
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
    assert replay(tmp_path, capture, db, "--shards", "0", "--checkpoint", "0", "--speed", "40",
                  "--refresh", "0.05")[0] == 0
    with ro(db) as c:
        assert c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] \
            == "3"
        indexes = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"idx_flow_samples_ts", "idx_tcp_connections_session_id_pair_id"} <= indexes
        c.execute("SELECT rowid FROM flow_samples").fetchall()  # a rowid table
    before = _traffic(db)
    assert len(before["tcp"]) > 10 and before["other"]
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 4)
    assert open_session(db, SessionInfo("live")) == 2
    after = _traffic(db)
    assert after["tcp"] == before["tcp"] and after["other"] == before["other"]
    assert after["conns"] == before["conns"]
    with ro(db) as c:
        assert c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] \
            == "4"
        indexes = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert not indexes & {"idx_flow_samples_ts", "idx_other_samples_ts",
                              "idx_tcp_connections_session_id_pair_id"}
        for table in ("flow_samples", "other_samples"):
            sql = c.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
            assert "WITHOUT ROWID" in sql and "PRIMARY KEY (ts, session_id" in sql
    # and the migrated store goes on: a third session, its sums equal to the first's
    assert replay(tmp_path, capture, db, "--shards", "0")[0] == 0
    third = [r for r in _traffic(db)["tcp"] if r[0] == 3]
    first = [r for r in before["tcp"] if r[0] == 1]
    assert sum(r[11] for r in third) == sum(r[11] for r in first) > 0


def test_schema_columns_are_what_the_migrations_create(tmp_path):
    """COLUMNS, which every open checks a store against, cannot drift from the schema."""
    db = tmp_path / "flows.db"
    open_session(db, SessionInfo("live"))
    with ro(db) as c:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == set(COLUMNS)
        for table, columns in COLUMNS.items():
            names = tuple(r[0] for r in c.execute("SELECT name FROM pragma_table_info(?)",
                                                  (table,)))
            assert names == columns, table


def test_store_lacking_columns_is_refused_at_start_with_one_line(tmp_path, capsys):
    """A development build wrote stores that claim schema version 2 with other columns:
    the monitor used to run the whole session and report at exit that no checkpoint could
    be written. Now the start refuses the file, naming what is missing."""
    db = tmp_path / "flows.db"
    open_session(db, SessionInfo("live"))
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE counters DROP COLUMN untracked")
        # the development build's flow_samples: one row per direction
        conn.execute("DROP TABLE flow_samples")
        conn.execute("CREATE TABLE flow_samples (session_id INTEGER, pair_id INTEGER, "
                     "direction TEXT NOT NULL, checkpoint INTEGER, ts REAL, packets INTEGER, "
                     "bytes INTEGER)")
    conn.close()
    before = db.read_bytes()
    with pytest.raises(SchemaError) as err:
        open_session(db, SessionInfo("live"))
    msg = str(err.value)
    assert "counters lacks untracked" in msg
    assert "flow_samples lacks a_packets, a_bytes, b_packets, b_bytes" in msg
    assert "flow_samples has direction" in msg
    rc = main(["-r", str(ROOT / "fixtures" / "handshake_close.pcap"), "-B", "--json",
               str(tmp_path / "o.jsonl"), "--db", str(db)])
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err_lines) == 1, err_lines
    assert str(db) in err_lines[0] and "--db PATH" in err_lines[0] and "--no-db" in err_lines[0]
    with ro(db) as c:
        assert c.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1  # none added
    assert db.read_bytes() == before


def test_store_error_is_one_line_also_as_python_m(tmp_path):
    """`python -m iptraf_mp.app.cli` runs the CLI as `__main__`: the sinks must still raise the
    error class it catches (once they raised another module's copy: a traceback)."""
    db = tmp_path / "flows.db"
    db.write_bytes(b"this is not sqlite" * 100)
    r = subprocess.run([sys.executable, "-m", "iptraf_mp.app.cli", "-r",
                        str(ROOT / "fixtures" / "handshake_close.pcap"), "-B", "--no-db",
                        "--db", str(db)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_not_a_database_is_refused(tmp_path, capsys):
    db = tmp_path / "flows.db"
    db.write_bytes(b"this is not sqlite" * 100)
    rc = main(["-r", str(ROOT / "fixtures" / "handshake_close.pcap"), "-B", "--json",
               str(tmp_path / "o.jsonl"), "--db", str(db)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "flow store" in err[0]


def test_indexes_serve_time_address_and_port_questions(tmp_path, capture):
    db = tmp_path / "flows.db"
    assert replay(tmp_path, capture, db, "--shards", "0")[0] == 0
    conn = ro(db)
    for sql in ("SELECT * FROM flow_samples WHERE ts >= 1700000005",
                "SELECT * FROM tcp_connections WHERE a_addr = '10.0.0.1'",
                "SELECT * FROM tcp_connections WHERE b_addr = '192.168.0.1'",
                "SELECT * FROM tcp_connections WHERE b_port = 443",
                "SELECT * FROM tcp_connections WHERE first_seen >= 1700000005",
                "SELECT * FROM other_flows WHERE dst = '8.8.8.8'",
                "SELECT * FROM other_samples WHERE ts >= 1700000005"):
        plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
        # the sample tables are keyed by time (WITHOUT ROWID): their key is the index
        assert any(f"USING {how}" in plan
                   for how in ("INDEX", "COVERING INDEX", "PRIMARY KEY (ts>")), (sql, plan)


# ---- 2. checkpoints ----------------------------------------------------------------------

def test_replay_session_is_marked_and_matches_json(tmp_path, capture):
    db = tmp_path / "flows.db"
    rc, recs = replay(tmp_path, capture, db, "--shards", "0", "--checkpoint", "0",
                      "--speed", "40", "--refresh", "0.05")
    assert rc == 0
    sid = last_session(db)
    assert_db_equals_json(db, sid, recs)
    with ro(db) as c:
        s = c.execute("SELECT * FROM sessions WHERE id = ?", (sid,)).fetchone()
        assert s["source"] == "replay" and s["replay_file"] == str(capture.resolve())
        settings = json.loads(s["settings"])
        assert settings["checkpoint"] == 0
        # what changes other_flows' rows: --flow-idle (2 minutes unless given)
        assert settings["flow_idle_min"] == 2 and settings["tcp_timeout_min"] == 15
        assert s["checkpoints"] > 3  # --checkpoint 0: one at every refresh
        assert [r[0] for r in c.execute("SELECT name FROM interfaces")] == ["if0"]
        # several checkpoints: a pair's counts are spread over several deltas
        n = c.execute("SELECT count(*) FROM (SELECT 1 FROM flow_samples GROUP BY pair_id "
                      "HAVING count(*) > 1)").fetchone()[0]
        assert n > 0


def test_default_path_is_under_xdg_data_home_and_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    expected = tmp_path / "data" / "iptraf-mp" / "flows.db"
    assert default_db_path() == expected
    cap = str(ROOT / "fixtures" / "handshake_close.pcap")
    # a replay writes a store only with --db: regression replays stay out of the history
    assert main(["-r", cap, "-B", "--json", str(tmp_path / "o.jsonl")]) == 0
    assert not expected.exists() and "flow store" not in capsys.readouterr().err
    assert main(["-r", cap, "-B", "--json", str(tmp_path / "o.jsonl"), "--db",
                 str(expected)]) == 0
    assert str(expected) in capsys.readouterr().err
    assert stat.S_IMODE(expected.stat().st_mode) == 0o600
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_db_path() == Path.home() / ".local" / "share" / "iptraf-mp" / "flows.db"


def test_no_db_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    rc = main(["-r", str(ROOT / "fixtures" / "handshake_close.pcap"), "-B", "--json",
               str(tmp_path / "o.jsonl"), "--no-db"])
    assert rc == 0
    assert not (tmp_path / "data").exists()
    assert "flow store" not in capsys.readouterr().err


def test_unclean_session_is_marked_at_next_start(tmp_path):
    db = tmp_path / "flows.db"
    open_session(db, SessionInfo("live", None, ["eth0"]))
    dead = subprocess.Popen(["true"])
    dead.wait()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE sessions SET pid = ?, pid_start = NULL WHERE id = 1", (dead.pid,))
        conn.execute("INSERT INTO sessions (started, status, source, host, pid, version) "
                     "VALUES (1, 'running', 'live', 'another-host', 1, 'x')")
    conn.close()
    # the session of this process (2: still running) and another host's are left alone
    assert open_session(db, SessionInfo("live")) == 3
    assert open_session(db, SessionInfo("live")) == 4
    with ro(db) as c:
        rows = {r["id"]: (r["status"], r["clean"]) for r in c.execute("SELECT * FROM sessions")}
    assert rows == {1: ("unclean", 0), 2: ("running", None), 3: ("running", None),
                    4: ("running", None)}


def _drive(cap: Path, sink: StoreSink, speed: float | None, on_step=None) -> list[dict]:
    """A monitor with the store as its only sink, stepped by hand as -B does."""
    args = build_parser().parse_args(["-r", str(cap), "-B"])
    run = LocalRun(str(cap), settings_from(args), 0.05, speed)
    out = io.StringIO()
    mon = Monitor(run, JsonWriter(out), sinks=[sink])
    mon.start()
    try:
        while mon.step(0.05):
            if on_step is not None:
                on_step(mon)
        mon.finish()
    finally:
        mon.close()
        sink.close()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_slow_disk_makes_checkpoints_late_never_blocks_the_monitor(tmp_path, capture):
    db = tmp_path / "flows.db"
    sid = open_session(db, SessionInfo("replay", str(capture)))
    sink = StoreSink(db, sid, interval=0.05, report=lambda m: None)
    gate = threading.Event()
    real_write = sink.writer._write

    def slow_write():
        gate.wait()  # the disk hangs until the test lets it go
        real_write()

    sink.writer._write = slow_write
    seen = {"pending": 0, "lag": 0.0, "update": 0.0}
    real_update = sink.update

    def timed_update(mon):
        t0 = time.perf_counter()
        real_update(mon)
        seen["update"] = max(seen["update"], time.perf_counter() - t0)
        seen["pending"] = max(seen["pending"], sink.pending)
        seen["lag"] = max(seen["lag"], sink.lag_seconds)
        st = sink.status
        if st.pending >= 8:
            gate.set()

    sink.update = timed_update
    safety = threading.Timer(20.0, gate.set)  # never hang the suite if the run is short
    safety.start()
    try:
        recs = _drive(capture, sink, speed=20.0)
    finally:
        safety.cancel()
    assert seen["pending"] >= 8 and seen["lag"] > 0.3
    assert seen["update"] < 0.25  # a snapshot, never a write
    assert sink.pending == 0 and sink.lag_seconds == 0.0
    assert_db_equals_json(db, sid, recs)
    with ro(db) as c:
        lags = [r[0] for r in c.execute("SELECT lag_seconds FROM counters WHERE session_id = ?",
                                        (sid,))]
    assert max(lags) > 0.3  # the rows say how late they were written


def test_disk_full_is_reported_once_and_writing_resumes(tmp_path, capture):
    db = tmp_path / "flows.db"
    sid = open_session(db, SessionInfo("replay", str(capture)))
    msgs: list[str] = []
    sink = StoreSink(db, sid, interval=0.05, report=msgs.append, retry=0.05)
    with sqlite3.connect(db) as c:
        pages = c.execute("PRAGMA page_count").fetchone()[0]
    c.close()
    sink.writer.page_limit = pages  # no room to grow: SQLITE_FULL, as a full disk gives
    state = {"steps": 0, "errors": 0}

    def on_step(mon):
        state["steps"] += 1
        if sink.error is not None:
            state["errors"] += 1
            if state["errors"] == 10:
                sink.writer.page_limit = 1 << 30  # space again
    recs = _drive(capture, sink, speed=20.0, on_step=on_step)
    assert state["errors"] >= 10
    assert sink.error is None
    assert len(msgs) == 2, msgs
    assert "cannot write" in msgs[0] and "full" in msgs[0]
    assert "writing again" in msgs[1]
    assert_db_equals_json(db, sid, recs)


def test_store_that_never_recovers_leaves_session_unclean(tmp_path, monkeypatch, capture):
    import store.sink

    monkeypatch.setattr(store.sink, "FINISH_GRACE", 0.3)
    db = tmp_path / "flows.db"
    sid = open_session(db, SessionInfo("replay", "x"))
    msgs: list[str] = []
    sink = StoreSink(db, sid, interval=0.05, report=msgs.append, retry=0.05)
    with sqlite3.connect(db) as c:
        sink.writer.page_limit = c.execute("PRAGMA page_count").fetchone()[0]
    c.close()
    _drive(capture, sink, speed=None)  # thousands of rows: the file must grow
    assert len(msgs) == 2 and "could not be written" in msgs[1]
    with ro(db) as c:
        assert c.execute("SELECT status FROM sessions WHERE id = ?", (sid,)).fetchone()[0] \
            == "running"  # the next start marks it unclean
    assert open_session(db, SessionInfo("live")) == sid + 1
    with ro(db) as c:
        assert c.execute("SELECT status FROM sessions WHERE id = ?", (sid,)).fetchone()[0] \
            == "running"  # this very process is alive: it is not marked behind its back


# ---- 3. queries --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def filled_db(tmp_path_factory, capture) -> Path:
    tmp = tmp_path_factory.mktemp("db")
    db = tmp / "flows.db"
    assert replay(tmp, capture, db, "--shards", "0", "--checkpoint", "0.1")[0] == 0
    return db


def sql(db: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*IPTRAF, "sql", "--db", str(db), *argv], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def _fingerprint(db: Path) -> tuple:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master ORDER BY name")]
    rows = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
            for t in tables if t in TABLES}
    schema = conn.execute("SELECT group_concat(sql) FROM sqlite_master").fetchone()[0]
    conn.close()
    return hashlib.sha256(db.read_bytes()).hexdigest(), rows, schema


@pytest.mark.parametrize("stmt,word", [
    ("INSERT INTO meta (key, value) VALUES ('x', 'y')", "INSERT"),
    ("UPDATE sessions SET clean = 1", "UPDATE"),
    ("DELETE FROM flow_samples", "DELETE"),
    ("DROP TABLE tcp_connections", "DROP"),
    ("CREATE TABLE t (x)", "CREATE"),
    ("CREATE TEMP VIEW v AS SELECT 1", "CREATE"),
    ("ALTER TABLE meta ADD COLUMN z", "ALTER"),
    ("ATTACH DATABASE '{tmp}/other.db' AS other", "ATTACH"),
    ("PRAGMA query_only = 0", "query_only"),
    ("PRAGMA journal_mode = DELETE", "journal_mode"),
    ("SELECT 1; DROP TABLE meta", "one statement"),
])
def test_sql_is_read_only(filled_db, tmp_path, stmt, word):
    before = _fingerprint(filled_db)
    r = sql(filled_db, stmt.format(tmp=tmp_path))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0], r.stderr
    assert r.stdout == ""
    assert _fingerprint(filled_db) == before
    assert not (tmp_path / "other.db").exists()  # ATTACH did not even create the file


def test_sql_read_only_layers_each_hold(filled_db):
    """Each of the three locks refuses a write on its own."""
    conn, _auth = query.open_readonly(filled_db)
    conn.set_authorizer(None)
    with pytest.raises(sqlite3.OperationalError, match="readonly|read-only"):
        conn.execute("DELETE FROM counters")
    conn.close()
    plain = sqlite3.connect(f"file:{filled_db}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        plain.execute("DELETE FROM counters")
    plain.close()
    rw = sqlite3.connect(filled_db)
    rw.execute("PRAGMA query_only = ON")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        rw.execute("DELETE FROM counters")
    rw.close()


def test_sql_json_is_what_sqlite_utils_query_prints(filled_db):
    q = ("SELECT pair_id, iface, a_addr, a_port, b_addr, b_port, a_packets, partial, a_mac, "
         "1.5 AS f, NULL AS n FROM tcp_connections ORDER BY pair_id LIMIT 5")
    ours = sql(filled_db, q, "--format", "json")
    assert ours.returncode == 0, ours.stderr
    theirs = subprocess.run([str(BIN / "sqlite-utils"), "query", str(filled_db), q],
                            capture_output=True, text=True, timeout=60)
    assert theirs.returncode == 0, theirs.stderr
    assert ours.stdout == theirs.stdout
    assert len(json.loads(ours.stdout)) == 5
    empty = sql(filled_db, "SELECT 1 AS x WHERE 0", "--format", "json")
    assert empty.stdout.strip() == "[]"


def test_sql_csv_and_parameters(filled_db):
    r = sql(filled_db, "SELECT b_port, count(*) AS n FROM tcp_connections WHERE b_port = :p "
            "GROUP BY b_port", "--format", "csv", "-p", "p", "443")
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["b_port", "n"] and rows[1][0] == "443" and int(rows[1][1]) > 0


def test_sql_table_escapes_markup_and_control_characters(filled_db):
    evil = "'[bold red]x[/] ' || char(27) || '[2J' || char(7) || char(8238) || 'end'"
    r = sql(filled_db, f'SELECT {evil} AS "[blink]h", a_addr FROM tcp_connections LIMIT 1')
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "[bold red]x[/]" in out and "\\x1b[2J" in out and "\\u202e" in out
    assert "[blink]h" in out and "1 row" in out
    # the same text in an interface name, as a pcapng could carry it
    assert query.safe_text("eth0\x1b]0;pwned\x07") == "eth0\\x1b]0;pwned\\x07"


def test_sql_schema_lists_every_table(filled_db):
    r = sql(filled_db, "--schema")
    assert r.returncode == 0
    for t in TABLES | {"tcp_entries", "tcp_traffic", "other_traffic"}:
        assert f'"{t}"' in r.stdout, t


def test_sql_missing_store_and_usage(tmp_path):
    r = sql(tmp_path / "none.db", "SELECT 1")
    assert r.returncode == 1 and "no flow store" in r.stderr
    assert not (tmp_path / "none.db").exists()
    assert sql(tmp_path / "none.db").returncode == 2


def test_example_queries_in_docs_run(filled_db):
    """Every ```sql block of docs/store.md runs on a real store."""
    text = (ROOT / "docs" / "store.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```sql\n")[1:]]
    assert len(blocks) >= 4
    conn, auth = query.open_readonly(filled_db)
    for b in blocks:
        headers, _rows = query.run_query(conn, auth, b.strip().rstrip(";"), {})
        assert headers
    conn.close()


def test_half_open_and_reset_queries_find_the_synthetic_ones(filled_db):
    conn = ro(filled_db)
    half = conn.execute("SELECT count(*) FROM tcp_connections WHERE a_flags = 'S---' "
                        "AND b_packets = 0").fetchone()[0]
    reset = conn.execute("SELECT count(*) FROM tcp_connections WHERE ended_by = 'RESET'"
                         ).fetchone()[0]
    assert half == 200 and reset == 200  # kinds 0 and 1 of the 2000 connections
    conn.close()


def test_sql_reads_while_a_monitor_writes(tmp_path, capture):
    db = tmp_path / "flows.db"
    mon = subprocess.Popen([*IPTRAF, "-r", str(capture), "-B", "--db", str(db),
                            "--checkpoint", "0.1", "--speed", "8", "--shards", "0"],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        counts = []
        deadline = time.monotonic() + 60
        while mon.poll() is None and time.monotonic() < deadline:
            if db.exists():
                r = sql(db, "SELECT count(*) AS n FROM flow_samples", "--format", "json")
                if r.returncode == 0:
                    counts.append(json.loads(r.stdout)[0]["n"])
                else:  # only before the schema exists, never because of the writer
                    assert "locked" not in r.stderr and "busy" not in r.stderr, r.stderr
            time.sleep(0.05)
        assert mon.wait(60) == 0
    finally:
        if mon.poll() is None:
            mon.kill()
            mon.wait()
    assert len(counts) >= 3 and counts == sorted(counts) and counts[-1] > counts[0]


# ---- the database opens in other tools as it is --------------------------------------------

@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="the sqlite3 CLI is not installed "
                    "(make deps installs it)")
def test_opens_in_sqlite3_cli(filled_db):
    r = subprocess.run(["sqlite3", "-readonly", str(filled_db),
                        "PRAGMA integrity_check; SELECT count(*) FROM tcp_connections; "
                        "SELECT count(*) FROM tcp_traffic;"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines[0] == "ok" and int(lines[1]) == 2000 and int(lines[2]) > 2000


def test_opens_in_sqlite_utils_cli(filled_db):
    tool = str(BIN / "sqlite-utils")
    r = subprocess.run([tool, "tables", str(filled_db), "--counts"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    counts = {t["table"]: t["count"] for t in json.loads(r.stdout)}
    assert TABLES <= set(counts) and counts["tcp_connections"] == 2000
    r = subprocess.run([tool, "views", str(filled_db)], capture_output=True, text=True,
                       timeout=60)
    assert {v["view"] for v in json.loads(r.stdout)} == {"tcp_entries", "tcp_traffic",
                                                         "other_traffic"}
    r = subprocess.run([tool, "rows", str(filled_db), "sessions"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["source"] == "replay"


# ---- 4. crash safety ---------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_every_checkpoint_whole(tmp_path, capture):
    speed = "20"  # the 20 s capture in about 1 s, a checkpoint every 50 ms
    full_db = tmp_path / "full.db"
    base = [*IPTRAF, "-r", str(capture), "-B", "--checkpoint", "0.05", "--speed", speed]
    t0 = time.monotonic()
    subprocess.run([*base, "--db", str(full_db), "--shards", "0"], check=True, cwd=ROOT,
                   stderr=subprocess.DEVNULL, timeout=120)
    duration = time.monotonic() - t0
    with ro(full_db) as c:
        ref = {r["pair_id"]: dict(r) for r in c.execute("SELECT * FROM tcp_connections")}
    db = tmp_path / "crash.db"
    rng = random.Random(20240604)
    kills = runs = finished = mid_run = 0
    killed_ids: set[int] = set()
    while kills < 22:
        runs += 1
        assert runs < 60, "the replay keeps finishing before the kill"
        shards = "1" if runs % 4 == 0 else "0"  # the pipeline dies with its supervisor too
        p = subprocess.Popen([*base, "--db", str(db), "--shards", shards], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        try:
            p.wait(rng.uniform(0.0, duration))
            finished += 1
            continue  # it finished first: a clean session, not a kill
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        kills += 1
        if db.exists():
            with ro(db) as c:
                has = c.execute("SELECT 1 FROM sqlite_master WHERE name = 'sessions'").fetchone()
                row = has and c.execute("SELECT checkpoints, status, id FROM sessions "
                                        "ORDER BY id DESC LIMIT 1").fetchone()
            if row and row[1] == "running":
                killed_ids.add(row[2])  # the run just killed had started its session
                mid_run += row[0] > 0
            # a query works on what the crash left, before anything repairs it
            if has and kills % 5 == 0:
                assert query.main(["--db", str(db), "SELECT count(*) FROM sessions",
                                   "--format", "json"]) == 0
            check_committed_state(db, ref)
    # the next start marks every killed session
    subprocess.run([*base, "--db", str(db), "--shards", "0"], check=True, cwd=ROOT,
                   stderr=subprocess.DEVNULL, timeout=120)
    check_committed_state(db, ref)
    conn = ro(db)
    status = {r["id"]: (r["status"], r["clean"]) for r in conn.execute("SELECT * FROM sessions")}
    assert status[max(status)] == ("closed", 1)
    # every session is closed (the runs that finished, and the last) or marked unclean (the
    # killed runs that got as far as starting one): none is left "running"
    values = list(status.values())
    closed, unclean = values.count(("closed", 1)), values.count(("unclean", 0))
    # a kill after the final commit (while the process tears down) leaves a closed session
    assert closed >= finished + 1 and closed + unclean == len(values)
    assert all(status[s] == ("unclean", 0) for s in killed_ids)
    print(f"{kills} kills, {finished} runs finished first, {mid_run} killed after a checkpoint")
    assert mid_run >= 8  # killed between checkpoints of a running session, not only at start
    conn.close()


# ---- 5. consistency with --json on the corpus -------------------------------------------

CORPUS_CAPS = corpus_files("real") + corpus_files("large")


@pytest.mark.parametrize("cap", CORPUS_CAPS or [None],
                         ids=lambda p: p.name if p else "absent")
def test_db_totals_equal_json_output(cap, tmp_path):
    need_corpus(cap.parent.name if cap is not None else "real")
    db = tmp_path / "flows.db"
    rc, recs = replay(tmp_path, cap, db, "--checkpoint", "0.2")
    assert rc in (0, 1)
    assert_db_equals_json(db, last_session(db), recs)


def test_db_equals_json_in_one_process_and_sharded(tmp_path, capture):
    for shards in ("0", "2"):
        db = tmp_path / f"flows{shards}.db"
        rc, recs = replay(tmp_path, capture, db, "--shards", shards, "--checkpoint", "0.05")
        assert rc == 0
        assert_db_equals_json(db, last_session(db), recs)


def test_live_interfaces_are_recorded(tmp_path):
    """A live session lists its interfaces even before any traffic (no capture needed)."""
    db = tmp_path / "flows.db"
    sid = open_session(db, SessionInfo("live", None, ["lo"]))
    sink = StoreSink(db, sid, interval=0.0, report=lambda m: None)

    class Src:
        iface = "lo"

    class Run:
        sources = [Src()]

        def counters(self):
            from shards.supervisor import RunStats
            return RunStats(kernel_drops=3)

    from iptraf_mp.core.merge import Merger

    class Mon:
        run = Run()
        merger = Merger(1)

    mon = Mon()
    sink.attach(mon)
    sink.update(mon)
    sink.finish(mon)
    sink.close()
    with ro(db) as c:
        assert [tuple(r) for r in c.execute("SELECT name, first_seen FROM interfaces")] \
            == [("lo", None)]
        assert c.execute("SELECT kernel_drops FROM counters ORDER BY checkpoint DESC"
                         ).fetchone()[0] == 3
        assert json.loads(c.execute("SELECT interfaces FROM sessions").fetchone()[0]) == ["lo"]


def test_writer_connection_settings(tmp_path):
    db = tmp_path / "x.db"
    open_session(db, SessionInfo("live"))
    conn = connect(db)
    # NORMAL is crash-safe in WAL mode (point 4 tests it); journal stays WAL
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    with ro(db) as c:
        assert c.execute("SELECT host FROM sessions").fetchone()[0] == socket.gethostname()


# ---- 6. the writer's cost: statements, WAL, big checkpoints -----------------------------

def _pairs(n: int) -> list[Pair]:
    """n established connections to 50 servers, as a busy host has."""
    out = []
    for i in range(n):
        c, srv = (0x0A000000 + i).to_bytes(4, "big"), (0xC0A80000 + i % 50).to_bytes(4, "big")
        port, t = 1024 + i % 60000, 1_700_000_000.0 + i * 1e-3
        a = Entry(c, port, srv, 443, packets=5, bytes=2000, flags=0x18,
                  smac=b"\x02\0\0\0\0\1", first_seen=t, last_seen=t + 1)
        b = Entry(srv, 443, c, port, packets=4, bytes=6000, flags=0x10,
                  smac=b"\x02\0\0\0\0\2", first_seen=t, last_seen=t + 1)
        out.append(Pair(i + 1, "eth0", a, b, False, t, t + 1))
    return out


def _grow(pairs: list[Pair]) -> None:
    for p in pairs:
        p.a.packets += 3
        p.a.bytes += 1500
        p.b.packets += 2
        p.b.bytes += 3000
        p.last_seen = p.a.last_seen = p.b.last_seen = p.last_seen + 5.0


def _snapshot(seq: int, pairs: list[Pair]) -> cp.Checkpoint:
    return cp.Checkpoint(seq, time.monotonic(), time.time(), pairs[-1].last_seen,
                         pair_snapshots(pairs, False), [], (0,) * 21)


def _writer(tmp_path: Path, name: str = "flows.db") -> tuple[Path, cp.Writer, list[str]]:
    db = tmp_path / name
    msgs: list[str] = []
    return db, cp.Writer(db, open_session(db, SessionInfo("live")), msgs.append), msgs


def test_changed_connections_are_written_by_a_few_statements(tmp_path, monkeypatch):
    """executemany runs one statement per row, and the sqlite3 module releases the GIL
    around each: with the monitor's thread busy, each then waits up to 5 ms for it, and a
    checkpoint of 20k changed connections took minutes. Counting the statements makes the
    test independent of the machine's load. (Not with set_trace_callback: SQLite reports
    every firing of the writer's sample triggers too.)"""
    statements: list[str] = []

    class Counted:
        """The writer's connection, counting the statements it is given."""

        def __init__(self, conn: sqlite3.Connection) -> None:
            self._conn = conn

        def execute(self, sql: str, *args):
            statements.append(sql)
            return self._conn.execute(sql, *args)

        def executemany(self, sql: str, rows):
            rows = list(rows)
            statements.extend([sql] * len(rows))  # SQLite runs it once per row
            return self._conn.executemany(sql, rows)

        def __getattr__(self, name: str):
            return getattr(self._conn, name)

    real_connect = cp.connect
    monkeypatch.setattr(cp, "connect", lambda path, timeout=10.0: Counted(real_connect(path,
                                                                                      timeout)))
    db, w, msgs = _writer(tmp_path)
    pairs = _pairs(20_000)
    w._merge(_snapshot(1, pairs))
    w._write()
    inserts = [q for q in statements if q.startswith("INSERT INTO tcp_connections")]
    statements.clear()
    _grow(pairs)
    w._merge(_snapshot(2, pairs))
    w._write()
    w.conn.close()
    updates = [q for q in statements if "UPDATE tcp_connections" in q]
    # a statement per thousand rows or so (SQLite's default limit of bound parameters)
    assert 0 < len(inserts) <= 40 and 0 < len(updates) <= 40, (len(inserts), len(updates))
    assert not msgs and w.committed == 2
    check_committed_state(db)
    with ro(db) as c:
        assert tuple(c.execute("SELECT count(*), sum(a_packets), sum(b_bytes) "
                               "FROM tcp_connections").fetchone()) \
            == (20_000, 20_000 * 8, 20_000 * 9000)
        # a sample per connection and checkpoint: the full counts, then the deltas
        assert [tuple(r) for r in c.execute("SELECT checkpoint, count(*), sum(a_packets), "
                                            "sum(b_bytes) FROM flow_samples GROUP BY 1 "
                                            "ORDER BY 1")] \
            == [(1, 20_000, 20_000 * 5, 20_000 * 6000), (2, 20_000, 20_000 * 3, 20_000 * 3000)]


def test_wal_stays_bounded_over_a_long_run(tmp_path, monkeypatch):
    """SQLite's automatic WAL checkpoint ran inside the COMMIT (0.3-0.7 s of a 100k-row
    checkpoint); the writer turns it off and checkpoints after committing. Without that
    the WAL would grow for the whole run."""
    def run(name: str, checkpoints: bool) -> list[int]:
        db, w, msgs = _writer(tmp_path, name)
        if not checkpoints:
            monkeypatch.setattr(w, "_wal_checkpoint", lambda: None)
        pairs = _pairs(300)
        sizes = []
        for seq in range(1, 61):
            _grow(pairs)
            w._merge(_snapshot(seq, pairs))
            w._write()
            sizes.append(os.path.getsize(f"{db}-wal"))
        assert w.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        w.conn.close()
        assert not msgs
        check_committed_state(db)
        return sizes

    unchecked = run("unchecked.db", False)
    bounded = run("bounded.db", True)
    assert unchecked[-1] > 4 * max(bounded), (unchecked[-1], max(bounded))
    # the size reached in the first third is never exceeded: the WAL starts over each time
    assert max(bounded[20:]) <= max(bounded[:20]), bounded


def test_big_checkpoint_that_fails_midway_is_written_whole_later(tmp_path):
    """From ALONGSIDE_MIN pairs on, a second thread builds rows while the writer's thread
    executes statements. A write that fails midway (disk full) stops the builder and rolls
    back whole; the next one writes every connection once, with the newest counts."""
    db, w, msgs = _writer(tmp_path)
    pairs = _pairs(cp.ALONGSIDE_MIN * 3)
    w._merge(_snapshot(1, pairs))
    with sqlite3.connect(db) as c:
        pages = c.execute("PRAGMA page_count").fetchone()[0]
    c.close()
    w.page_limit = pages + 100  # room for some of the rows, not all
    w._write()
    assert w.error is not None and "full" in w.error and w.committed == 0
    assert not w.conn.in_transaction
    assert not [t for t in threading.enumerate() if t.name == "iptraf-mp store rows"]
    _grow(pairs)  # changes meanwhile: merged with the unwritten ones
    w._merge(_snapshot(2, pairs))
    w.page_limit = 1 << 30
    w._write()
    assert w.error is None and w.committed == 1
    assert len(msgs) == 2 and "writing again" in msgs[1]
    # a bug in the builder: reported like a write error, nothing half-written
    _grow(pairs)
    bad = _snapshot(3, pairs)
    bad.pairs[-1] = (bad.pairs[-1][0], bad.pairs[-1][1][:3], bad.pairs[-1][2], False)
    w._merge(bad)
    try:
        w._write()
    except Exception as e:  # as Writer._run does
        w._failed(e)
    assert w.error is not None and "internal error" in w.error
    assert not w.conn.in_transaction
    w.conn.close()
    check_committed_state(db)
    n = len(pairs)
    with ro(db) as c:
        assert tuple(c.execute("SELECT count(*), sum(a_packets) FROM tcp_connections"
                               ).fetchone()) == (n, n * 8)
        assert tuple(c.execute("SELECT count(*), sum(a_packets) FROM flow_samples"
                               ).fetchone()) == (n, n * 8)
        assert c.execute("SELECT max(checkpoint) FROM counters").fetchone()[0] == 2


def test_null_is_bound_as_nan(filled_db):
    """The writer binds NaN where it means NULL (the sqlite3 module binds None ten times
    slower): SQLite must store it as NULL, never as a number."""
    conn = sqlite3.connect(":memory:")
    assert conn.execute("SELECT typeof(?)", (cp.NULL,)).fetchone()[0] == "null"
    conn.close()
    with ro(filled_db) as c:
        assert c.execute("SELECT count(*) FROM tcp_connections WHERE b_packets = 0 AND "
                         "b_first_seen IS NULL AND b_last_seen IS NULL AND b_mac IS NULL"
                         ).fetchone()[0] == 200  # the lone SYNs
        kinds = dict(tuple(r) for r in c.execute(
            "SELECT kind, sum((sport IS NULL) + (dport IS NULL) + (icmp_type IS NULL) "
            "+ (icmp_code IS NULL)) FROM other_flows GROUP BY kind").fetchall())
        counts = dict(tuple(r) for r in c.execute("SELECT kind, count(*) FROM other_flows "
                                                  "GROUP BY kind"))
        assert kinds == {k: 2 * n for k, n in counts.items()}  # two of the four each
        for col in ("a_first_seen", "b_first_seen", "b_mac", "sport", "icmp_type"):
            table = "other_flows" if col in ("sport", "icmp_type") else "tcp_connections"
            assert c.execute(f"SELECT count(*) FROM {table} WHERE typeof({col}) = 'real' "
                             f"AND {col} != {col}").fetchone()[0] == 0  # no NaN stored


def test_statement_sizes_are_few_whatever_the_checkpoint_sizes():
    """A checkpoint's rows go out in statements of at most MAX_PARAMS values and, for the
    rest, of power-of-two row counts: the prepared statements SQLite keeps (2.7 MB each at a
    thousand rows) are then a dozen sizes per table, not one per checkpoint size."""
    from store import writer as wr

    class Conn:
        def __init__(self) -> None:
            self.ran: list[tuple[str, list]] = []

        def execute(self, sql: str, params: list) -> None:
            self.ran.append((sql, params))

    conn = Conn()
    stmt = wr._INSERT_CONN
    sent: list = []
    for rows in (1, 2, 3, 7, 100, 563, 1022, 1023, 1024, 2047, 5000, 12_345):
        st = wr._Statements(conn)  # type: ignore[arg-type]
        flat = [len(sent) + i for i in range(rows * stmt.width)]
        sent += flat
        half = (rows // 2) * stmt.width  # handed over in two pieces, as the builder does
        st.add(stmt, flat[:half])
        st.add(stmt, flat[half:])
        assert st.flush() == rows
    got = [v for _sql, params in conn.ran for v in params]
    assert got == sent  # every value, once, in order
    per = wr.MAX_PARAMS // stmt.width
    sizes = {len(params) // stmt.width for _sql, params in conn.ran}
    assert sizes <= {per} | {1 << k for k in range(per.bit_length())}
    assert all(sql == wr._statement(stmt, len(params) // stmt.width) for sql, params in conn.ran)
