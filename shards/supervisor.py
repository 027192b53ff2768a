"""The main process's side of the pipeline: start, watch and stop the capture processes and
shards, merge what the shards publish, and restart a shard that dies.

Every child is forked with PR_SET_PDEATHSIG, so none outlives a crashed supervisor, and every
shared-memory ring is unlinked on the way out (the SegmentReaper does it if we are killed).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from multiprocessing.synchronize import Semaphore

from iptraf_mp.capture.capfile import CaptureReader
from iptraf_mp.core.engine import Settings
from iptraf_mp.core.merge import Merger, settle_heap
from iptraf_mp.core.run import RunStartError, RunStats

from .batch import decode_batch, encode_batch
from .protocol import CTL_END, CTL_IFACE, MAX_IFACES, parse_iface_record
from .reader import (
    NSTATS,
    ST_DONE,
    ST_ERROR,
    ST_KERNEL_DROPS,
    ST_QUEUE_DROPPED_PACKETS,
    ST_QUEUE_DROPS,
    ST_REC_DROPPED,
    ProducerConfig,
    run_file_reader,
    run_live_reader,
)
from .ring import Ring, RingSet, SegmentReaper, cleanup_stale
from .worker import ShardConfig, run_shard

RING_BYTES = 16 << 20  # per (producer, shard): about 60 ms of a saturated 10 GbE link
RECORD_RING_BYTES = 32 << 20
PR_SET_PDEATHSIG = 1
STOP_GRACE = 30.0  # s from stop() to the last shard's final publication, at most
# How often a paced sink (IPFIX) gets a turn while poll() waits: a pump sends at most a
# burst of 1024 records, which the default 50,000 records/s refills in about 20 ms.
PUMP_SLICE = 0.02


def _die_with_parent() -> None:
    """Linux: this child gets SIGKILL when the supervisor dies, however it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _terminal_signals_to_the_supervisor() -> None:
    """A terminal's ^C, ^\\ and hangup reach the whole foreground process group: only the
    supervisor decides what they do (it stops the children in order, after their last
    batches and publications)."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)


def _close_handles(handles: list) -> None:
    """A forked child holds copies of every capture socket; the ones it does not read
    would otherwise stay open (and in promiscuous mode) as long as it lives."""
    for h in handles:
        try:
            h.close()
        except OSError:
            pass


def _shard_entry(cfg, rings, conn, foreign):
    _die_with_parent()
    _terminal_signals_to_the_supervisor()
    _close_handles(foreign)
    run_shard(cfg, rings, conn)


def _reader_entry(foreign, target, *args):
    _die_with_parent()
    _terminal_signals_to_the_supervisor()
    _close_handles(foreign)
    target(*args)


@dataclass(slots=True)
class Source:
    """What one capture process reads: a file, or an open live handle on one interface."""

    path: str | None = None
    iface: str | None = None
    handle: object = None  # live: a pypcap handle opened before privileges were dropped
    # replay: the file already open (a pipe can be opened once only); else path is opened
    reader: CaptureReader | None = None


class Pipeline:
    def __init__(self, sources: list[Source], nshards: int, settings: Settings,
                 refresh: float = 0.25, speed: float | None = None, record: bool = False,
                 promisc: bool = True, keep_lines: bool = True) -> None:
        self.sources = sources
        self.n = nshards
        self.settings = settings
        self.refresh = refresh
        self.speed = speed
        self.promisc = promisc
        self.keep_lines = keep_lines
        self.ctx = mp.get_context("fork")
        self.merger = Merger(nshards, settings.lower_lines)
        self.stats = RunStats()
        self.stop_event = self.ctx.Event()
        self.flush_gen = self.ctx.Array("Q", 2, lock=False)  # [F, announce interfaces]
        self.rings: list[list[Ring]] = []  # [producer][shard]
        self.wakes: list[Semaphore] = []  # [shard]: the semaphore its rings share
        self.record_rings: list[Ring] = []
        self.want_record = record
        self.prod_stats = []
        self.prod_procs: list = []
        self.err_conns: list = []
        self.shard_procs: list = []
        self.shard_conns: list = []
        self.ended_shards = 0
        self.on_record: Callable[[int, float, bytes, int], None] | None = None
        self.on_record_iface: Callable[[int, int, str], None] | None = None
        # Paced sinks (Monitor sets it): called while poll() waits, every PUMP_SLICE while it
        # says records wait, so they send at their rate and not only once a refresh.
        self.between: Callable[[], bool] | None = None
        self._rec_thread: threading.Thread | None = None
        self._reaper: SegmentReaper | None = None
        self._closed = False
        self._started = False  # our copies of the capture handles are closed from then on
        self._stop_at: float | None = None  # when stop() was first asked

    # ---- start ---------------------------------------------------------------------------

    def start(self) -> None:
        cleanup_stale()
        try:
            self._start()
        except OSError as e:  # no room for the rings in /dev/shm, too many processes, ...
            self.close()
            raise RunStartError(f"cannot start the pipeline: {e.strerror or e}") from None
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        ctx = self.ctx
        nprod = len(self.sources)
        # A shard sleeps on one semaphore that every capture process's ring to it posts, so
        # it wakes for whichever has a batch, without polling
        self.wakes = [ctx.Semaphore(0) for _s in range(self.n)]
        for _p in range(nprod):
            self.rings.append([Ring.create(RING_BYTES, ctx=ctx, wake=self.wakes[s])
                               for s in range(self.n)])
            if self.want_record:
                self.record_rings.append(Ring.create(RECORD_RING_BYTES, ctx=ctx))
        # before any child: they hold the reaper's pipe too, so it waits for the last of them
        self._reaper = SegmentReaper([r.name for row in self.rings for r in row]
                                     + [r.name for r in self.record_rings])
        for s in range(self.n):
            self._spawn_shard(s)
        for p, src in enumerate(self.sources):
            stats = ctx.Array("Q", NSTATS, lock=False)
            self.prod_stats.append(stats)
            rx, tx = ctx.Pipe(duplex=False)
            self.err_conns.append(rx)
            rec = self.record_rings[p] if self.want_record else None
            cfg = ProducerConfig(p, self.n, live=src.path is None, speed=self.speed,
                                 iface_names=[src.iface or ""], ifindex_base=p,
                                 promisc=self.promisc, producers=nprod,
                                 refresh=self.refresh)
            rings = self.rings[p]
            if src.path is not None:
                args = (run_file_reader, cfg, src.reader or src.path, rings, stats,
                        self.flush_gen, tx, self.stop_event, rec)
            else:
                args = (run_live_reader, cfg, src.handle, rings, stats, self.flush_gen, tx,
                        self.stop_event, rec)
            foreign = [o.handle for o in self.sources if o.handle is not None and o is not src]
            proc = ctx.Process(target=_reader_entry, args=(foreign, *args),
                               name=f"iptraf-mp capture {p}", daemon=True)
            proc.start()
            tx.close()
            self.prod_procs.append(proc)
        # the children have their own copies; ours would only hold the sockets open (and a
        # capture file: the reader's child alone reads it)
        _close_handles([src.handle for src in self.sources if src.handle is not None])
        for src in self.sources:
            if src.reader is not None:
                src.reader.close()
        self._started = True
        if self.want_record:
            self._rec_thread = threading.Thread(target=self._record_loop, daemon=True,
                                                name="recorder")
            self._rec_thread.start()

    def _spawn_shard(self, s: int) -> None:
        rx, tx = self.ctx.Pipe(duplex=False)
        rings = RingSet([self.rings[p][s] for p in range(len(self.sources))], self.wakes[s])
        # --max-connections is for the whole monitor: each shard holds its share
        share = replace(self.settings, max_pairs=max(1, -(-self.settings.max_pairs // self.n)),
                        max_flows=max(1, -(-self.settings.max_flows // self.n)))
        # a replay publishes where its reader says (the same position in every shard)
        replay = all(src.path is not None for src in self.sources)
        cfg = ShardConfig(s, len(self.sources), share, self.refresh, self.keep_lines,
                          epochs=replay)
        # what it must not hold open: the capture handles and files (the capture processes'
        # own), until the main process has closed its copies
        foreign = [] if self._started else [o.handle or o.reader for o in self.sources
                                            if o.handle is not None or o.reader is not None]
        proc = self.ctx.Process(target=_shard_entry, args=(cfg, rings, tx, foreign),
                                name=f"iptraf-mp shard {s}", daemon=True)
        proc.start()
        tx.close()
        if s < len(self.shard_procs):
            self.shard_procs[s] = proc
            self.shard_conns[s] = rx
        else:
            self.shard_procs.append(proc)
            self.shard_conns.append(rx)

    # ---- run -----------------------------------------------------------------------------

    def poll(self, timeout: float) -> bool:
        """Take in what the shards published for up to `timeout`; False once all are done."""
        conns = [c for i, c in enumerate(self.shard_conns) if not self.merger.sent_all[i]]
        if not conns:
            return False
        for conn in self._wait(conns, timeout):
            try:
                pub = conn.recv()
            except (EOFError, OSError):
                continue  # the process died; _watch restarts it
            self.merger.apply(pub)
        settle_heap()
        self._watch()
        self._collect_errors()
        if self._stop_at is not None and time.monotonic() - self._stop_at > STOP_GRACE:
            self._give_up()
        return not all(self.merger.sent_all)

    def _wait(self, conns: list, timeout: float) -> list:
        """The connections with something to read within `timeout`; while a paced sink has
        records waiting, it is given a turn every PUMP_SLICE meanwhile."""
        between = self.between
        if between is None or not between():
            return wait(conns, timeout)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready = wait(conns, max(0.0, min(PUMP_SLICE, left)))
            if ready or left <= PUMP_SLICE or not between():
                return ready

    def _give_up(self) -> None:
        """Asked to stop long ago and some shard still has not finished (it waits for an END
        that will never come, say): a second ^C must not be needed, so it is killed and its
        connections are reported as lost, as if it had died."""
        for s, proc in enumerate(self.shard_procs):
            if self.merger.sent_all[s]:
                continue
            proc.kill()
            proc.join(1.0)
            self._drain(s)
            if self.merger.sent_all[s]:
                continue
            lost = self.merger.shard_lost(s)
            self.merger.shard_gone(s)
            self.stats.errors.append(f"shard {s} did not stop within {STOP_GRACE:g} s; "
                                     f"killed, {lost} connections lost")
        self.merger._release()  # groups that waited for the killed shards' ticks

    def _watch(self) -> None:
        for s, proc in enumerate(self.shard_procs):
            if self.merger.sent_all[s] or proc.is_alive():
                continue
            # A shard that finished normally exits right after sending its final publication;
            # if it exited between our wait() and here, that publication is still in its pipe.
            self._drain(s)
            if self.merger.sent_all[s]:
                proc.join(0)
                continue
            proc.join(0)
            self.stats.shard_restarts += 1
            lost = self.merger.shard_lost(s)
            self.stats.lost_pairs += lost
            self.stats.errors.append(
                f"shard {s} died (exit code {proc.exitcode}); restarted, {lost} connections lost")
            # A finished producer says END once; if the dead shard took it (its ring is
            # empty, END being its last record), the successor would wait for it forever.
            # The producer writes no more, so we are that ring's only writer now.
            for p in range(len(self.prod_procs)):
                ring = self.rings[p][s]
                if self.prod_stats[p][ST_DONE] and not ring._readable():
                    ring.put(encode_batch([(0, 0.0, 0, CTL_END, b"")]))
            self._spawn_shard(s)
            # the new shard knows no interfaces: ask the readers to announce them again
            self.flush_gen[1] += 1
        for p, proc in enumerate(self.prod_procs):
            if proc.is_alive() or self.prod_stats[p][ST_DONE]:
                continue
            proc.join(0)
            self.prod_stats[p][ST_DONE] = 1
            name = self.sources[p].iface or self.sources[p].path
            self.stats.errors.append(f"capture of {name} died (exit code {proc.exitcode})")
            # The reader cannot say END any more; with it gone we are the rings' only
            # producer, so we may say it for it, and the shards finish.
            for ring in self.rings[p]:
                end = encode_batch([(0, 0.0, 0, CTL_END, b"")])
                while not ring.put(end) and any(sp.is_alive() for sp in self.shard_procs):
                    time.sleep(0.001)
            if self.want_record:
                self.record_rings[p].put(encode_batch([(0, 0.0, 0, CTL_END, b"")]))

    def _drain(self, s: int) -> None:
        """Apply whatever shard `s` published and we have not read yet."""
        conn = self.shard_conns[s]
        try:
            while not self.merger.sent_all[s] and conn.poll(0):
                self.merger.apply(conn.recv())
        except (EOFError, OSError):
            pass  # the rest of a message cut short by the shard's death is lost with it

    def _collect_errors(self) -> None:
        for conn in self.err_conns:
            try:
                while conn.poll():
                    self.stats.errors.append(conn.recv())
            except (EOFError, OSError):
                pass

    def counters(self) -> RunStats:
        st = self.stats
        st.kernel_drops = sum(s[ST_KERNEL_DROPS] for s in self.prod_stats)
        st.queue_drops = sum(s[ST_QUEUE_DROPS] for s in self.prod_stats)
        st.queue_dropped_packets = sum(s[ST_QUEUE_DROPPED_PACKETS] for s in self.prod_stats)
        st.lost_pairs = self.merger.lost_pairs
        st.record_dropped = sum(s[ST_REC_DROPPED] for s in self.prod_stats)
        st.exit_status = max([0, *(s[ST_ERROR] for s in self.prod_stats)])
        return st

    def request_flush(self) -> None:
        """The F key: every shard retires its closed pairs."""
        self.flush_gen[0] += 1
        self.merger.flush()

    def stop(self) -> None:
        if self._stop_at is None:
            self._stop_at = time.monotonic()
        self.stop_event.set()

    # ---- recording -----------------------------------------------------------------------

    def _record_loop(self) -> None:
        ended = [False] * len(self.record_rings)
        while not all(ended):
            progressed = False
            for p, ring in enumerate(self.record_rings):
                if ended[p]:
                    continue
                buf = ring.get(0.02)
                if buf is None:
                    continue
                progressed = True
                for _n, ts, wirelen, ifindex, data in decode_batch(buf):
                    if ifindex < MAX_IFACES:
                        if self.on_record is not None:
                            self.on_record(ifindex, ts, data, wirelen)
                    elif ifindex == CTL_IFACE and self.on_record_iface is not None:
                        self.on_record_iface(*parse_iface_record(data))
                    elif ifindex == CTL_END:
                        ended[p] = True
            if not progressed and self._closed:
                break

    def join_recorder(self, timeout: float = 10.0) -> None:
        """Wait until the recorder has written everything the captures sent it."""
        if self._rec_thread is not None:
            self._rec_thread.join(timeout)

    # ---- stop ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything that still runs and remove every ring. Safe to call twice."""
        self.stop_event.set()
        deadline = time.monotonic() + 5.0
        for proc in self.prod_procs + self.shard_procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.prod_procs + self.shard_procs:
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        if self._rec_thread is not None:
            self._rec_thread.join(5.0)
        self._closed = True
        for row in self.rings:
            for ring in row:
                ring.close()
                ring.unlink()
        for ring in self.record_rings:
            ring.close()
            ring.unlink()
        self.rings = []
        self.record_rings = []
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None


def default_shards() -> int:
    """Cores minus one (the capture side needs one), at least one."""
    return max(1, (os.cpu_count() or 2) - 1)
