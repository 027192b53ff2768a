"""The `-L` log file in iptraf-ng's line formats (rule 20), so existing parsers keep working.

Every line is `<ctime>; <message>`, appended and flushed per line. SIGUSR1 writes the active
connections and reopens the file (for logrotate). Events carry packet times, so a replay logs
the times of the capture.

Rule numbers cited here are docs/decisions.md's.
"""

from __future__ import annotations

import os
import time

from iptraf_mp.core.lines import LineOptions, log_line, log_time, table_full, tcp_event_log
from iptraf_mp.core.merge import Merger
from iptraf_mp.core.model import fmt_addr
from iptraf_mp.core.text import safe_text


class LogError(Exception):
    pass


class LogWriter:
    def __init__(self, path: str, opts: LineOptions) -> None:
        self.path = path
        self.label = f"-L {path}"  # names this output in error messages
        self.warned_full = False  # the tables' limits were reached (said once)
        self.opts = opts
        self.fh = self._open()

    def _open(self):
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            return os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="replace")
        except OSError as e:
            raise LogError(f"cannot write log file {self.path}: {e.strerror}") from None

    def write(self, ts: float, msg: str) -> None:
        # packet-derived text: no control character reaches whoever reads the log in a terminal
        self.fh.write(f"{log_time(ts)}; {safe_text(msg)}\n")

    def started(self) -> None:
        self.write(time.time(), "******** IP traffic monitor started ********")

    def stopped(self) -> None:
        self.write(time.time(), "******** IP traffic monitor stopped ********")
        self.fh.write("\n")
        self.fh.flush()

    def drain(self, merger: Merger) -> None:
        """Write the TCP events and lower-window lines published since the last call."""
        events = merger.events
        lines = merger.log_lines or []
        merger.events = []
        if merger.log_lines is not None:
            merger.log_lines = []
        items = [(ev.ts, 0, i, ev) for i, ev in enumerate(events)]
        items += [(ln.ts, 1, i, ln) for i, ln in enumerate(lines)]
        items.sort(key=lambda t: (t[0], t[1], t[2]))
        for ts, kind, _i, obj in items:
            self.write(ts, tcp_event_log(obj, self.opts) if kind == 0 else log_line(obj,
                                                                                     self.opts))
        full = table_full(merger.summary())
        if full and not self.warned_full:
            self.warned_full = True
            self.write(merger.now, f"******** {full} ********")

    def active(self, merger: Merger) -> None:
        """SIGUSR1: the active directions, then reopen the file under the same name."""
        now = time.time()
        self.write(now, "***** USR1 signal received, preparing to reopen log file *****")
        for pair in merger.display.slots:
            if pair.closed or pair.retired:
                continue
            for e in (pair.a, pair.b):
                # as iptraf-ng, also a direction not seen yet (0 packets, 0 bytes)
                if e.finsent or e.reset:
                    continue
                self.write(now, f"TCP; {pair.iface}; active; from {fmt_addr(e.src)}:{e.sport} "
                                f"to {fmt_addr(e.dst)}:{e.dport}; {e.packets} packets, "
                                f"{e.bytes} bytes")
        self.fh.close()
        self.fh = self._open()
        self.write(now, "***** Logfile reopened *****")

    def close(self) -> None:
        self.fh.close()

    def abandon(self) -> None:
        """A write failed: close. (Closing flushes what the failed write left buffered, which
        fails again; the file is closed all the same.)"""
        try:
            self.fh.close()
        except OSError:
            pass
