"""The sharded pipeline: results independent of the shard count, supervision
(killed shards and capture processes), clean exits, the shard hash, and batching.

Runs that are signalled or killed go through the real `iptraf-mp` command in a subprocess, so
what is checked is what an operator gets: exit status, stderr, the JSON, and what is left in
the process table and in /dev/shm afterwards. Everything here replays files; nothing touches a
network (the live tests are in test_live.py).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shards.batch import decode_batch
from shards.hashing import ShardPicker
from shards.protocol import CTL_END
from shards.reader import BATCH_BYTES, BATCH_PACKETS, NSTATS, ProducerConfig, run_file_reader
from shards.ring import PREFIX, SHM_DIR, Ring

from .conftest import corpus_files, need_corpus
from .helpers.compare import first_difference

# ---- building captures ---------------------------------------------------------------------
from .helpers.packets import (  # noqa: F401  (other tests take them from here too)
    ACK,
    ETH,
    FIN,
    IPV4,
    IPV6,
    MAC_A,
    MAC_B,
    PSH,
    RST,
    SYN,
    TCP,
    UDP,
    eth,
    ip4,
    ipv4,
    tcp,
    tcp4_frame,
    udp,
    write_pcap,
)


def paced_capture(path: Path, seconds: float = 20.0, per_second: int = 20) -> tuple[Path, int]:
    """TCP connections starting every 1/per_second s, each: handshake, 4 data segments 0.1 s
    apart, FIN/FIN/ACK (10 frames in ~0.7 s). Returns (path, frames). Client port = 10000 + i,
    so a record tells which connection it is and when it started (i / per_second)."""
    t0 = 1_700_000_000.0
    frames: list[tuple[float, bytes]] = []
    count = int(seconds * per_second)
    for i in range(count):
        t = t0 + i / per_second
        c, s = "10.1.0.1", f"10.2.{i % 200}.{1 + i % 250}"
        cp, sp = 10000 + i, 80
        script = [(0.0, c, SYN, 0), (0.01, s, SYN | ACK, 0), (0.02, c, ACK, 0),
                  (0.1, c, PSH | ACK, 300), (0.2, s, PSH | ACK, 1200), (0.3, c, PSH | ACK, 100),
                  (0.4, s, PSH | ACK, 1200), (0.6, c, FIN | ACK, 0), (0.61, s, FIN | ACK, 0),
                  (0.62, c, ACK, 0)]
        for dt, who, flags, n in script:
            if who == c:
                frames.append((t + dt, tcp4_frame(c, cp, s, sp, flags, n)))
            else:
                frames.append((t + dt, tcp4_frame(s, sp, c, cp, flags, n)))
    frames.sort(key=lambda x: x[0])
    return write_pcap(path, frames), len(frames)


# ---- running iptraf-mp ---------------------------------------------------------------------

def iptraf_mp_command() -> list[str]:
    """The installed console script beside this interpreter (as an operator runs it)."""
    exe = Path(sys.executable).with_name("iptraf-mp")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("iptraf-mp")
    if found is None:
        pytest.skip("the iptraf-mp command is not installed (pip install -e .)")
    return [found]


def replay_in_process(cap: Path, out: Path, shards: int) -> tuple[int, bytes]:
    """`iptraf-mp -r CAP -B --json OUT --shards N` in this process (forks its children);
    the signal handlers it installs are put back afterwards."""
    from iptraf_mp.app.cli import main

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1,
                                               signal.SIGUSR2)}
    try:
        rc = main(["-r", str(cap), "-B", "--no-db", "--shards", str(shards),
                   "--json", str(out)])
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    return rc, out.read_bytes()


def proc_state(pid: int) -> str | None:
    """The state letter of `pid`, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(b")") + 2:].split()[0].decode()


def alive(pid: int) -> bool:
    # A zombie has exited; only its parent (init, for orphans) has not reaped it yet.
    return proc_state(pid) not in (None, "Z", "X")


def children_of() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    kids = children_of()
    out: list[int] = []
    todo = [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a monitor and every process under it, then reap it (a failed test must not
    leave shards or capture processes behind)."""
    for k in descendants(proc.pid):
        try:
            os.kill(k, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()
    proc.communicate()


def segments(pid: int) -> list[str]:
    """Rings created by process `pid` (names carry the creator's pid)."""
    lead = f"{PREFIX}-{pid}-"
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(lead))


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def open_files(pid: int) -> list[str]:
    out = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
    except OSError:
        pass
    return out


def is_reaper(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except OSError:
        return False


class Run:
    """A background `iptraf-mp` and what it started."""

    def __init__(self, argv: list[str], tmp: Path, new_session: bool = False) -> None:
        self.out = tmp / "run.jsonl"
        self.argv = [*iptraf_mp_command(), *argv, "-B", "--no-db", "--json", str(self.out)]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=new_session)
        self.pid = self.proc.pid
        self.stderr = ""
        self.seen: set[int] = set()  # every descendant noticed while it ran

    def wait_running(self, children: int, timeout: float = 20.0) -> list[int]:
        """Wait until the rings exist and `children` processes (shards, capture processes
        and the segment reaper) run; returns their pids."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"iptraf-mp ended early: {self.proc.communicate()}")
            kids = [k for k in descendants(self.pid) if alive(k)]
            if segments(self.pid) and len(kids) >= children:
                return kids
            time.sleep(0.05)
        raise AssertionError(f"iptraf-mp did not start {children} children in {timeout} s")

    def reaper(self) -> int | None:
        """The segment reaper: the one child in a session of its own."""
        for k in descendants(self.pid):
            if is_reaper(k):
                return k
        return None

    def capture_process(self, capfile: Path) -> int:
        """The file reader: the only child holding the capture open."""
        for k in descendants(self.pid):
            if str(capfile) in open_files(k) and not is_reaper(k):
                return k
        raise AssertionError("no capture process holds the file")

    def shard_processes(self, capfile: Path) -> list[int]:
        reader = self.capture_process(capfile)
        return [k for k in descendants(self.pid)
                if k != reader and alive(k) and not is_reaper(k)]

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for the exit, noting every process the run starts on the way (a replacement
        shard, say: once the main process is gone its children are no longer its own)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.kill_all()
                raise AssertionError(f"iptraf-mp did not end within {timeout} s")
            self.seen.update(descendants(self.pid))
            time.sleep(0.05)
        _, self.stderr = self.proc.communicate()
        return self.proc.returncode

    def kill_all(self) -> None:
        kill_tree(self.proc)

    def records(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines()]


def assert_nothing_left(pids, creator: int | None, timeout: float = 10.0) -> None:
    """No process of the run outlives it, and (unless `creator` is None) no ring of it is
    left in /dev/shm."""
    deadline = time.monotonic() + timeout
    left: list[int] = []
    segs: list[str] = []
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        segs = segments(creator) if creator is not None else []
        if not left and not segs:
            return
        time.sleep(0.1)
    raise AssertionError(f"left behind: processes {[(p, cmdline(p)) for p in left]}, "
                         f"segments {segs}")


@pytest.fixture(scope="module")
def paced(tmp_path_factory) -> tuple[Path, int]:
    """20 s of capture, 400 connections; at --speed 4 a 5 s replay."""
    return paced_capture(tmp_path_factory.mktemp("paced") / "paced.pcap")


# ---- 1. the merged result does not depend on the shard count --------------------------------

# the two large captures take about 10 s each for the four runs
REAL_AND_LARGE = [pytest.param(p, id=p.name) for p in corpus_files("real")] + [
    pytest.param(p, id=p.name, marks=pytest.mark.slow) for p in corpus_files("large")]


@pytest.mark.parametrize("cap", REAL_AND_LARGE)
def test_replay_identical_for_any_shard_count(cap: Path, tmp_path: Path) -> None:
    """Byte-identical --json for --shards 0 (one process), 1, 2 and 4."""
    need_corpus("real")
    rc0, ref = replay_in_process(cap, tmp_path / "s0.jsonl", 0)
    assert ref.endswith(b"\n") and b'"type":"summary"' in ref.splitlines()[-1]
    for n in (1, 2, 4):
        rc, out = replay_in_process(cap, tmp_path / f"s{n}.jsonl", n)
        assert rc == rc0, f"--shards {n} exited {rc}, --shards 0 exited {rc0}"
        assert out == ref, f"--shards {n} differs from --shards 0 at {first_difference(ref, out)}"


def test_icmp_errors_spread_over_shards_still_make_one_flow(tmp_path: Path) -> None:
    """A host sends UDP to 24 closed ports; the server answers each with ICMP port
    unreachable. Each error goes to the shard of the datagram it quotes (so that shard can
    close what it quotes), yet all of them are one flow (server -> host, type 3 code 3): the
    stored flows must be the same for any shard count."""
    client, server = ip4("10.9.0.1"), ip4("10.9.0.2")
    frames = []
    t = 1_700_000_000.0
    picker = ShardPicker(4)
    shards_hit = set()
    for i in range(24):
        dgram = ipv4(client, server, 17, udp(40000 + i, 7000 + i, 10))
        frames.append((t, eth(dgram)))
        icmp = struct.pack("!BBHI", 3, 3, 0, 0) + dgram[:28]
        err = eth(ipv4(server, client, 1, icmp), smac=MAC_B, dmac=MAC_A)
        frames.append((t + 0.001, err))
        shards_hit.add(picker.pick(1, err, len(err), 0))
        t += 0.1
    assert len(shards_hit) > 1  # or this test could not fail
    cap = write_pcap(tmp_path / "unreach.pcap", frames)
    flows = {}
    for n in (0, 4):
        db = tmp_path / f"s{n}.db"
        from iptraf_mp.app.cli import main

        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM,
                                                   signal.SIGUSR1, signal.SIGUSR2)}
        try:
            assert main(["-r", str(cap), "-B", "--db", str(db), "--shards", str(n)]) == 0
        finally:
            for sig, h in saved.items():
                signal.signal(sig, h)
        conn = sqlite3.connect(db)
        flows[n] = conn.execute(
            "SELECT iface, kind, protocol, src, dst, sport, dport, icmp_type, icmp_code, "
            "packets, bytes, first_seen, last_seen FROM other_flows ORDER BY kind, src, dst, "
            "sport, dport").fetchall()
        conn.close()
    icmp_flows = [f for f in flows[0] if f[1] == "icmp"]
    assert len(icmp_flows) == 1 and icmp_flows[0][9] == 24
    assert flows[4] == flows[0]


def test_paced_capture_identical_for_any_shard_count(paced, tmp_path: Path) -> None:
    """The same on the synthetic capture the supervision tests use (many pairs retiring in
    many clock groups), so those tests' expectations rest on a checked baseline."""
    cap, frames = paced
    rc0, ref = replay_in_process(cap, tmp_path / "s0.jsonl", 0)
    recs = [json.loads(x) for x in ref.splitlines()]
    assert recs[-1]["frames"] == frames
    assert sum(r["type"] == "tcp" for r in recs) == 2 * 400
    for n in (1, 2, 4):
        rc, out = replay_in_process(cap, tmp_path / f"s{n}.jsonl", n)
        assert (rc, out) == (rc0, ref), first_difference(ref, out)


# ---- 2. supervision: killed shard, killed capture process -----------------------------------

def test_killed_shard_is_restarted_and_the_loss_reported(paced, tmp_path: Path) -> None:
    cap, frames = paced
    run = Run(["-r", str(cap), "--speed", "4", "--shards", "2"], tmp_path)
    try:
        kids = run.wait_running(children=4)
        time.sleep(1.5)  # about 6 s of capture time: each shard holds pairs by now
        victim = run.shard_processes(cap)[0]
        os.kill(victim, signal.SIGKILL)
        # The supervisor replaces it: a new child appears while the replay goes on.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            new = [k for k in descendants(run.pid) if k not in kids and alive(k)]
            if new:
                kids += new
                break
            time.sleep(0.05)
        else:
            raise AssertionError("no replacement shard was started")
        rc = run.finish()
    except BaseException:
        run.kill_all()
        raise
    assert rc == 1, run.stderr
    msgs = [ln for ln in run.stderr.splitlines() if "died" in ln]
    assert len(msgs) == 1 and "shard" in msgs[0] and "exit code -9" in msgs[0], run.stderr
    lost = int(msgs[0].split("restarted, ")[1].split()[0])
    assert lost > 0, msgs[0]
    recs = run.records()
    summary = recs[-1]
    assert summary["type"] == "summary"
    tcp = [r for r in recs if r["type"] == "tcp"]
    # The lost pairs are written with their last published state; those still open then
    # are marked LOST (closed ones keep their end: that was their final state anyway).
    lost_recs = [r for r in tcp if r["end"] == "LOST"]
    assert len(lost_recs) <= 2 * lost
    # What the dead shard had not yet published is gone; nothing is counted twice.
    assert summary["frames"] <= frames
    # The run went on: the last quarter of the connections (started 10 s of capture time,
    # 2.5 s of wall time, after the kill) is complete, on both shards.
    by_port = {}
    for r in tcp:
        if r["src"] == "10.1.0.1":
            by_port[r["sport"]] = r
    late = range(10000 + 300, 10000 + 400)
    assert all(p in by_port for p in late), sorted(set(late) - set(by_port))[:10]
    assert all(by_port[p]["packets"] == 6 and by_port[p]["end"] != "LOST" for p in late)
    assert_nothing_left({*kids, *run.seen, run.pid}, run.pid)


def test_killed_capture_process_ends_the_run_with_the_loss_reported(paced,
                                                                    tmp_path: Path) -> None:
    cap, frames = paced
    run = Run(["-r", str(cap), "--speed", "4", "--shards", "2"], tmp_path)
    try:
        kids = run.wait_running(children=4)
        time.sleep(1.0)
        started = time.monotonic()
        os.kill(run.capture_process(cap), signal.SIGKILL)
        rc = run.finish(timeout=30)
    except BaseException:
        run.kill_all()
        raise
    # It ends at once rather than at the end of the 5 s replay, and says why.
    assert time.monotonic() - started < 3.5
    assert rc == 1, run.stderr
    assert f"capture of {cap} died (exit code -9)" in run.stderr
    recs = run.records()
    assert recs and recs[-1]["type"] == "summary"
    # What was read before the kill is all there is: the shards' state, flushed.
    assert 0 < recs[-1]["frames"] < frames
    assert_nothing_left({*kids, *run.seen, run.pid}, run.pid)


def test_stop_gives_up_on_a_stuck_shard(paced, monkeypatch) -> None:
    """A shard that never finishes (stopped here with SIGSTOP) cannot hold the run forever
    after a stop: after the grace period it is killed and its connections reported lost."""
    from iptraf_mp.core.engine import Settings
    from shards import supervisor
    from shards.supervisor import Pipeline, Source

    monkeypatch.setattr(supervisor, "STOP_GRACE", 1.0)
    cap, _frames = paced
    run = Pipeline([Source(path=str(cap))], 2, Settings(), speed=4.0)
    try:
        run.start()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            run.poll(0.1)
        os.kill(run.shard_procs[1].pid, signal.SIGSTOP)
        run.stop()
        stopped = time.monotonic()
        while run.poll(0.1):
            assert time.monotonic() - stopped < 20, "the run did not end"
        took = time.monotonic() - stopped
        errors = run.counters().errors
    finally:
        run.close()
    assert 1.0 <= took < 10
    assert len(errors) == 1 and errors[0].startswith("shard 1 did not stop within 1 s; killed")
    assert all(run.merger.final)


# ---- 3. no orphan processes, no leaked shared memory, whatever the exit ---------------------

@pytest.mark.parametrize("how", ["normal", "sigint", "sigterm", "kill-shard", "kill-capture",
                                 "kill-main"])
def test_no_orphans_and_no_leaked_segments(how: str, paced, tmp_path: Path) -> None:
    cap, _frames = paced
    speed = "40" if how == "normal" else "4"
    run = Run(["-r", str(cap), "--speed", speed, "--shards", "2"], tmp_path)
    try:
        kids = run.wait_running(children=4)
        assert segments(run.pid)
        time.sleep(0.5)
        if how == "sigint":
            run.proc.send_signal(signal.SIGINT)
        elif how == "sigterm":
            run.proc.send_signal(signal.SIGTERM)
        elif how == "kill-shard":
            os.kill(run.shard_processes(cap)[1], signal.SIGKILL)
        elif how == "kill-capture":
            os.kill(run.capture_process(cap), signal.SIGKILL)
        elif how == "kill-main":
            run.proc.kill()
        rc = run.finish()
    except BaseException:
        run.kill_all()
        raise
    expected_rc = {"normal": 0, "sigint": 0, "sigterm": 0, "kill-shard": 1, "kill-capture": 1,
                   "kill-main": -signal.SIGKILL}[how]
    assert rc == expected_rc, run.stderr
    if how != "kill-main":
        recs = run.records()
        assert recs and recs[-1]["type"] == "summary", run.stderr
    # kill-main: the children get SIGKILL from the kernel (PR_SET_PDEATHSIG) and the
    # segment reaper removes the rings when the last of them has gone.
    assert_nothing_left({*kids, *run.seen, run.pid}, run.pid)


def test_stale_segments_are_removed_by_the_next_start(paced, tmp_path: Path) -> None:
    """SIGKILL of the whole process group and of the segment reaper (in a session of its own,
    which a group kill does not reach): nothing is left to remove the rings, so the next
    iptraf-mp does (cleanup_stale)."""
    cap, _frames = paced
    run = Run(["-r", str(cap), "--speed", "4", "--shards", "2"], tmp_path, new_session=True)
    try:
        kids = run.wait_running(children=4)
        reaper = run.reaper()
        assert reaper is not None
        os.kill(reaper, signal.SIGKILL)
        os.killpg(run.pid, signal.SIGKILL)
        run.finish()
    except BaseException:
        run.kill_all()
        raise
    stale = segments(run.pid)
    assert stale, "the rings were already gone: nothing to test"
    assert_nothing_left({*kids, *run.seen, run.pid}, None)
    small, _ = paced_capture(tmp_path / "small.pcap", seconds=1)
    nxt = Run(["-r", str(small), "--shards", "1"], tmp_path)
    assert nxt.finish() == 0, nxt.stderr
    assert not [s for s in stale if os.path.exists(os.path.join(SHM_DIR, s))]


# ---- 4. the shard hash ----------------------------------------------------------------------

addr4 = st.binary(min_size=4, max_size=4)
addr6 = st.binary(min_size=16, max_size=16)
port = st.integers(0, 65535)
nshards = st.sampled_from([2, 3, 4, 7, 16])


def tcp6_frame(src: bytes, sport: int, dst: bytes, dport: int) -> bytes:
    seg = tcp(sport, dport, ACK)
    return eth(IPV6.pack(6 << 28, len(seg), 6, 64, src, dst) + seg, 0x86DD)


def vlan(frame: bytes, vid: int) -> bytes:
    """The same frame inside an 802.1Q tag."""
    return frame[:12] + struct.pack("!HH", 0x8100, vid) + frame[12:]


def icmp_unreachable(router: bytes, to: bytes, quoted_ip: bytes) -> bytes:
    """ICMP destination unreachable (port) from `router`, quoting an IP header + 8 bytes."""
    body = struct.pack("!BBHI", 3, 3, 0, 0) + quoted_ip[:28]
    return eth(ipv4(router, to, 1, body))


def icmp6_unreachable(router: bytes, to: bytes, quoted_ip6: bytes) -> bytes:
    body = struct.pack("!BBHI", 1, 4, 0, 0) + quoted_ip6[:48]
    return eth(IPV6.pack(6 << 28, len(body), 58, 64, router, to) + body, 0x86DD)


def fragments(src: bytes, dst: bytes, proto: int, l4: bytes, ipid: int,
              size: int = 64) -> list[bytes]:
    """`l4` (transport header and data) split into IPv4 fragments of `size` bytes."""
    out = []
    for off in range(0, len(l4), size):
        part = l4[off:off + size]
        more = off + size < len(l4)
        word = (0x2000 if more else 0) | (off // 8)
        out.append(eth(ipv4(src, dst, proto, part, ipid=ipid, frag=word)))
    return out


def picks(n: int, frames: list[bytes], ifindex: int = 0) -> set[int]:
    p = ShardPicker(n)
    return {p.pick(1, f, len(f), ifindex) for f in frames}


@settings(max_examples=200, deadline=None)
@given(a=addr4, b=addr4, ap=port, bp=port, n=nshards, vid=st.integers(1, 4094))
def test_both_directions_reach_one_shard_ipv4(a, b, ap, bp, n, vid) -> None:
    ab = eth(ipv4(a, b, 6, tcp(ap, bp, ACK)))
    ba = eth(ipv4(b, a, 6, tcp(bp, ap, ACK)))
    assert len(picks(n, [ab, ba])) == 1
    assert len(picks(n, [vlan(ab, vid), vlan(ba, vid)])) == 1
    ub = eth(ipv4(a, b, 17, udp(ap, bp, 10)))
    ua = eth(ipv4(b, a, 17, udp(bp, ap, 10)))
    assert len(picks(n, [ub, ua])) == 1


@settings(max_examples=100, deadline=None)
@given(a=addr6, b=addr6, ap=port, bp=port, n=nshards)
def test_both_directions_reach_one_shard_ipv6(a, b, ap, bp, n) -> None:
    assert len(picks(n, [tcp6_frame(a, ap, b, bp), tcp6_frame(b, bp, a, ap)])) == 1


@settings(max_examples=200, deadline=None)
@given(a=addr4, b=addr4, router=addr4, ap=port, bp=port, n=nshards)
def test_icmp_errors_reach_the_shard_of_the_connection(a, b, router, ap, bp, n) -> None:
    """The shard that holds a→b also gets the unreachable a router sends back to a about
    a packet of it (what closes the pair, rule 11), UDP and TCP, v4 and v6."""
    for proto, l4 in ((6, tcp(ap, bp, SYN)), (17, udp(ap, bp, 4))):
        sent = ipv4(a, b, proto, l4)
        back = tcp(bp, ap, ACK) if proto == 6 else udp(bp, ap, 4)
        conn = [eth(sent), eth(ipv4(b, a, proto, back))]
        assert len(picks(n, [*conn, icmp_unreachable(router, a, sent)])) == 1
        assert len(picks(n, [*conn, icmp_unreachable(b, a, sent)])) == 1


@settings(max_examples=100, deadline=None)
@given(a=addr6, b=addr6, router=addr6, ap=port, bp=port, n=nshards)
def test_icmpv6_errors_reach_the_shard_of_the_connection(a, b, router, ap, bp, n) -> None:
    seg = tcp(ap, bp, SYN)
    sent = IPV6.pack(6 << 28, len(seg), 6, 64, a, b) + seg
    frames = [tcp6_frame(a, ap, b, bp), tcp6_frame(b, bp, a, ap),
              icmp6_unreachable(router, a, sent)]
    assert len(picks(n, frames)) == 1


@settings(max_examples=200, deadline=None)
@given(a=addr4, b=addr4, ap=port, bp=port, n=nshards, ipid=st.integers(0, 65535),
       size=st.sampled_from([24, 64, 512]))
def test_later_fragments_follow_the_first(a, b, ap, bp, n, ipid, size) -> None:
    """Later IPv4 fragments carry no ports: they go where the first fragment (and the rest of
    the connection, both directions) went. (A first fragment too short for its transport
    header is malformed, belongs to no connection, and neither do its followers: where those
    go cannot change a result, so they are not checked here.)"""
    for proto, l4, sz in ((17, udp(ap, bp, 1400), size),
                          (6, tcp(ap, bp, PSH | ACK, 1400), size)):
        frags = fragments(a, b, proto, l4, ipid, sz)
        assert len(frags) > 1
        reply = eth(ipv4(b, a, proto, tcp(bp, ap, ACK) if proto == 6 else udp(bp, ap, 4)))
        whole = eth(ipv4(a, b, proto, l4[:40]))
        p = ShardPicker(n)
        shards = {p.pick(1, f, len(f), 0) for f in [whole, reply, *frags]}
        assert len(shards) == 1


def test_pick_spreads_connections_and_separates_interfaces() -> None:
    """Not everything on one shard (the hash does spread), and the interface is part of it."""
    frames = [tcp4_frame("10.0.0.1", 1024 + i, "10.0.0.2", 80) for i in range(1000)]
    p = ShardPicker(4)
    counts = [0] * 4
    for f in frames:
        counts[p.pick(1, f, len(f), 0)] += 1
    assert min(counts) > 150, counts
    moved = sum(p.pick(1, f, len(f), 0) != p.pick(1, f, len(f), 1) for f in frames)
    assert moved > 500


def test_one_shard_needs_no_hash() -> None:
    f = tcp4_frame("10.0.0.1", 1, "10.0.0.2", 2)
    assert ShardPicker(1).pick(1, f, len(f), 0) == 0
    assert ShardPicker(1).pick(1, b"", 0, 0) == 0


# ---- 5. hand-over in batches ----------------------------------------------------------------

def _reader_child(cfg, path, rings, stats, flush_gen, errors, stop) -> None:
    run_file_reader(cfg, path, rings, stats, flush_gen, errors, stop)


def test_reader_hands_over_full_batches_only(tmp_path: Path) -> None:
    """A file replay hands each shard full batches (BATCH_PACKETS records or BATCH_BYTES),
    never single packets; only each ring's last batch, which ends with END, may be short."""
    cap, frames = paced_capture(tmp_path / "b.pcap", seconds=25)
    ctx = mp.get_context("fork")
    n = 2
    rings = [Ring.create(8 << 20, ctx=ctx) for _ in range(n)]
    stats = ctx.Array("Q", NSTATS, lock=False)
    flush_gen = ctx.Array("Q", 2, lock=False)
    rx, tx = ctx.Pipe(duplex=False)
    stop = ctx.Event()
    cfg = ProducerConfig(0, n, live=False)
    proc = ctx.Process(target=_reader_child,
                       args=(cfg, str(cap), rings, stats, flush_gen, tx, stop), daemon=True)
    batches: list[list[list]] = [[] for _ in range(n)]
    try:
        proc.start()
        ended = [False] * n
        deadline = time.monotonic() + 60
        while not all(ended) and time.monotonic() < deadline:
            for s, ring in enumerate(rings):
                buf = ring.get(0.01)
                if buf is None:
                    continue
                recs = decode_batch(buf)
                batches[s].append([len(recs), len(buf)])
                if recs[-1][3] == CTL_END:
                    ended[s] = True
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
        for ring in rings:
            ring.close()
            ring.unlink()
    assert all(ended)
    packets = 0
    for s in range(n):
        assert len(batches[s]) >= 4
        for count, nbytes in batches[s][:-1]:
            assert count >= BATCH_PACKETS or nbytes >= BATCH_BYTES
        packets += sum(c for c, _ in batches[s])
    assert packets >= frames  # frames plus control records (ticks, interface, END)

