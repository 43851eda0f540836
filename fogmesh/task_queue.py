"""The task queue an agent takes tasks from under ``amqp`` dispatch: the one
small interface :class:`fogmesh.edge_agent.queue_intake.QueueIntake` uses.
Pure: types and names only.

Two implementations: :class:`fogmesh.amqp_queue.TaskQueue` (a RabbitMQ
quorum queue over AMQP 0-9-1, the one module that imports ``pika``) and the
tests' in-memory quorum queue (``tests/fake_queue.py``), injected through
``AgentOptions.amqp_queue``. Both take their decisions from
:mod:`fogmesh.queue_plan`.

What an implementation promises (what the agent relies on):

* ``on_task`` is called for each message the queue hands this consumer, at
  most ``prefetch`` unacknowledged at a time, from the implementation's own
  thread; a message another consumer took and never acknowledged comes
  again with ``redelivered`` set.
* ``on_connection(True, n)`` once connection ``n`` takes tasks;
  ``on_connection(False, n)`` once it is gone: the broker then gives back
  everything taken on it and not acknowledged (to any consumer).
* ``settle`` publishes the answers and acknowledges the task in one
  transaction: both or neither. ``done(True)`` once committed; ``done(False)``
  when they were not (the connection went first, the commit failed, or the
  task was taken on a connection that has closed since): the task comes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

__all__ = ["OnConnection", "OnTask", "QueueFactory", "QueuedTask", "Settled", "TaskQueue", "queue_name",
           "routing_keys"]


@dataclass(frozen=True, slots=True)
class QueuedTask:
    """One message from the queue: its MQTT topic, payload, whether the broker
    gave it back after another consumer took it, and what acknowledges it."""

    topic: str
    payload: bytes
    redelivered: bool
    tag: int
    connection: int                   # which connection's delivery tag ``tag`` is


#: Told whether a settle was committed (True) or not, answers and ack alike (False).
Settled = Callable[[bool], None]
OnTask = Callable[[QueuedTask], None]
#: (up, connection number): a connection took the queue, or is gone.
OnConnection = Callable[[bool, int], None]


class TaskQueue(Protocol):
    """What the agent uses of a task queue."""

    @property
    def name(self) -> str:
        """The queue's name (for logs)."""

    @property
    def url(self) -> str | None:
        """The node in use, without its login (for logs)."""

    def start(self, *, timeout: float) -> object:
        """Connect; :class:`fogmesh.errors.ConnectError` if no node took the queue within ``timeout``."""

    def stop(self) -> None:
        """Close: what this consumer held unacknowledged goes back to the queue."""

    def taking(self, want: bool) -> None:
        """Consume or not (a degraded or draining agent stops)."""

    def settle(self, task: QueuedTask, publishes: Sequence[tuple[str, bytes]], done: Settled) -> None:
        """Publish ``publishes`` (MQTT topic, payload) and acknowledge ``task``
        in one transaction; ``done`` says whether it was committed. Never blocks."""


class QueueFactory(Protocol):
    """Makes a task queue over a failover list of node URLs (``AgentOptions.amqp``)."""

    def __call__(self, urls: Sequence[str], *, root: str, on_task: OnTask, on_connection: OnConnection,
                 prefetch: int) -> TaskQueue: ...


def routing_keys(root: str) -> tuple[str, str]:
    """The ``amq.topic`` keys of ``{root}/tasks`` and ``{root}/tasks/{device}``."""
    base = root.replace("/", ".") + ".tasks"
    return base, base + ".*"


def queue_name(root: str) -> str:
    return f"fogmesh.{root.replace('/', '.')}.tasks"
