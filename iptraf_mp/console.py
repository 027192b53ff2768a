"""Placeholder until this part lands: adds no flags and no sink."""

from __future__ import annotations


def add_arguments(parser) -> None:
    pass


def make_sink(args):
    return None


def run_console(monitor, args, opts) -> None:
    raise SystemExit("iptraf-mp: the console is not built yet: use -B")
