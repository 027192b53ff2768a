"""--speed paces a replay in every mode: packet time runs at `speed` times wall time, long
gaps included, and no packet is shown before it is due."""

from __future__ import annotations

import subprocess
import time

import pytest

from .conftest import FIXTURES
from .test_pipeline import iptraf_mp_command


@pytest.mark.parametrize("shards", ["0", "2"])
def test_speed_honours_long_gaps(tmp_path, shards):
    """timeout.pcap spans 966 s, most of it one silence: at --speed 200 that is 4.8 s of
    wall time. Before, --shards 0 capped every sleep at the refresh interval and ended in
    a fraction of it."""
    t0 = time.monotonic()
    p = subprocess.run([*iptraf_mp_command(), "-r", str(FIXTURES / "timeout.pcap"), "-B",
                        "--no-db", "--shards", shards, "--speed", "200", "--json",
                        str(tmp_path / "j.jsonl")], capture_output=True, text=True,
                       timeout=120)
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert took >= 966 / 200 - 0.1, took  # a lower bound: pacing never runs ahead
