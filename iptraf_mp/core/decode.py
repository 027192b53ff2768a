"""Frame decoding: a precompiled-`struct` fast path, with dpkt for the long tail.

`decode(linktype, data, wirelen)` never raises. The fast path handles the link types a router
captures on (Ethernet with any VLAN stack, Linux cooked v1/v2, BSD NULL/loopback, raw IP, PPP,
Cisco HDLC) and every IPv4/IPv6 datagram inside them; everything else (MPLS, PPPoE, LLC/SNAP,
FDDI, 802.11/radiotap, NFLOG ...) goes to `decode_dpkt`, which also decodes everything the
fast path does so that a differential test can hold the two to the same answers.

Lengths come from the headers, never from what was captured, so a snaplen-truncated frame still
counts its real size; a header that lies about its length is flagged `malformed` (rule 18).

Rule numbers cited here are docs/decisions.md's.
"""

from __future__ import annotations

import struct

from .model import (
    FRAG_FIRST,
    FRAG_LATER,
    FRAG_NONE,
    K_ICMP,
    K_NON_IP,
    K_OTHER_IP,
    K_TCP,
    K_UDP,
    Decoded,
    Info,
    Mac,
    Quoted,
)

# pcap link types (LINKTYPE_*) handled on the fast path.
LT_NULL = 0
LT_ETHERNET = 1
LT_PPP = 9
LT_FDDI = 10
LT_RAW_12 = 12  # DLT_RAW on most BSDs
LT_RAW_14 = 14  # DLT_RAW on OpenBSD
LT_PPP_HDLC = 50
LT_C_HDLC = 104
LT_IEEE802_11 = 105
LT_LOOP = 108
LT_RAW = 101
LT_LINUX_SLL = 113
LT_RADIOTAP = 127
LT_IPV4 = 228
LT_IPV6 = 229
LT_NFLOG = 239
LT_LINUX_SLL2 = 276

LINK_NAMES = {
    LT_NULL: "NULL",
    LT_ETHERNET: "Ethernet",
    LT_PPP: "PPP",
    LT_FDDI: "FDDI",
    LT_RAW_12: "raw IP",
    LT_RAW_14: "raw IP",
    LT_PPP_HDLC: "PPP-HDLC",
    LT_C_HDLC: "Cisco HDLC",
    LT_IEEE802_11: "802.11",
    LT_LOOP: "loopback",
    LT_RAW: "raw IP",
    LT_LINUX_SLL: "Linux SLL",
    LT_RADIOTAP: "radiotap",
    LT_IPV4: "raw IPv4",
    LT_IPV6: "raw IPv6",
    LT_NFLOG: "NFLOG",
    LT_LINUX_SLL2: "Linux SLL2",
}

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_ARP = 0x0806
ETH_RARP = 0x8035
VLAN_TYPES = frozenset((0x8100, 0x88A8, 0x9100, 0x9200, 0x9300))
IPV6_EXT = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options (44 apart)

_ETH = struct.Struct("!6s6sH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_IPV4 = struct.Struct("!BxHHHBB2x4s4s")  # vhl, total length, id, frag, ttl, proto, src, dst
_IPV6 = struct.Struct("!I H B x 16s 16s")  # vtcfl, payload length, next header, src, dst
_TCP = struct.Struct("!HHIIBBH")  # sport, dport, seq, ack, offset, flags, window
_PORTS = struct.Struct("!HH")
_SLL = struct.Struct("!HHH8sH")
_SLL2 = struct.Struct("!H2xIHBB8s")
_ARP = struct.Struct("!HHBBH")
_NULL_LE = struct.Struct("<I")
_NULL_BE = struct.Struct(">I")
_FRAG6 = struct.Struct("!BxHI")

_BSD_AF_INET6 = frozenset((24, 28, 30))
# Ethernet + option-less IPv4 + TCP in one unpack: the case that dominates router traffic
_ETH_IP4_TCP = struct.Struct("!6s6sH2xHHHBB2x4s4sHHIIBBH")  # vhl checked apart
# tuple.__new__ skips NamedTuple's Python-level __new__: a third of the cost per packet
_new = tuple.__new__


def decode(linktype: int, data: bytes, wirelen: int) -> Decoded:
    """Decode one captured frame. Never raises."""
    if linktype == 1 and len(data) >= 54 and data[14] == 0x45 and data[12] == 8 and not data[13]:
        (dmac, smac, _etype, tlen, ipid, fragw, _ttl, proto, src, dst, sport, dport, seq, ack,
         doff, flags, win) = _ETH_IP4_TCP.unpack_from(data, 0)
        thl = (doff >> 4) << 2
        if proto == 6 and not fragw & 0x3FFF and thl >= 20 and 20 + thl <= tlen <= wirelen - 14:
            return _new(Decoded, (K_TCP, 4, tlen, src, dst, 6, sport, dport, flags, seq, ack,
                                  win, tlen - 20 - thl, FRAG_NONE, ipid, smac, dmac, None, False))
    try:
        d = _fast(linktype, data, wirelen)
    except (struct.error, IndexError, ValueError):
        d = None
    if d is not None:
        return d
    from .decode_dpkt import decode_dpkt  # imported late: the fast path must not pay for it

    return decode_dpkt(linktype, data, wirelen)


def decode_fast(linktype: int, data: bytes, wirelen: int) -> Decoded | None:
    """The fast path alone: a Decoded, or None where it hands the frame to dpkt."""
    try:
        return _fast(linktype, data, wirelen)
    except (struct.error, IndexError, ValueError):
        return None


def _fast(linktype: int, data: bytes, wirelen: int) -> Decoded | None:
    smac = dmac = None
    if linktype == LT_ETHERNET:
        if len(data) < 14:
            return None
        dmac, smac, etype = _ETH.unpack_from(data, 0)
        off = 14
        while etype in VLAN_TYPES:
            etype = _U16.unpack_from(data, off + 2)[0]
            off += 4
        if etype < 0x0600:  # 802.3 length field: LLC/SNAP is dpkt's
            return None
    elif linktype == LT_LINUX_SLL:
        _pkttype, hatype, halen, addr, etype = _SLL.unpack_from(data, 0)
        off = 16
        if hatype == 1 and halen == 6:
            smac = addr[:6]
        while etype in VLAN_TYPES:
            etype = _U16.unpack_from(data, off + 2)[0]
            off += 4
    elif linktype == LT_LINUX_SLL2:
        etype, _ifindex, hatype, _pkttype, halen, addr = _SLL2.unpack_from(data, 0)
        off = 20
        if hatype == 1 and halen == 6:
            smac = addr[:6]
        while etype in VLAN_TYPES:
            etype = _U16.unpack_from(data, off + 2)[0]
            off += 4
    elif linktype in (LT_RAW, LT_RAW_12, LT_RAW_14):
        if not data:
            return None
        v = data[0] >> 4
        etype = ETH_IPV4 if v == 4 else ETH_IPV6 if v == 6 else -1
        if etype < 0:
            return None
        off = 0
    elif linktype == LT_IPV4:
        etype, off = ETH_IPV4, 0
    elif linktype == LT_IPV6:
        etype, off = ETH_IPV6, 0
    elif linktype in (LT_NULL, LT_LOOP):
        if len(data) < 4:
            return None
        if linktype == LT_LOOP:
            fam = _NULL_BE.unpack_from(data, 0)[0]
        else:
            # host byte order of the machine that wrote the file: a family fits in 16 bits
            fam = _NULL_LE.unpack_from(data, 0)[0]
            if fam > 0xFFFF:
                fam = _NULL_BE.unpack_from(data, 0)[0]
        etype = ETH_IPV4 if fam == 2 else ETH_IPV6 if fam in _BSD_AF_INET6 else -1
        if etype < 0:
            return None
        off = 4
    elif linktype in (LT_PPP, LT_PPP_HDLC, LT_C_HDLC):
        off = 0
        if linktype == LT_C_HDLC:
            etype = _U16.unpack_from(data, 2)[0]
            off = 4
        else:
            if data[:2] == b"\xff\x03":
                off = 2
            proto = _U16.unpack_from(data, off)[0]
            off += 2
            etype = ETH_IPV4 if proto == 0x0021 else ETH_IPV6 if proto == 0x0057 else -1
            if etype < 0:
                return None
    else:
        return None

    if etype == ETH_IPV4:
        return _ipv4(linktype, data, off, wirelen, smac, dmac)
    if etype == ETH_IPV6:
        return _ipv6(linktype, data, off, wirelen, smac, dmac)
    if etype == ETH_ARP or etype == ETH_RARP:
        return _arp(linktype, data, off, wirelen, etype, smac, dmac)
    if linktype == LT_ETHERNET and etype in (0x8847, 0x8848, 0x8863, 0x8864):
        return None  # MPLS and PPPoE: dpkt's
    return _non_ip(linktype, off, wirelen, smac, dmac, etype, "other", etype, None, False)


def _plain(kind: int, ver: int, tlen: int, src: bytes, dst: bytes, proto: int, frag: int,
           ipid: int, smac: Mac, dmac: Mac, malformed: bool,
           info: Info | None = None) -> Decoded:
    """A record without transport fields (no ports, flags or sequence numbers)."""
    return _new(Decoded, (kind, ver, tlen, src, dst, proto, 0, 0, 0, 0, 0, 0, 0, frag, ipid,
                          smac, dmac, info, malformed))


def _non_ip(linktype: int, off: int, wirelen: int, smac: Mac, dmac: Mac, etype: int, what: str,
            a: object, b: object, malformed: bool) -> Decoded:
    """A non-IP frame: counted by its wire length; info as model.Decoded describes it."""
    info = (LINK_NAMES.get(linktype, str(linktype)), what, a, b, max(0, wirelen - off))
    return _plain(K_NON_IP, 0, wirelen, b"", b"", etype, FRAG_NONE, 0, smac, dmac, malformed,
                  info)


def non_ip_malformed(linktype: int, off: int, wirelen: int, smac: bytes | None,
                     dmac: bytes | None, what: str) -> Decoded:
    """A frame whose IP header could not be read: counted once, as non-IP, and as malformed."""
    return _non_ip(linktype, off, wirelen, smac, dmac, -1, what, -1, None, True)


def _ipv4(linktype: int, data: bytes, off: int, wirelen: int, smac: Mac, dmac: Mac) -> Decoded:
    if len(data) - off < 20:
        return non_ip_malformed(linktype, off, wirelen, smac, dmac, "truncated IPv4")
    vhl, tlen, ipid, fragw, _ttl, proto, src, dst = _IPV4.unpack_from(data, off)
    hl = (vhl & 0x0F) << 2
    if vhl >> 4 != 4 or hl < 20:
        return non_ip_malformed(linktype, off, wirelen, smac, dmac, "bad IPv4 header")
    malformed = False
    if tlen == 0:
        # TSO/GSO: the kernel hands over a super-segment with Total Length 0; what went on the
        # wire is the frame. Count that, as tshark's ip.tso_support does.
        tlen = wirelen - off
    elif tlen < hl or tlen > wirelen - off:
        malformed = True  # a lying length: counted as the header says, but not trusted
    kind = _KIND.get(proto, K_OTHER_IP)
    if fragw & 0x1FFF:
        return _plain(kind, 4, tlen, src, dst, proto, FRAG_LATER, ipid, smac, dmac, malformed)
    frag = FRAG_FIRST if fragw & 0x2000 else FRAG_NONE
    return _transport(kind, 4, tlen, src, dst, proto, frag, ipid, data, off + hl, off + tlen,
                      malformed, smac, dmac)


def _ipv6(linktype: int, data: bytes, off: int, wirelen: int, smac: Mac, dmac: Mac) -> Decoded:
    if len(data) - off < 40:
        return non_ip_malformed(linktype, off, wirelen, smac, dmac, "truncated IPv6")
    vtcfl, plen, nh, src, dst = _IPV6.unpack_from(data, off)
    if vtcfl >> 28 != 6:
        return non_ip_malformed(linktype, off, wirelen, smac, dmac, "bad IPv6 header")
    tlen = plen + 40
    malformed = tlen > wirelen - off
    end = off + tlen  # the datagram's end, for the extension header walk
    t = off + 40
    frag = FRAG_NONE
    ipid = 0
    hops = 0
    while nh in IPV6_EXT or nh == 44:
        hops += 1
        if len(data) < t + 8 or t + 8 > end or hops > 16:
            # the chain runs past what was captured: the protocol is unknown
            return _plain(K_OTHER_IP, 6, tlen, src, dst, nh, frag, ipid, smac, dmac, True)
        if nh == 44:
            nnh, fo, ipid = _FRAG6.unpack_from(data, t)
            t += 8
            nh = nnh
            if fo & 0xFFF8:
                return _plain(_KIND6.get(nh, K_OTHER_IP), 6, tlen, src, dst, nh, FRAG_LATER,
                              ipid, smac, dmac, malformed)
            if fo & 1:
                frag = FRAG_FIRST
        else:
            nnh = data[t]
            t += (data[t + 1] + 1) << 3
            nh = nnh
    return _transport(_KIND6.get(nh, K_OTHER_IP), 6, tlen, src, dst, nh, frag, ipid, data, t,
                      end, malformed, smac, dmac)


def _transport(kind: int, ver: int, tlen: int, src: bytes, dst: bytes, proto: int, frag: int,
               ipid: int, data: bytes, t: int, end: int, malformed: bool, smac: Mac,
               dmac: Mac) -> Decoded:
    """The transport header at `t` of a datagram that ends (by its header) at `end`.
    Mirrors decode_dpkt._transport, check for check."""
    if kind == K_TCP:
        # The IPv6 check on the fixed header's end; for IPv4 a short Total Length shows up
        # in the data offset check below instead (the twin does the same).
        if len(data) - t < 20 or malformed or (ver == 6 and t + 20 > end):
            return _plain(K_TCP, ver, tlen, src, dst, proto, frag, ipid, smac, dmac, True)
        sport, dport, seq, ack, doff, flags, win = _TCP.unpack_from(data, t)
        thl = (doff >> 4) << 2
        bad = thl < 20 or t + thl > end
        return _new(Decoded, (K_TCP, ver, tlen, src, dst, proto, sport, dport, flags, seq, ack,
                              win, 0 if bad else end - t - thl, frag, ipid, smac, dmac, None,
                              bad))
    if kind == K_UDP:
        if len(data) - t < 4 or malformed or t + 4 > end:
            return _plain(K_UDP, ver, tlen, src, dst, proto, frag, ipid, smac, dmac, True)
        sport, dport = _PORTS.unpack_from(data, t)
        return _new(Decoded, (K_UDP, ver, tlen, src, dst, proto, sport, dport, 0, 0, 0, 0, 0,
                              frag, ipid, smac, dmac, None, False))
    if kind == K_ICMP:
        if len(data) - t < 4 or malformed or t + 4 > end:
            return _plain(K_ICMP, ver, tlen, src, dst, proto, frag, ipid, smac, dmac, True)
        itype = data[t]
        if ver == 4:
            quoted = _quoted_v4(data, t + 8) if itype == 3 else None
        else:
            quoted = _quoted_v6(data, t + 8) if itype == 1 else None
        return _plain(K_ICMP, ver, tlen, src, dst, proto, frag, ipid, smac, dmac, False,
                      (itype, data[t + 1], quoted))
    info = _ospf(data, t) if proto == 89 else None
    return _plain(K_OTHER_IP, ver, tlen, src, dst, proto, frag, ipid, smac, dmac, malformed,
                  info)


def _quoted_v4(data: bytes, q: int) -> Quoted | None:
    """The (src, sport, dst, dport, proto) an ICMP error quotes, if enough of it was captured."""
    if len(data) - q < 20 or data[q] >> 4 != 4 or data[q] & 0x0F < 5:
        return None
    vhl, _tlen, _id, _frag, _ttl, proto, src, dst = _IPV4.unpack_from(data, q)
    t = q + ((vhl & 0x0F) << 2)
    if proto not in (6, 17) or len(data) - t < 4:
        return (src, 0, dst, 0, proto)
    sport, dport = _PORTS.unpack_from(data, t)
    return (src, sport, dst, dport, proto)


def _quoted_v6(data: bytes, q: int) -> Quoted | None:
    # Like iptraf-ng, the quoted IPv6 header is taken as the fixed 40 bytes.
    if len(data) - q < 40 or data[q] >> 4 != 6:
        return None
    _v, _plen, nh, src, dst = _IPV6.unpack_from(data, q)
    t = q + 40
    if nh not in (6, 17) or len(data) - t < 4:
        return (src, 0, dst, 0, nh)
    sport, dport = _PORTS.unpack_from(data, t)
    return (src, sport, dst, dport, nh)


def _ospf(data: bytes, t: int) -> Info | None:
    if len(data) - t < 16:
        return None
    return ("ospf", data[t + 1], _U32.unpack_from(data, t + 8)[0], bytes(data[t + 4 : t + 8]))


def _arp(linktype: int, data: bytes, off: int, wirelen: int, etype: int, smac: Mac,
         dmac: Mac) -> Decoded:
    what = "arp" if etype == ETH_ARP else "rarp"
    if len(data) - off < 8:
        return _non_ip(linktype, off, wirelen, smac, dmac, etype, what, 0, None, True)
    _htype, _ptype, hlen, plen, op = _ARP.unpack_from(data, off)
    p = off + 8
    if len(data) < p + 2 * (hlen + plen):
        return _non_ip(linktype, off, wirelen, smac, dmac, etype, what, op, None, True)
    sha = bytes(data[p:p + hlen])
    spa = bytes(data[p + hlen:p + hlen + plen])
    tha = bytes(data[p + hlen + plen:p + 2 * hlen + plen])
    tpa = bytes(data[p + 2 * hlen + plen:p + 2 * (hlen + plen)])
    return _non_ip(linktype, off, wirelen, smac, dmac, etype, what, op, (sha, spa, tha, tpa),
                   False)


_KIND = {6: K_TCP, 17: K_UDP, 1: K_ICMP}
_KIND6 = {6: K_TCP, 17: K_UDP, 58: K_ICMP}
