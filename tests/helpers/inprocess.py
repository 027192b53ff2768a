"""The sharded pipeline run in this process: the real capture-process loop, shard and merger
code, with lists in place of rings and pipes, publications delivered in random interleavings.

Determinism tests compare it with one engine (what --shards 0 does) on thousands of generated
streams: the --json records, and the screen's rows at every epoch (replays publish in epochs,
every shard at the same stream position). A subprocess per stream would take minutes; the
real multi-process pipeline is compared on fewer streams in test_determinism.py.
"""

from __future__ import annotations

import io
import random
from collections import deque
from dataclasses import dataclass, field

from iptraf_mp.capture.capfile import open_capture
from iptraf_mp.core.engine import Engine, Settings
from iptraf_mp.core.fastpath import feed_records
from iptraf_mp.core.merge import Merger
from iptraf_mp.core.publication import EPOCH_FINAL, Publication, make_publication, track_changes
from iptraf_mp.outputs.jsonout import JsonWriter
from shards import reader as reader_mod
from shards.batch import split_batch
from shards.protocol import CTL_PUBLISH
from shards.reader import NSTATS, ProducerConfig, run_file_reader
from shards.worker import Shard, ShardConfig


@dataclass
class ListRing:
    """Takes every payload (a ring that is never full)."""

    payloads: list[bytes] = field(default_factory=list)

    def put(self, payload: bytes) -> bool:
        self.payloads.append(payload)
        return True


class _Never:
    def is_set(self) -> bool:
        return False


class _Errors:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def send(self, msg: str) -> None:
        self.messages.append(msg)


@dataclass
class _Conn:
    sent: deque = field(default_factory=deque)

    def send(self, pub: Publication) -> None:
        self.sent.append(pub)


# What the screen shows of the TCP window, for comparing one engine with the shards
def screen_state(merger: Merger) -> tuple:
    d = merger.display
    return (tuple((p.id, p.closed, p.end, p.a.packets, p.b.packets, p.a.bytes, p.b.bytes)
                  for p in d.slots), tuple(d.closed), merger.summary().frames, merger.now,
            tuple(line.frame_no for line in merger.lines))


@dataclass
class ShardedRun:
    json: str
    screens: dict[int, tuple]  # frames read at the epoch -> the screen after it
    epochs: int


def sharded(path: str, nshards: int, settings: Settings, seed: int = 0,
            batch: int = 512) -> ShardedRun:
    """A replay of `path` over `nshards` shards, its reader cutting an epoch at every batch
    (of `batch` frames at most), publications reaching the merger in a random order that
    keeps each shard's own order."""
    rings = [ListRing() for _ in range(nshards)]
    old = reader_mod.BATCH_PACKETS
    reader_mod.BATCH_PACKETS = batch
    try:
        cfg = ProducerConfig(0, nshards, live=False, refresh=0.0)
        run_file_reader(cfg, path, rings, [0] * NSTATS, [0, 0], _Errors(), _Never())
    finally:
        reader_mod.BATCH_PACKETS = old
    frames_at: dict[int, int] = {}  # epoch -> frames read before it
    for buf in rings[0].payloads:
        numbers, recs = split_batch(buf)
        for n, (_ts, ifindex, _d, wirelen) in zip(numbers, recs, strict=True):
            if ifindex == CTL_PUBLISH:
                frames_at[wirelen] = n
    merger = Merger(nshards, settings.lower_lines)
    conns = [_Conn() for _ in range(nshards)]
    shards = [Shard(ShardConfig(s, 1, settings, epochs=True), None, conns[s])  # type: ignore[arg-type]
              for s in range(nshards)]
    rng = random.Random(seed)
    out = io.StringIO()
    writer = JsonWriter(out)
    screens: dict[int, tuple] = {}
    pos = [0] * nshards
    finished = [False] * nshards
    seen_epoch = -1
    while not all(finished) or any(c.sent for c in conns):
        s = rng.randrange(nshards)
        sh = shards[s]
        if not finished[s]:
            take = rng.randint(1, 4)
            for buf in rings[s].payloads[pos[s]:pos[s] + take]:
                sh.process(buf)
            pos[s] += take
            if pos[s] >= len(rings[s].payloads):
                finished[s] = True
                sh.engine.finish()
                sh.publish(final=True, epoch=EPOCH_FINAL)
        for _ in range(rng.randint(0, len(conns[s].sent))):
            merger.apply(conns[s].sent.popleft())
            if merger.released_epoch != seen_epoch:
                seen_epoch = merger.released_epoch
                if seen_epoch in frames_at:
                    screens[frames_at[seen_epoch]] = screen_state(merger)
            for group in merger.take_ready():
                writer.pairs(group)
    for group in merger.take_ready():
        writer.pairs(group)
    writer.record(merger.summary().to_json())
    return ShardedRun(out.getvalue(), screens, len(frames_at))


def sharded_json(path: str, nshards: int, settings: Settings, seed: int = 0,
                 publish_every: int = 7) -> str:
    return sharded(path, nshards, settings, seed, batch=max(1, 4 * publish_every)).json


def one_engine_screens(path: str, settings: Settings, at: set[int]) -> dict[int, tuple]:
    """The screen of one engine (as --shards 0 runs it) after each frame count in `at`."""
    engine = Engine(settings, display=False)
    track_changes(engine, True)
    merger = Merger(1, settings.lower_lines)
    out: dict[int, tuple] = {}
    with open_capture(path) as rd:
        known = {}
        n = seq = 0

        def late(frame_no, rec) -> None:
            known.update((i, (x.name, x.linktype)) for i, x in enumerate(rd.interfaces))
            feed_records(engine, [frame_no], [rec], known)

        for rec in rd:
            known.update((i, (x.name, x.linktype)) for i, x in enumerate(rd.interfaces))
            n += 1
            feed_records(engine, [n], [rec], known, late)
            if n in at:
                merger.apply(make_publication(engine, 0, seq, n, share=True))
                seq += 1
                out[n] = screen_state(merger)
    return out


def local_json(path: str, settings: Settings) -> str:
    """--json of --shards 0."""
    from iptraf_mp.app.localrun import LocalRun

    run = LocalRun(path, settings, refresh=0.01)
    run.start()
    out = io.StringIO()
    writer = JsonWriter(out)
    try:
        while run.poll(0.01):
            for group in run.merger.take_ready():
                writer.pairs(group)
        for group in run.merger.take_ready():
            writer.pairs(group)
    finally:
        run.close()
    writer.record(run.merger.summary().to_json())
    return out.getvalue()
