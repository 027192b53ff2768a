"""What travels between the processes, apart from the packets themselves.

Into a shard: batches (shards/batch.py) whose records are packets, or control records told
apart by their interface index. Out of a shard: `Publication`s, pickled over a pipe at the
display refresh rate, carrying only what changed since the previous one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from iptraf_mp.capfile import CaptureFileError
from iptraf_mp.engine import Counter, Summary
from iptraf_mp.othertable import OtherFlow
from iptraf_mp.tcptable import Entry, Pair

# Control records in a batch: the interface index field says what the record is. It is 32
# bits wide and interfaces stop at MAX_IFACES (capture files with more are refused), so a
# control record can never be taken for a packet nor a packet for a control record.
MAX_IFACES = 1 << 16
CTL_TICK = 0xFFFF_FFFF  # the packet clock starts a new second at `ts` (broadcast to every shard)
CTL_IFACE = 0xFFFF_FFFE  # data = b"<ifindex>\0<linktype>\0<name>": a new interface (broadcast)
CTL_END = 0xFFFF_FFFD  # this producer has finished (broadcast)
CTL_FLUSH = 0xFFFF_FFFC  # the F key: retire closed pairs (broadcast)
# A TCP fragment that came before its first fragment went to one shard (by its addresses);
# every other shard keeps the same note of it (data = fragment key, wirelen = its IP length),
# since its first fragment, which names the connection, may go to any of them. And when that
# first fragment comes, the shards it does not go to drop the note, as one engine would.
CTL_FRAG_PENDING = 0xFFFF_FFFB
CTL_FRAG_FIRST = 0xFFFF_FFFA
# Replays: publish now (wirelen = the epoch's number). Every shard publishes at the same
# position of the stream, so the merger can show a state one engine had (see Merger).
CTL_PUBLISH = 0xFFFF_FFF9
EPOCH_NONE = -1  # a live shard's publications: by its own timer
EPOCH_FINAL = 1 << 62  # a replay shard's last publication
CTL_MIN = 0xFFFF_FF00


def frag_key_record(src: bytes, dst: bytes, proto: int, ipid: int) -> bytes:
    return bytes((len(src), proto)) + ipid.to_bytes(4, "big") + src + dst


def parse_frag_key(data: bytes) -> tuple[bytes, bytes, int, int]:
    n, proto = data[0], data[1]
    return data[6:6 + n], data[6 + n:6 + 2 * n], proto, int.from_bytes(data[2:6], "big")


def iface_record(ifindex: int, linktype: int, name: str) -> bytes:
    return f"{ifindex}\0{linktype}\0{name}".encode()


def parse_iface_record(data: bytes) -> tuple[int, int, str]:
    idx, lt, name = data.decode("utf-8", "replace").split("\0", 2)
    return int(idx), int(lt), name


def entry_tuple(e: Entry) -> tuple:
    return (e.src, e.sport, e.dst, e.dport, e.packets, e.bytes, e.last_size, e.window, e.flags,
            e.smac, e.finsent, e.finack, e.reset, e.first_seen, e.last_seen, e.flags_seen)


def pair_tuple(p: Pair) -> tuple:
    return (p.id, p.iface, p.partial, p.first_seen, p.last_seen, p.closed, p.timed_out, p.end,
            p.retired, p.ended, entry_tuple(p.a), entry_tuple(p.b))


def pair_from_tuple(t: tuple) -> Pair:
    pid, iface, partial, first, last, closed, timed_out, end, retired, ended, a, b = t
    p = Pair(pid, iface, Entry(*a), Entry(*b), partial, first, last)
    p.closed, p.timed_out, p.end, p.retired, p.ended = closed, timed_out, end, retired, ended
    return p


def update_pair(p: Pair, t: tuple) -> None:
    """Refresh a mirror pair in place, keeping its screen row."""
    (_pid, _iface, p.partial, p.first_seen, p.last_seen, p.closed, p.timed_out, p.end,
     p.retired, p.ended, a, b) = t
    for e, v in ((p.a, a), (p.b, b)):
        (e.src, e.sport, e.dst, e.dport, e.packets, e.bytes, e.last_size, e.window, e.flags,
         e.smac, e.finsent, e.finack, e.reset, e.first_seen, e.last_seen, e.flags_seen) = v


def flow_tuples(flows: Iterable[OtherFlow]) -> list[tuple]:
    """A shard engine's non-TCP flows, as published: the key (0-6), then packets, bytes,
    first_seen, last_seen (7-10), then the engine's id for this generation of the key (11),
    whether it ended (12), and the packet times of the tick before its first packet and of
    the tick that ended it (13, 14; inf while open)."""
    # A comprehension: on slots, Python 3.11's specialised attribute loads are about three
    # times cheaper than an attrgetter's generic ones.
    return [(f.iface, f.kind, f.proto, f.src, f.dst, f.sport, f.dport, f.packets, f.bytes,
             f.first_seen, f.last_seen, f.id, f.ended, f.start_tick, f.end_tick) for f in flows]


def summary_tuple(s: Summary) -> tuple:
    return (s.frames, s.malformed, s.untracked, s.evicted_flows) + tuple(
        (c.packets, c.bytes) for c in (s.ip, s.tcp, s.udp, s.icmp, s.other_ip, s.non_ip))


def summary_from_tuple(t: tuple) -> Summary:
    frames, malformed, untracked, evicted_flows, *cs = t
    s = Summary(frames=frames, malformed=malformed, untracked=untracked,
                evicted_flows=evicted_flows)
    s.ip, s.tcp, s.udp, s.icmp, s.other_ip, s.non_ip = (Counter(*c) for c in cs)
    return s


@dataclass(slots=True)
class Publication:
    shard: int
    seq: int
    tick_no: int  # ticks this shard has processed: groups up to here are complete
    now: float  # the shard's packet clock
    pairs: list[tuple] = field(default_factory=list)  # changed or new pairs (pair_tuple)
    sealed: list[tuple[int, list[tuple]]] = field(default_factory=list)  # retired, by tick
    # lower-window lines: (ts, iface, Decoded, frame number)
    lines: list[tuple] = field(default_factory=list)
    line_count: int = 0  # lines ever made by this shard (lines may be capped per publication)
    events: list = field(default_factory=list)  # TcpEvents for the log
    # other-protocol flows (flow_tuples) that changed or ended, the ended ones first
    flows: list[tuple] = field(default_factory=list)
    summary: tuple = ()  # cumulative (summary_tuple)
    decoded: int = 0  # packets this shard has processed
    halfopen: list[tuple] = field(default_factory=list)  # top (iface, dst, lone SYNs)
    evicted: int = 0
    final: bool = False  # the shard has finished: nothing follows
    # packet time of the newest tick the shard has processed: flows that began before it are
    # all in this publication or an earlier one
    tick_time: float = float("-inf")
    # replays: the CTL_PUBLISH it answers (or EPOCH_FINAL); live: EPOCH_NONE
    epoch: int = -1


class RunStartError(Exception):
    """A run (the pipeline, or the engine in one process) cannot start: a one-line reason."""


@dataclass(slots=True)
class RunStats:
    """What a run lost or survived, beside the engine's counters."""

    kernel_drops: int = 0
    queue_drops: int = 0  # batches
    queue_dropped_packets: int = 0
    shard_restarts: int = 0
    lost_pairs: int = 0
    record_dropped: int = 0  # live: frames left out of the recording (-w)
    errors: list[str] = field(default_factory=list)
    exit_status: int = 0  # at least this (a capture file refused: 2)

    def failed(self, err: CaptureFileError) -> None:
        self.errors.append(str(err))
        self.exit_status = max(self.exit_status, err.exit_status)
