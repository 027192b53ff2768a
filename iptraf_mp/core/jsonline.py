"""One `--json` TCP record as text, made where the entry's fields are C fields (compiled):
a run writes two per connection, and as a Python function of the outputs layer each took
~11 us, 14 % of a one-process replay of echo-connections x12 (cProfile). The layout is
outputs/jsonout.py's `entry_record` encoded by the json module, byte for byte (a test
compares them on every corpus capture)."""

from __future__ import annotations

import cython

from .model import fmt_addr, fmt_flags
from .tcptable import Entry, Pair, entry_state

_STATE_FLAGS = tuple(fmt_flags(i) for i in range(256))


@cython.ccall
def fmt_time(x: cython.double) -> str:
    """`repr(round(x, 6))`, the JSON's packet times, without its two decimal conversions
    (about 10,000 instructions a time, two times a record). A microsecond time from 1 s to
    2**32 s is the double nearest a 6-decimal number, and doubles there are less than 1e-6
    apart: its shortest repr is that number without trailing zeros, made here from the
    integer microseconds. Anything else (nanosecond times near a half microsecond, where the
    product's rounding could differ from round()'s) takes round() and repr()."""
    if 1.0 <= x < 4294967296.0:  # (repr writes an exponent below 1e-4)
        scaled: cython.double = x * 1e6
        us: cython.longlong = int(scaled + 0.5)
        if -0.25 < scaled - us < 0.25:
            whole: cython.longlong = us // 1000000
            frac: cython.longlong = us % 1000000
            if frac == 0:
                return f"{whole}.0"
            return f"{whole}." + f"{frac:06d}".rstrip("0")
    return repr(round(x, 6))


@cython.ccall
def entry_line(pair: Pair, e: Entry, iface_json: str) -> str:
    """The record of direction `e` of `pair`, with its newline. Every text field but the
    interface name is ASCII the code made (addresses by inet_ntop, MACs in hex, flags, state
    and end from fixed words); `iface_json` is the name already JSON-encoded (it comes from
    a capture file: hostile)."""
    first: str
    last: str
    if e.packets:
        first, last = fmt_time(e.first_seen), fmt_time(e.last_seen)
    else:
        first = last = "null"
    smac = e.smac
    mac: str = "null" if smac is None else '"' + smac.hex(":") + '"'
    return (f'{{"type":"tcp","pair":{pair.id},"iface":{iface_json},'
            f'"src":"{fmt_addr(e.src)}","sport":{e.sport},"dst":"{fmt_addr(e.dst)}",'
            f'"dport":{e.dport},"packets":{e.packets},"bytes":{e.bytes},'
            f'"flags":"{_STATE_FLAGS[e.flags & 0xFF]}","state":"{entry_state(pair, e)}",'
            f'"partial":{"true" if pair.partial else "false"},"first_seen":{first},'
            f'"last_seen":{last},"last_size":{e.last_size},"window":{e.window},'
            f'"mac":{mac},"end":"{pair.end}"}}\n')
