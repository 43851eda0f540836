"""When an agent publishes its deployment report (retained on
``deploy/reported/{agent}``). Pure: ``now`` comes in.

A report the same as the last one published (but for its ``at``) is not
published again; a refusal that follows a refusal published less than
``every_s`` ago is held, and the latest one held goes out once that time has
come. Anything else goes out at once (and replaces what is held). So a
flood of bad documents (each one a refusal) costs one report each
``every_s``, not one each, and the report still ends saying the latest."""

from __future__ import annotations

from fogmesh.deploy.reported import Report

__all__ = ["ReportGate"]


def _same(a: Report, b: Report) -> bool:
    return a.but(at=0.0) == b.but(at=0.0)


class ReportGate:
    def __init__(self, *, every_s: float) -> None:
        self.every_s = every_s
        self.last: Report | None = None         # the last published
        self.last_at = float("-inf")            # when
        self.held: Report | None = None

    def offer(self, report: Report, now: float) -> Report | None:
        """The report to publish at ``now``, or None (unchanged, or held)."""
        if self.last is not None and _same(report, self.last):
            self.held = None                     # what is out is current again
            return None
        if report.state == "refused" and self.last is not None and self.last.state == "refused" \
                and now < self.last_at + self.every_s:
            self.held = report
            return None
        return self._out(report, now)

    def due(self, now: float) -> Report | None:
        """The held report, if its time has come."""
        at = self.wake_at()
        if self.held is None or at is None or now < at:
            return None
        return self._out(self.held, now)

    def wake_at(self) -> float | None:
        """When the held report is due (None: none is held)."""
        return self.last_at + self.every_s if self.held is not None else None

    def _out(self, report: Report, now: float) -> Report:
        self.last, self.last_at, self.held = report, now, None
        return report
