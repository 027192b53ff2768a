"""The seam between a monitor and what it runs: the sharded pipeline (shards/supervisor.py)
or the engine in its own process (app/localrun.py), both driven the same way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .merge import Merger


class RunStartError(Exception):
    """A run (the pipeline, or the engine in one process) cannot start: a one-line reason."""


@dataclass(slots=True)
class RunStats:
    """What a run lost or survived, beside the engine's counters."""

    kernel_drops: int = 0
    queue_drops: int = 0  # batches
    queue_dropped_packets: int = 0
    shard_restarts: int = 0
    lost_pairs: int = 0
    record_dropped: int = 0  # live: frames left out of the recording (-w)
    errors: list[str] = field(default_factory=list)
    exit_status: int = 0  # at least this (a capture file refused: 2)

    def failed(self, message: str, exit_status: int = 1) -> None:
        """The run lost something: `message` is said at the end, and the command exits with
        at least `exit_status`."""
        self.errors.append(message)
        self.exit_status = max(self.exit_status, exit_status)


class Run(Protocol):
    """What the monitor drives: started once, polled until it is over, stopped on request."""

    merger: Merger  # everything the run has published, merged
    refresh: float  # seconds between publications
    # called while the run waits between chunks (paced outputs send meanwhile): True
    # while something is still waiting to be sent
    between: Callable[[], bool] | None

    def start(self) -> None: ...

    def poll(self, timeout: float) -> bool:
        """Take in what was published for up to `timeout`; False once the run is over."""
        ...

    def stop(self) -> None:
        """End soon: live capture stops, a replay ends where it is."""
        ...

    def request_flush(self) -> None:
        """F on the screen: closed rows go."""
        ...

    def counters(self) -> RunStats: ...

    def join_recorder(self) -> None:
        """Wait for the recording (-w) to have every frame the run took."""
        ...

    def close(self) -> None: ...
