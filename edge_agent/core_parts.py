"""What each concern of the agent core sees of the whole: the parts that own
its state, and the steps one concern takes on another's behalf.

The core (:class:`fogmesh.edge_agent.core.AgentCore`) is one object split by
concern: landing, running, peering, claims, answers, offloading, failover,
asking. They decide; the state they decide with lives in parts that own it
and keep its invariants (a running count that never goes below zero, one
winner per claim key, offers counted per peer in pairs, ...). This base
names those parts
and declares every step a concern calls in another, so a type checker
sees each concern alone and a reader sees what crosses between them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from fogmesh.asks import Have
from fogmesh.claims import Claim
from fogmesh.edge_agent.actions import Action, AgentConfig, Counters, LatencyHistogram, Publish
from fogmesh.edge_agent.answer_book import AnswerBook, StoredAnswer
from fogmesh.edge_agent.ask_book import AskBook
from fogmesh.edge_agent.claim_book import ClaimBook
from fogmesh.edge_agent.confirmations import Confirmations
from fogmesh.edge_agent.deaths import DeathWatch
from fogmesh.edge_agent.entry import Entry
from fogmesh.edge_agent.entry_table import EntryTable
from fogmesh.edge_agent.mode import ModeState
from fogmesh.edge_agent.offer_book import OfferBook
from fogmesh.edge_agent.ordering import OrderCheck
from fogmesh.edge_agent.peers import Peer, PeerRegistry
from fogmesh.edge_agent.placement import PlacementPolicy, SelfState
from fogmesh.edge_agent.ratelimit import RateLimiter
from fogmesh.edge_agent.runner import LocalRunner
from fogmesh.refusals import Refusals
from fogmesh.registry import Registry


class CoreParts(ABC):
    # -- what the shell configured and tells it ---------------------------------
    config: AgentConfig
    registry: Registry
    policy: PlacementPolicy
    mode: ModeState               # what new work it takes: online, draining, stopping, degraded...
    battery: float | None         # the host's battery (None: mains)
    wall_offset: float            # Unix time minus ``now``
    # -- what it counts ------------------------------------------------------------
    counters: Counters
    latency: LatencyHistogram
    refusals: Refusals            # what it refused at the boundary, for the shell's rate-limited log line
    # -- the parts that own its state --------------------------------------------------
    entries: EntryTable           # the tasks it holds, by key and claim key, with their timers
    peers: PeerRegistry           # peers' presence and offload history
    runner: LocalRunner           # its queue and runs
    claims: ClaimBook             # the claims topic's verdicts, copies of peers' tasks
    offers: OfferBook             # offers out per peer, busy peers, bridges
    answers: AnswerBook           # ids answered recently, with their answers
    confirms: Confirmations       # answers confirmed, reported, withdrawn
    deaths: DeathWatch            # peers' wills and graces
    asks: AskBook                 # questions about resubmissions
    order: OrderCheck             # the claim-order probe
    limiter: RateLimiter | None   # per-device rate (None: no limit)

    def _claim_record(self, task: str, **fields: Any) -> bytes:
        """One of this agent's records on the claims topic, naming its run
        (``instance``): a record from a run or epoch later than a will shows the
        agent alive again, before its presence says so."""
        return Claim(task, self.config.agent_id, instance=self.config.instance or None, **fields).encode()

    # -- steps of the core itself (core.py) -------------------------------------------------
    @abstractmethod
    def self_state(self) -> SelfState:
        """This agent's own bid, as placement policies judge it."""

    @abstractmethod
    def _accept(self, entry: Entry, now: float) -> list[Action]:
        """This agent is responsible for ``entry`` now: answer, place or queue it."""

    @abstractmethod
    def _placement(self, entry: Entry, now: float, *, with_cloud: bool) -> str | None:
        """Where the policy sends ``entry``: a peer, a bridge, or None for here."""

    @abstractmethod
    def _start_queued(self, now: float) -> list[Action]:
        """Start queued tasks while workers are free."""

    @abstractmethod
    def _stop_local(self, entry: Entry) -> list[Action]:
        """Take ``entry`` out of the queue, or stop its run."""

    @abstractmethod
    def _let_go(self, entry: Entry, now: float) -> list[Action]:
        """Stop holding ``entry``, unanswered here."""

    @abstractmethod
    def _drop_held(self, entry: Entry, now: float) -> list[Action]:
        """Stop holding ``entry``: another agent's answer is the one answer."""

    @abstractmethod
    def _release(self, entry: Entry) -> None:
        """Forget ``entry`` (answered, dropped, or decided for another agent)."""

    @abstractmethod
    def _settle(self, entry: Entry, now: float, answer: StoredAnswer | None) -> None:
        """``entry`` is answered: no longer held; its id and answer kept."""

    @abstractmethod
    def _my_claim(self, claim_key: str) -> Publish:
        """This agent's claim on ``claim_key``."""

    @abstractmethod
    def last_to_answer(self, now: float) -> bool:
        """Degraded, with no live peer to take tasks instead."""

    # -- running here (running.py) -------------------------------------------------------------------
    @abstractmethod
    def _start(self, entry: Entry, now: float) -> list[Action]:
        """Start ``entry`` in a worker here (or inline)."""

    # -- peers (peering.py) ----------------------------------------------------------------------------
    @abstractmethod
    def _cloud_for(self, kind: str, now: float, *, exclude: set[str]) -> str | None:
        """A cloud bridge that takes ``kind`` now, if any."""

    # -- claims (claiming.py) ------------------------------------------------------------------
    @abstractmethod
    def _decided(self, entry: Entry, winner: str, now: float) -> list[Action]:
        """The claim ``entry`` was competed for went to ``winner``."""

    @abstractmethod
    def _fire_claims(self, now: float) -> list[Action]:
        """Publish the claims whose delay has run out."""

    @abstractmethod
    def _won_across_a_cut(self, entry: Entry, now: float) -> bool:
        """Won by a claim made before this agent's connection dropped."""

    # -- answers (answering.py) ------------------------------------------------------------------
    @abstractmethod
    def _answer_ok(self, entry: Entry, result: Any, now: float) -> list[Action]:
        """Answer ``entry`` with its result."""

    @abstractmethod
    def _finish(self, entry: Entry, publish: Publish, now: float) -> list[Action]:
        """Answer ``entry`` with ``publish`` (fenced: held until its claim is won)."""

    @abstractmethod
    def _answer_error(self, entry: Entry, code: str, message: str, now: float) -> list[Action]:
        """Answer ``entry`` with an error, or a dead letter without a reply topic."""

    @abstractmethod
    def _answer_pair(self, key: str, answer: Publish, *, carry: bool = True) -> tuple[list[Action], Publish]:
        """The "done" record and the answer it carries (claim dispatch)."""

    @abstractmethod
    def _emitting(self, key: str) -> None:
        """The answer of ``key`` goes out now: the next claims record reports it."""

    # -- offloading (offloading.py) ----------------------------------------------------------------
    @abstractmethod
    def _offer(self, entry: Entry, peer: str, now: float) -> list[Action]:
        """Offer ``entry`` to ``peer`` (or a bridge)."""

    @abstractmethod
    def _peer_views(self, now: float) -> list[Peer]:
        """The live peers as placement sees them (offers outstanding counted in)."""

    @abstractmethod
    def _send_overdue(self, now: float) -> list[Action]:
        """Withdrawn answers whose task did not come back after a reconnect: out now."""

    @abstractmethod
    def _peer_back(self, agent: str, now: float, *, epoch: int | None) -> list[Action]:
        """``agent`` is back after its will: contest what it won before, ask it again."""

    @abstractmethod
    def _rebalance(self, now: float, *, limit: int = 8) -> list[Action]:
        """Offer queued work again now that a peer freed up."""

    @abstractmethod
    def _replace(self, entry: Entry, now: float) -> list[Action]:
        """The offer of ``entry`` failed: place it again."""

    # -- failures (failover.py) --------------------------------------------------------------------
    @abstractmethod
    def _take_over(self, key: str, payload: bytes, tokens: list[Any], now: float, *,
                   recorded: Publish | None = None, device: str | None = None, gone: str | None = None,
                   gone_epoch: int | None = None, connection: int | None = None) -> list[Action]:
        """Compete for a task another agent held, under its takeover key."""

    @abstractmethod
    def _to_next_round(self, entry: Entry, now: float) -> None:
        """Compete for ``entry`` in the takeover round to claim now."""

    @abstractmethod
    def _claim_now(self, entry: Entry, now: float) -> list[Action]:
        """Claim ``entry.claim_key`` at once, unless already decided."""

    @abstractmethod
    def _fence_decided(self, entry: Entry, winner: str, now: float) -> list[Action]:
        """The takeover claim of a fenced ``entry`` went to ``winner``."""

    @abstractmethod
    def _answer_was_out(self, key: str, now: float) -> list[Action]:
        """This agent's own record reports its withdrawn answer for ``key`` out after all."""

    @abstractmethod
    def _alone(self, now: float) -> bool:
        """No live peer and nobody else claiming."""

    @abstractmethod
    def _contest(self, agent: str, now: float, *, epoch: int | None = None) -> list[Action]:
        """Compete for every task ``agent`` won and has not reported done."""

    @abstractmethod
    def _takeover_claim(self, key: str, now: float, *, gone: str | None = None,
                        gone_epoch: int | None = None) -> str:
        """The claim key to compete for ``key`` under."""

    # -- resubmissions (asking.py) -------------------------------------------------------------------
    @abstractmethod
    def _on_ask(self, key: str, asker: str, now: float) -> list[Action]:
        """A peer asks whether this agent holds or answered ``key``."""

    @abstractmethod
    def _on_have(self, have: Have, now: float) -> list[Action]:
        """A peer's answer to this agent's question."""

    @abstractmethod
    def _asked_peer_gone(self, peer: str, now: float) -> list[Action]:
        """``peer`` died or fell silent while this agent awaited its answer."""

    @abstractmethod
    def _ask(self, entry: Entry, now: float) -> list[Action] | None:
        """Ask the peers about ``entry`` (None: nobody to ask)."""

    @abstractmethod
    def _ask_again(self, peer: str) -> list[Action]:
        """``peer`` came back: ask it again what it missed."""

    @abstractmethod
    def _asked_elsewhere(self, key: str, now: float) -> Any:
        """The peer resolving a resubmission of ``key``, if one asked about it."""
