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

import struct
from collections.abc import Callable, Iterable, Mapping

from .capfile import Packet
from .decode import decode
from .engine import Engine

_STATEFUL = 0x07  # FIN, SYN, RST: the state machine must see them
_INF = float("inf")
# What the fast path reads of Ethernet + IPv4 (no options) + TCP: source MAC, total length,
# fragment word, protocol, addresses, ports, data offset, flags, window.
_ETH_IP4_TCP_FAST = struct.Struct("!6x6s2x2xH2xH1xB2x4s4sHH8xBBH")


def feed_records(engine: Engine, numbers: Iterable[int], records: Iterable[Packet],
                 ifaces: Mapping[int, tuple[str, int]],
                 other: Callable[[int, Packet], None] | None = None) -> int:
    """Feed `records` ((ts, ifindex, data, wirelen), as capture files yield them) to `engine`
    in order, each with its frame number from `numbers`; returns how many were frames.

    `ifaces` maps an interface index to (name, link type). A record whose index is not in it
    is handed to `other` with its number (a shard's control records, a pcapng interface seen
    late); with no `other` it is an error of the caller's.
    """
    tcp = engine.tcp
    live = tcp.live
    dirty = tcp.dirty
    feed = engine.feed
    unpack = _ETH_IP4_TCP_FAST.unpack_from
    get_iface = ifaces.get
    frames = nbytes = fast = 0
    # The packet clock in locals, written back before anything else may read it; the newest
    # tick's time changes only in the general path and in `other`
    now, nxt = _clock(engine)
    tick_time = tcp.clock
    now0 = now
    for frame_no, rec in zip(numbers, records, strict=True):
        ts, ifindex, data, wirelen = rec
        ifc = get_iface(ifindex)
        if ifc is None:
            if fast:
                _count(engine, fast, nbytes)
                fast = nbytes = 0
            if now != now0:
                _set_now(engine, now)
            other(frame_no, rec)  # type: ignore[misc]
            now, nxt = _clock(engine)
            tick_time = tcp.clock
            now0 = now
            continue
        frames += 1
        name, lt = ifc
        # Not a new second of the packet clock (the general path ticks), then Ethernet,
        # IPv4 without options, TCP without FIN, SYN or RST, not a fragment, lengths sane.
        if (ts <= now or ts < nxt) and lt == 1 and len(data) >= 54 and data[14] == 0x45 \
                and data[12] == 8 and not data[13]:
            smac, tlen, fragw, proto, src, dst, sport, dport, doff, flags, win = unpack(data, 0)
            if proto == 6 and not fragw & 0x3FFF and not flags & _STATEFUL and doff >= 0x50 \
                    and 20 + ((doff >> 4) << 2) <= tlen <= wirelen - 14:
                if src < dst or (src == dst and sport <= dport):
                    pair = live.get((name, src, sport, dst, dport))
                else:
                    pair = live.get((name, dst, dport, src, sport))
                # Open, already reordered in its idle list this second, and not stamped before
                # the last tick (then its activity time is the tick's). (A half-open pair
                # needs no test: its answering side has no packets yet.)
                if pair is not None and not pair.ended and ts < pair.lru_sec + 1 \
                        and ts >= tick_time:
                    a = pair.a
                    if a.sport == sport and a.src == src:
                        e, o = a, pair.b
                    else:
                        e, o = pair.b, a
                    # not the first packet this way, no MAC change, no FIN to acknowledge
                    if e.packets and smac == e.smac and o.finsent != 1:
                        if ts > now:
                            now = ts
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
        if now != now0:
            _set_now(engine, now)
        feed(ts, name, decode(lt, data, wirelen), frame_no)
        now, nxt = _clock(engine)
        tick_time = tcp.clock
        now0 = now
    if now != now0:
        _set_now(engine, now)
    if fast:
        _count(engine, fast, nbytes)
    return frames


def _clock(engine: Engine) -> tuple[float, float]:
    """The packet clock's time and where its next tick is due (a shard's ticks come as
    control records, never from packets: never due)."""
    if engine.clock is None:
        return engine.now, _INF
    return engine.clock.now, engine.clock.next


def _set_now(engine: Engine, now: float) -> None:
    """The clock advanced by fast-path packets, as `Engine.feed` would have moved it."""
    engine.now = now
    if engine.clock is not None:
        engine.clock.now = now


def _count(engine: Engine, packets: int, nbytes: int) -> None:
    """The summary lines of frames the fast path took: TCP, and so IP (rule 14)."""
    s = engine.summary
    s.frames += packets
    s.tcp.packets += packets
    s.tcp.bytes += nbytes
    s.ip.packets += packets
    s.ip.bytes += nbytes
