"""The main process's merged view of every shard: pairs, screen rows, lines, summary, flows.

Applies shard `Publication`s. Retired pairs come in groups labelled by the clock tick before
which they retired; a group is released (`ready`) once every shard has passed that tick,
merged across shards and sorted by pair id — the same order a single engine produces, so
the output of a replay does not depend on the number of shards.

Non-TCP flows the same way. One flow can be counted by several shards (an ICMP error goes to
the shard of the connection it quotes) and again from zero by a restarted shard: each
engine flow is a *part* (shard, incarnation, engine flow id), and a merged flow (`FlowView`)
is the sum of the parts a single engine would have counted as one generation of its key.
Parts carry the packet times of the ticks around their life (`start_tick`, `end_tick`), and
are taken in order of (start tick, id) once every shard has passed their start tick: then
the parts that began earlier are all known, and so is whether the newest merged flow of the
key was still alive when this part began (one of its parts began no later and had not ended
by then), in which case the part joins it; otherwise it starts a new merged flow. A merged
flow ends when all its parts have ended (or their shard died) and every shard has passed
the last end: no part can join it any more. Its final state goes to every ChangeFeed,
marked `ended`, and the merger forgets it. Merged flows are numbered in the order they are
taken, which is the order one engine creates them, for any number of shards.

Rule numbers cited here are docs/decisions.md's.
"""

from __future__ import annotations

import gc
from collections import deque
from dataclasses import dataclass
from itertools import count
from operator import itemgetter
from typing import Any, TypeAlias

from .engine import Summary
from .othertable import FlowKey, OtherLine
from .publication import (
    FlowWire,
    HalfOpenWire,
    PairWire,
    Publication,
    pair_from_tuple,
    summary_from_tuple,
    update_pair,
)
from .tcptable import END_OPEN, Pair, SlotList, TcpEvent

_INF = float("inf")
_NEVER = float("-inf")
_first = itemgetter(0)


@dataclass(slots=True, eq=False)
class FlowView:
    """One generation of a non-TCP flow (othertable.OtherFlow), merged over the shards that
    counted it: what the store, IPFIX and the JSON say of it. `id` is the merger's own
    serial (in order of creation; the store's flow_id), `ended` set once it has ended for
    good (its state is final)."""

    iface: str
    kind: int
    proto: int  # IP protocol, or EtherType for non-IP
    src: bytes  # addresses, or MACs for non-IP frames
    dst: bytes
    sport: int  # ports; for ICMP the type and code
    dport: int
    packets: int = 0
    bytes: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    id: int = 0
    ended: bool = False
    open_parts: int = 0  # parts taken that have not ended
    last_end: float = _NEVER  # the latest end_tick of its ended parts


# A part of a merged flow: [its newest FlowWire, its FlowView (None until taken), its end
# tick (inf while open)]. A list, not a record: this runs once or twice per flow, and a
# router makes a flow per DNS query.
Part: TypeAlias = list[Any]
# (packet time, 0 a new row or 1 a row freed, the pair's id, the pair): the screen's changes,
# replayed in stream order (sorted as they are: the id is unique, the pair never compared)
ScreenEvent: TypeAlias = tuple[float, int, int, Pair]


def _line_frame(line: OtherLine) -> int:
    return line.frame_no


def settle_heap() -> None:
    """Move every object alive now out of the cyclic collector's sight (gc.freeze).

    A table of a million pairs is millions of long-lived objects; each full collection would
    walk them all, which made a 1M-connection flood four times slower and worse than linear.
    Our tables hold no reference cycles, so refcounting alone frees retired pairs, frozen or
    not. Called once per publication; freezing is a list splice, not a walk.
    """
    gc.freeze()


class ChangeFeed:
    """One consumer's view of what changed since it last looked (the store and the IPFIX
    exporter each have one, so neither steals the other's changes)."""

    def __init__(self) -> None:
        self.pairs: dict[int, Pair] = {}  # changed, still in the engine
        self.retired: list[Pair] = []  # left the engine (final state), in release order
        # merged flows that changed or ended, by id; an ended one (`ended` set) is in its
        # final state and is never handed out again: a consumer drops what it keeps of it
        self.flows: dict[int, FlowView] = {}

    def take(self) -> tuple[list[Pair], list[Pair], list[FlowView]]:
        out = (list(self.pairs.values()), self.retired, list(self.flows.values()))
        self.pairs = {}
        self.retired = []
        self.flows = {}
        return out


class Merger:
    def __init__(self, nshards: int, lower_lines: int = 512) -> None:
        self.n = nshards
        self.pairs: dict[int, Pair] = {}  # mirrors of pairs not yet retired
        self.owner: dict[int, int] = {}  # pair id -> shard
        self.display = SlotList()
        self.summaries = [Summary() for _ in range(nshards)]
        self.base = Summary()  # what shards that died had counted before they died
        self.ticks = [0] * nshards
        self.final = [False] * nshards
        self.clock = [0.0] * nshards
        self.decoded = [0] * nshards
        self.line_counts = [0] * nshards
        self.halfopen: list[list[HalfOpenWire]] = [[] for _ in range(nshards)]
        self.evicted = [0] * nshards
        self.groups: dict[int, list[Pair]] = {}  # tick label -> retired pairs (all shards)
        self.ready: list[list[Pair]] = []  # groups complete across shards, in order
        self.lines: deque[OtherLine] = deque(maxlen=lower_lines)
        self.events: list[TcpEvent] = []  # TcpEvents, for the log (only collected with -L)
        self.log_lines: list[OtherLine] | None = None  # every new line, when a log wants them
        # Non-TCP flows (see the module docstring): merged flows not yet ended, by id;
        # the newest generation of each key; the parts that may still change; the parts
        # not yet taken, by start tick (then engine id); the merged flows whose parts have
        # all ended, by the last end. By tick, not in heaps: a tick holds many of them.
        self.flows: dict[int, FlowView] = {}
        self.flow_latest: dict[FlowKey, FlowView] = {}
        # per shard (its current incarnation): engine flow id -> part
        self.flow_parts: list[dict[int, Part]] = [{} for _ in range(nshards)]
        self.flow_pending: dict[float, list[tuple[int, Part]]] = {}
        self.flow_ending: dict[float, list[FlowView]] = {}
        self._flow_ids = count(1)
        self.tick_time = [_NEVER] * nshards  # the newest tick each shard has processed
        self.incarnation = [0] * nshards  # bumped when a shard is restarted
        self.feeds: list[ChangeFeed] = []
        self.lost_pairs = 0
        # Replays publish in epochs: every shard at the same position of the stream. An
        # epoch's publications are applied together once every shard has sent its own, so
        # what is shown (rows taken and freed, timeouts, the clock) is a state one engine
        # had, whichever shard ran ahead. Live shards publish by their own timers (epoch -1).
        self.sent_all = [False] * nshards  # its final publication has come (maybe staged)
        self._staged: list[deque[Publication]] = [deque() for _ in range(nshards)]
        self._epoch_seen = [-1] * nshards
        self._exempt: set[int] = set()  # dead shards, not waited for
        self.released_epoch = -1  # the newest epoch applied
        self.ignore_ticks: set[int] = set()  # shards restarted: their tick counts mean nothing

    def apply(self, pub: Publication) -> None:
        s = pub.shard
        if pub.final:
            self.sent_all[s] = True
        if pub.epoch < 0 or self.n == 1:
            self._apply(pub)
            return
        self._staged[s].append(pub)
        self._epoch_seen[s] = pub.epoch
        self._exempt.discard(s)  # a restarted shard is waited for again
        self._release_epochs()

    def _release_epochs(self) -> None:
        staged = self._staged
        while True:
            heads = [q[0].epoch for q in staged if q]
            if not heads:
                return
            e = min(heads)
            for s in range(self.n):
                if self._epoch_seen[s] < e and s not in self._exempt and not self.final[s]:
                    return  # shard s has not reached epoch e yet
            group = []
            for q in staged:
                while q and q[0].epoch == e:
                    group.append(q.popleft())
            self._apply_all(group)
            self.released_epoch = e

    def _apply(self, pub: Publication) -> None:
        self._apply_all([pub])

    def _apply_all(self, pubs: list[Publication]) -> None:
        """Publications taken together (an epoch's, one per shard): their screen events and
        lines are replayed in stream order across all of them."""
        screen: list[ScreenEvent] = []
        lines: list[OtherLine] = []
        for pub in pubs:
            self._take(pub, screen)
            lines += pub.lines
        # One publication covers many events; replay them in packet-time order, so that a
        # new pair takes the row of a pair that closed before it was created, as one
        # engine would do it (rule 8), whatever order the shards listed them in.
        screen.sort()
        display: SlotList = self.display
        p: Pair
        for _ts, order, _id, p in screen:
            if order == 0:
                display.add(p)
            else:
                display.mark_closed(p)
        if len(pubs) > 1:
            lines.sort(key=_line_frame)
        for line in lines:
            self.lines.append(line)
            if self.log_lines is not None:
                self.log_lines.append(line)
        self._release()

    def _take(self, pub: Publication, screen: list[ScreenEvent]) -> None:
        sh = pub.shard
        for t in pub.pairs:
            self._update(sh, t, screen)
        for tick, group in pub.sealed:
            dest = self.groups.setdefault(tick, [])
            for t in group:
                p = self._update(sh, t, screen)
                dest.append(p)
                self.pairs.pop(p.id, None)
                self.owner.pop(p.id, None)
        self.events.extend(pub.events)
        if pub.flows:
            self._apply_flows(sh, pub.flows)
        if pub.tick_time > self.tick_time[sh]:
            # (a restarted shard has seen no tick yet: it keeps its predecessor's)
            self.tick_time[sh] = pub.tick_time
        self.line_counts[sh] = pub.line_count
        if pub.summary is not None:
            self.summaries[sh] = summary_from_tuple(pub.summary)
        self.ticks[sh] = pub.tick_no
        self.clock[sh] = pub.now
        self.decoded[sh] = pub.decoded
        self.halfopen[sh] = pub.halfopen
        self.evicted[sh] = pub.evicted
        if pub.final:
            self.final[sh] = True

    def _update(self, shard: int, t: PairWire | Pair, screen: list[ScreenEvent]) -> Pair:
        p: Pair | None
        display: SlotList = self.display
        if isinstance(t, Pair):  # the engine's own object (--shards 0), not a copy
            pid = t.id
            p = self.pairs.get(pid)
            if p is None:
                p = self._new_mirror(shard, t, screen)
        else:
            pid = t[0]
            p = self.pairs.get(pid)
            if p is None:
                p = self._new_mirror(shard, pair_from_tuple(t), screen)
            else:
                update_pair(p, t)
        if p.closed and pid not in display.closed:
            screen.append((p.last_seen, 1, pid, p))
        for feed in self.feeds:
            feed.pairs[pid] = p
        return p

    def _new_mirror(self, shard: int, p: Pair, screen: list[ScreenEvent]) -> Pair:
        self.pairs[p.id] = p
        self.owner[p.id] = shard
        screen.append((p.first_seen, 0, p.id, p))
        return p

    def _release(self) -> None:
        """Retired pairs and flows whose turn has come (every shard has passed them)."""
        self._settle_flows()
        if all(self.final):
            done = float("inf")
        else:
            live = [t for i, t in enumerate(self.ticks)
                    if not self.final[i] and i not in self.ignore_ticks]
            done = min(live) if live else float("inf")
        for tick in sorted(k for k in self.groups if k < done):
            group = self.groups.pop(tick)
            group.sort(key=lambda p: p.id)
            self._released(group)

    def _released(self, group: list[Pair]) -> None:
        self.ready.append(group)
        for feed in self.feeds:
            for p in group:
                feed.pairs.pop(p.id, None)
            feed.retired.extend(group)

    # ---- non-TCP flows --------------------------------------------------------------------
    # A part is in flow_parts while it may still change.

    def _apply_flows(self, sh: int, flows: list[FlowWire]) -> None:
        parts = self.flow_parts[sh]
        feeds = self.feeds
        pending = self.flow_pending
        for f in flows:
            (_if, _kind, _proto, _src, _dst, _sport, _dport, packets, nbytes, _first, last,
             fid, ended, start_tick, end_tick) = f
            part = parts.get(fid)
            if part is None:
                part = [f, None, end_tick if ended else _INF]
                if not ended:
                    parts[fid] = part
                waiting = pending.get(start_tick)
                if waiting is None:
                    waiting = pending[start_tick] = []
                waiting.append((fid, part))
                continue
            fv = part[1]
            if fv is not None:
                # counts only grow: the sums move by the difference
                (_if, _kind, _proto, _src, _dst, _sport, _dport, old_packets, old_bytes,
                 *_rest) = part[0]
                fv.packets += packets - old_packets
                fv.bytes += nbytes - old_bytes
                if last > fv.last_seen:
                    fv.last_seen = last
            part[0] = f
            if ended:
                del parts[fid]  # its engine flow is gone: nothing more comes of it
                part[2] = end_tick
                if fv is not None:
                    fv.open_parts -= 1
                    self._part_ended(fv, end_tick)
            if fv is not None:
                for feed in feeds:
                    feed.flows[fv.id] = fv

    def _flows_done(self) -> float:
        """The tick every shard still running has passed (inf when none runs)."""
        live = [t for t, fin in zip(self.tick_time, self.final, strict=True) if not fin]
        return min(live) if live else _INF

    def _settle_flows(self) -> None:
        pending, ending = self.flow_pending, self.flow_ending
        if not pending and not ending:
            return
        done = self._flows_done()
        # A part that began in the interval of tick `done` may have company from a shard
        # still in that interval: its turn comes when every shard has passed the next tick.
        for tick in sorted(t for t in pending if t < done):
            group = pending.pop(tick)
            group.sort(key=_first)  # by engine id: the order one engine made them in
            for _id, part in group:
                self._take_part(part)
        for tick in sorted(t for t in ending if t <= done):
            for fv in ending.pop(tick):
                # a part may have joined it since (then it ends later) or it ended already
                if not fv.ended and fv.open_parts == 0 and fv.last_end == tick:
                    self._end_flow(fv)

    def _take_part(self, part: Part) -> None:
        f: FlowWire = part[0]
        end: float = part[2]
        (iface, kind, proto, src, dst, sport, dport, packets, nbytes, first, last, _fid,
         _ended, start_tick, _end_tick) = f
        key: FlowKey = (iface, kind, proto, src, dst, sport, dport)
        fv = self.flow_latest.get(key)
        if fv is None or (fv.open_parts == 0 and fv.last_end <= start_tick):
            # the newest generation had ended by the time this part began
            fv = FlowView(iface, kind, proto, src, dst, sport, dport, packets, nbytes, first,
                          last, next(self._flow_ids))
            self.flows[fv.id] = fv
            self.flow_latest[key] = fv
        else:
            fv.packets += packets
            fv.bytes += nbytes
            if first < fv.first_seen:
                fv.first_seen = first
            if last > fv.last_seen:
                fv.last_seen = last
        part[1] = fv
        if end == _INF:
            fv.open_parts += 1
        else:
            self._part_ended(fv, end)
        for feed in self.feeds:
            feed.flows[fv.id] = fv

    def _part_ended(self, fv: FlowView, end: float) -> None:
        """One of fv's parts has ended (open_parts already counts it out)."""
        if end > fv.last_end:
            fv.last_end = end
        if fv.open_parts == 0:
            waiting = self.flow_ending.get(fv.last_end)
            if waiting is None:
                waiting = self.flow_ending[fv.last_end] = []
            waiting.append(fv)

    def _end_flow(self, fv: FlowView) -> None:
        fv.ended = True
        del self.flows[fv.id]
        key = (fv.iface, fv.kind, fv.proto, fv.src, fv.dst, fv.sport, fv.dport)
        if self.flow_latest.get(key) is fv:
            del self.flow_latest[key]
        for feed in self.feeds:
            feed.flows[fv.id] = fv

    def _flows_lost(self, shard: int) -> None:
        """A shard died: its flows end with what it last published, as of its last tick."""
        when = self.tick_time[shard]
        parts, self.flow_parts[shard] = self.flow_parts[shard], {}  # the successor's
        for part in parts.values():
            part[2] = when
            fv = part[1]
            if fv is not None:
                fv.open_parts -= 1
                self._part_ended(fv, when)

    def subscribe(self) -> ChangeFeed:
        feed = ChangeFeed()
        self.feeds.append(feed)
        return feed

    def shard_lost(self, shard: int) -> int:
        """A shard died: its pairs' last published state is all there is. They retire now,
        marked LOST, and are counted."""
        staged = self._staged[shard]
        while staged:  # what it did publish counts, whether or not the others caught up
            self._apply(staged.popleft())
        self._exempt.add(shard)
        lost = [pid for pid, s in self.owner.items() if s == shard]
        group = []
        for pid in sorted(lost):
            p = self.pairs.pop(pid)
            del self.owner[pid]
            if p.end == END_OPEN:
                p.end = "LOST"
            p.retired = True
            group.append(p)
        if group:
            self._released(group)
        self.lost_pairs += len(group)
        self.ignore_ticks.add(shard)
        # its restarted successor counts from zero: what it had published still counts
        self.base.merge(self.summaries[shard])
        self.summaries[shard] = Summary()
        self._flows_lost(shard)
        self.incarnation[shard] += 1
        self._release_epochs()  # epochs that waited for it
        return len(group)

    def shard_gone(self, shard: int) -> None:
        """A shard was killed for good (after shard_lost): nothing more comes from it."""
        self.final[shard] = self.sent_all[shard] = True
        self._exempt.add(shard)
        self._release_epochs()
        self._release()

    def summary(self) -> Summary:
        total = Summary()
        total.merge(self.base)
        for s in self.summaries:
            total.merge(s)
        return total

    def syn_flood(self, threshold: int) -> list[tuple[str, bytes, int]]:
        """Destinations with at least `threshold` lone SYNs (S---, unanswered): IPTraf's manual's
        sign of a SYN flood or a port scan. One destination may be spread over shards."""
        total: dict[tuple[str, bytes], int] = {}
        for top in self.halfopen:
            for iface, dst, n in top:
                total[(iface, dst)] = total.get((iface, dst), 0) + n
        hits = [(k[0], k[1], n) for k, n in total.items() if n >= threshold]
        return sorted(hits, key=lambda t: -t[2])

    @property
    def line_count(self) -> int:
        return sum(self.line_counts)

    @property
    def now(self) -> float:
        return max(self.clock) if self.clock else 0.0

    def take_ready(self) -> list[list[Pair]]:
        out, self.ready = self.ready, []
        return out

    def flush(self) -> int:
        """F on the merged screen: closed rows go (the shards retire the pairs themselves)."""
        return len(self.display.flush())
