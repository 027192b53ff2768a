"""Benchmark the flow store.

    python bench/bench_store.py [--connections 10000,100000] [--packets 200000] [--repeat 5]
                                [--per-connection 50] [--checkpoint 5,1] [--busy]
                                [--no-floor] [--queries 1000000]

0. The README's and docs/store.md's example queries on a store of 1M connections (two
   samples each, written by checkpoints as a monitor writes them): target <= 100 ms each.

1. Checkpoint cost: N connections changed since the previous checkpoint (N = 10k, 100k).
   For a first checkpoint (every connection new: inserts) and a second (every connection
   changed: updates), --repeat times each, the median and the best of:
   - snapshot: StoreSink.checkpoint() in the monitor's thread;
   - write: the transaction in the writer thread, up to its COMMIT;
   - latency: from the start of checkpoint() to the COMMIT (the target: under 1 s at 100k);
   - WAL: the WAL checkpoint the writer runs after the commit (0 when it ran none), and
     busy: the writer's whole time (write + WAL), which the latency does not include;
   - rows/s: connection rows + delta rows written per second of write.
   --busy keeps a second Python thread spinning meanwhile, as a monitor replaying at full
   speed does: the writer then shares the GIL.
   `--packets 0` runs only this part. Unless `--no-floor`, it also measures what SQLite
   alone spends on N new connections (rows built beforehand), as built and without parts
   of the schema: the floor under the write, and where it goes.
2. Replay throughput with the store on versus `--no-db`, in the same run, on a capture made
   by bench/gen_capture.py, in one process (`--shards 0`) and with the pipeline. Runs
   alternate between the modes so that the machine's other load hits them alike. Reported:
   the best wall time of --repeat runs, and the median CPU time of the monitor and all its
   processes (steadier on a busy machine). Target: the store costs at most 15 % of the
   throughput. (Not run in CI: `python bench/bench_store.py`.)
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iptraf_mp.core.engine import Summary  # noqa: E402
from iptraf_mp.core.tcptable import Entry, Pair  # noqa: E402
from shards.supervisor import RunStats  # noqa: E402
from store.session import SessionInfo, open_session  # noqa: E402
from store.sink import StoreSink  # noqa: E402


class _Feed:
    def __init__(self) -> None:
        self.changed: list[Pair] = []

    def take(self):
        out, self.changed = self.changed, []
        return out, [], []


class _Merger:
    now = 1_700_000_000.0

    def summary(self) -> Summary:
        return Summary()


class _Run:
    def counters(self) -> RunStats:
        return RunStats()


class _Monitor:
    merger = _Merger()
    run = _Run()


def make_pairs(n: int) -> list[Pair]:
    pairs = []
    for i in range(n):
        c = (0x0A000000 + i).to_bytes(4, "big")
        s = (0xC0A80000 + i % 5000).to_bytes(4, "big")
        cp, sp = 1024 + i % 60000, 443
        t = 1_700_000_000.0 + i * 1e-3
        a = Entry(c, cp, s, sp, packets=5, bytes=2000, flags=0x18, smac=b"\x02\0\0\0\0\1",
                  first_seen=t, last_seen=t + 1)
        b = Entry(s, sp, c, cp, packets=4, bytes=6000, flags=0x10, smac=b"\x02\0\0\0\0\2",
                  first_seen=t, last_seen=t + 1)
        pairs.append(Pair(i + 1, "eth0", a, b, False, t, t + 1))
    return pairs


def new_sink(db: Path) -> tuple[StoreSink, _Feed]:
    """A store at `db` with a live session, and the feed its checkpoints take pairs from."""
    sid = open_session(db, SessionInfo("live", None, ["eth0"]))
    sink = StoreSink(db, sid, interval=3600.0, report=lambda m: print("  store:", m))
    sink.feed = _Feed()
    return sink, sink.feed


def checkpoint_cost(n: int, tmp: Path, busy: bool = False) -> list[dict]:
    sink, feed = new_sink(tmp / f"ckpt-{n}-{time.monotonic_ns()}.db")
    mon = _Monitor()
    pairs = make_pairs(n)
    spin = threading.Event()
    stop = False

    def spinner() -> None:
        x = 0
        while not stop:
            if not spin.wait(0.1):
                continue
            for i in range(1000):
                x += i

    if busy:
        threading.Thread(target=spinner, daemon=True).start()
    results = []
    w = sink.writer
    for label in ("new", "changed"):
        if label == "changed":
            # as in real traffic: what changed in a checkpoint has its latest packet in the
            # last interval (the default 5 s), whenever the connection began
            now = 1_700_000_000.0 + n * 1e-3
            for i, p in enumerate(pairs):
                p.a.packets += 3
                p.a.bytes += 1500
                p.b.packets += 2
                p.b.bytes += 3000
                p.last_seen = p.a.last_seen = p.b.last_seen = now + 5.0 * i / n
        feed.changed = list(pairs)
        done = w.writes
        spin.set()
        t0 = time.monotonic()
        sink.checkpoint(mon)
        snap = time.monotonic() - t0
        while w.writes == done:
            time.sleep(0.001)
        spin.clear()
        rows = 2 * n  # a connection row and a delta row each
        results.append({"kind": label, "snapshot": snap, "write": w.last_write,
                        "latency": w.last_commit - t0, "wal": w.last_wal_checkpoint,
                        "busy": w.last_busy, "rows": rows})
    stop = True
    sink.close()
    return results


# What SQLite alone spends on a checkpoint's rows, per variant of the schema: the same
# statements the writer runs, on rows built beforehand (no snapshot, no Python building
# rows meanwhile). (name, drop the sample triggers, indexes to drop)
_SECONDARY = ("idx_tcp_connections_a_addr", "idx_tcp_connections_b_addr",
              "idx_tcp_connections_b_port", "idx_tcp_connections_first_seen")
FLOOR_VARIANTS = (
    ("as built", False, ()),
    ("no a_addr/b_addr indexes", False, _SECONDARY[:2]),
    ("no sample rows", True, ()),
    ("no secondary index", False, _SECONDARY),
    ("bare table (neither)", True, _SECONDARY),
)


def sqlite_floor(n: int, tmp: Path, shuffle_addresses: bool) -> dict[str, float]:
    """Seconds SQLite takes to insert `n` new connections (BEGIN to COMMIT), per variant."""
    from store import writer as ck
    from store.schema import connect

    pairs = make_pairs(n)
    if shuffle_addresses:
        # make_pairs numbers clients in order, so the a_addr index only ever appends;
        # real clients come in no order
        for i, p in enumerate(pairs):
            c = (0x0A000000 + (i * 7919) % 16_000_000).to_bytes(4, "big")
            p.a.src = p.b.dst = c
    out: dict[str, float] = {}
    for name, no_samples, drop in FLOOR_VARIANTS:
        db = tmp / f"floor-{n}-{time.monotonic_ns()}.db"
        sink, feed = new_sink(db)
        feed.changed = list(pairs)
        sink._started = True  # the writer's thread never starts: its rows are built here
        sink.checkpoint(_Monitor())
        w = sink.writer
        w._merge(w.q.get())
        rows: list = []
        w._rows(1, lambda stmt, flat, rows=rows: rows.append((stmt, flat)))
        conn = connect(db)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        if not no_samples:
            for trigger in ck._SAMPLE_TRIGGERS:
                conn.execute(trigger)
        for index in drop:
            conn.execute(f"DROP INDEX {index}")
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        st = ck._Statements(conn)
        for stmt, flat in rows:
            st.add(stmt, flat)
        st.flush()
        conn.execute("COMMIT")
        out[name] = time.perf_counter() - t0
        conn.close()
    return out


def replay_time(cap: Path, extra: list[str]) -> tuple[float, float]:
    """Wall time, and CPU time of the monitor and all its processes (what the store costs
    even when other work on the machine makes wall times jump)."""
    cmd = [sys.executable, "-m", "iptraf_mp.app.cli", "-r", str(cap), "-B", "--json", os.devnull,
           *extra]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def documented_queries() -> list[tuple[str, str, dict[str, object]]]:
    """(where, SQL, parameters) of every example query the user is shown: the README's
    `iptraf-mp sql "SELECT ..."` lines (with their `-p NAME VALUE`) and docs/store.md's
    ```sql blocks, read from the documents so that what is timed is what they say."""
    out: list[tuple[str, str, dict[str, object]]] = []
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r'\s+iptraf-mp sql (.*)"(SELECT .*)"\s*$', line)
        if m:
            opts = shlex.split(m.group(1))
            params = {opts[i + 1]: int(v) if v.isdigit() else v
                      for i, v in ((i, opts[i + 2]) for i, o in enumerate(opts) if o == "-p")}
            out.append(("README", m.group(2), params))
    text = (ROOT / "docs" / "store.md").read_text()
    for block in text.split("```sql\n")[1:]:
        out.append(("store.md", block.split("```", 1)[0].strip().rstrip(";"), {}))
    return out


def query_store(n: int, tmp: Path) -> Path:
    """A store of `n` connections (a tenth reset, a tenth half-open, 1,000 server ports,
    20,000 servers), written as a monitor writes it: checkpoints of 100k new connections,
    then one where every connection changed (two samples each)."""
    db = tmp / f"queries-{n}.db"
    sink, feed = new_sink(db)
    mon = _Monitor()
    pairs = make_pairs(n)
    for i, p in enumerate(pairs):
        p.b.sport = p.a.dport = 1 + i % 1000
        p.a.dst = p.b.src = (0xC0A80000 + i % 20_000).to_bytes(4, "big")
        if i % 10 == 1:
            p.end, p.a.reset = "RESET", True
        elif i % 10 == 2:
            p.a.flags, p.b.packets, p.b.bytes = 0x02, 0, 0
    w = sink.writer
    for rnd in range(2):
        for start in range(0, n, 100_000):
            chunk = pairs[start:start + 100_000]
            if rnd:
                for p in chunk:
                    p.a.packets += 3
                    p.a.bytes += 1500
                    p.last_seen += 3600.0
            done = w.writes
            feed.changed = chunk
            sink.checkpoint(mon)
            while w.writes == done:
                time.sleep(0.01)
    sink.close()
    return db


def time_queries(db: Path, repeat: int) -> list[tuple[str, float, float, int]]:
    """(label, median s, best s, rows) of each documented query, on a read-only
    connection."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out = []
    for where, sql, params in documented_queries():
        times, rows = [], 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            rows = len(conn.execute(sql, params).fetchall())
            times.append(time.perf_counter() - t0)
        label = f"{where}: {' '.join(sql.split())[:60]}"
        out.append((label, statistics.median(times), min(times), rows))
    conn.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", default="10000,100000")
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--per-connection", type=int, default=50,
                    help="packets per TCP connection in the capture (gen_capture.py's default "
                         "mix is 50; fewer means more connections to store per packet)")
    ap.add_argument("--checkpoint", default="5,1",
                    help="checkpoint intervals to try with the store on (seconds)")
    ap.add_argument("--busy", action="store_true",
                    help="checkpoint cost with a second Python thread busy (the GIL shared)")
    ap.add_argument("--no-floor", dest="floor", action="store_false",
                    help="skip what SQLite alone spends on N new connections, per schema "
                         "variant (where a checkpoint's time goes)")
    ap.add_argument("--queries", type=int, default=1_000_000, metavar="N",
                    help="time the README's and docs/store.md's queries on a store of N "
                         "connections (0: skip)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as d:
        tmp = Path(d)
        if a.queries:
            t0 = time.monotonic()
            db = query_store(a.queries, tmp)
            print(f"example queries on a store of {a.queries:,} connections (built in "
                  f"{time.monotonic() - t0:.0f} s, {db.stat().st_size / 2**20:,.0f} MiB), "
                  f"{a.repeat} runs: median (best); target <= 100 ms each")
            for name, med, best, rows in time_queries(db, a.repeat):
                ok = "" if med <= 0.1 else "  (target missed)"
                print(f"  {name:<72} {med * 1e3:8.1f} ms ({best * 1e3:.1f})  {rows:>8,} rows"
                      f"{ok}")
            db.unlink()
            print()
        print("checkpoint cost (N connections changed since the previous checkpoint), "
              f"{a.repeat} runs: median (best)" + (", a second thread busy" if a.busy else ""))
        print(f"  {'N':>7} {'kind':<8} {'snapshot s':>13} {'write s':>13} {'latency s':>13} "
              f"{'WAL s':>13} {'busy s':>13} {'rows/s':>10}")
        for n in (int(x) for x in a.connections.split(",") if x.strip() not in ("", "0")):
            runs: dict[str, list[dict]] = {}
            for _ in range(a.repeat):
                for r in checkpoint_cost(n, tmp, a.busy):
                    runs.setdefault(r["kind"], []).append(r)
            for kind, rs in runs.items():
                def col(k: str, rs: list[dict] = rs) -> str:
                    v = [r[k] for r in rs]
                    return f"{statistics.median(v):.3f} ({min(v):.3f})"

                lat = statistics.median(r["latency"] for r in rs)
                ok = "" if n < 100_000 or lat < 1.0 else "  (target < 1 s missed)"
                rate = statistics.median(r["rows"] / r["write"] for r in rs)
                print(f"  {n:>7} {kind:<8} {col('snapshot'):>13} {col('write'):>13} "
                      f"{col('latency'):>13} {col('wal'):>13} {col('busy'):>13} "
                      f"{rate:>10,.0f}{ok}")
        if a.floor:
            print("\nSQLite alone: N new connections, rows built beforehand, BEGIN to COMMIT "
                  f"(the floor under the write above), {a.repeat} runs: median (best)")
            for n in (int(x) for x in a.connections.split(",") if x.strip() not in ("", "0")):
                for shuffled in (False, True):
                    floors: dict[str, list[float]] = {}
                    for _ in range(a.repeat):
                        for k, v in sqlite_floor(n, tmp, shuffled).items():
                            floors.setdefault(k, []).append(v)
                    label = "clients in no order" if shuffled else "clients in order"
                    print(f"  {n:>7} new, {label}")
                    for k, v in floors.items():
                        print(f"    {k:<34} {statistics.median(v):.3f} ({min(v):.3f}) s")
        if a.packets <= 0:
            return 0
        cap = tmp / "bench.pcap"
        subprocess.run([sys.executable, str(ROOT / "bench" / "gen_capture.py"), str(cap),
                        "--packets", str(a.packets), "--connections",
                        str(max(100, a.packets // a.per_connection))], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        print(f"\nreplay throughput, {a.packets:,} packets, {a.per_connection} per TCP "
              f"connection, {a.repeat} runs each (target: the store costs <= 15 %)")
        for shards in (["--shards", "0"], []):
            name = "one process" if shards else "pipeline (default shards)"
            modes = {"--no-db": ["--no-db"]}
            for c in a.checkpoint.split(","):
                modes[f"store, --checkpoint {c}"] = ["--checkpoint", c]
            walls: dict[str, list[float]] = {m: [] for m in modes}
            cpus: dict[str, list[float]] = {m: [] for m in modes}
            # An operator's store already exists: each timed run adds a session to a store
            # made beforehand (creating one imports sqlite-utils and runs the migrations,
            # a fixed ~0.2-0.4 s that a short replay would otherwise count as the store's).
            stores = {m: tmp / f"replay-{name[:3]}-{i}.db" for i, m in enumerate(modes)}
            for m, extra in modes.items():
                if m != "--no-db":
                    replay_time(ROOT / "fixtures" / "handshake_close.pcap",
                                [*extra, "--db", str(stores[m])])
            for _r in range(a.repeat):
                for m, extra in modes.items():
                    db = ["--db", str(stores[m])] if m != "--no-db" else []
                    wall, cpu = replay_time(cap, [*shards, *extra, *db])
                    walls[m].append(wall)
                    cpus[m].append(cpu)
            base_wall = min(walls["--no-db"])
            base_cpu = statistics.median(cpus["--no-db"])
            print(f"  {name}")
            print(f"    {'':<26} {'best wall':>9} {'packets/s':>10} {'cost':>7}   "
                  f"{'median CPU':>10} {'cost':>7}")
            for m in modes:
                wall, cpu = min(walls[m]), statistics.median(cpus[m])
                # throughput lost: 1 - (packets/s with the store) / (packets/s without)
                wc, cc = 1 - base_wall / wall, 1 - base_cpu / cpu
                note = "" if m == "--no-db" else f"{wc:>7.1%}"
                cnote = "" if m == "--no-db" else f"{cc:>7.1%}"
                print(f"    {m:<26} {wall:>8.2f}s {a.packets / wall:>10,.0f} {note:>7}   "
                      f"{cpu:>9.2f}s {cnote:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
