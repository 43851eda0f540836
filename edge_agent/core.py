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

from collections import OrderedDict, deque
from typing import Any

from fogmesh.edge_agent.actions import (Ack, Action, AgentConfig, Cancel, Counters, Drain, LatencyHistogram,
                                        Forget, Publish, Remember, Run)
from fogmesh.edge_agent.answering import AnsweringMixin, sent_again
from fogmesh.edge_agent.answers import Answer, AnswerBook
from fogmesh.edge_agent.asking import AskBook, AskingMixin
from fogmesh.edge_agent.ordering import OrderingMixin, OrderProbe
from fogmesh.claims import Claim, claim_delay, claim_key, tie_break
from fogmesh.edge_agent.deaths import DeathWatch
from fogmesh.edge_agent.entry import Entry, EntryState
from fogmesh.edge_agent.claiming import ClaimingMixin
from fogmesh.edge_agent.failover import FailoverMixin
from fogmesh.edge_agent.offloading import OffloadingMixin
from fogmesh.edge_agent.peers import PeerRegistry
from fogmesh.edge_agent.placement import Cloud, LocalPolicy, Offload, PlacementPolicy, SelfState, place_task
from fogmesh.edge_agent.ratelimit import RateLimiter
from fogmesh.edge_agent.recent import RecentMap
from fogmesh import codec
from fogmesh.errors import InvalidMessage
from fogmesh.messages import BridgeHealth, ErrorInfo, Presence, Task, confine_to_device, parse_task
from fogmesh.registry import Registry

__all__ = ["AgentCore", "AgentConfig"]




class AgentCore(ClaimingMixin, AnsweringMixin, OffloadingMixin, FailoverMixin, AskingMixin, OrderingMixin):
    def __init__(self, config: AgentConfig, registry: Registry, *,
                 policy: PlacementPolicy | None = None) -> None:
        self.config = config
        self.registry = registry
        self.policy: PlacementPolicy = policy or LocalPolicy()
        self.accepting = True
        self.draining = False
        self.degraded: str | None = None     # why this agent takes no new work (its journal failed)
        self.battery: float | None = None
        self.counters = Counters()
        self.peers = PeerRegistry(me=config.agent_id, stale_after=config.presence_stale_s)
        me = config.agent_id
        t = config.topics
        self._inbox, self._direct, self._control = t.agent_inbox(me), t.agent_tasks(me), t.agent_control(me)
        self._bridge_prefix = t.bridge_prefix
        self._entries: dict[str, Entry] = {}
        self._queue: deque[str] = deque()
        self._running = 0
        self._claimed = 0          # claims published, not yet decided
        self._run_ms: dict[str, float] = {}
        self._outstanding: dict[str, int] = {}    # peer -> my offers it holds (presence lags)
        self._busy_until: dict[str, float] = {}   # peer -> no offers before (it said busy)
        self._claimers: RecentMap[bool] = RecentMap(max_items=1000, ttl_s=60.0)  # peers seen claiming
        self._done = AnswerBook(max_items=config.dedup_items, ttl_s=config.dedup_ttl_s)
        self._wall_offset = 0.0      # Unix time minus ``now``: dead letters carry Unix time
        self._winners: RecentMap[str] = RecentMap(max_items=config.dedup_items, ttl_s=config.dedup_ttl_s)
        self._win_epochs: RecentMap[int] = RecentMap(max_items=config.dedup_items, ttl_s=config.dedup_ttl_s)
        self._epoch = 0          # control connections lost so far (on claims and presence)
        # tasks this agent was claiming when its control connection dropped
        self._cut_claims: RecentMap[bool] = RecentMap(max_items=config.dedup_items, ttl_s=config.dedup_ttl_s)
        self._claim_index: dict[str, str] = {}      # takeover claim key -> entry key
        # claim mode: tasks other agents won and have not answered, kept to take over
        self._foreign: OrderedDict[str, tuple[str, bytes, int | None]] = OrderedDict()  # key -> winner, task, epoch
        # ... and tasks they answered (reported "done" with the answer) whose answer
        # the broker has not yet confirmed ("sent"): re-delivered if they die
        self._answered: OrderedDict[str, tuple[str, bytes, Publish]] = OrderedDict()
        self._sent_keys: list[str] = []            # my answers the broker confirmed, to report
        self._emitted: list[str] = []              # my answers just sent, to report by order
        self._marked: OrderedDict[str, bool] = OrderedDict()   # ... reported so (no PUBACK report needed)
        # shared dispatch: answers cut off with their connection, sent again if the task comes back
        self._unsent: OrderedDict[str, bool] = OrderedDict()
        self._sent_flush_at: float | None = None
        self.latency = LatencyHistogram()
        self._limiter = RateLimiter(config.device_rate) if config.device_rate > 0 else None
        self._dead = DeathWatch(grace_s=config.takeover_grace_s, rejoin_grace_s=config.rejoin_grace_s)
        self._asks = AskBook(max_items=config.dedup_items, ttl_s=config.dedup_ttl_s)
        self._probes: dict[str, OrderProbe] = {}     # claim-order probes this agent takes part in
        self._order_verdict: str | None = "ok"
        self._rescue_claims: dict[str, str] = {}     # rescue claim key -> agent
        self._bridges: dict[str, tuple[tuple[str, ...], float]] = {}  # bridge id -> (kinds, seen)
        self._bridge_ids: set[str] = set()   # every bridge ever announced, online or not

    # -- views ---------------------------------------------------------------
    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return self._running

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def held(self) -> int:
        """Tasks held in any state (not yet answered)."""
        return len(self._entries)

    def self_state(self) -> SelfState:
        return SelfState(agent=self.config.agent_id, queued=len(self._queue), running=self._running,
                         capacity=self.config.concurrency, battery=self.battery)

    def next_deadline(self) -> float | None:
        times = [t for e in self._entries.values() for t in (e.claim_at, e.timeout_at) if t is not None]
        times += [e.received + e.task.deadline_ms / 1000 for e in self._entries.values()
                  if e.state is EntryState.QUEUED and e.task and e.task.deadline_ms]
        death = self._dead.next_deadline()
        if death is not None:
            times.append(death)
        probe = self._probe_deadline()
        if probe is not None:
            times.append(probe)
        for peer in {p for left in self._asks.waiting.values() for p in left}:
            seen = self.peers.get(peer)
            if seen is not None:                 # no longer waited for once its presence is stale
                times.append(seen.seen_at + self.peers.stale_after)
        if self._sent_flush_at is not None:
            times.append(self._sent_flush_at)
        return min(times, default=None)

    # -- inputs ----------------------------------------------------------------
    def on_clock(self, *, wall: float, now: float) -> None:
        """The wall clock (Unix time) at ``now``: the core keeps time by ``now``
        (monotonic), but what it publishes for people carries Unix time."""
        self._wall_offset = wall - now

    def on_message(self, topic: str, payload: bytes, token: Any, now: float, *,
                   dup: bool = False) -> list[Action]:
        """``dup``: the broker redelivered it (MQTT DUP flag), so another agent
        may have taken the task over meanwhile: it is competed for, not run."""
        t = self.config.topics
        if dup and self.accepting and ((self.config.dispatch == "shared" and t.is_task_topic(topic))
                                       or topic == self._direct):
            return self.on_rescued(topic, payload, token, now)
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

    def on_battery(self, percent: float | None) -> None:
        """The host's battery as the shell last read it (None: mains); placement
        policies judge this agent's own bid by it."""
        self.battery = percent

    def begin_drain(self) -> None:
        """The operator asked this agent to leave: offers from peers are
        rejected from now on; held tasks still finish."""
        self.draining = True

    def on_degraded(self, reason: str | None) -> None:
        """The shell cannot journal (``reason``), or can again (None): while
        degraded, offers from peers are rejected; tasks already delivered still run."""
        self.degraded = reason

    def stop_accepting(self) -> None:
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

        held = self._entries.get(key)
        if held is not None:             # redelivery of a task we hold: ack it when done
            held.tokens.append(token)
            self.counters.duplicates += 1
            return []
        if self._asked_elsewhere(key, now) not in (None, self.config.agent_id):
            self.counters.duplicates += 1    # a peer took on a resubmission of it: it answers
            return [Ack(token)]
        if self._done.knows(key, now):   # answered already
            self.counters.duplicates += 1
            answer = None if dup and self._unsent.pop(key, None) is None else self._done.answer(key, now)
            if answer is not None:       # submitted again, or its answer was cut off: the same answer
                self._unsent.pop(key, None)
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
        self._entries[key] = entry

        if not direct and self.config.dispatch == "shared" and entry.error is None \
                and task is not None and (task.attempt or 1) > 1:
            asked = self._ask(entry, now)    # the first copy may be on a peer: ask first
            if asked is not None:
                return asked
        if direct or self.config.dispatch == "shared":
            return self._accept(entry, now)
        winner = self._winners.get(key, now)
        if winner is not None:
            return self._decided(entry, winner, now)
        # Load = what this agent has won or may win; undecided tasks every agent
        # holds alike do not count, or every agent would wait the same.
        entry.claim_at = now + claim_delay(queued=len(self._queue) + self._claimed,
                                           running=self._running, capacity=self.config.concurrency)
        if len(self._claimers) > 0:
            entry.claim_at += tie_break(key, self.config.agent_id)
        return self._fire_claims(now) if entry.claim_at <= now else []

    # -- placement -----------------------------------------------------------------
    def _accept(self, entry: Entry, now: float) -> list[Action]:
        """This agent is responsible for ``entry`` now: answer, place or queue it."""
        if entry.recorded is not None:   # a dead peer's answer: deliver it, do not run again
            self.counters.redelivered += 1
            return self._finish(entry, entry.recorded, now)
        if entry.error is not None:
            return self._answer_error(entry, entry.error.code, entry.error.message, now)
        assert entry.task is not None and entry.kind is not None
        if self._limiter is not None and entry.origin is None:
            device = entry.task.device or entry.task.reply_to
            if not self._limiter.allow(device, now):
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
        if entry.kind.inline and not self._queue:
            return self._start(entry, now)   # answered within this step: nothing to journal
        if len(self._queue) + self._running >= self.config.concurrency + self.config.max_queue:
            self.counters.busy += 1
            return self._answer_error(entry, "busy", f"agent {self.config.agent_id} has "
                                      f"{len(self._queue)} tasks queued; retry later", now)
        entry.move(EntryState.QUEUED)
        self._queue.append(entry.key)
        return self._remember(entry) + self._start_queued(now)

    def _placement(self, entry: Entry, now: float, *, with_cloud: bool) -> str | None:
        """Where the policy sends ``entry``: a peer, a cloud bridge (``with_cloud``),
        or None for here."""
        assert entry.task is not None and entry.kind is not None
        bridge = self._cloud_for(entry.task.kind, now, exclude=entry.tried) if with_cloud else None
        decision = place_task(self.policy, kind=entry.task.kind,
                              weight=entry.task.weight or entry.kind.weight,
                              me=self.self_state(), peers=self._peer_views(now),
                              run_ms=self._run_ms.get(entry.task.kind, self.config.default_run_ms),
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
            self._queue.remove(entry.key)
        elif entry.state is EntryState.RUNNING and entry.kind is not None and not entry.kind.inline:
            self._running -= 1
            return [Cancel(entry.key)]
        return []

    def _drop_held(self, entry: Entry, now: float) -> list[Action]:
        """Stop holding ``entry`` without answering it: another agent's answer
        is the device's one answer. A copy arriving later is a duplicate."""
        self._done.add(entry.key, now)
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
                       Claim(claim_key, self.config.agent_id, epoch=self._epoch or None).encode())

    def _release(self, entry: Entry) -> None:
        """Stop holding ``entry`` (answered, dropped, or decided for another agent)."""
        self._entries.pop(entry.key, None)
        self._claim_index.pop(entry.claim_key, None)
        self._asks.close(entry.key)

    def _remember(self, entry: Entry) -> list[Action]:
        if entry.remembered or entry.origin is not None:
            return []
        entry.remembered = True
        return [Remember(entry.key, entry.payload)]

    def restore(self, *, done: list[str], unfinished: list[bytes], now: float,
                answers: dict[str, Answer] | None = None) -> list[Action]:
        """After a restart: ids answered before (so redeliveries are swallowed,
        and a resubmission gets its ``answers`` entry again), and tasks accepted
        but not answered (placed again, in order)."""
        answers = answers or {}
        for key in done:
            self._done.add(key, now, answers.get(key))
        actions: list[Action] = []
        for payload in unfinished:
            try:
                task = parse_task(payload, limits=self.config.limits)
            except InvalidMessage:
                continue
            if task.id in self._entries or self._done.knows(task.id, now) or task.kind not in self.registry:
                continue
            # A survivor may have taken it over while this agent was down:
            # run it, but answer only after winning its takeover claim.
            entry = Entry(key=task.id, received=now, tokens=[], task=task, payload=payload,
                           kind=self.registry.get(task.kind), remembered=True,
                           claim_key=self._takeover_claim(task.id, now), fenced=True)
            self._entries[task.id] = entry
            self._claim_index[entry.claim_key] = task.id
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
            self._running += 1
            entry.timeout_at = now + timeout
        return [Run(entry.key, entry.task, entry.kind, timeout)]

    def _start_queued(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while self._queue and self._running < self.config.concurrency:
            entry = self._entries[self._queue.popleft()]
            actions += self._start(entry, now)
        return actions

    def on_finished(self, key: str, now: float, *, result: Any = None,
                    error: ErrorInfo | None = None) -> list[Action]:
        """A local run ended. Results of runs already answered are ignored."""
        entry = self._entries.get(key)
        if entry is None or entry.state is not EntryState.RUNNING:
            return []
        assert entry.kind is not None and entry.task is not None
        if not entry.kind.inline:
            self._running -= 1
        if entry.started is not None and error is None:
            ms = 1000 * (now - entry.started)
            old = self._run_ms.get(entry.task.kind)
            self._run_ms[entry.task.kind] = ms if old is None else 0.7 * old + 0.3 * ms
        if error is not None:
            actions = self._answer_error(entry, error.code, error.message, now)
        else:
            actions = self._answer_ok(entry, result, now)
        return actions + self._start_queued(now)

    def on_tick(self, now: float) -> list[Action]:
        actions = self._handle_deaths(now) + self._fire_claims(now) + self._expire_silent_askees(now)
        if self._probes:
            actions += self._probe_tick(now)
        if self._sent_flush_at is not None and now >= self._sent_flush_at:
            actions += self._flush_sent()
        for entry in list(self._entries.values()):
            if entry.timeout_at is None or now < entry.timeout_at:
                if entry.state is EntryState.QUEUED and entry.task and entry.task.deadline_ms \
                        and now >= entry.received + entry.task.deadline_ms / 1000:
                    self._queue.remove(entry.key)
                    actions += self._answer_error(
                        entry, "deadline_exceeded",
                        f"still queued after deadline_ms={entry.task.deadline_ms}", now)
                continue
            if entry.state is EntryState.RUNNING:
                self._running -= 1
                self.counters.timeouts += 1
                assert entry.task is not None
                actions.append(Cancel(entry.key))
                actions += self._answer_error(
                    entry, "timeout", f"kind {entry.task.kind!r} ran past its timeout of "
                    f"{now - (entry.started or now):.1f} s", now)
            elif entry.state is EntryState.OFFERED and entry.offer is not None:
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
        self._busy_until.pop(agent, None)
        if presence.state == "online":
            if self._dead.back(agent):
                # Back after its will: it gave up the claims it had made (their
                # outcome may be lost: amqtt drops messages in flight), so what it
                # won with them is contested now. Not what it won with claims of
                # its new epoch: it holds those, and would not compete for them.
                return self._contest(agent, now, epoch=presence.epoch) + self._ask_again(agent) + \
                    self._rebalance(now)
            return self._rebalance(now)
        if presence.state == "offline":
            self._dead.will(agent, presence.ts, now)
        # Its will, or it drains: offers it has not accepted go elsewhere now.
        # What it accepted stays with it until it is dead (``_handle_deaths``): a
        # will also comes from a broker that shuts down, with the peer alive.
        actions: list[Action] = []
        for entry in list(self._entries.values()):
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
        bridge = h.agent
        self._bridge_ids.add(bridge)
        if h.state == "degraded":     # alive, delivering what it holds, taking nothing new
            self._bridges.pop(bridge, None)
            self._dead.back(bridge)
            return []
        if h.state == "online":
            self._bridges[bridge] = (h.kinds, now)
            self._dead.back(bridge)
            return []
        if bridge in self._bridges:
            self._dead.will(bridge, h.ts, now)   # re-placed after the grace
        self._bridges.pop(bridge, None)
        return []

    def _cloud_for(self, kind: str, now: float, *, exclude: set[str]) -> str | None:
        for bridge, (kinds, seen) in sorted(self._bridges.items()):
            fresh = max(10.0, self.config.presence_stale_s)   # its last will says when it is gone
            if kind in kinds and bridge not in exclude and now - seen <= fresh:
                return bridge
        return None

    def is_bridge(self, agent: str) -> bool:
        return agent in self._bridge_ids

    def _on_control(self, payload: bytes) -> list[Action]:
        try:
            op = codec.decode(payload).get("op")
        except (InvalidMessage, AttributeError):
            return []
        if op == "drain" and not self.draining:
            self.draining = True
            return [Drain()]
        return []
