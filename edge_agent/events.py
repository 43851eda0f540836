"""Everything that happens to an agent, one frozen event each, in one
vocabulary: the core's one input surface
(:meth:`fogmesh.edge_agent.core.AgentCore.handle`, as h11's
``Connection.send``/``receive_data``). An event and ``now`` go in, actions
come out (:mod:`fogmesh.edge_agent.actions`); what the core knows is read
through its views (``held``, ``next_deadline()``, ``degraded``, ...), never
changed through them.

Why one vocabulary: the shell's threads (network, workers, task queue,
signals) put these very events on the dispatcher's queue, and the
dispatcher hands each to the core as it is; the shell adds only two inputs
of its own (:mod:`fogmesh.edge_agent.inputs`). So the shell, the tests and
the simulator drive the core in one way, and this file lists every input
there is. Plain data: no event carries a function; ack tokens are opaque.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from fogmesh.edge_agent.actions import Publish
from fogmesh.edge_agent.answer_book import StoredAnswer
from fogmesh.messages import ErrorInfo
from fogmesh.registry import Registry


@dataclass(frozen=True, slots=True)
class MessageIn:
    """A message on one of the agent's connections (``token``: what
    acknowledges it; ``dup``: the broker's redelivery, MQTT's DUP flag;
    ``queue_connection``: the task queue's connection it came on, amqp
    dispatch, whose loss gives it back: :class:`QueueLost`)."""

    topic: str
    payload: bytes
    token: Any
    dup: bool = False
    queue_connection: int | None = None


@dataclass(frozen=True, slots=True)
class RescuedIn:
    """A task message taken from ``holder``'s MQTT session after it died."""

    topic: str
    payload: bytes
    token: Any
    holder: str


@dataclass(frozen=True, slots=True)
class Finished:
    """A worker finished the run of ``key`` (``error``: it failed)."""

    key: str
    result: Any
    error: ErrorInfo | None


@dataclass(frozen=True, slots=True)
class Confirmed:
    """The broker acknowledged the answer of ``key``."""

    key: str


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """A dropped connection handed back messages the broker never confirmed
    (``control``: the control connection's; else the task connection's, whose
    events keep their order with the tasks it delivers after the reconnect)."""

    messages: list[Publish]
    control: bool = True


@dataclass(frozen=True, slots=True)
class LinkChanged:
    """A connection went up or down (``control``: the one claims and presence
    use). ``session_kept``, on the way up: the broker still had the
    connection's session, so what it had not seen acknowledged comes again."""

    control: bool
    up: bool
    session_kept: bool = True


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: deadlines due at ``now`` (claims, leases, run timeouts,
    deaths, probes) are acted on."""


@dataclass(frozen=True, slots=True)
class ClockRead:
    """The wall clock (Unix time) at ``now``: the core keeps time by ``now``
    (monotonic), but what it publishes for people carries Unix time."""

    wall: float


@dataclass(frozen=True, slots=True)
class BatteryRead:
    """The host's battery as the shell last read it (None: mains)."""

    percent: float | None


@dataclass(frozen=True, slots=True)
class MarksDue:
    """Claim dispatch, after each step: the "sent" record for the answers
    just emitted, so they and the record leave back to back."""


@dataclass(frozen=True, slots=True)
class OrderProbe:
    """Claim dispatch among peers: start checking that they see the claims
    topic in this agent's order (``token``: this probe's)."""

    token: str


@dataclass(frozen=True, slots=True)
class DrainAsked:
    """The operator asked this agent to finish its work and leave: no offers
    taken from now on (the shell unsubscribes from the tasks, once)."""


@dataclass(frozen=True, slots=True)
class JournalFailed:
    """The journal cannot be written (``reason``): take no new work."""

    reason: str


@dataclass(frozen=True, slots=True)
class JournalWorks:
    """The journal can be written again."""


@dataclass(frozen=True, slots=True)
class StopAsked:
    """Stopping: new task messages are left unacknowledged (the broker
    redelivers them to this session later); held tasks still finish. The
    shell leaves once they have, or at ``by`` (the core does not read it)."""

    by: float = 0.0


@dataclass(frozen=True, slots=True)
class Restored:
    """After a restart: the ids answered before (with their answers, where
    kept) and the tasks accepted but not answered, from the journal."""

    done: list[str]
    unfinished: list[bytes]
    answers: dict[str, StoredAnswer] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KindsChanged:
    """A deployment switched the kinds this agent runs (fogmesh.deploy): tasks
    landing from now on are judged by ``registry``; those held keep the kind
    they landed with."""

    registry: Registry


@dataclass(frozen=True, slots=True)
class QueueLost:
    """The task queue's connection ``connection`` closed (amqp dispatch,
    RabbitMQ): the messages it delivered (:attr:`MessageIn.queue_connection`)
    are no longer this agent's, the broker gave them back to be taken by
    another. Tasks held only through such messages are let go unanswered,
    their runs stopped: the queue's next taker owns them, and an answer
    from here would be a second one."""

    connection: int


CoreEvent = Union[MessageIn, RescuedIn, Finished, Confirmed, Withdrawn, LinkChanged, Tick, ClockRead,
                  BatteryRead, MarksDue, OrderProbe, DrainAsked, JournalFailed, JournalWorks, StopAsked,
                  Restored, KindsChanged, QueueLost]
