"""What a flow engine publishes of what changed, and how the main process takes it.

A shard sends a `Publication` over a pipe (pickled) at every refresh or epoch; --shards 0
hands the merger the engine's own objects (`share`). Pairs, entries, flows and the summary
travel as fixed-shape tuples, each shape declared once here (`PairWire`, ...) and unpacked by
name where it is read. NamedTuples would carry the names at run time too, but they cost two
to three times as much to make, pickle and unpickle (measured: 2.2 us a record as a tuple,
6.7 us as a NamedTuple), which a million pairs pay at every checkpoint.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

import cython

from .engine import Counter, Engine, Summary
from .othertable import OtherFlow, OtherLine
from .tcptable import Entry, Pair, TcpEvent

MAX_LINES_PER_PUBLICATION = 512  # the lower window never shows more
HALFOPEN_TOP = 16  # destinations with the most lone SYNs, per publication
EPOCH_NONE = -1  # a live shard's publications: by its own timer
EPOCH_FINAL = 1 << 62  # a replay shard's last publication


# src, sport, dst, dport, packets, bytes, last_size, window, flags, smac, finsent, finack,
# reset, first_seen, last_seen, flags_seen: Entry's fields in its order
EntryWire: TypeAlias = tuple[bytes, int, bytes, int, int, int, int, int, int, bytes | None,
                             int, int, bool, float, float, int]
# id, iface, partial, first_seen, last_seen, closed, timed_out, end, retired, ended, a, b
PairWire: TypeAlias = tuple[int, str, bool, float, float, bool, bool, str, bool, bool,
                            EntryWire, EntryWire]
# the flow's key (iface, kind, proto, src, dst, sport, dport), then packets, bytes,
# first_seen, last_seen, the engine's id for this generation of the key, whether it ended,
# and the packet times of the tick before its first packet and of the tick that ended it
# (start_tick, end_tick; inf while open)
FlowWire: TypeAlias = tuple[str, int, int, bytes, bytes, int, int, int, int, float, float, int,
                            bool, float, float]
FlowKey: TypeAlias = tuple[str, int, int, bytes, bytes, int, int]
CounterWire: TypeAlias = tuple[int, int]  # packets, bytes
# frames, malformed, untracked, evicted_flows, then ip, tcp, udp, icmp, other_ip, non_ip,
# then (interface, packets, bytes) of each interface
SummaryWire: TypeAlias = tuple[int, int, int, int, CounterWire, CounterWire, CounterWire,
                               CounterWire, CounterWire, CounterWire,
                               tuple[tuple[str, int, int], ...]]
HalfOpenWire: TypeAlias = tuple[str, bytes, int]  # iface, destination, lone SYNs


@cython.ccall
def entry_tuple(e: Entry) -> EntryWire:
    return (e.src, e.sport, e.dst, e.dport, e.packets, e.bytes, e.last_size, e.window, e.flags,
            e.smac, e.finsent, e.finack, e.reset, e.first_seen, e.last_seen, e.flags_seen)


@cython.ccall
def pair_tuple(p: Pair) -> PairWire:
    return (p.id, p.iface, p.partial, p.first_seen, p.last_seen, p.closed, p.timed_out, p.end,
            p.retired, p.ended, entry_tuple(p.a), entry_tuple(p.b))


@cython.ccall
def pair_from_tuple(t: PairWire) -> Pair:
    pid, iface, partial, first, last, closed, timed_out, end, retired, ended, a, b = t
    p = Pair(pid, iface, Entry(*a), Entry(*b), partial, first, last)
    p.closed, p.timed_out, p.end, p.retired, p.ended = closed, timed_out, end, retired, ended
    return p


@cython.ccall
def update_pair(p: Pair, t: PairWire) -> cython.void:
    """Refresh a mirror pair in place, keeping its screen row."""
    (_pid, _iface, p.partial, p.first_seen, p.last_seen, p.closed, p.timed_out, p.end,
     p.retired, p.ended, a, b) = t
    _update_entry(p.a, a)
    _update_entry(p.b, b)


@cython.cfunc
def _update_entry(e: Entry, v: EntryWire) -> cython.void:
    (e.src, e.sport, e.dst, e.dport, e.packets, e.bytes, e.last_size, e.window, e.flags,
     e.smac, e.finsent, e.finack, e.reset, e.first_seen, e.last_seen, e.flags_seen) = v


def flow_tuples(flows: Iterable[OtherFlow]) -> list[FlowWire]:
    """A shard engine's non-TCP flows, as published (FlowWire)."""
    # A comprehension: on slots, Python 3.11's specialised attribute loads are about three
    # times cheaper than an attrgetter's generic ones.
    return [(f.iface, f.kind, f.proto, f.src, f.dst, f.sport, f.dport, f.packets, f.bytes,
             f.first_seen, f.last_seen, f.id, f.ended, f.start_tick, f.end_tick) for f in flows]


def summary_tuple(s: Summary) -> SummaryWire:
    return (s.frames, s.malformed, s.untracked, s.evicted_flows,
            (s.ip.packets, s.ip.bytes), (s.tcp.packets, s.tcp.bytes),
            (s.udp.packets, s.udp.bytes), (s.icmp.packets, s.icmp.bytes),
            (s.other_ip.packets, s.other_ip.bytes), (s.non_ip.packets, s.non_ip.bytes),
            tuple((name, c.packets, c.bytes) for name, c in s.ifaces.items()))


def summary_from_tuple(t: SummaryWire) -> Summary:
    frames, malformed, untracked, evicted_flows, ip, tcp, udp, icmp, other_ip, non_ip, by = t
    return Summary(frames=frames, malformed=malformed, untracked=untracked,
                   evicted_flows=evicted_flows, ip=Counter(*ip), tcp=Counter(*tcp),
                   udp=Counter(*udp), icmp=Counter(*icmp), other_ip=Counter(*other_ip),
                   non_ip=Counter(*non_ip),
                   ifaces={name: Counter(p, b) for name, p, b in by})


@dataclass(slots=True)
class Publication:
    shard: int
    seq: int
    tick_no: int  # ticks this shard has processed: groups up to here are complete
    now: float  # the shard's packet clock
    # changed or new pairs: copies, or with `share` the engine's own
    pairs: list[PairWire] | list[Pair] = field(default_factory=list)
    # retired, by tick
    sealed: list[tuple[int, list[PairWire]]] | list[tuple[int, list[Pair]]] = \
        field(default_factory=list)
    # lower-window lines, the engine's own records (pickled as they are: a line made in
    # place goes with its frame's first bytes, decoded only where it is shown)
    lines: list[OtherLine] = field(default_factory=list)
    line_count: int = 0  # lines ever made by this shard (lines may be capped per publication)
    events: list[TcpEvent] = field(default_factory=list)  # for the log
    # other-protocol flows that changed or ended, the ended ones first
    flows: list[FlowWire] = field(default_factory=list)
    summary: SummaryWire | None = None  # cumulative
    decoded: int = 0  # packets this shard has processed
    halfopen: list[HalfOpenWire] = field(default_factory=list)  # the top destinations
    evicted: int = 0
    final: bool = False  # the shard has finished: nothing follows
    # packet time of the newest tick the shard has processed: flows that began before it are
    # all in this publication or an earlier one
    tick_time: float = float("-inf")
    # replays: the CTL_PUBLISH it answers (or EPOCH_FINAL); live: EPOCH_NONE
    epoch: int = -1


def make_publication(engine: Engine, index: int, seq: int, decoded: int,
                     final: bool = False, share: bool = False) -> Publication:
    """What changed in `engine` since the previous call (its dirty sets and queues drain).

    `share`: the merger is in this process (--shards 0): hand it the engine's own Pair
    objects instead of copies, so a million pairs are held once, not twice."""
    tcp = engine.tcp
    other = engine.other
    pairs = tcp.pairs
    dirty = tcp.dirty
    assert dirty is not None and other.dirty is not None, "track_changes was not called"
    # Pairs that changed and then retired since the last tick are not sealed yet: their new
    # state (timed out, say) goes out now all the same, as --shards 0's merger, which holds
    # the engine's own objects, shows it at once.
    unsealed = {p.id: p for p in tcp.retired} if tcp.retired else {}
    live = [p for p in dirty if p.id in pairs or p.id in unsealed]
    for p in dirty:
        p.marked = False
    dirty.clear()
    changed: list[PairWire] | list[Pair]
    sealed: list[tuple[int, list[PairWire]]] | list[tuple[int, list[Pair]]]
    if share:
        changed = live
        sealed = [(tick, list(group)) for tick, group in engine.sealed]
    else:
        changed = [pair_tuple(p) for p in live]
        sealed = [(tick, [pair_tuple(p) for p in group]) for tick, group in engine.sealed]
    engine.sealed.clear()
    # The screen shows at most the newest 512; a log file wants every line.
    keep = other.new_lines if engine.settings.log_events else \
        other.new_lines[-MAX_LINES_PER_PUBLICATION:]
    lines = list(keep)
    other.new_lines.clear()
    # Ended flows are no longer in the dirty set: their final state goes out here, once.
    flows = flow_tuples(other.ended)
    flows += flow_tuples(other.dirty)
    other.dirty.clear()
    other.ended.clear()
    events = tcp.events
    tcp.events = []
    engine.sync_counters()
    top = heapq.nlargest(HALFOPEN_TOP, tcp.halfopen.items(), key=lambda kv: kv[1])
    return Publication(index, seq, engine.tick_no, engine.now, changed, sealed, lines,
                       other.line_count, events, flows, summary_tuple(engine.summary), decoded,
                       halfopen=[(k[0], k[1], n) for k, n in top], evicted=tcp.evicted,
                       final=final, tick_time=other.tick_time)


def track_changes(engine: Engine, keep_lines: bool) -> None:
    """Make `engine` remember what changed, for make_publication."""
    engine.tcp.dirty = []
    engine.other.dirty = set()
    engine.other.keep_new = keep_lines
