"""A bounded, time-limited memory of keys (task ids, claims).

Why bounded twice (count and age): dedup must never grow without bound on a
box with 1 GB of RAM, yet must remember a task id long enough to swallow the
redeliveries a reconnect produces. Pure: the caller passes ``now``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


def put_bounded(items: OrderedDict[str, V], key: str, value: V, max_items: int) -> None:
    """Insert, then forget the oldest entries beyond ``max_items``."""
    items[key] = value
    while len(items) > max_items:
        items.popitem(last=False)


class RecentMap(Generic[V]):
    """Insertion-ordered map that forgets its oldest entries past ``max_items``
    or ``ttl_s`` seconds; the first value recorded for a key is kept."""

    def __init__(self, *, max_items: int = 10_000, ttl_s: float = 600.0) -> None:
        if max_items < 1 or ttl_s <= 0:
            raise ValueError("max_items must be >= 1 and ttl_s > 0")
        self.max_items = max_items
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def _expire(self, now: float) -> None:
        items = self._items
        ttl, limit = self.ttl_s, self.max_items
        while items:
            t, _ = items[next(iter(items))]
            if now - t <= ttl and len(items) <= limit:
                break
            items.popitem(last=False)

    def add(self, key: str, value: V, now: float) -> V:
        """Record ``key -> value`` unless known; return the value now recorded."""
        known = self._items.get(key)
        if known is not None and now - known[0] <= self.ttl_s:
            return known[1]
        if known is not None:
            del self._items[key]
        self._items[key] = (now, value)
        self._expire(now)
        return value

    def get(self, key: str, now: float) -> V | None:
        """The value of ``key`` if recorded within ``ttl_s`` (older ones are
        dropped as new keys come in)."""
        known = self._items.get(key)
        if known is None or now - known[0] > self.ttl_s:
            return None
        return known[1]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
