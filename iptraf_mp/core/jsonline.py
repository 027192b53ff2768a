"""One `--json` TCP record as text, made where the entry's fields are C fields (compiled):
a run writes two per connection, and as a Python function of the outputs layer each took
~11 us, 14 % of a one-process replay of echo-connections x12 (cProfile). The layout is
outputs/jsonout.py's `entry_record` encoded by the json module, byte for byte (a test
compares them on every corpus capture)."""

from __future__ import annotations

import cython

from .frame import copy_bytes
from .model import fmt_addr, fmt_flags
from .tcptable import Entry, Pair, entry_state

_FLAGS_ASCII = tuple(fmt_flags(i).encode("ascii") for i in range(256))
_HEX = b"0123456789abcdef"

@cython.ccall
def fmt_time(x: cython.double) -> str:
    """A packet time as the JSON writes it: `repr(round(x, 6))` (`_put_time`)."""
    out = bytearray(32)
    p: cython.p_uchar = out
    text: str = p[:_put_time(p, 0, x)].decode("ascii")
    return text


def pairs_text(pairs: list[Pair], names: dict[str, bytes]) -> str:
    """The records of both directions of each of `pairs`, each with its newline, as one
    text. `names` maps each pair's interface to its name already JSON-encoded (it comes
    from a capture file: hostile), as ASCII bytes (the encoder escapes the rest). Every
    other text field is ASCII the code made (addresses by inet_ntop, MACs in hex, flags,
    state and end from fixed words).

    Written byte by byte into one buffer (compiled, through a pointer) and decoded once: an
    f-string of two dozen parts, a string per number, cost ~12,000 instructions a record,
    and a buffer, a text and a write a record ~4,000 more."""
    size: cython.Py_ssize_t = 0
    pair: Pair
    iface_b: bytes
    for pair in pairs:
        iface_b = names[pair.iface]
        size += _record_size(pair.a, len(iface_b)) + _record_size(pair.b, len(iface_b))
    out = bytearray(size)
    p: cython.p_uchar = out
    n: cython.Py_ssize_t = 0
    for pair in pairs:
        iface_b = names[pair.iface]
        n = _put_record(p, n, pair, pair.a, iface_b)
        n = _put_record(p, n, pair, pair.b, iface_b)
    text: str = p[:n].decode("ascii")
    return text


@cython.cfunc
@cython.exceptval(-1)
def _record_size(e: Entry, iface_len: cython.Py_ssize_t) -> cython.Py_ssize_t:
    """At most what `_put_record` writes for `e`: every part's longest (20 digits a number,
    25 characters a fallback time, 45 an IPv6 address, hex of any other length two a byte,
    three a MAC byte)."""
    smac = e.smac
    return 600 + iface_len + 2 * (len(e.src) + len(e.dst)) + \
        (0 if smac is None else 3 * len(cython.cast(bytes, smac)))


@cython.cfunc
@cython.exceptval(-1)
def _put_record(p: cython.p_uchar, n: cython.Py_ssize_t, pair: Pair, e: Entry,
                iface_b: bytes) -> cython.Py_ssize_t:
    """The record of direction `e` of `pair` at `p[n]`; returns where the next goes."""
    smac = e.smac
    n = _put(p, n, b'{"type":"tcp","pair":')
    n = _put_uint(p, n, pair.id)
    n = _put(p, n, b',"iface":')
    n = _put(p, n, iface_b)
    n = _put(p, n, b',"src":"')
    n = _put_addr(p, n, e.src)
    n = _put(p, n, b'","sport":')
    n = _put_uint(p, n, e.sport)
    n = _put(p, n, b',"dst":"')
    n = _put_addr(p, n, e.dst)
    n = _put(p, n, b'","dport":')
    n = _put_uint(p, n, e.dport)
    n = _put(p, n, b',"packets":')
    n = _put_uint(p, n, e.packets)
    n = _put(p, n, b',"bytes":')
    n = _put_uint(p, n, e.bytes)
    n = _put(p, n, b',"flags":"')
    n = _put(p, n, _FLAGS_ASCII[e.flags & 0xFF])
    n = _put(p, n, b'","state":"')
    n = _put(p, n, entry_state(pair, e).encode("ascii"))
    n = _put(p, n, b'","partial":true,"first_seen":' if pair.partial
             else b'","partial":false,"first_seen":')
    if e.packets:
        n = _put_time(p, n, e.first_seen)
        n = _put(p, n, b',"last_seen":')
        n = _put_time(p, n, e.last_seen)
    else:
        n = _put(p, n, b'null,"last_seen":null')
    n = _put(p, n, b',"last_size":')
    n = _put_uint(p, n, e.last_size)
    n = _put(p, n, b',"window":')
    n = _put_uint(p, n, e.window)
    if smac is None:
        n = _put(p, n, b',"mac":null,"end":"')
    else:
        n = _put(p, n, b',"mac":"')
        n = _put_hex(p, n, cython.cast(bytes, smac), 58)  # ':' between bytes
        n = _put(p, n, b'","end":"')
    n = _put(p, n, pair.end.encode("ascii"))
    return _put(p, n, b'"}\n')


@cython.cfunc
@cython.exceptval(check=False)
def _put(p: cython.p_uchar, n: cython.Py_ssize_t, s: bytes) -> cython.Py_ssize_t:
    """`s` at `p[n]`; returns where the next part goes."""
    k: cython.Py_ssize_t = len(s)
    copy_bytes(p, n, s, 0, k)
    return n + k


@cython.cfunc
@cython.exceptval(check=False)
def _put_uint(p: cython.p_uchar, n: cython.Py_ssize_t, v: cython.ulonglong) -> cython.Py_ssize_t:
    """`v` in decimal, as str() writes it."""
    digits: cython.Py_ssize_t = 1
    t: cython.ulonglong = v
    while t >= 10:
        digits += 1
        t //= 10
    end: cython.Py_ssize_t = n + digits
    i: cython.Py_ssize_t = end
    while True:
        i -= 1
        p[i] = 48 + v % 10
        v //= 10
        if not v:
            break
    return end


@cython.cfunc
def _put_addr(p: cython.p_uchar, n: cython.Py_ssize_t, addr: bytes) -> cython.Py_ssize_t:
    """`fmt_addr(addr)`: IPv4 written here (inet_ntop's dotted quad), the rest by it."""
    if len(addr) != 4:
        return _put(p, n, fmt_addr(addr).encode("ascii"))
    q: cython.p_uchar = addr
    n = _put_uint(p, n, q[0])
    i: cython.Py_ssize_t
    for i in range(1, 4):
        p[n] = 46  # '.'
        n = _put_uint(p, n + 1, q[i])
    return n


@cython.cfunc
@cython.exceptval(check=False)
def _put_hex(p: cython.p_uchar, n: cython.Py_ssize_t, b: bytes, sep: cython.uchar) \
        -> cython.Py_ssize_t:
    """`b.hex(chr(sep))`."""
    q: cython.p_uchar = b
    digits: cython.p_uchar = _HEX
    i: cython.Py_ssize_t
    c: cython.uchar
    for i in range(len(b)):
        if i:
            p[n] = sep
            n += 1
        c = q[i]
        p[n] = digits[c >> 4]
        p[n + 1] = digits[c & 15]
        n += 2
    return n


@cython.cfunc
def _put_time(p: cython.p_uchar, n: cython.Py_ssize_t, x: cython.double) -> cython.Py_ssize_t:
    """`repr(round(x, 6))`, the JSON's packet times, without its two decimal conversions
    (about 10,000 instructions a time, two times a record). A microsecond time from 1 s to
    2**32 s is the double nearest a 6-decimal number, and doubles there are less than 1e-6
    apart: its shortest repr is that number without trailing zeros, written here from the
    integer microseconds. Anything else (nanosecond times near a half microsecond, where the
    product's rounding could differ from round()'s) takes round() and repr()."""
    if 1.0 <= x < 4294967296.0:  # (repr writes an exponent below 1e-4)
        scaled: cython.double = x * 1e6
        us: cython.longlong = int(scaled + 0.5)
        if -0.25 < scaled - us < 0.25:
            n = _put_uint(p, n, us // 1000000)
            p[n] = 46  # '.'
            frac: cython.longlong = us % 1000000
            if frac == 0:
                p[n + 1] = 48  # '0'
                return n + 2
            width: cython.Py_ssize_t = 6
            while frac % 10 == 0:  # trailing zeros dropped
                frac //= 10
                width -= 1
            i: cython.Py_ssize_t
            for i in range(width, 0, -1):  # leading ones kept
                p[n + i] = 48 + frac % 10
                frac //= 10
            return n + 1 + width
    return _put(p, n, repr(round(x, 6)).encode("ascii"))
