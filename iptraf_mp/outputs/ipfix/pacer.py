"""Records to the collectors at a bounded rate (a token bucket), from the monitor's thread."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from .encoder import FlowRecord
from .transport import IpfixExporter

DEFAULT_RATE = 50_000.0  # records/s at most, to each collector
BURST = 1024  # records at most back to back: ~43 datagrams, half a default socket buffer
MAX_QUEUE = 1_000_000  # records waiting to be sent (~150 MB at worst) before dropping


class Pacer:
    """Hands queued records to the exporters: at most `rate` a second, at most `burst` at
    once (a token bucket), always from the monitor's own thread.

    Not a thread of its own, on purpose: CPython hands the GIL over at every send(), and a
    sender thread beside a busy monitor thread makes each datagram cost the monitor a
    thread switch (measured: +20-35 % on a one-process replay). The exporters never block,
    so a burst costs the monitor its encoding, a few ms per thousand records.
    """

    def __init__(self, exporters: list[IpfixExporter], rate: float = DEFAULT_RATE,
                 burst: int = BURST, max_queue: int = MAX_QUEUE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.exporters = exporters
        self.rate = rate
        self.burst = burst
        self.max_queue = max_queue
        self.clock = clock
        self.queue: deque[list[FlowRecord]] = deque()
        self.offset = 0  # records of queue[0] already sent
        self.queued = 0  # records in `queue` not yet sent
        self.dropped = 0  # records refused because the queue was full
        self.tokens = float(burst)
        self.last = clock()

    def put(self, records: list[FlowRecord]) -> None:
        if self.queued + len(records) > self.max_queue:
            # A collector slower than the traffic for long: shed the newest rather than
            # grow without bound; counted, and shown with the exporters' own drops.
            self.dropped += len(records)
            return
        self.queue.append(records)
        self.queued += len(records)

    def pump(self) -> int:
        """Send what the bucket allows now; returns the records handed to the exporters."""
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        want = min(int(self.tokens), self.queued)
        if want <= 0:
            return 0
        chunk: list[FlowRecord] = []
        while len(chunk) < want:
            head = self.queue[0]
            n = min(want - len(chunk), len(head) - self.offset)
            chunk.extend(head[self.offset : self.offset + n])
            self.offset += n
            if self.offset >= len(head):
                self.queue.popleft()
                self.offset = 0
        self.queued -= want
        self.tokens -= want
        # One call per exporter and pump: while a TCP connect or a name lookup is pending,
        # each call may wait up to the exporter's io_timeout, so this bounds the monitor's
        # wait per update to that, whatever the backlog.
        for exp in self.exporters:
            exp.export(chunk)  # never raises
        return want

    def drain(self, timeout: float) -> bool:
        """Pump until the queue is empty, sleeping for tokens; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            if not self.queue:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(max(0.001, min(self.burst, self.queued) / self.rate))
