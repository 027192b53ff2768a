"""The batch fast path: most packets of a busy link change nothing but counters.

On a router almost every frame is Ethernet + option-less IPv4 + unfragmented TCP, on a
connection the table already holds, neither opening nor closing it. For such a frame the
engine's work is a dozen counter and field updates; the general path (`decode` builds a
`Decoded`, `Engine.feed` counts the summary and dispatches, `TcpTable.packet` looks for state
changes) spends most of its time in calls and record building around them.

`feed_records` runs a whole batch in one loop with everything bound to locals: a frame it
can prove plain is accounted inline; any other frame (another link type or protocol, a SYN,
FIN or RST, a new connection, the first packet of a direction, a MAC change, a half-open or
ended pair, a pending FIN acknowledgement, a new clock second, a malformed header) goes to
`decode` + `Engine.feed` unchanged. So the general path stays the reference: a differential
test replays captures both ways and requires identical results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from .decode import _ETH_IP4_TCP, decode
from .engine import Engine

# A numbered capture record: (frame_no, ts, wirelen, ifindex, data), as shards/batch.py
# carries them.
Record = tuple[int, float, int, int, bytes]

_STATEFUL = 0x07  # FIN, SYN, RST: the state machine must see them


def feed_records(engine: Engine, records: Iterable[Record],
                 ifaces: Mapping[int, tuple[str, int]],
                 other: Callable[[Record], None] | None = None) -> int:
    """Feed `records` to `engine` in order; returns how many were frames.

    `ifaces` maps an interface index to (name, link type). A record whose index is not in it
    is handed to `other` (a shard's control records, a pcapng interface seen late); with no
    `other` it is an error of the caller's.
    """
    tcp = engine.tcp
    live = tcp.live
    dirty = tcp.dirty
    clock = engine.clock
    feed = engine.feed
    unpack = _ETH_IP4_TCP.unpack_from
    get_iface = ifaces.get
    frames = nbytes = fast = 0
    for rec in records:
        frame_no, ts, wirelen, ifindex, data = rec
        ifc = get_iface(ifindex)
        if ifc is None:
            if fast:
                _count(engine, fast, nbytes)
                fast = nbytes = 0
            other(rec)  # type: ignore[misc]
            continue
        frames += 1
        name, lt = ifc
        if lt == 1 and len(data) >= 54 and data[14] == 0x45 and data[12] == 8 and not data[13]:
            (_dmac, smac, _etype, tlen, _ipid, fragw, _ttl, proto, src, dst, sport, dport, _seq,
             _ack, doff, flags, win) = unpack(data, 0)
            thl = (doff >> 4) << 2
            if proto == 6 and not fragw & 0x3FFF and not flags & _STATEFUL and thl >= 20 \
                    and 20 + thl <= tlen <= wirelen - 14:
                if src < dst or (src == dst and sport <= dport):
                    pair = live.get((name, src, sport, dst, dport))
                else:
                    pair = live.get((name, dst, dport, src, sport))
                # (a half-open pair needs no test: its answering side has no packets yet)
                if pair is not None and not pair.ended and int(ts) <= pair.lru_sec:
                    a = pair.a
                    if a.sport == sport and a.src == src:
                        e, o = a, pair.b
                    else:
                        e, o = pair.b, a
                    # not a new second of the packet clock (the general path ticks)
                    if clock is None:
                        tick = False
                    else:
                        tick = ts > clock.now and ts >= clock.next
                    if e.packets and smac == e.smac and o.finsent != 1 and not tick:
                        if clock is None:
                            if ts > engine.now:
                                engine.now = ts
                        elif ts > clock.now:
                            clock.now = ts
                            engine.now = ts
                        e.packets += 1
                        e.bytes += tlen
                        e.last_size = tlen
                        e.window = win
                        e.flags = flags
                        e.flags_seen |= flags
                        e.last_seen = ts
                        pair.last_seen = ts
                        if dirty is not None:
                            dirty.add(pair.id)
                        fast += 1
                        nbytes += tlen
                        continue
        feed(ts, name, decode(lt, data, wirelen), frame_no)
    if fast:
        _count(engine, fast, nbytes)
    return frames


def _count(engine: Engine, packets: int, nbytes: int) -> None:
    """The summary lines of frames the fast path took: TCP, and so IP (rule 14)."""
    s = engine.summary
    s.frames += packets
    s.tcp.packets += packets
    s.tcp.bytes += nbytes
    s.ip.packets += packets
    s.ip.bytes += nbytes
