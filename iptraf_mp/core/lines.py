"""Text of the lower window's lines and of the log (iptraf-ng behaviour sections 2 and 6).

Names and numbers follow iptraf-ng so that existing log parsers keep working (rule 20).
Everything here is made only for lines someone reads, never per packet on the hot path.

Rule numbers cited here are docs/decisions.md's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .engine import Summary
from .model import FRAG_LATER, K_ICMP, K_NON_IP, K_UDP, fmt_addr, fmt_mac
from .othertable import OtherLine
from .tcptable import TcpEvent
from .text import safe_text

# Debian netbase's /etc/protocols aliases, built in so that output does not depend on the host.
PROTO_ALIASES = {
    0: "IP", 2: "IGMP", 3: "GGP", 4: "IP-ENCAP", 5: "ST", 8: "EGP", 9: "IGP", 12: "PUP",
    20: "HMP", 22: "XNS-IDP", 27: "RDP", 29: "ISO-TP4", 33: "DCCP", 36: "XTP", 37: "DDP",
    38: "IDPR-CMTP", 41: "IPv6", 43: "IPv6-Route", 44: "IPv6-Frag", 45: "IDRP", 46: "RSVP",
    47: "GRE", 50: "IPSEC-ESP", 51: "IPSEC-AH", 57: "SKIP", 59: "IPv6-NoNxt",
    60: "IPv6-Opts", 73: "RSPF", 81: "VMTP", 88: "EIGRP", 93: "AX.25", 94: "IPIP",
    97: "ETHERIP", 98: "ENCAP", 103: "PIM", 108: "IPCOMP", 112: "VRRP", 115: "L2TP",
    124: "ISIS", 132: "SCTP", 133: "FC", 135: "Mobility-Header", 136: "UDPLite",
    137: "MPLS-in-IP", 139: "HIP", 140: "Shim6", 141: "WESP", 142: "ROHC", 143: "Ethernet",
}
# iptraf-ng's own names win over the aliases.
PROTO_NAMES = {17: "UDP", 1: "ICMP", 58: "ICMPv6", 9: "IGP", 2: "IGMP", 88: "IGRP", 47: "GRE",
               41: "IPv6 tun"}

ICMP_DESC = {0: "echo rply", 3: "dest unrch", 4: "src qnch", 5: "redirct", 8: "echo req",
             11: "time excd", 12: "param prob", 13: "timestmp req", 15: "info req",
             16: "info rep", 17: "addr mask req", 18: "addr mask rep"}
ICMP_UNREACH = ("ntwk", "host", "proto", "port", "DF set", "src rte fail", "net unkn",
                "host unkn", "src isltd", "net comm denied", "host comm denied",
                "net unrch for TOS", "host unrch for TOS", "pkt fltrd", "prec violtn",
                "prec cutoff")
ICMP6_DESC = {1: "dest unrch", 2: "pkt too big", 3: "time exceeded", 4: "param prob",
              128: "echo req", 129: "echo rply", 130: "MLD query", 131: "MLD report",
              132: "MLD done", 133: "router sol", 134: "router adv", 135: "neigh sol",
              136: "neigh adv", 137: "redirect", 138: "router renum", 139: "node info qry",
              140: "node info rep", 141: "inv neigh sol", 142: "inv neigh adv",
              143: "MLDv2 report", 144: "home agt req", 145: "home agt rep",
              146: "mob pfx sol", 147: "mob pfx adv", 148: "cert path sol",
              149: "cert path adv", 151: "mcast rtr adv", 152: "mcast rtr sol",
              153: "mcast rtr term", 155: "RPL control"}
ICMP6_UNREACH = ("no route", "admin", "not beyondsp", "unreach addr", "no port")
OSPF_TYPES = {1: "hlo", 2: "DB desc", 3: "LSR", 4: "LSU", 5: "LSA"}

@dataclass(slots=True)
class LineOptions:
    show_mac: bool = False  # rule 19 "source MAC" option
    kbytes: bool = False  # activity mode kB/s instead of kbit/s
    resolve: Callable[[bytes], str] | None = None  # address -> name (already cleaned)
    services: Callable[[int, str], str] | None = None  # port, proto -> service name


def host(addr: bytes, opts: LineOptions) -> str:
    if opts.resolve is not None:
        return safe_text(opts.resolve(addr))
    return fmt_addr(addr)


def port_text(port: int, proto: str, opts: LineOptions) -> str:
    if opts.services is not None:
        return safe_text(opts.services(port, proto))[:10]
    return str(port)


def proto_name(proto: int, ipver: int) -> str | None:
    if proto == 89:
        return "OSPFv2" if ipver == 4 else "OSPFv3"
    return PROTO_NAMES.get(proto) or PROTO_ALIASES.get(proto)


def icmp_desc(ipver: int, itype: int, icode: int) -> tuple[str, str | None]:
    """(description, extra) of an ICMP/ICMPv6 message, iptraf-ng's abbreviations."""
    if ipver == 4:
        desc = ICMP_DESC.get(itype, "bad/unkn")
        extra = ICMP_UNREACH[icode] if itype == 3 and icode < len(ICMP_UNREACH) else None
    else:
        desc = ICMP6_DESC.get(itype, "bad/unkn")
        extra = ICMP6_UNREACH[icode] if itype == 1 and icode < len(ICMP6_UNREACH) else None
    return desc, extra


def _ip_parts(line: OtherLine, opts: LineOptions) -> tuple[str, str | None, str | None, str, str]:
    """(name, desc, extra, source, destination) of an IP line."""
    d = line.d
    name = proto_name(d.proto, d.ipver)
    desc = extra = None
    if d.frag == FRAG_LATER:
        desc = "fragment"
    elif d.kind == K_ICMP and d.info:
        desc, extra = icmp_desc(d.ipver, d.info[0], d.info[1])
    elif d.proto == 89 and d.info:
        _tag, ptype, area, rid = d.info
        desc = OSPF_TYPES.get(ptype, "bad/unkn")
        extra = f"a={area} r={fmt_addr(rid)}"
    src = host(d.src, opts)[:40]
    dst = host(d.dst, opts)[:40]
    if d.kind == K_UDP and d.frag != FRAG_LATER:
        src += ":" + port_text(d.sport, "udp", opts)
        dst += ":" + port_text(d.dport, "udp", opts)
    return name or "IP protocol", desc, extra, src, dst


def _non_ip_desc(line: OtherLine) -> str:
    d = line.d
    info = d.info
    if info is None:
        return "Non-IP"
    link, what, a, b, _l3 = info
    if what in ("arp", "rarp") and b is not None:
        sha, spa, tha, tpa = b
        if what == "arp":
            if a == 2:
                return f"ARP reply from {fmt_addr(spa)}"
            return f"ARP request for {fmt_addr(tpa)}"
        if a == 4:
            return f"RARP reply from {fmt_mac(tha) or '?'}"
        return f"RARP request for {fmt_mac(tha) or '?'}"
    if what == "other" and isinstance(a, int) and a >= 0:
        return f"Non-IP (0x{a:04x})"
    return f"Non-IP ({safe_text(str(link if what == 'other' else what))})"


def screen_line(line: OtherLine, opts: LineOptions) -> str:
    """The lower window's text for one line."""
    d = line.d
    if d.kind == K_NON_IP:
        text = f"{_non_ip_desc(line)} ({d.info[4] if d.info else d.iplen} bytes)"
        if d.smac is not None and d.dmac is not None:
            text += f" from {fmt_mac(d.smac)} to {fmt_mac(d.dmac)}"
        return f"{text} on {line.iface}"
    name, desc, extra, src, dst = _ip_parts(line, opts)
    parts = [name]
    if desc:
        parts.append(desc)
    if extra:
        parts.append(f"({extra})")
    if proto_name(d.proto, d.ipver) is None:
        parts.append(str(d.proto))
    parts.append(f"({d.iplen} bytes) from {src} to {dst}")
    text = " ".join(parts)
    if opts.show_mac and d.smac is not None:
        text += f" (src HWaddr {fmt_mac(d.smac)})"
    return f"{text} on {line.iface}"


def log_line(line: OtherLine, opts: LineOptions) -> str:
    """The log message (without the time prefix) for one lower-window line."""
    d = line.d
    if d.kind == K_NON_IP:
        size = d.info[4] if d.info else d.iplen
        return (f"{_non_ip_desc(line)}; {line.iface}; {size} bytes; "
                f"from {fmt_mac(d.smac) or 'N/A'} to {fmt_mac(d.dmac) or 'N/A'} ")
    name, desc, extra, src, dst = _ip_parts(line, opts)
    text = f"{name}; {line.iface}; {d.iplen} bytes;"
    if opts.show_mac and d.smac is not None:
        text += f" source MAC address {fmt_mac(d.smac)};"
    text += f" from {src} to {dst}"
    if desc:
        text += f"; {desc}"
    if extra:
        text += f" ({extra})"
    return text


def fmt_rate(bytes_per_s: float, kbytes: bool) -> str:
    """iptraf-ng's `%9.2f` rate with its unit."""
    if kbytes:
        if bytes_per_s >= 99 * 1024 * 1024:
            return f"{bytes_per_s / 1024 / 1024:9.2f} MBps"
        return f"{bytes_per_s / 1024:9.2f} kBps"
    if bytes_per_s >= 1e8:
        return f"{bytes_per_s * 8 / 1e6:9.2f} Mbps"
    return f"{bytes_per_s * 8 / 1000:9.2f} kbps"


def tcp_event_log(ev: TcpEvent, opts: LineOptions) -> str:
    """The log message (without the time prefix) for one TCP event."""
    src = f"{host(ev.src, opts)}:{port_text(ev.sport, 'tcp', opts)}"
    dst = f"{host(ev.dst, opts)}:{port_text(ev.dport, 'tcp', opts)}"
    # iptraf-ng: bcount / max(1, time(NULL) - conn_starttime), both whole seconds and an
    # integer division; with packet times (ts - rate_age is first_seen exactly: both are
    # close doubles, so the subtractions are exact)
    age = max(1, int(ev.ts) - int(ev.ts - ev.rate_age))
    rate = fmt_rate(ev.bytes // age, opts.kbytes)
    if ev.kind == "timeout":
        orate = fmt_rate(ev.opp_bytes // age, opts.kbytes)
        return (f"TCP; Connection {src} to {dst} timed out, {ev.packets} packets, {ev.bytes} "
                f"bytes, avg flow rate {rate}; opposite direction {ev.opp_packets} packets, "
                f"{ev.opp_bytes} bytes, avg flow rate {orate}")
    if ev.kind == "mac":
        return (f"TCP; {ev.iface}; from {src} to {dst}: new source MAC address "
                f"{fmt_mac(ev.mac)} (previously {fmt_mac(ev.old_mac)})")
    mac = f" (source MAC addr {fmt_mac(ev.mac)})" if opts.show_mac and ev.mac else ""
    head = f"TCP; {ev.iface}; {ev.size} bytes; from {src} to {dst}{mac}; "
    if ev.kind == "first":
        return head + ("first packet (SYN)" if ev.syn else "first packet")
    if ev.kind == "fin":
        return head + f"FIN sent; {ev.packets} packets, {ev.bytes} bytes, avg flow rate {rate}"
    if ev.kind == "finack":
        return head + "FIN acknowleged"  # sic: iptraf-ng's spelling, which parsers expect
    if ev.kind == "reset":
        orate = fmt_rate(ev.opp_bytes // age, opts.kbytes)
        return head + (f"Connection reset; {ev.packets} packets, {ev.bytes} bytes, avg flow "
                       f"rate {rate}; opposite direction {ev.opp_packets} packets, "
                       f"{ev.opp_bytes} bytes; avg flow rate {orate}")
    return head + ev.kind


def log_time(ts: float) -> str:
    """ctime() without the newline, as iptraf-ng prefixes every log line."""
    return time.ctime(ts)


def table_full(s: Summary) -> str:
    """The warning once a table's limit is reached, or "" (the screen shows it too)."""
    parts = []
    if s.untracked:
        parts.append(f"TCP table full (--max-connections): {s.untracked} connections "
                     f"not tracked")
    if s.evicted_flows:
        parts.append(f"flow table full (--max-flows): {s.evicted_flows} flows ended early")
    return "; ".join(parts)
