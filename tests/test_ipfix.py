"""IPFIX encoder/exporter tests.

Field values are checked with decoders that share no code with iptraf_mp.outputs.ipfix.encoder:
tshark's cflow dissector (messages wrapped into a pcap by dpkt) and nfcapd/nfdump
(messages sent over loopback UDP by IpfixExporter). Everything is sent to
127.0.0.1 or ::1 only.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iptraf_mp.outputs.ipfix.encoder import FlowRecord, IpfixEncoder
from iptraf_mp.outputs.ipfix.target import parse_target
from iptraf_mp.outputs.ipfix.transport import IpfixExporter

TSHARK = shutil.which("tshark")
NFCAPD = shutil.which("nfcapd")
NFDUMP = shutil.which("nfdump")
need_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
need_nfdump = pytest.mark.skipif(
    NFCAPD is None or NFDUMP is None, reason="nfcapd/nfdump (Debian package nfdump) not installed"
)

# Written out from RFC 7011/IANA, not imported, so a wrong constant in the module
# cannot agree with itself. {IE id: length}
V4_IES = {1: 8, 2: 8, 4: 1, 6: 2, 7: 2, 8: 4, 10: 4, 11: 2, 12: 4, 32: 2, 60: 1, 61: 1,
          136: 1, 152: 8, 153: 8}  # fmt: skip
V6_IES = {1: 8, 2: 8, 4: 1, 6: 2, 7: 2, 27: 16, 10: 4, 11: 2, 28: 16, 139: 2, 60: 1, 61: 1,
          136: 1, 152: 8, 153: 8}  # fmt: skip
V4_RECORD = 4 + 4 + 2 + 2 + 1 + 2 + 4 + 1 + 1 + 2 + 8 + 8 + 8 + 8 + 1  # bytes, from V4_IES
V6_RECORD = V4_RECORD + 24
HEADER = 16
SET_HEADER = 4


def a4(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, text)


def a6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def rec(**kw: object) -> FlowRecord:
    base: dict[str, object] = dict(
        src=a4("192.0.2.1"), dst=a4("198.51.100.2"), sport=40000, dport=443, proto=6,
        packets=10, octets=1500, tcp_flags=0x1B, ifindex=3, direction=0, icmp_type_code=0,
        start_ms=1_700_000_000_123, end_ms=1_700_000_001_456, end_reason=3,
    )  # fmt: skip
    base.update(kw)
    return FlowRecord(**base)  # type: ignore[arg-type]


def random_records(rng: random.Random, n: int, v6_share: float = 0.4) -> list[FlowRecord]:
    out = []
    for i in range(n):
        v6 = rng.random() < v6_share
        proto = rng.choice([6, 17, 58 if v6 else 1, 47])
        icmp = proto in (1, 58)
        start = 1_600_000_000_000 + rng.randrange(10**10)
        out.append(
            FlowRecord(
                src=rng.randbytes(16 if v6 else 4),
                dst=rng.randbytes(16 if v6 else 4),
                sport=0 if icmp or proto == 47 else rng.randrange(65536),
                dport=0 if icmp or proto == 47 else rng.randrange(65536),
                proto=proto,
                packets=rng.choice([1, rng.randrange(1, 10**6), 2**64 - 1 - i]),
                octets=rng.choice([40, rng.randrange(40, 10**12), 2**64 - 1]),
                tcp_flags=rng.randrange(0x200) if proto == 6 else 0,
                ifindex=rng.choice([1, rng.randrange(2**32)]),
                direction=rng.randrange(2),
                icmp_type_code=rng.randrange(256) * 256 + rng.randrange(256) if icmp else 0,
                start_ms=start,
                end_ms=start + rng.randrange(10**6),
                end_reason=rng.randrange(1, 5),
            )
        )
    return out


def expected(r: FlowRecord) -> dict[str, object]:
    return {
        "src": r.src, "dst": r.dst, "sport": r.sport, "dport": r.dport, "proto": r.proto,
        "packets": r.packets, "octets": r.octets, "tcp_flags": r.tcp_flags,
        "ifindex": r.ifindex, "direction": r.direction, "icmp_type_code": r.icmp_type_code,
        "start_ms": r.start_ms, "end_ms": r.end_ms, "end_reason": r.end_reason,
        "ip_version": 4 if len(r.src) == 4 else 6,
    }  # fmt: skip


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------
# Independent decoders


def write_pcap(path: Path, messages: list[bytes], sport: int = 40000) -> None:
    with path.open("wb") as fh:
        writer = dpkt.pcap.Writer(fh)
        for i, msg in enumerate(messages):
            udp = dpkt.udp.UDP(sport=sport, dport=4739, data=msg)
            udp.ulen = len(udp)
            ip = dpkt.ip.IP(src=a4("127.0.0.1"), dst=a4("127.0.0.1"), p=17, data=udp)
            ip.len = len(ip)
            eth = dpkt.ethernet.Ethernet(
                src=b"\x02" * 6, dst=b"\x02" * 6, type=dpkt.ethernet.ETH_TYPE_IP, data=ip
            )
            writer.writepkt(bytes(eth), ts=1_700_000_000 + i / 1000)


_TSHARK_TIME = re.compile(r"^(\w{3} +\d+, \d{4} \d\d:\d\d:\d\d)\.(\d{9}) UTC$")


def tshark_ms(text: str) -> int:
    m = _TSHARK_TIME.match(text)
    assert m, f"unexpected tshark time {text!r}"
    base = datetime.strptime(m.group(1), "%b %d, %Y %H:%M:%S").replace(tzinfo=UTC)
    nanos = int(m.group(2))
    assert nanos % 1_000_000 == 0, text
    return int(base.timestamp()) * 1000 + nanos // 1_000_000


def tshark_flow(flow: dict, set_id: int) -> dict[str, object]:
    v6 = "cflow.srcaddrv6" in flow
    if v6:
        icmp = int(flow["cflow.icmp_ipv6_type"]) * 256 + int(flow["cflow.icmp_ipv6_code"])
    else:
        icmp = int(flow["cflow.icmp_type_code_ipv4"], 16)
    times = flow["cflow.timedelta_tree"]
    return {
        "src": a6(flow["cflow.srcaddrv6"]) if v6 else a4(flow["cflow.srcaddr"]),
        "dst": a6(flow["cflow.dstaddrv6"]) if v6 else a4(flow["cflow.dstaddr"]),
        "sport": int(flow["cflow.srcport"]),
        "dport": int(flow["cflow.dstport"]),
        "proto": int(flow["cflow.protocol"]),
        "packets": int(flow["cflow.packets"]),
        "octets": int(flow["cflow.octets"]),
        "tcp_flags": int(flow["cflow.tcpflags"], 16),
        "ifindex": int(flow["cflow.inputint"]),
        "direction": int(flow["cflow.direction"]),
        "icmp_type_code": icmp,
        "start_ms": tshark_ms(times["cflow.abstimestart"]),
        "end_ms": tshark_ms(times["cflow.abstimeend"]),
        "end_reason": int(flow["cflow.flow_end_reason"]),
        "ip_version": int(flow["cflow.ip_version"]),
        "set_id": set_id,
    }


def tshark_decode(messages: list[bytes], tmp_path: Path) -> list[dict]:
    """One dict per message: header fields, templates seen, flows decoded."""
    pcap = tmp_path / "ipfix.pcap"
    write_pcap(pcap, messages)
    proc = subprocess.run(
        [TSHARK or "tshark", "-n", "-r", str(pcap), "-d", "udp.port==4739,cflow",
         "-T", "json", "-J", "cflow"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TZ": "UTC"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    packets = json.loads(proc.stdout)
    assert len(packets) == len(messages)
    out = []
    for pkt in packets:
        layer = pkt["_source"]["layers"]["cflow"]
        msg: dict = {
            "version": int(layer["cflow.version"]),
            "length": int(layer["cflow.len"]),
            "sequence": int(layer["cflow.sequence"]),
            "odid": int(layer["cflow.od_id"]),
            "export_time": int(layer["cflow.timestamp_tree"]["cflow.exporttime"]),
            "templates": {},
            "flows": [],
        }
        for key, body in layer.items():
            if not key.startswith("Set "):
                continue
            set_id = int(body["cflow.flowset_id"])
            if set_id == 2:
                for tkey, tmpl in body.items():
                    if not tkey.startswith("Template ("):
                        continue
                    fields = [v for k, v in tmpl.items() if k.startswith("Field (")]
                    assert len(fields) == int(tmpl["cflow.template_field_count"])
                    msg["templates"][int(tmpl["cflow.template_id"])] = [
                        (int(f["cflow.template_ipfix_field_type"]),
                         int(f["cflow.template_field_length"]))
                        for f in fields
                    ]  # fmt: skip
                continue
            # A data set tshark could not match to a template has no template_frame.
            assert "cflow.template_frame" in body, f"template {set_id} not recognised: {body}"
            flows = [v for k, v in body.items() if k.startswith("Flow ")]
            msg["flows"].extend(tshark_flow(f, set_id) for f in flows)
        out.append(msg)
    return out


def raw_walk(message: bytes) -> tuple[tuple[int, int, int, int, int], list[tuple[int, int]]]:
    """Header and (set id, set length) list, straight from RFC 7011 section 3."""
    header = struct.unpack_from("!HHIII", message)
    sets = []
    off = HEADER
    while off < len(message):
        set_id, length = struct.unpack_from("!HH", message, off)
        assert length >= SET_HEADER, "set length below its header"
        sets.append((set_id, length))
        off += length
    assert off == len(message), "sets do not tile the message"
    return header, sets


def raw_count(message: bytes) -> int:
    _, sets = raw_walk(message)
    n = 0
    for set_id, length in sets:
        if set_id == 256:
            assert (length - SET_HEADER) % V4_RECORD == 0
            n += (length - SET_HEADER) // V4_RECORD
        elif set_id == 257:
            assert (length - SET_HEADER) % V6_RECORD == 0
            n += (length - SET_HEADER) // V6_RECORD
    return n


# ---------------------------------------------------------------------------
# Encoder, decoded by tshark


@need_tshark
def test_tshark_decodes_every_field_of_every_record(tmp_path: Path) -> None:
    rng = random.Random(7011)
    edge = [
        rec(),
        rec(src=a4("0.0.0.0"), dst=a4("255.255.255.255"), sport=65535, dport=0,
            packets=2**64 - 1, octets=2**64 - 1, tcp_flags=0x1FF, ifindex=2**32 - 1,
            direction=1, start_ms=0, end_ms=253_402_300_799_999, end_reason=4),  # 9999-12-31
        rec(proto=1, sport=0, dport=0, tcp_flags=0, icmp_type_code=3 * 256 + 3, end_reason=1),
        rec(src=a6("2001:db8::1"), dst=a6("ff02::1:ff00:1"), proto=58, sport=0, dport=0,
            tcp_flags=0, icmp_type_code=135 * 256, direction=1, end_reason=2),
        rec(src=a6("::"), dst=a6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), proto=17,
            sport=5353, dport=53, tcp_flags=0, packets=1, octets=48),
    ]  # fmt: skip
    records = edge + random_records(rng, 400)
    enc = IpfixEncoder(odid=0xDEADBEEF)
    messages = [enc.templates(1_700_000_100)] + enc.encode(records, 1_700_000_123)
    decoded = tshark_decode(messages, tmp_path)

    assert decoded[0]["templates"].keys() == {256, 257}
    assert dict(decoded[0]["templates"][256]) == V4_IES
    assert len(decoded[0]["templates"][256]) == len(V4_IES)
    assert dict(decoded[0]["templates"][257]) == V6_IES
    assert len(decoded[0]["templates"][257]) == len(V6_IES)
    assert decoded[0]["flows"] == []
    assert decoded[0]["export_time"] == 1_700_000_100

    seq = 0
    flows = []
    for msg, raw in zip(decoded, messages, strict=True):
        assert msg["version"] == 10
        assert msg["odid"] == 0xDEADBEEF
        assert msg["length"] == len(raw) <= 1400
        assert msg["sequence"] == seq
        seq += len(msg["flows"])
        flows.extend(msg["flows"])
    assert decoded[1]["export_time"] == 1_700_000_123

    # The encoder groups by address family; compare per family in input order.
    for version, set_id in ((4, 256), (6, 257)):
        want = [expected(r) for r in records if len(r.src) == {4: 4, 6: 16}[version]]
        got = [f for f in flows if f["ip_version"] == version]
        assert all(f.pop("set_id") == set_id for f in got)
        assert got == want
    assert len(flows) == len(records)


@need_tshark
def test_tshark_many_records_split_by_mtu_with_exact_sequence_numbers(tmp_path: Path) -> None:
    rng = random.Random(4739)
    enc = IpfixEncoder(odid=9, mtu=576)
    batches = [random_records(rng, n) for n in (700, 1, 0, 333)]
    messages = [enc.templates(1)]
    for i, batch in enumerate(batches):
        messages += enc.encode(batch, 1000 + i)
    decoded = tshark_decode(messages, tmp_path)
    seq = 0
    for msg, raw in zip(decoded, messages, strict=True):
        assert len(raw) <= 576
        assert msg["sequence"] == seq, "sequence must count data records sent before it"
        seq += len(msg["flows"])
    assert seq == sum(map(len, batches))
    assert enc.sequence == seq
    # 576 - 16 leaves room for 9 IPv4 (4 + 9*56) or 6 IPv6 records per message.
    assert max(len(m["flows"]) for m in decoded) == 9


@need_tshark
def test_tshark_template_refresh_every_n_messages(tmp_path: Path) -> None:
    enc = IpfixEncoder(odid=1, mtu=512, template_every=3)
    records = random_records(random.Random(3), 60, v6_share=0.0)
    messages = enc.encode(records, 5)
    decoded = tshark_decode(messages, tmp_path)
    with_templates = [i for i, m in enumerate(decoded) if m["templates"]]
    assert with_templates == list(range(0, len(messages), 3))
    assert sum(len(m["flows"]) for m in decoded) == 60
    # Asked-for templates come first even with nothing else to say.
    again = enc.encode([], 6, with_templates=True)
    assert len(again) == 1
    assert tshark_decode(again, tmp_path)[0]["templates"].keys() == {256, 257}


# ---------------------------------------------------------------------------
# Encoder, structure and packing (raw RFC 7011 walk, many shapes)


@settings(max_examples=150, deadline=None)
@given(
    n4=st.integers(0, 120),
    n6=st.integers(0, 120),
    mtu=st.integers(232, 9000),
    start_seq=st.integers(0, 2**32 - 1),
    templates=st.booleans(),
)
def test_mtu_packing_and_sequence(
    n4: int, n6: int, mtu: int, start_seq: int, templates: bool
) -> None:
    enc = IpfixEncoder(odid=5, mtu=mtu)
    enc.sequence = start_seq
    records = [rec()] * n4 + [rec(src=a6("::1"), dst=a6("::2"))] * n6
    random.Random(n4 * 1000 + n6).shuffle(records)
    messages = enc.encode(records, 42, with_templates=templates)
    seq = start_seq
    total = 0
    left4, left6 = n4, n6
    for i, msg in enumerate(messages):
        (version, length, export_time, sequence, odid), sets = raw_walk(msg)
        assert (version, length, export_time, odid) == (10, len(msg), 42, 5)
        assert len(msg) <= mtu
        assert sequence == seq
        has_templates = any(s == 2 for s, _ in sets)
        assert has_templates == (templates and i == 0)
        assert [s for s, _ in sets if s != 2] in ([256], [257], [256, 257], [])
        n = raw_count(msg)
        v4_here = sum((ln - 4) // V4_RECORD for s, ln in sets if s == 256)
        left4 -= v4_here
        left6 -= n - v4_here
        if i < len(messages) - 1:
            # "As few as fit": no pending record could have joined this message.
            room = mtu - len(msg)
            assert not (left4 and room >= (0 if 256 in dict(sets) else 4) + V4_RECORD)
            assert not (left6 and room >= (0 if 257 in dict(sets) else 4) + V6_RECORD)
        seq = (seq + n) % 2**32
        total += n
    assert total == n4 + n6
    assert enc.sequence == seq
    if not records and not templates:
        assert messages == []


def test_pure_ipv4_uses_the_minimum_number_of_messages() -> None:
    enc = IpfixEncoder(odid=1, mtu=1400)
    per_message = (1400 - HEADER - SET_HEADER) // V4_RECORD
    messages = enc.encode([rec()] * 1000, 0)
    assert len(messages) == -(-1000 // per_message)
    assert [raw_count(m) for m in messages[:-1]] == [per_message] * (len(messages) - 1)


def test_templates_message_structure() -> None:
    enc = IpfixEncoder(odid=77)
    enc.sequence = 12
    msg = enc.templates(99)
    (version, length, export_time, sequence, odid), sets = raw_walk(msg)
    assert (version, length, export_time, sequence, odid) == (10, len(msg), 99, 12, 77)
    assert [s for s, _ in sets] == [2]
    assert raw_count(msg) == 0
    assert enc.sequence == 12  # templates are not data records


def test_bad_records_are_skipped_or_saturated_never_raised() -> None:
    enc = IpfixEncoder(odid=1)
    records = [
        rec(src=a4("10.0.0.1"), dst=a6("::1")),  # mixed families
        rec(src=b"\x01\x02\x03", dst=b"\x01\x02\x03"),  # no such family
        rec(packets=None),  # not a number at all
        rec(packets=-5, octets=2**70, sport=70000, tcp_flags=0x1FFFF, ifindex=-1),
        rec(),
    ]
    messages = enc.encode(records, 1)
    assert enc.invalid_records == 3
    assert sum(raw_count(m) for m in messages) == 2
    # The saturated record: 0 packets, max octets, max port, max flags, ifindex 0.
    first = messages[0][HEADER + SET_HEADER : HEADER + SET_HEADER + V4_RECORD]
    octets, packets = struct.unpack_from("!QQ", first)
    assert (octets, packets) == (2**64 - 1, 0)


@pytest.mark.parametrize("mtu", [100, 231, 65536])
def test_encoder_rejects_unusable_mtu(mtu: int) -> None:
    with pytest.raises(ValueError, match="mtu"):
        IpfixEncoder(odid=1, mtu=mtu)


def test_encoder_rejects_bad_odid() -> None:
    with pytest.raises(ValueError, match="observation domain"):
        IpfixEncoder(odid=2**32)


# ---------------------------------------------------------------------------
# Target parsing


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:4739", ("udp", "127.0.0.1", 4739)),
        ("udp://127.0.0.1:2055", ("udp", "127.0.0.1", 2055)),
        ("TCP://collector.example:4740", ("tcp", "collector.example", 4740)),
        ("[::1]:9995", ("udp", "::1", 9995)),
        ("tcp://[2001:db8::5]:1", ("tcp", "2001:db8::5", 1)),
        ("[fe80::1%eth0]:4739", ("udp", "fe80::1%eth0", 4739)),
        ("localhost", ("udp", "localhost", 4739)),
        ("[::1]", ("udp", "::1", 4739)),
        ("  10.1.2.3:65535 ", ("udp", "10.1.2.3", 65535)),
    ],
)
def test_parse_target_accepts(text: str, want: tuple[str, str, int]) -> None:
    assert parse_target(text) == want


@pytest.mark.parametrize(
    "text",
    [
        "", "   ", ":4739", "host:", "host:0", "host:65536", "host:http", "host:-1",
        "::1:4739", "[::1", "[::1]x", "[nothost]:4739", "sctp://h:1", "udp://",
        "ho st:1", "a/b:1", "host:１２", "[::1]:",
    ],
)  # fmt: skip
def test_parse_target_rejects_with_one_line(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_target(text)
    assert "\n" not in str(info.value)
    assert "IPFIX target" in str(info.value)


def test_exporter_rejects_conflicting_transport() -> None:
    with pytest.raises(ValueError, match="transport"):
        IpfixExporter("tcp://127.0.0.1:1", odid=1, transport="udp")
    with pytest.raises(ValueError, match="transport"):
        IpfixExporter("127.0.0.1:1", odid=1, transport="sctp")


# ---------------------------------------------------------------------------
# Exporter over real loopback sockets


def free_port(kind: int, host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def recv_all(sock: socket.socket, wait: float = 1.0) -> list[bytes]:
    out = []
    sock.settimeout(wait)
    while True:
        try:
            out.append(sock.recv(65535))
        except TimeoutError:
            return out
        sock.settimeout(0.2)


def test_udp_exporter_templates_first_and_refreshed_on_interval() -> None:
    clock = FakeClock()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        port = sink.getsockname()[1]
        exp = IpfixExporter(f"127.0.0.1:{port}", odid=3, template_interval=30.0, clock=clock)
        assert exp.export([rec()] * 5) == 5
        clock.now += 10
        assert exp.export([rec(src=a6("::1"), dst=a6("::2"))] * 2) == 2
        clock.now += 21  # 31 s after the first templates
        assert exp.export([rec()]) == 1
        clock.now += 1
        assert exp.export([]) == 0  # nothing due, nothing sent
        exp.close()
        got = recv_all(sink)
    walked = [raw_walk(m) for m in got]
    assert [[s for s, _ in sets] for _, sets in walked] == [[2, 256], [257], [2, 256]]
    assert [h[3] for h, _ in walked] == [0, 5, 7]
    assert [h[2] for h, _ in walked] == [1_700_000_000, 1_700_000_010, 1_700_000_031]
    assert exp.stats.sent_messages == 3
    assert exp.stats.sent_records == 8
    assert exp.stats.errors == exp.stats.dropped_records == 0


def test_udp_exporter_over_ipv6_loopback() -> None:
    try:
        sink = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sink.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with sink:
        port = sink.getsockname()[1]
        exp = IpfixExporter(f"udp://[::1]:{port}", odid=3)
        assert exp.export([rec()] * 30) == 30
        exp.close()
        got = recv_all(sink)
    assert sum(raw_count(m) for m in got) == 30
    assert raw_walk(got[0])[1][0][0] == 2


def test_udp_exporter_empty_export_sends_templates_when_due() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        exp = IpfixExporter(f"127.0.0.1:{sink.getsockname()[1]}", odid=3)
        assert exp.export([]) == 0
        got = recv_all(sink)
    assert len(got) == 1
    assert [s for s, _ in raw_walk(got[0])[1]] == [2]
    assert exp.stats.sent_messages == 1


def test_udp_closed_port_is_counted_never_raised() -> None:
    port = free_port(socket.SOCK_DGRAM)
    exp = IpfixExporter(f"127.0.0.1:{port}", odid=1)
    offered = 0
    deadline = time.monotonic() + 5
    while exp.stats.errors < 2 and time.monotonic() < deadline:
        t0 = time.monotonic()
        exp.export([rec()] * 3)
        assert time.monotonic() - t0 < 0.5
        offered += 3
        time.sleep(0.02)  # let the ICMP port unreachable come back
    s = exp.stats
    assert s.errors >= 2, s
    assert "ConnectionRefusedError" in s.last_error
    assert "\n" not in s.last_error
    assert s.dropped_records > 0
    assert s.sent_records + s.dropped_records == offered

    # The collector comes back: templates again at once, and the sequence number
    # counts only the records that really left (refused datagrams never did).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", port))
        before = exp.stats.sent_records
        assert exp.export([rec()] * 2) == 2
        got = recv_all(sink)
    exp.close()
    (hdr, sets) = raw_walk(got[0])
    assert sets[0][0] == 2
    assert hdr[3] == before % 2**32


def test_unresolvable_name_is_counted_and_retried() -> None:
    clock = FakeClock()
    def no_dns(host, port, family=0, socktype=0, proto=0, flags=0):
        # stands in for the system resolver: the test must not query a real DNS server
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    exp = IpfixExporter("no-such-collector.invalid:4739", odid=1, clock=clock, resolver=no_dns)
    offered = 0
    deadline = time.monotonic() + 15
    while exp.stats.errors < 1 and time.monotonic() < deadline:
        t0 = time.monotonic()
        exp.export([rec()] * 2)
        assert time.monotonic() - t0 < 0.5, "export must not wait for DNS"
        offered += 2
    s = exp.stats
    assert s.errors == 1, s
    assert "no-such-collector.invalid" in s.last_error
    assert "\n" not in s.last_error
    assert s.dropped_records == offered
    assert s.sent_messages == 0
    # Backed off: the next call does not try again ...
    exp.export([rec()])
    assert exp.stats.errors == 1
    # ... but once the backoff has passed it does.
    clock.now += 60
    deadline = time.monotonic() + 15
    while exp.stats.errors < 2 and time.monotonic() < deadline:
        exp.export([rec()])
    assert exp.stats.errors == 2


def read_stream(conn: socket.socket, want_records: int, timeout: float = 3.0) -> list[bytes]:
    """Split a TCP byte stream into IPFIX messages by their length field."""
    conn.settimeout(timeout)
    buf = b""
    messages: list[bytes] = []
    while sum(map(raw_count, messages)) < want_records:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 4:
            length = struct.unpack_from("!H", buf, 2)[0]
            if len(buf) < length:
                break
            messages.append(buf[:length])
            buf = buf[length:]
    return messages


def test_tcp_refused_is_counted_retried_with_backoff_then_connects() -> None:
    clock = FakeClock()
    port = free_port(socket.SOCK_STREAM)
    exp = IpfixExporter(f"tcp://127.0.0.1:{port}", odid=4, transport="tcp", clock=clock)
    t0 = time.monotonic()
    assert exp.export([rec()] * 4) == 0
    assert time.monotonic() - t0 < 0.5
    assert exp.stats.errors == 1
    assert "refused" in exp.stats.last_error.lower()
    exp.export([rec()])  # within the backoff: not retried, just dropped
    assert exp.stats.errors == 1
    assert exp.stats.dropped_records == 5
    clock.now += 1.5
    exp.export([rec()])  # retried
    assert exp.stats.errors == 2

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", port))
        srv.listen(4)
        clock.now += 10
        assert exp.export([rec()] * 3 + [rec(src=a6("::1"), dst=a6("::2"))]) == 4
        conn, _ = srv.accept()
        with conn:
            first = read_stream(conn, 4)
            assert exp.export([rec()] * 200) == 200
            more = read_stream(conn, 200)
        # First message of a connection: templates, then data, sequence from 0.
        (hdr, sets) = raw_walk(first[0])
        assert [s for s, _ in sets] == [2, 256, 257]
        assert hdr[3] == 0 and hdr[4] == 4
        assert [raw_walk(m)[0][3] for m in more][0] == 4
        assert sum(map(raw_count, more)) == 200
        assert all(2 not in dict(raw_walk(m)[1]) for m in more), "templates once per connection"

        # The collector went away: noticed, counted, and a new session starts at 0.
        errors = exp.stats.errors
        deadline = time.monotonic() + 3
        while exp.stats.errors == errors and time.monotonic() < deadline:
            exp.export([rec()])
            time.sleep(0.02)
        assert exp.stats.errors > errors
        clock.now += 120
        exp.export([rec()] * 2)
        conn2, _ = srv.accept()
        with conn2:
            again = read_stream(conn2, 2)
        hdr2, sets2 = raw_walk(again[0])
        assert hdr2[3] == 0 and sets2[0][0] == 2
    exp.close()
    s = exp.stats
    assert s.connects == 2
    assert s.sent_records >= 206


def test_tcp_connect_that_hangs_never_blocks_and_times_out() -> None:
    clock = FakeClock()
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        # Fill the accept queue so the next SYN is dropped and connect() hangs.
        filler = socket.create_connection(("127.0.0.1", port))
        with filler:
            exp = IpfixExporter(
                f"127.0.0.1:{port}", odid=1, transport="tcp", clock=clock, connect_timeout=5.0
            )
            for _ in range(3):
                t0 = time.monotonic()
                assert exp.export([rec()]) == 0
                assert time.monotonic() - t0 < 0.5
            if exp.stats.connects:
                pytest.skip("kernel accepted the connection despite a full backlog")
            assert exp.stats.errors == 0
            clock.now += 6
            exp.export([rec()])
            assert exp.stats.errors == 1
            assert "timed out" in exp.stats.last_error
            assert exp.stats.dropped_records == 4
            exp.close()


def test_exporter_survives_garbage_records() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        exp = IpfixExporter(f"127.0.0.1:{sink.getsockname()[1]}", odid=1)
        sent = exp.export([rec(src=b"xx"), rec(), rec(octets="many")])  # type: ignore[list-item]
        assert sent == 1
        assert exp.stats.dropped_records == 2
        exp.close()


# ---------------------------------------------------------------------------
# nfcapd/nfdump end to end


def _udp_listening(port: int) -> bool:
    needle = f":{port:04X} "
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            if needle in Path(table).read_text():
                return True
        except OSError:
            pass
    return False


@dataclass
class Collector:
    port: int
    log: str = ""  # nfcapd's output, once it has stopped


@contextmanager
def nfcapd(flowdir: Path) -> Iterator[Collector]:
    """A private nfcapd on a free loopback UDP port, writing into `flowdir`, listening when
    the block starts and stopped (SIGTERM) when it ends, its output then in `.log`."""
    c = Collector(free_port(socket.SOCK_DGRAM))
    proc = subprocess.Popen(
        [NFCAPD or "nfcapd", "-b", "127.0.0.1", "-p", str(c.port), "-w", str(flowdir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not _udp_listening(c.port):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "nfcapd did not start listening"
            time.sleep(0.05)
        yield c
        time.sleep(0.3)  # let nfcapd read its socket before it is told to stop
    finally:
        proc.send_signal(signal.SIGTERM)
        c.log = proc.communicate(timeout=30)[0]


def run_nfcapd_and_export(tmp_path: Path, batches: list[list[FlowRecord]]) -> tuple[list, str]:
    flowdir = tmp_path / "flows"
    flowdir.mkdir()
    with nfcapd(flowdir) as collector:
        exp = IpfixExporter(f"127.0.0.1:{collector.port}", odid=42)
        for batch in batches:
            assert exp.export(batch) == len(batch), exp.stats
        exp.close()
        assert exp.stats.errors == 0, exp.stats
    log = collector.log
    env = {**os.environ, "TZ": "UTC"}
    dump = subprocess.run(
        [NFDUMP or "nfdump", "-R", str(flowdir), "-o", "json"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert dump.returncode == 0, dump.stderr
    flows = json.loads(dump.stdout) if dump.stdout.strip() else []
    raw = subprocess.run(
        [NFDUMP or "nfdump", "-R", str(flowdir), "-o", "raw"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    return flows, log + raw.stdout


def nfdump_flags(bits: int) -> str:
    return "".join(c if bits & (0x80 >> i) else "." for i, c in enumerate("CEUAPRSF"))


def nfdump_ms(text: str) -> int:
    dt = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


@need_nfdump
def test_nfcapd_receives_ipv4_and_ipv6_records(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    t = dict(start_ms=now - 5000, end_ms=now - 1000)
    records = [
        rec(src=a4("10.1.0.1"), dst=a4("10.2.0.2"), sport=51000, dport=443, proto=6,
            packets=12, octets=9000, tcp_flags=0x1B, ifindex=2, direction=0, end_reason=3, **t),
        rec(src=a4("10.2.0.2"), dst=a4("10.1.0.1"), sport=443, dport=51000, proto=6,
            packets=2**40, octets=2**50, tcp_flags=0x12, ifindex=2, direction=1, end_reason=2,
            **t),
        rec(src=a4("10.1.0.1"), dst=a4("10.9.9.9"), sport=5353, dport=53, proto=17,
            packets=1, octets=73, tcp_flags=0, ifindex=7, direction=0, end_reason=1, **t),
        rec(src=a4("10.1.0.1"), dst=a4("10.9.9.9"), sport=0, dport=0, proto=1,
            packets=4, octets=336, tcp_flags=0, icmp_type_code=8 * 256, ifindex=7,
            direction=0, end_reason=1, **t),
        rec(src=a6("2001:db8::10"), dst=a6("2001:db8:1::20"), sport=40001, dport=22, proto=6,
            packets=30, octets=4000, tcp_flags=0x19, ifindex=3, direction=1, end_reason=4,
            **t),
        rec(src=a6("2001:db8::10"), dst=a6("2001:db8:1::20"), sport=0, dport=0, proto=58,
            packets=1, octets=104, tcp_flags=0, icmp_type_code=1 * 256 + 4, ifindex=3,
            direction=0, end_reason=1, **t),
        rec(src=a6("fe80::1"), dst=a6("ff02::fb"), sport=5353, dport=5353, proto=17,
            packets=3, octets=300, tcp_flags=0, ifindex=4, direction=0, end_reason=2, **t),
    ]  # fmt: skip
    # Enough extra IPv4/IPv6 traffic to span several messages and two export calls.
    bulk = random_records(random.Random(55), 150)
    for r in bulk:
        r.start_ms, r.end_ms = t["start_ms"], t["end_ms"]
        r.packets = 1 + r.packets % 10**6
        r.octets = 40 + r.octets % 10**9
    flows, log = run_nfcapd_and_export(tmp_path, [records, bulk[:70], bulk[70:]])

    assert "Sequence Errors: 0" in log, log
    assert len(flows) == len(records) + len(bulk)

    def key(src: bytes, dst: bytes, sport: int, dport: int, proto: int) -> tuple:
        return (src, dst, sport, dport, proto)

    by_key: dict[tuple, dict] = {}
    for f in flows:
        v6 = "src6_addr" in f
        src = a6(f["src6_addr"]) if v6 else a4(f["src4_addr"])
        dst = a6(f["dst6_addr"]) if v6 else a4(f["dst4_addr"])
        if "icmp_type" in f:
            k = key(src, dst, 0, 0, f["proto"])
        else:
            k = key(src, dst, f["src_port"], f["dst_port"], f["proto"])
        by_key.setdefault(k, f)

    for r in records + bulk:
        f = by_key.get(key(r.src, r.dst, r.sport, r.dport, r.proto))
        assert f is not None, f"flow missing at the collector: {r}"
        assert f["in_packets"] == r.packets
        assert f["in_bytes"] == r.octets
        assert f["proto"] == r.proto
        assert f["input_snmp"] == r.ifindex
        assert f["direction"] == r.direction
        assert nfdump_ms(f["first"]) == r.start_ms
        assert nfdump_ms(f["last"]) == r.end_ms
        if r.proto in (1, 58):
            assert (f["icmp_type"], f["icmp_code"]) == divmod(r.icmp_type_code, 256)
        else:
            assert (f["src_port"], f["dst_port"]) == (r.sport, r.dport)
            # nfdump keeps only the low 8 flag bits (no NS).
            assert f["tcp_flags"] == nfdump_flags(r.tcp_flags & 0xFF)

    # flowEndReason only shows in nfdump's raw output.
    reasons = sorted(int(m, 16) for m in re.findall(r"end reason\s+=\s+0x([0-9a-f]+)", log))
    assert reasons == sorted(r.end_reason for r in records + bulk)
