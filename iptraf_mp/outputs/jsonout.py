"""JSON-lines records of TCP direction entries and the summary (the `--json` output)."""

from __future__ import annotations

import json
from typing import IO

from iptraf_mp.core.jsonline import pairs_text
from iptraf_mp.core.model import fmt_addr, fmt_flags, fmt_mac
from iptraf_mp.core.tcptable import Entry, Pair, entry_state

_CHUNK = 1024  # pairs whose records are made and written together

# One encoder for every record: json.dumps() with separators builds a new one per call.
_encode = json.JSONEncoder(separators=(",", ":")).encode


def entry_record(pair: Pair, e: Entry) -> dict:
    return {
        "type": "tcp", "pair": pair.id, "iface": pair.iface,
        "src": fmt_addr(e.src), "sport": e.sport, "dst": fmt_addr(e.dst), "dport": e.dport,
        "packets": e.packets, "bytes": e.bytes, "flags": fmt_flags(e.flags),
        "state": entry_state(pair, e), "partial": pair.partial,
        "first_seen": round(e.first_seen, 6) if e.packets else None,
        "last_seen": round(e.last_seen, 6) if e.packets else None,
        "last_size": e.last_size, "window": e.window, "mac": fmt_mac(e.smac),
        "end": pair.end,
    }


class JsonWriter:
    """Writes records as they come; flushed per batch so a crash loses at most one batch."""

    def __init__(self, out: IO[str], label: str = "--json") -> None:
        self.out = out
        self.label = label  # names this output in error messages
        self._ifaces: dict[str, bytes] = {}  # name -> its JSON string, ASCII bytes

    def pairs(self, pairs: list[Pair]) -> None:
        if not pairs:
            return
        ifaces = self._ifaces
        for iface in {p.iface for p in pairs}.difference(ifaces):
            ifaces[iface] = _encode(iface).encode("ascii")  # (the encoder escapes)
        # a few hundred kilobytes of text at a time: the end of a run retires every pair at
        # once, and a million pairs' text in one string would be ~700 MB
        for i in range(0, len(pairs), _CHUNK):
            self.out.write(pairs_text(pairs[i:i + _CHUNK], ifaces))

    def record(self, rec: dict) -> None:
        self.out.write(_encode(rec) + "\n")

    def flush(self) -> None:
        self.out.flush()
