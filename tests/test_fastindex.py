"""The fast path's connection index against a dict, on random insertions, lookups and
removals (make test runs it on the compiled build and on the interpreted source)."""

from __future__ import annotations

import random

from iptraf_mp.core.fastindex import FastIndex


def test_it_answers_as_a_dict_does() -> None:
    rng = random.Random(7)
    index = FastIndex()
    ref: dict[int, object] = {}
    # few distinct keys, many operations: collisions, removals and regrowth all happen
    keys = [rng.getrandbits(64) for _ in range(3000)] + [0, 1, 64, 128, (1 << 64) - 1]
    for step in range(60_000):
        k = rng.choice(keys)
        op = rng.random()
        if op < 0.45:
            obj = object()
            assert index.put(k, obj) == (k not in ref)
            ref.setdefault(k, obj)
        elif op < 0.75:
            assert index.remove(k) == (k in ref)
            ref.pop(k, None)
        else:
            assert index.get(k) is ref.get(k)
        if step % 5000 == 0:
            assert len(index) == len(ref)
            assert dict(index.items()) == ref
    assert len(index) == len(ref)
    for k in keys:
        assert index.get(k) is ref.get(k)


def test_keys_that_share_a_slot_stay_apart() -> None:
    index = FastIndex()
    same = [i << 20 for i in range(1, 40)]  # all land on slot 0 of the first table
    for k in same:
        assert index.put(k, k)
    for k in same[::2]:
        assert index.remove(k)
    for k in same:
        assert index.get(k) == (None if k in same[::2] else k)
    assert index.put(same[0], "again") and index.get(same[0]) == "again"
