"""The sharded pipeline run in this process: the real capture-process loop, shard and merger
code, with lists in place of rings and pipes, and publications at chosen moments.

Determinism tests compare it with `LocalRun` (--shards 0) on thousands of generated streams;
a subprocess per stream would take minutes. The real multi-process pipeline is compared on
fewer streams in test_determinism.py.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from iptraf_mp.engine import Settings
from iptraf_mp.jsonout import JsonWriter
from iptraf_mp.localrun import LocalRun
from iptraf_mp.merge import Merger
from shards.reader import NSTATS, ProducerConfig, run_file_reader
from shards.worker import Shard, ShardConfig, make_publication


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


class _Conn:
    def send(self, _pub) -> None:  # publications are taken by make_publication directly
        pass


def json_of_merger_run(merger: Merger, publish: Iterator[None]) -> str:
    out = io.StringIO()
    writer = JsonWriter(out)
    for _ in publish:
        for group in merger.take_ready():
            writer.pairs(group)
    for group in merger.take_ready():
        writer.pairs(group)
    writer.record(merger.summary().to_json())
    writer.flush()
    return out.getvalue()


def sharded_json(path: str, nshards: int, settings: Settings, seed: int = 0,
                 publish_every: int = 7) -> str:
    """--json of a replay of `path` over `nshards` shards, each publishing after a random
    number (mean `publish_every`) of the batches it took, as their refresh timers would."""
    rings = [ListRing() for _ in range(nshards)]
    errors = _Errors()
    cfg = ProducerConfig(0, nshards, live=False)
    run_file_reader(cfg, path, rings, [0] * NSTATS, [0, 0], errors, _Never())
    merger = Merger(nshards, settings.lower_lines)
    shards = [Shard(ShardConfig(s, 1, settings), None, _Conn()) for s in range(nshards)]  # type: ignore[arg-type]
    rng = random.Random(seed)

    def publish() -> Iterator[None]:
        pos = [0] * nshards
        seqs = [0] * nshards
        while any(pos[s] < len(rings[s].payloads) for s in range(nshards)):
            s = rng.randrange(nshards)
            take = rng.randint(1, 2 * publish_every)
            for buf in rings[s].payloads[pos[s]:pos[s] + take]:
                shards[s].process(buf)
            pos[s] += take
            done = pos[s] >= len(rings[s].payloads)
            sh = shards[s]
            if done and not merger.final[s]:
                sh.engine.finish()
            if not merger.final[s]:
                merger.apply(make_publication(sh.engine, s, seqs[s], sh.decoded, final=done))
                seqs[s] += 1
            yield

    return json_of_merger_run(merger, publish())


def local_json(path: str, settings: Settings) -> str:
    """--json of --shards 0."""
    run = LocalRun(path, settings, refresh=0.01)
    run.start()
    merger = run.merger

    def publish() -> Iterator[None]:
        while run.poll(0.01):
            yield
        yield

    try:
        return json_of_merger_run(merger, publish())
    finally:
        run.close()
