"""When a stopping or draining agent leaves. Pure: ``now`` comes in.

A stop (``Agent.stop``) leaves once nothing is held or at its deadline. A
drain first lets the broker settle: tasks it routed here before the
unsubscribe took effect arrive in a quiet half second, then it finishes
everything held (up to an hour) and leaves.
"""

from __future__ import annotations

POLL_S = 0.05        # how often a stopping agent looks whether it is done
DRAIN_QUIET_S = 0.5
DRAIN_LIMIT_S = 3600.0


class StopPlan:
    def __init__(self) -> None:
        self.by: float | None = None          # leave at the latest then
        self.quiet_until = 0.0
        self.draining = False

    @property
    def stopping(self) -> bool:
        return self.by is not None

    def asked(self, by: float) -> None:
        self.by = by

    def drain(self, now: float) -> None:
        """The drain began; the stop is planned at the next look (:meth:`look`)."""
        self.draining = True

    def look(self, now: float) -> None:
        """A draining agent plans its stop once (then waits out the quiet)."""
        if self.draining and self.by is None:
            self.by = now + DRAIN_LIMIT_S
            self.quiet_until = now + DRAIN_QUIET_S

    def quiet(self, now: float) -> bool:
        return self.draining and now < self.quiet_until

    def ends(self, now: float, *, held: int) -> bool:
        return self.by is not None and (held == 0 or now >= self.by)

    def poll_at(self, now: float) -> float:
        return now + POLL_S if self.by is not None else float("inf")
