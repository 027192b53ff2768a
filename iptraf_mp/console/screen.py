"""The IP traffic monitor's screen: a pure function of (view state, snapshot, terminal size).

`render()` reads only the rows that are on screen (the TCP table's display list is already
in screen order, so a row is one index), so a frame costs the same with a thousand
connections or a million. The result is a `Frame`: plain text rows (what the tests read)
plus style spans, which rich draws through `__rich_console__` as raw segments — no markup is
ever parsed, and every packet-derived string has been reduced to printable ASCII first, so
neither markup nor escape sequences from the network reach the terminal.

Layout (rows), after iptraf-ng's (`iptraf-ng-screens.md`), at any size from 80x24 up:
    0            title: program, what is watched, PAUSED / end of recording
    1..          TCP window: border with column names, one row per direction, border with
                 "TCP: N entries" (and "Active" when it has the keys)
    ..H-5        lower window: one line per non-TCP packet; border with scroll position,
                 elapsed time and drops (kernel, queue)
    H-4, H-3     summary (rule 14): bytes and packets of IP, TCP, UDP, ICMP, other IP, non-IP
    H-2          packets captured, the highlighted direction's flow rate (rule 12)
    H-1          help line (keys)
Extra width goes first to the number and interface columns (up to iptraf-ng's 16 for the
interface), then all of it to the host column.

Rule numbers cited here are docs/decisions.md's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from iptraf_mp.core.engine import Summary
from iptraf_mp.core.lines import LineOptions, fmt_rate, screen_line
from iptraf_mp.core.model import fmt_addr, fmt_mac
from iptraf_mp.core.othertable import OtherLine
from iptraf_mp.core.tcptable import Entry, Pair, flag_column
from iptraf_mp.core.text import escape_char, safe_text

from .history import TrafficHistory, chart_rows, fmt_bits, spark
from .view import LOWER, TCP, VIEW_MAC, VIEW_SIZES, ViewState

# Below this (or MIN_HEIGHT) the screen only says it is too small, as iptraf-ng refuses to
# run smaller: narrower, the columns would show misleading figures ("IP 0M" for 260 kB).
MIN_WIDTH = 80
MIN_HEIGHT = 24
HOST_FULL = 45  # "ffff:...:ffff" (39) + ":" + port (5): IPv6 is never cut at 80 columns
FLAG_W = 7  # "TIMEOUT"

TITLE_TCP = " TCP Connections (Source Host:Port) "
SORT_BOX = ("Select sort criterion", "P - sort by packet count", "B - sort by byte count",
            "Any other key - cancel sort")
HELP_TEXT = (
    ("Up/Down", "move the bar (TCP) or scroll one line (lower)"),
    ("PgUp/PgDn - space", "one page up / down"),
    ("Home/End", "first / last row"),
    ("W or Tab", "switch the active window"),
    ("Left/Right", "lower window: scroll sideways"),
    ("M", "TCP columns: counts, source MAC (--mac), sizes"),
    ("G", "lower window: its lines, or traffic over time"),
    ("S then P or B", "sort by packets or bytes (other key: cancel)"),
    ("F", "remove closed, reset and timed-out connections"),
    ("P", "pause the display (counting goes on)"),
    ("Ctrl-L", "redraw the screen"),
    ("Q, X, Esc, Ctrl-X", "quit"),
    ("?", "this help (any key closes it)"),
)


@dataclass(slots=True)
class Snapshot:
    """What the screen shows, as the console collected it for this frame."""

    pairs: Sequence[Pair] = ()  # the TCP window's pairs in screen order (two rows each)
    lines: Sequence[OtherLine] = ()  # the lower window, newest last
    summary: Summary = field(default_factory=Summary)
    kernel_drops: int = 0
    queue_drops: int = 0  # packets the capture side could not hand to a shard
    elapsed: float = 0.0  # seconds
    rate: float | None = None  # highlighted direction, bytes/s; None: no TCP entries
    source: str = ""  # what is watched, for the title
    notice: str = ""  # a one-line message for the title (end of recording, errors)
    names: Mapping[bytes, str] = field(default_factory=dict)  # known host names (sanitised)
    services: Callable[[int, str], str] | None = None  # port -> service name
    show_mac: bool = False  # the source-MAC option (lower-window lines show MACs)
    kbytes: bool = False  # activity mode kB/s
    history: TrafficHistory | None = None  # bits/s over time, for the graph (G)
    flow_rates: Sequence[float] = ()  # the highlighted direction's recent rates, bytes/s


@dataclass(frozen=True, slots=True)
class Columns:
    """x positions (screen columns) of the TCP window's fields."""

    host_w: int
    pk_w: int
    by_w: int
    if_w: int

    @property
    def x_mark(self) -> int:
        return 2 + self.host_w

    @property
    def x_pk(self) -> int:
        return self.x_mark + 1

    @property
    def x_by(self) -> int:
        return self.x_pk + self.pk_w + 1

    @property
    def x_flag(self) -> int:
        return self.x_by + self.by_w + 1

    @property
    def x_if(self) -> int:
        return self.x_flag + FLAG_W + 1


def columns(width: int) -> Columns:
    inner = width - 2
    pk, by, ifw = 7, 8, 6  # at 80 columns: a 17-character MAC fits over marker+counts
    host = inner - (1 + 1 + pk + 1 + by + 1 + FLAG_W + 1 + ifw)
    extra = host - HOST_FULL
    if extra > 0:
        host = HOST_FULL
        for grow, cap in (("ifw", 7), ("pk", 10), ("by", 13), ("ifw", 16)):
            cur = ifw if grow == "ifw" else pk if grow == "pk" else by
            add = max(0, min(extra, cap - cur))
            extra -= add
            if grow == "ifw":
                ifw += add
            elif grow == "pk":
                pk += add
            else:
                by += add
        host += extra
    return Columns(max(8, host), pk, by, ifw)


@dataclass(frozen=True, slots=True)
class Layout:
    width: int
    height: int
    tcp_border: int  # row of the TCP window's top border
    tcp_rows: int  # rows inside it (one per direction)
    lower_border: int
    lower_rows: int
    cols: Columns
    too_small: bool = False

    @property
    def bytes_row(self) -> int:
        return self.height - 4

    @property
    def status_row(self) -> int:
        return self.height - 2

    @property
    def help_row(self) -> int:
        return self.height - 1


def layout(width: int, height: int) -> Layout:
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        return Layout(width, height, 1, 1, 1, 1, columns(max(width, MIN_WIDTH)), True)
    inner = height - 9  # title, 4 box borders, 2 summary rows, status, help
    lower = max(2, inner * 3 // 10)
    tcp = inner - lower
    if tcp & 1:  # whole pairs: a ┌ row never without its └ partner
        tcp -= 1
        lower += 1
    return Layout(width, height, 1, tcp, tcp + 3, lower, columns(width))


def fmt_num(n: int, width: int) -> str:
    """Exact when it fits, else iptraf-ng's k/M/G/T (whole thousands, millions, ...)."""
    s = str(n)
    if len(s) <= width:
        return s
    for div, suffix in ((10**3, "k"), (10**6, "M"), (10**9, "G"), (10**12, "T"), (10**15, "P")):
        s = f"{n // div}{suffix}"
        if len(s) <= width:
            return s
    return "#" * width


def fmt_elapsed(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# A frame's rows hold one character per column: a wide character (CJK, most emoji) is
# followed by WIDE_PAD, which takes its second column and is dropped when the row is drawn.
WIDE_PAD = "\x00"  # never in a row otherwise: safe_text() escapes every control character


def safe(text: str) -> str:
    """Text for the screen: the one sanitiser (text.safe_text), then one character per
    column (a wide character and WIDE_PAD; a zero-width one, such as a combining mark,
    shown as its escape so that no column shifts)."""
    if text.isascii() and text.isprintable():
        return text
    text = safe_text(text)
    if text.isascii():
        return text
    from rich.cells import get_character_cell_size

    out = []
    for c in text:
        if c < "\x80":
            out.append(c)
            continue
        w = get_character_cell_size(c)
        out.append(c if w == 1 else c + WIDE_PAD if w == 2 else escape_char(c))
    return "".join(out)


def _clip(text: str, n: int) -> str:
    """The first n columns of `text`: a wide character whose pad is cut off becomes a
    space (it would take a column past the clip)."""
    if len(text) <= n:
        return text
    if text[n] == WIDE_PAD:
        return text[: n - 1] + " "
    return text[:n]


# ---- the frame ------------------------------------------------------------------------------

class Frame:
    """width x height characters: `rows` (plain text) and style spans per row."""

    __slots__ = ("width", "height", "rows", "spans")

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.rows = [" " * width] * height
        self.spans: list[list[tuple[int, int, str]]] = [[] for _ in range(height)]

    def put(self, y: int, x: int, text: str, style: str | None = None) -> None:
        """Write `text` at (x, y), clipped to the frame; a later style wins where spans
        overlap."""
        w = self.width
        if not 0 <= y < self.height or x >= w or not text:
            return
        if x < 0:
            text = text[-x:]
            x = 0
            if text[0] == WIDE_PAD:
                text = " " + text[1:]
        text = _clip(text, w - x)
        row = self.rows[y]
        left, right = row[:x], row[x + len(text):]
        if right[:1] == WIDE_PAD:  # the right half of a wide character was overwritten
            right = " " + right[1:]
        if row[x:x + 1] == WIDE_PAD:  # and here its left half
            left = left[:-1] + " "
        self.rows[y] = left + text + right
        if style:
            self.spans[y].append((x, x + len(text), style))

    def boxed(self, y: int, text: str) -> None:
        """Row y becomes a window's row: its two borders and `text` from column 1, in one
        write. The same as put() of both borders and then of `text` on a blank row, for a
        fraction of the cost (a window's rows are most of a frame's writes); a text that
        reaches the last column covers the right border, as put() would."""
        w = self.width
        if not 0 <= y < self.height or w < 2:
            for x, part in ((0, "│"), (w - 1, "│"), (1, text)):
                self.put(y, x, part)
            return
        text = _clip(text, w - 1)
        if len(text) < w - 1:
            text = text + " " * (w - 2 - len(text)) + "│"
        self.rows[y] = "│" + text

    def style(self, y: int, x0: int, x1: int, style: str) -> None:
        if 0 <= y < self.height and x0 < x1:
            self.spans[y].append((max(0, x0), min(self.width, x1), style))

    def text(self) -> list[str]:
        """The rows as a terminal shows them (wide characters' pads dropped)."""
        return [r.replace(WIDE_PAD, "") for r in self.rows]

    def runs(self, y: int) -> list[tuple[str, str | None]]:
        """Row y as (text, style) runs; where spans overlap the later one wins."""
        row = self.rows[y]
        spans = self.spans[y]
        if not spans:
            return [(row, None)]
        cuts = sorted({0, self.width, *(s for s, _e, _st in spans), *(e for _s, e, _st in spans)})
        out: list[tuple[str, str | None]] = []
        for a, b in zip(cuts, cuts[1:], strict=False):
            if a >= b:
                continue
            st = None
            for s, e, name in spans:
                if s <= a and b <= e:
                    st = name
            if out and out[-1][1] == st:
                out[-1] = (out[-1][0] + row[a:b], st)
            else:
                out.append((row[a:b], st))
        return out

    def __rich_console__(self, console, options):
        from rich.segment import Segment

        # Most rows are the same from one frame to the next (borders, help, idle connections,
        # the lower window): their segments are made once and reused, and rich measures a
        # string it has seen before from its cache.
        cache = _SEGMENTS
        styles = rich_styles()
        out: list = []
        rows, spans = self.rows, self.spans
        for y in range(self.height):
            key = (rows[y], tuple(spans[y]))
            segs = cache.get(key)
            if segs is None:
                if len(cache) >= SEGMENT_CACHE_ROWS:
                    cache.clear()
                segs = cache[key] = [Segment(text.replace(WIDE_PAD, ""),
                                             styles.get(name) if name else None)
                                     for text, name in self.runs(y)]
            out += segs
            out.append(_NEWLINE)
        if out:
            out.pop()  # no newline after the last row: the screen must not scroll
        return out


SEGMENT_CACHE_ROWS = 4096  # rows whose rich segments are kept (a few screens' worth)
_SEGMENTS: dict[tuple, list] = {}
_NEWLINE = None  # rich's Segment.line(), made on first use (rich loads only for a screen)
_RICH_STYLES: dict | None = None


def rich_styles() -> dict:
    global _RICH_STYLES, _NEWLINE
    if _RICH_STYLES is None:
        from rich.segment import Segment
        from rich.style import Style

        _NEWLINE = Segment.line()

        _RICH_STYLES = {
            "title": Style(reverse=True, bold=True),
            "label": Style(bold=True),
            "bracket": Style(color="green", bold=True),
            "bar": Style(reverse=True),
            "closed": Style(dim=True),
            "active": Style(bold=True, color="yellow"),
            "box": Style(bold=True, color="white", bgcolor="blue"),
            "key": Style(bold=True),
            "warn": Style(bold=True, color="red"),
            "chart": Style(color="cyan"),
            "spark": Style(color="green"),
        }
    return _RICH_STYLES


# ---- rendering ------------------------------------------------------------------------------

def render(st: ViewState, snap: Snapshot, width: int, height: int) -> Frame:
    """The whole screen. Reads only the TCP rows and lower lines that are visible."""
    lay = layout(width, height)
    f = Frame(width, height)
    if lay.too_small:
        for y, line in enumerate((f"Terminal too small ({width}x{height}):",
                                  f"iptraf-mp needs {MIN_WIDTH}x{MIN_HEIGHT}.",
                                  "Make it larger, or Q quits.")):
            f.put(y, 0, line)
        return f
    _title(f, st, snap)
    _tcp_window(f, lay, st, snap)
    _lower_window(f, lay, st, snap)
    _summary(f, lay, snap.summary)
    _status(f, lay, snap)
    _help_line(f, lay, st)
    if st.sort_pending:
        _box(f, lay.tcp_border + 1, lay.tcp_rows, SORT_BOX[0], list(SORT_BOX[1:]))
    if st.help:
        items = [f"{k:<18} {v}" for k, v in HELP_TEXT]
        _box(f, 1, height - 2, "Keys", items)
    return f


def _title(f: Frame, st: ViewState, snap: Snapshot) -> None:
    from iptraf_mp import __version__

    f.put(0, 0, " " * f.width, "title")
    right = []
    if snap.notice:
        right.append(safe(snap.notice))
    if st.paused:
        right.append("PAUSED (P resumes)")
    rtext = " │ " + "  ".join(right) + " " if right else ""
    if len(rtext) > f.width // 2 + 10:
        rtext = _clip(rtext, f.width // 2 + 9) + "…"
    left = f" iptraf-mp {__version__}  {safe(snap.source)}"
    room = f.width - len(rtext)
    if len(left) > room:  # the file name gives way, cut where it shows it is cut
        left = _clip(left, max(0, room - 1)) + "…"
    f.put(0, 0, left, "title")
    if rtext:
        f.put(0, f.width - len(rtext), rtext, "title")


def _border(f: Frame, y: int, top: bool) -> None:
    left, right = ("┌", "┐") if top else ("└", "┘")
    f.put(y, 0, left + "─" * (f.width - 2) + right)


def _active_tag(f: Frame, y: int) -> None:
    f.put(y, f.width - 10, " Active ", "active")


def tcp_row_entry(pairs: Sequence[Pair], row: int) -> tuple[Pair, Entry]:
    pair = pairs[row >> 1]
    return pair, (pair.b if row & 1 else pair.a)


def _tcp_window(f: Frame, lay: Layout, st: ViewState, snap: Snapshot) -> None:
    c = lay.cols
    top = lay.tcp_border
    bottom = top + lay.tcp_rows + 1
    _border(f, top, True)
    f.put(top, 1, TITLE_TCP, "label")
    if st.columns == VIEW_MAC:
        f.put(top, c.x_mark, " Source MAC Addr ", "label")
    elif st.columns == VIEW_SIZES:
        if c.pk_w >= 9:
            f.put(top, c.x_by - 10, " Pkt Size ", "label")
            f.put(top, c.x_flag - 10, " Win Size ", "label")
        else:  # at 80 columns "Pkt Size" is wider than its column
            f.put(top, c.x_by - 6, " Size ", "label")
            f.put(top, c.x_flag - 8, " Window ", "label")
    else:
        f.put(top, c.x_by - 9, " Packets ", "label")
        f.put(top, c.x_flag - 7, " Bytes ", "label")
    f.put(top, c.x_flag - 1, " Flag ", "label")
    f.put(top, c.x_if - 1, " Iface ", "label")
    _border(f, bottom, False)
    pairs = snap.pairs
    f.put(bottom, 1, f" TCP: {len(pairs):6d} entries ", "label")
    if st.active == TCP:
        _active_tag(f, bottom)
    nrows = 2 * len(pairs)
    first = st.top
    names = snap.names
    services = snap.services
    for i in range(lay.tcp_rows):
        y = top + 1 + i
        row = first + i
        if row >= nrows:
            f.boxed(y, "")
            continue
        pair, e = tcp_row_entry(pairs, row)
        f.boxed(y, _tcp_text(pair, e, row & 1, st.columns, c, names, services))
        f.style(y, 1, 2, "bracket")
        if row == st.bar:
            f.style(y, 1, f.width - 1, "bar")
        elif pair.closed:
            f.style(y, 2, f.width - 1, "closed")


def host_port(addr: bytes, port: int, width: int, names: Mapping[bytes, str],
              services: Callable[[int, str], str] | None) -> str:
    """`host:port` in `width` characters; a long name is cut, never the port."""
    host = names.get(addr) or fmt_addr(addr)
    ptext = services(port, "tcp") if services is not None else str(port)
    host, ptext = safe(host), safe(ptext)
    room = width - len(ptext) - 1
    if len(host) > room:
        host = host[:max(0, room)]
    return f"{host}:{ptext}"


def _tcp_text(pair: Pair, e: Entry, lower: int, view: int, c: Columns,
              names: Mapping[bytes, str], services) -> str:
    bracket = "└" if lower else "┌"
    hp = host_port(e.src, e.sport, c.host_w, names, services)
    if view == VIEW_MAC:
        span = 1 + c.pk_w + 1 + c.by_w
        mac = fmt_mac(e.smac) or "N/A"
        # at 80 columns the MAC takes the whole span; wider, it gets a space before it
        middle = (f" {mac}" if span > len(mac) else mac).ljust(span)[:span]
    elif view == VIEW_SIZES:
        middle = f" {fmt_num(e.last_size, c.pk_w):>{c.pk_w}} {fmt_num(e.window, c.by_w):>{c.by_w}}"
    else:
        mark = ">" if pair.partial else " "
        middle = (f"{mark}{fmt_num(e.packets, c.pk_w):>{c.pk_w}} "
                  f"{fmt_num(e.bytes, c.by_w):>{c.by_w}}")
    iface = safe(pair.iface)[:c.if_w]
    return (f"{bracket}{hp:<{c.host_w}}{middle} {flag_column(pair, e):<{FLAG_W}} "
            f"{iface:<{c.if_w}}")


def lower_range(st: ViewState, nlines: int, page: int) -> tuple[int, int]:
    """[first, end) of the lower-window lines on screen."""
    if st.lower_top is None:
        first = max(0, nlines - page)
    else:
        first = max(0, min(st.lower_top, max(0, nlines - page)))
    return first, min(nlines, first + page)


def _lower_window(f: Frame, lay: Layout, st: ViewState, snap: Snapshot) -> None:
    top = lay.lower_border
    bottom = top + lay.lower_rows + 1
    _border(f, top, True)
    _border(f, bottom, False)
    if st.graph:
        _graph(f, top + 1, lay.lower_rows, snap.history)
        f.put(bottom, 1, " Traffic over time (G: lines) ", "label")
        f.put(bottom, 33, f" Time: {fmt_elapsed(snap.elapsed)} ", "label")
        if st.active == LOWER:
            _active_tag(f, bottom)
        return
    lines = snap.lines
    first, end = lower_range(st, len(lines), lay.lower_rows)
    names = snap.names
    opts = LineOptions(show_mac=snap.show_mac, kbytes=snap.kbytes,
                       resolve=(lambda a: names.get(a) or fmt_addr(a)) if names else None,
                       services=snap.services)
    inner = f.width - 2
    for i in range(lay.lower_rows):
        y = top + 1 + i
        n = first + i
        if n < end:
            text = safe(screen_line(lines[n], opts))[st.lower_hoff:]
            f.boxed(y, (" " + text)[:inner])
        else:
            f.boxed(y, "")
    if len(lines) <= lay.lower_rows or first == 0 and st.lower_top is not None:
        where = " Top "  # as iptraf-ng says until the window has filled
    elif st.lower_top is None or end >= len(lines):
        where = " Bottom "
    else:
        where = f" {first + 1}-{end} of {len(lines)} "
    f.put(bottom, 1, where, "label")
    f.put(bottom, 15, f" Time: {fmt_elapsed(snap.elapsed)} ", "label")
    drops = (f" Drops: {fmt_num(snap.kernel_drops, 9)} kernel, "
             f"{fmt_num(snap.queue_drops, 9)} queue ")
    warn = "warn" if snap.kernel_drops or snap.queue_drops else "label"
    x = 33
    f.put(bottom, x, drops[: max(0, f.width - 11 - x)], warn)
    if st.active == LOWER:
        _active_tag(f, bottom)


def _graph(f: Frame, y0: int, rows: int, hist: TrafficHistory | None) -> None:
    """Bits/s of all interfaces as a chart, then a sparkline row per interface (the
    busiest first, as many as fit), a column per second of packet time, newest right."""
    inner = f.width - 2
    for i in range(rows):
        f.boxed(y0 + i, "")
    if hist is None or not hist.total:
        f.put(y0, 2, "waiting for the first seconds of traffic")
        return
    label_w = 24  # " eth0    123.4 Mbit/s "
    cols = inner - label_w - 1
    ifaces = sorted(hist.by_iface.items(), key=lambda kv: (-kv[1][-1], kv[0]))
    n_if = min(len(ifaces), max(0, rows - 3)) if len(ifaces) > 1 else 0
    chart_h = max(1, rows - n_if)
    total = list(hist.total)[-cols:]
    peak = max(total)
    f.put(y0, 2, f"all {fmt_bits(total[-1]):>12}", "key")
    f.put(y0 + 1, 2, f"peak {fmt_bits(peak):>11}")
    if chart_h > 2:
        f.put(y0 + 2, 2, f"{len(total)} s shown")
    x = 1 + label_w + (cols - len(total))
    for i, row in enumerate(chart_rows(total, chart_h, peak)):
        f.put(y0 + i, x, row, "chart")
    for j, (name, series) in enumerate(ifaces[:n_if]):
        y = y0 + chart_h + j
        values = list(series)[-cols:]
        f.put(y, 2, f"{safe(name)[:9]:<9} {fmt_bits(values[-1]):>12}")
        f.put(y, 1 + label_w + (cols - len(values)), spark(values, peak), "spark")


def _summary(f: Frame, lay: Layout, s: Summary) -> None:
    cats = (("IP", s.ip), ("TCP", s.tcp), ("UDP", s.udp), ("ICMP", s.icmp),
            ("other", s.other_ip), ("non-IP", s.non_ip))
    prefix = 10  # " Packets  "
    labels = sum(len(name) + 1 for name, _c in cats)
    gaps = 2 * (len(cats) - 1)
    vw = max(3, (f.width - 1 - prefix - labels - gaps) // len(cats))
    for y, title, attr in ((lay.bytes_row, " Bytes", "bytes"),
                           (lay.bytes_row + 1, " Packets", "packets")):
        f.put(y, 0, title, "label")
        x = prefix
        for name, cnt in cats:
            f.put(y, x, name, "key")
            f.put(y, x + len(name) + 1, f"{fmt_num(getattr(cnt, attr), vw):<{vw}}")
            x += len(name) + 1 + vw + 2


def _status(f: Frame, lay: Layout, snap: Snapshot) -> None:
    y = lay.status_row
    w = f.width
    f.put(y, 1, "Packets captured:", "label")
    num = str(snap.summary.frames)
    bar_x = 45 * w // 80
    f.put(y, max(19, bar_x - 2 - len(num)), num)
    f.put(y, bar_x, "│")
    if snap.rate is None:
        f.put(y, bar_x + 2, "No TCP entries")
    else:
        f.put(y, bar_x + 2, "TCP flow rate: ", "label")
        text = fmt_rate(snap.rate, snap.kbytes).strip()
        f.put(y, bar_x + 17, text)
        room = w - (bar_x + 18 + len(text)) - (23 if snap.summary.malformed and w >= 100
                                                 else 1)
        if snap.flow_rates and room >= 4:
            f.put(y, bar_x + 18 + len(text), spark(list(snap.flow_rates)[-room:]), "spark")
    if snap.summary.malformed and w >= 100:
        f.put(y, w - 22, f"malformed: {fmt_num(snap.summary.malformed, 10)}")


def _help_line(f: Frame, lay: Layout, st: ViewState) -> None:
    if st.sort_pending:
        items = ["P-sort by packets", "B-sort by bytes", "any other key-cancel"]
    elif st.help:
        items = ["any key-close help"]
    else:
        paused = "P-resume" if st.paused else "P-pause"
        full = ["Up/Dn/PgUp/PgDn-scroll",
                "M-more TCP info" if st.active == TCP else "Lft/Rt-vtcl scrl",
                "W-chg actv win", "S-sort TCP", "F-flush", paused, "?-help", "X-exit"]
        compact = ["Up/Dn/PgUp/PgDn-scrl", "M-more" if st.active == TCP else "Lft/Rt-scrl",
                   "W-window", "S-sort", "F-flush", paused, "?-help", "X-exit"]
        # every key, in full if it fits, else in the compact words; two spaces between
        # items, then one; at the very narrowest, what fits of the compact ones
        items, lead, sep = compact, "", " "
        found = False
        for words in (full, compact):
            for lead_, sep_ in ((" ", "  "), (" ", " ")):
                if len(lead_) + sum(map(len, words)) + len(sep_) * (len(words) - 1) \
                        <= f.width - 1:
                    items, lead, sep = words, lead_, sep_
                    found = True
                    break
            if found:
                break
        if not found:
            used, chosen = 0, []
            for item in compact:
                if used + len(item) + (1 if chosen else 0) <= f.width - 1:
                    chosen.append(item)
                    used += len(item) + (1 if len(chosen) > 1 else 0)
            items = chosen
    if st.sort_pending or st.help:
        lead, sep = " ", "  "
    text = lead
    keys: list[tuple[int, int]] = []
    for item in items:
        if len(text) > len(lead):
            text += sep
        if not item.startswith("any"):
            keys.append((len(text), len(text) + len(item.split("-", 1)[0])))
        text += item
    f.put(lay.help_row, 0, text)
    for x0, x1 in keys:
        f.style(lay.help_row, x0, x1, "key")


def _box(f: Frame, y0: int, rows: int, title: str, items: list[str]) -> None:
    """A centred box over the rows [y0, y0+rows)."""
    w = min(f.width - 4, max(len(title) + 4, *(len(i) + 4 for i in items)))
    h = len(items) + 2
    x = (f.width - w) // 2
    y = y0 + max(0, (rows - h) // 2)
    f.put(y, x, "┌" + f" {title} ".center(w - 2, "─")[: w - 2] + "┐", "box")
    for i, item in enumerate(items):
        f.put(y + 1 + i, x, "│ " + item.ljust(w - 4)[: w - 4] + " │", "box")
    f.put(y + h - 1, x, "└" + "─" * (w - 2) + "┘", "box")
