"""The imperative shell of a monitor run: a pipeline (or the in-process engine) plus the
sinks that take what it publishes — JSON lines, the log, the recording, the store, export.

The console drives `step()` between frames; `-B` drives it in a plain loop.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field

from .jsonout import JsonWriter


class SinkError(Exception):
    """A sink cannot start (a one-line reason). Defined here, beside the sinks' driver, so
    that `python -m iptraf_mp.cli` (where the CLI module is `__main__`) and the sinks name
    the same class."""


@dataclass(slots=True)
class Flags:
    """Set from signal handlers, acted on in the main loop (handlers must stay tiny)."""

    stop: bool = False
    usr1: bool = False
    clean: bool = True  # SIGTERM stops without iptraf-ng's "stopped" log line
    signals: list[int] = field(default_factory=list)


class Monitor:
    def __init__(self, run, json: JsonWriter | None = None, log=None, recorder=None,
                 sinks: list | None = None, minutes: float | None = None) -> None:
        self.run = run
        self.merger = run.merger
        self.json = json
        self.log = log
        self.recorder = recorder
        # Sinks (the store, IPFIX export) have attach(monitor) (called here, before anything
        # runs, e.g. to subscribe to the merger's changes), update(monitor) after every step,
        # finish(monitor) at the end and close().
        self.sinks = sinks or []
        self.flags = Flags()
        self.deadline = time.monotonic() + minutes * 60 if minutes else None
        self.started = time.time()
        self._saved_signals: dict = {}
        if log is not None:
            self.merger.log_lines = []
        for sink in self.sinks:
            sink.attach(self)
        # Sinks that send at a paced rate (IPFIX) have pump() -> bool (True while records
        # wait): the run calls them while it waits, between our updates.
        self._pumps = [sink.pump for sink in self.sinks if hasattr(sink, "pump")]
        if self._pumps:
            run.between = self._between

    def install_signals(self) -> None:
        def stop(signum, _frame):
            self.flags.stop = True
            self.flags.signals.append(signum)
            if signum == signal.SIGTERM:
                self.flags.clean = False

        def usr1(_signum, _frame):
            self.flags.usr1 = True

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
            self._saved_signals[sig] = signal.signal(sig, stop)
        self._saved_signals[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, usr1)

    def start(self) -> None:
        if self.log is not None:
            self.log.started()
        self.run.start()

    def step(self, timeout: float) -> bool:
        """Take in what was published for up to `timeout`; False once the run is over."""
        if self.flags.stop or (self.deadline is not None and time.monotonic() >= self.deadline):
            self.run.stop()
        more = self.run.poll(timeout)
        self.drain()
        if self.flags.usr1 and self.log is not None:
            self.flags.usr1 = False
            self.log.active(self.merger)
        return more

    def _between(self) -> bool:
        busy = False
        for pump in self._pumps:
            busy = pump() or busy
        return busy

    def drain(self) -> None:
        for group in self.merger.take_ready():
            if self.json is not None:
                self.json.pairs(group)
        if self.json is not None:
            self.json.flush()
        if self.log is not None:
            self.log.drain(self.merger)
        if self.recorder is not None:
            self.recorder.flush()
        for sink in self.sinks:
            sink.update(self)

    def run_background(self) -> None:
        while self.step(self.run.refresh):
            pass

    def finish(self) -> None:
        """After the last step: the summary, the log's last line, every sink closed."""
        self.drain()
        if self.json is not None:
            self.json.record(self.merger.summary().to_json())
            self.json.flush()
        for sink in self.sinks:
            sink.finish(self)
        if self.log is not None:
            if self.flags.clean:
                self.log.stopped()
            self.log.close()
        if self.recorder is not None:
            self.run.join_recorder()
            self.recorder.close()

    def close(self) -> None:
        self.run.close()
        # in-process callers (tests, embedding) get their own handlers back
        for sig, handler in self._saved_signals.items():
            signal.signal(sig, handler)
        self._saved_signals.clear()
