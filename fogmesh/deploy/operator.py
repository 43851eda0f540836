"""The operator's side of a deployment over MQTT: put a bundle on the broker
(its signed manifest and its chunks, retained), publish a target's signed
desired state, read what agents report, keep a history.

Everything is retained, so nothing has to keep running for a deployment to
reach an agent that is down today or joins next month: the broker holds
the newest desired state of every target and the bundles it names, and the
fleet's signed timestamp (:mod:`fogmesh.deploy.freshness`) naming each
target's current serial, so that an agent that joins later refuses an old
desired state someone re-published.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Iterable, Mapping

from fogmesh import codec
from fogmesh.announcements import Presence
from fogmesh.broker_url import BrokerUrl
from fogmesh.deploy.bundle_file import Bundle
from fogmesh.deploy.desired import MAX_SERIAL, BundleRef, Desired
from fogmesh.deploy.freshness import DEFAULT_TTL_S, Timestamp, merge_floors
from fogmesh.deploy.manifest import Signed
from fogmesh.deploy.reported import Report
from fogmesh.deploy.signing import SigningKey, TrustStore
from fogmesh.errors import ConnectError, DeployRefused, InvalidMessage
from fogmesh.fields import Fields
from fogmesh.fleet import MAX_BOXES, Heard, keep
from fogmesh.mqtt import Delivery, Message, MqttClient
from fogmesh.refusals import Refusals
from fogmesh.topics import Topics

__all__ = ["Operator", "next_serial"]


def history_entry(d: Any) -> dict[str, object]:
    """A deployment's record as ``fogmesh deploy`` writes it (``history``,
    ``prune`` and ``rollback`` read it), or :class:`InvalidMessage`."""
    f = Fields(d, "deployment record")
    serial = d.get("serial")
    if isinstance(serial, bool) or not isinstance(serial, int) or serial < 0:
        raise f.bad("serial", "a whole number >= 0")
    f.text("target", 300)
    f.text("action", 32)
    f.number("at", 0.0)
    for name in ("bundles", "previous"):
        refs = d.get(name, [])
        if not isinstance(refs, list):
            raise f.bad(name, "a list of bundles")
        for ref in refs:
            try:
                BundleRef.from_dict(ref)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise f.bad(name, f"a list of bundles ({exc})") from exc
    if d.get("canaries") is not None and not (isinstance(d["canaries"], list)
                                              and all(isinstance(c, str) for c in d["canaries"])):
        raise f.bad("canaries", "a list of agent ids")
    return dict(d)


def next_serial(known: Iterable[int], now_ms: int) -> int:
    """Serials only grow: the clock in milliseconds, or one past the newest known."""
    return max([now_ms, *(s + 1 for s in known)])


class Operator:
    """One MQTT connection of ``fogmesh deploy``; ``watch()`` keeps the
    retained reports, desired states, timestamp and history current as they
    change.

    ``trust``: the keys the agents trust (default: the public half of
    ``key``); ``stamp_trust``: those and the keys they trust for timestamps
    only. Only documents signed by them raise ``floors`` (each target's
    newest serial seen, for the next timestamp): never an unsigned one."""

    def __init__(self, broker: BrokerUrl | str, *, root: str, key: SigningKey | None = None,
                 trust: TrustStore | None = None, stamp_trust: TrustStore | None = None,
                 stamp_ttl_s: float = DEFAULT_TTL_S, wall_clock: Callable[[], float] = time.time) -> None:
        self.topics = Topics(root)
        self.key = key
        self.trust = trust if trust is not None else TrustStore([key.public] if key else [])
        self.stamp_trust = stamp_trust if stamp_trust is not None else self.trust
        self.stamp_ttl_s = stamp_ttl_s
        self.wall_clock = wall_clock
        self.reports: OrderedDict[str, Report] = OrderedDict()    # at most MAX_BOXES, by the topic's agent
        self.docs: dict[str, Desired] = {}
        self.stamp: Timestamp | None = None              # the newest timestamp seen signed by a trusted key
        self.stamp_seen: Timestamp | None = None         # the newest seen, verified or not (status shows it)
        self.floors: dict[str, int] = {}                 # target -> newest signed serial seen
        self._watching = False
        self.history: dict[int, dict[str, object]] = {}
        self.presence: OrderedDict[str, str] = OrderedDict()       # agent -> state (at most MAX_BOXES)
        self._heard = Heard(cap=4 * MAX_BOXES)      # agents heard live: kept over retained-only ones (fleet.py)
        self.refusals = Refusals()                                  # malformed or forged reports, entries
        self._issued = 0                              # the last serial handed out
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        self.client = MqttClient(broker, on_message=self._on_message)

    def __enter__(self) -> Operator:
        self.client.start(fail_fast=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.stop()

    # -- reading --------------------------------------------------------------------
    def watch(self, *, settle_s: float = 0.5) -> None:
        """Subscribe to reports, desired states, history and presence; return once
        the retained ones have come (quiet for ``settle_s``)."""
        t = self.topics
        # Presence first: its retained copies come before the reports they rank (fleet.py).
        for f in (t.presence_filter, t.deploy_timestamp, t.deploy_reported_filter, t.deploy_desired_filter,
                  t.deploy_history_filter):
            self.client.subscribe(f, 1)
        self._watching = True
        last = -1
        while True:
            with self._lock:
                seen = len(self.reports) + len(self.docs) + len(self.history) + len(self.presence) + \
                    (self.stamp_seen.serial if self.stamp_seen else 0)
                if seen == last:
                    return
                last = seen
                self.changed.wait(settle_s)

    def _on_message(self, m: Message) -> None:
        t = self.topics
        with self._lock:
            try:
                self._take(m, t)
            except (InvalidMessage, DeployRefused) as exc:
                # Refused, counted (``status`` says how many): an agent refuses what does not verify.
                self.refusals.refuse("deploy", m.topic[:300], str(exc))
            self.changed.notify_all()

    def _take(self, m: Message, t: Topics) -> None:
        prefix = f"{t.root}/deploy/reported/"
        if m.topic.startswith(prefix):
            agent = m.topic[len(prefix):]         # who reports: the topic (the ACL binds it), never the payload
            if not m.payload:
                self.reports.pop(agent, None)
            else:
                report = Report.decode(m.payload, agent=agent)
                self._heard.mark(agent, retained=m.retain)
                keep(self.reports, agent, report, cap=MAX_BOXES, rank=lambda a, r: self._rank(a))
        elif m.topic == t.deploy_timestamp:
            if m.payload:
                signed = Signed.decode(m.payload, what=m.topic)
                stamp = Timestamp.from_dict(signed.document)
                if self.stamp_seen is None or stamp.serial > self.stamp_seen.serial:
                    self.stamp_seen = stamp
                signed.verified(self.stamp_trust, what="the fleet's timestamp")
                if self.stamp is None or stamp.serial > self.stamp.serial:
                    self.stamp = stamp
                self.floors = merge_floors(self.floors, stamp.desired)
        elif m.topic.startswith(f"{t.root}/deploy/desired/"):
            if m.payload:
                signed = Signed.decode(m.payload, what=m.topic)
                doc = Desired.from_dict(signed.document)
                if m.topic != t.deploy_desired(doc.target):
                    raise DeployRefused("bad_document", f"{m.topic} holds the desired state of {doc.target}")
                self.docs[doc.target] = doc           # shown by deploy status, signed or not (it says which)
                signed.verified(self.trust, what=m.topic)
                self.floors = merge_floors(self.floors, {doc.target: doc.serial})
            else:
                for target in [k for k in self.docs if t.deploy_desired(k) == m.topic]:
                    del self.docs[target]
        elif m.topic.startswith(f"{t.root}/deploy/history/"):
            if m.payload:
                entry = history_entry(codec.decode(m.payload))
                self.history[int(entry["serial"])] = entry       # type: ignore[call-overload]
        else:
            box = t.agent_of_presence(m.topic)
            if box is not None and not m.payload:
                self.presence.pop(box, None)
            elif box is not None:
                # What every tool shows (Presence.state_at): silent agents are stale, then offline.
                state = Presence.decode(m.payload, agent=box).state_at(self.wall_clock())
                self._heard.mark(box, retained=m.retain)
                keep(self.presence, box, state, cap=MAX_BOXES, rank=lambda a, s: self._rank(a, s))

    def _rank(self, agent: str, state: str | None = None) -> tuple[bool, bool]:
        """Past the bound, agents heard live, then those present, are kept first
        (retained documents of boxes that never connect go first: fleet.py)."""
        state = self.presence.get(agent) if state is None else state
        return agent in self._heard, state not in (None, "offline", "stale")

    def retained(self, topic: str, *, timeout_s: float = 5.0, wait_s: float = 1.0) -> bytes | None:
        """The message retained on ``topic``, or None: a broker sends a new
        subscription its retained message right after the SUBACK, so ``wait_s``
        of silence after it means there is none."""
        got: list[bytes] = []
        arrived = threading.Event()

        def take(m: Message) -> None:
            if m.topic == topic and m.payload:
                got.append(m.payload)
                arrived.set()

        reader = MqttClient(self.client.url, on_message=take)
        reader.start(timeout=timeout_s)
        try:
            reader.subscribe(topic, 1, timeout=timeout_s)
            arrived.wait(wait_s)
        finally:
            reader.stop()
        return got[0] if got else None

    def wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Until ``done()`` (called under the lock on every change) holds, or ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 1.0))
            return True

    def serial(self) -> int:
        """A serial newer than any this connection has seen or issued."""
        with self._lock:
            # Only what is signed by a trusted key counts (verified timestamps and desired
            # states are the floors): an unsigned history entry or a forged desired state
            # pushed serials past 2**53, and every tool refused the agents' reports for good.
            known = [self._issued] + list(self.floors.values())
            issued = next_serial(known, int(self.wall_clock() * 1000))
            if issued > MAX_SERIAL:
                raise DeployRefused("bad_serial", f"the next serial would be {issued}, past {MAX_SERIAL}: a "
                                    "signed document with such a serial means the signing key is compromised")
            self._issued = issued
            return self._issued

    # -- writing --------------------------------------------------------------------
    def _signed(self, document: Mapping[str, object]) -> bytes:
        if self.key is None:
            raise DeployRefused("bad_key", "this needs the signing key: give --key FILE (`fogmesh bundle keygen`)")
        return Signed(document).signed_with(self.key.sign).encode()

    def _confirm(self, deliveries: list[Delivery | None], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for d in deliveries:
            if d is None or not d.wait(max(0.1, deadline - time.monotonic())):
                raise ConnectError(f"the broker did not confirm {what} within {timeout:.0f} s")

    def put_bundle(self, bundle: Bundle, *, progress: Callable[[int, int], None] | None = None) -> BundleRef:
        """The bundle's manifest and chunks, retained (what agents fetch)."""
        m = bundle.manifest
        t = self.topics
        pending: list[Delivery | None] = []
        for i in range(len(m.chunks) if m.payload_size else 0):      # image kinds only: no payload
            start, end = m.chunk_span(i)
            pending.append(self.client.publish(t.deploy_chunk(m.digest, i), bundle.payload[start:end], qos=1,
                                               retain=True))
            if len(pending) >= 64:
                self._confirm(pending, f"the chunks of {m.label}")
                pending = []
            if progress:
                progress(i + 1, len(m.chunks))
        pending.append(self.client.publish(t.deploy_bundle(m.digest), bundle.signed.encode(), qos=1, retain=True))
        self._confirm(pending, f"the chunks of {m.label}")
        return BundleRef(name=m.name, version=m.version, digest=m.digest, size=m.payload_size,
                         kinds=tuple(sorted(m.kinds)))

    def put_desired(self, *docs: Desired) -> None:
        """The fleet's timestamp naming ``docs``, then ``docs`` (so an agent
        has the timestamp that vouches for a document before it)."""
        self.put_stamp({d.target: d.serial for d in docs})
        self._confirm([self.client.publish(self.topics.deploy_desired(doc.target), self._signed(doc.to_dict()),
                                           qos=1, retain=True) for doc in docs],
                      f"the desired state of {', '.join(d.target for d in docs)}")

    def put_stamp(self, new: Mapping[str, int] | None = None) -> Timestamp:
        """A new timestamp: the floors seen (the retained ones read first) and
        ``new``, valid for ``stamp_ttl_s`` from now."""
        if not self._watching:
            self.watch()
        with self._lock:
            floors = merge_floors(self.floors, new or {})
            serial = next_serial([self.stamp.serial if self.stamp else 0], int(self.wall_clock() * 1000))
            stamp = Timestamp.issue(floors, serial=serial, now=self.wall_clock(), ttl_s=self.stamp_ttl_s)
            self.stamp, self.floors = stamp, floors
        self._confirm([self.client.publish(self.topics.deploy_timestamp, self._signed(stamp.to_dict()), qos=1,
                                           retain=True)], "the fleet's timestamp")
        return stamp

    def record(self, entry: Mapping[str, object]) -> None:
        serial = int(entry["serial"])     # type: ignore[call-overload]
        self._confirm([self.client.publish(self.topics.deploy_history(serial), codec.encode(dict(entry)), qos=1,
                                           retain=True)], "the history entry")

    def drop_bundle(self, digest: str, chunks: int) -> None:
        """Clear a bundle no desired state names any more (the broker frees it)."""
        t = self.topics
        pending = [self.client.publish(t.deploy_chunk(digest, i), b"", qos=1, retain=True) for i in range(chunks)]
        pending.append(self.client.publish(t.deploy_bundle(digest), b"", qos=1, retain=True))
        self._confirm(pending, "clearing an old bundle")
