"""Checkpoints: what changed since the last one, written to the flow store by one thread.

The monitor's main loop must never wait for the disk. So `StoreSink.update()` only copies
what changed (from its own `ChangeFeed` of the merger) into plain tuples and puts that
*snapshot* on a queue; the `Writer` thread turns snapshots into rows and writes each batch in
one transaction. A slow disk makes checkpoints late (`lag_seconds`, `pending`), never packets
lost. When a write fails (disk full, I/O error, a lock held too long) the transaction rolls
back, the error is reported once, and the unwritten changes are kept and merged with the next
snapshots: the writer tries again every `retry` seconds, and deltas are always taken against
what was *committed*, so nothing is lost or counted twice when writing works again.

Crash safety comes from SQLite: each checkpoint is one transaction in WAL mode, so a process
killed at any moment leaves every committed checkpoint whole and nothing of the one in flight.
A session whose process died is marked unclean by the next monitor that opens the store.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import os
import queue
import socket
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from iptraf_mp import __version__
from iptraf_mp.model import K_ICMP, K_NON_IP, K_UDP, KIND_NAMES, fmt_addr, fmt_flags, fmt_mac

from .schema import PAIR_ID_BITS, connect, create_private, migrate

# One C call per object copies every field the store needs (a 100k-pair snapshot must not
# hold the monitor's loop for long).
PAIR_FIELDS = attrgetter("id", "iface", "partial", "first_seen", "last_seen", "end",
                         "timed_out")
ENTRY_FIELDS = attrgetter("src", "sport", "dst", "dport", "packets", "bytes", "flags", "smac",
                          "finsent", "reset", "first_seen", "last_seen", "last_size", "window")
FLOW_FIELDS = attrgetter("iface", "kind", "proto", "src", "dst", "sport", "dport", "packets",
                         "bytes", "first_seen", "last_seen")
_FLAGS = tuple(fmt_flags(i) for i in range(256))  # rule 5's column, by flags byte

DEFAULT_INTERVAL = 5.0
FINISH_GRACE = 10.0  # seconds finish() keeps retrying a failing store before giving up


@dataclass(slots=True)
class SessionInfo:
    source: str  # live or replay
    replay_file: str | None = None
    interfaces: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


@dataclass(slots=True)
class Snapshot:
    """Plain values copied in the monitor's thread; nothing here is shared with it."""

    seq: int
    taken: float  # monotonic, for the lag
    wall: float
    packet_time: float
    pairs: list[tuple]  # (PAIR_FIELDS, ENTRY_FIELDS a, ENTRY_FIELDS b, released)
    flows: list[tuple]  # FLOW_FIELDS
    counters: tuple  # frames, (packets, bytes) x 6, malformed, untracked, the run's drops
    final: bool = False
    syn: tuple = ()  # (iface, destination, lone SYNs) at or above --syn-warn


@dataclass(slots=True)
class StoreStatus:
    """What the console shows about the store."""

    path: str
    lag_seconds: float  # age of the oldest checkpoint not yet committed; 0 when none
    pending: int  # checkpoints taken and not yet committed
    error: str | None  # the write error in force, None when writing works
    committed: int  # checkpoints committed this session
    last_write_seconds: float  # how long the last transaction took


# ---- sessions ----------------------------------------------------------------------------

def _proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks, or None if it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _alive(pid: int | None, pid_start: int | None) -> bool:
    if pid is None:
        return False
    if os.path.isdir("/proc/self"):
        start = _proc_start(pid)
        return start is not None and (pid_start is None or start == pid_start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_unclean(conn: sqlite3.Connection, host: str) -> list[int]:
    """Sessions of this host still marked running whose process is gone did not close
    cleanly. Other hosts' sessions are left alone: their processes cannot be checked."""
    rows = conn.execute("SELECT id, pid, pid_start FROM sessions "
                        "WHERE status = 'running' AND host = ?", (host,)).fetchall()
    dead = [sid for sid, pid, start in rows if not _alive(pid, start)]
    conn.executemany("UPDATE sessions SET status = 'unclean', clean = 0, "
                     "ended = COALESCE(last_checkpoint, started) "
                     "WHERE id = ? AND status = 'running'", [(s,) for s in dead])
    return dead


def open_session(path: Path, info: SessionInfo) -> int:
    """Create or migrate the store, mark dead sessions unclean, start a new session.
    Raises OSError, sqlite3.Error or SchemaError."""
    create_private(path)
    conn = connect(path)
    try:
        migrate(conn)
        host = socket.gethostname()
        pid = os.getpid()
        conn.execute("BEGIN IMMEDIATE")
        try:
            mark_unclean(conn, host)
            cur = conn.execute(
                "INSERT INTO sessions (started, status, source, replay_file, host, pid, "
                "pid_start, interfaces, settings, version, checkpoints) "
                "VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (time.time(), info.source, info.replay_file, host, pid, _proc_start(pid),
                 json.dumps(info.interfaces), json.dumps(info.settings, sort_keys=True),
                 __version__))
            sid = cur.lastrowid
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return int(sid)
    finally:
        conn.close()


# ---- the writer thread -------------------------------------------------------------------

_STOP = object()


_STATES = ("ACTIVE", "DONE", "CLOSED")  # by Entry.finsent, when not RESET or TIMEOUT


# Inserts are (head, width, tail): `_insert` writes many rows per statement. executemany would
# run one statement per row, and SQLite releases the GIL around each: while the monitor's
# thread is busy, the writer then waits a whole switch interval (5 ms) to get it back, row
# after row (a 100k-row insert measured 19 s instead of 2.7 s). A statement of 500 rows
# waits 500 times less, and is faster on an idle machine too.
_CONN_COLUMNS = (
    "id", "session_id", "pair_id", "iface", "a_addr", "a_port", "b_addr", "b_port", "partial",
    "first_seen", "last_seen", "ended_by", "retired", "checkpoint",
    "a_packets", "a_bytes", "a_flags", "a_state", "a_mac", "a_first_seen", "a_last_seen",
    "a_last_size", "a_window", "b_packets", "b_bytes", "b_flags", "b_state", "b_mac",
    "b_first_seen", "b_last_seen", "b_last_size", "b_window")
_INSERT_CONN = (
    f"INSERT INTO tcp_connections ({', '.join(_CONN_COLUMNS)}) VALUES ", len(_CONN_COLUMNS),
    # a retried checkpoint may meet a row its failed attempt never wrote, never one it did;
    # the upsert only makes a bug there harmless instead of stalling the writer
    " ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen, "
    "ended_by = excluded.ended_by, retired = excluded.retired, "
    "checkpoint = excluded.checkpoint, a_packets = excluded.a_packets, "
    "a_bytes = excluded.a_bytes, b_packets = excluded.b_packets, b_bytes = excluded.b_bytes")
# Only the columns that can change: index entries of the others are not touched.
_UPDATE_CONN = (
    "UPDATE tcp_connections SET last_seen = ?, ended_by = ?, retired = ?, checkpoint = ?, "
    "a_packets = ?, a_bytes = ?, a_flags = ?, a_state = ?, a_mac = ?, a_first_seen = ?, "
    "a_last_seen = ?, a_last_size = ?, a_window = ?, "
    "b_packets = ?, b_bytes = ?, b_flags = ?, b_state = ?, b_mac = ?, b_first_seen = ?, "
    "b_last_seen = ?, b_last_size = ?, b_window = ? WHERE id = ?")
_INSERT_SAMPLE = ("INSERT INTO flow_samples (session_id, pair_id, checkpoint, ts, a_packets, "
                  "a_bytes, b_packets, b_bytes) VALUES ", 8, "")
_INSERT_FLOW = (
    "INSERT INTO other_flows (session_id, flow_id, iface, kind, protocol, src, dst, sport, "
    "dport, icmp_type, icmp_code, packets, bytes, first_seen, last_seen, checkpoint) VALUES ",
    16,
    " ON CONFLICT(session_id, flow_id) DO UPDATE SET packets = excluded.packets, "
    "bytes = excluded.bytes, last_seen = excluded.last_seen, checkpoint = excluded.checkpoint")
_UPDATE_FLOW = ("UPDATE other_flows SET packets = ?, bytes = ?, last_seen = ?, checkpoint = ? "
                "WHERE session_id = ? AND flow_id = ?")
_INSERT_OTHER_SAMPLE = ("INSERT INTO other_samples (session_id, flow_id, checkpoint, ts, "
                        "packets, bytes) VALUES ", 6, "")
_UPSERT_IFACE = (
    "INSERT INTO interfaces (session_id, name, first_seen, last_seen) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(session_id, name) DO UPDATE SET "
    "first_seen = MIN(COALESCE(first_seen, excluded.first_seen), "
    "COALESCE(excluded.first_seen, first_seen)), "
    "last_seen = MAX(COALESCE(last_seen, excluded.last_seen), "
    "COALESCE(excluded.last_seen, last_seen))")
_COUNTER_COLUMNS = (
    "session_id", "checkpoint", "wall_time", "packet_time", "frames", "ip_packets", "ip_bytes",
    "tcp_packets", "tcp_bytes", "udp_packets", "udp_bytes", "icmp_packets", "icmp_bytes",
    "other_ip_packets", "other_ip_bytes", "non_ip_packets", "non_ip_bytes", "malformed",
    "untracked", "kernel_drops", "queue_drops", "queue_dropped_packets", "shard_restarts",
    "lost_pairs", "final", "lag_seconds")
_INSERT_COUNTERS = (f"INSERT INTO counters ({', '.join(_COUNTER_COLUMNS)}) VALUES ",
                    len(_COUNTER_COLUMNS), "")
_INSERT_SYN = ("INSERT INTO syn_warnings (session_id, checkpoint, packet_time, iface, dst, "
               "halfopen) VALUES ", 6, "")
_MAX_PARAMS = 16000  # per statement; SQLite allows 32766 since 3.32


def _insert(conn: sqlite3.Connection, stmt: tuple[str, int, str], rows: list[tuple]) -> None:
    """Many rows per INSERT statement (see above), all parameters bound, none in the text."""
    head, width, tail = stmt
    per = max(1, _MAX_PARAMS // width)
    one = "(" + ", ".join(["?"] * width) + ")"
    chain = itertools.chain.from_iterable
    for i in range(0, len(rows), per):
        part = rows[i:i + per]
        # statements of the same size are the same text: prepared once, then cached
        conn.execute(head + ", ".join([one] * len(part)) + tail, list(chain(part)))


class Writer:
    """The one thread that writes. Its state is its own; the monitor's thread only puts
    snapshots on the queue and reads a few ints and strings for the status."""

    def __init__(self, path: Path, session_id: int, report: Callable[[str], None],
                 retry: float = 1.0) -> None:
        self.path = path
        self.sid = session_id
        self.report = report
        self.retry = retry
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="iptraf-mp store", daemon=True)
        self.conn: sqlite3.Connection | None = None
        # what is committed: deltas are always taken against it
        self.prev: dict[int, tuple[int, int, int, int]] = {}
        self.flow_ids: dict[tuple, int] = {}
        self.flow_prev: dict[int, tuple[int, int]] = {}
        self.ifaces: set[str] = set()
        self.declared_ifaces: list[str] = []  # live: the interfaces asked for, seen or not
        # merged and not yet committed
        self.p_pairs: dict[int, tuple] = {}
        self.p_flows: dict[tuple, tuple] = {}
        self.p_counters: list[Snapshot] = []
        # read by the monitor's thread (single assignments are atomic)
        self.committed_seq = 0
        self.committed = 0
        self.error: str | None = None
        self.last_write = 0.0
        self.final_done = threading.Event()
        self.page_limit: int | None = None  # tests: PRAGMA max_page_count, a full disk
        self._macs: dict[bytes, str] = {}

    def start(self) -> None:
        self.thread.start()

    def put(self, snap: Snapshot) -> None:
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

    def _merge(self, snap: Snapshot) -> None:
        # The latest state of a pair or flow replaces an older one: the delta is taken
        # against what was committed, so merging loses nothing.
        pp = self.p_pairs
        for t in snap.pairs:
            pp[t[0][0]] = t
        pf = self.p_flows
        for f in snap.flows:
            pf[f[:7]] = f
        self.p_counters.append(snap)

    # -- one transaction --

    def _mac(self, mac: bytes | None) -> str | None:
        if mac is None:
            return None
        s = self._macs.get(mac)
        if s is None:
            if len(self._macs) > 65536:
                self._macs.clear()
            s = self._macs[mac] = fmt_mac(mac)
        return s

    def _rows(self, seq: int) -> tuple:
        # The hot loop of a big checkpoint (100k pairs): locals, table lookups, one tuple
        # per row and no call that can be avoided.
        sid = self.sid
        inserts, updates, samples = [], [], []
        new_prev: dict[int, tuple[int, int, int, int]] = {}
        ifaces: dict[str, list] = {}
        prev_get = self.prev.get
        mac_get, mac = self._macs.get, self._mac
        flags, states = _FLAGS, _STATES
        id_base = sid << PAIR_ID_BITS
        span_iface, span = None, [0.0, 0.0]
        for pid, (p, a, b, retired) in self.p_pairs.items():
            _pid, iface, partial, first, last, end, timed_out = p
            _s, _sp, _d, _dp, ap, ab, af, am, afin, ares, afirst, alast, asize, awin = a
            _s, _sp, _d, _dp, bp, bb, bf, bm, bfin, bres, bfirst, blast, bsize, bwin = b
            # tcptable.entry_state; and as --json, no times for a direction without packets
            row = (ap, ab, flags[af & 0xFF],
                   "RESET" if ares else "TIMEOUT" if timed_out else states[afin],
                   mac_get(am) or mac(am), afirst if ap else None, alast if ap else None,
                   asize, awin,
                   bp, bb, flags[bf & 0xFF],
                   "RESET" if bres else "TIMEOUT" if timed_out else states[bfin],
                   mac_get(bm) or mac(bm), bfirst if bp else None, blast if bp else None,
                   bsize, bwin)
            pv = prev_get(pid)
            if pv is None:
                inserts.append((id_base + pid, sid, pid, iface, fmt_addr(a[0]), a[1],
                                fmt_addr(a[2]), a[3], int(partial), first, last, end,
                                int(retired), seq, *row))
                pv = (0, 0, 0, 0)
            else:
                updates.append((last, end, int(retired), seq, *row, id_base + pid))
            if ap != pv[0] or ab != pv[1] or bp != pv[2] or bb != pv[3]:
                samples.append((sid, pid, seq, last, ap - pv[0], ab - pv[1], bp - pv[2],
                                bb - pv[3]))
            new_prev[pid] = (ap, ab, bp, bb)
            if iface != span_iface:
                span = ifaces.get(iface)
                if span is None:
                    span = ifaces[iface] = [first, last]
                span_iface = iface
            if first < span[0]:
                span[0] = first
            if last > span[1]:
                span[1] = last
        f_inserts, f_updates, f_samples = [], [], []
        new_fprev: dict[int, tuple[int, int]] = {}
        for key, f in self.p_flows.items():
            iface, kind, proto, src, dst, sport, dport, packets, nbytes, first, last = f
            fid = self.flow_ids.get(key)
            if fid is None:
                fid = self.flow_ids[key] = len(self.flow_ids) + 1
            pv = self.flow_prev.get(fid)
            if pv is None:
                if kind == K_NON_IP:
                    s, d = self._mac(src) if src else None, self._mac(dst) if dst else None
                else:
                    s, d = fmt_addr(src), fmt_addr(dst)
                udp, icmp = kind == K_UDP, kind == K_ICMP
                f_inserts.append((sid, fid, iface, KIND_NAMES.get(kind, str(kind)), proto, s, d,
                                  sport if udp else None, dport if udp else None,
                                  sport if icmp else None, dport if icmp else None,
                                  packets, nbytes, first, last, seq))
                pv = (0, 0)
            else:
                f_updates.append((packets, nbytes, last, seq, sid, fid))
            if packets != pv[0] or nbytes != pv[1]:
                f_samples.append((sid, fid, seq, last, packets - pv[0], nbytes - pv[1]))
            new_fprev[fid] = (packets, nbytes)
            span = ifaces.get(iface)
            if span is None:
                ifaces[iface] = [first, last]
            else:
                span[0] = min(span[0], first)
                span[1] = max(span[1], last)
        iface_rows = [(sid, n, s[0], s[1]) for n, s in ifaces.items()]
        iface_rows += [(sid, n, None, None) for n in self.declared_ifaces
                       if n not in ifaces and n not in self.ifaces]
        return (inserts, updates, samples, new_prev, f_inserts, f_updates, f_samples,
                new_fprev, iface_rows)

    def _write(self) -> None:
        t0 = time.monotonic()
        snaps = self.p_counters
        last = snaps[-1]
        seq = last.seq
        (inserts, updates, samples, new_prev, f_inserts, f_updates, f_samples, new_fprev,
         iface_rows) = self._rows(seq)
        names = self.ifaces | {r[1] for r in iface_rows}
        wall = time.time()
        counters = [(self.sid, s.seq, s.wall, s.packet_time, *s.counters, int(s.final),
                     round(wall - s.wall, 6)) for s in snaps]
        session = [seq, wall, last.packet_time or None, json.dumps(sorted(names))]
        if last.final:
            sql_session = ("UPDATE sessions SET checkpoints = ?, last_checkpoint = ?, "
                           "last_packet = ?, interfaces = ?, ended = ?, status = 'closed', "
                           "clean = 1 WHERE id = ?")
            session += [wall, self.sid]
        else:
            sql_session = ("UPDATE sessions SET checkpoints = ?, last_checkpoint = ?, "
                           "last_packet = ?, interfaces = ? WHERE id = ?")
            session.append(self.sid)
        try:
            conn = self.conn
            if conn is None:
                conn = self.conn = connect(self.path)
            if self.page_limit is not None:
                conn.execute(f"PRAGMA max_page_count = {int(self.page_limit)}")
            conn.execute("BEGIN IMMEDIATE")
            _insert(conn, _INSERT_CONN, inserts)
            conn.executemany(_UPDATE_CONN, updates)
            _insert(conn, _INSERT_SAMPLE, samples)
            _insert(conn, _INSERT_FLOW, f_inserts)
            conn.executemany(_UPDATE_FLOW, f_updates)
            _insert(conn, _INSERT_OTHER_SAMPLE, f_samples)
            conn.executemany(_UPSERT_IFACE, iface_rows)
            _insert(conn, _INSERT_COUNTERS, counters)
            _insert(conn, _INSERT_SYN, [(self.sid, s.seq, s.packet_time, *w)
                                        for s in snaps for w in s.syn])
            conn.execute(sql_session, session)
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._failed(e)
            return
        # committed: this is now what deltas are taken against
        for pid, t in self.p_pairs.items():
            if t[3]:
                self.prev.pop(pid, None)  # released: it will not change again
            else:
                self.prev[pid] = new_prev[pid]
        self.flow_prev.update(new_fprev)
        self.ifaces = names
        self.p_pairs = {}
        self.p_flows = {}
        self.p_counters = []
        self.last_write = time.monotonic() - t0  # before the counts a reader waits on
        self.committed += 1
        self.committed_seq = seq
        if self.error is not None:
            self.report(f"flow store: writing again ({len(snaps)} checkpoints caught up)")
            self.error = None
        if last.final:
            self.final_done.set()

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

def _stderr(msg: str) -> None:
    print(f"iptraf-mp: {msg}", file=sys.stderr, flush=True)


class StoreSink:
    """The monitor's side: snapshots at every checkpoint interval and at the end."""

    def __init__(self, path: Path, session_id: int, interval: float = DEFAULT_INTERVAL,
                 report: Callable[[str], None] = _stderr, retry: float = 1.0,
                 syn_warn: int = 0) -> None:
        self.path = path
        self.syn_warn = syn_warn  # 0: do not record SYN-flood warnings
        self.session_id = session_id
        self.interval = interval
        self.report = report
        self.writer = Writer(path, session_id, report, retry)
        self.feed = None
        self._seq = 0
        self._due = time.monotonic() + interval
        self._taken: deque[tuple[int, float]] = deque()
        self._started = False
        self._finished = False

    # -- sink protocol --

    def attach(self, monitor) -> None:
        self.feed = monitor.merger.subscribe()
        sources = getattr(monitor.run, "sources", None) or []
        self.writer.declared_ifaces = [s.iface for s in sources if getattr(s, "iface", None)]

    def update(self, monitor) -> None:
        now = time.monotonic()
        if now >= self._due:
            self.checkpoint(monitor)
            self._due = now + self.interval

    def finish(self, monitor) -> None:
        """The final checkpoint (every pair has retired by now), then wait for it: the
        session is closed cleanly only once it is committed."""
        self.checkpoint(monitor, final=True)
        deadline = None
        w = self.writer
        while not w.final_done.wait(0.05):
            if not w.thread.is_alive():
                break
            if w.error is not None:
                if deadline is None:
                    deadline = time.monotonic() + FINISH_GRACE
                elif time.monotonic() >= deadline:
                    break
            else:
                deadline = None
        self._finished = w.final_done.is_set()
        if not self._finished:
            self.report(f"flow store: {self.pending} checkpoints could not be written to "
                        f"{self.path} ({w.error}); the session stays marked unclean")

    def close(self) -> None:
        self.writer.stop()

    # -- snapshots --

    def checkpoint(self, monitor, final: bool = False) -> None:
        if not self._started:
            # Started here, after the pipeline has forked its processes, not in attach():
            # no child inherits a thread or an open database connection.
            self._started = True
            self.writer.start()
        pairs: list[tuple] = []
        flows: list[tuple] = []
        if self.feed is not None:
            changed, retired, fviews = self.feed.take()
            pf, ef = PAIR_FIELDS, ENTRY_FIELDS
            # Copying 100k pairs makes 300k tuples: without a pause the collector would walk
            # the whole heap several times meanwhile, and the monitor's loop would wait.
            gc_was = gc.isenabled()
            gc.disable()
            try:
                # Only the feed's retired list says a pair is done: a pair that left its
                # shard is still among the changed ones (with `retired` set) until the
                # merger releases it, and forgetting its committed counts then would count
                # it twice.
                pairs = [(pf(p), ef(p.a), ef(p.b), False) for p in changed]
                pairs += [(pf(p), ef(p.a), ef(p.b), True) for p in retired]
                flows = [FLOW_FIELDS(f) for f in fviews]
            finally:
                if gc_was:
                    gc.enable()
        s = monitor.merger.summary()
        st = monitor.run.counters()
        counters = (s.frames, s.ip.packets, s.ip.bytes, s.tcp.packets, s.tcp.bytes,
                    s.udp.packets, s.udp.bytes, s.icmp.packets, s.icmp.bytes,
                    s.other_ip.packets, s.other_ip.bytes, s.non_ip.packets, s.non_ip.bytes,
                    s.malformed, getattr(s, "untracked", 0), st.kernel_drops,
                    st.queue_drops, st.queue_dropped_packets, st.shard_restarts, st.lost_pairs)
        self._seq += 1
        now = time.monotonic()
        self._taken.append((self._seq, now))
        syn = ()
        if self.syn_warn > 0:
            syn = tuple((iface, fmt_addr(dst), n)
                        for iface, dst, n in monitor.merger.syn_flood(self.syn_warn))
        self.writer.put(Snapshot(self._seq, now, time.time(), monitor.merger.now, pairs, flows,
                                 counters, final, syn))

    # -- status --

    @property
    def pending(self) -> int:
        return self._seq - self.writer.committed_seq

    @property
    def lag_seconds(self) -> float:
        done = self.writer.committed_seq
        taken = self._taken
        while taken and taken[0][0] <= done:
            taken.popleft()
        return time.monotonic() - taken[0][1] if taken else 0.0

    @property
    def error(self) -> str | None:
        return self.writer.error

    @property
    def status(self) -> StoreStatus:
        return StoreStatus(str(self.path), self.lag_seconds, self.pending, self.writer.error,
                           self.writer.committed, self.writer.last_write)
