"""Capture processes: read frames (a live interface or a file), pick a shard, hand over batches.

Per packet they only read, hash and append to a batch; decoding is the shards' work. Control
records (interfaces, clock ticks, end) are broadcast to every shard in stream order, so each
shard sees the same clock at the same packet positions as a single engine would.
"""

from __future__ import annotations

import select
import signal
import socket
import time
from dataclasses import dataclass, field

from iptraf_mp.capture.capfile import CaptureReader
from iptraf_mp.core.engine import PacketClock
from iptraf_mp.core.split import (
    EV_END,
    EV_FULL,
    EV_SLOW,
    EV_TICK,
    SplitState,
    split_live,
    split_pcap,
)

from .batch import BatchBuilder, carried
from .hashing import ShardPicker
from .protocol import CTL_END, CTL_FLUSH, CTL_IFACE, CTL_PUBLISH, CTL_TICK, iface_record
from .ring import Ring

BATCH_PACKETS = 512
BATCH_BYTES = 256 * 1024

# Per-producer counters in a shared array (see Producer.stats).
ST_FRAMES = 0
ST_BYTES = 1
ST_KERNEL_DROPS = 2
ST_QUEUE_DROPS = 3  # batches refused by a full ring (live capture never waits)
ST_QUEUE_DROPPED_PACKETS = 4
ST_WAITS = 5  # a file reader waited for room (replay never drops)
ST_DONE = 6
ST_ERROR = 7  # the exit status its error asks for (1, or 2 for a refused file); 0: none
ST_KERNEL_RECV = 8
ST_REC_DROPPED = 9  # live: frames left out of the recording (-w) because its writer lagged
NSTATS = 10
# A replay's epochs (the shards' publications) come about every refresh of the reader's
# time, and at least every this many frames: a reader that outruns its shards (a fast file)
# would otherwise cut too few for the screen and the store to follow the run.
EPOCH_FRAMES = 8192
# The recording's batches: sent when either is reached, so none ever exceeds what a ring
# record can hold, however long the replay or the stall of the capture process.
RECORD_BATCH_PACKETS = 512
RECORD_BATCH_BYTES = 1 << 20
# A frame is recorded up to this many bytes, the snap length of the recording's interfaces
# (and libpcap's largest): a capture file may hold frames of up to 256 MiB.
RECORD_SNAPLEN = 262144


@dataclass(slots=True)
class ProducerConfig:
    index: int  # which capture process: pair ids of live captures carry it
    nshards: int
    live: bool
    speed: float | None = None  # replay pace; None = as fast as possible
    iface_names: list[str] = field(default_factory=list)  # live: the one interface it reads
    ifindex_base: int = 0  # live: this interface's global index
    promisc: bool = True
    buffer_bytes: int = 64 << 20  # kernel buffer: 32-64 MiB kept up at the sender's ceiling
    producers: int = 1  # capture processes in the run (live pair ids need room for `index`)
    refresh: float = 0.25  # replay: how often (wall time) the shards are told to publish


class Producer:
    """The shard-facing half of a capture process: batching, broadcasting, handing over."""

    def __init__(self, cfg: ProducerConfig, rings: list[Ring], stats, flush_gen,
                 record: Ring | None = None) -> None:
        self.cfg = cfg
        self.rings = rings
        self.stats = stats  # multiprocessing.Array("Q", NSTATS), shared with the supervisor
        # multiprocessing.Array of two counters the supervisor bumps: [F pressed, announce
        # the interfaces again (a restarted shard knows none)]
        self.flush_gen = flush_gen
        self.seen_gen = list(flush_gen[:]) if flush_gen is not None else [0, 0]
        self.record = record
        self.builders = [BatchBuilder() for _ in rings]
        self.rec_builder = BatchBuilder() if record is not None else None
        self.picker = ShardPicker(cfg.nshards)
        self.clock = PacketClock()
        self.ifaces: list[tuple[int, int, str]] = []  # (global index, linktype, name)
        self.epochs = 0  # CTL_PUBLISH records sent (replay)
        self.last_epoch = time.monotonic()

    def announce(self, ifindex: int, linktype: int, name: str) -> None:
        self.ifaces.append((ifindex, linktype, name))
        rec = iface_record(ifindex, linktype, name)
        for b in self.builders:
            b.append(0, 0.0, 0, CTL_IFACE, rec)
        if self.rec_builder is not None:
            self.rec_builder.append(0, 0.0, 0, CTL_IFACE, rec)

    def broadcast(self, ctl: int, ts: float, value: int = 0, frames: int = 0) -> None:
        """A control record to every shard (`value` rides in the wire-length field, and
        `frames`, the frames read so far, in the frame-number field)."""
        for b in self.builders:
            b.append(frames, ts, value, ctl, b"")

    def tell_others(self, s: int, ts: float) -> int:
        """The picker chose shard `s` with a note for every other shard (hashing.Note)."""
        note = self.picker.note
        for i, b in enumerate(self.builders):
            if i != s:
                b.append(0, ts, note.iplen, note.kind, note.key)
        return s

    def epoch(self, ts: float, frames: int) -> None:
        """Replay: every shard publishes here, at the same position of the stream (its
        state as one engine's would be after the `frames` frames before it)."""
        self.epochs += 1
        self.last_epoch = time.monotonic()
        self.broadcast(CTL_PUBLISH, ts, self.epochs, frames)

    def check_control(self) -> None:
        """The supervisor asked for a flush (F key) or for interfaces to be announced again
        (a restarted shard knows none)."""
        flush, announce = self.flush_gen[0], self.flush_gen[1]
        if announce != self.seen_gen[1]:
            self.seen_gen[1] = announce
            for idx, lt, name in self.ifaces:
                rec = iface_record(idx, lt, name)
                for b in self.builders:
                    b.append(0, 0.0, 0, CTL_IFACE, rec)
        if flush != self.seen_gen[0]:
            self.seen_gen[0] = flush
            self.broadcast(CTL_FLUSH, 0.0)

    def place(self, frame_id: int, record_no: int, ts: float, wirelen: int, ifindex: int,
              linktype: int, data: bytes, wait: bool) -> bool:
        """A frame the capture loop hands over whole: to the shard the picker chooses (and
        to the recording, numbered `record_no`); True if it filled that shard's batch,
        which went out."""
        s = self.picker.pick(linktype, data, wirelen, ifindex) if self.cfg.nshards > 1 else 0
        if s < 0:
            s = self.tell_others(-1 - s, ts)
        if self.rec_builder is not None:
            self.record_frame(record_no, ts, wirelen, ifindex, data, wait=wait)
        b = self.builders[s]
        if b.append(frame_id, ts, wirelen, ifindex, carried(linktype, data, wirelen)) \
                >= BATCH_PACKETS or b.nbytes >= BATCH_BYTES:
            self.send(s, wait=wait)
            return True
        return False

    def send(self, s: int, wait: bool) -> None:
        b = self.builders[s]
        if not len(b):
            return
        count = len(b)
        payload = b.take()
        ring = self.rings[s]
        if ring.put(payload):
            return
        if not wait:
            self.stats[ST_QUEUE_DROPS] += 1
            self.stats[ST_QUEUE_DROPPED_PACKETS] += count
            return
        self.stats[ST_WAITS] += 1
        while not ring.put(payload):
            time.sleep(0.0005)

    def send_all(self, wait: bool) -> None:
        for s in range(len(self.builders)):
            self.send(s, wait)
        self.send_record(wait)

    def record_frame(self, n: int, ts: float, wirelen: int, ifindex: int, data: bytes,
                     wait: bool) -> None:
        rb = self.rec_builder
        if rb.append(n, ts, wirelen, ifindex, data[:RECORD_SNAPLEN]) >= RECORD_BATCH_PACKETS \
                or rb.nbytes >= RECORD_BATCH_BYTES:
            self.send_record(wait)

    def send_record(self, wait: bool) -> None:
        """A replay waits for the recorder (nothing is lost by waiting); a live capture never
        does: a recording batch the ring has no room for is left out and counted."""
        rb = self.rec_builder
        if rb is None or not len(rb):
            return
        count = len(rb)
        payload = rb.take()
        while not self.record.put(payload):
            if not wait:
                self.stats[ST_REC_DROPPED] += count
                return
            time.sleep(0.0005)

    def finish(self) -> None:
        """Tell every shard (and the recorder) that this producer is done. Waits for room:
        an END that never arrives would leave a shard waiting forever."""
        self.broadcast(CTL_END, self.clock.now)
        if self.rec_builder is not None:
            self.rec_builder.append(0, self.clock.now, 0, CTL_END, b"")
        self.send_all(wait=True)


def run_file_reader(cfg: ProducerConfig, source: str | CaptureReader, rings: list[Ring],
                    stats, flush_gen, errors, stop, record: Ring | None = None) -> None:
    """Replay: one reader process for the whole file (a path, or a reader the supervisor
    opened before forking us); never drops (it waits for room)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from iptraf_mp.capture.capfile import CaptureFileError, capture_of

    prod = Producer(cfg, rings, stats, flush_gen, record)
    advance = prod.clock.advance
    nshards = cfg.nshards
    rec = prod.rec_builder
    n = 0
    nbytes = 0
    wall0 = ts0 = None
    try:
        reader = capture_of(source)
    except CaptureFileError as e:
        errors.send(str(e))
        stats[ST_ERROR] = e.exit_status
        prod.finish()
        stats[ST_DONE] = 1
        return
    ifaces = reader.interfaces  # grows as a pcapng file reveals its interfaces
    announced = 0
    since_epoch = 0  # frames read when the last epoch was sent
    speed = cfg.speed
    raw = reader.raw_pcap() if not speed and rec is None else None
    progress = [0, 0]  # frames and wire bytes _split_replay has read
    try:
        if raw is not None:
            # a pcap replay: the compiled loop over the file's own buffer (core/split.py)
            _split_replay(prod, raw, reader.interfaces[0], stats, stop, progress)
            return
        # Per packet: as few attribute lookups and calls as possible (bench_pipeline.py
        # measures this loop: it is what one capture process can do for all the shards).
        for ts, ifidx, data, wirelen in reader:
            n += 1
            nbytes += wirelen
            if len(ifaces) > announced:
                while announced < len(ifaces):
                    prod.announce(announced, ifaces[announced].linktype,
                                  ifaces[announced].name)
                    announced += 1
            if speed:
                if wall0 is None:
                    wall0, ts0 = time.monotonic(), ts
                delay = wall0 + (ts - ts0) / speed - time.monotonic()
                if delay > 0.002:
                    # caught up with the clock: what came so far (the n - 1 frames before
                    # this one, which is not due yet) is shown while we wait
                    if n - 1 > since_epoch and (delay >= cfg.refresh
                                                or time.monotonic() - prod.last_epoch
                                                >= cfg.refresh):
                        prod.epoch(prod.clock.now, n - 1)
                        since_epoch = n - 1
                    prod.send_all(wait=True)
                    # Paced batches rarely fill, and only a full one looks at stop and F:
                    # look here too, and let stop cut the sleep short. (Not stop.wait(): a
                    # reader killed inside Event.wait() leaves a sleeper count that makes
                    # the supervisor's stop_event.set() wait for it forever.)
                    prod.check_control()
                    until = time.monotonic() + delay
                    while not stop.is_set() and (left := until - time.monotonic()) > 0:
                        time.sleep(min(left, 0.05))
                    if stop.is_set():
                        break
            # after the pacing: a tick sent before the wait would let the shards time
            # connections out (and the screen show it) before the packet is due
            if advance(ts):
                prod.broadcast(CTL_TICK, ts)
            if prod.place(n, n, ts, wirelen, ifidx, ifaces[ifidx].linktype, data, wait=True):
                stats[ST_FRAMES] = n
                stats[ST_BYTES] = nbytes
                if n - since_epoch >= EPOCH_FRAMES \
                        or time.monotonic() - prod.last_epoch >= cfg.refresh:
                    prod.epoch(prod.clock.now, n)
                    since_epoch = n
                    for i in range(nshards):
                        prod.send(i, wait=True)
                prod.check_control()
                if stop.is_set():
                    break
    except CaptureFileError as e:
        errors.send(str(e))
        stats[ST_ERROR] = e.exit_status
    finally:
        reader.close()
        if raw is not None:
            n, nbytes = progress
        stats[ST_FRAMES] = n
        stats[ST_BYTES] = nbytes
        prod.finish()
        stats[ST_DONE] = 1


def _split_replay(prod: Producer, raw, iface, stats, stop, progress: list[int]) -> None:
    """The file reader's loop for a pcap replay (not paced, not recorded): split_pcap does
    the clock, the shard and the batch of each plain frame; the rest is the record loop's
    work, here. `progress` holds the frames and wire bytes read so far."""
    cfg = prod.cfg
    builders = prod.builders
    pick = prod.picker.pick
    clock = prod.clock
    lt = iface.linktype
    prod.announce(0, lt, iface.name)
    st = SplitState(raw.pos, 0, clock.now, clock.next)
    since_epoch = 0
    while True:
        ev = split_pcap(st, raw.buf, raw.big_endian, raw.units, 0, lt, cfg.nshards, builders,
                        BATCH_PACKETS, BATCH_BYTES)
        clock.now, clock.next = st.now, st.next
        n = progress[0] = st.frame_no
        progress[1] = st.nbytes
        if ev == EV_TICK:
            prod.broadcast(CTL_TICK, st.ts)
            continue
        if ev == EV_SLOW:
            data = raw.buf[st.start:st.start + st.caplen]
            s = pick(lt, data, st.wirelen, 0)
            if s < 0:
                s = prod.tell_others(-1 - s, st.ts)
            b = builders[s]
            if b.append(n, st.ts, st.wirelen, 0, carried(lt, data, st.wirelen)) \
                    < BATCH_PACKETS and b.nbytes < BATCH_BYTES:
                continue
            st.shard = s
            ev = EV_FULL
        if ev == EV_FULL:
            prod.send(st.shard, wait=True)
            stats[ST_FRAMES] = n
            stats[ST_BYTES] = st.nbytes
            if n - since_epoch >= EPOCH_FRAMES \
                    or time.monotonic() - prod.last_epoch >= cfg.refresh:
                prod.epoch(clock.now, n)
                since_epoch = n
                for i in range(cfg.nshards):
                    prod.send(i, wait=True)
            prod.check_control()
            if stop.is_set():
                return
            continue
        raw.pos = st.pos  # EV_END
        raw.count = n
        if not raw.refill():
            return
        st.pos = raw.pos


def run_live_reader(cfg: ProducerConfig, handle, rings: list[Ring], stats, flush_gen,
                    errors, stop, record: Ring | None = None) -> None:
    """Live capture on one interface until `stop` is set. Never waits for a shard: a full
    ring drops the batch and counts it beside the kernel's drops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    prod = Producer(cfg, rings, stats, flush_gen, record)
    ifindex = cfg.ifindex_base
    name = cfg.iface_names[0]
    linktype = handle.datalink()
    prod.announce(ifindex, linktype, name)
    advance = prod.clock.advance
    builders = prod.builders
    rec = prod.rec_builder
    nshards = cfg.nshards
    n = 0
    nbytes = 0
    # Pair ids must be unique across capture processes: with several, the index goes in the
    # low bits. With one, ids are frame numbers as in a replay, so replaying the recording
    # (-w) of a one-interface run gives the very same ids.
    id_shift = 8 if cfg.producers > 1 else 0
    id_index = cfg.index
    fd = handle.fileno()
    last_stats = 0.0
    os_index = _os_index(name)
    clock = prod.clock
    st = SplitState(0, 0, clock.now, clock.next)
    # with the recorder on, every frame goes the shell's way (it records each): as if every
    # frame needed the picker, which nshards 0 means to split_live
    nshards_fast = 0 if rec is not None else nshards
    try:
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                # The clock, the shard and the batch of each packet: compiled
                # (core/split.py); it hands back ticks, full batches and the frames the
                # picker or the recorder (-w: every frame) must see.
                st.pos = 0
                pkts = handle.readpkts()
                while True:
                    ev = split_live(st, pkts, linktype, ifindex, nshards_fast, builders,
                                    id_shift, id_index, BATCH_PACKETS, BATCH_BYTES)
                    clock.now, clock.next = st.now, st.next
                    if ev == EV_END:
                        break
                    if ev == EV_TICK:
                        prod.broadcast(CTL_TICK, st.ts)
                    elif ev == EV_FULL:
                        prod.send(st.shard, wait=False)
                    else:  # EV_SLOW
                        m = st.frame_no
                        prod.place((m << id_shift) | id_index, m, st.ts, len(st.data),
                                   ifindex, linktype, st.data, wait=False)
                n, nbytes = st.frame_no, st.nbytes
            else:
                # a quiet wire still has a clock: timeouts must fire without packets
                now = time.time()
                if advance(now):
                    prod.broadcast(CTL_TICK, now)
                st.now, st.next = clock.now, clock.next
            prod.check_control()
            prod.send_all(wait=False)
            stats[ST_FRAMES] = n
            stats[ST_BYTES] = nbytes
            now = time.monotonic()
            if now - last_stats >= 1.0:
                last_stats = now
                _kernel_stats(handle, stats)
                if os_index is not None and _gone(os_index):
                    # libpcap's non-blocking reads only return nothing once it is deleted
                    raise OSError("the interface went away")
    except OSError as e:
        # the interface went away (or down): this capture ends, the others go on
        errors.send(f"{name}: capture stopped: {e}")
        stats[ST_ERROR] = 1
    finally:
        _kernel_stats(handle, stats)
        prod.finish()
        stats[ST_DONE] = 1
        try:
            handle.close()
        except OSError:
            pass


def _os_index(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def _gone(index: int) -> bool:
    """The interface with this index no longer exists (deleted, not merely down)."""
    try:
        socket.if_indextoname(index)
    except OSError:
        return True
    return False


def _kernel_stats(handle, stats) -> None:
    try:
        recv, drop, _ifdrop = handle.stats()
    except OSError:
        return
    stats[ST_KERNEL_RECV] = recv
    stats[ST_KERNEL_DROPS] = drop
