"""The JSON record's packet times: exactly `repr(round(x, 6))` for every time a capture can
give (make test runs it compiled and on the interpreted source)."""

from __future__ import annotations

import random

from iptraf_mp.core.jsonline import fmt_time


def test_times_are_repr_of_round_6() -> None:
    rng = random.Random(11)
    values = [0.0, 1.0, 0.5, 1e-6, 0.999999, 1627225022.0, 1627225022.1, 4294967295.999999,
              4294967296.0, 1e10, -1.0, -0.000001, float(2**53)]
    for _ in range(100_000):
        sec = rng.randrange(0, 2**32)
        values.append(sec + rng.randrange(1_000_000) / 1e6)  # a pcap's microseconds
        values.append(sec + rng.randrange(1_000_000_000) / 1e9)  # nanoseconds
        values.append(sec + (rng.randrange(1_000_000) + 0.5) / 1e6)  # half a microsecond
        values.append(rng.random() * 2**33)
    for v in values:
        assert fmt_time(v) == repr(round(v, 6)), v


def test_addresses_are_inet_ntop_s() -> None:
    import socket

    from iptraf_mp.core.model import fmt_addr

    rng = random.Random(3)
    for _ in range(50_000):
        v4 = bytes(rng.randrange(256) for _ in range(4))
        assert fmt_addr(v4) == socket.inet_ntop(socket.AF_INET, v4)
    for v4 in (b"\0\0\0\0", b"\xff\xff\xff\xff", b"\x0a\x00\x00\x01"):
        assert fmt_addr(v4) == socket.inet_ntop(socket.AF_INET, v4)
    v6 = bytes(range(16))
    assert fmt_addr(v6) == socket.inet_ntop(socket.AF_INET6, v6)
    assert fmt_addr(b"\x01\x02") == "0102"
