"""A long replay with -B, as a person sees it in a terminal (tmux): a progress bar while it
runs, one closing line at the end; nothing of either on a stderr that is not a terminal, or
with -q."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich import filesize

from .helpers.packets import tcp4_frame, write_pcap
from .test_console_tmux import IPTRAF, TMUX, pane_factory  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(
    TMUX is None, reason="tmux is not installed (apt-get install tmux; `make deps` does)")

FRAMES = 6000


def _capture(tmp_path: Path) -> Path:
    """6,000 frames over 4 s of packet time: a --speed 1 replay takes 4 s."""
    frames = [(1_700_000_000 + i * 4.0 / FRAMES,
               tcp4_frame("10.0.0.1", 40000 + i % 50, "10.0.0.2", 80, payload=200))
              for i in range(FRAMES)]
    return write_pcap(tmp_path / "slow.pcap", frames)


def _closing(rows: list[str]) -> list[str]:
    return [r for r in rows if re.search(r"iptraf-mp: [\d,]+ frames \(\d+ malformed, "
                                         r"\d+ untracked\) in [\d.]+ s", r)]


@pytest.mark.parametrize("shards", ["0", "2"])
def test_replay_shows_a_bar_then_one_line(tmp_path: Path, pane_factory, shards: str) -> None:  # noqa: F811
    cap = _capture(tmp_path)
    pane = pane_factory(f"{IPTRAF} -r {cap} -B --speed 1 --shards {shards} --json /dev/null")
    rows = pane.wait(lambda rs: any("frames/s" in r and "left" in r for r in rs),
                     "the progress bar")
    bar = next(r for r in rows if "frames/s" in r)
    assert "slow.pcap" in bar and "━" in bar
    size = filesize.decimal(cap.stat().st_size)  # "1.5 MB": the file's size, as rich says it
    assert re.search(r"[\d.]+/" + re.escape(size), bar), (bar, size)
    rows = pane.wait(lambda rs: any("EXIT=" in r for r in rs), "the end")
    assert "EXIT=0" in "\n".join(rows)
    closing = _closing(rows)
    assert len(closing) == 1 and f"{FRAMES:,} frames (0 malformed, 0 untracked)" in closing[0]
    assert not any("frames/s" in r and "left" in r for r in rows)  # the bar went away


def test_a_pipe_and_a_gzip_show_what_can_be_known(tmp_path: Path, pane_factory) -> None:  # noqa: F811
    cap = _capture(tmp_path)
    gz = tmp_path / "slow.pcap.gz"
    gz.write_bytes(gzip.compress(cap.read_bytes()))
    pipe = pane_factory(f"cat {cap} | {IPTRAF} -r - -B --speed 1 --json /dev/null")
    rows = pipe.wait(lambda rs: any("frames/s" in r for r in rs), "the pipe's progress")
    line = next(r for r in rows if "frames/s" in r)
    assert "left" not in line and "━" not in line  # no size: no bar, no time left
    rows = pipe.wait(lambda rs: any("EXIT=" in r for r in rs), "the end")
    assert len(_closing(rows)) == 1
    pipe.close()  # one tmux server at a time
    zipped = pane_factory(f"{IPTRAF} -r {gz} -B --speed 1 --json /dev/null")
    rows = zipped.wait(lambda rs: any("frames/s" in r and "left" in r for r in rs),
                       "the gzip's bar (its compressed bytes)")
    assert any("/" + filesize.decimal(gz.stat().st_size) in r for r in rows), rows


def test_quiet_or_no_terminal_shows_neither(tmp_path: Path, pane_factory) -> None:  # noqa: F811
    cap = _capture(tmp_path)
    quiet = pane_factory(f"{IPTRAF} -r {cap} -B -q --speed 4 --json /dev/null")
    rows = quiet.wait(lambda rs: any("EXIT=" in r for r in rs), "the quiet run's end")
    assert "EXIT=0" in "\n".join(rows)
    assert not _closing(rows) and not any("frames/s" in r for r in rows)
    quiet.close()
    r = subprocess.run([sys.executable, "-m", "iptraf_mp", "-r", str(cap), "-B",
                        "--json", "/dev/null"], capture_output=True, text=True, timeout=60,
                       check=True)
    assert r.stderr == ""  # a log file or a pipe gets no bar and no closing line
