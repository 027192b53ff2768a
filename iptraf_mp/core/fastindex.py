"""The fast path's index of connections: a 64-bit key (frame.fast_key, already a mixed hash
of both endpoints and the interface) to its Pair, in an open-addressing table.

A Python dict keyed by an int made the fast path pay, per packet, an int object for the key,
its hash and a generic lookup: about 500 of the ~1,100 instructions the fast path spent on each
packet (callgrind, echo-connections x12). Here a lookup is a masked index into a C array of
keys and, on a match, one list item: the keys are compared as C integers and no object is
made. Interpreted, the same code runs on array.array and bytearray (the reference twin).
"""

from __future__ import annotations

from array import array

import cython

_EMPTY = cython.declare(cython.uchar, 0)
_FULL = cython.declare(cython.uchar, 1)
_GONE = cython.declare(cython.uchar, 2)  # a removed key: probing goes on past it
_MIN_CAPACITY = 64


@cython.cclass
class FastIndex:
    """key -> object; at most half full (then it doubles), so a probe is short."""

    def __init__(self, capacity: int = _MIN_CAPACITY) -> None:
        cap = _MIN_CAPACITY
        while cap < capacity:
            cap *= 2
        self._alloc(cap)

    def _alloc(self, cap: cython.Py_ssize_t) -> None:
        self.keys = array("Q", bytes(8 * cap))
        self.state = bytearray(cap)
        self.objs: list[object] = [None] * cap
        self.mask = cap - 1
        self.count = 0
        self.gone = 0

    def __len__(self) -> int:
        return self.count

    @cython.cfunc
    @cython.inline
    def _find(self, key: cython.ulonglong) -> cython.Py_ssize_t:
        """The slot that holds `key`, or -1."""
        i: cython.Py_ssize_t = key & self.mask
        st: cython.uchar
        while True:
            st = self.state[i]
            if st == _EMPTY:
                return -1
            if st == _FULL and self.keys[i] == key:
                return i
            i = (i + 1) & self.mask

    @cython.ccall
    def get(self, key: cython.ulonglong) -> object:
        """The object under `key`, or None."""
        i: cython.Py_ssize_t = self._find(key)
        return None if i < 0 else self.objs[i]

    @cython.ccall
    def put(self, key: cython.ulonglong, obj: object) -> cython.bint:
        """Add `obj` under `key` unless the key is there already (False then)."""
        if (self.count + self.gone + 1) * 2 > self.mask + 1:
            self._grow()
        i: cython.Py_ssize_t = key & self.mask
        free: cython.Py_ssize_t = -1
        st: cython.uchar
        while True:
            st = self.state[i]
            if st == _EMPTY:
                break
            if st == _FULL:
                if self.keys[i] == key:
                    return False
            elif free < 0:
                free = i
            i = (i + 1) & self.mask
        if free >= 0:
            i = free
            self.gone -= 1
        self.keys[i] = key
        self.state[i] = _FULL
        self.objs[i] = obj
        self.count += 1
        return True

    @cython.ccall
    def remove(self, key: cython.ulonglong) -> cython.bint:
        """Take `key` out; False if it was not there."""
        i: cython.Py_ssize_t = self._find(key)
        if i < 0:
            return False
        self.state[i] = _GONE
        self.objs[i] = None
        self.count -= 1
        self.gone += 1
        return True

    def _grow(self) -> None:
        keys, state, objs = self.keys, self.state, self.objs
        cap: cython.Py_ssize_t = self.mask + 1
        # doubles when live keys fill it; a table full of removed keys is rebuilt as it is
        self._alloc(cap * 2 if (self.count + 1) * 4 > cap else cap)
        j: cython.Py_ssize_t
        for j in range(cap):
            if state[j] == _FULL:
                self.put(keys[j], objs[j])

    def items(self) -> list[tuple[int, object]]:
        """Every (key, object), in no particular order (tests, diagnostics)."""
        return [(self.keys[j], self.objs[j]) for j in range(self.mask + 1)
                if self.state[j] == _FULL]
