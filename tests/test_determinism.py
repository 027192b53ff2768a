"""One answer for every shard count: the --json of a replay (records and their order) is
byte-identical for --shards 0, 1, 2 and 4.

What could make it differ is anything an engine decides from what *other* connections did:
which packets its clock saw, or where a connection stands in an idle list whose scan stops
at the first entry not yet due. The generated streams aim at exactly that (tests/helpers/
streams.py). Thousands of streams go through the in-process pipeline (the real capture-loop,
shard and merger code, publishing at random moments); fewer through the real processes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iptraf_mp.core.engine import Settings

from .conftest import CORPUS, FIXTURES, corpus_files
from .helpers.compare import first_difference
from .helpers.inprocess import local_json, one_engine_screens, sharded, sharded_json
from .helpers.streams import FLOW_IDLE, TIMEOUT, seed_frames, stream

SEEDS = seed_frames([CORPUS / "malformed", FIXTURES])
SETTINGS = Settings(tcp_timeout=TIMEOUT, flow_idle=FLOW_IDLE)
# every example's stream and shard count, counted for the closing figures
EXAMPLES = {"streams": 0}


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1),
       frames=st.integers(min_value=20, max_value=2000),
       mutated=st.sampled_from((0.0, 0.1, 0.3)),
       back=st.sampled_from((0.0, 0.05, 0.2)),
       gaps=st.sampled_from((0.01, 0.03, 0.1)),
       publish=st.integers(min_value=1, max_value=20))
def test_generated_streams_same_json_for_any_shard_count(tmp_path_factory, seed, frames,
                                                         mutated, back, gaps, publish):
    path = stream(seed, frames, SEEDS, tmp_path_factory.mktemp("s") / "s.pcapng",
                  mutated=mutated, back=back, gaps=gaps)
    one = local_json(str(path), SETTINGS)
    for n in (1, 2, 4):
        got = sharded_json(str(path), n, SETTINGS, seed=seed + n, publish_every=publish)
        assert got == one, f"{n} shards, stream seed {seed}: {first_difference(one, got)}"
    EXAMPLES["streams"] += 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1),
       frames=st.integers(min_value=20, max_value=800),
       back=st.sampled_from((0.0, 0.05)),
       batch=st.sampled_from((1, 3, 16, 64)))
def test_screen_at_every_epoch_is_one_engine_s(tmp_path_factory, seed, frames, back, batch):
    """A replay's shards publish in epochs (all at one stream position); the merger applies
    an epoch once every shard has sent it. So at every epoch the TCP window (rows, which
    row each pair took, the closed rows in closing order, counts, states) and the clock are
    what one engine showed after the same frames, however the shards' publications
    interleave."""
    path = stream(seed, frames, SEEDS, tmp_path_factory.mktemp("s") / "s.pcapng",
                  mutated=0.1, back=back, gaps=0.05)
    for n in (2, 4):
        run = sharded(str(path), n, SETTINGS, seed=seed + n, batch=batch)
        ref = one_engine_screens(str(path), SETTINGS, set(run.screens))
        assert run.screens or not run.epochs, "no epoch was released"
        for at, screen in run.screens.items():
            assert screen == ref[at], f"{n} shards, stream seed {seed}, after {at} frames"
    EXAMPLES["streams"] += 1


def test_long_generated_stream_same_json_for_any_shard_count(tmp_path):
    path = stream(7, 30_000, SEEDS, tmp_path / "long.pcapng", mutated=0.3, back=0.05)
    one = local_json(str(path), SETTINGS)
    assert one.count("\n") > 2000  # the stream makes many connections, not a trivial case
    for n in (2, 4):
        got = sharded_json(str(path), n, SETTINGS, seed=n)
        assert got == one, first_difference(one, got)


def cli_json(path: Path, out: Path, shards: int) -> bytes:
    subprocess.run([sys.executable, "-m", "iptraf_mp.app.cli", "-r", str(path), "-B", "--json",
                    str(out), "--no-db", "--shards", str(shards)], check=True, timeout=300,
                   capture_output=True)
    return out.read_bytes()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_real_processes_same_json_for_any_shard_count(tmp_path, seed):
    path = stream(seed, 8000, SEEDS, tmp_path / "s.pcapng", mutated=0.3, back=0.05)
    one = cli_json(path, tmp_path / "0.jsonl", 0)
    for n in (1, 2, 4):
        got = cli_json(path, tmp_path / f"{n}.jsonl", n)
        assert got == one, f"{n} shards: {first_difference(one, got)}"


def replayable() -> list[Path]:
    out = sorted(FIXTURES.glob("*.pcap*"))
    for folder in ("real", "malformed"):
        out += corpus_files(folder) if (CORPUS / folder).is_dir() else []
    return out


@pytest.mark.parametrize("path", replayable(), ids=lambda p: p.name)
def test_corpus_and_fixtures_same_json_for_any_shard_count(path):
    one = local_json(str(path), Settings())
    for n in (1, 2, 4):
        got = sharded_json(str(path), n, Settings(), seed=n)
        assert got == one, f"{n} shards: {first_difference(one, got)}"


def test_a_malformed_later_fragment_is_noted_nowhere(tmp_path):
    """Found by the generated streams: a later TCP fragment that is malformed, then its
    first fragment in another shard. One engine counts the malformed one only in the
    summary (rule 18); the shard picker had told the other shards to wait for its bytes, and
    the first fragment's shard added them to its pair."""
    path = stream(510509, 171, SEEDS, tmp_path / "s.pcapng", mutated=0.3, back=0.2, gaps=0.03)
    one = local_json(str(path), SETTINGS)
    for n in (2, 4):
        got = sharded_json(str(path), n, SETTINGS, seed=510509 + n, publish_every=1)
        assert got == one, f"{n} shards: {first_difference(one, got)}"
