"""The monitor's flow-store flags (`--db`, `--no-db`, `--checkpoint`) and its sink."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from iptraf_mp.core.text import say

from .paths import default_db_path

if TYPE_CHECKING:
    from .session import SessionInfo
    from .sink import StoreSink

DEFAULT_INTERVAL = 5.0  # seconds between checkpoints (--checkpoint)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("flow store (query it with `iptraf-mp sql`)")
    g.add_argument("--db", metavar="PATH",
                   help=f"SQLite file for the flow history (live capture: by default "
                        f"{default_db_path()}; a replay writes one only with --db)")
    g.add_argument("--no-db", dest="no_db", action="store_true",
                   help="do not write the flow history")
    g.add_argument("--checkpoint", type=float, default=DEFAULT_INTERVAL, metavar="SEC",
                   help=f"write what changed every SEC seconds and at exit "
                        f"(default {DEFAULT_INTERVAL:g}; 0 = at every refresh)")


def session_info(args: argparse.Namespace) -> SessionInfo:
    from .session import SessionInfo

    settings = {
        "tcp_timeout_min": args.tcp_timeout, "flow_idle_min": args.flow_idle,
        "persistence_min": args.persistence,
        "lower_lines": args.lower_lines, "promisc": bool(args.promisc),
        "shards": args.shards, "speed": args.speed, "refresh": args.refresh,
        "checkpoint": args.checkpoint,
    }
    if args.read:
        return SessionInfo("replay", os.path.abspath(args.read), [], settings)
    names = [n for spec in (args.iface or []) for n in spec.split(",") if n]
    return SessionInfo("live", None, names, settings)


def import_now() -> None:
    """What `make_sink` imports, imported now (before -Z drops root)."""
    from . import session, sink  # noqa: F401


def make_sink(args: argparse.Namespace) -> StoreSink | None:
    """The store's sink, None when there is none (then nothing of it is imported)."""
    from iptraf_mp.outputs.sink import SinkError

    if getattr(args, "no_db", False):
        if args.db:
            raise SinkError("--db and --no-db cannot be used together")
        return None
    if args.read and not args.db:
        # A replay (a regression run, say) writes a store only when asked: in the default
        # store it would pile into the live history.
        return None
    if args.checkpoint < 0:
        raise SinkError("--checkpoint must be 0 or more seconds")
    import sqlite3  # (here: a run without the store need not load SQLite)

    from .schema import SchemaError
    from .session import open_session
    from .sink import StoreSink

    path = Path(args.db).expanduser() if args.db else default_db_path()
    try:
        sid = open_session(path, session_info(args))
    except SchemaError as e:
        raise SinkError(f"flow store {path}: {e}") from None
    except OSError as e:
        raise SinkError(f"cannot open the flow store {path}: {e.strerror or e}") from None
    except sqlite3.Error as e:
        raise SinkError(f"cannot open the flow store {path}: {e}") from None
    say(f"flow store: {path} (session {sid})")
    return StoreSink(path, sid, args.checkpoint, syn_warn=getattr(args, "syn_warn", 0) or 0)
