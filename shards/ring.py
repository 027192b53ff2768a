"""Single-producer single-consumer ring buffer in POSIX shared memory, carrying framed batches.

One ring per (capture process -> shard) pair. The producer (a capture loop) must never block:
``put`` copies a payload into the ring or returns False, and the caller counts a queue drop.
The consumer (a shard) blocks in ``get`` without burning a core while the ring is empty.

Segment layout (one ``/dev/shm`` file, all counters little-endian u64 at 8-byte aligned offsets
so each one is read and written by a single machine load or store)::

    0    magic, capacity, creator pid, creator start time     (written once by create())
    64   head: bytes ever written                            (producer's cache line)
    72   drops: put() calls refused for lack of room
    128  tail: bytes ever consumed                           (consumer's cache line)
    256  data[capacity]

Head and tail only grow (2**64 bytes is centuries at line rate), so ``head - tail`` is the fill
level and ``counter % capacity`` the position. A record is ``length:u64`` then the payload,
padded to 8 bytes, so every length word stays aligned. A record that does not fit before the end
of the data area is placed at offset 0 and a ``WRAP`` length word marks the skipped tail end.
Payloads are limited to half the capacity, which guarantees that any record fits once the ring
has drained, wherever the write position happens to be.

Waking the consumer: a counting ``multiprocessing.Semaphore`` holds the number of published
records. ``put`` posts it after the record and head are written; ``get`` waits on it before
reading. Why this and not the alternatives:

* glibc's ``sem_post`` is one atomic add and enters the kernel only when a waiter sleeps, and
  ``sem_wait`` on a positive count is one atomic decrement; under load neither side makes a
  system call. A pipe or eventfd written on every put costs a syscall (~1 us) per batch.
* Signalling an eventfd only when the consumer has flagged that it is going to sleep needs a
  store-load fence between "write head" and "read the flag" on both sides; Python has no way
  to issue one, so that protocol can lose wake-ups even on x86. The semaphore's atomic
  read-modify-write is that fence, and its release/acquire ordering publishes the record to
  the consumer on any CPU.
* A sleep back-off either adds latency or spins; the semaphore wait is a futex sleep that
  returns as soon as a record is posted and honours ``timeout``.
* The semaphore is inherited across ``fork`` and pickles for ``spawn``/``forkserver`` when it
  was made by a context of that kind (pass ``ctx=`` to :meth:`Ring.create`), so a ``Ring``
  can be handed to ``multiprocessing.Process`` as an argument with either start method.
* One semaphore can count the records of several rings: a shard fed by N capture processes
  has N rings (each still single-producer) sharing one semaphore, and sleeps on all of them at
  once through :class:`RingSet`. There the counts only wake the consumer: it looks in the
  rings first and waits only when they are all empty, so a count lost with a consumer killed
  between taking it and taking its record (the restarted shard's rings would be one short
  for ever, and the last record, END, never read) strands nothing, and a count whose record
  was taken before it was posted is a spurious wake.

Two orderings rest on the CPU rather than on the semaphore: the consumer stores ``tail`` only
after copying the payload out (the producer must not overwrite bytes still being read), and a
``RingSet`` may take a record whose ``head`` it sees before it has consumed that record's own
count (so the head store must not overtake the data stores). x86-64 guarantees both (TSO:
stores are seen in order, and never before earlier loads); arm64 does not architecturally, and
Python offers no fence to add.

Segment lifetime: names look like ``iptrafmp-<creator pid>-<tag>``. A :class:`SegmentReaper`
the supervisor starts removes its segments if the whole run dies without calling
:meth:`Ring.unlink` (SIGKILL of the supervisor, say); :func:`cleanup_stale` removes segments
whose creator is gone when the reaper could not run either.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import secrets
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from multiprocessing.synchronize import Semaphore
from typing import Any

__all__ = [
    "PREFIX",
    "Ring",
    "RingError",
    "RingSet",
    "RingStats",
    "cleanup_stale",
    "segment_name",
]

PREFIX = "iptrafmp"
SHM_DIR = "/dev/shm"

_MAGIC = int.from_bytes(b"IPTRING1", "little")
_HEADER_BYTES = 256
# Indexes into the header viewed as u64 words (byte offset // 8).
_W_MAGIC, _W_CAPACITY, _W_CREATOR_PID, _W_CREATOR_START = 0, 1, 2, 3
_W_HEAD, _W_DROPS = 8, 9
_W_TAIL = 16
_REC_HDR = 8
_WRAP = (1 << 64) - 1
_MIN_CAPACITY = 64


class RingError(RuntimeError):
    """The ring is misused (e.g. no wake semaphore) or its contents are inconsistent."""


@dataclass(frozen=True, slots=True)
class RingStats:
    capacity: int
    used_bytes: int
    bytes_put: int
    drops: int
    # Records waiting per the wake semaphore (all rings sharing it); None without sem_getvalue.
    pending: int | None


def segment_name(tag: str | None = None, prefix: str = PREFIX) -> str:
    """A segment name :func:`cleanup_stale` can attribute to this process."""
    return f"{prefix}-{os.getpid()}-{tag if tag is not None else secrets.token_hex(4)}"


class Ring:
    """SPSC ring of variable-length records in one shared-memory segment.

    Exactly one process may call :meth:`put` and exactly one :meth:`get` at a time.
    Create it in the supervisor before starting the children; hand it to a child either as a
    ``Process`` argument (works with fork and, if created with a matching ``ctx``, spawn) or
    as ``Ring.attach(ring.name, ring.wake)``.
    """

    __slots__ = (
        "name",
        "_owner",
        "_creator_pid",
        "_sem",
        "_post",
        "_wait",
        "_mmap",
        "_view",
        "_hdr",
        "_words",
        "_capacity",
        "_max_payload",
        "_put_limit",
        "_tail_seen",
        "_shared_wake",
    )

    def __init__(
        self,
        name: str,
        wake: Semaphore | None,
        owner: bool,
        shared_wake: bool = False,
    ) -> None:
        # Use create() or attach(); this only maps an existing, initialised segment.
        self.name = name
        self._shared_wake = shared_wake
        self._owner = owner  # this object made the segment: it may unlink it
        self._creator_pid = os.getpid() if owner else -1
        self._sem = wake
        self._post = wake.release if wake is not None else _no_wake
        self._wait = wake.acquire if wake is not None else _no_wake
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size < _HEADER_BYTES + _MIN_CAPACITY:
                raise RingError(f"segment {name} is too small ({size} bytes) to be a ring")
            self._mmap = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        # Payload bytes go through the mmap object (its slicing copies straight into or out of
        # bytes); the counters go through a u64 memoryview, whose item get/set is one aligned
        # 8-byte load/store, so the other process can never see half a counter.
        self._view = memoryview(self._mmap)
        self._hdr = self._view[:_HEADER_BYTES].cast("Q")
        if self._hdr[_W_MAGIC] != _MAGIC:
            self.close()
            raise RingError(f"segment {name} is not a ring (bad magic)")
        self._capacity = self._hdr[_W_CAPACITY]
        if _HEADER_BYTES + self._capacity > size:
            self.close()
            raise RingError(f"segment {name} is shorter than its recorded capacity")
        self._words = self._view[_HEADER_BYTES : _HEADER_BYTES + self._capacity].cast("Q")
        self._max_payload = min(self._capacity // 2 - _REC_HDR, 0xFFFFFFFF)
        # Without a semaphore a put would publish a record the consumer is never told about;
        # a limit of -1 sends every put to the (already needed) size check, which refuses it.
        self._put_limit = self._max_payload if wake is not None else -1
        # Producer-side lower bound of tail; refreshed from shared memory only when the ring
        # looks full, so a non-full put never reads the consumer's cache line.
        self._tail_seen = 0

    # ----------------------------------------------------------------------------- lifecycle

    @classmethod
    def create(
        cls,
        capacity: int,
        name: str | None = None,
        *,
        ctx: BaseContext | None = None,
        wake: Semaphore | None = None,
    ) -> Ring:
        """Make a new segment of at least ``capacity`` data bytes (rounded up to 8).

        ``name`` is used verbatim; the default comes from :func:`segment_name`. Only names of
        that form are recognised by :func:`cleanup_stale`. ``ctx`` makes the wake semaphore;
        use the context whose start method will launch the children (default: the global one).
        ``wake`` instead shares a semaphore (``ctx.Semaphore(0)``) between several rings that
        one consumer reads through a :class:`RingSet`; such a ring has no :meth:`get` of its own.
        """
        if capacity < _MIN_CAPACITY:
            raise ValueError(f"capacity must be at least {_MIN_CAPACITY} bytes")
        capacity = (capacity + 7) & ~7
        if name is None:
            name = segment_name()
        ctx = ctx if ctx is not None else multiprocessing.get_context()
        # The segment file itself (what shm_open makes on Linux), not SharedMemory: that
        # registers it with multiprocessing's resource tracker, a process of its own that a
        # terminal's hangup kills (it ignores only SIGINT and SIGTERM) and that, under -Z,
        # would stay root. Removal when the supervisor is killed is SegmentReaper's job.
        path = os.path.join(SHM_DIR, name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                os.ftruncate(fd, _HEADER_BYTES + capacity)
                with mmap.mmap(fd, _HEADER_BYTES) as mm, memoryview(mm) as mv, \
                        mv.cast("Q") as hdr:
                    hdr[_W_CAPACITY] = capacity
                    hdr[_W_CREATOR_PID] = os.getpid()
                    hdr[_W_CREATOR_START] = max(_proc_start(os.getpid()), 0)
                    hdr[_W_MAGIC] = _MAGIC
            finally:
                os.close(fd)
            if wake is None:
                ring = cls(name, ctx.Semaphore(0), True)
            else:
                ring = cls(name, wake, True, shared_wake=True)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        return ring

    @classmethod
    def attach(cls, name: str, wake: Semaphore | None = None, *, shared_wake: bool = False) -> Ring:
        """Map an existing ring, typically in a child process.

        ``wake`` is the creator's ``ring.wake`` (and ``shared_wake`` its ``ring.shared_wake``);
        without it the ring can only be inspected (``stats()``), and ``put``/``get`` raise
        :class:`RingError`.
        """
        # Mapped directly, as created: no process of a run registers a segment anywhere.
        return cls(name, wake, False, shared_wake)

    @property
    def wake(self) -> Semaphore | None:
        """The semaphore to pass to :meth:`attach` in another process."""
        return self._sem

    @property
    def shared_wake(self) -> bool:
        """True if the wake semaphore counts records of other rings too (see :class:`RingSet`)."""
        return self._shared_wake

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled only when handed to a spawn/forkserver child; the semaphore itself refuses
        # to pickle at any other time, exactly like multiprocessing's own primitives.
        return (_rebuild_ring, (self.name, self._sem, self._shared_wake))

    def close(self) -> None:
        """Unmap the segment in this process. Idempotent; does not remove the segment."""
        for attr in ("_words", "_hdr", "_view"):
            view = getattr(self, attr, None)
            if view is not None:
                view.release()
                setattr(self, attr, None)
        mm = getattr(self, "_mmap", None)
        if mm is not None:
            mm.close()
            self._mmap = None

    def unlink(self) -> None:
        """Remove the segment (creator only; idempotent). Attached processes keep their mapping."""
        if self._creator_pid != os.getpid():
            # A forked child holding the creator's object must not unlink it from under the
            # creator. Stale segments of dead creators are cleanup_stale()'s job.
            raise RingError("only the process that created the ring may unlink it")
        if not self._owner:
            return
        self._owner = False
        with contextlib.suppress(FileNotFoundError):  # removed behind our back
            os.unlink(os.path.join(SHM_DIR, self.name))

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self._owner and self._creator_pid == os.getpid():
            self.unlink()

    # ----------------------------------------------------------------------------- data path

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def max_payload(self) -> int:
        """Largest payload :meth:`put` accepts; size batches below this."""
        return self._max_payload

    def put(self, payload: bytes | bytearray | memoryview) -> bool:
        """Append one record; False (and a drop counted) if the ring has no room. Never blocks."""
        n = len(payload)
        if n > self._put_limit:
            if self._sem is None:
                _no_wake()
            raise ValueError(f"payload of {n} bytes exceeds max_payload {self._max_payload}")
        hdr = self._hdr
        cap = self._capacity
        head = hdr[_W_HEAD]
        pos = head % cap
        need = _REC_HDR + ((n + 7) & ~7)
        room = cap - pos
        total = need if need <= room else room + need
        if total > cap - (head - self._tail_seen):
            self._tail_seen = hdr[_W_TAIL]
            if total > cap - (head - self._tail_seen):
                hdr[_W_DROPS] += 1
                return False
        if need > room:
            self._words[pos >> 3] = _WRAP
            pos = 0
        self._words[pos >> 3] = n
        start = _HEADER_BYTES + pos + _REC_HDR
        self._mmap[start : start + n] = payload
        hdr[_W_HEAD] = head + total
        # Publish last: the semaphore's atomic add orders the stores above before it.
        self._post()
        return True

    def get(self, timeout: float | None = None) -> bytes | None:
        """Next record, or None if none arrives within ``timeout`` seconds (None: wait forever).

        Sleeps in the kernel while waiting, so an idle consumer uses no CPU.
        """
        if self._shared_wake:
            raise RingError(f"ring {self.name} shares its wake semaphore: read it via a RingSet")
        # _acquire() inlined: one Python call less per batch on the consumer's hot path.
        if timeout is None:
            if not self._wait():
                return None
        elif not (self._wait(True, timeout) if timeout > 0 else self._wait(False)):
            return None
        return self._take()

    def _take(self) -> bytes:
        # Caller has consumed one semaphore count, so a complete record is visible here.
        hdr = self._hdr
        cap = self._capacity
        tail = hdr[_W_TAIL]
        pos = tail % cap
        n = self._words[pos >> 3]
        if n == _WRAP:
            tail += cap - pos
            pos = 0
            n = self._words[0]
        if n > self._max_payload:
            raise RingError(f"corrupt record length {n} at offset {pos} of ring {self.name}")
        start = _HEADER_BYTES + pos + _REC_HDR
        payload = self._mmap[start : start + n]
        # Only after the copy: from this store on the producer may overwrite the record.
        hdr[_W_TAIL] = tail + _REC_HDR + ((n + 7) & ~7)
        return payload

    def _readable(self) -> bool:
        hdr = self._hdr
        return hdr[_W_HEAD] != hdr[_W_TAIL]

    @property
    def drops(self) -> int:
        """put() calls refused for lack of room, summed over every producer of this ring."""
        return self._hdr[_W_DROPS]

    def stats(self) -> RingStats:
        hdr = self._hdr
        head, tail = hdr[_W_HEAD], hdr[_W_TAIL]
        pending: int | None = None
        if self._sem is not None:
            try:
                pending = self._sem.get_value()
            except NotImplementedError:  # macOS has no sem_getvalue
                pending = None
        return RingStats(
            capacity=self._capacity,
            used_bytes=head - tail,
            bytes_put=head,
            drops=hdr[_W_DROPS],
            pending=pending,
        )

    def __repr__(self) -> str:
        return f"Ring(name={self.name!r}, capacity={self._capacity})"


class RingSet:
    """The consumer's end of several rings that share one wake semaphore.

    A shard reads from one ring per capture process; it sleeps on the shared semaphore and
    takes the next record from the rings in round-robin order, so no producer can starve the
    others while the shard is busy.
    """

    __slots__ = ("rings", "_wake", "_wait", "_next")

    def __init__(self, rings: Sequence[Ring], wake: Semaphore) -> None:
        if not rings:
            raise ValueError("a RingSet needs at least one ring")
        self.rings = list(rings)
        self._wake = wake
        self._wait = wake.acquire
        self._next = 0

    def __reduce__(self) -> tuple[Any, ...]:
        return (RingSet, (self.rings, self._wake))

    def get(self, timeout: float | None = None) -> bytes | None:
        """Next record from any ring, or None after ``timeout`` seconds (None: wait forever;
        None may also come early, on a spurious wake)."""
        buf = self._scan()
        if buf is not None:
            self._wait(False)  # its count, if it has been posted yet
            return buf
        if not _acquire(self._wait, timeout):
            return None
        return self._scan()

    def _scan(self) -> bytes | None:
        rings = self.rings
        n = len(rings)
        i = self._next
        for _ in range(n):
            ring = rings[i]
            i = i + 1 if i + 1 < n else 0
            if ring._readable():
                self._next = i
                return ring._take()
        return None

    def close(self) -> None:
        for ring in self.rings:
            ring.close()


def _acquire(wait: Any, timeout: float | None) -> bool:
    if timeout is None:
        return bool(wait())
    if timeout > 0:
        return bool(wait(True, timeout))
    return bool(wait(False))


def _rebuild_ring(name: str, wake: Semaphore | None, shared_wake: bool) -> Ring:
    return Ring.attach(name, wake, shared_wake=shared_wake)


def _no_wake(*_args: object) -> bool:
    raise RingError("ring attached without its wake semaphore: use Ring.attach(name, ring.wake)")


# --------------------------------------------------------------------------- stale segments


_DEAD = -1  # _proc_start(): no such process, or a zombie
_UNKNOWN = -2  # _proc_start(): exists but /proc would not say more


def _proc_start(pid: int) -> int:
    """Process start time in clock ticks since boot, or _DEAD / _UNKNOWN."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return _DEAD
    except OSError:
        return _UNKNOWN  # e.g. /proc mounted with hidepid
    # The command name (field 2) may contain spaces and parentheses; fields after it do not.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return _DEAD  # exited; its parent has not reaped it yet
    return int(fields[19])  # field 22 of proc(5), counted from field 3


def _creator_alive(pid: int, recorded_start: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    start = _proc_start(pid)
    if start == _DEAD:
        return False
    if start == _UNKNOWN or not recorded_start:
        return True  # cannot tell: keeping a stale segment is cheaper than breaking a live one
    # A live pid with another start time is a reused pid: the creator is gone.
    return start == recorded_start


def _recorded_start(path: str, pid: int) -> int:
    """Creator start time stored in a ring header, or 0 if the file is not a ring of ``pid``."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return 0
    if len(head) < 32:
        return 0
    magic, _cap, creator, start = (
        int.from_bytes(head[i : i + 8], "little") for i in range(0, 32, 8)
    )
    return start if magic == _MAGIC and creator == pid else 0


class SegmentReaper:
    """Removes segments once every process holding this object's pipe is gone, however they
    went (SIGKILL included): a forked process, in a session of its own so that a signal to
    the run's process group does not reach it, that waits for the end of a pipe the
    supervisor and its children hold. It holds nothing else: it closes every other
    descriptor (capture sockets among them), and it runs as whoever made it (under -Z, the
    unprivileged user). After a normal run the supervisor has unlinked the segments itself,
    and the reaper finds nothing to do."""

    def __init__(self, names: Sequence[str]) -> None:
        paths = [os.path.join(SHM_DIR, n) for n in names]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            try:
                os.setsid()
                for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM,
                            signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE):
                    signal.signal(sig, signal.SIG_IGN)
                os.closerange(0, r)
                os.closerange(r + 1, os.sysconf("SC_OPEN_MAX"))
                while os.read(r, 1):
                    pass
                for path in paths:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
            finally:
                os._exit(0)
        os.close(r)
        self.pid = pid
        self._w: int | None = w

    def close(self, timeout: float = 2.0) -> None:
        """Let it go (after unlinking the segments ourselves) and reap it."""
        w, self._w = self._w, None
        if w is None:
            return
        os.close(w)
        deadline = time.monotonic() + timeout
        while True:
            done, _status = os.waitpid(self.pid, os.WNOHANG)
            if done or time.monotonic() > deadline:
                return
            time.sleep(0.005)


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Unlink ``<prefix>-<pid>-*`` segments whose creating process no longer runs.

    Returns the names removed. Meant for the supervisor at start-up, before it creates rings.
    """
    removed: list[str] = []
    lead = prefix + "-"
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return removed
    for entry in sorted(entries):
        if not entry.startswith(lead):
            continue
        pid_text, sep, _tag = entry[len(lead) :].partition("-")
        if not sep or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        path = os.path.join(SHM_DIR, entry)
        if _creator_alive(pid, _recorded_start(path, pid)):
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue  # someone else cleaned it up first
        except PermissionError:
            continue  # another user's segment in sticky /dev/shm: not ours to remove
        removed.append(entry)
    return removed
