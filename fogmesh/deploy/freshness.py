"""The fleet's signed timestamp, and what an agent admits of the desired
states addressed to it. Pure: the clock is a number passed in.

Why: a desired state is signed and stays valid forever, so anyone who can
publish on the broker can re-publish an old one retained. An agent that
took a newer one refuses it (its serial is older: ``stale_serial``), but an
agent with nothing behind it (new, or a wiped state directory) cannot tell
old from current. The timestamp tells it: one retained, signed document
(``deploy/timestamp``) naming the current serial of every target (its
*floor*), issued at a time and valid until ``expires`` (TUF's timestamp
role). ``fogmesh deploy`` publishes a new one with every desired state, and
``fogmesh deploy renew`` (by hand, or ``--every`` on a box that is always
on, with a key agents trust for timestamps only) renews it before it
expires.

What an agent makes of a desired state for target T (:func:`admit`):

- older than the last one it took for T, or than the floor of T in the
  newest timestamp it holds (expired or not: an old floor is still a fact):
  a replay, ``stale_serial``;
- the very one it took last for T: taken (it was checked when taken);
- otherwise it needs a current timestamp: none (``no_timestamp``), one that
  does not name T (``not_in_timestamp``), one issued in this box's future
  (``clock_behind``: its clock is wrong) or one that has expired
  (``expired_timestamp``) make it wait; the document is taken when a newer
  timestamp lifts the reason (:class:`DesiredBook`).

A document newer than the floor is taken: only the holder of the key can
sign a newer serial, and a replay is by definition older.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from fogmesh.deploy.desired import Desired, parse_target
from fogmesh.errors import DeployRefused

FORMAT = "fogmesh-timestamp/1"
DEFAULT_TTL_S = 7 * 24 * 3600.0     # a week: newcomers join up to a week after the last push or renewal
CLOCK_SKEW_S = 300.0                # a timestamp issued further ahead of the box's clock: the clock is behind
# Refusals a newer timestamp can lift: the document waits for it.
WAITING = ("no_timestamp", "not_in_timestamp", "clock_behind", "expired_timestamp")

__all__ = ["CLOCK_SKEW_S", "DEFAULT_TTL_S", "FORMAT", "WAITING", "DesiredBook", "Timestamp", "admit",
           "merge_floors"]


@dataclass(frozen=True)
class Timestamp:
    """``desired``: each target's current serial (its floor)."""

    serial: int
    issued: float
    expires: float
    desired: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "serial": self.serial, "issued": self.issued, "expires": self.expires,
                "desired": dict(sorted(self.desired.items()))}

    @classmethod
    def from_dict(cls, d: Any) -> Timestamp:
        try:
            if not isinstance(d, dict) or d.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} document")
            return cls(serial=int(d["serial"]), issued=float(d["issued"]), expires=float(d["expires"]),
                       desired={parse_target(str(t)): int(s) for t, s in dict(d["desired"]).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DeployRefused("bad_document", f"the fleet's timestamp is malformed: {exc}") from exc

    @classmethod
    def issue(cls, floors: Mapping[str, int], *, serial: int, now: float, ttl_s: float) -> Timestamp:
        if ttl_s <= 0:
            raise ValueError("a timestamp's lifetime must be positive")
        return cls(serial=serial, issued=round(now, 3), expires=round(now + ttl_s, 3), desired=dict(floors))

    def expired(self, now: float) -> bool:
        return now >= self.expires


def merge_floors(*sources: Mapping[str, int]) -> dict[str, int]:
    """Per target, the highest serial any source names: floors only grow."""
    out: dict[str, int] = {}
    for source in sources:
        for target, serial in source.items():
            out[target] = max(out.get(target, 0), serial)
    return out


def _when(t: float) -> str:
    return f"{t:.0f} (Unix time)"


def admit(doc: Desired, *, taken: Mapping[str, int], stamp: Timestamp | None, now: float,
          skew_s: float = CLOCK_SKEW_S) -> None:
    """Nothing if ``doc`` may be taken, else :class:`DeployRefused` saying why."""
    last = taken.get(doc.target, 0)
    floor = stamp.desired.get(doc.target, 0) if stamp is not None else 0
    if doc.serial < last:
        raise DeployRefused("stale_serial", f"desired state for {doc.target} has serial {doc.serial}, older than "
                            f"{last} already applied: a replay, or a deploy from an outdated copy; not applied")
    if doc.serial < floor:
        assert stamp is not None
        raise DeployRefused("stale_serial", f"desired state for {doc.target} has serial {doc.serial}, older than "
                            f"{floor}, the current one by the fleet's signed timestamp (serial {stamp.serial}): "
                            "a replayed old document; not applied (publishing the current state again, "
                            "`fogmesh deploy BUNDLE --to TARGET`, replaces it)")
    if doc.serial == last:
        return
    if stamp is None:
        raise DeployRefused("no_timestamp", f"desired state for {doc.target} (serial {doc.serial}) waits for the "
                            "fleet's signed timestamp (deploy/timestamp), which tells a replayed old state from "
                            "the current one; none has come: run `fogmesh deploy renew --key KEY` (an older "
                            "`fogmesh deploy` publishes none: upgrade it)")
    if doc.target not in stamp.desired:
        raise DeployRefused("not_in_timestamp", f"desired state for {doc.target} (serial {doc.serial}) is not "
                            f"named by the fleet's signed timestamp (serial {stamp.serial}); it waits for one "
                            "that names it (`fogmesh deploy renew --key KEY`)")
    if stamp.issued > now + skew_s:
        raise DeployRefused("clock_behind", f"the fleet's timestamp was issued at {_when(stamp.issued)}, "
                            f"{stamp.issued - now:.0f} s ahead of this box's clock: set the clock (NTP) to take "
                            f"the desired state for {doc.target}; it waits until then")
    if stamp.expired(now):
        raise DeployRefused("expired_timestamp", f"the fleet's signed timestamp expired at {_when(stamp.expires)} "
                            f"({now - stamp.expires:.0f} s ago): the desired state for {doc.target} (serial "
                            f"{doc.serial}) waits until it is renewed (`fogmesh deploy renew --key KEY`, or a "
                            "renewer: `fogmesh deploy renew --every S`)")


@dataclass
class DesiredBook:
    """The desired states an agent holds: taken (``docs``, ``taken``: the last
    serial per target) or waiting for a newer timestamp (``waiting``)."""

    taken: dict[str, int] = field(default_factory=dict)
    docs: dict[str, Desired] = field(default_factory=dict)
    waiting: dict[str, Desired] = field(default_factory=dict)
    stamp: Timestamp | None = None

    def offer(self, doc: Desired, *, now: float) -> bool:
        """Take ``doc`` if it may be taken (True: what the agent should run may
        have changed), or :class:`DeployRefused`; a document refused for a
        reason a newer timestamp can lift waits for it."""
        self.waiting.pop(doc.target, None)
        try:
            admit(doc, taken=self.taken, stamp=self.stamp, now=now)
        except DeployRefused as exc:
            if exc.code in WAITING:
                self.waiting[doc.target] = doc
            raise
        known = self.docs.get(doc.target)
        self.docs[doc.target] = doc
        self.taken[doc.target] = doc.serial
        return known is None or known.serial != doc.serial

    def restamp(self, stamp: Timestamp, *, now: float) -> list[tuple[Desired, DeployRefused | None]]:
        """Hold ``stamp`` if it is newer than the one held, and offer the
        waiting documents again: each with its refusal, or None (taken). An
        older or equal timestamp (a replay) changes nothing."""
        if self.stamp is not None and stamp.serial <= self.stamp.serial:
            return []
        self.stamp = stamp
        out: list[tuple[Desired, DeployRefused | None]] = []
        for doc in list(self.waiting.values()):
            try:
                self.offer(doc, now=now)
                out.append((doc, None))
            except DeployRefused as exc:
                out.append((doc, exc))
        return out

    def forget(self, targets: Iterable[str]) -> bool:
        """Documents cleared from the broker: True if a taken one went."""
        gone = False
        for target in targets:
            self.waiting.pop(target, None)
            gone = self.docs.pop(target, None) is not None or gone
        return gone
