"""A fresh Debian machine passes `make test`: every program that the tests, `make run` and
`make bench` execute is installed by the Makefile (a test that execs a program nobody
installs fails on a clean machine, as `ping` once did)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# program -> the Debian package that holds it
PROGRAMS = {
    "ping": "iputils-ping", "ip": "iproute2", "tcpreplay": "tcpreplay", "tshark": "tshark",
    "capinfos": "wireshark-common", "editcap": "wireshark-common", "nfcapd": "nfdump",
    "nfdump": "nfdump", "iptraf-ng": "iptraf-ng", "tmux": "tmux", "valgrind": "valgrind",
    "tcpdump": "tcpdump", "sqlite3": "sqlite3", "setpriv": "util-linux",
    "taskset": "util-linux", "mount": "mount", "umount": "mount", "pgrep": "procps",
    "pkill": "procps", "ps": "procps", "sysctl": "procps", "timeout": "coreutils",
    "true": "coreutils", "dpkg-query": "dpkg", "gcc": "build-essential",
    "chromium": "chromium",
}
# argv[0] of a command the tests or benchmarks build as a list literal
_EXEC = re.compile(r"(?:subprocess\.(?:run|Popen|check_output|call|check_call)|\bsh|\brun)"
                   r'\(\s*\[?\s*"([a-z0-9_][a-z0-9_-]*)"[,\]]')


def apt_packages() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    m = re.search(r"^APT_PACKAGES :=((?:.*\\\n)*.*)$", text, re.M)
    assert m, "the Makefile has no APT_PACKAGES list"
    return set(m.group(1).replace("\\\n", " ").split())


def executed_programs() -> set[str]:
    found = set()
    for folder in ("tests", "bench", "fixtures"):
        for path in (ROOT / folder).rglob("*.py"):
            found.update(_EXEC.findall(path.read_text()))
    # tmux subcommands and helper names are not programs
    return found - {"capture-pane", "display-message", "new-session", "send-keys"}


def test_every_executed_program_is_known():
    unknown = executed_programs() - set(PROGRAMS) - {"iptraf-mp"}
    assert not unknown, f"executed, not in PROGRAMS (so maybe never installed): {unknown}"


def test_the_makefile_installs_every_program_s_package():
    missing = {prog: pkg for prog, pkg in PROGRAMS.items()
               if pkg not in apt_packages() | {"dpkg"}}
    assert not missing, f"the Makefile does not install: {missing}"


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="only CI's machine is known to have "
                    "run `make deps` (a developer's may not have)")
def test_every_program_is_on_the_path_after_make_deps():
    absent = [p for p in PROGRAMS if shutil.which(p) is None]
    assert not absent, f"installed by the Makefile but not found: {absent}"
