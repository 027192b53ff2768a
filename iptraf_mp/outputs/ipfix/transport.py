"""One transport session (UDP or TCP) towards one collector. It never raises into, or
stalls, the monitor that calls it: DNS on a helper thread, non-blocking sockets, TCP
connects polled, every failure counted and retried later with backoff."""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .encoder import FlowRecord, IpfixEncoder, message_record_count, message_sequence
from .target import split_target


@dataclass(slots=True)
class ExporterStats:
    sent_messages: int = 0  # IPFIX messages handed to the kernel (templates-only included)
    sent_records: int = 0  # data records in those messages
    sent_bytes: int = 0
    errors: int = 0  # failed resolutions, connects and sends
    dropped_records: int = 0  # records given to export() that were never sent
    connects: int = 0  # transport sessions opened (UDP socket or TCP connection)
    last_error: str = ""  # one line, empty until the first failure


@dataclass(slots=True)
class _Lookup:
    """A name resolution running on a helper thread, so DNS never blocks export()."""

    done: threading.Event = field(default_factory=threading.Event)
    addrs: list[tuple] = field(default_factory=list)
    error: str = ""


def _lookup(job: _Lookup, host: str, port: int, socktype: int, resolver: Callable) -> None:
    try:
        infos = resolver(host, port, socket.AF_UNSPEC, socktype)
        job.addrs = [(fam, sa) for fam, _t, _p, _c, sa in infos]
        if not job.addrs:
            job.error = f"cannot resolve {host!r}: no addresses"
    except (OSError, UnicodeError) as exc:
        job.error = f"cannot resolve {host!r}: {_one_line(exc)}"
    finally:
        job.done.set()


def _wait_fd(sock: socket.socket, events: int, timeout: float) -> bool:
    # poll() rather than select(): select() fails outright on descriptors above
    # FD_SETSIZE (1024), which a long-running capture process can reach.
    poller = select.poll()
    poller.register(sock, events | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


@dataclass(slots=True)
class _Pending:
    """A TCP message not yet fully accepted by the kernel."""

    data: memoryview  # the unsent tail
    records: int
    size: int  # whole message, for stats


class IpfixExporter:
    """Sends FlowRecords to one collector over UDP or TCP.

    ``export()`` never raises and never waits more than about ``io_timeout``:
    resolution happens on a helper thread, sockets are non-blocking, and every
    failure is counted in ``stats`` and retried on a later call (TCP and name
    resolution with exponential backoff on the injected ``clock``).
    """

    def __init__(
        self,
        target: str,
        odid: int,
        transport: str = "udp",
        template_interval: float = 30.0,
        clock: Callable[[], float] = time.time,
        *,
        mtu: int = 1400,
        io_timeout: float = 0.05,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        connect_timeout: float = 5.0,
        max_buffer: int = 1 << 20,
        resolver: Callable = socket.getaddrinfo,
    ) -> None:
        scheme, host, port, explicit = split_target(target)
        transport = transport.lower()
        if transport not in ("udp", "tcp"):
            raise ValueError(f"transport {transport!r} is not supported, use 'udp' or 'tcp'")
        if explicit and scheme != transport:
            raise ValueError(f"target {target!r} says {scheme} but transport is {transport}")
        self.host = host
        self.port = port
        self.transport = transport
        self.template_interval = template_interval
        self.stats = ExporterStats()
        self._clock = clock
        self._resolver = resolver  # injectable, so tests never ask a real DNS server
        self._encoder = IpfixEncoder(odid, mtu)
        self._io_timeout = io_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._backoff = backoff_initial
        self._connect_timeout = connect_timeout
        self._max_buffer = max_buffer
        self._socktype = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self._addrs: list[tuple] = []
        self._addr_index = 0
        self._lookup: _Lookup | None = None
        self._sock: socket.socket | None = None
        self._connecting_since: float | None = None  # TCP connect in progress
        self._next_attempt = float("-inf")
        self._templates_at: float | None = None  # UDP: when templates last went out
        self._templates_due = True
        self._pending: deque[_Pending] = deque()
        self._pending_bytes = 0

    # -- public -----------------------------------------------------------

    def export(self, records: Sequence[FlowRecord]) -> int:
        """Send records; returns how many were handed to the kernel (or queued, TCP)."""
        try:
            if not isinstance(records, Sequence):
                records = list(records)
            now = self._clock()
            if not self._ready(now):
                self.stats.dropped_records += len(records)
                return 0
            if self.transport == "udp":
                return self._export_udp(records, now)
            return self._export_tcp(records, now)
        except Exception as exc:  # the capture path must survive our own bugs too
            self._error(f"export: {_one_line(exc)}")
            self._drop_pending()
            self._close()
            self.stats.dropped_records += len(records) if isinstance(records, Sequence) else 0
            return 0

    def close(self, timeout: float = 0.5) -> None:
        """Flush queued TCP data for at most ``timeout`` seconds, then close."""
        sock = self._sock
        if sock is not None and self.transport == "tcp" and self._connecting_since is None:
            deadline = time.monotonic() + timeout
            try:
                while self._pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    _wait_fd(sock, select.POLLOUT, left)
                    self._flush()
            except OSError as exc:
                self._error(f"send: {_one_line(exc)}")
        self._drop_pending()
        self._close()

    def __enter__(self) -> IpfixExporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- session setup ----------------------------------------------------

    def _ready(self, now: float) -> bool:
        if self._sock is not None and self._connecting_since is None:
            return True
        if self._sock is not None:
            return self._finish_connect(now)
        if now < self._next_attempt:
            return False
        if not self._addrs and not self._resolve(now):
            return False
        return self._open(now)

    def _resolve(self, now: float) -> bool:
        job = self._lookup
        wait = 0.0
        if job is None:
            try:
                # Numeric addresses need no thread: AI_NUMERICHOST never touches DNS.
                infos = socket.getaddrinfo(
                    self.host,
                    self.port,
                    socket.AF_UNSPEC,
                    self._socktype,
                    0,
                    socket.AI_NUMERICHOST,
                )
                self._addrs = [(fam, sa) for fam, _t, _p, _c, sa in infos]
                self._addr_index = 0
                return True
            except (OSError, UnicodeError):
                pass
            job = self._lookup = _Lookup()
            wait = self._io_timeout
            threading.Thread(
                target=_lookup,
                args=(job, self.host, self.port, self._socktype, self._resolver),
                name=f"ipfix-resolve-{self.host}",
                daemon=True,
            ).start()
        # Typical lookups (hosts file, local cache) finish within the first
        # call's short wait; a slow DNS server costs later calls nothing.
        if not job.done.wait(wait):
            return False  # still resolving: drop this batch, look again next call
        self._lookup = None
        if job.error:
            self._fail(job.error, now)
            return False
        self._addrs = job.addrs
        self._addr_index = 0
        return True

    def _open(self, now: float) -> bool:
        family, sockaddr = self._addrs[self._addr_index % len(self._addrs)]
        try:
            sock = socket.socket(family, self._socktype)
        except OSError as exc:
            self._fail(f"socket: {_one_line(exc)}", now, next_address=True)
            return False
        sock.setblocking(False)
        self._drop_pending()  # bytes framed for an old session must not leak into a new one
        self._sock = sock
        self._encoder.reset()
        self._templates_due = True
        self._templates_at = None
        if self.transport == "udp":
            try:
                # A connected UDP socket is what turns ICMP port unreachable
                # into ConnectionRefusedError on a later send.
                sock.connect(sockaddr)
            except OSError as exc:
                self._fail(f"connect {self._where()}: {_one_line(exc)}", now, next_address=True)
                return False
            self.stats.connects += 1
            self._backoff = self._backoff_initial
            return True
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex(sockaddr)
        except OSError as exc:
            err = exc.errno or errno.EIO
        if err in (0, errno.EISCONN):
            return self._connected()
        if err not in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK, errno.EAGAIN):
            self._fail(
                f"connect {self._where()}: {_one_line(OSError(err, os.strerror(err)))}",
                now,
                next_address=True,
            )
            return False
        self._connecting_since = now
        return self._finish_connect(now)

    def _finish_connect(self, now: float) -> bool:
        sock = self._sock
        assert sock is not None
        if not _wait_fd(sock, select.POLLOUT, self._io_timeout):
            if now - (self._connecting_since or now) >= self._connect_timeout:
                self._fail(f"connect {self._where()}: timed out", now, next_address=True)
            return False
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(
                f"connect {self._where()}: {_one_line(OSError(err, os.strerror(err)))}",
                now,
                next_address=True,
            )
            return False
        return self._connected()

    def _connected(self) -> bool:
        self._connecting_since = None
        self.stats.connects += 1
        self._backoff = self._backoff_initial
        return True

    def _where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}://{host}:{self.port}"

    # -- failure bookkeeping ----------------------------------------------

    def _error(self, message: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = " ".join(message.split())

    def _fail(self, message: str, now: float, next_address: bool = False) -> None:
        """A session-level failure: close, back off, maybe try the next address."""
        self._error(message)
        self._drop_pending()
        self._close()
        if next_address and self._addrs:
            self._addr_index += 1
            if self._addr_index >= len(self._addrs):
                # Every address failed once: resolve afresh after the backoff,
                # in case the name now points somewhere else.
                self._addrs = []
                self._addr_index = 0
            else:
                return  # try the next address straight away on the next call
        self._next_attempt = now + self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        self._connecting_since = None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _drop_pending(self) -> None:
        self.stats.dropped_records += sum(p.records for p in self._pending)
        self._pending.clear()
        self._pending_bytes = 0

    # -- UDP --------------------------------------------------------------

    def _export_udp(self, records: Sequence[FlowRecord], now: float) -> int:
        due = (
            self._templates_due
            or self._templates_at is None
            or not 0 <= now - self._templates_at < self.template_interval
        )
        invalid_before = self._encoder.invalid_records
        messages = self._encoder.encode(records, int(now), with_templates=due)
        self.stats.dropped_records += self._encoder.invalid_records - invalid_before
        sock = self._sock
        assert sock is not None
        sent = 0
        for i, msg in enumerate(messages):
            count = message_record_count(msg)
            try:
                sock.send(msg)
            except OSError as exc:
                # The failed datagram never left: roll the sequence back so the
                # next message does not claim records the collector never saw.
                self._encoder.sequence = message_sequence(msg)
                self.stats.dropped_records += sum(message_record_count(m) for m in messages[i:])
                what = "send buffer full" if isinstance(exc, BlockingIOError) else "send"
                self._error(f"{what} {self._where()}: {_one_line(exc)}")
                # Whoever comes back on that port needs templates straight away.
                self._templates_due = True
                if not isinstance(exc, (BlockingIOError, ConnectionRefusedError)):
                    self._fail_quietly(now)
                break
            if i == 0 and due:
                self._templates_due = False
                self._templates_at = now
            self.stats.sent_messages += 1
            self.stats.sent_records += count
            self.stats.sent_bytes += len(msg)
            sent += count
        return sent

    def _fail_quietly(self, now: float) -> None:
        # Route/permission errors (ENETUNREACH, EPERM from a firewall...) may be
        # tied to this socket's source address: reopen after a backoff.
        self._close()
        self._next_attempt = now + self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)

    # -- TCP --------------------------------------------------------------

    def _export_tcp(self, records: Sequence[FlowRecord], now: float) -> int:
        if self._peer_closed(now):
            self.stats.dropped_records += len(records)
            return 0
        with_templates = self._templates_due
        invalid_before = self._encoder.invalid_records
        messages = self._encoder.encode(records, int(now), with_templates=with_templates)
        self.stats.dropped_records += self._encoder.invalid_records - invalid_before
        if with_templates:
            self._templates_due = False
        queued = 0
        for i, msg in enumerate(messages):
            count = message_record_count(msg)
            if self._pending_bytes + len(msg) > self._max_buffer:
                # A slow collector: drop whole messages only, never part of one,
                # or the stream would lose its framing.
                self._encoder.sequence = message_sequence(msg)
                self.stats.dropped_records += sum(message_record_count(m) for m in messages[i:])
                if i == 0 and with_templates:
                    self._templates_due = True
                self._error(f"send {self._where()}: buffer of {self._max_buffer} bytes full")
                break
            self._pending.append(_Pending(memoryview(msg), count, len(msg)))
            self._pending_bytes += len(msg)
            queued += count
        try:
            self._flush()
        except OSError as exc:
            self._fail(f"send {self._where()}: {_one_line(exc)}", now)
            return 0
        return queued

    def _peer_closed(self, now: float) -> bool:
        sock = self._sock
        assert sock is not None
        if not _wait_fd(sock, select.POLLIN, 0):
            return False
        try:
            # Collectors never talk back on an IPFIX stream: readable means EOF
            # or a reset, which we would otherwise only learn on a later send.
            if sock.recv(4096):
                return False
            self._fail(f"connection closed by {self._where()}", now)
        except BlockingIOError:
            return False
        except OSError as exc:
            self._fail(f"connection {self._where()}: {_one_line(exc)}", now)
        return True

    def _flush(self) -> None:
        sock = self._sock
        assert sock is not None
        flags = getattr(socket, "MSG_NOSIGNAL", 0)
        while self._pending:
            head = self._pending[0]
            try:
                n = sock.send(head.data, flags)
            except BlockingIOError:
                return
            self._pending_bytes -= n
            if n < len(head.data):
                head.data = head.data[n:]
                return
            self._pending.popleft()
            self.stats.sent_messages += 1
            self.stats.sent_records += head.records
            self.stats.sent_bytes += head.size
