"""Tests for iptraf_mp.capture.capfile: pcap/pcapng reading and pcapng writing.

Files are built by hand with struct (or with dpkt) so that the reader is
checked against an independent idea of the formats, and the writer's output
is checked with tshark/capinfos, which share no code with this project.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iptraf_mp.capture import capfile
from iptraf_mp.capture.capfile import CaptureFileError, Interface, PcapngWriter, open_capture

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
TSHARK = shutil.which("tshark")
CAPINFOS = shutil.which("capinfos")

Packet = tuple[float, int, bytes, int]


# --- helpers: read -----------------------------------------------------------
def read_all(path: Path | str) -> tuple[list[Packet], list[Interface]]:
    with open_capture(str(path)) as r:
        packets = list(r)
        return packets, list(r.interfaces)


def read_until_error(path: Path | str) -> tuple[list[Packet], CaptureFileError]:
    """Collect what the reader yields before it raises; it must raise."""
    got: list[Packet] = []
    with pytest.raises(CaptureFileError) as info:
        with open_capture(str(path)) as r:
            for pkt in r:
                got.append(pkt)
    return got, info.value


def assert_one_line_naming(err: CaptureFileError, path: Path | str) -> None:
    msg = str(err)
    assert msg.startswith(str(path) + ":"), msg
    assert "\n" not in msg


def assert_after(err: CaptureFileError, count: int) -> None:
    """The message tells how many packets were read before the damage."""
    assert re.search(rf"after {count} packets?\b", str(err)), str(err)


# --- helpers: classic pcap by hand --------------------------------------------
MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D


def pcap_header(
    order: str = "<", nano: bool = False, snaplen: int = 65535, ltfield: int = 1
) -> bytes:
    return struct.pack(
        order + "IHHiIII", MAGIC_NS if nano else MAGIC_US, 2, 4, 0, 0, snaplen, ltfield
    )


def pcap_record(
    sec: int,
    frac: int,
    data: bytes,
    wirelen: int | None = None,
    order: str = "<",
    caplen: int | None = None,
) -> bytes:
    return (
        struct.pack(
            order + "IIII",
            sec,
            frac,
            len(data) if caplen is None else caplen,
            len(data) if wirelen is None else wirelen,
        )
        + data
    )


SAMPLE_FRAMES = [bytes(range(i % 7, i % 7 + n)) for i, n in enumerate((60, 1, 0, 200, 77))]


def sample_pcap(order: str = "<", nano: bool = False) -> tuple[bytes, list[int]]:
    """A pcap with SAMPLE_FRAMES and the file offsets where each record ends."""
    out = bytearray(pcap_header(order, nano))
    ends = []
    for i, frame in enumerate(SAMPLE_FRAMES):
        out += pcap_record(1_600_000_000 + i, 1000 * i, frame, len(frame) + i, order)
        ends.append(len(out))
    return bytes(out), ends


# --- helpers: pcapng by hand ---------------------------------------------------
def ng_block(btype: int, body: bytes, order: str = "<") -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack(order + "II", btype, total) + body + struct.pack(order + "I", total)


def ng_opts(opts: Iterable[tuple[int, bytes]], order: str = "<") -> bytes:
    out = b""
    for code, value in opts:
        out += struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)
    return out + struct.pack(order + "HH", 0, 0) if out else b""


def ng_shb(order: str = "<", opts: Iterable[tuple[int, bytes]] = ()) -> bytes:
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + ng_opts(opts, order)
    return ng_block(0x0A0D0D0A, body, order)


def ng_idb(
    linktype: int = 1,
    snaplen: int = 0,
    order: str = "<",
    name: str | None = None,
    tsresol: int | None = None,
    fcslen: int | None = None,
    tsoffset: int | None = None,
) -> bytes:
    opts = []
    if name is not None:
        opts.append((2, name.encode()))
    if tsresol is not None:
        opts.append((9, bytes([tsresol])))
    if fcslen is not None:
        opts.append((13, bytes([fcslen])))
    if tsoffset is not None:
        opts.append((14, struct.pack(order + "q", tsoffset)))
    return ng_block(
        1, struct.pack(order + "HHI", linktype, 0, snaplen) + ng_opts(opts, order), order
    )


def ng_epb(
    ifid: int,
    ticks: int,
    data: bytes,
    wirelen: int | None = None,
    order: str = "<",
    opts: Iterable[tuple[int, bytes]] = (),
) -> bytes:
    fields = struct.pack(
        order + "IIIII",
        ifid,
        ticks >> 32,
        ticks & 0xFFFFFFFF,
        len(data),
        len(data) if wirelen is None else wirelen,
    )
    pad = b"\0" * (-len(data) % 4)
    return ng_block(6, fields + data + pad + ng_opts(opts, order), order)


def ng_spb(data: bytes, wirelen: int, order: str = "<") -> bytes:
    return ng_block(3, struct.pack(order + "I", wirelen) + data, order)


def ng_obsolete_pb(ifid: int, ticks: int, data: bytes, order: str = "<") -> bytes:
    fields = struct.pack(
        order + "HHIIII", ifid, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)
    )
    return ng_block(2, fields + data, order)


def sample_pcapng() -> tuple[bytes, list[tuple[int, int]]]:
    """SHB, IDB, EPBs and skippable blocks; returns (file, [(block end, packets so far)])."""
    blocks = [
        (ng_shb(opts=[(1, b"sample")]), 0),
        (ng_idb(1, 0, name="eth0"), 0),
        (ng_epb(0, 1_600_000_000_000_000, SAMPLE_FRAMES[0]), 1),
        (ng_block(5, struct.pack("<III", 0, 0, 0)), 0),  # interface statistics
        (ng_epb(0, 1_600_000_000_000_001, SAMPLE_FRAMES[1], 90), 1),
        (ng_block(4, b"\0\0\0\0"), 0),  # name resolution
        (ng_epb(0, 1_600_000_000_000_002, SAMPLE_FRAMES[2]), 1),
        (ng_epb(0, 1_600_000_000_000_003, SAMPLE_FRAMES[3]), 1),
    ]
    out = b""
    ends = []
    total = 0
    for block, packets in blocks:
        out += block
        total += packets
        ends.append((len(out), total))
    return out, ends


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- writer round trip ---------------------------------------------------------
ROUND_TRIP_COMMENT = "iptraf-mp round trip: three interfaces \u2713"
IFACES = [("eth0", 1, 262144), ("any", 113, 65535), ("tun0", 101, 1500)]
CAPINFOS_ENCAP = {1: "Ethernet", 113: "Linux cooked-mode capture v1", 101: "Raw IP"}


def make_round_trip(path: Path) -> list[tuple[float, int, bytes, int]]:
    """Write a 3-interface pcapng; interfaces are added between packets on purpose."""
    written = []
    with PcapngWriter(str(path), comment=ROUND_TRIP_COMMENT) as w:
        eth = w.add_interface(*IFACES[0])
        t = 1_700_000_000.000001
        for i, size in enumerate((60, 1514, 61, 62, 63)):
            frame = bytes((i + j) & 0xFF for j in range(size))
            w.write(eth, t + i * 0.25, frame, size)
            written.append((t + i * 0.25, eth, frame, size))
        sll = w.add_interface(*IFACES[1])
        raw = w.add_interface(*IFACES[2])
        for i in range(6):
            ifi = sll if i % 2 else raw
            frame = bytes([0x45]) + bytes(range(i + 20))
            wirelen = len(frame) + 100 * (i % 3)  # some frames cut by the snaplen
            ts = 1_700_000_100.5 + i / 1000
            w.write(ifi, ts, frame, wirelen)
            written.append((ts, ifi, frame, wirelen))
        w.write(eth, 1_700_000_200.0, b"", 0)  # empty frames are legal
        written.append((1_700_000_200.0, eth, b"", 0))
    return written


def test_round_trip_three_interfaces(tmp_path: Path) -> None:
    path = tmp_path / "rt.pcapng"
    written = make_round_trip(path)
    with open_capture(str(path)) as r:
        got = []
        for pkt in r:
            # The IDB an EPB refers to has always been met by then.
            assert pkt[1] < len(r.interfaces)
            got.append(pkt)
        interfaces = list(r.interfaces)
    assert interfaces == [Interface(n, lt, snap) for n, lt, snap in IFACES]
    assert len(got) == len(written)
    for (ts, ifi, data, wirelen), (wts, wifi, wdata, wwirelen) in zip(got, written, strict=True):
        assert (ifi, data, wirelen) == (wifi, wdata, wwirelen)
        assert round(ts * 1e6) == round(wts * 1e6)


@pytest.mark.skipif(
    TSHARK is None or CAPINFOS is None,
    reason="tshark/capinfos not installed: no independent pcapng reader",
)
def test_round_trip_seen_by_tshark_and_capinfos(tmp_path: Path) -> None:
    path = tmp_path / "rt.pcapng"
    written = make_round_trip(path)
    names = [n for n, _lt, _snap in IFACES]

    fields = subprocess.run(
        [
            TSHARK,
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.len",
            "-e",
            "frame.cap_len",
            "-e",
            "frame.time_epoch",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(fields) == len(written)
    for line, (ts, ifi, data, wirelen) in zip(fields, written, strict=True):
        name, frame_len, cap_len, epoch = line.split("\t")
        assert name == names[ifi]
        assert int(frame_len) == wirelen
        assert int(cap_len) == len(data)
        assert abs(float(epoch) - ts) < 1e-6

    info = subprocess.run([CAPINFOS, str(path)], capture_output=True, text=True, check=True).stdout
    assert f"Number of packets:   {len(written)}\n" in info
    assert "Number of interfaces in file: 3" in info
    assert "Capture application: iptraf-mp" in info
    sections = info.split("Interface #")[1:]
    assert len(sections) == 3
    for section, (name, linktype, snaplen) in zip(sections, IFACES, strict=True):
        assert f"Name = {name}\n" in section
        assert f"Encapsulation = {CAPINFOS_ENCAP[linktype]} (" in section
        assert f"Capture length = {snaplen}\n" in section

    comment = subprocess.run(
        [CAPINFOS, "-k", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert f"Capture comment:     {ROUND_TRIP_COMMENT}" in comment


def test_writer_rounds_timestamps_to_nearest_microsecond(tmp_path: Path) -> None:
    path = tmp_path / "ts.pcapng"
    with PcapngWriter(str(path)) as w:
        i = w.add_interface("lo", 1)
        w.write(i, 100.0000004, b"a", 1)
        w.write(i, 100.0000006, b"b", 1)
        w.write(i, 0.0, b"c", 1)
        w.write(i, 5_000_000_000.25, b"d", 1)  # past 2106: needs the high word
    got, _ = read_all(path)
    assert [p[0] for p in got] == [100.0, 100.000001, 0.0, 5_000_000_000.25]


def test_writer_rejects_bad_arguments(tmp_path: Path) -> None:
    with PcapngWriter(str(tmp_path / "x.pcapng")) as w:
        with pytest.raises(ValueError):
            w.write(0, 1.0, b"", 0)  # no interface yet
        i = w.add_interface("eth0", 1)
        with pytest.raises(ValueError):
            w.write(i + 1, 1.0, b"", 0)
        with pytest.raises(ValueError):
            w.write(i, float("nan"), b"", 0)
        with pytest.raises(ValueError):
            w.write(i, -1.0, b"", 0)
        with pytest.raises(ValueError):
            w.add_interface("x", 70000)
    with pytest.raises(ValueError):
        w.write(i, 1.0, b"", 0)  # closed
    w.close()  # closing twice is harmless


@pytest.mark.parametrize("where", ["missing-dir", "directory"])
def test_writer_cannot_open(tmp_path: Path, where: str) -> None:
    path = tmp_path / "no" / "such.pcapng" if where == "missing-dir" else tmp_path
    with pytest.raises(CaptureFileError) as info:
        PcapngWriter(str(path))
    assert_one_line_naming(info.value, path)
    assert "cannot open for writing" in str(info.value)


def test_writer_without_comment_and_long_name(tmp_path: Path) -> None:
    path = tmp_path / "n.pcapng"
    long_name = "\u00e9" * 40000  # 80000 bytes of UTF-8: must be cut, still valid
    with PcapngWriter(str(path), comment="", application="") as w:
        w.add_interface(long_name, 1)
        w.write(0, 1.0, b"xyz", 3)
    got, ifaces = read_all(path)
    assert len(got) == 1
    assert ifaces[0].name == "\u00e9" * 32767


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    # Up to 2^51 us (year 2041): beyond that a float cannot hold every microsecond.
    st.lists(
        st.tuples(
            st.integers(0, 2), st.integers(0, 2**51), st.binary(max_size=300), st.integers(0, 5000)
        ),
        max_size=40,
    )
)
def test_writer_reader_property(tmp_path: Path, packets: list[tuple[int, int, bytes, int]]) -> None:
    path = tmp_path / "prop.pcapng"
    with PcapngWriter(str(path)) as w:
        for name, lt in (("a", 1), ("b", 113), ("c", 101)):
            w.add_interface(name, lt)
        for ifi, usec, data, extra in packets:
            w.write(ifi, usec / 1e6, data, len(data) + extra)
    got, ifaces = read_all(path)
    assert [i.name for i in ifaces] == ["a", "b", "c"]
    assert [(i, round(ts * 1e6), d, wl) for ts, i, d, wl in got] == [
        (ifi, usec, data, len(data) + extra) for ifi, usec, data, extra in packets
    ]


# --- corpus ----------------------------------------------------------------------
def corpus_params() -> list:
    params = []
    for folder in ("real", "large", "malformed"):
        d = CORPUS / folder
        if not d.is_dir():
            params.append(
                pytest.param(
                    None,
                    id=f"{folder}-absent",
                    marks=pytest.mark.skip(
                        reason=f"corpus folder {d} is absent (the shared "
                        "corpus is not laid beside the project)"
                    ),
                )
            )
            continue
        for f in sorted(d.iterdir()):
            if f.is_file() and not f.name.endswith((".json", ".md")):
                params.append(pytest.param(f, id=f"{folder}/{f.name}"))
    return params


@pytest.mark.parametrize("path", corpus_params())
def test_corpus_file(path: Path) -> None:
    ref_path = path.with_name(path.name + ".tshark.json")
    if not ref_path.exists():
        pytest.skip(f"no reference {ref_path.name}")
    ref = json.loads(ref_path.read_text())
    frames = wire = captured = 0
    error: CaptureFileError | None = None
    try:
        with open_capture(str(path)) as r:
            for ts, ifi, data, wirelen in r:
                assert isinstance(ts, float)
                assert isinstance(data, bytes)
                assert 0 <= ifi < len(r.interfaces)
                frames += 1
                wire += wirelen
                captured += len(data)
    except CaptureFileError as err:  # any other exception fails the test
        error = err
    if ref["tshark_rc"] == 0 and ref["frames"] > 0:
        assert error is None, f"tshark reads this file but we raised: {error}"
    if error is None:
        assert frames == ref["frames"]
        assert wire == ref["frame_bytes"]
        assert captured == ref["captured_bytes"]
    else:
        assert_one_line_naming(error, path)


def corpus_file(rel: str) -> Path:
    path = CORPUS / rel
    if not path.exists():
        pytest.skip(f"{path} is absent (shared corpus not laid beside the project)")
    return path


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed: no reference for the names")
def test_multi_interface_names_match_tshark() -> None:
    path = corpus_file("real/pcapng-multi-interface.pcapng")
    lines = subprocess.run(
        [
            TSHARK,
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.len",
            "-e",
            "frame.time_epoch",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    expected = [line.split("\t") for line in lines]
    with open_capture(str(path)) as r:
        # Both IDBs come before the first packet: they are known once opened.
        assert len(r.interfaces) == 2
        got = [(r.interfaces[ifi].name, wirelen, ts) for ts, ifi, _d, wirelen in r]
    assert len(got) == len(expected) == 6
    assert len({name for name, _l, _t in got}) == 2
    for (name, wirelen, ts), (tname, tlen, tepoch) in zip(got, expected, strict=True):
        assert name == tname
        assert wirelen == int(tlen)
        assert abs(ts - float(tepoch)) < 1e-6  # one interface has ns resolution


def test_odd_timestamps_do_not_raise() -> None:
    (pkt,), _ = read_all(corpus_file("malformed/time_2106_overflow.pcapng"))
    assert pkt[0] == 4294967296.0
    got, _ = read_all(corpus_file("malformed/timestamp_invalid_micro.pcap"))
    # The microsecond fields of records 2 and 3 are 1000000 and 2^31: they are
    # added as the file says (tshark shows something else; neither is "right").
    assert [p[0] for p in got] == [1418145369.999999, 1418145371.0, 1418145370 + 2147483648 / 1e6]


def test_empty_captures_are_not_errors() -> None:
    for rel in ("malformed/empty.pcapng", "malformed/empty.pcap"):
        got, ifaces = read_all(corpus_file(rel))
        assert got == []
        assert len(ifaces) == 1


# --- opening errors ------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pcap"
    with pytest.raises(CaptureFileError, match="no such file") as info:
        open_capture(str(path))
    assert_one_line_naming(info.value, path)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(CaptureFileError, match="is a directory") as info:
        open_capture(str(tmp_path))
    assert_one_line_naming(info.value, tmp_path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = write(tmp_path, "zero.pcap", b"")
    with pytest.raises(CaptureFileError, match="empty file") as info:
        open_capture(str(path))
    assert_one_line_naming(info.value, path)


@pytest.mark.parametrize(
    "content", [b"hello, this is not a capture\n", b"\n\r\r\nnot pcapng", b"\xd4"]
)
def test_not_a_capture(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path, "text.pcap", content)
    with pytest.raises(CaptureFileError, match="not a pcap or pcapng file") as info:
        open_capture(str(path))
    assert_one_line_naming(info.value, path)


def test_unsupported_pcap_version(tmp_path: Path) -> None:
    path = write(tmp_path, "v3.pcap", struct.pack("<IHHiIII", MAGIC_US, 3, 0, 0, 0, 65535, 1))
    with pytest.raises(CaptureFileError, match="unsupported pcap version 3.0"):
        open_capture(str(path))


def test_permission_denied(tmp_path: Path) -> None:
    data, _ = sample_pcap()
    if os.geteuid() != 0:
        path = write(tmp_path, "secret.pcap", data)
        path.chmod(0)
        with pytest.raises(CaptureFileError, match="permission denied") as info:
            open_capture(str(path))
        assert_one_line_naming(info.value, path)
        return
    # Root ignores permission bits, so chmod 000 alone cannot make the open
    # fail; try in a forked child that drops to nobody before opening.
    d = Path(tempfile.mkdtemp(prefix="capfile_perm_"))
    try:
        d.chmod(0o755)  # let nobody reach the file, but not read it
        path = write(d, "secret.pcap", data)
        path.chmod(0)
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 3
            try:
                os.close(rfd)
                os.setgid(65534)
                os.setuid(65534)
                try:
                    open_capture(str(path))
                    code = 1
                except CaptureFileError as err:
                    os.write(wfd, str(err).encode())
                    code = 0
            except BaseException:
                code = 2
            finally:
                os._exit(code)
        os.close(wfd)
        with os.fdopen(rfd, "rb") as f:
            message = f.read().decode()
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
    finally:
        shutil.rmtree(d)
    if code == 2:
        pytest.skip(
            "running as root, and cannot drop to uid nobody to make chmod 000 bite "
            "(root reads any file regardless of its permission bits)"
        )
    assert code == 0, "the unreadable file was opened"
    assert message == f"{path}: permission denied"


# --- truncation and lying lengths ---------------------------------------------------
def test_pcap_cut_mid_record(tmp_path: Path) -> None:
    data, ends = sample_pcap()
    path = write(tmp_path, "cut.pcap", data[: ends[2] + 20])  # inside record 4's data
    got, err = read_until_error(path)
    assert [p[2] for p in got] == SAMPLE_FRAMES[:3]
    assert "truncated" in str(err)
    assert_after(err, 3)
    assert_one_line_naming(err, path)


def test_pcap_every_cut(tmp_path: Path) -> None:
    """Cut the file at every byte: complete records come out, then 'truncated'."""
    data, ends = sample_pcap()
    path = tmp_path / "cut.pcap"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        if cut < 24:
            with pytest.raises(CaptureFileError):
                open_capture(str(path))
            continue
        complete = sum(1 for e in ends if e <= cut)
        if cut == 24 or cut in ends:
            got, _ = read_all(path)
        else:
            got, err = read_until_error(path)
            assert "truncated" in str(err)
            assert_after(err, complete)
        assert [p[2] for p in got] == SAMPLE_FRAMES[:complete]


def test_pcapng_cut_mid_block(tmp_path: Path) -> None:
    data, ends = sample_pcapng()
    cut = ends[4][0] + 10  # inside the NRB after two packets
    path = write(tmp_path, "cut.pcapng", data[:cut])
    got, err = read_until_error(path)
    assert len(got) == 2
    assert "truncated" in str(err)
    assert_after(err, 2)


def test_pcapng_every_cut(tmp_path: Path) -> None:
    data, ends = sample_pcapng()
    path = tmp_path / "cut.pcapng"
    shb_end = ends[0][0]
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        if cut < 28:  # not even a whole minimal section header
            with pytest.raises(CaptureFileError):
                open_capture(str(path))
            continue
        complete = max((n for end, n in ends if end <= cut), default=0)
        if cut in [end for end, _n in ends]:
            got, _ = read_all(path)
        elif cut < shb_end:
            got, err = read_until_error(path)  # the SHB's options are cut
        else:
            got, err = read_until_error(path)
            assert "truncated" in str(err)
            assert_after(err, complete)
        assert [p[2] for p in got] == SAMPLE_FRAMES[:complete]


@pytest.mark.parametrize("good", [0, 2])
def test_pcap_absurd_caplen(tmp_path: Path, good: int) -> None:
    body = b"".join(pcap_record(1, 0, SAMPLE_FRAMES[0]) for _ in range(good))
    bogus = pcap_record(2, 0, b"\0" * 64, caplen=0x7FFFFFFF)
    path = write(tmp_path, "absurd.pcap", pcap_header() + body + bogus)
    got, err = read_until_error(path)
    assert len(got) == good
    assert "truncated" in str(err)
    assert "2147483647" in str(err)
    assert_after(err, good)


def test_pcap_garbage_after_records(tmp_path: Path) -> None:
    data, _ = sample_pcap()
    path = write(tmp_path, "garbage.pcap", data + b"this is not a record, just junk!")
    got, err = read_until_error(path)
    assert len(got) == len(SAMPLE_FRAMES)
    assert "truncated" in str(err)


@pytest.mark.parametrize(
    "damage",
    [
        "caplen-past-block",
        "trailer-mismatch",
        "unknown-interface",
        "length-not-multiple-of-4",
        "length-below-12",
        "absurd-block-length",
        "block-past-eof",
        "garbage-tail",
    ],
)
def test_pcapng_lying_lengths(tmp_path: Path, damage: str) -> None:
    good = ng_shb() + ng_idb(1, 0, name="e") + ng_epb(0, 5, b"abcd")
    bad = ng_epb(0, 6, b"efgh")
    if damage == "caplen-past-block":
        bad = bad[:20] + struct.pack("<I", 5000) + bad[24:]
    elif damage == "trailer-mismatch":
        bad = bad[:-4] + struct.pack("<I", len(bad) + 4)
    elif damage == "unknown-interface":
        bad = ng_epb(7, 6, b"efgh")
    elif damage == "length-not-multiple-of-4":
        bad = bad[:4] + struct.pack("<I", len(bad) + 1) + bad[8:]
    elif damage == "length-below-12":
        bad = bad[:4] + struct.pack("<I", 8) + bad[8:]
    elif damage == "absurd-block-length":
        bad = bad[:4] + struct.pack("<I", 0x7FFFFFF0) + bad[8:]
    elif damage == "block-past-eof":
        bad = bad[:4] + struct.pack("<I", 4096) + bad[8:]
    elif damage == "garbage-tail":
        bad = b"junk"
    path = write(tmp_path, "bad.pcapng", good + bad + ng_epb(0, 7, b"ijkl"))
    got, err = read_until_error(path)
    assert [p[2] for p in got] == [b"abcd"]
    assert "truncated" in str(err)
    assert_after(err, 1)
    assert_one_line_naming(err, path)


def test_pcapng_prefix_damage_is_reported_when_iterating(tmp_path: Path) -> None:
    # The IDB is cut: opening works (the header is fine), iterating raises.
    data = ng_shb() + ng_idb(1, 0, name="eth0")[:-6]
    path = write(tmp_path, "idbcut.pcapng", data)
    with open_capture(str(path)) as r:
        with pytest.raises(CaptureFileError, match="truncated"):
            list(r)


# --- byte orders, magics, link-type field ----------------------------------------------
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, order: str, nano: bool) -> None:
    data, _ = sample_pcap(order, nano)
    got, ifaces = read_all(write(tmp_path, "x.pcap", data))
    assert ifaces == [Interface("if0", 1, 65535, 0)]
    scale = 1e-9 if nano else 1e-6
    assert [p[2] for p in got] == SAMPLE_FRAMES
    assert [p[3] for p in got] == [len(f) + i for i, f in enumerate(SAMPLE_FRAMES)]
    assert [p[1] for p in got] == [0] * len(SAMPLE_FRAMES)
    for i, pkt in enumerate(got):
        assert pkt[0] == pytest.approx(1_600_000_000 + i + 1000 * i * scale, abs=1e-7)


@pytest.mark.parametrize("nano", [False, True])
def test_pcap_written_by_dpkt(tmp_path: Path, nano: bool) -> None:
    path = tmp_path / "dpkt.pcap"
    stamps = [1_500_000_000.123456, 1_500_000_001.5, 1_500_000_002.000001]
    with path.open("wb") as f:
        w = dpkt.pcap.Writer(f, snaplen=9000, linktype=dpkt.pcap.DLT_RAW, nano=nano)
        for ts, frame in zip(stamps, SAMPLE_FRAMES, strict=False):
            w.writepkt(frame, ts=ts)
    got, ifaces = read_all(path)
    assert ifaces[0].snaplen == 9000
    assert ifaces[0].linktype == dpkt.pcap.DLT_RAW
    assert [p[2] for p in got] == SAMPLE_FRAMES[:3]
    for pkt, ts in zip(got, stamps, strict=True):
        assert pkt[0] == pytest.approx(ts, abs=1e-6)


def test_pcap_nanosecond_values(tmp_path: Path) -> None:
    data = pcap_header(nano=True) + pcap_record(1418145369, 924505488, b"x")
    (pkt,), _ = read_all(write(tmp_path, "ns.pcap", data))
    assert pkt[0] == 1418145369 + 924505488 / 1e9


def test_pcap_odd_fractions_taken_as_is(tmp_path: Path) -> None:
    data = (
        pcap_header() + pcap_record(10, 1_500_000, b"a") + pcap_record(0xFFFFFFFF, 0xFFFFFFFF, b"b")
    )
    got, _ = read_all(write(tmp_path, "odd.pcap", data))
    assert [p[0] for p in got] == [11.5, 0xFFFFFFFF + 0xFFFFFFFF / 1e6]


@pytest.mark.parametrize(
    ("ltfield", "linktype", "fcs_len"),
    [
        (1, 1, 0),
        (0x04000000 | (2 << 28) | 1, 1, 4),  # P bit + 2 sixteen-bit words of FCS
        (0x04000000 | (1 << 28) | 105, 105, 2),
        (0x30000065, 101, 0),  # length bits without the P bit: unknown
    ],
)
def test_pcap_linktype_field_flags(
    tmp_path: Path, ltfield: int, linktype: int, fcs_len: int
) -> None:
    data = pcap_header(ltfield=ltfield) + pcap_record(1, 0, b"abc")
    got, ifaces = read_all(write(tmp_path, "lt.pcap", data))
    assert ifaces == [Interface("if0", linktype, 65535, fcs_len)]
    assert len(got) == 1


# --- pcapng features ----------------------------------------------------------------------
def test_pcapng_sections_resolutions_and_block_kinds(tmp_path: Path) -> None:
    be = ">"
    data = (
        # Section 1, big-endian: one interface with nanosecond stamps.
        ng_shb(be)
        + ng_idb(1, 0, be, name="be0", tsresol=9)
        + ng_epb(0, 1_600_000_000_123_456_789, b"big-endian", 99, be)
        + ng_block(0x0000000A, b"secret", be)  # decryption secrets: skipped
        # Section 2, little-endian: interface ids restart at 0 here.
        + ng_shb()
        + ng_idb(113, 64, tsresol=0x80 | 20, fcslen=32, tsoffset=1000)  # 2^-20 s, no name
        + ng_idb(101, 0, name="tun9", fcslen=4)  # fcslen written in bytes by some tools
        + ng_epb(1, 3 * 1_000_000 + 7, b"raw", opts=[(2, struct.pack("<I", 1))])
        + ng_epb(0, 5 << 20, b"sll-frame")
        + ng_spb(b"s" * 100, 100)  # clipped to interface 0's snaplen (64)
        + ng_spb(b"short", 5)
        + ng_block(0x00000BAD, b"\0\0\0\0custom")  # custom block: skipped
        + ng_block(0x12345678, b"")  # unknown: skipped
        + ng_obsolete_pb(1, 2_000_000, b"old-style")
        + ng_block(5, b"\0" * 12)  # ISB at the end: skipped
    )
    path = write(tmp_path, "multi.pcapng", data)
    with open_capture(str(path)) as r:
        assert [i.name for i in r.interfaces] == ["be0"]  # section 2 not met yet
        got = list(r)
        ifaces = r.interfaces
    assert ifaces == [
        Interface("be0", 1, 0, 0),
        Interface("if1", 113, 64, 4),
        Interface("tun9", 101, 0, 4),
    ]
    assert [(p[1], p[2], p[3]) for p in got] == [
        (0, b"big-endian", 99),
        (2, b"raw", 3),
        (1, b"sll-frame", 9),
        (1, b"s" * 64, 100),
        (1, b"short", 5),
        (2, b"old-style", 9),
    ]
    assert got[0][0] == pytest.approx(1_600_000_000.123456789, abs=1e-6)
    assert got[1][0] == 3.000007
    assert got[2][0] == 1000 + 5.0  # 5 << 20 ticks of 2^-20 s, plus if_tsoffset
    assert got[3][0] == got[2][0]  # SPBs reuse the last timestamp
    assert got[4][0] == got[2][0]
    assert got[5][0] == 2.0


def test_pcapng_spb_before_any_interface(tmp_path: Path) -> None:
    path = write(tmp_path, "spb.pcapng", ng_shb() + ng_spb(b"abcd", 4))
    got, err = read_until_error(path)
    assert got == []
    assert "truncated" in str(err)


def test_pcapng_bad_byte_order_magic_in_later_section(tmp_path: Path) -> None:
    second = bytearray(ng_shb())
    second[8:12] = b"\0\0\0\0"
    data = ng_shb() + ng_idb(1, 0) + ng_epb(0, 1, b"x") + bytes(second)
    got, err = read_until_error(write(tmp_path, "bom.pcapng", data))
    assert len(got) == 1
    assert "byte-order" in str(err)


@pytest.mark.parametrize("chunk", [1, 5, 13, 64])
def test_small_read_chunks_give_the_same_packets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Refills land everywhere: inside headers, data, options and trailers."""
    ng = (
        ng_shb(opts=[(1, b"c" * 33)])
        + ng_idb(1, 0, name="x", tsresol=3)
        + b"".join(ng_epb(0, i, f * 3) for i, f in enumerate(SAMPLE_FRAMES))
        + ng_spb(b"q" * 30, 30)
        + ng_block(5, b"\0" * 12)
        + ng_obsolete_pb(0, 9, b"pb")
    )
    pc, _ = sample_pcap(">", True)
    files = [write(tmp_path, "a.pcapng", ng), write(tmp_path, "b.pcap", pc)]
    expected = [read_all(f) for f in files]
    monkeypatch.setattr(capfile, "_CHUNK_SIZE", chunk)
    assert [read_all(f) for f in files] == expected
    assert len(expected[0][0]) == len(SAMPLE_FRAMES) + 2


def test_large_file_across_many_chunks_matches_dpkt(tmp_path: Path) -> None:
    path = tmp_path / "big.pcap"
    frames = [bytes([i & 0xFF]) * (i * 37 % 1600) for i in range(6000)]  # ~4.8 MB
    with path.open("wb") as f:
        w = dpkt.pcap.Writer(f, snaplen=65535)
        for i, frame in enumerate(frames):
            w.writepkt(frame, ts=1_000_000 + i / 7)
    got, _ = read_all(path)
    with path.open("rb") as f:
        ref = [(ts, bytes(buf)) for ts, buf in dpkt.pcap.Reader(f)]
    assert len(got) == len(ref) == len(frames)
    assert [p[2] for p in got] == [b for _ts, b in ref]
    assert all(abs(p[0] - ts) < 1e-6 for p, (ts, _b) in zip(got, ref, strict=True))


# --- gzip, closing -----------------------------------------------------------------------
def test_gzip_capture(tmp_path: Path) -> None:
    data, _ = sample_pcap()
    path = write(tmp_path, "c.pcap.gz", gzip.compress(data))
    got, _ = read_all(path)
    assert [p[2] for p in got] == SAMPLE_FRAMES


def test_gzip_capture_cut_short(tmp_path: Path) -> None:
    data, _ = sample_pcap()
    packed = gzip.compress(data)
    path = write(tmp_path, "c.pcap.gz", packed[: len(packed) - 30])
    _got, err = read_until_error(path)
    assert "truncated" in str(err)
    assert_one_line_naming(err, path)


def test_close_mid_iteration_stops_cleanly(tmp_path: Path) -> None:
    data, _ = sample_pcap()
    path = write(tmp_path, "c.pcap", data)
    seen = []
    with open_capture(str(path)) as r:
        for pkt in r:
            seen.append(pkt)
            r.close()
        assert list(r) == []
    assert len(seen) == 1
    r.close()  # idempotent


# --- fuzz: damage never escapes as anything but CaptureFileError --------------------------
def _valid_files() -> list[bytes]:
    pc, _ = sample_pcap()
    ng, _ = sample_pcapng()
    ng2 = (
        ng_shb(">")
        + ng_idb(1, 0, ">", name="n", tsresol=0x85)
        + ng_spb(b"abc", 3, ">")
        + ng_epb(0, 77, b"hello", order=">")
        + ng_obsolete_pb(0, 3, b"pb", ">")
    )
    return [pc, ng, ng2]


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.integers(0, 2),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 10_000),
    tail=st.binary(max_size=40),
)
def test_damaged_files_only_raise_capture_file_error(
    tmp_path: Path, which: int, edits: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    data = bytearray(_valid_files()[which])
    for where, value in edits:
        data[where % len(data)] = value
    data = data[: max(cut, 8)] + tail
    path = write(tmp_path, "fuzz.cap", bytes(data))
    try:
        with open_capture(str(path)) as r:
            for ts, ifi, frame, wirelen in r:
                assert isinstance(ts, float)
                assert 0 <= ifi < len(r.interfaces)
                assert isinstance(frame, bytes)
                assert len(frame) <= len(data)
                assert wirelen >= 0
    except CaptureFileError as err:
        assert_one_line_naming(err, path)
