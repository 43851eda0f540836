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

from fogmesh.edge_agent import answering, asking, claiming, failover, landing, offloading, peering, running
from fogmesh.edge_agent import events as ev
from fogmesh.edge_agent.actions import Ack, Action, AgentConfig, ResumeTaking, StopTaking
from fogmesh.edge_agent.core_state import CoreState
from fogmesh.edge_agent.entry import EntryState
from fogmesh.edge_agent.mode import Change
from fogmesh.edge_agent.placement import PlacementPolicy, SelfState
from fogmesh.registry import Registry

__all__ = ["AgentCore", "AgentConfig"]


class AgentCore:
    """The core's one input surface (:meth:`handle`) and its read-only views,
    over one explicit state (:class:`~fogmesh.edge_agent.core_state.CoreState`)
    that the concerns' functions decide with."""

    def __init__(self, config: AgentConfig, registry: Registry, *,
                 policy: PlacementPolicy | None = None) -> None:
        self.state = s = CoreState(config, registry, policy=policy)
        # What the shell and the tests read (never change): the state's parts.
        self.config, self.counters, self.refusals, self.latency = s.config, s.counters, s.refusals, s.latency
        self.entries, self.peers, self.offers, self.deaths = s.entries, s.peers, s.offers, s.deaths

    # -- views ---------------------------------------------------------------
    @property
    def queued(self) -> int:
        return self.state.runner.queued

    @property
    def running(self) -> int:
        return self.state.runner.running

    @property
    def epoch(self) -> int:
        return self.state.claims.epoch

    @property
    def battery(self) -> float | None:
        return self.state.battery

    @property
    def degraded(self) -> str | None:
        """Why this agent takes no new work (its journal failed, claims' order), or None."""
        return self.state.mode.degraded

    @property
    def order_verdict(self) -> str | None:
        """None while a claim-order probe runs; "ok"; or why claim dispatch is unsafe here."""
        return self.state.order.verdict

    @property
    def held(self) -> int:
        """Tasks held in any state (not yet answered)."""
        return len(self.state.entries)

    def self_state(self) -> SelfState:
        return self.state.self_state()

    def last_to_answer(self, now: float) -> bool:
        return self.state.last_to_answer(now)

    def next_deadline(self) -> float | None:
        s = self.state
        own = s.entries.next_deadline()
        times = [own] if own is not None else []
        death = s.deaths.next_deadline()
        if death is not None:
            times.append(death)
        probe = s.order.deadline()
        if probe is not None:
            times.append(probe)
        for peer in s.asks.awaited_peers:
            seen = s.peers.get(peer)
            if seen is not None:                 # no longer waited for once its presence is stale
                times.append(s.peers.stale_at(seen))
        if s.confirms.flush_at is not None:
            times.append(s.confirms.flush_at)
        if s.confirms.withdrawn_due is not None:
            times.append(s.confirms.withdrawn_due)
        return min(times, default=None)

    # -- the one input surface ----------------------------------------------------
    def handle(self, event: ev.CoreEvent, now: float) -> list[Action]:
        """Take one event (:mod:`fogmesh.edge_agent.events` lists them all) at
        ``now`` (monotonic seconds); return what the shell must do, in order."""
        s = self.state
        if now - s.stepped_at > 2 * s.config.presence_stale_s / 3:
            # Frozen (SIGSTOP, a stalled VM, a suspended laptop) for two presence periods:
            # peers stopped waiting for it and may have run resubmissions of what the broker
            # had already sent it, which it reads only now (issue #36, seed 5).
            s.asks.woke(now)
            s.peers.woke(now)          # their presence waits unread behind what it reads now
            s.offers.catching_up(now)  # offers that waited in its socket are past their lease
        s.stepped_at = now
        return _HANDLERS[type(event)](s, event, now)


# -- what each event does: one function each, over the state -----------------------------------
def _message(s: CoreState, e: ev.MessageIn, now: float) -> list[Action]:
    """To the concern its topic belongs to. ``dup``: the broker redelivered it
    (MQTT DUP flag), so another agent may have taken the task over meanwhile:
    it is competed for, not run. From a task queue (``requeued``): its first
    holder's connection closed, maybe after its answer went out, so the peers
    are asked first."""
    topic, payload, token, dup, connection = e.topic, e.payload, e.token, e.dup, e.queue_connection
    t = s.config.topics
    requeued = dup and s.config.task_queue and t.is_task_topic(topic)
    if dup and s.mode.takes_tasks and not requeued \
            and ((s.config.dispatch == "shared" and t.is_task_topic(topic)) or topic == s.direct):
        return failover.on_rescued(s, topic, payload, token, now, connection=connection)
    if topic == t.tasks:
        return landing.on_task(s, payload, token, now, direct=False, dup=dup, requeued=requeued,
                               connection=connection)
    device = t.device_of_tasks(topic)
    if device is not None:
        return landing.on_task(s, payload, token, now, direct=False, device=device, dup=dup, requeued=requeued,
                               connection=connection)
    if topic == s.direct:
        return landing.on_task(s, payload, token, now, direct=True, dup=dup, connection=connection)
    if topic == s.inbox:
        return [Ack(token)] + offloading.on_inbox(s, payload, now, dup=dup)
    if topic == t.claims:
        return claiming.on_claim(s, payload, token, now)
    agent = t.agent_of_presence(topic)
    if agent is not None:
        return [Ack(token)] + peering.on_presence(s, agent, payload, now)
    if topic.startswith(s.bridge_prefix):
        return [Ack(token)] + peering.on_bridge(s, topic[len(s.bridge_prefix):], payload, now)
    if topic == s.control:
        return [Ack(token)] + peering.on_control(s, payload)
    return [Ack(token)]


def _tick(s: CoreState, e: ev.Tick, now: float) -> list[Action]:
    actions = failover.handle_deaths(s, now) + claiming.fire_claims(s, now) + asking.expire_silent_askees(s, now)
    if s.order.active:
        actions += s.order.tick(now)
    if s.confirms.flush_at is not None and now >= s.confirms.flush_at:
        actions += answering.flush_sent(s)
    actions += failover.send_overdue(s, now)
    actions += running.expire_held(s, now)
    return actions + running.start_queued(s, now)


def _link(s: CoreState, e: ev.LinkChanged, now: float) -> list[Action]:
    if e.up:
        return failover.on_connected(s, now, control=e.control, session_kept=e.session_kept)
    return failover.on_disconnect(s, now, control=e.control)


def _clock(s: CoreState, e: ev.ClockRead, now: float) -> list[Action]:
    """The wall clock (Unix time) at ``now``: the core keeps time by ``now``
    (monotonic), but what it publishes for people carries Unix time."""
    s.wall_offset = e.wall - now
    return []


def _battery(s: CoreState, e: ev.BatteryRead, now: float) -> list[Action]:
    """The host's battery as the shell last read it (None: mains); placement
    policies judge this agent's own bid by it."""
    s.battery = e.percent
    return []


def _order_probe(s: CoreState, e: ev.OrderProbe, now: float) -> list[Action]:
    """Claim dispatch among peers: check that they see claims in this
    agent's order before it takes tasks (``order_verdict`` says)."""
    peers = [p.agent for p in s.peers.present(now)] if s.config.dispatch == "claim" else []
    return s.order.start(e.token, peers, now, wall_offset=s.wall_offset)


def _drain(s: CoreState, e: ev.DrainAsked, now: float) -> list[Action]:
    """The operator asked this agent to leave: offers from peers are
    rejected from now on; held tasks still finish."""
    s.mode.change(Change.DRAIN)
    return []


def _stop(s: CoreState, e: ev.StopAsked, now: float) -> list[Action]:
    """New task messages are left unacknowledged (the broker redelivers them
    to this session later); held tasks still finish."""
    s.mode.change(Change.STOP)
    return []


def _journal_failed(s: CoreState, e: ev.JournalFailed, now: float) -> list[Action]:
    """The shell cannot journal: while degraded, offers from peers are
    rejected, new tasks are left to live peers (or answered ``degraded``
    when there is none); tasks already delivered still run."""
    if not s.mode.change(Change.JOURNAL_FAILED, reason=e.reason):
        return []
    return [StopTaking(e.reason, journal=True)]


def _journal_works(s: CoreState, e: ev.JournalWorks, now: float) -> list[Action]:
    if not s.mode.change(Change.JOURNAL_WORKS):
        return []
    return [ResumeTaking()]


def _queue_lost(s: CoreState, e: ev.QueueLost, now: float) -> list[Action]:
    actions: list[Action] = []
    gone = s.entries.held_only_via(e.connection)
    # The waiting ones first: a run stopped must not start one that is about to go too.
    for entry in sorted(gone, key=lambda x: x.state is EntryState.RUNNING):
        actions += answering.let_go(s, entry, now)
    return actions


def _kinds(s: CoreState, e: ev.KindsChanged, now: float) -> list[Action]:
    s.registry = e.registry
    return []


_HANDLERS: dict[type, Callable[[CoreState, Any, float], list[Action]]] = {
    ev.MessageIn: _message,
    ev.RescuedIn: lambda s, e, now: failover.on_rescued(s, e.topic, e.payload, e.token, now, holder=e.holder),
    ev.Finished: lambda s, e, now: running.on_finished(s, e.key, now, result=e.result, error=e.error),
    ev.Confirmed: lambda s, e, now: answering.on_sent(s, [e.key], now),
    ev.Withdrawn: lambda s, e, now: failover.on_withdrawn(s, e.messages, now),
    ev.LinkChanged: _link,
    ev.Tick: _tick,
    ev.ClockRead: _clock,
    ev.BatteryRead: _battery,
    ev.MarksDue: lambda s, e, now: answering.take_marks(s),
    ev.OrderProbe: _order_probe,
    ev.DrainAsked: _drain,
    ev.JournalFailed: _journal_failed,
    ev.JournalWorks: _journal_works,
    ev.StopAsked: _stop,
    ev.Restored: lambda s, e, now: landing.restore(s, done=e.done, unfinished=e.unfinished, now=now, answers=e.answers),
    ev.KindsChanged: _kinds,
    ev.QueueLost: _queue_lost,
}
