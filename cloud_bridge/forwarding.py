"""Cloud results on their way down to the fog: each held until the edge
broker has it, and only then acknowledged to the cloud and its outbox row
dropped.

Why hold them: a bridge that acknowledged the cloud's result before the edge
broker took it, and crashed in between, would lose the answer; held, the
cloud redelivers it. Why a part: the list of results under way and the set
of their keys (which makes a redelivered result a duplicate) must move
together. Pure: it only asks each :class:`~fogmesh.mqtt.Delivery` whether
it is confirmed.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

M = TypeVar("M")      # the cloud's message, to acknowledge (fogmesh.mqtt.Message in the bridge)


class Delivery(Protocol):
    """A publish on its way (:class:`fogmesh.mqtt.Delivery`): has the broker taken it?"""

    def confirmed(self) -> bool: ...


class Forwarding(Generic[M]):
    """Results published to the fog whose PUBACK has not come yet."""

    def __init__(self) -> None:
        self._under_way: list[tuple[Delivery, M, str]] = []
        self._keys: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def add(self, delivery: Delivery, message: M, key: str) -> None:
        """``message`` (from the cloud) carried the result for ``key``, now sent as ``delivery``."""
        self._under_way.append((delivery, message, key))
        self._keys.add(key)

    def arrived(self) -> list[tuple[M, str]]:
        """The results the edge broker has taken since the last call: the
        cloud messages to acknowledge and the outbox keys to drop."""
        if not self._under_way:
            return []
        done: list[tuple[M, str]] = []
        still: list[tuple[Delivery, M, str]] = []
        for delivery, message, key in self._under_way:
            if delivery.confirmed():
                done.append((message, key))
                self._keys.discard(key)
            else:
                still.append((delivery, message, key))
        self._under_way = still
        return done
