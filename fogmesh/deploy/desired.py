"""Desired state: which bundles the operator wants where, and what an agent
makes of the documents addressed to it. Pure.

One retained, signed document per target (``agent:ID``, ``site:NAME``,
``label:L``, ``all``) lists bundles by name, each a version (with the
bundle's digest) or ``absent`` (removed). An agent takes every document
whose target matches it; for each bundle name the newest serial decides.
Serials only grow: a document older than the last one an agent took for
that target is a replay and is refused (``stale_serial``); a version older
than the one applied is refused (``downgrade``) unless the document is a
signed rollback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from fogmesh.deploy.compat import is_older
from fogmesh.errors import DeployRefused
from fogmesh.fields import MAX_COUNT

#: The largest serial: every JSON reader keeps it exact (JavaScript's 2**53 too).
MAX_SERIAL = MAX_COUNT


def valid_serial(value: Any) -> bool:
    """A whole number (not a bool, not a float) from 0 to :data:`MAX_SERIAL`."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SERIAL


FORMAT = "fogmesh-desired/1"
TARGET_KINDS = ("agent", "site", "label", "all")

__all__ = ["Applied", "BundleRef", "Change", "Desired", "Identity", "changes", "effective", "parse_target"]


def parse_target(text: str) -> str:
    """``agent:ID``, ``site:NAME``, ``label:L`` or ``all``, checked."""
    if text == "all":
        return text
    kind, sep, name = text.partition(":")
    if not sep or kind not in TARGET_KINDS[:3] or not name or any(c in name for c in "/+#:\x00"):
        raise ValueError(f"target {text!r}: use agent:ID, site:NAME, label:L or all")
    return text


@dataclass(frozen=True)
class Identity:
    """What an agent answers to."""

    agent: str
    site: str = "default"
    labels: frozenset[str] = frozenset()

    def matches(self, target: str) -> bool:
        kind, _, name = target.partition(":")
        return (target == "all" or (kind == "agent" and name == self.agent) or (kind == "site" and name == self.site)
                or (kind == "label" and name in self.labels))


@dataclass(frozen=True)
class BundleRef:
    """One bundle in a desired state: a version (``digest``: its manifest's)
    or ``absent``."""

    name: str
    version: str | None = None
    digest: str | None = None
    size: int = 0
    kinds: tuple[str, ...] = ()       # what it registers (for `deploy remove KIND` and status)

    @property
    def absent(self) -> bool:
        return self.digest is None

    def to_dict(self) -> dict[str, Any]:
        if self.absent:
            return {"name": self.name, "absent": True}
        return {"name": self.name, "version": self.version, "bundle": self.digest, "size": self.size,
                "kinds": list(self.kinds)}

    @classmethod
    def from_dict(cls, d: Any) -> BundleRef:
        if d.get("absent"):
            return cls(name=str(d["name"]))
        return cls(name=str(d["name"]), version=str(d["version"]), digest=str(d["bundle"]), size=int(d.get("size", 0)),
                   kinds=tuple(str(k) for k in d.get("kinds", ())))


@dataclass(frozen=True)
class Desired:
    target: str
    serial: int
    bundles: tuple[BundleRef, ...]
    rollback: bool = False
    issued: float = 0.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "target": self.target, "serial": self.serial, "rollback": self.rollback,
                "bundles": [b.to_dict() for b in self.bundles], "issued": self.issued, "note": self.note}

    @classmethod
    def from_dict(cls, d: Any) -> Desired:
        try:
            if d.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} document")
            serial = d["serial"]
            if not valid_serial(serial):
                raise ValueError(f"serial must be a whole number from 0 to {MAX_SERIAL}")
            return cls(target=parse_target(str(d["target"])), serial=serial,
                       bundles=tuple(BundleRef.from_dict(b) for b in d["bundles"]),
                       rollback=bool(d.get("rollback", False)), issued=float(d.get("issued", 0.0)),
                       note=str(d.get("note", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DeployRefused("bad_document", f"a desired-state document is malformed: {exc}") from exc

    def with_bundle(self, ref: BundleRef) -> tuple[BundleRef, ...]:
        """This document's bundles with ``ref`` in place of its name's entry."""
        return tuple(b for b in self.bundles if b.name != ref.name) + (ref,)


@dataclass(frozen=True)
class Applied:
    """A bundle an agent runs."""

    name: str
    version: str
    digest: str
    serial: int


@dataclass(frozen=True)
class Change:
    """Install ``want`` (or remove ``name`` when ``want`` is absent)."""

    name: str
    want: BundleRef
    serial: int
    rollback: bool


@dataclass
class Wanted:
    """The winning entry per bundle name, and the newest serial seen."""

    refs: dict[str, tuple[BundleRef, int, bool]] = field(default_factory=dict)
    serial: int = 0


def effective(docs: Iterable[Desired], me: Identity) -> Wanted:
    """What ``me`` should run, from the documents addressed to it."""
    out = Wanted()
    for doc in sorted((d for d in docs if me.matches(d.target)), key=lambda d: d.serial):
        out.serial = max(out.serial, doc.serial)
        for ref in doc.bundles:
            out.refs[ref.name] = (ref, doc.serial, doc.rollback)
    return out


def check_serial(doc: Desired, taken: Mapping[str, int]) -> None:
    """Refuse a replayed document: older than the last one taken for its target."""
    last = taken.get(doc.target, 0)
    if doc.serial < last:
        raise DeployRefused("stale_serial", f"desired state for {doc.target} has serial {doc.serial}, older than "
                            f"{last} already applied: a replay, or a deploy from an outdated copy; not applied")


def changes(wanted: Wanted, applied: Mapping[str, Applied]) -> list[Change]:
    """The installs and removals that take ``applied`` to ``wanted``, by bundle name."""
    out = []
    for name, (ref, serial, rollback) in sorted(wanted.refs.items()):
        have = applied.get(name)
        if ref.absent:
            if have is not None:
                out.append(Change(name, ref, serial, rollback))
        elif have is None or have.digest != ref.digest:
            out.append(Change(name, ref, serial, rollback))
    return out


def check_downgrade(change: Change, applied: Mapping[str, Applied]) -> None:
    have = applied.get(change.name)
    if have is None or change.want.absent or change.rollback or change.want.version is None:
        return
    if is_older(change.want.version, have.version):
        raise DeployRefused("downgrade", f"{change.name} {change.want.version} is older than {have.version} "
                            "which runs here; an older version is installed only by `fogmesh deploy rollback`")
