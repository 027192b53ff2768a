"""A shard's inputs: one ring per capture process, read as one stream of batches."""

from __future__ import annotations

import time

from .ring import Ring

IDLE_SLEEP = 0.001  # several producers: how long to doze when every ring is empty


class RingSet:
    """Round-robin over the rings of one shard. With a single ring (a file replay, or one
    interface) it sleeps on that ring's semaphore; with several it polls them and dozes
    for a millisecond when all are empty, since one semaphore cannot wait on several."""

    def __init__(self, rings: list[Ring]) -> None:
        self.rings = rings
        self._next = 0

    def get(self, timeout: float) -> bytes | None:
        rings = self.rings
        if len(rings) == 1:
            return rings[0].get(timeout)
        deadline = time.monotonic() + timeout
        while True:
            for _ in range(len(rings)):
                ring = rings[self._next]
                self._next = (self._next + 1) % len(rings)
                buf = ring.get(0)
                if buf is not None:
                    return buf
            if time.monotonic() >= deadline:
                return None
            time.sleep(IDLE_SLEEP)
