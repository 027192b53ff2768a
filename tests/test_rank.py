"""The TCP window's radix sort against Python's stable sort (make test runs it on the
compiled build and on the interpreted source)."""

from __future__ import annotations

import random
from array import array

import pytest

from iptraf_mp.core.rank import descending_order, sort_rows
from iptraf_mp.core.tcptable import Entry, Pair, SlotList


def reference(keys: list[int]) -> list[int]:
    # what SlotList.sort did before: list.sort(reverse=True) is stable
    order = list(range(len(keys)))
    order.sort(key=lambda i: keys[i], reverse=True)
    return order


@pytest.mark.parametrize("top", [0, 1, 255, 65535, 65536, 1 << 32, 1 << 48, (1 << 64) - 1])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 100, 3000])
def test_order_is_pythons_stable_descending_sort(n: int, top: int) -> None:
    rng = random.Random(n * 31 + top)
    # few distinct values (many ties) and values that differ only in one 16-bit digit
    pool = [rng.randint(0, top) for _ in range(max(1, n // 10))] + [top, 0]
    keys = [rng.choice(pool) for _ in range(n)]
    assert list(descending_order(array("Q", keys))) == reference(keys)


def test_each_digit_decides_when_the_higher_ones_tie() -> None:
    keys = [(d << s) | low for s in (0, 16, 32, 48) for d in (1, 3, 2) for low in (0, 5)]
    keys = [k & ((1 << 64) - 1) for k in keys] * 2
    random.Random(1).shuffle(keys)
    assert list(descending_order(array("Q", keys))) == reference(keys)


def pair(i: int, a_packets: int, b_packets: int) -> Pair:
    ea = Entry(b"\x0a\x00\x00\x01", 1000 + i, b"\x0a\x00\x00\x02", 80, packets=a_packets,
               bytes=a_packets * 100 + i % 7)
    eb = Entry(b"\x0a\x00\x00\x02", 80, b"\x0a\x00\x00\x01", 1000 + i, packets=b_packets,
               bytes=b_packets * 60)
    return Pair(i + 1, "eth0", ea, eb, False, 0.0, 0.0)


@pytest.mark.parametrize("by", ["P", "B"])
def test_slotlist_sort_matches_the_key_sort_and_renumbers_rows(by: str) -> None:
    rng = random.Random(3)
    slots = SlotList()
    pairs = [pair(i, rng.randint(0, 20), rng.randint(0, 20)) for i in range(2000)]
    for p in pairs:
        slots.add(p)
    if by == "P":
        def key(p: Pair) -> int:
            return max(p.a.packets, p.b.packets)
    else:
        def key(p: Pair) -> int:
            return max(p.a.bytes, p.b.bytes)
    expected = sorted(pairs, key=key, reverse=True)
    slots.sort(by)
    assert [p.id for p in slots.slots] == [p.id for p in expected]
    assert [p.slot for p in slots.slots] == list(range(len(pairs)))


def test_sort_rows_of_nothing() -> None:
    assert sort_rows([], True) == []
