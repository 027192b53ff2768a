"""Single-process replay of a capture file through the engine (the imperative shell around it)."""

from __future__ import annotations

from dataclasses import dataclass

from .capfile import CaptureFileError, open_capture
from .decode import decode
from .engine import Engine
from .jsonout import JsonWriter


@dataclass(slots=True)
class ReplayResult:
    frames: int
    error: str | None  # a one-line message when the file ended badly; what came before counts


def replay(path: str, engine: Engine, out: JsonWriter | None) -> ReplayResult:
    """Feed every frame of `path` to `engine`; write pairs as they leave the table.

    Raises CaptureFileError only when the file cannot be opened at all.
    """
    reader = open_capture(path)
    ifaces = reader.interfaces
    feed = engine.feed
    sealed = engine.sealed
    n = 0
    error = None
    try:
        for ts, ifidx, data, wirelen in reader:
            n += 1
            itf = ifaces[ifidx]
            feed(ts, itf.name, decode(itf.linktype, data, wirelen), n)
            if sealed:
                write_sealed(engine, out)
    except CaptureFileError as e:
        error = str(e)
    finally:
        reader.close()
    return ReplayResult(n, error)


def write_sealed(engine: Engine, out: JsonWriter | None) -> None:
    for _tick, pairs in engine.sealed:
        if out is not None:
            out.pairs(pairs)
    engine.sealed.clear()


def finish(engine: Engine, out: JsonWriter) -> None:
    """At the end of a run: the pairs still in the engine, in creation order, then the summary."""
    engine.finish()
    write_sealed(engine, out)
    out.record(engine.summary.to_json())
    out.flush()
