"""The agent's brain, sans-IO: messages and clock ticks in, actions out.

No sockets, threads, clocks or processes here (h11's lesson): the IO shell
(:mod:`fogmesh.edge_agent.dispatcher`) hands every event
(:mod:`fogmesh.edge_agent.events`) to :meth:`AgentCore.handle` with ``now``
and carries out the returned actions (:mod:`fogmesh.edge_agent.actions`) in
order. The same core is driven by the tests and the simulator with a fake
clock.

Guarantees it implements:

* every task message gets exactly one outcome: a reply on ``reply_to``, or a
  dead letter on ``{root}/errors`` when there is no usable reply topic;
* a task message is acknowledged (PUBACK) only after its outcome is published,
  so an agent that dies mid-task leaves the task with the broker, not lost;
* a task id seen again within the dedup window is acknowledged and dropped;
* in ``claim`` dispatch (brokers without shared subscriptions) only the agent
  whose claim the broker ordered first answers (see :mod:`fogmesh.claims`);
* a medium/heavy task is placed by the placement policy; when it is offloaded
  the origin stays responsible for it: a reject, an expired lease or the
  peer's death re-places it, and only the origin answers the device, so a
  late result from a peer presumed dead is dropped (:mod:`fogmesh.offers`).
"""

from __future__ import annotations

from typing import Any, Callable

from fogmesh.edge_agent import events as ev
from fogmesh.edge_agent.actions import (
    Ack,
    Action,
    AgentConfig,
    Counters,
    Forget,
    LatencyHistogram,
    Publish,
    ResumeTaking,
    StopTaking,
)
from fogmesh.edge_agent.answer_book import AnswerBook, StoredAnswer
from fogmesh.edge_agent.answering import AnsweringConcern
from fogmesh.edge_agent.ask_book import AskBook
from fogmesh.edge_agent.asking import AskingConcern
from fogmesh.edge_agent.claim_book import ClaimBook
from fogmesh.edge_agent.claiming import ClaimingConcern
from fogmesh.edge_agent.confirmations import Confirmations
from fogmesh.edge_agent.deaths import DeathWatch
from fogmesh.edge_agent.entry import Entry, EntryState
from fogmesh.edge_agent.entry_table import EntryTable
from fogmesh.edge_agent.failover import FailoverConcern
from fogmesh.edge_agent.landing import LandingConcern
from fogmesh.edge_agent.mode import Change, ModeState
from fogmesh.edge_agent.offer_book import OfferBook
from fogmesh.edge_agent.offloading import OffloadingConcern
from fogmesh.edge_agent.ordering import OrderCheck
from fogmesh.edge_agent.peering import PeeringConcern
from fogmesh.edge_agent.peers import PeerRegistry
from fogmesh.edge_agent.placement import LocalPolicy, PlacementPolicy, SelfState
from fogmesh.edge_agent.ratelimit import RateLimiter
from fogmesh.edge_agent.runner import LocalRunner
from fogmesh.edge_agent.running import RunningConcern
from fogmesh.refusals import Refusals
from fogmesh.registry import Registry

__all__ = ["AgentCore", "AgentConfig"]


class AgentCore(ClaimingConcern, AnsweringConcern, OffloadingConcern, FailoverConcern, AskingConcern,
                RunningConcern, PeeringConcern, LandingConcern):
    """The core composes parts that own their state (see
    :class:`fogmesh.edge_agent.core_parts.CoreParts`); its concerns
    decide with them, each on one concern."""

    def __init__(self, config: AgentConfig, registry: Registry, *,
                 policy: PlacementPolicy | None = None) -> None:
        self.config = config
        self.registry = registry
        self.policy = policy or LocalPolicy()
        self.mode = ModeState()
        self.battery = None
        self.counters = Counters()
        self.refusals = Refusals()
        self.latency = LatencyHistogram()
        self.wall_offset = 0.0       # Unix time minus ``now``: dead letters carry Unix time
        me = config.agent_id
        t = config.topics
        self._inbox, self._direct, self._control = t.agent_inbox(me), t.agent_tasks(me), t.agent_control(me)
        self._bridge_prefix = t.bridge_prefix
        self.entries = EntryTable()
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
        self._stepped_at = float("inf")      # ``now`` of the last step (a freeze shows as a gap)

    # -- views ---------------------------------------------------------------
    @property
    def queued(self) -> int:
        return self.runner.queued

    @property
    def running(self) -> int:
        return self.runner.running

    @property
    def epoch(self) -> int:
        return self.claims.epoch

    @property
    def degraded(self) -> str | None:
        """Why this agent takes no new work (its journal failed, claims' order), or None."""
        return self.mode.degraded

    @property
    def order_verdict(self) -> str | None:
        """None while a claim-order probe runs; "ok"; or why claim dispatch is unsafe here."""
        return self.order.verdict

    @property
    def held(self) -> int:
        """Tasks held in any state (not yet answered)."""
        return len(self.entries)

    def self_state(self) -> SelfState:
        return SelfState(agent=self.config.agent_id, queued=self.runner.queued, running=self.runner.running,
                         capacity=self.config.concurrency, battery=self.battery)

    def next_deadline(self) -> float | None:
        own = self.entries.next_deadline()
        times = [own] if own is not None else []
        death = self.deaths.next_deadline()
        if death is not None:
            times.append(death)
        probe = self.order.deadline()
        if probe is not None:
            times.append(probe)
        for peer in self.asks.awaited_peers:
            seen = self.peers.get(peer)
            if seen is not None:                 # no longer waited for once its presence is stale
                times.append(self.peers.stale_at(seen))
        if self.confirms.flush_at is not None:
            times.append(self.confirms.flush_at)
        if self.confirms.withdrawn_due is not None:
            times.append(self.confirms.withdrawn_due)
        return min(times, default=None)

    # -- the one input surface ----------------------------------------------------
    def handle(self, event: ev.CoreEvent, now: float) -> list[Action]:
        """Take one event (:mod:`fogmesh.edge_agent.events` lists them all) at
        ``now`` (monotonic seconds); return what the shell must do, in order."""
        if now - self._stepped_at > 2 * self.config.presence_stale_s / 3:
            # Frozen (SIGSTOP, a stalled VM, a suspended laptop) for two presence periods:
            # peers stopped waiting for it and may have run resubmissions of what the broker
            # had already sent it, which it reads only now (issue #36, seed 5).
            self.asks.woke(now)
            self.peers.woke(now)          # their presence waits unread behind what it reads now
        self._stepped_at = now
        return _HANDLERS[type(event)](self, event, now)

    # -- inputs ----------------------------------------------------------------
    def _start_order_probe(self, token: str, now: float) -> list[Action]:
        """Claim dispatch among peers: check that they see claims in this
        agent's order before it takes tasks (:attr:`order_verdict` says)."""
        peers = [p.agent for p in self.peers.present(now)] if self.config.dispatch == "claim" else []
        return self.order.start(token, peers, now, wall_offset=self.wall_offset)

    def _on_clock(self, *, wall: float, now: float) -> None:
        """The wall clock (Unix time) at ``now``: the core keeps time by ``now``
        (monotonic), but what it publishes for people carries Unix time."""
        self.wall_offset = wall - now

    def _on_message(self, topic: str, payload: bytes, token: Any, now: float, *,
                    dup: bool = False, connection: int | None = None) -> list[Action]:
        """``dup``: the broker redelivered it (MQTT DUP flag), so another agent
        may have taken the task over meanwhile: it is competed for, not run.
        From a task queue (``requeued``): its first holder's connection closed,
        maybe after its answer went out, so the peers are asked first."""
        t = self.config.topics
        requeued = dup and self.config.task_queue and t.is_task_topic(topic)
        if dup and self.mode.takes_tasks and not requeued \
                and ((self.config.dispatch == "shared" and t.is_task_topic(topic)) or topic == self._direct):
            return self._on_rescued(topic, payload, token, now, connection=connection)
        if topic == t.tasks:
            return self._on_task(payload, token, now, direct=False, dup=dup, requeued=requeued, connection=connection)
        device = t.device_of_tasks(topic)
        if device is not None:
            return self._on_task(payload, token, now, direct=False, device=device, dup=dup, requeued=requeued,
                                 connection=connection)
        if topic == self._direct:
            return self._on_task(payload, token, now, direct=True, dup=dup, connection=connection)
        if topic == self._inbox:
            return [Ack(token)] + self._on_inbox(payload, now)
        if topic == t.claims:
            return self._on_claim(payload, token, now)
        agent = t.agent_of_presence(topic)
        if agent is not None:
            return [Ack(token)] + self._on_presence(agent, payload, now)
        if topic.startswith(self._bridge_prefix):
            return [Ack(token)] + self._on_bridge(topic[len(self._bridge_prefix):], payload, now)
        if topic == self._control:
            return [Ack(token)] + self._on_control(payload)
        return [Ack(token)]

    def _on_battery(self, percent: float | None) -> None:
        """The host's battery as the shell last read it (None: mains); placement
        policies judge this agent's own bid by it."""
        self.battery = percent

    def _begin_drain(self) -> None:
        """The operator asked this agent to leave: offers from peers are
        rejected from now on; held tasks still finish."""
        self.mode.change(Change.DRAIN)

    def _journal_failed(self, reason: str) -> list[Action]:
        """The shell cannot journal: while degraded, offers from peers are
        rejected, new tasks are left to live peers (or answered ``degraded``
        when there is none); tasks already delivered still run."""
        if not self.mode.change(Change.JOURNAL_FAILED, reason=reason):
            return []
        return [StopTaking(reason, journal=True)]

    def _journal_works(self) -> list[Action]:
        if not self.mode.change(Change.JOURNAL_WORKS):
            return []
        return [ResumeTaking()]

    def last_to_answer(self, now: float) -> bool:
        """Degraded, with no live peer to take tasks instead: then this agent
        keeps its task subscriptions and answers each new task with a
        ``degraded`` error, since a broker drops what reaches no subscriber
        and the device would hear nothing. With a live peer it leaves the
        tasks to it (the shell unsubscribes)."""
        return self.mode.degraded_by is not None and not self.peers.live(now)

    def _stop_accepting(self) -> None:
        """New task messages are left unacknowledged (the broker redelivers them
        to this session later); held tasks still finish."""
        self.mode.change(Change.STOP)

    def _drop_held(self, entry: Entry, now: float) -> list[Action]:
        """Stop holding ``entry`` without answering it: another agent's answer
        is the device's one answer. A copy arriving later is a duplicate."""
        self.answers.add(entry.key, now)
        return self._let_go(entry, now)

    def _let_go(self, entry: Entry, now: float) -> list[Action]:
        """Stop holding ``entry``, unanswered here: out of the queue or its run
        stopped, its offer and journal line dropped, its messages acknowledged."""
        actions = self._stop_local(entry)
        self._clear_offer(entry)
        self._release(entry)
        forget: list[Action] = [Forget(entry.key)] if entry.remembered else []
        return actions + forget + [Ack(t) for t in entry.tokens] + self._start_queued(now)

    def _my_claim(self, claim_key: str) -> Publish:
        """This agent's claim on ``claim_key``, carrying its epoch (peers
        contest only what it won in an older one)."""
        return Publish(self.config.topics.claims,
                       self._claim_record(claim_key, epoch=self.claims.epoch or None))

    def _release(self, entry: Entry) -> None:
        """Stop holding ``entry`` (answered, dropped, or decided for another agent)."""
        self.entries.drop(entry)
        self.asks.close(entry.key)

    def _settle(self, entry: Entry, now: float, answer: StoredAnswer | None) -> None:
        """``entry`` is answered (``answer``: this agent's own answer, sent now or
        found out): no longer held; its id, and the answer, kept for the dedup window."""
        self.entries.done(entry)
        self.asks.close(entry.key)
        self.answers.add(entry.key, now, answer)

    def _on_tick(self, now: float) -> list[Action]:
        actions = self._handle_deaths(now) + self._fire_claims(now) + self._expire_silent_askees(now)
        if self.order.active:
            actions += self.order.tick(now)
        if self.confirms.flush_at is not None and now >= self.confirms.flush_at:
            actions += self._flush_sent()
        actions += self._send_overdue(now)
        actions += self._expire_held(now)
        return actions + self._start_queued(now)


def _clock(core: AgentCore, e: ev.ClockRead, now: float) -> list[Action]:
    core._on_clock(wall=e.wall, now=now)
    return []


def _battery(core: AgentCore, e: ev.BatteryRead, now: float) -> list[Action]:
    core._on_battery(e.percent)
    return []


def _drain(core: AgentCore, e: ev.DrainAsked, now: float) -> list[Action]:
    core._begin_drain()
    return []


def _stop(core: AgentCore, e: ev.StopAsked, now: float) -> list[Action]:
    core._stop_accepting()
    return []


def _link(core: AgentCore, e: ev.LinkChanged, now: float) -> list[Action]:
    if e.up:
        return core._on_connected(now, control=e.control, session_kept=e.session_kept)
    return core._on_disconnect(now, control=e.control)


def _queue_lost(core: AgentCore, event: ev.QueueLost, now: float) -> list[Action]:
    actions: list[Action] = []
    gone = core.entries.held_only_via(event.connection)
    # The waiting ones first: a run stopped must not start one that is about to go too.
    for entry in sorted(gone, key=lambda e: e.state is EntryState.RUNNING):
        actions += core._let_go(entry, now)
    return actions


def _kinds(core: AgentCore, event: ev.KindsChanged, now: float) -> list[Action]:
    core.registry = event.registry
    return []


_HANDLERS: dict[type, Callable[[AgentCore, Any, float], list[Action]]] = {
    ev.MessageIn: lambda c, e, now: c._on_message(e.topic, e.payload, e.token, now, dup=e.dup,
                                                  connection=e.queue_connection),
    ev.RescuedIn: lambda c, e, now: c._on_rescued(e.topic, e.payload, e.token, now, holder=e.holder),
    ev.Finished: lambda c, e, now: c._on_finished(e.key, now, result=e.result, error=e.error),
    ev.Confirmed: lambda c, e, now: c._on_sent([e.key], now),
    ev.Withdrawn: lambda c, e, now: c._on_withdrawn(e.messages, now),
    ev.LinkChanged: _link,
    ev.Tick: lambda c, e, now: c._on_tick(now),
    ev.ClockRead: _clock,
    ev.BatteryRead: _battery,
    ev.MarksDue: lambda c, e, now: c._take_marks(),
    ev.OrderProbe: lambda c, e, now: c._start_order_probe(e.token, now),
    ev.DrainAsked: _drain,
    ev.JournalFailed: lambda c, e, now: c._journal_failed(e.reason),
    ev.JournalWorks: lambda c, e, now: c._journal_works(),
    ev.StopAsked: _stop,
    ev.Restored: lambda c, e, now: c._restore(done=e.done, unfinished=e.unfinished, now=now, answers=e.answers),
    ev.KindsChanged: _kinds,
    ev.QueueLost: _queue_lost,
}
