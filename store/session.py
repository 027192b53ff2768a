"""Sessions: one row per run of the monitor. A session whose process died (its pid gone, or
reused by another program) is marked unclean by the next monitor that opens the store."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from iptraf_mp import __version__

from .schema import connect, create_private, migrate


@dataclass(slots=True)
class SessionInfo:
    source: str  # live or replay
    replay_file: str | None = None
    interfaces: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


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
    created = not path.exists()
    create_private(path)
    conn = connect(path)
    try:
        try:
            migrate(conn)
        except BaseException:
            if created:  # a stub left behind would be refused by every later run
                conn.close()
                for stub in (path, path.with_name(path.name + "-wal"),
                             path.with_name(path.name + "-shm")):
                    with contextlib.suppress(OSError):
                        stub.unlink()
            raise
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
