"""The flow store's SQLite schema: created and migrated with sqlite-utils.

One file holds the history of every run (a *session*). Pair ids restart at every run, so a
connection is keyed by (session_id, pair_id); other-protocol flows by (session_id, flow_id).
Addresses are text, formatted as in the `--json` output. Times are Unix seconds: packet
times (`first_seen`, `last_seen`, `ts`, `packet_time`) come from the capture, so a replay's
rows carry the time of the recording; `started`, `ended` and `wall_time` are the wall clock.

`schema_version` in the `meta` table says which migrations have run; `migrate()` applies the
missing ones in one immediate transaction, so two monitors starting at once cannot both do it.

Rule numbers cited here are docs/decisions.md's.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite_utils

SCHEMA_VERSION = 4
PAIR_ID_BITS = 44  # tcp_connections.id = session_id << 44 | pair_id


class SchemaError(Exception):
    """The file cannot be used as a flow store (a one-line reason)."""


def create_private(path: Path) -> None:
    """Create the database file (and its folder) readable by its owner only, before SQLite
    opens it: flow history says who talked to whom. SQLite gives the -wal and -shm files
    the main file's mode. An existing file is left as it is."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


def connect(path: Path | str, timeout: float = 10.0) -> sqlite3.Connection:
    """A read-write connection with the settings every writer uses."""
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    # NORMAL in WAL mode: a commit is whole or absent after any crash of the process (what
    # as it must: SIGKILL at any moment) and the file is never corrupted; only a power cut
    # may lose the last checkpoints. FULL would fsync the WAL at every commit, which for a
    # 100k-connection checkpoint (30 MB of WAL) costs a large part of the 1 s budget.
    conn.execute("PRAGMA synchronous = NORMAL")
    # A 100k-row checkpoint makes the WAL big; do not keep it that big afterwards.
    conn.execute("PRAGMA journal_size_limit = 67108864")
    conn.execute("PRAGMA cache_size = -32768")
    return conn


def enable_wal(conn: sqlite3.Connection) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise SchemaError(f"cannot switch the database to WAL mode (it stays {mode})")


def schema_version(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError:
        return 0  # no meta table: a new, empty file
    return int(row[0]) if row else 0


def _entry_names(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}_{k}" for k in ("packets", "bytes", "flags", "state", "mac",
                                           "first_seen", "last_seen", "last_size", "window"))


# The columns of every table at SCHEMA_VERSION, which the monitor writes and the views read.
# migrate() checks a store has them: a development build wrote files that claim schema
# version 2 with other columns, and the monitor found out only at exit, when every
# checkpoint had failed. (A test keeps this equal to what the migrations create.)
COLUMNS: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "sessions": ("id", "started", "ended", "status", "clean", "source", "replay_file", "host",
                 "pid", "pid_start", "interfaces", "settings", "version", "checkpoints",
                 "last_checkpoint", "last_packet"),
    "interfaces": ("session_id", "name", "first_seen", "last_seen"),
    "tcp_connections": ("id", "session_id", "pair_id", "iface", "a_addr", "a_port", "b_addr",
                        "b_port", "partial", "first_seen", "last_seen", "ended_by", "retired",
                        "checkpoint", *_entry_names("a"), *_entry_names("b")),
    "flow_samples": ("session_id", "pair_id", "checkpoint", "ts", "a_packets", "a_bytes",
                     "b_packets", "b_bytes"),
    "other_flows": ("session_id", "flow_id", "iface", "kind", "protocol", "src", "dst",
                    "sport", "dport", "icmp_type", "icmp_code", "packets", "bytes",
                    "first_seen", "last_seen", "checkpoint"),
    "other_samples": ("session_id", "flow_id", "checkpoint", "ts", "packets", "bytes"),
    "counters": ("session_id", "checkpoint", "wall_time", "packet_time", "frames",
                 *(f"{k}_{v}" for k in ("ip", "tcp", "udp", "icmp", "other_ip", "non_ip")
                   for v in ("packets", "bytes")),
                 "malformed", "untracked", "kernel_drops", "queue_drops",
                 "queue_dropped_packets", "shard_restarts", "lost_pairs", "final",
                 "lag_seconds", "evicted_flows"),
    "syn_warnings": ("session_id", "checkpoint", "packet_time", "iface", "dst", "halfopen"),
}


def check_columns(conn: sqlite3.Connection) -> None:
    """Raise SchemaError (one line) unless every table has the columns this version writes
    and none that it would leave empty but must not (NOT NULL without a default).
    PRAGMA table_info only: no sqlite_utils import on the way to a run."""
    problems = []
    for table, expected in COLUMNS.items():
        info = conn.execute("SELECT name, \"notnull\", dflt_value, pk "
                            "FROM pragma_table_info(?)", (table,)).fetchall()
        if not info:
            problems.append(f"no table {table}")
            continue
        have = {r[0] for r in info}
        missing = [c for c in expected if c not in have]
        if missing:
            problems.append(f"{table} lacks {', '.join(missing)}")
        unfilled = [r[0] for r in info
                    if r[0] not in expected and r[1] and r[2] is None and not r[3]]
        if unfilled:
            problems.append(f"{table} has {', '.join(unfilled)} (NOT NULL, which this "
                            f"iptraf-mp does not write)")
    if problems:
        raise SchemaError(f"its tables are not those of schema version {SCHEMA_VERSION} "
                          f"({'; '.join(problems)}): written by an older development "
                          f"build? Use another file (--db PATH) or no store (--no-db)")


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION and check its columns (check_columns); returns
    the version found before. A database that is not a store is refused before anything
    in it changes (switching to WAL mode alone rewrites its header)."""
    if schema_version(conn) == 0 and conn.execute(
            "SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise SchemaError("not an iptraf-mp flow store (it has tables of its own and no "
                          "iptraf-mp schema version): left as it is")
    enable_wal(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(conn)
        if found > SCHEMA_VERSION:
            raise SchemaError(f"the database has schema version {found}; this iptraf-mp "
                              f"knows up to {SCHEMA_VERSION} (a newer iptraf-mp wrote it)")
        if found < SCHEMA_VERSION:
            # imported only to create or migrate: it takes longer to import than a replay
            # of a small capture takes to run
            import sqlite_utils

            db = sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)
        for version in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version](db)
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         (str(version),))
        check_columns(conn)
        conn.execute("COMMIT")
        return found
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# ---- version 1 ---------------------------------------------------------------------------

_ENTRY = {
    "packets": int, "bytes": int,
    "flags": str,  # S P A U of the most recent packet, e.g. "S-A-" (rule 5)
    "state": str,  # ACTIVE, DONE, CLOSED, RESET or TIMEOUT
    "mac": str,  # source MAC of the most recent packet; NULL where the link has none
    "first_seen": float, "last_seen": float,  # NULL while the direction has no packet
    "last_size": int, "window": int,
}


def _entry_columns(prefix: str) -> dict:
    return {f"{prefix}_{k}": v for k, v in _ENTRY.items()}


def _v1(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("sessions").create({
        "id": int,
        "started": float, "ended": float,
        "status": str,  # running, closed, or unclean (found still running after a crash)
        "clean": int,  # 1 closed cleanly, 0 not, NULL while running
        "source": str,  # live or replay
        "replay_file": str,
        "host": str, "pid": int,
        "pid_start": int,  # the process's start time in clock ticks: tells pid reuse apart
        "interfaces": str,  # JSON list of names
        "settings": str,  # JSON object of what changes results
        "version": str,
        "checkpoints": int,  # checkpoint transactions committed
        "last_checkpoint": float,  # wall time of the last one
        "last_packet": float,  # packet time at the last one
    }, pk="id", not_null=["started", "status", "source", "host", "version"],
        defaults={"status": "running", "checkpoints": 0})
    db.table("interfaces").create({
        "session_id": int, "name": str, "first_seen": float, "last_seen": float,
    }, pk=("session_id", "name"), foreign_keys=[("session_id", "sessions", "id")])
    db.table("tcp_connections").create({
        # session_id * 2**44 + pair_id: the key a checkpoint updates by (one B-tree seek,
        # where (session_id, pair_id) through its index takes two)
        "id": int,
        "session_id": int,
        "pair_id": int,  # the run's pair id (the `pair` of --json): restarts every session
        "iface": str,
        "a_addr": str, "a_port": int,  # A sent the first packet seen: direction a is A -> B
        "b_addr": str, "b_port": int,
        "partial": int,  # 1: created by a packet that was not a SYN (rule 3)
        "first_seen": float, "last_seen": float,
        "ended_by": str,  # OPEN (not yet), FIN, RESET, ICMP, TIMEOUT, LOST (shard died)
        "retired": int,  # 1: left the engine, the row is final
        "checkpoint": int,  # the checkpoint that last changed the row
        **_entry_columns("a"), **_entry_columns("b"),
    }, pk="id", foreign_keys=[("session_id", "sessions", "id")],
        not_null=["session_id", "pair_id", "iface", "a_addr", "a_port", "b_addr", "b_port",
                  "ended_by"])
    # One row per connection and checkpoint with both directions' deltas, rather than one
    # per direction: half the rows and index entries for the usual two-way connection (the
    # tcp_traffic view gives one row per direction).
    db.table("flow_samples").create({
        "session_id": int, "pair_id": int,
        "checkpoint": int,
        "ts": float,  # packet time of the connection's last packet counted in this sample
        # added since the previous sample, per direction (a: A -> B, b: B -> A)
        "a_packets": int, "a_bytes": int, "b_packets": int, "b_bytes": int,
    }, foreign_keys=[("session_id", "sessions", "id")])
    db.table("other_flows").create({
        "session_id": int, "flow_id": int, "iface": str,
        "kind": str,  # udp, icmp (v4 and v6), other_ip, non_ip
        "protocol": int,  # IP protocol number; for non_ip the EtherType (-1: none)
        "src": str, "dst": str,  # addresses; MACs for non_ip
        "sport": int, "dport": int,  # UDP only
        "icmp_type": int, "icmp_code": int,  # ICMP and ICMPv6 only
        "packets": int, "bytes": int,
        "first_seen": float, "last_seen": float,
        "checkpoint": int,
    }, pk=("session_id", "flow_id"), foreign_keys=[("session_id", "sessions", "id")])
    db.table("other_samples").create({
        "session_id": int, "flow_id": int, "checkpoint": int, "ts": float,
        "packets": int, "bytes": int,
    }, foreign_keys=[("session_id", "sessions", "id")])
    counters = {"session_id": int, "checkpoint": int, "wall_time": float, "packet_time": float,
                "frames": int}
    for name in ("ip", "tcp", "udp", "icmp", "other_ip", "non_ip"):
        counters[f"{name}_packets"] = int
        counters[f"{name}_bytes"] = int
    counters.update({"malformed": int,
                     "untracked": int,  # TCP connections not tracked: the table was full
                     "kernel_drops": int,
                     "queue_drops": int,  # batches the capture side could not queue
                     "queue_dropped_packets": int, "shard_restarts": int, "lost_pairs": int,
                     "final": int,  # 1 on the row written at exit
                     "lag_seconds": float})  # from the snapshot to its commit
    db.table("counters").create(counters, pk=("session_id", "checkpoint"),
                                foreign_keys=[("session_id", "sessions", "id")])

    # The common questions: what happened in a time range, to an address, on a port.
    # Not indexed on purpose: last_seen (it changes at every checkpoint of a busy connection,
    # each change would move its index entry) and a_port (mostly ephemeral client ports).
    tc = db.table("tcp_connections")
    tc.create_index(["session_id", "pair_id"], unique=True)  # the connection's real key
    for cols in (["a_addr"], ["b_addr"], ["b_port"], ["first_seen"]):
        tc.create_index(cols)
    # Samples are indexed by time only: a checkpoint's samples carry the latest packet
    # times, so they land at the right edge of the index. An index by connection would take
    # one new entry in the middle of each changed connection's run of samples, rewriting a
    # page per connection at every checkpoint (400 MB of WAL for 100k busy connections once
    # the history is long). One connection's samples: bound them by its first/last_seen.
    db.table("flow_samples").create_index(["ts"])
    of = db.table("other_flows")
    for cols in (["src"], ["dst"], ["dport"], ["first_seen"]):
        of.create_index(cols)
    db.table("other_samples").create_index(["ts"])
    db.table("sessions").create_index(["status"])

    # Per-direction views, so that most questions need no CASE or join.
    def entry_select(d: str, src: str, dst: str) -> str:
        cols = ", ".join(f"{d}_{k} AS {k}" for k in _ENTRY)
        return (f"SELECT session_id, pair_id, iface, '{d}' AS direction, "
                f"{src}_addr AS src, {src}_port AS sport, {dst}_addr AS dst, "
                f"{dst}_port AS dport, {cols}, partial, ended_by, retired "
                f"FROM tcp_connections")

    db.create_view("tcp_entries", entry_select("a", "a", "b") + " UNION ALL "
                   + entry_select("b", "b", "a"))
    # (version 4 joins on the id instead)
    _traffic_views(db, "c.session_id = s.session_id AND c.pair_id = s.pair_id")


# ---- version 2 ---------------------------------------------------------------------------

def _v2(db: sqlite_utils.Database) -> None:
    """IPTraf's manual's SYN-flood sign: at each checkpoint, every destination with at
    least --syn-warn unanswered lone-SYN (S---) entries."""
    db.table("syn_warnings").create({
        "session_id": int, "checkpoint": int, "packet_time": float, "iface": str,
        "dst": str, "halfopen": int,
    }, foreign_keys=[("session_id", "sessions", "id")])
    db.table("syn_warnings").create_index(["packet_time"])


# ---- version 3 ---------------------------------------------------------------------------

def _v3(db: sqlite_utils.Database) -> None:
    """--max-flows: non-TCP flows ended early because the flow table was full (0 in the
    counters of sessions recorded before this column existed, which had no such limit)."""
    db.execute("ALTER TABLE counters ADD COLUMN evicted_flows INTEGER NOT NULL DEFAULT 0")


# ---- version 4 ---------------------------------------------------------------------------

# Keyed by time first: a checkpoint's samples carry the latest packet times, so they land
# at the right edge of the key, and questions over a time range read one run of it
_SAMPLE_TABLES = {
    "flow_samples": ("pair_id", "a_packets INTEGER, a_bytes INTEGER, b_packets INTEGER, "
                                "b_bytes INTEGER"),
    "other_samples": ("flow_id", "packets INTEGER, bytes INTEGER"),
}


def _v4(db: sqlite_utils.Database) -> None:
    """A checkpoint of many new connections, cheaper (100k: bench_store.py's floor): each
    sample table is one B-tree instead of two (WITHOUT ROWID, its key (ts, session_id,
    pair_id or flow_id, checkpoint), in place of a rowid table and its ts index), and
    tcp_connections loses its (session_id, pair_id) index: its id is session_id << 44 |
    pair_id, which the views join on. Rows are copied over; the views are made again.
    Partial indexes for reset and half-open connections."""
    conn = db.conn
    for view in ("tcp_traffic", "other_traffic"):
        conn.execute(f"DROP VIEW IF EXISTS {view}")
    for table, (key, values) in _SAMPLE_TABLES.items():
        names = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        conn.execute(f"CREATE TABLE {table}_v4 (session_id INTEGER NOT NULL REFERENCES "
                     f"sessions(id), {key} INTEGER NOT NULL, checkpoint INTEGER NOT NULL, "
                     f"ts FLOAT NOT NULL, {values}, "
                     f"PRIMARY KEY (ts, session_id, {key}, checkpoint)) WITHOUT ROWID")
        cols = ", ".join(names)
        conn.execute(f"INSERT INTO {table}_v4 ({cols}) SELECT {cols} FROM {table}")
        conn.execute(f"DROP TABLE {table}")
        conn.execute(f"ALTER TABLE {table}_v4 RENAME TO {table}")
    conn.execute("DROP INDEX IF EXISTS idx_tcp_connections_session_id_pair_id")
    # Two of docs/store.md's questions, on the few rows they ask about (a partial index
    # holds only its rows: a checkpoint touches it for those alone)
    conn.execute("CREATE INDEX idx_tcp_connections_reset ON tcp_connections (last_seen) "
                 "WHERE ended_by IN ('RESET', 'ICMP')")
    conn.execute("CREATE INDEX idx_tcp_connections_halfopen ON tcp_connections (b_addr) "
                 "WHERE a_flags = 'S---' AND b_packets = 0")
    _traffic_views(db, f"c.id = (s.session_id << {PAIR_ID_BITS}) | s.pair_id")


def _traffic_views(db: sqlite_utils.Database, join: str) -> None:
    """The samples with their connection's or flow's addresses, one row per direction;
    `join`: how a sample finds its connection."""
    def traffic_select(d: str, src: str, dst: str) -> str:
        return (f"SELECT s.session_id, s.pair_id, '{d}' AS direction, s.checkpoint, s.ts, "
                f"c.iface, c.{src}_addr AS src, c.{src}_port AS sport, c.{dst}_addr AS dst, "
                f"c.{dst}_port AS dport, s.{d}_packets AS packets, s.{d}_bytes AS bytes "
                f"FROM flow_samples s JOIN tcp_connections c ON {join} "
                f"WHERE s.{d}_packets != 0 OR s.{d}_bytes != 0")

    db.create_view("tcp_traffic", traffic_select("a", "a", "b") + " UNION ALL "
                   + traffic_select("b", "b", "a"))
    db.create_view("other_traffic", """
SELECT s.session_id, s.flow_id, s.checkpoint, s.ts, f.iface, f.kind, f.protocol,
       f.src, f.sport, f.dst, f.dport, f.icmp_type, f.icmp_code, s.packets, s.bytes
FROM other_samples s
JOIN other_flows f ON f.session_id = s.session_id AND f.flow_id = s.flow_id""".strip())


MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {
    1: _v1, 2: _v2, 3: _v3, 4: _v4}


def schema_text(conn: sqlite3.Connection) -> str:
    """The CREATE statements, tables first, as `sqlite3 .schema` prints them."""
    rows = conn.execute(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
        "ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END, rowid"
    ).fetchall()
    return "\n".join(r[0].strip() + ";" for r in rows)
