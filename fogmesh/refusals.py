"""Messages refused at the boundary (malformed, over their limits, or
speaking for another box than their topic names): counted by kind, and said
at most once per ``every_s`` seconds, with how many came since. A flood of
garbage costs a consumer one log line a minute, not one per message. Pure:
the shell asks :meth:`Refusals.due` with ``now`` and logs what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fogmesh.fields import short

SAY_EVERY_S = 60.0


@dataclass
class Refusals:
    every_s: float = SAY_EVERY_S
    total: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)    # kinds are the consumer's own names: bounded
    _unsaid: int = 0
    _said_at: float | None = None
    _latest: str = ""

    def refuse(self, kind: str, topic: str, reason: str) -> None:
        """One message of ``kind`` (``presence``, ``task``...) on ``topic`` refused, because ``reason``."""
        self.total += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self._unsaid += 1
        self._latest = f"{kind} on {short(topic, 100)}: {short(reason, 200)}"

    def summary(self) -> str:
        """All refused so far, by kind, and the latest: for a command's one-off report."""
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items()))
        return f"refused {self.total} malformed or forged message(s) ({kinds}); the latest: {self._latest}"

    def due(self, now: float) -> str | None:
        """The line to log now, if any: the first refusal at once, then at
        most one line per ``every_s`` while more come."""
        if not self._unsaid or (self._said_at is not None and now - self._said_at < self.every_s):
            return None
        since = "" if self._said_at is None else f" in the last {now - self._said_at:.0f} s"
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items()))
        line = (f"refused {self._unsaid} malformed or forged message(s){since} ({self.total} since start: "
                f"{kinds}); the latest: {self._latest}")
        self._unsaid, self._said_at = 0, now
        return line
