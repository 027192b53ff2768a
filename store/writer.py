"""The flow store's writer thread: checkpoints in, one transaction each, rows out.

The monitor's main loop must never wait for the disk, so the sink (sink.py) only copies what
changed into a `Checkpoint` of plain tuples and puts it on a queue; the `Writer` thread turns
checkpoints into rows and writes each batch in one transaction. A slow disk makes checkpoints
late (`lag_seconds`, `pending`), never packets lost. When a write fails (disk full, I/O error,
a lock held too long) the transaction rolls back, the error is reported once, and the
unwritten changes are kept and merged with the next checkpoints: the writer tries again every
`retry` seconds, and deltas are always taken against what was *committed*, so nothing is
lost or counted twice when writing works again.

Crash safety comes from SQLite: each checkpoint is one transaction in WAL mode, so a process
killed at any moment leaves every committed checkpoint whole and nothing of the one in flight.

Rule numbers cited here are docs/decisions.md's.
"""

from __future__ import annotations

import contextlib
import functools
import json
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

from iptraf_mp.core.model import K_ICMP, K_NON_IP, K_UDP, KIND_NAMES, fmt_addr, fmt_flags, fmt_mac
from iptraf_mp.core.snapshot import PairSnapshot

from .schema import PAIR_ID_BITS, connect

# One C call per flow copies every field the store needs (a checkpoint must not hold the
# monitor's loop for long); pairs are copied by core/snapshot.py.
FLOW_FIELDS = attrgetter("iface", "kind", "proto", "src", "dst", "sport", "dport", "packets",
                         "bytes", "first_seen", "last_seen", "id", "ended")
_FLAGS = tuple(fmt_flags(i) for i in range(256))  # rule 5's column, by flags byte


@dataclass(slots=True)
class Checkpoint:
    """One checkpoint's values, copied in the monitor's thread; nothing here is shared with
    it."""

    seq: int
    taken: float  # monotonic, for the lag
    wall: float
    packet_time: float
    pairs: list[PairSnapshot]  # core/snapshot.py: pair, entry a, entry b, released
    flows: list[tuple]  # FLOW_FIELDS: the merged flow's id is its flow_id
    counters: tuple  # frames, (packets, bytes) x 6, malformed, untracked, the run's drops
    final: bool = False
    syn: tuple = ()  # (iface, destination, lone SYNs) at or above --syn-warn


# ---- the writer thread -------------------------------------------------------------------

_STOP = object()


_STATES = ("ACTIVE", "DONE", "CLOSED")  # by Entry.finsent, when not RESET or TIMEOUT


# Every table is written with multi-row statements (`_Bulk`): VALUES lists of many rows for
# inserts, and for updates an UPDATE ... FROM a VALUES list. executemany would run one
# statement per row, and the sqlite3 module releases the GIL around each: while the monitor's
# thread is busy, the writer then waits up to a whole switch interval (5 ms) to get it back,
# row after row (a 100k-row executemany measured 19 s instead of 2.7 s). A statement of a
# thousand rows waits a thousand times less. On an idle machine UPDATE FROM costs what
# executemany does (0.45 s for 100k rows).
#
# NULL is bound as a NaN: SQLite stores a NaN double as NULL, and the sqlite3 module binds a
# float in 0.05 us where None costs 0.45 us (it looks for an adapter first); a half-open
# connection (no reply: no times, no MAC) has three NULLs, an ICMP or UDP flow two.
NULL = float("nan")


@dataclass(frozen=True)
class _Bulk:
    """A statement that writes rows of `width` values from a flat list: head, the rows as
    (?, ?, ...) groups, tail. Every value is a bound parameter."""

    head: str
    width: int
    tail: str = ""


def _columns(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(names)


_CONN_COLUMNS = (
    "id", "session_id", "pair_id", "iface", "a_addr", "a_port", "b_addr", "b_port", "partial",
    "first_seen", "last_seen", "ended_by", "retired", "checkpoint",
    "a_packets", "a_bytes", "a_flags", "a_state", "a_mac", "a_first_seen", "a_last_seen",
    "a_last_size", "a_window", "b_packets", "b_bytes", "b_flags", "b_state", "b_mac",
    "b_first_seen", "b_last_seen", "b_last_size", "b_window")
_INSERT_CONN = _Bulk(
    f"INSERT INTO tcp_connections ({_columns(_CONN_COLUMNS)}) VALUES ", len(_CONN_COLUMNS),
    # a retried checkpoint may meet a row its failed attempt never wrote, never one it did;
    # the upsert only makes a bug there harmless instead of stalling the writer
    " ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen, "
    "ended_by = excluded.ended_by, retired = excluded.retired, "
    "checkpoint = excluded.checkpoint, a_packets = excluded.a_packets, "
    "a_bytes = excluded.a_bytes, b_packets = excluded.b_packets, b_bytes = excluded.b_bytes")
# Only the columns that can change: index entries of the others are not touched.
_CHANGING = ("id", "last_seen", "ended_by", "retired", "checkpoint", *_CONN_COLUMNS[14:])
_UPDATE_CONN = _Bulk(
    f"WITH v({_columns(_CHANGING)}) AS (VALUES ", len(_CHANGING),
    ") UPDATE tcp_connections SET "
    + ", ".join(f"{c} = v.{c}" for c in _CHANGING[1:])
    + " FROM v WHERE tcp_connections.id = v.id")
_INSERT_FLOW = _Bulk(
    "INSERT INTO other_flows (session_id, flow_id, iface, kind, protocol, src, dst, sport, "
    "dport, icmp_type, icmp_code, packets, bytes, first_seen, last_seen, checkpoint) VALUES ",
    16,
    " ON CONFLICT(session_id, flow_id) DO UPDATE SET packets = excluded.packets, "
    "bytes = excluded.bytes, last_seen = excluded.last_seen, checkpoint = excluded.checkpoint")
_UPDATE_FLOW = _Bulk(
    "WITH v(session_id, flow_id, packets, bytes, last_seen, checkpoint) AS (VALUES ", 6,
    ") UPDATE other_flows SET packets = v.packets, bytes = v.bytes, last_seen = v.last_seen, "
    "checkpoint = v.checkpoint FROM v "
    "WHERE other_flows.session_id = v.session_id AND other_flows.flow_id = v.flow_id")
# The samples (deltas since the previous sample) are written by SQLite itself, from the row
# before and after: the writer's connection has these TEMP triggers (they live in that
# connection only, not in the file). The delta is then taken against what is committed by
# construction, and the writer keeps no counts of its own and binds 8 values less a
# connection: SQLite's side costs the same, the Python side 0.05-0.1 s less for 100k.
_SAMPLE_TRIGGERS = (
    """CREATE TEMP TRIGGER IF NOT EXISTS tcp_sample_new AFTER INSERT ON main.tcp_connections
    WHEN NEW.a_packets != 0 OR NEW.a_bytes != 0 OR NEW.b_packets != 0 OR NEW.b_bytes != 0
    BEGIN
        INSERT INTO flow_samples (session_id, pair_id, checkpoint, ts,
                                  a_packets, a_bytes, b_packets, b_bytes)
        VALUES (NEW.session_id, NEW.pair_id, NEW.checkpoint, NEW.last_seen,
                NEW.a_packets, NEW.a_bytes, NEW.b_packets, NEW.b_bytes);
    END""",
    """CREATE TEMP TRIGGER IF NOT EXISTS tcp_sample_changed
    AFTER UPDATE OF a_packets, a_bytes, b_packets, b_bytes ON main.tcp_connections
    WHEN NEW.a_packets != OLD.a_packets OR NEW.a_bytes != OLD.a_bytes
      OR NEW.b_packets != OLD.b_packets OR NEW.b_bytes != OLD.b_bytes
    BEGIN
        INSERT INTO flow_samples (session_id, pair_id, checkpoint, ts,
                                  a_packets, a_bytes, b_packets, b_bytes)
        VALUES (NEW.session_id, NEW.pair_id, NEW.checkpoint, NEW.last_seen,
                NEW.a_packets - OLD.a_packets, NEW.a_bytes - OLD.a_bytes,
                NEW.b_packets - OLD.b_packets, NEW.b_bytes - OLD.b_bytes);
    END""",
    """CREATE TEMP TRIGGER IF NOT EXISTS other_sample_new AFTER INSERT ON main.other_flows
    WHEN NEW.packets != 0 OR NEW.bytes != 0
    BEGIN
        INSERT INTO other_samples (session_id, flow_id, checkpoint, ts, packets, bytes)
        VALUES (NEW.session_id, NEW.flow_id, NEW.checkpoint, NEW.last_seen,
                NEW.packets, NEW.bytes);
    END""",
    """CREATE TEMP TRIGGER IF NOT EXISTS other_sample_changed
    AFTER UPDATE OF packets, bytes ON main.other_flows
    WHEN NEW.packets != OLD.packets OR NEW.bytes != OLD.bytes
    BEGIN
        INSERT INTO other_samples (session_id, flow_id, checkpoint, ts, packets, bytes)
        VALUES (NEW.session_id, NEW.flow_id, NEW.checkpoint, NEW.last_seen,
                NEW.packets - OLD.packets, NEW.bytes - OLD.bytes);
    END""",
)
_UPSERT_IFACE = _Bulk(
    "INSERT INTO interfaces (session_id, name, first_seen, last_seen) VALUES ", 4,
    " ON CONFLICT(session_id, name) DO UPDATE SET "
    "first_seen = MIN(COALESCE(first_seen, excluded.first_seen), "
    "COALESCE(excluded.first_seen, first_seen)), "
    "last_seen = MAX(COALESCE(last_seen, excluded.last_seen), "
    "COALESCE(excluded.last_seen, last_seen))")
_COUNTER_COLUMNS = (
    "session_id", "checkpoint", "wall_time", "packet_time", "frames", "ip_packets", "ip_bytes",
    "tcp_packets", "tcp_bytes", "udp_packets", "udp_bytes", "icmp_packets", "icmp_bytes",
    "other_ip_packets", "other_ip_bytes", "non_ip_packets", "non_ip_bytes", "malformed",
    "untracked", "evicted_flows", "kernel_drops", "queue_drops", "queue_dropped_packets",
    "shard_restarts",
    "lost_pairs", "final", "lag_seconds")
_INSERT_COUNTERS = _Bulk(f"INSERT INTO counters ({_columns(_COUNTER_COLUMNS)}) VALUES ",
                         len(_COUNTER_COLUMNS))
_INSERT_SYN = _Bulk("INSERT INTO syn_warnings (session_id, checkpoint, packet_time, iface, dst, "
                    "halfopen) VALUES ", 6)
# Parameters per statement: SQLite's default limit (builds may allow more; Debian's 250000).
# A statement's text is prepared once per size and kept, but preparing costs about 17 us a
# row (ten times executing it), so the size a checkpoint ends with, which changes every time,
# must stay small: 32766 parameters is about a thousand rows of a connection.
MAX_PARAMS = 32766
# The writer checkpoints the WAL itself, after the commit (Writer._wal_checkpoint), once it
# holds about this many pages, counted as a page per row written and a few per commit (the
# sessions and counters rows, the ends of the indexes). SQLite's automatic checkpoint, which
# this replaces, runs from 1000 pages on.
WAL_CHECKPOINT_PAGES = 2000
# Rows are built in pieces of this many pairs and handed to the statements as they come.
ROW_CHUNK = 1024
# From this many pairs on, rows are built in a second thread (Writer._rows_alongside).
ALONGSIDE_MIN = 4096


@functools.lru_cache(maxsize=128)
def _statement(stmt: _Bulk, rows: int) -> str:
    one = "(" + ", ".join(["?"] * stmt.width) + ")"
    return stmt.head + ", ".join([one] * rows) + stmt.tail


class _Statements:
    """Runs `_Bulk` statements on rows handed over in pieces: a statement runs as soon as
    it has MAX_PARAMS values, the rest at flush(), so the rows of a checkpoint take as few
    statements as if they had come at once."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pending: dict[_Bulk, list] = {}
        self.rows = 0  # rows written

    def add(self, stmt: _Bulk, flat: list) -> None:
        buf = self.pending.get(stmt)
        if buf is None:
            buf = self.pending[stmt] = []
        buf += flat
        per = max(1, MAX_PARAMS // stmt.width) * stmt.width
        if len(buf) >= per:
            full = len(buf) - len(buf) % per
            text = _statement(stmt, per // stmt.width)
            for i in range(0, full, per):
                self.conn.execute(text, buf[i:i + per])
            del buf[:full]
            self.rows += full // stmt.width

    def flush(self) -> int:
        for stmt, buf in self.pending.items():
            # The rest in statements of power-of-two sizes: a statement of each size stays
            # prepared (the sqlite3 module keeps the last 128), where one of the rest's own
            # size would be new at nearly every checkpoint, and each prepared statement of a
            # thousand rows holds 2.7 MB: a long run kept hundreds of MB of them
            rows = len(buf) // stmt.width
            pos = 0
            size = 1 << max(0, rows.bit_length() - 1)
            while rows:
                if size <= rows:
                    end = pos + size * stmt.width
                    self.conn.execute(_statement(stmt, size), buf[pos:end])
                    pos, rows = end, rows - size
                    self.rows += size
                size >>= 1
        self.pending.clear()
        return self.rows


class _Abandoned(Exception):
    """The write failed: the thread building its rows stops."""


class Writer:
    """The one thread that writes. Its state is its own (a big write lends it to a second
    thread that builds rows, and waits for it); the monitor's thread only puts snapshots
    on the queue and reads a few ints and strings for the status."""

    def __init__(self, path: Path, session_id: int, report: Callable[[str], None],
                 retry: float = 1.0) -> None:
        self.path = path
        self.sid = session_id
        self.report = report
        self.retry = retry
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="iptraf-mp store", daemon=True)
        self.conn: sqlite3.Connection | None = None
        # what is committed (the deltas are SQLite's, against the committed rows)
        self.known: set[int] = set()  # pairs with a committed row, not yet released
        # Flows with a committed row, not yet ended. A flow's id is the merger's (in order
        # of first appearance in the run); a new generation of a key is a new flow, so a
        # new row, never an update of an old generation's row with smaller counts.
        # The packets and bytes committed, so that a flow that ends with nothing new since
        # (the usual end: idle for --flow-idle) costs no write at all.
        self.known_flows: dict[int, tuple[int, int]] = {}
        self.ifaces: set[str] = set()
        self.declared_ifaces: list[str] = []  # live: the interfaces asked for, seen or not
        # merged and not yet committed
        self.p_pairs: dict[int, tuple] = {}
        self.p_flows: dict[int, tuple] = {}
        self.p_counters: list[Checkpoint] = []
        # read by the monitor's thread (single assignments are atomic)
        self.committed_seq = 0
        self.committed = 0
        self.error: str | None = None
        self.last_write = 0.0
        self.final_done = threading.Event()
        self.page_limit: int | None = None  # tests: PRAGMA max_page_count, a full disk
        self.last_commit = 0.0  # monotonic time of the last COMMIT
        self.last_wal_checkpoint = 0.0  # the WAL checkpoint after it, 0 when none ran
        self.last_busy = 0.0  # the last write and its WAL checkpoint
        self.writes = 0  # writes done, WAL checkpoint included (the benchmark waits on it)
        self.wal_pages = 0  # estimated pages written to the WAL since its last checkpoint
        # formatted once, not at every row: most rows share their addresses and MACs
        self._macs: dict[bytes | None, str | float] = {None: NULL}
        self._addrs: dict[bytes, str] = {}

    def start(self) -> None:
        self.thread.start()

    def put(self, snap: Checkpoint) -> None:
        self.q.put(snap)

    def stop(self, timeout: float = 5.0) -> None:
        if self.thread.is_alive():
            self.q.put(_STOP)
            self.thread.join(timeout)

    # -- loop --

    def _run(self) -> None:
        try:
            while True:
                pending = bool(self.p_counters)
                try:
                    item = self.q.get(timeout=self.retry if pending else None)
                except queue.Empty:
                    item = None
                while item is not None:
                    if item is _STOP:
                        return  # unwritten changes are dropped: the session stays unclean
                    self._merge(item)
                    try:
                        item = self.q.get_nowait()
                    except queue.Empty:
                        item = None
                if self.p_counters:
                    try:
                        self._write()
                    except Exception as e:
                        # A bug must not kill the thread silently: it is reported like a
                        # disk error, the changes are kept and the monitor goes on.
                        self._failed(e)
        finally:
            if self.conn is not None:
                self.conn.close()

    def _merge(self, snap: Checkpoint) -> None:
        # The latest state of a pair or flow replaces an older one: the delta is taken
        # against what was committed, so merging loses nothing.
        pp = self.p_pairs
        for t in snap.pairs:
            pp[t[0][0]] = t
        pf = self.p_flows
        for f in snap.flows:
            pf[f[11]] = f
        self.p_counters.append(snap)

    # -- one transaction --

    def _mac(self, mac: bytes | None) -> str | float:
        s = self._macs.get(mac)
        if s is None:
            if len(self._macs) > 65536:
                self._macs.clear()
                self._macs[None] = NULL
            s = self._macs[mac] = fmt_mac(mac) if mac is not None else NULL
        return s

    def _addr(self, addr: bytes) -> str:
        if len(self._addrs) > 65536:
            self._addrs.clear()
        # fmt_addr, without its call for the usual IPv4
        s = self._addrs[addr] = (socket.inet_ntop(socket.AF_INET, addr) if len(addr) == 4
                                 else fmt_addr(addr))
        return s

    def _rows(self, seq: int, emit: Callable[[_Bulk, list], None]) -> list:
        """Turns what is pending into rows, handed to `emit` (statement, flat values) every
        ROW_CHUNK pairs; returns the interfaces' rows."""
        # The hot loop of a big checkpoint (100k pairs): locals, table lookups, one tuple
        # per row, no call that can be avoided, and the values go straight into the flat
        # lists the statements bind. The samples are SQLite's (_SAMPLE_TRIGGERS).
        sid = self.sid
        ifaces: dict[str, list] = {}
        known = self.known
        mac_get, mac = self._macs.get, self._mac
        addr_get, addr = self._addrs.get, self._addr
        flags, states = _FLAGS, _STATES
        null = NULL
        id_base = sid << PAIR_ID_BITS
        span_iface, span = None, [0.0, 0.0]
        items = list(self.p_pairs.items())
        for start in range(0, len(items), ROW_CHUNK):
            inserts: list = []
            updates: list = []
            ins, upd = inserts.extend, updates.extend
            for pid, (p, a, b, retired) in items[start:start + ROW_CHUNK]:
                _pid, iface, partial, first, last, end, timed_out = p
                (asrc, asport, adst, adport, ap, ab, af, am, afin, ares, afirst, alast, asize,
                 awin) = a
                _s, _sp, _d, _dp, bp, bb, bf, bm, bfin, bres, bfirst, blast, bsize, bwin = b
                # tcptable.entry_state; and as --json, no times for a direction without
                # packets
                row = (ap, ab, flags[af & 0xFF],
                       "RESET" if ares else "TIMEOUT" if timed_out else states[afin],
                       mac_get(am) or mac(am), afirst if ap else null, alast if ap else null,
                       asize, awin,
                       bp, bb, flags[bf & 0xFF],
                       "RESET" if bres else "TIMEOUT" if timed_out else states[bfin],
                       mac_get(bm) or mac(bm), bfirst if bp else null, blast if bp else null,
                       bsize, bwin)
                # bools are bound as ints: the sqlite3 module binds a bool as slowly as None
                if pid in known:
                    upd((id_base + pid, last, end, 1 if retired else 0, seq))
                    upd(row)
                else:
                    ins((id_base + pid, sid, pid, iface, addr_get(asrc) or addr(asrc), asport,
                         addr_get(adst) or addr(adst), adport, 1 if partial else 0, first,
                         last, end, 1 if retired else 0, seq))
                    ins(row)
                if iface != span_iface:
                    span = ifaces.get(iface)
                    if span is None:
                        span = ifaces[iface] = [first, last]
                    span_iface = iface
                if first < span[0]:
                    span[0] = first
                if last > span[1]:
                    span[1] = last
            emit(_INSERT_CONN, inserts)
            emit(_UPDATE_CONN, updates)
        known_flows = self.known_flows
        flows = list(self.p_flows.items())
        for start in range(0, len(flows), ROW_CHUNK):
            f_inserts: list = []
            f_updates: list = []
            for fid, f in flows[start:start + ROW_CHUNK]:
                (iface, kind, proto, src, dst, sport, dport, packets, nbytes, first, last, _id,
                 ended) = f
                done = known_flows.get(fid)
                if done is not None:
                    if ended and done == (packets, nbytes):
                        continue  # its row already holds its final state
                    f_updates.extend((sid, fid, packets, nbytes, last, seq))
                else:
                    if kind == K_NON_IP:
                        s, d = self._mac(src or None), self._mac(dst or None)
                    else:
                        s, d = addr_get(src) or addr(src), addr_get(dst) or addr(dst)
                    udp, icmp = kind == K_UDP, kind == K_ICMP
                    f_inserts.extend((sid, fid, iface, KIND_NAMES.get(kind, str(kind)), proto,
                                      s, d, sport if udp else null, dport if udp else null,
                                      sport if icmp else null, dport if icmp else null,
                                      packets, nbytes, first, last, seq))
                span = ifaces.get(iface)
                if span is None:
                    ifaces[iface] = [first, last]
                else:
                    span[0] = min(span[0], first)
                    span[1] = max(span[1], last)
            emit(_INSERT_FLOW, f_inserts)
            emit(_UPDATE_FLOW, f_updates)
        iface_rows = [v for n, s in ifaces.items() for v in (sid, n, s[0], s[1])]
        iface_rows += [v for n in self.declared_ifaces if n not in ifaces and n not in self.ifaces
                       for v in (sid, n, null, null)]
        return iface_rows

    def _rows_alongside(self, seq: int, emit: Callable[[_Bulk, list], None]) -> list:
        """`_rows` in a second thread, while this one writes the rows built so far.

        SQLite releases the GIL while it executes a statement, so the Python that builds
        the next rows runs meanwhile. Measured on 2 cores: 100k new connections 0.25-0.3 s
        less (0.7 s less with the monitor's thread busy), 100k changed ones about the same
        (their rows are cheap to build). The builder never waits for the writer, nor
        yields to it (time.sleep(0) after each piece handed the GIL to a busy monitor
        instead, and cost 2 s): it builds every piece, the writer takes them as they
        come."""
        chunks: queue.SimpleQueue = queue.SimpleQueue()
        stop = threading.Event()
        result: list = []

        def hand_over(stmt: _Bulk, flat: list) -> None:
            if stop.is_set():
                raise _Abandoned
            chunks.put((stmt, flat))

        def build() -> None:
            try:
                result.append(self._rows(seq, hand_over))
            except BaseException as e:  # _Abandoned, or a bug: raised again below
                result.append(e)
            finally:
                chunks.put(None)

        builder = threading.Thread(target=build, name="iptraf-mp store rows", daemon=True)
        builder.start()
        try:
            while (item := chunks.get()) is not None:
                emit(*item)
        finally:
            if builder.is_alive():
                stop.set()  # the write failed: the builder stops at its next piece
                while chunks.get() is not None:
                    pass
            builder.join()
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]

    def _write(self) -> None:
        t0 = time.monotonic()
        snaps = self.p_counters
        last = snaps[-1]
        seq = last.seq
        wall = time.time()
        counters = [v for s in snaps for v in (self.sid, s.seq, s.wall, s.packet_time,
                                               *s.counters, int(s.final),
                                               round(wall - s.wall, 6))]
        syn = [v for s in snaps for w in s.syn for v in (self.sid, s.seq, s.packet_time, *w)]
        try:
            conn = self.conn
            if conn is None:
                conn = self.conn = connect(self.path)
                # the WAL is checkpointed after the commit, not inside it (_wal_checkpoint)
                conn.execute("PRAGMA wal_autocheckpoint = 0")
                for trigger in _SAMPLE_TRIGGERS:
                    conn.execute(trigger)
            if self.page_limit is not None:
                conn.execute(f"PRAGMA max_page_count = {int(self.page_limit)}")
            conn.execute("BEGIN IMMEDIATE")
            out = _Statements(conn)
            if len(self.p_pairs) >= ALONGSIDE_MIN:
                iface_rows = self._rows_alongside(seq, out.add)
            else:
                iface_rows = self._rows(seq, out.add)
            names = self.ifaces | set(iface_rows[1::4])
            session = [seq, wall, last.packet_time or None, json.dumps(sorted(names))]
            if last.final:
                sql_session = ("UPDATE sessions SET checkpoints = ?, last_checkpoint = ?, "
                               "last_packet = ?, interfaces = ?, ended = ?, "
                               "status = 'closed', clean = 1 WHERE id = ?")
                session += [wall, self.sid]
            else:
                sql_session = ("UPDATE sessions SET checkpoints = ?, last_checkpoint = ?, "
                               "last_packet = ?, interfaces = ? WHERE id = ?")
                session.append(self.sid)
            out.add(_UPSERT_IFACE, iface_rows)
            out.add(_INSERT_COUNTERS, counters)
            out.add(_INSERT_SYN, syn)
            rows = out.flush()
            conn.execute(sql_session, session)
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._failed(e)
            return
        # committed: these rows exist now, the next checkpoints update them
        known = self.known
        for pid, t in self.p_pairs.items():
            if t[3]:
                known.discard(pid)  # released: it will not change again
            else:
                known.add(pid)
        known_flows = self.known_flows
        for fid, f in self.p_flows.items():
            if f[12]:
                known_flows.pop(fid, None)  # ended: its final state is written, it is done
            else:
                known_flows[fid] = (f[7], f[8])
        self.ifaces = names
        self.p_pairs = {}
        self.p_flows = {}
        self.p_counters = []
        self.wal_pages += rows + 8
        self.last_commit = now = time.monotonic()
        self.last_write = now - t0  # before the counts a reader waits on
        self.committed += 1
        self.committed_seq = seq
        if self.error is not None:
            self.report(f"flow store: writing again ({len(snaps)} checkpoints caught up)")
            self.error = None
        if last.final:
            self.final_done.set()
        self.last_wal_checkpoint = 0.0
        if self.wal_pages >= WAL_CHECKPOINT_PAGES:
            self._wal_checkpoint()
        self.last_busy = time.monotonic() - t0
        self.writes += 1

    def _wal_checkpoint(self) -> None:
        """Copy the WAL back into the database, after the commit rather than inside it.

        SQLite's automatic checkpoint runs in the COMMIT that crosses its threshold, so a
        big checkpoint paid 0.3-0.7 s more before it counted as written. Here the copy
        happens once the transaction is committed (GIL released, the monitor unaffected),
        and often enough that the WAL stays bounded: a PASSIVE checkpoint that completes
        lets the next transaction start the WAL over from its beginning, and
        journal_size_limit truncates the file then. A reader in the way (a long `sql`
        query) makes it stop short, as it would the automatic one; the next one goes on."""
        conn = self.conn
        if conn is None:
            return
        t0 = time.monotonic()
        try:
            busy, log, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            return  # a disk error shows at the next write, where it is reported
        if not busy and done >= log:
            self.wal_pages = 0  # else the next commit tries again
        self.last_wal_checkpoint = time.monotonic() - t0

    def _failed(self, e: Exception) -> None:
        conn = self.conn
        if conn is not None:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                # the connection itself is broken: open a new one next time
                self.conn = None
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
        msg = str(e) if isinstance(e, sqlite3.Error) else f"internal error: {e!r}"
        if self.error is None:
            self.report(f"flow store: cannot write checkpoints to {self.path}: {msg}; "
                        f"the monitor goes on and retries")
        self.error = msg


# ---- the sink ----------------------------------------------------------------------------
