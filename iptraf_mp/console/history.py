"""Traffic over time for the console: bits per second of each interface and of them all, one
sample per second of the packet clock, and the highlighted connection's recent rates.

Fed from the merged summary's per-interface counters at every frame (a dictionary of a few
interfaces: nothing per connection), so the graph costs the frame a few hundred operations
whatever the number of connections. Packet time, not the wall clock: a replay draws its
recording's traffic, and a paced replay the same graph at the same place every run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from iptraf_mp.core.engine import Counter

KEEP_SECONDS = 600  # ten minutes: what the widest terminal can show, one column a second
SPARK_SAMPLES = 12  # the highlighted connection's sparkline
BLOCKS = " ▁▂▃▄▅▆▇█"


class TrafficHistory:
    def __init__(self, keep: int = KEEP_SECONDS) -> None:
        self.keep = keep
        self.total: deque[float] = deque(maxlen=keep)  # bits/s, oldest first
        self.by_iface: dict[str, deque[float]] = {}
        self._sec: int | None = None
        self._bytes: dict[str, int] = {}

    def sample(self, now: float, ifaces: Mapping[str, Counter]) -> None:
        """The counters (since the start) at packet time `now`; a new second closes the
        previous ones: what came since is spread over the seconds it took."""
        sec = int(now)
        if self._sec is None:
            self._sec = sec
            self._bytes = {k: c.bytes for k, c in ifaces.items()}
            return
        if sec <= self._sec:
            return
        gap = min(sec - self._sec, self.keep)
        total = 0.0
        for name, c in ifaces.items():
            rate = (c.bytes - self._bytes.get(name, 0)) * 8 / (sec - self._sec)
            series = self.by_iface.get(name)
            if series is None:
                series = self.by_iface[name] = deque([0.0] * len(self.total), maxlen=self.keep)
            series.extend([rate] * gap)
            total += rate
        for name, series in self.by_iface.items():
            if name not in ifaces:
                series.extend([0.0] * gap)
        self.total.extend([total] * gap)
        self._sec = sec
        self._bytes = {k: c.bytes for k, c in ifaces.items()}


class FlowRates:
    """The highlighted direction's rate, one sample per second of packet time, reset when
    the bar moves to another direction."""

    def __init__(self, keep: int = SPARK_SAMPLES) -> None:
        self.key: object = None
        self.rates: deque[float] = deque(maxlen=keep)
        self._sec: int | None = None

    def sample(self, key: object, now: float, bytes_per_s: float | None) -> None:
        if key != self.key:
            self.key = key
            self.rates.clear()
            self._sec = None
        sec = int(now)
        if bytes_per_s is None or (self._sec is not None and sec <= self._sec):
            return
        self._sec = sec
        self.rates.append(bytes_per_s)


def spark(values: Iterable[float], top: float | None = None) -> str:
    """One character per value, its height in eighths of the largest (or of `top`)."""
    vals = list(values)
    peak = top if top is not None else max(vals, default=0.0)
    if peak <= 0:
        return BLOCKS[1] * len(vals) if vals else ""
    return "".join(BLOCKS[max(1, min(8, round(v / peak * 8)))] if v > 0 else BLOCKS[1]
                   for v in vals)


def chart_rows(values: list[float], rows: int, peak: float) -> list[str]:
    """`values` as a chart `rows` high, top row first, a column per value."""
    out = []
    levels = [0 if peak <= 0 else round(v / peak * rows * 8) for v in values]
    for r in range(rows - 1, -1, -1):
        base = r * 8
        out.append("".join(BLOCKS[8] if lv >= base + 8 else BLOCKS[lv - base] if lv > base
                           else " " for lv in levels))
    return out


def fmt_bits(bits_per_s: float) -> str:
    for unit, n in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits_per_s >= n:
            return f"{bits_per_s / n:.1f} {unit}"
    return f"{bits_per_s:.0f} bit/s"
