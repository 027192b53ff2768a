"""The batch: how captured packets travel from a capture process to a shard (declared here,
once, for the capture side's builder in shards/batch.py and the shard's in-place reader in
fastpath.py).

A hand-over between processes costs about as much as parsing a packet, so packets always
travel in batches: one ``bytes`` object per batch, built incrementally on the capture side.
Layout (all little-endian, no alignment padding)::

    batch   := MAGIC(4) count:u32 record*
    record  := frame_no:u64 ts:f64 wirelen:u32 ifindex:u32 caplen:u32 data[caplen]

``caplen`` is 32 bits because snap lengths (262144 in libpcap) and GRO/GSO super-frames exceed
64 KiB. The count in the header lets the reader reject a truncated or padded batch instead of
silently returning fewer packets.
"""

from __future__ import annotations

import struct

import cython

from .frame import copy_bytes

MAGIC = b"IPB1"
BATCH_HEADER = struct.Struct("<4sI")
RECORD_HEADER = struct.Struct("<QdIII")
BATCH_HEADER_SIZE = 8
RECORD_HEADER_SIZE = 28
# the same as C constants for the compiled builder (imported names are Python objects)
_HDR = cython.declare(cython.Py_ssize_t, 8)
_REC = cython.declare(cython.Py_ssize_t, 28)


class BatchError(ValueError):
    """The bytes are not a well-formed batch."""


_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_U32 = struct.Struct("<I")


@cython.cclass
class BatchBuilder:
    """Accumulates packets into one batch, written in place into a buffer that grows as
    needed: compiled, a record costs its header's stores and one copy of its bytes, no
    Python object.

    The capture loop calls `append` (or, compiled, `put`) per packet and `take` when the
    batch is big enough (`len(builder)` packets or `builder.nbytes` bytes) or a flush timer
    fires.
    """

    def __init__(self) -> None:
        self.buf = bytearray(1 << 16)
        self.size = _HDR
        self.count = 0

    def append(self, frame_no: int, ts: float, wirelen: int, ifindex: int, data: bytes) -> int:
        """Add one packet; returns the number of packets now in the batch."""
        return self.put(data, 0, len(data), frame_no, ts, wirelen, ifindex)

    @cython.ccall
    def put(self, p: cython.p_uchar, off: cython.Py_ssize_t, caplen: cython.Py_ssize_t,
            frame_no: cython.ulonglong, ts: cython.double, wirelen: cython.Py_ssize_t,
            ifindex: cython.Py_ssize_t) -> cython.Py_ssize_t:
        """Add the `caplen` bytes at `p[off]` as one packet; returns the packets now in it."""
        at: cython.Py_ssize_t = self.size
        need: cython.Py_ssize_t = at + _REC + caplen
        if need > len(self.buf):
            grown = bytearray(max(need, 2 * len(self.buf)))
            grown[:at] = self.buf[:at]
            self.buf = grown
        # compiled, a pointer into the bytearray (taken after it grew, never kept)
        view: cython.p_uchar = self.buf
        _put_u64(view, at, frame_no)
        _put_f64(view, at + 8, ts)
        _put_u32(view, at + 16, wirelen)
        _put_u32(view, at + 20, ifindex)
        _put_u32(view, at + 24, caplen)
        at += _REC
        copy_bytes(view, at, p, off, caplen)
        self.size = at + caplen
        self.count += 1
        return self.count

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        """Size of the batch `take` would return now, header included."""
        return self.size

    def take(self) -> bytes:
        """Return the finished batch and start an empty one."""
        BATCH_HEADER.pack_into(self.buf, 0, MAGIC, self.count)
        out = bytes(memoryview(self.buf)[:self.size])
        self.size = _HDR
        self.count = 0
        return out


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _put_u64(view: cython.p_uchar, at: cython.Py_ssize_t, v: cython.ulonglong) -> cython.void:
    _put_u32(view, at, v)  # its low four bytes: _put_u32 stores a byte at a time
    _put_u32(view, at + 4, v >> 32)


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _put_u32(view: cython.p_uchar, at: cython.Py_ssize_t, v: cython.ulonglong) -> cython.void:
    view[at] = v & 0xFF
    view[at + 1] = (v >> 8) & 0xFF
    view[at + 2] = (v >> 16) & 0xFF
    view[at + 3] = (v >> 24) & 0xFF


@cython.cfunc
@cython.inline
@cython.exceptval(check=False)
def _put_f64(view: cython.p_uchar, at: cython.Py_ssize_t, v: cython.double) -> cython.void:
    if cython.compiled:
        # little-endian machines only (x86, arm64), as the batch layout is
        cython.cast(cython.p_double, cython.address(view[at]))[0] = v
    else:
        _F64.pack_into(view, at, v)
