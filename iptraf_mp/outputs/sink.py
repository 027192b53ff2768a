"""The seam between a run and the outputs that follow it beyond the screen and the JSON
lines: the flow store and IPFIX export. The monitor drives every sink the same way."""

from __future__ import annotations

from typing import Protocol

from iptraf_mp.core.merge import Merger
from iptraf_mp.core.run import Run


class SinkError(Exception):
    """A sink cannot start (a one-line reason). Its own module, so that the command line, the
    sinks and `python -m iptraf_mp.app.cli` (where the CLI module is `__main__`) name one class."""


class Monitored(Protocol):
    """What a sink sees of the monitor that drives it."""

    merger: Merger
    run: Run


class Sink(Protocol):
    def attach(self, monitor: Monitored) -> None:
        """Before anything runs (subscribe to the merger's changes, say)."""

    def update(self, monitor: Monitored) -> None:
        """After every step of the run."""

    def pump(self) -> bool:
        """While the run waits between steps: send some of what waits (a paced output);
        True while something still waits."""

    def finish(self, monitor: Monitored) -> None:
        """After the last step: the last records out."""

    def close(self) -> None: ...

    def failed(self) -> list[str]:
        """What this output lost, one line each, already reported: any makes the exit
        status non-zero."""

    def status_line(self) -> str:
        """One line for the console (shown as the run starts)."""
