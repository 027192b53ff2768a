"""Feed a capture file into an engine and nothing else: the smallest shell around the core,
for tests and tools that want to look at the engine's tables after a replay. (The monitor's
own replay, with its outputs, is `LocalRun` or the pipeline.)"""

from __future__ import annotations

from dataclasses import dataclass

from iptraf_mp.core.decode import decode
from iptraf_mp.core.engine import Engine

from .capfile import CaptureFileError, open_capture


@dataclass(slots=True)
class ReplayResult:
    frames: int
    error: str | None  # a one-line message when the file ended badly; what came before counts


def replay(path: str, engine: Engine) -> ReplayResult:
    """Feed every frame of `path` to `engine`. Raises CaptureFileError only when the file
    cannot be opened at all."""
    reader = open_capture(path)
    ifaces = reader.interfaces
    n = 0
    error = None
    try:
        for ts, ifidx, data, wirelen in reader:
            n += 1
            itf = ifaces[ifidx]
            engine.feed(ts, itf.name, decode(itf.linktype, data, wirelen), n)
    except CaptureFileError as e:
        error = str(e)
    finally:
        reader.close()
    return ReplayResult(n, error)
