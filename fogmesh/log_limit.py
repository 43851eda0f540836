"""How often a repeating log line is written: the first at once (the first
``burst``), then at most one per ``every_s`` seconds, each saying how many
were left out since the previous one. For lines a fault or hostile input
repeats many times a second (a client whose broker node is down connects and
drops 20 times a second; a flood of bad documents or wrong passwords).
:class:`LogLimits` keeps one limit per key (a kind of line and its source),
a bounded number of keys, under one limit for all of them. Pure: ``now``
comes in."""

from __future__ import annotations

from collections import OrderedDict


class LogLimit:
    """A token bucket of ``burst`` lines, one more each ``every_s`` seconds
    (``burst`` 1: the first at once, then one per ``every_s``)."""

    def __init__(self, *, every_s: float, burst: int = 1) -> None:
        if every_s < 0:
            raise ValueError("every_s must not be negative")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.every_s, self.burst = every_s, burst
        self._tokens = float(burst)
        self._at: float | None = None        # when the tokens were counted last
        self.left_out = 0                    # occurrences not written since the last line

    def allows(self, now: float) -> bool:
        """Whether a line may be written at ``now`` (nothing is taken)."""
        return self._refilled(now) >= 1.0

    def _refilled(self, now: float) -> float:
        if self._at is None:
            return self._tokens
        if self.every_s == 0:
            return float(self.burst)
        return min(float(self.burst), self._tokens + max(0.0, now - self._at) / self.every_s)

    def take(self, now: float) -> int | None:
        """One occurrence at ``now``: None to leave its line out, else the
        number left out since the previous line (0: none), to say in it."""
        tokens = self._refilled(now)
        if tokens < 1.0:
            self.left_out += 1
            return None
        self._tokens, self._at = tokens - 1.0, now
        left_out, self.left_out = self.left_out, 0
        return left_out

    def skip(self) -> None:
        """One occurrence left out by a limit above this one."""
        self.left_out += 1


class LogLimits:
    """One :class:`LogLimit` per key (``every_s``, ``burst``), at most
    ``max_keys`` of them (the least recently used goes), and all of them
    under one more (``total_every_s``, ``total_burst``): a flood from many
    sources writes a bounded number of lines too."""

    def __init__(self, *, every_s: float, burst: int = 1, max_keys: int = 1000, total_every_s: float = 1.0,
                 total_burst: int = 100) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.every_s, self.burst, self.max_keys = every_s, burst, max_keys
        self.total = LogLimit(every_s=total_every_s, burst=total_burst)
        self._keys: OrderedDict[str, LogLimit] = OrderedDict()

    def take(self, key: str, now: float) -> int | None:
        """As :meth:`LogLimit.take`, for the line of ``key``."""
        limit = self._keys.pop(key, None) or LogLimit(every_s=self.every_s, burst=self.burst)
        self._keys[key] = limit
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        if not limit.allows(now) or not self.total.allows(now):
            limit.skip()
            return None
        self.total.take(now)
        return limit.take(now)
