"""`iptraf-mp serve`: the flow history in a browser, with Datasette (the optional `web` extra:
`pip install 'iptraf-mp[web]'`).

    iptraf-mp serve [--db PATH] [--port 8001] [--time-limit MS] [--immutable]

Datasette on 127.0.0.1 only (flow history says who talked to whom: nothing here listens
beyond this host), the store opened read-only (Datasette's `mode=ro`, which also sees what a
running monitor has committed) or, with `--immutable`, as a file that never changes (an
archived store: no locking, cached counts). Every table and column is documented in the
metadata, the README's example queries and the report's questions are canned queries, and
`/-/traffic` draws traffic over time as an SVG chart made on the server (no script, nothing
fetched from elsewhere).
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path
from typing import Any

from iptraf_mp.core.text import say

from .paths import default_db_path
from .report import _GROUPS, _TRAFFIC, Scope, bucket_width, fmt_bytes, fmt_time, fmt_width

PROG = "iptraf-mp serve"
DEFAULT_PORT = 8001
DEFAULT_TIME_LIMIT_MS = 2000

_ENTRY = {
    "packets": "packets in this direction", "bytes": "IP bytes in this direction",
    "flags": "TCP flags of its latest packet (S-A-, ---R...)",
    "state": "ACTIVE, DONE (FIN sent), CLOSED (FIN acknowledged), RESET or TIMEOUT",
    "mac": "source MAC of its latest packet", "first_seen": "its first packet (Unix s)",
    "last_seen": "its latest packet (Unix s)", "last_size": "IP length of its latest packet",
    "window": "TCP window of its latest packet (unscaled)",
}

# Every table's and column's meaning (docs/store.md says the same at more length); a test
# keeps this equal to the schema's columns.
TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "meta": ("Settings of the store itself.", {
        "key": "setting name (schema_version)", "value": "its value"}),
    "sessions": ("One row per run of the monitor.", {
        "id": "session number", "started": "wall-clock start (Unix s)",
        "ended": "wall-clock end (Unix s), NULL while running",
        "status": "running, closed, or unclean (its process died)",
        "clean": "1 closed cleanly, 0 not, NULL while running",
        "source": "live or replay", "replay_file": "the replayed capture file",
        "host": "host name", "pid": "process id", "pid_start": "process start (clock ticks)",
        "interfaces": "interfaces (JSON list)", "settings": "the run's settings (JSON)",
        "version": "iptraf-mp version", "checkpoints": "checkpoints committed",
        "last_checkpoint": "wall time of the last checkpoint",
        "last_packet": "packet time of the last checkpoint"}),
    "interfaces": ("Interfaces seen in a session.", {
        "session_id": "session", "name": "interface name (escaped when shown)",
        "first_seen": "first packet (Unix s)", "last_seen": "latest packet (Unix s)"}),
    "tcp_connections": ("One row per TCP entry pair (A sent the first packet seen).", {
        "id": "session_id << 44 | pair_id", "session_id": "session",
        "pair_id": "the pair of --json (restarts every run)", "iface": "interface",
        "a_addr": "A's address", "a_port": "A's port", "b_addr": "B's address",
        "b_port": "B's port (the service, for a connection A opened)",
        "partial": "1: opened before the capture (the > marker)",
        "first_seen": "first packet (Unix s)", "last_seen": "latest packet (Unix s)",
        "ended_by": "OPEN, FIN, RESET, ICMP, TIMEOUT or LOST (its shard died)",
        "retired": "1: the row is final", "checkpoint": "checkpoint that wrote it last",
        **{f"a_{k}": f"A to B: {v}" for k, v in _ENTRY.items()},
        **{f"b_{k}": f"B to A: {v}" for k, v in _ENTRY.items()}}),
    "flow_samples": ("What each connection did between two checkpoints (deltas: SUM over "
                     "any time range is right).", {
        "session_id": "session", "pair_id": "connection", "checkpoint": "checkpoint",
        "ts": "time of its latest packet counted (Unix s)",
        "a_packets": "A to B packets since the previous sample", "a_bytes": "A to B IP bytes",
        "b_packets": "B to A packets", "b_bytes": "B to A IP bytes"}),
    "other_flows": ("One row per non-TCP flow: interface, protocol, endpoints and ports or "
                    "ICMP type/code, until idle for --flow-idle.", {
        "session_id": "session", "flow_id": "flow number in the session", "iface": "interface",
        "kind": "udp, icmp (v4 and v6), other_ip or non_ip",
        "protocol": "IP protocol, EtherType for non_ip", "src": "source (a MAC for non_ip)",
        "dst": "destination", "sport": "UDP source port", "dport": "UDP destination port",
        "icmp_type": "ICMP type", "icmp_code": "ICMP code", "packets": "packets",
        "bytes": "IP bytes (wire length for non_ip)", "first_seen": "first packet (Unix s)",
        "last_seen": "latest packet (Unix s)", "checkpoint": "checkpoint that wrote it last"}),
    "other_samples": ("What each other flow did between two checkpoints (deltas).", {
        "session_id": "session", "flow_id": "flow", "checkpoint": "checkpoint",
        "ts": "time of its latest packet counted", "packets": "packets since the previous "
        "sample", "bytes": "bytes since the previous sample"}),
    "counters": ("The run's summary at each checkpoint, counted since its start.", {
        "session_id": "session", "checkpoint": "checkpoint", "wall_time": "wall time (Unix s)",
        "packet_time": "packet time (Unix s)", "frames": "frames seen",
        **{f"{k}_{v}": f"{k.replace('_', '-')} {v}" for k in
           ("ip", "tcp", "udp", "icmp", "other_ip", "non_ip") for v in ("packets", "bytes")},
        "malformed": "malformed frames (counted, never fatal)",
        "untracked": "new TCP connections counted but not tracked (table full)",
        "kernel_drops": "packets the kernel dropped", "queue_drops": "batches dropped on "
        "full rings", "queue_dropped_packets": "packets in those batches",
        "shard_restarts": "shards restarted", "lost_pairs": "connections lost with a shard",
        "final": "1 on the row written at exit", "lag_seconds": "snapshot to commit (s)",
        "evicted_flows": "non-TCP flows ended early (flow table full)"}),
    "syn_warnings": ("Destinations with at least --syn-warn unanswered lone SYNs, at a "
                     "checkpoint: a SYN flood or a port scan.", {
        "session_id": "session", "checkpoint": "checkpoint", "packet_time": "packet time",
        "iface": "interface", "dst": "destination", "halfopen": "unanswered lone SYNs"}),
}


def _report_sql(by: str, top: int = 20) -> str:
    return (_TRAFFIC.format(where="1") + _GROUPS[by][0]).replace(":top", str(top))


CANNED: dict[str, dict[str, str]] = {
    "top_tcp_sources": {
        "title": "Top TCP sources by bytes",
        "sql": "SELECT src, sum(bytes) AS bytes FROM tcp_traffic GROUP BY src "
               "ORDER BY bytes DESC LIMIT 10"},
    "connections_to_port": {
        "title": "Connections to a port",
        "sql": "SELECT * FROM tcp_connections WHERE b_port = :port ORDER BY first_seen"},
    "top_hosts": {"title": "Top hosts (sent and received)", "sql": _report_sql("host")},
    "top_ports": {"title": "Top service ports", "sql": _report_sql("port")},
    "protocols": {"title": "Traffic by protocol", "sql": _report_sql("proto")},
    "interfaces": {"title": "Traffic by interface", "sql": _report_sql("iface")},
    "top_connections": {"title": "Top connections and flows", "sql": _report_sql("conn")},
    "traffic_per_minute": {
        "title": "Traffic per minute",
        "sql": (_TRAFFIC.format(where="1") + _GROUPS["time"][0]).replace(":width", "60")},
}


def metadata(name: str) -> dict[str, Any]:
    return {
        "title": "iptraf-mp flow history",
        "description_html": ('Connections and flows recorded by iptraf-mp. '
                             '<a href="/-/traffic">Traffic over time</a>.'),
        "databases": {name: {
            "tables": {t: {"description": d, "columns": cols} for t, (d, cols) in TABLES.items()},
            "queries": CANNED,
        }},
    }


# ---- the chart ----------------------------------------------------------------------------

def chart_svg(buckets: list[tuple[float, int, int]], width: int, w: int = 900,
              h: int = 260) -> str:
    """Bytes per bucket as bars, with the peak rate on the axis: plain SVG, no script."""
    if not buckets:
        return '<p class="no-traffic">No traffic in the store.</p>'
    top = max(b[1] for b in buckets) or 1
    left, bottom = 70, 24
    bw = (w - left - 10) / len(buckets)
    parts = [f'<svg id="traffic-chart" data-bucket-seconds="{width}" '
             f'data-buckets="{len(buckets)}" xmlns="http://www.w3.org/2000/svg" width="{w}" '
             f'height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="traffic over time">',
             f'<line x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}" '
             f'stroke="#444"/>',
             f'<text x="{left + 4}" y="14" font-size="11">peak '
             f'{html.escape(f"{top * 8 / width:,.0f}")} bit/s</text>']
    for i, (start, nbytes, packets) in enumerate(buckets):
        bh = (h - bottom - 20) * nbytes / top
        x = left + i * bw
        tip = f"{fmt_time(start)}: {fmt_bytes(nbytes)}, {packets:,} packets"
        parts.append(f'<rect class="bucket" x="{x + 1:.1f}" y="{h - bottom - bh:.1f}" '
                     f'width="{max(bw - 2, 1):.1f}" height="{bh:.1f}" fill="#3a7bd5">'
                     f'<title>{html.escape(tip)}</title></rect>')
    for i in (0, len(buckets) - 1):
        parts.append(f'<text x="{left + i * bw:.1f}" y="{h - 6}" font-size="11">'
                     f'{html.escape(fmt_time(buckets[i][0]))}</text>')
    parts.append("</svg>")
    return "".join(parts)


async def _traffic_page(datasette: Any, request: Any) -> Any:
    from datasette.utils.asgi import Response

    db = datasette.get_database()
    session = request.args.get("session")
    scope = Scope(session=int(session) if session and session.isdigit() else None)
    params = scope.params()
    sql = _TRAFFIC.format(where=scope.where())
    span = (await db.execute(sql + "SELECT min(ts), max(ts) FROM t", params)).first()
    width = bucket_width(span[0], span[1], 48) if span and span[0] is not None else 60
    rows = await db.execute(sql + _GROUPS["time"][0], {**params, "width": width})
    buckets = [(r[0], r[1], r[2]) for r in rows]
    total = sum(b[1] for b in buckets)
    what = f"session {scope.session}" if scope.session is not None else "every session"
    body = (f"<h1>Traffic over time</h1><p>{html.escape(what)}: "
            f"{html.escape(fmt_bytes(total))} in {len(buckets)} buckets of "
            f"{html.escape(fmt_width(width))}.</p>{chart_svg(buckets, width)}")
    return Response.html(await datasette.render_template(
        "_iptraf_mp_page.html", {"body": body, "title": "Traffic over time"}, request=request))


def _register_plugin() -> None:
    """Datasette's hooks, registered by `serve` itself (not an entry point: no other
    Datasette gets them)."""
    from datasette import hookimpl
    from datasette.plugins import pm

    class Plugin:
        @staticmethod
        @hookimpl
        def register_routes() -> list[tuple[str, Any]]:
            return [(r"^/-/traffic$", _traffic_page)]

    if pm.get_plugin("iptraf-mp") is None:
        pm.register(Plugin, name="iptraf-mp")


_PAGE = """{% extends "base.html" %}
{% block title %}{{ title }}{% endblock %}
{% block content %}{{ body|safe }}{% endblock %}
"""


def make_datasette(db: Path, time_limit_ms: int, immutable: bool, templates: Path) -> Any:
    from datasette.app import Datasette

    _register_plugin()
    templates.mkdir(parents=True, exist_ok=True)
    (templates / "_iptraf_mp_page.html").write_text(_PAGE)
    files = [] if immutable else [str(db)]
    return Datasette(files=files, immutables=[str(db)] if immutable else [],
                     metadata=metadata(db.stem), template_dir=str(templates),
                     settings={"sql_time_limit_ms": time_limit_ms, "allow_download": False,
                               "max_returned_rows": 1000})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Browse the flow history with "
                                "Datasette, on 127.0.0.1 only (needs the web extra).")
    p.add_argument("--db", metavar="PATH", help=f"the flow store (default: {default_db_path()})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="N",
                   help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    p.add_argument("--time-limit", type=int, default=DEFAULT_TIME_LIMIT_MS, metavar="MS",
                   help=f"stop a query after MS ms (default {DEFAULT_TIME_LIMIT_MS})")
    p.add_argument("--immutable", action="store_true",
                   help="open the store as a file that never changes (an archive: faster, "
                        "and it must not be written meanwhile)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = Path(args.db).expanduser() if args.db else default_db_path()
    if not path.is_file():
        say(f"no flow store at {path} (a monitor creates it; see --db)", PROG)
        return 1
    if not 1 <= args.port <= 65535 or args.time_limit < 1:
        say("--port must be 1..65535 and --time-limit at least 1 ms", PROG)
        return 2
    try:
        import datasette  # noqa: F401
        import uvicorn
    except ImportError:
        say("Datasette is not installed: pip install 'iptraf-mp[web]'", PROG)
        return 1
    import os
    import tempfile

    import rich

    # Datasette prints every refused query's traceback, locals included, through rich's
    # global console (a 404 makes a screenful): not on the operator's terminal. Real
    # errors (500) still print their traceback.
    rich.reconfigure(file=open(os.devnull, "w"))  # noqa: SIM115  (for the process's life)
    with tempfile.TemporaryDirectory(prefix="iptraf-mp-serve-") as tmp:
        ds = make_datasette(path.resolve(), args.time_limit, args.immutable,
                            Path(tmp) / "templates")
        say(f"serving {path} on http://127.0.0.1:{args.port}/ (^C stops)", PROG)
        sys.stderr.flush()
        uvicorn.run(ds.app(), host="127.0.0.1", port=args.port, log_level="warning")
    return 0

