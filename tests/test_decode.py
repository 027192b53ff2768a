"""The decoders: fast path against its dpkt twin, both against tshark, and hand-built frames.

Hand-built frames are packed with `struct` here, so they do not share dpkt's idea of a header.
Test names cite the docs/decisions.md rule they check.
"""

from __future__ import annotations

import struct
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iptraf_mp.core.decode import LINK_NAMES, decode, decode_fast
from iptraf_mp.core.decode_dpkt import decode_dpkt
from iptraf_mp.core.model import (
    FRAG_FIRST,
    FRAG_LATER,
    FRAG_NONE,
    K_ICMP,
    K_NON_IP,
    K_OTHER_IP,
    K_TCP,
    K_UDP,
    KIND_NAMES,
    TH_ACK,
    TH_PUSH,
    TH_SYN,
    Decoded,
)

from .conftest import CORPUS, corpus_files, need_corpus, reference

# ---------------------------------------------------------------- reading captures


def _read_capture(path: Path) -> list[tuple[int, bytes, int]]:
    """(16-bit link type, captured bytes, wire length) per frame.

    dpkt's readers drop the wire length and the per-interface link type of pcapng, which the
    byte rule needs, so the project's reader is used, or a minimal one if it is not there.
    """
    try:
        from iptraf_mp.capture.capfile import open_capture
    except ImportError:
        return _read_capture_minimal(path)
    with open_capture(path) as r:
        return [(r.interfaces[i].linktype & 0xFFFF, data, wl) for _ts, i, data, wl in r]


def _read_capture_minimal(path: Path) -> list[tuple[int, bytes, int]]:
    b = path.read_bytes()
    out = []
    if b[:4] == b"\x0a\x0d\x0d\x0a":
        o, e, ifs = 0, "<", []
        while len(b) - o >= 12:
            if b[o:o + 4] == b"\x0a\x0d\x0d\x0a":
                e = "<" if b[o + 8:o + 12] == b"\x4d\x3c\x2b\x1a" else ">"
                ifs = []
            btype, blen = struct.unpack_from(e + "II", b, o)
            if blen < 12:
                raise ValueError("bad pcapng block")
            if btype == 1:
                ifs.append(struct.unpack_from(e + "H", b, o + 8)[0])
            elif btype == 6:
                iface, _h, _l, cap, wl = struct.unpack_from(e + "5I", b, o + 8)
                out.append((ifs[iface] & 0xFFFF, b[o + 28:o + 28 + cap], wl))
            elif btype == 3:
                wl = struct.unpack_from(e + "I", b, o + 8)[0]
                out.append((ifs[0] & 0xFFFF, b[o + 12:o + 12 + min(wl, blen - 16)], wl))
            o += blen
        return out
    e = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<",
         b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}[b[:4]]
    lt = struct.unpack_from(e + "I", b, 20)[0] & 0xFFFF
    o = 24
    while len(b) - o >= 16:
        _s, _f, cap, wl = struct.unpack_from(e + "IIII", b, o)
        out.append((lt, b[o + 16:o + 16 + cap], wl))
        o += 16 + cap
    return out


def _frames_or_skip(cap: Path) -> list[tuple[int, bytes, int]]:
    try:
        return _read_capture(cap)
    except Exception as err:  # a damaged capture is the reader's business, not the decoder's
        pytest.skip(f"{cap.name} cannot be read: {err}")


REAL = corpus_files("real")
LARGE = corpus_files("large")
MALFORMED = corpus_files("malformed")


def _need(cap: Path) -> None:
    need_corpus(cap.parent.name)


def _totals(results: list[Decoded]) -> dict[str, list[int]]:
    t = {k: [0, 0] for k in ("ip", "tcp", "udp", "icmp", "other_ip", "non_ip")}
    for d in results:
        k = t[KIND_NAMES[d.kind]]
        k[0] += 1
        k[1] += d.iplen
        if d.kind != K_NON_IP:
            t["ip"][0] += 1
            t["ip"][1] += d.iplen
    return t


def _ref_totals(ref: dict) -> dict[str, list[int]]:
    r = ref["totals"]
    out = {k: [r[k]["packets"], r[k]["bytes"]] for k in ("ip", "tcp", "udp", "other_ip")}
    out["icmp"] = [r["icmp"]["packets"] + r["icmpv6"]["packets"],
                   r["icmp"]["bytes"] + r["icmpv6"]["bytes"]]
    out["non_ip"] = [r["non_ip"]["frames"], r["non_ip"]["frame_bytes"]]
    return out


# ---------------------------------------------------------------- corpus: differential


@pytest.mark.parametrize("cap", REAL + LARGE + MALFORMED,
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fast_path_equals_dpkt_twin_on_corpus(cap):
    """Every frame the fast path decodes, the dpkt twin decodes to the same record."""
    _need(cap)
    frames = _frames_or_skip(cap)
    fast = dpkt_only = 0
    bad = []
    for i, (lt, data, wl) in enumerate(frames, 1):
        f = decode_fast(lt, data, wl)
        d = decode_dpkt(lt, data, wl)
        assert isinstance(d, Decoded)
        if f is None:
            dpkt_only += 1
            continue
        fast += 1
        g = decode(lt, data, wl)  # decode() has a one-unpack case of its own before _fast
        if (f != d or g != d) and len(bad) < 5:
            bad.append((i, f if f != d else g, d))
    print(f"\n{cap.parent.name}/{cap.name}: {len(frames)} frames, {fast} fast path, "
          f"{dpkt_only} dpkt")
    assert not bad, "fast path and dpkt twin differ:\n" + "\n".join(
        f"frame {i}:\n  fast {f}\n  dpkt {d}" for i, f, d in bad)


# ---------------------------------------------------------------- corpus: tshark totals


@pytest.mark.parametrize("cap", REAL + LARGE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_decode_totals_equal_tshark(cap):
    """The acceptance bar: per-kind packets and bytes of decode() equal tshark's (byte rule)."""
    _need(cap)
    ref = reference(cap)
    results = [decode(lt, data, wl) for lt, data, wl in _frames_or_skip(cap)]
    assert len(results) == ref["frames"]
    assert _totals(results) == _ref_totals(ref)


# ---------------------------------------------------------------- corpus: malformed


def _why_differs(ref: dict, ours: dict, theirs: dict, linktypes: set[int]) -> str:
    """The known reasons our totals and tshark's differ on a malformed capture."""
    reasons = []
    unknown = sorted(lt for lt in linktypes if lt not in LINK_NAMES)
    if unknown:
        reasons.append(f"link type {unknown} is not decoded (rule 16: counted as non-IP); "
                       "tshark decodes it")
    if ref["totals"]["ip_unparsed"]["frames"]:
        reasons.append("tshark leaves an unreadable IP header out of both IP and non-IP; we "
                       "count it as malformed non-IP (rule 18)")
    fix = ref.get("totals_alt", {}).get("ipv4_len_zero_fixup")
    if fix and ours["ip"] == [fix["totals"]["ip"]["packets"], fix["totals"]["ip"]["bytes"]]:
        reasons.append("IPv4 Total Length 0 (TSO): we count the wire length, as tshark's "
                       "ip.tso_support does (totals_alt agrees)")
    if ref["anomalies"]["ipv6_jumbo"] and ours["ip"] == theirs["ip"]:
        reasons.append("IPv6 jumbogram (payload length 0): the hop-by-hop header runs past the "
                       "40 bytes the header claims, so the protocol is unknown and the packet "
                       "is malformed other-IP; tshark walks on into the captured bytes")
    return "; ".join(reasons) or "unexplained"


def test_malformed_corpus_never_raises_and_counts_every_frame():
    """Rule 18 on tcpdump's fuzz captures; exact totals listed where the references agree."""
    need_corpus("malformed")
    listed = []
    for cap in MALFORMED:
        try:
            frames = _read_capture(cap)
        except Exception as err:
            print(f"\n{cap.name}: skipped, cannot be read: {err}")
            continue
        results = [decode(lt, data, wl) for lt, data, wl in frames]  # must not raise
        assert len(results) == len(frames)
        assert all(isinstance(d, Decoded) for d in results)
        ref = reference(cap)
        assert len(results) == ref["frames"], cap.name
        cross = ref.get("tcpdump_crosscheck", {})
        if ref["tshark_rc"] != 0 or cross.get("disagree_count") != 0:
            continue
        ours, theirs = _totals(results), _ref_totals(ref)
        if ours != theirs:
            diff = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
            why = _why_differs(ref, ours, theirs, {lt for lt, _d, _w in frames})
            listed.append(f"{cap.name}: ours vs tshark {diff}: {why}")
    print("\nmalformed captures whose totals differ from an agreed reference:")
    print("\n".join("  " + line for line in listed) or "  none")
    assert not [line for line in listed if line.endswith("unexplained")]


# ---------------------------------------------------------------- hand-built frames

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
V4_A = bytes([10, 0, 0, 1])
V4_B = bytes([192, 168, 1, 2])
V6_A = bytes.fromhex("20010db8000000000000000000000001")
V6_B = bytes.fromhex("20010db8000000000000000000000002")


def tcp_hdr(sport=1234, dport=80, seq=1000, ack=2000, flags=TH_ACK | TH_PUSH, win=512,
            doff=5, payload=b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, win, 0,
                       0) + bytes((doff - 5) * 4) + payload


def udp_hdr(sport=5353, dport=53, payload=b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv4(proto: int, payload: bytes, src=V4_A, dst=V4_B, ipid=0x1234, fragoff=0, mf=False,
         tlen=None, ihl=5) -> bytes:
    if tlen is None:
        tlen = ihl * 4 + len(payload)
    fw = (0x2000 if mf else 0) | (fragoff >> 3)
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tlen, ipid, fw, 64, proto, 0, src,
                       dst) + bytes((ihl - 5) * 4) + payload


def ipv6(nh: int, payload: bytes, src=V6_A, dst=V6_B, plen=None) -> bytes:
    if plen is None:
        plen = len(payload)
    return struct.pack("!IHBB16s16s", 0x60000000, plen, nh, 64, src, dst) + payload


def ext6(nh: int, body_units: int = 0) -> bytes:
    """A hop-by-hop/routing/destination-options header of (body_units + 1) * 8 bytes."""
    return bytes([nh, body_units]) + bytes(6 + 8 * body_units)


def frag6(nh: int, offset: int, more: bool, ident: int) -> bytes:
    return struct.pack("!BBHI", nh, 0, offset | (1 if more else 0), ident)


def eth(etype: int, payload: bytes, dst=MAC_B, src=MAC_A) -> bytes:
    return dst + src + struct.pack("!H", etype) + payload


def vlan(tpid_inner: int, vid: int) -> bytes:
    """The 4 bytes of a tag: TCI, then the type that follows it."""
    return struct.pack("!HH", vid, tpid_inner)


def arp_body(op: int, sha=MAC_A, spa=V4_A, tha=bytes(6), tpa=V4_B) -> bytes:
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha + spa + tha + tpa


TCP4 = ipv4(6, tcp_hdr(payload=b"hello"))
UDP4 = ipv4(17, udp_hdr(payload=b"q" * 10))
TCP6 = ipv6(6, tcp_hdr(payload=b"hello6"))


def dec(lt: int, frame: bytes, wirelen: int | None = None) -> Decoded:
    """decode(), holding the fast path and the twin to the same answer where both decode."""
    wl = len(frame) if wirelen is None else wirelen
    d = decode_dpkt(lt, frame, wl)
    f = decode_fast(lt, frame, wl)
    if f is not None:
        assert f == d
    got = decode(lt, frame, wl)
    assert got == d
    return got


def assert_tcp4(d: Decoded, smac=MAC_A, dmac=MAC_B):
    assert d.kind == K_TCP and d.ipver == 4 and not d.malformed
    assert d.iplen == len(TCP4)
    assert (d.src, d.dst, d.sport, d.dport) == (V4_A, V4_B, 1234, 80)
    assert (d.flags, d.seq, d.ack, d.win, d.paylen) == (TH_ACK | TH_PUSH, 1000, 2000, 512, 5)
    assert (d.frag, d.ipid) == (FRAG_NONE, 0x1234)
    assert (d.smac, d.dmac) == (smac, dmac)


def test_rule16_ethernet_ipv4_tcp():
    assert_tcp4(dec(1, eth(0x0800, TCP4)))


def test_rule16_ethernet_padding_and_fcs_not_counted():
    frame = eth(0x0800, ipv4(17, udp_hdr()) + bytes(30))  # short frame padded, plus a trailer
    d = dec(1, frame)
    assert d.kind == K_UDP and d.iplen == 28 and not d.malformed


def test_rule16_qinq_vlan_stack():
    # 802.1ad outer tag, then 802.1Q, then the legacy 0x9100/0x9200/0x9300 tags
    tags = (vlan(0x8100, 100) + vlan(0x9100, 200) + vlan(0x9200, 300) + vlan(0x9300, 400)
            + vlan(0x0800, 500))
    d = dec(1, eth(0x88A8, tags + UDP4))
    assert d.kind == K_UDP and (d.sport, d.dport) == (5353, 53) and d.iplen == len(UDP4)
    assert (d.smac, d.dmac) == (MAC_A, MAC_B)


def test_rule16_vlan_then_arp_and_then_other():
    d = dec(1, eth(0x8100, vlan(0x0806, 7) + arp_body(1)))
    assert d.kind == K_NON_IP and d.info[1] == "arp"
    d = dec(1, eth(0x8100, vlan(0x88CC, 7) + bytes(40)))
    assert d.kind == K_NON_IP and d.proto == 0x88CC
    assert d.info == ("Ethernet", "other", 0x88CC, None, 40)  # the tag is link header


def test_rule18_truncated_vlan_tag_is_malformed():
    d = dec(1, eth(0x8100, b"\x00\x07"))
    assert d.kind == K_NON_IP and d.malformed and d.iplen == 16


def _mpls(*labels: int) -> bytes:
    out = b""
    for i, lab in enumerate(labels):
        bos = 1 if i == len(labels) - 1 else 0
        out += struct.pack("!I", (lab << 12) | (bos << 8) | 64)
    return out


def test_rule16_mpls_label_stack_ipv4_and_ipv6():
    assert_tcp4(dec(1, eth(0x8847, _mpls(16, 17, 18) + TCP4)))
    d = dec(1, eth(0x8848, _mpls(1000) + TCP6))
    assert d.kind == K_TCP and d.ipver == 6 and d.iplen == len(TCP6) and d.paylen == 6


def test_rule16_mpls_behind_vlan():
    assert_tcp4(dec(1, eth(0x8100, vlan(0x8847, 5) + _mpls(16) + TCP4)))


def test_rule16_mpls_non_ip_payload_and_truncated_stack():
    d = dec(1, eth(0x8847, _mpls(16) + b"\x00\x00\x00\x00" + bytes(40)))  # pseudowire CW
    assert d.kind == K_NON_IP and d.proto == 0x8847 and not d.malformed
    d = dec(1, eth(0x8847, struct.pack("!I", 16 << 12)))  # no bottom of stack
    assert d.kind == K_NON_IP and d.malformed


def _pppoe(ppp_proto: bytes, payload: bytes, code=0) -> bytes:
    return struct.pack("!BBHH", 0x11, code, 0x2A, len(ppp_proto) + len(payload)) + ppp_proto \
        + payload


def test_rule16_pppoe_session_ipv4_and_ipv6():
    assert_tcp4(dec(1, eth(0x8864, _pppoe(b"\x00\x21", TCP4))))
    d = dec(1, eth(0x8864, _pppoe(b"\x00\x57", TCP6)))
    assert d.kind == K_TCP and d.ipver == 6 and d.sport == 1234


def test_rule16_pppoe_lcp_and_discovery_are_non_ip():
    d = dec(1, eth(0x8864, _pppoe(b"\xc0\x21", bytes(10))))
    assert d.kind == K_NON_IP and d.proto == 0x8864 and not d.malformed
    d = dec(1, eth(0x8863, _pppoe(b"", bytes(8), code=0x09)))
    assert d.kind == K_NON_IP and d.proto == 0x8863 and not d.malformed


def test_rule16_8023_llc_is_named_non_ip():
    body = b"\x42\x42\x03" + bytes(35)  # spanning tree BPDU
    d = dec(1, eth(len(body), body))
    assert d.kind == K_NON_IP and not d.malformed and d.iplen == 52
    assert d.info == ("Ethernet", "llc", 0x42, None, 38)


def test_rule16_8023_snap_follows_the_ethertype():
    snap = b"\xaa\xaa\x03\x00\x00\x00\x08\x00"
    assert_tcp4(dec(1, eth(len(snap) + len(TCP4), snap + TCP4)))
    snap_arp = b"\xaa\xaa\x03\x00\x00\x00\x08\x06" + arp_body(2)
    d = dec(1, eth(len(snap_arp), snap_arp))
    assert d.kind == K_NON_IP and d.info[1:3] == ("arp", 2)


def test_rule16_linux_cooked_v1_and_v2():
    sll = struct.pack("!HHH8sH", 0, 1, 6, MAC_A + b"\0\0", 0x0800)
    assert_tcp4(dec(113, sll + TCP4), smac=MAC_A, dmac=None)
    sll2 = struct.pack("!HHIHBB8s", 0x86DD, 0, 3, 1, 4, 6, MAC_B + b"\0\0")
    d = dec(276, sll2 + TCP6)
    assert d.kind == K_TCP and d.ipver == 6 and (d.smac, d.dmac) == (MAC_B, None)
    # a tunnel device: no MAC
    sll = struct.pack("!HHH8sH", 0, 0xFFFE, 0, bytes(8), 0x0800)
    assert dec(113, sll + TCP4).smac is None


def test_rule16_bsd_null_either_byte_order_and_loop():
    assert_tcp4(dec(0, struct.pack("<I", 2) + TCP4), smac=None, dmac=None)
    assert_tcp4(dec(0, struct.pack(">I", 2) + TCP4), smac=None, dmac=None)
    for fam in (24, 28, 30):
        assert dec(0, struct.pack("<I", fam) + TCP6).ipver == 6
    assert_tcp4(dec(108, struct.pack(">I", 2) + TCP4), smac=None, dmac=None)
    d = dec(0, struct.pack("<I", 7) + bytes(20))  # some other family
    assert d.kind == K_NON_IP and d.info == ("NULL", "other", -1, None, 20)


def test_rule16_raw_ip_link_types():
    for lt in (101, 12, 14):
        assert_tcp4(dec(lt, TCP4), smac=None, dmac=None)
        assert dec(lt, TCP6).ipver == 6
    assert_tcp4(dec(228, TCP4), smac=None, dmac=None)
    assert dec(229, TCP6).kind == K_TCP
    d = dec(101, b"\x30" + bytes(30))
    assert d.kind == K_NON_IP and d.malformed


def test_rule16_ppp_and_ppp_hdlc():
    assert_tcp4(dec(9, b"\xff\x03\x00\x21" + TCP4), smac=None, dmac=None)
    assert_tcp4(dec(9, b"\x00\x21" + TCP4), smac=None, dmac=None)
    assert_tcp4(dec(9, b"\x21" + TCP4), smac=None, dmac=None)  # protocol field compressed
    assert dec(50, b"\xff\x03\x00\x57" + TCP6).ipver == 6
    assert_tcp4(dec(50, b"\x0f\x00\x08\x00" + TCP4), smac=None, dmac=None)  # Cisco framing
    d = dec(9, b"\xff\x03\xc0\x21" + bytes(10))  # LCP
    assert d.kind == K_NON_IP and not d.malformed and d.info[0] == "PPP"


def test_rule16_cisco_hdlc():
    assert_tcp4(dec(104, b"\x0f\x00\x08\x00" + TCP4), smac=None, dmac=None)
    assert dec(104, b"\x8f\x00\x86\xdd" + TCP6).ipver == 6


def test_rule16_fddi_llc_snap():
    hdr = b"\x50" + MAC_B + MAC_A + b"\xaa\xaa\x03\x00\x00\x00\x08\x00"
    assert_tcp4(dec(10, hdr + TCP4))
    d = dec(10, b"\x41" + MAC_B + MAC_A + bytes(20))  # SMT frame
    assert d.kind == K_NON_IP and not d.malformed and d.info[0] == "FDDI"


def _wlan_data(fc_flags: int, subtype: int = 0, a4: bool = False, qos: int | None = None,
               body: bytes = b"") -> bytes:
    fc0 = (subtype << 4) | (2 << 2)
    a1, a2, a3 = b"\x11" * 6, b"\x22" * 6, b"\x33" * 6
    h = bytes([fc0, fc_flags]) + b"\0\0" + a1 + a2 + a3 + b"\0\0"
    if a4:
        h += b"\x44" * 6
    if qos is not None:
        h += bytes([qos, 0])
    return h + body


SNAP_IP = b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + TCP4


def test_rule16_ieee80211_data_frames_by_ds_bits():
    cases = [(0, b"\x11" * 6, b"\x22" * 6), (1, b"\x33" * 6, b"\x22" * 6),
             (2, b"\x11" * 6, b"\x33" * 6), (3, b"\x33" * 6, b"\x44" * 6)]
    for ds, dmac, smac in cases:
        d = dec(105, _wlan_data(ds, a4=ds == 3, body=SNAP_IP))
        assert_tcp4(d, smac=smac, dmac=dmac)
    assert_tcp4(dec(105, _wlan_data(1, subtype=8, qos=0, body=SNAP_IP)),
                smac=b"\x22" * 6, dmac=b"\x33" * 6)


def test_rule16_ieee80211_non_data_and_protected_are_non_ip():
    beacon = b"\x80\x00\x00\x00" + b"\xff" * 6 + b"\x22" * 6 + b"\x22" * 6 + b"\0\0" + bytes(12)
    for frame in (beacon, b"\xd4\x00\x00\x00" + b"\x11" * 6,  # a 10-byte ACK
                  _wlan_data(0x41, body=SNAP_IP),  # protected
                  _wlan_data(1, subtype=4)):  # null function
        d = dec(105, frame)
        assert d.kind == K_NON_IP and not d.malformed, frame.hex()


def test_rule16_radiotap_80211():
    rt = struct.pack("<BBHI", 0, 0, 12, 0x2) + b"\x10\0\0\0"  # Flags: FCS at the end
    assert_tcp4(dec(127, rt + _wlan_data(2, body=SNAP_IP) + b"FCS!"),
                smac=b"\x33" * 6, dmac=b"\x11" * 6)
    # DATAPAD: the 26-byte QoS header is padded to 28
    rt = struct.pack("<BBHI", 0, 0, 9, 0x2) + b"\x20"
    frame = rt + _wlan_data(0, subtype=8, qos=0, body=b"\0\0" + SNAP_IP)
    assert dec(127, frame).kind == K_TCP
    d = dec(127, struct.pack("<BBHI", 0, 0, 200, 0))  # length past the frame
    assert d.kind == K_NON_IP and d.malformed


def _nflog(family: int, packet: bytes, order: str = "<") -> bytes:
    def tlv(t: int, v: bytes) -> bytes:
        raw = struct.pack(order + "HH", 4 + len(v), t) + v
        return raw + bytes(-len(raw) % 4)

    return bytes([family, 0]) + b"\x00\x14" + tlv(1, b"\x08\x00\x01\x00") + tlv(10, b"x\0") \
        + tlv(9, packet)


def test_rule16_nflog():
    assert_tcp4(dec(239, _nflog(2, TCP4)), smac=None, dmac=None)
    assert dec(239, _nflog(10, TCP6)).ipver == 6
    assert_tcp4(dec(239, _nflog(2, TCP4, order=">")), smac=None, dmac=None)
    d = dec(239, _nflog(7, TCP4))
    assert d.kind == K_NON_IP and not d.malformed


def test_rule16_unknown_link_type_is_named_non_ip():
    d = dec(147, b"\x01\x02\x03", 60)
    assert d == Decoded(K_NON_IP, 0, 60, b"", b"", -1, 0, 0, 0, 0, 0, 0, 0, FRAG_NONE, 0,
                        None, None, ("147", "other", -1, None, 60), False)
    assert dec(160, b"").info[0] == "160"


def test_rule17_ipv6_ext_headers_walked():
    chain = ext6(43, 1) + ext6(44) + frag6(60, 0, False, 0) + ext6(6) + tcp_hdr(payload=b"abc")
    d = dec(1, eth(0x86DD, ipv6(0, chain)))
    assert d.kind == K_TCP and d.proto == 6 and not d.malformed
    assert (d.sport, d.dport, d.paylen) == (1234, 80, 3)
    assert d.iplen == 40 + len(chain)


def test_rule17_ipv6_ext_walk_to_udp_and_icmpv6():
    d = dec(1, eth(0x86DD, ipv6(60, ext6(17) + udp_hdr())))
    assert d.kind == K_UDP and (d.sport, d.dport) == (5353, 53)
    d = dec(1, eth(0x86DD, ipv6(0, ext6(58) + bytes([128, 0, 0, 0, 0, 1, 0, 1]))))
    assert d.kind == K_ICMP and d.info == (128, 0, None)


def test_rule17_ipv6_fragments_first_and_later():
    first = ipv6(0, ext6(44) + frag6(6, 0, True, 0xABCD) + tcp_hdr())
    d = dec(1, eth(0x86DD, first))
    assert (d.kind, d.frag, d.ipid, d.sport) == (K_TCP, FRAG_FIRST, 0xABCD, 1234)
    later = ipv6(44, frag6(6, 1448, False, 0xABCD) + bytes(100))
    d = dec(1, eth(0x86DD, later))
    assert (d.kind, d.frag, d.ipid, d.sport, d.iplen) == (K_TCP, FRAG_LATER, 0xABCD, 0, 148)


def test_rule17_ipv6_ah_esp_not_walked():
    d = dec(1, eth(0x86DD, ipv6(51, bytes([6, 4]) + bytes(22) + tcp_hdr())))
    assert d.kind == K_OTHER_IP and d.proto == 51 and not d.malformed


def test_rule17_ipv6_chain_past_the_payload_is_malformed():
    d = dec(1, eth(0x86DD, ipv6(0, ext6(6, 4) + tcp_hdr(), plen=16)))
    assert d.kind == K_TCP and d.malformed and d.iplen == 56


def test_rule4_ipv4_first_and_later_fragments():
    d = dec(1, eth(0x0800, ipv4(17, udp_hdr(payload=bytes(100)), mf=True, ipid=77)))
    assert (d.kind, d.frag, d.ipid, d.sport) == (K_UDP, FRAG_FIRST, 77, 5353)
    d = dec(1, eth(0x0800, ipv4(17, bytes(60), fragoff=1480, ipid=77)))
    assert (d.kind, d.frag, d.ipid, d.sport, d.iplen) == (K_UDP, FRAG_LATER, 77, 0, 80)


def test_rule5_icmp_unreachable_quotes_tcp():
    quoted = ipv4(6, tcp_hdr(sport=4000, dport=22)[:8], src=V4_B, dst=V4_A, tlen=60)
    icmp = bytes([3, 3, 0, 0, 0, 0, 0, 0]) + quoted
    d = dec(1, eth(0x0800, ipv4(1, icmp, src=bytes([10, 9, 9, 9]))))
    assert d.kind == K_ICMP and d.iplen == 20 + len(icmp)
    assert d.info == (3, 3, (V4_B, 4000, V4_A, 22, 6))
    quoted6 = ipv6(6, tcp_hdr(sport=4000, dport=22)[:8], src=V6_B, dst=V6_A, plen=20)
    d = dec(1, eth(0x86DD, ipv6(58, bytes([1, 4, 0, 0, 0, 0, 0, 0]) + quoted6)))
    assert d.info == (1, 4, (V6_B, 4000, V6_A, 22, 6))
    d = dec(1, eth(0x0800, ipv4(1, bytes([3, 1, 0, 0, 0, 0, 0, 0]) + quoted[:12])))
    assert d.info == (3, 1, None)  # the quote was cut short


def test_ospf_info():
    ospf = struct.pack("!BBH4sIHH8s", 2, 1, 44, V4_A, 7, 0, 0, bytes(8)) + bytes(20)
    d = dec(1, eth(0x0800, ipv4(89, ospf)))
    assert d.kind == K_OTHER_IP and d.info == ("ospf", 1, 7, V4_A)


def test_arp_request_reply_and_rarp():
    d = dec(1, eth(0x0806, arp_body(1) + bytes(18), dst=b"\xff" * 6))
    assert d.kind == K_NON_IP and not d.malformed and d.iplen == 60
    assert d.info == ("Ethernet", "arp", 1, (MAC_A, V4_A, bytes(6), V4_B), 46)
    d = dec(1, eth(0x0806, arp_body(2, sha=MAC_B, spa=V4_B, tha=MAC_A, tpa=V4_A)))
    assert d.info[1:4] == ("arp", 2, (MAC_B, V4_B, MAC_A, V4_A))
    d = dec(1, eth(0x8035, arp_body(3)))
    assert d.info[1:3] == ("rarp", 3)
    d = dec(1, eth(0x0806, arp_body(1)[:20]))
    assert d.malformed and d.info[3] is None


def test_rule18_truncated_tcp_header_is_malformed():
    frame = eth(0x0800, TCP4)
    d = dec(1, frame[:14 + 20 + 10], len(frame))
    assert d.kind == K_TCP and d.malformed and d.iplen == len(TCP4) and d.sport == 0


def test_rule18_tcp_data_offset_past_the_datagram():
    d = dec(1, eth(0x0800, ipv4(6, tcp_hdr(doff=15)[:20])))  # says 60 bytes, datagram has 20
    assert d.kind == K_TCP and d.malformed and d.sport == 1234 and d.paylen == 0


def test_rule18_ipv4_total_length_zero_counts_the_wire():
    frame = eth(0x0800, ipv4(6, tcp_hdr(flags=TH_SYN, payload=bytes(3000)), tlen=0))
    d = dec(1, frame)
    assert d.kind == K_TCP and not d.malformed and d.iplen == len(frame) - 14
    assert d.paylen == 3000


def test_rule18_ipv4_total_length_lies():
    d = dec(1, eth(0x0800, ipv4(17, udp_hdr(), tlen=12)))  # smaller than the header
    assert d.kind == K_UDP and d.malformed and d.iplen == 12
    d = dec(1, eth(0x0800, ipv4(17, udp_hdr(), tlen=1500)))  # larger than the wire
    assert d.kind == K_UDP and d.malformed and d.iplen == 1500
    d = dec(1, eth(0x0800, ipv4(47, bytes(8), tlen=1500)))
    assert d.kind == K_OTHER_IP and d.malformed and d.iplen == 1500


def test_rule18_unreadable_ip_header_is_malformed_non_ip():
    d = dec(1, eth(0x0800, TCP4[:15]))
    assert d.kind == K_NON_IP and d.malformed and d.iplen == 29 and d.info[4] == 15
    d = dec(1, eth(0x0800, b"\x43" + TCP4[1:]))  # header length 12
    assert d.kind == K_NON_IP and d.malformed
    d = dec(1, eth(0x86DD, TCP6[:39]))
    assert d.kind == K_NON_IP and d.malformed


# Every link type and encapsulation above, for the truncation sweep.
SWEEP = [
    (1, eth(0x0800, TCP4)),
    (1, eth(0x86DD, ipv6(0, ext6(43, 1) + ext6(44) + frag6(6, 0, True, 9) + tcp_hdr()))),
    (1, eth(0x88A8, vlan(0x8100, 1) + vlan(0x0800, 2) + UDP4)),
    (1, eth(0x8847, _mpls(16, 17) + TCP4)),
    (1, eth(0x8864, _pppoe(b"\x00\x21", TCP4))),
    (1, eth(22, b"\xaa\xaa\x03\x00\x00\x00\x08\x06" + arp_body(1))),
    (1, eth(0x0800, ipv4(1, bytes([3, 3, 0, 0, 0, 0, 0, 0]) + TCP4))),
    (1, eth(0x86DD, ipv6(58, bytes([1, 4, 0, 0, 0, 0, 0, 0]) + TCP6))),
    (113, struct.pack("!HHH8sH", 0, 1, 6, MAC_A + b"\0\0", 0x0800) + TCP4),
    (276, struct.pack("!HHIHBB8s", 0x86DD, 0, 3, 1, 4, 6, MAC_B + b"\0\0") + TCP6),
    (0, struct.pack("<I", 2) + TCP4),
    (108, struct.pack(">I", 30) + TCP6),
    (101, TCP4), (228, UDP4), (229, TCP6),
    (9, b"\xff\x03\x00\x21" + TCP4),
    (50, b"\x8f\x00\x08\x00" + TCP4),
    (104, b"\x0f\x00\x08\x06" + arp_body(2)),
    (10, b"\x50" + MAC_B + MAC_A + b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + TCP4),
    (105, _wlan_data(3, subtype=8, a4=True, qos=0, body=SNAP_IP)),
    (127, struct.pack("<BBHI", 0, 0, 9, 0x2) + b"\x00" + _wlan_data(1, body=SNAP_IP)),
    (239, _nflog(2, ipv4(89, bytes(30)))),
    (147, bytes(40)),
]


def test_rule18_truncated_frames_at_every_length_never_raise():
    for lt, frame in SWEEP:
        for n in range(len(frame) + 1):
            d = dec(lt, frame[:n], len(frame))
            assert isinstance(d, Decoded)
            # counted once, by what could be read: non-IP counts the wire
            assert d.kind != K_NON_IP or d.iplen == len(frame)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lt=st.sampled_from([0, 1, 9, 10, 12, 14, 50, 101, 104, 105, 108, 113, 127, 228, 229,
                           239, 276, 999]),
       data=st.binary(max_size=120), extra=st.integers(0, 70000))
def test_rule18_arbitrary_bytes_never_raise(lt, data, extra):
    dec(lt, data, len(data) + extra)


def test_rule18_decode_dpkt_catches_everything(monkeypatch):
    """A bug inside the twin is a malformed frame, not a stopped monitor."""
    import iptraf_mp.core.decode_dpkt as twin

    def boom(*_args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(twin, "_link", boom)
    d = decode_dpkt(1, eth(0x0800, TCP4), 60)
    assert d.kind == K_NON_IP and d.malformed and d.iplen == 60
    d = decode_dpkt(1, eth(0x0800, TCP4), None)  # type: ignore[arg-type]
    assert d.kind == K_NON_IP and d.malformed


# ---------------------------------------------------------------- timing


def test_timing_fast_path_vs_dpkt_twin():
    """Not an assertion: µs per frame of each decoder on the largest echo capture.

    decode() includes its one-unpack Ethernet/IPv4/TCP case; decode_fast is the general
    struct path alone; decode_dpkt is the twin.
    """
    cap = CORPUS / "large" / "zeek_echo-connections.pcap"
    if not cap.is_file():
        pytest.skip(f"{cap} is absent")
    frames = _read_capture(cap)[:20000]
    best = {}
    for fn in (decode, decode_fast, decode_dpkt):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            for lt, data, wl in frames:
                fn(lt, data, wl)
            times.append(time.perf_counter() - t0)
        best[fn.__name__] = min(times) / len(frames) * 1e6
    kinds = Counter(KIND_NAMES[decode_fast(*f).kind] for f in frames)
    print(f"\n{cap.name}, {len(frames)} frames {dict(kinds)}: "
          + ", ".join(f"{k} {v:.2f} µs/frame" for k, v in best.items())
          + f" (dpkt/fast = {best['decode_dpkt'] / best['decode_fast']:.1f}x)")
