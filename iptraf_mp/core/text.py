"""The one sanitiser for everything a person reads: the screen, the log, stderr, `sql` and
`report` output. Text from packets, capture files, interface names, DNS and the store is
hostile: an escape sequence in it could retitle or repaint the operator's terminal, a bidi
override (U+202E) could make a log line read backwards.

Printable Unicode is kept (an interface named 中文名 is not an attack); what str.isprintable()
calls unprintable (controls, format characters such as the bidi overrides, line and
paragraph separators, unassigned and private-use code points, any space but ' ') becomes a
visible escape, \\xNN, \\uNNNN or \\UNNNNNNNN, so what was there can still be read.
"""

from __future__ import annotations

import sys


def escape_char(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def safe_text(s: str) -> str:
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else escape_char(c) for c in s)


def say(msg: str, prog: str = "iptraf-mp") -> None:
    """One line on stderr, flushed (progress and the console's own writes interleave)."""
    print(f"{prog}: {safe_text(msg)}", file=sys.stderr, flush=True)
