"""The console's flags and their checks, apart from the console itself: every run builds
the command line, and a run without the console (-B) need not import it (rich, the screen)."""

from __future__ import annotations

import argparse

from iptraf_mp.console import config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("console (defaults from the config file, see --config)")
    g.add_argument("--dns", action=argparse.BooleanOptionalAction, default=False,
                   help="reverse DNS for host names, resolved in the background (default off)")
    g.add_argument("--services", action=argparse.BooleanOptionalAction, default=False,
                   help="show ports as service names (default off)")
    # The other halves of flags cli.py has, so a flag can undo what the config file set.
    # SUPPRESS: they must not set a default of their own over the first flag's.
    g.add_argument("--promisc", dest="promisc", action="store_true", default=argparse.SUPPRESS,
                   help="promiscuous mode (the default; undoes promiscuous = false)")
    g.add_argument("--no-mac", dest="mac", action="store_false", default=argparse.SUPPRESS,
                   help="no source MAC column (undoes source_mac = true)")
    g.add_argument("--kbits", dest="kbytes", action="store_false", default=argparse.SUPPRESS,
                   help="rates in kbit/s (the default; undoes kbytes = true)")
    config.install(parser)


def make_sink(args: argparse.Namespace) -> None:
    """No sink: the console runs in the main loop. Checks what cli.py leaves unchecked."""
    from iptraf_mp.outputs.sink import SinkError

    if args.refresh <= 0:
        raise SinkError("--refresh must be positive")
    if args.persistence < 0:
        raise SinkError("--persistence must be 0 (off) or more")
    if args.lower_lines < 1:
        raise SinkError("--lower-lines must be at least 1")
    return None


def import_now() -> None:
    """What the console imports when it starts, imported now (before -Z drops root)."""
    from iptraf_mp.console import app

    app.import_now()
