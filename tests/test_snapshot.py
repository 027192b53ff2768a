"""The checkpoint's copy of the TCP table (core/snapshot.py) against attrgetter on the same
records, field by field (make test runs it on the compiled build and on the source)."""

from __future__ import annotations

import random
from operator import attrgetter

from iptraf_mp.core.snapshot import ENTRY_FIELD_NAMES, PAIR_FIELD_NAMES, pair_snapshots
from iptraf_mp.core.tcptable import Entry, Pair


def pairs(n: int) -> list[Pair]:
    rng = random.Random(9)
    out = []
    for i in range(n):
        a = Entry(rng.randbytes(4), rng.randrange(65536), rng.randbytes(16 if i % 7 == 0 else 4),
                  rng.randrange(65536), packets=rng.randrange(1 << 40),
                  bytes=rng.randrange(1 << 50), flags=rng.randrange(256),
                  smac=None if i % 5 == 0 else rng.randbytes(6), first_seen=rng.random() * 2e9,
                  last_seen=rng.random() * 2e9)
        a.finsent, a.reset, a.last_size, a.window = i % 3, i % 4 == 0, i % 1500, i % 65536
        b = Entry(a.dst, a.dport, a.src, a.sport, packets=i % 3)
        p = Pair(i + 1, f"eth{i % 3}", a, b, i % 2 == 0, rng.random() * 2e9, rng.random() * 2e9)
        p.end, p.timed_out = ("OPEN", "FIN", "RESET", "TIMEOUT")[i % 4], i % 6 == 0
        out.append(p)
    return out


def test_snapshots_are_the_records_fields_in_their_order() -> None:
    ps = pairs(500)
    pf, ef = attrgetter(*PAIR_FIELD_NAMES), attrgetter(*ENTRY_FIELD_NAMES)
    for retired in (False, True):
        got = pair_snapshots(ps, retired)
        assert got == [(pf(p), ef(p.a), ef(p.b), retired) for p in ps]
        # the same types too (a bool stays a bool: the writer binds them as ints)
        assert [type(v) for t in got[:20] for part in t[:3] for v in part] == \
            [type(v) for p in ps[:20] for part in (pf(p), ef(p.a), ef(p.b)) for v in part]
    assert pair_snapshots([], True) == []
