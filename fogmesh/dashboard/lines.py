"""The dashboard's warning lines that a client can repeat at will (a refused
login, a request for a name it does not serve, a page over the quota):
each kind, per source, written a few times (:data:`BURST`), then at most one
each :data:`EVERY_S` seconds saying how many were left out, and all of them
together at most one a second after a burst of a hundred
(:class:`fogmesh.log_limit.LogLimits`). So a flood costs a few lines, and
another source's line is still written. Called from the HTTP threads."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from fogmesh.log_limit import LogLimits

EVERY_S = 10.0
BURST = 5

__all__ = ["BURST", "EVERY_S", "Lines"]


class Lines:
    def __init__(self, log: logging.Logger, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.clock = log, clock
        self._limits = LogLimits(every_s=EVERY_S, burst=BURST)
        self._lock = threading.Lock()

    def warning(self, kind: str, source: str, fmt: str, *args: object) -> None:
        """``log.warning(fmt, *args)``, if the lines of ``kind`` from ``source`` may be written now."""
        with self._lock:
            left_out = self._limits.take(f"{kind} {source}", self.clock())
        if left_out is not None:
            self.log.warning(fmt + (f" ({left_out} more such lines from there left out)" if left_out else ""),
                             *args)
