"""What became of this agent's answers after they left: which ones the
broker confirmed (to report to peers on the claims topic, so they drop the
copies they keep for a takeover), and which ones a dropped connection
withdrew unconfirmed (shared dispatch: sent again only when the task comes
back). Pure: keys and ``now`` in.

Two ways an answer counts as out (claim dispatch):

* emitted: the answer just went out and a record on the claims topic leaves
  right after it on the same connection (:meth:`Confirmations.take_emitted`),
  so a peer that sees the record knows the broker had the answer;
* confirmed: the broker acknowledged it (PUBACK) before any such record
  went; these ride on the next "done" record, or go alone after
  :data:`FLUSH_AFTER_S` when the agent is idle, or at once past :data:`FLUSH_AT`.
"""

from __future__ import annotations

from collections import OrderedDict

from fogmesh.edge_agent.recent import put_bounded

FLUSH_AFTER_S = 0.1
FLUSH_AT = 64
#: After the task connection is back with its session, how long a withdrawn
#: answer waits for its task to come back before it goes out anyway.
WITHDRAWN_WAIT_S = 5.0


class Confirmations:
    def __init__(self, *, max_items: int = 20_000) -> None:
        self.max_items = max_items
        self._emitted: list[str] = []                 # answers just sent, to report by order
        self._marked: OrderedDict[str, bool] = OrderedDict()   # ... reported so: no PUBACK report needed
        self._confirmed: list[str] = []               # confirmed by PUBACK, not yet reported
        self._flush_at: float | None = None
        self._withdrawn: OrderedDict[str, bool] = OrderedDict()
        self._withdrawn_due: float | None = None

    @property
    def flush_at(self) -> float | None:
        """When the confirmations collected so far go out on their own."""
        return self._flush_at

    def emitting(self, key: str) -> None:
        """The answer of ``key`` goes out now; the next claims record reports it."""
        self._emitted.append(key)

    def take_emitted(self) -> tuple[str, ...]:
        """The answers emitted since the last record, now reported by order."""
        keys, self._emitted = tuple(self._emitted), []
        for k in keys:
            put_bounded(self._marked, k, True, self.max_items)
        return keys

    def confirmed(self, keys: list[str], now: float) -> bool:
        """The broker confirmed the answers of ``keys``. True: enough are
        collected to report them at once (otherwise by :attr:`flush_at`)."""
        keys = [k for k in keys if self._marked.pop(k, None) is None]
        self._confirmed += keys
        if len(self._confirmed) >= FLUSH_AT:
            return True
        if self._confirmed and self._flush_at is None:
            self._flush_at = now + FLUSH_AFTER_S
        return False

    def take_all(self) -> tuple[str, ...]:
        """Everything not yet reported (confirmed, then emitted), for the record going out now."""
        keys, self._confirmed, self._flush_at = tuple(self._confirmed), [], None
        return keys + self.take_emitted()

    def connection_lost(self) -> None:
        """Answers sent on the lost connection are confirmed again or withdrawn."""
        self._emitted.clear()
        self._marked.clear()

    # -- shared dispatch ---------------------------------------------------------
    @property
    def withdrawn_due(self) -> float | None:
        """When the withdrawn answers whose task has not come back go out anyway."""
        return self._withdrawn_due

    def task_link_back(self, now: float) -> None:
        """The task connection is back with its session: the broker gives back
        what it had sent unacknowledged at once. A task it does not give back
        was lost with the broker (a SIGKILL between two saves rolls a session
        back), and its withdrawn answer would wait for it for ever."""
        self._withdrawn_due = now + WITHDRAWN_WAIT_S if self._withdrawn else None

    def take_overdue(self, now: float) -> list[str]:
        """The withdrawn answers still waiting once :attr:`withdrawn_due` passed."""
        if self._withdrawn_due is None or now < self._withdrawn_due:
            return []
        self._withdrawn_due = None
        return self.take_all_withdrawn()

    def withdraw(self, key: str) -> None:
        """The answer of ``key`` was cut off with its connection, unconfirmed."""
        put_bounded(self._withdrawn, key, True, self.max_items)

    def take_all_withdrawn(self) -> list[str]:
        """Every answer withdrawn and not yet sent again (taken out)."""
        keys = list(self._withdrawn)
        self._withdrawn.clear()
        return keys

    def take_withdrawn(self, key: str) -> bool:
        """Was the answer of ``key`` withdrawn? (Taken out: sent again once.)"""
        return self._withdrawn.pop(key, None) is not None
