"""Which chunks of a bundle to ask for, with an injected clock. Pure.

Chunks are retained on ``{root}/deploy/chunks/{digest}/{i}``: subscribing to
one is asking for it, and the broker sends it at once. An agent asks for a
window of chunks at a time (never the whole bundle: a session queue or an
in-flight window would overflow), and for only the ones it lacks, so a
download cut by a link drop or a restart resumes where it was; what comes
twice is at most the window that was under way. A chunk whose digest does
not match is asked for again, up to ``tries`` times (then the bundle on
the broker is corrupt: ``digest_mismatch``); a download with no chunk for ``stall_s`` asks
again for its window, and fails with ``download_stalled`` after ``give_up_s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ChunkFetch"]


@dataclass
class ChunkFetch:
    count: int
    window: int = 4
    stall_s: float = 10.0
    give_up_s: float = 120.0
    missing: set[int] = field(default_factory=set)
    asked: set[int] = field(default_factory=set)
    last_progress: float = 0.0
    last_asked: float = 0.0      # the window was last asked for again (a stall)
    tries: int = 3
    bad: dict[int, int] = field(default_factory=dict)    # chunk -> arrivals with a wrong digest

    @classmethod
    def resuming(cls, count: int, have: set[int], now: float, **options: float) -> ChunkFetch:
        f = cls(count=count, **options)   # type: ignore[arg-type]
        f.missing = set(range(count)) - have
        f.last_progress = f.last_asked = now
        return f

    @property
    def done(self) -> bool:
        return not self.missing

    @property
    def progress(self) -> float:
        return 1.0 - len(self.missing) / self.count if self.count else 1.0

    def to_ask(self) -> list[int]:
        """Chunks to subscribe to now, lowest first, filling the window."""
        room = self.window - len(self.asked)
        if room <= 0:
            return []
        picked = sorted(self.missing - self.asked)[:room]
        self.asked.update(picked)
        return picked

    def got(self, index: int, *, ok: bool, now: float) -> bool:
        """A chunk arrived (``ok``: its digest matched). True if it was new."""
        self.asked.discard(index)
        if index not in self.missing:
            return False
        if not ok:
            self.bad[index] = self.bad.get(index, 0) + 1
            return False
        self.missing.discard(index)
        self.last_progress = now
        return True

    def corrupt(self) -> int | None:
        """A chunk that came with a wrong digest ``tries`` times, if any."""
        return next((i for i, n in sorted(self.bad.items()) if n >= self.tries), None)

    def stalled(self, now: float) -> bool:
        """No new chunk for ``stall_s``: the caller asks for its window again."""
        return not self.done and now - max(self.last_progress, self.last_asked) >= self.stall_s

    def again(self, now: float) -> list[int]:
        """Ask again for what was asked and has not come (after a stall or reconnect)."""
        self.last_asked = now
        return sorted(self.asked)

    def given_up(self, now: float) -> bool:
        return not self.done and now - self.last_progress >= self.give_up_s
