"""Nothing lost: recordings, outputs, signals and inputs under faults and hostile files.

Every case runs the real `iptraf-mp` and checks what an operator gets: the exit status, one
line on stderr per problem and no traceback, the JSON summary, the store's session closed,
and no process or /dev/shm segment left behind. Full disks are small tmpfs mounts (root) or
a file-size limit (RLIMIT_FSIZE: the same ENOSPC-like failure, EFBIG, without root).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iptraf_mp.capture.capfile import TS_MAX, TS_MIN, open_capture

from .conftest import CORPUS, FIXTURES
from .test_capfile import ng_epb, ng_idb, ng_shb
from .test_pipeline import descendants, iptraf_mp_command, segments, tcp4_frame, write_pcap

NEED_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mounts a tmpfs")


def run(argv: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*iptraf_mp_command(), *argv], capture_output=True, text=True,
                          timeout=timeout, **kw)


def assert_clean_stderr(err: str, lines: int | None = None, naming: str = "") -> list[str]:
    """No traceback; every line is iptraf-mp's own; `lines` of them name `naming`."""
    assert "Traceback" not in err, err
    got = [ln for ln in err.splitlines() if ln.strip()]
    for ln in got:
        assert ln.startswith("iptraf-mp: "), err
    if lines is not None:
        hits = [ln for ln in got if naming in ln]
        assert len(hits) >= lines, err
    return got


def summary_of(path: Path) -> dict:
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    assert recs and recs[-1]["type"] == "summary", "no JSON summary"
    return recs[-1]


def session_of(db: Path) -> tuple[str, int]:
    with contextlib.closing(sqlite3.connect(db)) as c:
        return c.execute("SELECT status, clean FROM sessions ORDER BY id DESC").fetchone()


def frames_in(path: Path) -> int:
    with open_capture(str(path)) as r:
        return sum(1 for _ in r)


def big_capture(path: Path, frames: int = 13000, size: int = 1400) -> Path:
    """Over 16 MiB: 200 connections of data segments, 1 ms apart."""
    t0 = 1_700_000_000.0
    out = []
    for i in range(frames):
        c = i % 200
        out.append((t0 + i / 1000, tcp4_frame("10.0.0.1", 20000 + c, "10.0.1.1", 80,
                                              0x18, size)))
    return write_pcap(path, out)


def many_connections(path: Path, n: int = 20000) -> Path:
    """n connections of three frames (SYN, SYN/ACK, ACK with data): outputs of megabytes."""
    t0 = 1_700_000_000.0
    out = []
    for i in range(n):
        c, s = f"10.{1 + i // 60000}.{i // 250 % 240}.{1 + i % 250}", "10.200.0.1"
        t = t0 + i / 1000
        out += [(t, tcp4_frame(c, 30000 + i % 30000, s, 80, 0x02)),
                (t + 0.0001, tcp4_frame(s, 80, c, 30000 + i % 30000, 0x12)),
                (t + 0.0002, tcp4_frame(c, 30000 + i % 30000, s, 80, 0x18, 100))]
    return write_pcap(path, out)


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    return many_connections(tmp_path_factory.mktemp("many") / "many.pcap")


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    p = big_capture(tmp_path_factory.mktemp("big") / "big.pcap")
    assert p.stat().st_size > 16 << 20
    return p


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True, capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


# ---- 2. -w: a recording is never limited by a ring record, nor kills a capture -------------

def test_recording_of_a_capture_over_16_mib_is_complete(big, tmp_path):
    """Before: the recorder's batch held the whole replay and the ring refused it (16 MiB):
    a 180-byte pcapng and exit 0."""
    out = tmp_path / "rec.pcapng"
    p = run(["-r", str(big), "-B", "--no-db", "-w", str(out), "--json", str(tmp_path / "j")])
    assert p.returncode == 0, p.stderr
    assert_clean_stderr(p.stderr)
    assert frames_in(out) == frames_in(big) == 13000


def test_live_capture_never_waits_for_a_lagging_recorder():
    """A recording ring with no room: the capture process goes on, the frames left out of
    the recording are counted (before, it waited for the writer, and a full batch over the
    ring's limit killed it)."""
    from shards.reader import NSTATS, ST_REC_DROPPED, Producer, ProducerConfig

    class Full:
        def put(self, _payload) -> bool:
            return False

    class Taken:
        def __init__(self) -> None:
            self.payloads: list[bytes] = []

        def put(self, payload) -> bool:
            self.payloads.append(payload)
            return True

    stats = [0] * NSTATS
    shard = Taken()
    prod = Producer(ProducerConfig(0, 1, live=True), [shard], stats, [0, 0], record=Full())
    frame = tcp4_frame("10.0.0.1", 1, "10.0.0.2", 2, 0x10, 1000)
    t0 = time.monotonic()
    for n in range(5000):
        prod.record_frame(n, 1.0, len(frame), 0, frame, wait=False)
        prod.builders[0].append(n, 1.0, len(frame), 0, frame)
    prod.send_all(wait=False)
    assert time.monotonic() - t0 < 5.0  # it never waited
    assert stats[ST_REC_DROPPED] == 5000
    assert shard.payloads  # the shards still got every batch


@NEED_ROOT
def test_recording_on_a_full_disk_stops_with_one_line_and_stays_valid(big, tmp_path):
    """The recording's disk fills up: one line, the counting goes on (every frame in the
    JSON summary), the pcapng is valid up to the last whole block, the exit status says so.
    Before: the recorder thread died, exit 0."""
    j = tmp_path / "out.jsonl"
    with tmpfs(tmp_path / "small", "3m") as small:
        out = small / "rec.pcapng"
        p = run(["-r", str(big), "-B", "--no-db", "-w", str(out), "--json", str(j)])
        copy = tmp_path / "rec.pcapng"
        copy.write_bytes(out.read_bytes())
    out = copy
    assert p.returncode == 1, p.stderr
    assert_clean_stderr(p.stderr, 1, "-w ")
    assert summary_of(j)["frames"] == 13000
    got = frames_in(out)  # our reader: raises on a torn block
    assert 0 < got < 13000
    tshark = subprocess.run(["capinfos", "-c", "-M", str(out)], capture_output=True, text=True)
    assert tshark.returncode == 0 and f"{got}" in tshark.stdout, tshark.stdout + tshark.stderr


# ---- 3. write errors on --json, -L, -w: one line, the rest finishes, exit non-zero ---------

@NEED_ROOT
@pytest.mark.parametrize("flag", ["--json", "-L", "-w"])
def test_output_on_a_full_disk(flag, many, big, tmp_path):
    """Before: a traceback from the main process, the JSON summary lost, the session left
    `running`."""
    db = tmp_path / "flows.db"
    with tmpfs(tmp_path / "small", "2m") as small:
        bad = small / "out"
        cap = big if flag == "-w" else many
        frames = frames_in(cap)
        argv = ["-r", str(cap), "-B", "--db", str(db), flag, str(bad)]
        good = tmp_path / "good.jsonl"
        if flag != "--json":
            argv += ["--json", str(good)]
        else:
            argv += ["-L", str(tmp_path / "good.log")]
        p = run(argv)
    assert p.returncode == 1, p.stderr
    assert_clean_stderr(p.stderr, 1, f"{flag} {bad}")
    if flag != "--json":
        assert summary_of(good)["frames"] == frames  # the other output finished
    else:
        assert "IP traffic monitor stopped" in (tmp_path / "good.log").read_text()
    assert session_of(db) == ("closed", 1)  # the final checkpoint and the session closed
    with contextlib.closing(sqlite3.connect(db)) as c:
        assert c.execute("SELECT frames FROM counters WHERE final = 1").fetchone()[0] == frames


@NEED_ROOT
def test_lost_checkpoints_fail_the_exit_status(tmp_path):
    """The store's disk fills up once the run has begun: the checkpoints fail, the monitor
    goes on, and the exit status says the history was not all written. Before: exit 0."""
    cap = big_capture(tmp_path / "c.pcap", frames=3000, size=100)  # 3 s of capture
    j = tmp_path / "j.jsonl"
    with tmpfs(tmp_path / "small", "1m") as small:
        db = small / "flows.db"
        p = subprocess.Popen([*iptraf_mp_command(), "-r", str(cap), "-B", "--speed", "1",
                              "--db", str(db), "--checkpoint", "0.2", "--json", str(j)],
                             stderr=subprocess.PIPE, text=True)
        first = p.stderr.readline()
        assert "flow store" in first, first
        with open(small / "filler", "wb") as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        err = first + p.stderr.read()
        p.wait(60)
    assert p.returncode == 1, err
    assert_clean_stderr(err, 1, "checkpoints")
    assert summary_of(j)["frames"] == 3000  # the counting went on


# ---- 4. hostile timestamps: every output takes them ---------------------------------------

def hostile_times(path: Path) -> Path:
    frame = tcp4_frame("10.0.0.1", 1000, "10.0.0.2", 80, 0x02)
    blocks = [ng_shb()]
    cases = [dict(tsoffset=2**63 - 1), dict(tsoffset=-(2**62)), dict(tsresol=0),
             dict(tsresol=0x80 | 63)]
    for i, opts in enumerate(cases):
        blocks.append(ng_idb(1, 0, name=f"eth{i}", **opts))
    for i in range(len(cases)):
        blocks.append(ng_epb(i, 2**64 - 1, frame))
        blocks.append(ng_epb(i, 1_700_000_000_000_000, frame))
    path.write_bytes(b"".join(blocks))
    return path


@pytest.mark.parametrize("shards", ["0", "2"])
def test_hostile_timestamps_reach_every_output_clamped(tmp_path, shards):
    cap = hostile_times(tmp_path / "t.pcapng")
    j, log, rec, db = (tmp_path / n for n in ("j.jsonl", "l.log", "r.pcapng", "f.db"))
    p = run(["-r", str(cap), "-B", "--shards", shards, "--json", str(j), "-L", str(log),
             "-w", str(rec), "--db", str(db)])
    assert p.returncode == 0, p.stderr
    assert_clean_stderr(p.stderr)
    assert summary_of(j)["frames"] == 8
    for r in (json.loads(x) for x in j.read_text().splitlines()):
        for k in ("first_seen", "last_seen"):
            if r.get(k) is not None:
                assert TS_MIN <= r[k] <= TS_MAX
    assert frames_in(rec) == 8
    assert session_of(db) == ("closed", 1)
    assert log.read_text().count("TCP;") >= 1


# ---- 5. interface numbers never meet control records ----------------------------------------

def many_interfaces(path: Path, n: int, packet_on: int) -> Path:
    frame = tcp4_frame("10.0.0.1", 1000, "10.0.0.2", 80, 0x02)
    idb = ng_idb(1, 0)
    with open(path, "wb") as fh:
        fh.write(ng_shb())
        fh.write(idb * n)
        fh.write(ng_epb(0, 1_700_000_000_000_000, frame))
        fh.write(ng_epb(packet_on, 1_700_000_001_000_000, frame))
    return path


def test_65534_interfaces_replay_with_shards(tmp_path):
    """Interface 0xFFFD was taken for the END record: the replay hung for good."""
    cap = many_interfaces(tmp_path / "m.pcapng", 65534, 0xFFFD)
    j = tmp_path / "j.jsonl"
    p = run(["-r", str(cap), "-B", "--no-db", "--shards", "2", "--json", str(j)], timeout=60)
    assert p.returncode == 0, p.stderr
    assert summary_of(j)["frames"] == 2


@pytest.mark.parametrize("shards", ["0", "2"])
def test_more_interfaces_than_the_limit_is_one_line(tmp_path, shards):
    """65,537 interfaces: before, the capture process died on struct.error."""
    cap = many_interfaces(tmp_path / "m.pcapng", 65537, 0)
    j = tmp_path / "j.jsonl"
    p = run(["-r", str(cap), "-B", "--no-db", "--shards", shards, "--json", str(j)],
            timeout=60)
    assert p.returncode == 2  # refused, as a bad command line is
    lines = assert_clean_stderr(p.stderr)
    assert len(lines) == 1 and "65536 interfaces" in lines[0], p.stderr


# ---- 6. inputs and outputs that collide; pipes, FIFOs and stdin ---------------------------

def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("flag", ["-w", "--json", "-L"])
def test_output_naming_the_input_is_refused_untouched(tmp_path, flag):
    cap = tmp_path / "in.pcap"
    cap.write_bytes((FIXTURES / "timeout.pcap").read_bytes())
    before = digest(cap)
    p = run(["-r", str(cap), "-B", "--no-db", flag, str(tmp_path / "." / "in.pcap")])
    assert p.returncode == 2
    assert len(assert_clean_stderr(p.stderr, 1, "file being read")) == 1
    assert digest(cap) == before


def test_foreign_sqlite_refused_without_changing_a_byte(tmp_path):
    db = tmp_path / "theirs.db"
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.execute("CREATE TABLE accounts (name TEXT)")
        c.execute("INSERT INTO accounts VALUES ('x')")
        c.commit()
    before = digest(db)
    keep = tmp_path / "keep.jsonl"
    keep.write_text("what was there\n")
    p = run(["-r", str(FIXTURES / "timeout.pcap"), "-B", "--db", str(db), "--json", str(keep),
             "-w", str(tmp_path / "new.pcapng")])
    assert p.returncode == 2
    assert len(assert_clean_stderr(p.stderr, 1, "not an iptraf-mp flow store")) == 1
    assert digest(db) == before and not list(tmp_path.glob("theirs.db-*"))
    assert keep.read_text() == "what was there\n"  # never truncated before the refusal
    assert not (tmp_path / "new.pcapng").exists()  # nor a recording begun


def reference_json(cap: Path, tmp_path: Path) -> dict:
    out = tmp_path / "ref.jsonl"
    assert run(["-r", str(cap), "-B", "--no-db", "--shards", "0", "--json", str(out)]
               ).returncode == 0
    return summary_of(out)


@pytest.mark.parametrize("shards", ["0", "2"])
@pytest.mark.parametrize("how", ["fifo", "stdin-dash", "dev-stdin"])
def test_pipes_fifos_and_stdin_are_read_as_tcpdump_reads_them(tmp_path, shards, how):
    cap = FIXTURES / "two_interfaces.pcapng"
    ref = reference_json(cap, tmp_path)
    j = tmp_path / "j.jsonl"
    if how == "fifo":
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)

        def feed() -> None:
            with open(fifo, "wb") as fh:
                fh.write(cap.read_bytes())

        t = threading.Thread(target=feed)
        t.start()
        p = run(["-r", str(fifo), "-B", "--no-db", "--shards", shards, "--json", str(j)],
                timeout=60)
        t.join(10)
    else:
        src = "-" if how == "stdin-dash" else "/dev/stdin"
        with open(cap, "rb") as fh:
            p = run(["-r", src, "-B", "--no-db", "--shards", shards, "--json", str(j)],
                    timeout=60, stdin=fh)
    assert p.returncode == 0, p.stderr
    assert summary_of(j) == ref


def test_fifo_without_a_writer_ends_on_sigterm(tmp_path):
    """Before: --shards 0 hung in open() and ignored SIGTERM (killed after 10 minutes)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    p = subprocess.Popen([*iptraf_mp_command(), "-r", str(fifo), "-B", "--no-db", "--shards",
                          "0", "--json", str(tmp_path / "j")], stderr=subprocess.PIPE,
                         text=True)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    p.wait(10)
    assert p.returncode != 0  # it ended, before anything was read or written


def test_truncated_gzip_gives_what_was_read(tmp_path):
    src = CORPUS / "real" / "ssh_ssh.pcap"
    if not src.exists():
        pytest.skip(f"{src} absent (../shared not beside the repo)")
    import gzip

    packed = gzip.compress(src.read_bytes())
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    tshark = subprocess.run(["tshark", "-r", str(cut)], capture_output=True, text=True)
    expected = len(tshark.stdout.splitlines())
    assert expected > 100
    j = tmp_path / "j.jsonl"
    p = run(["-r", str(cut), "-B", "--no-db", "--json", str(j)])
    assert p.returncode == 1  # the file ended badly: said, in one line
    assert len(assert_clean_stderr(p.stderr, 1, "truncated")) == 1
    assert summary_of(j)["frames"] == expected


# ---- 7. signals: every one that ends a run ends it as SIGTERM does -------------------------

@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM, signal.SIGINT,
                                 signal.SIGUSR2], ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("shards", ["0", "2"])
def test_signal_to_the_process_group_ends_the_run_cleanly(tmp_path, sig, shards):
    """An ssh logout sends SIGHUP to the whole foreground process group. Before: no summary,
    no final checkpoint, the session stayed `running`."""
    cap = big_capture(tmp_path / "c.pcap", frames=4000, size=100)  # 4 s of capture
    j, db = tmp_path / "j.jsonl", tmp_path / "f.db"
    p = subprocess.Popen([*iptraf_mp_command(), "-r", str(cap), "-B", "--speed", "1",
                          "--shards", shards, "--json", str(j), "--db", str(db)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    time.sleep(1.5)
    kids = descendants(p.pid)
    os.killpg(p.pid, sig)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert_clean_stderr(err)
    assert 0 < summary_of(j)["frames"] < 4000
    assert session_of(db) == ("closed", 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{k}").exists() for k in kids):
        time.sleep(0.1)
    assert not [k for k in kids if Path(f"/proc/{k}/stat").exists()
                and Path(f"/proc/{k}/stat").read_text().split()[2] != "Z"]
    assert segments(p.pid) == []


# ---- a stalled capture process -----------------------------------------------------------

def test_stalled_capture_process_loses_nothing_from_a_file(big, tmp_path):
    """SIGSTOP the capture process mid-replay for 2 s: a replay waits, never drops."""
    j = tmp_path / "j.jsonl"
    rec = tmp_path / "r.pcapng"
    p = subprocess.Popen([*iptraf_mp_command(), "-r", str(big), "-B", "--no-db", "--speed",
                          "4", "--shards", "2", "--json", str(j), "-w", str(rec)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    reader = None
    for k in descendants(p.pid):
        with contextlib.suppress(OSError):
            if any(os.readlink(f"/proc/{k}/fd/{fd}") == str(big)
                   for fd in os.listdir(f"/proc/{k}/fd")):
                reader = k
    assert reader is not None
    os.kill(reader, signal.SIGSTOP)
    time.sleep(2.0)
    os.kill(reader, signal.SIGCONT)
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert summary_of(j)["frames"] == 13000
    assert frames_in(rec) == 13000


def test_bigger_frames_than_a_ring_record_are_recorded_cut_to_the_snaplen(tmp_path):
    cap = tmp_path / "jumbo.pcap"
    frame = b"\x02" * 12 + b"\x88\xb5" + bytes(20_000_000)  # 20 MB, more than a ring holds
    with open(cap, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 0x7FFFFFFF, 1))
        fh.write(struct.pack("<IIII", 1_700_000_000, 0, len(frame), len(frame)) + frame)
    rec = tmp_path / "r.pcapng"
    p = run(["-r", str(cap), "-B", "--no-db", "-w", str(rec), "--json", str(tmp_path / "j")])
    assert p.returncode == 0, p.stderr
    with open_capture(str(rec)) as r:
        (_ts, _i, data, wirelen), = list(r)
    assert len(data) == 262144 and wirelen == len(frame)


# ---- 8. -Z: no process of the run keeps root or a capability --------------------------------

def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


@NEED_ROOT
def test_drop_privileges_leaves_no_process_with_root_or_capabilities(tmp_path):
    """Before: multiprocessing's resource tracker, started before the drop, stayed root with
    every capability (CapEff 000001fffeffffff); and `--db NEW` crashed on an import made
    after the drop, leaving a stub store that broke every later run."""
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    work = Path(tempfile.mkdtemp(prefix="iptraf-mp-z-", dir="/tmp"))  # pytest's is root's
    os.chmod(work, 0o777)
    cap = big_capture(tmp_path / "c.pcap", frames=3000, size=100)
    db, j = work / "new.db", tmp_path / "j.jsonl"
    p = subprocess.Popen([*iptraf_mp_command(), "-r", str(cap), "-B", "--speed", "1",
                          "--shards", "2", "-Z", "nobody", "--db", str(db), "--json", str(j)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    procs = [p.pid, *descendants(p.pid)]
    seen = []
    for pid in procs:
        with contextlib.suppress(OSError):
            st = proc_status(pid)
            seen.append(pid)
            assert st["Uid"].split() == [str(nobody.pw_uid)] * 4, (pid, st["Uid"])
            for k in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
                assert int(st[k], 16) == 0, (pid, k, st[k])
            assert st["NoNewPrivs"] == "1", pid
    assert len(seen) >= 4  # main, reaper, two shards, the capture process
    _out, err = p.communicate(timeout=60)
    try:
        assert p.returncode == 0, err
        assert session_of(db) == ("closed", 1)
        assert summary_of(j)["frames"] == 3000
        assert db.stat().st_uid == nobody.pw_uid
    finally:
        shutil.rmtree(work, ignore_errors=True)


@NEED_ROOT
def test_drop_privileges_refuses_a_store_the_user_cannot_write_before_starting(tmp_path):
    """The default store under root's home: before, it failed late ("Permission denied")
    after the capture had begun, and the --json file was truncated first."""
    j = tmp_path / "keep.jsonl"
    j.write_text("kept\n")
    p = run(["-r", str(FIXTURES / "timeout.pcap"), "-B", "-Z", "nobody", "--json", str(j)],
            env={**os.environ, "HOME": "/root", "XDG_DATA_HOME": ""})
    assert p.returncode == 2
    lines = assert_clean_stderr(p.stderr)
    assert len(lines) == 1 and "flow store" in lines[0] and "nobody" in lines[0], p.stderr
    assert j.read_text() == "kept\n"


def test_outputs_to_dev_null_and_a_fifo_are_not_truncated_nor_clash(tmp_path):
    """Devices take any number of outputs and cannot be truncated: --json /dev/null with
    -w /dev/null runs (the collision check and the deferred truncation are for files)."""
    p = run(["-r", str(FIXTURES / "timeout.pcap"), "-B", "--no-db", "--json", "/dev/null",
             "-w", "/dev/null", "-L", "/dev/null"])
    assert p.returncode == 0, p.stderr
    assert_clean_stderr(p.stderr)
