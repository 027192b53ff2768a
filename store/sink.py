"""The flow store as one of the monitor's outputs (a Sink): every `interval` seconds it takes
what changed from its own ChangeFeed of the merger and hands the writer a checkpoint."""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iptraf_mp.core.model import fmt_addr
from iptraf_mp.core.snapshot import PairSnapshot, pair_snapshots
from iptraf_mp.core.text import say
from iptraf_mp.outputs.sink import Monitored

from .cli import DEFAULT_INTERVAL
from .writer import FLOW_FIELDS, Checkpoint, Writer

FINISH_GRACE = 10.0  # seconds finish() keeps retrying a failing store before giving up


@dataclass(slots=True)
class StoreStatus:
    """What the console shows about the store."""

    path: str
    lag_seconds: float  # age of the oldest checkpoint not yet committed; 0 when none
    pending: int  # checkpoints taken and not yet committed
    error: str | None  # the write error in force, None when writing works
    committed: int  # checkpoints committed this session
    last_write_seconds: float  # how long the last transaction took


def _stderr(msg: str) -> None:
    say(msg)


class StoreSink:
    """The monitor's side: snapshots at every checkpoint interval and at the end."""

    def __init__(self, path: Path, session_id: int, interval: float = DEFAULT_INTERVAL,
                 report: Callable[[str], None] = _stderr, retry: float = 1.0,
                 syn_warn: int = 0) -> None:
        self.path = path
        self.syn_warn = syn_warn  # 0: do not record SYN-flood warnings
        self.session_id = session_id
        self.interval = interval
        self.report = report
        self.writer = Writer(path, session_id, report, retry)
        self.feed = None
        self._seq = 0
        self._due = time.monotonic() + interval
        self._taken: deque[tuple[int, float]] = deque()
        self._started = False
        self._finished = False

    # -- sink protocol --

    def attach(self, monitor: Monitored) -> None:
        self.feed = monitor.merger.subscribe()
        sources = getattr(monitor.run, "sources", None) or []
        self.writer.declared_ifaces = [s.iface for s in sources if getattr(s, "iface", None)]

    def update(self, monitor: Monitored) -> None:
        now = time.monotonic()
        if now >= self._due:
            self.checkpoint(monitor)
            self._due = now + self.interval

    def finish(self, monitor: Monitored) -> None:
        """The final checkpoint (every pair has retired by now), then wait for it: the
        session is closed cleanly only once it is committed."""
        self.checkpoint(monitor, final=True)
        deadline = None
        w = self.writer
        while not w.final_done.wait(0.05):
            if not w.thread.is_alive():
                break
            if w.error is not None:
                if deadline is None:
                    deadline = time.monotonic() + FINISH_GRACE
                elif time.monotonic() >= deadline:
                    break
            else:
                deadline = None
        self._finished = w.final_done.is_set()
        if not self._finished:
            self.report(f"flow store: {self.pending} checkpoints could not be written to "
                        f"{self.path} ({w.error}); the session stays marked unclean")

    def pump(self) -> bool:
        return False  # the writer thread paces itself

    def status_line(self) -> str:
        """One line for the console (shown when the run starts)."""
        return f"flow store: {self.path} (session {self.session_id})"

    def failed(self) -> list[str]:
        """Checkpoints lost (reported as they failed): the exit status says so."""
        if self._finished:
            return []
        return [f"flow store {self.path}: {self.pending} checkpoints not written"]

    def close(self) -> None:
        self.writer.stop()

    # -- snapshots --

    def checkpoint(self, monitor: Monitored, final: bool = False) -> None:
        if not self._started:
            # Started here, after the pipeline has forked its processes, not in attach():
            # no child inherits a thread or an open database connection.
            self._started = True
            self.writer.start()
        pairs: list[PairSnapshot] = []
        flows: list[tuple] = []
        if self.feed is not None:
            changed, retired, fviews = self.feed.take()
            # Copying 100k pairs makes 300k tuples: without a pause the collector would walk
            # the whole heap several times meanwhile, and the monitor's loop would wait.
            gc_was = gc.isenabled()
            gc.disable()
            try:
                # Only the feed's retired list says a pair is done: a pair that left its
                # shard is still among the changed ones (with `retired` set) until the
                # merger releases it, and forgetting its committed row then would write
                # it again.
                pairs = pair_snapshots(changed, False)
                pairs += pair_snapshots(retired, True)
                flows = [FLOW_FIELDS(f) for f in fviews]
            finally:
                if gc_was:
                    gc.enable()
        s = monitor.merger.summary()
        st = monitor.run.counters()
        counters = (s.frames, s.ip.packets, s.ip.bytes, s.tcp.packets, s.tcp.bytes,
                    s.udp.packets, s.udp.bytes, s.icmp.packets, s.icmp.bytes,
                    s.other_ip.packets, s.other_ip.bytes, s.non_ip.packets, s.non_ip.bytes,
                    s.malformed, s.untracked, s.evicted_flows, st.kernel_drops,
                    st.queue_drops, st.queue_dropped_packets, st.shard_restarts, st.lost_pairs)
        self._seq += 1
        now = time.monotonic()
        self._taken.append((self._seq, now))
        syn = ()
        if self.syn_warn > 0:
            syn = tuple((iface, fmt_addr(dst), n)
                        for iface, dst, n in monitor.merger.syn_flood(self.syn_warn))
        self.writer.put(Checkpoint(self._seq, now, time.time(), monitor.merger.now, pairs, flows,
                                 counters, final, syn))

    # -- status --

    @property
    def pending(self) -> int:
        return self._seq - self.writer.committed_seq

    @property
    def lag_seconds(self) -> float:
        done = self.writer.committed_seq
        taken = self._taken
        while taken and taken[0][0] <= done:
            taken.popleft()
        return time.monotonic() - taken[0][1] if taken else 0.0

    @property
    def error(self) -> str | None:
        return self.writer.error

    @property
    def status(self) -> StoreStatus:
        return StoreStatus(str(self.path), self.lag_seconds, self.pending, self.writer.error,
                           self.writer.committed, self.writer.last_write)
