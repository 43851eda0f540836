"""What the agent's dispatcher thread is fed: one frozen event for each thing
that happened on another thread (a message on a connection, a worker's
result, a connection up or down, an operator's request).

Why events and not calls: the dispatcher owns the core, so every change to
the core happens on that one thread, in the order things happened; the
network, worker and signal threads only put these on its queue. Events the
core takes as they are (a worker's result, a confirmation, a withdrawal, a
connection change) are the core's own (:mod:`fogmesh.edge_agent.events`);
the others are the shell's and become core events in the dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

from fogmesh.announcements import Presence
from fogmesh.edge_agent.events import Confirmed, Finished, LinkChanged, Withdrawn
from fogmesh.edge_agent.session_rescue import RescueToken
from fogmesh.mqtt import Message, MqttClient
from fogmesh.registry import Registry
from fogmesh.task_queue import QueuedTask, TaskQueue

__all__ = ["Confirmed", "DrainAsked", "Finished", "IdConflict", "Incoming", "Input", "KindsReplaced", "LinkChanged",
           "Queued", "QueueLost", "Received", "Rescued", "StopAsked", "Wake", "Withdrawn", "describe_input"]


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message and the connection it came on, to acknowledge it there
    (the core's opaque ack token)."""

    client: MqttClient
    message: Message


@dataclass(frozen=True, slots=True)
class Queued:
    """A task taken from the AMQP task queue (``amqp`` dispatch, RabbitMQ),
    as a message: acknowledged there once its answer is confirmed."""

    queue: TaskQueue
    task: QueuedTask
    message: Message
    client: None = None          # not from an MQTT connection

    @classmethod
    def of(cls, queue: TaskQueue, task: QueuedTask) -> Queued:
        return cls(queue, task, Message(topic=task.topic, payload=task.payload, qos=1, retain=False, mid=0,
                                        generation=task.connection, dup=task.redelivered))


@dataclass(frozen=True, slots=True)
class Received:
    """A message on one of the agent's own connections (or its task queue)."""

    incoming: Incoming | Queued


@dataclass(frozen=True, slots=True)
class Rescued:
    """A message taken from a dead peer's MQTT session."""

    token: RescueToken


@dataclass(frozen=True, slots=True)
class DrainAsked:
    """The operator asked the agent to finish its work and leave."""


@dataclass(frozen=True, slots=True)
class IdConflict:
    """Another instance of this agent's id said something on its presence
    topic (online, or offline: the dispatcher judges it a moment later)."""

    other: Presence


@dataclass(frozen=True, slots=True)
class StopAsked:
    """Stop taking tasks; leave once the held ones finish, or at ``by``."""

    by: float


@dataclass(frozen=True, slots=True)
class Wake:
    """Nothing happened: look at the deadlines again (one changed)."""


@dataclass(frozen=True, slots=True)
class KindsReplaced:
    """A deployment switches the kinds this agent runs (the core's and
    presence's); ``then`` is called on the dispatcher once it has."""

    registry: Registry
    then: Callable[[], None]


@dataclass(frozen=True, slots=True)
class QueueLost:
    """The task queue's connection ``connection`` closed (amqp dispatch): the
    broker gave back what it held unacknowledged."""

    connection: int


Input = Union[Received, Rescued, Finished, Confirmed, Withdrawn, LinkChanged, DrainAsked, IdConflict,
              StopAsked, Wake, KindsReplaced, QueueLost]


def describe_input(event: Input, *, limit: int = 160) -> str:
    """One log line's worth of ``event``."""
    text = repr(event)
    return text if len(text) <= limit else text[:limit] + "..."
