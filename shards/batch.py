"""Wire format for a batch of captured packets handed from a capture process to a shard.

A hand-over between processes costs about as much as parsing a packet, so packets always travel
in batches: one ``bytes`` object per batch, built incrementally on the capture side.

Layout (all little-endian, no alignment padding)::

    batch   := MAGIC(4) count:u32 record*
    record  := frame_no:u64 ts:f64 wirelen:u32 ifindex:u32 caplen:u32 data[caplen]

``caplen`` is 32 bits because snap lengths (262144 in libpcap) and GRO/GSO super-frames exceed
64 KiB. The count in the header lets the decoder reject a truncated or padded batch instead of
silently returning fewer packets.
"""

from __future__ import annotations

import struct

__all__ = [
    "BATCH_HEADER",
    "BatchBuilder",
    "BatchError",
    "carried",
    "MAGIC",
    "PACKET_HEADER",
    "Packet",
    "decode_batch",
    "encode_batch",
    "split_batch",
]

MAGIC = b"IPB1"
BATCH_HEADER = struct.Struct("<4sI")
PACKET_HEADER = struct.Struct("<QdIII")

Packet = tuple[int, float, int, int, bytes]

_BATCH_HEADER_SIZE = BATCH_HEADER.size
_PACKET_HEADER_SIZE = PACKET_HEADER.size
# Placeholder header; the real count is patched in by take(), so append() never touches it.
_EMPTY_HEADER = BATCH_HEADER.pack(MAGIC, 0)
_pack_header = PACKET_HEADER.pack


class BatchError(ValueError):
    """The bytes are not a well-formed batch."""


def encode_batch(packets: list[Packet]) -> bytes:
    """Pack ``(frame_no, ts, wirelen, ifindex, data)`` tuples into one batch."""
    pack = PACKET_HEADER.pack
    parts = [BATCH_HEADER.pack(MAGIC, len(packets))]
    for frame_no, ts, wirelen, ifindex, data in packets:
        parts.append(pack(frame_no, ts, wirelen, ifindex, len(data)))
        parts.append(data)
    return b"".join(parts)


def decode_batch(buf: bytes | bytearray | memoryview) -> list[Packet]:
    """Unpack a batch made by :func:`encode_batch` or :meth:`BatchBuilder.take`.

    Raises :class:`BatchError` if the batch is truncated, has trailing bytes or a bad magic.
    """
    numbers, records = split_batch(buf)
    return [(n, ts, wirelen, ifindex, data)
            for n, (ts, ifindex, data, wirelen) in zip(numbers, records, strict=True)]


def split_batch(buf: bytes | bytearray | memoryview
                ) -> tuple[list[int], list[tuple[float, int, bytes, int]]]:
    """A batch as its frame numbers and, beside them, records shaped as capture files yield
    them, (ts, ifindex, data, wirelen): what `iptraf_mp.core.fastpath.feed_records` takes.

    Raises :class:`BatchError` as :func:`decode_batch` does.
    """
    if type(buf) is not bytes:
        # One copy up front makes every per-packet slice a plain bytes slice; slicing a
        # memoryview and calling bytes() on each piece measured slower.
        buf = bytes(buf)
    end = len(buf)
    if end < _BATCH_HEADER_SIZE:
        raise BatchError(f"batch of {end} bytes is shorter than its header")
    magic, count = BATCH_HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise BatchError(f"bad batch magic {magic!r}")
    unpack_from = PACKET_HEADER.unpack_from
    hsize = _PACKET_HEADER_SIZE
    numbers: list[int] = []
    records: list[tuple[float, int, bytes, int]] = []
    number = numbers.append
    append = records.append
    off = _BATCH_HEADER_SIZE
    try:
        for _ in range(count):
            frame_no, ts, wirelen, ifindex, caplen = unpack_from(buf, off)
            off += hsize
            stop = off + caplen
            if stop > end:
                raise BatchError(f"packet data runs past the end of the batch ({stop} > {end})")
            number(frame_no)
            append((ts, ifindex, buf[off:stop], wirelen))
            off = stop
    except struct.error as exc:
        raise BatchError(f"truncated packet header at offset {off}") from exc
    if off != end:
        raise BatchError(f"{end - off} trailing bytes after {count} packets")
    return numbers, records


def carried(linktype: int, data: bytes, wirelen: int) -> bytes:
    """What a shard needs of a frame: all of it, except for the frame that dominates router
    traffic, Ethernet + IPv4 without options + unfragmented TCP with sane lengths, whose
    first 54 bytes are all the decoder reads (`iptraf_mp.core.decode.decode`'s one-unpack case,
    the same test: lengths come from the headers and the wire length, never from what was
    captured). The payload need not cross the ring: batches shrink about tenfold on bulk
    transfers, so the rings hold ten times the packets before a burst overflows them."""
    if linktype == 1 and len(data) > 54 and data[14] == 0x45 and data[23] == 6 \
            and data[12] == 8 and not data[13] and not (data[20] & 0x3F or data[21]):
        thl = (data[46] >> 4) << 2
        if thl >= 20 and 20 + thl <= ((data[16] << 8) | data[17]) <= wirelen - 14:
            return data[:54]
    return data


class BatchBuilder:
    """Accumulates packets into one batch with as little work per packet as possible.

    The capture loop calls :meth:`append` per packet and :meth:`take` when the batch is big
    enough (``len(builder)`` packets or ``builder.nbytes`` bytes) or a flush timer fires.
    """

    __slots__ = ("_buf", "_count")

    def __init__(self) -> None:
        self._buf = bytearray(_EMPTY_HEADER)
        self._count = 0

    def append(self, frame_no: int, ts: float, wirelen: int, ifindex: int, data: bytes) -> int:
        """Add one packet; returns the number of packets now in the batch.

        The return value lets a capture loop test ``if append(...) >= limit`` without a
        second call (``len(builder)`` costs about a quarter of an append).
        """
        # Measured (bench/bench_queue.py --micro): one ``+=`` of header + data and two
        # ``+=`` cost the same within noise (~0.2 us inline); pack_into() into a preallocated
        # bytearray plus a slice assignment was 3-4x slower, as both calls export a buffer
        # from the bytearray. The method call itself adds ~0.1 us.
        self._buf += _pack_header(frame_no, ts, wirelen, ifindex, len(data)) + data
        self._count = count = self._count + 1
        return count

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Size of the batch :meth:`take` would return now, header included."""
        return len(self._buf)

    def take(self) -> bytes:
        """Return the finished batch and start an empty one."""
        buf = self._buf
        BATCH_HEADER.pack_into(buf, 0, MAGIC, self._count)
        self._buf = bytearray(_EMPTY_HEADER)
        self._count = 0
        return bytes(buf)
