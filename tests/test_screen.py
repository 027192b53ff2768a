"""The console screen as a pure function of (view state, snapshot, size), the keys, the
options file, name resolution and escaping. No terminal is needed: frames are
rendered to text at 80x24 and 160x50 and read back.
"""

from __future__ import annotations

import argparse
import io
import os
import pty
import socket
import termios
import threading
import time
from pathlib import Path

import pytest

from iptraf_mp.console import config
from iptraf_mp.console.app import ConsoleApp, FrozenPairs
from iptraf_mp.console.keys import KeyParser, Terminal
from iptraf_mp.console.resolve import Resolver, Services, safe_name
from iptraf_mp.console.screen import Snapshot, columns, fmt_num, layout, render, safe
from iptraf_mp.console.view import LOWER, TCP, VIEW_MAC, VIEW_SIZES, ViewState, handle_key
from iptraf_mp.core.engine import Counter, Summary
from iptraf_mp.core.lines import LineOptions, screen_line
from iptraf_mp.core.merge import Merger
from iptraf_mp.core.model import K_UDP, Decoded
from iptraf_mp.core.othertable import OtherLine
from iptraf_mp.core.tcptable import Entry, Pair

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "fixtures" / "demo.pcapng"
HOSTILE = "[red]x\x1b]0;pwned\x07"
SIZES = [(80, 24), (160, 50)]
SYN, PSH, ACK = 0x02, 0x08, 0x10
LONG6 = "fd12:3456:789a:bcde:f012:3456:789a:bcde"  # 39 characters


def ip(a: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a)


def mkpair(pid: int, a=("10.0.0.1", 1234), b=("10.0.0.2", 80), pa=(3, 180), pb=(2, 120),
           iface="eth0", partial=False, closed=False, flags=(PSH | ACK, ACK),
           finsent=(0, 0), reset=(False, False), timed_out=False, mac=(None, None),
           sizes=((60, 1000), (40, 2000))) -> Pair:
    ea = Entry(ip(a[0]), a[1], ip(b[0]), b[1], packets=pa[0], bytes=pa[1], flags=flags[0],
               finsent=finsent[0], reset=reset[0], smac=mac[0], last_size=sizes[0][0],
               window=sizes[0][1])
    eb = Entry(ip(b[0]), b[1], ip(a[0]), a[1], packets=pb[0], bytes=pb[1], flags=flags[1],
               finsent=finsent[1], reset=reset[1], smac=mac[1], last_size=sizes[1][0],
               window=sizes[1][1])
    p = Pair(pid, iface, ea, eb, partial, 0.0, 0.0)
    p.closed = closed or timed_out or any(reset) or finsent == (2, 2)
    p.timed_out = timed_out
    return p


def udp_line(n: int, iface: str = "eth0") -> OtherLine:
    d = Decoded(K_UDP, 4, 28 + n, ip("10.0.0.1"), ip("10.0.0.9"), 17, 5000 + n, 53, 0, 0, 0,
                0, 0, 0, 0, None, None, None, False)
    return OtherLine(float(n), iface, d)


def text(st: ViewState, snap: Snapshot, size=(80, 24)) -> list[str]:
    return render(st, snap, *size).text()


def summary(**kw) -> Summary:
    s = Summary()
    for k, (p, b) in kw.items():
        setattr(s, k, Counter(p, b))
    return s


# ---- a console without a terminal: a merger and a run that records what it is asked ----------

class FakeRun:
    def __init__(self, merger: Merger) -> None:
        self.merger = merger
        self.flushes = 0
        self.stats = _Stats()
        self.refresh = 0.25

    def request_flush(self) -> None:
        self.flushes += 1
        self.merger.flush()

    def counters(self):
        return self.stats

    def stop(self) -> None:
        pass


class _Stats:
    kernel_drops = 3
    queue_drops = 1
    queue_dropped_packets = 64
    errors: list[str] = []


class FakeMonitor:
    def __init__(self, merger: Merger) -> None:
        self.merger = merger
        self.run = FakeRun(merger)
        self.started = time.time() - 75
        self.sinks: list = []


def app_with(pairs: list[Pair], lines=(), mac=False, resolver=None, size=(80, 24)):
    m = Merger(1)
    for p in pairs:
        m.pairs[p.id] = p
        m.display.add(p)
    for p in pairs:
        if p.closed:
            m.display.mark_closed(p)
    for ln in lines:
        m.lines.append(ln)
    m.summaries[0] = summary(ip=(10, 1000), tcp=(8, 900), udp=(2, 100))
    m.summaries[0].frames = 12
    args = argparse.Namespace(read=None, iface=["eth0"], write=None, json=None, speed=None)
    app = ConsoleApp(FakeMonitor(m), args, LineOptions(show_mac=mac), resolver=resolver)
    app.size = size
    return app


# ---- geometry --------------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES + [(100, 30), (81, 25), (200, 60)])
def test_every_row_fills_the_terminal_exactly(size):
    pairs = [mkpair(i, pa=(i, i * 100)) for i in range(1, 40)]
    for st in (ViewState(), ViewState(columns=VIEW_SIZES), ViewState(help=True),
               ViewState(sort_pending=True), ViewState(active=LOWER, paused=True)):
        rows = text(st, Snapshot(pairs=pairs, lines=[udp_line(i) for i in range(50)]), size)
        assert len(rows) == size[1]
        assert all(len(r) == size[0] for r in rows)


def test_layout_at_80x24_and_160x50():
    small, big = layout(80, 24), layout(160, 50)
    # whole pairs: an even number of TCP rows (the odd one goes to the lower window)
    assert (small.tcp_rows, small.lower_rows) == (10, 5)
    assert (big.tcp_rows, big.lower_rows) == (28, 13)
    # extra width goes to the host column once the numbers and interface have room
    assert columns(80).host_w == 45 and columns(160).host_w > 100
    assert columns(160).if_w == 16 and columns(80).if_w == 6
    assert layout(40, 10).too_small
    # iptraf-ng's minimum: narrower or shorter, no figures that would mislead
    assert layout(79, 24).too_small and layout(80, 23).too_small and not small.too_small


def test_too_small_terminal_says_so():
    rows = text(ViewState(), Snapshot(), (40, 10))
    assert "too small" in rows[0] and "80x24" in rows[1]


# ---- rows, brackets, markers, columns --------------------------------------------------------

def test_one_row_per_direction_joined_by_brackets_in_screen_order():
    pairs = [mkpair(1, a=("10.0.0.1", 1111)), mkpair(2, a=("10.0.0.3", 2222), partial=True)]
    for size in SIZES:
        rows = text(ViewState(), Snapshot(pairs=pairs), size)
        assert rows[1].startswith("┌ TCP Connections (Source Host:Port) ")
        assert rows[2].startswith("│┌10.0.0.1:1111 ")
        assert rows[3].startswith("│└10.0.0.2:80 ")
        assert rows[4].startswith("│┌10.0.0.3:2222 ")
        assert rows[5].startswith("│└10.0.0.2:80 ")
        assert rows[6].strip("│ ") == ""
        assert " TCP:      2 entries " in rows[layout(*size).tcp_rows + 2]


def test_bracket_is_green_and_bar_highlights_one_row():
    pairs = [mkpair(1), mkpair(2)]
    st = ViewState(bar=1)
    f = render(st, Snapshot(pairs=pairs), 80, 24)
    assert (1, 2, "bracket") in f.spans[2] and (1, 2, "bracket") in f.spans[3]
    assert any(s[2] == "bar" for s in f.spans[3])
    assert not any(s[2] == "bar" for s in f.spans[2])


def test_partial_marker_sits_before_the_packet_count():
    pairs = [mkpair(1, partial=True, pa=(7, 700)), mkpair(2, pa=(5, 500))]
    c = columns(80)
    rows = text(ViewState(), Snapshot(pairs=pairs))
    assert rows[2][c.x_mark] == ">" and rows[3][c.x_mark] == ">"
    assert rows[4][c.x_mark] == " " and rows[5][c.x_mark] == " "
    assert rows[2][c.x_mark + 1:c.x_by].strip() == "7"


@pytest.mark.parametrize("size", SIZES)
def test_numbers_end_under_their_column_names(size):
    rows = text(ViewState(), Snapshot(pairs=[mkpair(1, pa=(4321, 987654))]), size)
    head, row = rows[1], rows[2]
    assert head.index("Packets") + len("Packets") == row.index("4321") + 4
    assert head.index("Bytes") + len("Bytes") == row.index("987654") + 6
    assert head.index("Flag") == row.index("-PA-")
    assert head.index("Iface") == row.index("eth0")


def test_long_ipv6_is_not_cut_at_80_columns_and_names_are_cut_before_the_port():
    p = mkpair(1, a=(LONG6, 65535), b=("2a00:1450:4001:82b::200e", 443), iface="wlan0")
    rows = text(ViewState(), Snapshot(pairs=[p]))
    assert f"┌{LONG6}:65535" in rows[2]
    long_name = "a" * 80 + ".example.org"
    rows = text(ViewState(), Snapshot(pairs=[p], names={ip(LONG6): long_name}))
    assert "┌" + "a" * 39 + ":65535" in rows[2]  # the name is cut, never the port
    rows = text(ViewState(), Snapshot(pairs=[p], names={ip(LONG6): long_name}), (160, 50))
    assert long_name + ":65535" in rows[2]  # the extra width went to the host column


def test_flag_column_shows_flags_or_the_state_word():
    pairs = [mkpair(1, flags=(SYN, SYN | ACK)),
             mkpair(2, reset=(True, False)),
             mkpair(3, finsent=(2, 1)),
             mkpair(4, timed_out=True)]
    rows = text(ViewState(), Snapshot(pairs=pairs))
    flags = [r[columns(80).x_flag:columns(80).x_flag + 7].strip() for r in rows[2:10]]
    assert flags == ["S---", "S-A-", "RESET", "--A-", "CLOSED", "DONE", "TIMEOUT", "TIMEOUT"]


def test_big_counts_shrink_to_k_m_g_at_80_columns_and_stay_exact_when_wide():
    p = mkpair(1, pa=(123_456_789, 98_765_432_100))
    rows80 = text(ViewState(), Snapshot(pairs=[p]))
    assert "123456k" in rows80[2] and "98765M" in rows80[2]
    rows160 = text(ViewState(), Snapshot(pairs=[p]), (160, 50))
    assert "123456789" in rows160[2] and "98765432100" in rows160[2]
    assert fmt_num(999, 3) == "999" and fmt_num(1000, 3) == "1k" and fmt_num(10**13, 4) == "10T"


def test_only_the_rows_on_screen_are_read():
    class Counting:
        """A million pairs that count how many are looked at."""

        def __init__(self) -> None:
            self.seen: set[int] = set()
            self.pair = mkpair(1)

        def __len__(self) -> int:
            return 1_000_000

        def __getitem__(self, i: int) -> Pair:
            self.seen.add(i)
            return self.pair

    pairs = Counting()
    st = ViewState(bar=1_000_000, top=999_990)
    render(st, Snapshot(pairs=pairs), 160, 50)
    assert len(pairs.seen) <= layout(160, 50).tcp_rows // 2 + 1
    assert " TCP: 1000000 entries " in render(st, Snapshot(pairs=pairs), 80, 24).text()[12]


def test_boxed_row_is_what_the_borders_and_the_text_put_give():
    from iptraf_mp.console.screen import Frame

    for w in (1, 2, 3, 50, 80):
        for n in (0, 1, w - 3, w - 2, w - 1, w, w + 5):
            line = "abcdefghij" * (max(0, n) // 10 + 1)
            line = line[:max(0, n)]
            slow, fast = Frame(w, 3), Frame(w, 3)
            for x, part in ((0, "│"), (w - 1, "│"), (1, line)):
                slow.put(1, x, part)
            fast.boxed(1, line)
            fast.boxed(7, line)  # outside the frame: nothing happens, as with put()
            assert fast.rows == slow.rows, (w, n)


def _draw(frame, live_cls, size) -> str:
    """One frame through a Live on the alternate screen of a 256-colour terminal."""
    from rich.console import Console

    out = io.StringIO()
    con = Console(file=out, width=size[0], height=size[1], force_terminal=True,
                  force_interactive=True, color_system="256", highlight=False, markup=False,
                  emoji=False)
    live = live_cls(con)
    live.start()
    live.update(frame, refresh=True)
    live.update(frame, refresh=True)  # the second time from the cached segments
    live.stop()
    return out.getvalue()


def test_the_consoles_live_draws_exactly_what_richs_own_live_draws():
    """console.screen_live skips rich's Screen pass for a Frame of the terminal's size; the
    bytes sent to the terminal must be the same, also for a Frame of another size (a resize
    between the frame and the drawing), where it goes through Screen as before."""
    from rich.live import Live

    from iptraf_mp.console.app import screen_live

    def plain(con):
        return Live(console=con, screen=True, auto_refresh=False, redirect_stdout=False,
                    redirect_stderr=False)

    pairs = [mkpair(i, pa=(i, i * 100), closed=i % 3 == 0, iface=HOSTILE if i == 2 else "eth0")
             for i in range(1, 30)]
    lines = [udp_line(i, iface=HOSTILE if i == 3 else "eth0") for i in range(20)]
    for st in (ViewState(), ViewState(bar=3, columns=VIEW_SIZES), ViewState(help=True),
               ViewState(sort_pending=True), ViewState(active=LOWER, paused=True)):
        for size in SIZES + [(100, 30)]:
            f = render(st, Snapshot(pairs=pairs, lines=lines, notice=HOSTILE), *size)
            for term in (size, (size[0] + 7, size[1] - 3), (size[0] - 5, size[1] + 2)):
                ours = _draw(f, screen_live, term)
                assert ours == _draw(f, plain, term), (st, size, term)
                assert "\x1b]" not in ours and "\x07" not in ours


def test_the_row_segment_cache_stays_bounded(monkeypatch):
    from iptraf_mp.console import screen
    from iptraf_mp.console.app import screen_live

    monkeypatch.setattr(screen, "SEGMENT_CACHE_ROWS", 30)
    first = None
    for i in range(40):  # each frame has new rows: a count and the elapsed time change
        f = render(ViewState(), Snapshot(pairs=[mkpair(1, pa=(i, i))], elapsed=i), 80, 24)
        drawn = _draw(f, screen_live, (80, 24))
        assert len(screen._SEGMENTS) <= 30
        if first is None:
            first = (f, drawn)
    assert _draw(first[0], screen_live, (80, 24)) == first[1]  # dropped, made again, same


# ---- M, S, F, W, P, ?, movement --------------------------------------------------------------

def test_m_cycles_counts_sizes_and_mac_only_with_the_option():
    p = mkpair(1, mac=(bytes.fromhex("020000000001"), None), sizes=((1500, 64240), (52, 501)))
    snap = Snapshot(pairs=[p])
    st = ViewState()
    handle_key(st, "M", 2, 11, 0, 4)
    assert st.columns == VIEW_SIZES
    rows = text(st, snap)
    assert "Size" in rows[1] and "Window" in rows[1] and "Packets" not in rows[1]
    assert "1500" in rows[2] and "64240" in rows[2] and "501" in rows[3]
    rows = text(st, snap, (160, 50))
    assert "Pkt Size" in rows[1] and "Win Size" in rows[1]
    st = ViewState(mac_option=True)
    handle_key(st, "M", 2, 11, 0, 4)
    assert st.columns == VIEW_MAC
    rows = text(st, snap)
    assert "Source MAC Addr" in rows[1]
    assert "02:00:00:00:00:01" in rows[2] and "N/A" in rows[3]
    # the MAC fits at 80 columns next to a full-width IPv6 address
    p6 = mkpair(2, a=(LONG6, 65535), mac=(bytes.fromhex("0250b6a1c3d4"), None))
    row = text(st, Snapshot(pairs=[p6]))[2]
    assert f"{LONG6}:65535" in row and "02:50:b6:a1:c3:d4 -PA-" in row


def test_s_shows_the_sort_box_then_b_sorts_by_bytes():
    small = mkpair(1, a=("10.0.0.1", 1), pa=(50, 500), pb=(1, 40))
    big = mkpair(2, a=("10.0.0.1", 2), pa=(2, 90_000), pb=(3, 100))
    app = app_with([small, big])
    app.key("S")
    rows = app.frame(80, 24).text()
    box = "\n".join(rows)
    for line in ("Select sort criterion", "P - sort by packet count", "B - sort by byte count",
                 "Any other key - cancel sort"):
        assert line in box
    assert "P-sort by packets" in rows[-1]
    app.key("B")
    rows = app.frame(80, 24).text()
    assert "Select sort criterion" not in "\n".join(rows)
    assert rows[2].startswith("│┌10.0.0.1:2 ")
    app.key("S")
    app.key("P")
    assert app.frame(80, 24).text()[2].startswith("│┌10.0.0.1:1 ")
    app.key("S")
    app.key("x")  # any other key cancels and changes nothing (it does not quit either)
    assert not app.st.quit and app.frame(80, 24).text()[2].startswith("│┌10.0.0.1:1 ")


def test_f_flushes_closed_reset_and_timed_out_rows():
    app = app_with([mkpair(1), mkpair(2, reset=(True, False)), mkpair(3, timed_out=True),
                    mkpair(4, a=("10.0.0.7", 7))])
    assert " TCP:      4 entries " in app.frame(80, 24).text()[12]
    app.key("F")
    rows = app.frame(80, 24).text()
    assert app.monitor.run.flushes == 1
    assert " TCP:      2 entries " in rows[12]
    assert rows[4].startswith("│┌10.0.0.7:7 ")


def test_w_moves_active_and_the_help_line():
    app = app_with([mkpair(1)], lines=[udp_line(i) for i in range(3)])
    rows = app.frame(80, 24).text()
    assert "Active" in rows[12] and "Active" not in rows[19]
    # at 80 columns every key fits in the compact words, P-pause and F-flush included
    for item in ("M-more", "W-window", "S-sort", "F-flush", "P-pause", "?-help", "X-exit"):
        assert item in rows[23], (item, rows[23])
    assert "M-more TCP info" in app.frame(100, 30).text()[29]  # in full where it fits
    app.key("W")
    rows = app.frame(80, 24).text()
    assert app.st.active == LOWER
    assert "Active" not in rows[12] and "Active" in rows[19]
    assert "Lft/Rt-scrl" in rows[23] and "X-exit" in rows[23]
    app.key("TAB")
    assert app.st.active == TCP


def test_bar_moves_and_the_window_scrolls_to_keep_it():
    app = app_with([mkpair(i, a=("10.0.0.1", 1000 + i)) for i in range(1, 21)])  # 40 rows
    f = app.frame(80, 24)
    assert any(s[2] == "bar" for s in f.spans[2])
    for _ in range(11):
        app.key("DOWN")
    f = app.frame(80, 24)
    assert app.st.bar == 11 and app.st.top == 2  # whole pairs: the window starts at one
    assert any(s[2] == "bar" for s in f.spans[11])  # the last TCP row on screen
    app.key("PGDN")
    assert app.st.bar == 21  # a page: the 10 TCP rows of 80x24
    app.key("END")
    rows = app.frame(80, 24).text()
    assert app.st.bar == 39 and rows[11].startswith("│└10.0.0.2:80")
    app.key("HOME")
    assert (app.st.bar, app.st.top) == (0, 0)


def test_lower_window_newest_at_the_bottom_scrolls_back_and_sideways():
    lines = [udp_line(i) for i in range(20)]
    app = app_with([], lines=lines)
    rows = app.frame(80, 24).text()
    assert ":5019 to 10.0.0.9:53" in rows[18] and ":5016 " in rows[15]
    assert " Bottom " in rows[19]
    app.key("W")
    app.key("UP")
    rows = app.frame(80, 24).text()
    assert ":5018 " in rows[18] and " 15-19 of 20 " in rows[19]
    # new lines arrive and the oldest drop off: the view stays on the same lines
    app.merger.lines = type(app.merger.lines)(lines, maxlen=20)
    app.merger.lines.append(udp_line(20))
    app.pump()
    assert ":5018 " in app.frame(80, 24).text()[18]
    app.key("RIGHT")
    shifted = screen_line(app.merger.lines[-4], LineOptions())[60:]
    assert app.frame(80, 24).text()[15].startswith("│" + shifted + " ")
    app.key("LEFT")
    app.key("END")
    rows = app.frame(80, 24).text()
    assert ":5020 " in rows[18] and " Bottom " in rows[19]


def test_p_pauses_the_display_while_counting_goes_on():
    p = mkpair(1, pa=(5, 500))
    app = app_with([p])
    app.key("P")
    p.a.packets, p.a.bytes = 6, 600
    rows = app.frame(80, 24).text()
    assert "PAUSED (P resumes)" in rows[0]
    assert "P-resume" in app.frame(160, 50).text()[49]
    assert rows[2][columns(80).x_pk:columns(80).x_by].strip() == "5"
    app.key("P")
    rows = app.frame(80, 24).text()
    assert "PAUSED" not in rows[0]
    assert rows[2][columns(80).x_pk:columns(80).x_by].strip() == "6"
    frozen = FrozenPairs([p])
    assert frozen[0] is not p and frozen[0].a.packets == 6 and len(frozen) == 1


def test_question_mark_shows_help_and_any_key_closes_it():
    app = app_with([mkpair(1)])
    app.key("?")
    screen = "\n".join(app.frame(80, 24).text())
    for k in ("W or Tab", "S then P or B", "remove closed", "pause the display", "quit"):
        assert k in screen
    app.key("q")  # closes the help only
    assert not app.st.help and not app.st.quit
    app.key("q")
    assert app.st.quit


def test_ctrl_l_asks_for_a_redraw_and_esc_or_x_quit():
    app = app_with([mkpair(1)])
    app.key("CTRL_L")
    assert app.redraw and not app.st.quit
    for k in ("ESC", "x", "CTRL_X", "Q"):
        app.st.quit = False
        app.key(k)
        assert app.st.quit, k


def test_resize_keeps_the_bar_on_screen():
    app = app_with([mkpair(i, a=("10.0.0.1", 1000 + i)) for i in range(1, 31)], size=(160, 50))
    app.frame(160, 50)
    for _ in range(25):
        app.key("DOWN")
    assert app.st.bar == 25 and app.st.top == 0
    rows = app.frame(80, 24).text()
    assert app.st.top == 16 and rows[11].startswith("│└10.0.0.2:80")


# ---- summary and status ----------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES)
def test_summary_rows_have_every_category_bytes_and_packets(size):
    s = summary(ip=(6, 218), tcp=(3, 120), udp=(1, 38), icmp=(1, 28), other_ip=(1, 32),
                non_ip=(1, 60))
    s.frames = 7
    rows = text(ViewState(), Snapshot(summary=s, kernel_drops=5, queue_drops=7, elapsed=3725),
                size)
    h = size[1]
    b, p = rows[h - 4].split(), rows[h - 3].split()
    assert b == ["Bytes", "IP", "218", "TCP", "120", "UDP", "38", "ICMP", "28", "other", "32",
                 "non-IP", "60"]
    assert p == ["Packets", "IP", "6", "TCP", "3", "UDP", "1", "ICMP", "1", "other", "1",
                 "non-IP", "1"]
    assert "Packets captured:" in rows[h - 2] and " 7 " in rows[h - 2]
    assert "No TCP entries" in rows[h - 2]
    lower_bottom = rows[h - 5]
    assert "Time: 1:02:05" in lower_bottom and "Drops: 5 kernel, 7 queue" in lower_bottom


def test_huge_summary_counts_still_fit_at_80_columns():
    s = summary(**{k: (10**12, 10**15) for k in ("ip", "tcp", "udp", "icmp", "other_ip",
                                                  "non_ip")})
    rows = text(ViewState(), Snapshot(summary=s))
    assert rows[20].split()[-1] == "1000T" and rows[21].split()[-1] == "1000G"


def test_flow_rate_of_the_highlighted_direction_in_kbits_or_kbytes():
    snap = Snapshot(pairs=[mkpair(1)], rate=1000.0)
    assert "TCP flow rate: 8.00 kbps" in text(ViewState(), snap)[22]
    snap.kbytes = True
    assert "TCP flow rate: 0.98 kBps" in text(ViewState(), snap)[22]


def test_console_samples_the_rate_of_the_highlighted_direction():
    p = mkpair(1, pa=(1, 0), pb=(1, 0))
    app = app_with([p])
    app.key("DOWN")  # the b direction
    for sec in range(10):
        app.merger.clock[0] = 100.0 + sec
        p.b.bytes += 1000
        p.a.bytes += 5
        app.frame(80, 24)
    assert "TCP flow rate: 8.00 kbps" in app.frame(80, 24).text()[22]


# ---- names and hostile text ------------------------------------------------------------------

def test_hostile_ptr_name_reaches_the_screen_escaped():
    res = Resolver(lookup=lambda a: HOSTILE if a == "10.0.0.1" else None, workers=1)
    try:
        app = app_with([mkpair(1)], lines=[udp_line(1)], resolver=res)
        app.frame(80, 24)  # queues the lookups: addresses show meanwhile
        assert res.wait_idle(5)
        f = app.frame(80, 24)
    finally:
        res.close()
    rows = f.text()
    # ESC and BEL shown as their escapes (iptraf_mp/core/text.py), so what was sent can be read
    assert rows[2].startswith("│┌[red]x\\x1b]0;pwned\\x07:1234 ")
    assert "from [red]x\\x1b]0;pwned\\x07:5001 to 10.0.0.9:53" in rows[14]
    assert all("\x1b" not in r and "\x07" not in r for r in rows)
    # through rich, with colour: the name is text, not markup, and no OSC sequence appears
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=80, height=24, force_terminal=True, color_system="truecolor",
            markup=True).print(f)
    ansi = out.getvalue()
    assert "[red]x\\x1b]0;pwned\\x07" in ansi
    assert "\x1b]" not in ansi and "\x07" not in ansi


def test_hostile_text_from_the_capture_is_escaped_too():
    p = mkpair(1, iface="e\x1b[2Jth\u202e0")
    ln = udp_line(1, iface="w\x07lan\x1b]0;x")
    rows = text(ViewState(), Snapshot(pairs=[p], lines=[ln]))
    assert all(r.isascii() and "\x1b" not in r and "\x07" not in r for r in
               (x.replace("│", "").replace("┌", "").replace("└", "").replace("─", "")
                .replace("┐", "").replace("┘", "") for x in rows))
    assert safe("a\x1b[31mb\u202ec") == "a\\x1b[31mb\\u202ec"
    assert safe_name("host\u200b.example\x00") == "host\\u200b.example\\x00"
    # printable Unicode is not hostile: it stays, a wide character taking two columns
    assert safe("中文名") == "中\x00文\x00名\x00"


def test_resolver_never_waits_and_caches():
    gate = threading.Event()
    calls = []

    def slow(addr: str) -> str | None:
        calls.append(addr)
        gate.wait(5)
        return "server.example" if addr == "10.0.0.2" else None

    res = Resolver(lookup=slow, workers=2)
    try:
        t0 = time.monotonic()
        assert res.names([ip("10.0.0.2"), ip("10.0.0.3")]) == {}
        assert time.monotonic() - t0 < 0.1  # the display path never waits for DNS
        gate.set()
        assert res.wait_idle(5)
        names = res.names([ip("10.0.0.2"), ip("10.0.0.3")])
        assert names == {ip("10.0.0.2"): "server.example", ip("10.0.0.3"): "10.0.0.3"}
        res.names([ip("10.0.0.2")])
        assert sorted(calls) == ["10.0.0.2", "10.0.0.3"]  # asked once each
    finally:
        res.close()


def test_service_names_are_cached_and_cut_to_ten():
    seen = []

    def lookup(port: int, proto: str) -> str | None:
        seen.append(port)
        return {80: "http", 8080: "http-alternate"}.get(port)

    sv = Services(lookup)
    assert (sv(80, "tcp"), sv(8080, "tcp"), sv(4444, "tcp"), sv(80, "tcp")) == (
        "http", "http-alter", "4444", "http")
    assert seen == [80, 8080, 4444]
    rows = text(ViewState(), Snapshot(pairs=[mkpair(1)], services=sv))
    assert rows[3].startswith("│└10.0.0.2:http ")


# ---- keys ------------------------------------------------------------------------------------

def test_key_parser_decodes_escape_sequences():
    kp = KeyParser()
    data = b"\x1b[A\x1b[B\x1b[5~\x1b[6~\x1b[H\x1b[F\x1b[1~\x1b[4~\x1bOC\x1b[D\tq \x0c\x18\x1b[1;5A"
    assert kp.feed(data) == ["UP", "DOWN", "PGUP", "PGDN", "HOME", "END", "HOME", "END",
                             "RIGHT", "LEFT", "TAB", "q", " ", "CTRL_L", "CTRL_X", "UP"]
    # a sequence split across reads, and a lone ESC that is the Esc key
    assert kp.feed(b"\x1b[") == [] and kp.feed(b"6~") == ["PGDN"]
    assert kp.feed(b"\x1b") == [] and kp.pending()
    assert kp.timeout() == ["ESC"] and not kp.pending()
    assert kp.feed(b"\x1b\x1b") == ["ESC"] and kp.timeout() == ["ESC"]
    assert kp.feed("é?".encode()) == ["?"]  # UTF-8 is skipped whole


def test_terminal_cbreak_is_restored_on_every_way_out():
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        assert before[3] & termios.ICANON and before[3] & termios.ECHO
        with pytest.raises(RuntimeError), Terminal(slave) as term:
            now = termios.tcgetattr(slave)
            assert not now[3] & termios.ICANON and not now[3] & termios.ECHO
            os.write(master, b"\x1b[Bq")
            assert term.read_keys(1.0) == ["DOWN", "q"]
            assert term.read_keys(0.0) == []  # nothing typed: returns at once
            raise RuntimeError("a crash in the console")
        after = termios.tcgetattr(slave)
        assert after == before
    finally:
        os.close(master)
        os.close(slave)


# ---- options file ----------------------------------------------------------------------------

def parse(tmp_path: Path, argv: list[str], toml: str | None = None, monkeypatch=None):
    from iptraf_mp.app.cli import build_parser

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv(config.ENV_DISABLE, raising=False)
    if toml is not None:
        (tmp_path / "iptraf-mp").mkdir(exist_ok=True)
        (tmp_path / "iptraf-mp" / "config.toml").write_text(toml)
    return build_parser().parse_args(argv)


def test_defaults_are_rule_19s(tmp_path, monkeypatch):
    a = parse(tmp_path, ["-r", "x"], None, monkeypatch)
    assert (a.dns, a.services, a.promisc, a.kbytes, a.mac) == (False, False, True, False, False)
    assert (a.tcp_timeout, a.persistence, a.refresh, a.lower_lines) == (15.0, 0.0, 0.25, 512)


def test_config_file_sets_defaults_and_flags_win(tmp_path, monkeypatch):
    toml = ("reverse_dns = true\nservice_names = true\npromiscuous = false\nkbytes = true\n"
            "source_mac = true\ntcp_timeout = 5\npersistence = 2.5\nrefresh = 1\n"
            "lower_lines = 100\n")
    a = parse(tmp_path, ["-r", "x"], toml, monkeypatch)
    assert (a.dns, a.services, a.promisc, a.kbytes, a.mac) == (True, True, False, True, True)
    assert (a.tcp_timeout, a.persistence, a.refresh, a.lower_lines) == (5.0, 2.5, 1.0, 100)
    a = parse(tmp_path, ["-r", "x", "--no-dns", "--no-services", "--promisc", "--kbits",
                         "--no-mac", "--tcp-timeout", "20", "--refresh", "0.5"], None,
              monkeypatch)
    assert (a.dns, a.services, a.promisc, a.kbytes, a.mac) == (False,) * 2 + (True,) + \
        (False,) * 2
    assert (a.tcp_timeout, a.refresh, a.lower_lines) == (20.0, 0.5, 100)


def test_explicit_config_file_and_its_errors(tmp_path, monkeypatch, capsys):
    other = tmp_path / "other.toml"
    other.write_text("tcp_timeout = 3\n")
    a = parse(tmp_path, ["-r", "x", "--config", str(other)], "tcp_timeout = 9\n", monkeypatch)
    assert a.tcp_timeout == 3.0
    for body, msg in (("tcp_timout = 3\n", "unknown option 'tcp_timout'"),
                      ("reverse_dns = 1\n", "reverse_dns must be true or false"),
                      ("tcp_timeout = 0\n", "tcp_timeout must be greater than 0"),
                      ("lower_lines = 1.5\n", "lower_lines must be an integer"),
                      ("refresh = [\n", "config")):
        other.write_text(body)
        with pytest.raises(SystemExit) as e:
            parse(tmp_path, ["-r", "x", "--config", str(other)], None, monkeypatch)
        assert e.value.code == 2
        assert msg in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(tmp_path, ["-r", "x", "--config", str(tmp_path / "missing.toml")], None,
              monkeypatch)
    assert "no such file" in capsys.readouterr().err


def test_default_path_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config.default_path() == tmp_path / "iptraf-mp" / "config.toml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config.default_path() == tmp_path / ".config" / "iptraf-mp" / "config.toml"


# ---- the console over a real replay ----------------------------------------------------------

def test_console_over_the_demo_recording_and_the_exit_summary():
    from iptraf_mp.app.localrun import LocalRun
    from iptraf_mp.app.monitor import Monitor
    from iptraf_mp.core.engine import Settings

    run = LocalRun(str(DEMO), Settings())
    mon = Monitor(run)
    mon.start()
    args = argparse.Namespace(read=str(DEMO), iface=None, write="/tmp/rec.pcapng", json=None,
                              speed=None)
    app = ConsoleApp(mon, args, LineOptions())
    try:
        while mon.step(0.5):
            app.pump()
        app.finished = True
        app.pump()
        rows = app.frame(100, 30).text()
    finally:
        mon.finish()
        mon.close()
    screen = "\n".join(rows)
    for host in ("┌192.168.1.10:52100", "└10.0.0.5:22", "140.82.121.4:443",
                 f"{LONG6}:50000", "93.184.216.34:80"):
        assert host in screen
    assert "end of recording" in rows[0] and "Time: 0:00:59" in screen
    assert rows[2][columns(100).x_mark] == ">"  # the SSH session was already running
    out = app.exit_summary()
    assert "packets captured 1611; drops: 0 kernel, 0 queue" in out
    lines = out.splitlines()
    top = lines.index(next(ln for ln in lines if "top connections" in ln))
    assert "140.82.121.4:443" in lines[top + 2]  # the biggest first
    assert "151.101.1.69:443" in lines[top + 3]  # the download, retired long before the end
    assert "recording: /tmp/rec.pcapng" in out
    assert all(ln.isascii() for ln in lines)


def test_console_without_a_terminal_runs_as_background(monkeypatch):
    from iptraf_mp.console import app as console

    class Mon:
        ran = False

        def run_background(self):
            Mon.ran = True

    monkeypatch.setattr("sys.stdout", io.StringIO())
    console.run_console(Mon(), argparse.Namespace(json="-"), LineOptions())
    assert Mon.ran


def test_demo_recording_is_what_its_generator_writes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_demo", ROOT / "fixtures" / "make_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.pcapng_bytes(mod.build()) == DEMO.read_bytes(), "rerun fixtures/make_demo.py"


# ---- polish a new user asked for --------------------------------------------------

def test_title_cuts_a_long_file_name_with_an_ellipsis_before_the_status():
    snap = Snapshot(source="-r /very/long/path/to/a/capture/directory/of/the/lab/"
                           "capture-of-the-day.pcapng", notice="end of recording (Q quits)")
    title = text(ViewState(), snap)[0]
    assert len(title) == 80
    assert "…" in title and " │ end of recording (Q quits) " in title
    assert title.index("…") < title.index("│")


def test_too_small_says_so_and_shows_no_figures():
    rows = text(ViewState(), Snapshot(pairs=[mkpair(1)], summary=summary(ip=(1, 260_000))),
                (79, 24))
    assert rows[0].startswith("Terminal too small (79x24)")
    assert "80x24" in rows[1]
    assert not any("IP" in r or "Packets" in r for r in rows)


def test_right_scrolls_by_what_is_hidden():
    long = udp_line(1)
    st = ViewState(active=LOWER)
    handle_key(st, "RIGHT", 0, 10, 1, 5, lower_hidden=37)
    assert st.lower_hoff == 37
    handle_key(st, "LEFT", 0, 10, 1, 5, lower_hidden=37)
    assert st.lower_hoff == 0
    # in the console, what is hidden is measured on the lines in view at its width
    app = app_with([], lines=[long], size=(80, 24))
    app.key("W")
    app.key("RIGHT")
    shown = len(screen_line(long, LineOptions()))
    assert app.st.lower_hoff == max(0, shown + 1 - 78)
    app = app_with([], lines=[long], size=(200, 50))
    app.key("W")
    app.key("RIGHT")
    assert app.st.lower_hoff == 0  # nothing hidden at 200 columns: nothing to scroll


def test_lower_window_says_top_until_it_is_full():
    rows = text(ViewState(), Snapshot(lines=[udp_line(i) for i in range(3)]))
    assert " Top " in rows[19] and " Bottom " not in rows[19]
    rows = text(ViewState(), Snapshot(lines=[udp_line(i) for i in range(30)]))
    assert " Bottom " in rows[19]


def test_highlighted_rate_decays_after_the_replay_ends(monkeypatch):
    p = mkpair(1, pa=(10, 10_000))
    app = app_with([p])
    app.merger.clock[0] = 1000.0
    app.snapshot()
    p.a.bytes = 60_000
    app.merger.clock[0] = 1003.0
    assert app.snapshot().rate > 0
    app.finished = True
    now = [time.monotonic()]
    monkeypatch.setattr("iptraf_mp.console.app.time.monotonic", lambda: now[0])
    assert app.snapshot().rate > 0  # just ended: the last seconds still count
    now[0] += 10.0  # ten seconds later nothing has come for longer than the window
    assert app.snapshot().rate == 0


def test_icmpv6_mld_and_other_defined_types_are_named():
    for itype, name in ((130, "MLD query"), (131, "MLD report"), (143, "MLDv2 report"),
                        (135, "neigh sol")):
        d = Decoded(3, 6, 64, ip("fe80::1"), ip("ff02::16"), 58, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    None, None, (itype, 0, None), False)
        line = screen_line(OtherLine(0.0, "eth0", d), LineOptions())
        assert name in line and "bad/unkn" not in line, line


def test_the_store_is_announced_on_screen_at_start():
    app = app_with([])

    class Store:
        def status_line(self) -> str:
            return "flow store: /var/lib/flows.db (session 7)"

    app.monitor.sinks = [Store()]
    app.monitor.started = time.time()
    assert "flow store: /var/lib/flows.db (session 7)" in text(app.st, app.snapshot())[0]
    app.monitor.started = time.time() - 60
    assert "flow store" not in text(app.st, app.snapshot())[0]
