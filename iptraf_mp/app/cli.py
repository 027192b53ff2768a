"""The `iptraf-mp` command line. Flags follow iptraf-ng and, where they overlap, tcpdump.

    iptraf-mp -i IFACE|all [options]     watch live traffic (the console, or -B)
    iptraf-mp -r FILE [options]          watch a recording (pcap or pcapng)
    iptraf-mp sql "SELECT ..."           query the flow history (see `iptraf-mp sql -h`)
    iptraf-mp report [--since 1h] [--by host|port|proto|iface|conn|time]
                                         the common questions, answered from the history
    iptraf-mp serve [--db PATH]          the history in a browser (Datasette, 127.0.0.1)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
from pathlib import Path

from iptraf_mp import __version__
from iptraf_mp.core.othertable import DEFAULT_FLOW_IDLE
from iptraf_mp.core.text import say
from iptraf_mp.outputs.sink import SinkError

__all__ = ["SinkError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="iptraf-mp",
        description="IPTraf's IP traffic monitor for multi-interface routers on many cores. "
                    "Query the flow history with `iptraf-mp sql`.",
    )
    src = p.add_argument_group("what to watch")
    src.add_argument("-i", dest="iface", action="append", metavar="IFACE|all",
                     help="capture on IFACE (repeatable or comma-separated); 'all' = every "
                          "interface that is up")
    src.add_argument("-r", dest="read", metavar="FILE", help="replay a pcap or pcapng file")
    out = p.add_argument_group("output")
    out.add_argument("-B", dest="background", action="store_true",
                     help="run without the console (stop with SIGINT, SIGTERM, SIGUSR2 or -t)")
    out.add_argument("--json", metavar="OUT",
                     help="write JSON lines of TCP entries and the summary to OUT ('-' = stdout)")
    out.add_argument("-L", dest="log", metavar="FILE",
                     help="write iptraf-ng log lines to FILE (SIGUSR1: active list, reopen)")
    out.add_argument("-q", dest="quiet", action="store_true",
                     help="with -B: no progress bar and no closing line on stderr (errors "
                          "still); there is none either when stderr is not a terminal")
    out.add_argument("-w", dest="write", metavar="FILE",
                     help="record every captured frame to FILE (pcapng)")
    run = p.add_argument_group("run")
    run.add_argument("-t", dest="minutes", type=float, metavar="MIN",
                     help="stop after MIN minutes")
    run.add_argument("-Z", dest="user", metavar="USER",
                     help="drop root privileges to USER once the capture is open")
    run.add_argument("--shards", type=int, metavar="N",
                     help="worker shards (default: cores minus one, at least 1); "
                          "0 = the engine in this one process (replay only)")
    run.add_argument("--capture-procs", type=int, metavar="N",
                     help="capture processes per live interface, sharing its packets by "
                          "the kernel's flow hash (PACKET_FANOUT; default: a third of the "
                          "cores, shared by the interfaces, 1 to 4)")
    run.add_argument("--speed", type=float, metavar="X",
                     help="replay at X times the recorded pace (default: as fast as possible "
                          "with -B, real time with the console)")
    run.add_argument("--refresh", type=float, default=0.25, metavar="SEC",
                     help="display and publication interval (default 0.25 s)")
    eng = p.add_argument_group("engine")
    eng.add_argument("--tcp-timeout", type=float, default=15.0, metavar="MIN",
                     help="TCP idle timeout in minutes (default 15)")
    eng.add_argument("--flow-idle", type=float, default=DEFAULT_FLOW_IDLE / 60.0,
                     metavar="MIN",
                     help="a non-TCP flow (UDP, ICMP, other) ends after MIN minutes without "
                          "packets; the next packet starts a new one (default "
                          f"{DEFAULT_FLOW_IDLE / 60.0:g})")
    eng.add_argument("--persistence", type=float, default=0.0, metavar="MIN",
                     help="flush closed/idle pairs every MIN minutes (default 0 = off)")
    eng.add_argument("--lower-lines", type=int, default=512, metavar="N",
                     help="lines kept in the lower window (default 512)")
    eng.add_argument("--max-connections", type=int, default=1_000_000, metavar="N",
                     help="track at most N TCP pairs (default 1M); beyond, the oldest closed "
                          "or timed-out pairs are evicted, then new ones are only counted")
    eng.add_argument("--max-flows", type=int, default=1_000_000, metavar="N",
                     help="track at most N non-TCP flows (UDP, ICMP, other; default 1M); "
                          "beyond, the longest idle flow ends early (counted in the "
                          "summary as evicted_flows)")
    eng.add_argument("--syn-warn", type=int, default=500, metavar="N",
                     help="warn when a destination has N or more unanswered SYN entries "
                          "(a SYN flood or a port scan; default 500)")
    eng.add_argument("--no-promisc", dest="promisc", action="store_false",
                     help="do not put interfaces in promiscuous mode")
    eng.add_argument("--mac", action="store_true", help="show source MAC addresses")
    eng.add_argument("--kbytes", action="store_true", help="rates in kB/s instead of kbit/s")
    for ext in extensions():
        ext.add_arguments(p)
    p.add_argument("--version", action="version", version=version_line())
    return p


def extensions() -> list:
    """Modules that add their own flags and sinks: each has add_arguments(parser),
    make_sink(args) -> sink or None (raising SinkError with a one-line message) and
    import_now() (what its sink or screen imports late, imported before -Z drops root: USER
    may be unable to read the interpreter's files, a venv under a home of mode 700;
    capture/live.py does the same for its layer)."""
    from iptraf_mp.console import options as console
    from iptraf_mp.outputs.ipfix import options as export
    from store import cli as store_cli

    return [console, store_cli, export]


def fail(msg: str, code: int = 2) -> int:
    say(msg)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sql":
        from store.query import main as sql_main

        return sql_main(argv[1:])
    if argv and argv[0] == "report":
        from store.report import main as report_main

        return report_main(argv[1:])
    if argv and argv[0] == "serve":
        from store.web import main as serve_main

        return serve_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.read and args.iface:
        return fail("-i and -r cannot be used together")
    if not args.read and not args.iface:
        return fail("nothing to watch: give -i IFACE|all or -r FILE")
    if args.tcp_timeout <= 0:
        return fail("--tcp-timeout must be positive")
    if args.flow_idle <= 0:
        return fail("--flow-idle must be positive")
    if args.shards is not None and args.shards < 0:
        return fail("--shards must be 0 or more")
    if args.capture_procs is not None and not 1 <= args.capture_procs <= 64:
        return fail("--capture-procs must be 1 to 64")
    if args.capture_procs is not None and args.read:
        return fail("--capture-procs is for live capture (-i), not replay (-r)")
    if args.shards == 0 and not args.read:
        return fail("--shards 0 (one process) is for replay (-r) only")
    if args.max_connections < 1:
        return fail("--max-connections must be at least 1")
    if args.max_flows < 1:
        return fail("--max-flows must be at least 1")
    if args.speed is not None and args.speed <= 0:
        return fail("--speed must be positive")
    if not args.background and not sys.stdout.isatty() and not args.json:
        return fail("the console needs a terminal: use -B for background mode")
    try:
        return run_monitor(args)
    except KeyboardInterrupt:
        return 130


def version_line() -> str:
    """The version, and whether the core runs compiled or interpreted (and why)."""
    from iptraf_mp import core

    if core.INTERPRETED:
        build = "interpreted core (IPTRAF_MP_INTERPRETED is set)"
    elif core.compiled_modules():
        build = f"compiled core ({len(core.compiled_modules())} modules)"
    else:
        build = "interpreted core (not compiled: run `make`)"
    return f"iptraf-mp {__version__}, {build}"


def settings_from(args: argparse.Namespace):
    from iptraf_mp.core.engine import Settings

    return Settings(tcp_timeout=args.tcp_timeout * 60.0, persistence=args.persistence * 60.0,
                    lower_lines=args.lower_lines, log_events=bool(args.log),
                    max_pairs=args.max_connections, flow_idle=args.flow_idle * 60.0,
                    max_flows=args.max_flows)


def settings_comment(args: argparse.Namespace) -> str:
    """What changes results, for the recording's section header."""
    return (f"iptraf-mp {__version__}; tcp_timeout_min={args.tcp_timeout:g}; "
            f"flow_idle_min={args.flow_idle:g}; "
            f"persistence_min={args.persistence:g}; promisc={int(args.promisc)}; "
            f"snaplen=262144")


def run_monitor(args: argparse.Namespace) -> int:
    from iptraf_mp.capture.capfile import CaptureFileError, PcapngWriter, open_capture
    from iptraf_mp.capture.live import (
        CaptureSetupError,
        check_paths_as,
        default_capture_procs,
        drop_privileges,
        interface_names,
        open_handles,
    )
    from iptraf_mp.capture.recorder import Recorder
    from iptraf_mp.core.lines import LineOptions
    from iptraf_mp.core.run import RunStartError
    from iptraf_mp.outputs.jsonout import JsonWriter
    from iptraf_mp.outputs.log import LogError, LogWriter

    from .monitor import Monitor

    settings = settings_from(args)
    shards = args.shards
    if shards is None:
        from shards.supervisor import default_shards

        shards = default_shards()
    if args.write and shards == 0:
        shards = 1  # recording rides on the capture processes
    # Everything the operator asked for is checked before anything starts.
    clash = output_clash(args)
    if clash:
        return fail(clash)
    if args.user:
        try:
            check_paths_as(args.user, paths_after_drop(args))
        except CaptureSetupError as e:
            return fail(str(e))
    handles = []
    names: list[str] = []
    reader = None
    if args.read:
        try:
            # opened once, here: a pipe or FIFO (`-r -` too) cannot be opened twice
            reader = open_capture(args.read)
        except CaptureFileError as e:
            return fail(str(e))
    else:
        try:
            names = interface_names(args.iface)
            per_iface = args.capture_procs or default_capture_procs(len(names))
            handles = open_handles(names, args.promisc, 64 << 20, per_iface)
        except CaptureSetupError as e:
            return fail(str(e))
    opts = LineOptions(show_mac=args.mac, kbytes=args.kbytes)
    closers = []
    mon = None
    pending = PendingOutputs()
    try:
        json_fh = None
        if args.json:
            if args.json == "-":
                json_fh = sys.stdout
            else:
                try:
                    json_fh = pending.text(args.json)
                except OSError as e:
                    return fail(f"cannot write {args.json}: {e.strerror}")
                closers.append(json_fh)
        log = None
        if args.log:
            created = not os.path.exists(args.log)
            try:
                log = LogWriter(args.log, opts)
            except LogError as e:
                return fail(str(e))
            pending.appended(args.log, created)
        recorder = None
        if args.write:
            try:
                writer = PcapngWriter(args.write, comment=settings_comment(args),
                                      truncate=False)
            except CaptureFileError as e:
                return fail(str(e))
            pending.writers.append(writer)
            recorder = Recorder(writer)
        # Made before -Z: building it imports and creates what USER might not be allowed to
        run = make_run(args, settings, shards, handles, reader)
        if args.user:
            for ext in extensions():
                ext.import_now()
            try:
                drop_privileges(args.user, store=not args.no_db)
            except CaptureSetupError as e:
                return fail(str(e))
        sinks = []
        for ext in extensions():
            try:
                sink = ext.make_sink(args)
            except SinkError as e:
                return fail(str(e))
            if sink is not None:
                sinks.append(sink)
                closers.append(sink)
        try:
            pending.commit()
        except (OSError, CaptureFileError) as e:
            return fail(f"cannot write: {getattr(e, 'strerror', None) or e}")
        if recorder is not None:
            run.on_record = recorder.packet
            run.on_record_iface = recorder.interface
        json = JsonWriter(json_fh, label=f"--json {args.json}") if json_fh else None
        mon = Monitor(run, json, log, recorder, sinks=sinks, minutes=args.minutes)
        mon.install_signals()
        progress = None
        if args.background and args.read and not args.quiet and sys.stderr.isatty():
            from iptraf_mp.console.progress import ReplayProgress

            # before the start: the pipeline's capture process takes the file over
            progress = ReplayProgress(os.path.basename(args.read),
                                      reader.fileno() if reader is not None else None)
        ended = False
        try:
            try:
                mon.start()
            except RunStartError as e:
                return fail(str(e), 1)
            if progress is not None:
                progress.start()
                mon.run_background(lambda: progress.update(mon.merger.summary().frames))
            elif args.background:
                mon.run_background()
            else:
                from iptraf_mp.console.app import run_console

                run_console(mon, args, opts)
            mon.finish()
            ended = True
        finally:
            if progress is not None:
                progress.close(mon.merger.summary() if ended else None)
            mon.close()
        counters = run.counters()
        errors = counters.errors
        if names and args.background:
            # -B has no screen: without this line the drops (the kernel's, from pcap stats(),
            # and the full queues') would be shown nowhere
            say(f"{mon.merger.summary().frames} frames counted; dropped: "
                f"{counters.kernel_drops} by the kernel, {counters.queue_dropped_packets} "
                f"on full queues")
        for msg in errors:
            say(msg)
        for msg in mon.failures:
            say(msg)
        return max(1 if errors or mon.failures else 0, counters.exit_status)
    finally:
        pending.abort()
        if reader is not None:
            reader.close()
        for obj in closers:
            try:
                obj.close()
            except OSError as e:
                if mon is None or not mon.failures:  # else: the failed output's, reported
                    say(f"closing an output failed: {e.strerror or e}")


def paths_after_drop(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """What the run writes after -Z: the flow store (opened then) and the log (reopened on
    SIGUSR1). The other outputs are opened before, as root."""
    from store.paths import default_db_path

    out = []
    if not args.no_db:
        out.append(("flow store", Path(args.db).expanduser() if args.db else default_db_path()))
    if args.log:
        out.append(("-L", Path(args.log)))
    return out


class PendingOutputs:
    """Outputs opened before the run is sure to start (as root, before -Z), that replace
    what their files held only once it is: a run refused later (a foreign --db, say) leaves
    every file as it found it, and removes the ones it created."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, bool, object]] = []  # path, created, file or writer
        self.writers: list = []  # PcapngWriters opened with truncate=False
        self.done = False

    def text(self, path: str):
        created = not os.path.exists(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fh = os.fdopen(fd, "w")
        self.texts.append((path, created, fh))
        return fh

    def appended(self, path: str, created: bool) -> None:
        """An output that appends (the log): nothing to truncate, only to remove if new."""
        self.texts.append((path, created, None))

    def commit(self) -> None:
        self.done = True
        for _path, _created, fh in self.texts:
            if fh is not None and stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                fh.truncate(0)  # (not /dev/null, a FIFO, a terminal)
        for w in self.writers:
            w.commit()

    def abort(self) -> None:
        if self.done:
            return
        for path, created, _fh in self.texts:
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        for w in self.writers:
            w.abort()


def _same_file(a: str, b: str) -> bool:
    """The same regular file (or the same path to be created); devices such as /dev/null
    take any number of outputs."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)
    return stat.S_ISREG(sa.st_mode) and (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def output_clash(args: argparse.Namespace) -> str | None:
    """An output that names the input (or another output) would destroy it: refused before
    anything is opened for writing."""
    outputs = [(flag, path) for flag, path in (("-w", args.write), ("--json", args.json),
                                               ("-L", args.log), ("--db", args.db))
               if path and path != "-"]
    if args.read and args.read != "-":
        for flag, path in outputs:
            if _same_file(path, args.read):
                return f"{flag} {path} is the file being read (-r): refusing to overwrite it"
    for i, (flag, path) in enumerate(outputs):
        for flag2, path2 in outputs[i + 1:]:
            if _same_file(path, path2):
                return f"{flag} and {flag2} name the same file {path}"
    return None


def make_run(args, settings, shards: int, handles: list, reader=None):
    if args.read and shards == 0:
        from .localrun import LocalRun

        return LocalRun(reader or args.read, settings, args.refresh, args.speed)
    from shards.supervisor import Pipeline, Source

    if args.read:
        sources = [Source(path=args.read, reader=reader)]
    else:
        sources = [Source(iface=h.iface, handle=h.handle) for h in handles]
    speed = args.speed
    if speed is None and args.read and not args.background:
        speed = 1.0  # watching a recording: real time unless asked otherwise
    return Pipeline(sources, shards, settings, args.refresh, speed, record=bool(args.write),
                    promisc=args.promisc)


if __name__ == "__main__":
    sys.exit(main())
