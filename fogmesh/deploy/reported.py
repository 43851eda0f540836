"""What an agent says about its deployments (retained on
``{root}/deploy/reported/{agent}``), and the fleet counters read from those
reports. Pure.

States of the step under way: ``idle`` (nothing to do), ``downloading``
(with ``progress``, and ``received``: the chunk bytes taken in so far,
repeats after a cut link included), ``installing``, ``health-check``, ``running`` (done),
``failed``, ``rolled_back`` (the new version failed its health check; the
old one serves), ``refused`` (not applied: ``reason`` says why). ``trust``
(an addition): the ids of the keys the agent trusts, for ``fogmesh deploy``
to check its key against.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from fogmesh.deploy.desired import Identity

STATES = ("idle", "downloading", "installing", "health-check", "running", "failed", "rolled_back", "refused")
FAILED = ("failed", "rolled_back", "refused")

__all__ = ["FAILED", "STATES", "FleetCounts", "Report", "count_fleet"]


@dataclass(frozen=True)
class Report:
    agent: str
    site: str = "default"
    labels: tuple[str, ...] = ()
    desired_serial: int = 0
    applied_serial: int = 0
    state: str = "idle"
    bundle: str | None = None           # the bundle the state is about
    version: str | None = None
    reason: str | None = None
    detail: str = ""
    progress: float | None = None
    received: int = 0                   # chunk bytes this download took in, repeats included
    bundles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)   # name -> version, kinds, restarts
    at: float = 0.0
    trust: tuple[str, ...] = ()         # ids of the keys it takes deployments signed by (an addition)

    def but(self, **changes: Any) -> Report:
        return replace(self, **changes)

    @property
    def identity(self) -> Identity:
        return Identity(self.agent, self.site, frozenset(self.labels))

    def to_dict(self) -> dict[str, Any]:
        d = {"agent": self.agent, "site": self.site, "labels": list(self.labels),
             "desired_serial": self.desired_serial, "applied_serial": self.applied_serial, "state": self.state,
             "bundle": self.bundle, "version": self.version, "reason": self.reason, "detail": self.detail,
             "bundles": {k: dict(v) for k, v in self.bundles.items()}, "at": self.at, "trust": list(self.trust)}
        if self.progress is not None:
            d["progress"] = round(self.progress, 3)
        if self.received:
            d["received"] = self.received
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Report:
        return cls(agent=str(d["agent"]), site=str(d.get("site", "default")), labels=tuple(d.get("labels") or ()),
                   desired_serial=int(d.get("desired_serial", 0)), applied_serial=int(d.get("applied_serial", 0)),
                   state=str(d.get("state", "idle")), bundle=d.get("bundle"), version=d.get("version"),
                   reason=d.get("reason"), detail=str(d.get("detail", "")), progress=d.get("progress"),
                   received=int(d.get("received", 0)),
                   bundles=d.get("bundles") or {}, at=float(d.get("at", 0.0)),
                   trust=tuple(str(k) for k in d.get("trust") or ()))


@dataclass(frozen=True)
class FleetCounts:
    targeted: int
    applied: int
    succeeded: int
    failed: int
    in_progress: int

    def line(self) -> str:
        return (f"targeted {self.targeted}, applied {self.applied}, succeeded {self.succeeded}, "
                f"failed {self.failed}, in progress {self.in_progress}")


def count_fleet(reports: Iterable[Report], *, target: str, serial: int) -> FleetCounts:
    """Azure-style counters for the deployment ``serial`` to ``target``."""
    mine = [r for r in reports if r.identity.matches(target)]
    applied = [r for r in mine if r.applied_serial >= serial]
    failed = [r for r in mine if r.desired_serial >= serial and r.state in FAILED and r.applied_serial < serial]
    ok = [r for r in applied if r.state not in FAILED]
    return FleetCounts(targeted=len(mine), applied=len(applied), succeeded=len(ok), failed=len(failed),
                       in_progress=len(mine) - len(applied) - len(failed))
