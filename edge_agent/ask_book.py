"""The questions about resubmitted tasks (shared dispatch): the ones this
agent asked and whose answers it awaits, and the ones peers asked it (so a
copy that reaches it later is dropped). Pure: ``now`` comes in. The protocol
is described in :mod:`fogmesh.edge_agent.asking`."""

from __future__ import annotations

from fogmesh.edge_agent.recent import RecentMap

#: After its task connection comes back, an agent asks about every task for
#: this long, not only resubmissions (see :meth:`AskBook.asks_about`).
ASK_AFTER_RECONNECT_S = 10.0
#: A peer that has not answered by its next presence is asked again, but a
#: question at most this often: peers slower than their presence period (a
#: loaded box) got every open question again at every presence, 3,000 asks
#: and answers for 90 tasks, and the asker never got to run them.
REASK_AFTER_S = 3.0


class AskBook:
    """Open questions this agent asked, and the ones peers asked it."""

    def __init__(self, *, max_items: int = 20_000, ttl_s: float = 900.0) -> None:
        self._waiting: dict[str, set[str]] = {}    # task -> peers whose answer is awaited
        self._asked_at: dict[str, float] = {}       # task -> when it was last asked
        self._unkept: set[str] = set()              # ... of which one answered it, answer not kept
        self._asked_by: RecentMap[str] = RecentMap(max_items=max_items, ttl_s=ttl_s)   # task -> the peer asking
        self._was_up = False                        # the task connection was up before
        self._ask_all_until = float("-inf")

    def task_link_up(self, now: float) -> None:
        """The task connection is (back) up; after a drop (not the first
        connection), every task is asked about for :data:`ASK_AFTER_RECONNECT_S`."""
        if self._was_up:
            self._ask_all_until = now + ASK_AFTER_RECONNECT_S
        self._was_up = True

    def woke(self, now: float) -> None:
        """This agent did nothing for a while (frozen): every task is asked
        about for :data:`ASK_AFTER_RECONNECT_S`. What the broker sent it
        meanwhile waited in its socket, and peers that took it for gone ran
        the resubmissions of those tasks without asking it."""
        self._ask_all_until = max(self._ask_all_until, now + ASK_AFTER_RECONNECT_S)

    def asks_about(self, attempt: int | None, now: float) -> bool:
        """Whether a task that is new here is asked about before it runs: a
        resubmission (``attempt`` 2, 3, ...), or any task soon after this
        agent's task connection came back. Why the latter: a device whose
        connection went with the broker (a restart) sends again, at the MQTT
        level, a task whose PUBACK it never got, with no ``attempt``; the
        broker takes the copy as new and may hand it to another agent than
        the one that ran the first. Every agent reconnects in a restart, so
        the one that gets the copy asks, and the first one's answer goes
        out again instead of a second run."""
        return (attempt or 1) > 1 or now < self._ask_all_until

    # -- questions this agent asked -------------------------------------------------------
    def open(self, key: str, peers: set[str], now: float = float("-inf")) -> None:
        self._waiting[key] = set(peers)
        self._asked_at[key] = now

    def close(self, key: str) -> None:
        self._waiting.pop(key, None)
        self._asked_at.pop(key, None)

    def is_open(self, key: str) -> bool:
        return key in self._waiting

    @property
    def open_keys(self) -> list[str]:
        return list(self._waiting)

    @property
    def awaited_peers(self) -> set[str]:
        """Every peer whose answer some question still awaits."""
        return {p for left in self._waiting.values() for p in left}

    def answer_not_kept(self, key: str) -> None:
        """A peer answered ``key`` but no longer keeps the answer."""
        self._unkept.add(key)

    def take_not_kept(self, key: str) -> bool:
        """Whether a peer said so of ``key`` (forgotten as it is told)."""
        if key in self._unkept:
            self._unkept.discard(key)
            return True
        return False

    def answered_by(self, key: str, peer: str) -> bool:
        """``peer`` said it never saw ``key``: True once nobody is left to hear from."""
        left = self._waiting.get(key)
        if left is None:
            return False
        left.discard(peer)
        return not left

    def gone(self, peer: str) -> list[str]:
        """``peer`` died or fell silent: the questions it was the last to answer."""
        done = []
        for key, left in self._waiting.items():
            if peer in left:
                left.discard(peer)
                if not left:
                    done.append(key)
        return done

    def awaiting(self, peer: str) -> list[str]:
        return [key for key, left in self._waiting.items() if peer in left]

    def due_again(self, peer: str, now: float, *, epoch: int | None, asked_in: int | None) -> list[str]:
        """The questions ``peer`` has not answered that it may have missed:
        its connection is not the one it had when they were asked (its
        ``epoch`` now is not ``asked_in``, or either is unknown), or they
        were last asked :data:`REASK_AFTER_S` ago or more. Marked asked now."""
        same_link = epoch is not None and asked_in is not None and epoch == asked_in
        keys = [k for k in self.awaiting(peer)
                if not same_link or now - self._asked_at.get(k, float("-inf")) >= REASK_AFTER_S]
        for k in keys:
            self._asked_at[k] = now
        return keys

    # -- questions peers asked this agent --------------------------------------------------
    def asked_by_peer(self, key: str, asker: str, now: float) -> None:
        """``asker`` asks about ``key``, which this agent never saw: a copy that reaches it later is dropped."""
        self._asked_by.add(key, asker, now)

    def asker(self, key: str, now: float) -> str | None:
        """The peer resolving a resubmission of ``key``, if one asked about it."""
        return self._asked_by.get(key, now) if len(self._asked_by) else None
