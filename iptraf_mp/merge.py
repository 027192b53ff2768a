"""The main process's merged view of every shard: pairs, screen rows, lines, summary.

Applies shard `Publication`s. Retired pairs come in groups labelled by the clock tick before
which they retired; a group is released (`ready`) once every shard has passed that tick,
merged across shards and sorted by pair id — the same order a single engine produces, so
the output of a replay does not depend on the number of shards.
"""

from __future__ import annotations

import gc
from collections import deque

from shards.protocol import (
    Publication,
    pair_from_tuple,
    summary_from_tuple,
    update_pair,
)

from .engine import Summary
from .othertable import OtherFlow, OtherLine
from .tcptable import END_OPEN, Pair, SlotList

# A shard's OtherFlow, mirrored here: same fields, same meaning.
FlowView = OtherFlow


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
        self.flows: dict[tuple, FlowView] = {}

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
        self.halfopen: list[list[tuple]] = [[] for _ in range(nshards)]
        self.evicted = [0] * nshards
        self.groups: dict[int, list[Pair]] = {}  # tick label -> retired pairs (all shards)
        self.ready: list[list[Pair]] = []  # groups complete across shards, in order
        self.lines: deque = deque(maxlen=lower_lines)
        self.events: list = []  # TcpEvents, for the log (only collected with -L)
        self.log_lines: list[OtherLine] | None = None  # every new line, when a log wants them
        self.flows: dict[tuple, FlowView] = {}
        # Which (shard, incarnation) counts a flow; flows counted in several places keep
        # each place's numbers instead (see _flow_part)
        self.flow_owner: dict[tuple, tuple[int, int]] = {}
        self.flow_parts: dict[tuple, dict[tuple[int, int], tuple]] = {}
        self.incarnation = [0] * nshards  # bumped when a shard is restarted
        self.feeds: list[ChangeFeed] = []
        self.lost_pairs = 0
        self.ignore_ticks: set[int] = set()  # shards restarted: their tick counts mean nothing

    def apply(self, pub: Publication) -> None:
        sh = pub.shard
        screen: list[tuple] = []  # (time, order, pair): rows to take and rows freed
        for t in pub.pairs:
            self._update(sh, t, screen)
        for tick, group in pub.sealed:
            dest = self.groups.setdefault(tick, [])
            for t in group:
                p = self._update(sh, t, screen)
                dest.append(p)
                self.pairs.pop(p.id, None)
                self.owner.pop(p.id, None)
        # One publication covers many events; replay them in packet-time order, so that a
        # new pair takes the row of a pair that closed before it was created, as one
        # engine would do it (rule 8), whatever order the shard listed them in.
        screen.sort(key=lambda ev: (ev[0], ev[1], ev[2].id))
        for _ts, order, p in screen:
            if order == 0:
                self.display.add(p)
            else:
                self.display.mark_closed(p)
        for ts, iface, d in pub.lines:
            line = OtherLine(ts, iface, d)
            self.lines.append(line)
            if self.log_lines is not None:
                self.log_lines.append(line)
        self.events.extend(pub.events)
        part = (sh, self.incarnation[sh])
        for f in pub.flows:
            key = f[:7]
            fv = self.flows.get(key)
            if fv is None:
                fv = self.flows[key] = FlowView(*f)
                self.flow_owner[key] = part
            elif self.flow_owner.get(key) == part:
                fv.packets, fv.bytes, fv.first_seen, fv.last_seen = f[7:]
            else:
                self._flow_part(key, fv, part, f[7:])
            for feed in self.feeds:
                feed.flows[key] = fv
        self.line_counts[sh] = pub.line_count
        self.summaries[sh] = summary_from_tuple(pub.summary)
        self.ticks[sh] = pub.tick_no
        self.clock[sh] = pub.now
        self.decoded[sh] = pub.decoded
        self.halfopen[sh] = pub.halfopen
        self.evicted[sh] = pub.evicted
        if pub.final:
            self.final[sh] = True
        self._release()

    def _update(self, shard: int, t: tuple | Pair, screen: list) -> Pair:
        shared = isinstance(t, Pair)  # the engine's own object (--shards 0), not a copy
        pid = t.id if shared else t[0]
        p = self.pairs.get(pid)
        if p is None:
            p = t if shared else pair_from_tuple(t)
            self.pairs[pid] = p
            self.owner[pid] = shard
            screen.append((p.first_seen, 0, p))
        elif not shared:
            update_pair(p, t)
        if p.closed and pid not in self.display.closed:
            screen.append((p.last_seen, 1, p))
        for feed in self.feeds:
            feed.pairs[pid] = p
        return p

    def _release(self) -> None:
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

    def _flow_part(self, key: tuple, fv: FlowView, part: tuple[int, int], vals: tuple) -> None:
        """A flow counted in more than one place: ICMP errors go to the shard of the
        connection they quote, so one (source, destination, type, code) can be counted by
        several shards; and a restarted shard counts its flows again from zero. The flow is
        the sum of its parts, as one engine would have counted it."""
        parts = self.flow_parts.get(key)
        if parts is None:
            owner = self.flow_owner.pop(key)
            parts = self.flow_parts[key] = {owner: (fv.packets, fv.bytes, fv.first_seen,
                                                    fv.last_seen)}
        parts[part] = vals
        fv.packets = sum(v[0] for v in parts.values())
        fv.bytes = sum(v[1] for v in parts.values())
        fv.first_seen = min(v[2] for v in parts.values())
        fv.last_seen = max(v[3] for v in parts.values())

    def subscribe(self) -> ChangeFeed:
        feed = ChangeFeed()
        self.feeds.append(feed)
        return feed

    def shard_lost(self, shard: int) -> int:
        """A shard died: its pairs' last published state is all there is. They retire now,
        marked LOST, and are counted."""
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
        self.incarnation[shard] += 1  # its flows, too, count again from zero
        return len(group)

    def summary(self) -> Summary:
        total = Summary()
        total.merge(self.base)
        for s in self.summaries:
            total.merge(s)
        return total

    def syn_flood(self, threshold: int) -> list[tuple[str, bytes, int]]:
        """Destinations with at least `threshold` lone SYNs (S---, unanswered): the seed's
        sign of a SYN flood or a port scan. One destination may be spread over shards."""
        total: dict[tuple, int] = {}
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
