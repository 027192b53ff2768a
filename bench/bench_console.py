"""Console frame cost: take in one publication + merge it + build the snapshot + render +
draw with rich, with 1k, 100k and 1M connections in the TCP table (target < 15 ms
per frame at 1M), and the sort of the whole table (S, rule 10; target <= 100 ms at 1M).

    .venv/bin/python bench/bench_console.py [--sizes 1000,100000,1000000] [--frames 60]
                                            [--changes 1000] [--json OUT]

The table is built synthetically (Pair objects straight into the Merger and its display
list). Each frame applies a Publication carrying `--changes` updated pairs, 1 % new pairs
and 20 lower-window lines, then renders at 80x24 and 200x50, with the bar at the top and in
the middle of the table. Every step is the one the running console takes:

- recv: unpickling the publication (what `Connection.recv()` does in the main process);
- merge: `Merger.apply`, `settle_heap()` (the supervisor freezes the heap after every poll)
  and the console's `pump()`;
- render: `ConsoleApp.frame()` (the snapshot and the Frame);
- draw: the console's own rich Live (`console.screen_live`) on the alternate screen of a
  256-colour terminal, writing to a string instead of a tty.

frame = merge + render + draw (the issue's "merge plus render"); recv is shown apart and in
"+recv", since -B pays it as much as the console. Times are wall clock and the thread's CPU
time (which shows whether the thread waited for a core; on a shared VM it still grows when
other tenants load the machine: stolen time and shared caches count in it). The merge part
grows with the changes per frame (what the shards publish) and, through cache misses,
somewhat with the table; the render and draw parts touch only the rows on screen. Not run in
CI.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import pickle
import random
import statistics
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.live import Live  # noqa: E402

from iptraf_mp import console as console_mod  # noqa: E402
from iptraf_mp.console.app import ConsoleApp  # noqa: E402
from iptraf_mp.core.engine import Counter, Summary  # noqa: E402
from iptraf_mp.core.lines import LineOptions  # noqa: E402
from iptraf_mp.core.merge import Merger, settle_heap  # noqa: E402
from iptraf_mp.core.model import K_UDP, Decoded  # noqa: E402
from iptraf_mp.core.othertable import OtherLine  # noqa: E402
from iptraf_mp.core.publication import Publication, pair_tuple, summary_tuple  # noqa: E402
from iptraf_mp.core.tcptable import Entry, Pair  # noqa: E402


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
    # No collections while millions of long-lived objects are made (each would walk them
    # all); the running monitor freezes them in the same way (merge.settle_heap).
    gc.disable()
    try:
        for i in range(n):
            p = make_pair(i)
            pairs[p.id] = p
            display.add(p)
    finally:
        gc.enable()
    settle_heap()
    return m


def line(i: int) -> OtherLine:
    d = Decoded(K_UDP, 4, 76, b"\x0a\x00\x00\x01", b"\x08\x08\x08\x08", 17, 40000 + i % 1000,
                53, 0, 0, 0, 0, 0, 0, 0, None, None, None, False)
    return OtherLine(float(i), "eth0", d, i)


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
    s.ifaces = {"eth0": Counter(seq * changes, seq * changes * 1400)}
    return Publication(shard=0, seq=seq, tick_no=seq, now=1000.0 + seq * 0.25, pairs=tuples,
                       lines=[line(seq * 20 + k) for k in range(20)], line_count=seq * 20,
                       summary=summary_tuple(s), decoded=seq * changes)


def make_live(con: Console) -> Live:
    """The console's own Live (before it had one, the plain rich Live it used: this bench
    also measures the code as it was, for a before and after)."""
    factory = getattr(console_mod, "screen_live", None)
    if factory is not None:
        return factory(con)
    return Live(console=con, screen=True, auto_refresh=False, redirect_stdout=False,
                redirect_stderr=False)


def pct(values: list[float], q: float) -> float:
    return sorted(values)[int(q * (len(values) - 1))]


SIZES = ((80, 24), (200, 50))


def bench(n: int, frames: int, changes: int) -> dict:
    t0 = time.perf_counter()
    m = build(n)
    built = time.perf_counter() - t0
    args = argparse.Namespace(read=None, iface=["eth0"], write=None, json=None)
    app = ConsoleApp(_Monitor(m), args, LineOptions())
    rng = random.Random(5)
    next_id = [n + 10]
    out: dict = {"connections": n, "build_s": round(built, 2), "changes_per_frame": changes}
    wall, cpu = time.perf_counter, time.thread_time
    seq = 0
    # ten minutes of traffic on four interfaces, as the graph (G) would have them
    for name in ("eth0", "eth1", "eth2", "wlan0"):
        app.history.by_iface[name] = deque((rng.random() * 1e8 for _ in range(600)),
                                           maxlen=600)
    app.history.total = deque(map(sum, zip(*app.history.by_iface.values(), strict=True)),
                              maxlen=600)
    # S then P or B (rule 10) on the whole table: the console waits for it
    sorts = []
    for by in "PBPBPB":
        t = wall()
        m.display.sort(by)
        sorts.append((wall() - t) * 1e3)
    # the anchor: the list.sort with a key function that SlotList.sort was before rank.py
    t = wall()
    m.display.slots.sort(key=lambda p: max(p.a.packets, p.b.packets), reverse=True)
    for i, p in enumerate(m.display.slots):
        p.slot = i
    out["list_sort_ms"] = round((wall() - t) * 1e3, 1)
    out["sort_ms"] = round(statistics.median(sorts), 1)
    out["sort_ms_max"] = round(max(sorts), 1)
    for size in SIZES:
        for where in ("top", "middle", "top graph"):
            app.st.graph = where == "top graph"
            app.st.bar = 0 if where.startswith("top") else n  # the middle of the table's rows
            app.st.top = 0 if where.startswith("top") else n - 5
            con = Console(file=io.StringIO(), width=size[0], height=size[1],
                          force_terminal=True, force_interactive=True, color_system="256",
                          highlight=False, markup=False, emoji=False)
            live = make_live(con)
            live.start()
            parts: dict[str, list[float]] = {k: [] for k in (
                "recv", "merge", "render", "draw", "frame", "frame_cpu", "all", "all_cpu")}
            # The shard's side (building and pickling), all made before the first frame: made
            # just before each, it would bring the pairs the frame merges into this core's
            # caches, which a shard, running on another core, does not.
            raws = []
            for _f in range(frames):
                seq += 1
                raws.append(pickle.dumps(publication(m, seq, n, changes, rng, next_id)))
            try:
                for raw in raws:
                    con.file = io.StringIO()
                    c0, w0 = cpu(), wall()
                    pub = pickle.loads(raw)
                    c1, w1 = cpu(), wall()
                    m.apply(pub)
                    settle_heap()
                    app.pump()
                    w2 = wall()
                    frame = app.frame(*size)
                    w3 = wall()
                    live.update(frame, refresh=True)
                    c4, w4 = cpu(), wall()
                    for k, v in (("recv", w1 - w0), ("merge", w2 - w1), ("render", w3 - w2),
                                 ("draw", w4 - w3), ("frame", w4 - w1), ("frame_cpu", c4 - c1),
                                 ("all", w4 - w0), ("all_cpu", c4 - c0)):
                        parts[k].append(v * 1e3)
            finally:
                live.stop()
            res = {f"{k}_ms": round(statistics.median(v), 2) for k, v in parts.items()}
            for k in ("frame", "frame_cpu", "all", "all_cpu"):
                res[f"{k}_ms_p95"] = round(pct(parts[k], 0.95), 2)
            out[f"{size[0]}x{size[1]} bar {where}"] = res
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,100000,1000000")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--changes", type=int, default=1000,
                    help="changed pairs per published frame (default 1000 = 4000/s at 4 fps)")
    ap.add_argument("--json", metavar="OUT")
    a = ap.parse_args()
    print(f"# bench_console: {a.changes} changed pairs per frame, {a.frames} frames per case; "
          f"medians (p95) in ms; load average {os.getloadavg()[0]:.1f}")
    results = []
    rows = []
    for n in (int(x) for x in a.sizes.split(",")):
        r = bench(n, a.frames, a.changes)
        results.append(r)
        print(f"{n:>9} connections (built in {r['build_s']} s); sort (S) median "
              f"{r['sort_ms']} ms, worst {r['sort_ms_max']} ms of 6 (list.sort with a key, as "
              f"before: {r['list_sort_ms']} ms)")
        for k, v in r.items():
            if isinstance(v, dict):
                print(f"    {k:18} recv {v['recv_ms']:5.2f}  merge {v['merge_ms']:5.2f}  "
                      f"render {v['render_ms']:5.2f}  draw {v['draw_ms']:5.2f}  = frame "
                      f"{v['frame_ms']:5.2f} ({v['frame_ms_p95']:5.2f}), CPU "
                      f"{v['frame_cpu_ms']:5.2f} ({v['frame_cpu_ms_p95']:5.2f}); +recv "
                      f"{v['all_ms']:5.2f} ({v['all_ms_p95']:5.2f})")
                rows.append((n, k, v))
        sys.stdout.flush()
    # The same, as the README's table: per size, the worst case over bar positions.
    print("\n| connections | terminal | recv | merge | render | draw | frame median | "
          "frame p95 | frame CPU median | frame CPU p95 | frame + recv median | p95 |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sorted({r[0] for r in rows}):
        for w, h in SIZES:
            cases = [v for rn, k, v in rows if rn == n and k.startswith(f"{w}x{h} ")
                     and not k.endswith("graph")]
            worst = {key: max(c[key] for c in cases) for key in cases[0]}
            print(f"| {n:,} | {w}x{h} | {worst['recv_ms']:.2f} | {worst['merge_ms']:.2f} | "
                  f"{worst['render_ms']:.2f} | {worst['draw_ms']:.2f} | {worst['frame_ms']:.2f} "
                  f"| {worst['frame_ms_p95']:.2f} | {worst['frame_cpu_ms']:.2f} | "
                  f"{worst['frame_cpu_ms_p95']:.2f} | {worst['all_ms']:.2f} | "
                  f"{worst['all_ms_p95']:.2f} |")
    print("\n| connections | terminal | frame median, lines | frame median, graph (G) | "
          "frame CPU, lines | frame CPU, graph |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in sorted({r[0] for r in rows}):
        for w, h in SIZES:
            lines = next(v for rn, k, v in rows if rn == n and k == f"{w}x{h} bar top")
            graph = next(v for rn, k, v in rows if rn == n and k == f"{w}x{h} bar top graph")
            print(f"| {n:,} | {w}x{h} | {lines['frame_ms']:.2f} | {graph['frame_ms']:.2f} | "
                  f"{lines['frame_cpu_ms']:.2f} | {graph['frame_cpu_ms']:.2f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
