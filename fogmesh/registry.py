"""Task kinds and where they come from.

A kind is a plain function ``args -> JSON value`` plus how to run it. Kinds are
found through the Python entry-point group ``fogmesh.tasks``, so a user adds
one with a ``pyproject.toml`` line in their own package, never by editing
fogmesh. The same registry feeds edge agents and cloud workers, so a heavy
kind runs the same code in both tiers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any, Callable, Iterable, Mapping

from fogmesh.errors import BadArgs, UnknownKind  # noqa: F401  (BadArgs: re-exported for handlers)
from fogmesh.messages import WEIGHTS

ENTRY_POINT_GROUP = "fogmesh.tasks"
log = logging.getLogger(__name__)

Handler = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class TaskKind:
    """One kind of task.

    ``inline`` kinds run on the agent's dispatcher thread: only for handlers
    that are pure, tiny and cannot hang (echo, sum), because it saves the
    hand-off to a worker process and keeps the light-task round trip close to
    raw MQTT. Everything else runs in a worker process that is killed when it
    passes ``timeout_s``, so a hung or CPU-bound handler never blocks MQTT.
    """

    name: str
    handler: Handler
    weight: str = "light"
    timeout_s: float = 30.0
    inline: bool = False
    description: str = ""
    # A deployed kind (fogmesh.deploy.kinds): its handler is a small picklable
    # loader sent with each job, since the workers started before it existed.
    ships_handler: bool = False

    def __post_init__(self) -> None:
        if self.weight not in WEIGHTS:
            raise ValueError(f"kind {self.name!r}: weight must be one of {WEIGHTS}")
        if self.timeout_s <= 0:
            raise ValueError(f"kind {self.name!r}: timeout_s must be positive")


@dataclass(frozen=True)
class Registry:
    """An immutable name -> :class:`TaskKind` map."""

    kinds: Mapping[str, TaskKind] = field(default_factory=dict)

    def get(self, name: str) -> TaskKind:
        try:
            return self.kinds[name]
        except KeyError:
            known = ", ".join(sorted(self.kinds)) or "none"
            raise UnknownKind(f"unknown kind {name!r}; this worker runs: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.kinds

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.kinds))

    def with_kinds(self, *kinds: TaskKind) -> Registry:
        merged = dict(self.kinds)
        merged.update({k.name: k for k in kinds})
        return Registry(merged)

    def with_timeouts(self, timeouts: Mapping[str, float]) -> Registry:
        """Override per-kind timeouts (``--timeout sleep=2``)."""
        merged = dict(self.kinds)
        for name, seconds in timeouts.items():
            merged[name] = replace(self.get(name), timeout_s=seconds)
        return Registry(merged)

    def only(self, names: Iterable[str]) -> Registry:
        return Registry({n: self.get(n) for n in names})

    @classmethod
    def from_entry_points(cls, group: str = ENTRY_POINT_GROUP) -> Registry:
        """Load every kind installed in ``group``; a broken plugin is logged and skipped."""
        kinds: dict[str, TaskKind] = {}
        for ep in entry_points(group=group):
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not take the agent down
                log.warning("skipping task kind %r from %s: %s", ep.name, ep.value, exc)
                continue
            kind = obj if isinstance(obj, TaskKind) else TaskKind(name=ep.name, handler=obj)
            if kind.name != ep.name:
                kind = replace(kind, name=ep.name)
            kinds[ep.name] = kind
        return cls(kinds)
