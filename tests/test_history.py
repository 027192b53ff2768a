"""Traffic over time on the console: the rates the graph (G) and the highlighted connection's
sparkline are drawn from, and what the screen shows of them."""

from __future__ import annotations

import pytest

from iptraf_mp.console.history import (
    BLOCKS,
    FlowRates,
    TrafficHistory,
    chart_rows,
    fmt_bits,
    spark,
)
from iptraf_mp.console.screen import Snapshot, render
from iptraf_mp.console.view import ViewState, handle_key
from iptraf_mp.core.engine import Counter, Summary

from .test_console_tmux import DEMO, IPTRAF, TMUX, joined, pane_factory  # noqa: F401


def _c(nbytes: int) -> Counter:
    return Counter(nbytes // 100, nbytes)


def test_rates_per_interface_and_total_by_packet_second() -> None:
    h = TrafficHistory(keep=10)
    h.sample(100.2, {"eth0": _c(0)})  # the baseline
    h.sample(100.9, {"eth0": _c(500)})  # the same second: nothing closes
    assert not h.total
    h.sample(101.1, {"eth0": _c(1000), "eth1": _c(250)})
    assert list(h.by_iface["eth0"]) == [8000.0] and list(h.by_iface["eth1"]) == [2000.0]
    assert list(h.total) == [10000.0]
    # three seconds later: what came is spread over them; a silent interface reads 0
    h.sample(104.0, {"eth0": _c(4000), "eth1": _c(250)})
    assert list(h.by_iface["eth0"]) == [8000.0] + [8000.0] * 3
    assert list(h.by_iface["eth1"]) == [2000.0, 0.0, 0.0, 0.0]
    assert list(h.total) == [10000.0, 8000.0, 8000.0, 8000.0]
    # an interface seen late starts with zeros under the seconds before it
    h.sample(105.0, {"eth0": _c(4000), "eth1": _c(250), "wlan0": _c(125)})
    assert list(h.by_iface["wlan0"]) == [0.0] * 4 + [1000.0]
    # only the last `keep` seconds are held
    h.sample(200.0, {"eth0": _c(4000), "eth1": _c(250), "wlan0": _c(125)})
    assert len(h.total) == 10 and set(h.total) == {0.0}


def test_flow_rates_reset_when_the_bar_moves() -> None:
    r = FlowRates(keep=3)
    for t, v in ((1.0, 10.0), (1.5, 99.0), (2.0, 20.0), (3.0, 30.0), (4.0, 40.0)):
        r.sample(("pair", 0), t, v)
    assert list(r.rates) == [20.0, 30.0, 40.0]  # one a second, the newest three
    r.sample(("pair", 1), 4.2, 5.0)
    assert list(r.rates) == [5.0]


def test_glyphs() -> None:
    assert spark([0, 4, 8]) == BLOCKS[1] + BLOCKS[4] + BLOCKS[8]
    assert chart_rows([0, 8, 16], 2, 16) == [" " + " " + BLOCKS[8], " " + BLOCKS[8] * 2]
    assert fmt_bits(12_345_678) == "12.3 Mbit/s" and fmt_bits(999) == "999 bit/s"


def _history() -> TrafficHistory:
    h = TrafficHistory()
    for s in range(0, 200):
        h.sample(1000.0 + s, {"eth0": _c(s * s * 100), "eth1": _c(s * 1000)})
    return h


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
def test_g_switches_the_lower_window_to_the_graph(size: tuple[int, int]) -> None:
    st = ViewState()
    assert handle_key(st, "g", 0, 10, 0, 5) is None and st.graph
    snap = Snapshot(summary=Summary(), history=_history())
    rows = render(st, snap, *size).text()
    assert all(len(r) == size[0] for r in rows)
    screen = "\n".join(rows)
    assert "Traffic over time (G: lines)" in screen
    assert "all " in screen and "peak " in screen
    eth0 = next(r for r in rows if "eth0" in r)
    assert "Mbit/s" in eth0 or "kbit/s" in eth0
    assert BLOCKS[8] in screen  # the busiest second reaches the top of the chart
    handle_key(st, "G", 0, 10, 0, 5)
    assert not st.graph
    assert "Traffic over time" not in "\n".join(render(st, snap, *size).text())


def test_the_highlighted_rate_has_its_sparkline() -> None:
    from .test_screen import mkpair  # noqa: PLC0415

    snap = Snapshot(pairs=[mkpair(1)], summary=Summary(), rate=1000.0,
                    flow_rates=[100.0, 400.0, 800.0, 1000.0])
    status = render(ViewState(), snap, 80, 24).text()[-2]
    assert "TCP flow rate:" in status and spark([100.0, 400.0, 800.0, 1000.0]) in status


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (make deps installs it)")
def test_g_in_the_console(pane_factory) -> None:  # noqa: F811
    pane = pane_factory(f"{IPTRAF} -r {DEMO} --speed 4 --no-db")
    pane.wait(lambda r: "UDP (" in joined(r), "the lower window's first lines")
    pane.keys("G")
    rows = pane.wait(lambda r: "Traffic over time (G: lines)" in joined(r)
                     and "wlan0" in joined(r), "the graph, with both interfaces")
    screen = joined(rows)
    assert "eth0" in screen and "peak" in screen
    assert any(b in screen for b in BLOCKS[2:])
    pane.keys("G")
    pane.wait(lambda r: "Traffic over time" not in joined(r) and "UDP (" in joined(r),
              "the lines again")
