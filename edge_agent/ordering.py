"""Do all agents see the claims topic in one order? A start-up probe.

Claim dispatch rests on one assumption: the broker forwards the claims topic
to every subscriber in the same order, so every agent agrees on the first
claim for a task. One broker does that. A broker *cluster* does not (a
2-node RabbitMQ cluster, agents on different nodes): each node puts its own
clients' claims first, two agents both "win" a task, and it runs twice.

So an agent that starts in claim dispatch among peers runs a probe before it
takes tasks: it publishes ``probe`` on the claims topic; it and every peer
then publish a short paced burst of ``order`` records there, note the order
in which they see all the bursts, and the peers send a digest of it to the
new agent's inbox (``order-view``). One broker: every digest is the same.
Different digests for the same records: claims arrive in different orders,
and the new agent refuses claim dispatch with an error that says what to use
instead. The bursts start at one moment (a Unix time in the probe record,
so hosts' clocks should agree within a few ms, as NTP keeps them) and go out
in chunks for a fifth of a second, so they cross on the way (also when one
agent is late) and reordering between nodes shows.

:class:`OrderProbe` holds one probe's state; :class:`OrderCheck` owns the
probes this agent takes part in and its verdict. Pure: ``now`` comes in,
records go out as actions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fogmesh import codec
from fogmesh.edge_agent.actions import Action, Publish
from fogmesh.topics import Topics

BURST = 200            # records per agent and probe...
CHUNK = 20             # ... published CHUNK at once...
CHUNK_GAP_S = 0.02     # ... every CHUNK_GAP_S, so bursts overlap even if one agent starts late
START_IN_S = 0.3       # the bursts start together, this long after the probe (Unix time)
SETTLE_S = 0.4         # after the last record seen: the view is complete
PROBE_TIMEOUT_S = 10.0  # the initiator decides with the views it has by then


@dataclass
class OrderProbe:
    token: str
    initiator: str
    started: float
    sent: int = 0                                  # own burst records sent
    next_at: float = 0.0
    seen: list[tuple[str, int]] = field(default_factory=list)
    last_seen: float = 0.0
    reported: bool = False
    views: dict[str, tuple[str, int]] = field(default_factory=dict)   # peer -> (digest, count)
    waiting: set[str] = field(default_factory=set)                   # initiator: peers to hear from

    def digest(self) -> tuple[str, int]:
        h = hashlib.sha256("|".join(f"{a}:{n}" for a, n in self.seen).encode()).hexdigest()[:16]
        return h, len(self.seen)


def order_record(token: str, agent: str, seq: int) -> bytes:
    return codec.encode({"task": "", "agent": agent, "op": "order", "probe": token, "seq": seq})


def is_probe_record(payload: bytes) -> bool:
    """Cheap test on the claims hot path (records are compact JSON)."""
    return b'"op":"order"' in payload or b'"op":"probe"' in payload


class OrderCheck:
    """The claim-order probes this agent takes part in, and its verdict."""

    def __init__(self, *, me: str, topics: Topics) -> None:
        self.me = me
        self.topics = topics
        self._probes: dict[str, OrderProbe] = {}
        self._verdict: str | None = "ok"

    @property
    def verdict(self) -> str | None:
        """None while a probe runs; "ok"; or why claim dispatch is unsafe here."""
        return self._verdict

    @property
    def active(self) -> bool:
        return bool(self._probes)

    def start(self, token: str, peers: Iterable[str], now: float, *, wall_offset: float) -> list[Action]:
        """Check that ``peers`` see claims in this agent's order before it
        takes tasks (none: nothing to check)."""
        waiting = set(peers) - {self.me}
        if not waiting:
            self._verdict = "ok"
            return []
        self._probes[token] = OrderProbe(token, self.me, now, next_at=now + START_IN_S, waiting=waiting)
        self._verdict = None
        return [Publish(self.topics.claims, codec.encode(
            {"task": "", "agent": self.me, "op": "probe", "probe": token,
             "at": round(now + START_IN_S + wall_offset, 4)}))]

    def on_record(self, payload: bytes, now: float, *, wall_offset: float) -> list[Action]:
        """A probe or order record on the claims topic."""
        try:
            d = codec.decode(payload)
        except Exception:
            return []
        if not isinstance(d, dict):
            return []
        token, agent = d.get("probe"), d.get("agent")
        if not (isinstance(token, str) and isinstance(agent, str)) or len(token) > 100:
            return []
        if d.get("op") == "probe":
            at = d.get("at")
            start = now if not isinstance(at, (int, float)) else min(now + 1.0, max(now, at - wall_offset))
            return [] if agent == self.me else self._join(token, agent, start, now)
        seq = d.get("seq")
        if isinstance(seq, int):
            probe = self._probes.get(token)
            if probe is not None:
                probe.seen.append((agent, seq))
                probe.last_seen = now
        return []

    def _join(self, token: str, initiator: str, start: float, now: float) -> list[Action]:
        if token not in self._probes:
            self._probes[token] = OrderProbe(token, initiator, now, next_at=start)
        return self.tick(now)

    def on_view(self, d: dict[str, Any], now: float) -> list[Action]:
        """A peer's digest of a probe this agent started (its inbox)."""
        probe = self._probes.get(str(d.get("probe")))
        agent, digest, count = d.get("agent"), d.get("digest"), d.get("count")
        if probe is None or probe.initiator != self.me or not isinstance(agent, str) \
                or not isinstance(digest, str) or not isinstance(count, int):
            return []
        probe.views[agent] = (digest, count)
        probe.waiting.discard(agent)
        return self.tick(now)

    def deadline(self) -> float | None:
        times = []
        for p in self._probes.values():
            if p.sent < BURST:
                times.append(p.next_at)
            elif not p.reported:
                times.append(max(p.last_seen, p.next_at) + SETTLE_S)
            if p.initiator == self.me and self._verdict is None:
                times.append(p.started + PROBE_TIMEOUT_S)
        return min(times, default=None)

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        me = self.me
        for token, p in list(self._probes.items()):
            while p.sent < BURST and now >= p.next_at:
                actions += [Publish(self.topics.claims, order_record(token, me, n))
                            for n in range(p.sent, min(BURST, p.sent + CHUNK))]
                p.sent = min(BURST, p.sent + CHUNK)
                p.next_at += CHUNK_GAP_S
            if p.sent < BURST or p.reported or now < max(p.last_seen, p.next_at) + SETTLE_S:
                continue
            p.reported = True
            digest, count = p.digest()
            if p.initiator != me:
                actions.append(Publish(self.topics.agent_inbox(p.initiator), codec.encode(
                    {"op": "order-view", "probe": token, "agent": me, "digest": digest, "count": count})))
                del self._probes[token]
        self._decide(now)
        return actions

    def _decide(self, now: float) -> None:
        me = self.me
        for token, p in list(self._probes.items()):
            if p.initiator != me or self._verdict is not None or not p.reported:
                continue
            if p.waiting and now < p.started + PROBE_TIMEOUT_S:
                continue
            mine = p.digest()
            differ = sorted(a for a, (digest, count) in p.views.items() if count == mine[1] and digest != mine[0])
            if differ:
                self._verdict = (
                    f"agents see the claims topic in different orders here ({me} and {', '.join(differ)} "
                    "saw the same records in another order: a broker cluster?), so claim dispatch could "
                    "run tasks twice. Connect every agent to the same broker node, or use a broker with "
                    "shared subscriptions (mosquitto, EMQX, HiveMQ, `fogmesh broker`) and --dispatch shared")
            else:
                self._verdict = "ok"
            del self._probes[token]
