"""IPFIX export: the sink's delta bookkeeping, its CLI, and the acceptance run.

The acceptance test replays the corpus with `--json` and `--ipfix` in the same run, into
nfdump's own collector `nfcapd` on a loopback port of its own, reads the flows back with
`nfdump -o json` (a decoder that shares no code with iptraf_mp) and checks every TCP
direction against the JSON. Everything is sent to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iptraf_mp.app.cli import SinkError, build_parser
from iptraf_mp.core.merge import ChangeFeed, FlowView
from iptraf_mp.core.model import K_ICMP, K_NON_IP, K_UDP, TH_ACK, TH_FIN, TH_PUSH, TH_RST, TH_SYN
from iptraf_mp.core.tcptable import END_FIN, END_OPEN, END_TIMEOUT, Entry, Pair
from iptraf_mp.outputs.ipfix.encoder import FlowRecord
from iptraf_mp.outputs.ipfix.options import make_sink
from iptraf_mp.outputs.ipfix.sink import (
    FIRST_SYNTHETIC_IFINDEX,
    REASON_ACTIVE,
    REASON_END,
    REASON_FORCED,
    REASON_IDLE,
    IpfixSink,
)
from iptraf_mp.outputs.ipfix.transport import IpfixExporter

from .conftest import CORPUS, corpus_files, need_corpus
from .test_ipfix import nfcapd

NFCAPD = shutil.which("nfcapd")
NFDUMP = shutil.which("nfdump")
TSHARK = shutil.which("tshark")

A = socket.inet_pton(socket.AF_INET, "192.0.2.1")
B = socket.inet_pton(socket.AF_INET, "198.51.100.2")
A6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
B6 = socket.inet_pton(socket.AF_INET6, "2001:db8::2")


# ---------------------------------------------------------------------------------------
# The sink driven by hand: a fake merger whose feed we fill ourselves


class FakeMonitor:
    def __init__(self) -> None:
        self.feed = ChangeFeed()
        self.merger = SimpleNamespace(now=0.0, subscribe=lambda: self.feed)


def make(active: float = 60.0, idle: float = 15.0) -> tuple[IpfixSink, FakeMonitor]:
    sink = IpfixSink([], active=active, idle=idle, live=False)
    mon = FakeMonitor()
    sink.attach(mon)
    return sink, mon


def step(sink: IpfixSink, mon: FakeMonitor, now: float, changed=(), retired=(),
         flows=()) -> list[FlowRecord]:
    mon.merger.now = now
    for p in changed:
        mon.feed.pairs[p.id] = p
    mon.feed.retired.extend(retired)
    for f in flows:
        mon.feed.flows[id(f)] = f
    sink._clock(mon)
    out: list[FlowRecord] = []
    sink.collect(out)
    return out


def pair(pid: int = 1, src: bytes = A, dst: bytes = B, iface: str = "nosuchif0") -> Pair:
    port = 39999 + pid  # pairs of one test differ by their client port
    return Pair(pid, iface, Entry(src, port, dst, 443), Entry(dst, 443, src, port),
                False, 0.0, 0.0)


def hit(e: Entry, ts: float, flags: int, size: int = 100, n: int = 1) -> None:
    """n packets in this direction with `flags`, as the engine keeps them: the last one's
    flags, and the OR of all of them."""
    if e.packets == 0:
        e.first_seen = ts
    e.packets += n
    e.bytes += size * n
    e.flags = flags
    e.flags_seen |= flags
    e.last_seen = ts


def test_short_connection_one_record_per_direction_at_its_end() -> None:
    sink, mon = make()
    p = pair()
    hit(p.a, 1000.0, TH_SYN)
    assert step(sink, mon, 1000.0, [p]) == []  # open and young: nothing due
    hit(p.b, 1000.1, TH_SYN | TH_ACK)
    hit(p.a, 1000.2, TH_ACK | TH_PUSH, n=3)
    hit(p.b, 1000.3, TH_ACK | TH_PUSH, n=2)
    assert step(sink, mon, 1000.3, [p]) == []
    hit(p.a, 1000.4, TH_FIN | TH_ACK)
    hit(p.b, 1000.5, TH_FIN | TH_ACK)
    hit(p.a, 1000.6, TH_ACK)
    p.end = END_FIN
    out = step(sink, mon, 1000.6, [p])
    assert [(r.src, r.packets, r.octets, r.end_reason) for r in out] == [
        (A, 6, 600, REASON_END), (B, 4, 400, REASON_END)]
    ra, rb = out
    # the OR of every packet's flags, including those that were never the newest packet
    # at a snapshot (A's FIN|ACK, B's SYN|ACK)
    assert ra.tcp_flags == TH_SYN | TH_ACK | TH_PUSH | TH_FIN
    assert rb.tcp_flags == TH_SYN | TH_ACK | TH_PUSH | TH_FIN
    assert (ra.start_ms, ra.end_ms) == (1_000_000, 1_000_600)
    assert (rb.start_ms, rb.end_ms) == (1_000_100, 1_000_500)
    assert (ra.sport, ra.dport, rb.sport, rb.dport) == (40000, 443, 443, 40000)
    assert ra.proto == 6 and ra.icmp_type_code == 0 and ra.direction == 0
    assert ra.ifindex == rb.ifindex == FIRST_SYNTHETIC_IFINDEX
    assert sink.tcp == {} and sink.pairs == {}  # an ended pair keeps only its counts
    # a straggler after the end (the engine still counts it, in the lingering pair) goes
    # out when the pair retires, as one more delta
    hit(p.a, 1001.0, TH_ACK)
    assert step(sink, mon, 1001.0, [p]) == []
    p.retired = True
    out = step(sink, mon, 1061.0, retired=[p])
    assert [(r.src, r.packets, r.octets, r.start_ms, r.end_ms, r.end_reason) for r in out] == [
        (A, 1, 100, 1_001_000, 1_001_000, REASON_END)]
    assert sink.done == {}


def test_ended_pair_retiring_without_stragglers_sends_nothing_more() -> None:
    sink, mon = make()
    p = pair()
    hit(p.a, 1.0, TH_SYN)
    hit(p.b, 1.1, TH_RST | TH_ACK)
    p.end = "RESET"
    out = step(sink, mon, 1.1, [p])  # first seen already ended: whole entries
    assert [(r.packets, r.tcp_flags, r.end_reason) for r in out] == [
        (1, TH_SYN, REASON_END), (1, TH_RST | TH_ACK, REASON_END)]
    p.retired = True
    assert step(sink, mon, 70.0, retired=[p]) == []
    assert sink.done == {} and sink.tcp == {}


def test_long_connection_exports_deltas_on_active_timeout_then_its_end() -> None:
    sink, mon = make(active=10.0)
    p = pair()
    records: list[FlowRecord] = []
    t = 0.0
    hit(p.a, t, TH_SYN)
    hit(p.b, t, TH_SYN | TH_ACK)
    while t < 35.0:
        t += 0.5
        hit(p.a, t, TH_ACK, size=1500)
        hit(p.b, t, TH_ACK, size=52)
        records += step(sink, mon, t, [p])
    active = [r for r in records if r.end_reason == REASON_ACTIVE]
    assert len(active) == 6  # at 10, 20 and 30 s, both directions
    # consecutive deltas of a direction tile time: each starts where the previous ended
    a_recs = [r for r in active if r.src == A]
    assert a_recs[0].start_ms == 0
    assert all(x.end_ms == y.start_ms for x, y in zip(a_recs, a_recs[1:], strict=False))
    hit(p.a, t + 0.1, TH_FIN | TH_ACK)
    p.end = END_FIN
    records += step(sink, mon, t + 0.1, [p])
    assert records[-1].end_reason == REASON_END
    assert sum(r.packets for r in records if r.src == A) == p.a.packets
    assert sum(r.octets for r in records if r.src == A) == p.a.bytes
    assert sum(r.packets for r in records if r.src == B) == p.b.packets
    assert sum(r.octets for r in records if r.src == B) == p.b.bytes


def test_quiet_connection_waits_for_its_timeout_and_open_at_exit_is_forced() -> None:
    sink, mon = make(active=10.0)
    p, q = pair(1), pair(2, A6, B6)
    hit(p.a, 0.0, TH_SYN)
    hit(q.a, 0.0, TH_SYN)
    hit(q.b, 0.1, TH_SYN | TH_ACK)
    assert step(sink, mon, 0.1, [p, q]) == []
    # 100 s without a packet: not "long", so no active-timeout record
    assert step(sink, mon, 100.0) == []
    p.end, p.timed_out = END_TIMEOUT, True
    out = step(sink, mon, 900.0, [p])
    assert [(r.packets, r.end_reason) for r in out] == [(1, REASON_IDLE)]
    # the run ends: q is still open and retires as such, IPv6
    q.retired = True
    out = step(sink, mon, 901.0, retired=[q])
    assert [(len(r.src), r.packets, r.end_reason) for r in out] == [
        (16, 1, REASON_FORCED), (16, 1, REASON_FORCED)]
    # a pair lost with its shard ends forced too
    lost = pair(3)
    hit(lost.a, 902.0, TH_SYN)
    lost.end = "LOST"
    out = step(sink, mon, 902.0, retired=[lost])
    assert [r.end_reason for r in out] == [REASON_FORCED]


def test_one_sided_connection_has_no_record_for_the_silent_side() -> None:
    sink, mon = make()
    p = pair()
    hit(p.a, 5.0, TH_SYN, n=3)
    p.end = "OPEN"
    out = step(sink, mon, 5.0, retired=[p])
    assert len(out) == 1 and out[0].src == A and out[0].packets == 3


def test_timed_out_pair_that_comes_back_and_closes() -> None:
    sink, mon = make(active=10.0)
    p = pair()
    hit(p.a, 0.0, TH_SYN)
    step(sink, mon, 0.0, [p])
    p.end = END_TIMEOUT
    assert [r.end_reason for r in step(sink, mon, 900.0, [p])] == [REASON_IDLE]
    hit(p.a, 905.0, TH_ACK | TH_FIN)
    hit(p.b, 905.1, TH_ACK | TH_FIN)
    p.end = END_FIN
    out = step(sink, mon, 905.1, [p])
    assert [(r.src, r.packets, r.end_reason) for r in out] == [(A, 1, REASON_END),
                                                               (B, 1, REASON_END)]
    # a new record after the idle one: it starts with the packets that came back
    assert (out[0].start_ms, out[1].start_ms) == (905_000, 905_100)


_FLOW_IDS = itertools.count(1)


def flow(kind: int = K_UDP, proto: int = 17, sport: int = 5353, dport: int = 53,
         src: bytes = A, dst: bytes = B, iface: str = "lo") -> FlowView:
    # the exporter tracks a flow by the merger's id: each made here is a flow of its own
    return FlowView(iface, kind, proto, src, dst, sport, dport, 0, 0, 0.0, 0.0,
                    id=next(_FLOW_IDS))


def fhit(f: FlowView, ts: float, size: int = 80) -> None:
    if f.packets == 0:
        f.first_seen = ts
    f.packets += 1
    f.bytes += size
    f.last_seen = ts


def test_non_tcp_flows_end_on_idle_and_start_afresh() -> None:
    sink, mon = make(active=60.0, idle=15.0)
    f = flow()
    fhit(f, 100.0)
    assert step(sink, mon, 100.0, flows=[f]) == []
    fhit(f, 101.0)
    assert step(sink, mon, 101.0, flows=[f]) == []
    out = step(sink, mon, 116.5)
    assert [(r.packets, r.octets, r.end_reason, r.start_ms, r.end_ms) for r in out] == [
        (2, 160, REASON_IDLE, 100_000, 101_000)]
    assert out[0].ifindex == socket.if_nametoindex("lo")
    assert out[0].tcp_flags == 0 and (out[0].sport, out[0].dport) == (5353, 53)
    # a packet after the idle end opens a new record, starting at that packet
    fhit(f, 500.0)
    step(sink, mon, 500.0, flows=[f])
    out = step(sink, mon, 520.0)
    assert [(r.packets, r.start_ms, r.end_ms, r.end_reason) for r in out] == [
        (1, 500_000, 500_000, REASON_IDLE)]


def test_busy_non_tcp_flow_gets_active_deltas_and_a_forced_end() -> None:
    sink, mon = make(active=10.0, idle=5.0)
    f = flow()
    out: list[FlowRecord] = []
    t = 0.0
    while t < 25.0:
        t += 1.0
        fhit(f, t)
        out += step(sink, mon, t, flows=[f])
    assert [r.end_reason for r in out] == [REASON_ACTIVE, REASON_ACTIVE]
    sink.flush_all(out)
    assert out[-1].end_reason == REASON_FORCED
    assert sum(r.packets for r in out) == f.packets == 25


def test_icmp_type_code_and_non_ip_skipped() -> None:
    sink, mon = make(idle=1.0)
    icmp = flow(K_ICMP, 1, 8, 0)  # echo request: type 8, code 0 in the port fields
    unreach6 = flow(K_ICMP, 58, 1, 4, A6, B6)
    arp = flow(K_NON_IP, 0x0806, 0, 0, b"\x02" * 6, b"\xff" * 6)
    for f in (icmp, unreach6, arp):
        fhit(f, 10.0)
    step(sink, mon, 10.0, flows=[icmp, unreach6, arp])
    out = step(sink, mon, 12.0)
    got = sorted((r.proto, r.sport, r.dport, r.icmp_type_code) for r in out)
    assert got == [(1, 0, 0, 8 << 8), (58, 0, 0, 1 << 8 | 4)]
    assert sink.skipped == 1


def test_interface_indexes_are_stable() -> None:
    sink, _ = make()
    assert sink._ifindex("lo") == socket.if_nametoindex("lo")
    assert sink._ifindex("if0") == FIRST_SYNTHETIC_IFINDEX
    assert sink._ifindex("if1") == FIRST_SYNTHETIC_IFINDEX + 1
    assert sink._ifindex("if0") == FIRST_SYNTHETIC_IFINDEX


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_exported_deltas_always_sum_to_the_engine_counts(data) -> None:
    """Any interleaving of packets, snapshots, ends and retirement: no packet counted twice
    or lost, and what was exported never exceeds what the engine had counted."""
    active = data.draw(st.sampled_from([1.0, 5.0, 60.0]))
    sink, mon = make(active=active, idle=2.0)
    pairs = [pair(i) for i in range(1, 4)]
    flows = [flow(sport=1000 + i) for i in range(2)]
    out: list[FlowRecord] = []
    t = 0.0
    for _ in range(data.draw(st.integers(1, 40))):
        t += data.draw(st.sampled_from([0.01, 0.3, 2.0, 7.0, 70.0]))
        changed, retired, fchanged = [], [], []
        for p in pairs:
            if p.retired:
                continue
            what = data.draw(st.sampled_from(["a", "b", "none", "end", "timeout", "retire"]))
            if what in "ab":
                hit(getattr(p, what), t, TH_ACK, n=data.draw(st.integers(1, 3)))
            elif what == "end":
                p.end = END_FIN
            elif what == "timeout" and p.end == END_OPEN:
                p.end = END_TIMEOUT
            elif what == "retire":
                p.retired = True
                retired.append(p)
                continue
            changed.append(p)
        for f in flows:
            if data.draw(st.booleans()):
                fhit(f, t)
                fchanged.append(f)
        out += step(sink, mon, t, changed, retired, fchanged)
        for p in pairs:
            for e in (p.a, p.b):
                assert sum(r.packets for r in sent_by(out, e)) <= e.packets
    for p in pairs:
        if not p.retired:
            p.retired = True
            out += step(sink, mon, t, retired=[p])
    sink.flush_all(out)
    assert all(r.packets > 0 or r.octets > 0 for r in out)
    for p in pairs:
        for e in (p.a, p.b):
            sent = sent_by(out, e)
            assert sum(r.packets for r in sent) == e.packets
            assert sum(r.octets for r in sent) == e.bytes
    for f in flows:
        sent = [r for r in out if r.proto == 17 and r.sport == f.sport]
        assert sum(r.packets for r in sent) == f.packets


def sent_by(out: list[FlowRecord], e: Entry) -> list[FlowRecord]:
    return [r for r in out
            if r.proto == 6 and (r.src, r.sport, r.dst, r.dport) == (e.src, e.sport, e.dst,
                                                                     e.dport)]


# ---------------------------------------------------------------------------------------
# Flags, make_sink, the sender


def parse(*argv: str):
    return build_parser().parse_args(["-r", "x.pcap", *argv])


def test_no_ipfix_no_sink() -> None:
    assert make_sink(parse()) is None


@pytest.mark.parametrize("argv, why", [
    (["--ipfix", "sctp://127.0.0.1:4739"], "not supported"),
    (["--ipfix", "127.0.0.1:99999"], "outside"),
    (["--ipfix", "::1:4739"], "brackets"),
    (["--ipfix", "127.0.0.1:4739", "--ipfix-active", "0"], "--ipfix-active"),
    (["--ipfix", "127.0.0.1:4739", "--ipfix-odid", "-1"], "--ipfix-odid"),
])  # fmt: skip
def test_bad_flags_are_one_line_errors(argv: list[str], why: str) -> None:
    with pytest.raises(SinkError) as exc:
        make_sink(parse(*argv))
    assert why in str(exc.value) and "\n" not in str(exc.value)


def test_targets_transports_and_odid() -> None:
    sink = make_sink(parse("--ipfix", "127.0.0.1:4739", "--ipfix", "tcp://[::1]:4740",
                           "--ipfix-active", "30", "--ipfix-odid", "7"))
    assert sink is not None
    try:
        assert [(e.transport, e.host, e.port) for e in sink.exporters] == [
            ("udp", "127.0.0.1", 4739), ("tcp", "::1", 4740)]
        assert sink.active == 30.0 and not sink.live
        assert all(e._encoder.odid == 7 for e in sink.exporters)
    finally:
        sink.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def some_records(n: int) -> list[FlowRecord]:
    return [FlowRecord(A, B, 1000 + i % 60000, 80, 6, 1, 60, TH_SYN, 1, 0, 0, 1, 2, 4)
            for i in range(n)]


def test_collector_down_never_stalls_and_is_counted_and_shown() -> None:
    port = free_udp_port()  # nothing listens: ICMP port unreachable on loopback
    sink = IpfixSink([IpfixExporter(f"127.0.0.1:{port}", odid=1)], rate=1e6)
    try:
        t0 = time.monotonic()
        for _ in range(20):
            sink._send(some_records(200))
        assert time.monotonic() - t0 < 0.5  # encoding only: the sockets never block
        assert sink.pacer.drain(10.0)
        s = sink.exporters[0].stats
        assert s.errors > 0 and s.dropped_records > 0
        assert s.sent_records + s.dropped_records == 4000
        line = sink.status_line()
        assert "dropped" in line and "Refused" in line and "\n" not in line
        assert sink.problems() and f"127.0.0.1:{port}" in sink.problems()[0]
    finally:
        sink.close()


@contextlib.contextmanager
def paced_sink(rate: float):
    """An IpfixSink sending to a local socket at `rate`, its pacer on a hand-moved clock:
    yields (sink, clock), clock[0] the time in seconds."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    clock = [0.0]
    sink = IpfixSink([IpfixExporter(f"127.0.0.1:{rx.getsockname()[1]}", odid=1)], rate=rate)
    sink.pacer.clock = lambda: clock[0]
    sink.pacer.last = 0.0
    try:
        yield sink, clock
    finally:
        sink.close()
        rx.close()


def test_pacing_bounds_bursts_and_sheds_when_the_queue_is_full() -> None:
    with paced_sink(10_000.0) as (sink, clock):
        pacer = sink.pacer
        pacer.max_queue = 4000
        sink._send(some_records(3000))  # the bucket holds one burst: the rest waits
        assert pacer.queued == 3000 - pacer.burst
        sink._send(some_records(3000))  # does not fit the queue: shed whole
        assert pacer.dropped == 3000
        clock[0] += 0.05  # 500 tokens later
        assert pacer.pump() == 500
        clock[0] += 10.0  # a long pause earns one burst, not more
        assert pacer.pump() == pacer.burst
        assert sink.exporters[0].stats.sent_records == 500 + 2 * pacer.burst
        assert "3000 records not queued" in sink.problems()[0]


def test_pump_between_updates_sends_at_the_rate_not_a_burst_per_update() -> None:
    """A backlog goes out at the pacer's rate through pump(), which the monitor's run calls
    while it waits: with only the updates (four a second) to send, 1024 records each, a
    link making more than ~4,000 records a second fell behind for good."""
    with paced_sink(50_000.0) as (sink, clock):
        pacer = sink.pacer
        sink._send(some_records(5000))  # an update: one burst goes at once
        sent = sink.exporters[0].stats
        assert sent.sent_records == pacer.burst == 1024
        turns = 0
        while sink.pump():  # the monitor's turns while it waits, 20 ms apart
            clock[0] += 0.02
            turns += 1
            assert turns < 10
        # 3976 records at 50,000/s, 1000 a turn 20 ms apart: the first turn (at once) finds
        # the bucket empty, the fifth sends the last 976 and says so
        assert sent.sent_records == 5000 and pacer.queued == 0
        assert turns == 4
        assert not sink.pump()  # nothing waits: nothing to do


class _QuietRun:
    """What Monitor needs of a run, for wiring tests."""

    def __init__(self) -> None:
        self.merger = SimpleNamespace()


def test_monitor_gives_paced_sinks_the_run_s_waits() -> None:
    from iptraf_mp.app.monitor import Monitor

    calls = []

    class Paced:
        def attach(self, monitor) -> None:
            pass

        def pump(self) -> bool:
            calls.append(1)
            return len(calls) < 3

    class Plain:  # the store: its writer thread paces itself
        def attach(self, monitor) -> None:
            pass

        def pump(self) -> bool:
            return False

    run = _QuietRun()
    Monitor(run, sinks=[Plain()])
    assert not run.between()  # nothing waits: the run need not wait on our account
    assert calls == []
    Monitor(run, sinks=[Plain(), Paced()])
    assert run.between() and run.between() and not run.between()
    assert len(calls) == 3


def test_pipeline_wait_gives_a_paced_sink_turns_until_its_backlog_is_out() -> None:
    import multiprocessing as mp

    from iptraf_mp.core.engine import Settings
    from shards.supervisor import PUMP_SLICE, Pipeline

    pipe = Pipeline([], 1, Settings())
    quiet, _other_end = mp.Pipe(duplex=False)  # a shard with nothing to say
    turns: list[float] = []
    try:
        def backlog(n: int):
            def between() -> bool:
                turns.append(time.monotonic())
                return len(turns) < n
            return between

        pipe.between = backlog(5)
        t0 = time.monotonic()
        assert pipe._wait([quiet], 2.0) == []
        # turns every PUMP_SLICE until the sink said it was done, then it returned: the
        # monitor's next step waits in one piece
        assert len(turns) == 5
        assert time.monotonic() - t0 < 1.0
        gaps = [b - a for a, b in itertools.pairwise(turns)]
        assert all(g >= PUMP_SLICE * 0.5 for g in gaps[1:]), gaps
        turns.clear()
        pipe.between = backlog(1)  # no backlog: a single wait of the whole timeout
        t0 = time.monotonic()
        assert pipe._wait([quiet], 0.3) == []
        assert len(turns) == 1 and time.monotonic() - t0 >= 0.29
    finally:
        quiet.close()
        _other_end.close()


# ---------------------------------------------------------------------------------------
# Acceptance: the corpus into nfcapd, back out with nfdump, against our own --json


def nfdump_ms(text: str) -> int:
    dt = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


NFDUMP_FLAG_BITS = dict(zip("CEUAPRSF", (0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01),
                            strict=True))
JSON_FLAG_BITS = {"S": TH_SYN, "P": TH_PUSH, "A": TH_ACK, "U": 0x20}


def nfdump_flags(text: str) -> int:
    return sum(NFDUMP_FLAG_BITS[c] for c in text if c != ".")


def json_flags(text: str) -> int:
    return sum(JSON_FLAG_BITS[c] for c in text if c != "-")


def addr(text: str) -> bytes:
    fam = socket.AF_INET6 if ":" in text else socket.AF_INET
    return socket.inet_pton(fam, text)


def run_with_nfcapd(tmp_path: Path, cap: Path, *extra: str) -> tuple[list[dict], list[dict],
                                                                     str]:
    """Replay `cap` with --json and --ipfix into a private nfcapd; (json, flows, log)."""
    from iptraf_mp.app.cli import main

    flowdir = tmp_path / "flows"
    flowdir.mkdir()
    with nfcapd(flowdir) as collector:
        out = tmp_path / "out.jsonl"
        rc = main(["-r", str(cap), "-B", "--no-db", "--json", str(out),
                   "--ipfix", f"127.0.0.1:{collector.port}", *extra])
        assert rc == 0
    log = collector.log
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    dump = subprocess.run([NFDUMP or "nfdump", "-R", str(flowdir), "-o", "json"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TZ": "UTC"})
    assert dump.returncode == 0, dump.stderr
    text = dump.stdout
    # nfdump writes a bare "No matching flows" inside its brackets for an empty result
    flows = [] if not text.strip() or "No matching flows" in text else json.loads(text)
    return recs, flows, log


def tshark_flags(cap: Path) -> dict[tuple, int]:
    """OR of the TCP flags of every packet, per (src, sport, dst, dport) as tshark sees it
    (innermost header when tunnelled)."""
    fields = ["ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport",
              "tcp.flags"]
    cmd = [TSHARK or "tshark", "-n", "-r", str(cap), "-Y", "tcp", "-T", "fields",
           "-E", "occurrence=l"]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out: dict[tuple, int] = defaultdict(int)
    for line in res.stdout.splitlines():
        s4, s6, sp, d4, d6, dp, fl = (line.split("\t") + [""] * 7)[:7]
        if not sp or not fl:
            continue
        src, dst = s6 or s4, d6 or d4
        out[(addr(src), int(sp), addr(dst), int(dp))] |= int(fl, 16)
    return out


CAPTURES = corpus_files("real") + corpus_files("large")
need_nfdump = pytest.mark.skipif(NFCAPD is None or NFDUMP is None,
                                 reason="nfcapd/nfdump not installed (Debian package nfdump)")


def check_against_json(cap: Path, recs: list[dict], flows: list[dict], log: str) -> int:
    """Every TCP direction of the JSON equals the collector's sum of its records; returns
    how many TCP records the collector holds."""
    assert "Sequence Errors: 0" in log, log
    want: dict[tuple, list] = defaultdict(lambda: [0, 0, 0, float("inf"), 0])
    for r in recs:
        if r["type"] != "tcp" or not (r["packets"] or r["bytes"]):
            continue
        w = want[(addr(r["src"]), r["sport"], addr(r["dst"]), r["dport"])]
        w[0] += r["packets"]
        w[1] += r["bytes"]
        w[2] |= json_flags(r["flags"])
        w[3] = min(w[3], int(r["first_seen"] * 1000))
        w[4] = max(w[4], int(r["last_seen"] * 1000))
    got: dict[tuple, list] = defaultdict(lambda: [0, 0, 0, float("inf"), 0])
    other: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    tcp_records = 0
    for f in flows:
        v6 = "src6_addr" in f
        src = addr(f["src6_addr"] if v6 else f["src4_addr"])
        dst = addr(f["dst6_addr"] if v6 else f["dst4_addr"])
        if f["proto"] != 6:
            other[f["proto"]][0] += f["in_packets"]
            other[f["proto"]][1] += f["in_bytes"]
            continue
        tcp_records += 1
        g = got[(src, f["src_port"], dst, f["dst_port"])]
        g[0] += f["in_packets"]
        g[1] += f["in_bytes"]
        g[2] |= nfdump_flags(f["tcp_flags"])
        g[3] = min(g[3], nfdump_ms(f["first"]))
        g[4] = max(g[4], nfdump_ms(f["last"]))

    assert set(got) == set(want)
    ref_flags = tshark_flags(cap) if TSHARK else {}
    for key, (packets, nbytes, flags, first, last) in want.items():
        g = got[key]
        assert (g[0], g[1]) == (packets, nbytes), key
        assert (g[3], g[4]) == (first, last), key
        # The flags the engine saw last are always exported; nothing is exported that no
        # packet of that direction carried (tshark's OR over the whole capture).
        assert g[2] & flags == flags, key
        if key in ref_flags:
            assert g[2] & ~ref_flags[key] & 0xFF == 0, key

    # Non-TCP traffic is not in the JSON per flow, only in the summary: the collector's
    # per-protocol sums must equal it.
    summary = next(r for r in recs if r["type"] == "summary")
    udp = other.pop(17, [0, 0])
    icmp = [a + b for a, b in zip(other.pop(1, [0, 0]), other.pop(58, [0, 0]), strict=True)]
    rest = [sum(v[0] for v in other.values()), sum(v[1] for v in other.values())]
    assert udp == [summary["udp"]["packets"], summary["udp"]["bytes"]]
    assert icmp == [summary["icmp"]["packets"], summary["icmp"]["bytes"]]
    assert rest == [summary["other_ip"]["packets"], summary["other_ip"]["bytes"]]
    return tcp_records


@need_nfdump
@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_nfcapd_sums_equal_the_json_of_the_same_run(cap: Path, tmp_path: Path) -> None:
    need_corpus("real")
    recs, flows, log = run_with_nfcapd(tmp_path, cap)
    check_against_json(cap, recs, flows, log)


@need_nfdump
@pytest.mark.parametrize("shards", ["0", "2"])
@pytest.mark.parametrize("name", ["ftp_ipv4.pcap", "ftp_ipv6.pcap"])
def test_nfcapd_adds_up_active_timeout_deltas(name: str, shards: str, tmp_path: Path) -> None:
    """Replayed at 25x (about 1.5 s), with a 1 s active timeout: long connections reach the
    collector as several deltas, which must add up to the JSON all the same."""
    need_corpus("real")
    cap = CORPUS / "real" / name
    recs, flows, log = run_with_nfcapd(tmp_path, cap, "--speed", "25", "--shards", shards,
                                       "--ipfix-active", "1")
    tcp_records = check_against_json(cap, recs, flows, log)
    directions = sum(1 for r in recs if r["type"] == "tcp" and r["packets"])
    if shards == "0":
        # Where deltas fall depends on when the monitor is shown the changes; the
        # one-process engine publishes on a steady beat, so there some must fall inside.
        assert tcp_records > directions
