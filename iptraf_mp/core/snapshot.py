"""What an output copies of the TCP table at a checkpoint: each pair's fields as plain
tuples, taken in the monitor's thread and handed to a writer thread that shares nothing
with it.

A checkpoint of 100k changed connections copies 3.5 million values while the monitor waits:
with `operator.attrgetter` each is a generic attribute lookup on the record (~50 ns);
compiled, this reads the C fields of the record directly. Interpreted, the same code is the
reference twin (tests/test_snapshot.py compares the two with attrgetter's answer).
"""

from __future__ import annotations

from typing import TypeAlias

import cython

from .tcptable import Entry, Pair

# The order of the values in each tuple (the store's writer unpacks them so)
PAIR_FIELD_NAMES = ("id", "iface", "partial", "first_seen", "last_seen", "end", "timed_out")
ENTRY_FIELD_NAMES = ("src", "sport", "dst", "dport", "packets", "bytes", "flags", "smac",
                     "finsent", "reset", "first_seen", "last_seen", "last_size", "window")
PairFields: TypeAlias = tuple[int, str, bool, float, float, str, bool]
EntryFields: TypeAlias = tuple[bytes, int, bytes, int, int, int, int, bytes | None, int, bool,
                               float, float, int, int]
# a pair, its two directions, and whether it has left the engine (its row is final)
PairSnapshot: TypeAlias = tuple[PairFields, EntryFields, EntryFields, bool]


@cython.cfunc
def _entry(e: Entry) -> EntryFields:
    return (e.src, e.sport, e.dst, e.dport, e.packets, e.bytes, e.flags, e.smac, e.finsent,
            e.reset, e.first_seen, e.last_seen, e.last_size, e.window)


def pair_snapshots(pairs: list[Pair], retired: bool) -> list[PairSnapshot]:
    """Each of `pairs` as (PAIR_FIELD_NAMES values, ENTRY_FIELD_NAMES values of a, of b,
    `retired`)."""
    out: list[PairSnapshot] = []
    p: Pair
    for p in pairs:
        out.append(((p.id, p.iface, p.partial, p.first_seen, p.last_seen, p.end, p.timed_out),
                    _entry(p.a), _entry(p.b), retired))
    return out
