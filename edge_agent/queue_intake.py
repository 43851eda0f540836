"""``amqp`` dispatch (RabbitMQ): the agent's shared tasks come from a quorum
queue (:class:`fogmesh.task_queue.TaskQueue`: over AMQP,
:mod:`fogmesh.amqp_queue`, or the tests' in-memory one) instead of an MQTT
shared subscription; everything else (direct tasks, presence, answers,
offloads) stays MQTT. Each task is put on the dispatcher's queue as a message
(naming the queue connection it came on) with its own ack token
(:class:`~fogmesh.edge_agent.inputs.Queued`); the
executor hands its answer and its ack to :meth:`QueueIntake.settle`: one
transaction, so an agent killed between the two leaves neither (as one
socket write does for an answer and its PUBACK under shared subscriptions)."""

from __future__ import annotations

import logging
import queue
from typing import Any, Sequence

from fogmesh.edge_agent.actions import Publish
from fogmesh.edge_agent.events import Confirmed, MessageIn, QueueLost, Withdrawn
from fogmesh.edge_agent.inputs import Input, Queued
from fogmesh.task_queue import QueuedTask, QueueFactory


class QueueIntake:
    def __init__(self, urls: Sequence[str], *, root: str, events: queue.SimpleQueue[Input], prefetch: int,
                 log: logging.LoggerAdapter[Any], make: QueueFactory) -> None:
        self.log = log
        self._events = events
        self.queue = make(urls, root=root, on_task=self._take, on_connection=self._connection, prefetch=prefetch)

    def _take(self, task: QueuedTask) -> None:
        self._events.put(MessageIn(task.topic, task.payload, Queued(self.queue, task), task.redelivered,
                                   queue_connection=task.connection))

    def _connection(self, up: bool, connection: int) -> None:
        if up:
            self.log.info("taking tasks from task queue %s at %s", self.queue.name, self.queue.url)
        else:
            self.log.warning("lost the task queue at %s; what this agent held unanswered goes back to it, "
                             "and is let go here", self.queue.url)
            self._events.put(QueueLost(connection))

    def start(self, *, timeout: float) -> None:
        self.queue.start(timeout=timeout)

    def settle(self, token: Queued, answers: list[Publish]) -> None:
        """The task's answer(s) and its ack in one transaction; the core hears
        of the answers as it would from MQTT (:func:`settled`)."""
        def done(ok: bool) -> None:
            for event in settled(ok, answers):
                self._events.put(event)
        token.queue.settle(token.task, [(a.topic, a.payload) for a in answers], done)

    def taking(self, want: bool) -> None:
        self.queue.taking(want)

    def stop(self) -> None:
        self.queue.stop()


def settled(ok: bool, answers: Sequence[Publish]) -> list[Confirmed | Withdrawn]:
    """What the core hears of a queued task's answers once their transaction
    is over: committed, each answer it asked about is confirmed; not committed
    (the connection went, the commit failed), the fenced ones are withdrawn:
    nothing went out, the task comes back redelivered, and is answered then
    from the answerer's store, not run again. (``control``: not an event of
    the MQTT task connection, whose events the dispatcher counts to keep
    their order with the tasks that connection steps where they arrive.)"""
    if ok:
        return [Confirmed(a.sent_key) for a in answers if a.sent_key is not None]
    fenced = [a for a in answers if a.fence_key is not None]
    return [Withdrawn(fenced, control=True)] if fenced else []
