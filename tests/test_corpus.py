"""Acceptance against independent meters: the tshark references in ../shared/corpus."""

from __future__ import annotations

from collections import defaultdict

import pytest

from .conftest import corpus_files, need_corpus, reference, run_cli_json

REAL_AND_LARGE = corpus_files("real") + corpus_files("large")


def _ep(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


@pytest.mark.parametrize("cap", REAL_AND_LARGE, ids=lambda p: p.name)
def test_summary_equals_tshark_totals(cap, tmp_path):
    need_corpus("real")
    ref = reference(cap)["totals"]
    rc, recs = run_cli_json(tmp_path, "-r", str(cap), "-B")
    assert rc == 0
    summ = [r for r in recs if r["type"] == "summary"]
    assert len(summ) == 1
    s = summ[0]
    for k in ("ip", "tcp", "udp", "other_ip"):
        assert s[k] == {"packets": ref[k]["packets"], "bytes": ref[k]["bytes"]}, k
    icmp = {"packets": ref["icmp"]["packets"] + ref["icmpv6"]["packets"],
            "bytes": ref["icmp"]["bytes"] + ref["icmpv6"]["bytes"]}
    assert s["icmp"] == icmp
    assert s["non_ip"] == {"packets": ref["non_ip"]["frames"],
                           "bytes": ref["non_ip"]["frame_bytes"]}
    assert s["frames"] == reference(cap)["frames"]


@pytest.mark.parametrize("cap", REAL_AND_LARGE, ids=lambda p: p.name)
def test_single_syn_connections_equal_tshark(cap, tmp_path):
    """Per direction sums of every address/port pair that carried one SYN-started connection."""
    need_corpus("real")
    ref = reference(cap)
    rc, recs = run_cli_json(tmp_path, "-r", str(cap), "-B")
    assert rc == 0
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in recs:
        if r["type"] == "tcp":
            s = sums[(_ep(r["src"], r["sport"]), _ep(r["dst"], r["dport"]))]
            s[0] += r["packets"]
            s[1] += r["bytes"]
    checked = 0
    for c in ref["tcp_connections"]:
        fl = c["tcp_flags"]
        if c["tcp_streams"] != 1 or not (fl["a_to_b"]["S"] and fl["b_to_a"]["S"]):
            continue
        checked += 1
        assert sums[(c["a"], c["b"])] == [c["a_to_b"]["packets"], c["a_to_b"]["bytes"]], c
        assert sums[(c["b"], c["a"])] == [c["b_to_a"]["packets"], c["b_to_a"]["bytes"]], c
    if not checked:
        pytest.skip(f"{cap.name} has no single SYN-started TCP connection to compare")


@pytest.mark.parametrize("cap", corpus_files("malformed"), ids=lambda p: p.name)
def test_malformed_replays_without_exception(cap, tmp_path):
    """Rule 18: every frame counted once; bad files end with a one-line error, never a crash."""
    need_corpus("malformed")
    ref = reference(cap)
    rc, recs = run_cli_json(tmp_path, "-r", str(cap), "-B")
    summ = [r for r in recs if r["type"] == "summary"]
    if rc == 2:
        assert not summ  # refused at open: nothing was read
        return
    assert rc in (0, 1)
    assert len(summ) == 1
    s = summ[0]
    assert s["frames"] == s["ip"]["packets"] + s["non_ip"]["packets"]
    assert s["ip"]["packets"] == sum(s[k]["packets"] for k in ("tcp", "udp", "icmp", "other_ip"))
    if rc == 0 and ref.get("tshark_rc") == 0:
        assert s["frames"] == ref["frames"]
