"""Console frame cost: merge one publication + build the snapshot + render + draw with rich,
with 1k, 100k and 1M connections in the TCP table (issue 5; target < 15 ms per frame at 1M).

    .venv/bin/python bench/bench_console.py [--sizes 1000,100000,1000000] [--frames 60]
                                            [--changes 1000] [--json OUT]

The table is built synthetically (Pair objects straight into the Merger and its display
list). Each frame applies a Publication carrying `--changes` updated pairs, 1 % new pairs
and 20 lower-window lines, then renders at 80x24 and 160x50, with the bar at the top and
in the middle of the table. The merge part grows with the changes per frame (what the
shards publish), not with the table; the render part touches only the rows on screen.
Not run in CI.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402

from iptraf_mp.console import ConsoleApp  # noqa: E402
from iptraf_mp.engine import Summary  # noqa: E402
from iptraf_mp.lines import LineOptions  # noqa: E402
from iptraf_mp.merge import Merger  # noqa: E402
from iptraf_mp.model import K_UDP, Decoded  # noqa: E402
from iptraf_mp.tcptable import Entry, Pair  # noqa: E402
from shards.protocol import Publication, pair_tuple, summary_tuple  # noqa: E402


class _Stats:
    kernel_drops = 0
    queue_drops = 0
    queue_dropped_packets = 0
    errors: list = []


class _Run:
    def __init__(self, merger: Merger) -> None:
        self.merger = merger

    def counters(self):
        return _Stats()

    def request_flush(self) -> None:
        self.merger.flush()


class _Monitor:
    def __init__(self, merger: Merger) -> None:
        self.merger = merger
        self.run = _Run(merger)
        self.started = time.time()
        self.sinks: list = []


def make_pair(i: int) -> Pair:
    a = (0x0A000000 + i).to_bytes(4, "big")
    b = (0xC0000000 + (i * 7919) % 65536).to_bytes(4, "big")
    ea = Entry(a, 1024 + i % 60000, b, 443, packets=i % 97 + 1, bytes=(i % 97 + 1) * 700,
               flags=0x18)
    eb = Entry(b, 443, a, 1024 + i % 60000, packets=i % 89 + 1, bytes=(i % 89 + 1) * 1400,
               flags=0x10)
    return Pair(i + 1, "eth0", ea, eb, i % 5 == 0, 0.0, 0.0)


def build(n: int) -> Merger:
    m = Merger(1, 512)
    pairs = m.pairs
    display = m.display
    for i in range(n):
        p = make_pair(i)
        pairs[p.id] = p
        display.add(p)
    return m


def line(i: int) -> tuple:
    d = Decoded(K_UDP, 4, 76, b"\x0a\x00\x00\x01", b"\x08\x08\x08\x08", 17, 40000 + i % 1000,
                53, 0, 0, 0, 0, 0, 0, 0, None, None, None, False)
    return (float(i), "eth0", d)


def publication(m: Merger, seq: int, n: int, changes: int, rng: random.Random,
                next_id: list[int]) -> Publication:
    tuples = []
    for _ in range(changes):
        p = m.pairs.get(rng.randrange(1, n + 1))
        if p is None:
            continue
        t = list(pair_tuple(p))
        a = list(t[-2])  # the first direction's entry tuple is next to last
        a[4] += 1
        a[5] += 1400
        t[-2] = tuple(a)
        tuples.append(tuple(t))
    for _ in range(max(1, changes // 100)):
        next_id[0] += 1
        p = make_pair(next_id[0])
        p.id = next_id[0]
        tuples.append(pair_tuple(p))
    s = Summary()
    s.frames = seq * changes
    return Publication(shard=0, seq=seq, tick_no=seq, now=1000.0 + seq * 0.25, pairs=tuples,
                       lines=[line(seq * 20 + k) for k in range(20)], line_count=seq * 20,
                       summary=summary_tuple(s), decoded=seq * changes)


def bench(n: int, frames: int, changes: int) -> dict:
    t0 = time.perf_counter()
    m = build(n)
    built = time.perf_counter() - t0
    args = argparse.Namespace(read=None, iface=["eth0"], write=None, json=None)
    app = ConsoleApp(_Monitor(m), args, LineOptions())
    rng = random.Random(5)
    next_id = [n + 10]
    out: dict = {"connections": n, "build_s": round(built, 2), "changes_per_frame": changes}
    for size in ((80, 24), (160, 50)):
        for where in ("top", "middle"):
            app.st.bar = 0 if where == "top" else n  # the middle of the table's rows
            app.st.top = 0 if where == "top" else n - 5
            con = Console(file=io.StringIO(), width=size[0], height=size[1],
                          force_terminal=True, color_system="256", highlight=False,
                          markup=False)
            merge_ms, render_ms, draw_ms = [], [], []
            for f in range(frames):
                pub = publication(m, f + 1, n, changes, rng, next_id)
                a = time.perf_counter()
                m.apply(pub)
                app.pump()
                b = time.perf_counter()
                frame = app.frame(*size)
                c = time.perf_counter()
                con.file = io.StringIO()
                con.print(frame, end="")
                d = time.perf_counter()
                merge_ms.append((b - a) * 1e3)
                render_ms.append((c - b) * 1e3)
                draw_ms.append((d - c) * 1e3)
            total = [x + y + z for x, y, z in zip(merge_ms, render_ms, draw_ms, strict=True)]
            out[f"{size[0]}x{size[1]} bar {where}"] = {
                "merge_ms": round(statistics.median(merge_ms), 2),
                "render_ms": round(statistics.median(render_ms), 2),
                "rich_ms": round(statistics.median(draw_ms), 2),
                "frame_ms_median": round(statistics.median(total), 2),
                "frame_ms_p95": round(sorted(total)[int(0.95 * (len(total) - 1))], 2),
            }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,100000,1000000")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--changes", type=int, default=1000,
                    help="changed pairs per published frame (default 1000 = 4000/s at 4 fps)")
    ap.add_argument("--json", metavar="OUT")
    a = ap.parse_args()
    results = []
    for n in (int(x) for x in a.sizes.split(",")):
        r = bench(n, a.frames, a.changes)
        results.append(r)
        print(f"{n:>9} connections (built in {r['build_s']} s), {a.changes} changes/frame")
        for k, v in r.items():
            if isinstance(v, dict):
                print(f"    {k:22} merge {v['merge_ms']:6.2f}  render {v['render_ms']:6.2f}  "
                      f"rich {v['rich_ms']:6.2f}  = {v['frame_ms_median']:6.2f} ms median, "
                      f"{v['frame_ms_p95']:6.2f} p95")
        sys.stdout.flush()
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
