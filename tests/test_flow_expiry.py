"""Non-TCP flows end after `Settings.flow_idle` seconds without packets, everywhere they are
kept: the engine's table, the merger, the store's writer and the IPFIX exporter; the next
packet with the same key starts a new flow (a new generation). Without this a router's run
grows without bound (every DNS query from a random source port is a flow of its own).

UDP frames here are 38 bytes of IP (20 + 8 + 10 of payload) unless said otherwise.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from iptraf_mp.app.cli import build_parser, main, settings_from
from iptraf_mp.core.decode import decode
from iptraf_mp.core.engine import Engine, PacketClock, Settings
from iptraf_mp.core.fastpath import feed_records
from iptraf_mp.core.merge import ChangeFeed, Merger
from iptraf_mp.core.othertable import OtherFlow
from iptraf_mp.core.publication import Publication, make_publication, summary_tuple, track_changes
from iptraf_mp.outputs.ipfix.encoder import FlowRecord
from iptraf_mp.outputs.ipfix.sink import REASON_IDLE, IpfixSink
from shards.hashing import ShardPicker
from shards.protocol import CTL_TICK
from store import writer as cp
from store.session import SessionInfo, open_session

from .test_pipeline import MAC_A, MAC_B, eth, ip4, ipv4, udp, write_pcap

T0 = 1_700_000_000.0
CLIENT, SERVER = ip4("10.9.0.1"), ip4("10.9.0.2")
UDP_BYTES = 38
IFACES = {0: ("eth0", 1)}
INF = float("inf")


def udp_frame(sport: int, dport: int = 53, src: bytes = CLIENT, dst: bytes = SERVER,
              payload: int = 10) -> bytes:
    return eth(ipv4(src, dst, 17, udp(sport, dport, payload)))


def unreachable(sport: int, dport: int) -> bytes:
    """SERVER's ICMP port unreachable for CLIENT's datagram sport -> dport: 56 bytes of IP.
    It goes to the shard of the datagram it quotes, but its own flow is always the same
    (SERVER -> CLIENT, type 3, code 3)."""
    dgram = ipv4(CLIENT, SERVER, 17, udp(sport, dport, 10))
    icmp = struct.pack("!BBHI", 3, 3, 0, 0) + dgram[:28]
    return eth(ipv4(SERVER, CLIENT, 1, icmp), smac=MAC_B, dmac=MAC_A)


class One:
    """One engine as a shard runs it (change tracking on), fed decoded frames by hand."""

    def __init__(self, flow_idle: float, **kw) -> None:
        self.engine = Engine(Settings(flow_idle=flow_idle, **kw), display=False)
        track_changes(self.engine, False)
        self.n = 0
        self.seq = 0

    def feed(self, ts: float, frame: bytes) -> None:
        self.n += 1
        self.engine.feed(ts, "eth0", decode(1, frame, len(frame)), self.n)

    def publish(self, final: bool = False) -> Publication:
        if final:
            self.engine.finish()
        pub = make_publication(self.engine, 0, self.seq, self.n, final)
        self.seq += 1
        return pub


# ---- 1. the engine --------------------------------------------------------------------------

def test_flow_idle_for_flow_idle_ends_and_comes_back_as_a_new_generation() -> None:
    one = One(flow_idle=10.0)
    e = one.engine
    one.feed(T0, udp_frame(5000))
    one.feed(T0 + 0.5, udp_frame(5000))
    first = e.other.flows[next(iter(e.other.flows))]
    assert (first.id, first.packets, first.bytes, first.ended) == (1, 2, 2 * UDP_BYTES, False)
    # exactly flow_idle after its last packet, at the tick of this packet's new second: it
    # ends before this packet is counted, which starts the next generation
    one.feed(T0 + 10.5, udp_frame(5000))
    assert first.ended and (first.packets, first.bytes) == (2, 2 * UDP_BYTES)
    assert first.end_tick == T0 + 10.5
    (second,) = e.other.flows.values()
    assert second is not first
    assert (second.id, second.packets, second.bytes) == (3, 1, UDP_BYTES)
    assert (second.first_seen, second.last_seen) == (T0 + 10.5, T0 + 10.5)
    assert second.start_tick == T0 + 10.5
    assert e.other.expired == 1
    # the publication carries the ended flow's final state, then the new one
    pub = one.publish()
    got = [(f[5], f[7], f[8], f[11], f[12]) for f in pub.flows]
    assert got == [(5000, 2, 2 * UDP_BYTES, 1, True), (5000, 1, UDP_BYTES, 3, False)]
    assert pub.tick_time == T0 + 10.5
    assert e.other.ended == [] and not e.other.dirty
    # the ended flow is published once: the next publication has only what changed since
    one.feed(T0 + 10.7, udp_frame(5000))
    assert [(f[11], f[7], f[12]) for f in one.publish().flows] == [(3, 2, False)]


def test_flow_idle_for_less_than_flow_idle_goes_on() -> None:
    """Another flow's packets, every half second, make the clock tick every second; ours
    stays quiet 9.9 s."""
    one = One(flow_idle=10.0)
    e = one.engine
    one.feed(T0 + 0.5, udp_frame(5000))
    t = T0 + 0.5
    while t < T0 + 10.3:
        t += 0.5
        one.feed(t, udp_frame(6000))
    assert e.tick_no == 11  # ticks at T0 + 0.5, 1.0, ..., 10.0
    one.feed(T0 + 10.4, udp_frame(5000))  # 9.9 s after the previous one
    ours = [f for f in e.other.flows.values() if f.sport == 5000]
    assert [(f.id, f.packets, f.ended) for f in ours] == [(1, 2, False)]
    assert e.other.expired == 0
    # quiet again: the tick at T0 + 20 finds it idle 9.6 s, the one at T0 + 21, 10.6 s
    one.feed(T0 + 20.0, udp_frame(6000))  # (that one was quiet 9.5 s: it goes on too)
    assert e.other.ended == []
    one.feed(T0 + 21.0, udp_frame(6000))
    assert [(f.sport, f.packets) for f in e.other.ended] == [(5000, 2)]


def test_flows_stay_in_idle_order_and_the_tick_stops_at_the_first_young_one() -> None:
    """Flows move to the end of the table at most once per second of packet time; the tick
    looks at the idle ones at the front and stops at the first that cannot be idle."""
    one = One(flow_idle=5.0)
    e = one.engine
    rng = random.Random(3)
    t = T0
    for _ in range(3000):
        t += rng.choice((0.001, 0.01, 0.2))
        one.feed(t, udp_frame(1000 + rng.randrange(300)))
        secs = [f.lru_next for f in e.other.flows.values()]
        assert secs == sorted(secs)
        assert all(t - f.last_seen < 5.0 + 1.0 for f in e.other.flows.values())
    # The scan stops at the first flow that cannot be idle: a flow placed behind it (out of
    # the order the table keeps, which only a test can do) is not looked at, however idle.
    one = One(flow_idle=5.0)
    e = one.engine
    for i in range(5000):
        one.feed(T0 + i / 5000, udp_frame(1000 + i))
    one.feed(T0 + 3.0, udp_frame(1))  # its tick: none can be idle 5 s
    assert len(e.other.flows) == 5001 and not e.other.ended
    hidden = next(f for f in e.other.flows.values() if f.sport == 1000)
    flows = e.other.flows
    del flows[hidden.key]
    flows[hidden.key] = hidden  # behind the young one (sport 1), idle since T0
    e.tick(T0 + 7.0)  # the other 4999 are idle 6-7 s: they end; the scan stops at sport 1
    assert [f.sport for f in e.other.flows.values()] == [1, 1000]
    assert hidden.ended is False and len(e.other.ended) == 4999
    e.tick(T0 + 9.0)  # sport 1 is idle 6 s now: it ends, and the scan goes on to the hidden
    assert not e.other.flows and hidden.ended


def test_expiry_is_deterministic_and_the_same_with_reader_ticks() -> None:
    """The same stream twice, and once as a shard gets it (ticks from a PacketClock as the
    reader inserts them, fed by the batch path): the same generations, the same ends."""
    rng = random.Random(11)
    frames = []
    t = T0
    for _ in range(4000):
        t += rng.choice((0.01, 0.3, 1.7, 4.2))
        frames.append((t, udp_frame(2000 + rng.randrange(40), payload=rng.randrange(60))))

    def generations(engine: Engine) -> list[tuple]:
        return sorted((f.id, f.sport, f.packets, f.bytes, f.first_seen, f.last_seen, f.ended,
                       f.start_tick, f.end_tick) for f in engine.other.flows.values())

    runs = []
    for _ in range(2):
        one = One(flow_idle=3.0)
        ended: list[OtherFlow] = []
        for ts, f in frames:
            one.feed(ts, f)
            ended += one.engine.other.ended
            one.engine.other.ended.clear()
        runs.append((generations(one.engine),
                     [(f.id, f.packets, f.end_tick) for f in ended]))
    assert runs[0] == runs[1]
    assert len(runs[0][1]) > 100  # many generations ended, or this could not fail
    shard = Engine(Settings(flow_idle=3.0), auto_tick=False, display=False)
    track_changes(shard, False)
    clock = PacketClock()
    ended = []
    for n, (ts, f) in enumerate(frames, 1):
        records = [(ts, CTL_TICK, b"", 0)] if clock.advance(ts) else []
        records.append((ts, 0, f, len(f)))
        feed_records(shard, [n] * len(records), records, IFACES,
                     lambda _n, rec: shard.tick(rec[0]))
        ended += shard.other.ended
        shard.other.ended.clear()
    assert (generations(shard), [(f.id, f.packets, f.end_tick) for f in ended]) == runs[0]


def test_later_fragment_after_its_flow_ended_counts_in_a_new_flow() -> None:
    """frag_firsts remembers a datagram's first fragment for 60 s; with a shorter flow_idle
    the flow may end meanwhile. The later fragment then starts the key's next generation:
    an ended flow, already published as final, never counts again."""
    one = One(flow_idle=5.0)
    e = one.engine
    first = eth(ipv4(CLIENT, SERVER, 17, udp(7000, 7001, 100)[:48], ipid=77, frag=0x2000))
    later = eth(ipv4(CLIENT, SERVER, 17, bytes(60), ipid=77, frag=6))  # offset 48 bytes
    one.feed(T0, first)
    (gen1,) = e.other.flows.values()
    one.feed(T0 + 1.0, udp_frame(9))  # another flow
    one.feed(T0 + 8.0, later)  # the tick at T0 + 8 ended gen1 (idle 8 s)
    assert gen1.ended and (gen1.packets, gen1.bytes) == (1, 68)
    gen2 = e.other.flows[gen1.key]
    assert gen2 is not gen1 and (gen2.id, gen2.packets, gen2.bytes) == (3, 1, 80)
    assert (gen2.sport, gen2.dport) == (7000, 7001)
    assert e.other.line_count == 3  # the later fragment still gets its line


def test_without_change_tracking_ended_flows_are_not_kept() -> None:
    engine = Engine(Settings(flow_idle=1.0), display=False)
    for i in range(1000):
        f = udp_frame(1000 + i)
        engine.feed(T0 + i, "eth0", decode(1, f, len(f)), i + 1)
    assert len(engine.other.flows) <= 2 and engine.other.ended == []
    assert engine.other.expired >= 998


# ---- 2. the merger ----------------------------------------------------------------------

KEY = ("eth0", 3, 1, SERVER, CLIENT, 3, 3)  # an ICMP port unreachable flow
KEY2 = ("eth0", 2, 17, CLIENT, SERVER, 5000, 53)


def ftuple(key: tuple, fid: int, packets: int, start: float, first: float, last: float,
           end: float | None = None, size: int = 56) -> tuple:
    return (*key, packets, packets * size, first, last, fid, end is not None, start,
            INF if end is None else end)


def pub(shard: int, tick: float, *flows: tuple, final: bool = False) -> Publication:
    return Publication(shard, 0, 0, tick, flows=list(flows),
                       summary=summary_tuple(Engine().summary), final=final, tick_time=tick)


def pending(m: Merger) -> int:
    return sum(map(len, m.flow_pending.values()))


def parts(m: Merger) -> int:
    return sum(map(len, m.flow_parts))


def seen(feed: ChangeFeed, into: dict) -> dict:
    for fv in feed.take()[2]:
        prev = into.get(fv.id)
        assert prev is None or not prev[-1], "an ended flow is never handed out again"
        assert prev is None or prev[1] <= fv.packets
        into[fv.id] = (fv.sport, fv.packets, fv.bytes, fv.first_seen, fv.last_seen, fv.ended)
    return into


def test_parts_of_two_shards_make_one_flow_until_all_have_ended() -> None:
    m = Merger(2)
    feed = m.subscribe()
    got: dict = {}
    m.apply(pub(0, 101.0, ftuple(KEY, 10, 3, 100.0, 100.2, 100.9)))
    m.apply(pub(1, 100.0))
    # shard 1 may still be in the second of tick 100, with a part of its own that began then
    assert m.flows == {} and pending(m) == 1
    m.apply(pub(1, 101.0, ftuple(KEY, 20, 2, 100.0, 100.1, 100.5)))
    (fv,) = m.flows.values()
    assert (fv.id, fv.packets, fv.bytes, fv.first_seen, fv.last_seen) == (1, 5, 280, 100.1, 100.9)
    # shard 0's part ends; shard 1's goes on
    m.apply(pub(0, 110.0, ftuple(KEY, 10, 3, 100.0, 100.2, 100.9, end=110.0)))
    m.apply(pub(1, 112.0, ftuple(KEY, 20, 4, 100.0, 100.1, 111.5)))
    assert not fv.ended and fv.packets == 7 and fv.last_seen == 111.5
    # a new part in shard 0 (its first ended): taken once shard 1 has passed tick 112
    m.apply(pub(0, 113.0, ftuple(KEY, 30, 1, 112.0, 112.4, 112.4)))
    assert fv.packets == 7 and pending(m) == 1
    # shard 1's part was alive at tick 112 (it ended at 122): the same flow, as one
    # engine's flow would have gone on
    m.apply(pub(1, 122.0, ftuple(KEY, 20, 4, 100.0, 100.1, 111.5, end=122.0)))
    assert list(m.flows) == [1] and fv.packets == 8
    m.apply(pub(0, 121.0, ftuple(KEY, 30, 1, 112.0, 112.4, 112.4, end=120.0)))
    assert not fv.ended  # shard 0 has not passed tick 122: a part may still join
    m.apply(pub(0, 122.0))
    assert fv.ended and m.flows == {} and parts(m) == 0 and m.flow_latest == {}
    assert seen(feed, got) == {1: (3, 8, 448, 100.1, 112.4, True)}
    # the next part of the key is a new flow, counted from zero
    m.apply(pub(0, 131.0, ftuple(KEY, 40, 2, 130.0, 130.5, 130.6)))
    m.apply(pub(1, 131.0))
    assert [(f.id, f.packets, f.first_seen) for f in m.flows.values()] == [(2, 2, 130.5)]
    assert seen(feed, got)[2] == (3, 2, 112, 130.5, 130.6, False)


def test_a_lagging_shard_can_still_join_a_flow_the_others_ended() -> None:
    """Shard 0's part ended at tick 110; shard 1, behind, has a part that began at tick 104
    (while the flow lived). One engine would have counted both in one flow: the merger
    waits until every shard has passed tick 110 before ending it."""
    m = Merger(2)
    m.apply(pub(0, 112.0, ftuple(KEY, 10, 3, 100.0, 100.2, 104.9, end=110.0)))
    m.apply(pub(1, 101.0))
    (fv,) = m.flows.values()
    assert fv.open_parts == 0 and not fv.ended
    m.apply(pub(1, 106.0, ftuple(KEY, 20, 2, 104.0, 104.5, 105.5)))
    assert list(m.flows) == [1] and fv.packets == 5 and not fv.ended
    # and a part that began when the flow had ended (tick 118 >= its last end) is a new one
    m.apply(pub(1, 119.0, ftuple(KEY, 20, 2, 104.0, 104.5, 105.5, end=116.0),
                ftuple(KEY, 50, 1, 118.0, 118.2, 118.2)))
    m.apply(pub(0, 119.5))
    assert fv.ended and fv.packets == 5
    assert [(f.id, f.packets) for f in m.flows.values()] == [(2, 1)]


def test_a_dead_shards_parts_end_and_its_successor_counts_anew() -> None:
    m = Merger(2)
    feed = m.subscribe()
    got: dict = {}
    m.apply(pub(0, 101.0, ftuple(KEY, 10, 3, 100.0, 100.2, 100.5)))
    m.apply(pub(1, 101.0, ftuple(KEY, 11, 2, 100.0, 100.3, 100.6),
                ftuple(KEY2, 12, 4, 100.0, 100.1, 100.7, size=38)))
    assert len(m.flows) == 2
    m.shard_lost(1)
    # KEY2 was only shard 1's: it ends once every shard has passed shard 1's last tick
    m.apply(pub(0, 102.0))
    assert [(f.sport, f.packets) for f in m.flows.values()] == [(3, 5)]
    assert seen(feed, got)[2] == (5000, 4, 152, 100.1, 100.7, True)
    # the successor's engine numbers its flows from its own frames: a part of its own
    # even if an id repeats; KEY is still alive (shard 0's part), so it joins
    m.apply(pub(1, 103.0, ftuple(KEY, 11, 1, 102.0, 102.5, 102.5)))
    m.apply(pub(0, 103.0))
    assert [(f.id, f.packets) for f in m.flows.values()] == [(1, 6)]
    # KEY2 again: a new flow, from zero
    m.apply(pub(1, 104.0, ftuple(KEY2, 12, 1, 103.0, 103.5, 103.5, size=38)))
    m.apply(pub(0, 104.0))
    assert [(f.id, f.sport, f.packets) for f in m.flows.values()] == [(1, 3, 6),
                                                                     (3, 5000, 1)]


def frames_for_shards(seed: int) -> list[tuple[float, bytes]]:
    """UDP from a few client ports, their ICMP port unreachables (one flow, counted in the
    shards of the datagrams they quote), gaps around flow_idle (5 s): many generations."""
    rng = random.Random(seed)
    frames = []
    t = T0
    for _ in range(1500):
        t += rng.choice((0.01, 0.2, 1.0, 4.9, 5.0, 5.1, 9.0))
        sport = 40000 + rng.randrange(12)
        r = rng.random()
        if r < 0.45:
            frames.append((t, udp_frame(sport, 7000)))
        elif r < 0.9:
            frames.append((t, unreachable(sport, 7000)))
        else:
            frames.append((t, udp_frame(7000, sport, SERVER, CLIENT)))
    return frames


def merged_run(frames: list[tuple[float, bytes]], nshards: int, rng: random.Random,
               flow_idle: float = 5.0) -> dict:
    """The pipeline in this process: ticks and the shard hash as the reader does them,
    each shard an engine publishing at random moments, processing at random speeds."""
    clock = PacketClock()
    picker = ShardPicker(nshards)
    streams: list[list] = [[] for _ in range(nshards)]
    for n, (ts, f) in enumerate(frames, 1):
        if clock.advance(ts):
            for s in streams:
                s.append((0, (ts, CTL_TICK, b"", 0)))
        s = picker.pick(1, f, len(f), 0) if nshards > 1 else 0
        streams[s].append((n, (ts, 0, f, len(f))))
    engines = [Engine(Settings(flow_idle=flow_idle), auto_tick=False, display=False)
               for _ in range(nshards)]
    for e in engines:
        track_changes(e, False)
    merger = Merger(nshards)
    feed = merger.subscribe()
    got: dict = {}
    pos = [0] * nshards
    seq = [0] * nshards
    while any(pos[i] < len(streams[i]) for i in range(nshards)):
        i = rng.randrange(nshards)
        chunk = streams[i][pos[i]:pos[i] + rng.randint(1, 120)]
        pos[i] += len(chunk)
        e = engines[i]
        feed_records(e, [c[0] for c in chunk], [c[1] for c in chunk], IFACES,
                     lambda _n, rec, e=e: e.tick(rec[0]))
        if rng.random() < 0.3:
            merger.apply(make_publication(e, i, seq[i], 0))
            seq[i] += 1
            seen(feed, got)
    for i in rng.sample(range(nshards), nshards):
        engines[i].finish()
        merger.apply(make_publication(engines[i], i, seq[i], 0, final=True))
        seen(feed, got)
    assert not merger.flow_pending
    assert parts(merger) == sum(fv.open_parts for fv in merger.flows.values())
    return got


def engine_generations(frames: list[tuple[float, bytes]], flow_idle: float = 5.0) -> dict:
    """Every flow generation one engine made, numbered in order of creation."""
    one = One(flow_idle)
    gens: list[OtherFlow] = []
    for ts, f in frames:
        one.feed(ts, f)
        gens += one.engine.other.ended
        one.engine.other.ended.clear()
    gens += one.engine.other.flows.values()
    gens.sort(key=lambda g: g.id)
    return {i: (g.sport, g.packets, g.bytes, g.first_seen, g.last_seen, g.ended)
            for i, g in enumerate(gens, 1)}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_merged_flows_are_one_engines_generations_for_any_shard_count(seed: int) -> None:
    """The merger's flows (ids, counts, times, which ended) are exactly what one engine
    makes, whatever the number of shards, however far shards lag behind each other and
    whenever they publish."""
    frames = frames_for_shards(seed)
    ref = engine_generations(frames)
    assert sum(1 for g in ref.values() if g[-1]) > 50
    icmp = [g for g in ref.values() if g[0] == 3]
    assert len(icmp) > 10 and max(g[1] for g in icmp) > 5
    rng = random.Random(seed)
    for nshards in (1, 2, 4):
        for _ in range(3):
            assert merged_run(frames, nshards, rng) == ref, nshards
    # the ICMP errors did land in several shards, or this test could not fail
    picker = ShardPicker(4)
    assert len({picker.pick(1, f, len(f), 0) for _t, f in frames if f[23] == 1}) > 1


# ---- 3. the store -----------------------------------------------------------------------

class Harness:
    """Engine -> make_publication -> Merger -> the store's writer and an IPFIX sink (no
    collector), stepped by hand: a checkpoint and an export pass at every step."""

    def __init__(self, tmp_path: Path, flow_idle: float, store: bool = True,
                 ipfix_idle: float = 15.0, ipfix_active: float = 60.0) -> None:
        self.one = One(flow_idle)
        self.merger = Merger(1)
        self.writer = None
        if store:
            db = self.db = tmp_path / "flows.db"
            self.msgs: list[str] = []
            self.store_feed = self.merger.subscribe()
            self.writer = cp.Writer(db, open_session(db, SessionInfo("replay")),
                                    self.msgs.append)
        self.sink = IpfixSink([], active=ipfix_active, idle=ipfix_idle, live=False)
        self.sink.attach(SimpleNamespace(merger=self.merger))
        self.records: list[FlowRecord] = []
        self.ckpt = 0

    def feed(self, ts: float, frame: bytes) -> None:
        self.one.feed(ts, frame)

    def step(self, final: bool = False) -> None:
        self.merger.apply(self.one.publish(final))
        if self.writer is not None:
            self.ckpt += 1
            _changed, _retired, fviews = self.store_feed.take()
            self.writer._merge(cp.Checkpoint(self.ckpt, time.monotonic(), time.time(),
                                           self.merger.now, [],
                                           [cp.FLOW_FIELDS(f) for f in fviews], (0,) * 21,
                                           final))
            self.writer._write()
            assert not self.msgs, self.msgs
        self.sink._clock(SimpleNamespace(merger=self.merger))
        self.sink.collect(self.records)
        if final:
            self.sink.flush_all(self.records)

    def close(self) -> None:
        if self.writer is not None and self.writer.conn is not None:
            self.writer.conn.close()


def test_two_generations_are_two_rows_and_samples_never_go_negative(tmp_path) -> None:
    h = Harness(tmp_path, flow_idle=5.0)
    w = h.writer
    for t in (0.0, 1.0, 2.0):
        h.feed(T0 + t, udp_frame(5000))
    h.step()  # checkpoint 1: row 1, 3 packets
    h.feed(T0 + 3.0, udp_frame(5000))
    h.step()  # 2: row 1, 4 packets
    assert w.known_flows == {1: (4, 4 * UDP_BYTES)}
    h.feed(T0 + 20.0, udp_frame(5000))  # gen 1 ends at this tick; gen 2 begins
    h.step()  # 3: gen 1 ended with nothing new: no write; gen 2 not yet taken
    assert w.known_flows == {}  # gen 1's final state is committed: forgotten
    h.feed(T0 + 21.0, udp_frame(5000))
    h.step()  # 4: row 2, 2 packets (fewer than row 1's: an update would have gone negative)
    h.feed(T0 + 22.0, udp_frame(5000))
    h.step(final=True)
    h.close()
    conn = sqlite3.connect(h.db)
    rows = conn.execute("SELECT flow_id, sport, dport, packets, bytes, first_seen, last_seen "
                        "FROM other_flows ORDER BY flow_id").fetchall()
    assert rows == [(1, 5000, 53, 4, 4 * UDP_BYTES, T0, T0 + 3.0),
                    (2, 5000, 53, 3, 3 * UDP_BYTES, T0 + 20.0, T0 + 22.0)]
    samples = conn.execute("SELECT flow_id, checkpoint, packets, bytes FROM other_samples "
                           "ORDER BY flow_id, checkpoint").fetchall()
    assert samples == [(1, 1, 3, 3 * UDP_BYTES), (1, 2, 1, UDP_BYTES),
                       (2, 4, 2, 2 * UDP_BYTES), (2, 5, 1, UDP_BYTES)]
    # the row of a flow that ended with nothing new was not written again: it still says
    # the checkpoint that last changed it
    assert conn.execute("SELECT checkpoint FROM other_flows WHERE flow_id = 1").fetchone() == (2,)
    conn.close()
    assert w.known_flows == {2: (3, 3 * UDP_BYTES)} and w.p_flows == {}



def _run_cli(cap: Path, db: Path, *extra: str) -> int:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1,
                                              signal.SIGUSR2)}
    try:
        return main(["-r", str(cap), "-B", "--db", str(db), *extra])
    finally:
        for sig, h in saved.items():
            signal.signal(sig, h)


def test_stored_generations_are_the_same_for_any_shard_count(tmp_path) -> None:
    """Two bursts 27 s apart, --flow-idle 0.1 (6 s): 24 UDP datagrams to closed ports and
    their 24 ICMP errors (one flow, spread over shards), twice. Each burst is a generation
    of every flow: 48 UDP rows of one packet, 2 ICMP rows of 24. Ids follow first
    appearance and are the same with 0 and 4 shards."""
    frames = []
    for burst in (0.0, 30.0):
        t = T0 + burst
        for i in range(24):
            frames.append((t, udp_frame(40000 + i, 7000 + i)))
            frames.append((t + 0.001, unreachable(40000 + i, 7000 + i)))
            t += 0.1
    cap = write_pcap(tmp_path / "bursts.pcap", frames)
    rows = {}
    for n in (0, 4):
        db = tmp_path / f"s{n}.db"
        assert _run_cli(cap, db, "--shards", str(n), "--flow-idle", "0.1") == 0
        conn = sqlite3.connect(db)
        rows[n] = conn.execute(
            "SELECT flow_id, kind, src, dst, sport, dport, icmp_type, icmp_code, packets, "
            "bytes, first_seen, last_seen FROM other_flows ORDER BY flow_id").fetchall()
        bad = conn.execute(
            "SELECT count(*) FROM other_flows f JOIN (SELECT flow_id, sum(packets) p, "
            "sum(bytes) b, min(packets) lo FROM other_samples GROUP BY 1) s USING (flow_id) "
            "WHERE f.packets != s.p OR f.bytes != s.b OR s.lo < 0").fetchone()[0]
        assert bad == 0
        conn.close()
    assert rows[4] == rows[0]
    r = rows[0]
    assert [x[0] for x in r] == list(range(1, 51))
    assert [x[10] for x in r] == sorted(x[10] for x in r)  # ids in order of first packet
    icmp = [x for x in r if x[1] == "icmp"]
    assert [(x[0], x[6], x[7], x[8], x[9], x[10]) for x in icmp] == [
        (2, 3, 3, 24, 24 * 56, T0 + 0.001), (27, 3, 3, 24, 24 * 56, T0 + 30.001)]
    udp_rows = [x for x in r if x[1] == "udp"]
    assert len(udp_rows) == 48 and {x[8] for x in udp_rows} == {1}
    assert len({(x[4], x[5]) for x in udp_rows}) == 24  # each key twice


# ---- 4. IPFIX export ----------------------------------------------------------------------

def test_export_has_records_for_both_generations_and_drops_the_track(tmp_path) -> None:
    """flow_idle 30 s, the exporter's idle 5 s. A gap of 19 s: the exporter's idle record,
    then a comeback of the same flow; a gap of 50 s: the flow ends (its track goes), the
    next packet is a new flow with a track of its own."""
    h = Harness(tmp_path, flow_idle=30.0, store=False, ipfix_idle=5.0)
    sink = h.sink
    ours: list[FlowRecord] = []
    fid = None
    for t, sport in [(0, 5000), (1, 5000), (10, 1), (20, 5000), (30, 1), (40, 1), (50, 1),
                     (60, 1), (70, 5000), (80, 1), (90, 1)]:
        h.feed(T0 + t, udp_frame(sport))
        h.step()
        if t == 30:
            (fid,) = [k for k, fv in sink.flow_views.items() if fv.sport == 5000]
        if t == 60:  # the tick at T0 + 50 ended it (idle 30 s): its track is gone
            assert fid not in sink.flows and fid not in sink.flow_views
            assert [fv.sport for fv in sink.flow_views.values()] == [1]
    h.step(final=True)
    ours = [r for r in h.records if r.sport == 5000]
    assert [(r.packets, r.octets, r.start_ms, r.end_ms, r.end_reason) for r in ours] == [
        (2, 2 * UDP_BYTES, int(T0 * 1000), int(T0 * 1000) + 1000, REASON_IDLE),
        (1, UDP_BYTES, int(T0 * 1000) + 20_000, int(T0 * 1000) + 20_000, REASON_IDLE),
        (1, UDP_BYTES, int(T0 * 1000) + 70_000, int(T0 * 1000) + 70_000, REASON_IDLE)]
    (gen2,) = [k for k, fv in sink.flow_views.items() if fv.sport == 5000]
    assert gen2 != fid


def test_a_flow_ending_before_the_exporters_idle_goes_out_at_its_end(tmp_path) -> None:
    h = Harness(tmp_path, flow_idle=2.0, store=False, ipfix_idle=15.0)
    h.feed(T0, udp_frame(5000))
    h.feed(T0 + 0.5, udp_frame(5000))
    h.step()
    for t in (1.0, 2.0):  # another flow: the clock ticks
        h.feed(T0 + t, udp_frame(1))
        h.step()
    assert h.records == []  # alive, and young for the exporter
    h.feed(T0 + 3.0, udp_frame(1))  # the tick at T0 + 3 ends it (idle 2.5 s)
    h.step()
    assert [(r.sport, r.packets, r.end_reason) for r in h.records] == [(5000, 2, REASON_IDLE)]
    assert [fv.sport for fv in h.sink.flow_views.values()] == [1]


# ---- 5. memory: a long run of short flows ---------------------------------------------------

def test_many_short_flows_leave_every_table_bounded(tmp_path) -> None:
    """50,000 distinct UDP flows (25,000 DNS-like queries and their answers, each from a
    port of its own) over 50 s of packet time, flow_idle 5 s: at any moment only the flows
    of the last ~6 s are live, in the engine, the merger, the store's writer and the
    exporter. Before flow expiry each of them held all 50,000 at the end."""
    h = Harness(tmp_path, flow_idle=5.0, ipfix_idle=2.0)
    e, m, w, sink = h.one.engine, h.merger, h.writer, h.sink
    resolver = ip4("10.9.0.53")
    peak: dict[str, int] = {}

    def sizes() -> dict[str, int]:
        return {"engine": len(e.other.flows), "merger flows": len(m.flows),
                "merger parts": parts(m), "merger keys": len(m.flow_latest),
                "merger pending": pending(m),
                "merger ending": sum(map(len, m.flow_ending.values())),
                "writer known": len(w.known_flows), "writer pending": len(w.p_flows),
                "export tracks": len(sink.flows), "export views": len(sink.flow_views),
                "export due": len(sink.due)}

    n = 0
    for sec in range(50):
        for i in range(500):
            t = T0 + sec + i / 500
            port = 1024 + n % 60000
            n += 1
            q = udp_frame(port, 53, CLIENT, resolver, 30)
            a = udp_frame(53, port, resolver, CLIENT, 90)
            h.feed(t, q)
            h.feed(t + 0.0005, a)
        h.step()
        for k, v in sizes().items():
            peak[k] = max(peak.get(k, 0), v)
    h.step(final=True)
    h.close()
    # live at a tick: the flows of the last 5-6 s, 1000 a second
    assert max(peak.values()) <= 8000, peak
    assert peak["engine"] >= 5000, peak  # they were kept as long as they should have been
    conn = sqlite3.connect(h.db)
    count, packets, nbytes = conn.execute(
        "SELECT count(*), sum(packets), sum(bytes) FROM other_flows").fetchone()
    assert (count, packets, nbytes) == (50_000, 50_000, 25_000 * (58 + 118))
    assert conn.execute("SELECT sum(packets), min(packets) FROM other_samples").fetchone() \
        == (50_000, 1)
    conn.close()
    assert sum(r.packets for r in h.records) == 50_000
    assert len(h.records) == 50_000  # one record per flow: each idle, none twice


# ---- 6. the option ------------------------------------------------------------------------

def test_flow_idle_option_defaults_to_two_minutes(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("IPTRAF_MP_NO_CONFIG", "1")
    p = build_parser()
    assert settings_from(p.parse_args(["-r", "x"])).flow_idle == 120.0
    # not tied to the TCP timeout
    assert settings_from(p.parse_args(["-r", "x", "--tcp-timeout", "30"])).flow_idle == 120.0
    assert settings_from(p.parse_args(["-r", "x", "--tcp-timeout", "2",
                                       "--flow-idle", "0.5"])).flow_idle == 30.0
    conf = tmp_path / "c.toml"
    conf.write_text("flow_idle = 3\n")
    assert settings_from(p.parse_args(["-r", "x", "--config", str(conf)])).flow_idle == 180.0
    assert Settings().flow_idle == 120.0 and Settings().tcp_timeout == 900.0
    assert main(["-r", "x", "-B", "--flow-idle", "0"]) == 2
    assert "--flow-idle must be positive" in capsys.readouterr().err
