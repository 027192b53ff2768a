"""The flow engine: decoded packets in, the TCP table, the lower window and the summary out.

The functional core of iptraf-mp. It does no I/O and reads no clock: the packet timestamp is
the clock (made monotonic, since captures from several interfaces interleave), so replaying
a capture always gives the same result, in one process or spread over shards.

Rule numbers cited here are docs/decisions.md's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import K_ICMP, K_NON_IP, K_OTHER_IP, K_TCP, K_UDP, Decoded
from .othertable import DEFAULT_FLOW_IDLE, OtherTable
from .tcptable import Pair, SlotList, TcpTable


@dataclass(slots=True)
class Counter:
    packets: int = 0
    bytes: int = 0


@dataclass(slots=True)
class Summary:
    """Rule 14. Every frame lands in exactly one of ip (by protocol) or non_ip."""

    frames: int = 0
    ip: Counter = field(default_factory=Counter)
    tcp: Counter = field(default_factory=Counter)
    udp: Counter = field(default_factory=Counter)
    icmp: Counter = field(default_factory=Counter)
    other_ip: Counter = field(default_factory=Counter)
    non_ip: Counter = field(default_factory=Counter)
    malformed: int = 0
    untracked: int = 0  # new TCP connections not tracked: the table was full (floods)
    evicted_flows: int = 0  # non-TCP flows ended early: the flow table was full (--max-flows)
    # every frame again, by interface (IP bytes, a non-IP frame's wire length): the console's
    # rates over time. Not in the JSON summary, which is iptraf-ng's.
    ifaces: dict[str, Counter] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        def c(x: Counter) -> dict[str, int]:
            return {"packets": x.packets, "bytes": x.bytes}

        return {"type": "summary", "frames": self.frames, "ip": c(self.ip), "tcp": c(self.tcp),
                "udp": c(self.udp), "icmp": c(self.icmp), "other_ip": c(self.other_ip),
                "non_ip": c(self.non_ip), "malformed": self.malformed,
                "untracked": self.untracked, "evicted_flows": self.evicted_flows}

    def count_iface(self, iface: str, packets: int, nbytes: int) -> None:
        c = self.ifaces.get(iface)
        if c is None:
            c = self.ifaces[iface] = Counter()
        c.packets += packets
        c.bytes += nbytes

    def merge(self, other: Summary) -> None:
        self.frames += other.frames
        self.malformed += other.malformed
        self.untracked += other.untracked
        self.evicted_flows += other.evicted_flows
        for name in ("ip", "tcp", "udp", "icmp", "other_ip", "non_ip"):
            mine, theirs = getattr(self, name), getattr(other, name)
            mine.packets += theirs.packets
            mine.bytes += theirs.bytes
        for iface, theirs in other.ifaces.items():
            self.count_iface(iface, theirs.packets, theirs.bytes)


@dataclass(slots=True)
class Settings:
    """What changes results (recorded in pcapng comments and session rows)."""

    tcp_timeout: float = 900.0  # rule 7, seconds
    persistence: float = 0.0  # rule 9, seconds between automatic flushes; 0 = off
    lower_lines: int = 512  # rule 13
    log_events: bool = False  # collect rule 20 events and lines for a log file
    max_pairs: int = 1_000_000  # --max-connections (per engine: shards share it out)
    max_flows: int = 1_000_000  # --max-flows, non-TCP flows (per engine, as max_pairs)
    # A non-TCP flow idle this long ends; the next packet starts a new one (othertable.py)
    flow_idle: float = DEFAULT_FLOW_IDLE


class PacketClock:
    """Decides where the clock ticks in a packet stream: at the first packet, and at each
    packet that carries the clock into a new second. The single-process engine (which
    inlines this in `Engine.feed`) and the shard reader share it, so shards tick at exactly
    the packets one engine would."""

    __slots__ = ("now", "next")

    def __init__(self) -> None:
        self.now = float("-inf")
        self.next = float("-inf")

    def advance(self, ts: float) -> bool:
        if ts > self.now:
            self.now = ts
            if ts >= self.next:
                self.next = float(int(ts) + 1)
                return True
        return False


class Engine:
    """Feed it decoded frames; read `tcp`, `other` and `summary`, and drain `sealed` (and,
    with change tracking, `other.ended`).

    Pairs that leave the engine are grouped by the clock second in which they left and each
    group is sorted by pair id (`sealed`), so the order of the output depends only on the
    capture, not on how many shards shared the work or how fast they ran.
    With `auto_tick` off (a shard), ticks come only from `tick()` calls, which the reader
    inserts into every shard's stream where a `PacketClock` says, as the engine would itself.
    """

    def __init__(self, settings: Settings | None = None, auto_tick: bool = True,
                 display: bool = True) -> None:
        self.settings = s = settings or Settings()
        self.tcp = TcpTable(timeout=s.tcp_timeout, log_events=s.log_events,
                            display=SlotList() if display else None,
                            max_pairs=s.max_pairs)
        self.other = OtherTable(max_lines=s.lower_lines, keep_new=s.log_events,
                                idle=s.flow_idle, max_flows=s.max_flows)
        self.summary = Summary()
        self.now = 0.0  # monotonic packet clock
        self.started: float | None = None
        self.clock = PacketClock() if auto_tick else None
        self.tick_no = 0
        self.sealed: list[tuple[int, list[Pair]]] = []  # (tick number, retired pairs by id)
        self._next_flush = 0.0

    def feed(self, ts: float, iface: str, d: Decoded, frame_no: int) -> None:
        """Account one decoded frame. `frame_no` names any pair this frame creates."""
        clock = self.clock
        if clock is None:
            if ts > self.now:
                self.now = ts
        elif ts > clock.now:
            clock.now = ts  # PacketClock.advance, inlined
            if ts >= clock.next:
                clock.next = float(int(ts) + 1)
                self.tick(ts)
            else:
                self.now = ts
        s = self.summary
        s.frames += 1
        kind = d[0]  # indexing: cheaper than the named fields on the hot path
        n = d[2]
        if kind == K_TCP:
            c = s.tcp
        elif kind == K_UDP:
            c = s.udp
        elif kind == K_ICMP:
            c = s.icmp
        elif kind == K_OTHER_IP:
            c = s.other_ip
        else:
            c = s.non_ip
        c.packets += 1
        c.bytes += n
        ic = s.ifaces.get(iface)  # count_iface(), inlined: this runs for every packet
        if ic is None:
            ic = s.ifaces[iface] = Counter()
        ic.packets += 1
        ic.bytes += n
        if kind != K_NON_IP:
            ip = s.ip
            ip.packets += 1
            ip.bytes += n
        if d[18]:  # malformed
            s.malformed += 1
            return  # counted by what could be read; its fields are not trusted (rule 18)
        if kind == K_TCP:
            self.tcp.packet(ts, iface, d, frame_no)
            return
        info = d.info
        if kind == K_ICMP and info is not None and info[2] is not None:
            itype = info[0]
            if (itype == 3 and d.ipver == 4) or (itype == 1 and d.ipver == 6):
                self.tcp.icmp_unreachable(ts, iface, info[2])
        self.other.packet(ts, iface, d, frame_no)

    def tick(self, now: float) -> None:
        """A new second of the packet clock: timeouts, lingering, idle flows, automatic
        flush."""
        if now > self.now:
            self.now = now
        self._seal()
        self.tick_no += 1
        if self.started is None:
            self.started = now
            if self.settings.persistence > 0:
                self._next_flush = now + self.settings.persistence
        self.tcp.tick(now)
        self.other.tick(now)
        if self.settings.persistence > 0 and now >= self._next_flush:
            self.tcp.flush()
            self._next_flush = now + self.settings.persistence

    def _seal(self) -> None:
        retired = self.tcp.retired
        if retired:
            self.sealed.append((self.tick_no, sorted(retired, key=lambda p: p.id)))
            self.tcp.retired = []

    def sync_counters(self) -> None:
        """Counters kept by the tables, into the summary (before it is read)."""
        self.summary.untracked = self.tcp.untracked
        self.summary.evicted_flows = self.other.evicted

    def finish(self) -> None:
        """End of the run: everything still in the engine retires, as the last group."""
        self.sync_counters()
        self._seal()
        self.tcp.retire_all()
        self._seal()

    def flush(self) -> int:
        """The F key (rule 9)."""
        return self.tcp.flush()
