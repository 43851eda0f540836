"""How many event streams (open pages) the dashboard serves, per user and in
all. Pure: the HTTP side asks before it opens a stream and says when one ends.

Why per user: each open page holds a thread and a queue of ticks. With one
limit for everyone (32), one viewer opening 40 pages took every place and
the next user got 503 until that viewer closed them (issue #37). Now a user
has ``per_user`` pages at once (tabs, a phone, a wall screen); the next is
refused (429) for that user alone. ``total`` stays as the process's bound
(a thread each), well above one user's share: it takes ``total // per_user``
users, each with all their pages open, to fill it. Without logins (this
machine only) there are no users to tell apart and only ``total`` applies.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

STREAMS_PER_USER = 6
MAX_STREAMS = 64


@dataclass
class StreamQuota:
    per_user: int = STREAMS_PER_USER
    total: int = MAX_STREAMS
    _open: Counter[str] = field(default_factory=Counter)
    _count: int = 0

    def open(self, user: str | None) -> str | None:
        """Take a place for a stream of ``user`` (None: no logins). None if
        taken; else why not: ``user`` (this user's quota) or ``total``."""
        if user is not None and self._open[user] >= self.per_user:
            return "user"
        if self._count >= self.total:
            return "total"
        if user is not None:
            self._open[user] += 1
        self._count += 1
        return None

    def close(self, user: str | None) -> None:
        """A stream that :meth:`open` let in has ended."""
        if user is not None and self._open[user] > 0:
            self._open[user] -= 1
            if not self._open[user]:
                del self._open[user]
        self._count = max(0, self._count - 1)

    def of(self, user: str) -> int:
        return self._open[user]

    def __len__(self) -> int:
        return self._count
