"""Network namespaces for tests that make real traffic: two namespaces joined by veth pairs.

Every packet a test sends stays inside namespaces it created here; they are removed when the
`netns_pair` block ends, also on failure or ^C (deleting a namespace deletes the veth ends in
it, and with them the pairs). Namespace names carry a tag and the pid of the process that made
them, so a run killed before its clean-up is tidied by the next one with the same tag, and
namespaces of other tests (other tags) or of live processes are never touched.

    with netns_pair("sbs") as net:
        v = net.add_veth(ipv6=True)
        net.run_a("ping", "-c", "1", v.b4)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def why_not() -> str | None:
    """The reason namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root: creates network namespaces and captures"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return None


def sh(*argv: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def remove_stale(tag: str) -> None:
    """Namespaces `ipt<tag><pid>a|b` whose creating process is gone."""
    pat = re.compile(rf"^ipt{re.escape(tag)}(\d+)[ab]$")
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = pat.match(name)
        if m and not _alive(int(m.group(1))):
            sh("ip", "netns", "del", name, check=False)


@dataclass
class Veth:
    """One veth pair: `a_if` in namespace A, `b_if` in namespace B, with their addresses."""

    a_if: str
    b_if: str
    a4: str
    b4: str
    a6: str | None = None
    b6: str | None = None


@dataclass
class NetPair:
    ns_a: str
    ns_b: str
    tag: str
    veths: list[Veth] = field(default_factory=list)

    def in_a(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns_a, *argv]

    def in_b(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns_b, *argv]

    def run_a(self, *argv: str, check: bool = True, timeout: float = 30.0):
        return sh(*self.in_a(*argv), check=check, timeout=timeout)

    def run_b(self, *argv: str, check: bool = True, timeout: float = 30.0):
        return sh(*self.in_b(*argv), check=check, timeout=timeout)

    def add_veth(self, ipv6: bool = False, mtu: int | None = None) -> Veth:
        """A new veth pair between A and B, up, with 10.2xx.N.1/24 (A) and .2 (B), and with
        `ipv6`, fd2x:N::1/64 and ::2 (no duplicate address detection, so usable at once)."""
        n = len(self.veths) + 1
        pid = os.getpid() % 100000
        v = Veth(f"{self.tag[:3]}{pid}a{n}", f"{self.tag[:3]}{pid}b{n}",
                 f"10.{self._net}.{n}.1", f"10.{self._net}.{n}.2")
        sh("ip", "link", "add", v.a_if, "netns", self.ns_a, "type", "veth", "peer", "name",
           v.b_if, "netns", self.ns_b)
        for ns, ifname, addr in ((self.ns_a, v.a_if, v.a4), (self.ns_b, v.b_if, v.b4)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
            if mtu is not None:
                sh("ip", "-n", ns, "link", "set", ifname, "mtu", str(mtu))
        for ns, ifname in ((self.ns_a, v.a_if), (self.ns_b, v.b_if)):
            # Quiet links: neighbour entries stay reachable for the whole test (no re-probes
            # at random moments), and IPv6 brought up without router solicitations or
            # duplicate address detection, its MLD reports repeated at once.
            sysctls = [f"net.ipv4.neigh.{ifname}.base_reachable_time_ms=600000"]
            if ipv6:
                sysctls += [f"net.ipv6.neigh.{ifname}.base_reachable_time_ms=600000",
                            f"net.ipv6.conf.{ifname}.router_solicitations=0",
                            f"net.ipv6.conf.{ifname}.accept_dad=0",
                            f"net.ipv6.conf.{ifname}.mldv1_unsolicited_report_interval=1",
                            f"net.ipv6.conf.{ifname}.mldv2_unsolicited_report_interval=1",
                            f"net.ipv6.conf.{ifname}.disable_ipv6=0"]
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", *sysctls)
        if ipv6:
            v.a6, v.b6 = f"fd{self._net:02x}:{n}::1", f"fd{self._net:02x}:{n}::2"
            for ns, ifname, addr in ((self.ns_a, v.a_if, v.a6), (self.ns_b, v.b_if, v.b6)):
                sh("ip", "-n", ns, "addr", "add", f"{addr}/64", "dev", ifname, "nodad")
        for ns, ifname in ((self.ns_a, v.a_if), (self.ns_b, v.b_if)):
            sh("ip", "-n", ns, "link", "set", ifname, "up")
        self.veths.append(v)
        return v

    @property
    def _net(self) -> int:
        # a second octet per tag, so that two tests' namespaces never share a subnet
        return 200 + sum(self.tag.encode()) % 50


@contextmanager
def netns_pair(tag: str) -> Iterator[NetPair]:
    """Two fresh namespaces, `ipt<tag><pid>a` and `...b`, each with lo up and IPv6 off (it
    is turned on per veth by `add_veth(ipv6=True)`, so that no other interface adds router
    or multicast chatter). Removed when the block ends, whatever happens in it."""
    reason = why_not()
    if reason:
        raise RuntimeError(reason)
    remove_stale(tag)
    pid = os.getpid()
    net = NetPair(f"ipt{tag}{pid}a", f"ipt{tag}{pid}b", tag)
    try:
        for ns in (net.ns_a, net.ns_b):
            sh("ip", "netns", "add", ns)
            # new interfaces start with IPv6 off; add_veth turns it on where it is wanted
            for key in ("all", "default"):
                sh("ip", "netns", "exec", ns, "sysctl", "-qw",
                   f"net.ipv6.conf.{key}.disable_ipv6=1")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield net
    finally:
        for ns in (net.ns_a, net.ns_b):
            sh("ip", "netns", "del", ns, check=False)
