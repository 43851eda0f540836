"""The task queue's decisions (``amqp`` dispatch), apart from any broker
library: which node of the failover list next and when, what goes into one
transaction, what a delivery of a closed connection is worth, what a failed
commit means for the answers. Pure: ``now`` comes in; the shells
(:mod:`fogmesh.amqp_queue` over pika, ``tests/fake_queue.py`` in memory) do
the IO and the waiting.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal, Sequence

from fogmesh.task_queue import QueuedTask, Settled

__all__ = ["Commit", "NodeCycle", "Settle", "Settles", "consumer_move", "no_node_reason", "where"]


class NodeCycle:
    """Which node of the failover list to connect to, and when.

    The first node first. When a node does not take the connection, or a
    connection is lost (its node stopped, say: another holds the quorum
    queue's replicas), the next node of the list, ``step_s`` later. Once
    every node has failed in a row (a whole round of the list), ``retry_s``
    before the next round (the backoff: a cluster that is down is not
    hammered, and one coming back is found within ``retry_s``). A connection
    that takes the queue ends the run of failures.
    """

    def __init__(self, nodes: int, *, retry_s: float, step_s: float = 0.05) -> None:
        if nodes < 1:
            raise ValueError("a failover list needs at least one node")
        self.nodes, self.retry_s, self.step_s = nodes, retry_s, step_s
        self.index = 0                     # the node to try next
        self.at = float("-inf")            # not before this
        self.failures = 0                  # in a row, since the last connection that took the queue

    def next(self) -> tuple[int, float]:
        """(the node's index in the list, when to try it)."""
        return self.index, self.at

    def connected(self) -> None:
        """The node at :attr:`index` took the queue."""
        self.failures = 0

    def failed(self, now: float) -> None:
        """The node at :attr:`index` did not take the connection, or lost it."""
        self.failures += 1
        self.index = (self.index + 1) % self.nodes
        round_over = self.failures % self.nodes == 0
        self.at = now + (self.retry_s if round_over else self.step_s)

    @property
    def round_failed(self) -> bool:
        """Every node of the list failed since the last connection (worth a log line)."""
        return self.failures >= self.nodes


@dataclass(frozen=True, slots=True)
class Settle:
    """A task's answers (MQTT topic, payload) and its acknowledgement, to go together."""

    task: QueuedTask
    publishes: tuple[tuple[str, bytes], ...]
    done: Settled

    @classmethod
    def of(cls, task: QueuedTask, publishes: Sequence[tuple[str, bytes]], done: Settled) -> Settle:
        return cls(task, tuple(publishes), done)


@dataclass(frozen=True, slots=True)
class Commit:
    """One transaction on connection ``connection``: the settles waiting when it began."""

    connection: int
    batch: tuple[Settle, ...]

    @property
    def live(self) -> tuple[Settle, ...]:
        """What goes into the transaction: settles of tasks taken on this connection."""
        return tuple(s for s in self.batch if s.task.connection == self.connection)

    @property
    def stale(self) -> tuple[Settle, ...]:
        """Settles of tasks taken on a connection that has closed since. A
        delivery tag belongs to its connection, and the broker gave those tasks
        back when it closed: another consumer (or this one, redelivered) has
        them now, so these answers are not sent and these acks are not made."""
        return tuple(s for s in self.batch if s.task.connection != self.connection)

    def outcomes(self, committed: bool) -> list[tuple[Settled, bool]]:
        """Each settle's ``done`` and what to tell it: True only for a live one
        of a committed transaction. A commit that failed committed nothing, the
        answers as little as the acks: they are withdrawn (the tasks come back,
        redelivered, and their answers go out then, from the answerer's store)."""
        return [(s.done, committed and s.task.connection == self.connection) for s in self.batch]


class Settles:
    """Settles waiting for the connection's thread, in order. One thread adds
    (the agent's dispatcher), one takes (the connection's): ``deque``'s
    ``append`` and ``popleft`` are atomic, so no lock is needed."""

    def __init__(self) -> None:
        self._todo: deque[Settle] = deque()

    def add(self, settle: Settle) -> None:
        self._todo.append(settle)

    def __bool__(self) -> bool:
        return bool(self._todo)

    def take(self, connection: int) -> Commit:
        """Everything waiting, as one transaction on ``connection``."""
        batch = []
        while self._todo:
            batch.append(self._todo.popleft())
        return Commit(connection, tuple(batch))

    def lost(self) -> list[tuple[Settled, bool]]:
        """The connection is gone: nothing waiting was committed (the broker
        gives back what the connection held)."""
        return self.take(-1).outcomes(False)


def consumer_move(*, want: bool, consuming: bool) -> Literal["consume", "cancel"] | None:
    """Start consuming, stop, or neither (``taking`` changed since the last look)."""
    if want == consuming:
        return None
    return "consume" if want else "cancel"


def where(url: str) -> str:
    """``host:port`` of an AMQP URL, without its login (for logs and reasons)."""
    rest = url.split("://", 1)[-1].rsplit("@", 1)[-1]
    return rest.split("/", 1)[0]


def no_node_reason(urls: Sequence[str], *, timeout: float, first_error: str | None) -> str:
    """Why a task queue did not start: no node took it in time (the nodes
    named without their URLs, which hold the password; the first failure's
    reason, if one came)."""
    nodes = ", ".join(where(u) for u in urls)
    return (f"no AMQP node of {nodes} took the task queue within {timeout:g} s"
            + (f" ({first_error})" if first_error else ""))
