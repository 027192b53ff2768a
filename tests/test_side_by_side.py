"""Side by side with the real iptraf-ng.

`iptraf-mp -i VETH -B -L LOG1` and `iptraf-ng -i VETH -B -L LOG2` watch the same veth end in a
network namespace of their own while a scripted traffic mix runs between two namespaces made
here (nothing is sent anywhere else; both are removed afterwards, also on failure). Then the
two logs are compared event by event, the ctime prefixes ignored, lines matched by event kind
and endpoints. Every difference must be explained by a rule of docs/decisions.md or a README
decision (D1-D7), with evidence from the run's own recording (`-w`) where a packet decides it;
the test fails on any UNEXPLAINED difference. The report (a table of events: equal /
explained by ... / UNEXPLAINED) is written to a file whose path is printed
(`IPTRAF_MP_SBS_DIR=DIR` to choose where). It runs twice: with iptraf-ng's ARP/non-IP filter
bits on (its non-IP lines compared too) and off, its default (rule 13).

The mix: short TCP connections closed with FIN (IPv4 and IPv6), a long-lived one, one open
before the monitors start (the `>` case), one reset by RST (SO_LINGER 0) and a pure ACK after
it (a straggler, D1), one refused (SYN then RST), UDP request/response (IPv4 and IPv6), UDP
to a closed port (ICMP port unreachable), ICMP and ICMPv6 echo, a fragmented UDP datagram
(IP_PMTUDISC_DONT), an MLD report (hop-by-hop header, rule 17), ARP and neighbour discovery,
and two hand-made frames towards an address nobody answers: a SYN padded to the Ethernet
minimum (rule 4) and a lone pure ACK (rule 2). SIGUSR1 goes to both monitors while the
long-lived, the early and the half-open connections are active.

Run it alone with `.venv/bin/pytest -q tests/test_side_by_side.py -s` (root, iptraf-ng).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .netns import NetPair, Veth, netns_pair, why_not
from .test_pipeline import alive, descendants, iptraf_mp_command, kill_tree, segments

IPTRAF_NG = shutil.which("iptraf-ng") or (
    "/usr/sbin/iptraf-ng" if os.path.exists("/usr/sbin/iptraf-ng") else None)

LIVE = [
    pytest.mark.root,
    pytest.mark.skipif(why_not() is not None, reason=why_not() or ""),
    pytest.mark.skipif(IPTRAF_NG is None, reason="iptraf-ng is not installed"),
]

TCP_PORT = 5001
UDP_PORT = 5002
CLOSED_TCP = 5003  # nothing listens: connection refused
CLOSED_UDP = 5004  # nothing listens: ICMP port unreachable
SILENT_HOST = 7  # 10.x.1.7 / fdxx:1::7: nobody has it, frames sent to it are never answered
MLD_GROUP = "ff02::1:3"

# ---- the traffic agents (one per namespace; JSON commands on stdin, answers on stdout) ----

AGENT = textwrap.dedent(r"""
    import json, socket, struct, sys, threading, time
    ROLE, CFG = sys.argv[1], json.loads(sys.argv[2])
    TCP, UDP = CFG["tcp"], CFG["udp"]

    def say(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def serve(c):
        # every chunk is answered with its length; at the peer's FIN: "bye", then our FIN
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    c.sendall(b"bye")
                    break
                c.sendall(b"%d" % len(d))
        except OSError:
            pass
        c.close()

    def tcp_server(fam, host):
        ls = socket.socket(fam, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        ls.bind((host, TCP))
        ls.listen(64)
        def loop():
            while True:
                c, _ = ls.accept()
                threading.Thread(target=serve, args=(c,), daemon=True).start()
        threading.Thread(target=loop, daemon=True).start()

    def udp_server(fam, host):
        us = socket.socket(fam, socket.SOCK_DGRAM)
        us.bind((host, UDP))
        def loop():
            while True:
                d, peer = us.recvfrom(65535)
                us.sendto(b"got %d" % len(d), peer)
        threading.Thread(target=loop, daemon=True).start()

    def fam_of(host):
        return socket.AF_INET6 if ":" in host else socket.AF_INET

    conns, keep = {}, []

    def connect(host, port=TCP):
        s = socket.socket(fam_of(host), socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect((host, port))
        return s

    def talk(s, size):
        s.sendall(b"x" * size)
        return s.recv(65536)

    def finish(s):
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
        s.close()

    def do(op, a):
        if op == "open":
            s = conns[a["name"]] = connect(a["host"])
            talk(s, a.get("size", 100))
            return s.getsockname()[1]
        if op == "talk":
            talk(conns[a["name"]], a["size"])
            return None
        if op == "close":
            finish(conns.pop(a["name"]))
            return None
        if op == "short":
            s = connect(a["host"])
            port = s.getsockname()[1]
            s.sendall(b"x" * a["size"])
            finish(s)
            return port
        if op == "reset":
            s = connect(a["host"])
            port = s.getsockname()[1]
            talk(s, 100)
            time.sleep(0.1)
            # linger 0: close() sends a RST instead of a FIN
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            return port
        if op == "refused":
            s = socket.socket(fam_of(a["host"]), socket.SOCK_STREAM)
            s.bind(("", 0))
            port = s.getsockname()[1]
            try:
                s.connect((a["host"], a["port"]))
            except ConnectionRefusedError:
                pass
            s.close()
            return port
        if op == "udp":
            u = socket.socket(fam_of(a["host"]), socket.SOCK_DGRAM)
            u.settimeout(2)
            if a.get("nofrag"):
                u.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT
            u.connect((a["host"], a.get("port", UDP)))
            for size in a["sizes"]:
                u.send(b"u" * size)
                try:
                    u.recv(65535)
                except ConnectionRefusedError:
                    pass  # the ICMP port unreachable
            port = u.getsockname()[1]
            u.close()
            return port
        if op == "mld":
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            mreq = socket.inet_pton(socket.AF_INET6, a["group"]) + struct.pack(
                "@I", socket.if_nametoindex(a["ifname"]))
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            keep.append(s)
            return None
        if op == "raw":
            p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            p.bind((a["ifname"], 0))
            for frame in a["frames"]:
                p.send(bytes.fromhex(frame))
            p.close()
            return None
        raise ValueError(op)

    if ROLE == "server":
        for host in CFG["hosts"]:
            tcp_server(fam_of(host), host)
            udp_server(fam_of(host), host)
    say({"ready": True})
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            say({"ok": True, "port": do(cmd.pop("op"), cmd)})
        except Exception as e:
            say({"ok": False, "error": repr(e)})
""")


class Agent:
    """A traffic agent in a namespace: `call(op, ...)` runs one step and returns its port."""

    def __init__(self, argv_prefix: list[str], role: str, **cfg) -> None:
        cfg.update(tcp=TCP_PORT, udp=UDP_PORT)
        self.proc = subprocess.Popen([*argv_prefix, sys.executable, "-c", AGENT, role,
                                      json.dumps(cfg)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        ready = self._answer()
        assert ready.get("ready"), ready

    def _answer(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"traffic agent ended (exit {self.proc.poll()})")
        return json.loads(line)

    def call(self, op: str, **kw):
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        ans = self._answer()
        if not ans["ok"]:
            raise AssertionError(f"traffic step {op} {kw}: {ans['error']}")
        return ans["port"]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


# ---- hand-made frames ------------------------------------------------------------------------

def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_frame(smac: bytes, dmac: bytes, src: str, dst: str, sport: int, dport: int,
              flags: int, seq: int = 1000, ack: int = 0, pad_to: int = 0) -> bytes:
    """Ethernet + IPv4 + TCP (no options, no data), checksums right; `pad_to` adds Ethernet
    padding up to that frame length, as a NIC pads short frames."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0)
    tsum = _csum(s + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", tsum) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0x1234, 0x4000, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    frame = dmac + smac + b"\x08\x00" + ip + tcp
    return frame + b"\0" * max(0, pad_to - len(frame))


def mac_of(ns: str, ifname: str) -> bytes:
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "dev", ifname],
                         capture_output=True, text=True, check=True).stdout
    return bytes.fromhex(json.loads(out)[0]["address"].replace(":", ""))


# ---- the two monitors ------------------------------------------------------------------------

def _wait_for(pred, timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


class NgMonitor:
    """`iptraf-ng -i IFACE -B -L LOG` in namespace `ns`. It forks into the background (the
    daemon is found by its command line, which holds this run's own log path) and keeps its
    config and lock files in a private work directory. With `arp`, the saved filter state
    makes it show and log ARP, RARP and other non-IP frames (off by default; see the
    test-harness note of iptraf-ng-behaviour.md: the bits are in the u32 at offset 72 of the
    80-byte savedfilters.dat)."""

    def __init__(self, ns: str, iface: str, log: Path, base: Path, arp: bool = True) -> None:
        self.log = log
        work, logdir = base / "ng-work", base / "ng-logdir"
        work.mkdir(parents=True, exist_ok=True)
        logdir.mkdir(parents=True, exist_ok=True)
        if arp:
            state = bytearray(80)
            struct.pack_into("<I", state, 72, 0b111)  # arp, rarp, nonip
            (work / "savedfilters.dat").write_bytes(bytes(state))
        env = dict(os.environ, IPTRAF_WORK_PATH=str(work), IPTRAF_LOG_PATH=str(logdir))
        self.argv = [IPTRAF_NG or "iptraf-ng", "-i", iface, "-B", "-L", str(log)]
        p = subprocess.run(["ip", "netns", "exec", ns, *self.argv], env=env,
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, f"iptraf-ng did not start: {p.stdout} {p.stderr}"
        self.pid: int | None = None
        _wait_for(self._find, 10, "the iptraf-ng daemon")
        # the capture socket is opened right after the start line is written
        _wait_for(lambda: "monitor started" in _text(log), 10, "iptraf-ng's start line")
        time.sleep(0.5)

    def _find(self) -> bool:
        want = "\0".join(self.argv).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().rstrip(b"\0")
            except OSError:
                continue
            if cmd == want and alive(int(entry)):
                self.pid = int(entry)
                return True
        return False

    def signal(self, sig: int) -> None:
        if self.pid is not None and alive(self.pid):
            os.kill(self.pid, sig)

    def stop(self) -> None:
        """SIGUSR2: a clean stop (the 'stopped' line)."""
        self.signal(signal.SIGUSR2)
        _wait_for(lambda: self.pid is None or not alive(self.pid), 10, "iptraf-ng to stop")

    def kill(self) -> None:
        if self.pid is not None and alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)


class MpMonitor:
    """`iptraf-mp -i IFACE -B -L LOG -w REC --no-db` in namespace `ns` (ip netns exec execs it,
    so the pid is the monitor's own)."""

    def __init__(self, ns: str, iface: str, log: Path, rec: Path) -> None:
        self.argv = ["ip", "netns", "exec", ns, *iptraf_mp_command(), "-i", iface, "-B",
                     "-L", str(log), "-w", str(rec), "--no-db"]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self.stderr = ""

        def capturing() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"iptraf-mp ended early: {self.proc.communicate()}")
            kids = [k for k in descendants(self.pid) if alive(k)]
            # rings made and the children (resource tracker, shard, capture) running
            return bool(segments(self.pid)) and len(kids) >= 3

        _wait_for(capturing, 20, "iptraf-mp to capture")
        time.sleep(0.3)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        _, self.stderr = self.proc.communicate(timeout=40)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            kill_tree(self.proc)


# ---- reading the logs ------------------------------------------------------------------------

CTIME = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}; ")
TCP_EVENT = re.compile(r"^TCP; (?P<if>[^;]+); (?P<len>\d+) bytes; from (?P<src>\S+) to "
                       r"(?P<dst>\S+?)(?: \(source MAC addr [0-9a-f:]+\))?; (?P<ev>.*)$")
ACTIVE = re.compile(r"^TCP; (?P<if>[^;]+); active; from (?P<src>\S+) to (?P<dst>\S+); "
                    r"(?P<p>\d+) packets, (?P<b>\d+) bytes$")
FIN = re.compile(r"^FIN sent; (?P<p>\d+) packets, (?P<b>\d+) bytes, avg flow rate "
                 r"(?P<r>.+)$")
RESET = re.compile(r"^Connection reset; (?P<p>\d+) packets, (?P<b>\d+) bytes, avg flow rate "
                   r"(?P<r>.+); opposite direction (?P<p2>\d+) packets, (?P<b2>\d+) bytes; "
                   r"avg flow rate (?P<r2>.+)$")
OTHER = re.compile(r"^(?P<name>[^;]+); (?P<if>[^;]+); (?P<len>\d+) bytes;"
                   r"(?: source MAC address [0-9a-f:]+;)? from (?P<src>\S+) to (?P<dst>\S+?)"
                   r"(?:; (?P<desc>.*))?$")
NON_IP = re.compile(r"^(?P<name>[^;]+); (?P<if>[^;]+); (?P<len>\d+) bytes; from (?P<src>\S+) "
                    r"to (?P<dst>\S+) $")
MARKERS = {
    "******** IP traffic monitor started ********": "started",
    "******** IP traffic monitor stopped ********": "stopped",
    "***** USR1 signal received, preparing to reopen log file *****": "usr1",
    "***** Logfile reopened *****": "reopened",
}


@dataclass
class Ev:
    """One log line without its time: `kind` and endpoints match lines across the two
    logs; `vals` are what must then be equal."""

    kind: str  # first, fin, finack, reset, timeout, mac, active, ip, nonip, marker
    iface: str
    src: str
    dst: str
    vals: tuple
    text: str  # the message, for the report
    block: int = 0  # active lines: which SIGUSR1 they answer (1, 2, ...)

    @property
    def key(self) -> tuple:
        return (self.kind, self.iface, self.src, self.dst, self.block)

    @property
    def ident(self) -> tuple:
        return (*self.key, self.vals)


def parse_log(path: Path) -> list[Ev]:
    return parse_text(path.read_text(errors="replace"), path.name)


def parse_text(text: str, name: str = "log") -> list[Ev]:
    out: list[Ev] = []
    usr1 = 0
    for raw in text.splitlines():
        if not raw:
            continue
        m = CTIME.match(raw)
        assert m, f"{name}: no ctime prefix: {raw!r}"
        msg = raw[m.end():]
        if msg in MARKERS:
            kind = MARKERS[msg]
            if kind == "usr1":
                usr1 += 1
            out.append(Ev("marker", "", "", "", (kind,), msg, usr1 if kind != "started" else 0))
            continue
        if (a := ACTIVE.match(msg)) is not None:
            out.append(Ev("active", a["if"], a["src"], a["dst"], (int(a["p"]), int(a["b"])),
                          msg, usr1))
            continue
        if (t := TCP_EVENT.match(msg)) is not None:
            ev, size = t["ev"], int(t["len"])
            if ev.startswith("first packet"):
                e = Ev("first", t["if"], t["src"], t["dst"], (size, ev.endswith("(SYN)")), msg)
            elif ev == "FIN acknowleged":
                e = Ev("finack", t["if"], t["src"], t["dst"], (size,), msg)
            elif (f := FIN.match(ev)) is not None:
                e = Ev("fin", t["if"], t["src"], t["dst"],
                       (size, int(f["p"]), int(f["b"]), f["r"].strip()), msg)
            elif (r := RESET.match(ev)) is not None:
                e = Ev("reset", t["if"], t["src"], t["dst"],
                       (size, int(r["p"]), int(r["b"]), r["r"].strip(), int(r["p2"]),
                        int(r["b2"]), r["r2"].strip()), msg)
            else:
                e = Ev("tcp?", t["if"], t["src"], t["dst"], (size, ev), msg)
            out.append(e)
            continue
        if msg.startswith("TCP; Connection ") and " timed out, " in msg:
            out.append(Ev("timeout", "", "", "", (msg,), msg))
            continue
        if msg.startswith("TCP; ") and "new source MAC address" in msg:
            out.append(Ev("mac", "", "", "", (msg,), msg))
            continue
        if (n := NON_IP.match(msg)) is not None and ("ARP" in n["name"] or "Non-IP" in n["name"]):
            out.append(Ev("nonip", n["if"], n["src"], n["dst"], (n["name"], int(n["len"])),
                          msg))
            continue
        if (o := OTHER.match(msg)) is not None:
            out.append(Ev("ip", o["if"], o["src"], o["dst"],
                          (o["name"], int(o["len"]), o["desc"] or ""), msg))
            continue
        out.append(Ev("unparsed", "", "", "", (msg,), msg))
    return out


# ---- the run's own recording, as evidence ---------------------------------------------------

@dataclass
class Seg:
    ts: float
    flags: int
    paylen: int
    iplen: int  # Total Length, or IPv6 payload + 40 (the byte rule)
    l3len: int  # the frame minus its Ethernet header (iptraf-ng's pkt_len)


def host_port(addr: str, port: int) -> str:
    return f"{addr}:{port}"


def tcp_segments(rec: Path) -> dict[tuple[str, str], list[Seg]]:
    """(src:port, dst:port) -> the TCP segments of that direction, from the recording."""
    from iptraf_mp.capture.capfile import open_capture

    out: dict[tuple[str, str], list[Seg]] = defaultdict(list)
    with open_capture(rec) as r:
        for ts, _ifidx, data, wirelen in r:
            if len(data) < 14:
                continue
            etype = struct.unpack_from("!H", data, 12)[0]
            if etype == 0x0800 and len(data) >= 34:
                ihl = (data[14] & 15) * 4
                iplen = struct.unpack_from("!H", data, 16)[0]
                if data[23] != 6 or struct.unpack_from("!H", data, 20)[0] & 0x1FFF:
                    continue
                src = socket.inet_ntop(socket.AF_INET, data[26:30])
                dst = socket.inet_ntop(socket.AF_INET, data[30:34])
                t = 14 + ihl
            elif etype == 0x86DD and len(data) >= 54:
                if data[20] != 6:
                    continue
                iplen = struct.unpack_from("!H", data, 18)[0] + 40
                src = socket.inet_ntop(socket.AF_INET6, data[22:38])
                dst = socket.inet_ntop(socket.AF_INET6, data[38:54])
                ihl, t = 40, 54
            else:
                continue
            if len(data) < t + 14:
                continue
            sport, dport = struct.unpack_from("!HH", data, t)
            off = (data[t + 12] >> 4) * 4
            flags = data[t + 13]
            out[(host_port(src, sport), host_port(dst, dport))].append(
                Seg(ts, flags, iplen - ihl - off, iplen, wirelen - 14))
    return out


# ---- comparing -------------------------------------------------------------------------------

EQUAL = "equal"
UNEXPLAINED = "UNEXPLAINED"
SYN, ACK_, RST_, FIN_ = 0x02, 0x10, 0x04, 0x01
IPV6_EXT_NAMES = {"IP", "IPv6-Route", "IPv6-Frag", "IPv6-Opts", "IPv6-NoNxt"}
WHY = {
    "rule 2": "rule 2: a pure ACK creates no pair (iptraf-ng creates one on any non-FIN packet)",
    "rule 4": "rule 4: bytes by the byte rule; iptraf-ng counts Ethernet padding in pkt_len",
    "rule 13": "rule 13: non-IP frames are shown and logged by default (iptraf-ng hides them)",
    "rule 17": "rule 17: IPv6 extension headers walked to the real protocol (iptraf-ng names "
               "the first next-header)",
    "D1": "D1: after a RST or FIN close the pair takes stragglers; iptraf-ng starts a new `>` "
          "pair on the next non-FIN packet",
    "D3": "D3: a RST never creates a pair (iptraf-ng creates one and logs its reset)",
}


@dataclass
class Row:
    kind: str
    endpoints: str
    ng: str
    mp: str
    verdict: str


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)

    @property
    def unexplained(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == UNEXPLAINED]

    def counts(self) -> dict[str, int]:
        c: dict[str, int] = defaultdict(int)
        for r in self.rows:
            c[r.verdict.split(":")[0]] += 1
        return dict(c)


def _tail(e: Ev | None) -> str:
    if e is None:
        return "—"
    if e.kind in ("first", "fin", "finack", "reset"):
        return e.text.split("; ", 4)[-1] if e.text.count("; ") >= 4 else e.text
    if e.kind == "active":
        return e.text.split("; ")[-1]
    if e.kind == "marker":
        return e.text.strip("* ")
    return e.text


def _conn(e: Ev) -> tuple:
    return (e.iface, *sorted((e.src, e.dst)))


def _no_port(e: Ev, endpoint: str) -> str:
    """The address of a lower-window line's endpoint (UDP lines carry `:port`)."""
    if e.vals[0] == "UDP" and e.vals[2] != "fragment":
        return endpoint.rsplit(":", 1)[0]
    return endpoint


class Judge:
    """Pairs the two logs' events and explains every difference, or says it cannot."""

    def __init__(self, ng: list[Ev], mp: list[Ev], segs: dict[tuple[str, str], list[Seg]],
                 ng_shows_non_ip: bool) -> None:
        self.ng, self.mp, self.segs = ng, mp, segs
        self.ng_shows_non_ip = ng_shows_non_ip
        # connections iptraf-mp ended (RST, or both FINs acknowledged) and when in its log
        self.mp_ended: dict[tuple, int] = {}
        fins: dict[tuple, int] = defaultdict(int)
        for i, e in enumerate(mp):
            if e.kind == "reset":
                self.mp_ended.setdefault(_conn(e), i)
            elif e.kind == "finack":
                fins[_conn(e)] += 1
                if fins[_conn(e)] == 2:
                    self.mp_ended.setdefault(_conn(e), i)
        self.ng_only_pairs: dict[tuple, str] = {}  # connection -> why iptraf-mp has no pair

    def padding(self, src: str, dst: str) -> int:
        return sum(s.l3len - s.iplen for s in self.segs.get((src, dst), []))

    def compare(self) -> Comparison:
        cmp = Comparison()
        ng_left = list(self.ng)
        mp_left: list[Ev] = []
        # 1. identical events (multiset)
        pool: dict[tuple, list[Ev]] = defaultdict(list)
        for e in ng_left:
            pool[e.ident].append(e)
        equal_ng: set[int] = set()
        for e in self.mp:
            got = pool.get(e.ident)
            if got:
                twin = got.pop(0)
                equal_ng.add(id(twin))
                cmp.rows.append(Row(e.kind, self._ends(e), _tail(twin), "=", EQUAL))
            else:
                mp_left.append(e)
        ng_left = [e for e in ng_left if id(e) not in equal_ng]
        # 2. IPv6 lines behind extension headers (rule 17): same size and addresses
        for e in list(ng_left):
            if e.kind == "ip" and e.vals[0] in IPV6_EXT_NAMES and ":" in e.src:
                twin = next((m for m in mp_left if m.kind == "ip" and m.iface == e.iface
                             and m.vals[1] == e.vals[1] and _no_port(m, m.src) == e.src
                             and _no_port(m, m.dst) == e.dst), None)
                if twin is not None:
                    mp_left.remove(twin)
                    ng_left.remove(e)
                    cmp.rows.append(Row("ip", self._ends(e), e.text, twin.text,
                                        "explained by " + WHY["rule 17"]))
        # 3. the same event (kind and endpoints) with different values
        by_key: dict[tuple, list[Ev]] = defaultdict(list)
        for m in mp_left:
            by_key[m.key].append(m)
        rest_ng = []
        for e in ng_left:
            cands = by_key.get(e.key)
            if cands:
                m = cands.pop(0)
                mp_left.remove(m)
                cmp.rows.append(Row(e.kind, self._ends(e), _tail(e), _tail(m),
                                    self.explain_values(e, m)))
            else:
                rest_ng.append(e)
        # 4. events one side only
        for e in rest_ng:
            cmp.rows.append(Row(e.kind, self._ends(e), _tail(e), "—", self.explain_ng_only(e)))
        for m in mp_left:
            cmp.rows.append(Row(m.kind, self._ends(m), "—", _tail(m), self.explain_mp_only(m)))
        return cmp

    @staticmethod
    def _ends(e: Ev) -> str:
        if e.kind == "marker":
            return f"(SIGUSR1 #{e.block})" if e.block and e.vals[0] != "stopped" else ""
        s = f"{e.src} → {e.dst}" if e.src else ""
        if e.kind == "active":
            s += f" (SIGUSR1 #{e.block})"
        return s

    def explain_values(self, ng: Ev, mp: Ev) -> str:
        """Same event, other values: only Ethernet padding may make them differ."""
        pad = self.padding(ng.src, ng.dst)
        if ng.kind in ("first", "finack", "fin", "reset"):
            if ng.vals[0] != mp.vals[0] and not (ng.vals[0] > mp.vals[0] and pad > 0):
                return UNEXPLAINED
        if ng.kind == "first" and ng.vals[1] != mp.vals[1]:
            return UNEXPLAINED
        if ng.kind in ("fin", "reset", "active"):
            i = 1 if ng.kind != "active" else 0
            if ng.vals[i] != mp.vals[i]:
                return UNEXPLAINED  # packet counts never differ
            extra = ng.vals[i + 1] - mp.vals[i + 1]
            if extra and not 0 < extra <= pad:
                return UNEXPLAINED
            if ng.kind == "reset":
                opad = self.padding(ng.dst, ng.src)
                extra2 = ng.vals[5] - mp.vals[5]
                if ng.vals[4] != mp.vals[4] or (extra2 and not 0 < extra2 <= opad):
                    return UNEXPLAINED
                if ng.vals[6] != mp.vals[6] and not extra2:
                    return UNEXPLAINED
            if ng.kind in ("fin", "reset") and ng.vals[3] != mp.vals[3] and not extra:
                return UNEXPLAINED  # the rate may only differ through the bytes
        elif ng.kind in ("ip", "nonip"):
            return UNEXPLAINED
        if ng.vals == mp.vals:
            return EQUAL
        return "explained by " + WHY["rule 4"] + f" ({pad} bytes of padding on that direction)"

    def explain_ng_only(self, e: Ev) -> str:
        conn = _conn(e)
        if e.kind in ("first", "fin", "finack", "reset", "active"):
            if conn in self.ng_only_pairs:
                return "explained by " + self.ng_only_pairs[conn]
            end = self.mp_ended.get(conn)
            if end is not None and e.kind != "active":
                why = WHY["D1"]
                self.ng_only_pairs[conn] = why
                return "explained by " + why
            if e.kind == "first" and not e.vals[1]:
                segs = self.segs.get((e.src, e.dst), [])
                if segs and not segs[0].flags & SYN and segs[0].paylen == 0 \
                        and segs[0].flags & (RST_ | FIN_) == 0:
                    self.ng_only_pairs[conn] = WHY["rule 2"]
                    return "explained by " + WHY["rule 2"]
            if e.kind == "reset":
                segs = self.segs.get((e.src, e.dst), [])
                if segs and all(s.flags & RST_ for s in segs) and \
                        not self.segs.get((e.dst, e.src)):
                    return "explained by " + WHY["D3"]
        return UNEXPLAINED

    def explain_mp_only(self, m: Ev) -> str:
        if m.kind == "nonip" and not self.ng_shows_non_ip:
            return "explained by " + WHY["rule 13"]
        return UNEXPLAINED


def render(cmp: Comparison, meta: dict) -> str:
    counts = cmp.counts()
    lines = ["# iptraf-mp side by side with iptraf-ng", ""]
    for k, v in meta.items():
        lines.append(f"- {k}: {v}")
    lines += ["", "Totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), "",
              "| # | event | endpoints | iptraf-ng | iptraf-mp | verdict |",
              "|---|---|---|---|---|---|"]

    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    order = {"marker": 0}
    for i, r in enumerate(sorted(cmp.rows, key=lambda r: (r.verdict == EQUAL,
                                                            order.get(r.kind, 1)))):
        lines.append(f"| {i + 1} | {r.kind} | {cell(r.endpoints)} | {cell(r.ng)} | "
                     f"{cell(r.mp)} | {cell(r.verdict)} |")
    return "\n".join(lines) + "\n"


# ---- the run -----------------------------------------------------------------------------------

def mid_second() -> None:
    """Wait until the wall clock is in the middle of a second. The average rate of a FIN or
    reset line divides by whole seconds since the pair's first packet: iptraf-ng reads
    time(NULL) when it handles the packet (up to a TPACKET_V3 block timeout, 20 ms, late),
    iptraf-mp uses the packet's time stamp. Connections that live longer than a second start
    and end mid-second, so the two clocks always name the same seconds."""
    frac = time.time() % 1.0
    time.sleep((1.4 - frac) % 1.0)


def run_traffic(net: NetPair, v: Veth, client: Agent) -> dict:
    """Everything after the monitors started, up to SIGUSR1 (phase 1)."""
    assert v.b6 is not None
    made: dict = {}
    amac, bmac = mac_of(net.ns_a, v.a_if), mac_of(net.ns_b, v.b_if)
    silent = v.b4.rsplit(".", 1)[0] + f".{SILENT_HOST}"
    # forget B's MAC, so the next packet to it asks again: an ARP request and reply
    net.run_a("ip", "neigh", "flush", "dev", v.a_if)
    mid_second()
    client.call("talk", name="early", size=200)  # its pair starts here, without a SYN
    made["long"] = client.call("open", name="long", host=v.b4, size=300)
    made["fin"] = [client.call("short", host=v.b4, size=n) for n in (1000, 20000, 300000)]
    made["fin6"] = client.call("short", host=v.b6, size=5000)
    made["rst"] = client.call("reset", host=v.b4)
    made["refused"] = client.call("refused", host=v.b4, port=CLOSED_TCP)
    made["udp"] = client.call("udp", host=v.b4, sizes=[10, 200, 1000])
    made["udp6"] = client.call("udp", host=v.b6, sizes=[30, 300])
    made["udp_closed"] = client.call("udp", host=v.b4, port=CLOSED_UDP, sizes=[20])
    made["frag"] = client.call("udp", host=v.b4, sizes=[3000], nofrag=True)
    net.run_a("ping", "-c", "2", "-i", "0.2", "-W", "1", v.b4)
    net.run_a("ping", "-c", "1", "-W", "1", v.b6)
    client.call("mld", group=MLD_GROUP, ifname=v.a_if)
    frames = [
        # a SYN nobody answers, padded to the 60-byte Ethernet minimum (rule 4); its pair
        # stays half-open (S---) through SIGUSR1
        tcp_frame(amac, bmac, v.a4, silent, 40001, 7, SYN, pad_to=60),
        # a lone pure ACK (rule 2)
        tcp_frame(amac, bmac, v.a4, silent, 40002, 7, ACK_, seq=5000, ack=6000),
        # a straggler after the RST: a pure ACK on the reset connection's ports; the server
        # answers it with a RST of its own (D1)
        tcp_frame(amac, bmac, v.a4, v.b4, made["rst"], TCP_PORT, ACK_, seq=777, ack=888),
        # a frame of a local experimental EtherType: non-IP, 46 bytes after the header
        bmac + amac + b"\x88\xb5" + bytes(range(46)),
    ]
    client.call("raw", ifname=v.a_if, frames=[f.hex() for f in frames])
    return made


@pytest.mark.parametrize("ng_non_ip", [True, False], ids=["ng-shows-non-ip", "ng-default"])
@LIVE[0]
@LIVE[1]
@LIVE[2]
def test_side_by_side_with_iptraf_ng(ng_non_ip: bool, tmp_path: Path, capsys) -> None:
    """`ng_non_ip`: iptraf-ng's saved ARP/RARP/non-IP filter bits on, so its non-IP lines are
    compared too; off (its default), they are iptraf-mp's alone (rule 13)."""
    ng_log, mp_log = tmp_path / "iptraf-ng.log", tmp_path / "iptraf-mp.log"
    rec = tmp_path / "iptraf-mp.pcapng"
    t0 = time.monotonic()
    with netns_pair("sbs") as net:
        v = net.add_veth(ipv6=True)
        server = client = ng = mp = None
        try:
            server = Agent(net.in_b(), "server", hosts=[v.b4, v.b6])
            client = Agent(net.in_a(), "client")
            # the `>` case: open and used before the monitors start
            early = client.call("open", name="early", host=v.b4, size=100)
            time.sleep(1.0)  # and IPv6's start-up chatter is over
            ng = NgMonitor(net.ns_a, v.a_if, ng_log, tmp_path, arp=ng_non_ip)
            mp = MpMonitor(net.ns_a, v.a_if, mp_log, rec)
            made = {"early": early, **run_traffic(net, v, client)}
            time.sleep(1.2)  # quiet: delayed ACKs, the MLD report's repeat
            ng.signal(signal.SIGUSR1)
            os.kill(mp.pid, signal.SIGUSR1)
            _wait_for(lambda: "Logfile reopened" in _text(ng_log)
                      and "Logfile reopened" in _text(mp_log), 10, "both to reopen their logs")
            # phase 2: after the reopen
            client.call("talk", name="long", size=400)
            client.call("talk", name="early", size=500)
            made["fin_after"] = client.call("short", host=v.b4, size=700)
            mid_second()
            client.call("close", name="long")
            client.call("close", name="early")
            time.sleep(1.0)
            ng.stop()
            rc = mp.stop()
            assert rc == 0, mp.stderr
        finally:
            for obj in (ng, mp, client, server):
                if obj is not None:
                    obj.kill() if isinstance(obj, NgMonitor | MpMonitor) else obj.close()
    elapsed = time.monotonic() - t0

    ng_ev, mp_ev = parse_log(ng_log), parse_log(mp_log)
    judge = Judge(ng_ev, mp_ev, tcp_segments(rec), ng_shows_non_ip=ng_non_ip)
    cmp = judge.compare()
    name = f"side_by_side-{'ng-shows-non-ip' if ng_non_ip else 'ng-default'}.md"
    report = Path(os.environ.get("IPTRAF_MP_SBS_DIR") or tmp_path) / name
    meta = {
        "iptraf-ng": subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "iptraf-ng"],
                                    capture_output=True, text=True).stdout or "?",
        "interface": f"{v.a_if} (veth, namespace {net.ns_a})",
        "iptraf-ng ARP/RARP/non-IP filter bits": "on: its non-IP lines are compared too"
        if ng_non_ip else "off (its default): non-IP lines are iptraf-mp's alone",
        "logs": f"{ng_log}, {mp_log}; recording {rec}",
        "client ports": json.dumps(made),
        "run": f"{elapsed:.1f} s",
    }
    report.write_text(render(cmp, meta))
    with capsys.disabled():
        print(f"\nside-by-side report: {report}")
    assert not [e for e in ng_ev + mp_ev if e.kind in ("unparsed", "tcp?")], \
        f"lines the harness cannot read; see {report}"
    bad = cmp.unexplained
    assert not bad, f"{len(bad)} UNEXPLAINED differences; see {report}:\n" + "\n".join(
        f"  {r.kind} {r.endpoints}: iptraf-ng {r.ng!r} / iptraf-mp {r.mp!r}" for r in bad)
    # The mix really happened, and both logged it the same.
    def same(kind: str) -> set[str]:
        return {r.endpoints for r in cmp.rows if r.kind == kind and r.verdict == EQUAL}

    def both_logged(kind: str) -> set[str]:
        """Logged by both, equal or with an explained difference."""
        return {r.endpoints for r in cmp.rows if r.kind == kind and r.ng != "—"
                and r.mp != "—" and r.verdict != UNEXPLAINED}

    def rows_of(port: int) -> str:
        return "\n".join(f"  {r.kind} {r.endpoints}: iptraf-ng {r.ng!r} / iptraf-mp "
                         f"{r.mp!r}: {r.verdict}" for r in cmp.rows if f":{port} " in
                         f"{r.endpoints} ")

    a, b = v.a4, v.b4
    closes = [*made["fin"], made["fin_after"], made["long"], made["early"]]
    for port in closes:
        there, back = f"{a}:{port} → {b}:{TCP_PORT}", f"{b}:{TCP_PORT} → {a}:{port}"
        assert {there, back} <= same("fin"), f"port {port}:\n{rows_of(port)}"
    # "FIN acknowledged" follows iptraf-ng's rule (the peer's sequence number equals the
    # FIN's acknowledgement number): when the server's FIN crosses the client's, the client's
    # final ACK does not match it and neither monitor logs it (two CI runs saw this; the rows
    # showed both logs agreeing). Agreement is what the UNEXPLAINED check above holds them
    # to; here: the acknowledgements did happen, in both directions, in both logs.
    acked = both_logged("finack")
    assert any(f"{a}:{p} → {b}:{TCP_PORT}" in acked for p in closes), \
        "\n".join(rows_of(p) for p in closes)
    assert any(f"{b}:{TCP_PORT} → {a}:{p}" in acked for p in closes), \
        "\n".join(rows_of(p) for p in closes)
    assert f"{v.a6}:{made['fin6']} → {v.b6}:{TCP_PORT}" in same("fin")
    assert f"{a}:{made['rst']} → {b}:{TCP_PORT}" in same("reset")
    assert f"{b}:{CLOSED_TCP} → {a}:{made['refused']}" in same("reset")
    for port in (made["long"], made["early"]):
        assert f"{a}:{port} → {b}:{TCP_PORT} (SIGUSR1 #1)" in same("active")
        assert f"{b}:{TCP_PORT} → {a}:{port} (SIGUSR1 #1)" in same("active")
    texts = {r.ng for r in cmp.rows if r.verdict == EQUAL}
    assert any(t.startswith("ICMP;") and t.endswith("dest unrch (port)") for t in texts)
    assert any(t.startswith("UDP;") and t.endswith("; fragment") for t in texts)
    non_ip = [r.ng if r.mp == "=" else r.mp for r in cmp.rows if r.kind == "nonip"]
    assert any(t.startswith("ARP request for ") for t in non_ip)
    assert any(t.startswith("Non-IP (0x88b5)") for t in non_ip)
    why = {r.verdict.split(":")[0] for r in cmp.rows}
    rules = ["rule 2", "rule 4", "rule 17", "D1"] + ([] if ng_non_ip else ["rule 13"])
    assert {f"explained by {k}" for k in rules} <= why
    if ng_non_ip:
        assert all(r.verdict == EQUAL for r in cmp.rows if r.kind == "nonip")


# ---- the judge and the log's rate, without root -------------------------------------------

T = "Thu Nov 26 03:19:39 2026; "


def judged(ng: list[str], mp: list[str], segs=None, ng_non_ip: bool = True) -> list[str]:
    cmp = Judge(parse_text("".join(T + x + "\n" for x in ng)),
                parse_text("".join(T + x + "\n" for x in mp)), segs or {}, ng_non_ip).compare()
    return [r.verdict.split(":")[0] for r in cmp.rows]


def test_judge_explains_only_what_a_rule_explains() -> None:
    fin = ("TCP; v1; 52 bytes; from 10.0.0.1:4000 to 10.0.0.2:80; FIN sent; 5 packets, "
           "{} bytes, avg flow rate {}")
    ng = fin.format(1268, "    10.14 kbps")
    assert judged([ng], [ng]) == [EQUAL]
    # six bytes more, no padding in the recording: unexplained; with it: rule 4
    mp = fin.format(1262, "    10.09 kbps")
    assert judged([ng], [mp]) == [UNEXPLAINED]
    padded = {("10.0.0.1:4000", "10.0.0.2:80"): [Seg(1.0, SYN, 0, 40, 46)]}
    assert judged([ng], [mp], padded) == ["explained by rule 4"]
    # the same bytes and another rate: unexplained (a clock difference is no rule)
    assert judged([ng], [fin.format(1268, "    10.13 kbps")]) == [UNEXPLAINED]
    # iptraf-ng alone made a pair on a pure ACK: rule 2, and only if the recording says so
    first = "TCP; v1; 40 bytes; from 10.0.0.1:4001 to 10.0.0.2:80; first packet"
    ack = {("10.0.0.1:4001", "10.0.0.2:80"): [Seg(1.0, ACK_, 0, 40, 40)]}
    data = {("10.0.0.1:4001", "10.0.0.2:80"): [Seg(1.0, ACK_, 10, 50, 50)]}
    assert judged([first], [], ack) == ["explained by rule 2"]
    assert judged([first], [], data) == [UNEXPLAINED]
    # ... or on a straggler after the connection ended in iptraf-mp's log too: D1
    rst = ("TCP; v1; 40 bytes; from 10.0.0.1:4001 to 10.0.0.2:80; Connection reset; 1 packets, "
           "60 bytes, avg flow rate      0.48 kbps; opposite direction 0 packets, 0 bytes; avg "
           "flow rate      0.00 kbps")
    assert judged([rst, first], [rst], data) == [EQUAL, "explained by D1"]
    # a line iptraf-mp alone wrote
    udp = "UDP; v1; 38 bytes; from 10.0.0.1:5000 to 10.0.0.2:53"
    assert judged([], [udp]) == [UNEXPLAINED]
    arp = "ARP request for 10.0.0.2; v1; 28 bytes; from 02:00:00:00:00:01 to ff:ff:ff:ff:ff:ff "
    assert judged([], [arp], ng_non_ip=False) == ["explained by rule 13"]
    assert judged([], [arp], ng_non_ip=True) == [UNEXPLAINED]
    # IPv6 behind an extension header: same size and addresses, iptraf-ng names the header
    assert judged(["IP; v1; 76 bytes; from fe80::1 to ff02::16"],
                  ["ICMPv6; v1; 76 bytes; from fe80::1 to ff02::16; bad/unkn"]) == [
        "explained by rule 17"]
    # an active direction iptraf-ng lists and iptraf-mp does not
    usr1 = ["***** USR1 signal received, preparing to reopen log file *****",
            "TCP; v1; active; from 10.0.0.1:4002 to 10.0.0.2:80; 1 packets, 60 bytes",
            "TCP; v1; active; from 10.0.0.2:80 to 10.0.0.1:4002; 0 packets, 0 bytes",
            "***** Logfile reopened *****"]
    assert sorted(judged(usr1, [usr1[0], usr1[1], usr1[3]])) == [UNEXPLAINED] + [EQUAL] * 3


def test_log_rate_counts_whole_seconds_as_iptraf_ng() -> None:
    """iptraf-ng divides the bytes by whole seconds of time(NULL) since the pair began, with
    an integer division: 1000 bytes from x.7 to (x+1).9 is 1000 B/s, from x.9 to (x+2).1
    500 B/s (iptraf-mp used 1.2 s for both)."""
    from iptraf_mp.core.lines import LineOptions, tcp_event_log
    from iptraf_mp.core.tcptable import TcpEvent

    def rate(first: float, now: float, nbytes: int = 1000) -> str:
        ev = TcpEvent("fin", now, "v1", bytes([10, 0, 0, 1]), 4000, bytes([10, 0, 0, 2]), 80,
                      52, False, 5, nbytes, now - first)
        return tcp_event_log(ev, LineOptions()).rsplit("avg flow rate ", 1)[1]

    t = 1_700_000_000.0
    assert rate(t + 0.7, t + 1.9) == "     8.00 kbps"
    assert rate(t + 0.9, t + 2.1) == "     4.00 kbps"
    assert rate(t + 0.1, t + 0.8) == "     8.00 kbps"  # under a second counts as one
    assert rate(t + 0.5, t + 3.5, 1001) == "     2.66 kbps"  # 1001 // 3 = 333 B/s
