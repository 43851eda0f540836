"""The registry of peers, built from their presence: who is alive, how loaded,
how charged, and how well offloading to them went before.

Pure: presence and outcomes come in with ``now``. A peer is dead when its
last will (state offline) arrives or when its presence is older than three of
the periods it announces (its ``period``, which grows with the site: see
:func:`fogmesh.edge_agent.presence.presence_pace`), and never sooner than
``stale_after``. Past performance is an EWMA of
offload round trips and of failures (reject, lease expiry, lost result).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fogmesh.announcements import Presence


@dataclass(frozen=True)
class Peer:
    presence: Presence
    seen_at: float
    rtt_ms: float | None = None      # EWMA of offload round trip minus run time
    failure: float = 0.0             # EWMA of failures, 0..1
    offloads: int = 0

    @property
    def agent(self) -> str:
        return self.presence.agent

    @property
    def battery_percent(self) -> float | None:
        return self.presence.battery.percent if self.presence.battery else None


class PeerRegistry:
    def __init__(self, *, me: str, stale_after: float = 15.0, alpha: float = 0.3,
                 max_peers: int = 1000) -> None:
        self.me = me
        self.stale_after = stale_after
        self.alpha = alpha
        self.max_peers = max_peers
        self._peers: dict[str, Peer] = {}

    def update(self, presence: Presence, now: float) -> None:
        """A peer's presence. At most ``max_peers`` are kept: a newcomer past
        that makes room by dropping the peer heard from longest ago among the
        offline ones, else among all (made-up names cannot lock a real peer out)."""
        if presence.agent == self.me:
            return
        old = self._peers.get(presence.agent)
        if old is None and len(self._peers) >= self.max_peers:
            offline = [p for p in self._peers.values() if p.presence.state == "offline"]
            stalest = min(offline or self._peers.values(), key=lambda p: p.seen_at)
            del self._peers[stalest.agent]
        self._peers[presence.agent] = Peer(presence, now) if old is None else \
            replace(old, presence=presence, seen_at=now)

    def woke(self, now: float) -> None:
        """This agent was frozen until ``now``: what its peers said meanwhile
        waits unread in its socket, so their presence is judged from now on
        (a peer that died meanwhile has its will in that backlog too)."""
        for agent, peer in self._peers.items():
            if peer.seen_at < now:
                self._peers[agent] = replace(peer, seen_at=now)

    def forget(self, agent: str) -> None:
        self._peers.pop(agent, None)

    def get(self, agent: str) -> Peer | None:
        return self._peers.get(agent)

    def stale_at(self, peer: Peer) -> float:
        """When ``peer``'s presence goes stale if nothing new comes: three of
        the periods it announced, and not before ``stale_after``."""
        return peer.seen_at + peer.presence.silence_limit(self.stale_after)

    def is_live(self, agent: str, now: float) -> bool:
        p = self._peers.get(agent)
        return p is not None and p.presence.state == "online" and now <= self.stale_at(p)

    def live(self, now: float) -> list[Peer]:
        """Online peers with fresh presence, in a stable order (by agent id)."""
        return [p for _, p in sorted(self._peers.items()) if self.is_live(p.agent, now)]

    def present(self, now: float) -> list[Peer]:
        """Peers with fresh presence in any state but offline (draining and
        degraded agents still hold and answer tasks)."""
        return [p for _, p in sorted(self._peers.items())
                if p.presence.state != "offline" and now <= self.stale_at(p)]

    def not_gone(self, now: float, *, silent_s: float) -> set[str]:
        """Peers whose last word was not ``offline``, fresh or stale for less
        than ``silent_s``: a stale one may be frozen (SIGSTOP, a stalled VM)
        with the tasks it holds and the answers it made; it is gone when its
        will says so, or once silent for ``silent_s`` (no will comes for a
        peer whose connection a broker restart took)."""
        return {a for a, p in self._peers.items()
                if p.presence.state != "offline" and now <= p.seen_at + max(silent_s, self.stale_at(p) - p.seen_at)}

    def record(self, agent: str, *, ok: bool, rtt_ms: float | None = None) -> None:
        p = self._peers.get(agent)
        if p is None:
            return
        a = self.alpha
        rtt = p.rtt_ms
        if ok and rtt_ms is not None:
            rtt = rtt_ms if rtt is None else (1 - a) * rtt + a * rtt_ms
        self._peers[agent] = replace(p, rtt_ms=rtt, failure=(1 - a) * p.failure + a * (0.0 if ok else 1.0),
                                     offloads=p.offloads + 1)

    def __len__(self) -> int:
        return len(self._peers)


def with_outstanding(peer: Peer, offers: int) -> Peer:
    """``peer`` as placement should see it: its announced queue plus the
    ``offers`` this agent sent it that it still holds. Presence lags a burst;
    without this every origin would herd onto the peer that looked idlest at
    its last announcement. Shared by the live agent and the simulator."""
    if not offers:
        return peer
    return replace(peer, presence=replace(peer.presence, queue=peer.presence.queue + offers))
