"""What the agent core holds per task: one mutable record whose state moves
only along a transition table (:data:`TRANSITIONS`). Entries are held by
:class:`fogmesh.edge_agent.entry_table.EntryTable`, which owns them, their
claim-key index and their timers, and is the only writer of their fields
(its named transitions); the core's concerns read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from fogmesh.errors import IllegalTransition, InvalidMessage
from fogmesh.messages import Task
from fogmesh.registry import TaskKind


class EntryState(str, Enum):
    """Where a task this agent holds stands (a ``str``, so logs read its name)."""

    CLAIMING = "claiming"   # its claim is due after the claim delay (claims only)
    CLAIMED = "claimed"     # its claim is out; the broker's first claim decides
    ASKING = "asking"       # a resubmission: peers are asked who holds or answered it
    PLACING = "placing"     # this agent runs it or places it: the policy decides where
    QUEUED = "queued"       # waiting for a worker here
    RUNNING = "running"     # in a worker here (or inline)
    OFFERED = "offered"     # with a peer or a bridge, whose result comes back here
    ANSWERED = "answered"   # its answer is made but held until the takeover claim is won
    DONE = "done"           # answered; kept until released

    def __str__(self) -> str:
        return self.value


S = EntryState
# Every live state may be answered (DONE, or ANSWERED while fenced); the rest is
# the flow a task takes. Read off the core and checked against every move the
# whole test suite makes, faults and chaos included.
_ANSWER = frozenset({S.DONE, S.ANSWERED})
TRANSITIONS: dict[EntryState, frozenset[EntryState]] = {
    S.CLAIMING: frozenset({S.CLAIMED, S.PLACING, S.ASKING}) | _ANSWER,
    S.CLAIMED: frozenset({S.PLACING, S.CLAIMING}) | _ANSWER,   # CLAIMING: won across a cut, claimed again
    S.ASKING: frozenset({S.CLAIMING, S.PLACING}) | _ANSWER,
    S.PLACING: frozenset({S.QUEUED, S.RUNNING, S.OFFERED}) | _ANSWER,
    S.QUEUED: frozenset({S.RUNNING, S.OFFERED}) | _ANSWER,
    S.RUNNING: _ANSWER,
    S.OFFERED: frozenset({S.PLACING}) | _ANSWER,
    S.ANSWERED: frozenset({S.DONE}),
    S.DONE: frozenset(),
}


@dataclass
class OfferState:
    peer: str
    offer_id: str
    sent_at: float
    accepted: bool = False


@dataclass
class Entry:
    """One task this agent holds. Mutable.

    Its ``state`` moves only along :data:`TRANSITIONS` (:meth:`move`).
    """

    key: str
    received: float
    tokens: list[Any]
    task: Task | None = None
    kind: TaskKind | None = None
    error: InvalidMessage | None = None   # answer with this instead of running
    payload: bytes = b""
    state: EntryState = EntryState.CLAIMING
    claim_at: float | None = None
    started: float | None = None
    run_until: float | None = None        # a local run's timeout (set through EntryTable)
    lease_until: float | None = None      # an offer's lease (set through EntryTable)
    remembered: bool = False
    origin: str | None = None             # set when running a task offloaded to us
    origin_offer: str | None = None
    offer: OfferState | None = None      # set while offloaded to a peer
    offer_ids: set[str] = field(default_factory=set)
    tried: set[str] = field(default_factory=set)
    claim_key: str = ""                   # what claims for this entry name (default: key)
    fenced: bool = False                  # answer only after winning takeover_key(key)
    pending: list[Any] | None = None      # the answer, held while fenced
    recorded: Any = None                  # a dead peer's answer (Publish): deliver, do not run
    answer: Any = None                    # the device's answer once made (answers.Answer)
    requeued: bool = False                # a task queue gave it back (AgentConfig.task_queue)
    queue_held: bool = False              # from a task queue, which gives it back if unacknowledged
    queue_connections: set[int | None] = field(default_factory=set)   # ... the connections its tokens came on

    def __post_init__(self) -> None:
        if not self.claim_key:
            self.claim_key = self.key

    def move(self, to: EntryState) -> None:
        """Change state along the table; an illegal move is a bug in the core
        and raises rather than answering a task twice or never."""
        if to not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"task {self.key!r}: {self.state} -> {to} is not a legal move")
        self.state = to
