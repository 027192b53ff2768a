"""The imperative shell of a monitor run: a pipeline (or the in-process engine) plus the
sinks that take what it publishes — JSON lines, the log, the recording, the store, export.

The console drives `step()` between frames; `-B` drives it in a plain loop.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from iptraf_mp.capture.recorder import Recorder
from iptraf_mp.core.run import Run
from iptraf_mp.core.text import say
from iptraf_mp.outputs.jsonout import JsonWriter
from iptraf_mp.outputs.log import LogWriter
from iptraf_mp.outputs.sink import Sink


@dataclass(slots=True)
class Flags:
    """Set from signal handlers, acted on in the main loop (handlers must stay tiny)."""

    stop: bool = False
    usr1: bool = False
    clean: bool = True  # SIGTERM stops without iptraf-ng's "stopped" log line
    signals: list[int] = field(default_factory=list)


class Monitor:
    def __init__(self, run: Run, json: JsonWriter | None = None, log: LogWriter | None = None,
                 recorder: Recorder | None = None,
                 sinks: list[Sink] | None = None, minutes: float | None = None) -> None:
        self.run = run
        self.merger = run.merger
        self.json = json
        self.log = log
        self.recorder = recorder
        # the store, IPFIX export: attached here, before anything runs
        self.sinks = sinks or []
        self.flags = Flags()
        # Outputs that failed and stopped, one line each (already on stderr): the other
        # outputs and the store finish as usual, and the exit status says it
        self.failures: list[str] = []
        self.deadline = time.monotonic() + minutes * 60 if minutes else None
        self.started = time.time()
        self._saved_signals: dict = {}
        if log is not None:
            self.merger.log_lines = []
        for sink in self.sinks:
            sink.attach(self)
        # paced outputs (IPFIX) send while the run waits, between our updates
        if self.sinks:
            run.between = self._between

    def install_signals(self) -> None:
        def stop(signum, _frame):
            self.flags.stop = True
            self.flags.signals.append(signum)
            if signum not in (signal.SIGINT, signal.SIGUSR2):
                self.flags.clean = False

        def usr1(_signum, _frame):
            self.flags.usr1 = True

        # SIGHUP and SIGQUIT (an ssh logout, ^\) end a run as SIGTERM does: with the summary,
        # the final checkpoint and the session closed, never by the default's sudden death
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2, signal.SIGHUP,
                    signal.SIGQUIT):
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
        for sink in self.sinks:
            busy = sink.pump() or busy
        return busy

    def _failed(self, what: str, err: Exception) -> None:
        msg = f"{what}: write failed: {getattr(err, 'strerror', None) or err}"
        self.failures.append(msg)
        say(f"{msg}; the other outputs go on")

    def _json(self, action: Callable[[JsonWriter], None]) -> None:
        if self.json is None:
            return
        try:
            action(self.json)
        except OSError as e:
            self._failed(self.json.label, e)
            self.json = None

    def _log(self, action: Callable[[Any], None]) -> None:
        if self.log is None:
            return
        try:
            action(self.log)
        except OSError as e:
            self._failed(self.log.label, e)
            self.log.abandon()
            self.log = None

    def drain(self) -> None:
        groups = self.merger.take_ready()

        def write(j: JsonWriter) -> None:
            for group in groups:
                j.pairs(group)
            j.flush()

        self._json(write)
        self._log(lambda lg: lg.drain(self.merger))
        if self.recorder is not None:
            self.recorder.flush()
        for sink in self.sinks:
            sink.update(self)

    def run_background(self, on_step: Callable[[], None] | None = None) -> None:
        while self.step(self.run.refresh):
            if on_step is not None:
                on_step()

    def finish(self) -> None:
        """After the last step: the summary, the log's last line, every sink closed."""
        self.drain()
        summary = self.merger.summary().to_json()

        def write(j: JsonWriter) -> None:
            j.record(summary)
            j.flush()

        self._json(write)
        for sink in self.sinks:
            sink.finish(self)
            self.failures.extend(sink.failed())
        if self.flags.clean:
            self._log(lambda lg: lg.stopped())
        self._log(lambda lg: lg.close())
        if self.recorder is not None:
            self.run.join_recorder()
            self.recorder.close()
            self.recorder.lagged = self.run.counters().record_dropped
            self.failures.extend(self.recorder.failed())

    def close(self) -> None:
        self.run.close()
        # in-process callers (tests, embedding) get their own handlers back
        for sig, handler in self._saved_signals.items():
            signal.signal(sig, handler)
        self._saved_signals.clear()
