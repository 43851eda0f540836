"""What an agent remembers of the tasks answered recently: their ids, and the
answers it sent itself. Pure: the caller passes ``now``.

Why keep the answers: a task id is the submitter's idempotency key. A device
that submits the same id again (its firmware rebooted with the counter back
at 1, or it never saw the reply and retried) gets the same answer again,
byte for byte, instead of silence or a second run. Ids are kept for the
dedup window (count and age); the answers also within a byte budget, so a run
of large results cannot grow the agent without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from fogmesh.edge_agent.recent import RecentMap


@dataclass(frozen=True)
class StoredAnswer:
    """One answer as it went out: its topic and exact bytes."""

    topic: str
    payload: bytes


class AnswerBook:
    def __init__(self, *, max_items: int = 20_000, ttl_s: float = 900.0,
                 max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.max_items = max_items
        self._ids: RecentMap[bool] = RecentMap(max_items=max_items, ttl_s=ttl_s)
        self._answers: OrderedDict[str, StoredAnswer] = OrderedDict()
        self._bytes = 0
        # Answers read back from the journal after a restart: whether the broker
        # confirmed them died with the process that sent them.
        self._unconfirmed: OrderedDict[str, bool] = OrderedDict()

    def add(self, key: str, now: float, answer: StoredAnswer | None = None) -> None:
        """``key`` is answered (by this agent, with ``answer``, or by a peer)."""
        self._ids.add(key, True, now)
        if answer is None or key in self._answers:
            return
        size = len(answer.payload) + len(answer.topic)
        if size > self.max_bytes:
            return
        self._answers[key] = answer
        self._bytes += size
        # Within the byte budget, and never more answers than ids the window keeps:
        # an answer whose id left the window can never be sent again (answer()).
        while self._bytes > self.max_bytes or len(self._answers) > self.max_items:
            _, old = self._answers.popitem(last=False)
            self._bytes -= len(old.payload) + len(old.topic)

    def restored(self, key: str, now: float, answer: StoredAnswer | None) -> None:
        """``key`` was answered before a restart (the journal says, with
        ``answer`` when kept); whether the broker had that answer is unknown."""
        self.add(key, now, answer)
        if answer is not None:
            self._unconfirmed[key] = True
            while len(self._unconfirmed) > self.max_items:
                self._unconfirmed.popitem(last=False)

    def take_unconfirmed(self, key: str) -> bool:
        """Was ``key``'s answer restored from the journal, not known to have
        reached the broker? (Taken out: sent again once.) A broker that gives
        its task back after the restart missed the task's acknowledgement,
        which left with the answer (shared subscriptions)."""
        return self._unconfirmed.pop(key, None) is not None

    def knows(self, key: str, now: float) -> bool:
        """Was ``key`` answered within the dedup window?"""
        return self._ids.get(key, now) is not None

    def drop_answer(self, key: str) -> None:
        """This agent's answer for ``key`` did not count (a peer won the task
        back and answered it): remember the id, never send that answer."""
        old = self._answers.pop(key, None)
        if old is not None:
            self._bytes -= len(old.payload) + len(old.topic)

    def answer(self, key: str, now: float) -> StoredAnswer | None:
        """The answer this agent sent for ``key``, while the id is remembered."""
        if self._ids.get(key, now) is None:
            self._answers.pop(key, None)
            return None
        return self._answers.get(key)

    def __len__(self) -> int:
        return len(self._ids)
