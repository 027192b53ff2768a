"""JSON-lines records of TCP direction entries and the summary (the `--json` output)."""

from __future__ import annotations

import json
from typing import IO

from .model import fmt_addr, fmt_flags, fmt_mac
from .tcptable import Entry, Pair, entry_state

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


def pair_records(pair: Pair) -> tuple[dict, dict]:
    return entry_record(pair, pair.a), entry_record(pair, pair.b)


class JsonWriter:
    """Writes records as they come; flushed per batch so a crash loses at most one batch."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def pairs(self, pairs: list[Pair]) -> None:
        if not pairs:
            return
        w = self.out.write
        for p in pairs:
            for rec in pair_records(p):
                w(_encode(rec) + "\n")

    def record(self, rec: dict) -> None:
        self.out.write(_encode(rec) + "\n")

    def flush(self) -> None:
        self.out.flush()
