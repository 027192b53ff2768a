"""IPTraf's TCP connection table (docs/decisions.md rules 1-12), as a pure state machine.

No I/O and no wall clock: every method takes the packet timestamp, so a replay is
deterministic. A connection is a *pair* of direction entries.

Two things are kept apart on purpose:
- the engine's pairs (`pairs`, found by `live` keys), whose lifetime depends only on the
  connection's own packets and the packet clock. An ended pair lingers for `CLOSED_LINGER`
  seconds so that late ACKs and retransmissions still count in it, and a timed-out one until
  it has been idle twice the timeout; then it is *retired* (handed to `retired` to be written).
  Because nothing here depends on other connections, the same capture gives the same pairs
  whether it runs in one process or is spread over any number of shards. That holds only if
  every idle list is in the order of the key its scan compares (the scan stops at the first
  pair that is not due, so a pair out of order waits for whoever is ahead of it, and who is
  ahead depends on which connections share the engine): so each list has one key, only ever
  appended in increasing order, and a packet's activity time is never before the last tick
  (a packet stamped earlier, from another interface's clock, counts as active at the tick).
- the screen order (`SlotList`), where a new pair takes the row of the oldest closed pair
  (rule 8) and F flushes closed rows (rule 9). A pair can leave the screen before it retires.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import TypeAlias

import cython

from .fastindex import FastIndex
from .frame import (
    be32,
    dst_addr,
    dst_endpoint,
    endpoint,
    fast_key,
    same_smac,
    src_addr,
    src_endpoint,
    src_mac,
    tcp_ack,
    tcp_flags,
    tcp_frame_len,
    tcp_payload_len,
    tcp_seq,
    tcp_window,
)
from .model import (
    FRAG_FIRST,
    FRAG_LATER,
    TH_ACK,
    TH_FIN,
    TH_RST,
    TH_SYN,
    Decoded,
    Mac,
    Quoted,
    fmt_flags,
)

# How a pair ended (the store's "how it ended"); OPEN while it has not.
END_OPEN = "OPEN"
END_FIN = "FIN"
END_RESET = "RESET"
END_ICMP = "ICMP"
END_TIMEOUT = "TIMEOUT"

# Flag sets the per-packet tests use, as C constants (compiled, the flags imported from
# model.py are Python objects, and each test of them a Python operation): FIN, SYN or RST,
# a packet the state machine must see; FIN or RST, one that may change its state.
_STATEFUL = cython.declare(cython.int, TH_FIN | TH_SYN | TH_RST)
_FIN_RST = cython.declare(cython.int, TH_FIN | TH_RST)
CLOSED_LINGER = 60.0  # seconds an ended pair still takes stragglers (a TIME_WAIT's worth)
FRAG_TABLE_MAX = 8192  # datagrams awaiting their later fragments; oldest forgotten first
FRAG_MAX_AGE = 60.0  # seconds, as a reassembly timeout would

# (interface, lower address, its port, higher address, its port): both directions' key
ConnKey: TypeAlias = tuple[str, bytes, int, bytes, int]
# a pair's id (its first frame's number): an alias, so compiled it stays an object
PairId: TypeAlias = int
FragKey: TypeAlias = tuple[bytes, bytes, int, int]  # (src, dst, IP protocol, IP id)


# Entry and Pair are compiled as C records (tcptable.pxd): cython's dataclass, which
# interpreted is the standard one. Outside the cyclic collector's sight (no_gc): they hold
# numbers, bytes, strings and each other one way, never a cycle, and the collector walking
# them took a tenth of a replay's time.
@cython.no_gc
@cython.cclass
@cython.dataclasses.dataclass(eq=False)
class Entry:
    """One direction of a connection: what `src:sport` sent to `dst:dport`."""

    src: bytes
    sport: int
    dst: bytes
    dport: int
    packets: int = 0
    bytes: int = 0
    last_size: int = 0
    window: int = 0
    flags: int = 0  # of the most recent packet in this direction (rule 5)
    smac: builtins.bytes | None = None
    finsent: int = 0  # 0 none, 1 FIN sent (DONE), 2 FIN acknowledged (CLOSED)
    finack: int = 0  # the FIN's ack number; the peer's seq equal to it acknowledges the FIN
    reset: bool = False
    first_seen: float = 0.0
    last_seen: float = 0.0
    flags_seen: int = 0  # OR of every packet's flags (IPFIX tcpControlBits)


@cython.no_gc
@cython.cclass
@cython.dataclasses.dataclass(eq=False)
class Pair:
    id: int
    iface: str
    a: Entry  # the direction seen first
    b: Entry
    partial: bool  # rule 3: created by a packet that was not a SYN
    first_seen: float
    last_seen: float
    slot: int = -1  # row in the SlotList, -1 when not on screen
    closed: bool = False  # ended or timed out: its row is reusable and flushable
    timed_out: bool = False
    end: str = END_OPEN
    lru_sec: int = 0  # the packet-clock second of its last reordering in an idle list
    retired: bool = False
    ended: bool = False  # by FIN, RST or ICMP: only a SYN starts a new pair on its ports
    halfopen: bool = False  # created by a SYN that nothing has answered yet
    # IPv4 pairs, for the fast path's index (frame.py): the endpoints as numbers, lower and
    # higher, and a's; the interface's number in this table; the index key, None if not in it
    lo_ep: int = 0
    hi_ep: int = 0
    a_ep: int = 0
    iface_no: int = -1
    fkey: int | None = None
    # in the table's `dirty` list (a flag instead of a set of ids: one store per packet
    # instead of an int object, its hash and a set insertion)
    marked: bool = False


@cython.ccall
def new_entry(src: bytes, sport: cython.int, dst: bytes, dport: cython.int) -> Entry:
    """`Entry(src, sport, dst, dport)`. Compiled, the record is allocated and four fields
    stored: every other default is a C zero or None, as allocation leaves them, and the
    dataclass constructor's argument parsing cost ~1,600 instructions a direction."""
    if not cython.compiled:
        return Entry(src, sport, dst, dport)
    e: Entry = Entry.__new__(Entry)
    e.src = src
    e.sport = sport
    e.dst = dst
    e.dport = dport
    return e


@cython.ccall
def new_pair(pair_id: PairId, iface: str, a: Entry, b: Entry, partial: cython.bint,
              first_seen: cython.double, last_seen: cython.double) -> Pair:
    """`Pair(pair_id, iface, a, b, partial, first_seen, last_seen)`, as `new_entry`: the
    defaults that are not zero or None stored too (a test compares the two)."""
    if not cython.compiled:
        return Pair(pair_id, iface, a, b, partial, first_seen, last_seen)
    p: Pair = Pair.__new__(Pair)
    p.id = pair_id
    p.iface = iface
    p.a = a
    p.b = b
    p.partial = partial
    p.first_seen = first_seen
    p.last_seen = last_seen
    p.slot = -1
    p.end = END_OPEN
    p.iface_no = -1
    return p


def _age_sec(ts: float, clock: float) -> int:
    """The clock second a table entry made now is aged from. Entries join such tables in
    arrival order and the expiry scan stops at the first young one, so their ages must be
    in that order: whole seconds of activity time (never before the last tick `clock`),
    not the packets' own stamps, which step back when interfaces' clocks interleave."""
    return int(ts if ts >= clock else clock)


def conn_key(iface: str, src: bytes, sport: int, dst: bytes, dport: int) -> ConnKey:
    """One key for both directions (the lower endpoint first): half the keys of one per
    direction, for the price of a comparison."""
    if src < dst or (src == dst and sport <= dport):
        return (iface, src, sport, dst, dport)
    return (iface, dst, dport, src, sport)


@cython.ccall
def entry_state(pair: Pair, e: Entry) -> str:
    """The state word of rule 5, or ACTIVE when the flags are shown."""
    if e.reset:
        return "RESET"
    if pair.timed_out:
        return "TIMEOUT"
    if e.finsent == 2:
        return "CLOSED"
    if e.finsent == 1:
        return "DONE"
    return "ACTIVE"


def flag_column(pair: Pair, e: Entry) -> str:
    st = entry_state(pair, e)
    return fmt_flags(e.flags) if st == "ACTIVE" else st


@dataclass(slots=True)
class TcpEvent:
    """A log-worthy moment (rule 20), with the counts as they were at that moment."""

    kind: str  # first, fin, finack, reset, timeout, mac
    ts: float
    iface: str
    src: bytes
    sport: int
    dst: bytes
    dport: int
    size: int = 0
    syn: bool = False
    packets: int = 0
    bytes: int = 0
    rate_age: float = 0.0  # seconds the connection has lived, for the average rate
    opp_packets: int = 0
    opp_bytes: int = 0
    mac: builtins.bytes | None = None
    old_mac: builtins.bytes | None = None


# Compiled as a C record (tcptable.pxd): a row is taken for every connection.
@cython.cclass
class SlotList:
    """The TCP window's rows: pairs in screen order (rules 8-10)."""

    def __init__(self) -> None:
        self.slots: list[Pair] = []
        self.closed: dict[int, Pair] = {}  # closed pairs on screen, in closing order

    @cython.ccall
    def add(self, pair: Pair) -> Pair | None:
        """Put a new pair on screen; returns the closed pair whose row it took, if any."""
        if self.closed:
            old = self.closed.pop(next(iter(self.closed)))
            pair.slot = old.slot
            old.slot = -1
            self.slots[pair.slot] = pair
            return old
        pair.slot = len(self.slots)
        self.slots.append(pair)
        return None

    @cython.ccall
    def mark_closed(self, pair: Pair) -> cython.void:
        if pair.slot >= 0 and pair.id not in self.closed:
            self.closed[pair.id] = pair

    def flush(self) -> list[Pair]:
        """Rule 9: remove every closed row; returns the pairs removed."""
        gone = list(self.closed.values())
        if gone:
            self.closed = {}
            for p in gone:
                p.slot = -1
            self.slots = [p for p in self.slots if p.slot >= 0]
            for i, p in enumerate(self.slots):
                p.slot = i
        return gone

    def sort(self, by: str) -> None:
        """Rule 10: by the larger direction's packets ('P') or bytes ('B'), descending; ties
        keep their order (rank.py)."""
        from .rank import sort_rows  # rank.py types its rows with this module's Pair

        self.slots = sort_rows(self.slots, by == "P")


@cython.dataclasses.dataclass
class TcpTable:
    timeout: float = 900.0  # rule 7: 15 minutes
    log_events: bool = False
    # the screen rows; None where another process (or the merger) keeps them
    display: SlotList | None = cython.dataclasses.field(default_factory=SlotList)
    # every pair not yet retired
    pairs: dict[int, Pair] = cython.dataclasses.field(default_factory=dict)
    # conn_key -> the latest pair on those addresses and ports, until it retires
    live: dict[ConnKey, Pair] = cython.dataclasses.field(default_factory=dict)
    # Idle lists, each in increasing order of its pairs' lru_sec (reordered at most once per
    # clock second). Pairs that time out carry the second of their last packet, older than
    # that of a timed-out pair that has had a packet since: two lists, each in order.
    # open: for the timeout
    open_lru: dict[int, Pair] = cython.dataclasses.field(default_factory=dict)
    # ended: for the linger
    ended_lru: dict[int, Pair] = cython.dataclasses.field(default_factory=dict)
    # timed out, idle since
    stale_lru: dict[int, Pair] = cython.dataclasses.field(default_factory=dict)
    # timed out, packets since
    stale_seen_lru: dict[int, Pair] = cython.dataclasses.field(default_factory=dict)
    # left the engine; the caller drains it
    retired: list[Pair] = cython.dataclasses.field(default_factory=list)
    events: list[TcpEvent] = cython.dataclasses.field(default_factory=list)
    # (src, dst, proto, id) -> pair, entry
    frags: dict[FragKey, tuple[Pair, Entry]] = cython.dataclasses.field(default_factory=dict)
    # before the first fragment
    frag_pending: dict[FragKey, list[int]] = cython.dataclasses.field(default_factory=dict)
    # -> second, by _age_sec
    frag_seen: dict[FragKey, int] = cython.dataclasses.field(default_factory=dict)
    created: int = 0
    macs: dict[Mac, Mac] = cython.dataclasses.field(default_factory=dict)
    # Floods: at most max_pairs pairs; then the oldest ended, then timed-out ones are evicted,
    # and when none is left new connections are counted (summary) but not tracked.
    max_pairs: int = 1_000_000
    untracked: int = 0
    evicted: int = 0
    # IPTraf's SYN-flood sign: pairs still at a lone SYN (S---, no answer), per destination.
    halfopen: dict[tuple[str, bytes], int] = cython.dataclasses.field(default_factory=dict)
    dirty: list[Pair] | None = None  # pairs changed since the last publication, if wanted
    # Packet time of the newest tick: every engine of a run (shards included) sees the same
    # ticks, but not the same packets, so activity is measured against this, never against
    # an engine's own newest packet.
    clock: float = float("-inf")
    # The fast path's index of IPv4 pairs: frame.fast_key -> the pair in `live` (a pair whose
    # key collides with another's is left out, and found the general way)
    fast: FastIndex = cython.dataclasses.field(default_factory=FastIndex)
    # interface name -> its number in the fast keys (the other table's UDP flows' too)
    iface_nos: dict[str, int] = cython.dataclasses.field(default_factory=dict)

    @property
    def slots(self) -> list[Pair]:
        return self.display.slots if self.display is not None else []

    # ---- packets -------------------------------------------------------------------------

    def packet(self, ts: float, iface: str, d: Decoded, pair_id: int) -> bool:
        """Account one TCP packet; True when it belonged to (or created) a pair."""
        # The hot path: one unpack instead of a dozen named-field lookups.
        (_k, _v, size, src, dst, _p, sport, dport, flags, seq, ack, win, paylen, frag, _id,
         smac, _dmac, _info, _bad) = d
        # typed: compiled, their fields are read and written as C fields
        pair: Pair | None
        e: Entry
        o: Entry
        if frag == FRAG_LATER:
            return self._later_fragment(ts, d)
        # conn_key(), inlined: this runs for every TCP packet
        if src < dst or (src == dst and sport <= dport):
            key = (iface, src, sport, dst, dport)
        else:
            key = (iface, dst, dport, src, sport)
        act = ts if ts >= self.clock else self.clock  # see the module docstring
        pair = self.live.get(key)
        if pair is None or (pair.ended and flags & TH_SYN):
            pair = self._open(ts, act, iface, src, sport, dst, dport, flags, paylen, pair_id,
                              key, pair)
            if pair is None:
                return False
        a: Entry = pair.a
        # a's source is this packet's source, unless both ends are the same socket address
        if a.sport == sport and a.src == src:
            e, o = a, pair.b
        else:
            e, o = pair.b, a
        if smac != e.smac:
            self._new_mac(ts, pair, e, o, smac, size)
        self._update(ts, act, pair, e, o, size, flags, seq, ack, win,
                     d if frag == FRAG_FIRST else None)
        return True

    @cython.ccall
    @cython.exceptval(-2, check=False)
    def frame_packet(self, p: cython.p_uchar, off: cython.Py_ssize_t,
                     caplen: cython.Py_ssize_t, wirelen: cython.Py_ssize_t, ts: cython.double,
                     iface: str, iface_no: cython.int, pair_id: cython.longlong) -> cython.int:
        """`packet` for the Ethernet frame at `off` in `p`, read where it lies, when it is a
        plain TCP frame (frame.tcp_frame_len: what `decode` would give as a well-formed,
        unfragmented IPv4 TCP packet); returns its IP length, or -1 when `decode` and
        `packet` must take it (nothing has changed then). Most frames of a busy link are an
        open pair's that change nothing but its counters: they are found through the fast
        index and counted without more; only a new connection's key and addresses are made
        as objects. `iface_no` is the interface's number (`iface_no`)."""
        tlen: cython.int = tcp_frame_len(p, off, caplen, wirelen)
        if tlen < 0:
            return -1
        es: cython.ulonglong = src_endpoint(p, off)
        ed: cython.ulonglong = dst_endpoint(p, off)
        pair: Pair | None = self._indexed(es, ed, iface_no)
        flags: cython.int = tcp_flags(p, off)
        act: cython.double = ts if ts >= self.clock else self.clock
        if pair is None or (pair.ended and flags & TH_SYN):
            src = src_addr(p, off)
            dst = dst_addr(p, off)
            sport: cython.int = es & 0xFFFF
            dport: cython.int = ed & 0xFFFF
            if es <= ed:
                key = (iface, src, sport, dst, dport)
            else:
                key = (iface, dst, dport, src, sport)
            if pair is None:
                pair = self.live.get(key)  # one the index left out (its key collided)
            if pair is None or (pair.ended and flags & TH_SYN):
                pair = self._open(ts, act, iface, src, sport, dst, dport, flags,
                                  tcp_payload_len(p, off, tlen), pair_id, key, pair)
                if pair is None:
                    return tlen  # counted in the summary, as `decode` + `Engine.feed` would
        e: Entry
        o: Entry
        if es == pair.a_ep:
            e, o = pair.a, pair.b
        else:
            e, o = pair.b, pair.a
        # Nothing but counters change (what `_update` would find): no FIN, SYN or RST, an
        # open pair already reordered in its idle list this second and the packet not
        # stamped before the last tick (then its activity time is the tick's), not the first
        # packet this way, no FIN to acknowledge, no MAC change. (A half-open pair needs no
        # test: its answering side has no packets yet.)
        if not flags & _STATEFUL and not pair.ended \
                and ts < pair.lru_sec + 1 and ts >= self.clock and e.packets \
                and o.finsent != 1 and same_smac(p, off, e.smac):
            self._account(pair, e, tlen, tcp_window(p, off), flags, ts, ts)
            return tlen
        if not same_smac(p, off, e.smac):
            self._new_mac(ts, pair, e, o, src_mac(p, off), tlen)
        self._update(ts, act, pair, e, o, tlen, flags, tcp_seq(p, off), tcp_ack(p, off),
                     tcp_window(p, off), None)
        return tlen

    @cython.cfunc
    def _open(self, ts: cython.double, act: cython.double, iface: str, src: bytes,
              sport: cython.int, dst: bytes, dport: cython.int, flags: cython.int,
              paylen: cython.int, pair_id: PairId, key: ConnKey, old: Pair | None) \
            -> Pair | None:
        """A packet with no open pair on its key (`old`: an ended one, or None): the pair
        it creates, or None when it creates none."""
        # rule 2: only a SYN or data creates a pair; a RST never does
        if flags & TH_RST or not (flags & TH_SYN or paylen > 0):
            return None
        if old is not None:
            self._retire(old)  # a new connection on the same ports: the old one is done
        if len(self.pairs) >= self.max_pairs and not self._make_room():
            self.untracked += 1
            return None
        return self._create(ts, act, iface, src, sport, dst, dport, flags, pair_id, key)

    @cython.cfunc
    def _new_mac(self, ts: cython.double, pair: Pair, e: Entry, o: Entry, smac: Mac,
                 size: cython.int) -> cython.void:
        if self.log_events and e.smac is not None:
            ev = self._event("mac", ts, pair, e, o, size)
            ev.mac, ev.old_mac = smac, e.smac
        # a router sees few MACs: one object each instead of one per entry
        e.smac = self.macs.setdefault(smac, smac) if len(self.macs) < 65536 else smac

    @cython.cfunc
    def _update(self, ts: cython.double, act: cython.double, pair: Pair, e: Entry, o: Entry,
                size: cython.int, flags: cython.int, seq: cython.ulonglong,
                ack: cython.ulonglong, win: cython.int, first_frag: Decoded | None) \
            -> cython.void:
        """A packet of `e`'s direction (o the other's) of `pair`: its counters, its idle
        list, its state (`first_frag`: its decoded record if it is a first fragment)."""
        if pair.halfopen and e is pair.b:
            self._answered(pair)  # the peer spoke: no longer a lone SYN
        if e.packets == 0:
            e.first_seen = ts
            if self.log_events and not flags & TH_RST:
                self._event("first", ts, pair, e, o, size, syn=bool(flags & TH_SYN))
        self._account(pair, e, size, win, flags, ts, act)
        if first_frag is not None:
            self._first_fragment(ts, first_frag, pair, e)
        sec: cython.longlong = int(act)
        if sec > pair.lru_sec:
            if pair.ended:
                lru = self.ended_lru
                del lru[pair.id]
            elif pair.timed_out:
                if self.stale_lru.pop(pair.id, None) is None:
                    del self.stale_seen_lru[pair.id]
                lru = self.stale_seen_lru
            else:
                lru = self.open_lru
                del lru[pair.id]
            lru[pair.id] = pair
            pair.lru_sec = sec
        if pair.ended:
            # A late ACK or retransmission after FIN/RST: still this connection's (tshark
            # counts it so too), so it counts here, but the pair stays ended.
            return
        # A plain ACK changes no state unless it may acknowledge the peer's FIN.
        if flags & _FIN_RST or o.finsent == 1:
            self._state(ts, pair, e, o, flags, seq, ack, size)

    @cython.cfunc
    @cython.inline
    def _indexed(self, es: cython.ulonglong, ed: cython.ulonglong, iface_no: cython.int) \
            -> Pair | None:
        """The pair of the IPv4 endpoints `es` and `ed` (frame.endpoint) on interface number
        `iface_no`, if the fast index holds it: the key is a hash, so the pair is checked."""
        lo: cython.ulonglong = es if es <= ed else ed
        hi: cython.ulonglong = ed if es <= ed else es
        found = self.fast.get(fast_key(lo, hi, iface_no))
        if found is None:
            return None
        pair: Pair = cython.cast(Pair, found)
        if pair.lo_ep != lo or pair.hi_ep != hi or pair.iface_no != iface_no:
            return None  # another connection's key
        return pair

    @cython.cfunc
    def _mark(self, pair: Pair) -> cython.void:
        """`pair` changed: publish it (the flag spares a set of ids, one store a packet)."""
        if self.dirty is not None and not pair.marked:
            pair.marked = True
            self.dirty.append(pair)

    @cython.cfunc
    def _account(self, pair: Pair, e: Entry, size: cython.int, win: cython.int,
                 flags: cython.int, ts: cython.double, act: cython.double) -> cython.void:
        """A packet of `e`'s direction at `ts`, active at `act` (never before the tick)."""
        e.packets += 1
        e.bytes += size
        e.last_size = size
        e.window = win
        e.flags = flags
        e.flags_seen |= flags
        e.last_seen = ts
        pair.last_seen = act
        self._mark(pair)

    @cython.cfunc
    def _state(self, ts: cython.double, pair: Pair, e: Entry, o: Entry, flags: cython.int,
               seq: cython.ulonglong, ack: cython.ulonglong, size: cython.int) -> cython.void:
        # The order is iptraf-ng's (behaviour section 1): ack of the peer's FIN, FIN, RST.
        if flags & TH_ACK and o.finsent == 1 and seq == o.finack:
            o.finsent = 2
            if self.log_events:
                self._event("finack", ts, pair, e, o, size)
        if flags & TH_FIN and e.finsent == 0:
            e.finsent = 1
            e.finack = ack
            if self.log_events:
                self._event("fin", ts, pair, e, o, size)
            if o.packets == 0:
                # one-sided: the peer was never seen, nothing will acknowledge this FIN here
                self._end(pair, END_FIN, pair.lru_sec)
        if flags & TH_RST:
            e.reset = True
            if self.log_events:
                self._event("reset", ts, pair, e, o, size)
            self._end(pair, END_RESET, pair.lru_sec)
        elif e.finsent == 2 and o.finsent == 2:
            self._end(pair, END_FIN, pair.lru_sec)

    @cython.cfunc
    def _create(self, ts: cython.double, act: cython.double, iface: str, src: bytes,
                sport: cython.int, dst: bytes, dport: cython.int, flags: cython.int,
                pair_id: PairId, key: ConnKey) -> Pair:
        pair = new_pair(pair_id, iface, new_entry(src, sport, dst, dport),
                         new_entry(dst, dport, src, sport), not flags & TH_SYN, ts, act)
        pair.lru_sec = int(act)
        if self.display is not None:
            self.display.add(pair)
        self.pairs[pair_id] = pair
        self.live[key] = pair
        if len(src) == 4 and len(dst) == 4:
            self._index(pair)
        self.open_lru[pair_id] = pair
        if flags & (TH_SYN | TH_ACK) == TH_SYN:
            pair.halfopen = True
            hk = (iface, dst)
            self.halfopen[hk] = self.halfopen.get(hk, 0) + 1
        self.created += 1
        return pair

    @cython.cfunc
    def _end(self, pair: Pair, end: str, sec: cython.longlong) -> cython.void:
        """The connection ended (FIN, RST, ICMP) in clock second `sec`: its row becomes
        reusable (rule 8), and it lingers CLOSED_LINGER from then (an ICMP error ends a pair
        later than its last packet: from that, it would join ended_lru out of order)."""
        if pair.ended:
            return
        if pair.halfopen:
            self._answered(pair)
        if pair.timed_out:
            if self.stale_lru.pop(pair.id, None) is None:
                del self.stale_seen_lru[pair.id]
        else:
            del self.open_lru[pair.id]
        if sec > pair.lru_sec:
            pair.lru_sec = sec
        pair.end = end
        pair.ended = True
        pair.closed = True
        self._mark(pair)
        self.ended_lru[pair.id] = pair
        if self.display is not None:
            self.display.mark_closed(pair)

    @cython.cfunc
    def _retire(self, pair: Pair) -> cython.void:
        """The pair leaves the engine: it is written out and stops counting."""
        if pair.retired:
            return
        pair.retired = True
        if pair.halfopen:
            self._answered(pair)
        a = pair.a
        key = conn_key(pair.iface, a.src, a.sport, a.dst, a.dport)
        if self.live.get(key) is pair:
            del self.live[key]
        if pair.fkey is not None:
            self.fast.remove(pair.fkey)
            pair.fkey = None
        for lru in (self.open_lru, self.ended_lru, self.stale_lru, self.stale_seen_lru):
            lru.pop(pair.id, None)
        del self.pairs[pair.id]
        self.retired.append(pair)

    @cython.ccall
    @cython.exceptval(-1, check=False)
    def iface_no(self, iface: str) -> cython.int:
        """The number of an interface (by name, as pairs are keyed), for the fast index."""
        no = self.iface_nos.get(iface)
        if no is None:
            no = self.iface_nos[iface] = len(self.iface_nos)
        return no

    @cython.cfunc
    def _index(self, pair: Pair) -> cython.void:
        a: Entry = pair.a
        ea: cython.ulonglong = endpoint(be32(a.src, 0), a.sport)
        eb: cython.ulonglong = endpoint(be32(a.dst, 0), a.dport)
        pair.a_ep = ea
        pair.lo_ep, pair.hi_ep = (ea, eb) if ea <= eb else (eb, ea)
        pair.iface_no = self.iface_no(pair.iface)
        fk = fast_key(pair.lo_ep, pair.hi_ep, pair.iface_no)
        if self.fast.put(fk, pair):
            pair.fkey = fk

    @cython.cfunc
    def _answered(self, pair: Pair) -> cython.void:
        pair.halfopen = False
        hk = (pair.iface, pair.a.dst)
        n = self.halfopen.get(hk, 0) - 1
        if n > 0:
            self.halfopen[hk] = n
        else:
            self.halfopen.pop(hk, None)

    def _make_room(self) -> bool:
        """The table is full: evict the oldest ended pair, else the oldest timed-out one."""
        for lru in (self.ended_lru, self.stale_lru, self.stale_seen_lru):
            if lru:
                self._retire(lru[next(iter(lru))])
                self.evicted += 1
                return True
        return False

    def icmp_unreachable(self, ts: float, iface: str, quoted: Quoted) -> bool:
        """Rule 6: an ICMP/ICMPv6 destination unreachable quoting a live pair resets it."""
        src, sport, dst, dport, proto = quoted
        if proto != 6:
            return False
        pair = self.live.get(conn_key(iface, src, sport, dst, dport))
        if pair is None or pair.ended:
            return False
        pair.a.reset = pair.b.reset = True
        self._end(pair, END_ICMP, int(ts if ts >= self.clock else self.clock))
        return True

    # ---- fragments (rule 4) --------------------------------------------------------------

    def _first_fragment(self, ts: float, d: Decoded, pair: Pair, e: Entry) -> None:
        fk = (d.src, d.dst, d.proto, d.ipid)
        if len(self.frags) >= FRAG_TABLE_MAX:
            old = next(iter(self.frags))
            del self.frags[old]
            self.frag_seen.pop(old, None)
        self.frags[fk] = (pair, e)
        self.frag_seen[fk] = _age_sec(ts, self.clock)
        pend = self.frag_pending.pop(fk, None)
        if pend:
            # iptraf-ng: fragments that came before the first one add their bytes only
            e.bytes += pend[0]

    def _later_fragment(self, ts: float, d: Decoded) -> bool:
        fk = (d.src, d.dst, d.proto, d.ipid)
        found = self.frags.get(fk)
        if found is None:
            self.note_fragment(fk, d.iplen, ts)
            return False
        pair, e = found
        if pair.retired:
            return False
        e.packets += 1
        e.bytes += d.iplen
        e.last_seen = ts
        self._mark(pair)
        return True

    def note_fragment(self, fk: FragKey, iplen: int, ts: float) -> None:
        """A later fragment with no first fragment yet: its bytes wait for the first one."""
        if len(self.frag_pending) >= FRAG_TABLE_MAX:
            del self.frag_pending[next(iter(self.frag_pending))]
        pend = self.frag_pending.setdefault(fk, [0, _age_sec(ts, self.clock)])
        pend[0] += iplen

    def _expire_fragments(self, now: float) -> None:
        # oldest first (insertion order, which is the order of their seconds): stop at the
        # first young one, without copying
        sec = int(now)
        seen = self.frag_seen
        while seen:
            fk = next(iter(seen))
            if sec - seen[fk] < FRAG_MAX_AGE:
                break
            del seen[fk]
            self.frags.pop(fk, None)
        pending = self.frag_pending
        while pending:
            fk = next(iter(pending))
            if sec - pending[fk][1] < FRAG_MAX_AGE:
                break
            del pending[fk]

    # ---- clock-driven work ---------------------------------------------------------------

    def tick(self, now: float) -> None:
        """At each new second of the packet clock: idle pairs time out (rule 7), ended pairs
        stop lingering, long-dead ones retire. Only packet times are compared, so the outcome
        does not depend on when or where the checks run."""
        if now > self.clock:
            self.clock = now
        sec = int(now)
        lru = self.open_lru
        expired = []
        for pair in lru.values():
            # Open pairs are ordered by the second of their last packet (lru_sec), so the scan
            # stops at the first one that cannot have been idle long enough; the rest get the
            # exact test of rule 7, "idle for at least the timeout".
            if sec + 1 - pair.lru_sec <= self.timeout:
                break
            if now - pair.last_seen >= self.timeout:
                expired.append(pair)
        for pair in expired:
            del lru[pair.id]
            pair.timed_out = True
            pair.closed = True
            pair.end = END_TIMEOUT
            self._mark(pair)
            self.stale_lru[pair.id] = pair
            if self.display is not None:
                self.display.mark_closed(pair)
            if self.log_events:
                self._event("timeout", now, pair, pair.a, pair.b, 0)
        for lru, idle in ((self.ended_lru, CLOSED_LINGER), (self.stale_lru, 2 * self.timeout),
                          (self.stale_seen_lru, 2 * self.timeout)):
            while lru:
                pair = lru[next(iter(lru))]
                if sec - pair.lru_sec < idle:
                    break
                self._retire(pair)
        self._expire_fragments(now)

    def flush(self) -> int:
        """Rule 9: drop every closed, reset and timed-out pair, on screen or lingering; they
        stop counting. Returns how many rows left the screen."""
        rows = len(self.display.flush()) if self.display is not None else 0
        for lru in (self.ended_lru, self.stale_lru, self.stale_seen_lru):
            for pair in list(lru.values()):
                self._retire(pair)
        return rows

    def sort(self, by: str) -> None:
        if self.display is not None:
            self.display.sort(by)

    def retire_all(self) -> None:
        """End of run: every pair still in the engine, in creation order."""
        for pid in sorted(self.pairs):
            self._retire(self.pairs[pid])

    def _event(self, kind: str, ts: float, pair: Pair, e: Entry, o: Entry, size: int,
               syn: bool = False) -> TcpEvent:
        ev = TcpEvent(kind, ts, pair.iface, e.src, e.sport, e.dst, e.dport, size, syn,
                      e.packets, e.bytes, ts - pair.first_seen, o.packets, o.bytes, e.smac)
        self.events.append(ev)
        return ev
