"""How often a repeating log line is written: the first at once, then at most
one per ``every_s`` seconds, each saying how many were left out since the
previous one. For lines a fault repeats many times a second (a client whose
broker node is down connects and drops 20 times a second). Pure: ``now`` comes
in."""

from __future__ import annotations


class LogLimit:
    def __init__(self, *, every_s: float) -> None:
        if every_s < 0:
            raise ValueError("every_s must not be negative")
        self.every_s = every_s
        self._last: float | None = None      # when the last line was written
        self.left_out = 0                    # occurrences not written since then

    def take(self, now: float) -> int | None:
        """One occurrence at ``now``: None to leave its line out, else the
        number left out since the previous line (0: none), to say in it."""
        if self._last is not None and now - self._last < self.every_s:
            self.left_out += 1
            return None
        self._last, left_out, self.left_out = now, self.left_out, 0
        return left_out

