"""A million connections: peak memory over every process, beside tshark on the same file.

    python bench/bench_scale.py [--connections 1000000] [--skip-tshark]

Two generated captures (cached in /tmp/iptraf-mp-bench):
- `tcp`: N TCP connections that stay open, each a SYN, a SYN/ACK and an ACK with 100 bytes
  of data (3N packets), 10 us apart: every connection is alive at the end;
- `udp`: N spoofed UDP sources, one 60-byte datagram each, to one server.

Each is replayed as an operator would watch a router: `iptraf-mp -r F -B --json /dev/null`
with `--shards 2` and the flow store on (`--db` a new file) for tcp, and with the defaults
for udp. Peak memory is the largest sum of Pss over the monitor's process tree (capture
process, shards, main process with the store's writer thread), sampled every 50 ms: Pss
counts shared pages once, split between their users. The anchor is tshark -q -z conv,tcp (or
conv,udp) on the same file, peak RSS (one process). Target: at most 512 MiB over all
processes at 1M, TCP and UDP (issue: 3,053 MiB and 1,598 MiB before).
Not run in CI (`make bench`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_pipeline import _pss_kib, iptraf_mp, tree  # noqa: E402

from tests.helpers.packets import ETH, MAC_A, MAC_B, TCP, UDP  # noqa: E402
from tests.helpers.packets import IPV4 as IP  # noqa: E402

CACHE = Path("/tmp/iptraf-mp-bench")
PCAP_HDR = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
REC = struct.Struct("<IIII")
SERVER = b"\x0a\x00\x00\x02"


def _client(i: int) -> tuple[bytes, int]:
    return struct.pack("!I", 0x0B000000 + i // 50_000), 1024 + i % 50_000


def _tcp(src: bytes, dst: bytes, sport: int, dport: int, flags: int, payload: int,
         smac: bytes, dmac: bytes) -> bytes:
    ip = IP.pack(0x45, 0, 40 + payload, 0, 0x4000, 64, 6, 0, src, dst)
    return (ETH.pack(dmac, smac, 0x0800) + ip
            + TCP.pack(sport, dport, 1, 1, 5 << 4, flags, 65535, 0, 0) + b"x" * payload)


def _write(path: Path, frames) -> Path:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(PCAP_HDR)
        for ts, f in frames:
            sec = int(ts)
            fh.write(REC.pack(sec, int(round((ts - sec) * 1e6)) % 1_000_000, len(f), len(f)))
            fh.write(f)
    tmp.rename(path)
    return path


def _tcp_connection(t: float, src: bytes, sport: int):
    yield t, _tcp(src, SERVER, sport, 443, 0x02, 0, MAC_A, MAC_B)
    yield t + 3e-6, _tcp(SERVER, src, 443, sport, 0x12, 0, MAC_B, MAC_A)
    yield t + 6e-6, _tcp(src, SERVER, sport, 443, 0x18, 100, MAC_A, MAC_B)


def _udp_source(t: float, src: bytes, sport: int):
    ip = IP.pack(0x45, 0, 28 + 32, 0, 0, 64, 17, 0, src, SERVER)
    yield t, ETH.pack(MAC_B, MAC_A, 0x0800) + ip + UDP.pack(sport, 53, 40, 0) + b"q" * 32


KINDS = {"tcp": _tcp_connection, "udp": _udp_source}


def capture(kind: str, n: int) -> Path:
    """n connections (tcp) or sources (udp), one every 10 us; made once, then cached."""
    path = CACHE / f"scale-{kind}-{n}.pcap"
    if path.exists():
        return path
    make = KINDS[kind]
    return _write(path, (rec for i in range(n)
                         for rec in make(1_700_000_000.0 + i * 10e-6, *_client(i))))


def peak_pss(argv: list[str]) -> tuple[float, float, float, float, int]:
    """Run `argv` to its end: (wall seconds, peak Pss MiB over its tree, the main process's
    own peak, the children's (capture process, shards, reaper) peak sum, exit status)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = peak_main = peak_kids = 0
    while proc.poll() is None:
        main = _pss_kib(proc.pid)
        kids = sum(_pss_kib(p) for p in tree(proc.pid) if p != proc.pid)
        peak, peak_main, peak_kids = max(peak, main + kids), max(peak_main, main), max(
            peak_kids, kids)
        time.sleep(0.05)
    proc.communicate()
    return (time.monotonic() - t0, peak / 1024, peak_main / 1024, peak_kids / 1024,
            proc.returncode)


def peak_rss(argv: list[str]) -> tuple[float, float]:
    t0 = time.monotonic()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], capture_output=True, text=True,
                         check=True)
    return time.monotonic() - t0, int(out.stderr.strip().splitlines()[-1]) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1_000_000)
    ap.add_argument("--skip-tshark", action="store_true")
    a = ap.parse_args()
    n = a.connections
    CACHE.mkdir(exist_ok=True)
    tshark = None if a.skip_tshark else shutil.which("tshark")
    print(f"# bench_scale: {n:,} connections; {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| capture | run | wall s | peak memory MiB | per connection | exit |")
    print("|---|---|---:|---:|---:|---:|")
    for name, cap, conv, extra in (
            ("tcp", capture("tcp", n), "conv,tcp", ["--shards", "2"]),
            ("udp", capture("udp", n), "conv,udp", [])):
        with tempfile.TemporaryDirectory() as work:
            db = Path(work) / "flows.db"
            argv = [iptraf_mp(), "-r", str(cap), "-B", "--json", os.devnull, "--db", str(db),
                    *extra]
            wall, mib, main, kids, rc = peak_pss(argv)
            label = (f"iptraf-mp {' '.join(extra + ['--db'])} (sum of Pss; peaks: main "
                     f"{main:,.0f}, children {kids:,.0f})")
            print(f"| {name} | {label} | {wall:.1f} | {mib:,.0f} | {mib * 1024 * 1024 / n:,.0f} B "
                  f"| {rc} |", flush=True)
        if tshark:
            wall, mib = peak_rss([tshark, "-q", "-z", conv, "-r", str(cap)])
            print(f"| {name} | tshark -q -z {conv} (RSS) | {wall:.1f} | {mib:,.0f} | "
                  f"{mib * 1024 * 1024 / n:,.0f} B | 0 |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
