"""The bridge's bookkeeping on its outbox's disk, and what it does when the
disk refuses a write. Owns the outbox's problem (what health says while
``degraded``) and the records still to write: tasks the cloud has that are
not yet marked sent, answered tasks whose rows are not yet deleted. Retried
every second until the disk takes them; meanwhile the bridge gives new
offers back to the fog and keeps delivering what it stored."""

from __future__ import annotations

import logging
from typing import Any, Callable

from fogmesh.cloud_bridge.store import Outbox
from fogmesh.errors import StorageError

RETRY_S = 1.0


class Bookkeeping:
    def __init__(self, outbox: Outbox, *, log: logging.LoggerAdapter[Any], say_health: Callable[[], None]) -> None:
        self.outbox, self.log, self._say_health = outbox, log, say_health
        self.problem: str | None = None           # why the disk refuses writes (health: degraded)
        self.unmarked: set[str] = set()           # the cloud has them; not yet recorded as sent
        self.unremoved: set[str] = set()          # answered; their rows not yet deleted
        self._retry_at = -1e9

    def failed(self, exc: StorageError) -> None:
        if self.problem is None:
            self.log.error("%s; refusing new tasks (the fog runs them) and still delivering the %d "
                           "stored; free space on that disk", exc, self.outbox.rows)
            self._say_health()
        self.problem = str(exc)

    def ok(self) -> None:
        """A write worked: the problem is over once nothing is left to write."""
        if self.problem is not None and not self.unmarked and not self.unremoved:
            self.log.warning("the outbox can be written again; taking tasks")
            self.problem = None
            self._say_health()

    def sent(self, keys: list[str], now: float) -> None:
        """The cloud broker has these tasks."""
        self.unmarked.update(keys)
        self.mark_sent(now)

    def mark_sent(self, now: float) -> None:
        if not self.unmarked:
            return
        keys = sorted(self.unmarked)
        try:
            self.outbox.mark_sent(keys, now)
        except StorageError as exc:
            self.failed(exc)
            return
        self.unmarked.difference_update(keys)
        self.ok()

    def remove(self, key: str) -> None:
        try:
            self.outbox.remove(key)
        except StorageError as exc:
            self.unremoved.add(key)
            self.failed(exc)
            return
        self.unremoved.discard(key)
        self.ok()

    def retry(self, now: float) -> None:
        """What is left to write, at most once a second while the disk refuses."""
        if (self.unmarked or self.unremoved) and self.problem and now >= self._retry_at:
            self._retry_at = now + RETRY_S
            self.mark_sent(now)
            for key in list(self.unremoved):
                self.remove(key)
