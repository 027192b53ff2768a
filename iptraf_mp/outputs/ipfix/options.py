"""The exporter's flags (`--ipfix`, ...) and the sink they make, apart from the exporter:
every run builds the command line, and a run without --ipfix need not import it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .target import parse_target

if TYPE_CHECKING:
    from .sink import IpfixSink

DEFAULT_ACTIVE = 60.0
IO_TIMEOUT = 0.01  # seconds an export call may wait on a TCP connect or a name lookup


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("flow export (IPFIX, RFC 7011)")
    g.add_argument("--ipfix", action="append", metavar="HOST:PORT",
                   help="export flow records to an IPFIX collector (repeatable); "
                        "udp:// is the default, tcp://HOST:PORT where the collector takes it; "
                        "IPv6 in brackets: [::1]:4739")
    g.add_argument("--ipfix-active", type=float, default=DEFAULT_ACTIVE, metavar="SECONDS",
                   help="active timeout: open flows are exported as deltas this often "
                        f"(default {DEFAULT_ACTIVE:g})")
    g.add_argument("--ipfix-odid", type=int, default=0, metavar="N",
                   help="IPFIX observation domain id (default 0)")


def import_now() -> None:
    """What `make_sink` imports, imported now (before -Z drops root)."""
    from . import sink, transport  # noqa: F401


def make_sink(args: argparse.Namespace) -> IpfixSink | None:
    """The exporter `--ipfix` asks for, None without it (then nothing of it is imported)."""
    from iptraf_mp.outputs.sink import SinkError

    targets = getattr(args, "ipfix", None)
    if not targets:
        return None
    from .sink import IpfixSink
    from .transport import IpfixExporter

    active = args.ipfix_active
    if not active > 0:
        raise SinkError("--ipfix-active must be positive")
    if not 0 <= args.ipfix_odid <= 0xFFFFFFFF:
        raise SinkError("--ipfix-odid must be in 0..4294967295")
    exporters = []
    try:
        for t in targets:
            transport, _host, _port = parse_target(t)
            # A short io_timeout: while a TCP connect or a DNS lookup is in progress, each
            # update waits at most this long (the exporter's default, 50 ms, is a fifth of
            # a refresh); loopback connects and cached lookups finish well within it.
            exporters.append(IpfixExporter(t, odid=args.ipfix_odid, transport=transport,
                                           io_timeout=IO_TIMEOUT))
    except ValueError as e:
        raise SinkError(str(e)) from None
    return IpfixSink(exporters, active=active, live=not args.read)
