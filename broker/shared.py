"""Shared subscriptions (``$share/{group}/{filter}``) for the embedded broker, sans-IO.

Why the embedded broker has them: without them every agent must receive
every task and agree on who runs it through claims (an extra broker hop and
a message per agent per task). With them the broker hands each task to one
member of the group, and this module decides which, with the guarantees the
agents build on:

* **one member per message**, the connected member with the fewest
  unacknowledged messages (agents acknowledge a task only once answered, so
  that is the least busy one), round-robin among equals;
* **a bounded window per member** (``max_inflight``): the rest wait in the
  group's queue, in order, not in a member's session, so work never piles up
  behind one slow or dead member (the shared-subscription trap of brokers
  that queue into offline sessions);
* **nothing lost when a member goes away**: what it had not acknowledged goes
  back to the front of the queue and to another member, marked ``dup`` (an
  agent treats a duplicate-flagged task as one a peer may hold, and competes
  for it instead of running it blindly);
* **held while nobody can take it**: with no connected member the messages
  wait in the group (up to ``max_queued``, then the oldest are dropped and
  counted), as a persistent session would keep them.

No sockets, no asyncio: :mod:`fogmesh.broker.embedded` feeds it subscriptions,
publishes, acknowledgements and disconnects, and carries out the deliveries
it returns.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from fogmesh.topics import topic_matches

SHARE_PREFIX = "$share/"


@dataclass(frozen=True)
class ShareFilter:
    """``$share/{group}/{topic_filter}`` taken apart."""

    group: str
    topic_filter: str

    @classmethod
    def parse(cls, text: str) -> ShareFilter | None:
        """None when ``text`` is not a valid shared filter."""
        if not text.startswith(SHARE_PREFIX):
            return None
        group, sep, topic_filter = text[len(SHARE_PREFIX):].partition("/")
        if not sep or not group or not topic_filter or any(c in group for c in "+#"):
            return None
        return cls(group, topic_filter)


def valid_filter(topic_filter: str) -> bool:
    """MQTT's filter rules: ``+`` and ``#`` fill a whole level, ``#`` only the last."""
    levels = topic_filter.split("/")
    return bool(topic_filter) and all(
        (level == "+" or "+" not in level) and (level == "#" and i == len(levels) - 1 or "#" not in level)
        for i, level in enumerate(levels))


@dataclass(frozen=True)
class Queued:
    topic: str
    payload: bytes
    seq: int = 0            # arrival order in its group
    dup: bool = False


@dataclass(frozen=True)
class Delivery:
    """Send ``message`` to ``client_id`` for ``share``; report back with
    :meth:`SharedGroups.acked` or :meth:`SharedGroups.returned`."""

    share: ShareFilter
    client_id: str
    qos: int
    message: Queued


@dataclass(frozen=True)
class GroupState:
    """A group as the broker keeps it across its own restart: its members,
    what waits in the group (in arrival order) and what was out to each
    member unacknowledged (``held``)."""

    share: ShareFilter
    members: dict[str, int]
    waiting: tuple[Queued, ...]
    seq: int
    held: dict[str, tuple[Queued, ...]] = field(default_factory=dict)


@dataclass
class _Group:
    members: dict[str, int] = field(default_factory=dict)      # client id -> granted QoS
    inflight: dict[str, int] = field(default_factory=dict)     # client id -> unacknowledged
    queue: deque[Queued] = field(default_factory=deque)
    redo: list[Queued] = field(default_factory=list)         # returned, by arrival order
    held: dict[int, tuple[str, Queued]] = field(default_factory=dict)   # seq -> out to (member, message)
    pinned: dict[str, list[Queued]] = field(default_factory=dict)     # kept for a member across a restart
    turn: int = 0
    seq: int = 0


class SharedGroups:
    def __init__(self, *, max_inflight: int = 100, max_queued: int = 100_000) -> None:
        if max_inflight < 1 or max_queued < 1:
            raise ValueError("max_inflight and max_queued must be >= 1")
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.dropped = 0          # messages dropped from a full group queue
        self._groups: dict[ShareFilter, _Group] = {}

    # -- membership ------------------------------------------------------------
    def subscribe(self, client_id: str, share: ShareFilter, qos: int) -> None:
        self._groups.setdefault(share, _Group()).members[client_id] = qos

    def unsubscribe(self, client_id: str, share: ShareFilter) -> None:
        group = self._groups.get(share)
        if group is None:
            return
        group.members.pop(client_id, None)
        self._unpin(group, client_id)
        if not group.members:
            del self._groups[share]     # nobody subscribed: like any topic without subscribers

    def remove_client(self, client_id: str) -> None:
        """A session that ends for good (clean session, or deleted)."""
        for share in [s for s, g in self._groups.items() if client_id in g.members]:
            self.unsubscribe(client_id, share)

    def members(self, share: ShareFilter) -> tuple[str, ...]:
        group = self._groups.get(share)
        return tuple(group.members) if group else ()

    def queued(self, share: ShareFilter) -> int:
        group = self._groups.get(share)
        return len(group.queue) + len(group.redo) if group else 0

    # -- messages --------------------------------------------------------------
    def publish(self, topic: str, payload: bytes) -> int:
        """Queue a published message in every group whose filter matches it;
        returns how many groups took it."""
        taken = 0
        for share, group in self._groups.items():
            if topic_matches(share.topic_filter, topic):
                group.seq += 1
                group.queue.append(Queued(topic, payload, group.seq))
                while len(group.queue) > self.max_queued:
                    group.queue.popleft()
                    self.dropped += 1
                taken += 1
        return taken

    def deliveries(self, connected: Callable[[str], bool]) -> list[Delivery]:
        """Everything that can go out now: queued messages to the connected
        members with room in their window, least loaded first."""
        out: list[Delivery] = []
        for share, group in self._groups.items():
            for member in [c for c in group.pinned if connected(c)]:     # theirs again after a restart
                pinned = group.pinned[member]
                while pinned and group.inflight.get(member, 0) < self.max_inflight:
                    out.append(self._out(share, group, member, pinned.pop(0)))
                if not pinned:
                    del group.pinned[member]
            while group.redo or group.queue:
                client_id = self._pick(group, connected)
                if client_id is None:
                    break
                message = group.redo.pop(0) if group.redo else group.queue.popleft()
                out.append(self._out(share, group, client_id, message))
        return out

    @staticmethod
    def _out(share: ShareFilter, group: _Group, client_id: str, message: Queued) -> Delivery:
        qos = group.members[client_id]
        if qos > 0:
            group.inflight[client_id] = group.inflight.get(client_id, 0) + 1
            group.held[message.seq] = (client_id, message)
        return Delivery(share, client_id, qos, message)

    def _pick(self, group: _Group, connected: Callable[[str], bool]) -> str | None:
        ready = [c for c in group.members
                 if connected(c) and group.inflight.get(c, 0) < self.max_inflight]
        if not ready:
            return None
        least = min(group.inflight.get(c, 0) for c in ready)
        ties = [c for c in ready if group.inflight.get(c, 0) == least]
        group.turn += 1
        return ties[group.turn % len(ties)]

    def acked(self, delivery: Delivery) -> None:
        """The member acknowledged it: its window has room again."""
        self._settle(delivery)

    def returned(self, deliveries: Iterable[Delivery]) -> None:
        """The member went away without acknowledging these: back to the front
        of their group's queue, in their original order, flagged ``dup``."""
        for delivery in deliveries:
            self._settle(delivery)
            group = self._groups.get(delivery.share)
            if group is not None and group.members:
                m = delivery.message
                bisect.insort(group.redo, Queued(m.topic, m.payload, m.seq, dup=True), key=lambda q: q.seq)

    def _settle(self, delivery: Delivery) -> None:
        group = self._groups.get(delivery.share)
        if group is None or delivery.qos == 0:
            return
        group.held.pop(delivery.message.seq, None)
        n = group.inflight.get(delivery.client_id, 0) - 1
        if n > 0:
            group.inflight[delivery.client_id] = n
        else:
            group.inflight.pop(delivery.client_id, None)

    # -- across the broker's own restart ---------------------------------------
    def snapshot(self, keeps: Callable[[str], bool]) -> list[GroupState]:
        """What to keep: the groups with a member whose session outlives its
        connection (``keeps``), those members, what waits in the group, and
        what is out to each of them unacknowledged."""
        out = []
        for share, group in self._groups.items():
            members = {c: q for c, q in group.members.items() if keeps(c)}
            if not members:
                continue
            held: dict[str, list[Queued]] = {c: list(m) for c, m in group.pinned.items() if c in members}
            orphans = [m for c, m in group.held.values() if c not in members]
            orphans += [m for c, ms in group.pinned.items() if c not in members for m in ms]
            for client_id, m in group.held.values():
                if client_id in members:
                    held.setdefault(client_id, []).append(m)
            redo = sorted([*group.redo, *(Queued(m.topic, m.payload, m.seq, dup=True) for m in orphans)],
                          key=lambda q: q.seq)
            out.append(GroupState(share, members, tuple(redo + list(group.queue)), group.seq,
                                  {c: tuple(sorted(ms, key=lambda q: q.seq)) for c, ms in held.items()}))
        return out

    def restore(self, states: Iterable[GroupState]) -> None:
        """Start from what :meth:`snapshot` kept (no member connected yet).
        What was out to a member goes to that member again when it is back,
        flagged ``dup`` (as MQTT resends a session's messages in flight: an
        agent holds such a task, or has answered it): not to another member
        while it may be alive, until :meth:`release_pinned`."""
        for state in states:
            group = self._groups.setdefault(state.share, _Group())
            group.members.update(state.members)
            group.seq = max(group.seq, state.seq)
            for m in state.waiting:
                (group.redo if m.dup else group.queue).append(m)
            for client_id, messages in state.held.items():
                group.pinned.setdefault(client_id, []).extend(
                    Queued(m.topic, m.payload, m.seq, dup=True) for m in messages)

    def release_pinned(self) -> int:
        """What restored members did not come back for goes to the group (to
        any member, flagged ``dup``, as a departed member's); returns how many."""
        n = 0
        for group in self._groups.values():
            for client_id in list(group.pinned):
                n += len(group.pinned[client_id])
                self._unpin(group, client_id)
        return n

    @staticmethod
    def _unpin(group: _Group, client_id: str) -> None:
        for m in group.pinned.pop(client_id, []):
            bisect.insort(group.redo, m, key=lambda q: q.seq)
