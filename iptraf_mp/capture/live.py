"""Live capture set-up: which interfaces, opening them, and dropping privileges (-Z).

Everything that can be wrong with the operator's request is found here, before any process
starts, and reported as one line.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def open_live(name: str, promisc: bool, buffer_bytes: int):
    """A pypcap handle set up as performance-notes.md says: buffered (not immediate), 50 ms
    timeout, a large kernel buffer, non-blocking reads woken by select."""
    import pcap

    # Integer nanoseconds (run_live_reader rounds them to the microsecond)
    pc = pcap.pcap(name=name, snaplen=262144, promisc=promisc, timeout_ms=50, immediate=False,
                   buffer_size=buffer_bytes, timestamp_in_ns=True)
    pc.setnonblock(True)
    return pc


@dataclass(frozen=True, slots=True)
class LiveHandle:
    """One open capture handle and the interface it reads (several handles share an
    interface with --capture-procs: the kernel spreads its packets over them)."""

    iface: str
    handle: Any


# linux/if_packet.h: a packet socket option, its fan-out modes and flags
SOL_PACKET = 263
PACKET_FANOUT = 18
PACKET_FANOUT_HASH = 0  # by the kernel's flow hash, symmetric: both directions alike
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000  # the kernel picks a group id no one else uses
# A BPF program that accepts no packet: while a handle joins its interface's group
REJECT_ALL = "less 1"


def open_handles(names: list[str], promisc: bool, buffer_bytes: int,
                 per_iface: int = 1) -> list[LiveHandle]:
    """Open every capture handle (needs root or CAP_NET_RAW), `per_iface` on each interface,
    joined in one PACKET_FANOUT group per interface when more than one; all or none."""
    for name in names:
        check_interface(name)
    handles: list[LiveHandle] = []
    try:
        for name in names:
            group = [LiveHandle(name, _open(name, promisc, buffer_bytes))
                     for _k in range(per_iface)]
            handles.extend(group)
            if per_iface > 1:
                _fan_out(name, [h.handle for h in group])
    except BaseException:
        for h in handles:
            h.handle.close()
        raise
    return handles


def _open(name: str, promisc: bool, buffer_bytes: int) -> Any:
    try:
        return open_live(name, promisc, buffer_bytes)
    except OSError as e:
        msg = str(e)
        if "ermission" in msg or "not permitted" in msg:
            raise CaptureSetupError(
                f"{name}: no permission to capture (run as root or give the "
                f"interpreter CAP_NET_RAW)") from None
        raise CaptureSetupError(f"{name}: cannot capture: {msg}") from None


def _fan_out(name: str, handles: list[Any]) -> None:
    """Join `handles` (all open on `name`) in one fan-out group: each packet then reaches
    one of them, chosen by the symmetric flow hash, so both directions of a connection are
    read by the same capture process, in order.

    Until a socket joins, it receives every packet of the interface, as the group does: so
    each first rejects everything (libpcap also drops what it had queued), joins, and then
    accepts again. A packet that the kernel hands to a socket still rejecting in the last
    step (a millisecond at start-up) is not seen: the start is a little blurred, but nothing
    is counted twice."""
    try:
        for h in handles:
            h.setfilter(REJECT_ALL)
        group_id = 0
        for k, h in enumerate(handles):
            with socket.socket(fileno=os.dup(h.fileno())) as sock:
                if k == 0:
                    sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack(
                        "=I", (PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_UNIQUEID) << 16))
                    group_id = struct.unpack("=I", sock.getsockopt(
                        SOL_PACKET, PACKET_FANOUT, 4))[0] & 0xFFFF
                else:
                    sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack(
                        "=I", group_id | PACKET_FANOUT_HASH << 16))
        for h in handles:
            h.setfilter("")
    except OSError as e:
        raise CaptureSetupError(f"{name}: cannot spread the capture over {len(handles)} "
                                f"processes (PACKET_FANOUT): {e.strerror or e}") from None


def default_capture_procs(interfaces: int, cores: int | None = None) -> int:
    """Capture processes per interface when --capture-procs does not say: a third of the
    cores for reading (a packet costs a capture process about half what it costs a shard:
    bench_pipeline.py), shared by the interfaces; at least one, at most four."""
    cores = cores or os.cpu_count() or 1
    return max(1, min(4, cores // (3 * max(1, interfaces))))


PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38


def user_of(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise CaptureSetupError(f"-Z {user}: no such user") from None


def drop_privileges(user: str, store: bool = False) -> None:
    """-Z USER, as tcpdump: after the handles are open, become USER (and its groups), with
    no capability left, none that can come back (the bounding set emptied) and no way to
    gain privileges again (no_new_privs: setuid programs and file capabilities are inert).
    `store`: the flow store will be opened after this (its migrations import sqlite_utils,
    which USER may be unable to read)."""
    pw = user_of(user)
    if os.geteuid() != 0:
        if os.geteuid() == pw.pw_uid:
            return
        raise CaptureSetupError(f"-Z {user}: only root can change user")
    groups = [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]
    _before_drop(store)
    import ctypes  # (here, before the drop: only -Z needs it)

    libc = ctypes.CDLL(None, use_errno=True)
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:
            raise CaptureSetupError(f"-Z {user}: cannot drop capability {cap} from the "
                                    f"bounding set: {os.strerror(ctypes.get_errno())}")
    os.setgroups(sorted(set(groups + [pw.pw_gid])))
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise CaptureSetupError(f"-Z {user}: cannot set no_new_privs: "
                                f"{os.strerror(ctypes.get_errno())}")
    if os.getuid() != pw.pw_uid or os.geteuid() != pw.pw_uid or _capabilities() != 0:
        raise CaptureSetupError(f"-Z {user}: could not drop privileges")


def _capabilities() -> int:
    """The effective and permitted capabilities of this process, or'ed (0: none)."""
    caps = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("CapEff:", "CapPrm:")):
            caps |= int(line.split()[1], 16)
    return caps


def check_paths_as(user: str, paths: list[tuple[str, Path]]) -> None:
    """-Z: what USER will have to write after the drop (the flow store; the log, reopened
    on SIGUSR1), checked before anything starts, in a child that becomes USER: a run must
    not fail on a path it can never write, after it has begun capturing."""
    pw = user_of(user)
    if os.geteuid() == pw.pw_uid or not paths:
        return
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and exits
        msg = b""
        try:
            os.close(r)
            os.setgroups([g.gr_gid for g in grp.getgrall() if user in g.gr_mem] + [pw.pw_gid])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            for what, path in paths:
                bad = _unwritable(path)
                if bad is not None:
                    msg = f"-Z {user}: {what} {path}: {bad} for {user}".encode()
                    break
        except OSError as e:
            msg = f"-Z {user}: cannot check the paths: {e.strerror}".encode()
        finally:
            os.write(w, msg)
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        msg = fh.read().decode("utf-8", "replace")
    os.waitpid(pid, 0)
    if msg:
        raise CaptureSetupError(msg)


def _unwritable(path: Path) -> str | None:
    """Why this process could not write `path` (creating it and its folders if need be)."""
    try:
        os.stat(path)
        return None if os.access(path, os.R_OK | os.W_OK) else "not writable"
    except FileNotFoundError:
        pass
    except PermissionError:
        return "not accessible"
    parent = path.parent
    while True:
        try:
            os.stat(parent)
            break
        except FileNotFoundError:
            parent = parent.parent
        except PermissionError:
            return f"cannot be created (no access to {parent.parent})"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created (no write access to {parent})"
    return None


def _before_drop(store: bool) -> None:
    """What the run would otherwise import lazily, done while still root: USER may not be
    able to read the interpreter's files (a venv under a home of mode 700)."""
    import multiprocessing.popen_fork  # noqa: F401  (Process.start imports it)

    import iptraf_mp.core.decode_dpkt  # noqa: F401  (the decoder's slow path imports it late)

    if store:
        import sqlite_utils  # noqa: F401  (creating or migrating the store imports it)
