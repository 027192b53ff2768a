"""The decoded-packet record shared by both decoders, and the constants that describe it.

A `Decoded` is a NamedTuple rather than a dataclass: the fast decoder builds one per packet,
and a tuple costs a third of a slots dataclass to create (performance-notes.md budget).
"""

from __future__ import annotations

import socket
from typing import Any, NamedTuple

# What a frame is, for the summary (docs/decisions.md rule 14) and for routing to a table.
K_TCP = 1
K_UDP = 2
K_ICMP = 3  # ICMP and ICMPv6 share the summary's ICMP line
K_OTHER_IP = 4
K_NON_IP = 5

KIND_NAMES = {K_TCP: "tcp", K_UDP: "udp", K_ICMP: "icmp", K_OTHER_IP: "other_ip",
              K_NON_IP: "non_ip"}

# Fragment position of the outermost IP datagram.
FRAG_NONE = 0
FRAG_FIRST = 1  # offset 0 with more-fragments set: carries the ports
FRAG_LATER = 2  # offset > 0: no transport header

# TCP flag bits.
TH_FIN = 0x01
TH_SYN = 0x02
TH_RST = 0x04
TH_PUSH = 0x08
TH_ACK = 0x10
TH_URG = 0x20


# A captured frame as capture files yield it and the engine takes it: (timestamp seconds,
# interface index, captured bytes, original wire length). A plain tuple, not a record: one
# is made per packet, and a tuple is the cheapest object Python has for that.
Packet = tuple[float, int, bytes, int]
# what an ICMP error quotes of the datagram it answers: src, sport, dst, dport, IP protocol
Quoted = tuple[bytes, int, bytes, int, int]
Mac = bytes | None  # a link address, or None where the link has none
# a lower-window line's details: a tuple whose shape depends on the kind (Decoded.info)
Info = tuple[Any, ...]


class Decoded(NamedTuple):
    """One frame, decoded as far as it could be.

    `src`/`dst` are packed addresses (4 or 16 bytes; b"" for non-IP) so the hot path never
    formats text. For non-IP frames `proto` is the EtherType (or -1 when the link has none)
    and `iplen` is the wire length, which is what the summary counts for them.
    """

    kind: int
    ipver: int  # 4, 6, or 0 for non-IP
    iplen: int  # byte rule: outermost IPv4 Total Length or IPv6 payload length + 40
    src: bytes
    dst: bytes
    proto: int  # final IP protocol after IPv6 extension headers
    sport: int
    dport: int
    flags: int  # TCP flags byte
    seq: int
    ack: int
    win: int  # raw advertised window, unscaled
    paylen: int  # TCP payload length, from the IP lengths (not from what was captured)
    frag: int  # FRAG_NONE / FRAG_FIRST / FRAG_LATER
    ipid: int  # IPv4 identification or IPv6 fragment identification
    smac: bytes | None  # outer link source MAC, None when the link has none
    dmac: bytes | None
    info: Info | None  # details for the lower window, see below
    malformed: bool

    # info by kind:
    #   K_ICMP: (type, code, quoted) where quoted is (src, sport, dst, dport, proto) of the
    #           header an error message quotes, or None
    #   K_OTHER_IP: OSPF: ("ospf", ptype, area, router_id) else None
    #   K_NON_IP: (link_name, what, a, b, l3len): what is "arp"/"rarp" with a = op and
    #           b = (sha, spa, tha, tpa) or None; "other" with a = EtherType (or -1) and b = None;
    #           or a description of why the IP header could not be read (malformed).
    #           l3len = wire length minus the link header (iptraf-ng's non-IP line length)
    #   K_IP with malformed: None


# "0".."255": an IPv4 address as inet_ntop writes it, from four lookups (its call through
# the socket module cost ~3,500 instructions, two per JSON record)
_OCTETS = tuple(str(i) for i in range(256))


def fmt_addr(addr: bytes) -> str:
    """Printable IPv4/IPv6 address; anything else as hex (it came off the wire)."""
    if len(addr) == 4:
        o = _OCTETS
        return f"{o[addr[0]]}.{o[addr[1]]}.{o[addr[2]]}.{o[addr[3]]}"
    if len(addr) == 16:
        return socket.inet_ntop(socket.AF_INET6, addr)
    return addr.hex()


def fmt_mac(mac: bytes | None) -> str | None:
    if mac is None:
        return None
    return mac.hex(":")


def fmt_flags(flags: int) -> str:
    """IPTraf's four flag positions S P A U, '-' where unset."""
    return (("S" if flags & TH_SYN else "-") + ("P" if flags & TH_PUSH else "-")
            + ("A" if flags & TH_ACK else "-") + ("U" if flags & TH_URG else "-"))
