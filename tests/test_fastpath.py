"""The batch fast path (iptraf_mp/core/fastpath.py) against its simple twin, decode + Engine.feed.

Both run over the same captures (the whole corpus, every fixture, a generated capture of many
interleaved connections, and hand-made streams aimed at each reason the fast path must step
aside); the engines' complete state afterwards must be identical: the summary, every pair
that ever existed with both directions' every field, the log events, the lower window's
lines and the other-protocol flows.
"""

from __future__ import annotations

import dataclasses
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from iptraf_mp.capture.capfile import CaptureFileError, open_capture
from iptraf_mp.core.batch_format import BatchError
from iptraf_mp.core.decode import decode
from iptraf_mp.core.engine import Engine, PacketClock, Settings
from iptraf_mp.core.fastpath import feed_batch, feed_pcap, feed_records
from iptraf_mp.core.frame import (
    dst_addr,
    dst_endpoint,
    src_addr,
    src_endpoint,
    src_mac,
    tcp_ack,
    tcp_flags,
    tcp_frame_len,
    tcp_payload_len,
    tcp_seq,
    tcp_window,
)
from iptraf_mp.core.model import FRAG_NONE, K_TCP
from iptraf_mp.core.publication import track_changes
from shards.batch import carried, encode_batch

from .conftest import corpus_files

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = [*corpus_files("real"), *corpus_files("large"), *corpus_files("malformed"),
            *sorted((ROOT / "fixtures").glob("*.pcap*"))]


def _records(path: Path) -> tuple[list[tuple], dict[int, tuple[str, int]]]:
    out: list[tuple] = []
    with open_capture(path) as r:
        try:
            for n, (ts, ifidx, data, wirelen) in enumerate(r, 1):
                out.append((n, ts, wirelen, ifidx, data))
        except Exception:  # a damaged file: both paths get what came before the damage
            pass
        ifaces = {i: (x.name, x.linktype) for i, x in enumerate(r.interfaces)}
    return out, ifaces


def _state(engine: Engine) -> dict:
    engine.finish()
    return {
        "summary": engine.summary.to_json(),
        "ifaces": {k: (c.packets, c.bytes) for k, c in engine.summary.ifaces.items()},
        "now": engine.now,
        "ticks": engine.tick_no,
        "sealed": [(tick, [dataclasses.asdict(p) for p in group])
                   for tick, group in engine.sealed],
        "events": [dataclasses.asdict(e) for e in engine.tcp.events],
        "lines": [(ln.ts, ln.iface, tuple(ln.d)) for ln in engine.other.lines],
        # (but where the in-place path's index holds a flow: its own business)
        "flows": sorted((dataclasses.astuple(dataclasses.replace(f, src_ep=0, dst_ep=0, fkey=None))
                         for f in engine.other.flows.values()), key=repr),
        "untracked": engine.tcp.untracked,
    }


def _both(records: list[tuple], ifaces: dict, settings: Settings, chunk: int = 4096
          ) -> tuple[dict, dict, int]:
    simple = Engine(settings, display=False)
    for frame_no, ts, wirelen, ifidx, data in records:
        name, lt = ifaces[ifidx]
        simple.feed(ts, name, decode(lt, data, wirelen), frame_no)
    fast = Engine(settings, display=False)
    taken = 0
    for i in range(0, len(records), chunk):
        part = records[i:i + chunk]
        taken += feed_records(fast, [r[0] for r in part],
                              [(ts, ifidx, data, wl) for _, ts, wl, ifidx, data in part], ifaces)
    assert taken == len(records)
    return _state(simple), _state(fast), simple.summary.tcp.packets


def _assert_same(simple: dict, fast: dict) -> None:
    for k in simple:
        assert fast[k] == simple[k], k


@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_fast_path_equals_simple_twin(cap: Path) -> None:
    records, ifaces = _records(cap)
    for settings in (Settings(), Settings(log_events=True, tcp_timeout=30.0)):
        simple, fast, _ = _both(records, ifaces, settings)
        _assert_same(simple, fast)


def test_fast_path_equals_simple_twin_on_generated_traffic(tmp_path: Path) -> None:
    """Thousands of interleaved connections: most packets take the fast path here, and a
    small table (evictions) and short timeout (timeouts, retirement) stress the rest."""
    cap = tmp_path / "gen.pcap"
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_capture.py"), str(cap),
                    "--packets", "60000", "--connections", "3000"], check=True,
                   stdout=subprocess.DEVNULL)
    records, ifaces = _records(cap)
    for settings in (Settings(), Settings(log_events=True, max_pairs=500, tcp_timeout=2.0)):
        simple, fast, tcp_packets = _both(records, ifaces, settings, chunk=1000)
        assert tcp_packets > 50000
        _assert_same(simple, fast)


# ---- hand-made streams: each reason to leave the fast path --------------------------------

MAC_A, MAC_B, MAC_C = bytes.fromhex("020000000001"), bytes.fromhex("020000000002"), \
    bytes.fromhex("020000000003")
A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def _frame(src: bytes, dst: bytes, sport: int, dport: int, flags: int, payload: int = 0,
           smac: bytes = MAC_A, dmac: bytes = MAC_B, seq: int = 1, ack: int = 1,
           frag: int = 0x4000, win: int = 1000) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, win, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + payload, 7, frag, 64, 6, 0, src, dst)
    return struct.pack("!6s6sH", dmac, smac, 0x0800) + ip + tcp + bytes(payload)


def _stream() -> list[tuple[float, int, bytes]]:
    """(ts, ifindex, frame): one connection through every state the fast path must not
    touch, on two interfaces, with the clock stepping back (interfaces interleave)."""
    out: list[tuple[float, int, bytes]] = []
    t = 100.0

    def add(dt: float, frame: bytes, ifidx: int = 0) -> None:
        nonlocal t
        t += dt
        out.append((t, ifidx, frame))

    ab = (A, B, 4000, 80)
    ba = (B, A, 80, 4000)
    cd = (A, B, 5000, 443)
    add(0, _frame(*ab, SYN))                              # half-open
    add(0.01, _frame(*ab, ACK, 10))                       # data while half-open
    add(0.01, _frame(*ba, SYN | ACK, smac=MAC_B, dmac=MAC_A))
    add(0.01, _frame(*cd, ACK, 50))                       # a second connection, soon idle
    add(0.01, _frame(*cd, ACK, 51))
    for i in range(60):                                    # plain data both ways, 3.6 s:
        add(0.05, _frame(*ab, ACK | PSH, 100 + i))        # the first connection moves
        add(0.01, _frame(*ba, ACK, smac=MAC_B, dmac=MAC_A, win=500 + i))  # behind the idle one
    add(0.0, _frame(*ab, ACK, 5, smac=MAC_C))              # MAC change
    add(0.5, _frame(*ab, ACK, 6, smac=MAC_C))              # a new clock second
    add(-0.3, _frame(*ab, ACK, 7, smac=MAC_C), ifidx=1)    # other interface, clock back
    add(0.01, _frame(*ab, ACK, 8, smac=MAC_C, frag=0x2000))  # first fragment
    add(0.01, _frame(*ab, ACK, 8, smac=MAC_C, frag=0x0010))  # a later fragment
    add(0.01, _frame(*ab, FIN | ACK, 0, smac=MAC_C, seq=50, ack=900))
    add(0.01, _frame(*ba, ACK, 3, smac=MAC_B, dmac=MAC_A, seq=900))  # acknowledges the FIN
    add(0.01, _frame(*ba, ACK, 4, smac=MAC_B, dmac=MAC_A, seq=903))  # more data, FIN pending
    add(0.01, _frame(*ba, FIN | ACK, 0, smac=MAC_B, dmac=MAC_A, seq=907, ack=51))
    add(0.01, _frame(*ab, ACK, 0, smac=MAC_C, seq=51, ack=908))  # closes the pair
    add(0.01, _frame(*ab, ACK, 0, smac=MAC_C, seq=51, ack=908))  # straggler on an ended pair
    add(0.01, _frame(*ab, SYN, smac=MAC_C))                # a new connection on the same ports
    add(0.01, _frame(*ab, ACK, 9, smac=MAC_C))
    add(0.01, _frame(*ab, RST, smac=MAC_C))
    add(0.01, _frame(A, A, 9, 9, ACK, 4))                  # both ends the same socket address
    add(0.01, _frame(A, A, 9, 9, ACK, 4))
    bad = bytearray(_frame(*ab, ACK, 20, smac=MAC_C))
    bad[16:18] = struct.pack("!H", 2000)                   # IP length beyond the frame
    add(0.01, bytes(bad))
    ef, fe = (A, B, 6000, 22), (B, A, 22, 6000)
    add(0.01, _frame(*ef, SYN))
    add(0.01, _frame(*fe, SYN | ACK, smac=MAC_B, dmac=MAC_A))
    add(0.01, _frame(*ef, ACK, 10))
    add(0.01, _frame(*ef, ACK | PSH, 30, win=4321))      # the last words: fast
    add(0.01, _frame(*fe, ACK, smac=MAC_B, dmac=MAC_A, win=1234))
    add(0.01, _frame(*fe, ACK, smac=MAC_B, dmac=MAC_A, win=2345))
    return out


@pytest.mark.parametrize("chunk", [1, 3, 1000])
@pytest.mark.parametrize("auto_tick", [True, False], ids=["one-process", "shard"])
def test_fast_path_equals_simple_twin_on_every_exit(chunk: int, auto_tick: bool) -> None:
    ifaces = {0: ("eth0", 1), 1: ("eth1", 1)}
    records = [(n, ts, len(f), ifidx, f) for n, (ts, ifidx, f) in enumerate(_stream(), 1)]
    settings = Settings(log_events=True, tcp_timeout=1.0)
    simple, fast = (Engine(settings, auto_tick=auto_tick, display=False) for _ in range(2))
    for engine in (simple, fast):
        track_changes(engine, keep_lines=True)
    # a shard gets its ticks as control records between frames, where the reader's clock
    # says (shards/reader.py)
    ctl = 99
    fed = []
    clock = PacketClock()
    for rec in records:
        if not auto_tick and clock.advance(rec[1]):
            fed.append((0, rec[1], 0, ctl, b""))
        fed.append(rec)
    for i in range(0, len(fed), chunk):
        part = fed[i:i + chunk]
        for frame_no, ts, wirelen, ifidx, data in part:
            if ifidx == ctl:
                simple.tick(ts)
            else:
                name, lt = ifaces[ifidx]
                simple.feed(ts, name, decode(lt, data, wirelen), frame_no)
        feed_records(fast, [r[0] for r in part],
                     [(ts, ifidx, data, wl) for _, ts, wl, ifidx, data in part], ifaces,
                     lambda _n, r: fast.tick(r[0]))
        # what a publication would take at this moment
        assert (fast.now, [p.id for p in fast.tcp.dirty]) == \
            (simple.now, [p.id for p in simple.tcp.dirty]), i
        for engine in (simple, fast):
            for p in engine.tcp.dirty:
                p.marked = False
            engine.tcp.dirty.clear()
    a, b = _state(simple), _state(fast)
    _assert_same(a, b)
    # the stream really went through the states it was written for
    assert a["summary"]["malformed"] == 1
    kinds = {e["kind"] for e in a["events"]}
    assert {"first", "mac", "fin", "finack", "reset", "timeout"} <= kinds
    idle = [e for e in a["events"] if e["kind"] == "timeout" and e["sport"] == 5000]
    assert idle and idle[0]["ts"] < 103.0  # timed out while the first connection was busy


def test_unknown_interface_goes_to_the_callback_in_order() -> None:
    frames = [_frame(A, B, 1, 2, SYN), _frame(A, B, 1, 2, ACK, 5), _frame(A, B, 1, 2, ACK, 6)]
    records = [(10.0 + i, i % 2, f, len(f)) for i, f in enumerate(frames)]
    seen: list[int] = []
    engine = Engine(display=False)
    assert feed_records(engine, [1, 2, 3], records, {0: ("eth0", 1)},
                        lambda n, r: seen.append(n)) == 2
    assert seen == [2]
    assert engine.summary.frames == 2


@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_a_frame_the_table_reads_in_place_is_what_decode_reads(cap: Path) -> None:
    """TcpTable.frame_packet takes a frame only if frame.tcp_frame_len does, and then reads
    its fields from the frame itself: they must be the decoder's, and every frame the
    decoder reads as a well-formed unfragmented option-less IPv4 TCP packet right behind
    an Ethernet header must be taken, but for a TSO super-segment (IP length 0: the decoder
    counts the frame's length, decode.py), which goes the general way."""
    records, ifaces = _records(cap)
    taken = 0
    for _n, _ts, wirelen, ifidx, data in records:
        if ifaces[ifidx][1] != 1:
            continue
        d = decode(1, data, wirelen)
        tlen = tcp_frame_len(data, 0, len(data), wirelen)
        plain = (d.kind == K_TCP and d.ipver == 4 and not d.malformed and d.frag == FRAG_NONE
                 and data[12:15] == b"\x08\x00\x45" and data[16:18] != b"\0\0")
        assert (tlen >= 0) == plain, d
        if plain:
            taken += 1
            es, ed = src_endpoint(data, 0), dst_endpoint(data, 0)
            assert (tlen, tcp_payload_len(data, 0, tlen), tcp_flags(data, 0), tcp_seq(data, 0),
                    tcp_ack(data, 0), tcp_window(data, 0), src_addr(data, 0),
                    dst_addr(data, 0), es & 0xFFFF, ed & 0xFFFF, src_mac(data, 0)) == \
                (d.iplen, d.paylen, d.flags, d.seq, d.ack, d.win, d.src, d.dst, d.sport,
                 d.dport, d.smac)
    if cap.name == "http_get.pcap":
        assert taken > 0  # the test reads something


# ---- what the capture process carries to a shard (shards/batch.py carried) -----------------

@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_carried_part_of_a_frame_decodes_as_the_whole_frame(cap: Path) -> None:
    records, ifaces = _records(cap)
    for _n, _ts, wirelen, ifidx, data in records:
        lt = ifaces[ifidx][1]
        part = carried(lt, data, wirelen)
        assert part == data[:len(part)]
        assert decode(lt, part, wirelen) == decode(lt, data, wirelen)


def test_carried_trims_bulk_tcp_and_keeps_the_rest(tmp_path: Path) -> None:
    bulk = _frame(A, B, 1, 2, ACK, 1400)
    assert carried(1, bulk, len(bulk)) == bulk[:54]
    assert decode(1, bulk[:54], len(bulk)) == decode(1, bulk, len(bulk))
    for keep in (_frame(A, B, 1, 2, ACK, 1400, frag=0x2000),  # a first fragment
                 _frame(A, B, 1, 2, ACK, 0)):                 # nothing to trim
        assert carried(1, keep, len(keep)) == keep
    lying = bytearray(bulk)
    lying[16:18] = struct.pack("!H", 3000)  # an IP length beyond the wire: malformed, whole
    assert carried(1, bytes(lying), len(bulk)) == bytes(lying)
    assert carried(113, bulk, len(bulk)) == bulk  # not Ethernet
    udp = bytearray(bulk)
    udp[23] = 17
    assert carried(1, bytes(udp), len(bulk)) == bytes(udp)  # UDP may carry a tunnel


# ---- the --json writer's hand-made lines against the JSON encoder --------------------------

def test_json_lines_are_what_the_encoder_writes() -> None:
    """`entry_line` (fast) must be byte-identical to encoding `entry_record` (simple): on
    every pair of the fixtures and the corpus, and on hostile interface names."""
    import io
    import json

    from iptraf_mp.core.tcptable import END_RESET, Entry, Pair
    from iptraf_mp.outputs.jsonout import JsonWriter, entry_record

    enc = json.JSONEncoder(separators=(",", ":")).encode
    pairs = []
    for cap in CAPTURES:
        records, ifaces = _records(cap)
        engine = Engine(Settings(), display=False)
        for frame_no, ts, wirelen, ifidx, data in records:
            name, lt = ifaces[ifidx]
            engine.feed(ts, name, decode(lt, data, wirelen), frame_no)
        engine.finish()
        pairs += [p for _, group in engine.sealed for p in group]
    assert len(pairs) > 1000
    odd = Pair(7, 'e"\\\x1b[31m\u00e9\u2028', Entry(bytes(16), 1, b"\x01" * 16, 2,
                                                   packets=1, first_seen=1.0000005,
                                                   last_seen=3e9),
               Entry(b"\x01\x02", 2, bytes(16), 1), True, 1.0, 2.0, end=END_RESET)
    pairs.append(odd)
    out = io.StringIO()
    JsonWriter(out).pairs(pairs)
    want = "".join(enc(entry_record(p, e)) + "\n" for p in pairs for e in (p.a, p.b))
    assert out.getvalue() == want


# ---- feed_pcap: a pcap file's records read where they lie in the reader's buffer ---------

def _pcap_state(path: Path, settings: Settings, limit: int) -> tuple[dict, int]:
    """Replay a pcap through feed_pcap, refilling as LocalRun does; (state, frames fed)."""
    engine = Engine(settings, display=False)
    with open_capture(path) as r:
        raw = r.raw_pcap()
        assert raw is not None
        iface = r.interfaces[0]
        n = 0
        while True:
            try:
                raw.pos, fed = feed_pcap(engine, raw.buf, raw.pos, raw.big_endian, raw.units,
                                         n, iface.name, iface.linktype, limit)
                raw.count += fed
                n += fed
                if fed < limit and not raw.refill():
                    break
            except CaptureFileError:  # as _records: what came before the damage counts
                break
    return _state(engine), n


def _pcap_both(cap: Path, settings: Settings, limit: int = 4096) -> None:
    records, ifaces = _records(cap)
    simple = Engine(settings, display=False)
    for frame_no, ts, wirelen, ifidx, data in records:
        name, lt = ifaces[ifidx]
        simple.feed(ts, name, decode(lt, data, wirelen), frame_no)
    state, fed = _pcap_state(cap, settings, limit)
    assert fed == len(records)
    _assert_same(_state(simple), state)


PCAPS = [c for c in CAPTURES if c.suffix == ".pcap"]


@pytest.mark.parametrize("cap", PCAPS, ids=lambda p: p.name)
def test_feed_pcap_equals_simple_twin(cap: Path) -> None:
    for settings in (Settings(), Settings(log_events=True, tcp_timeout=30.0)):
        _pcap_both(cap, settings)


def test_feed_pcap_equals_simple_twin_on_generated_traffic(tmp_path: Path) -> None:
    cap = tmp_path / "gen.pcap"
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_capture.py"), str(cap),
                    "--packets", "60000", "--connections", "3000"], check=True,
                   stdout=subprocess.DEVNULL)
    for settings, limit in ((Settings(), 4096),
                            (Settings(log_events=True, max_pairs=500, tcp_timeout=2.0), 7)):
        _pcap_both(cap, settings, limit)


@pytest.mark.parametrize("big_endian", [False, True], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("nano", [False, True], ids=["usec", "nsec"])
def test_feed_pcap_reads_every_pcap_flavour(tmp_path: Path, big_endian: bool,
                                            nano: bool) -> None:
    """The hand-made stream (every reason to leave the fast path) in each byte order and
    time resolution, the buffer cut into small reads: as the record reader sees it."""
    order = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    units = 10**9 if nano else 10**6
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)]
    for ts, _ifidx, frame in _stream():
        sec = int(ts)
        frac = round((ts - sec) * units)
        out.append(struct.pack(order + "IIII", sec, frac, len(frame), len(frame)) + frame)
    cap = tmp_path / "stream.pcap"
    cap.write_bytes(b"".join(out))
    _pcap_both(cap, Settings(log_events=True), limit=5)


# ---- feed_batch: a shard's batches read in place -------------------------------------------

def _batch_both(records: list[tuple], ifaces: dict, settings: Settings, size: int) -> None:
    simple = Engine(settings, display=False, auto_tick=False)
    fast = Engine(settings, display=False, auto_tick=False)
    clock = PacketClock()
    for frame_no, ts, wirelen, ifidx, data in records:  # ticks where a reader puts them
        if clock.advance(ts):
            simple.tick(ts)
        name, lt = ifaces[ifidx]
        simple.feed(ts, name, decode(lt, data, wirelen), frame_no)
    clock = PacketClock()
    ticks: list[int] = []
    TICK = 0xFFFF_FFF0  # stands for a control record: an index no interface has

    def control(frame_no: int, rec: tuple) -> None:
        ticks.append(frame_no)
        fast.tick(rec[0])

    batch: list[tuple] = []
    for frame_no, ts, wirelen, ifidx, data in records:
        if clock.advance(ts):
            batch.append((frame_no, ts, 0, TICK, b""))
        batch.append((frame_no, ts, wirelen, ifidx, data))
        if len(batch) >= size:
            feed_batch(fast, encode_batch(batch), ifaces, control)
            batch = []
    feed_batch(fast, encode_batch(batch), ifaces, control)
    assert ticks == sorted(ticks)
    _assert_same(_state(simple), _state(fast))


@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_feed_batch_equals_simple_twin(cap: Path) -> None:
    records, ifaces = _records(cap)
    _batch_both(records, ifaces, Settings(log_events=True, tcp_timeout=30.0), 512)


def test_feed_batch_equals_simple_twin_on_generated_traffic(tmp_path: Path) -> None:
    cap = tmp_path / "gen.pcap"
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_capture.py"), str(cap),
                    "--packets", "30000", "--connections", "1500"], check=True,
                   stdout=subprocess.DEVNULL)
    records, ifaces = _records(cap)
    _batch_both(records, ifaces, Settings(max_pairs=400, tcp_timeout=2.0), 333)


@pytest.mark.parametrize("cut", ["short", "magic", "header", "data", "trailing"])
def test_a_malformed_batch_is_refused_and_feeds_nothing(cut: str) -> None:
    good = encode_batch([(1, 10.0, 60, 0, _frame(A, B, 1, 2, SYN)),
                         (2, 10.1, 60, 0, _frame(B, A, 2, 1, SYN | ACK))])
    bad = {"short": good[:5], "magic": b"XXXX" + good[4:], "header": good[:8 + 10],
           "data": good[:-3], "trailing": good + b"\0"}[cut]
    engine = Engine(display=False)
    with pytest.raises(BatchError):
        feed_batch(engine, bad, {0: ("eth0", 1)}, lambda n, r: None)
    assert engine.summary.frames == 0 and not engine.tcp.pairs


def test_every_frame_is_counted_once_by_its_interface() -> None:
    """The summary's per-interface counts (the console's rates) add up to its totals on every
    capture, and a multi-interface pcapng spreads them over its interfaces."""
    seen_several = False
    for cap in CAPTURES:
        records, ifaces = _records(cap)
        _simple, fast, _n = _both(records, ifaces, Settings())
        s = fast["summary"]
        by = fast["ifaces"]
        assert sum(p for p, _b in by.values()) == s["frames"], cap
        assert sum(b for _p, b in by.values()) == s["ip"]["bytes"] + s["non_ip"]["bytes"], cap
        seen_several |= len(by) > 1
    assert seen_several


# ---- the records the in-place paths allocate without their constructors -------------------

def test_records_made_in_place_are_the_constructors_records() -> None:
    """new_entry and new_pair (compiled: an allocation and the fields that are not zero or
    None) make the records Entry(...) and Pair(...) make, every field."""
    import dataclasses

    from iptraf_mp.core.tcptable import Entry, Pair, new_entry, new_pair

    src, dst = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"
    a, b = new_entry(src, 1234, dst, 80), new_entry(dst, 80, src, 1234)
    assert dataclasses.asdict(a) == dataclasses.asdict(Entry(src, 1234, dst, 80))
    for partial in (False, True):
        got = new_pair(7, "eth0", a, b, partial, 1.5, 2.5)
        want = Pair(7, "eth0", Entry(src, 1234, dst, 80), Entry(dst, 80, src, 1234), partial,
                    1.5, 2.5)
        assert dataclasses.asdict(got) == dataclasses.asdict(want)
        assert got.a is a and got.b is b
