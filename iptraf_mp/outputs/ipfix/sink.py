"""`--ipfix HOST:PORT`: the IPFIX output (a Sink), exporting the monitor's flows to IPFIX
collectors.

One uniflow record per direction of each TCP connection and per non-TCP flow, as deltas:
for every (pair id, direction) and every non-TCP flow we remember what was already
exported, and each record carries only what came since, so a collector that sums the
records of a flow always gets the engine's own counts.

When a record goes out (on the packet clock, as the engine's timeouts; where a delta
boundary falls depends on when the monitor is shown the changes, about four times a
second, but the sums never do):
- TCP, still open: a delta every `--ipfix-active` seconds while packets keep coming
  (flowEndReason 2). A connection that has gone quiet is not exported until it ends.
- TCP, ended: as soon as the engine sees the end (FIN/RST/ICMP -> 3, idle TIMEOUT -> 1),
  then once more when the pair leaves the engine if stragglers were counted after that;
  still open when the run ends (or its shard was lost) -> 4, forced end.
- Non-TCP flows: after `idle` seconds without packets (-> 1, the next packet starts a new
  record of the same flow), otherwise a delta every active timeout (-> 2), and what is left
  at the end of the run (-> 4). Flows are tracked by the merged flow's id, not by their
  key: when the engine ends a flow (idle for `Settings.flow_idle`, normally much longer
  than `idle`), its pending delta goes out (-> 1) and its state is dropped; the next
  packet with that key is a new flow, with a track of its own.
Deltas with neither packets nor bytes are never sent.

tcpControlBits is the OR of the flags seen: the engine keeps, per direction, the OR of
every packet's flags since the pair began (`Entry.flags_seen`), so a record carries every
flag its direction has shown up to the record's end (for an active-timeout delta, that may
include flags of earlier deltas: a superset, exact once a direction's records are ORed).

Export never stalls the monitor: the exporters are non-blocking (transport.py: DNS on a
helper thread, non-blocking sockets, TCP connects polled), so sending costs the monitor
only the encoding. Records are paced (a token bucket: `rate` a second, bursts of at most
BURST): a collector's socket buffer holds only some 100 datagrams, so a burst of thousands
(every connection of a replay ending at once) would mostly be dropped by the collector's
kernel without anyone being told. What the bucket does not allow waits in a bounded queue
for the next update, and the end of a run waits for it, within bounds. Failures are
counted and shown (`status_line()`, `problems()`); records that could not be sent are not
sent again, as with any UDP exporter.
"""

from __future__ import annotations

import heapq
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iptraf_mp.core.model import K_ICMP, K_NON_IP
from iptraf_mp.core.tcptable import END_FIN, END_ICMP, END_OPEN, END_RESET, END_TIMEOUT, Entry, Pair
from iptraf_mp.core.text import say
from iptraf_mp.outputs.sink import Monitored

from .encoder import FlowRecord
from .options import DEFAULT_ACTIVE
from .pacer import DEFAULT_RATE, Pacer
from .transport import ExporterStats, IpfixExporter

if TYPE_CHECKING:
    from iptraf_mp.core.merge import ChangeFeed, FlowView

# flowEndReason (IANA IE 136)
REASON_IDLE = 1
REASON_ACTIVE = 2
REASON_END = 3
REASON_FORCED = 4

_END_REASON = {END_FIN: REASON_END, END_RESET: REASON_END, END_ICMP: REASON_END,
               END_TIMEOUT: REASON_IDLE}  # anything else (OPEN, LOST) is a forced end
_ENDED = frozenset((END_FIN, END_RESET, END_ICMP))  # for good: only a new pair follows

DEFAULT_IDLE = 15.0  # non-TCP flows; the usual exporter default
FIRST_SYNTHETIC_IFINDEX = 0x10000  # above any real ifindex a router hands out in practice
DIRECTION_INGRESS = 0  # captures do not say which way a frame crossed the interface
DRAIN_MIN = 5.0  # seconds the end of a run waits for the queue at least
DRAIN_MAX = 60.0  # and at most


@dataclass(slots=True, eq=False)
class _Track:
    """What one uniflow has already exported, and what is pending since."""

    packets: int = 0  # exported so far
    bytes: int = 0
    seen: int = 0  # packets at the last snapshot we looked at (to OR flags only when new)
    flags: int = 0  # OR of flags seen since the last export
    pending: bool = False  # counts moved past what was exported
    queued: bool = False  # has an entry in the due heap
    start: float = 0.0  # flowStart of the pending delta
    anchor: float = 0.0  # start of the current active-timeout period
    prev_end: float = 0.0  # flowEnd of the last export
    exported: bool = False  # a record of this uniflow went out
    closed: bool = False  # the last record was an end (not active timeout): a new one follows


class IpfixSink:
    """The monitor sink: keeps delta state off the merger's change feed, feeds exporters."""

    def __init__(self, exporters: list[IpfixExporter], active: float = DEFAULT_ACTIVE,
                 idle: float | None = None, live: bool = True,
                 rate: float = DEFAULT_RATE) -> None:
        self.exporters = exporters
        self.pacer = Pacer(exporters, rate)
        self.active = active
        self.idle = min(DEFAULT_IDLE, active) if idle is None else idle
        self.live = live  # a live capture's clock also runs on when no packet comes
        self.feed: ChangeFeed | None = None
        self.tcp: dict[tuple[int, int], _Track] = {}  # (pair id, 0 for a / 1 for b)
        self.pairs: dict[int, Pair] = {}  # pairs with a track, by id
        self.flows: dict[int, _Track] = {}  # by merged flow id
        self.flow_views: dict[int, FlowView] = {}
        self.ended: dict[int, str] = {}  # pair id -> the end already exported (TIMEOUT)
        # pair id -> (a packets, a bytes, b packets, b bytes) exported, for pairs that ended
        # by FIN/RST/ICMP: they only linger in the engine, for stragglers, until they retire
        self.done: dict[int, tuple[int, int, int, int]] = {}
        self.due: list[tuple[float, int, Any]] = []  # (when, tiebreak, key) min-heap
        self._tiebreak = 0
        self.ifindex: dict[str, int] = {}
        self._next_ifindex = FIRST_SYNTHETIC_IFINDEX
        self.records = 0  # records made (each queued for every collector)
        self.skipped = 0  # changes of non-IP flows, which these templates cannot carry
        self.now = 0.0

    # ---- the sink protocol ---------------------------------------------------------------

    def attach(self, monitor: Monitored) -> None:
        self.feed = monitor.merger.subscribe()

    def update(self, monitor: Monitored) -> None:
        self._clock(monitor)
        out: list[FlowRecord] = []
        self.collect(out)
        self._send(out)

    def pump(self) -> bool:
        """Send what the rate allows now; True while records still wait.

        The monitor calls this while it waits for the shards (every PUMP_SLICE), not only at
        its updates: a pump sends at most a burst, so with four updates a second the export
        could not go faster than 4 x 1024 records a second, whatever the rate, and a busy
        link built a backlog that only the end of the run sent."""
        if self.pacer.queued:
            self.pacer.pump()
        return self.pacer.queued > 0

    def finish(self, monitor: Monitored) -> None:
        self._clock(monitor)
        out: list[FlowRecord] = []
        self.collect(out)
        self.flush_all(out)
        self._send(out)
        # The end of a run may queue every connection at once: take the time the rate
        # needs, within bounds, rather than cut the export short.
        need = self.pacer.queued / self.pacer.rate * 1.5
        if not self.pacer.drain(min(DRAIN_MAX, max(DRAIN_MIN, need))):
            say(f"IPFIX: gave up waiting to send {self.pacer.queued} records")
        for line in self.problems():
            say(line)

    def failed(self) -> list[str]:
        """Nothing: export over UDP is best effort by design; what it could not send is
        counted, shown and printed (problems()), and does not fail the run."""
        return []

    def close(self) -> None:
        for exp in self.exporters:
            exp.close()

    # ---- what the console shows ----------------------------------------------------------

    def stats(self) -> list[tuple[str, ExporterStats]]:
        return [(_where(e), e.stats) for e in self.exporters]

    def status_line(self) -> str:
        """One line for the console: records sent, dropped and errors over all collectors."""
        sent = sum(e.stats.sent_records for e in self.exporters)
        dropped = (sum(e.stats.dropped_records for e in self.exporters)
                   + self.pacer.dropped * len(self.exporters))
        errors = sum(e.stats.errors for e in self.exporters)
        line = f"IPFIX: {sent} records sent"
        if dropped or errors:
            line += f", {dropped} dropped, {errors} errors"
            last = next((e.stats.last_error for e in reversed(self.exporters)
                         if e.stats.last_error), "")
            if last:
                line += f" (last: {last})"
        return line

    def problems(self) -> list[str]:
        out = []
        if self.pacer.dropped:
            out.append(f"IPFIX: {self.pacer.dropped} records not queued (export was "
                       f"{self.pacer.max_queue} records behind)")
        for where, s in self.stats():
            if s.errors or s.dropped_records:
                out.append(f"IPFIX {where}: {s.dropped_records} records not sent, "
                           f"{s.errors} errors (last: {s.last_error or 'none'})")
        return out

    # ---- delta bookkeeping (no I/O: tests drive it directly) -----------------------------

    def _clock(self, monitor: Monitored) -> None:
        now = monitor.merger.now
        if self.live:
            now = max(now, time.time())
        # The merged clock is the newest shard's; never let it run backwards.
        self.now = max(self.now, now)

    def collect(self, out: list[FlowRecord]) -> None:
        """Take the feed's changes; append the records now due to `out`."""
        assert self.feed is not None, "attach() first"
        changed, retired, flows = self.feed.take()
        done = self.done
        for p in changed:
            pid = p.id
            if pid in done:
                continue  # ended and exported: stragglers go out when it retires
            end = p.end
            if end in _ENDED:
                self._end_pair(p, out)
                continue
            self._observe_pair(p)
            if end != END_OPEN and self.ended.get(pid) != end:
                # Timed out: what is pending goes out now rather than at retirement. (Such
                # a pair may come back to life, so it keeps its state.)
                self.ended[pid] = end
                reason = _END_REASON.get(end, REASON_FORCED)
                for side in (0, 1):
                    self._emit_tcp(p, side, reason, out)
        for p in retired:
            self._retire(p, out)
        for fv in flows:
            self._observe_flow(fv)
            if fv.ended:
                self._end_flow(fv, out)
        self._expire(out)

    def flush_all(self, out: list[FlowRecord]) -> None:
        """End of run: everything still pending goes out."""
        for p in list(self.pairs.values()):
            for side in (0, 1):
                self._emit_tcp(p, side, REASON_FORCED, out)
        for key, t in self.flows.items():
            if t.pending:
                fv = self.flow_views[key]
                idle = self.now - fv.last_seen >= self.idle
                self._emit_flow(key, t, fv, REASON_IDLE if idle else REASON_FORCED, out)
        self.due.clear()

    def _push(self, when: float, key: Any) -> None:
        self._tiebreak += 1
        heapq.heappush(self.due, (when, self._tiebreak, key))

    def _observe_pair(self, p: Pair, queue: bool = True) -> None:
        pid = p.id
        self.pairs[pid] = p
        tcp = self.tcp
        for side, e in ((0, p.a), (1, p.b)):
            packets = e.packets
            if packets == 0 and e.bytes == 0:
                continue  # a one-sided connection: no record for the silent side
            key = (pid, side)
            t = tcp.get(key)
            if t is None:
                t = tcp[key] = _Track(anchor=e.first_seen)
            if packets > t.seen:
                t.flags |= e.flags_seen
                t.seen = packets
            if not t.pending and (packets > t.packets or e.bytes > t.bytes):
                t.pending = True
                t.start = self._delta_start(t, e.first_seen, e.last_seen)
            if queue and t.pending and not t.queued:
                t.queued = True
                self._push(t.anchor + self.active, key)

    def _end_pair(self, p: Pair, out: list[FlowRecord]) -> None:
        """FIN, RST or ICMP: export what is pending, keep only the counts exported.

        Most connections are first seen already ended (they lasted less than a refresh), so
        this is the common path: no per-direction state is made for them at all.
        """
        reason = REASON_END
        if not self._close_tracked(p, reason, out):
            self._whole(p, reason, out)
        a, b = p.a, p.b
        self.done[p.id] = (a.packets, a.bytes, b.packets, b.bytes)

    def _close_tracked(self, p: Pair, reason: int, out: list[FlowRecord]) -> bool:
        """A pair with per-direction state: export what is pending of both directions and
        drop the state. False when the pair has none (nothing of it was exported yet)."""
        if p.id not in self.pairs:
            return False
        self._observe_pair(p, queue=False)
        for side in (0, 1):
            self._emit_tcp(p, side, reason, out)
            self.tcp.pop((p.id, side), None)
        del self.pairs[p.id]
        self.ended.pop(p.id, None)
        return True

    def _whole(self, p: Pair, reason: int, out: list[FlowRecord]) -> None:
        """Both directions as one record each: nothing of this pair was exported before."""
        ifindex = self._ifindex(p.iface)
        for e in (p.a, p.b):
            if e.packets or e.bytes:
                out.append(FlowRecord(
                    e.src, e.dst, e.sport, e.dport, 6, e.packets, e.bytes, e.flags_seen, ifindex,
                    DIRECTION_INGRESS, 0, _ms(e.first_seen), _ms(e.last_seen), reason,
                ))

    def _retire(self, p: Pair, out: list[FlowRecord]) -> None:
        """The pair left the engine: its final delta goes out and its state goes."""
        reason = _END_REASON.get(p.end, REASON_FORCED)
        sent = self.done.pop(p.id, None)
        if sent is not None:
            # Stragglers after the end (a last ACK, a retransmission): one more record, which
            # starts at the newest of them, the only time the engine keeps.
            ifindex = self._ifindex(p.iface)
            for e, packets, octets in ((p.a, sent[0], sent[1]), (p.b, sent[2], sent[3])):
                if e.packets > packets or e.bytes > octets:
                    out.append(FlowRecord(
                        e.src, e.dst, e.sport, e.dport, 6, e.packets - packets,
                        e.bytes - octets, e.flags_seen, ifindex, DIRECTION_INGRESS, 0,
                        _ms(e.last_seen), _ms(e.last_seen), reason,
                    ))
            return
        if self._close_tracked(p, reason, out):
            return
        # Never seen before (born and retired between two updates: a SYN flood's, or the
        # open connections at the end of a run): the whole entry is the delta.
        self._whole(p, reason, out)

    def _observe_flow(self, fv: FlowView) -> None:
        if fv.kind == K_NON_IP:
            self.skipped += 1
            return
        key = fv.id
        t = self.flows.get(key)
        if t is None:
            t = self.flows[key] = _Track(anchor=fv.first_seen)
            self.flow_views[key] = fv
        if not t.pending and (fv.packets > t.packets or fv.bytes > t.bytes):
            t.pending = True
            t.start = self._delta_start(t, fv.first_seen, fv.last_seen)
        if t.pending and not t.queued:
            t.queued = True
            self._push(min(t.anchor + self.active, fv.last_seen + self.idle), key)

    def _end_flow(self, fv: FlowView, out: list[FlowRecord]) -> None:
        """The engine ended the flow (idle): what is pending goes out, the state goes.
        (A due-heap entry may remain: it finds no track and is skipped.)"""
        t = self.flows.pop(fv.id, None)
        if t is None:
            return
        del self.flow_views[fv.id]
        if t.pending:
            self._emit_flow(fv.id, t, fv, REASON_IDLE, out)

    @staticmethod
    def _delta_start(t: _Track, first_seen: float, last_seen: float) -> float:
        """flowStart of a delta that begins now: the engine only keeps first/last seen."""
        if not t.exported:
            return first_seen
        if t.closed:
            # After an idle or end record, a new record: its first packet came after the last
            # export, no later than the newest one; with one new packet that time is exact.
            t.closed = False
            t.anchor = last_seen
            return last_seen
        # Active-timeout deltas tile time: each starts where the previous one ended.
        return t.prev_end

    def _expire(self, out: list[FlowRecord]) -> None:
        now = self.now
        due = self.due
        requeue: list[tuple[float, Any]] = []
        while due and due[0][0] <= now:
            _when, _n, key = heapq.heappop(due)
            if type(key) is tuple:  # (pair id, side); a flow's key is its merged id
                t = self.tcp.get(key)
                if t is None or not t.pending:
                    continue
                t.queued = False
                p = self.pairs[key[0]]
                e = p.b if key[1] else p.a
                if p.end != END_OPEN:
                    self._emit_tcp(p, key[1], _END_REASON.get(p.end, REASON_FORCED), out)
                elif now - e.last_seen < self.active:
                    self._emit_tcp(p, key[1], REASON_ACTIVE, out)
                # else: quiet for a whole active period; it goes out at its end (or when it
                # moves again), once, as an idle or finished connection should.
            else:
                t = self.flows.get(key)
                if t is None or not t.pending:
                    continue
                t.queued = False
                fv = self.flow_views[key]
                if now - fv.last_seen >= self.idle:
                    self._emit_flow(key, t, fv, REASON_IDLE, out)
                elif now >= t.anchor + self.active:
                    self._emit_flow(key, t, fv, REASON_ACTIVE, out)
                else:
                    requeue.append((min(t.anchor + self.active, fv.last_seen + self.idle), key))
                    t.queued = True
        for when, key in requeue:
            self._push(when, key)

    def _emit_tcp(self, p: Pair, side: int, reason: int, out: list[FlowRecord]) -> None:
        t = self.tcp.get((p.id, side))
        if t is None or not t.pending:
            return
        e: Entry = p.b if side else p.a
        if e.packets > t.seen:
            t.flags |= e.flags_seen
            t.seen = e.packets
        packets = e.packets - t.packets
        octets = e.bytes - t.bytes
        t.pending = False
        if packets <= 0 and octets <= 0:
            return
        out.append(FlowRecord(
            e.src, e.dst, e.sport, e.dport, 6, packets, octets, t.flags,
            self._ifindex(p.iface), DIRECTION_INGRESS, 0, _ms(t.start), _ms(e.last_seen), reason,
        ))
        t.packets, t.bytes = e.packets, e.bytes
        t.flags = 0
        t.prev_end = e.last_seen
        t.anchor = self.now
        t.exported = True
        t.closed = reason != REASON_ACTIVE

    def _emit_flow(self, key: int, t: _Track, fv: FlowView, reason: int,
                   out: list[FlowRecord]) -> None:
        packets = fv.packets - t.packets
        octets = fv.bytes - t.bytes
        t.pending = False
        if packets <= 0 and octets <= 0:
            return
        if fv.kind == K_ICMP:
            sport = dport = 0
            icmp = (fv.sport & 0xFF) << 8 | (fv.dport & 0xFF)
        else:
            sport, dport, icmp = fv.sport, fv.dport, 0
        out.append(FlowRecord(
            fv.src, fv.dst, sport, dport, fv.proto, packets, octets, 0,
            self._ifindex(fv.iface), DIRECTION_INGRESS, icmp, _ms(t.start), _ms(fv.last_seen),
            reason,
        ))
        t.packets, t.bytes = fv.packets, fv.bytes
        t.prev_end = fv.last_seen
        t.anchor = self.now
        t.exported = True
        t.closed = reason != REASON_ACTIVE

    def _ifindex(self, name: str) -> int:
        idx = self.ifindex.get(name)
        if idx is None:
            try:
                idx = socket.if_nametoindex(name)
            except OSError:
                # Not an interface of this host (a replayed file's "if0", say): a number of
                # our own, stable for the run and clear of the host's real indexes.
                idx = self._next_ifindex
                self._next_ifindex += 1
            self.ifindex[name] = idx
        return idx

    def _send(self, records: list[FlowRecord]) -> None:
        if records:
            self.records += len(records)
            self.pacer.put(records)
        self.pacer.pump()  # also what earlier updates left over


def _ms(ts: float) -> int:
    return int(ts * 1000)


def _where(exp: IpfixExporter) -> str:
    host = f"[{exp.host}]" if ":" in exp.host else exp.host
    return f"{exp.transport}://{host}:{exp.port}"

