"""Live loss on a veth pair fed by tcpreplay: iptraf-mp -B against iptraf-ng -B, and
iptraf-mp -B against iptraf-mp with its console open.

    sudo python bench/bench_live.py [--packets 500000] [--rates 100000,200000,top]
                                    [--console | --no-console | --capture-procs]

Needs root, iproute2, tcpreplay and iptraf-ng. Makes two network namespaces joined by a veth
pair (removed at the end, also on failure); tcpreplay sends a generated capture
(bench/gen_capture.py) from one end at each rate, and the monitor under test captures at the
other end, in its own namespace: nothing leaves the two namespaces. The monitors run one
after the other on the same capture at the same rate:

- iptraf-mp -B --json OUT             (what it counted: the summary's frames)
- iptraf-mp -B --json OUT -L LOG      (the same work as iptraf-ng's: it writes the log too)
- iptraf-ng -i IFACE -B -L LOG        (stopped with SIGUSR2)
- iptraf-mp --json OUT                (the console, in a tmux pane of 200x50, so rich draws
                                       every frame; stopped with the Q key)

`--capture-procs` runs only iptraf-mp -B with one capture process on the interface and with
two (PACKET_FANOUT), each pinned to a core of its own, twice each, interleaved.

`--console` runs only the last comparison: iptraf-mp -B and iptraf-mp with the console, one
after the other at each rate, same traffic (needs tmux; without tmux, or with `--no-console`,
the console runs are left out). Its second table says, for each: what tcpreplay sent, what
the veth delivered, what iptraf-mp counted, the kernel's and the full queues' drops (from
iptraf-mp's own counters: its -B line on stderr, the console's exit summary read from the
pane), the loss, and the CPU of the monitor and of the terminal (the tmux server, which
parses what the console draws: a cost the machine pays for the open console).

Every monitor runs in a session of its own (iptraf-ng -B is a daemon, the console is in a
tmux pane, iptraf-mp -B is started with setsid), tcpreplay in the benchmark's. This matters:
with the kernel's autogroup scheduling (kernel.sched_autogroup_enabled = 1) each session is a
scheduling group that gets a fair share of the cores as a whole. A monitor in tcpreplay's
group competes with it task by task and slows the sender down (tcpreplay then reaches about
half the asked rate, and the monitor loses less); in a group of its own it gets its group's
share, as it would on a router, where the traffic does not come from a process of its own
session. Earlier runs (before the console comparison) had iptraf-mp -B in tcpreplay's group.

Loss = 1 - captured / delivered, where delivered is what the receiving veth counted (its
rx_packets; tcpreplay's sent count is shown too, and the difference is the veth's own drops,
which no monitor can see). iptraf-mp's captured count is exact (its summary). iptraf-ng -B
prints no packet count, so its count is read from its log: each UDP packet has a line, and
each TCP direction logs "FIN sent; N packets" (N up to and including its FIN). Packets after
a direction's FIN (the last ACK) and directions that never send a FIN are not in the log;
the same rule applied to the capture file gives the count a loss-free run logs. The log
measure is checked on iptraf-mp's own log, whose loss is known exactly. A lost FIN hides a
whole direction, so from the log, loss reads high: zero is exact, small values are upper
bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_pipeline import bench_capture, busy_seconds, iptraf_mp, tree  # noqa: E402

from iptraf_mp.capture.capfile import open_capture  # noqa: E402
from iptraf_mp.core.decode import decode  # noqa: E402
from iptraf_mp.core.model import K_TCP, K_UDP, TH_FIN  # noqa: E402

WORK = Path("/tmp/iptraf-mp-bench/live")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


class Veth:
    """Namespaces `a` (the monitor's) and `b` (tcpreplay's), one veth pair between them."""

    def __init__(self) -> None:
        pid = os.getpid()
        self.ns_a, self.ns_b = f"ipmpb{pid}a", f"ipmpb{pid}b"
        self.a_if, self.b_if = f"ipbA{pid}", f"ipbB{pid}"

    def __enter__(self) -> Veth:
        try:
            for ns in (self.ns_a, self.ns_b):
                sh("ip", "netns", "add", ns)
                for key in ("all", "default"):
                    sh("ip", "netns", "exec", ns, "sysctl", "-qw",
                       f"net.ipv6.conf.{key}.disable_ipv6=1")
            sh("ip", "link", "add", self.a_if, "netns", self.ns_a, "type", "veth", "peer",
               "name", self.b_if, "netns", self.ns_b)
            sh("ip", "-n", self.ns_a, "link", "set", self.a_if, "up")
            sh("ip", "-n", self.ns_b, "link", "set", self.b_if, "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.ns_a, self.ns_b):
            sh("ip", "netns", "del", ns, check=False)

    def rx(self) -> tuple[int, int]:
        """(packets, dropped) the monitor's end has received."""
        out = sh("ip", "-n", self.ns_a, "-s", "-j", "link", "show", self.a_if).stdout
        rx = json.loads(out)[0]["stats64"]["rx"]
        return rx["packets"], rx["dropped"]

    def in_a(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns_a, *argv]

    def in_b(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns_b, *argv]


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def replay(net: Veth, cap: Path, rate: str) -> tuple[int, float]:
    """tcpreplay at `rate` packets/s (or its top speed): (packets sent, achieved rate)."""
    how = ["--topspeed"] if rate == "top" else ["--pps", rate]
    out = subprocess.run(net.in_b("tcpreplay", "-q", "-i", net.b_if, "--preload-pcap", *how,
                                  str(cap)), capture_output=True, text=True, check=True).stdout
    sent = int(re.search(r"Successful packets:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    pps = float(re.search(r"([\d.]+) pps", out).group(1))  # type: ignore[union-attr]
    return sent, pps


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(b")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def checksummed(cap: Path) -> Path:
    """A copy of `cap` with valid IPv4 header checksums (gen_capture.py leaves them 0):
    iptraf-ng drops packets whose IP header checksum is wrong, iptraf-mp counts them."""
    out = cap.with_name(cap.stem + "-csum.pcap")
    if out.exists():
        return out
    rec = struct.Struct("<IIII")
    tmp = out.with_suffix(".tmp")
    with open(cap, "rb") as src, open(tmp, "wb") as dst:
        dst.write(src.read(24))  # gen_capture.py: little-endian, microseconds, Ethernet
        while head := src.read(16):
            caplen = rec.unpack(head)[2]
            frame = bytearray(src.read(caplen))
            if frame[12:14] == b"\x08\x00" and len(frame) >= 34:
                ihl = (frame[14] & 0x0F) * 4
                frame[24:26] = b"\0\0"
                total = sum(struct.unpack(f"!{ihl // 2}H", frame[14:14 + ihl]))
                while total >> 16:
                    total = (total & 0xFFFF) + (total >> 16)
                frame[24:26] = struct.pack("!H", ~total & 0xFFFF)
            dst.write(head)
            dst.write(frame)
    tmp.rename(out)
    return out


class Window:
    """From now on: how much of the machine's CPU went to neither the monitor nor tcpreplay
    (other tenants; they take cores from both)."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.kids0 = time.monotonic(), busy_seconds(), children_cpu()

    def foreign(self, monitor_cpu: float) -> float:
        wall = time.monotonic() - self.t0
        other = busy_seconds() - self.busy0 - monitor_cpu - (children_cpu() - self.kids0)
        return max(0.0, other) / (wall * (os.cpu_count() or 1))


# ---- what a log says -------------------------------------------------------------------------

FIN_RE = re.compile(r"; TCP; .*; FIN sent; (\d+) packets")


def log_count(path: Path) -> int:
    """Packets an iptraf-ng style log accounts for (see the module docstring)."""
    n = 0
    with open(path, errors="replace") as f:
        for line in f:
            m = FIN_RE.search(line)
            if m:
                n += int(m.group(1))
            elif "; UDP; " in line:
                n += 1
    return n


def log_count_expected(cap: Path) -> int:
    """The same rule applied to the capture: what a loss-free run logs."""
    upto: dict[tuple, int] = defaultdict(int)
    finned: set[tuple] = set()
    udp = 0
    with open_capture(cap) as r:
        for _ts, _i, data, wirelen in r:
            d = decode(1, data, wirelen)
            if d.kind == K_UDP:
                udp += 1
            elif d.kind == K_TCP:
                k = (d.src, d.sport, d.dst, d.dport)
                if k in finned:
                    continue
                upto[k] += 1
                if d.flags & TH_FIN:
                    finned.add(k)
    return sum(upto[k] for k in finned) + udp


# ---- the monitors ----------------------------------------------------------------------------

@dataclass
class Row:
    rate: str
    tool: str
    sent: int
    achieved: float
    delivered: int
    captured: int
    exact: bool
    kernel_drops: int | None
    queue_drops: int | None
    cpu: float
    foreign: float  # others' share of the machine's CPU while the traffic ran (not tcpreplay)
    note: str = ""
    term_cpu: float | None = None  # the terminal's (tmux server's) CPU, console runs only

    @property
    def loss(self) -> float:
        return 1 - self.captured / self.delivered if self.delivered else 0.0


def wait_ready(pid: int, children: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        segs = [n for n in os.listdir("/dev/shm") if n.startswith(f"iptrafmp-{pid}-")]
        if segs and len(tree(pid)) >= children + 1:
            time.sleep(0.3)
            return
        time.sleep(0.05)
    raise RuntimeError("iptraf-mp did not start capturing")


def packet_socket_holders(pids: list[int]) -> list[int]:
    """Those of `pids` that hold a packet socket (their namespace's /proc/net/packet): the
    capture processes (the main process and the shards close their copies of the handles)."""
    inodes = set()
    for line in Path(f"/proc/{pids[0]}/net/packet").read_text().splitlines()[1:]:
        inodes.add(line.split()[-1])
    out = []
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if any(ln.startswith("socket:[") and ln[8:-1] in inodes for ln in links):
            out.append(pid)
    return sorted(out)


def run_iptraf_mp(net: Veth, cap: Path, rate: str, with_log: bool, expected_log: int,
                  capture_procs: int | None = None) -> Row:
    # per process: other sessions may run this benchmark at the same time
    out, log = WORK / f"mp-{os.getpid()}.jsonl", WORK / f"mp-{os.getpid()}.log"
    log.unlink(missing_ok=True)
    argv = net.in_a(iptraf_mp(), "-i", net.a_if, "-B", "--no-db", "--json", str(out))
    if with_log:
        argv += ["-L", str(log)]
    if capture_procs is not None:
        argv += ["--capture-procs", str(capture_procs)]
    # Its own session, as iptraf-ng -B (a daemon) and the console (a tmux pane) have: with
    # the kernel's autogroup scheduling a session is a scheduling group, and one shared with
    # tcpreplay would slow the sender down instead of starving the monitor.
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_ready(proc.pid, 2 + (capture_procs or 1))
        if capture_procs is not None:
            # each capture process on a core of its own (the shards, the main process and
            # tcpreplay go where the scheduler puts them)
            holders = packet_socket_holders(tree(proc.pid))
            if len(holders) != capture_procs:
                raise RuntimeError(f"expected {capture_procs} capture processes: {holders}")
            for k, pid in enumerate(holders):
                sh("taskset", "-p", "-c", str(k % (os.cpu_count() or 1)), str(pid))
        rx0 = net.rx()[0]
        cpu0 = cpu_seconds(tree(proc.pid))
        window = Window()
        sent, achieved = replay(net, cap, rate)
        time.sleep(1.5)  # the capture reads what the kernel still holds
        delivered = net.rx()[0] - rx0
        cpu = cpu_seconds(tree(proc.pid)) - cpu0
        foreign = window.foreign(cpu)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    except BaseException:
        proc.kill()
        raise
    frames = json.loads(out.read_text().splitlines()[-1])["frames"]
    out.unlink()
    m = re.search(r"(\d+) frames counted; dropped: (\d+) by the kernel, (\d+) on full queues",
                  err)
    if m is None:
        raise RuntimeError(f"iptraf-mp said: {err}")
    note = ""
    if with_log:
        # the log measure, checked where the loss is known exactly
        got = log_count(log)
        log.unlink()
        note = f"log measure: {got:,} of {expected_log:,}"
    tool = "iptraf-mp -B" + (" -L" if with_log else "")
    if capture_procs is not None:
        tool += f" --capture-procs {capture_procs} (pinned)"
    return Row(rate, tool, sent, achieved, delivered,
               frames, True, int(m.group(2)), int(m.group(3)), cpu, foreign, note)


# ---- the console in a terminal -----------------------------------------------------------

PANE_W, PANE_H = 200, 50
SUMMARY_RE = re.compile(r"packets captured (\d+); drops: (\d+) kernel, (\d+) queue")


class Tmux:
    """A tmux server of our own (its socket in WORK), one detached pane of PANE_W x PANE_H
    running `command`; the pane stays when the command ends (remain-on-exit), so what the
    program printed last, its exit summary, can still be read."""

    def __init__(self, command: str) -> None:
        self.sock = str(WORK / f"tmux-{os.getpid()}.sock")
        self.env = dict(os.environ, TERM="xterm-256color")
        self.run("new-session", "-d", "-s", "bench", "-x", str(PANE_W), "-y", str(PANE_H),
                 command, ";", "set-option", "-t", "bench", "remain-on-exit", "on")

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.sock, "-f", "/dev/null", *args],
                              env=self.env, check=True, capture_output=True, text=True,
                              timeout=10).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "bench")

    def server_pid(self) -> int:
        return int(self.run("display-message", "-p", "-t", "bench", "#{pid}").strip())

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], env=self.env,
                       capture_output=True, timeout=10)
        Path(self.sock).unlink(missing_ok=True)


def run_iptraf_mp_console(net: Veth, cap: Path, rate: str) -> Row:
    """iptraf-mp with its console open in a tmux pane, capturing the same traffic."""
    out = WORK / f"mp-console-{os.getpid()}.jsonl"
    pidfile = WORK / f"mp-console-{os.getpid()}.pid"
    out.unlink(missing_ok=True)
    pidfile.unlink(missing_ok=True)
    argv = net.in_a(iptraf_mp(), "-i", net.a_if, "--no-db", "--json", str(out))
    # The shell writes its pid and execs the monitor (ip netns exec and env exec too), so the
    # pid is the monitor's main process, whose rings wait_ready() looks for.
    tmux = Tmux(f"echo $$ > {shlex.quote(str(pidfile))}; exec env TERM=xterm-256color "
                f"IPTRAF_MP_NO_CONFIG=1 {shlex.join(argv)}")
    try:
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError("the tmux pane did not start")
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        wait_ready(pid, 3)
        term_pid = tmux.server_pid()
        rx0 = net.rx()[0]
        cpu0, term0 = cpu_seconds(tree(pid)), cpu_seconds([term_pid])
        window = Window()
        sent, achieved = replay(net, cap, rate)
        time.sleep(1.5)  # the capture reads what the kernel still holds
        delivered = net.rx()[0] - rx0
        cpu = cpu_seconds(tree(pid)) - cpu0
        term_cpu = cpu_seconds([term_pid]) - term0
        foreign = window.foreign(cpu + term_cpu)
        drawn = tmux.screen()
        shape = tmux.run("display-message", "-p", "-t", "bench",
                         "#{pane_width}x#{pane_height}").strip()
        if "TCP:" not in drawn or "entries" not in drawn or shape != f"{PANE_W}x{PANE_H}":
            raise RuntimeError(f"the console is not on the {PANE_W}x{PANE_H} pane ({shape}):"
                               f"\n{drawn}")
        tmux.run("send-keys", "-t", "bench", "q")
        deadline = time.monotonic() + 120
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.1)
        summary = tmux.screen()
    finally:
        tmux.close()
        pidfile.unlink(missing_ok=True)
    m = SUMMARY_RE.search(summary)
    if m is None:
        raise RuntimeError(f"no exit summary on the pane:\n{summary}")
    frames = json.loads(out.read_text().splitlines()[-1])["frames"]
    out.unlink()
    if frames != int(m.group(1)):
        raise RuntimeError(f"--json says {frames} frames, the exit summary {m.group(1)}")
    return Row(rate, f"iptraf-mp console {PANE_W}x{PANE_H}", sent, achieved, delivered, frames,
               True, int(m.group(2)), int(m.group(3)), cpu, foreign, term_cpu=term_cpu)


def run_iptraf_ng(net: Veth, cap: Path, rate: str, expected_log: int) -> Row:
    log = WORK / f"ng-{os.getpid()}.log"
    log.unlink(missing_ok=True)
    # -B forks into the background: find the daemon by its command line (our log's path)
    sh(*net.in_a("iptraf-ng", "-i", net.a_if, "-B", "-L", str(log)))
    deadline = time.monotonic() + 10
    pid = None
    while pid is None and time.monotonic() < deadline:
        for e in os.listdir("/proc"):
            if e.isdigit():
                try:
                    cmd = Path(f"/proc/{e}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if cmd[:1] == [b"iptraf-ng"] and str(log).encode() in cmd:
                    pid = int(e)
        time.sleep(0.05)
    if pid is None:
        raise RuntimeError("iptraf-ng did not start (another one holding its lock?)")
    try:
        time.sleep(0.5)
        rx0 = net.rx()[0]
        cpu0 = cpu_seconds([pid])
        window = Window()
        sent, achieved = replay(net, cap, rate)
        time.sleep(1.5)
        delivered = net.rx()[0] - rx0
        cpu = cpu_seconds([pid]) - cpu0
        foreign = window.foreign(cpu)
    finally:
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
    got = log_count(log)
    log.unlink()
    # Scaled to packets: the log accounts for expected_log of the capture's packets when
    # nothing is lost.
    captured = round(got / expected_log * delivered) if expected_log else 0
    return Row(rate, "iptraf-ng -B -L", sent, achieved, delivered, captured, False, None, None,
               cpu, foreign, f"log measure: {got:,} of {expected_log:,}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=500_000)
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--rates", default="100000,200000,top")
    ap.add_argument("--no-log-variant", action="store_true",
                    help="skip iptraf-mp with -L")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--console", action="store_true",
                       help="only iptraf-mp -B against iptraf-mp with its console open")
    which.add_argument("--no-console", action="store_true",
                       help="leave out the runs with the console open")
    which.add_argument("--capture-procs", action="store_true",
                       help="only iptraf-mp -B with 1 and with 2 capture processes on the "
                            "interface, each pinned to a core of its own (taskset)")
    a = ap.parse_args()
    if a.capture_procs:
        a.no_console = True
    need = ["ip", "tcpreplay"] + ([] if a.console or a.capture_procs else ["iptraf-ng"])
    if a.capture_procs:
        need.append("taskset")
    missing = [t for t in need if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        why = "not root" if os.geteuid() else "missing " + ", ".join(missing)
        print(f"# bench_live: skipped ({why})")
        return 0
    console = not a.no_console and shutil.which("tmux") is not None
    if a.console and not console:
        print("# bench_live --console: skipped (missing tmux)")
        return 0
    # Both iptraf-mp runs must do the same work: no options from a config file.
    os.environ["IPTRAF_MP_NO_CONFIG"] = "1"
    WORK.mkdir(parents=True, exist_ok=True)
    cap = checksummed(bench_capture(a.packets, a.connections))
    expected_log = 0 if a.console or a.capture_procs else log_count_expected(cap)
    print(f"# bench_live: {os.cpu_count()} cores, capture {cap.name} ({a.packets:,} packets)"
          + ("" if a.console or a.capture_procs
             else f"; a loss-free iptraf-ng style log accounts for "
             f"{expected_log:,} of them")
          + f"; load average {os.getloadavg()[0]:.1f}\n", flush=True)
    rows: list[Row] = []
    with Veth() as net:
        for rate in a.rates.split(","):
            if a.capture_procs:
                for procs in (1, 2, 1, 2):  # two rounds, interleaved
                    rows.append(run_iptraf_mp(net, cap, rate, False, 0, procs))
                continue
            rows.append(run_iptraf_mp(net, cap, rate, False, expected_log))
            if console:
                rows.append(run_iptraf_mp_console(net, cap, rate))
            if a.console:
                continue
            if not a.no_log_variant:
                rows.append(run_iptraf_mp(net, cap, rate, True, expected_log))
            rows.append(run_iptraf_ng(net, cap, rate, expected_log))
    if not a.console:
        print_table(rows)
    if console:
        print_console_table(rows)
    return 0


def print_table(rows: list[Row]) -> None:
    print("| rate asked | monitor | sent | achieved pps | delivered to veth | captured | "
          "loss | kernel drops | queue drops | CPU us/packet | others' CPU | note |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        captured = f"{r.captured:,}" if r.exact else f"~{r.captured:,}"
        kd = "-" if r.kernel_drops is None else f"{r.kernel_drops:,}"
        qd = "-" if r.queue_drops is None else f"{r.queue_drops:,}"
        print(f"| {r.rate} | {r.tool} | {r.sent:,} | {r.achieved:,.0f} | {r.delivered:,} | "
              f"{captured} | {r.loss:.2%} | {kd} | {qd} | {r.cpu / r.sent * 1e6:.2f} | "
              f"{r.foreign:.0%} | {r.note} |")
    print(flush=True)


def print_console_table(rows: list[Row]) -> None:
    """-B against the console, per rate: drops as iptraf-mp counted them, and what is
    unaccounted for (delivered - counted - drops: should be 0)."""
    print("iptraf-mp -B against iptraf-mp with the console open (same traffic, one after the "
          "other):\n")
    print("| rate asked | iptraf-mp | sent | achieved pps | delivered to veth | counted | "
          "kernel drops | queue drops | unaccounted | loss | CPU us/packet | terminal CPU s | "
          "others' CPU |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if not r.tool.startswith("iptraf-mp") or "-L" in r.tool:
            continue
        kd, qd = r.kernel_drops or 0, r.queue_drops or 0
        term = "-" if r.term_cpu is None else f"{r.term_cpu:.2f}"
        print(f"| {r.rate} | {r.tool.removeprefix('iptraf-mp ')} | {r.sent:,} | "
              f"{r.achieved:,.0f} | {r.delivered:,} | {r.captured:,} | {kd:,} | {qd:,} | "
              f"{r.delivered - r.captured - kd - qd:,} | {r.loss:.2%} | "
              f"{r.cpu / r.sent * 1e6:.2f} | {term} | {r.foreign:.0%} |")
    print(flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
