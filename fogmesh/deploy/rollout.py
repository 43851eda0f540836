"""The canary rollout's decisions, with an injected clock. Pure.

``fogmesh deploy --canaries N`` holds the rollout: it points N agents of the
target at the new version first (each by its own ``agent:ID`` document),
watches their reports, and when at least ``--max-failures`` percent of
them fail (or have not applied it within the deadline), rolls them back;
when all run it and ``--soak`` seconds have passed, points the whole target
at it. The other agents never see the new version before that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from fogmesh.deploy.reported import FAILED, Report

__all__ = ["CanaryVerdict", "choose_canaries", "judge_canaries"]


@dataclass(frozen=True)
class CanaryVerdict:
    """``wait`` (until ``until``), ``proceed`` or ``roll_back`` (``why``)."""

    action: str
    why: str = ""
    until: float | None = None


def choose_canaries(online: Sequence[str], count: int) -> list[str]:
    """The first ``count`` agents by id: the same choice on a re-run."""
    return sorted(online)[:max(0, count)]


def judge_canaries(reports: Mapping[str, Report | None], *, serial: int, started: float, now: float,
                   soak_s: float, deadline_s: float, max_failures_pct: float) -> CanaryVerdict:
    """``reports``: each canary's newest report (None: none yet).

    A canary has failed when it reports a failure for this serial; one that
    has not applied it by ``started + deadline_s`` counts as failed too (an
    agent that went quiet must not hold the rollout). The rollout proceeds
    once every canary runs it and ``soak_s`` has passed since the start with
    failures under the threshold; it rolls back as soon as the failures
    reach it."""
    if not reports:
        return CanaryVerdict("roll_back", "no canary online")
    failed, running, waiting = [], [], []
    for agent, r in sorted(reports.items()):
        if r is not None and r.applied_serial >= serial and r.state not in FAILED:
            running.append(agent)
        elif r is not None and r.desired_serial >= serial and r.state in FAILED:
            failed.append(f"{agent}: {r.reason or r.state}")
        elif now >= started + deadline_s:
            failed.append(f"{agent}: no result within {deadline_s:.0f} s")
        else:
            waiting.append(agent)
    share = 100.0 * len(failed) / len(reports)
    if failed and share >= max_failures_pct:
        return CanaryVerdict("roll_back", f"{len(failed)} of {len(reports)} canaries failed ({share:.0f}% >= "
                             f"{max_failures_pct:g}%): " + "; ".join(failed))
    if waiting:
        return CanaryVerdict("wait", f"waiting for {', '.join(waiting)}", until=started + deadline_s)
    if now < started + soak_s:
        return CanaryVerdict("wait", f"soaking until {soak_s:.0f} s have passed", until=started + soak_s)
    return CanaryVerdict("proceed", f"{len(running)} of {len(reports)} canaries run it"
                         + (f" ({len(failed)} failed, under {max_failures_pct:g}%)" if failed else ""))
