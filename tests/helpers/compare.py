"""Comparing outputs line by line, for assertion messages."""

from __future__ import annotations


def first_difference(a: str | bytes, b: str | bytes) -> str:
    """Where two outputs first differ, one line of each (or how their lengths differ)."""
    if isinstance(a, bytes):
        a = a.decode(errors="replace")
    if isinstance(b, bytes):
        b = b.decode(errors="replace")
    la, lb = a.splitlines(), b.splitlines()
    for i, (x, y) in enumerate(zip(la, lb, strict=False)):
        if x != y:
            return f"line {i + 1}:\n  {x}\n  {y}"
    return f"{len(la)} lines against {len(lb)}"
