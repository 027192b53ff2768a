"""The hand-derived fixtures of fixtures/ replayed through the CLI (docs/decisions.md rules 1-18).

Each capture in fixtures/ is built by fixtures/make_fixtures.py, which also holds the expected
records, derived by hand from the rules (see its docstring and fixtures/README.md). Here:
- every fixture is replayed with `iptraf-mp -r FILE -B --json OUT` (in-process) and compared
  with FILE's `.expected.jsonl` exactly: full records, order-insensitive within a pair id
  (when a pair is written is not part of the contract), the summary last;
- a second replay must give byte-identical output;
- every fixture's summary is checked against tshark's own reading of the capture;
- the screen (slot order, rules 8-10) and the lower window (rule 13), which the JSON does not
  show, are checked on the engine after a replay.
Test names carry the rule numbers they cover: `pytest -k rule8`.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from .conftest import FIXTURES


def _load_generator():
    spec = importlib.util.spec_from_file_location("iptraf_fixture_generator",
                                                  FIXTURES / "make_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


GEN = _load_generator()
CAPS = {c.name: c for c in GEN.fixtures()}
NAMES = sorted(CAPS)

# Fixtures whose expectation the engine does not meet yet (none at the moment).
XFAIL: dict[str, str] = {}


def _marks(name: str):
    if name in XFAIL:
        return [pytest.mark.xfail(strict=True, reason=XFAIL[name])]
    return []


def _params(names=NAMES, xfail_only: tuple[str, ...] = ()):
    """Fixture names as parameters; `xfail_only` limits the xfail marks to those fixtures."""
    out = []
    for n in names:
        marks = _marks(n) if not xfail_only or n in xfail_only else []
        out.append(pytest.param(n, id=n, marks=marks))
    return out


# ---- running the CLI and reading its output -------------------------------------------------

def _capture(name: str) -> Path:
    return FIXTURES / CAPS[name].filename


def _replay_text(name: str, out: Path, args: tuple[str, ...] | None = None) -> str:
    from iptraf_mp.app.cli import main

    cap = CAPS[name]
    argv = ["-r", str(_capture(name)), "-B", *(cap.args if args is None else args),
            "--json", str(out)]
    rc = main(argv)
    assert rc == 0, f"iptraf-mp {' '.join(argv)} exited {rc}"
    return out.read_text()


def _expected(name: str) -> list[dict]:
    path = FIXTURES / f"{name}.expected.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _grouped(records: list[dict]) -> tuple[dict, list[dict]]:
    """({pair id: its records sorted}, [summary records])."""
    pairs: dict[int, list[dict]] = defaultdict(list)
    summaries = []
    for r in records:
        if r.get("type") == "summary":
            summaries.append(r)
        else:
            pairs[r["pair"]].append(r)
    for recs in pairs.values():
        recs.sort(key=lambda r: json.dumps(r, sort_keys=True))
    return dict(pairs), summaries


def _check(name: str, tmp_path: Path, args: tuple[str, ...] | None = None,
           expected: list[dict] | None = None) -> None:
    text = _replay_text(name, tmp_path / "out.jsonl", args)
    got = [json.loads(line) for line in text.splitlines()]
    exp = _expected(name) if expected is None else expected
    assert got and got[-1]["type"] == "summary", "the summary must be the last line"
    got_pairs, got_summ = _grouped(got)
    exp_pairs, exp_summ = _grouped(exp)
    assert got_summ == exp_summ
    assert sorted(got_pairs) == sorted(exp_pairs), "pair ids"
    for pid in exp_pairs:
        assert got_pairs[pid] == exp_pairs[pid], f"pair {pid}"


# ---- the engine, for what the JSON does not show --------------------------------------------

def _engine(name: str, args: tuple[str, ...] | None = None, **override):
    """Replay `name` into an engine set up as the CLI would, without finishing the run."""
    from iptraf_mp.app.cli import build_parser
    from iptraf_mp.capture.replay import replay
    from iptraf_mp.core.engine import Engine, Settings

    cap = CAPS[name]
    a = build_parser().parse_args(["-r", "x", *(cap.args if args is None else args)])
    kw = {"tcp_timeout": a.tcp_timeout * 60.0, "persistence": a.persistence * 60.0,
          "lower_lines": a.lower_lines}
    kw.update(override)
    engine = Engine(Settings(**kw))
    result = replay(str(_capture(name)), engine)
    assert result.error is None
    return engine


def _screen(engine) -> list[int]:
    return [p.id for p in engine.tcp.slots]


# ---- rule by rule ---------------------------------------------------------------------------

def test_rule1_same_connection_on_two_interfaces_is_two_pairs(tmp_path):
    _check("two_interfaces", tmp_path)


def test_rule2_pure_ack_fin_rst_create_nothing(tmp_path):
    _check("unknown_no_create", tmp_path)


def test_rule2_rule3_partial_marker_midstream_and_synack(tmp_path):
    _check("midstream_partial", tmp_path)


def test_rule3_rule4_rule5_rule6_handshake_data_fin_close(tmp_path):
    _check("handshake_close", tmp_path)


def test_rule3_rule4_ipv4_fragments_count_to_first_fragment(tmp_path):
    _check("ipv4_fragments", tmp_path)


def test_rule5_rule6_rst_close(tmp_path):
    _check("rst_close", tmp_path)


def test_rule5_rule6_rule8_syn_refused(tmp_path):
    _check("syn_refused", tmp_path)


def test_rule3_rule5_rule6_rule8_fin_states(tmp_path):
    _check("fin_states", tmp_path)


def test_rule5_rule6_rule8_icmp_unreachable_resets(tmp_path):
    _check("icmp_unreachable", tmp_path)


def test_rule2_rule6_rule8_stragglers_after_close(tmp_path):
    _check("after_close", tmp_path)


def test_rule7_rule8_timeout_keeps_counting(tmp_path):
    _check("timeout", tmp_path)


def test_rule7_timeout_is_configurable(tmp_path):
    cap = CAPS["timeout"]
    args = ("--tcp-timeout", "20")
    _check("timeout", tmp_path, args=args, expected=cap.extra["timeout20_expected"])
    assert _screen(_engine("timeout", args=args)) == cap.extra["timeout20_screen"]


def test_rule7_timeout_boundary(tmp_path):
    _check("timeout_boundary", tmp_path)


def test_rule8_slot_reuse(tmp_path):
    _check("slot_reuse", tmp_path)
    assert _screen(_engine("slot_reuse")) == [6, 5, 7]


@pytest.mark.parametrize("name", _params(xfail_only=("after_close",)))
def test_rule8_rule9_screen_rows(name):
    """The screen order after the replay: new pairs in the rows of the oldest closed ones."""
    assert _screen(_engine(name)) == CAPS[name].extra["screen"]


def test_rule9_persistence_flush(tmp_path):
    _check("persistence_flush", tmp_path)
    assert _screen(_engine("persistence_flush")) == [2, 4]


def test_rule8_rule9_persistence_off_by_default(tmp_path):
    cap = CAPS["persistence_flush"]
    _check("persistence_flush", tmp_path, args=(), expected=cap.extra["default_expected"])
    assert _screen(_engine("persistence_flush", args=())) == cap.extra["default_screen"]


def test_rule9_persistence_periodic(tmp_path):
    _check("persistence_periodic", tmp_path)


def test_rule9_rule10_sort_flush_cli(tmp_path):
    _check("sort_flush", tmp_path)


def test_rule9_flush_key_removes_closed_rows():
    cap = CAPS["sort_flush"]
    engine = _engine("sort_flush")
    assert _screen(engine) == cap.extra["screen"]
    engine.tcp.retired.clear()
    assert engine.flush() == len(cap.extra["flush_removes"])
    assert _screen(engine) == [p for p in cap.extra["screen"]
                               if p not in cap.extra["flush_removes"]]
    assert engine.flush() == 0


def test_rule10_sort_by_packets():
    engine = _engine("sort_flush")
    engine.tcp.sort("P")
    assert _screen(engine) == CAPS["sort_flush"].extra["sort_P"]


def test_rule10_sort_by_bytes_does_not_flush():
    engine = _engine("sort_flush")
    engine.tcp.sort("B")
    assert _screen(engine) == CAPS["sort_flush"].extra["sort_B"]  # the reset pair stays


def test_rule10_sort_ties_keep_current_order():
    engine = _engine("sort_flush")
    engine.tcp.sort("B")
    engine.tcp.sort("P")
    assert _screen(engine) == CAPS["sort_flush"].extra["sort_B_then_P"]


def _lower(engine) -> list[tuple[str, int, int]]:
    from iptraf_mp.core.model import KIND_NAMES

    return [(KIND_NAMES[ln.d.kind], ln.d.proto, ln.d.iplen) for ln in engine.other.lines]


def test_rule13_lower_window_one_line_per_non_tcp_packet():
    engine = _engine("other_protocols")
    assert _lower(engine) == CAPS["other_protocols"].extra["lower"]


def test_rule13_lower_window_keeps_the_newest():
    engine = _engine("other_protocols", lower_lines=5)
    assert _lower(engine) == CAPS["other_protocols"].extra["lower"][-5:]


def test_rule13_lower_window_has_no_tcp():
    engine = _engine("icmp_unreachable")
    assert [k for k, _p, _n in _lower(engine)] == ["icmp"] * 5


def test_rule13_rule14_summary_other_protocols(tmp_path):
    _check("other_protocols", tmp_path)


def test_rule14_rule16_qinq_vlan(tmp_path):
    _check("vlan_qinq", tmp_path)


def test_rule14_rule16_linux_sll(tmp_path):
    _check("linux_sll", tmp_path)


def test_rule14_rule16_link_types(tmp_path):
    _check("link_types", tmp_path)


def test_rule14_rule17_ipv6_extension_headers(tmp_path):
    _check("ipv6_ext_headers", tmp_path)


def test_rule3_rule4_rule18_malformed_counted_once(tmp_path):
    _check("malformed", tmp_path)


def test_rule4_rule18_missing_transport_header_in_padding(tmp_path):
    _check("malformed_padding", tmp_path)


# ---- every fixture --------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_determinism_second_replay_is_byte_identical(name, tmp_path):
    first = _replay_text(name, tmp_path / "one.jsonl")
    second = _replay_text(name, tmp_path / "two.jsonl")
    assert first == second


@pytest.mark.parametrize("name", NAMES)
def test_fixture_files_match_generator(name):
    """The committed captures and expectations are what make_fixtures.py writes."""
    cap = CAPS[name]
    data = GEN.pcapng_bytes(cap) if cap.pcapng else GEN.pcap_bytes(cap)
    assert (FIXTURES / cap.filename).read_bytes() == data, "rerun fixtures/make_fixtures.py"
    lines = [json.dumps(r, separators=(",", ":")) for r in cap.expected]
    assert (FIXTURES / f"{name}.expected.jsonl").read_text() == "\n".join(lines) + "\n"


def test_fixtures_cover_the_rules():
    covered = set().union(*(c.rules for c in CAPS.values()))
    assert set(range(1, 11)) | {13, 14, 16, 17, 18} <= covered
    readme = (FIXTURES / "README.md").read_text()
    for name in CAPS:
        assert f"`{name}`" in readme, f"{name} is not in fixtures/README.md"


# ---- the summary against tshark -------------------------------------------------------------

TSHARK = shutil.which("tshark")
TS_FIELDS = ["frame.len", "frame.protocols", "ip.src", "ip.len", "ip.proto", "ipv6.src",
             "ipv6.plen", "ipv6.nxt", "ipv6.hopopts.nxt", "ipv6.dstopts.nxt",
             "ipv6.routing.nxt", "ipv6.fraghdr.nxt"]
EXT_FIELD = {0: "ipv6.hopopts.nxt", 60: "ipv6.dstopts.nxt", 43: "ipv6.routing.nxt",
             44: "ipv6.fraghdr.nxt"}


def _tshark_summary(path: Path) -> dict:
    """The summary as tshark reads the capture, by the byte rule: the outermost IP header's
    Total Length (IPv6: payload length + 40), classified by its protocol (after IPv6
    extension headers); frames without a readable IP header count frame.len as non-IP."""
    cmd = [TSHARK, "-n", "-r", str(path), "-o", "ip.defragment:FALSE",
           "-o", "ipv6.defragment:FALSE", "-T", "fields", "-E", "separator=/t",
           "-E", "occurrence=a", "-E", "aggregator=|", "-E", "quote=n"]
    for f in TS_FIELDS:
        cmd += ["-e", f]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    s = {"frames": 0, **{k: {"packets": 0, "bytes": 0}
                         for k in ("ip", "tcp", "udp", "icmp", "other_ip", "non_ip")}}
    for line in io.StringIO(p.stdout):
        row = dict(zip(TS_FIELDS, line.rstrip("\n").split("\t"), strict=False))
        vals = {k: (v.split("|") if v else []) for k, v in row.items()}
        s["frames"] += 1
        layer = None
        for tok in row["frame.protocols"].split(":"):
            if tok in ("icmp", "icmpv6"):
                break  # what follows is a quoted header
            if tok in ("ip", "ipv6"):
                layer = tok
                break
        kind, n = "non_ip", int(row["frame.len"])
        if layer == "ip" and vals["ip.src"] and vals["ip.len"]:
            n = int(vals["ip.len"][0])
            proto = int(vals["ip.proto"][0])
        elif layer == "ipv6" and vals["ipv6.src"] and vals["ipv6.plen"]:
            n = int(vals["ipv6.plen"][0]) + 40
            proto = int(vals["ipv6.nxt"][0])
            used: dict[int, int] = defaultdict(int)
            while proto in EXT_FIELD:
                got = vals[EXT_FIELD[proto]]
                k = used[proto]
                used[proto] += 1
                proto = int(got[k]) if k < len(got) else -1
        else:
            layer = None
        if layer is not None:
            kind = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}.get(proto, "other_ip")
            s["ip"]["packets"] += 1
            s["ip"]["bytes"] += n
        s[kind]["packets"] += 1
        s[kind]["bytes"] += n
    return s


@pytest.mark.parametrize("name", NAMES)
def test_rule14_summary_matches_tshark(name):
    if TSHARK is None:
        pytest.skip("tshark is not installed: no independent count to compare with")
    want = dict(_expected(name)[-1])
    assert want.pop("type") == "summary"
    want.pop("malformed")
    # iptraf-mp's own table limits: nothing tshark counts
    want.pop("untracked")
    want.pop("evicted_flows")
    assert _tshark_summary(_capture(name)) == want
