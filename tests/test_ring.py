"""Batch wire format and the shared-memory SPSC ring (shards/batch.py, shards/ring.py)."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import deque
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shards.batch import BatchBuilder, BatchError, decode_batch, encode_batch
from shards.ring import SHM_DIR, Ring, RingError, RingSet, cleanup_stale, segment_name

ROOT = Path(__file__).resolve().parent.parent
FORK = mp.get_context("fork")

# Segment names carry the test process's pid, so parallel runs by other people never collide
# and cleanup_stale() in these tests only ever sees this process's own segments.
TEST_PREFIX = f"iptrafmptest{os.getpid()}"


def shm_exists(name: str) -> bool:
    return os.path.exists(os.path.join(SHM_DIR, name))


@pytest.fixture
def make_ring():
    made: list[Ring] = []

    def make(capacity: int = 1 << 16, **kw) -> Ring:
        ring = Ring.create(capacity, segment_name(prefix=TEST_PREFIX), ctx=FORK, **kw)
        made.append(ring)
        return ring

    yield make
    for ring in made:
        ring.close()
        ring.unlink()
        assert not shm_exists(ring.name)


# ------------------------------------------------------------------------------------- batch

packets_st = st.lists(
    st.tuples(
        st.integers(0, 2**64 - 1),
        st.floats(allow_nan=False),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**16 - 1),
        st.binary(max_size=300),
    ),
    max_size=60,
)


@given(packets_st)
def test_batch_roundtrip_property(packets):
    encoded = encode_batch(packets)
    assert decode_batch(encoded) == packets
    assert decode_batch(memoryview(encoded)) == packets
    builder = BatchBuilder()
    for i, p in enumerate(packets, 1):
        assert builder.append(*p) == i
    assert len(builder) == len(packets)
    assert builder.nbytes == len(encoded)
    assert builder.take() == encoded


def test_batch_edge_cases():
    assert decode_batch(encode_batch([])) == []
    empty_data = [(1, 0.0, 60, 0, b"")]
    assert decode_batch(encode_batch(empty_data)) == empty_data
    biggest = [
        (2**64 - 1, 1.7e9, 2**32 - 1, 2**16 - 1, os.urandom(262144)),  # libpcap max snaplen
        (0, -0.0, 65535, 3, os.urandom(65535)),
        (7, float("inf"), 9000, 1, b"\x00" * 9000),
    ]
    assert decode_batch(encode_batch(biggest)) == biggest
    rng = random.Random(1)
    many = [
        (i, i / 7, rng.randrange(60, 1514), i % 5, rng.randbytes(rng.randrange(0, 200)))
        for i in range(20000)
    ]
    out = decode_batch(bytearray(encode_batch(many)))
    assert out == many
    assert all(type(p[4]) is bytes for p in out)


def test_batch_builder_take_resets():
    b = BatchBuilder()
    b.append(1, 1.0, 100, 2, b"abc")
    first = b.take()
    assert len(b) == 0
    assert decode_batch(b.take()) == []
    b.append(2, 2.0, 200, 3, b"de")
    assert decode_batch(first) == [(1, 1.0, 100, 2, b"abc")]
    assert decode_batch(b.take()) == [(2, 2.0, 200, 3, b"de")]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:-1],  # truncated data
        lambda b: b[:20],  # truncated packet header
        lambda b: b + b"\x00",  # trailing byte
        lambda b: b"XXXX" + b[4:],  # bad magic
        lambda b: b[:3],  # shorter than the batch header
    ],
)
def test_batch_rejects_malformed(mangle):
    good = encode_batch([(1, 1.0, 100, 2, b"abcdef"), (2, 2.0, 60, 2, b"xy")])
    with pytest.raises(BatchError):
        decode_batch(mangle(good))


# ---------------------------------------------------------------------- ring, one process


def test_put_get_fifo_single_process(make_ring):
    ring = make_ring(1024)
    payloads = [bytes([i % 256]) * (i * 7 % 400) for i in range(2000)]
    got = []
    for p in payloads:
        assert ring.put(p)
        got.append(ring.get(0))
    assert got == payloads
    st_ = ring.stats()
    assert st_.used_bytes == 0 and st_.pending == 0 and st_.drops == 0
    assert st_.bytes_put > 100 * ring.capacity  # wrapped many times


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(st.integers(0, 240), st.none()), max_size=300))
def test_ring_matches_fifo_model(make_ring, ops):
    """Random interleavings of put (size) and get (None) against a deque, on a tiny ring so
    every write position and every wrap case comes up."""
    ring = make_ring(512)
    model: deque[bytes] = deque()
    for i, op in enumerate(ops):
        if op is None:
            got = ring.get(0)
            assert got == (model.popleft() if model else None)
        else:
            payload = bytes([(i + k) % 256 for k in range(op)])
            was_empty = not model
            ok = ring.put(payload)
            # Payloads are at most half the capacity, so an empty ring always has room.
            assert ok or not was_empty
            if ok:
                model.append(payload)
    while model:
        assert ring.get(0) == model.popleft()
    assert ring.get(0) is None
    ring.close()


def test_put_returns_false_when_full_and_keeps_contents(make_ring):
    ring = make_ring(4096)
    accepted = []
    i = 0
    while True:
        payload = i.to_bytes(4, "little") * 30
        if not ring.put(payload):
            break
        accepted.append(payload)
        i += 1
    assert len(accepted) == 4096 // 128  # 8-byte length word + 120 bytes, no padding
    for _ in range(5):
        assert not ring.put(b"x" * 100)
    assert ring.drops == 6
    assert ring.put(b"") is False  # even an empty record needs its length word
    # Draining one record makes room for exactly one more of the same size (wrapping).
    assert ring.get(0) == accepted.pop(0)
    assert ring.put(b"y" * 120)
    accepted.append(b"y" * 120)
    assert not ring.put(b"z")
    assert [ring.get(0) for _ in accepted] == accepted
    assert ring.get(0) is None
    assert ring.stats().drops == 8  # the loop's last try, 5, the empty one and "z"


def test_oversized_payload_is_an_error(make_ring):
    ring = make_ring(1024)
    assert ring.max_payload == 1024 // 2 - 8
    assert ring.put(b"a" * ring.max_payload)
    with pytest.raises(ValueError):
        ring.put(b"a" * (ring.max_payload + 1))
    assert ring.get(0) == b"a" * ring.max_payload


def test_get_timeout_returns_none_when_empty(make_ring):
    ring = make_ring()
    t0 = time.monotonic()
    assert ring.get(0) is None
    assert ring.get(-1) is None
    assert time.monotonic() - t0 < 3
    t0 = time.monotonic()
    assert ring.get(0.3) is None
    elapsed = time.monotonic() - t0
    assert 0.15 <= elapsed < 5


def test_idle_get_sleeps_instead_of_spinning(make_ring):
    ring = make_ring()
    cpu0 = time.process_time()
    assert ring.get(1.0) is None
    assert time.process_time() - cpu0 < 0.3  # a busy-wait would burn the whole second


def test_attach_without_wake_can_only_inspect(make_ring):
    ring = make_ring()
    assert ring.put(b"hello")
    peek = Ring.attach(ring.name)
    try:
        assert peek.stats().used_bytes == 16
        with pytest.raises(RingError):
            peek.put(b"x")
        with pytest.raises(RingError):
            peek.get(0)
    finally:
        peek.close()
    assert ring.get(0) == b"hello"


def test_attach_rejects_foreign_segment():
    name = segment_name(prefix=TEST_PREFIX)
    path = os.path.join(SHM_DIR, name)
    with open(path, "wb") as f:
        f.write(b"\x01" * 4096)
    try:
        with pytest.raises(RingError):
            Ring.attach(name)
    finally:
        os.unlink(path)


def test_unlink_removes_segment_and_is_idempotent():
    ring = Ring.create(1 << 12, segment_name(prefix=TEST_PREFIX), ctx=FORK)
    assert shm_exists(ring.name)
    assert ring.put(b"still readable after unlink")
    ring.unlink()
    assert not shm_exists(ring.name)
    assert ring.get(0) == b"still readable after unlink"  # mapping outlives the name
    ring.close()
    ring.unlink()
    ring.close()


def test_context_manager_unlinks():
    with Ring.create(1 << 12, segment_name(prefix=TEST_PREFIX), ctx=FORK) as ring:
        assert shm_exists(ring.name)
    assert not shm_exists(ring.name)


# ---------------------------------------------------------------------- ring, two processes


def _frame(frame_no: int) -> tuple[int, float, int, int, bytes]:
    size = (frame_no * 37) % 181  # 0..180 bytes, includes empty frames
    data = (frame_no.to_bytes(8, "little") * 23)[:size]
    return (frame_no, frame_no / 1000.0, size + 14, frame_no % 7, data)


def _producer(ring_name, wake, total, seed, conn):
    ring = Ring.attach(ring_name, wake)
    rng = random.Random(seed)
    builder = BatchBuilder()
    fulls = 0
    batches = 0
    frame = 0
    while frame < total:
        for _ in range(min(rng.randint(1, 300), total - frame)):
            builder.append(*_frame(frame))
            frame += 1
        payload = builder.take()
        while not ring.put(payload):
            fulls += 1
            time.sleep(0.0002)
        batches += 1
    ring.close()
    conn.send((batches, fulls))
    conn.close()


def test_fifo_across_fork_100k_packets_wrapping(make_ring):
    # 128 KiB (batches up to 64 KiB) against ~11 MiB of batches: about 90 wraps.
    ring = make_ring(1 << 17)
    total = 100_000
    rx, tx = FORK.Pipe(duplex=False)
    proc = FORK.Process(target=_producer, args=(ring.name, ring.wake, total, 42, tx))
    proc.start()
    tx.close()
    try:
        expected = 0
        batches = 0
        while expected < total:
            payload = ring.get(timeout=10)
            assert payload is not None, f"producer stalled after {expected} packets"
            batches += 1
            for pkt in decode_batch(payload):
                assert pkt == _frame(expected)
                expected += 1
        assert ring.get(0) is None
        sent_batches, fulls = rx.recv()
        assert sent_batches == batches
        # Every refused put is counted in the shared drop counter, then retried.
        assert ring.drops == fulls
        assert ring.stats().bytes_put > 50 * ring.capacity
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0


def _consumer(ring, total, conn):
    # Receives the creator's Ring object by fork inheritance rather than by name.
    expected = 0
    while expected < total:
        payload = ring.get(timeout=10)
        if payload is None:
            conn.send(f"timed out after {expected}")
            return
        for pkt in decode_batch(payload):
            if pkt != _frame(expected):
                conn.send(f"mismatch at {expected}: {pkt!r}")
                return
            expected += 1
    conn.send(("ok", ring.get(0)))


def test_fifo_with_consumer_in_child(make_ring):
    ring = make_ring(1 << 14)
    total = 20_000
    rx, tx = FORK.Pipe(duplex=False)
    proc = FORK.Process(target=_consumer, args=(ring, total, tx))
    proc.start()
    builder = BatchBuilder()
    rng = random.Random(7)
    frame = 0
    while frame < total:
        for _ in range(min(rng.randint(1, 64), total - frame)):
            builder.append(*_frame(frame))
            frame += 1
        payload = builder.take()
        while not ring.put(payload):
            assert proc.is_alive(), "consumer died"
            time.sleep(0.0002)
    assert rx.poll(30)
    assert rx.recv() == ("ok", None)
    proc.join(10)
    assert proc.exitcode == 0


def _ringset_producer(ring, tag, count):
    for i in range(count):
        while not ring.put(f"{tag}:{i}".encode()):
            time.sleep(0.0002)


def test_ringset_shared_wake_across_producers(make_ring):
    wake = FORK.Semaphore(0)
    rings = [make_ring(1 << 12, wake=wake) for _ in range(3)]
    with pytest.raises(RingError):
        rings[0].get(0)  # the count it would take may belong to another ring
    count = 3000
    procs = [
        FORK.Process(target=_ringset_producer, args=(r, tag, count)) for tag, r in enumerate(rings)
    ]
    for p in procs:
        p.start()
    rs = RingSet(rings, wake)
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    deadline = time.monotonic() + 30
    got = 0
    while got < 3 * count and time.monotonic() < deadline:
        payload = rs.get(timeout=10)
        if payload is None:
            continue  # a spurious wake: a record taken before its count was posted
        tag, i = map(int, payload.split(b":"))
        seen[tag].append(i)
        got += 1
    assert got == 3 * count
    assert rs.get(0.05) is None  # no record more than the producers put
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    for tag in seen:
        assert seen[tag] == list(range(count))  # per-producer order kept


def test_ringset_reads_a_record_whose_count_a_dead_consumer_took(make_ring):
    """A shard killed between taking a count and taking its record: its successor still reads
    every record, the last (END) included, and then waits as usual."""
    wake = FORK.Semaphore(0)
    rings = [make_ring(1 << 12, wake=wake) for _ in range(2)]
    rings[1].put(b"first")
    rings[1].put(b"END")
    assert wake.acquire(False)  # the dead consumer's count
    rs = RingSet(rings, wake)
    assert rs.get(1) == b"first"
    assert rs.get(1) == b"END"
    t0 = time.monotonic()
    assert rs.get(0.2) is None
    assert time.monotonic() - t0 >= 0.15  # it slept: no count left to spin on
    rings[0].put(b"later")
    assert rs.get(1) == b"later"


def _wait_then_put(ring, delay):
    time.sleep(delay)
    ring.put(b"wake up")


def test_blocked_get_is_woken_by_put(make_ring):
    ring = make_ring()
    proc = FORK.Process(target=_wait_then_put, args=(ring, 0.2))
    proc.start()
    assert ring.get(timeout=10) == b"wake up"
    proc.join(10)


def _attach_and_hang(name, wake, ready):
    ring = Ring.attach(name, wake)
    ring.put(b"from the doomed child")
    ready.set()
    time.sleep(60)


def test_sigkilled_attached_child_does_not_block_unlink():
    ring = Ring.create(1 << 12, segment_name(prefix=TEST_PREFIX), ctx=FORK)
    ready = FORK.Event()
    proc = FORK.Process(target=_attach_and_hang, args=(ring.name, ring.wake, ready))
    proc.start()
    try:
        assert ready.wait(10)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL
        assert ring.get(5) == b"from the doomed child"
    finally:
        if proc.is_alive():
            proc.kill()
        ring.close()
        ring.unlink()
    assert not shm_exists(ring.name)


def _try_unlink(ring, conn):
    try:
        ring.unlink()
        conn.send("unlinked")
    except RingError:
        conn.send("refused")


def test_only_creator_unlinks(make_ring):
    ring = make_ring()
    rx, tx = FORK.Pipe(duplex=False)
    proc = FORK.Process(target=_try_unlink, args=(ring, tx))
    proc.start()
    assert rx.recv() == "refused"
    proc.join(10)
    assert shm_exists(ring.name)


# The resource tracker is a separate process that prints to the stderr of whoever started it,
# and complains only at shutdown: so check it in a fresh interpreter and read its stderr.
TRACKER_SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp, os, signal, sys, time
    sys.path.insert(0, {root!r})
    from shards.ring import Ring, segment_name

    def attach_and_exit(name, wake):
        r = Ring.attach(name, wake)
        r.put(b"x")
        r.close()

    def attach_and_hang(name, wake, ready):
        r = Ring.attach(name, wake)
        ready.set()
        time.sleep(60)

    def use_inherited(ring):
        ring.put(b"y")

    if __name__ == "__main__":
        ctx = mp.get_context({method!r})
        ring = Ring.create(4096, segment_name(prefix={prefix!r}), ctx=ctx)
        p = ctx.Process(target=attach_and_exit, args=(ring.name, ring.wake)); p.start(); p.join()
        p = ctx.Process(target=use_inherited, args=(ring,)); p.start(); p.join()
        ready = ctx.Event()
        p = ctx.Process(target=attach_and_hang, args=(ring.name, ring.wake, ready)); p.start()
        assert ready.wait(30)
        os.kill(p.pid, signal.SIGKILL); p.join()
        assert ring.get(5) == b"x" and ring.get(5) == b"y"
        ring.close(); ring.unlink()
        assert not os.path.exists("/dev/shm/" + ring.name)
        print("done", ring.name)
    """
)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_no_resource_tracker_noise(tmp_path, method):
    script = tmp_path / "tracker_check.py"
    script.write_text(
        TRACKER_SCRIPT.format(root=str(ROOT), method=method, prefix=TEST_PREFIX + method)
    )
    res = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("done ")
    # No "leaked shared_memory" warning, no KeyError from a double unregister.
    assert res.stderr == ""
    assert not shm_exists(res.stdout.split()[1])


def test_attach_from_unrelated_process_leaves_segment_alone(make_ring):
    """A process that is not the creator's child has its own resource tracker; had attach()
    registered the segment there, that tracker would unlink it when the process exits."""
    ring = make_ring()
    assert ring.put(b"before")
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from shards.ring import Ring\n"
        f"r = Ring.attach({ring.name!r})\n"
        "print(r.stats().used_bytes)\n"
        "r.close()\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "16"
    assert res.stderr == ""
    assert shm_exists(ring.name)
    assert ring.get(0) == b"before"


# ------------------------------------------------------------------------------ stale segments


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_cleanup_stale_removes_dead_creators_only():
    prefix = TEST_PREFIX + "stale"
    dead = _dead_pid()
    dead_name = f"{prefix}-{dead}-abcd"
    with open(os.path.join(SHM_DIR, dead_name), "wb") as f:
        f.write(b"\x00" * 512)
    live = Ring.create(4096, segment_name(prefix=prefix), ctx=FORK)
    other = f"{prefix}x-{dead}-abcd"  # a different prefix that merely starts the same
    odd = f"{prefix}-notapid-abcd"
    for name in (other, odd):
        with open(os.path.join(SHM_DIR, name), "wb") as f:
            f.write(b"\x00" * 64)
    try:
        assert cleanup_stale(prefix) == [dead_name]
        assert not shm_exists(dead_name)
        assert shm_exists(live.name) and shm_exists(other) and shm_exists(odd)
        assert cleanup_stale(prefix) == []
    finally:
        live.close()
        live.unlink()
        for name in (other, odd):
            os.unlink(os.path.join(SHM_DIR, name))


def test_cleanup_stale_detects_reused_pid():
    """A ring whose recorded creator start time differs from the live process with that pid
    was made by an earlier process that happened to have the same pid."""
    prefix = TEST_PREFIX + "reuse"
    ring = Ring.create(4096, segment_name(prefix=prefix), ctx=FORK)
    try:
        with open(os.path.join(SHM_DIR, ring.name), "r+b") as f:
            f.seek(24)  # creator start time
            f.write((1).to_bytes(8, "little"))
        assert cleanup_stale(prefix) == [ring.name]
        assert not shm_exists(ring.name)
    finally:
        ring.close()
        ring.unlink()  # already gone: must still unregister quietly
