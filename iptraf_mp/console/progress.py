"""A replay's progress on a terminal's stderr, for `-B`: bytes read of the file's size,
frames, frames/s and the time left, then one closing line, as a live run ends with one.

The bytes read are the capture file's own offset: the process that reads it (this one with
`--shards 0`, the capture process otherwise) shares it with a duplicate of its descriptor
kept here, so the progress costs the reader nothing. A gzip'd file advances by its
compressed bytes, against its compressed size; a pipe has neither, and shows frames and
their rate.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from iptraf_mp.core.engine import Summary
from iptraf_mp.core.text import safe_text, say


class ReplayProgress:
    def __init__(self, label: str, fd: int | None, stream: TextIO | None = None) -> None:
        self._fd: int | None = None
        total: int | None = None
        if fd is not None:
            try:
                self._fd = os.dup(fd)
                st = os.fstat(self._fd)
                if stat.S_ISREG(st.st_mode):
                    total = st.st_size
            except OSError:
                self._fd = None
        self.started = time.monotonic()
        self._console = Console(file=stream or sys.stderr, highlight=False)
        columns = [TextColumn("{task.description}")]
        if total is not None:
            columns += [BarColumn(), DownloadColumn()]
        columns += [TextColumn("{task.fields[frames]:>12,} frames"),
                    TextColumn("{task.fields[rate]:>9,.0f} frames/s"),
                    TimeElapsedColumn()]
        if total is not None:
            columns += [TextColumn("left"), TimeRemainingColumn()]
        self._progress = Progress(*columns, console=self._console, transient=True,
                                  refresh_per_second=4)
        self._task: TaskID = self._progress.add_task(safe_text(label), total=total, frames=0,
                                                     rate=0.0)

    def start(self) -> None:
        """Show it (after the pipeline's processes have forked: rich draws from a thread)."""
        self._progress.start()

    def _position(self) -> int | None:
        if self._fd is None:
            return None
        try:
            return os.lseek(self._fd, 0, os.SEEK_CUR)
        except OSError:  # a pipe: no offset
            return None

    def update(self, frames: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        pos = self._position()
        if pos is None:
            self._progress.update(self._task, frames=frames, rate=frames / elapsed)
        else:
            self._progress.update(self._task, completed=pos, frames=frames,
                                  rate=frames / elapsed)

    def close(self, summary: Summary | None) -> None:
        """Take the bar away; with the run's summary, say how it went in one line."""
        self._progress.stop()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if summary is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-6)
        say(f"{summary.frames:,} frames ({summary.malformed:,} malformed, "
            f"{summary.untracked:,} untracked) in {elapsed:.2f} s, "
            f"{summary.frames / elapsed:,.0f} frames/s")
