"""The questions about resubmitted tasks (shared dispatch): the ones this
agent asked and whose answers it awaits, and the ones peers asked it (so a
copy that reaches it later is dropped). Pure: ``now`` comes in. The protocol
is described in :mod:`fogmesh.edge_agent.asking`."""

from __future__ import annotations

from fogmesh.edge_agent.recent import RecentMap


class AskBook:
    """Open questions this agent asked, and the ones peers asked it."""

    def __init__(self, *, max_items: int = 20_000, ttl_s: float = 900.0) -> None:
        self.waiting: dict[str, set[str]] = {}     # task -> peers whose answer is awaited
        self.unkept: set[str] = set()               # ... of which one answered it, answer not kept
        self.asked_by: RecentMap[str] = RecentMap(max_items=max_items, ttl_s=ttl_s)

    def open(self, key: str, peers: set[str]) -> None:
        self.waiting[key] = set(peers)

    def close(self, key: str) -> None:
        self.waiting.pop(key, None)

    def answered_by(self, key: str, peer: str) -> bool:
        """``peer`` said it never saw ``key``: True once nobody is left to hear from."""
        left = self.waiting.get(key)
        if left is None:
            return False
        left.discard(peer)
        return not left

    def gone(self, peer: str) -> list[str]:
        """``peer`` died or fell silent: the questions it was the last to answer."""
        done = []
        for key, left in self.waiting.items():
            if peer in left:
                left.discard(peer)
                if not left:
                    done.append(key)
        return done

    def awaiting(self, peer: str) -> list[str]:
        return [key for key, left in self.waiting.items() if peer in left]
