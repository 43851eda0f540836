"""What this agent knows about where it may offload: the offers each peer
holds from it, peers that just said they are busy, and the cloud bridges
with the kinds they take. Pure: ``now`` comes in.

Why keep outstanding offers apart from presence: presence is a snapshot every
few seconds, and a burst places dozens of tasks between two of them; counting
the offers sent since keeps placement from piling a burst onto the peer that
looked idle. Each offer's own lease lives with its task (``Entry.offer``);
this book holds only the per-peer counts, which :meth:`OfferBook.sent` and
:meth:`OfferBook.settled` move in pairs and never below zero.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from fogmesh.edge_agent.peers import Peer, with_outstanding

BUSY_S = 0.2   # a peer that rejected an offer as busy gets none for this long (or until its next presence)
#: After the control connection comes up (a start, a reconnect) or a freeze,
#: offers are refused for this long: what waited in the session or the socket
#: was sent long before, its lease is over, and its origin may have run it.
CATCH_UP_S = 5.0
MAX_BRIDGES = 1000   # bridges remembered (each site's health names one): the oldest heard go first


class OfferBook:
    def __init__(self, *, bridge_fresh_s: float) -> None:
        self.bridge_fresh_s = bridge_fresh_s
        self._outstanding: dict[str, int] = {}               # peer -> my offers it holds
        self._busy_until: dict[str, float] = {}              # peer -> no offers before
        self._bridges: OrderedDict[str, tuple[tuple[str, ...], float]] = OrderedDict()   # bridge -> (kinds, seen)
        self._bridge_ids: OrderedDict[str, None] = OrderedDict()   # every bridge announced (the newest 1,000)
        self._stale_until = float("-inf")                    # offers read before this are refused

    # -- offers to this agent ------------------------------------------------------
    def catching_up(self, now: float) -> None:
        """The control connection came up, or this agent woke from a freeze:
        what it reads for :data:`CATCH_UP_S` may be old (see there)."""
        self._stale_until = max(self._stale_until, now + CATCH_UP_S)

    def may_be_stale(self, now: float, *, dup: bool) -> bool:
        """Whether an offer read now may have outlived its lease: redelivered
        (DUP), or read while catching up. Refusing one is always safe (its
        origin places it again); accepting a stale one runs a task twice."""
        return dup or now < self._stale_until

    # -- offers ----------------------------------------------------------------
    def sent(self, peer: str) -> None:
        self._outstanding[peer] = self._outstanding.get(peer, 0) + 1

    def settled(self, peer: str) -> None:
        """An offer to ``peer`` ended (result, reject, lease, re-placed)."""
        self._outstanding[peer] = max(0, self._outstanding.get(peer, 0) - 1)

    def outstanding(self, peer: str) -> int:
        return self._outstanding.get(peer, 0)

    def busy(self, peer: str, now: float) -> None:
        """``peer`` rejected an offer as busy: none until its next presence, or :data:`BUSY_S`."""
        self._busy_until[peer] = now + BUSY_S

    def heard_from(self, peer: str) -> None:
        """Fresh presence from ``peer``: placement judges it by that again."""
        self._busy_until.pop(peer, None)

    def views(self, live: Iterable[Peer], now: float) -> list[Peer]:
        """Live peers as placement should see them: their presence plus the
        offers sent them since, minus peers that just said they are busy."""
        return [with_outstanding(p, self._outstanding.get(p.agent, 0)) for p in live
                if self._busy_until.get(p.agent, 0.0) <= now]

    # -- bridges -----------------------------------------------------------------
    def bridge_online(self, bridge: str, kinds: tuple[str, ...], now: float) -> None:
        self._known(bridge)
        self._bridges[bridge] = (kinds, now)
        self._bridges.move_to_end(bridge)
        while len(self._bridges) > MAX_BRIDGES:
            self._bridges.popitem(last=False)

    def bridge_away(self, bridge: str) -> bool:
        """``bridge`` takes nothing new (degraded or offline); True if it took work until now."""
        self._known(bridge)
        return self._bridges.pop(bridge, None) is not None

    def _known(self, bridge: str) -> None:
        self._bridge_ids[bridge] = None
        self._bridge_ids.move_to_end(bridge)
        while len(self._bridge_ids) > MAX_BRIDGES:
            self._bridge_ids.popitem(last=False)

    def cloud_for(self, kind: str, now: float, *, exclude: Iterable[str]) -> str | None:
        """An online bridge taking ``kind`` (the first by id), not in ``exclude``."""
        skip = set(exclude)
        for bridge, (kinds, seen) in sorted(self._bridges.items()):
            if kind in kinds and bridge not in skip and now - seen <= self.bridge_fresh_s:
                return bridge
        return None

    def is_bridge(self, agent: str) -> bool:
        return agent in self._bridge_ids
