"""Which shard a frame goes to: a symmetric hash of (interface, addresses, ports).

Both directions of a connection, the ICMP errors that quote it and the later fragments of its
datagrams must reach the shard that holds it, because that shard alone decides its state.
The capture process runs this per packet, so the common frames are read with a few slices;
anything unusual goes through the real decoder, which is slower but always agrees with what
the shard will decode.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from zlib import crc32

from iptraf_mp.core.decode import decode
from iptraf_mp.core.frame import endpoint, fast_key, plain_shard
from iptraf_mp.core.model import FRAG_FIRST, FRAG_LATER, K_ICMP, K_NON_IP, K_TCP, K_UDP

from .protocol import CTL_FRAG_FIRST, CTL_FRAG_PENDING, frag_key_record

_PORTS = struct.Struct("!HH")
_VLAN = frozenset((b"\x81\x00", b"\x88\xa8", b"\x91\x00", b"\x92\x00", b"\x93\x00"))
FRAG_MAP_MAX = 16384


def endpoint_hash(ifindex: int, a: bytes, ap: int, b: bytes, bp: int) -> int:
    """Symmetric in its two endpoints; deterministic across processes (unlike hash()). IPv4
    endpoints hash as the capture loop's compiled plain_shard hashes them (frame.py)."""
    if len(a) == 4 and len(b) == 4:
        ea4 = endpoint(int.from_bytes(a, "big"), ap)
        eb4 = endpoint(int.from_bytes(b, "big"), bp)
        return fast_key(ea4, eb4, ifindex) if ea4 <= eb4 else fast_key(eb4, ea4, ifindex)
    ea = a + ap.to_bytes(2, "big")
    eb = b + bp.to_bytes(2, "big")
    if ea > eb:
        ea, eb = eb, ea
    return crc32(eb, crc32(ea, ifindex))


@dataclass(slots=True)
class Note:
    """What the other shards must be told beside a frame (see protocol.CTL_FRAG_PENDING)."""

    kind: int  # CTL_FRAG_PENDING or CTL_FRAG_FIRST
    key: bytes  # protocol.frag_key_record
    iplen: int


class ShardPicker:
    """Per capture process: picks shards, remembering first fragments for their followers.

    `pick` returns the shard, or -1 - shard when the other shards must be told something
    beside the frame (then `note` says what): a TCP fragment that came before its first
    fragment, or the first fragment that such fragments were waiting for."""

    def __init__(self, nshards: int) -> None:
        self.n = nshards
        self.frags: dict[tuple, int] = {}  # (src, dst, proto, id) -> shard of the first fragment
        self.waiting: dict[tuple, None] = {}  # TCP fragments' keys seen before their first
        self.note: Note | None = None

    def pick(self, linktype: int, data: bytes, wirelen: int, ifindex: int) -> int:
        n = self.n
        if n == 1:
            return 0
        # The bulk of most links (untagged Ethernet, IPv4 without options, TCP or UDP, not a
        # fragment): compiled, in frame.py. Same hash as endpoint_hash().
        if linktype == 1:
            s = plain_shard(data, 0, len(data), ifindex, n)
            if s >= 0:
                return s
        if linktype == 1 and len(data) >= 34:
            et = data[12:14]
            off = 14
            while et in _VLAN and len(data) >= off + 4:
                et = data[off + 2:off + 4]
                off += 4
            if et == b"\x08\x00":
                r = self._ipv4(data, off, ifindex)
                if r >= 0:
                    return r
        return self._slow(linktype, data, wirelen, ifindex)

    def _ipv4(self, data: bytes, off: int, ifindex: int) -> int:
        """The common IPv4 cases; -1 hands the frame to the decoder."""
        if len(data) < off + 20 or data[off] >> 4 != 4:
            return -1
        hl = (data[off] & 0x0F) << 2
        proto = data[off + 9]
        fragw = (data[off + 6] << 8) | data[off + 7]
        if fragw & 0x3FFF or proto not in (6, 17):
            return -1
        t = off + hl
        if len(data) < t + 4:
            return -1
        sport, dport = _PORTS.unpack_from(data, t)
        h = endpoint_hash(ifindex, data[off + 12:off + 16], sport, data[off + 16:off + 20], dport)
        return h % self.n

    def _slow(self, linktype: int, data: bytes, wirelen: int, ifindex: int) -> int:
        d = decode(linktype, data, wirelen)
        n = self.n
        if d.kind == K_NON_IP:
            return crc32(d.smac or b"", ifindex) % n
        if d.malformed:
            # counted, never in a table (rule 18): no fragment of it is remembered or noted,
            # as the engine that takes it remembers none
            return endpoint_hash(ifindex, d.src, 0, d.dst, 0) % n
        fk = (d.src, d.dst, d.proto, d.ipid)
        if d.frag == FRAG_LATER:
            s = self.frags.get(fk)
            if s is not None:
                return s
            # before its first fragment: no ports to go by; the addresses still pick one shard
            s = endpoint_hash(ifindex, d.src, 0, d.dst, 0) % n
            if d.kind != K_TCP:
                return s
            _bounded_put(self.waiting, fk, None)
            self.note = Note(CTL_FRAG_PENDING, frag_key_record(*fk), d.iplen)
            return -1 - s
        if d.kind in (K_TCP, K_UDP):
            s = endpoint_hash(ifindex, d.src, d.sport, d.dst, d.dport) % n
        elif d.kind == K_ICMP and d.info is not None and d.info[2] is not None:
            qsrc, qsport, qdst, qdport, _proto = d.info[2]
            s = endpoint_hash(ifindex, qsrc, qsport, qdst, qdport) % n
        else:
            s = endpoint_hash(ifindex, d.src, 0, d.dst, 0) % n
        if d.frag == FRAG_FIRST:
            _bounded_put(self.frags, fk, s)
            if self.waiting.pop(fk, 0) is None:
                self.note = Note(CTL_FRAG_FIRST, frag_key_record(*fk), 0)
                return -1 - s
        return s


def _bounded_put(table: dict, key: tuple, value: object) -> None:
    """At most FRAG_MAP_MAX keys, the oldest forgotten first (more than any engine keeps:
    a note about a fragment an engine has forgotten costs nothing)."""
    if len(table) >= FRAG_MAP_MAX and key not in table:
        del table[next(iter(table))]
    table[key] = value
