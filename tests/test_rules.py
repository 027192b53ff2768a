"""docs/decisions.md rules 1-15 on the engine and the view, packet by packet (no I/O).

Packets are built as raw Ethernet frames with struct (independent of the decoder under test)
and go through `decode` and `Engine.feed` exactly as a replay sends them.
"""

from __future__ import annotations

import socket
import struct

from iptraf_mp.console.view import VIEW_COUNTS, VIEW_MAC, VIEW_SIZES, ViewState, handle_key
from iptraf_mp.core.decode import decode
from iptraf_mp.core.engine import Engine, Settings
from iptraf_mp.core.lines import LineOptions, fmt_rate, log_line, screen_line, tcp_event_log
from iptraf_mp.core.rate import FlowRate
from iptraf_mp.core.tcptable import flag_column

MAC1 = bytes.fromhex("020000000001")
MAC2 = bytes.fromhex("020000000002")
A = "10.0.0.1"
B = "10.0.0.2"
SYN, FIN, RST, PSH, ACK, URG = 0x02, 0x01, 0x04, 0x08, 0x10, 0x20


def ip4(a: str) -> bytes:
    return socket.inet_aton(a)


def eth(payload: bytes, etype: int = 0x0800, smac: bytes = MAC1, dmac: bytes = MAC2) -> bytes:
    return dmac + smac + struct.pack("!H", etype) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes, ipid: int = 0, frag: int = 0,
         tlen: int | None = None) -> bytes:
    n = 20 + len(payload) if tlen is None else tlen
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, n, ipid, frag, 64, proto, 0, ip4(src),
                       ip4(dst)) + payload


def tcp_seg(sport: int, dport: int, flags: int, seq: int = 0, ack: int = 0, data: bytes = b"",
            win: int = 1000) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, win, 0, 0) + data


def tcp(src: str, sport: int, dst: str, dport: int, flags: int, seq: int = 0, ack: int = 0,
        data: bytes = b"", smac: bytes = MAC1, win: int = 1000) -> bytes:
    return eth(ipv4(src, dst, 6, tcp_seg(sport, dport, flags, seq, ack, data, win)), smac=smac)


class Run:
    """An engine plus a clock; `send` decodes and feeds one frame."""

    def __init__(self, **settings) -> None:
        self.engine = Engine(Settings(**settings))
        self.n = 0
        self.retired = []

    def send(self, frame: bytes, ts: float, iface: str = "eth0") -> None:
        self.n += 1
        self.engine.feed(ts, iface, decode(1, frame, len(frame)), self.n)
        self.retired += self.engine.tcp.retired
        self.engine.tcp.retired.clear()

    @property
    def pairs(self):
        return self.engine.tcp.slots


def handshake(r: Run, t: float, sport: int = 1234, dport: int = 80, iface: str = "eth0") -> None:
    r.send(tcp(A, sport, B, dport, SYN, seq=100), t, iface)
    r.send(tcp(B, dport, A, sport, SYN | ACK, seq=500, ack=101), t + 0.1, iface)
    r.send(tcp(A, sport, B, dport, ACK, seq=101, ack=501), t + 0.2, iface)


def close(r: Run, t: float, sport: int = 1234, dport: int = 80) -> None:
    r.send(tcp(A, sport, B, dport, FIN | ACK, seq=101, ack=501), t)
    r.send(tcp(B, dport, A, sport, ACK, seq=501, ack=102), t + 0.1)
    r.send(tcp(B, dport, A, sport, FIN | ACK, seq=501, ack=102), t + 0.2)
    r.send(tcp(A, sport, B, dport, ACK, seq=102, ack=502), t + 0.3)


# ---- rule 1 ----------------------------------------------------------------------------------

def test_rule1_same_connection_on_two_interfaces_is_two_pairs():
    r = Run()
    handshake(r, 1.0, iface="eth0")
    handshake(r, 1.0, iface="eth1")
    assert [p.iface for p in r.pairs] == ["eth0", "eth1"]
    assert all(p.a.packets == 2 and p.b.packets == 1 for p in r.pairs)


def test_rule1_key_includes_both_ports():
    r = Run()
    handshake(r, 1.0, sport=1000)
    handshake(r, 1.0, sport=1001)
    assert len(r.pairs) == 2


# ---- rule 2 ----------------------------------------------------------------------------------

def test_rule2_pure_ack_fin_rst_create_nothing_but_count_in_summary():
    r = Run()
    r.send(tcp(A, 1, B, 2, ACK, seq=5, ack=6), 1.0)
    r.send(tcp(A, 1, B, 2, FIN | ACK, seq=5, ack=6), 1.1)
    r.send(tcp(A, 1, B, 2, RST, seq=5), 1.2)
    r.send(tcp(A, 1, B, 2, RST | ACK, seq=5, data=b"why"), 1.3)  # a RST never creates
    assert r.pairs == []
    s = r.engine.summary
    assert s.tcp.packets == 4 and s.tcp.bytes == 40 * 3 + 43
    assert s.ip.packets == 4


def test_rule2_syn_or_data_creates():
    r = Run()
    r.send(tcp(A, 1, B, 2, SYN), 1.0)
    r.send(tcp(A, 3, B, 4, ACK | PSH, data=b"x" * 10), 1.0)
    assert len(r.pairs) == 2


# ---- rule 3 ----------------------------------------------------------------------------------

def test_rule3_partial_marker_only_when_not_created_by_syn():
    r = Run()
    handshake(r, 1.0, sport=1)
    r.send(tcp(A, 2, B, 80, ACK | PSH, data=b"abc"), 2.0)
    assert [p.partial for p in r.pairs] == [False, True]


# ---- rule 4 ----------------------------------------------------------------------------------

def test_rule4_bytes_are_ip_total_length_not_link_or_padding():
    r = Run()
    f = tcp(A, 1, B, 2, SYN) + b"\x00" * 6  # Ethernet padding to 60 bytes
    r.send(f, 1.0)
    e = r.pairs[0].a
    assert (e.packets, e.bytes, e.last_size) == (1, 40, 40)


def test_rule4_later_fragments_count_to_first_fragment_connection():
    r = Run()
    handshake(r, 1.0)
    seg = tcp_seg(1234, 80, ACK | PSH, 101, 501, b"D" * 40)  # 60 bytes of TCP
    # a fragment of the *next* datagram that arrives before its first fragment: bytes only
    r.send(eth(ipv4(A, B, 6, b"E" * 16, ipid=8, frag=3)), 1.9)
    r.send(eth(ipv4(A, B, 6, seg[:32], ipid=7, frag=0x2000)), 2.0)  # first: 52 bytes
    r.send(eth(ipv4(A, B, 6, seg[32:], ipid=7, frag=4)), 2.1)  # later: 20 + 28 = 48
    seg2 = tcp_seg(1234, 80, ACK | PSH, 141, 501, b"F" * 4)
    r.send(eth(ipv4(A, B, 6, seg2, ipid=8, frag=0x2000)), 2.2)  # its first: 44 bytes
    e = r.pairs[0].a
    assert e.packets == 2 + 3  # handshake (SYN, ACK) + first + later + second first
    assert e.bytes == 40 + 40 + 52 + 48 + 44 + 36  # the early fragment: its 36 bytes only
    assert r.engine.summary.tcp.packets == 7


# ---- rule 5 ----------------------------------------------------------------------------------

def test_rule5_flags_of_the_last_packet_then_state_words():
    r = Run()
    handshake(r, 1.0)
    p = r.pairs[0]
    assert flag_column(p, p.a) == "--A-" and flag_column(p, p.b) == "S-A-"
    r.send(tcp(B, 80, A, 1234, ACK | PSH | URG, seq=501, ack=101, data=b"hi"), 1.5)
    assert flag_column(p, p.b) == "-PAU"
    r.send(tcp(A, 1234, B, 80, FIN | ACK, seq=101, ack=503), 2.0)
    assert flag_column(p, p.a) == "DONE"
    r.send(tcp(B, 80, A, 1234, ACK, seq=503, ack=102), 2.1)
    assert flag_column(p, p.a) == "CLOSED"
    r.send(tcp(B, 80, A, 1234, RST, seq=503), 2.2)
    assert flag_column(p, p.b) == "RESET"


# ---- rule 6 ----------------------------------------------------------------------------------

def test_rule6_fin_ack_close_needs_both_directions_closed():
    r = Run()
    handshake(r, 1.0)
    p = r.pairs[0]
    r.send(tcp(A, 1234, B, 80, FIN | ACK, seq=101, ack=501), 2.0)
    r.send(tcp(B, 80, A, 1234, ACK, seq=501, ack=102), 2.1)
    r.send(tcp(B, 80, A, 1234, FIN | ACK, seq=501, ack=102), 2.2)
    assert (p.a.finsent, p.b.finsent, p.closed) == (2, 1, False)
    r.send(tcp(A, 1234, B, 80, ACK, seq=102, ack=502), 2.3)
    assert (p.a.finsent, p.b.finsent, p.closed, p.end) == (2, 2, True, "FIN")


def test_rule6_finack_is_matched_by_sequence_number():
    r = Run()
    handshake(r, 1.0)
    p = r.pairs[0]
    r.send(tcp(A, 1234, B, 80, FIN | ACK, seq=101, ack=501), 2.0)
    r.send(tcp(B, 80, A, 1234, ACK, seq=999, ack=102), 2.1)  # not the FIN's ack number
    assert p.a.finsent == 1
    r.send(tcp(B, 80, A, 1234, ACK, seq=501, ack=102), 2.2)
    assert p.a.finsent == 2


def test_rule6_rst_closes_the_pair_and_a_new_syn_starts_a_new_one():
    r = Run()
    handshake(r, 1.0)
    r.send(tcp(B, 80, A, 1234, RST | ACK, seq=501, ack=101), 2.0)
    p = r.pairs[0]
    assert p.closed and p.end == "RESET" and p.b.reset and not p.a.reset
    r.send(tcp(A, 1234, B, 80, ACK, seq=101, ack=501), 2.1)  # straggler: counts in it
    assert p.a.packets == 3 and len(r.pairs) == 1
    r.send(tcp(A, 1234, B, 80, SYN, seq=7000), 3.0)  # a new connection on the same ports
    assert len(r.pairs) == 1 and r.pairs[0] is not p  # took the reset pair's slot (rule 8)
    assert r.retired == [p]


def test_rule6_icmp_unreachable_quoting_the_connection_resets_it():
    r = Run()
    r.send(tcp(A, 1234, B, 80, SYN, seq=100), 1.0)
    quoted = ipv4(A, B, 6, tcp_seg(1234, 80, SYN, 100))
    icmp = struct.pack("!BBHI", 3, 3, 0, 0) + quoted
    r.send(eth(ipv4(B, A, 1, icmp)), 1.1)
    p = r.pairs[0]
    assert p.a.reset and p.b.reset and p.end == "ICMP" and p.closed
    assert flag_column(p, p.a) == flag_column(p, p.b) == "RESET"
    assert r.engine.summary.icmp.packets == 1


def test_rule6_icmpv6_unreachable_resets_too():
    r = Run()
    a6 = socket.inet_pton(socket.AF_INET6, "fd00::1")
    b6 = socket.inet_pton(socket.AF_INET6, "fd00::2")

    def ip6(src, dst, nh, payload):
        return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nh, 64, src, dst) + payload

    r.send(eth(ip6(a6, b6, 6, tcp_seg(5555, 443, SYN, 1)), 0x86DD), 1.0)
    icmp6 = struct.pack("!BBHI", 1, 4, 0, 0) + ip6(a6, b6, 6, tcp_seg(5555, 443, SYN, 1))
    r.send(eth(ip6(b6, a6, 58, icmp6), 0x86DD), 1.1)
    assert r.pairs[0].end == "ICMP"


# ---- rule 7 ----------------------------------------------------------------------------------

def test_rule7_idle_pair_times_out_keeps_counting_and_is_reusable():
    r = Run(tcp_timeout=60.0)
    handshake(r, 100.0, sport=1)
    r.send(tcp("10.9.9.9", 5, "10.9.9.8", 6, ACK | PSH, data=b"x"), 159.5)  # clock only
    p = r.pairs[0]
    assert not p.timed_out
    r.send(tcp("10.9.9.9", 5, "10.9.9.8", 6, ACK | PSH, data=b"x"), 160.5)
    assert p.timed_out and p.closed and flag_column(p, p.a) == "TIMEOUT"
    r.send(tcp(A, 1, B, 80, ACK | PSH, seq=101, ack=501, data=b"more"), 161.0)
    assert p.a.packets == 3 and p.timed_out  # counted in the same pair
    r.send(tcp(A, 2, B, 80, SYN), 162.0)
    assert r.pairs[0].a.sport == 2 and p.slot == -1  # took its row (rule 8)
    r.send(tcp(A, 1, B, 80, ACK | PSH, seq=105, ack=501, data=b"late"), 163.0)
    assert p.a.packets == 4 and not r.retired  # off screen, still counting until it retires
    r.send(tcp(A, 2, B, 80, ACK | PSH, seq=1, ack=1, data=b"x"), 163.0 + 120.0)
    assert p in r.retired and p.retired  # idle twice the timeout: retired and written


def test_rule7_default_timeout_is_15_minutes():
    assert Engine().tcp.timeout == 900.0


# ---- rule 8 ----------------------------------------------------------------------------------

def test_rule8_new_pair_takes_slot_of_oldest_closed_pair():
    r = Run()
    for i, sport in enumerate((1, 2, 3)):
        handshake(r, 1.0 + i, sport=sport)
    # close 3 first, then 1: the oldest closed is 3's
    r.send(tcp(B, 80, A, 3, RST, seq=501), 5.0)
    r.send(tcp(B, 80, A, 1, RST, seq=501), 5.1)
    r.send(tcp(A, 4, B, 80, SYN), 6.0)
    assert [p.a.sport for p in r.pairs] == [1, 2, 4]
    r.send(tcp(A, 5, B, 80, SYN), 6.1)
    assert [p.a.sport for p in r.pairs] == [5, 2, 4]
    r.send(tcp(A, 6, B, 80, SYN), 6.2)  # nothing closed: appended
    assert [p.a.sport for p in r.pairs] == [5, 2, 4, 6]
    assert not r.retired  # leaving the screen is not leaving the engine (they linger)
    r.send(tcp(A, 6, B, 80, ACK | PSH, seq=1, ack=1, data=b"x"), 5.1 + 60.0)
    assert sorted(p.a.sport for p in r.retired) == [1, 3]  # ended 60 s ago: retired


# ---- rule 9 ----------------------------------------------------------------------------------

def test_rule9_flush_removes_closed_reset_and_timed_out_pairs():
    r = Run(tcp_timeout=30.0)
    handshake(r, 1.0, sport=1)
    handshake(r, 1.0, sport=2)
    handshake(r, 20.0, sport=3)
    handshake(r, 20.0, sport=4)
    close(r, 21.0, sport=3)
    r.send(tcp(A, 4, B, 80, ACK | PSH, seq=101, ack=501, data=b"x"), 40.0)
    assert [p.a.sport for p in r.pairs] == [1, 2, 3, 4]
    assert [p.timed_out for p in r.pairs] == [True, True, False, False]
    assert r.engine.flush() == 3  # 1 and 2 timed out, 3 closed
    assert [p.a.sport for p in r.pairs] == [4]
    assert r.pairs[0].slot == 0
    assert sorted(p.a.sport for p in r.engine.tcp.retired) == [1, 2, 3]


def test_rule9_persistence_flushes_automatically():
    r = Run(persistence=120.0)
    handshake(r, 1000.0, sport=1)
    r.send(tcp(B, 80, A, 1, RST, seq=501), 1001.0)
    handshake(r, 1100.0, sport=2)
    assert len(r.pairs) == 1 or r.pairs[0].a.sport == 2  # 2 took the reset slot
    r.send(tcp(B, 80, A, 2, RST, seq=501), 1101.0)
    r.send(tcp(A, 9, B, 9, ACK, seq=1), 1119.0)
    assert len(r.pairs) == 1
    r.send(tcp(A, 9, B, 9, ACK, seq=1), 1120.5)  # 120 s after the first packet
    assert r.pairs == []


# ---- rule 10 ---------------------------------------------------------------------------------

def test_rule10_sort_by_larger_direction_descending_ties_stable_no_flush():
    r = Run()
    for sport in (1, 2, 3, 4):
        handshake(r, 1.0, sport=sport)
    # bytes: pair 2 gets the most in the B->A direction; 3 and 4 tie
    r.send(tcp(B, 80, A, 2, ACK | PSH, seq=501, ack=101, data=b"x" * 500), 2.0)
    r.send(tcp(A, 3, B, 80, ACK | PSH, seq=101, ack=501, data=b"x" * 100), 2.0)
    r.send(tcp(A, 4, B, 80, ACK | PSH, seq=101, ack=501, data=b"x" * 100), 2.0)
    r.send(tcp(B, 80, A, 1, RST, seq=501), 2.1)
    r.engine.tcp.sort("B")
    assert [p.a.sport for p in r.pairs] == [2, 3, 4, 1]
    assert r.pairs[3].closed  # sorting does not flush
    r.send(tcp(A, 1, B, 80, SYN), 3.0)  # reuse still finds the closed slot
    r.engine.tcp.sort("P")
    assert [p.slot for p in r.pairs] == [0, 1, 2, 3]
    assert max(r.pairs[0].a.packets, r.pairs[0].b.packets) >= max(r.pairs[3].a.packets,
                                                                    r.pairs[3].b.packets)


def test_rule10_sort_key_dialog_p_b_or_cancel():
    st = ViewState()
    assert handle_key(st, "S", 10, 5, 0, 5) is None and st.sort_pending
    act = handle_key(st, "b", 10, 5, 0, 5)
    assert act.kind == "sort" and act.by == "B" and not st.sort_pending
    handle_key(st, "S", 10, 5, 0, 5)
    assert handle_key(st, "x", 10, 5, 0, 5) is None  # any other key cancels, does not quit
    assert not st.quit and not st.sort_pending
    handle_key(st, "S", 10, 5, 0, 5)
    assert handle_key(st, "P", 10, 5, 0, 5).by == "P" and not st.paused


# ---- rule 11 ---------------------------------------------------------------------------------

def test_rule11_m_cycles_columns_mac_view_only_with_option():
    st = ViewState()
    seen = []
    for _ in range(3):
        handle_key(st, "M", 0, 1, 0, 1)
        seen.append(st.columns)
    assert seen == [VIEW_SIZES, VIEW_COUNTS, VIEW_SIZES]
    st = ViewState(mac_option=True)
    seen = []
    for _ in range(3):
        handle_key(st, "m", 0, 1, 0, 1)
        seen.append(st.columns)
    assert seen == [VIEW_MAC, VIEW_SIZES, VIEW_COUNTS]


def test_rule11_size_window_and_mac_columns_hold_last_packet_values():
    r = Run()
    handshake(r, 1.0)
    r.send(tcp(A, 1234, B, 80, ACK | PSH, seq=101, ack=501, data=b"z" * 60, win=4321), 2.0)
    e = r.pairs[0].a
    assert (e.last_size, e.window, e.smac) == (100, 4321, MAC1)


# ---- rule 12 ---------------------------------------------------------------------------------

def test_rule12_rate_is_average_of_last_5_seconds():
    fr = FlowRate()
    total = 0
    for sec in range(10, 21):
        total += 1000
        fr.sample("k", sec + 0.5, total)
    assert fr.bytes_per_second() == 1000.0  # 5000 bytes over the last 5 s
    assert fmt_rate(fr.bytes_per_second(), kbytes=False) == "     8.00 kbps"
    assert fmt_rate(fr.bytes_per_second(), kbytes=True) == "     0.98 kBps"
    fr.sample("other", 21.0, 50)  # a new highlighted entry starts over
    assert fr.bytes_per_second() == 0.0


def test_rule12_rate_ramps_up_over_the_first_seconds():
    fr = FlowRate()
    fr.sample("k", 0.0, 0)
    fr.sample("k", 1.0, 1000)
    assert fr.bytes_per_second() == 200.0  # 1000 bytes / 5 s, as iptraf-ng ramps up


# ---- rule 13 ---------------------------------------------------------------------------------

def test_rule13_lower_window_lines_in_iptraf_ng_formats():
    r = Run(lower_lines=3)
    udp = struct.pack("!HHHH", 59240, 5353, 58, 0) + b"q" * 50
    r.send(eth(ipv4("10.88.0.1", "10.88.0.2", 17, udp)), 1.0, "cva")
    icmp = struct.pack("!BBHI", 8, 0, 0, 0) + b"p" * 56
    r.send(eth(ipv4(A, B, 1, icmp)), 1.1, "cva")
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x800, 6, 4, 1, MAC1, ip4(A), b"\0" * 6, ip4(B))
    r.send(eth(arp, 0x0806, dmac=b"\xff" * 6), 1.2, "cva")
    r.send(eth(ipv4(A, B, 253, b"\0" * 10)), 1.3, "cva")
    lines = list(r.engine.other.lines)
    assert len(lines) == 3  # capped, oldest dropped
    opts = LineOptions()
    assert [screen_line(x, opts) for x in lines] == [
        "ICMP echo req (84 bytes) from 10.0.0.1 to 10.0.0.2 on cva",
        "ARP request for 10.0.0.2 (28 bytes) from 02:00:00:00:00:01 to ff:ff:ff:ff:ff:ff on cva",
        "IP protocol 253 (30 bytes) from 10.0.0.1 to 10.0.0.2 on cva",
    ]
    assert log_line(lines[1], opts) == (
        "ARP request for 10.0.0.2; cva; 28 bytes; from 02:00:00:00:00:01 to ff:ff:ff:ff:ff:ff ")
    assert log_line(lines[2], opts) == "IP protocol; cva; 30 bytes; from 10.0.0.1 to 10.0.0.2"
    assert r.engine.other.line_count == 4


def test_rule13_udp_line_with_ports_and_icmp_unreachable_extra():
    r = Run()
    udp = struct.pack("!HHHH", 59240, 5353, 58, 0) + b"q" * 50
    r.send(eth(ipv4("10.88.0.1", "10.88.0.2", 17, udp)), 1.0, "cva")
    icmp = struct.pack("!BBHI", 3, 3, 0, 0) + ipv4(B, A, 17, udp)[:28]
    r.send(eth(ipv4(B, A, 1, icmp)), 1.1, "cva")
    opts = LineOptions()
    got = [screen_line(x, opts) for x in r.engine.other.lines]
    assert got[0] == "UDP (78 bytes) from 10.88.0.1:59240 to 10.88.0.2:5353 on cva"
    assert got[1] == "ICMP dest unrch (port) (56 bytes) from 10.0.0.2 to 10.0.0.1 on cva"
    assert log_line(r.engine.other.lines[1], opts) == (
        "ICMP; cva; 56 bytes; from 10.0.0.2 to 10.0.0.1; dest unrch (port)")


def test_rule20_tcp_log_events_in_iptraf_ng_formats():
    r = Run(log_events=True)
    handshake(r, 10.0)
    close(r, 12.0)
    opts = LineOptions()
    msgs = [tcp_event_log(ev, opts) for ev in r.engine.tcp.events]
    assert msgs[0] == "TCP; eth0; 40 bytes; from 10.0.0.1:1234 to 10.0.0.2:80; first packet (SYN)"
    assert msgs[1] == "TCP; eth0; 40 bytes; from 10.0.0.2:80 to 10.0.0.1:1234; first packet (SYN)"
    assert msgs[2] == ("TCP; eth0; 40 bytes; from 10.0.0.1:1234 to 10.0.0.2:80; FIN sent; "
                       "3 packets, 120 bytes, avg flow rate      0.48 kbps")
    assert msgs[3] == "TCP; eth0; 40 bytes; from 10.0.0.2:80 to 10.0.0.1:1234; FIN acknowleged"
    assert len(msgs) == 6


# ---- rule 14 ---------------------------------------------------------------------------------

def test_rule14_summary_counts_ip_levels_without_link_headers_non_ip_with_them():
    r = Run()
    handshake(r, 1.0)
    udp = struct.pack("!HHHH", 1, 2, 18, 0) + b"u" * 10
    r.send(eth(ipv4(A, B, 17, udp)), 2.0)
    r.send(eth(ipv4(A, B, 1, struct.pack("!BBHI", 8, 0, 0, 0))), 2.1)
    r.send(eth(ipv4(A, B, 47, b"g" * 12)), 2.2)
    r.send(eth(b"\x00" * 46, 0x88CC), 2.3)  # LLDP: non-IP, 60-byte frame
    s = r.engine.summary.to_json()
    assert s["tcp"] == {"packets": 3, "bytes": 120}
    assert s["udp"] == {"packets": 1, "bytes": 38}
    assert s["icmp"] == {"packets": 1, "bytes": 28}
    assert s["other_ip"] == {"packets": 1, "bytes": 32}
    assert s["ip"] == {"packets": 6, "bytes": 218}
    assert s["non_ip"] == {"packets": 1, "bytes": 60}
    assert s["frames"] == 7 and s["malformed"] == 0


# ---- rule 15 ---------------------------------------------------------------------------------

def test_rule15_keys_move_bar_switch_window_quit_pause_help():
    st = ViewState()
    for k in ("DOWN", "DOWN", "DOWN"):
        handle_key(st, k, tcp_rows=10, tcp_page=4, lower_lines=20, lower_page=5)
    assert (st.bar, st.top) == (3, 0)
    handle_key(st, "DOWN", 10, 4, 20, 5)
    assert (st.bar, st.top) == (4, 2)  # scrolled to keep the bar visible, by a whole pair
    handle_key(st, "END", 10, 4, 20, 5)
    assert (st.bar, st.top) == (9, 6)
    handle_key(st, "HOME", 10, 4, 20, 5)
    assert (st.bar, st.top) == (0, 0)
    handle_key(st, " ", 10, 4, 20, 5)
    assert st.bar == 4
    handle_key(st, "-", 10, 4, 20, 5)
    assert st.bar == 0
    handle_key(st, "TAB", 10, 4, 20, 5)
    assert st.active == "lower"
    handle_key(st, "UP", 10, 4, 20, 5)
    assert st.lower_top == 14  # left the bottom: stops following new lines
    handle_key(st, "END", 10, 4, 20, 5)
    assert st.lower_top is None
    handle_key(st, "RIGHT", 10, 4, 20, 5)
    assert st.lower_hoff == 60
    handle_key(st, "LEFT", 10, 4, 20, 5)
    assert st.lower_hoff == 0
    handle_key(st, "w", 10, 4, 20, 5)
    assert st.active == "tcp"
    assert handle_key(st, "F", 10, 4, 20, 5).kind == "flush"
    assert handle_key(st, "CTRL_L", 10, 4, 20, 5).kind == "redraw"
    handle_key(st, "P", 10, 4, 20, 5)
    assert st.paused
    handle_key(st, "?", 10, 4, 20, 5)
    assert st.help
    handle_key(st, "q", 10, 4, 20, 5)  # closes help only
    assert not st.help and not st.quit
    for key in ("q", "X", "ESC", "CTRL_X"):
        st = ViewState()
        handle_key(st, key, 0, 1, 0, 1)
        assert st.quit, key


# ---- rule 20 ---------------------------------------------------------------------------------

def test_rule20_log_file_from_a_replay(tmp_path):
    """-L writes iptraf-ng's lines: `<ctime>; <message>`, started/stopped markers, TCP events
    and lower-window lines, flushed per line."""
    from iptraf_mp.app.cli import main

    from .conftest import FIXTURES

    log = tmp_path / "ip.log"
    assert main(["-r", str(FIXTURES / "handshake_close.pcap"), "-B", "--no-db", "-L",
                 str(log)]) == 0
    lines = log.read_text().splitlines()
    msgs = [ln.split("; ", 1)[1] for ln in lines if "; " in ln]
    assert msgs[0] == "******** IP traffic monitor started ********"
    assert msgs[-1] == "******** IP traffic monitor stopped ********"
    assert lines[-1] != "" or log.read_text().endswith("\n\n")
    first = [m for m in msgs if m.endswith("first packet (SYN)")]
    assert len(first) == 2  # once per direction, the SYN-ACK says "(SYN)" too
    fin = [m for m in msgs if "; FIN sent; " in m]
    assert len(fin) == 2 and all("avg flow rate" in m for m in fin)
    assert sum(m.endswith("; FIN acknowleged") for m in msgs) == 2
    for ln in lines:
        if ln:
            stamp = ln.split("; ", 1)[0]
            assert len(stamp.split()) == 5  # ctime(): "Thu Nov 26 03:19:34 2026"
