"""The lower window: one line per non-TCP packet (DECISIONS.md rule 13), and the same traffic
aggregated into flows for the store and for IPFIX export.

Pure state; the line *text* is made in `lines.py`, only for the lines someone looks at.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .model import FRAG_FIRST, FRAG_LATER, K_ICMP, K_NON_IP, K_UDP, Decoded

LOWER_WINDOW_LINES = 512


@dataclass(slots=True)
class OtherLine:
    ts: float
    iface: str
    d: Decoded  # everything the line shows is in the decoded record


@dataclass(slots=True, eq=False)
class OtherFlow:
    """Non-TCP traffic of one (interface, protocol, endpoints, ports or ICMP type/code)."""

    iface: str
    kind: int
    proto: int  # IP protocol, or EtherType for non-IP
    src: bytes  # addresses, or MACs for non-IP frames
    dst: bytes
    sport: int  # ports; for ICMP the type and code
    dport: int
    packets: int = 0
    bytes: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0


@dataclass(slots=True)
class OtherTable:
    max_lines: int = LOWER_WINDOW_LINES
    keep_new: bool = False  # keep every line for the log as well, until drained
    lines: deque = field(default_factory=deque)
    new_lines: list[OtherLine] = field(default_factory=list)
    line_count: int = 0
    flows: dict[tuple, OtherFlow] = field(default_factory=dict)
    # TCP/UDP datagrams whose first fragment was seen: their later fragments get lines
    frag_firsts: dict[tuple, tuple] = field(default_factory=dict)
    dirty: set[OtherFlow] | None = None  # flows changed since the last publication, if wanted

    def __post_init__(self) -> None:
        self.lines = deque(maxlen=self.max_lines)

    def packet(self, ts: float, iface: str, d: Decoded) -> None:
        """One non-TCP packet (TCP, fragments included, belongs to the TCP table)."""
        flow = None
        show = True
        if d.frag == FRAG_LATER and d.kind == K_UDP:
            first = self.frag_firsts.get((d.src, d.dst, d.proto, d.ipid))
            if first is None:
                show = False  # iptraf-ng never shows fragments that precede their first one
            else:
                flow = first[1]
        if flow is None:
            flow = self._flow(ts, iface, d)
        flow.packets += 1
        flow.bytes += d.iplen
        flow.last_seen = ts
        if self.dirty is not None:
            self.dirty.add(flow)
        if d.frag == FRAG_FIRST and d.kind == K_UDP:
            if len(self.frag_firsts) >= 8192:
                del self.frag_firsts[next(iter(self.frag_firsts))]
            self.frag_firsts[(d.src, d.dst, d.proto, d.ipid)] = (ts, flow)
        if show:
            line = OtherLine(ts, iface, d)
            self.lines.append(line)
            self.line_count += 1
            if self.keep_new:
                self.new_lines.append(line)

    def _flow(self, ts: float, iface: str, d: Decoded) -> OtherFlow:
        kind = d.kind
        if kind == K_NON_IP:
            key = (iface, kind, d.proto, d.smac or b"", d.dmac or b"", 0, 0)
        elif kind == K_ICMP:
            t, c = (d.info[0], d.info[1]) if d.info else (0, 0)
            key = (iface, kind, d.proto, d.src, d.dst, t, c)
        else:
            key = (iface, kind, d.proto, d.src, d.dst, d.sport, d.dport)
        f = self.flows.get(key)
        if f is None:
            f = OtherFlow(iface, kind, key[2], key[3], key[4], key[5], key[6], first_seen=ts)
            self.flows[key] = f
        return f

    def tick(self, now: float) -> None:
        firsts = self.frag_firsts
        while firsts:  # oldest first: stop at the first young one, without copying
            fk = next(iter(firsts))
            if now - firsts[fk][0] < 60.0:
                break
            del firsts[fk]
