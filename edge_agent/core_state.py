"""Everything the agent core knows, in one explicit object: what the shell
configured and told it, its mode, what it counts, and the *books* that own
its state and keep their invariants (a running count that never goes below
zero, one winner per claim key, offers counted per peer in pairs, ...).
Pure.

The core's concerns (landing, running, peering, claiming, answering,
offloading, failover, asking) are functions over this object: each takes it
as ``s`` and decides with what it holds, and one concern calls another's
functions by name (``answering.finish(s, entry, ...)``), so a reader and a
type checker see exactly what crosses between them. The few steps every
concern takes (a claim record, letting an entry go, settling an answered
one) are the methods below.
"""

from __future__ import annotations

from typing import Any

from fogmesh.claims import Claim
from fogmesh.edge_agent.actions import AgentConfig, Counters, LatencyHistogram, Publish
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
from fogmesh.edge_agent.peers import PeerRegistry
from fogmesh.edge_agent.placement import LocalPolicy, PlacementPolicy, SelfState
from fogmesh.edge_agent.ratelimit import RateLimiter
from fogmesh.edge_agent.runner import LocalRunner
from fogmesh.refusals import Refusals
from fogmesh.registry import Registry


class CoreState:
    def __init__(self, config: AgentConfig, registry: Registry, *, policy: PlacementPolicy | None = None) -> None:
        # -- what the shell configured and tells it ---------------------------------
        self.config = config
        self.registry = registry
        self.policy: PlacementPolicy = policy or LocalPolicy()
        self.mode = ModeState()              # what new work it takes: online, draining, stopping, degraded...
        self.battery: float | None = None    # the host's battery (None: mains)
        self.wall_offset = 0.0               # Unix time minus ``now``: dead letters carry Unix time
        self.stepped_at = float("inf")       # ``now`` of the last step (a freeze shows as a gap)
        # -- what it counts ---------------------------------------------------------------
        self.counters = Counters()
        self.refusals = Refusals()           # refused at the boundary, for the shell's rate-limited log line
        self.latency = LatencyHistogram()
        # -- the books that own its state ------------------------------------------------------
        me = config.agent_id
        t = config.topics
        self.inbox, self.direct, self.control = t.agent_inbox(me), t.agent_tasks(me), t.agent_control(me)
        self.bridge_prefix = t.bridge_prefix
        self.entries = EntryTable()          # the tasks it holds, by key and claim key, with their timers
        self.peers = PeerRegistry(me=me, stale_after=config.presence_stale_s)
        self.runner = LocalRunner(concurrency=config.concurrency, max_queue=config.max_queue,
                                  default_run_ms=config.default_run_ms)
        self.claims = ClaimBook(me=me, max_items=config.dedup_items, ttl_s=config.dedup_ttl_s)
        # A bridge's will says when it is gone; its heartbeat only needs to be roughly fresh.
        self.offers = OfferBook(bridge_fresh_s=max(10.0, config.presence_stale_s))
        self.answers = AnswerBook(max_items=config.dedup_items, ttl_s=config.dedup_ttl_s)
        self.confirms = Confirmations(max_items=config.dedup_items)
        self.deaths = DeathWatch(grace_s=config.takeover_grace_s, rejoin_grace_s=config.rejoin_grace_s)
        self.asks = AskBook(max_items=config.dedup_items, ttl_s=config.dedup_ttl_s)
        self.order = OrderCheck(me=me, topics=t)
        self.limiter = RateLimiter(config.device_rate) if config.device_rate > 0 else None

    # -- what every concern asks ------------------------------------------------------------
    def self_state(self) -> SelfState:
        """This agent's own bid, as placement policies judge it."""
        return SelfState(agent=self.config.agent_id, queued=self.runner.queued, running=self.runner.running,
                         capacity=self.config.concurrency, battery=self.battery)

    def last_to_answer(self, now: float) -> bool:
        """Degraded, with no live peer to take tasks instead: then this agent
        keeps its task subscriptions and answers each new task with a
        ``degraded`` error, since a broker drops what reaches no subscriber
        and the device would hear nothing. With a live peer it leaves the
        tasks to it (the shell unsubscribes)."""
        return self.mode.degraded_by is not None and not self.peers.live(now)

    def claim_record(self, task: str, **fields: Any) -> bytes:
        """One of this agent's records on the claims topic, naming its run
        (``instance``): a record from a run or epoch later than a will shows the
        agent alive again, before its presence says so."""
        return Claim(task, self.config.agent_id, instance=self.config.instance or None, **fields).encode()

    def my_claim(self, claim_key: str) -> Publish:
        """This agent's claim on ``claim_key``, carrying its epoch (peers
        contest only what it won in an older one)."""
        return Publish(self.config.topics.claims, self.claim_record(claim_key, epoch=self.claims.epoch or None))

    # -- what every concern does -------------------------------------------------------------
    def release(self, entry: Entry) -> None:
        """Stop holding ``entry`` (answered, dropped, or decided for another agent)."""
        self.entries.drop(entry)
        self.asks.close(entry.key)

    def settle(self, entry: Entry, now: float, answer: StoredAnswer | None) -> None:
        """``entry`` is answered (``answer``: this agent's own answer, sent now or
        found out): no longer held; its id, and the answer, kept for the dedup window."""
        self.entries.done(entry)
        self.asks.close(entry.key)
        self.answers.add(entry.key, now, answer)
