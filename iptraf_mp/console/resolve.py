"""Reverse DNS and service names for the screen, never on the display path.

`Resolver.names()` answers from a cache at once and queues what it does not know for
background threads; the screen shows the address until the name arrives, as iptraf-ng does.
Every name is reduced to printable ASCII before it is cached: a PTR record is whatever its
owner wrote, and it must not be able to move the cursor, retitle the terminal or reorder
text (control characters, bidi overrides) on the operator's screen.
"""

from __future__ import annotations

import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from iptraf_mp.core.model import fmt_addr
from iptraf_mp.core.text import safe_text

CACHE_MAX = 65536  # names kept; the least recently asked for are forgotten first
QUEUE_MAX = 1024  # lookups waiting; past this new ones are dropped (asked again next frame)
NAME_MAX = 253  # the longest a DNS name can be


def safe_name(name: str) -> str:
    """A name from DNS or the services file, for any output: at most NAME_MAX characters,
    through the one sanitiser."""
    return safe_text(name[:NAME_MAX])


def system_lookup(addr_text: str) -> str | None:
    """The system resolver (hosts file, DNS); None when there is no name."""
    try:
        return socket.gethostbyaddr(addr_text)[0]
    except (OSError, UnicodeError):
        return None


class Resolver:
    """Address -> name, asynchronously, with a cache shared by the screen and the summary."""

    def __init__(self, lookup: Callable[[str], str | None] = system_lookup,
                 workers: int = 4) -> None:
        self.lookup = lookup
        self.cache: OrderedDict[bytes, str] = OrderedDict()  # address -> name or address text
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.wanted: list[bytes] = []  # newest last: the rows on screen now go first
        self.pending: set[bytes] = set()
        self.closed = False
        self.threads = [threading.Thread(target=self._work, name=f"resolver-{i}", daemon=True)
                        for i in range(workers)]
        for t in self.threads:
            t.start()

    def name(self, addr: bytes) -> str | None:
        """The cached name (or None, and a lookup is queued)."""
        with self.lock:
            hit = self.cache.get(addr)
            if hit is not None:
                self.cache.move_to_end(addr)
                return hit
            self._want(addr)
        return None

    def names(self, addrs: Iterable[bytes]) -> dict[bytes, str]:
        """The names known now of `addrs`; the others are queued. Never waits for DNS."""
        out: dict[bytes, str] = {}
        with self.lock:
            for addr in addrs:
                if addr in out:
                    continue
                hit = self.cache.get(addr)
                if hit is not None:
                    self.cache.move_to_end(addr)
                    out[addr] = hit
                else:
                    self._want(addr)
            if self.wanted:
                self.cond.notify(len(self.wanted))
        return out

    def _want(self, addr: bytes) -> None:
        if addr in self.pending or not addr:
            return
        if len(self.wanted) >= QUEUE_MAX:
            dropped = self.wanted.pop(0)
            self.pending.discard(dropped)
        self.wanted.append(addr)
        self.pending.add(addr)

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.wanted and not self.closed:
                    self.cond.wait()
                if self.closed:
                    return
                addr = self.wanted.pop()  # newest first: what is on screen now
            text = fmt_addr(addr)
            try:
                found = self.lookup(text)
            except Exception:  # a resolver failure must not end the thread
                found = None
            name = safe_name(found) if found else text
            with self.lock:
                self.pending.discard(addr)
                self.cache[addr] = name
                if len(self.cache) > CACHE_MAX:
                    self.cache.popitem(last=False)

    def wait_idle(self, timeout: float) -> bool:
        """Tests: wait until every queued lookup is done."""
        import time

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if not self.wanted and not self.pending:
                    return True
            time.sleep(0.005)
        return False

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.cond.notify_all()


class Services:
    """Port -> service name (/etc/services through getservbyport), cached; iptraf-ng cuts
    them to 10 characters."""

    def __init__(self, lookup: Callable[[int, str], str | None] | None = None) -> None:
        self.lookup = lookup or _getserv
        self.cache: dict[tuple[int, str], str] = {}

    def __call__(self, port: int, proto: str) -> str:
        key = (port, proto)
        hit = self.cache.get(key)
        if hit is None:
            found = self.lookup(port, proto)
            hit = safe_name(found)[:10] if found else str(port)
            if len(self.cache) < CACHE_MAX:
                self.cache[key] = hit
        return hit


def _getserv(port: int, proto: str) -> str | None:
    try:
        return socket.getservbyport(port, proto)
    except (OSError, OverflowError):
        return None
