"""The install flow's state and its tables (:mod:`fogmesh.deploy.flow` steps
it). Pure data.

:data:`STAGES`: a job's stages, in order, and what a newer desired state does
to each. :data:`FAILURES`: what a failure's code makes of the job: the
report's state, whether and when it is tried again, whether its staged
download stays. Any code not in it is :data:`REFUSED`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from fogmesh.deploy.desired import Applied, Change, Desired, Identity
from fogmesh.deploy.manifest import Manifest
from fogmesh.deploy.reported import Report
from fogmesh.topics import Topics

__all__ = ["BACKOFF", "FAILURES", "NEVER", "REFUSED", "STAGES", "Flow", "FlowOptions", "Job", "Key", "Outcome",
           "Retry", "Stage", "Tries", "abandoned", "reported", "start", "wake_at"]

NEVER = float("inf")
Key = tuple[str, str | None, int]         # a change: (bundle, digest, serial)


@dataclass(frozen=True)
class Stage:
    """One row of the table. ``step``: the effect whose outcome ends the stage
    ("": health replies and deadlines end it); ``then``: the stage after it
    ("": the job is done); ``newer``: what a desired state that no longer
    wants the job's bundle does there: ``cancel`` the job at once, stop it
    when this ``step`` has ended, or let the ``job`` end (a switch ends
    checked, or switched back); ``undo``: a job stopped after this step
    discards what the step built."""

    step: str
    then: str
    newer: str
    undo: bool = False


STAGES: Mapping[str, Stage] = {
    "manifest": Stage("manifest", "compat", "cancel"),
    "compat": Stage("compat", "pull", "step"),
    "pull": Stage("pull", "download", "step"),
    "download": Stage("download", "install", "cancel"),
    "install": Stage("install", "health", "step", undo=True),
    "health": Stage("health", "switch", "step", undo=True),
    "switch": Stage("switch", "self_check", "job"),
    "self_check": Stage("", "", "job"),
    "switch_back": Stage("switch", "", "job"),
    "remove": Stage("switch", "", "job"),
}


@dataclass(frozen=True)
class Retry:
    """Tried ``attempts`` times in all: again after ``first_s``, each wait
    ``factor`` times the one before, at most ``max_s``; then given up."""

    attempts: int
    first_s: float
    factor: float = 2.0
    max_s: float = 600.0

    def delay(self, tries: int) -> float:
        return min(self.max_s, self.first_s * self.factor ** (tries - 1))


@dataclass(frozen=True)
class Outcome:
    """A failed job: the report's ``state``; tried again (``retry``) or not
    for the same serial; its staged download kept (``keep_staging``) or dropped."""

    state: str
    retry: Retry | None = None
    keep_staging: bool = False


BACKOFF = Retry(attempts=8, first_s=30.0)          # 30 s, 1, 2, 4, 8, 10, 10 min: ~35 min, then given up
FAILURES: Mapping[str, Outcome] = {
    "download_stalled": Outcome("failed", BACKOFF, keep_staging=True),
    "manifest_missing": Outcome("failed", BACKOFF, keep_staging=True),
    "no_space": Outcome("failed", BACKOFF, keep_staging=True),
    "image_pull_failed": Outcome("failed", BACKOFF, keep_staging=True),
    "unexpected": Outcome("failed", BACKOFF, keep_staging=True),     # the agent's own error (logged)
    "install_failed": Outcome("failed"),
    "health_check_failed": Outcome("rolled_back"),
}
REFUSED = Outcome("refused")        # any other code: not applied, not tried again for this serial


@dataclass(frozen=True)
class FlowOptions:
    me: Identity
    topics: Topics
    max_bundle_bytes: int = 100 * 1024 * 1024
    manifest_timeout_s: float = 30.0
    health_timeout_s: float = 10.0
    live_check: bool = True          # after the switch, send the agent its own health tasks


@dataclass(frozen=True)
class Tries:
    count: int
    retry_at: float                  # NEVER: not again for this serial


@dataclass(frozen=True)
class Job:
    change: Change
    stage: str
    manifest: Manifest | None = None
    deadline: float | None = None    # the manifest, or the health task awaited
    received: int = 0
    shown: float = -1.0              # download progress last reported
    before: Applied | None = None    # what ran before the switch (for the switch back)
    before_extras: Mapping[str, Any] = field(default_factory=dict)
    to: Mapping[str, Applied] = field(default_factory=dict)          # what runs once switched
    to_extras: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    kinds: tuple[str, ...] = ()      # self-check: the kinds still to ask
    kind: str = ""                   # self-check: the kind asked, and its task
    task: str = ""
    trouble: str = ""                # switching back: why
    superseded: bool = False


@dataclass(frozen=True)
class Flow:
    o: FlowOptions
    report: Report
    applied: Mapping[str, Applied] = field(default_factory=dict)
    extras: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    docs: tuple[Desired, ...] = ()
    tries: Mapping[Key, Tries] = field(default_factory=dict)
    job: Job | None = None
    dirty: bool = False              # a newer desired state came during the job: a new pass after it
    asked: int = 0                   # health tasks sent (numbers their ids)


def start(o: FlowOptions, *, applied: Mapping[str, Applied] | None = None,
          extras: Mapping[str, Mapping[str, Any]] | None = None, trust: tuple[str, ...] = ()) -> Flow:
    report = Report(agent=o.me.agent, site=o.me.site, labels=tuple(sorted(o.me.labels)), trust=trust)
    return Flow(o, report, dict(applied or {}), dict(extras or {}))


def reported(flow: Flow, **changes: Any) -> Report:
    """The report with ``changes`` and the bundles that run now."""
    bundles = {a.name: {"version": a.version, "serial": a.serial, **flow.extras.get(a.name, {})}
               for a in flow.applied.values()}
    return flow.report.but(bundles=bundles, **changes)


def abandoned(flow: Flow) -> Flow:
    """The flow after its own error (a defect): the job under way is dropped
    without a verdict; the next desired state or retry starts a new pass."""
    return replace(flow, job=None, dirty=False)


def wake_at(flow: Flow) -> float | None:
    """When to :class:`Tick` at the latest (None: nothing is timed)."""
    if flow.job is not None:
        return flow.job.deadline
    return min((t.retry_at for t in flow.tries.values() if t.retry_at != NEVER), default=None)
