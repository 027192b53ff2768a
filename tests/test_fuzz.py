"""Hostile packets: random frames and mutations of the malformed corpus, on every
supported link type, through the decoder and the engine. Never an exception; every frame is
counted exactly once.

CI feeds at least 100k frames; `make fuzz` sets FUZZ_FRAMES=10000000.
"""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iptraf_mp.core.decode import decode
from iptraf_mp.core.decode_dpkt import decode_dpkt
from iptraf_mp.core.engine import Engine, Settings
from iptraf_mp.core.model import K_NON_IP

from .helpers.streams import mutate, seed_frames

LINK_TYPES = [0, 1, 9, 10, 12, 14, 50, 101, 104, 105, 108, 113, 127, 228, 229, 239, 276, 147]
FRAMES = int(os.environ.get("FUZZ_FRAMES", "100000"))


def _seeds() -> list[tuple[int, bytes]]:
    """Real frames to mutate: the malformed corpus, plus the project's own fixtures."""
    from .conftest import CORPUS, FIXTURES

    return seed_frames([CORPUS / "malformed", FIXTURES])


def _check_counted_once(engine: Engine, fed: int) -> None:
    s = engine.summary
    assert s.frames == fed
    assert s.frames == s.ip.packets + s.non_ip.packets
    assert s.ip.packets == s.tcp.packets + s.udp.packets + s.icmp.packets + s.other_ip.packets


def test_mutated_corpus_frames_never_raise_and_count_once():
    seeds = _seeds()
    assert seeds, "no seed frames (fixtures are part of the repository)"
    rng = random.Random(1234)
    engine = Engine(Settings(tcp_timeout=60.0, persistence=30.0, log_events=True))
    fed = 0
    ts = 1_700_000_000.0
    while fed < FRAMES:
        lt, frame = rng.choice(seeds)
        if rng.random() < 0.3:
            lt = rng.choice(LINK_TYPES)
        data = mutate(rng, frame)
        wirelen = len(data) + rng.choice((0, 0, 0, 4, 1000))
        d = decode(lt, data, wirelen)
        ts += rng.random() * 0.01
        engine.feed(ts, rng.choice(("eth0", "eth1")), d, fed + 1)
        fed += 1
        if fed % 50_000 == 0:
            engine.tcp.events.clear()
            engine.other.new_lines.clear()
            engine.sealed.clear()
    engine.finish()
    _check_counted_once(engine, fed)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lt=st.sampled_from(LINK_TYPES), data=st.binary(max_size=200),
       extra=st.integers(min_value=0, max_value=70000))
def test_random_frames_both_decoders_never_raise(lt, data, extra):
    wirelen = len(data) + extra
    d = decode(lt, data, wirelen)
    d2 = decode_dpkt(lt, data, wirelen)
    assert d.kind in (1, 2, 3, 4, 5) and d2.kind in (1, 2, 3, 4, 5)
    # whatever it is, it is counted by a non-negative length
    assert d.iplen >= 0
    if d.kind == K_NON_IP:
        assert d.iplen == wirelen


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.tuples(st.sampled_from([1, 113, 101]), st.binary(max_size=120)),
                       max_size=60))
def test_random_frame_sequences_through_the_engine(frames):
    engine = Engine()
    for i, (lt, data) in enumerate(frames):
        engine.feed(1000.0 + i, "eth0", decode(lt, data, len(data)), i + 1)
    engine.finish()
    _check_counted_once(engine, len(frames))
