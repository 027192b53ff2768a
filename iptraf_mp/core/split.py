"""The capture process's loop over a pcap file, compiled: the packet clock, the shard of
each frame, and its record appended to that shard's batch, read where the frame lies in the
reader's buffer.

`split_pcap` runs until something needs the shell (shards/reader.py): a clock tick to
broadcast, a frame the shard picker must look at (anything but plain Ethernet IPv4 TCP or
UDP: it may need the decoder and the other shards told), a batch that is full, or the end
of the buffer. It returns which, with the state in a `SplitState`; the shell acts and calls
it again. The simple twin is the record loop in shards/reader.py, which the differential
tests compare it with (the same batches, byte for byte).
"""

from __future__ import annotations

import cython

from .batch_format import BatchBuilder
from .frame import carried_len, plain_shard, u32

EV_END = 0  # no whole record left in the buffer: refill, then call again
EV_TICK = 1  # the packet clock ticks at the record at `pos`: broadcast a tick at `ts`
EV_SLOW = 2  # the record at `start` (numbered `frame_no`) is for the shard picker
EV_FULL = 3  # the batch of `shard` is full


class SplitState:
    """Where `split_pcap` stopped, and the clock it carries (PacketClock's now and next)."""

    __slots__ = ("pos", "frame_no", "nbytes", "now", "next", "ts", "shard", "start",
                 "caplen", "wirelen", "data")

    def __init__(self, pos: int, frame_no: int, now: float, nxt: float) -> None:
        self.pos = pos  # next record in the buffer
        self.frame_no = frame_no  # frames read so far (the last one's number)
        self.nbytes = 0  # wire bytes of the frames read
        self.now = now
        self.next = nxt
        self.ts = 0.0  # EV_TICK, EV_SLOW: the record's time
        self.shard = 0  # EV_FULL
        self.start = 0  # EV_SLOW: the frame's offset, length and wire length
        self.caplen = 0
        self.wirelen = 0
        self.data = b""  # split_live's EV_SLOW: the frame


@cython.cfunc
@cython.inline
def _next_second(ts: cython.double) -> cython.double:
    """PacketClock's next tick: float(int(ts) + 1)."""
    whole: cython.longlong = int(ts)
    return whole + 1.0


def split_pcap(st: SplitState, buf: bytes, big_endian: cython.bint, units: cython.double,
               ifindex: cython.int, linktype: cython.int, nshards: cython.int,
               builders: list[BatchBuilder], batch_packets: cython.Py_ssize_t,
               batch_bytes: cython.Py_ssize_t) -> int:
    """Append the records of `buf` from `st.pos` on to `builders` (one per shard) until an
    event (EV_*); returns it, `st` updated."""
    p: cython.p_uchar = buf
    end: cython.Py_ssize_t = len(buf)
    pos: cython.Py_ssize_t = st.pos
    n: cython.Py_ssize_t = st.frame_no
    nbytes: cython.longlong = st.nbytes
    now: cython.double = st.now
    nxt: cython.double = st.next
    ether: cython.bint = linktype == 1
    sec: cython.ulonglong
    frac: cython.ulonglong
    caplen: cython.Py_ssize_t
    wirelen: cython.Py_ssize_t
    start: cython.Py_ssize_t
    ts: cython.double
    s: cython.int
    count: cython.Py_ssize_t
    b: BatchBuilder
    event: cython.int = EV_END
    while pos + 16 <= end:
        sec, frac = u32(p, pos, big_endian), u32(p, pos + 4, big_endian)
        caplen, wirelen = u32(p, pos + 8, big_endian), u32(p, pos + 12, big_endian)
        start = pos + 16
        if start + caplen > end:
            break
        ts = sec + frac / units  # as the record reader computes it
        if ts > now:  # PacketClock.advance
            now = ts
            if ts >= nxt:
                nxt = _next_second(ts)
                st.ts = ts
                event = EV_TICK
                break  # the record stays: called again, its time is no longer ahead
        n += 1
        nbytes += wirelen
        if nshards == 1:
            s = 0
        elif ether:
            s = plain_shard(p, start, caplen, ifindex, nshards)
        else:
            s = -1
        if s < 0:
            st.ts, st.start, st.caplen, st.wirelen = ts, start, caplen, wirelen
            pos = start + caplen
            event = EV_SLOW
            break
        b = builders[s]
        count = b.put(p, start, carried_len(p, start, caplen, wirelen) if ether else caplen,
                      n, ts, wirelen, ifindex)
        pos = start + caplen
        if count >= batch_packets or b.size >= batch_bytes:
            st.shard = s
            event = EV_FULL
            break
    st.pos, st.frame_no, st.nbytes, st.now, st.next = pos, n, nbytes, now, nxt
    return event


def split_live(st: SplitState, pkts: list, linktype: cython.int,
               ifindex: cython.int, nshards: cython.int, builders: list[BatchBuilder],
               id_shift: cython.int, id_index: cython.longlong, batch_packets: cython.Py_ssize_t,
               batch_bytes: cython.Py_ssize_t) -> int:
    """The live capture loop's work for the packets pypcap read at once, (nanosecond time,
    frame) each, from `pkts[st.pos]` on, as split_pcap does it for a file (same events;
    EV_SLOW hands the frame over as `st.data`, numbered `st.frame_no`, at `st.ts`; with
    `nshards` 0 every frame is). Pair ids carry the capture process's index in their low
    `id_shift` bits."""
    i: cython.Py_ssize_t = st.pos
    count_pkts: cython.Py_ssize_t = len(pkts)
    n: cython.longlong = st.frame_no
    nbytes: cython.longlong = st.nbytes
    now: cython.double = st.now
    nxt: cython.double = st.next
    ether: cython.bint = linktype == 1
    tsus: cython.longlong
    ts: cython.double
    wirelen: cython.Py_ssize_t
    s: cython.int
    count: cython.Py_ssize_t
    p: cython.p_uchar
    b: BatchBuilder
    event: cython.int = EV_END
    while i < count_pkts:
        tsns, buf = pkts[i]
        # microseconds, as the recording (-w) keeps them: a replay of it sees this clock
        tsus = (tsns + 500) // 1000
        ts = tsus / 1e6
        if ts > now:  # PacketClock.advance
            now = ts
            if ts >= nxt:
                nxt = _next_second(ts)
                st.ts = ts
                event = EV_TICK
                break  # the packet stays: called again, its time is no longer ahead
        data = bytes(buf)
        wirelen = len(data)  # the snap length is 256 KiB: nothing is cut
        n += 1
        nbytes += wirelen
        i += 1
        p = data
        if nshards <= 0:
            s = -1  # every frame to the shell
        elif nshards == 1:
            s = 0
        elif ether:
            s = plain_shard(p, 0, wirelen, ifindex, nshards)
        else:
            s = -1
        if s < 0:
            st.ts, st.data = ts, data
            event = EV_SLOW
            break
        b = builders[s]
        count = b.put(p, 0, carried_len(p, 0, wirelen, wirelen) if ether else wirelen,
                      (n << id_shift) | id_index, ts, wirelen, ifindex)
        if count >= batch_packets or b.size >= batch_bytes:
            st.shard = s
            event = EV_FULL
            break
    st.pos, st.frame_no, st.nbytes, st.now, st.next = i, n, nbytes, now, nxt
    return event
