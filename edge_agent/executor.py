"""Carrying out the agent core's actions: publish on the right connection,
acknowledge, journal, run in a worker, cancel, rescue a peer's session.
The IO half of a step; what to do was the core's decision. What carrying
one out makes happen at once (an inline run's result, a journal that cannot
be written, a drain to begin) comes back as an event for the dispatcher to
step the core with (:meth:`Executor.do`): the executor never calls the core.

Which connection: under shared subscriptions an answer leaves on the task
connection, before the acknowledgement of its task, so a broker that missed
the answer gives the task back. Under claim dispatch everything shares the
control connection, so peers see a winner's claim, its "done" record (before
the answer), its "sent" record (after it) and its presence in the order it
sent them (the contests of a peer back after its will depend on it).
Claims, presence and the inbox always go on the control connection.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from fogmesh.edge_agent.actions import (
    Ack,
    Action,
    Cancel,
    Drain,
    Forget,
    Publish,
    Remember,
    Rescue,
    ResumeTaking,
    Run,
    StopTaking,
    describe,
)
from fogmesh.edge_agent.events import DrainAsked, Finished, JournalFailed
from fogmesh.edge_agent.inputs import Incoming, Input, Queued
from fogmesh.edge_agent.journal import Journal
from fogmesh.edge_agent.queue_intake import QueueIntake
from fogmesh.edge_agent.session_rescue import RescueToken
from fogmesh.edge_agent.workers import WorkerPool, run_handler
from fogmesh.errors import StorageError
from fogmesh.mqtt import MqttClient
from fogmesh.registry import Registry
from fogmesh.topics import Topics


class Executor:
    def __init__(self, *, client: MqttClient, ctl: MqttClient, dispatch: str, topics: Topics,
                 journal: Journal | None, pool: WorkerPool, registry: Registry, log: logging.LoggerAdapter[Any],
                 rescue: Callable[[str], None], stop_taking: Callable[[StopTaking], None],
                 resume_taking: Callable[[], None], queue: QueueIntake | None = None) -> None:
        self.client, self.ctl = client, ctl
        self.claim_dispatch = dispatch == "claim"
        self.journal, self.pool, self.registry = journal, pool, registry
        self.log = log
        self._rescue, self._stop_taking, self._resume_taking = rescue, stop_taking, resume_taking
        self._ctl_prefixes = (topics.claims, topics.presence_prefix, topics.agents_prefix)
        # amqp dispatch: what a step publishes on the task link waits for the ack that follows
        # it: a queued task's answer goes with that ack in one AMQP transaction (queue_intake.py).
        self.queue = queue
        self._held: list[Publish] = []

    @property
    def answers_via(self) -> MqttClient:
        """The connection that carries answers."""
        return self.ctl if self.claim_dispatch else self.client

    def do(self, action: Action) -> Input | None:
        """Carry out ``action``; what that made happen at once, if anything:
        an inline run's result, the journal failing, a drain the operator asked for."""
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("do %s", describe(action))
        if isinstance(action, Publish):
            self._publish(action)
        elif isinstance(action, Ack):
            self._ack(action.token)
        elif isinstance(action, (Remember, Forget)):
            return self._journal(action)
        elif isinstance(action, Run):
            if action.kind.inline:
                result, error = run_handler(self.registry, action.task.kind, action.task.args)
                return Finished(action.key, result, error)
            self.pool.submit(action.key, action.task.kind, action.task.args,
                             shipped=action.kind.handler if action.kind.ships_handler else None)
        elif isinstance(action, Cancel):
            self.log.warning("stopping the run of task %s (timeout, or answered elsewhere)", action.key)
            self.pool.cancel(action.key)
        elif isinstance(action, Drain):
            return DrainAsked()
        elif isinstance(action, Rescue):
            self._rescue(action.agent)
        elif isinstance(action, StopTaking):
            self._stop_taking(action)
        elif isinstance(action, ResumeTaking):
            self._resume_taking()
        return None

    def _publish(self, action: Publish) -> None:
        via = self.ctl if self.claim_dispatch or action.topic.startswith(self._ctl_prefixes) else self.client
        if self.queue is not None and via is self.client:
            self._held.append(action)
            return
        self._send(via, action)

    @staticmethod
    def _send(via: MqttClient, action: Publish) -> None:
        tagged = action.fence_key is not None or action.sent_key is not None
        via.publish(action.topic, action.payload, qos=action.qos, retain=action.retain,
                    tag=action if tagged else None, withdraw=action.fence_key is not None,
                    properties=action.properties)

    def flush_held(self) -> None:
        """Held publishes no queued task's ack took: out over MQTT, as elsewhere
        (after each batch of actions)."""
        held, self._held = self._held, []
        for action in held:
            self._send(self.client, action)

    def _ack(self, token: Any) -> None:
        if isinstance(token, Queued):
            assert self.queue is not None
            held, self._held = self._held, []
            self.queue.settle(token, held)
            return
        self.flush_held()
        if isinstance(token, RescueToken):
            token.session.ack(token)
        elif isinstance(token, Incoming):   # None: restored from the journal
            token.client.ack(token.message)

    def _journal(self, action: Remember | Forget) -> JournalFailed | None:
        """A record in the journal; one it cannot write degrades the agent."""
        if self.journal is None:
            return None
        try:
            if isinstance(action, Remember):
                self.journal.accepted(action.key, action.payload)
            else:
                self.journal.finished(action.key, action.answer)
        except StorageError as exc:
            return JournalFailed(str(exc))
        return None

