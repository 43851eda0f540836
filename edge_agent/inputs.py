"""What the agent's dispatcher thread is fed: the events of
:mod:`fogmesh.edge_agent.events` (one vocabulary: what happened, as plain
data), put on its queue by the threads they happened on (a message on a
connection, a worker's result, a connection up or down, an operator's
request), plus the two inputs that are the shell's alone (:class:`IdConflict`,
:class:`Wake`). :func:`core_event` says what the core is told of each.

Why events and not calls: the dispatcher owns the core, so every change to
the core happens on that one thread, in the order things happened; the
network, worker and signal threads only put these on its queue.

The ack tokens the shell gives the core with a message (opaque to it, handed
back in its ``Ack`` actions) are defined here too: :class:`Incoming` (an MQTT
connection's message), :class:`Queued` (the task queue's, amqp dispatch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from fogmesh.announcements import Presence
from fogmesh.edge_agent.events import CoreEvent
from fogmesh.mqtt import Message, MqttClient
from fogmesh.task_queue import QueuedTask, TaskQueue

__all__ = ["IdConflict", "Incoming", "Input", "Queued", "Wake", "core_event", "describe_input"]


@dataclass(frozen=True, slots=True)
class Incoming:
    """Ack token of a message on one of the agent's MQTT connections: acknowledged there."""

    client: MqttClient
    message: Message


@dataclass(frozen=True, slots=True)
class Queued:
    """Ack token of a task taken from the AMQP task queue (``amqp`` dispatch,
    RabbitMQ): acknowledged there, with its answer, once that is confirmed."""

    queue: TaskQueue
    task: QueuedTask


@dataclass(frozen=True, slots=True)
class IdConflict:
    """Another instance of this agent's id said something on its presence
    topic (online, or offline: the dispatcher judges it a moment later)."""

    other: Presence


@dataclass(frozen=True, slots=True)
class Wake:
    """Nothing happened: look at the deadlines again (one changed)."""


Input = Union[CoreEvent, IdConflict, Wake]


def core_event(event: Input) -> CoreEvent | None:
    """What the core is told of ``event``: the event itself, or nothing for
    the shell's own inputs."""
    return None if isinstance(event, (IdConflict, Wake)) else event


def describe_input(event: Input, *, limit: int = 160) -> str:
    """One log line's worth of ``event``."""
    text = repr(event)
    return text if len(text) <= limit else text[:limit] + "..."
