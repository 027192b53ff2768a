"""-w: the frames of every capture process into one pcapng, one interface block each.

The recording is the operator's evidence, and it must never take the run down with it: a
write that fails (a full disk) stops the recording with one line, the pcapng keeps every
whole block written before (capfile.PcapngWriter cuts it back), counting goes on, and the
exit status says so. Called from the pipeline's recorder thread and the main loop.
"""

from __future__ import annotations

import threading

from iptraf_mp.core.text import say

from .capfile import CaptureFileError, PcapngWriter


class Recorder:
    def __init__(self, writer: PcapngWriter) -> None:
        self.writer = writer
        self.label = f"-w {writer.path}"
        self.index: dict[int, int] = {}  # global interface index -> pcapng interface id
        # (name, link type) -> pcapng interface id: the capture processes that share an
        # interface (--capture-procs) record it as one
        self.named: dict[tuple[str, int], int] = {}
        self.lock = threading.Lock()
        self.error: str | None = None  # why the recording stopped
        self.unrecorded = 0  # frames that came after it stopped
        self.lagged = 0  # frames a live capture left out because the writer lagged

    def _stop(self, err: Exception) -> None:
        self.error = f"{self.label}: recording stopped: {err}"
        say(f"{self.error}; counting goes on")
        try:
            self.writer.close()
        except CaptureFileError:
            pass  # already reported; the file holds the whole blocks before the failure

    def interface(self, ifindex: int, linktype: int, name: str) -> None:
        with self.lock:
            if self.error is None and ifindex not in self.index:
                try:
                    idx = self.named.get((name, linktype))
                    if idx is None:
                        idx = self.named[(name, linktype)] = self.writer.add_interface(
                            name, linktype)
                    self.index[ifindex] = idx
                except (CaptureFileError, ValueError) as e:
                    self._stop(e)

    def packet(self, ifindex: int, ts: float, data: bytes, wirelen: int) -> None:
        with self.lock:
            if self.error is not None:
                self.unrecorded += 1
                return
            try:
                idx = self.index.get(ifindex)
                if idx is None:
                    idx = self.index[ifindex] = self.writer.add_interface(f"if{ifindex}", 1)
                self.writer.write(idx, ts, data, wirelen)
            except (CaptureFileError, ValueError) as e:
                self.unrecorded += 1
                self._stop(e)

    def flush(self) -> None:
        with self.lock:
            if self.error is None:
                try:
                    self.writer.flush()
                except CaptureFileError as e:
                    self._stop(e)

    def close(self) -> None:
        with self.lock:
            if self.error is None:
                try:
                    self.writer.close()
                except CaptureFileError as e:
                    self._stop(e)

    def failed(self) -> list[str]:
        """What the recording lacks, one line each (the exit status is non-zero if any)."""
        out = []
        if self.error is not None:
            out.append(f"{self.error} ({self.unrecorded} frames not recorded)")
        if self.lagged:
            out.append(f"{self.label}: {self.lagged} frames left out of the recording "
                       f"(its writer fell behind the capture)")
        return out
