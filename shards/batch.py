"""Building batches of captured packets on the capture side, and reading them back where a
caller wants records (tests, tools). The layout is declared once, in
iptraf_mp/core/batch_format.py; a shard reads its batches in place (fastpath.feed_batch)."""

from __future__ import annotations

import struct

from iptraf_mp.core.batch_format import (
    BATCH_HEADER,
    MAGIC,
    RECORD_HEADER,
    BatchBuilder,
    BatchError,
)
from iptraf_mp.core.frame import carried_len

__all__ = [
    "BATCH_HEADER",
    "BatchBuilder",
    "BatchError",
    "carried",
    "MAGIC",
    "RECORD_HEADER",
    "BatchRecord",
    "decode_batch",
    "encode_batch",
    "split_batch",
]

# one packet as a batch carries it: (frame number, timestamp, wire length, interface index,
# captured bytes); not core.model.Packet, the capture files' (ts, ifindex, data, wirelen)
BatchRecord = tuple[int, float, int, int, bytes]

_BATCH_HEADER_SIZE = BATCH_HEADER.size
_RECORD_HEADER_SIZE = RECORD_HEADER.size


def encode_batch(packets: list[BatchRecord]) -> bytes:
    """Pack ``(frame_no, ts, wirelen, ifindex, data)`` tuples into one batch."""
    pack = RECORD_HEADER.pack
    parts = [BATCH_HEADER.pack(MAGIC, len(packets))]
    for frame_no, ts, wirelen, ifindex, data in packets:
        parts.append(pack(frame_no, ts, wirelen, ifindex, len(data)))
        parts.append(data)
    return b"".join(parts)


def decode_batch(buf: bytes | bytearray | memoryview) -> list[BatchRecord]:
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
    unpack_from = RECORD_HEADER.unpack_from
    hsize = _RECORD_HEADER_SIZE
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
    """What a shard needs of a frame (frame.carried_len)."""
    if linktype != 1:
        return data
    n = carried_len(data, 0, len(data), wirelen)
    return data if n == len(data) else data[:n]


