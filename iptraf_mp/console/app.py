"""The console: IPTraf's IP traffic monitor screen, live, over the merged shard snapshots.

`ConsoleApp` is everything but the terminal: it turns keys into view changes and table
actions, collects a `screen.Snapshot` from the merger for each frame and writes the exit
summary; tests drive it without a terminal. `run_console()` adds the terminal: rich Live on
the alternate screen, keys in cbreak mode read between frames (never blocking the display),
resizes, suspend (Ctrl-Z) and a terminal put back as it was on every way out.

Options (docs/decisions.md rule 19) come from the command line, with the TOML config file
(config.py) as their defaults.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from iptraf_mp.core.lines import LineOptions, screen_line, table_full
from iptraf_mp.core.model import fmt_addr
from iptraf_mp.core.rate import FlowRate
from iptraf_mp.core.tcptable import Pair

from .history import FlowRates, TrafficHistory
from .resolve import Resolver, Services
from .screen import Frame, Snapshot, layout, lower_range, render, safe, tcp_row_entry
from .view import ViewState, fit_tcp, handle_key

if TYPE_CHECKING:  # rich is imported only when a screen is drawn
    from rich.console import Console
    from rich.live import Live

TOP_N = 5  # connections in the exit summary
STOP_GRACE = 5.0  # seconds to let the pipeline write out what it holds after a quit
KEY_POLL = 0.05  # longest wait between looks at the keyboard (iptraf-ng polls at 50 ms)
ANNOUNCE_SECONDS = 5.0  # the outputs' status lines (the store's file) show this long at start


# ---- the console without the terminal -------------------------------------------------------

class FrozenPairs(Sequence):
    """The TCP rows as they were when P paused the display: the order is copied at once
    (a list of references), a row's numbers when it is first drawn, so pausing costs the
    same with a million connections as with ten."""

    def __init__(self, pairs: Sequence[Pair]) -> None:
        self.pairs = list(pairs)
        self.copies: dict[int, Pair] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self.pairs)))]
        copy = self.copies.get(i)
        if copy is None:
            from iptraf_mp.core.publication import pair_from_tuple, pair_tuple

            p = self.pairs[i]
            copy = self.copies[i] = pair_from_tuple(pair_tuple(p))
            copy.slot = p.slot
        return copy


class ConsoleApp:
    """The console's state and behaviour, fed by `pump()` after every monitor step, `key()`
    for every key, and asked for a `frame()` at the refresh rate."""

    def __init__(self, monitor, args: argparse.Namespace, opts: LineOptions,
                 resolver: Resolver | None = None, services: Services | None = None) -> None:
        self.monitor = monitor
        self.merger = monitor.merger
        self.args = args
        self.opts = opts
        self.resolver = resolver
        self.services = services
        self.st = ViewState(mac_option=opts.show_mac)
        self.rate = FlowRate()
        self.history = TrafficHistory()
        self.flow_rates = FlowRates()
        self.frozen: Snapshot | None = None
        self.feed = self.merger.subscribe()  # retired pairs, for the exit summary's top list
        self.top: list[tuple[int, int, Pair]] = []  # min-heap (bytes, id, pair), TOP_N long
        self.anchor = None  # the first lower-window line shown while scrolled back
        self.first_now = 0.0  # packet clock at the first packet (replay's elapsed time)
        self.finished = False  # the run is over (end of recording, or stopped)
        self.ended_at: float | None = None  # when the console noticed it (monotonic)
        self.redraw = False  # Ctrl-L: clear the terminal before the next frame
        self.messages: list[str] = []  # what was written to stderr while the screen was up
        self.size = (80, 24)
        if args.read:
            self.first_now = _first_timestamp(args.read)

    # -- data in ---------------------------------------------------------------------------

    def pump(self) -> None:
        """After every step: keep the exit summary's top list and the lower window's
        scrolled-back position (lines drop off its front as new ones come)."""
        _changed, retired, _flows = self.feed.take()
        for p in retired:
            self._offer(p)
        if self.first_now == 0.0:
            self.first_now = self.merger.now
        st = self.st
        lines = self.merger.lines
        if st.lower_top is not None and self.anchor is not None and self.frozen is None:
            i = min(st.lower_top, len(lines) - 1)
            while i >= 0 and lines[i] is not self.anchor:
                i -= 1
            st.lower_top = max(0, i)

    def _offer(self, p: Pair) -> None:
        total = p.a.bytes + p.b.bytes
        item = (total, p.id, p)
        if len(self.top) < TOP_N:
            heapq.heappush(self.top, item)
        elif total > self.top[0][0]:
            heapq.heapreplace(self.top, item)

    # -- keys ------------------------------------------------------------------------------

    def _pages(self) -> tuple[int, int]:
        lay = layout(*self.size)
        return max(1, lay.tcp_rows), max(1, lay.lower_rows)

    def _lower_hidden(self, lines, page: int) -> int:
        """How far the longest lower-window line on view runs past the window."""
        first, end = lower_range(self.st, len(lines), page)
        opts = LineOptions(show_mac=self.opts.show_mac, kbytes=self.opts.kbytes)
        longest = max((len(safe(screen_line(lines[n], opts))) for n in range(first, end)),
                      default=0)
        return max(0, longest + 1 - (self.size[0] - 2))

    def key(self, k: str) -> None:
        st = self.st
        snap_pairs, snap_lines = self._sources()
        tcp_page, lower_page = self._pages()
        was_paused = st.paused
        act = handle_key(st, k, 2 * len(snap_pairs), tcp_page, len(snap_lines), lower_page,
                         self._lower_hidden(snap_lines, lower_page))
        if act is not None:
            if act.kind == "flush":
                self.monitor.run.request_flush()
            elif act.kind == "sort":
                self.merger.display.sort(act.by)
            elif act.kind == "redraw":
                self.redraw = True
            if st.paused and act.kind in ("flush", "sort"):
                self.frozen = None  # the table changed under the frozen copy: take a new one
                self.frozen = self._freeze()
        if st.paused and not was_paused:
            self.frozen = self._freeze()
        elif was_paused and not st.paused:
            self.frozen = None
        pairs, lines = self._sources()
        fit_tcp(st, 2 * len(pairs), tcp_page)
        if st.lower_top is not None and st.lower_top < len(lines):
            self.anchor = lines[st.lower_top]
        else:
            self.anchor = None

    def _sources(self) -> tuple[Sequence[Pair], Sequence]:
        if self.frozen is not None:
            return self.frozen.pairs, self.frozen.lines
        return self.merger.display.slots, self.merger.lines

    # -- frames ----------------------------------------------------------------------------

    def _freeze(self) -> Snapshot:
        snap = self.snapshot()
        pairs = FrozenPairs(snap.pairs)
        tcp_page, _lower = self._pages()
        last = min(self.st.top + tcp_page, 2 * len(pairs)) - 1
        for i in range(self.st.top >> 1, (last >> 1) + 1 if last >= 0 else 0):
            pairs[i]  # what is on screen now is copied now
        snap.pairs = pairs
        snap.lines = list(snap.lines)
        return snap

    def snapshot(self) -> Snapshot:
        """What the next frame shows: the live tables, or the frozen ones while paused.
        Touches only the rows on screen."""
        st = self.st
        tcp_page, lower_page = self._pages()
        if self.frozen is not None:
            snap = self.frozen
        else:
            merger = self.merger
            pairs = merger.display.slots
            fit_tcp(st, 2 * len(pairs), tcp_page)
            stats = self.monitor.run.counters()
            snap = Snapshot(
                pairs=pairs, lines=merger.lines, summary=merger.summary(),
                kernel_drops=stats.kernel_drops,
                queue_drops=getattr(stats, "queue_dropped_packets", stats.queue_drops),
                elapsed=self._elapsed(), source=self._source(),
                notice=self._notice(stats), show_mac=self.opts.show_mac,
                kbytes=self.opts.kbytes, services=self.services)
            clock = self._rate_clock()
            self.history.sample(clock, snap.summary.ifaces)
            snap.history = self.history
            if pairs:
                pair, e = tcp_row_entry(pairs, st.bar)
                key = (pair.id, st.bar & 1)
                self.rate.sample(key, clock, e.bytes)
                snap.rate = self.rate.bytes_per_second()
                self.flow_rates.sample(key, clock, snap.rate)
                snap.flow_rates = self.flow_rates.rates
        if self.resolver is not None:
            snap.names = self.resolver.names(self._visible_addrs(snap, tcp_page, lower_page))
        return snap

    def _visible_addrs(self, snap: Snapshot, tcp_page: int, lower_page: int) -> list[bytes]:
        st = self.st
        out = []
        pairs = snap.pairs
        for row in range(st.top, min(st.top + tcp_page, 2 * len(pairs))):
            _pair, e = tcp_row_entry(pairs, row)
            out.append(e.src)
        first, end = lower_range(st, len(snap.lines), lower_page)
        for n in range(first, end):
            d = snap.lines[n].d
            if d.src and d.ipver:
                out.append(d.src)
                out.append(d.dst)
        return out

    def frame(self, width: int, height: int) -> Frame:
        self.size = (width, height)
        return render(self.st, self.snapshot(), width, height)

    def _rate_clock(self) -> float:
        """The packet clock, and once a replay has ended, time going on at its pace: the
        highlighted rate then decays to 0 over its 5 seconds instead of staying frozen."""
        now = self.merger.now
        if not self.finished:
            return now
        if self.ended_at is None:
            self.ended_at = time.monotonic()
        return now + (time.monotonic() - self.ended_at) * (self.args.speed or 1.0)

    def _elapsed(self) -> float:
        if self.args.read:
            return max(0.0, self.merger.now - self.first_now) if self.first_now else 0.0
        return time.time() - self.monitor.started

    def _source(self) -> str:
        if self.args.read:
            return f"-r {self.args.read}"
        names = ",".join(self.args.iface or [])
        return "all interfaces" if names == "all" else f"-i {names}"

    def _notice(self, stats) -> str:
        if stats.errors:
            return stats.errors[-1]
        if self.messages:
            return self.messages[-1]
        warn = getattr(self.args, "syn_warn", None)
        syn_flood = getattr(self.merger, "syn_flood", None)
        if warn and syn_flood is not None:
            hits = syn_flood(warn)
            if hits:
                iface, dst, n = hits[0]
                return f"SYN flood or scan? {n} unanswered SYNs to {fmt_addr(dst)} on {iface}"
        full = table_full(self.merger.summary())
        if full:
            return full
        if time.time() - self.monitor.started < ANNOUNCE_SECONDS and self.monitor.sinks:
            # where the history goes, said on screen (stderr is under the screen)
            return "; ".join(sink.status_line() for sink in self.monitor.sinks)
        if self.finished and self.args.read:
            return "end of recording (Q quits)"
        return ""

    # -- the end ---------------------------------------------------------------------------

    def top_connections(self) -> list[Pair]:
        """The biggest connections of the run: retired ones seen so far plus those still in
        the merger (one pass over them, at exit only)."""
        for p in self.feed.take()[1]:
            self._offer(p)
        best = {p.id: (t, p) for t, _i, p in self.top}
        live = heapq.nlargest(TOP_N, self.merger.pairs.values(),
                              key=lambda p: p.a.bytes + p.b.bytes)
        for p in live:
            best[p.id] = (p.a.bytes + p.b.bytes, p)
        ranked = sorted(best.values(), key=lambda tp: (-tp[0], tp[1].id))
        return [p for _t, p in ranked[:TOP_N]]

    def exit_summary(self) -> str:
        """Printed on the normal screen after the console: totals, drops, the biggest
        connections, and where the database and the recording are."""
        s = self.merger.summary()
        stats = self.monitor.run.counters()
        qd = getattr(stats, "queue_dropped_packets", stats.queue_drops)

        def host(addr: bytes, port: int) -> str:
            name = self.resolver.name(addr) if self.resolver is not None else None
            return f"{name or fmt_addr(addr)}:{port}"

        clock = "packet time" if self.args.read else "wall time"
        out = [f"iptraf-mp: {self._source()}, {_hms(self._elapsed())} of {clock}",
               f"  packets captured {s.frames}; drops: {stats.kernel_drops} kernel, {qd} queue"
               + (f"; malformed {s.malformed}" if s.malformed else ""),
               f"  {'':10} {'packets':>12} {'bytes':>15}"]
        for name, c in (("IP", s.ip), ("TCP", s.tcp), ("UDP", s.udp), ("ICMP", s.icmp),
                        ("other IP", s.other_ip), ("non-IP", s.non_ip)):
            out.append(f"  {name:10} {c.packets:>12} {c.bytes:>15}")
        top = self.top_connections()
        if top:
            out.append("  top connections by bytes (end: how the connection ended):")
            out.append(f"  {'bytes':>12} {'packets':>9}  {'end':7} {'iface':8} connection")
            for p in top:
                out.append(f"  {p.a.bytes + p.b.bytes:>12} {p.a.packets + p.b.packets:>9}  "
                           f"{p.end:7} {safe(p.iface):8} "
                           f"{host(p.a.src, p.a.sport)} <-> {host(p.b.src, p.b.sport)}")
        rec = getattr(self.args, "write", None)
        if rec:
            out.append(f"  recording: {os.path.abspath(rec)}")
        dbs = [(s.path, s.session_id) for s in self.monitor.sinks
               if hasattr(s, "path") and hasattr(s, "session_id")]  # the flow store
        for path, sid in dbs:
            out.append(f"  database: {path} (session {sid}; query it with `iptraf-mp sql`)")
        db = getattr(self.args, "db", None)
        if db and not dbs:
            out.append(f"  database: {os.path.abspath(db)}")
        for msg in stats.errors:
            out.append(f"  error: {msg}")
        return "\n".join(safe(line) for line in out)


def _first_timestamp(path: str) -> float:
    """A recording's first packet time: its elapsed time counts from there."""
    from iptraf_mp.capture.capfile import CaptureFileError, open_capture

    try:
        with open_capture(path) as r:
            for ts, _i, _d, _w in r:
                return ts
    except (CaptureFileError, OSError):
        pass
    return 0.0


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# ---- the console with the terminal ----------------------------------------------------------

def import_now() -> None:
    """What drawing the screen imports and loads late, done now: -Z calls this before it
    drops root, since USER may be unable to read the interpreter's files. rich imports some
    modules only on first use (colorsys for colours, its Unicode version's cell widths), so
    a throwaway render loads them."""
    import io

    import rich.live  # noqa: F401
    import rich.progress  # noqa: F401
    from rich.cells import cell_len
    from rich.console import Console
    from rich.style import Style
    from rich.text import Text

    from iptraf_mp.capture import capfile  # noqa: F401  (the summary's recording line)
    from iptraf_mp.core import publication  # noqa: F401  (P: the frozen rows)

    from . import keys  # noqa: F401  (termios, tty)

    out = Console(file=io.StringIO(), width=40, force_terminal=True, color_system="truecolor")
    style = Style(color="red", bgcolor="blue", bold=True, reverse=True)
    out.print(Text("\u00e9\u4e2d", style=style))
    cell_len("\u00e9\u4e2d")


def run_console(monitor, args: argparse.Namespace, opts: LineOptions) -> None:
    """The screen until Q (or a signal); then the exit summary on the normal screen."""
    if not sys.stdout.isatty() or args.json == "-":
        # Nowhere to draw (stdout is a pipe, or carries the JSON lines): run as -B does.
        monitor.run_background()
        return
    from rich.console import Console

    from .keys import Terminal

    resolver = Resolver() if args.dns else None
    services = Services() if args.services else None
    app = ConsoleApp(monitor, args, opts, resolver, services)
    term = Terminal()
    ui = Console(highlight=False, markup=False, emoji=False)
    real_stderr = sys.stderr
    events = {"winch": False, "tstp": False}

    def on_winch(_s, _f):
        events["winch"] = True

    def on_tstp(_s, _f):
        events["tstp"] = True

    def on_hup(_s, _f):
        monitor.flags.stop = True
        monitor.flags.clean = False

    old = {sig: signal.signal(sig, h) for sig, h in
           ((signal.SIGWINCH, on_winch), (signal.SIGTSTP, on_tstp), (signal.SIGHUP, on_hup))}
    try:
        # Sinks report problems on stderr; over the screen that would garble it. They are
        # shown in the title while the screen is up and printed after it.
        sys.stderr = _Messages(app.messages)
        with term, screen_live(ui) as live:
            _loop(app, monitor, args, term, live, ui, events)
    finally:
        sys.stderr = real_stderr
        for sig, h in old.items():
            signal.signal(sig, h)
        if resolver is not None:
            resolver.close()
        for msg in app.messages:
            print(msg, file=sys.stderr)
    _wind_down(monitor)
    print(app.exit_summary(), flush=True)


def screen_live(ui: Console) -> Live:
    """The rich Live the console draws with: the alternate screen, refreshed only when asked
    (`bench/bench_console.py` measures frames through this too)."""
    return _frame_live_class()(console=ui, screen=True, auto_refresh=False,
                               redirect_stdout=False, redirect_stderr=False)


@functools.cache  # one class, made the first time a screen is drawn (rich loads late)
def _frame_live_class() -> type:
    from rich.live import Live

    class FrameLive(Live):
        """Live on the alternate screen, one pass cheaper. Live wraps what it shows in a
        Screen, whose only job is to crop and pad it to the terminal's size, and then lays
        the result out into lines a second time. A Frame made at the terminal's current
        size has that shape already, so it goes through once: the same bytes reach the
        terminal for about half the drawing time. Anything else (a Frame from before a
        resize, say) still goes through Screen."""

        @property
        def renderable(self):
            shown = self.get_renderable()
            if (self._alt_screen and isinstance(shown, Frame)
                    and (shown.width, shown.height) == tuple(self.console.size)
                    and len(getattr(self.console, "_live_stack", ())) <= 1):
                return shown
            return super().renderable

    return FrameLive


class _Messages:
    """A stand-in for sys.stderr while the screen is up: keeps whole lines."""

    def __init__(self, out: list[str]) -> None:
        self.out = out
        self.part = ""

    def write(self, text: str) -> int:
        self.part += text
        *done, self.part = self.part.split("\n")
        self.out.extend(line for line in done if line.strip())
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _loop(app: ConsoleApp, monitor, args, term, live, ui, events) -> None:
    refresh = max(0.05, args.refresh)
    running = True
    next_frame = 0.0
    while not app.st.quit and not monitor.flags.stop and not term.closed:
        now = time.monotonic()
        if running:
            running = monitor.step(min(KEY_POLL, max(0.005, next_frame - now)))
            if not running:
                app.finished = True
                if monitor.deadline is not None and time.monotonic() >= monitor.deadline:
                    return  # -t: the time is up, as iptraf-ng quits
        app.pump()
        keys = term.read_keys(0.0 if running else min(KEY_POLL, max(0.0, next_frame - now)))
        for k in keys:
            app.key(k)
            if app.st.quit:
                return
        if events["tstp"]:
            events["tstp"] = False
            _suspend(term, live)
            next_frame = 0.0
        now = time.monotonic()
        if keys or events["winch"] or app.redraw or now >= next_frame:
            events["winch"] = False
            if app.redraw:
                app.redraw = False
                ui.clear()
            size = _term_size()
            live.update(app.frame(*size), refresh=True)
            next_frame = now + refresh


def _term_size() -> tuple[int, int]:
    try:
        sz = os.get_terminal_size(sys.stdout.fileno())
        return sz.columns, sz.lines
    except OSError:
        return 80, 24


def _suspend(term, live) -> None:
    """Ctrl-Z: give the terminal back as it was, stop, and take it again on `fg`."""
    live.stop()
    term.restore()
    old = signal.signal(signal.SIGTSTP, signal.SIG_DFL)
    try:
        os.kill(os.getpid(), signal.SIGTSTP)  # stops here until SIGCONT
    finally:
        signal.signal(signal.SIGTSTP, old)
        term.enter()
        live.start(refresh=False)


def _wind_down(monitor) -> None:
    """After a quit: stop the run and let it publish what it still holds (pairs retire,
    the JSON, log and store get their last records), for a few seconds at most."""
    monitor.run.stop()
    start = time.monotonic()
    told = False
    while time.monotonic() < start + STOP_GRACE and monitor.step(0.1):
        if not told and time.monotonic() > start + 0.5:
            told = True  # the screen is gone: say why nothing happens yet
            print("iptraf-mp: stopping...", file=sys.stderr, flush=True)
