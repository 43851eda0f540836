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
from fogmesh.errors import InvalidMessage
from fogmesh.fields import MAX_NAME, MAX_NAMES, Fields, decode_announcement, short

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
    def from_dict(cls, d: Any, *, agent: str | None = None) -> Report:
        """Strict: each field present has the type topics.md shows
        ("Reported state"), or :class:`InvalidMessage`. ``agent``: the one the
        topic names (``deploy/reported/{agent}``); a report that says another
        is refused."""
        f = Fields(d, "deployment report")
        name = f.box_id("agent")
        if agent is not None and name != agent:
            raise InvalidMessage("bad_field", f"a report on deploy/reported/{short(agent)} speaks for "
                                 f"{short(name)!r}: an agent reports only its own state (the topic names it)")
        bundles = {}
        for bundle, info in f.mapping("bundles").items():
            b = Fields(info, f"deployment report bundle {short(bundle)!r}")
            if not 0 < len(bundle) <= MAX_NAME:
                raise f.bad("bundles", f"keyed by bundle names of 1-{MAX_NAME} characters")
            bundles[bundle] = {"version": b.text("version", MAX_NAME), "serial": b.count("serial"),
                               "kinds": list(b.names("kinds")), "restarts": b.count("restarts")}
        if len(bundles) > MAX_NAMES:
            raise f.bad("bundles", f"at most {MAX_NAMES} bundles")
        progress = f.number("progress", None)
        if progress is not None and not 0.0 <= progress <= 1.0:
            raise f.bad("progress", "a number from 0 to 1")
        return cls(agent=name, site=f.text("site", MAX_NAME) or "default", labels=f.names("labels"),
                   desired_serial=f.count("desired_serial"), applied_serial=f.count("applied_serial"),
                   state=f.choice("state", STATES) if "state" in f.d else "idle", bundle=f.text("bundle", MAX_NAME),
                   version=f.text("version", MAX_NAME), reason=f.text("reason", 64),
                   detail=f.text("detail", 2000) or "", progress=progress, received=f.count("received"),
                   bundles=bundles, at=f.number("at", 0.0), trust=f.names("trust"))

    @classmethod
    def decode(cls, payload: bytes, *, agent: str) -> Report:
        """The report retained on ``deploy/reported/{agent}``, checked against its topic."""
        return cls.from_dict(decode_announcement(payload, "deployment report"), agent=agent)


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
