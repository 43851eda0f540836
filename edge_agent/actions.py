"""The agent core's vocabulary: its configuration, the actions it asks the IO
shell to carry out, and its counters. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from fogmesh.edge_agent.answer_book import StoredAnswer
from fogmesh.messages import DEFAULT_LIMITS, Limits, Task
from fogmesh.properties import MessageProperties
from fogmesh.registry import TaskKind
from fogmesh.topics import Topics

DISPATCH_MODES = ("shared", "claim")


@dataclass(frozen=True)
class Publish:
    """``sent_key``: tell the core (``on_sent``) once the broker has this message.
    ``fence_key``: if the connection drops before the broker has it, do not
    resend it blindly after the reconnect: hand it back (``on_withdrawn``)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    sent_key: str | None = None
    fence_key: str | None = None
    properties: MessageProperties | None = None     # MQTT 5 (a reply's correlation data...)


@dataclass(frozen=True)
class Ack:
    """Acknowledge the received message behind ``token`` (opaque to the core)."""

    token: Any


@dataclass(frozen=True)
class Run:
    """Start ``task`` with ``kind``; the shell reports back with a ``Finished`` event (:mod:`.events`)."""

    key: str
    task: Task
    kind: TaskKind
    timeout_s: float


@dataclass(frozen=True)
class Cancel:
    """Stop the run of ``key`` (it passed its timeout, or a peer answered first)."""

    key: str


@dataclass(frozen=True)
class Remember:
    """Journal an accepted task, so a restarted agent can finish it."""

    key: str
    payload: bytes


@dataclass(frozen=True)
class Forget:
    """The journaled task is answered (with ``answer``, kept for a resubmission)."""

    key: str
    answer: StoredAnswer | None = None


@dataclass(frozen=True)
class Drain:
    """An operator asked this agent to stop taking work and leave."""


@dataclass(frozen=True)
class Rescue:
    """This agent won the election to rescue ``agent``'s MQTT session: connect
    with its client id, take over what the broker kept for it, unsubscribe it
    from the shared task topic, feed the tasks to ``on_rescued``."""

    agent: str


@dataclass(frozen=True)
class StopTaking:
    """This agent takes no new tasks (``reason`` says why); it finishes what
    it holds. ``journal``: its journal failed, so it tries the journal again
    and takes tasks once it works (:class:`ResumeTaking`); otherwise (claims
    reach the agents in different orders here) for good."""

    reason: str
    journal: bool = False


@dataclass(frozen=True)
class ResumeTaking:
    """The journal works again: take tasks again."""


Action = Union[Publish, Ack, Run, Cancel, Remember, Forget, Drain, Rescue, StopTaking, ResumeTaking]


def describe(action: Action) -> str:
    """One short line per action for ``--log-level DEBUG`` traces (which agent
    published, ran or cancelled what, in order): enough to follow one task id
    through a chaos run without dumping payloads."""
    if isinstance(action, Publish):
        extra = "".join(f" {k}={v}" for k, v in (("sent", action.sent_key), ("fence", action.fence_key)) if v)
        return f"publish {action.topic}{extra} {action.payload[:160]!r}"
    if isinstance(action, Run):
        return f"run {action.key} ({action.task.kind})"
    if isinstance(action, Ack):
        return "ack"
    fields = ", ".join(f"{k}={v!r}" for k, v in vars(action).items() if k != "payload")
    return f"{type(action).__name__.lower()} {fields}"


@dataclass(frozen=True)
class AgentConfig:
    agent_id: str
    topics: Topics = field(default_factory=Topics)
    concurrency: int = 2
    max_queue: int = 1000
    device_rate: float = 0.0        # tasks/s one device may submit to this agent (0: no limit)
    dispatch: str = "shared"
    limits: Limits = DEFAULT_LIMITS
    dedup_items: int = 20_000
    dedup_ttl_s: float = 900.0
    offer_lease_s: float = 1.0      # a peer must accept an offer within this
    presence_stale_s: float = 15.0  # a peer silent this long is dead (3 periods)
    # ... but one asked about a task is waited for this long: it may be frozen with the task
    # or its answer (its will comes within 1.5 keep-alives; none if a broker restart took it)
    gone_silent_s: float = 35.0
    default_run_ms: float = 10.0    # run estimate for a kind not yet measured
    takeover_grace_s: float = 2.0   # a peer offline this long has its tasks taken over
    rejoin_grace_s: float = 8.0     # ... this long after this agent's own reconnect (peers back off too)
    cloud_lease_s: float = 600.0    # how long a cloud bridge may hold an accepted task
    # Tasks come from a queue (RabbitMQ, amqp dispatch) that gives back what a lost consumer
    # held: a redelivered copy's first holder may have answered it (a node stopping mid-commit
    # can deliver the answer and lose the ack), so it is asked about before it runs.
    task_queue: bool = False
    instance: str = ""              # this run of the agent (its presence's): named in its claims

    def __post_init__(self) -> None:
        if self.dispatch not in DISPATCH_MODES:
            raise ValueError(f"dispatch must be one of {DISPATCH_MODES}")
        if self.concurrency < 1 or self.max_queue < 0:
            raise ValueError("concurrency must be >= 1 and max_queue >= 0")


@dataclass
class Counters:
    received: int = 0
    completed: int = 0
    failed: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    busy: int = 0
    rate_limited: int = 0      # of the busy answers: a device over --device-rate
    timeouts: int = 0
    claims_won: int = 0
    claims_lost: int = 0
    bad_claims: int = 0
    offers_sent: int = 0
    offers_accepted: int = 0
    offers_rejected: int = 0
    leases_expired: int = 0
    offloaded_in: int = 0
    late_results: int = 0
    bad_inbox: int = 0
    taken_over: int = 0
    withdrawn: int = 0         # answers a dropped connection handed back (then fenced)
    redelivered: int = 0       # dead peers' recorded answers delivered instead of a re-run
    answered_again: int = 0    # ids submitted again within the dedup window: the same answer sent
    asked: int = 0             # resubmissions asked about (shared dispatch): does a peer have it?
    order_divergences: int = 0  # claim dispatch: a peer answered a task this agent saw itself win
    fenced_dropped: int = 0
    superseded: int = 0        # claim dispatch: held copies dropped as a peer won a later takeover round
    answers_found_out: int = 0  # withdrawn answers this agent's own echoed record reported out: not sent again
    reclaimed: int = 0         # claim dispatch: tasks won across a lost connection, competed for again
    rescues: int = 0
    refused: int = 0           # presence, bridge health and control messages refused: malformed, or
                               # speaking for another box than the topic names (topics.md, "Refused input")


LATENCY_BOUNDS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


@dataclass
class LatencyHistogram:
    """Receipt-to-reply latency of the tasks this agent answered, in fixed
    buckets (cheap to keep, exported to Prometheus as a histogram)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))
    total_ms: float = 0.0
    n: int = 0

    def observe(self, ms: float) -> None:
        i = 0
        while i < len(LATENCY_BOUNDS_MS) and ms > LATENCY_BOUNDS_MS[i]:
            i += 1
        self.counts[i] += 1
        self.total_ms += ms
        self.n += 1
