"""End to end: the real `iptraf-mp -r fixtures/demo.pcapng` in a tmux pane.

Keys go in with `send-keys`, the screen comes back with `capture-pane`. Checked: the demo's
connections appear; M, S then B, W and F change the screen as they should; Q (and SIGTERM)
end the program with the exit summary and a terminal back in canonical mode with echo.
Each test runs its own tmux server (-S socket in tmp_path), so nothing is shared.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(
    TMUX is None, reason="tmux is not installed (apt-get install tmux; `make deps` does)")

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "fixtures" / "demo.pcapng"
IPTRAF = Path(sys.executable).parent / "iptraf-mp"
W, H = 100, 30


class Pane:
    def __init__(self, tmp: Path, command: str, sock: str = "tmux.sock") -> None:
        self.sock = str(tmp / sock)
        env = dict(os.environ, XDG_CONFIG_HOME=str(tmp / "config"),
                   XDG_DATA_HOME=str(tmp / "data"), TERM="xterm-256color")
        env.pop("IPTRAF_MP_NO_CONFIG", None)
        self.env = env
        self.tmux("new-session", "-d", "-s", "e2e", "-x", str(W), "-y", str(H),
                  f"cd {ROOT} && {command}; echo EXIT=$?; stty -a; sleep 60")

    def tmux(self, *args: str) -> str:
        return subprocess.run([TMUX, "-S", self.sock, *args], env=self.env, check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def screen(self) -> list[str]:
        return self.tmux("capture-pane", "-p", "-t", "e2e").splitlines()

    def keys(self, *keys: str) -> None:
        for k in keys:
            self.tmux("send-keys", "-t", "e2e", k)
            time.sleep(0.15)  # one key per frame loop turn, as a person types

    def wait(self, test, what: str, timeout: float = 60.0) -> list[str]:
        end = time.monotonic() + timeout
        rows: list[str] = []
        while time.monotonic() < end:
            rows = self.screen()
            if test(rows):
                return rows
            time.sleep(0.1)
        pytest.fail(f"timed out waiting for {what}; screen:\n" + "\n".join(rows))

    def close(self) -> None:
        subprocess.run([TMUX, "-S", self.sock, "kill-server"], env=self.env,
                       capture_output=True, timeout=10)


@pytest.fixture
def pane_factory(tmp_path):
    panes: list[Pane] = []

    def make(command: str) -> Pane:
        # a socket of its own: a server just told to exit may still hold the last one, and
        # a new session there fails (seen under load)
        p = Pane(tmp_path, command, f"tmux-{len(panes)}.sock")
        panes.append(p)
        return p

    yield make
    for p in panes:
        p.close()


def joined(rows: list[str]) -> str:
    return "\n".join(rows)


def tcp_rows(rows: list[str]) -> list[str]:
    """The TCP window's rows with a connection in them."""
    out = []
    for r in rows[2:]:
        if r.startswith("└ TCP:"):
            break
        if r[1:2] in ("┌", "└"):
            out.append(r)
    return out


def entries(rows: list[str]) -> int:
    line = next(r for r in rows if r.startswith("└ TCP:"))
    return int(re.search(r"TCP:\s+(\d+) entries", line).group(1))


def sane(rows: list[str]) -> bool:
    """stty -a after the program: canonical mode and echo are back on."""
    words = joined(rows).split()
    return "icanon" in words and "echo" in words and "-icanon" not in words


def test_demo_replay_keys_and_a_clean_exit(pane_factory):
    pane = pane_factory(f"{IPTRAF} -r {DEMO} --speed 40 --mac")
    rows = pane.wait(lambda r: "end of recording" in joined(r), "the end of the recording")
    screen = joined(rows)
    for host in ("192.168.1.10:52100", "10.0.0.5:22", "192.168.1.10:40100",
                 "140.82.121.4:443", "fd12:3456:789a:bcde:f012:3456:789a:bcde:50000",
                 "2a00:1450:4001:82b::200e:443", "93.184.216.34:80"):
        assert host in screen, host
    assert "UDP (" in screen and "on eth0" in screen  # the lower window
    assert " Packets captured:" in screen and "1611" in screen
    assert entries(rows) == 4
    first = tcp_rows(rows)
    assert first[0].startswith("│┌192.168.1.10:52100") and ">" in first[0]  # partial
    assert rows[1].count("Packets") == 1 and "Bytes" in rows[1]

    # M: source MAC (the option is on), then packet and window sizes, then counts again
    pane.keys("m")
    rows = pane.wait(lambda r: "Source MAC Addr" in r[1], "the MAC view")
    assert "02:50:b6:a1:c3:d4" in joined(rows)
    pane.keys("m")
    rows = pane.wait(lambda r: "Pkt Size" in r[1] and "Win Size" in r[1], "the size view")
    assert "64240" in joined(rows)
    pane.keys("m")
    pane.wait(lambda r: "Packets" in r[1], "the counts view")

    # S shows the sort box; B sorts by bytes: the git fetch (the biggest) comes first
    pane.keys("s")
    rows = pane.wait(lambda r: "Select sort criterion" in joined(r), "the sort box")
    assert "B - sort by byte count" in joined(rows)
    pane.keys("b")
    rows = pane.wait(lambda r: "Select sort criterion" not in joined(r)
                     and tcp_rows(r)[0].startswith("│┌192.168.1.10:40100"), "the byte sort")
    assert "140.82.121.4:443" in tcp_rows(rows)[1]

    # W: the lower window gets the keys
    tcp_border = next(r for r in rows if r.startswith("└ TCP:"))
    assert "Active" in tcp_border and "M-more TCP info" in rows[-1]
    pane.keys("w")
    rows = pane.wait(lambda r: "Lft/Rt-vtcl scrl" in r[-1], "the lower window active")
    assert "Active" not in next(r for r in rows if r.startswith("└ TCP:"))
    assert "Active" in rows[H - 5]

    # F: the closed pair goes
    assert "CLOSED" in joined(rows)
    pane.keys("f")
    rows = pane.wait(lambda r: entries(r) == 3, "the flush")
    assert "CLOSED" not in joined(tcp_rows(rows))

    # Q: the exit summary on the normal screen, and a sane terminal
    pane.keys("q")
    rows = pane.wait(lambda r: "EXIT=" in joined(r), "the program to exit", 30)
    screen = joined(rows)
    assert "EXIT=0" in screen
    assert "top connections by bytes" in screen and "140.82.121.4:443" in screen
    assert "Select sort criterion" not in screen  # the alternate screen is gone
    pane.wait(sane, "stty -a", 10)


@pytest.mark.skipif(os.geteuid() != 0, reason="-Z needs root (CI runs as root)")
def test_the_console_runs_after_dropping_root(pane_factory):
    """-Z nobody with the console: what drawing the screen imports late (rich, the keyboard's
    termios, P's frozen rows) is imported while still root (console/app.py import_now).
    Before, the first frame died on `No module named 'colorsys'` wherever nobody cannot read
    the interpreter's files (a Python under /root)."""
    pane = pane_factory(f"{IPTRAF} -r {DEMO} --speed 40 --no-db -Z nobody")
    rows = pane.wait(lambda r: "end of recording" in joined(r) or "EXIT=" in joined(r),
                     "the end of the recording")
    assert "end of recording" in joined(rows), joined(rows)
    pane.keys("p", "p", "q")
    rows = pane.wait(lambda r: "EXIT=" in joined(r), "the program to exit", 30)
    assert "EXIT=0" in joined(rows) and "Traceback" not in joined(rows)


def test_sigterm_restores_the_terminal(pane_factory):
    pane = pane_factory(f"{IPTRAF} -r {DEMO} --speed 1")
    pane.wait(lambda r: "192.168.1.10:52100" in joined(r), "the first connection")
    shell = int(pane.tmux("display-message", "-p", "-t", "e2e", "#{pane_pid}").strip())
    out = subprocess.run(["pgrep", "-P", str(shell)], capture_output=True, text=True)
    pids = [int(x) for x in out.stdout.split()]
    assert pids, "iptraf-mp is not running under the pane's shell"
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    rows = pane.wait(lambda r: "EXIT=" in joined(r), "the program to stop", 30)
    assert "packets captured" in joined(rows)  # the exit summary
    pane.wait(sane, "stty -a", 10)


# ---- paced replays: the screen is one engine's at every moment, for any shard count -------

TIME = re.compile(r"Time: (\d+):(\d\d):(\d\d)")


def shown_time(rows: list[str]) -> int | None:
    for r in rows:
        m = TIME.search(r)
        if m:
            return int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])
    return None


@pytest.mark.parametrize("speed", ["100", "400"])
def test_paced_replay_screens_equal_for_one_engine_and_shards(tmp_path, speed):
    """fixtures/timeout.pcap: 40070 and 40071 time out when the packet at 964 s comes,
    40072 then takes 40070's row (rule 8). Before: with shards the clock ran 16 minutes
    ahead of the packets (a tick was sent before the pacing wait), and at the end 40071's
    TIMEOUT row was gone (a new pair took a row by publication order, not packet order)."""
    cap = ROOT / "fixtures" / "timeout.pcap"
    panes = {}
    for name, shards in (("one", "--shards 0"), ("sharded", "")):
        (tmp_path / name).mkdir()
        panes[name] = Pane(tmp_path / name, f"{IPTRAF} -r {cap} --speed {speed} {shards}")
    try:
        seen: dict[str, dict[int, set]] = {"one": {}, "sharded": {}}
        ends: dict[str, list[str]] = {}
        deadline = time.monotonic() + 60
        while len(ends) < 2 and time.monotonic() < deadline:
            for name, pane in panes.items():
                if name in ends:
                    continue
                rows = pane.screen()
                t = shown_time(rows)
                if t is None:
                    continue
                state = tuple(tcp_rows(rows))
                if t == 0 and not state:
                    continue  # before the first packet was shown: a state of both too
                seen[name].setdefault(t, set()).add(state)
                # never ahead of the packets: TIMEOUT only once the packet at 964 s is in
                if any("TIMEOUT" in r for r in state):
                    assert t >= 964, (name, t, state)
                if "end of recording" in joined(rows):
                    ends[name] = list(state)
            time.sleep(0.03)
        assert len(ends) == 2, "a replay did not end"
        assert ends["one"] == ends["sharded"], (ends["one"], ends["sharded"])
        final = ends["one"]
        assert len(final) == 4 and ":40072" in final[0] and ":40071" in final[2]
        assert "TIMEOUT" in final[2] and "TIMEOUT" in final[3]
        # every moment both showed the same second of packet time with one state each
        both = [t for t in seen["one"] if t in seen["sharded"]
                and len(seen["one"][t]) == 1 and len(seen["sharded"][t]) == 1]
        assert both, (sorted(seen["one"]), sorted(seen["sharded"]))
        for t in both:
            assert seen["one"][t] == seen["sharded"][t], t
    finally:
        for pane in panes.values():
            pane.close()
