"""What the agent core holds per task: one mutable record, private to the core
and its two halves (:mod:`fogmesh.edge_agent.offloading`, :mod:`fogmesh.edge_agent.failover`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fogmesh.errors import InvalidMessage
from fogmesh.messages import Task
from fogmesh.registry import TaskKind


@dataclass
class OfferState:
    peer: str
    offer_id: str
    sent_at: float
    accepted: bool = False


@dataclass
class Entry:
    """One task this agent holds. Mutable.

    state: claiming -> claimed -> (placing) -> queued -> running, or -> offered.
    """

    key: str
    received: float
    tokens: list[Any]
    task: Task | None = None
    kind: TaskKind | None = None
    error: InvalidMessage | None = None   # answer with this instead of running
    payload: bytes = b""
    state: str = "claiming"
    claim_at: float | None = None
    started: float | None = None
    timeout_at: float | None = None
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

    def __post_init__(self) -> None:
        if not self.claim_key:
            self.claim_key = self.key
