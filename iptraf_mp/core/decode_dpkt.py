"""The simple twin of the fast decoder, built on dpkt: every link type and encapsulation.

`decode.decode` sends here whatever its `struct` fast path hands over (MPLS, PPPoE, 802.3
LLC/SNAP, FDDI, 802.11 and radiotap, NFLOG, truncated link headers, unknown link types). It
also decodes everything the fast path does, independently, so that a differential test can
hold the two to the same `Decoded` for every frame (docs/decisions.md rules 16-18).

dpkt's packet constructors auto-decode the layers above, swallow their errors into raw bytes
and size payloads from the buffer. So each header here is read with `_hdr`: the fixed fields
of one dpkt header class at one offset and nothing more; every length comes from a header
field and every read is bounds-checked first. The malformed conventions are those of
`decode.py` (see the module docstring there and `model.Decoded`).
"""

from __future__ import annotations

from typing import Any, Literal

import dpkt
from dpkt.ethernet import Ethernet, MPLSlabel, VLANtag8021Q
from dpkt.icmp import ICMP
from dpkt.icmp6 import ICMP6
from dpkt.ieee80211 import IEEE80211
from dpkt.ip import IP
from dpkt.ip6 import IP6, IP6FragmentHeader, IP6OptsHeader
from dpkt.llc import LLC
from dpkt.pppoe import PPPoE
from dpkt.radiotap import Radiotap
from dpkt.sll import SLL
from dpkt.sll2 import SLL2
from dpkt.tcp import TCP

from .decode import (
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    ETH_RARP,
    LINK_NAMES,
    LT_C_HDLC,
    LT_ETHERNET,
    LT_FDDI,
    LT_IEEE802_11,
    LT_IPV4,
    LT_IPV6,
    LT_LINUX_SLL,
    LT_LINUX_SLL2,
    LT_LOOP,
    LT_NFLOG,
    LT_NULL,
    LT_PPP,
    LT_PPP_HDLC,
    LT_RADIOTAP,
    LT_RAW,
    LT_RAW_12,
    LT_RAW_14,
    VLAN_TYPES,
    non_ip_malformed,
)
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

ETH_MPLS = 0x8847
ETH_MPLS_MCAST = 0x8848
ETH_PPPOE_SESSION = 0x8864
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057
NFULA_PAYLOAD = 9
AF_INET = 2
AF_INET6_LINUX = 10
BSD_AF_INET6 = frozenset((24, 28, 30))  # NetBSD/OpenBSD, FreeBSD, Darwin
# RFC 1042 and 802.1H encapsulation: with these OUIs the SNAP protocol id is an EtherType
SNAP_ETHERTYPE_OUIS = frozenset((0x000000, 0x0000F8))
IPV6_OPT_HDRS = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options
MAX_IPV6_EXT = 16  # the fast path's bound on a chain, so both give up at the same header

_KIND4 = {6: K_TCP, 17: K_UDP, 1: K_ICMP}
_KIND6 = {6: K_TCP, 17: K_UDP, 58: K_ICMP}


def decode_dpkt(linktype: int, data: bytes, wirelen: int) -> Decoded:
    """Decode one captured frame of any link type. Never raises (rule 18)."""
    try:
        return _link(linktype, bytes(data), wirelen)
    except Exception:  # a frame, whatever its bytes, must never stop the monitor
        wl = wirelen if isinstance(wirelen, int) else 0
        return non_ip_malformed(linktype, 0, wl, None, None, "undecodable frame")


def _hdr(cls: Any, data: bytes, off: int) -> Any:
    """The fixed header fields of dpkt class `cls` at `off`, or None if not all were captured."""
    n = cls.__hdr_len__
    if off < 0 or len(data) - off < n:
        return None
    h = cls.__new__(cls)
    dpkt.Packet.unpack(h, data[off:off + n])  # the base unpack: fields only, no upper layers
    return h


def _u16(data: bytes, off: int) -> int:
    return int.from_bytes(data[off:off + 2], "big")


def _lname(linktype: int) -> str:
    return LINK_NAMES.get(linktype, str(linktype))


def _other(linktype: int, off: int, wirelen: int, smac: Mac, dmac: Mac, etype: int) -> Decoded:
    """A well-formed non-IP frame with EtherType `etype` (-1: none); its link header ends at
    `off`."""
    return Decoded(K_NON_IP, 0, wirelen, b"", b"", etype, 0, 0, 0, 0, 0, 0, 0, FRAG_NONE, 0,
                   smac, dmac, (_lname(linktype), "other", etype, None, max(0, wirelen - off)),
                   False)


def _llc_named(linktype: int, off: int, wirelen: int, smac: Mac, dmac: Mac, dsap: int) -> Decoded:
    """A non-SNAP 802.2 frame (STP, NetBIOS, IPX ...): it has no EtherType, so it is named
    by what = "llc" and a = its DSAP."""
    return Decoded(K_NON_IP, 0, wirelen, b"", b"", -1, 0, 0, 0, 0, 0, 0, 0, FRAG_NONE, 0,
                   smac, dmac, (_lname(linktype), "llc", dsap, None, max(0, wirelen - off)),
                   False)


# ---------------------------------------------------------------- link layers

def _link(lt: int, data: bytes, wl: int) -> Decoded:
    if lt == LT_ETHERNET:
        eth = _hdr(Ethernet, data, 0)
        if eth is None:
            return non_ip_malformed(lt, 0, wl, None, None, "truncated Ethernet header")
        return _ethertype(lt, data, 14, wl, eth.src, eth.dst, eth.type, llc=True, tunnels=True)
    if lt == LT_LINUX_SLL or lt == LT_LINUX_SLL2:
        h = _hdr(SLL if lt == LT_LINUX_SLL else SLL2, data, 0)
        if h is None:
            return non_ip_malformed(lt, 0, wl, None, None, "truncated Linux cooked header")
        smac = h.hdr[:6] if h.hrd == 1 and h.hlen == 6 else None
        return _ethertype(lt, data, h.__hdr_len__, wl, smac, None, h.ethtype,
                          llc=False, tunnels=False)
    if lt in (LT_RAW, LT_RAW_12, LT_RAW_14):
        if not data:
            return non_ip_malformed(lt, 0, wl, None, None, "truncated IP")
        v = data[0] >> 4
        if v == 4:
            return _ipv4(lt, data, 0, wl, None, None)
        if v == 6:
            return _ipv6(lt, data, 0, wl, None, None)
        return non_ip_malformed(lt, 0, wl, None, None, "bad IP version")
    if lt == LT_IPV4:
        return _ipv4(lt, data, 0, wl, None, None)
    if lt == LT_IPV6:
        return _ipv6(lt, data, 0, wl, None, None)
    if lt == LT_NULL or lt == LT_LOOP:
        return _null(lt, data, wl)
    if lt == LT_PPP or lt == LT_PPP_HDLC:
        return _ppp(lt, data, wl)
    if lt == LT_C_HDLC:
        if len(data) < 4:
            return non_ip_malformed(lt, 0, wl, None, None, "truncated Cisco HDLC header")
        return _l3(lt, data, 4, wl, None, None, _u16(data, 2))
    if lt == LT_FDDI:
        return _fddi(lt, data, wl)
    if lt == LT_IEEE802_11:
        return _wlan(lt, data, 0, wl, False)
    if lt == LT_RADIOTAP:
        return _radiotap(lt, data, wl)
    if lt == LT_NFLOG:
        return _nflog(lt, data, wl)
    # Rule 16: any other link type is counted as non-IP with its link type named.
    return _other(lt, 0, wl, None, None, -1)


def _ethertype(lt: int, data: bytes, off: int, wl: int, smac: Mac, dmac: Mac, etype: int,
               llc: bool, tunnels: bool) -> Decoded:
    """What follows an EtherType: any stack of VLAN tags, then (on Ethernet-like links) an
    802.3 length with LLC, MPLS or PPPoE, then the layer 3 protocol."""
    while etype in VLAN_TYPES:
        tag = _hdr(VLANtag8021Q, data, off)
        if tag is None:
            return non_ip_malformed(lt, off, wl, smac, dmac, "truncated VLAN tag")
        etype = tag.type
        off += 4
    if llc and etype < 0x0600:  # an 802.3 length field: LLC follows
        return _llc(lt, data, off, wl, smac, dmac)
    if tunnels and (etype == ETH_MPLS or etype == ETH_MPLS_MCAST):
        return _mpls(lt, data, off, wl, smac, dmac, etype)
    if tunnels and etype == ETH_PPPOE_SESSION:
        return _pppoe(lt, data, off, wl, smac, dmac)
    return _l3(lt, data, off, wl, smac, dmac, etype)


def _l3(lt: int, data: bytes, off: int, wl: int, smac: Mac, dmac: Mac, etype: int) -> Decoded:
    if etype == ETH_IPV4:
        return _ipv4(lt, data, off, wl, smac, dmac)
    if etype == ETH_IPV6:
        return _ipv6(lt, data, off, wl, smac, dmac)
    if etype == ETH_ARP or etype == ETH_RARP:
        return _arp(lt, data, off, wl, smac, dmac, etype)
    # PPPoE discovery, LLDP, IPX ... and, on links without tunnels, MPLS and PPPoE too
    return _other(lt, off, wl, smac, dmac, etype)


def _llc(lt: int, data: bytes, off: int, wl: int, smac: Mac, dmac: Mac) -> Decoded:
    """802.2 LLC at `off`: SNAP carries an EtherType to follow; anything else is named non-IP."""
    h = _hdr(LLC, data, off)
    if h is None:
        return non_ip_malformed(lt, off, wl, smac, dmac, "truncated LLC header")
    if h.dsap == 0xAA and h.ssap == 0xAA:
        if len(data) - off < 8:
            return non_ip_malformed(lt, off, wl, smac, dmac, "truncated SNAP header")
        oui = int.from_bytes(data[off + 3:off + 6], "big")
        if oui not in SNAP_ETHERTYPE_OUIS:
            return _other(lt, off, wl, smac, dmac, -1)  # a vendor protocol id, not an EtherType
        return _ethertype(lt, data, off + 8, wl, smac, dmac, _u16(data, off + 6),
                          llc=False, tunnels=True)
    if h.dsap == 0x06 and h.ssap == 0x06:  # the DoD IP SAP (RFC 948): IPv4 straight after LLC
        return _ipv4(lt, data, off + 3, wl, smac, dmac)
    return _llc_named(lt, off, wl, smac, dmac, h.dsap)


def _mpls(lt: int, data: bytes, off: int, wl: int, smac: Mac, dmac: Mac, etype: int) -> Decoded:
    start = off
    while True:
        label = _hdr(MPLSlabel, data, off)
        if label is None:
            return non_ip_malformed(lt, off, wl, smac, dmac, "truncated MPLS label stack")
        off += 4
        if label.s:  # bottom of stack
            break
    if off >= len(data):
        return non_ip_malformed(lt, off, wl, smac, dmac, "truncated MPLS payload")
    # MPLS does not say what it carries: the IP version nibble is the usual guess.
    v = data[off] >> 4
    if v == 4:
        return _ipv4(lt, data, off, wl, smac, dmac)
    if v == 6:
        return _ipv6(lt, data, off, wl, smac, dmac)
    return _other(lt, start, wl, smac, dmac, etype)


def _ppp_proto(data: bytes, off: int) -> tuple[int, int] | None:
    """(PPP protocol, offset after it), honouring protocol-field compression; None if short."""
    if off >= len(data):
        return None
    if data[off] & 1:  # a compressed, one-byte protocol field
        return data[off], off + 1
    if len(data) - off < 2:
        return None
    return _u16(data, off), off + 2


def _pppoe(lt: int, data: bytes, off: int, wl: int, smac: Mac, dmac: Mac) -> Decoded:
    if _hdr(PPPoE, data, off) is None:
        return non_ip_malformed(lt, off, wl, smac, dmac, "truncated PPPoE header")
    pp = _ppp_proto(data, off + PPPoE.__hdr_len__)
    if pp is None:
        return non_ip_malformed(lt, off, wl, smac, dmac, "truncated PPPoE header")
    proto, p = pp
    if proto == PPP_IPV4:
        return _ipv4(lt, data, p, wl, smac, dmac)
    if proto == PPP_IPV6:
        return _ipv6(lt, data, p, wl, smac, dmac)
    return _other(lt, off, wl, smac, dmac, ETH_PPPOE_SESSION)  # LCP, IPCP, PAP ...


def _ppp(lt: int, data: bytes, wl: int) -> Decoded:
    if lt == LT_PPP_HDLC and data[:1] in (b"\x0f", b"\x8f"):
        # Cisco PPP with HDLC framing (RFC 1547 4.3.1): address, control, EtherType
        if len(data) < 4:
            return non_ip_malformed(lt, 0, wl, None, None, "truncated Cisco HDLC header")
        return _l3(lt, data, 4, wl, None, None, _u16(data, 2))
    off = 2 if data[:2] == b"\xff\x03" else 0
    pp = _ppp_proto(data, off)
    if pp is None:
        return non_ip_malformed(lt, 0, wl, None, None, "truncated PPP header")
    proto, off = pp
    if proto == PPP_IPV4:
        return _ipv4(lt, data, off, wl, None, None)
    if proto == PPP_IPV6:
        return _ipv6(lt, data, off, wl, None, None)
    return _other(lt, off, wl, None, None, -1)


def _null(lt: int, data: bytes, wl: int) -> Decoded:
    if len(data) < 4:
        return non_ip_malformed(lt, 0, wl, None, None, "truncated loopback header")
    if lt == LT_LOOP:
        fam = int.from_bytes(data[:4], "big")
    else:
        # DLT_NULL is in the byte order of the machine that wrote it; a family is small.
        fam = int.from_bytes(data[:4], "little")
        if fam > 0xFFFF:
            fam = int.from_bytes(data[:4], "big")
    if fam == AF_INET:
        return _ipv4(lt, data, 4, wl, None, None)
    if fam in BSD_AF_INET6:
        return _ipv6(lt, data, 4, wl, None, None)
    return _other(lt, 4, wl, None, None, -1)


def _fddi(lt: int, data: bytes, wl: int) -> Decoded:
    if len(data) < 13:
        return non_ip_malformed(lt, 0, wl, None, None, "truncated FDDI header")
    fc = data[0]
    dmac, smac = data[1:7], data[7:13]
    if fc & 0x30 == 0x10:  # frame-control format bits 01: an LLC frame
        return _llc(lt, data, 13, wl, smac, dmac)
    return _other(lt, 13, wl, smac, dmac, -1)  # SMT, MAC, token ...


def _radiotap(lt: int, data: bytes, wl: int) -> Decoded:
    rt = _hdr(Radiotap, data, 0)
    if rt is None or rt.version != 0 or rt.length < 8 or rt.length > len(data):
        return non_ip_malformed(lt, 0, wl, None, None, "bad radiotap header")
    # The Flags field says whether the 802.11 header is padded to 32 bits (DATAPAD).
    present = int.from_bytes(data[4:8], "little")
    p = 8
    word = present
    while word & 0x80000000:
        if p + 4 > rt.length:
            return non_ip_malformed(lt, 0, wl, None, None, "bad radiotap header")
        word = int.from_bytes(data[p:p + 4], "little")
        p += 4
    flags = 0
    if present & 0x01:  # TSFT: 8 bytes, 8-aligned
        p = ((p + 7) & ~7) + 8
    if present & 0x02 and p < rt.length:
        flags = data[p]
    return _wlan(lt, data, rt.length, wl, bool(flags & 0x20))


def _wlan(lt: int, data: bytes, off: int, wl: int, datapad: bool) -> Decoded:
    """An 802.11 frame at `off`: only unprotected data frames carry LLC/SNAP and maybe IP."""
    h = _hdr(IEEE80211, data, off)
    if h is None:
        return non_ip_malformed(lt, off, wl, None, None, "truncated 802.11 header")
    a1 = data[off + 4:off + 10] if len(data) - off >= 10 else None
    a2 = data[off + 10:off + 16] if len(data) - off >= 16 else None
    if h.version != 0 or h.type != 2:
        # management, control (which may be as short as 10 bytes), or an unknown version
        return _other(lt, off + 24, wl, a2, a1, -1)
    hl = 30 if h.to_ds and h.from_ds else 24
    if len(data) - off < hl:
        return non_ip_malformed(lt, off, wl, None, None, "truncated 802.11 header")
    a3 = data[off + 16:off + 22]
    # (DA, SA) by the DS bits: 00 A1 A2, 01 (to AP) A3 A2, 10 (from AP) A1 A3, 11 A3 A4
    smac: Mac
    dmac: Mac
    if h.to_ds and h.from_ds:
        dmac, smac = a3, data[off + 24:off + 30]
    elif h.to_ds:
        dmac, smac = a3, a2
    elif h.from_ds:
        dmac, smac = a1, a3
    else:
        dmac, smac = a1, a2
    qos = h.subtype & 0x8
    amsdu = False
    if qos:
        if len(data) - off < hl + 2:
            return non_ip_malformed(lt, off, wl, smac, dmac, "truncated 802.11 header")
        amsdu = bool(data[off + hl] & 0x80)
        hl += 2
        if h.order:  # +HTC: an HT Control field follows
            hl += 4
    if datapad:
        hl = (hl + 3) & ~3
    if h.subtype & 0x4 or h.wep or amsdu:
        # no data (null function, CF-Ack/Poll), protected, or aggregated: not IP to us
        return _other(lt, off + hl, wl, smac, dmac, -1)
    return _llc(lt, data, off + hl, wl, smac, dmac)


def _nflog(lt: int, data: bytes, wl: int) -> Decoded:
    """Linux NFLOG: family, version, resource id, then TLVs; type 9 holds the packet."""
    if len(data) < 4:
        return non_ip_malformed(lt, 0, wl, None, None, "truncated NFLOG header")
    family = data[0]
    off = 4
    # TLV lengths and types are in the byte order of the host that logged; guess it from the
    # first TLV, whose length must fit.
    order: Literal["little", "big"] = "little"
    if len(data) >= 8:
        first = int.from_bytes(data[4:6], "little")
        if first < 4 or first > len(data) - 4:
            order = "big"
    while len(data) - off >= 4:
        tlen = int.from_bytes(data[off:off + 2], order)
        ttype = int.from_bytes(data[off + 2:off + 4], order) & 0x7FFF  # minus NLA_F_NESTED
        if tlen < 4:
            return non_ip_malformed(lt, off, wl, None, None, "bad NFLOG TLV")
        if ttype == NFULA_PAYLOAD:
            p = off + 4
            if family == AF_INET:
                return _ipv4(lt, data, p, wl, None, None)
            if family == AF_INET6_LINUX:
                return _ipv6(lt, data, p, wl, None, None)
            return _other(lt, p, wl, None, None, -1)
        off += (tlen + 3) & ~3
    return _other(lt, 4, wl, None, None, -1)  # logged without the packet


# ---------------------------------------------------------------- layer 3

def _arp(lt: int, data: bytes, off: int, wl: int, smac: Mac, dmac: Mac, etype: int) -> Decoded:
    what = "arp" if etype == ETH_ARP else "rarp"
    l3len = max(0, wl - off)

    def record(op: int, addrs: Info | None, malformed: bool) -> Decoded:
        return Decoded(K_NON_IP, 0, wl, b"", b"", etype, 0, 0, 0, 0, 0, 0, 0, FRAG_NONE, 0,
                       smac, dmac, (_lname(lt), what, op, addrs, l3len), malformed)

    if len(data) - off < 8:
        return record(0, None, True)
    hln, pln, op = data[off + 4], data[off + 5], _u16(data, off + 6)
    p = off + 8
    if len(data) < p + 2 * (hln + pln):
        return record(op, None, True)
    sha = data[p:p + hln]
    spa = data[p + hln:p + hln + pln]
    tha = data[p + hln + pln:p + 2 * hln + pln]
    tpa = data[p + 2 * hln + pln:p + 2 * (hln + pln)]
    return record(op, (sha, spa, tha, tpa), False)


def _ipv4(lt: int, data: bytes, off: int, wl: int, smac: Mac, dmac: Mac) -> Decoded:
    ip = _hdr(IP, data, off)
    if ip is None:
        return non_ip_malformed(lt, off, wl, smac, dmac, "truncated IPv4")
    hl = ip.hl << 2
    if ip.v != 4 or hl < 20:
        return non_ip_malformed(lt, off, wl, smac, dmac, "bad IPv4 header")
    tlen = ip.len
    malformed = False
    if tlen == 0:
        tlen = wl - off  # TSO: the frame is what went on the wire (tshark ip.tso_support)
    elif tlen < hl or tlen > wl - off:
        malformed = True  # counted as the header says, but no length inside it is trusted
    kind = _KIND4.get(ip.p, K_OTHER_IP)
    if ip.offset:
        return Decoded(kind, 4, tlen, ip.src, ip.dst, ip.p, 0, 0, 0, 0, 0, 0, 0, FRAG_LATER,
                       ip.id, smac, dmac, None, malformed)
    frag = FRAG_FIRST if ip.mf else FRAG_NONE
    return _transport(4, kind, ip.p, tlen, ip.src, ip.dst, frag, ip.id, data, off + hl,
                      off + tlen, malformed, smac, dmac)


def _ipv6(lt: int, data: bytes, off: int, wl: int, smac: Mac, dmac: Mac) -> Decoded:
    ip6 = _hdr(IP6, data, off)
    if ip6 is None:
        return non_ip_malformed(lt, off, wl, smac, dmac, "truncated IPv6")
    if ip6.v != 6:
        return non_ip_malformed(lt, off, wl, smac, dmac, "bad IPv6 header")
    tlen = ip6.plen + 40
    malformed = tlen > wl - off
    end = off + tlen
    nh = ip6.nxt
    t = off + 40
    frag = FRAG_NONE
    ipid = 0
    hops = 0
    # Rule 17: walk hop-by-hop, routing, destination options and fragment headers (not AH/ESP).
    while nh in IPV6_OPT_HDRS or nh == 44:
        hops += 1
        if hops > MAX_IPV6_EXT or len(data) - t < 8 or t + 8 > end:
            return Decoded(K_OTHER_IP, 6, tlen, ip6.src, ip6.dst, nh, 0, 0, 0, 0, 0, 0, 0, frag,
                           ipid, smac, dmac, None, True)
        if nh == 44:
            fh = _hdr(IP6FragmentHeader, data, t)
            t += 8
            nh = fh.nxt
            ipid = fh.id
            if fh.frag_off:
                return Decoded(_KIND6.get(nh, K_OTHER_IP), 6, tlen, ip6.src, ip6.dst, nh, 0, 0,
                               0, 0, 0, 0, 0, FRAG_LATER, ipid, smac, dmac, None, malformed)
            if fh.m_flag:
                frag = FRAG_FIRST
        else:
            eh = _hdr(IP6OptsHeader, data, t)
            t += (eh.len + 1) << 3
            nh = eh.nxt
    return _transport(6, _KIND6.get(nh, K_OTHER_IP), nh, tlen, ip6.src, ip6.dst, frag, ipid,
                      data, t, end, malformed, smac, dmac)


def _transport(ver: int, kind: int, proto: int, tlen: int, src: bytes, dst: bytes, frag: int,
               ipid: int, data: bytes, t: int, end: int, malformed: bool,
               smac: Mac, dmac: Mac) -> Decoded:
    """The transport header at `t` of a datagram that ends (by its header) at `end`."""

    def rec(sport: int = 0, dport: int = 0, flags: int = 0, seq: int = 0, ack: int = 0,
            win: int = 0, paylen: int = 0, info: Info | None = None,
            bad: bool = True) -> Decoded:
        return Decoded(kind, ver, tlen, src, dst, proto, sport, dport, flags, seq, ack, win,
                       paylen, frag, ipid, smac, dmac, info, bad)

    if kind == K_TCP:
        # The IPv6 check on the fixed header's end mirrors the fast path; for IPv4 a short
        # Total Length shows up in the data offset check below instead.
        th = _hdr(TCP, data, t)
        if th is None or malformed or (ver == 6 and t + 20 > end):
            return rec()
        thl = th.off << 2
        flags = th.flags & 0xFF  # dpkt's flags are 9 bits (with NS); the record keeps the byte
        if thl < 20 or t + thl > end:
            return rec(th.sport, th.dport, flags, th.seq, th.ack, th.win)
        return rec(th.sport, th.dport, flags, th.seq, th.ack, th.win, end - t - thl, bad=False)
    if kind == K_UDP:
        # Only the ports are needed, so four captured bytes are enough (not the 8-byte header).
        if len(data) - t < 4 or malformed or t + 4 > end:
            return rec()
        return rec(_u16(data, t), _u16(data, t + 2), bad=False)
    if kind == K_ICMP:
        ih = _hdr(ICMP if ver == 4 else ICMP6, data, t)
        if ih is None or malformed or t + 4 > end:
            return rec()
        quoted = None
        if ver == 4 and ih.type == 3:
            quoted = _quoted_v4(data, t + 8)
        elif ver == 6 and ih.type == 1:
            quoted = _quoted_v6(data, t + 8)
        return rec(info=(ih.type, ih.code, quoted), bad=False)
    info = _ospf(data, t) if proto == 89 else None
    return rec(info=info, bad=malformed)


def _quoted_v4(data: bytes, q: int) -> Quoted | None:
    """(src, sport, dst, dport, proto) of the IPv4 header a destination-unreachable quotes."""
    ip = _hdr(IP, data, q)
    if ip is None or ip.v != 4 or ip.hl < 5:
        return None
    t = q + (ip.hl << 2)
    if ip.p not in (6, 17) or len(data) - t < 4:
        return (ip.src, 0, ip.dst, 0, ip.p)
    return (ip.src, _u16(data, t), ip.dst, _u16(data, t + 2), ip.p)


def _quoted_v6(data: bytes, q: int) -> Quoted | None:
    # As iptraf-ng does, the quoted IPv6 header is taken as the fixed 40 bytes.
    ip6 = _hdr(IP6, data, q)
    if ip6 is None or ip6.v != 6:
        return None
    t = q + 40
    if ip6.nxt not in (6, 17) or len(data) - t < 4:
        return (ip6.src, 0, ip6.dst, 0, ip6.nxt)
    return (ip6.src, _u16(data, t), ip6.dst, _u16(data, t + 2), ip6.nxt)


def _ospf(data: bytes, t: int) -> Info | None:
    # OSPFv2 and v3 share the first 12 bytes: version, type, length, router id, area id.
    # 16 bytes are required, as in the fast path (dpkt's OSPF header wants 24).
    if len(data) - t < 16:
        return None
    return ("ospf", data[t + 1], int.from_bytes(data[t + 8:t + 12], "big"),
            data[t + 4:t + 8])
