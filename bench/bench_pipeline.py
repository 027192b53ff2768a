"""Replay throughput of the sharded pipeline, side by side with tshark, and the cost of each
stage (what explains how it scales).

    python bench/bench_pipeline.py [--packets 1000000] [--connections 20000] [--repeat 3]
                                   [--shards 0,1,2,4] [--no-tshark] [--stage-packets 300000]

1. End to end, on a generated capture (bench/gen_capture.py, cached under /tmp): wall time,
   packets/s, CPU seconds of the whole process tree, and peak memory (PSS summed over the
   tree, sampled every 0.1 s: forked children share pages, so RSS would count them twice)
   of `iptraf-mp -r FILE -B --json /dev/null --shards N` for each N (0 = the engine in one
   process) and of `tshark -q -z conv,tcp -r FILE`, in the same run. Each figure is the best
   of --repeat runs by wall time: other tenants of the machine only ever add time.
2. Per stage, each alone on one core, in this process: the capture process's read, clock,
   hash and batch append; its whole loop with the hand-over to rings drained by other
   processes; a shard's work (batch decode, packet decode, flow engine, publications); and
   the main process's merge and JSON output.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iptraf_mp.capture.capfile import open_capture  # noqa: E402
from iptraf_mp.capture.live import default_capture_procs  # noqa: E402
from iptraf_mp.core.engine import PacketClock, Settings  # noqa: E402
from iptraf_mp.core.merge import Merger  # noqa: E402
from iptraf_mp.outputs.jsonout import JsonWriter  # noqa: E402
from shards.batch import BatchBuilder, decode_batch  # noqa: E402
from shards.hashing import ShardPicker  # noqa: E402
from shards.protocol import CTL_END  # noqa: E402
from shards.reader import NSTATS, ProducerConfig, run_file_reader  # noqa: E402
from shards.ring import Ring  # noqa: E402
from shards.worker import Shard, ShardConfig  # noqa: E402

CACHE = Path(os.environ.get("IPTRAF_MP_BENCH_CACHE", "/tmp/iptraf-mp-bench"))


def bench_capture(packets: int, connections: int) -> Path:
    """The generated capture, made once and kept under /tmp."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"gen-{packets}-{connections}.pcap"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        subprocess.run([sys.executable, str(ROOT / "bench" / "gen_capture.py"), str(tmp),
                        "--packets", str(packets), "--connections", str(connections)],
                       check=True, stdout=subprocess.DEVNULL)
        tmp.rename(path)
    return path


def iptraf_mp() -> str:
    exe = Path(sys.executable).with_name("iptraf-mp")
    return str(exe) if exe.exists() else (shutil.which("iptraf-mp") or "iptraf-mp")


# ---- end to end --------------------------------------------------------------------------------

def tree(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat", "rb") as f:
                    st = f.read()
                kids.setdefault(int(st[st.rindex(b")") + 2:].split()[1]), []).append(int(e))
            except (OSError, ValueError):
                continue
    out, todo = [pid], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all processes), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    name: str
    wall: float
    cpu: float
    peak_mib: float
    rc: int
    foreign: float  # share of the machine's CPU capacity others used during the run


def measure(name: str, argv: list[str]) -> Result:
    """Run `argv` to its end: wall time, CPU of it and its reaped children, peak PSS."""
    peak = 0
    done = threading.Event()
    busy0 = busy_seconds()
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(_pss_kib(p) for p in tree(proc.pid)))
            done.wait(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    busy = busy_seconds() - busy0
    done.set()
    t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        print(f"  {name}: exit {proc.returncode}: {err.strip()[:300]}", file=sys.stderr)
    cpu = ru.ru_utime + ru.ru_stime
    foreign = max(0.0, busy - cpu) / (wall * (os.cpu_count() or 1))
    return Result(name, wall, cpu, peak / 1024, proc.returncode, foreign)


def end_to_end(cap: Path, packets: int, shard_counts: list[int], repeat: int,
               tshark: bool) -> list[Result]:
    runs: list[tuple[str, list[str]]] = []
    if tshark and shutil.which("tshark"):
        runs.append(("tshark -q -z conv,tcp", ["tshark", "-q", "-z", "conv,tcp", "-r", str(cap)]))
    for n in shard_counts:
        label = "iptraf-mp --shards 0 (one process)" if n == 0 else f"iptraf-mp --shards {n}"
        runs.append((label, [iptraf_mp(), "-r", str(cap), "-B", "--no-db", "--json",
                             os.devnull, "--shards", str(n)]))
    best: dict[str, Result] = {}
    for _ in range(repeat):
        # interleaved, so a burst of load from other tenants hits every contender alike
        for name, argv in runs:
            r = measure(name, argv)
            if name not in best or r.wall < best[name].wall:
                best[name] = r
    out = [best[name] for name, _ in runs]
    ref = best.get("tshark -q -z conv,tcp")
    print(f"\n## Replay of {cap.name}: {packets:,} packets, best of {repeat} "
          f"(load average before: {os.getloadavg()[0]:.1f})\n")
    print("| run | wall s | packets/s | x tshark | CPU s (tree) | CPU us/packet | peak PSS MiB "
          "| others' CPU share |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in out:
        pps = packets / r.wall
        x = f"{pps / (packets / ref.wall):.2f}" if ref else "-"
        print(f"| {r.name} | {r.wall:.2f} | {pps:,.0f} | {x} | {r.cpu:.2f} | "
              f"{r.cpu / packets * 1e6:.2f} | {r.peak_mib:.0f} | {r.foreign:.0%} |")
    return out


# ---- stages ------------------------------------------------------------------------------------

def cpu_time(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def stage_read(cap: Path, limit: int) -> float:
    def run() -> None:
        with open_capture(cap) as r:
            for n, _rec in enumerate(r, 1):
                if n >= limit:
                    break
    return cpu_time(run)


def stage_read_clock_hash_append(cap: Path, limit: int, nshards: int, hashing: bool,
                                 appending: bool) -> float:
    """The file reader's loop (shards/reader.py) up to, not including, the ring."""
    def run() -> None:
        clock = PacketClock()
        advance = clock.advance
        pick = ShardPicker(nshards).pick
        builders = [BatchBuilder() for _ in range(nshards)]
        with open_capture(cap) as r:
            ifaces = r.interfaces
            n = 0
            for ts, ifidx, data, wirelen in r:
                n += 1
                advance(ts)
                s = pick(ifaces[ifidx].linktype, data, wirelen, ifidx) if hashing else 0
                if appending:
                    b = builders[s]
                    b.append(n, ts, wirelen, ifidx, data)
                    if len(b) >= 512 or b.nbytes >= 256 * 1024:
                        b.take()
                if n >= limit:
                    break
    return cpu_time(run)


def _drain(ring: Ring, stop) -> None:
    while True:
        buf = ring.get(0.2)
        if buf is not None and decode_batch(buf)[-1][3] == CTL_END:
            return
        if buf is None and stop.is_set():
            return


def _reader(cfg, path, rings, stats, flush_gen, errors, stop, out) -> None:
    t = time.process_time()
    run_file_reader(cfg, path, rings, stats, flush_gen, errors, stop)
    out.send(time.process_time() - t)


def stage_reader_process(cap: Path, nshards: int) -> tuple[float, float]:
    """run_file_reader itself, in its own process, handing over to rings that other
    processes drain (without decoding the packets): (CPU s of the reader, wall s)."""
    ctx = mp.get_context("fork")
    rings = [Ring.create(16 << 20, ctx=ctx) for _ in range(nshards)]
    stats = ctx.Array("Q", NSTATS, lock=False)
    flush_gen = ctx.Array("Q", 2, lock=False)
    stop = ctx.Event()
    rx, tx = ctx.Pipe(duplex=False)
    erx, etx = ctx.Pipe(duplex=False)
    drains = [ctx.Process(target=_drain, args=(r, stop), daemon=True) for r in rings]
    cfg = ProducerConfig(0, nshards, live=False)
    proc = ctx.Process(target=_reader, args=(cfg, str(cap), rings, stats, flush_gen, etx,
                                             stop, tx), daemon=True)
    try:
        for d in drains:
            d.start()
        t0 = time.monotonic()
        proc.start()
        cpu = rx.recv()
        wall = time.monotonic() - t0
        proc.join()
        for d in drains:
            d.join(10)
    finally:
        stop.set()
        for p in [proc, *drains]:
            if p.is_alive():
                p.kill()
        for r in rings:
            r.close()
            r.unlink()
    return cpu, wall


class _ListRing:
    """Stands in for a ring: keeps what the reader hands over."""

    def __init__(self, limit: int) -> None:
        self.items: list[bytes] = []
        self.limit = limit
        self.records = 0

    def put(self, payload: bytes) -> bool:
        if self.records < self.limit:
            self.items.append(payload)
            self.records += int.from_bytes(payload[4:8], "little")
        return True


class _PicklingConn:
    """Stands in for the shard's pipe: pickles what it sends (that cost is the shard's),
    and keeps it for the merge stage."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, obj) -> None:
        self.sent.append(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def reader_batches(cap: Path, limit: int) -> list[bytes]:
    """The batches a one-shard run's reader hands over (first `limit` records)."""
    ctx = mp.get_context("fork")
    ring = _ListRing(limit)
    saved = signal.getsignal(signal.SIGINT)
    try:
        run_file_reader(ProducerConfig(0, 1, live=False), str(cap), [ring],
                        [0] * NSTATS, ctx.Array("Q", 2, lock=False), ctx.Pipe()[1],
                        ctx.Event())
    finally:
        signal.signal(signal.SIGINT, saved)
    return ring.items


def stage_shard(batches: list[bytes], refresh: float = 0.25) -> tuple[float, int, list[bytes]]:
    """A shard's work on those batches, publishing every `refresh` s of its own CPU time:
    (CPU s, packets, the pickled publications)."""
    conn = _PicklingConn()
    shard = Shard(ShardConfig(0, 1, Settings(), refresh, keep_lines=True),
                  None, conn)  # type: ignore[arg-type]  # fed by process(), not by rings
    t0 = time.process_time()
    next_pub = t0 + refresh
    for b in batches:
        shard.process(b)
        if time.process_time() >= next_pub:
            shard.publish()
            next_pub = time.process_time() + refresh
    shard.engine.finish()
    shard.publish(final=True)
    return time.process_time() - t0, shard.decoded, conn.sent


def stage_merge(pubs: list[bytes]) -> float:
    """The main process: unpickle, merge, write the JSON of what is released."""
    merger = Merger(1)
    with open(os.devnull, "w") as devnull:
        out = JsonWriter(devnull)

        def run() -> None:
            for raw in pubs:
                merger.apply(pickle.loads(raw))
                for group in merger.take_ready():
                    out.pairs(group)
            out.record(merger.summary().to_json())
        return cpu_time(run)


def stages(cap: Path, limit: int, packets: int) -> dict[str, float]:
    us: dict[str, float] = {}
    per = 1e6 / limit
    us["read (capfile)"] = stage_read(cap, limit) * per
    us["+ packet clock"] = stage_read_clock_hash_append(cap, limit, 1, False, False) * per
    us["+ shard hash (4 shards)"] = stage_read_clock_hash_append(cap, limit, 4, True,
                                                                 False) * per
    us["+ batch append (4 shards)"] = stage_read_clock_hash_append(cap, limit, 4, True,
                                                                   True) * per
    for n in (1, 2, 4):
        cpu, wall = stage_reader_process(cap, n)
        us[f"capture process, whole loop + ring hand-over ({n} rings)"] = cpu / packets * 1e6
        us[f"  (its wall time per packet, {n} rings drained elsewhere)"] = wall / packets * 1e6
    batches = reader_batches(cap, limit)
    cpu, decoded, pubs = stage_shard(batches)
    us["shard: batch decode + packet decode + engine + publications"] = cpu / decoded * 1e6
    us["main: unpickle + merge + JSON"] = stage_merge(pubs) / decoded * 1e6
    print(f"\n## Cost of each stage alone (CPU us per packet, first {limit:,} packets; "
          f"capture process rows: all {packets:,})\n")
    print("| stage | us/packet | packets/s on one core |")
    print("|---|---:|---:|")
    for k, v in us.items():
        print(f"| {k} | {v:.2f} | {1e6 / v:,.0f} |")
    return us


def model(us: dict[str, float]) -> None:
    """What the stage costs predict for one busy interface (or file), with as many shards as
    it takes: the main process is one process, so it caps the rate at one core's worth; the
    capture side is k processes (--capture-procs; a file has one), capping it at k cores'
    worth; below those caps the packets' total CPU cost shares the cores."""
    r = us["capture process, whole loop + ring hand-over (4 rings)"]
    s = us["shard: batch decode + packet decode + engine + publications"]
    m = us["main: unpickle + merge + JSON"]
    print(f"\n## What the stage costs predict (capture {r:.2f}, shard {s:.2f}, main {m:.2f} "
          f"us/packet)\n")
    print("| cores | capture processes | predicted packets/s | shards busy | bound by |")
    print("|---:|---:|---:|---:|---|")
    for c in (2, 4, 8, 16, 32, 64):
        for k in sorted({1, default_capture_procs(1, c), 4}):
            if k > max(1, c - 2):
                continue
            limits = {"all stages share the cores": c / (r + s + m) * 1e6,
                      f"the capture side ({k} core{'s' * (k > 1)})": k * 1e6 / r,
                      "the main process (one core)": 1e6 / m}
            bound = min(limits, key=lambda key: limits[key])
            pps = limits[bound]
            print(f"| {c} | {k} | {pps:,.0f} | {pps * s / 1e6:.1f} | {bound} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--connections", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shards", default="0,1,2,4")
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--stage-packets", type=int, default=300_000,
                    help="packets for the in-process stage timings")
    ap.add_argument("--skip-end-to-end", action="store_true")
    ap.add_argument("--skip-stages", action="store_true")
    a = ap.parse_args()
    cap = bench_capture(a.packets, a.connections)
    print(f"# bench_pipeline: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"capture {cap} ({cap.stat().st_size / 2**20:.0f} MiB)")
    if not a.skip_end_to_end:
        end_to_end(cap, a.packets, [int(x) for x in a.shards.split(",")], a.repeat,
                   not a.no_tshark)
    if not a.skip_stages:
        us = stages(cap, min(a.stage_packets, a.packets), a.packets)
        model(us)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
