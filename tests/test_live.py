"""Live capture on traffic the test makes itself.

Every packet is sent inside two network namespaces created here and joined by a veth pair;
both are removed afterwards, also when a test fails. Nothing is sent anywhere else. The tests
that need root (namespaces, capture) skip with the reason when not root.

What is checked: the JSON of `iptraf-mp -i VETH -B` against tshark's reading of the run's own
recording (`-w`), exact per direction; the recording itself (interface name, section header
comment); that replaying the recording gives the very same JSON; stopping by SIGINT, SIGTERM
and -t; -Z; `-i all`; and the one-line refusals (unknown interface, interface down, `-i`
with `-r`, no permission).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shards.reader import NSTATS, ST_KERNEL_DROPS, ST_KERNEL_RECV, _kernel_stats

from .netns import netns_pair, sh, why_not
from .test_pipeline import alive, descendants, iptraf_mp_command, kill_tree, segments

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0,
                               reason="needs root: creates network namespaces and captures")
TSHARK = shutil.which("tshark")
need_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

PORT_TCP = 5001
PORT_UDP = 5002


@dataclass
class Net:
    """Two namespaces joined by a veth pair: `a_if` (address `a`) in `ns_a`, `b_if` in `ns_b`."""

    ns_a: str
    ns_b: str
    a_if: str
    b_if: str
    a: str
    b: str

    def in_a(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns_a, *argv]

    def in_b(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns_b, *argv]


@pytest.fixture
def net() -> Iterator[Net]:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    # No IPv6 (netns_pair leaves it off): its neighbour discovery and MLD would add traffic
    # the test did not make
    with netns_pair("live") as pair:
        v = pair.add_veth()
        yield Net(pair.ns_a, pair.ns_b, v.a_if, v.b_if, v.a4, v.b4)


# ---- traffic ---------------------------------------------------------------------------------

SERVER = textwrap.dedent("""
    import socket, sys, threading
    host = sys.argv[1]
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, %(tcp)d)); ls.listen(16)
    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); us.bind((host, %(udp)d))
    def udp():
        while True:
            data, peer = us.recvfrom(65535)
            us.sendto(data, peer)
    def serve(c):
        n = 0
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                n += len(d)
            c.sendall(str(n).encode())
        except ConnectionResetError:
            pass
        c.close()
    threading.Thread(target=udp, daemon=True).start()
    print("ready", flush=True)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
""") % {"tcp": PORT_TCP, "udp": PORT_UDP}

CLIENT = textwrap.dedent("""
    import json, socket, struct, sys, time
    server = sys.argv[1]
    out = {"fin": [], "rst": [], "udp": None}
    for size in (1000, 20000, 300000):
        s = socket.create_connection((server, %(tcp)d))
        out["fin"].append(s.getsockname()[1])
        s.sendall(b"x" * size)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
        s.close()
    s = socket.create_connection((server, %(tcp)d))
    out["rst"].append(s.getsockname()[1])
    s.sendall(b"y" * 100)
    time.sleep(0.2)
    # linger 0: close() sends a RST instead of a FIN
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    u.connect((server, %(udp)d))
    out["udp"] = u.getsockname()[1]
    for i in range(5):
        u.send(b"z" * (100 + i))
        u.recv(65535)
    print(json.dumps(out), flush=True)
""") % {"tcp": PORT_TCP, "udp": PORT_UDP}


@dataclass
class Traffic:
    fin: list[int]  # client ports of the connections closed by FIN
    rst: list[int]  # ... closed by the client's RST
    udp: int
    pings: int


def make_traffic(net: Net, pings: int = 3) -> Traffic:
    server = subprocess.Popen(net.in_b(sys.executable, "-c", SERVER, net.b),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        done = subprocess.run(net.in_a(sys.executable, "-c", CLIENT, net.b), capture_output=True,
                              text=True, timeout=30, check=True)
        ports = json.loads(done.stdout)
        sh(*net.in_a("ping", "-c", str(pings), "-i", "0.2", "-W", "1", net.b))
    finally:
        server.kill()
        server.wait()
    return Traffic(ports["fin"], ports["rst"], ports["udp"], pings)


# ---- running iptraf-mp in a namespace ----------------------------------------------------------

class Live:
    """`iptraf-mp ARGV -B --no-db` in `ns`, as root; pid is the monitor's own (ip netns exec
    execs it)."""

    def __init__(self, ns: str, argv: list[str], prefix: list[str] | None = None) -> None:
        self.argv = ["ip", "netns", "exec", ns, *(prefix or []), *iptraf_mp_command(), *argv,
                     "-B", "--no-db"]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.pid = self.proc.pid
        self.stderr = ""
        self.kids: set[int] = set()

    def wait_capturing(self, children: int = 3, timeout: float = 20.0) -> None:
        """The handles are opened before the rings are made: once the rings and the children
        (segment reaper, shard, capture process) exist, every packet is captured."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"iptraf-mp ended early: {self.proc.communicate()}")
            kids = [k for k in descendants(self.pid) if alive(k)]
            self.kids.update(kids)
            if segments(self.pid) and len(kids) >= children:
                time.sleep(0.2)
                return
            time.sleep(0.05)
        self.kill()
        raise AssertionError("iptraf-mp did not start capturing")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        time.sleep(0.3)  # a capture wakes every 50 ms: let it read the last packets
        self.kids.update(descendants(self.pid))
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            _, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return self.proc.returncode

    def kill(self) -> None:
        kill_tree(self.proc)

    def nothing_left(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not [k for k in self.kids if alive(k)] and not segments(self.pid):
                return
            time.sleep(0.1)
        raise AssertionError(f"left behind: {[k for k in self.kids if alive(k)]}, "
                             f"{segments(self.pid)}")


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tshark_tcp(rec: Path) -> dict[tuple, list[int]]:
    """(src, sport, dst, dport) -> [packets, bytes] as tshark reads the recording; bytes by
    the byte rule (IPv4 Total Length)."""
    out = subprocess.run([TSHARK or "tshark", "-r", str(rec), "-Y", "tcp", "-T", "fields",
                          "-e", "ip.src", "-e", "tcp.srcport", "-e", "ip.dst", "-e",
                          "tcp.dstport", "-e", "ip.len"],
                         capture_output=True, text=True, check=True).stdout
    sums: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for line in out.splitlines():
        src, sport, dst, dport, iplen = line.split("\t")
        s = sums[(src, int(sport), dst, int(dport))]
        s[0] += 1
        s[1] += int(iplen)
    return dict(sums)


def tshark_fields(rec: Path, *fields: str) -> list[list[str]]:
    argv = [TSHARK or "tshark", "-r", str(rec), "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def replay(rec: Path, out: Path) -> int:
    return subprocess.run([*iptraf_mp_command(), "-r", str(rec), "-B", "--no-db", "--json",
                           str(out)], capture_output=True, text=True, timeout=60).returncode


def drops_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if "frames counted; dropped:" in ln]
    assert len(lines) == 1, stderr
    return lines[0]


# ---- the live run ------------------------------------------------------------------------------

@ROOT_ONLY
@need_tshark
def test_live_json_recording_and_replay(net: Net, tmp_path: Path) -> None:
    """SIGINT ends it; the JSON matches tshark on the recording exactly, per direction; the
    recording is a proper pcapng; replaying it gives the same JSON, byte for byte."""
    out, rec = tmp_path / "live.jsonl", tmp_path / "live.pcapng"
    run = Live(net.ns_a, ["-i", net.a_if, "--json", str(out), "-w", str(rec)])
    try:
        run.wait_capturing()
        traffic = make_traffic(net)
        rc = run.stop(signal.SIGINT)
    except BaseException:
        run.kill()
        raise
    assert rc == 0, run.stderr
    assert drops_line(run.stderr).endswith("dropped: 0 by the kernel, 0 on full queues")
    run.nothing_left()
    recs = records(out)
    summary = recs[-1]
    assert summary["type"] == "summary"

    # The recording: every frame, one interface block named after the veth, the settings in
    # the section header's comment, readable by tshark.
    frames = tshark_fields(rec, "frame.interface_name")
    assert len(frames) == summary["frames"]
    assert {f[0] for f in frames} == {net.a_if}
    # capinfos ships with tshark (wireshark-common)
    info = subprocess.run(["capinfos", str(rec)], capture_output=True, text=True,
                          check=True).stdout
    comment = [ln for ln in info.splitlines() if ln.startswith("Capture comment:")]
    assert comment and "iptraf-mp" in comment[0] and "tcp_timeout_min=15" in comment[0], info
    assert f"Name = {net.a_if}" in info

    # Exactly the connections made, each one pair, closed as it was closed.
    tcp = [r for r in recs if r["type"] == "tcp"]
    by_dir = {(r["src"], r["sport"], r["dst"], r["dport"]): r for r in tcp}
    assert len(by_dir) == len(tcp) == 2 * (len(traffic.fin) + len(traffic.rst))
    for port in traffic.fin + traffic.rst:
        c = by_dir[(net.a, port, net.b, PORT_TCP)]
        s = by_dir[(net.b, PORT_TCP, net.a, port)]
        assert c["pair"] == s["pair"] and not c["partial"]
        if port in traffic.fin:
            assert c["end"] == "FIN" and (c["state"], s["state"]) == ("CLOSED", "CLOSED")
        else:
            assert c["end"] == "RESET" and c["state"] == "RESET"
    # Per direction, packets and bytes, as tshark counts them in the recording.
    ref = tshark_tcp(rec)
    assert set(ref) == set(by_dir)
    for key, (packets, nbytes) in ref.items():
        assert (by_dir[key]["packets"], by_dir[key]["bytes"]) == (packets, nbytes), key
    # UDP and ping are in the summary (5 datagrams and 5 replies; echo requests and replies)
    assert summary["udp"]["packets"] == 10
    assert summary["icmp"]["packets"] == 2 * traffic.pings
    assert summary["tcp"]["packets"] == sum(p for p, _ in ref.values())

    # Replaying the recording gives the same JSON. With one interface, live pair ids are
    # frame numbers, as in a replay, so even the ids agree.
    out2 = tmp_path / "replay.jsonl"
    assert replay(rec, out2) == 0
    assert out2.read_text() == out.read_text()


@ROOT_ONLY
def test_sigterm_and_drop_privileges(net: Net, tmp_path: Path) -> None:
    """-Z nobody: the monitor runs as nobody once the capture is open (its /proc status says
    so while it runs), still captures, and SIGTERM ends it cleanly."""
    out, rec = tmp_path / "z.jsonl", tmp_path / "z.pcapng"
    run = Live(net.ns_a, ["-i", net.a_if, "--json", str(out), "-w", str(rec), "-Z", "nobody"])
    try:
        run.wait_capturing()
        status = Path(f"/proc/{run.pid}/status").read_text()
        uids = next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1:]
        gids = next(ln for ln in status.splitlines() if ln.startswith("Gid:")).split()[1:]
        sh(*net.in_a("ping", "-c", "2", "-i", "0.2", "-W", "1", net.b))
        rc = run.stop(signal.SIGTERM)
    except BaseException:
        run.kill()
        raise
    assert uids == ["65534"] * 4  # real, effective, saved, filesystem
    assert gids == ["65534"] * 4  # nogroup
    assert rc == 0, run.stderr
    run.nothing_left()
    summary = records(out)[-1]
    assert summary["type"] == "summary" and summary["icmp"]["packets"] == 4


@ROOT_ONLY
def test_all_interfaces_and_minutes(net: Net, tmp_path: Path) -> None:
    """`-i all` captures every interface that is up (here lo and the veth), not the `any`
    pseudo-device; -t ends the run by itself."""
    out, rec = tmp_path / "all.jsonl", tmp_path / "all.pcapng"
    run = Live(net.ns_a, ["-i", "all", "--json", str(out), "-w", str(rec), "-t", "0.05"])
    try:
        run.wait_capturing(children=4)  # reaper, shard, two capture processes
        sh(*net.in_a("ping", "-c", "2", "-i", "0.2", "-W", "1", net.b))
        sh(*net.in_a("ping", "-c", "2", "-i", "0.2", "-W", "1", "127.0.0.1"))
        started = time.monotonic()
        rc = run.wait(timeout=30)
    except BaseException:
        run.kill()
        raise
    assert rc == 0, run.stderr
    assert time.monotonic() - started < 10  # -t 0.05 = 3 s from the start
    run.nothing_left()
    from iptraf_mp.capture.capfile import open_capture

    with open_capture(rec) as r:
        names = sorted(i.name for i in r.interfaces)
        per_iface = Counter(r.interfaces[ifidx].name for _ts, ifidx, _d, _w in r)
    assert names == sorted(["lo", net.a_if])
    assert per_iface["lo"] == 4 and per_iface[net.a_if] >= 4  # the veth has ARP too
    assert records(out)[-1]["icmp"]["packets"] == 8


# ---- one interface, several capture processes (PACKET_FANOUT) --------------------------------

MANY = textwrap.dedent("""
    import socket, sys
    server = sys.argv[1]
    for i in range(40):
        s = socket.create_connection((server, %(tcp)d))
        s.sendall(b"x" * (500 + 997 * i))
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
        s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    for i in range(20):
        u.sendto(b"z" * (40 + i), (server, %(udp)d))
        u.recv(65535)
""") % {"tcp": PORT_TCP, "udp": PORT_UDP}


def connections(recs: list[dict]) -> dict[tuple, tuple]:
    """Per direction, what a capture process's count decides (pair ids aside); each
    direction once."""
    tcp = [r for r in recs if r["type"] == "tcp"]
    out = {(r["src"], r["sport"], r["dst"], r["dport"]):
           (r["packets"], r["bytes"], r["state"], r["end"], r["partial"], r["flags"])
           for r in tcp}
    assert len(out) == len(tcp)
    return out


@ROOT_ONLY
@need_tshark
def test_capture_procs_share_one_interface_and_count_the_same(net: Net, tmp_path: Path) -> None:
    """Two monitors watch the same veth at once, one with one capture process, one with two
    in a fan-out group (and two shards): the same connections, packets, bytes, states and
    summary; both capture processes made pairs (a pair id's low byte is its capture
    process's index); the recording holds every frame once, one interface block."""
    one, two, rec = tmp_path / "one.jsonl", tmp_path / "two.jsonl", tmp_path / "two.pcapng"
    a = Live(net.ns_a, ["-i", net.a_if, "--capture-procs", "1", "--shards", "1",
                        "--json", str(one)])
    b = Live(net.ns_a, ["-i", net.a_if, "--capture-procs", "2", "--shards", "2",
                        "--json", str(two), "-w", str(rec)])
    try:
        a.wait_capturing(children=3)  # reaper, shard, capture process
        b.wait_capturing(children=5)  # reaper, two shards, two capture processes
        server = subprocess.Popen(net.in_b(sys.executable, "-c", SERVER, net.b),
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            assert server.stdout.readline().strip() == "ready"
            subprocess.run(net.in_a(sys.executable, "-c", MANY, net.b), timeout=60,
                           check=True)
            sh(*net.in_a("ping", "-c", "3", "-i", "0.2", "-W", "1", net.b))
        finally:
            server.kill()
            server.wait()
        rc_a, rc_b = a.stop(signal.SIGINT), b.stop(signal.SIGINT)
    except BaseException:
        a.kill()
        b.kill()
        raise
    assert (rc_a, rc_b) == (0, 0), (a.stderr, b.stderr)
    for run in (a, b):
        assert drops_line(run.stderr).endswith("dropped: 0 by the kernel, 0 on full queues")
        run.nothing_left()
    ra, rb = records(one), records(two)
    ca, cb = connections(ra), connections(rb)
    assert len(ca) == 2 * 40
    assert cb == ca
    sa, sb = ra[-1], rb[-1]
    for key in ("frames", "ip", "tcp", "udp", "icmp", "other_ip", "non_ip", "malformed"):
        assert sb.get(key) == sa.get(key), key
    assert {r["pair"] & 0xFF for r in rb if r["type"] == "tcp"} == {0, 1}
    # and tshark agrees with both, on the recording of the fanned-out run
    ref = tshark_tcp(rec)
    assert {k: tuple(v) for k, v in ref.items()} == {k: v[:2] for k, v in cb.items()}
    frames = tshark_fields(rec, "frame.interface_name")
    assert len(frames) == sb["frames"] and {f[0] for f in frames} == {net.a_if}
    info = subprocess.run(["capinfos", str(rec)], capture_output=True, text=True,
                          check=True).stdout
    assert info.count("Interface #") == 1, info


def test_capture_procs_refused_for_replay_and_out_of_range(tmp_path: Path) -> None:
    for argv, why in ((["-r", str(tmp_path / "x.pcap"), "--capture-procs", "2"],
                       "--capture-procs is for live capture"),
                      (["-i", "lo", "--capture-procs", "0"], "--capture-procs must be 1 to 64")):
        rc, lines = refused(argv)
        assert rc == 2 and len(lines) == 1 and why in lines[0], lines


def test_default_capture_procs() -> None:
    from iptraf_mp.capture.live import default_capture_procs

    assert default_capture_procs(1, cores=2) == 1  # this machine
    assert default_capture_procs(1, cores=8) == 2
    assert default_capture_procs(1, cores=16) == 4  # at most four
    assert default_capture_procs(2, cores=16) == 2
    assert default_capture_procs(8, cores=16) == 1  # at least one
    assert default_capture_procs(3, cores=64) == 4


# ---- refusals: one line, non-zero exit --------------------------------------------------------

def refused(argv: list[str], prefix: list[str] | None = None) -> tuple[int, list[str]]:
    p = subprocess.run([*(prefix or []), *iptraf_mp_command(), *argv, "-B", "--no-db",
                        "--json", os.devnull], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr.splitlines()


def test_unknown_interface() -> None:
    rc, err = refused(["-i", "nosuchif0"])
    assert rc == 2 and err == ["iptraf-mp: nosuchif0: no such interface"]


def test_any_is_not_an_interface() -> None:
    rc, err = refused(["-i", "any"])
    assert rc == 2 and len(err) == 1 and "use -i all" in err[0]


def test_interface_and_replay_together(tmp_path: Path) -> None:
    rc, err = refused(["-i", "lo", "-r", str(tmp_path / "x.pcap")])
    assert rc == 2 and err == ["iptraf-mp: -i and -r cannot be used together"]


@ROOT_ONLY
def test_interface_down(net: Net) -> None:
    sh("ip", "-n", net.ns_a, "link", "add", "ipmdown0", "type", "veth", "peer", "name",
       "ipmdown1")
    rc, err = refused(["-i", "ipmdown0"], net.in_a())
    assert rc == 2 and err == ["iptraf-mp: ipmdown0: interface is down"]


def _runs_as_nobody() -> bool:
    """Can the unprivileged user start iptraf-mp at all (its interpreter may live under a
    home directory of mode 700)?"""
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env",
                        "HOME=/nonexistent", *iptraf_mp_command(), "--version"],
                       capture_output=True, cwd="/")
    return p.returncode == 0


@ROOT_ONLY
def test_no_permission(net: Net) -> None:
    """Without CAP_NET_RAW: one line, exit 2. As the user nobody when this interpreter is
    reachable by it; otherwise as root with CAP_NET_RAW taken away (what capture needs),
    which is the same refusal from the kernel."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    if _runs_as_nobody():
        # nobody's own HOME: root's is unreadable to it (iptraf-mp reads its config there)
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                  "env", "HOME=/nonexistent"]
    else:
        prefix = ["setpriv", "--inh-caps=-net_raw", "--ambient-caps=-net_raw",
                  "--bounding-set=-net_raw"]
    rc, err = refused(["-i", net.a_if], net.in_a(*prefix))
    assert rc == 2 and len(err) == 1, err
    assert err[0] == (f"iptraf-mp: {net.a_if}: no permission to capture (run as root or give "
                      f"the interpreter CAP_NET_RAW)")


# ---- kernel drops: taken from pcap stats() ------------------------------------------------------

class _Handle:
    def __init__(self, recv: int, drop: int) -> None:
        self.recv, self.drop = recv, drop

    def stats(self) -> tuple[int, int, int]:
        return self.recv, self.drop, 0


class _Broken:
    def stats(self) -> tuple[int, int, int]:
        raise OSError("interface went away")


def test_kernel_drops_come_from_pcap_stats() -> None:
    stats = [0] * NSTATS
    _kernel_stats(_Handle(1000, 7), stats)
    assert (stats[ST_KERNEL_RECV], stats[ST_KERNEL_DROPS]) == (1000, 7)
    _kernel_stats(_Broken(), stats)  # keeps the last good reading
    assert stats[ST_KERNEL_DROPS] == 7
