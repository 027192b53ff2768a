"""Memory per tracked pair, and a spoofed SYN flood.

1. Peak RSS of an engine holding 100k and 1M TCP pairs (both directions), each in a fresh
   process: KiB per pair (target: at most 1 KiB at 1M pairs).
2. A generated spoofed SYN flood (1M distinct sources, one SYN each) replayed with
   `iptraf-mp -r F -B --json /dev/null --shards 0` and `--max-connections` at its default:
   packets/s and peak RSS, and with a small table (100k) for comparison.
Not run in CI (`make bench`).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path("/tmp/iptraf-mp-bench")
PCAP_HDR = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
REC = struct.Struct("<IIII")


def pairs_rss(n: int) -> float:
    """KiB of peak RSS per pair for n pairs, measured in a child process."""
    code = f"""
import resource, struct
from iptraf_mp.core.engine import Engine, Settings
from iptraf_mp.core.decode import decode
e = Engine(Settings(max_pairs={n} + 1))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
dmac, smac = b"\\x02" * 6, b"\\x04" * 6
for i in range({n}):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0,
                     struct.pack("!I", 0x0B000000 + i), b"\\x0a\\x00\\x00\\x02")
    tcp = struct.pack("!HHIIBBHHH", 1024 + i % 60000, 80, i, 0, 0x50, 0x02, 1000, 0, 0)
    f = dmac + smac + b"\\x08\\x00" + ip + tcp
    e.feed(1000.0 + i * 1e-6, "eth0", decode(1, f, len(f)), i + 1)
assert len(e.tcp.pairs) == {n}
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / {n})
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    return float(out.stdout.strip())


def flood_capture(n: int) -> Path:
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"synflood-{n}.pcap"
    if path.exists():
        return path
    with open(path, "wb") as fh:
        fh.write(PCAP_HDR)
        for i in range(n):
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, i & 0xFFFF, 0, 64, 6, 0,
                             struct.pack("!I", 0x0B000000 + i), b"\x0a\x00\x00\x02")
            tcp = struct.pack("!HHIIBBHHH", 1024 + i % 60000, 80, i, 0, 0x50, 0x02, 1000, 0, 0)
            f = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp
            ts = 1_700_000_000 + i * 10e-6  # 100k SYNs per second
            sec = int(ts)
            fh.write(REC.pack(sec, int((ts - sec) * 1e6), len(f), len(f)) + f)
    return path


def replay(path: Path, *extra: str) -> tuple[float, int]:
    """(wall seconds, peak RSS KiB of the run), by /usr/bin/time."""
    cmd = ["/usr/bin/time", "-f", "%M", str(ROOT / ".venv/bin/iptraf-mp"), "-r", str(path),
           "-B", "--no-db", "--json", os.devnull, *extra]
    t0 = time.monotonic()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.monotonic() - t0
    return wall, int(out.stderr.strip().splitlines()[-1])


def main() -> int:
    print("== memory per tracked pair (both directions) ==")
    for n in (100_000, 1_000_000):
        print(f"{n:>9,} pairs: {pairs_rss(n):7.3f} KiB per pair (target <= 1 KiB at 1M)")
    n = 1_000_000
    cap = flood_capture(n)
    print(f"== spoofed SYN flood: {n:,} SYNs from {n:,} sources ({cap}) ==")
    for label, extra in (("--max-connections default (1M)", ("--shards", "0")),
                         ("--max-connections 100000", ("--shards", "0",
                                                       "--max-connections", "100000"))):
        wall, peak = replay(cap, *extra)
        print(f"{label:34s} {n / wall:10,.0f} packets/s  peak RSS {peak / 1024:7.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
