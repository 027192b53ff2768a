"""IPFIX (RFC 7011) messages of iptraf-mp's flow records: templates and data sets, pure
(bytes in memory, no I/O) and struct based."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter

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
        # (template, its packed records, record size, how many are out), IPv4 first
        sets = [[TEMPLATE_ID_V4, v4, _REC_V4.size, 0], [TEMPLATE_ID_V6, v6, _REC_V6.size, 0]]
        set_hdr = _SET_HEADER.size
        export_time &= _U32
        messages: list[bytes] = []
        while any(s[3] < len(s[1]) for s in sets) or (with_templates and not messages):
            parts: list[bytes] = [b""]  # header goes here once the length is known
            room = self.mtu - _HEADER.size
            since = self._messages_since_templates
            every = self.template_every
            if (with_templates and not messages) or (every and (since is None or since >= every)):
                parts.append(_TEMPLATE_SET)
                room -= len(_TEMPLATE_SET)
                self._messages_since_templates = 0
            count = 0
            for s in sets:
                tid, recs, size, done = s
                if done < len(recs) and room >= set_hdr + size:
                    k = min(len(recs) - done, (room - set_hdr) // size)
                    parts.append(_SET_HEADER.pack(tid, set_hdr + k * size))
                    parts.extend(recs[done : done + k])
                    room -= set_hdr + k * size
                    count += k
                    s[3] = done = done + k
                if done < len(recs):
                    break  # the next set's records wait until these are all out
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
