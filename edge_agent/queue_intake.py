"""``amqp`` dispatch (RabbitMQ): the agent's shared tasks come from a quorum
queue over AMQP (:mod:`fogmesh.amqp_queue`) instead of an MQTT shared
subscription; everything else (direct tasks, presence, answers, offloads)
stays MQTT. Each task is put on the dispatcher's queue as a message with its
own ack token (:class:`~fogmesh.edge_agent.inputs.Queued`); the executor
hands its answer and its ack to :meth:`QueueIntake.settle`: one AMQP
transaction, so an agent killed between the two leaves neither (as one
socket write does for an answer and its PUBACK under shared subscriptions)."""

from __future__ import annotations

from typing import Any, Sequence

from fogmesh.amqp_queue import QueuedTask, TaskQueue
from fogmesh.edge_agent.actions import Publish
from fogmesh.edge_agent.events import Confirmed, Withdrawn
from fogmesh.edge_agent.inputs import Queued, QueueLost, Received


class QueueIntake:
    def __init__(self, urls: Sequence[str], *, root: str, events: Any, prefetch: int, log: Any) -> None:
        self.log = log
        self._events = events
        self.queue = TaskQueue(urls, root=root, on_task=self._take, prefetch=prefetch,
                               on_connection=self._connection)

    def _take(self, task: QueuedTask) -> None:
        self._events.put(Received(Queued.of(self.queue, task)))

    def _connection(self, up: bool) -> None:
        if up:
            self.log.info("taking tasks from RabbitMQ queue %s at %s", self.queue.queue, self.queue.url)
        else:
            self.log.warning("lost the task queue at %s; what this agent held unanswered goes back to it, "
                             "and is let go here", self.queue.url)
            self._events.put(QueueLost(self.queue.connection_no))

    def start(self, *, timeout: float) -> None:
        self.queue.start(timeout=timeout)

    def settle(self, token: Queued, answers: list[Publish]) -> None:
        """The task's answer(s) and its ack in one AMQP transaction; the core
        hears of the answers as it would from MQTT: confirmed, or withdrawn
        (then the task comes back, redelivered, and is answered from the store)."""
        def done(ok: bool) -> None:
            if ok:
                for a in answers:
                    if a.sent_key is not None:
                        self._events.put(Confirmed(a.sent_key))
                return
            fenced = [a for a in answers if a.fence_key is not None]
            if fenced:
                self._events.put(Withdrawn(fenced, control=False))
        token.queue.settle(token.task, [(a.topic, a.payload) for a in answers], done)

    def taking(self, want: bool) -> None:
        self.queue.taking(want)

    def stop(self) -> None:
        self.queue.stop()
