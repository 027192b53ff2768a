"""Rule 12: the highlighted direction's flow rate, averaged over the last 5 seconds.

Fed with (clock, byte count) samples of one entry; it keeps one sample per second, so it
costs the engine nothing and ramps up over the first 5 seconds as iptraf-ng's does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW = 5


@dataclass(slots=True)
class FlowRate:
    key: object = None  # which entry the samples belong to
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=WINDOW + 1))

    def sample(self, key: object, now: float, total_bytes: int) -> None:
        if key != self.key:
            self.key = key
            self.samples.clear()
        sec = int(now)
        if self.samples and self.samples[-1][0] == sec:
            self.samples[-1] = (sec, total_bytes)
        else:
            self.samples.append((sec, total_bytes))

    def bytes_per_second(self) -> float:
        """Bytes of the last (up to) 5 whole seconds, divided by 5."""
        if len(self.samples) < 2:
            return 0.0
        last_sec, last_bytes = self.samples[-1]
        base = None
        for sec, total in self.samples:
            if sec >= last_sec - WINDOW:
                base = total
                break
        if base is None or base == last_bytes:
            return 0.0
        return max(0, last_bytes - base) / WINDOW
