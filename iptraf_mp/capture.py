"""Live capture set-up: which interfaces, opening them, and dropping privileges (-Z).

Everything that can be wrong with the operator's request is found here, before any process
starts, and reported as one line.
"""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

SYS_NET = Path("/sys/class/net")
IFF_UP = 0x1


class CaptureSetupError(Exception):
    """A one-line reason why capture cannot start."""


def interface_names(spec: list[str]) -> list[str]:
    """-i values (repeatable, comma-separated, or 'all') to interface names, in order."""
    names: list[str] = []
    for item in spec:
        for name in item.split(","):
            name = name.strip()
            if not name:
                continue
            if name == "all":
                names.extend(n for n in up_interfaces() if n not in names)
            elif name not in names:
                names.append(name)
    if not names:
        raise CaptureSetupError("no interface is up")
    return names


def up_interfaces() -> list[str]:
    """Every interface that is up; not the 'any' pseudo-device (it is not one)."""
    out = []
    for p in sorted(SYS_NET.iterdir()):
        try:
            if int((p / "flags").read_text(), 16) & IFF_UP:
                out.append(p.name)
        except (OSError, ValueError):
            continue
    return out


def check_interface(name: str) -> None:
    p = SYS_NET / name
    if name == "any":
        raise CaptureSetupError("'any' is not an interface: use -i all")
    if not p.exists():
        raise CaptureSetupError(f"{name}: no such interface")
    try:
        up = int((p / "flags").read_text(), 16) & IFF_UP
    except (OSError, ValueError):
        up = True
    if not up:
        raise CaptureSetupError(f"{name}: interface is down")


def open_handles(names: list[str], promisc: bool, buffer_bytes: int) -> list:
    """Open every capture handle (needs root or CAP_NET_RAW); all or none."""
    from shards.reader import open_live

    for name in names:
        check_interface(name)
    handles = []
    try:
        for name in names:
            try:
                handles.append(open_live(name, promisc, buffer_bytes))
            except OSError as e:
                msg = str(e)
                if "ermission" in msg or "not permitted" in msg:
                    raise CaptureSetupError(
                        f"{name}: no permission to capture (run as root or give the "
                        f"interpreter CAP_NET_RAW)") from None
                raise CaptureSetupError(f"{name}: cannot capture: {msg}") from None
    except BaseException:
        for h in handles:
            h.close()
        raise
    return handles


def drop_privileges(user: str) -> None:
    """-Z USER, as tcpdump: after the handles are open, become USER (and its groups)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise CaptureSetupError(f"-Z {user}: no such user") from None
    if os.geteuid() != 0:
        if os.geteuid() == pw.pw_uid:
            return
        raise CaptureSetupError(f"-Z {user}: only root can change user")
    groups = [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]
    _before_drop()
    os.setgroups(sorted(set(groups + [pw.pw_gid])))
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    if os.getuid() != pw.pw_uid or os.geteuid() != pw.pw_uid:
        raise CaptureSetupError(f"-Z {user}: could not drop privileges")


def _before_drop() -> None:
    """What the run would otherwise import or start lazily, done while still root: USER may
    not be able to read the interpreter's files (a venv under a home of mode 700), and the
    resource tracker, which removes the rings if we are killed, is a fresh exec of it."""
    import multiprocessing.popen_fork  # noqa: F401  (Process.start imports it)
    from multiprocessing import resource_tracker

    import iptraf_mp.decode_dpkt  # noqa: F401  (the decoder's slow path imports it late)

    resource_tracker.ensure_running()
