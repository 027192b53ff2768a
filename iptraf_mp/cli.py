"""The `iptraf-mp` command line. Flags follow iptraf-ng and, where they overlap, tcpdump."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="iptraf-mp",
        description="IPTraf's IP traffic monitor for multi-interface routers on many cores.",
    )
    src = p.add_argument_group("what to watch")
    src.add_argument("-i", dest="iface", action="append", metavar="IFACE|all",
                     help="capture on IFACE (repeatable or comma-separated); 'all' = every "
                          "interface that is up")
    src.add_argument("-r", dest="read", metavar="FILE", help="replay a pcap or pcapng file")
    out = p.add_argument_group("output")
    out.add_argument("-B", dest="background", action="store_true",
                     help="run without the console")
    out.add_argument("--json", metavar="OUT",
                     help="write JSON lines of TCP entries and the summary to OUT ('-' = stdout)")
    out.add_argument("-L", dest="log", metavar="FILE", help="write iptraf-ng log lines to FILE")
    out.add_argument("-w", dest="write", metavar="FILE", help="record captured frames to pcapng")
    run = p.add_argument_group("run")
    run.add_argument("-t", dest="minutes", type=float, metavar="MIN",
                     help="stop after MIN minutes")
    run.add_argument("-Z", dest="user", metavar="USER",
                     help="drop root privileges to USER after opening the capture")
    run.add_argument("--shards", type=int, metavar="N",
                     help="worker shards (default: cores minus one, at least 1); "
                          "0 = run the engine in this process")
    run.add_argument("--speed", type=float, metavar="X",
                     help="replay at X times the recorded pace")
    eng = p.add_argument_group("engine")
    eng.add_argument("--tcp-timeout", type=float, default=15.0, metavar="MIN",
                     help="TCP idle timeout in minutes (default 15)")
    eng.add_argument("--persistence", type=float, default=0.0, metavar="MIN",
                     help="flush closed/idle pairs every MIN minutes (default 0 = off)")
    eng.add_argument("--lower-lines", type=int, default=512, metavar="N",
                     help="lines kept in the lower window (default 512)")
    p.add_argument("--version", action="version", version=f"iptraf-mp {__version__}")
    return p


def fail(msg: str, code: int = 2) -> int:
    print(f"iptraf-mp: {msg}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.read and args.iface:
        return fail("-i and -r cannot be used together")
    if not args.read and not args.iface:
        return fail("nothing to watch: give -i IFACE|all or -r FILE")
    if args.tcp_timeout <= 0:
        return fail("--tcp-timeout must be positive")
    if args.read:
        return run_replay(args)
    return fail("live capture is not available in this build yet")


def run_replay(args: argparse.Namespace) -> int:
    from .capfile import CaptureFileError
    from .engine import Engine, Settings
    from .jsonout import JsonWriter
    from .replay import finish, replay

    settings = Settings(tcp_timeout=args.tcp_timeout * 60.0,
                        persistence=args.persistence * 60.0, lower_lines=args.lower_lines)
    engine = Engine(settings)
    out_fh = None
    if args.json:
        try:
            out_fh = sys.stdout if args.json == "-" else open(args.json, "w")  # noqa: SIM115
        except OSError as e:
            return fail(f"{args.json}: {e.strerror}")
    writer = JsonWriter(out_fh) if out_fh else None
    try:
        result = replay(args.read, engine, writer)
    except CaptureFileError as e:
        return fail(str(e))
    if writer is not None:
        finish(engine, writer)
        if out_fh is not sys.stdout:
            out_fh.close()
    if result.error:
        return fail(result.error, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
