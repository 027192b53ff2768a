"""A worker shard: runs the flow engine on its share of the packets and publishes changes.

It holds the authoritative state of its connections. It reads batches from one ring per
capture process, decodes and feeds them to its `Engine` (ticks come from the readers, so
every shard's clock moves at the same packet positions), and every `refresh` seconds sends
the main process a `Publication` of what changed.

Rule numbers cited here are docs/decisions.md's.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from iptraf_mp.core.decode import decode
from iptraf_mp.core.engine import Engine, Settings
from iptraf_mp.core.fastpath import feed_batch
from iptraf_mp.core.merge import settle_heap
from iptraf_mp.core.model import Packet
from iptraf_mp.core.publication import EPOCH_FINAL, EPOCH_NONE, make_publication, track_changes

from .protocol import (
    CTL_END,
    CTL_FLUSH,
    CTL_FRAG_FIRST,
    CTL_FRAG_PENDING,
    CTL_IFACE,
    CTL_PUBLISH,
    CTL_TICK,
    MAX_IFACES,
    parse_frag_key,
    parse_iface_record,
)

if TYPE_CHECKING:  # --shards 0 uses this module without rings or pipes: not imported then
    from multiprocessing.connection import Connection

    from .ring import RingSet

@dataclass(slots=True)
class ShardConfig:
    index: int
    producers: int  # how many capture processes feed this shard (END records to wait for)
    settings: Settings
    refresh: float = 0.25  # rule 19: 4 publications per second by default
    keep_lines: bool = True  # publish lower-window lines (the console and the log want them)
    # replay: publish at the readers' CTL_PUBLISH records, not by a timer of its own
    epochs: bool = False


def run_shard(cfg: ShardConfig, rings: RingSet, conn: Connection) -> None:
    """Process entry point. Returns when every producer has ended, after a final publication."""
    # The supervisor alone decides when to stop; a terminal's ^C must not kill shards first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    Shard(cfg, rings, conn).run()


class Shard:
    def __init__(self, cfg: ShardConfig, rings: RingSet, conn: Connection) -> None:
        self.cfg = cfg
        self.rings = rings
        self.conn = conn
        # the screen rows are the merger's business, not a shard's
        self.engine = Engine(cfg.settings, auto_tick=False, display=False)
        track_changes(self.engine, cfg.keep_lines)
        self.ifaces: dict[int, tuple[str, int]] = {}
        self.ended = 0
        self.seq = 0
        self.decoded = 0

    def run(self) -> None:
        cfg = self.cfg
        next_pub = time.monotonic() + cfg.refresh
        while self.ended < cfg.producers:
            buf = self.rings.get(cfg.refresh if cfg.epochs
                                 else max(0.0, next_pub - time.monotonic()))
            if buf is not None:
                self.process(buf)
            if not cfg.epochs and time.monotonic() >= next_pub:
                self.publish()
                next_pub = time.monotonic() + cfg.refresh
        self.engine.finish()
        self.publish(final=True, epoch=EPOCH_FINAL if cfg.epochs else EPOCH_NONE)

    def process(self, buf: bytes) -> None:
        if type(buf) is not bytes:
            buf = bytes(buf)  # one copy: the batch is read in place, frames sliced from it
        self.decoded += feed_batch(self.engine, buf, self.ifaces, self._control)

    def _control(self, frame_no: int, rec: Packet) -> None:
        """A record feed_records does not take: control, or an interface not announced."""
        ts, ifindex, data, wirelen = rec
        engine = self.engine
        if ifindex < MAX_IFACES:
            name, lt = f"if{ifindex}", 1
            engine.feed(ts, name, decode(lt, data, wirelen), frame_no)
            self.decoded += 1
        elif ifindex == CTL_TICK:
            engine.tick(ts)
        elif ifindex == CTL_IFACE:
            idx, lt, name = parse_iface_record(data)
            self.ifaces[idx] = (name, lt)
        elif ifindex == CTL_END:
            self.ended += 1
        elif ifindex == CTL_FLUSH:
            engine.flush()
        elif ifindex == CTL_PUBLISH:
            self.publish(epoch=wirelen, now=ts)
        elif ifindex == CTL_FRAG_PENDING:
            fk = parse_frag_key(data)
            if fk not in engine.tcp.frags:
                engine.tcp.note_fragment(fk, wirelen, ts)
        elif ifindex == CTL_FRAG_FIRST:
            engine.tcp.frag_pending.pop(parse_frag_key(data), None)

    def publish(self, final: bool = False, epoch: int = EPOCH_NONE,
                now: float | None = None) -> None:
        """`now`: the run's packet clock where the epoch was cut (a shard's own clock is
        the newest of its packets, which another shard may have passed)."""
        pub = make_publication(self.engine, self.cfg.index, self.seq, self.decoded, final)
        pub.epoch = epoch
        if now is not None and now > pub.now:
            pub.now = now
        self.seq += 1
        try:
            self.conn.send(pub)
            settle_heap()
        except (BrokenPipeError, ConnectionResetError, EOFError):
            # the main process is gone: nobody to report to, and nothing else to do
            os._exit(1)
