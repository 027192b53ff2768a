"""IPFIX (RFC 7011) encoder and exporter for iptraf-mp flow records.

The encoder is pure (bytes in memory, no I/O) and struct based; the exporter
owns one transport session (UDP or TCP) towards a single collector and must
never raise into, or stall, the capture path that calls it.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

__all__ = [
    "IPFIX_PORT",
    "TEMPLATE_ID_V4",
    "TEMPLATE_ID_V6",
    "ExporterStats",
    "FlowRecord",
    "IpfixEncoder",
    "IpfixExporter",
    "message_record_count",
    "message_sequence",
    "parse_target",
]

IPFIX_VERSION = 10
IPFIX_PORT = 4739  # IANA-assigned, used when a target omits the port
TEMPLATE_ID_V4 = 256
TEMPLATE_ID_V6 = 257
TEMPLATE_SET_ID = 2

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1
_U16 = (1 << 16) - 1
_U8 = (1 << 8) - 1


@dataclass(slots=True)
class FlowRecord:
    """One uniflow: a direction of a TCP connection, or one non-TCP flow."""

    src: bytes  # packed address, 4 bytes (IPv4) or 16 bytes (IPv6)
    dst: bytes
    sport: int  # 0 when none
    dport: int
    proto: int  # IP protocol number
    packets: int  # delta since this flow's previous export
    octets: int  # delta, IP bytes (IPv4 total length / IPv6 payload + 40)
    tcp_flags: int  # OR of the TCP flags seen in this delta (0 for non-TCP)
    ifindex: int  # ingressInterface
    direction: int  # flowDirection: 0 ingress, 1 egress
    icmp_type_code: int  # type * 256 + code for ICMP/ICMPv6, else 0
    start_ms: int  # flowStartMilliseconds (epoch ms)
    end_ms: int  # flowEndMilliseconds
    end_reason: int  # flowEndReason: 1 idle, 2 active, 3 end detected, 4 forced end


# (information element id, length) in on-the-wire order. The 8-byte fields come
# first so they sit naturally aligned for collectors that mmap records, and
# ipVersion comes last because it is the only value not taken from FlowRecord:
# the fast path appends it as a trailing constant argument to struct.pack.
def _fields(src_ie: int, dst_ie: int, addr_len: int, icmp_ie: int) -> tuple[tuple[int, int], ...]:
    return (
        (1, 8),  # octetDeltaCount
        (2, 8),  # packetDeltaCount
        (152, 8),  # flowStartMilliseconds
        (153, 8),  # flowEndMilliseconds
        (src_ie, addr_len),  # sourceIPv4Address / sourceIPv6Address
        (dst_ie, addr_len),  # destinationIPv4Address / destinationIPv6Address
        (10, 4),  # ingressInterface
        (7, 2),  # sourceTransportPort
        (11, 2),  # destinationTransportPort
        (6, 2),  # tcpControlBits
        (icmp_ie, 2),  # icmpTypeCodeIPv4 / icmpTypeCodeIPv6
        (4, 1),  # protocolIdentifier
        (61, 1),  # flowDirection
        (136, 1),  # flowEndReason
        (60, 1),  # ipVersion
    )


V4_FIELDS = _fields(8, 12, 4, 32)
V6_FIELDS = _fields(27, 28, 16, 139)

_REC_V4 = struct.Struct("!QQQQ4s4sIHHHHBBBB")
_REC_V6 = struct.Struct("!QQQQ16s16sIHHHHBBBB")
_HEADER = struct.Struct("!HHIII")  # version, length, exportTime, sequence, odid
_SET_HEADER = struct.Struct("!HH")
assert _REC_V4.size == sum(n for _, n in V4_FIELDS)
assert _REC_V6.size == sum(n for _, n in V6_FIELDS)

# Same order as the struct formats above, minus the trailing ipVersion.
_RECORD_VALUES = attrgetter(
    "octets",
    "packets",
    "start_ms",
    "end_ms",
    "src",
    "dst",
    "ifindex",
    "sport",
    "dport",
    "tcp_flags",
    "icmp_type_code",
    "proto",
    "direction",
    "end_reason",
)
# Upper bound of each value above (None: an address, checked by length).
_LIMITS = (_U64, _U64, _U64, _U64, None, None, _U32, _U16, _U16, _U16, _U16, _U8, _U8, _U8)


def _template_record(template_id: int, fields: Sequence[tuple[int, int]]) -> bytes:
    body = b"".join(struct.pack("!HH", ie, length) for ie, length in fields)
    return struct.pack("!HH", template_id, len(fields)) + body


def _template_set() -> bytes:
    # Both templates in one Template Set: RFC 7011 3.4.1 allows several
    # template records per set, and it saves a set header on every refresh.
    body = _template_record(TEMPLATE_ID_V4, V4_FIELDS) + _template_record(TEMPLATE_ID_V6, V6_FIELDS)
    return _SET_HEADER.pack(TEMPLATE_SET_ID, _SET_HEADER.size + len(body)) + body


_TEMPLATE_SET = _template_set()


def _clamped(values: tuple, version: int) -> tuple:
    # Out-of-range values come from upstream bugs (negative deltas, a 16-bit
    # flags word with extra bits); saturating keeps the export alive and the
    # value recognisably extreme rather than silently wrapped.
    out = []
    for value, limit in zip(values, _LIMITS, strict=True):
        if limit is not None:
            value = min(max(int(value), 0), limit)
        out.append(value)
    out.append(version)
    return tuple(out)


class IpfixEncoder:
    """Packs FlowRecords into IPFIX messages for one observation domain.

    ``mtu`` is the largest message (UDP payload) produced. ``sequence`` is the
    RFC 7011 sequence number: data records encoded so far in this transport
    session, modulo 2**32; an exporter that fails to send a message may roll it
    back to that message's header value. ``template_every`` > 0 prepends the
    template set to every N-th message (counting from the first).
    """

    def __init__(self, odid: int, mtu: int = 1400, template_every: int = 0) -> None:
        if not 0 <= odid <= _U32:
            raise ValueError(f"observation domain id {odid} is outside 0..{_U32}")
        # The smallest useful message: templates plus one IPv6 record, so the
        # encoder can always make progress even when it refreshes templates.
        floor = _HEADER.size + len(_TEMPLATE_SET) + _SET_HEADER.size + _REC_V6.size
        if not floor <= mtu <= _U16:
            raise ValueError(f"mtu {mtu} is outside {floor}..{_U16}")
        if template_every < 0:
            raise ValueError("template_every must be >= 0")
        self.odid = odid
        self.mtu = mtu
        self.template_every = template_every
        self.sequence = 0
        self.invalid_records = 0  # records skipped: bad address length or non-integer value
        self._messages_since_templates: int | None = None  # None: never sent

    def reset(self) -> None:
        """Start a new transport session: sequence back to 0, templates due."""
        self.sequence = 0
        self._messages_since_templates = None

    def templates(self, export_time: int | None = None) -> bytes:
        """A message holding only the IPv4 and IPv6 templates."""
        if export_time is None:
            export_time = int(time.time())
        self._messages_since_templates = 0
        length = _HEADER.size + len(_TEMPLATE_SET)
        return (
            _HEADER.pack(IPFIX_VERSION, length, export_time & _U32, self.sequence, self.odid)
            + _TEMPLATE_SET
        )

    def _pack_all(self, records: Iterable[FlowRecord]) -> tuple[list[bytes], list[bytes]]:
        v4: list[bytes] = []
        v6: list[bytes] = []
        pack4 = _REC_V4.pack
        pack6 = _REC_V6.pack
        add4 = v4.append
        add6 = v6.append
        invalid = 0
        for rec in records:
            values = _RECORD_VALUES(rec)
            src_len = len(values[4])
            dst_len = len(values[5])
            try:
                if src_len == 4 and dst_len == 4:
                    add4(pack4(*values, 4))
                elif src_len == 16 and dst_len == 16:
                    add6(pack6(*values, 6))
                else:
                    invalid += 1
            except (struct.error, TypeError, ValueError):
                # Rare slow path, kept out of the loop above so the common case
                # pays for no range checks.
                try:
                    if src_len == 4:
                        add4(pack4(*_clamped(values, 4)))
                    else:
                        add6(pack6(*_clamped(values, 6)))
                except (struct.error, TypeError, ValueError):
                    invalid += 1
        self.invalid_records += invalid
        return v4, v6

    def encode(
        self, records: Iterable[FlowRecord], export_time: int, with_templates: bool = False
    ) -> list[bytes]:
        """Encode records into as few messages as fit within ``mtu``.

        Every message but the last is full: no further pending record fits.
        IPv4 records are packed before IPv6 ones; each message holds at most one
        data set per template. ``with_templates`` (or ``template_every``)
        prepends the template set to the first message; with no records and
        templates requested, a templates-only message is returned.
        """
        v4, v6 = self._pack_all(records)
        n4, n6 = len(v4), len(v6)
        i4 = i6 = 0
        size4, size6 = _REC_V4.size, _REC_V6.size
        set_hdr = _SET_HEADER.size
        export_time &= _U32
        messages: list[bytes] = []
        while i4 < n4 or i6 < n6 or (with_templates and not messages):
            parts: list[bytes] = [b""]  # header goes here once the length is known
            room = self.mtu - _HEADER.size
            since = self._messages_since_templates
            every = self.template_every
            if (with_templates and not messages) or (every and (since is None or since >= every)):
                parts.append(_TEMPLATE_SET)
                room -= len(_TEMPLATE_SET)
                self._messages_since_templates = 0
            count = 0
            if i4 < n4 and room >= set_hdr + size4:
                k = min(n4 - i4, (room - set_hdr) // size4)
                parts.append(_SET_HEADER.pack(TEMPLATE_ID_V4, set_hdr + k * size4))
                parts.extend(v4[i4 : i4 + k])
                room -= set_hdr + k * size4
                i4 += k
                count += k
            if i4 >= n4 and i6 < n6 and room >= set_hdr + size6:
                k = min(n6 - i6, (room - set_hdr) // size6)
                parts.append(_SET_HEADER.pack(TEMPLATE_ID_V6, set_hdr + k * size6))
                parts.extend(v6[i6 : i6 + k])
                room -= set_hdr + k * size6
                i6 += k
                count += k
            parts[0] = _HEADER.pack(
                IPFIX_VERSION, self.mtu - room, export_time, self.sequence, self.odid
            )
            messages.append(b"".join(parts))
            self.sequence = (self.sequence + count) & _U32
            if self._messages_since_templates is not None:
                self._messages_since_templates += 1
        return messages


def message_sequence(message: bytes) -> int:
    """The sequence number in an IPFIX message header."""
    return _HEADER.unpack_from(message)[3]


def message_record_count(message: bytes) -> int:
    """Data records in a message produced by IpfixEncoder (template sets skipped)."""
    count = 0
    offset = _HEADER.size
    end = len(message)
    while offset + _SET_HEADER.size <= end:
        set_id, length = _SET_HEADER.unpack_from(message, offset)
        if length < _SET_HEADER.size:
            break
        if set_id == TEMPLATE_ID_V4:
            count += (length - _SET_HEADER.size) // _REC_V4.size
        elif set_id == TEMPLATE_ID_V6:
            count += (length - _SET_HEADER.size) // _REC_V6.size
        offset += length
    return count


# ---------------------------------------------------------------------------
# Target parsing


def parse_target(s: str) -> tuple[str, str, int]:
    """Parse ``[udp://|tcp://]HOST[:PORT]``, IPv6 literals in brackets (``[::1]:4739``).

    Returns (transport, host, port); the port defaults to 4739. Raises
    ValueError with a one-line message for anything else.
    """
    transport, host, port, _ = _split_target(s)
    return transport, host, port


def _split_target(s: str) -> tuple[str, str, int, bool]:
    def bad(why: str) -> ValueError:
        return ValueError(f"invalid IPFIX target {s!r}: {why}")

    if not isinstance(s, str):
        raise ValueError(f"invalid IPFIX target {s!r}: not a string")
    text = s.strip()
    transport = "udp"
    explicit = False
    if "://" in text:
        scheme, text = text.split("://", 1)
        transport = scheme.lower()
        explicit = True
        if transport not in ("udp", "tcp"):
            raise bad(f"transport {scheme!r} is not supported, use udp:// or tcp://")
    if not text:
        raise bad("expected HOST:PORT")
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise bad("missing ']' after IPv6 address")
        host = text[1:close]
        rest = text[close + 1 :]
        try:
            socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        except (OSError, ValueError):
            raise bad(f"{host!r} is not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise bad("expected ':PORT' after ']'")
        port_text = rest[1:] if rest else None
    else:
        if text.count(":") > 1:
            raise bad("put IPv6 addresses in brackets, e.g. [::1]:4739")
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = None
        if not host:
            raise bad("empty host")
        if any(c.isspace() or c in "/@[]" for c in host) or len(host) > 253:
            raise bad(f"{host!r} is not a host name or address")
    if port_text is None:
        port = IPFIX_PORT
    else:
        if not port_text.isdigit() or not port_text.isascii():
            raise bad(f"port {port_text!r} is not a number")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise bad(f"port {port} is outside 1..65535")
    return transport, host, port, explicit


# ---------------------------------------------------------------------------
# Exporter


@dataclass(slots=True)
class ExporterStats:
    sent_messages: int = 0  # IPFIX messages handed to the kernel (templates-only included)
    sent_records: int = 0  # data records in those messages
    sent_bytes: int = 0
    errors: int = 0  # failed resolutions, connects and sends
    dropped_records: int = 0  # records given to export() that were never sent
    connects: int = 0  # transport sessions opened (UDP socket or TCP connection)
    last_error: str = ""  # one line, empty until the first failure


@dataclass(slots=True)
class _Lookup:
    """A name resolution running on a helper thread, so DNS never blocks export()."""

    done: threading.Event = field(default_factory=threading.Event)
    addrs: list[tuple] = field(default_factory=list)
    error: str = ""


def _lookup(job: _Lookup, host: str, port: int, socktype: int, resolver: Callable) -> None:
    try:
        infos = resolver(host, port, socket.AF_UNSPEC, socktype)
        job.addrs = [(fam, sa) for fam, _t, _p, _c, sa in infos]
        if not job.addrs:
            job.error = f"cannot resolve {host!r}: no addresses"
    except (OSError, UnicodeError) as exc:
        job.error = f"cannot resolve {host!r}: {_one_line(exc)}"
    finally:
        job.done.set()


def _wait_fd(sock: socket.socket, events: int, timeout: float) -> bool:
    # poll() rather than select(): select() fails outright on descriptors above
    # FD_SETSIZE (1024), which a long-running capture process can reach.
    poller = select.poll()
    poller.register(sock, events | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


@dataclass(slots=True)
class _Pending:
    """A TCP message not yet fully accepted by the kernel."""

    data: memoryview  # the unsent tail
    records: int
    size: int  # whole message, for stats


class IpfixExporter:
    """Sends FlowRecords to one collector over UDP or TCP.

    ``export()`` never raises and never waits more than about ``io_timeout``:
    resolution happens on a helper thread, sockets are non-blocking, and every
    failure is counted in ``stats`` and retried on a later call (TCP and name
    resolution with exponential backoff on the injected ``clock``).
    """

    def __init__(
        self,
        target: str,
        odid: int,
        transport: str = "udp",
        template_interval: float = 30.0,
        clock: Callable[[], float] = time.time,
        *,
        mtu: int = 1400,
        io_timeout: float = 0.05,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        connect_timeout: float = 5.0,
        max_buffer: int = 1 << 20,
        resolver: Callable = socket.getaddrinfo,
    ) -> None:
        scheme, host, port, explicit = _split_target(target)
        transport = transport.lower()
        if transport not in ("udp", "tcp"):
            raise ValueError(f"transport {transport!r} is not supported, use 'udp' or 'tcp'")
        if explicit and scheme != transport:
            raise ValueError(f"target {target!r} says {scheme} but transport is {transport}")
        self.host = host
        self.port = port
        self.transport = transport
        self.template_interval = template_interval
        self.stats = ExporterStats()
        self._clock = clock
        self._resolver = resolver  # injectable, so tests never ask a real DNS server
        self._encoder = IpfixEncoder(odid, mtu)
        self._io_timeout = io_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._backoff = backoff_initial
        self._connect_timeout = connect_timeout
        self._max_buffer = max_buffer
        self._socktype = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self._addrs: list[tuple] = []
        self._addr_index = 0
        self._lookup: _Lookup | None = None
        self._sock: socket.socket | None = None
        self._connecting_since: float | None = None  # TCP connect in progress
        self._next_attempt = float("-inf")
        self._templates_at: float | None = None  # UDP: when templates last went out
        self._templates_due = True
        self._pending: deque[_Pending] = deque()
        self._pending_bytes = 0

    # -- public -----------------------------------------------------------

    def export(self, records: Sequence[FlowRecord]) -> int:
        """Send records; returns how many were handed to the kernel (or queued, TCP)."""
        try:
            if not isinstance(records, Sequence):
                records = list(records)
            now = self._clock()
            if not self._ready(now):
                self.stats.dropped_records += len(records)
                return 0
            if self.transport == "udp":
                return self._export_udp(records, now)
            return self._export_tcp(records, now)
        except Exception as exc:  # the capture path must survive our own bugs too
            self._error(f"export: {_one_line(exc)}")
            self._drop_pending()
            self._close()
            self.stats.dropped_records += len(records) if isinstance(records, Sequence) else 0
            return 0

    def close(self, timeout: float = 0.5) -> None:
        """Flush queued TCP data for at most ``timeout`` seconds, then close."""
        sock = self._sock
        if sock is not None and self.transport == "tcp" and self._connecting_since is None:
            deadline = time.monotonic() + timeout
            try:
                while self._pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    _wait_fd(sock, select.POLLOUT, left)
                    self._flush()
            except OSError as exc:
                self._error(f"send: {_one_line(exc)}")
        self._drop_pending()
        self._close()

    def __enter__(self) -> IpfixExporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- session setup ----------------------------------------------------

    def _ready(self, now: float) -> bool:
        if self._sock is not None and self._connecting_since is None:
            return True
        if self._sock is not None:
            return self._finish_connect(now)
        if now < self._next_attempt:
            return False
        if not self._addrs and not self._resolve(now):
            return False
        return self._open(now)

    def _resolve(self, now: float) -> bool:
        job = self._lookup
        wait = 0.0
        if job is None:
            try:
                # Numeric addresses need no thread: AI_NUMERICHOST never touches DNS.
                infos = socket.getaddrinfo(
                    self.host,
                    self.port,
                    socket.AF_UNSPEC,
                    self._socktype,
                    0,
                    socket.AI_NUMERICHOST,
                )
                self._addrs = [(fam, sa) for fam, _t, _p, _c, sa in infos]
                self._addr_index = 0
                return True
            except (OSError, UnicodeError):
                pass
            job = self._lookup = _Lookup()
            wait = self._io_timeout
            threading.Thread(
                target=_lookup,
                args=(job, self.host, self.port, self._socktype, self._resolver),
                name=f"ipfix-resolve-{self.host}",
                daemon=True,
            ).start()
        # Typical lookups (hosts file, local cache) finish within the first
        # call's short wait; a slow DNS server costs later calls nothing.
        if not job.done.wait(wait):
            return False  # still resolving: drop this batch, look again next call
        self._lookup = None
        if job.error:
            self._fail(job.error, now)
            return False
        self._addrs = job.addrs
        self._addr_index = 0
        return True

    def _open(self, now: float) -> bool:
        family, sockaddr = self._addrs[self._addr_index % len(self._addrs)]
        try:
            sock = socket.socket(family, self._socktype)
        except OSError as exc:
            self._fail(f"socket: {_one_line(exc)}", now, next_address=True)
            return False
        sock.setblocking(False)
        self._drop_pending()  # bytes framed for an old session must not leak into a new one
        self._sock = sock
        self._encoder.reset()
        self._templates_due = True
        self._templates_at = None
        if self.transport == "udp":
            try:
                # A connected UDP socket is what turns ICMP port unreachable
                # into ConnectionRefusedError on a later send.
                sock.connect(sockaddr)
            except OSError as exc:
                self._fail(f"connect {self._where()}: {_one_line(exc)}", now, next_address=True)
                return False
            self.stats.connects += 1
            self._backoff = self._backoff_initial
            return True
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex(sockaddr)
        except OSError as exc:
            err = exc.errno or errno.EIO
        if err in (0, errno.EISCONN):
            return self._connected()
        if err not in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK, errno.EAGAIN):
            self._fail(
                f"connect {self._where()}: {_one_line(OSError(err, os.strerror(err)))}",
                now,
                next_address=True,
            )
            return False
        self._connecting_since = now
        return self._finish_connect(now)

    def _finish_connect(self, now: float) -> bool:
        sock = self._sock
        assert sock is not None
        if not _wait_fd(sock, select.POLLOUT, self._io_timeout):
            if now - (self._connecting_since or now) >= self._connect_timeout:
                self._fail(f"connect {self._where()}: timed out", now, next_address=True)
            return False
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(
                f"connect {self._where()}: {_one_line(OSError(err, os.strerror(err)))}",
                now,
                next_address=True,
            )
            return False
        return self._connected()

    def _connected(self) -> bool:
        self._connecting_since = None
        self.stats.connects += 1
        self._backoff = self._backoff_initial
        return True

    def _where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}://{host}:{self.port}"

    # -- failure bookkeeping ----------------------------------------------

    def _error(self, message: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = " ".join(message.split())

    def _fail(self, message: str, now: float, next_address: bool = False) -> None:
        """A session-level failure: close, back off, maybe try the next address."""
        self._error(message)
        self._drop_pending()
        self._close()
        if next_address and self._addrs:
            self._addr_index += 1
            if self._addr_index >= len(self._addrs):
                # Every address failed once: resolve afresh after the backoff,
                # in case the name now points somewhere else.
                self._addrs = []
                self._addr_index = 0
            else:
                return  # try the next address straight away on the next call
        self._next_attempt = now + self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        self._connecting_since = None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _drop_pending(self) -> None:
        self.stats.dropped_records += sum(p.records for p in self._pending)
        self._pending.clear()
        self._pending_bytes = 0

    # -- UDP --------------------------------------------------------------

    def _export_udp(self, records: Sequence[FlowRecord], now: float) -> int:
        due = (
            self._templates_due
            or self._templates_at is None
            or not 0 <= now - self._templates_at < self.template_interval
        )
        invalid_before = self._encoder.invalid_records
        messages = self._encoder.encode(records, int(now), with_templates=due)
        self.stats.dropped_records += self._encoder.invalid_records - invalid_before
        sock = self._sock
        assert sock is not None
        sent = 0
        for i, msg in enumerate(messages):
            count = message_record_count(msg)
            try:
                sock.send(msg)
            except OSError as exc:
                # The failed datagram never left: roll the sequence back so the
                # next message does not claim records the collector never saw.
                self._encoder.sequence = message_sequence(msg)
                self.stats.dropped_records += sum(message_record_count(m) for m in messages[i:])
                what = "send buffer full" if isinstance(exc, BlockingIOError) else "send"
                self._error(f"{what} {self._where()}: {_one_line(exc)}")
                # Whoever comes back on that port needs templates straight away.
                self._templates_due = True
                if not isinstance(exc, (BlockingIOError, ConnectionRefusedError)):
                    self._fail_quietly(now)
                break
            if i == 0 and due:
                self._templates_due = False
                self._templates_at = now
            self.stats.sent_messages += 1
            self.stats.sent_records += count
            self.stats.sent_bytes += len(msg)
            sent += count
        return sent

    def _fail_quietly(self, now: float) -> None:
        # Route/permission errors (ENETUNREACH, EPERM from a firewall...) may be
        # tied to this socket's source address: reopen after a backoff.
        self._close()
        self._next_attempt = now + self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)

    # -- TCP --------------------------------------------------------------

    def _export_tcp(self, records: Sequence[FlowRecord], now: float) -> int:
        if self._peer_closed(now):
            self.stats.dropped_records += len(records)
            return 0
        with_templates = self._templates_due
        invalid_before = self._encoder.invalid_records
        messages = self._encoder.encode(records, int(now), with_templates=with_templates)
        self.stats.dropped_records += self._encoder.invalid_records - invalid_before
        if with_templates:
            self._templates_due = False
        queued = 0
        for i, msg in enumerate(messages):
            count = message_record_count(msg)
            if self._pending_bytes + len(msg) > self._max_buffer:
                # A slow collector: drop whole messages only, never part of one,
                # or the stream would lose its framing.
                self._encoder.sequence = message_sequence(msg)
                self.stats.dropped_records += sum(message_record_count(m) for m in messages[i:])
                if i == 0 and with_templates:
                    self._templates_due = True
                self._error(f"send {self._where()}: buffer of {self._max_buffer} bytes full")
                break
            self._pending.append(_Pending(memoryview(msg), count, len(msg)))
            self._pending_bytes += len(msg)
            queued += count
        try:
            self._flush()
        except OSError as exc:
            self._fail(f"send {self._where()}: {_one_line(exc)}", now)
            return 0
        return queued

    def _peer_closed(self, now: float) -> bool:
        sock = self._sock
        assert sock is not None
        if not _wait_fd(sock, select.POLLIN, 0):
            return False
        try:
            # Collectors never talk back on an IPFIX stream: readable means EOF
            # or a reset, which we would otherwise only learn on a later send.
            if sock.recv(4096):
                return False
            self._fail(f"connection closed by {self._where()}", now)
        except BlockingIOError:
            return False
        except OSError as exc:
            self._fail(f"connection {self._where()}: {_one_line(exc)}", now)
        return True

    def _flush(self) -> None:
        sock = self._sock
        assert sock is not None
        flags = getattr(socket, "MSG_NOSIGNAL", 0)
        while self._pending:
            head = self._pending[0]
            try:
                n = sock.send(head.data, flags)
            except BlockingIOError:
                return
            self._pending_bytes -= n
            if n < len(head.data):
                head.data = head.data[n:]
                return
            self._pending.popleft()
            self.stats.sent_messages += 1
            self.stats.sent_records += head.records
            self.stats.sent_bytes += head.size
