"""Capture files: read classic pcap and pcapng, write pcapng.

The reader sits on the replay hot path (a replay of a large capture spends
most of its time here), so the per-packet loops are written for CPython speed:
the file is read in large chunks, records are decoded with precompiled
``struct.Struct.unpack_from`` bound to locals, and anything unusual drops out
of the tight loop into a slower path that does all the checking.

Length fields in capture files are never trusted: a record that claims more
bytes than the file holds ends the iteration with ``CaptureFileError`` after
every complete record before it has been yielded.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from itertools import chain
from types import TracebackType
from typing import BinaryIO

from iptraf_mp.core.model import Packet

# Big enough that refills (which copy the unread tail) are rare, small enough
# to stay cache- and memory-friendly while many shards replay at once.
_CHUNK_SIZE = 1 << 20
# Cap on a single read so a corrupt length cannot make us allocate gigabytes.
_MAX_READ = 16 << 20
# No link layer carries frames anywhere near this; a larger record length
# means the file is corrupt (or we are reading garbage after its end).
_MAX_CAPLEN = 256 << 20
_MAX_BLOCK = _MAX_CAPLEN + (1 << 20)
# Timestamps every output can hold (pcapng's unsigned microseconds, IPFIX's unsigned
# milliseconds, the log's ctime, JSON and SQLite): 1970-01-01 to the end of year 9999. A
# pcapng interface's resolution and if_tsoffset can put a packet anywhere in +-2**64 s;
# such a time is clamped here, where every frame comes in, so every output agrees on it.
TS_MIN = 0.0
TS_MAX = 253402300799.0
# More interface blocks than this is a hostile file (one IDB is 20 bytes): iptraf-mp's
# limit, which also keeps interface numbers apart from the pipeline's control records.
MAX_INTERFACES = 1 << 16

# --- classic pcap ---------------------------------------------------------
# magic as it appears on disk -> (struct byte order, nanosecond timestamps)
_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", False),
    b"\xa1\xb2\xc3\xd4": (">", False),
    b"\x4d\x3c\xb2\xa1": ("<", True),
    b"\xa1\xb2\x3c\x4d": (">", True),
}
# Kuznetzov's "modified" pcap has longer record headers; not worth supporting,
# but worth naming in the error.
_MODIFIED_PCAP_MAGICS = (b"\x34\xcd\xb2\xa1", b"\xa1\xb2\xcd\x34")
_PCAP_FILE_HDR_LEN = 24
_PCAP_REC_LEN = 16
# after the magic: version major, minor, thiszone, sigfigs, snaplen, link-type field
_PCAP_HDR = {"<": struct.Struct("<HHiIII"), ">": struct.Struct(">HHiIII")}
# ts seconds, ts fraction, captured length, wire length
_PCAP_REC = {"<": struct.Struct("<IIII"), ">": struct.Struct(">IIII")}
# Upper bits of the pcap link-type field (libpcap's LT_FCS_LENGTH_PRESENT and
# LT_FCS_LENGTH): FCS length in 16-bit words, valid only with the P bit set.
_LT_FCS_PRESENT = 0x04000000

# --- pcapng ---------------------------------------------------------------
_SHB = 0x0A0D0D0A  # a palindrome, so it reads the same in both byte orders
_IDB = 1
_OBSOLETE_PB = 2
_SPB = 3
_EPB = 6
_SHB_MAGIC_LE = b"\x4d\x3c\x2b\x1a"
_SHB_MAGIC_BE = b"\x1a\x2b\x3c\x4d"
_SHB_MIN_LEN = 28
_EPB_FIXED = 32  # block header, 20 bytes of fields, trailing length
_OPT_END = 0
_OPT_COMMENT = 1
_SHB_OS = 3
_SHB_USERAPPL = 4
_IF_NAME = 2
_IF_TSRESOL = 9
_IF_FCSLEN = 13
_IF_TSOFFSET = 14


@dataclass(frozen=True, slots=True)
class _NgStructs:
    """The pcapng structs for one byte order (each section chooses its own)."""

    u32: struct.Struct
    head: struct.Struct  # block type, block total length
    epb: struct.Struct  # head + interface, ts high, ts low, caplen, wire length
    pb: struct.Struct  # obsolete packet block: if id (16), drops (16), ts hi, ts lo, caplen, len
    shb: struct.Struct  # head + byte-order magic, version major, minor
    idb: struct.Struct  # link type, reserved, snaplen
    opt: struct.Struct  # option code, option length
    i64: struct.Struct


def _ng_structs(order: str) -> _NgStructs:
    return _NgStructs(
        u32=struct.Struct(order + "I"),
        head=struct.Struct(order + "II"),
        epb=struct.Struct(order + "7I"),
        pb=struct.Struct(order + "HHIIII"),
        shb=struct.Struct(order + "II4sHH"),
        idb=struct.Struct(order + "HHI"),
        opt=struct.Struct(order + "HH"),
        i64=struct.Struct(order + "q"),
    )


_NG_LE = _ng_structs("<")
_NG_BE = _ng_structs(">")

# Per-section interface table entry: global index, timestamp units per second,
# timestamp offset in seconds, snaplen (needed to size Simple Packet Blocks).
_SectionIf = tuple[int, int, int, int]


class CaptureFileError(Exception):
    """A capture file cannot be opened, is not a capture, or is damaged.

    ``str(e)`` is a one-line message that starts with the file name. ``exit_status`` is
    what the command exits with for it: 1 for damage (what came before still counts), 2
    for a file refused (beyond iptraf-mp's limits).
    """

    exit_status = 1


class CaptureFileRefused(CaptureFileError):
    exit_status = 2


@dataclass(slots=True)
class Interface:
    """One capture interface; packets refer to it by its index in ``interfaces``."""

    name: str  # pcapng if_name, else f"if{index}"
    linktype: int  # LINKTYPE_* value (low 16 bits of the pcap link-type field)
    snaplen: int  # 0 in pcapng means "no limit"
    fcs_len: int = 0  # bytes of FCS at the end of each frame, when the file says so


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def _packets(count: int) -> str:
    return "1 packet" if count == 1 else f"{count} packets"


STDIN = "-"


def open_capture(path: str | os.PathLike[str]) -> CaptureReader:
    """Open a pcap or pcapng file (optionally gzip-compressed) for reading; `-` is standard
    input. Pipes, FIFOs and character devices are read as they come, as tcpdump reads them
    (opening a FIFO waits for its writer).

    Raises CaptureFileError if the file is missing, unreadable, a directory,
    empty, or not a capture file.
    """
    name = os.fspath(path)
    if name == STDIN:
        # our own descriptor: closing the reader must not close the process's stdin
        raw = open(os.dup(0), "rb", buffering=0)  # noqa: SIM115
        name = "standard input"
    else:
        try:
            # Unbuffered: we read in big chunks ourselves, a buffer would only copy.
            raw = open(name, "rb", buffering=0)  # noqa: SIM115
        except FileNotFoundError:
            raise CaptureFileError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise CaptureFileError(f"{name}: is a directory") from None
        except PermissionError:
            raise CaptureFileError(f"{name}: permission denied") from None
        except OSError as err:
            raise CaptureFileError(f"{name}: cannot open: {_reason(err)}") from None
    try:
        return CaptureReader(name, raw)
    except BaseException:
        raw.close()
        raise


def capture_of(source: str | CaptureReader) -> CaptureReader:
    """A reader for `source`: a path (opened here) or a reader already open (a pipe or a
    FIFO can be opened once only, so the command line opens it and hands it on)."""
    return source if isinstance(source, CaptureReader) else open_capture(source)


class _Gunzip:
    """gzip members decompressed as they are read: from a pipe as from a file, and a stream
    cut short gives everything before the cut (GzipFile.read drops what it had decompressed
    of a read that meets the cut). `read` raises EOFError at a cut, after the data."""

    def __init__(self, raw: BinaryIO, head: bytes) -> None:
        self._raw = raw
        self._input = head  # compressed bytes not yet decompressed
        self._z = zlib.decompressobj(31)
        self._in_member = False  # a member has begun and not ended
        self._eof = False

    def read(self, n: int) -> bytes:
        while not self._eof:
            if not self._input:
                self._input = self._raw.read(_CHUNK_SIZE)
                if not self._input:
                    self._eof = True
                    if self._in_member:
                        raise EOFError("compressed data ends before its end-of-stream marker")
                    return b""
            if not self._in_member and self._input[:2] != b"\x1f\x8b":
                self._eof = True  # trailing bytes after the last member: ignored, as gzip does
                return b""
            self._in_member = True
            # bounded output: a small input may decompress to gigabytes
            out = self._z.decompress(self._input, max(n, _CHUNK_SIZE))
            self._input = self._z.unconsumed_tail
            if self._z.eof:  # this member ended; another may follow (gzip -c a b > c)
                self._input = self._z.unused_data + self._input
                self._z = zlib.decompressobj(31)
                self._in_member = False
            if out:
                return out
        return b""

    def close(self) -> None:
        pass


class CaptureReader:
    """Iterates the packets of a capture file; create it with open_capture().

    Iteration is single-pass, like reading a file: iterating again continues
    where the previous loop stopped.
    """

    path: str
    interfaces: list[Interface]

    def __init__(self, path: str, raw: BinaryIO) -> None:
        self.path = path
        self.interfaces = []
        self._raw = raw
        self._file: BinaryIO = raw
        self._closed = False
        self._read_error: CaptureFileError | None = None  # raised at the next read
        self._gen: Generator[Packet, None, None] | None = None
        self._packets: Iterator[Packet] = iter(())
        self._raw_pcap: RawPcap | None = None
        self._start()

    def fileno(self) -> int | None:
        """The descriptor of the file being read (a gzip'd file's own, compressed), or None:
        its offset says how far the reading has come (console/progress.py)."""
        try:
            return self._raw.fileno()
        except (AttributeError, OSError, ValueError):  # an in-memory file, or closed
            return None

    # --- opening ----------------------------------------------------------
    def _start(self) -> None:
        head = self._read_more(b"", _PCAP_FILE_HDR_LEN, 0, 0)
        if not head:
            raise CaptureFileError(f"{self.path}: empty file")
        if head[:2] == b"\x1f\x8b":
            # tshark and tcpdump read gzip'd captures, so we do too; the
            # chunked reader does not care where its bytes come from.
            self._file = _Gunzip(self._raw, head)  # type: ignore[assignment]
            head = self._read_more(b"", _PCAP_FILE_HDR_LEN, 0, 0)
            if not head:
                raise CaptureFileError(f"{self.path}: empty file (after gzip decompression)")
        magic = head[:4]
        if magic in _PCAP_MAGICS:
            self._start_pcap(head)
        elif magic == b"\x0a\x0d\x0d\x0a":
            self._start_pcapng(head)
        elif magic in _MODIFIED_PCAP_MAGICS:
            raise CaptureFileError(f"{self.path}: unsupported 'modified' (Kuznetzov) pcap format")
        else:
            raise CaptureFileError(f"{self.path}: not a pcap or pcapng file")

    def _start_pcap(self, head: bytes) -> None:
        if len(head) < _PCAP_FILE_HDR_LEN:
            raise CaptureFileError(f"{self.path}: truncated pcap file header")
        order, nano = _PCAP_MAGICS[head[:4]]
        major, minor, _zone, _sigfigs, snaplen, ltfield = _PCAP_HDR[order].unpack_from(head, 4)
        if major != 2:
            raise CaptureFileError(f"{self.path}: unsupported pcap version {major}.{minor}")
        fcs_len = (ltfield >> 28) * 2 if ltfield & _LT_FCS_PRESENT else 0
        self.interfaces.append(Interface("if0", ltfield & 0xFFFF, snaplen, fcs_len))
        self._raw_pcap = RawPcap(self, head[_PCAP_FILE_HDR_LEN:], order, nano)
        self._gen = self._pcap_packets(self._raw_pcap)
        self._packets = self._gen

    def _start_pcapng(self, head: bytes) -> None:
        if len(head) < 12:
            raise CaptureFileError(f"{self.path}: truncated pcapng section header")
        if head[8:12] not in (_SHB_MAGIC_LE, _SHB_MAGIC_BE):
            raise CaptureFileError(f"{self.path}: not a pcap or pcapng file")
        if len(head) < _SHB_MIN_LEN:
            head = self._read_more(head, _SHB_MIN_LEN, 0, 0)
            if len(head) < _SHB_MIN_LEN:
                raise CaptureFileError(f"{self.path}: truncated pcapng section header")
        ng = _NG_LE if head[8:12] == _SHB_MAGIC_LE else _NG_BE
        major = ng.shb.unpack_from(head, 0)[3]
        if major != 1:
            raise CaptureFileError(f"{self.path}: unsupported pcapng version {major}")
        gen = self._pcapng_packets(head)
        self._gen = gen
        # Run up to the first packet now, so that callers see the interfaces
        # declared before it without having to start iterating. Damage found
        # on the way is reported when they iterate, like damage found later.
        try:
            first = next(gen)
        except StopIteration:
            self._packets = iter(())
        except CaptureFileError as err:
            self._packets = _raise_later(err)
        else:
            self._packets = chain((first,), gen)

    # --- reading ----------------------------------------------------------
    def _read_more(self, tail: bytes, need: int, offset: int, count: int,
                   exact: bool = False) -> bytes:
        """Return ``tail`` extended to at least ``need`` bytes, or shorter at EOF.

        ``offset`` (file offset of ``tail``) and ``count`` (packets yielded so
        far) only serve error messages. ``exact``: read no more than ``need``
        (a chunk read behind a tail is one copy of the chunk more).
        """
        have = len(tail)
        parts = [tail] if tail else []
        read = self._file.read
        if self._read_error is not None:
            raise self._read_error
        while have < need:
            try:
                chunk = read(need - have if exact else max(_CHUNK_SIZE,
                                                           min(need - have, _MAX_READ)))
            except (EOFError, zlib.error) as err:
                self._read_error = CaptureFileError(
                    f"{self.path}: truncated or corrupt compressed data near byte "
                    f"{offset + have}, after {_packets(count)} ({_reason(err)})"
                )
                if have > len(tail):
                    break  # the records in what did decompress come first
                raise self._read_error from None
            except OSError as err:
                raise CaptureFileError(
                    f"{self.path}: read error near byte {offset + have}, after "
                    f"{_packets(count)}: {_reason(err)}"
                ) from None
            except ValueError:  # the file was closed under us
                break
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _truncated(self, what: str, offset: int, count: int) -> CaptureFileError:
        return CaptureFileError(
            f"{self.path}: truncated capture: {what} at byte {offset} is cut short, "
            f"after {_packets(count)}"
        )

    def _corrupt(self, what: str, offset: int, count: int) -> CaptureFileError:
        return CaptureFileError(
            f"{self.path}: truncated or corrupt capture: {what} at byte {offset}; "
            f"stopped after {_packets(count)}"
        )

    def _pcap_packets(self, raw: RawPcap) -> Generator[Packet, None, None]:
        unpack = _PCAP_REC[raw.order].unpack_from
        units = raw.units
        while True:
            buf = raw.buf
            pos = raw.pos
            end = len(buf)
            # Hot loop: only the bounds check that keeps slicing honest.
            while pos + 16 <= end:
                sec, frac, caplen, wirelen = unpack(buf, pos)
                start = pos + 16
                nxt = start + caplen
                if nxt > end:
                    break
                raw.pos = nxt
                raw.count += 1
                yield (sec + frac / units, 0, buf[start:nxt], wirelen)
                pos = nxt
            if not raw.refill():
                return

    def raw_pcap(self) -> RawPcap | None:
        """A pcap file's records in the reader's own buffer, for a caller that parses them in
        place (the compiled fast path), or None (pcapng). Reading it and iterating the reader
        are the same pass: either one continues where the other stopped."""
        return self._raw_pcap

    def _pcapng_packets(self, buf: bytes) -> Generator[Packet, None, None]:
        ng = _NG_LE  # replaced by the first SHB, which is at pos 0
        epb = ng.epb.unpack_from
        u32 = ng.u32.unpack_from
        table: list[_SectionIf] = []
        base = 0
        pos = 0
        count = 0
        last_ts = 0.0
        while True:
            end = len(buf)
            # Hot loop: Enhanced Packet Blocks of known interfaces that lie
            # wholly in the buffer; everything else goes the slow way below.
            while pos + 28 <= end:
                btype, blen, ifid, hi, lo, caplen, wirelen = epb(buf, pos)
                nxt = pos + blen
                if btype != _EPB or nxt > end or caplen + _EPB_FIXED > blen or blen & 3:
                    break
                if u32(buf, nxt - 4)[0] != blen:
                    break
                try:
                    gidx, units, tsoff, _snap = table[ifid]
                except IndexError:
                    break
                last_ts = ((hi << 32) | lo) / units + tsoff
                if not TS_MIN <= last_ts <= TS_MAX:
                    last_ts = _clamp_ts(last_ts)
                start = pos + 28
                yield (last_ts, gidx, buf[start : start + caplen], wirelen)
                count += 1
                pos = nxt

            if self._closed:
                return
            if pos + 12 > end:
                base += pos
                buf = self._read_more(buf[pos:], 12, base, count)
                pos = 0
                if len(buf) < 12:
                    if not buf:
                        return
                    raise self._truncated("block header", base, count)
                continue
            btype = ng.u32.unpack_from(buf, pos)[0]
            if btype == _SHB:
                bom = buf[pos + 8 : pos + 12]
                if bom == _SHB_MAGIC_LE:
                    ng = _NG_LE
                elif bom == _SHB_MAGIC_BE:
                    ng = _NG_BE
                else:
                    raise self._corrupt(
                        "section header with bad byte-order magic", base + pos, count
                    )
                epb = ng.epb.unpack_from
                u32 = ng.u32.unpack_from
            blen = ng.head.unpack_from(buf, pos)[1]
            if blen < 12 or blen & 3 or blen > _MAX_BLOCK:
                raise self._corrupt(
                    f"block of type {btype:#x} claims length {blen}", base + pos, count
                )
            nxt = pos + blen
            if nxt > end:
                base += pos
                buf = self._read_more(buf[pos:], blen, base, count)
                pos = 0
                if len(buf) < blen:
                    raise self._truncated(f"block of type {btype:#x}", base, count)
                continue
            if u32(buf, nxt - 4)[0] != blen:
                raise self._corrupt(
                    f"block of type {btype:#x} has mismatched trailing length", base + pos, count
                )

            if btype == _EPB or btype == _OBSOLETE_PB:
                if blen < _EPB_FIXED:
                    raise self._corrupt("packet block too short", base + pos, count)
                if btype == _EPB:
                    _t, _l, ifid, hi, lo, caplen, wirelen = epb(buf, pos)
                else:
                    ifid, _drops, hi, lo, caplen, wirelen = ng.pb.unpack_from(buf, pos + 8)
                if caplen + _EPB_FIXED > blen:
                    raise self._corrupt(
                        f"packet claims {caplen} captured bytes in a {blen}-byte block",
                        base + pos,
                        count,
                    )
                if ifid >= len(table):
                    raise self._corrupt(
                        f"packet refers to undeclared interface {ifid}", base + pos, count
                    )
                gidx, units, tsoff, _snap = table[ifid]
                last_ts = _clamp_ts(((hi << 32) | lo) / units + tsoff)
                yield (last_ts, gidx, buf[pos + 28 : pos + 28 + caplen], wirelen)
                count += 1
            elif btype == _SPB:
                if blen < 16:
                    raise self._corrupt("simple packet block too short", base + pos, count)
                if not table:
                    raise self._corrupt(
                        "simple packet block before any interface", base + pos, count
                    )
                gidx, _units, _tsoff, snap = table[0]
                wirelen = ng.u32.unpack_from(buf, pos + 8)[0]
                # The block does not say how much was captured: it is the
                # packet length clipped to the snaplen (the rest is padding).
                caplen = min(wirelen, blen - 16)
                if snap:
                    caplen = min(caplen, snap)
                # SPBs carry no timestamp; the last one seen is the best guess.
                yield (last_ts, gidx, buf[pos + 12 : pos + 12 + caplen], wirelen)
                count += 1
            elif btype == _IDB:
                if len(self.interfaces) >= MAX_INTERFACES:
                    raise CaptureFileRefused(
                        f"{self.path}: more than {MAX_INTERFACES} interfaces (block at byte "
                        f"{base + pos}): iptraf-mp's limit; stopped after {_packets(count)}")
                table.append(self._parse_idb(buf, pos, nxt, ng, base, count))
            elif btype == _SHB:
                if blen < _SHB_MIN_LEN:
                    raise self._corrupt("section header too short", base + pos, count)
                major = ng.shb.unpack_from(buf, pos)[3]
                if major != 1:
                    raise self._corrupt(
                        f"section header of unsupported version {major}", base + pos, count
                    )
                # Interface ids restart at 0 in each section; indices into
                # self.interfaces keep growing, so they stay unique.
                table = []
            # Any other block (NRB, ISB, DSB, custom, ...) carries nothing we use.
            pos = nxt

    def _parse_idb(
        self, buf: bytes, pos: int, nxt: int, ng: _NgStructs, base: int, count: int
    ) -> _SectionIf:
        if nxt - pos < 20:
            raise self._corrupt("interface description block too short", base + pos, count)
        linktype, _reserved, snaplen = ng.idb.unpack_from(buf, pos + 8)
        gidx = len(self.interfaces)
        name = f"if{gidx}"
        units = 1_000_000
        tsoff = 0
        fcs_len = 0
        opt = pos + 16
        oend = nxt - 4
        unpack_opt = ng.opt.unpack_from
        while opt + 4 <= oend:
            code, olen = unpack_opt(buf, opt)
            vstart = opt + 4
            vend = vstart + olen
            if code == _OPT_END or vend > oend:
                # A lying option length ends the options, not the file: the
                # block itself was framed correctly.
                break
            if code == _IF_NAME:
                name = buf[vstart:vend].rstrip(b"\0").decode("utf-8", "replace") or name
            elif code == _IF_TSRESOL and olen >= 1:
                res = buf[vstart]
                units = 1 << (res & 0x7F) if res & 0x80 else 10**res
            elif code == _IF_FCSLEN and olen >= 1:
                # The spec says bits (and Wireshark reads bits), but some
                # writers put bytes; no FCS is shorter than 8 bits.
                fcs = buf[vstart]
                fcs_len = fcs // 8 if fcs >= 8 else fcs
            elif code == _IF_TSOFFSET and olen >= 8:
                tsoff = ng.i64.unpack_from(buf, vstart)[0]
            opt = vstart + ((olen + 3) & ~3)
        self.interfaces.append(Interface(name, linktype, snaplen, fcs_len))
        return (gidx, units, tsoff, snaplen)

    # --- public -----------------------------------------------------------
    def __iter__(self) -> Iterator[Packet]:
        return self._packets

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._gen is not None:
            try:
                self._gen.close()
            except ValueError:  # close() called from inside the running generator
                pass
        try:
            if self._file is not self._raw:
                self._file.close()
        finally:
            self._raw.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RawPcap:
    """The records of a pcap file as they lie in the reader's buffer: `buf[pos:]` holds
    `count`'s successors, whole or cut at the buffer's end. A consumer parses the whole
    records in place, sets `pos` and `count` past them, then calls `refill()`. (pcap's
    seconds and fraction are both unsigned 32-bit: its times never need clamping.)"""

    def __init__(self, reader: CaptureReader, buf: bytes, order: str, nano: bool) -> None:
        self.reader = reader
        self.buf = buf
        self.pos = 0
        self.count = 0  # records consumed
        self.base = _PCAP_FILE_HDR_LEN  # file offset of buf[0]
        self.order = order
        self.big_endian = order == ">"
        self.units = 1_000_000_000 if nano else 1_000_000

    def refill(self) -> bool:
        """Keep the unread tail and read more behind it; False at the end of the file. A
        record cut short or claiming an absurd length raises CaptureFileError (the records
        before it have been consumed)."""
        reader = self.reader
        if reader._closed:
            return False
        buf, pos = self.buf, self.pos
        need = _PCAP_REC_LEN
        if pos + 16 <= len(buf):
            caplen = _PCAP_REC[self.order].unpack_from(buf, pos)[2]
            if caplen > _MAX_CAPLEN:
                raise reader._corrupt(f"record claims {caplen} captured bytes",
                                      self.base + pos, self.count)
            need += caplen
        self.base += pos
        # A record cut at the buffer's end is completed by reading just what it lacks, and
        # the next refill reads a chunk of its own: joining a megabyte behind the tail
        # copied every byte of the file once more (a tenth of a replay's instructions)
        tail = buf[pos:]
        buf = self.buf = reader._read_more(tail, need, self.base, self.count, exact=bool(tail))
        self.pos = 0
        if len(buf) < need:
            if not buf:
                return False
            what = "record header" if len(buf) < _PCAP_REC_LEN else "record"
            raise reader._truncated(what, self.base, self.count)
        return True


def _clamp_ts(ts: float) -> float:
    """Into [TS_MIN, TS_MAX] (NaN, which no pcapng field yields, would go to TS_MIN)."""
    if ts > TS_MAX:
        return TS_MAX
    if ts >= TS_MIN:
        return ts
    return TS_MIN


def _raise_later(err: CaptureFileError) -> Iterator[Packet]:
    raise err
    yield  # pragma: no cover - makes this a generator


# --- writer -----------------------------------------------------------------
_W_HEAD = struct.Struct("<II")
_W_U32 = struct.Struct("<I")
_W_SHB_FIELDS = struct.Struct("<IHHq")  # byte-order magic, version, section length
_W_IDB_FIELDS = struct.Struct("<HHI")
_W_OPT = struct.Struct("<HH")
_W_EPB_HEAD = struct.Struct("<7I")
_W_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")  # indexed by len % 4
_WRITE_BUFFER = 1 << 20
_MAX_OPT_LEN = 0xFFFF


def _encode_option(code: int, value: bytes) -> bytes:
    if len(value) > _MAX_OPT_LEN:
        value = value[:_MAX_OPT_LEN]
    return _W_OPT.pack(code, len(value)) + value + _W_PAD[len(value) & 3]


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > _MAX_OPT_LEN:
        # Cut on a character boundary so the option stays valid UTF-8.
        raw = raw[:_MAX_OPT_LEN].decode("utf-8", "ignore").encode("utf-8")
    return raw


def _options(opts: list[tuple[int, bytes]]) -> bytes:
    if not opts:
        return b""
    return b"".join(_encode_option(c, v) for c, v in opts) + _W_OPT.pack(_OPT_END, 0)


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return _W_HEAD.pack(btype, total) + body + _W_U32.pack(total)


class PcapngWriter:
    """Writes a little-endian pcapng file: one section, microsecond timestamps.

    Blocks are buffered here and written with os.write, so the writer knows how many bytes
    reached the file: when a write fails (a full disk, an I/O error) the file is cut back to
    the last whole block and stays a valid pcapng of everything before, and every later call
    raises the same CaptureFileError."""

    def __init__(
        self, path: str | os.PathLike[str], comment: str = "", application: str = "iptraf-mp",
        truncate: bool = True,
    ) -> None:
        """`truncate=False`: an existing file is left as it is until `commit()` (or is
        never touched, if `abort()` comes first): a run refused after its outputs were
        opened must not have destroyed the file that was there."""
        self.path = os.fspath(path)
        self.created = not os.path.exists(self.path)
        self._committed = truncate
        self._ninterfaces = 0
        self._buf = bytearray()
        self._ends: list[int] = []  # where each whole block in _buf ends
        self._written = 0  # bytes in the file, all of them whole blocks
        self.error: CaptureFileError | None = None
        try:
            self._fd: int | None = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
                | (os.O_TRUNC if truncate else 0), 0o644)
        except OSError as err:
            raise CaptureFileError(
                f"{self.path}: cannot open for writing: {_reason(err)}"
            ) from None
        opts: list[tuple[int, bytes]] = []
        if comment:
            opts.append((_OPT_COMMENT, _text(comment)))
        uname = os.uname()  # (what platform.system() and release() read)
        os_name = " ".join(p for p in (uname.sysname, uname.release) if p)
        if os_name:
            opts.append((_SHB_OS, _text(os_name)))
        if application:
            opts.append((_SHB_USERAPPL, _text(application)))
        body = _W_SHB_FIELDS.pack(0x1A2B3C4D, 1, 0, -1) + _options(opts)
        self._put(_block(_SHB, body))

    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        if self._fd is None:
            raise ValueError(f"{self.path}: writer is closed")

    def _put(self, block: bytes) -> None:
        self._check()
        self._buf += block
        self._ends.append(len(self._buf))
        if len(self._buf) >= _WRITE_BUFFER:
            self.flush()

    def add_interface(self, name: str, linktype: int, snaplen: int = 262144) -> int:
        """Declare an interface (an IDB); returns the index to pass to write()."""
        if not 0 <= linktype <= 0xFFFF:
            raise ValueError(f"link type {linktype} out of range 0..65535")
        if not 0 <= snaplen <= 0xFFFFFFFF:
            raise ValueError(f"snaplen {snaplen} out of range")
        opts = [(_IF_NAME, _text(name)), (_IF_TSRESOL, b"\x06")]
        body = _W_IDB_FIELDS.pack(linktype, 0, snaplen) + _options(opts)
        self._put(_block(_IDB, body))
        self._ninterfaces += 1
        return self._ninterfaces - 1

    def write(self, ifindex: int, ts: float, data: bytes, wirelen: int) -> None:
        """Write one packet (an EPB) with its timestamp rounded to the microsecond."""
        if not 0 <= ifindex < self._ninterfaces:
            raise ValueError(f"interface {ifindex} was not added to {self.path}")
        try:
            usec = round(ts * 1_000_000)
        except (ValueError, OverflowError):
            raise ValueError(f"timestamp {ts!r} cannot be stored") from None
        if not 0 <= usec < 1 << 64:
            raise ValueError(f"timestamp {ts!r} out of range for pcapng")
        if not 0 <= wirelen <= 0xFFFFFFFF:
            raise ValueError(f"wire length {wirelen} out of range")
        caplen = len(data)
        total = _EPB_FIXED + caplen + (-caplen & 3)
        if total > 0xFFFFFFFF:
            raise ValueError(f"frame of {caplen} bytes is too large for pcapng")
        self._check()
        buf = self._buf
        # Three appends beat concatenating the frame.
        buf += _W_EPB_HEAD.pack(_EPB, total, ifindex, usec >> 32, usec & 0xFFFFFFFF, caplen,
                                wirelen)
        buf += data
        buf += _W_PAD[caplen & 3] + _W_U32.pack(total)
        self._ends.append(len(buf))
        if len(buf) >= _WRITE_BUFFER:
            self.flush()

    def commit(self) -> None:
        """Replace what the file held (see __init__'s `truncate`)."""
        if not self._committed and self._fd is not None:
            self._committed = True
            try:
                if stat.S_ISREG(os.fstat(self._fd).st_mode):  # not /dev/null or a FIFO
                    os.ftruncate(self._fd, 0)
            except OSError as err:
                raise CaptureFileError(f"{self.path}: cannot write: {_reason(err)}") from None

    def abort(self) -> None:
        """Close without writing; a file this writer created is removed."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            if self.created and not self._committed:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)

    def flush(self) -> None:
        if self._fd is None or self.error is not None:
            self._check()
            return
        self.commit()
        buf = self._buf
        view = memoryview(buf)
        done = 0
        try:
            while done < len(buf):
                done += os.write(self._fd, view[done:])
        except OSError as err:
            view.release()
            self._cut(done)
            self.error = CaptureFileError(f"{self.path}: write failed: {_reason(err)}")
            raise self.error from None
        view.release()
        self._written += done
        self._buf = bytearray()
        self._ends = []

    def _cut(self, done: int) -> None:
        """A write failed after `done` bytes of the buffer: keep only whole blocks."""
        whole = 0
        for end in self._ends:
            if end > done:
                break
            whole = end
        self._buf = bytearray()
        self._ends = []
        try:
            os.ftruncate(self._fd, self._written + whole)  # type: ignore[arg-type]
        except OSError:
            pass  # (a file that cannot even be cut back keeps a torn last block)
        self._written += whole

    def close(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            if self.error is None:
                self.flush()
        finally:
            self._fd = None
            try:
                os.close(fd)
            except OSError as err:
                raise CaptureFileError(f"{self.path}: write failed: {_reason(err)}") from None

    def __enter__(self) -> PcapngWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
