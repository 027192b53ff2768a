"""The batch fast path: most frames of a busy link are read where they lie.

On a router almost every frame is a plain one (frame.py: Ethernet + option-less IPv4 +
unfragmented TCP or UDP). The loops here take a whole batch: records as capture files yield
them (`feed_records`), a pcap file's own buffer (`feed_pcap`) or a shard's batch
(`feed_batch`), the last two read in place, and hand each Ethernet frame to `_in_place`:
- `TcpTable.frame_packet`: a plain TCP frame. Most are an open pair's that change nothing
  but counters (a dozen field updates); the rest (a SYN, FIN or RST, a new connection, the
  first packet of a direction, a MAC change, a half-open or ended pair, a pending FIN
  acknowledgement) run the state machine `TcpTable.packet` runs, fed from the frame;
- `OtherTable.frame_packet`: a plain UDP frame.
Their summary lines are counted once a batch (`_Tally`). Any other frame (another link type,
VLAN tags, IPv6, IP options, fragments, ICMP, a malformed header, a new second of the packet
clock) goes to `decode` + `Engine.feed` unchanged. So the general path stays the reference:
a differential test replays captures both ways and requires identical results.

Compiled (setup.py), `p` is a pointer into the buffer and a frame the fast path takes costs
no Python object but the index key; interpreted, the same source runs on bytes: the twin
the compiled build is compared with.

Rule numbers cited here are docs/decisions.md's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping

import cython

from .batch_format import BATCH_HEADER_SIZE, MAGIC, RECORD_HEADER_SIZE, BatchError
from .decode import decode
from .engine import Engine
from .frame import le32, u32
from .model import Packet
from .othertable import OtherTable
from .tcptable import TcpTable

_INF = float("inf")
_F64 = struct.Struct("<d")
# the batch layout's sizes as C constants (imported names would be Python objects)
_BATCH_HDR = cython.declare(cython.Py_ssize_t, BATCH_HEADER_SIZE)
_RECORD_HDR = cython.declare(cython.Py_ssize_t, RECORD_HEADER_SIZE)


def feed_records(engine: Engine, numbers: Iterable[int], records: Iterable[Packet],
                 ifaces: Mapping[int, tuple[str, int]],
                 other: Callable[[int, Packet], None] | None = None) -> int:
    """Feed `records` ((ts, ifindex, data, wirelen), as capture files yield them) to `engine`
    in order, each with its frame number from `numbers`; returns how many were frames.

    `ifaces` maps an interface index to (name, link type). A record whose index is not in it
    is handed to `other` with its number (a shard's control records, a pcapng interface seen
    late); with no `other` it is an error of the caller's.
    """
    tcp: TcpTable = engine.tcp
    flows: OtherTable = engine.other
    feed = engine.feed
    get_iface = ifaces.get
    # interface index -> its number in the tables' fast indexes
    nos: dict[int, int] = {}
    ifno: cython.int
    frames: cython.Py_ssize_t = 0
    tally = _Tally(engine)
    ts: cython.double
    # The packet clock in locals, written back before anything else may read it; the newest
    # tick's time changes only in the general path and in `other`
    now: cython.double
    nxt: cython.double
    now, nxt = _clock(engine)
    now0: cython.double = now
    for frame_no, rec in zip(numbers, records, strict=True):
        ts_obj, ifindex, data, wirelen = rec
        ifc = get_iface(ifindex)
        if ifc is None:
            tally.flush()
            if now != now0:
                _set_now(engine, now)
            other(frame_no, rec)  # type: ignore[misc]
            now, nxt = _clock(engine)
            now0 = now
            continue
        frames += 1
        name, lt = ifc
        ts = ts_obj
        # Not a new second of the packet clock (the general path ticks), then Ethernet
        if (ts <= now or ts < nxt) and lt == 1:
            ifno = nos.get(ifindex, -1)
            if ifno < 0:
                ifno = nos[ifindex] = tcp.iface_no(name)
            if _in_place(tcp, flows, data, 0, len(data), wirelen, ts, name, ifno, frame_no,
                         tally):
                if ts > now:
                    now = ts
                continue
        if now != now0:
            _set_now(engine, now)
        feed(ts_obj, name, decode(lt, data, wirelen), frame_no)
        now, nxt = _clock(engine)
        now0 = now
    if now != now0:
        _set_now(engine, now)
    tally.flush()
    return frames


def feed_pcap(engine: Engine, buf: bytes, pos: cython.Py_ssize_t, big_endian: cython.bint,
              units: cython.double, frame_no: cython.Py_ssize_t, name: str, linktype: int,
              limit: cython.Py_ssize_t) -> tuple[int, int]:
    """Feed the whole pcap records that start at `buf[pos]` (at most `limit` of them) to
    `engine`, the first numbered `frame_no + 1`; returns where the next record starts and
    how many were fed. Each frame is read where it lies: only a frame the general path
    takes is copied out of `buf`. `units` is the timestamp fraction's per second."""
    tcp: TcpTable = engine.tcp
    flows: OtherTable = engine.other
    feed = engine.feed
    iface_no: cython.int = tcp.iface_no(name)
    ether: cython.bint = linktype == 1
    p: cython.p_uchar = buf
    end: cython.Py_ssize_t = len(buf)
    n: cython.Py_ssize_t = 0
    tally = _Tally(engine)
    sec: cython.ulonglong
    frac: cython.ulonglong
    caplen: cython.Py_ssize_t
    wirelen: cython.Py_ssize_t
    start: cython.Py_ssize_t
    ts: cython.double
    now: cython.double
    nxt: cython.double
    now, nxt = _clock(engine)
    now0: cython.double = now
    while n < limit and pos + 16 <= end:
        sec, frac = u32(p, pos, big_endian), u32(p, pos + 4, big_endian)
        caplen, wirelen = u32(p, pos + 8, big_endian), u32(p, pos + 12, big_endian)
        start = pos + 16
        if start + caplen > end:
            break
        # as the record reader computes it: sec + frac / units, correctly rounded
        ts = sec + frac / units
        n += 1
        if (ts <= now or ts < nxt) and ether and \
                _in_place(tcp, flows, p, start, caplen, wirelen, ts, name, iface_no,
                          frame_no + n, tally):
            if ts > now:
                now = ts
            pos = start + caplen
            continue
        if now != now0:
            _set_now(engine, now)
        feed(ts, name, decode(linktype, buf[start:start + caplen], wirelen), frame_no + n)
        now, nxt = _clock(engine)
        now0 = now
        pos = start + caplen
    if now != now0:
        _set_now(engine, now)
    tally.flush()
    return pos, n


@cython.cfunc
@cython.inline
def _le64(p: cython.p_uchar, off: cython.Py_ssize_t) -> cython.ulonglong:
    return le32(p, off) | (le32(p, off + 4) << 32)


@cython.cfunc
@cython.inline
def _le_double(p: cython.p_uchar, off: cython.Py_ssize_t) -> cython.double:
    v: cython.double
    if cython.compiled:
        # x86 and arm64 load unaligned doubles; batches are little-endian (batch_format.py)
        v = cython.cast(cython.p_double, cython.address(p[off]))[0]
    else:
        v = _F64.unpack_from(p, off)[0]
    return v


def check_batch(buf: bytes) -> int:
    """The number of records of a well-formed batch (batch_format.py); raises BatchError
    for a short, truncated or padded one, before anything of it is fed."""
    p: cython.p_uchar = buf
    end: cython.Py_ssize_t = len(buf)
    if end < _BATCH_HDR:
        raise BatchError(f"batch of {end} bytes is shorter than its header")
    if buf[:4] != MAGIC:
        raise BatchError(f"bad batch magic {buf[:4]!r}")
    count: cython.Py_ssize_t = le32(p, 4)
    off: cython.Py_ssize_t = _BATCH_HDR
    _i: cython.Py_ssize_t
    for _i in range(count):
        if off + _RECORD_HDR > end:
            raise BatchError(f"truncated packet header at offset {off}")
        off += _RECORD_HDR + le32(p, off + 24)
        if off > end:
            raise BatchError(f"packet data runs past the end of the batch ({off} > {end})")
    if off != end:
        raise BatchError(f"{end - off} trailing bytes after {count} packets")
    return count


def feed_batch(engine: Engine, buf: bytes, ifaces: Mapping[int, tuple[str, int]],
               other: Callable[[int, Packet], None]) -> int:
    """Feed a batch (batch_format.py) to `engine` as `feed_records` feeds records, reading
    each record where it lies; returns how many were frames. Checked whole first
    (`check_batch`): a malformed batch raises BatchError and feeds nothing."""
    count: cython.Py_ssize_t = check_batch(buf)
    tcp: TcpTable = engine.tcp
    flows: OtherTable = engine.other
    feed = engine.feed
    get_iface = ifaces.get
    nos: dict[int, int] = {}
    p: cython.p_uchar = buf
    off: cython.Py_ssize_t = _BATCH_HDR
    _i: cython.Py_ssize_t
    start: cython.Py_ssize_t
    caplen: cython.Py_ssize_t
    wirelen: cython.Py_ssize_t
    ifindex: cython.Py_ssize_t
    ifno: cython.int
    frames: cython.Py_ssize_t = 0
    tally = _Tally(engine)
    ts: cython.double
    now: cython.double
    nxt: cython.double
    now, nxt = _clock(engine)
    now0: cython.double = now
    for _i in range(count):
        ts = _le_double(p, off + 8)
        wirelen = le32(p, off + 16)
        ifindex = le32(p, off + 20)
        caplen = le32(p, off + 24)
        start = off + _RECORD_HDR
        off = start + caplen
        ifc = get_iface(ifindex)
        if ifc is None:
            tally.flush()
            if now != now0:
                _set_now(engine, now)
            other(_le64(p, start - _RECORD_HDR), (ts, ifindex, buf[start:off], wirelen))
            now, nxt = _clock(engine)
            now0 = now
            continue
        frames += 1
        name, lt = ifc
        if (ts <= now or ts < nxt) and lt == 1:
            ifno = nos.get(ifindex, -1)
            if ifno < 0:
                ifno = nos[ifindex] = tcp.iface_no(name)
            if _in_place(tcp, flows, p, start, caplen, wirelen, ts, name, ifno,
                         _le64(p, start - _RECORD_HDR), tally):
                if ts > now:
                    now = ts
                continue
        if now != now0:
            _set_now(engine, now)
        feed(ts, name, decode(lt, buf[start:off], wirelen), _le64(p, start - _RECORD_HDR))
        now, nxt = _clock(engine)
        now0 = now
    if now != now0:
        _set_now(engine, now)
    tally.flush()
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


@cython.cfunc
@cython.inline
@cython.exceptval(-1, check=False)
def _in_place(tcp: TcpTable, other: OtherTable, p: cython.p_uchar, off: cython.Py_ssize_t,
              caplen: cython.Py_ssize_t, wirelen: cython.Py_ssize_t, ts: cython.double,
              name: str, ifno: cython.int, frame_no: cython.longlong,
              tally: _Tally) -> cython.int:
    """The Ethernet frame at `off` in `p`, on interface `name` (its number `ifno`,
    TcpTable.iface_no), accounted where it lies if a table can: a plain TCP frame
    (`TcpTable.frame_packet`), a plain UDP frame (`OtherTable.frame_packet`); counted in
    `tally` then. 0 when `decode` + `Engine.feed` must take it (nothing changed), else 1."""
    tlen: cython.int = tcp.frame_packet(p, off, caplen, wirelen, ts, name, ifno, frame_no)
    if tlen >= 0:
        return tally.add(name, tlen, False)
    tlen = other.frame_packet(p, off, caplen, wirelen, ts, name, ifno, frame_no)
    if tlen >= 0:
        return tally.add(name, tlen, True)
    return 0


@cython.cclass
class _Tally:
    """The summary lines of the frames the in-place paths took on one interface since the
    last `flush`: added to the engine's summary in one go (TCP or UDP, and so IP: rule 14,
    and the interface's), instead of a dozen attribute updates a frame."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = ""
        self.tcp = self.tcp_bytes = self.udp = self.udp_bytes = 0

    @cython.cfunc
    @cython.exceptval(-1, check=False)
    def add(self, name: str, iplen: cython.int, udp: cython.bint) -> cython.int:
        """Counts a frame of `name`; 1 (what `_in_place` answers for a frame taken)."""
        if name is not self.name:  # the counts so far are another interface's
            self.flush()
            self.name = name
        if udp:
            self.udp += 1
            self.udp_bytes += iplen
        else:
            self.tcp += 1
            self.tcp_bytes += iplen
        return 1

    @cython.ccall
    def flush(self) -> cython.void:
        packets: cython.longlong = self.tcp + self.udp
        if not packets:
            return
        nbytes: cython.longlong = self.tcp_bytes + self.udp_bytes
        s = self.engine.summary
        s.count_iface(self.name, packets, nbytes)
        s.frames += packets
        s.ip.packets += packets
        s.ip.bytes += nbytes
        s.tcp.packets += self.tcp
        s.tcp.bytes += self.tcp_bytes
        s.udp.packets += self.udp
        s.udp.bytes += self.udp_bytes
        self.tcp = self.tcp_bytes = self.udp = self.udp_bytes = 0
