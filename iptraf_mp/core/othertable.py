"""The lower window: one line per non-TCP packet (docs/decisions.md rule 13), and the same traffic
aggregated into flows for the store and for IPFIX export.

A flow is the traffic of one (interface, protocol, endpoints, ports or ICMP type/code) until
it has been idle for `idle` seconds of packet time (`Settings.flow_idle`): then it ends, and
the next packet with that key starts a new flow (a new generation: its own id, counts from
zero, its own first_seen). Without this, a router's table would grow without bound (every
DNS query from a random source port is a flow of its own).

Pure state; the line *text* is made in `lines.py`, only for the lines someone looks at.
"""

from __future__ import annotations

from collections import deque
from typing import TypeAlias

import cython

from .fastindex import FastIndex
from .frame import (
    dst_addr,
    dst_endpoint,
    dst_mac,
    dst_port,
    fast_key,
    ip_id,
    src_addr,
    src_endpoint,
    src_mac,
    src_port,
    udp_frame_len,
    udp_head,
)
from .model import FRAG_FIRST, FRAG_LATER, FRAG_NONE, K_ICMP, K_NON_IP, K_UDP, Decoded

LOWER_WINDOW_LINES = 512
# seconds. Not the TCP timeout (15 min: long-lived connections): a router's UDP is mostly
# one-query flows, and each live flow costs about 1.7 KB across the engine, the merger, the
# store writer and the exporter (tracemalloc, 20,000 live UDP flows), so 1,000 DNS queries
# a second would hold ~1.5 GB for 15 minutes. Two minutes is Linux conntrack's UDP stream
# timeout (nf_conntrack_udp_timeout_stream).
DEFAULT_FLOW_IDLE = 120.0
_NEVER = float("-inf")
_OPEN = float("inf")  # the end_tick of a flow that has not ended


# Compiled as a C record (othertable.pxd): one is made for every packet of the window.
@cython.no_gc  # (as tcptable.Entry: no cycle goes through a line or a flow)
@cython.cclass
class OtherLine:
    """One line of the lower window. A line made where its frame lies (`OtherTable.
    frame_packet`) keeps the frame's first bytes and decodes them when `d` is first read:
    on a busy link most lines scroll away unread, and a decoded record is a tuple of 19
    objects, which cost a UDP packet three times what counting it did."""

    def __init__(self, ts: float, iface: str, d: Decoded | None, frame_no: int = 0) -> None:
        self.ts = ts
        self.iface = iface
        self._d: Decoded | None = d
        self.frame_no = frame_no
        self.head: bytes | None = None  # a line made in place: its frame's first bytes
        self.tlen = 0

    @property
    def d(self) -> Decoded:
        """Everything the line shows."""
        d = self._d
        if d is None:
            d = self._d = _udp_decoded(cython.cast(bytes, self.head), self.tlen)
            self.head = None
        return d

    def __repr__(self) -> str:
        return f"OtherLine(ts={self.ts!r}, iface={self.iface!r}, d={self.d!r}, " \
               f"frame_no={self.frame_no!r})"


@cython.cfunc
def _frame_line(ts: cython.double, iface: str, head: bytes, tlen: cython.int,
                frame_no: cython.longlong) -> OtherLine:
    """The line of the plain UDP frame that begins with `head` (frame.udp_head)."""
    line: OtherLine = OtherLine.__new__(OtherLine)
    line.ts = ts
    line.iface = iface
    line._d = None
    line.frame_no = frame_no
    line.head = head
    line.tlen = tlen
    return line


def _udp_decoded(head: bytes, tlen: int) -> Decoded:
    """What `decode` gives for the plain UDP frame that begins with `head` (frame.
    udp_frame_len passed it; `tlen` is its IP length)."""
    p: cython.p_uchar = head
    return Decoded(K_UDP, 4, tlen, src_addr(p, 0), dst_addr(p, 0), 17, src_port(p, 0),
                   dst_port(p, 0), 0, 0, 0, 0, 0, FRAG_NONE, ip_id(p, 0), src_mac(p, 0),
                   dst_mac(p, 0), None, False)


# (interface, kind, protocol, source, destination, sport, dport): one flow's key
FlowKey: TypeAlias = tuple[str, int, int, bytes, bytes, int, int]
_NO_KEY: FlowKey = ("", 0, 0, b"", b"", 0, 0)


# Compiled as a C record (othertable.pxd): cython's dataclass, interpreted the standard one.
@cython.no_gc
@cython.cclass
@cython.dataclasses.dataclass(eq=False)
class OtherFlow:
    """Non-TCP traffic of one (interface, protocol, endpoints, ports or ICMP type/code) in
    one engine, from its first packet until it has been idle for the table's `idle`. What
    the store, IPFIX and the JSON say of it comes from the merger's FlowView, the sum of
    the shards' (publication.flow_tuples)."""

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
    # The number of the frame that created it, as TCP pair ids: unique in the run whatever
    # the shard, so a flow generation is named the same in one process or in many.
    id: int = 0
    ended: bool = False  # idle for the table's `idle`: it left the table for good
    # The packet-clock time of the last tick before its first packet, and of the tick that
    # ended it: the merger orders flow generations across shards by these.
    start_tick: float = _NEVER
    end_tick: float = _OPEN
    # the end of the packet-clock second of its last move to the end of `flows` (a float:
    # one comparison per packet decides whether it moves again)
    lru_next: float = 0.0
    key: FlowKey = _NO_KEY  # its key in `flows`
    # A plain IPv4 UDP flow in the table's fast index: its endpoints as numbers
    # (frame.endpoint), checked on every find (the index key is a hash), and that key;
    # None when it is not in the index.
    src_ep: int = 0
    dst_ep: int = 0
    fkey: int | None = None


# Compiled as a C record (othertable.pxd): cython's dataclass, interpreted the standard one.
@cython.dataclasses.dataclass
class OtherTable:
    max_lines: int = LOWER_WINDOW_LINES
    keep_new: bool = False  # keep every line for the log as well, until drained
    idle: float = DEFAULT_FLOW_IDLE  # a flow without packets for this long ends
    lines: deque[OtherLine] = cython.dataclasses.field(default_factory=deque)
    new_lines: list[OtherLine] = cython.dataclasses.field(default_factory=list)
    line_count: int = 0
    # Live flows, in order of their last move (lru_next): a flow moves to the end at most
    # once per second of packet time, so the oldest are first and the tick pops the idle
    # ones from the front without looking at the others.
    flows: dict[FlowKey, OtherFlow] = cython.dataclasses.field(default_factory=dict)
    # TCP/UDP datagrams whose first fragment was seen, by (src, dst, proto, IP id):
    # (time, flow key). Their later fragments get lines and count in that key's flow (the
    # key, not the flow: the flow may have ended since, and ended flows must not count).
    frag_firsts: dict[tuple[bytes, bytes, int, int], tuple[int, FlowKey]] = \
        cython.dataclasses.field(default_factory=dict)
    # flows changed since the last publication, if wanted
    dirty: set[OtherFlow] | None = None
    # ended since then (with `dirty`)
    ended: list[OtherFlow] = cython.dataclasses.field(default_factory=list)
    tick_time: float = _NEVER  # packet time of the newest tick
    expired: int = 0  # flows ended so far
    # At most this many live flows (--max-flows; shards share it out): a new flow beyond
    # ends the longest idle one early (300,000 spoofed sources held 363 MiB in one process).
    max_flows: int = 1_000_000
    evicted: int = 0  # flows ended early so, counted in the summary
    # plain IPv4 UDP flows by a hash of their endpoints and interface (frame.fast_key),
    # for the in-place path: a 64-bit key compared in C instead of a tuple of seven objects
    # made, hashed and compared for every datagram
    fast: FastIndex = cython.dataclasses.field(default_factory=FastIndex)

    def __post_init__(self) -> None:
        self.lines = deque(maxlen=self.max_lines)

    def packet(self, ts: float, iface: str, d: Decoded, frame_no: int = 0) -> None:
        """One non-TCP packet (TCP, fragments included, belongs to the TCP table).
        `frame_no` names the flow it creates, if it creates one."""
        flow: OtherFlow | None = None
        show = True
        udp_frag = d.frag if d.kind == K_UDP else FRAG_NONE
        if udp_frag == FRAG_LATER:
            first = self.frag_firsts.get((d.src, d.dst, d.proto, d.ipid))
            if first is None:
                show = False  # iptraf-ng never shows fragments that precede their first one
            else:
                key = first[1]
                flow = self.flows.get(key)
                if flow is None:  # its flow ended after the first fragment: a new one
                    flow = self._new(ts, key, frame_no)
        if flow is None:
            flow = self._flow(ts, iface, d, frame_no)
        act = self._count(ts, flow, d.iplen)
        if udp_frag == FRAG_FIRST:
            if len(self.frag_firsts) >= 8192:
                del self.frag_firsts[next(iter(self.frag_firsts))]
            # aged by whole seconds of activity: the expiry scan needs them in arrival order
            self.frag_firsts[(d.src, d.dst, d.proto, d.ipid)] = (int(act), flow.key)
        if show:
            self._line(OtherLine(ts, iface, d, frame_no))

    @cython.ccall
    @cython.exceptval(-2, check=False)
    def frame_packet(self, p: cython.p_uchar, off: cython.Py_ssize_t,
                     caplen: cython.Py_ssize_t, wirelen: cython.Py_ssize_t, ts: cython.double,
                     iface: str, iface_no: cython.int, frame_no: cython.longlong) -> cython.int:
        """`packet` for the Ethernet frame at `off` in `p`, read where it lies, when it is a
        plain UDP frame (frame.udp_frame_len); returns its IP length, or -1 when `decode`
        and `packet` must take it (nothing has changed then). Its flow is found through
        the fast index (`iface_no` is the interface's number, TcpTable.iface_no); its line
        keeps the frame's first bytes, decoded when shown (`OtherLine.d`)."""
        tlen: cython.int = udp_frame_len(p, off, caplen, wirelen)
        if tlen < 0:
            return -1
        es: cython.ulonglong = src_endpoint(p, off)
        ed: cython.ulonglong = dst_endpoint(p, off)
        fk: cython.ulonglong = fast_key(es, ed, iface_no)  # directional, as flows are
        flow: OtherFlow | None = None
        found = self.fast.get(fk)
        if found is not None:
            flow = cython.cast(OtherFlow, found)
            if flow.src_ep != es or flow.dst_ep != ed or flow.iface != iface:
                flow = None  # another flow's key: this one is found the general way
        if flow is None:
            key = (iface, K_UDP, 17, src_addr(p, off), dst_addr(p, off), es & 0xFFFF,
                   ed & 0xFFFF)
            flow = self.flows.get(key)
            if flow is None:
                flow = self._new(ts, key, frame_no)
            if found is None and flow.fkey is None:
                self.fast.put(fk, flow)
                flow.src_ep = es
                flow.dst_ep = ed
                flow.fkey = fk
        self._count(ts, flow, tlen)
        self._line(_frame_line(ts, iface, udp_head(p, off), tlen, frame_no))
        return tlen

    @cython.cfunc
    @cython.exceptval(-1.0, check=True)
    def _count(self, ts: cython.double, flow: OtherFlow, iplen: cython.int) -> cython.double:
        """A packet of `iplen` IP bytes counts in `flow`; returns its activity time."""
        flow.packets += 1
        flow.bytes += iplen
        # Activity is never before the newest tick (a packet stamped earlier by another
        # interface's clock is active now): else `flows` would fall out of lru_next order and
        # the tick's scan, which stops at the first young flow, would end flows late, by how
        # other flows in this engine happen to be placed (tcptable.py has the same rule).
        act: cython.double = ts if ts >= self.tick_time else self.tick_time
        flow.last_seen = act
        if act >= flow.lru_next:
            flows = self.flows
            key = flow.key
            del flows[key]
            flows[key] = flow
            flow.lru_next = float(int(act) + 1)
        if self.dirty is not None:
            self.dirty.add(flow)
        return act

    @cython.cfunc
    def _line(self, line: OtherLine) -> cython.void:
        self.lines.append(line)
        self.line_count += 1
        if self.keep_new:
            self.new_lines.append(line)

    def _flow(self, ts: float, iface: str, d: Decoded, frame_no: int) -> OtherFlow:
        kind = d.kind
        if kind == K_NON_IP:
            key = (iface, kind, d.proto, d.smac or b"", d.dmac or b"", 0, 0)
        elif kind == K_ICMP:
            t, c = (d.info[0], d.info[1]) if d.info else (0, 0)
            key = (iface, kind, d.proto, d.src, d.dst, t, c)
        else:
            key = (iface, kind, d.proto, d.src, d.dst, d.sport, d.dport)
        f = self.flows.get(key)
        if f is None:
            if len(self.flows) >= self.max_flows:
                self._evict()
            # _new, inlined, and no *key: most flows of a router are new (a DNS query each)
            f = self.flows[key] = OtherFlow(iface, kind, key[2], key[3], key[4], key[5],
                                            key[6], 0, 0, ts, ts, frame_no, False,
                                            self.tick_time, _OPEN, float(int(ts) + 1), key)
        return f

    def _evict(self) -> None:
        """The table is full: the longest idle flow (the first in idle order) ends now."""
        self._end([self.flows[next(iter(self.flows))]])
        self.evicted += 1

    def _new(self, ts: float, key: FlowKey, frame_no: int) -> OtherFlow:
        if len(self.flows) >= self.max_flows:
            self._evict()
        f = self.flows[key] = OtherFlow(key[0], key[1], key[2], key[3], key[4], key[5],
                                        key[6], 0, 0, ts, ts, frame_no, False,
                                        self.tick_time, _OPEN, float(int(ts) + 1), key)
        return f

    def tick(self, now: float) -> None:
        """A new second of the packet clock: flows idle for at least `idle` end."""
        if now > self.tick_time:
            self.tick_time = now
        firsts = self.frag_firsts
        sec = int(now)
        while firsts:  # oldest first: stop at the first young one, without copying
            fk = next(iter(firsts))
            if sec - firsts[fk][0] < 60:
                break
            del firsts[fk]
        flows = self.flows
        if not flows:
            return
        idle = self.idle
        # A flow's last packet came no earlier than lru_next - 1: one with lru_next above
        # this cannot have been idle long enough, nor can any after it (they are in order
        # of lru_next). Before it, the exact test, "idle for at least flow_idle" (rule 7's
        # for TCP).
        young = now + 1.0 - idle
        expired = []
        for f in flows.values():
            if f.lru_next > young:
                break
            if now - f.last_seen >= idle:
                expired.append(f)
        if expired:
            self._end(expired)

    def _end(self, expired: list[OtherFlow]) -> None:
        flows = self.flows
        dirty = self.dirty
        label = self.tick_time
        for f in expired:
            del flows[f.key]
            if f.fkey is not None:
                self.fast.remove(f.fkey)
                f.fkey = None
            f.ended = True
            f.end_tick = label
            if dirty is not None:
                # its final state is published once more, as ended, then it is forgotten
                dirty.discard(f)
                self.ended.append(f)
        self.expired += len(expired)
