"""The install flow's vocabulary (:mod:`fogmesh.deploy.flow`): the events the
receiver feeds it, and the effects it asks the receiver to carry out. Pure
data.

An effect with a ``step`` ends in one outcome the receiver feeds back:
``Done(step)`` or ``Failed(step, code, detail)`` (a :class:`DeployRefused`
it raised, or ``unexpected`` for any other error). The flow asks for one
such step at a time; the two that wait on the broker (the manifest, the
download) end with :class:`ManifestArrived` or :class:`Progress` events
and ``Done``, or when the flow stops them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Union

from fogmesh.deploy.desired import Applied, Desired
from fogmesh.deploy.manifest import Manifest
from fogmesh.deploy.reported import Report

__all__ = ["AskHealth", "CheckCompat", "Discard", "DesiredChanged", "DocumentRefused", "Done", "DropStaging",
           "Effect", "Event", "Failed", "FetchManifest", "HealthCheck", "HealthReply", "Install", "Log",
           "ManifestArrived", "Progress", "Publish", "PullImages", "Save", "StartDownload", "StopDownload",
           "StopManifest", "Switch", "Tick", "Tidy"]


# -- events: what happened ------------------------------------------------------------
@dataclass(frozen=True)
class DesiredChanged:
    """The desired states the agent holds changed: all of them, as taken now."""

    docs: tuple[Desired, ...]


@dataclass(frozen=True)
class DocumentRefused:
    """A desired state not taken (its signature, or :mod:`fogmesh.deploy.freshness`'s
    verdict); ``serial``: the one the report counts this agent failed for (0: none)."""

    code: str
    detail: str
    serial: int = 0


@dataclass(frozen=True)
class Tick:
    """Time passed: a deadline or a retry may be due."""


@dataclass(frozen=True)
class ManifestArrived:
    """The awaited manifest, its signature and digest checked."""

    manifest: Manifest


@dataclass(frozen=True)
class Progress:
    """The download under way: the share of chunks in, the chunk bytes taken in (repeats included)."""

    progress: float
    received: int


@dataclass(frozen=True)
class HealthReply:
    """A reply on the agent's ``deploy-health`` topic (decoded; any task's)."""

    reply: Mapping[str, Any]


@dataclass(frozen=True)
class Done:
    step: str


@dataclass(frozen=True)
class Failed:
    step: str
    code: str
    detail: str


Event = Union[DesiredChanged, DocumentRefused, Tick, ManifestArrived, Progress, HealthReply, Done, Failed]


# -- effects: what the receiver does ----------------------------------------------------
@dataclass(frozen=True)
class Publish:
    """The agent's report, retained (the receiver stamps ``at``)."""

    report: Report


@dataclass(frozen=True)
class Log:
    level: str          # "info" or "warning"
    text: str
    limited: bool = False   # a line hostile input can repeat (a refused document): rate-limited


@dataclass(frozen=True)
class Save:
    """``applied.json``: what runs (with the serials taken, which the receiver's book holds)."""

    applied: Mapping[str, Applied]
    extras: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Tidy:
    """Remove the environments not of ``envs``, and the staged downloads not
    in ``staging`` (None: keep every staged download)."""

    envs: tuple[Applied, ...]
    staging: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DropStaging:
    digest: str


@dataclass(frozen=True)
class FetchManifest:
    """Subscribe to the bundle's manifest; it comes as :class:`ManifestArrived`."""

    step: ClassVar[str] = "manifest"
    digest: str


@dataclass(frozen=True)
class StopManifest:
    digest: str


@dataclass(frozen=True)
class CheckCompat:
    """The wheels' tags and Requires-Python against this interpreter."""

    step: ClassVar[str] = "compat"
    manifest: Manifest


@dataclass(frozen=True)
class PullImages:
    step: ClassVar[str] = "pull"
    manifest: Manifest


@dataclass(frozen=True)
class StartDownload:
    """The payload's chunks it lacks, a window at a time (:mod:`fogmesh.deploy.downloading`)."""

    step: ClassVar[str] = "download"
    manifest: Manifest


@dataclass(frozen=True)
class StopDownload:
    """Stop asking for chunks (what is staged stays, for a resume)."""

    digest: str


@dataclass(frozen=True)
class Install:
    """Check the whole payload, install its wheels into the bundle's own environment."""

    step: ClassVar[str] = "install"
    manifest: Manifest


@dataclass(frozen=True)
class HealthCheck:
    """Each kind's health task in a process (or container) of its own, before the switch."""

    step: ClassVar[str] = "health"
    manifest: Manifest


@dataclass(frozen=True)
class Discard:
    """A version that will not run: its environment, and any container its check started."""

    manifest: Manifest


@dataclass(frozen=True)
class Switch:
    """The agent's kinds become those of ``applied`` (the agent's ``switch``)."""

    step: ClassVar[str] = "switch"
    applied: Mapping[str, Applied] = field(default_factory=dict)


@dataclass(frozen=True)
class AskHealth:
    """Send the agent itself ``kind``'s health task ``task`` (the check after the switch)."""

    kind: str
    task: str
    args: Mapping[str, Any] = field(default_factory=dict)


Effect = Union[Publish, Log, Save, Tidy, DropStaging, FetchManifest, StopManifest, CheckCompat, PullImages,
               StartDownload, StopDownload, Install, HealthCheck, Discard, Switch, AskHealth]
