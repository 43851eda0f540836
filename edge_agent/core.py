"""The agent's brain, sans-IO: messages and clock ticks in, actions out.

No sockets, threads, clocks or processes here (h11's lesson): the IO shell
(:mod:`fogmesh.edge_agent.agent`) feeds :meth:`AgentCore.on_message`,
:meth:`AgentCore.on_finished` and :meth:`AgentCore.on_tick` with ``now`` and
carries out the returned actions (:mod:`fogmesh.edge_agent.actions`) in order. The same
core can be driven by a test or a simulator with a fake clock.

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

from fogmesh import codec
from fogmesh.claims import Claim, claim_delay, claim_key, tie_break
from fogmesh.edge_agent import events as ev
from fogmesh.edge_agent.actions import (Ack, Action, AgentConfig, Cancel, Counters, Drain, Forget, LatencyHistogram,
                                        Publish, Remember, ResumeTaking, Run, StopTaking)
from fogmesh.edge_agent.answering import AnsweringConcern, sent_again
from fogmesh.edge_agent.answer_book import AnswerBook, StoredAnswer
from fogmesh.edge_agent.ask_book import AskBook
from fogmesh.edge_agent.asking import AskingConcern
from fogmesh.edge_agent.claim_book import ClaimBook
from fogmesh.edge_agent.claiming import ClaimingConcern
from fogmesh.edge_agent.confirmations import Confirmations
from fogmesh.edge_agent.deaths import DeathWatch
from fogmesh.edge_agent.entry import Entry, EntryState
from fogmesh.edge_agent.entry_table import EntryTable
from fogmesh.edge_agent.failover import FailoverConcern
from fogmesh.edge_agent.offer_book import OfferBook
from fogmesh.edge_agent.offloading import OffloadingConcern
from fogmesh.edge_agent.ordering import OrderCheck
from fogmesh.edge_agent.peers import PeerRegistry
from fogmesh.edge_agent.placement import (Cloud, LocalPolicy, Offload, PlacementPolicy, SelfState, place_task,
                                          stays_local)
from fogmesh.edge_agent.ratelimit import RateLimiter
from fogmesh.edge_agent.runner import LocalRunner
from fogmesh.errors import InvalidMessage
from fogmesh.messages import BridgeHealth, ErrorInfo, Presence, Task, confine_to_device, parse_task
from fogmesh.registry import Registry

__all__ = ["AgentCore", "AgentConfig"]




class AgentCore(ClaimingConcern, AnsweringConcern, OffloadingConcern, FailoverConcern, AskingConcern):
    """The core composes parts that own their state (see
    :class:`fogmesh.edge_agent.core_parts.CoreParts`); its concerns
    decide with them, each on one concern."""

    def __init__(self, config: AgentConfig, registry: Registry, *,
                 policy: PlacementPolicy | None = None) -> None:
        self.config = config
        self.registry = registry
        self.policy = policy or LocalPolicy()
        self.accepting = True
        self.draining = False
        self.degraded = None         # why this agent takes no new work (its journal failed, claims' order)
        self._degraded_by_journal = False
        self.battery = None
        self.counters = Counters()
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
        self.offers = OfferBook(bridge_fresh_s=max(10.0, config.presence_stale_s))  # a bridge's will says when it is gone
        self.answers = AnswerBook(max_items=config.dedup_items, ttl_s=config.dedup_ttl_s)
        self.confirms = Confirmations(max_items=config.dedup_items)
        self.deaths = DeathWatch(grace_s=config.takeover_grace_s, rejoin_grace_s=config.rejoin_grace_s)
        self.asks = AskBook(max_items=config.dedup_items, ttl_s=config.dedup_ttl_s)
        self.order = OrderCheck(me=me, topics=t)
        self.limiter = RateLimiter(config.device_rate) if config.device_rate > 0 else None

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
        return min(times, default=None)

    # -- the one input surface ----------------------------------------------------
    def handle(self, event: ev.CoreEvent, now: float) -> list[Action]:
        """Take one event (:mod:`fogmesh.edge_agent.events` lists them all) at
        ``now`` (monotonic seconds); return what the shell must do, in order."""
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
                   dup: bool = False) -> list[Action]:
        """``dup``: the broker redelivered it (MQTT DUP flag), so another agent
        may have taken the task over meanwhile: it is competed for, not run."""
        t = self.config.topics
        if dup and self.accepting and ((self.config.dispatch == "shared" and t.is_task_topic(topic))
                                       or topic == self._direct):
            return self._on_rescued(topic, payload, token, now)
        if topic == t.tasks:
            return self._on_task(payload, token, now, direct=False, dup=dup)
        device = t.device_of_tasks(topic)
        if device is not None:
            return self._on_task(payload, token, now, direct=False, device=device, dup=dup)
        if topic == self._direct:
            return self._on_task(payload, token, now, direct=True, dup=dup)
        if topic == self._inbox:
            return [Ack(token)] + self._on_inbox(payload, now)
        if topic == t.claims:
            return self._on_claim(payload, token, now)
        agent = t.agent_of_presence(topic)
        if agent is not None:
            return [Ack(token)] + self._on_presence(agent, payload, now)
        if topic.startswith(self._bridge_prefix):
            return [Ack(token)] + self._on_bridge(payload, now)
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
        self.draining = True

    def _journal_failed(self, reason: str) -> list[Action]:
        """The shell cannot journal: while degraded, offers from peers are
        rejected, new tasks are left to live peers (or answered ``degraded``
        when there is none); tasks already delivered still run."""
        if self.degraded is not None:
            return []
        self.degraded, self._degraded_by_journal = reason, True
        return [StopTaking(reason, journal=True)]

    def _journal_works(self) -> list[Action]:
        if self.degraded is None or not self._degraded_by_journal:
            return []
        self.degraded, self._degraded_by_journal = None, False
        return [ResumeTaking()]

    def last_to_answer(self, now: float) -> bool:
        """Degraded, with no live peer to take tasks instead: then this agent
        keeps its task subscriptions and answers each new task with a
        ``degraded`` error, since a broker drops what reaches no subscriber
        and the device would hear nothing. With a live peer it leaves the
        tasks to it (the shell unsubscribes)."""
        return self.degraded is not None and not self.peers.live(now)

    def _stop_accepting(self) -> None:
        """New task messages are left unacknowledged (the broker redelivers them
        to this session later); held tasks still finish."""
        self.accepting = False

    def _on_task(self, payload: bytes, token: Any, now: float, *, direct: bool,
                 device: str | None = None, dup: bool = False) -> list[Action]:
        if not self.accepting:
            return []
        self.counters.received += 1
        try:
            task: Task | None = parse_task(payload, limits=self.config.limits)
            error = None
        except InvalidMessage as exc:
            task, error = None, exc
        if device is not None:
            task, error = confine_to_device(task, error, device, self.config.topics.replies(device))
            if task is not None:      # what peers, journals and takeovers see: the confined task
                payload = task.encode()
        task_id = task.id if task else (error.task_id if error else None)
        key = claim_key(task_id, payload)

        held = self.entries.get(key)
        if held is not None:             # redelivery of a task we hold: ack it when done
            held.tokens.append(token)
            self.counters.duplicates += 1
            return []
        if self._asked_elsewhere(key, now) not in (None, self.config.agent_id):
            self.counters.duplicates += 1    # a peer took on a resubmission of it: it answers
            return [Ack(token)]
        if self.answers.knows(key, now):   # answered already
            self.counters.duplicates += 1
            if dup and not self.confirms.take_withdrawn(key):
                answer = None            # redelivered: answered again only if its answer was cut off
            else:
                answer = self.answers.answer(key, now)
            if answer is not None:       # submitted again, or its answer was cut off: the same answer
                self.confirms.take_withdrawn(key)
                self.counters.answered_again += 1
                return [sent_again(answer, task), Ack(token)]
            return [Ack(token)]

        entry = Entry(key=key, received=now, tokens=[token], task=task, error=error,
                       payload=payload)
        if task is not None and task.kind not in self.registry:
            entry.error = InvalidMessage("unknown_kind",
                                         f"unknown kind {task.kind!r}; agents here run: "
                                         f"{', '.join(self.registry.names())}",
                                         task_id=task.id, reply_to=task.reply_to)
        elif task is not None:
            entry.kind = self.registry.get(task.kind)
        self.entries.add(entry)

        if not direct and self.config.dispatch == "shared" and entry.error is None \
                and task is not None and self.asks.asks_about(task.attempt, now):
            asked = self._ask(entry, now)    # the first copy may be on a peer: ask first
            if asked is not None:
                return asked
        if direct or self.config.dispatch == "shared":
            return self._accept(entry, now)
        winner = self.claims.winner(key, now)
        if winner is not None:
            return self._decided(entry, winner, now)
        # Load = what this agent has won or may win; undecided tasks every agent
        # holds alike do not count, or every agent would wait the same.
        at = now + claim_delay(queued=self.runner.queued + self.claims.pending, running=self.runner.running,
                               capacity=self.config.concurrency)
        if self.claims.others_claim():
            at += tie_break(key, self.config.agent_id)
        self.entries.claim_at(entry, at)
        return self._fire_claims(now) if at <= now else []

    # -- placement -----------------------------------------------------------------
    def _accept(self, entry: Entry, now: float) -> list[Action]:
        """This agent is responsible for ``entry`` now: answer, place or queue it."""
        if entry.recorded is not None:   # a dead peer's answer: deliver it, do not run again
            self.counters.redelivered += 1
            return self._finish(entry, entry.recorded, now)
        if entry.error is not None:
            return self._answer_error(entry, entry.error.code, entry.error.message, now)
        assert entry.task is not None and entry.kind is not None
        if self.degraded is not None and entry.origin is None and self.last_to_answer(now):
            self.counters.busy += 1
            return self._answer_error(entry, "degraded", f"agent {self.config.agent_id} cannot take tasks "
                                      f"({self.degraded}) and no other agent is online; retry later", now)
        if self.limiter is not None and entry.origin is None:
            device = entry.task.device or entry.task.reply_to
            if not self.limiter.allow(device, now):
                self.counters.busy += 1
                self.counters.rate_limited += 1
                return self._answer_error(entry, "busy", f"device {device} is over its limit of "
                                          f"{self.config.device_rate:g} tasks/s on agent "
                                          f"{self.config.agent_id}; slow down and retry", now)
        entry.move(EntryState.PLACING)
        if entry.origin is None:
            target = self._placement(entry, now, with_cloud=True)
            if target is not None:
                return self._remember(entry) + self._offer(entry, target, now)
        if entry.kind.inline and not self.runner.queued:
            return self._start(entry, now)   # answered within this step: nothing to journal
        if self.runner.is_full():
            self.counters.busy += 1
            return self._answer_error(entry, "busy", f"agent {self.config.agent_id} has "
                                      f"{self.runner.queued} tasks queued; retry later", now)
        entry.move(EntryState.QUEUED)
        self.runner.enqueue(entry.key)
        return self._remember(entry) + self._start_queued(now)

    def _placement(self, entry: Entry, now: float, *, with_cloud: bool) -> str | None:
        """Where the policy sends ``entry``: a peer, a cloud bridge (``with_cloud``),
        or None for here."""
        assert entry.task is not None and entry.kind is not None
        weight = entry.task.weight or entry.kind.weight
        if stays_local(weight):      # nothing to weigh (place_task would say so)
            return None
        bridge = self._cloud_for(entry.task.kind, now, exclude=entry.tried) if with_cloud else None
        decision = place_task(self.policy, kind=entry.task.kind, weight=weight,
                              me=self.self_state(), peers=self._peer_views(now),
                              run_ms=self.runner.run_ms(entry.task.kind),
                              exclude=frozenset(entry.tried), cloud=bridge is not None)
        if isinstance(decision, Offload):
            return decision.peer
        if isinstance(decision, Cloud):
            return bridge
        return None

    def _stop_local(self, entry: Entry) -> list[Action]:
        """Take ``entry`` out of this agent's queue, or stop its run (first
        answer wins elsewhere)."""
        if entry.state is EntryState.QUEUED:
            self.runner.dequeue(entry.key)
        elif entry.state is EntryState.RUNNING and entry.kind is not None and not entry.kind.inline:
            self.runner.stopped()
            return [Cancel(entry.key)]
        return []

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
                       Claim(claim_key, self.config.agent_id, epoch=self.claims.epoch or None).encode())

    def _release(self, entry: Entry) -> None:
        """Stop holding ``entry`` (answered, dropped, or decided for another agent)."""
        self.entries.drop(entry)
        self.asks.close(entry.key)

    def _settle(self, entry: Entry, now: float, answer: StoredAnswer | None) -> None:
        """``entry`` is answered (``answer``: this agent's own answer, sent now or
        found out): no longer held; its id, and the answer, kept for the dedup window."""
        self._release(entry)
        entry.move(EntryState.DONE)
        self.entries.stop_timers(entry)
        self.answers.add(entry.key, now, answer)

    def _remember(self, entry: Entry) -> list[Action]:
        if entry.remembered or entry.origin is not None:
            return []
        entry.remembered = True
        return [Remember(entry.key, entry.payload)]

    def _restore(self, *, done: list[str], unfinished: list[bytes], now: float,
                answers: dict[str, StoredAnswer] | None = None) -> list[Action]:
        """After a restart: ids answered before (so redeliveries are swallowed,
        and a resubmission gets its ``answers`` entry again), and tasks accepted
        but not answered (placed again, in order)."""
        answers = answers or {}
        for key in done:
            self.answers.add(key, now, answers.get(key))
        actions: list[Action] = []
        for payload in unfinished:
            try:
                task = parse_task(payload, limits=self.config.limits)
            except InvalidMessage:
                continue
            if task.id in self.entries or self.answers.knows(task.id, now) or task.kind not in self.registry:
                continue
            # A survivor may have taken it over while this agent was down:
            # run it, but answer only after winning its takeover claim.
            entry = Entry(key=task.id, received=now, tokens=[], task=task, payload=payload,
                           kind=self.registry.get(task.kind), remembered=True,
                           claim_key=self._takeover_claim(task.id, now), fenced=True)
            self.entries.add(entry)
            actions.append(self._my_claim(entry.claim_key))
            actions += self._accept(entry, now)
        return actions

    # -- running locally -----------------------------------------------------------
    def _start(self, entry: Entry, now: float) -> list[Action]:
        assert entry.task is not None and entry.kind is not None
        timeout = entry.kind.timeout_s
        if entry.task.deadline_ms:
            remaining = entry.received + entry.task.deadline_ms / 1000 - now
            if remaining <= 0:
                return self._answer_error(entry, "deadline_exceeded",
                                          f"waited {1000 * (now - entry.received):.0f} ms, "
                                          f"past deadline_ms={entry.task.deadline_ms}", now)
            timeout = min(timeout, remaining)
        entry.move(EntryState.RUNNING)
        entry.started = now
        if not entry.kind.inline:
            self.runner.started()
            self.entries.run_until(entry, now + timeout)
        return [Run(entry.key, entry.task, entry.kind, timeout)]

    def _start_queued(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while (key := self.runner.next_to_start()) is not None:
            actions += self._start(self.entries[key], now)
        return actions

    def _on_finished(self, key: str, now: float, *, result: Any = None,
                    error: ErrorInfo | None = None) -> list[Action]:
        """A local run ended. Results of runs already answered are ignored."""
        entry = self.entries.get(key)
        if entry is None or entry.state is not EntryState.RUNNING:
            return []
        assert entry.kind is not None and entry.task is not None
        if not entry.kind.inline:
            self.runner.stopped()
        if entry.started is not None and error is None:
            self.runner.observe(entry.task.kind, 1000 * (now - entry.started))
        if error is not None:
            actions = self._answer_error(entry, error.code, error.message, now)
        else:
            actions = self._answer_ok(entry, result, now)
        return actions + self._start_queued(now)

    def _on_tick(self, now: float) -> list[Action]:
        actions = self._handle_deaths(now) + self._fire_claims(now) + self._expire_silent_askees(now)
        if self.order.active:
            actions += self.order.tick(now)
        if self.confirms.flush_at is not None and now >= self.confirms.flush_at:
            actions += self._flush_sent()
        for entry in self.entries:
            if entry.state is EntryState.QUEUED and entry.task and entry.task.deadline_ms \
                    and now >= entry.received + entry.task.deadline_ms / 1000:
                self.runner.dequeue(entry.key)
                actions += self._answer_error(entry, "deadline_exceeded",
                                              f"still queued after deadline_ms={entry.task.deadline_ms}", now)
            elif entry.state is EntryState.RUNNING and entry.run_until is not None and now >= entry.run_until:
                self.counters.timeouts += 1
                assert entry.task is not None
                actions += self._stop_local(entry)
                actions += self._answer_error(
                    entry, "timeout", f"kind {entry.task.kind!r} ran past its timeout of "
                    f"{now - (entry.started or now):.1f} s", now)
            elif entry.state is EntryState.OFFERED and entry.offer is not None and entry.lease_until is not None \
                    and now >= entry.lease_until:
                self.counters.leases_expired += 1
                actions += self._replace(entry, now)
        return actions + self._start_queued(now)

    # -- peers and operators ---------------------------------------------------------------
    def _on_presence(self, agent: str, payload: bytes, now: float) -> list[Action]:
        if agent == self.config.agent_id or not payload:
            if not payload:
                self.peers.forget(agent)
            return []
        try:
            presence = Presence.from_dict(codec.decode(payload))
        except InvalidMessage:
            return []
        if presence.agent != agent:
            return []                                 # forged: the topic says who it is
        self.peers.update(presence, now)
        self.offers.heard_from(agent)
        if presence.state == "online":
            if self.deaths.back(agent):
                # Back after its will: it gave up the claims it had made (their
                # outcome may be lost: amqtt drops messages in flight), so what it
                # won with them is contested now. Not what it won with claims of
                # its new epoch: it holds those, and would not compete for them.
                # Its epoch is the newest it said, in this presence or in a claim:
                # a presence it sent before the drop can arrive after the will
                # (a broker behind on this agent's messages), after claims of
                # its new connection, and taking it at its word would contest them.
                epoch = max(presence.epoch or 0, self.claims.peer_epoch(agent)) or None
                return self._contest(agent, now, epoch=epoch) + self._ask_again(agent) + \
                    self._rebalance(now)
            return self._rebalance(now)
        if presence.state == "offline":
            self.deaths.will(agent, presence.ts, now)
        # Its will, or it drains: offers it has not accepted go elsewhere now.
        # What it accepted stays with it until it is dead (``_handle_deaths``): a
        # will also comes from a broker that shuts down, with the peer alive.
        actions: list[Action] = []
        for entry in self.entries:
            if entry.state is EntryState.OFFERED and entry.offer and entry.offer.peer == agent \
                    and not entry.offer.accepted:
                actions += self._replace(entry, now)
        return actions

    def _on_bridge(self, payload: bytes, now: float) -> list[Action]:
        """A cloud bridge's health: it takes heavy tasks while online."""
        try:
            h = BridgeHealth.decode(payload) if payload else None
        except InvalidMessage:
            return []
        if h is None:
            return []
        if h.state == "degraded":     # alive, delivering what it holds, taking nothing new
            self.offers.bridge_away(h.agent)
            self.deaths.back(h.agent)
        elif h.state == "online":
            self.offers.bridge_online(h.agent, h.kinds, now)
            self.deaths.back(h.agent)
        elif self.offers.bridge_away(h.agent):
            self.deaths.will(h.agent, h.ts, now)   # re-placed after the grace
        return []

    def _cloud_for(self, kind: str, now: float, *, exclude: set[str]) -> str | None:
        return self.offers.cloud_for(kind, now, exclude=exclude)

    def _on_control(self, payload: bytes) -> list[Action]:
        try:
            op = codec.decode(payload).get("op")
        except (InvalidMessage, AttributeError):
            return []
        if op == "drain" and not self.draining:
            self.draining = True
            return [Drain()]
        return []


def _clock(core: AgentCore, e: ev.ClockRead, now: float) -> list[Action]:
    core._on_clock(wall=e.wall, now=now)
    return []


def _battery(core: AgentCore, e: ev.BatteryRead, now: float) -> list[Action]:
    core._on_battery(e.percent)
    return []


def _drain(core: AgentCore, e: ev.DrainBegun, now: float) -> list[Action]:
    core._begin_drain()
    return []


def _stop(core: AgentCore, e: ev.StopAccepting, now: float) -> list[Action]:
    core._stop_accepting()
    return []


def _link(core: AgentCore, e: ev.LinkChanged, now: float) -> list[Action]:
    if e.up:
        return core._on_connected(now, control=e.control, session_kept=e.session_kept)
    return core._on_disconnect(now, control=e.control)


_HANDLERS: dict[type, Callable[[AgentCore, Any, float], list[Action]]] = {
    ev.MessageIn: lambda c, e, now: c._on_message(e.topic, e.payload, e.token, now, dup=e.dup),
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
    ev.DrainBegun: _drain,
    ev.JournalFailed: lambda c, e, now: c._journal_failed(e.reason),
    ev.JournalWorks: lambda c, e, now: c._journal_works(),
    ev.StopAccepting: _stop,
    ev.Restored: lambda c, e, now: c._restore(done=e.done, unfinished=e.unfinished, now=now, answers=e.answers),
}
