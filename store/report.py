"""`iptraf-mp report`: the common questions about the flow history, without writing SQL.

    iptraf-mp report [--db PATH] [--since 1h | --session N] [--by host|port|proto|iface|conn|time]
                     [--top N] [--bucket 5m] [--format table|csv|json]

Who talked most, on which ports and protocols, over which interfaces, and how the traffic
went over time, in a time range of packet time (`--since`, `--until`) or for one session.
Figures are sums of the store's samples (the per-checkpoint deltas of every connection and
flow), so over a whole session they add up to its rows' totals, and over a range they count
what was seen in it. Bytes are IP bytes, as everywhere in iptraf-mp.

It opens the store as `sql` does (read-only three times over, a time limit, ^C), binds every
value as a parameter, and shows cells as data.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from iptraf_mp.core.text import safe_text, say

from .paths import default_db_path
from .query import DEFAULT_TIMEOUT, Limits, QueryError, ReadOnly, open_readonly, run_query
from .query import write_csv as _write_csv

PROG = "iptraf-mp report"
DIMENSIONS = ("host", "port", "proto", "iface", "conn", "time")

# Every direction of every connection and flow, one row per sample: the schema's own
# per-direction views (tcp_traffic, other_traffic), as a report sums them. TCP: the service
# port is the b side's (the side that answered), a UDP flow's the lower of its two ports;
# other flows keep their kind as the protocol's name.
_TRAFFIC = """
WITH t AS (
  SELECT session_id, ts, iface, 'tcp' AS proto, src, dst,
         CASE direction WHEN 'a' THEN dport ELSE sport END AS port, packets, bytes,
         'tcp ' || session_id || ' ' || pair_id AS conn,
         CASE direction WHEN 'a' THEN src || ':' || sport || ' <-> ' || dst || ':' || dport
              ELSE dst || ':' || dport || ' <-> ' || src || ':' || sport END AS label
    FROM tcp_traffic WHERE {where}
  UNION ALL
  SELECT session_id, ts, iface, kind, src, dst,
         CASE WHEN kind = 'udp' THEN min(sport, dport) END,
         packets, bytes, kind || ' ' || session_id || ' ' || flow_id,
         CASE WHEN sport IS NULL THEN src || ' -> ' || dst
              ELSE src || ':' || sport || ' -> ' || dst || ':' || dport END
    FROM other_traffic WHERE {where}
)
"""

_GROUPS = {
    "host": ("""SELECT host, sum(sent) AS sent_bytes, sum(received) AS received_bytes,
                       sum(sent + received) AS bytes, sum(packets) AS packets,
                       count(DISTINCT conn) AS connections
                  FROM (SELECT src AS host, bytes AS sent, 0 AS received, packets, conn FROM t
                        UNION ALL
                        SELECT dst, 0, bytes, packets, conn FROM t)
                 GROUP BY host ORDER BY bytes DESC, host LIMIT :top""",
             ("host", "sent_bytes", "received_bytes", "bytes", "packets", "connections")),
    "port": ("""SELECT proto, port, sum(bytes) AS bytes, sum(packets) AS packets,
                       count(DISTINCT conn) AS connections
                  FROM t WHERE port IS NOT NULL
                 GROUP BY proto, port ORDER BY bytes DESC, proto, port LIMIT :top""",
             ("proto", "port", "bytes", "packets", "connections")),
    "proto": ("""SELECT proto, sum(bytes) AS bytes, sum(packets) AS packets,
                        count(DISTINCT conn) AS connections
                   FROM t GROUP BY proto ORDER BY bytes DESC, proto LIMIT :top""",
              ("proto", "bytes", "packets", "connections")),
    "iface": ("""SELECT iface, sum(bytes) AS bytes, sum(packets) AS packets,
                        count(DISTINCT conn) AS connections
                   FROM t GROUP BY iface ORDER BY bytes DESC, iface LIMIT :top""",
              ("iface", "bytes", "packets", "connections")),
    "conn": ("""SELECT proto, label AS connection, iface, sum(bytes) AS bytes,
                       sum(packets) AS packets, min(ts) AS first_sample, max(ts) AS last_sample
                  FROM t GROUP BY conn ORDER BY bytes DESC, conn LIMIT :top""",
             ("proto", "connection", "iface", "bytes", "packets", "first_sample",
              "last_sample")),
    "time": ("""SELECT CAST(ts / :width AS INTEGER) * :width AS bucket, sum(bytes) AS bytes,
                       sum(packets) AS packets
                  FROM t GROUP BY bucket ORDER BY bucket""",
             ("bucket", "bytes", "packets")),
}

_NICE_WIDTHS = (1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600,
                86400, 7 * 86400)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(slots=True)
class Scope:
    """Which samples a report sums: packet times in [since, until), one session or all."""

    since: float | None = None
    until: float | None = None
    session: int | None = None

    def where(self) -> str:
        terms = ["1"]
        if self.since is not None:
            terms.append("ts >= :since")
        if self.until is not None:
            terms.append("ts < :until")
        if self.session is not None:
            terms.append("session_id = :session")
        return " AND ".join(terms)

    def params(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {}
        if self.since is not None:
            out["since"] = self.since
        if self.until is not None:
            out["until"] = self.until
        if self.session is not None:
            out["session"] = self.session
        return out


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `1h`, `2d`, `1w` (or a bare number of seconds)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if m is None:
        raise ValueError(f"not a duration: {text!r} (say 90s, 30m, 1h, 2d or 1w)")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse_time(text: str, now: float) -> float:
    """A point in time: a duration ago (`1h`), Unix seconds, or an ISO date and time."""
    try:
        value = float(text)
        if value > 1e8:  # Unix seconds (1973 on), not a duration without its unit
            return value
    except ValueError:
        pass
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"not a time: {text!r} (say 1h for an hour ago, "
                         f"2026-12-01T08:00, or Unix seconds)") from None


def bucket_width(first: float, last: float, buckets: int = 24) -> int:
    """A round width that cuts [first, last] into at most about `buckets` bars."""
    span = max(last - first, 1.0)
    for w in _NICE_WIDTHS:
        if span / w <= buckets:
            return w
    return _NICE_WIDTHS[-1]


def fmt_width(seconds: int) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % n == 0 and seconds >= n:
            return f"{seconds // n}{unit}"
    return f"{seconds}s"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover (the loop returns)


def fmt_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


class Report:
    """The queries of one report, on one read-only connection."""

    def __init__(self, conn: object, auth: ReadOnly, scope: Scope, limits: Limits) -> None:
        self.conn = conn
        self.auth = auth
        self.scope = scope
        self.limits = limits

    def _query(self, body: str, extra: dict[str, float | int]) -> tuple[list[str], list[tuple]]:
        sql = _TRAFFIC.format(where=self.scope.where()) + body
        return run_query(self.conn, self.auth, sql,  # type: ignore[arg-type]
                         {**self.scope.params(), **extra}, self.limits)

    def span(self) -> tuple[float, float] | None:
        """The first and last sample time in scope, None when nothing is."""
        _h, rows = self._query("SELECT min(ts), max(ts), count(*) FROM t", {})
        first, last, n = rows[0]
        return None if not n else (float(first), float(last))

    def totals(self) -> tuple[int, int]:
        _h, rows = self._query("SELECT coalesce(sum(bytes), 0), coalesce(sum(packets), 0) "
                               "FROM t", {})
        return int(rows[0][0]), int(rows[0][1])

    def group(self, by: str, top: int, width: int = 60) -> tuple[list[str], list[tuple]]:
        body, _cols = _GROUPS[by]
        extra: dict[str, float | int] = {"top": top}
        if by == "time":
            extra = {"width": width}
        return self._query(body, extra)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="The flow history's common questions, from the store (read-only): top "
                    "hosts, ports, protocols, interfaces or connections, and traffic over "
                    "time, in a range of packet time or for one session.")
    p.add_argument("--db", metavar="PATH", help=f"the flow store (default: {default_db_path()})")
    p.add_argument("--since", metavar="WHEN",
                   help="from WHEN: a duration ago (90s, 30m, 1h, 2d), an ISO time or Unix "
                        "seconds (packet time; default: the whole history)")
    p.add_argument("--until", metavar="WHEN", help="up to WHEN (same forms)")
    p.add_argument("--session", type=int, metavar="N", help="only session N (see sessions)")
    p.add_argument("--by", choices=DIMENSIONS, default="host",
                   help="host (default: sent and received), port, proto, iface, conn, or time "
                        "(traffic per time bucket)")
    p.add_argument("--top", type=int, default=10, metavar="N", help="rows (default 10)")
    p.add_argument("--bucket", metavar="DURATION",
                   help="the time buckets' width (default: about 24 buckets over the range)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table (default: with traffic over time drawn as bars), csv or json")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SEC",
                   help=f"stop after SEC seconds (default {DEFAULT_TIMEOUT:g}; 0 = no limit)")
    return p


def _scope(args: argparse.Namespace, now: float) -> Scope:
    since = parse_time(args.since, now) if args.since else None
    until = parse_time(args.until, now) if args.until else None
    if since is not None and until is not None and until <= since:
        raise ValueError("--until must be after --since")
    return Scope(since, until, args.session)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.top < 1:
        say("--top must be at least 1", PROG)
        return 2
    try:
        scope = _scope(args, time.time())
        width = int(parse_duration(args.bucket)) if args.bucket else 0
    except ValueError as e:
        say(str(e), PROG)
        return 2
    if args.bucket and width < 1:
        say("--bucket must be at least 1s", PROG)
        return 2
    path = Path(args.db).expanduser() if args.db else default_db_path()
    limits = Limits(args.timeout)
    old = signal.signal(signal.SIGINT, limits.interrupt)
    try:
        conn, auth = open_readonly(path)
        try:
            rep = Report(conn, auth, scope, limits)
            span = rep.span()
            if not width:
                width = bucket_width(*span) if span else 60
            headers, rows = rep.group(args.by, args.top, width)
            times = rep.group("time", args.top, width)[1] \
                if args.format == "table" and args.by != "time" else []
            total_bytes, total_packets = rep.totals()
        finally:
            conn.close()
    except QueryError as e:
        say(str(e), PROG)
        return 1
    finally:
        signal.signal(signal.SIGINT, old)
    out = sys.stdout
    if args.format == "json":
        out.write(json.dumps({
            "scope": {"since": scope.since, "until": scope.until, "session": scope.session,
                      "first_sample": span[0] if span else None,
                      "last_sample": span[1] if span else None},
            "by": args.by, "bucket_seconds": width if args.by == "time" else None,
            "total": {"bytes": total_bytes, "packets": total_packets},
            "rows": [dict(zip(headers, r, strict=True)) for r in rows],
        }, ensure_ascii=True) + "\n")
    elif args.format == "csv":
        _write_csv(headers, rows, out, safe=True)
    else:
        write_tables(out, args.by, headers, rows, times, width, span,
                     (total_bytes, total_packets))
    out.flush()
    return 0


def write_tables(out, by: str, headers: Sequence[str], rows: list[tuple], times: list[tuple],
                 width: int, span: tuple[float, float] | None,
                 totals: tuple[int, int]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=out, highlight=False, emoji=False, markup=False,
                      width=None if out.isatty() else 120, soft_wrap=False)
    if span is None:
        console.print(Text("no traffic in the store for this range"))
        return
    console.print(Text(f"{fmt_time(span[0])} .. {fmt_time(span[1])}: "
                       f"{fmt_bytes(totals[0])} in {totals[1]:,} packets"))
    if by != "time":
        table = Table(box=box.SIMPLE_HEAD, header_style="bold")
        for h in headers:
            num = h.endswith("bytes") or h in ("packets", "connections", "port")
            table.add_column(Text(h), justify="right" if num else "left", overflow="fold")
        for r in rows:
            cells = []
            for h, v in zip(headers, r, strict=True):
                if v is None:
                    cells.append(Text(""))
                elif h.endswith("bytes"):
                    cells.append(Text(fmt_bytes(v)))
                elif h.endswith("_sample"):
                    cells.append(Text(fmt_time(v)))
                elif isinstance(v, int):
                    cells.append(Text(f"{v:,}"))
                else:
                    cells.append(Text(safe_text(str(v))))
            table.add_row(*cells)
        console.print(table)
    buckets = rows if by == "time" else times
    if buckets:
        console.print(bars(buckets, width))


def bars(buckets: list[tuple], width: int, bar_cells: int = 40) -> object:
    """Traffic per bucket as horizontal bars, with its bit rate."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    top = max((b[1] for b in buckets), default=0) or 1
    table = Table(box=box.SIMPLE_HEAD, header_style="bold",
                  title=Text(f"traffic per {fmt_width(width)}"), title_justify="left")
    table.add_column(Text("from"))
    table.add_column(Text("bytes"), justify="right")
    table.add_column(Text("bit/s"), justify="right")
    table.add_column(Text(""), no_wrap=True)
    for start, nbytes, _packets in buckets:
        cells = round(nbytes / top * bar_cells * 8) / 8
        full = int(cells)
        part = " ▏▎▍▌▋▊▉"[int((cells - full) * 8)]
        bar = "█" * full + (part if part != " " else "")
        table.add_row(Text(fmt_time(start)), Text(fmt_bytes(nbytes)),
                      Text(f"{nbytes * 8 / width:,.0f}"), Text(bar or "▏"))
    return table
