"""`--shards 0`: the whole engine in this process, behind the same interface as the pipeline.

The reference against which the sharded pipeline is measured, and what tests use when they
want one process. It publishes into a `Merger` exactly as a shard does, so everything
downstream (JSON, log, store, export, console) cannot tell the difference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import islice

from iptraf_mp.capture.capfile import CaptureFileError, CaptureReader, capture_of
from iptraf_mp.core.decode import decode
from iptraf_mp.core.engine import Engine, Settings
from iptraf_mp.core.fastpath import feed_pcap, feed_records
from iptraf_mp.core.merge import Merger, settle_heap
from iptraf_mp.core.model import Packet
from iptraf_mp.core.publication import make_publication, track_changes
from iptraf_mp.core.run import RunStats


class LocalRun:
    def __init__(self, source: str | CaptureReader, settings: Settings, refresh: float = 0.25,
                 speed: float | None = None, keep_lines: bool = True) -> None:
        self.source = source
        self.settings = settings
        self.refresh = refresh
        self.speed = speed
        self.engine = Engine(settings, display=False)  # the merger keeps the rows
        track_changes(self.engine, keep_lines)
        self.merger = Merger(1, settings.lower_lines)
        self.stats = RunStats()
        self.n = 1
        self._reader = None
        self._iter = None
        self._frames = 0
        self._seq = 0
        self._stop = False
        self._done = False
        self._wall0: float | None = None
        self._ts0 = 0.0
        self._held: Packet | None = None  # --speed: the next packet, not yet due
        self.on_record = None
        self.on_record_iface = None
        # called between chunks (~20 ms of replay each): paced sinks send meanwhile
        self.between: Callable[[], bool] | None = None

    def start(self) -> None:
        self._reader = capture_of(self.source)
        self._iter = iter(self._reader)

    def poll(self, timeout: float) -> bool:
        """Replay for about `timeout` seconds of wall time, then publish."""
        if self._done:
            return False
        engine = self.engine
        ifaces = self._reader.interfaces
        # (name, link type) per interface index; pcapng may add interfaces as it goes
        known = {i: (x.name, x.linktype) for i, x in enumerate(ifaces)}

        def late_interface(frame_no: int, rec: Packet) -> None:
            known.update((i, (x.name, x.linktype)) for i, x in enumerate(ifaces))
            ts, ifidx, data, wirelen = rec
            name, lt = known[ifidx]
            engine.feed(ts, name, decode(lt, data, wirelen), frame_no)

        raw = self._reader.raw_pcap()
        if raw is not None:
            name0, linktype0 = ifaces[0].name, ifaces[0].linktype
        deadline = time.monotonic() + timeout
        n = self._frames
        finished = self._stop
        speed = self.speed
        while not finished:
            if speed:
                # --speed: a packet is fed when it is due, never before (its clock tick and
                # the timeouts it brings with it would show early); a wait that outlasts
                # this poll keeps it for the next one, so the screen is redrawn meanwhile
                rec, self._held = self._held, None
                if rec is None:
                    try:
                        rec = next(self._iter, None)
                    except CaptureFileError as e:
                        self.stats.failed(str(e), e.exit_status)
                if rec is None:
                    finished = True
                    break
                if not self._due(rec[0], deadline):
                    self._held = rec
                    break
                chunk = [rec]
            elif raw is not None:
                # a pcap file: its records are parsed where they lie in the reader's buffer
                try:
                    raw.pos, fed = feed_pcap(engine, raw.buf, raw.pos, raw.big_endian,
                                             raw.units, n, name0, linktype0, 4096)
                    raw.count += fed
                    n += fed
                    if fed < 4096 and not raw.refill():
                        finished = True
                except CaptureFileError as e:
                    self.stats.failed(str(e), e.exit_status)
                    finished = True
                if self.between is not None:
                    self.between()
                if time.monotonic() >= deadline:
                    break
                continue
            else:
                chunk = []
                try:
                    chunk.extend(islice(self._iter, 4096))
                except CaptureFileError as e:
                    # the frames before the damage still count: extend() kept them
                    self.stats.failed(str(e), e.exit_status)
                    finished = True
                if len(chunk) < 4096:
                    finished = True
            feed_records(engine, range(n + 1, n + 1 + len(chunk)), chunk, known, late_interface)
            n += len(chunk)
            if self.between is not None:
                self.between()
            if time.monotonic() >= deadline:
                break
        self._frames = n
        if finished:
            engine.finish()
            self._reader.close()
        self.merger.apply(make_publication(engine, 0, self._seq, n, final=finished,
                                           share=True))
        settle_heap()
        self._seq += 1
        self._done = finished
        return not finished

    def _due(self, ts: float, deadline: float) -> bool:
        """--speed: wait (until `deadline` at most) for the packet at `ts` to be due, packet
        time running at `speed` times wall time from the first packet; True once it is."""
        now = time.monotonic()
        if self._wall0 is None:
            self._wall0, self._ts0 = now, ts
            return True
        due = self._wall0 + (ts - self._ts0) / self.speed
        while now < due:
            if now >= deadline:
                return False
            time.sleep(min(due, deadline) - now)
            now = time.monotonic()
        return True

    def stop(self) -> None:
        self._stop = True

    def request_flush(self) -> None:
        self.engine.flush()
        self.merger.flush()

    def counters(self) -> RunStats:
        return self.stats

    def join_recorder(self) -> None:
        """Nothing to wait for: -w always runs the pipeline."""

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
