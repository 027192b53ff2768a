"""Rule 10's sort of the TCP window, for a million rows within a frame.

`list.sort` with a key function on a million pairs spent 1-2.5 s in the key calls, the
boxed keys' comparisons and the slot renumbering: the console froze for that long when the
operator pressed S. Here the keys are machine integers and the order is an LSD radix sort
on 16-bit digits of the inverted key (ascending on the inverse is descending on the key):
each pass is a histogram and a scatter, stable by construction, so equal keys keep their
row order, as `list.sort(reverse=True)` keeps them. A pass whose digit is the same for
every key moves nothing and is skipped, so small counters cost one or two passes.

Interpreted, the same code runs on array.array (slowly: the twin that a test compares with
Python's own sort). Typed views of the arrays are annotated as Cython reads them
(`cython.ulonglong[::1]`), which mypy cannot read: pyproject.toml leaves this module out.
"""

from __future__ import annotations

from array import array

import cython

from .tcptable import Pair

_DIGIT_BITS = cython.declare(cython.int, 16)
_BUCKETS = cython.declare(cython.Py_ssize_t, 1 << 16)
_ALL_ONES = 0xFFFFFFFFFFFFFFFF


def sort_rows(rows: list[Pair], by_packets: bool) -> list[Pair]:
    """`rows` (in place, and returned) from the largest to the smallest key (the larger
    direction's packets, or bytes), equal keys in their row order; each pair told its new
    row (`slot`)."""
    n: cython.Py_ssize_t = len(rows)
    keys = array("Q", [0]) * n
    _keys(rows, keys, by_packets, n)
    order = descending_order(keys)
    _reorder(rows, order, keys, n)
    return rows


@cython.cfunc
def _keys(rows: list[Pair], keys: cython.ulonglong[::1], by_packets: cython.bint,
          n: cython.Py_ssize_t) -> cython.void:
    i: cython.Py_ssize_t
    p: Pair
    q: cython.p_void
    if cython.compiled:
        # the pairs read through borrowed pointers (rank.pxd): a reference taken would
        # write each pair's count, dirtying a million cache lines only to read them
        for i in range(n):
            q = _borrowed_item(rows, i)  # noqa: F821
            keys[i] = _packets_key(q) if by_packets else _bytes_key(q)  # noqa: F821
    else:
        for i in range(n):
            p = rows[i]
            if by_packets:
                keys[i] = p.a.packets if p.a.packets >= p.b.packets else p.b.packets
            else:
                keys[i] = p.a.bytes if p.a.bytes >= p.b.bytes else p.b.bytes


@cython.cfunc
def _reorder(rows: list[Pair], order: cython.longlong[::1], where: cython.ulonglong[::1],
             n: cython.Py_ssize_t) -> cython.void:
    """`rows` rearranged in place so that row j holds the old `rows[order[j]]`, each pair
    told its row. At a million rows each pair touched is a cache (and TLB) miss, so each is
    touched once, in its old order. Compiled: each row's new place, inverted into `where`
    (the keys' buffer, no longer needed), then the list's items moved as pointers (the same
    objects: no reference counts change, nothing is freed)."""
    i: cython.Py_ssize_t
    j: cython.Py_ssize_t
    q: cython.p_void
    if cython.compiled:
        for j in range(n):
            where[order[j]] = j
        # _borrowed_item, _set_slot and _set_borrowed_item are rank.pxd's C helpers
        for i in range(n):
            j = where[i]
            q = _borrowed_item(rows, i)  # noqa: F821
            order[j] = cython.cast(cython.longlong, q)
            _set_slot(q, j)  # noqa: F821
        for j in range(n):
            _set_borrowed_item(rows, j, cython.cast(cython.p_void, order[j]))  # noqa: F821
    else:
        moved = [rows[k] for k in order]
        for i in range(n):
            moved[i].slot = i
        rows[:] = moved


def descending_order(keys: array[int]) -> array[int]:
    """The indexes of `keys` (an array of 'Q') from the largest key to the smallest, equal
    keys in index order: an array of 'q'. `keys` is scratch space afterwards."""
    n: cython.Py_ssize_t = len(keys)
    # inverted keys and their indexes, moved together pass by pass between two buffers
    # (the keys' own buffer is the second: a million rows' fresh buffers are page faults)
    keys_a, keys_b = array("Q", [0]) * n, keys
    order_a, order_b = array("q", [0]) * n, array("q", [0]) * n
    counts = array("q", [0]) * (4 * _BUCKETS)
    _invert(keys, keys_a, order_a, counts, n)
    if n < 2:
        return order_a
    digit: cython.int
    for digit in range(4):
        if _spread(keys_a, keys_b, order_a, order_b, counts, digit, n):
            keys_a, keys_b = keys_b, keys_a
            order_a, order_b = order_b, order_a
    return order_a


@cython.cfunc
def _invert(keys: cython.ulonglong[::1], inv: cython.ulonglong[::1],
            order: cython.longlong[::1], counts: cython.longlong[::1],
            n: cython.Py_ssize_t) -> cython.void:
    """The inverted keys into `inv`, the identity into `order`, and each 16-bit digit's
    histogram into `counts`."""
    i: cython.Py_ssize_t
    k: cython.ulonglong
    ones: cython.ulonglong = _ALL_ONES
    for i in range(n):
        k = keys[i] ^ ones
        inv[i] = k
        order[i] = i
        counts[k & 0xFFFF] += 1
        counts[_BUCKETS + ((k >> 16) & 0xFFFF)] += 1
        counts[2 * _BUCKETS + ((k >> 32) & 0xFFFF)] += 1
        counts[3 * _BUCKETS + (k >> 48)] += 1


@cython.cfunc
def _spread(src_k: cython.ulonglong[::1], dst_k: cython.ulonglong[::1],
            src_i: cython.longlong[::1], dst_i: cython.longlong[::1],
            counts: cython.longlong[::1], digit: cython.int,
            n: cython.Py_ssize_t) -> cython.int:
    """One stable pass on 16-bit digit `digit`, from the src buffers into the dst ones;
    0 (nothing moved) when every key has the same digit there."""
    base: cython.Py_ssize_t = digit * _BUCKETS
    shift: cython.int = digit * _DIGIT_BITS
    if counts[base + ((src_k[0] >> shift) & 0xFFFF)] == n:
        return 0
    i: cython.Py_ssize_t
    d: cython.Py_ssize_t
    k: cython.ulonglong
    pos: cython.longlong = 0
    c: cython.longlong
    for d in range(_BUCKETS):  # each digit's count -> where its run starts
        c = counts[base + d]
        counts[base + d] = pos
        pos += c
    for i in range(n):
        k = src_k[i]
        d = (k >> shift) & 0xFFFF
        pos = counts[base + d]
        counts[base + d] = pos + 1
        dst_k[pos] = k
        dst_i[pos] = src_i[i]
    return 1
