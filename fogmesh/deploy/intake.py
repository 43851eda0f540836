"""Desired states and the fleet's timestamp off the wire, for the box's
receiver: each verified against the keys the agent trusts, parsed, checked
against its topic and offered to the :class:`~fogmesh.deploy.freshness.DesiredBook`
(which decides). What comes back: whether what the agent should run may
have changed, and the refusals to report. A document on the topic of a
target this agent is not (``deploy/desired/site/elsewhere``) is not looked
at: only what is addressed to it can make it report a refusal. The lines a
flood of bad timestamps would repeat are rate-limited."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from fogmesh import codec
from fogmesh.deploy.desired import Desired, Identity, valid_serial
from fogmesh.deploy.freshness import WAITING, DesiredBook, Timestamp
from fogmesh.deploy.manifest import Signed
from fogmesh.deploy.signing import TrustStore
from fogmesh.errors import DeployRefused
from fogmesh.log_limit import LogLimit
from fogmesh.mqtt import Message
from fogmesh.topics import Topics

__all__ = ["Intake", "target_of"]

LOG_EVERY_S = 10.0

Taken = tuple[bool, list[tuple[DeployRefused, int]]]


def _claimed_serial(payload: bytes) -> int:
    """The serial a refused document claims, for the report only (so the fleet
    counters count this agent as failed for it); never taken as applied."""
    try:
        serial = codec.decode(payload)["signed"]["serial"]
    except Exception:
        return 0
    # A whole number a report can carry (a hostile 1e308 would make every later report fail to encode).
    return serial if valid_serial(serial) else 0


def _failed_for(exc: DeployRefused, serial: int) -> int:
    """The serial the report counts this agent failed for: none for a document
    that waits for a newer timestamp (the counters count it in progress)."""
    return 0 if exc.code in WAITING else serial


def target_of(topics: Topics, topic: str) -> str | None:
    """The target a desired state's topic names (``.../desired/site/farm``:
    ``site:farm``), or None for a topic no target has."""
    prefix = f"{topics.root}/deploy/desired/"
    if not topic.startswith(prefix):
        return None
    rest = topic[len(prefix):]
    if rest == "all":
        return rest
    kind, sep, name = rest.partition("/")
    return f"{kind}:{name}" if sep and kind in ("agent", "site", "label") and name and "/" not in name else None


class Intake:
    def __init__(self, *, me: Identity, topics: Topics, trust: TrustStore, stamp_trust: TrustStore,
                 book: DesiredBook, wall_clock: Callable[[], float],
                 log: logging.LoggerAdapter[Any] | logging.Logger,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.me, self.topics, self.trust, self.stamp_trust = me, topics, trust, stamp_trust
        self.book, self.wall_clock, self.log, self.clock = book, wall_clock, log, clock
        self._stamp_lines = LogLimit(every_s=LOG_EVERY_S)

    def _warn(self, fmt: str, *args: object) -> None:
        left_out = self._stamp_lines.take(self.clock())
        if left_out is not None:
            self.log.warning(fmt + (f" ({left_out} more such lines left out)" if left_out else ""), *args)

    def take(self, msg: Message) -> Taken:
        if msg.topic == self.topics.deploy_timestamp:
            return self._stamp(msg)
        return self._desired(msg)

    def _desired(self, msg: Message) -> Taken:
        if not msg.payload:
            return self.book.forget(k for k in [*self.book.docs, *self.book.waiting]
                                    if self.topics.deploy_desired(k) == msg.topic), []
        target = target_of(self.topics, msg.topic)
        if target is None or not self.me.matches(target):
            return False, []              # not addressed to this agent (the topic says so): not its business
        try:
            signed = Signed.decode(msg.payload, what=f"the desired state on {msg.topic}")
            signed.verified(self.trust, what=f"the desired state on {msg.topic}")
            doc = Desired.from_dict(signed.document)
            if self.topics.deploy_desired(doc.target) != msg.topic:
                raise DeployRefused("bad_document", f"a desired state for {doc.target} was published on {msg.topic}")
            if not self.me.matches(doc.target):
                return False, []
            return self.book.offer(doc, now=self.wall_clock()), []
        except DeployRefused as exc:
            return False, [(exc, _failed_for(exc, _claimed_serial(msg.payload)))]

    def _stamp(self, msg: Message) -> Taken:
        """The fleet's timestamp: desired states waiting for it are offered again."""
        if not msg.payload:
            return False, []        # cleared: the one held stays held (its floors are facts)
        try:
            signed = Signed.decode(msg.payload, what="the fleet's timestamp")
            signed.verified(self.stamp_trust, what="the fleet's timestamp")
            stamp = Timestamp.from_dict(signed.document)
        except DeployRefused as exc:
            self._warn("deployment: the fleet's timestamp is refused: %s", exc)
            return False, []
        held = self.book.stamp
        if held is not None and stamp.serial < held.serial:
            self._warn("deployment: a timestamp older than the one held (serial %d < %d): a replay; ignored",
                       stamp.serial, held.serial)
        changed, refusals = False, []
        for doc, refusal in self.book.restamp(stamp, now=self.wall_clock()):
            if refusal is None:
                changed = True
            else:
                refusals.append((refusal, _failed_for(refusal, doc.serial)))
        return changed, refusals
