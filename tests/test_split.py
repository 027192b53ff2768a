"""The capture process's compiled loop over a pcap file (iptraf_mp/core/split.py) against
its simple twin, the record loop of shards/reader.py: for every capture and shard count,
the same ticks at the same frames and the same batches, byte for byte, to the same shards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from iptraf_mp.capture.capfile import CaptureFileError, open_capture
from iptraf_mp.core.batch_format import BatchBuilder
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
from shards.batch import carried
from shards.hashing import ShardPicker

from .conftest import corpus_files

ROOT = Path(__file__).resolve().parent.parent
PCAPS = [p for p in [*corpus_files("real"), *corpus_files("large"), *corpus_files("malformed"),
                     *sorted((ROOT / "fixtures").glob("*.pcap"))] if p.suffix == ".pcap"]
BATCH_PACKETS, BATCH_BYTES = 50, 8192  # small: many full batches


def _record_loop(path: Path, nshards: int) -> list:
    log: list = []
    clock = PacketClock()
    picker = ShardPicker(nshards)
    builders = [BatchBuilder() for _ in range(nshards)]
    with open_capture(path) as r:
        lt = r.interfaces[0].linktype
        try:
            for n, (ts, _ifidx, data, wirelen) in enumerate(r, 1):
                if clock.advance(ts):
                    log.append(("tick", ts, n))
                s = picker.pick(lt, data, wirelen, 0) if nshards > 1 else 0
                if s < 0:
                    s = -1 - s
                    log.append(("note", s, picker.note.kind, picker.note.key))
                b = builders[s]
                if b.append(n, ts, wirelen, 0, carried(lt, data, wirelen)) >= BATCH_PACKETS \
                        or b.nbytes >= BATCH_BYTES:
                    log.append(("batch", s, b.take()))
        except CaptureFileError:
            pass
    log += [("batch", s, b.take()) for s, b in enumerate(builders)]
    return log


def _split_loop(path: Path, nshards: int) -> list:
    log: list = []
    clock = PacketClock()
    picker = ShardPicker(nshards)
    builders = [BatchBuilder() for _ in range(nshards)]
    with open_capture(path) as r:
        raw = r.raw_pcap()
        lt = r.interfaces[0].linktype
        st = SplitState(raw.pos, 0, clock.now, clock.next)
        try:
            while True:
                ev = split_pcap(st, raw.buf, raw.big_endian, raw.units, 0, lt, nshards,
                                builders, BATCH_PACKETS, BATCH_BYTES)
                if ev == EV_TICK:
                    log.append(("tick", st.ts, st.frame_no + 1))
                    continue
                if ev == EV_SLOW:
                    data = raw.buf[st.start:st.start + st.caplen]
                    s = picker.pick(lt, data, st.wirelen, 0)
                    if s < 0:
                        s = -1 - s
                        log.append(("note", s, picker.note.kind, picker.note.key))
                    b = builders[s]
                    if b.append(st.frame_no, st.ts, st.wirelen, 0,
                                carried(lt, data, st.wirelen)) < BATCH_PACKETS \
                            and b.nbytes < BATCH_BYTES:
                        continue
                    st.shard = s
                    ev = EV_FULL
                if ev == EV_FULL:
                    log.append(("batch", st.shard, builders[st.shard].take()))
                    continue
                raw.pos = st.pos
                raw.count = st.frame_no
                if not raw.refill():
                    break
                st.pos = raw.pos
        except CaptureFileError:
            pass
    log += [("batch", s, b.take()) for s, b in enumerate(builders)]
    return log


@pytest.mark.parametrize("nshards", [1, 2, 5])
@pytest.mark.parametrize("cap", PCAPS, ids=lambda p: p.name)
def test_split_pcap_equals_the_record_loop(cap: Path, nshards: int) -> None:
    assert _split_loop(cap, nshards) == _record_loop(cap, nshards)


def test_split_pcap_equals_the_record_loop_on_generated_traffic(tmp_path: Path) -> None:
    cap = tmp_path / "gen.pcap"
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_capture.py"), str(cap),
                    "--packets", "30000", "--connections", "1500"], check=True,
                   stdout=subprocess.DEVNULL)
    for nshards in (2, 3):
        split = _split_loop(cap, nshards)
        assert sum(1 for e in split if e[0] == "batch") > 30000 // BATCH_PACKETS
        assert split == _record_loop(cap, nshards)


def _live_record_loop(pkts: list, nshards: int, id_shift: int, id_index: int) -> list:
    """shards/reader.py's live loop before it was compiled, as the twin."""
    log: list = []
    clock = PacketClock()
    picker = ShardPicker(nshards)
    builders = [BatchBuilder() for _ in range(nshards)]
    for n, (tsns, buf) in enumerate(pkts, 1):
        ts = (tsns + 500) // 1000 / 1e6
        data = bytes(buf)
        if clock.advance(ts):
            log.append(("tick", ts, n))
        s = picker.pick(1, data, len(data), 3) if nshards > 1 else 0
        if s < 0:
            s = -1 - s
        b = builders[s]
        if b.append((n << id_shift) | id_index, ts, len(data), 3,
                    carried(1, data, len(data))) >= BATCH_PACKETS or b.nbytes >= BATCH_BYTES:
            log.append(("batch", s, b.take()))
    return log + [("batch", s, b.take()) for s, b in enumerate(builders)]


def _live_split_loop(pkts: list, nshards: int, id_shift: int, id_index: int,
                     every: bool, chunk: int) -> list:
    log: list = []
    clock = PacketClock()
    picker = ShardPicker(nshards)
    builders = [BatchBuilder() for _ in range(nshards)]
    st = SplitState(0, 0, clock.now, clock.next)
    for i in range(0, len(pkts), chunk):  # as pypcap hands them over, a few at a time
        part = pkts[i:i + chunk]
        st.pos = 0
        while True:
            ev = split_live(st, part, 1, 3, 0 if every else nshards, builders, id_shift,
                            id_index, BATCH_PACKETS, BATCH_BYTES)
            if ev == EV_END:
                break
            if ev == EV_TICK:
                log.append(("tick", st.ts, st.frame_no + 1))
            elif ev == EV_FULL:
                log.append(("batch", st.shard, builders[st.shard].take()))
            else:
                data = st.data
                s = picker.pick(1, data, len(data), 3) if nshards > 1 else 0
                if s < 0:
                    s = -1 - s
                b = builders[s]
                if b.append((st.frame_no << id_shift) | id_index, st.ts, len(data), 3,
                            carried(1, data, len(data))) >= BATCH_PACKETS \
                        or b.nbytes >= BATCH_BYTES:
                    log.append(("batch", s, b.take()))
    return log + [("batch", s, b.take()) for s, b in enumerate(builders)]


@pytest.mark.parametrize("every", [False, True], ids=["split", "every-frame-to-the-shell"])
@pytest.mark.parametrize("nshards", [1, 3])
def test_split_live_equals_the_live_record_loop(every: bool, nshards: int) -> None:
    """Every Ethernet frame of the corpus and fixtures, as pypcap would hand them over
    (nanosecond times, memoryviews, a few per read), through both loops."""
    pkts = []
    t = 1_700_000_000_000_000_000
    for cap in PCAPS:
        with open_capture(cap) as r:
            if r.interfaces[0].linktype != 1:
                continue
            try:
                for _ts, _i, data, _wl in r:
                    t += 7_654_321  # ns: ticks every ~130 packets, sub-microsecond rounding
                    pkts.append((t, memoryview(data)))
            except CaptureFileError:
                pass
    assert len(pkts) > 10_000
    want = _live_record_loop(pkts, nshards, 8, 5)
    for chunk in (1, 7, 1000):
        assert _live_split_loop(pkts, nshards, 8, 5, every, chunk) == want, chunk
