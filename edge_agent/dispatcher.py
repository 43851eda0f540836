"""The agent's dispatcher: one thread that owns the core. Other threads put
events on its queue; it steps the core with each, carries out the actions
(:mod:`fogmesh.edge_agent.executor`) and waits for the next event or
deadline. One exception: a task arriving on an idle agent is stepped on the
network thread it came on (:mod:`fogmesh.edge_agent.turns`), through the
same step (:meth:`Dispatcher.step`), saving a thread hand-off.

What to do is decided elsewhere: by the core for tasks, and by small pure
parts for the shell's own questions (a rival instance of this id, the
presence hold, the journal's retries, stopping, flow control, when to wake).
This module reads events, asks them, steps, executes and waits. It is the
one caller of the core (:meth:`Dispatcher._feed`): the executor, the
presence and the agent's start-up hand it events instead.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from typing import Any, Callable

from fogmesh.edge_agent import events as ev
from fogmesh.edge_agent.actions import Action, Publish
from fogmesh.edge_agent.announcer import Announcer
from fogmesh.edge_agent.core import AgentCore
from fogmesh.edge_agent.deploying import KindsSwitch
from fogmesh.edge_agent.events import (
    Confirmed,
    CoreEvent,
    DrainAsked,
    Finished,
    KindsChanged,
    LinkChanged,
    MessageIn,
    StopAsked,
    Withdrawn,
)
from fogmesh.edge_agent.executor import Executor
from fogmesh.edge_agent.inputs import IdConflict, Incoming, Input, Wake, core_event, describe_input
from fogmesh.edge_agent.intake import IntakeGate
from fogmesh.edge_agent.journal import Journal
from fogmesh.edge_agent.links import as_task
from fogmesh.edge_agent.rival_watch import rival_presence
from fogmesh.edge_agent.standing import Standing
from fogmesh.edge_agent.turns import Turns
from fogmesh.edge_agent.wakeup import MAX_SLEEP_S, next_wake
from fogmesh.messages import ErrorInfo
from fogmesh.mqtt import Message, MqttClient
from fogmesh.service_notify import ServiceNotifier
from fogmesh.topics import Topics


class Dispatcher:
    """Made with the agent (its queue takes events from the first connection
    on); :meth:`attach` gives it the core, the connections and the executor
    once start-up knows the dispatch mode; :meth:`run` is the thread."""

    def __init__(self, *, agent_id: str, topics: Topics, log: logging.LoggerAdapter[Any],
                 clock: Callable[[], float], wall_clock: Callable[[], float], notifier: ServiceNotifier,
                 announcer: Announcer, instance: str, presence_period: float, max_unconfirmed: int,
                 task_filters: Callable[[], tuple[str, ...]], on_fatal: Callable[[str, int], None],
                 on_drained: Callable[[], None]) -> None:
        self.agent_id, self.topics, self.log = agent_id, topics, log
        self.clock, self.wall_clock, self.notifier = clock, wall_clock, notifier
        self.announcer, self.instance = announcer, instance
        self._on_fatal, self._on_drained = on_fatal, on_drained
        self.events: queue.SimpleQueue[Input] = queue.SimpleQueue()
        self.turns = Turns()
        self.intake = IntakeGate(high=max_unconfirmed, low=max_unconfirmed // 2)
        self.parked: deque[MessageIn] = deque()     # tasks not taken in yet, in arrival order
        self.standing = Standing(agent_id=agent_id, instance=instance, announcer=announcer, log=log, clock=clock,
                                 presence_period=presence_period, task_filters=task_filters, on_fatal=on_fatal)
        self.order_checked = threading.Event()
        self.probe_at = float("inf")                 # claim dispatch: when to check the claims' order
        self._probing = False
        self._retained_presence_works = False        # seen a peer's retained presence through presence/+
        self._sleep_until = float("inf")             # when the loop wakes next, as it planned
        self._own_presence = topics.presence(agent_id)
        self.core: AgentCore | None = None
        self.executor: Executor | None = None
        self.client: MqttClient | None = None
        self.ctl: MqttClient | None = None
        self.shared = False
        self._battery: float | None = None          # the host's battery as the core was last told
        self.kinds = KindsSwitch()
        # The shell's part of an input, after the core's (none: the core's alone).
        st = self.standing
        self._shell_part: dict[type, Callable[[Any, float], None]] = {
            LinkChanged: st.link_seen, Withdrawn: st.withdrawn_seen, StopAsked: st.stop_asked,
            DrainAsked: lambda e, now: st.begin_drain(now), IdConflict: lambda e, now: st.rivals.heard(e.other, now),
            KindsChanged: self._kinds_seen}

    def attach(self, *, core: AgentCore, executor: Executor, client: MqttClient, ctl: MqttClient,
               dispatch: str, journal: Journal | None) -> None:
        self.core, self.executor, self.client, self.ctl = core, executor, client, ctl
        self.shared = dispatch == "shared"
        self.standing.attach(core=core, client=client, shared=self.shared, journal=journal)

    def begin(self, now: float, *, restored: ev.Restored | None) -> None:
        """Before the thread runs: the core is told the host's battery, then
        what the journal held (``restored``), and its actions are carried out."""
        self._battery = self.announcer.battery
        self._carry_out(self._feed(ev.BatteryRead(self._battery), now))
        if restored is not None:
            self._carry_out(self._feed(restored, self.clock()))

    # -- what other threads call ----------------------------------------------------------
    def arrived(self, message: Message, *, client: MqttClient, task_link: bool) -> None:
        """A message on ``client``: the agent's task connection (``task_link``) or its control one."""
        if task_link:
            message = as_task(message)
        if message.topic == self._own_presence and message.payload:
            other = rival_presence(message.payload, agent_id=self.agent_id, instance=self.instance)
            if other is not None:
                self.events.put(IdConflict(other))     # its "offline" too: see rival_watch
        event = MessageIn(message.topic, message.payload, Incoming(client, message), message.dup)
        if not task_link:
            self.events.put(event)
        elif not client.more_to_read() and self.turns.begin_arrival():
            failure = None
            try:
                self._step_arrival(event)
            except Exception as exc:     # a bug in the core: the dispatcher reports it
                failure = exc
            finally:
                self.turns.end(failure)
            if failure is not None:
                self.events.put(Wake())
        else:
            self.from_task_link(event)

    def from_task_link(self, event: Input) -> None:
        """An event from the task connection: counted, so arrivals keep their order with it."""
        self.turns.queued()
        self.events.put(event)

    def link_changed(self, *, control: bool, up: bool, session_kept: bool) -> None:
        event = LinkChanged(control=control, up=up, session_kept=session_kept)
        if control:
            self.events.put(event)
        else:
            self.from_task_link(event)

    def withdrawn(self, tags: list[Any], *, control: bool) -> None:
        event = Withdrawn(tags, control=control)
        if control:
            self.events.put(event)
        else:
            self.from_task_link(event)

    def confirmed(self, action: Publish) -> None:
        """The broker has an answer the core asked to hear about (``sent_key``)."""
        if action.sent_key is not None:
            self.events.put(Confirmed(action.sent_key))

    def worker_done(self, task_id: str, result: Any, error: ErrorInfo | None, run_ms: float) -> None:
        self.events.put(Finished(task_id, result, error))

    # -- the one step --------------------------------------------------------------------
    def step(self, event: Input | None, now: float, *, tick: bool = False, write_here: bool) -> bool:
        """Step the core with ``event`` (and its deadlines, with ``tick``),
        carry out the actions, and say presence if due. What a step publishes
        leaves in one write per connection, so an agent killed or cut off
        now has sent all of it or none: an answer and the acknowledgement of
        its task (shared subscriptions: the broker gives the task to another
        member only if it missed the answer), an answer and the "sent" record
        that tells peers it is out (claims). ``write_here``: this thread writes
        it (nothing else queued); under load the network threads merge writes.
        True if this agent must leave (a rival instance of its id stays)."""
        core = self.core
        assert core is not None and self.client is not None and self.ctl is not None
        self._feed(ev.ClockRead(self.wall_clock()), now)
        actions = self._take(event, now) if event is not None else []
        if self.standing.rival_leaves(now):
            return True
        if tick:
            actions += self._feed(ev.Tick(), now)
        with self.client.together(write_here=write_here), self.ctl.together(write_here=write_here):
            self._carry_out(actions)
            if not self.shared:
                self._carry_out(self._feed(ev.MarksDue(), now))
        said = core.refusals.due(now)      # malformed or forged input: one line a minute at most
        if said is not None:
            self.log.warning("%s", said)
        return False

    def _feed(self, event: CoreEvent, now: float) -> list[Action]:
        """The one place that steps the core (a battery read since told first)."""
        core = self.core
        assert core is not None
        self._tell_battery(now)
        return core.handle(event, now)

    def _tell_battery(self, now: float) -> None:
        """The host's battery, read with the presence (announcer.py), as soon as it changes."""
        if self.announcer.battery != self._battery:
            self._battery = self.announcer.battery
            self._feed(ev.BatteryRead(self._battery), now)

    def _take(self, event: Input, now: float) -> list[Action]:
        """What the core makes of one input (:func:`~fogmesh.edge_agent.inputs.core_event`),
        then the shell's part of it (:attr:`_shell_part`)."""
        if isinstance(event, MessageIn):
            return self._message(event, now)
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("event %s", describe_input(event))
        told = core_event(event)
        actions = self._feed(told, now) if told is not None else []
        shell = self._shell_part.get(type(event))
        if shell is not None:
            shell(event, now)
        return actions

    def _carry_out(self, actions: list[Action]) -> None:
        """The actions, in order; what one makes happen at once (an inline
        run's result, a journal failing, a drain) is stepped at once, and its
        actions carried out after the rest."""
        executor = self.executor
        assert executor is not None
        todo = deque(actions)
        while todo:
            follow = executor.do(todo.popleft())
            if follow is not None:
                todo.extend(self._take(follow, self.clock()))
        executor.flush_held()

    # -- the shell's part of an input ----------------------------------------------------------
    def _message(self, event: MessageIn, now: float) -> list[Action]:
        core = self.core
        assert core is not None
        self._log_got(event)
        peer = self.topics.agent_of_presence(event.topic)
        new_peer = peer is not None and peer != self.agent_id and core.peers.get(peer) is None
        if new_peer and isinstance(event.token, Incoming) and event.token.message.retain:
            # The broker hands retained presence to wildcard subscribers, so a
            # newcomer gets this agent's too: no need to announce for each one.
            self._retained_presence_works = True
        actions = self._feed(event, now)
        if new_peer and peer is not None and core.peers.get(peer) is not None and not self._retained_presence_works:
            self.announcer.newcomer()   # it may not get our retained presence (RabbitMQ)
        return actions

    def _kinds_seen(self, event: KindsChanged, now: float) -> None:
        assert self.executor is not None
        self.executor.registry = event.registry
        self.announcer.kinds = event.registry.names()
        self.announcer.again()        # presence lists the kinds now
        self.kinds.taken(event.registry)

    def _log_got(self, msg: MessageIn) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("got %s%s %r", msg.topic, " (dup)" if msg.dup else "", msg.payload[:160])

    # -- a task stepped where it arrived ---------------------------------------------------
    def _step_arrival(self, event: MessageIn) -> None:
        """As the dispatcher would step it, on the network thread it arrived on."""
        if self._parks(event):
            return
        now = self.clock()
        self.step(event, now, write_here=True)
        self.standing.say_presence(now)
        self._tell_battery(now)
        core = self.core
        assert core is not None
        if self._wake_at(core.next_deadline(), now) < self._sleep_until:
            self.events.put(Wake())     # the dispatcher sleeps past a deadline this step set

    def _parks(self, event: MessageIn) -> bool:
        """Whether a task waits instead of being taken in (flow control,
        :mod:`fogmesh.edge_agent.intake`): too many answers unconfirmed, or
        earlier tasks wait already (they go first). Unacknowledged, it holds
        the broker's in-flight window, so the broker stops sending more."""
        executor = self.executor
        assert executor is not None
        via = executor.answers_via
        if not self.parked and self.intake.admits(via.unconfirmed()):
            return False
        if not self.parked:
            self.log.info("%d answers wait for the broker's confirmation; taking no new tasks until %d do",
                          via.unconfirmed(), self.intake.reopens_at)
        self.parked.append(event)
        via.watch_unconfirmed(self.intake.reopens_at, lambda: self.events.put(Wake()))
        return True

    def _intake_open(self) -> bool:
        executor = self.executor
        assert executor is not None
        return self.intake.admits(executor.answers_via.unconfirmed())

    # -- the thread ---------------------------------------------------------------------
    def run(self) -> None:
        """The dispatcher thread. An exception here is a bug (an illegal state
        move in the core, say): the agent leaves at once and loudly rather than
        stay connected with its tasks frozen. It announces itself offline, so
        peers take its tasks over; ``fogmesh agent`` exits 70 and a restart
        (systemd's, or the operator's) resumes what its journal holds."""
        try:
            self.turns.lock.acquire()
            try:
                self._loop()
            finally:
                self.turns.open = False
                self.turns.lock.release()
        except Exception as exc:
            self.log.critical("%s: the dispatcher failed (%s: %s); leaving so that peers take over its tasks",
                              self.agent_id, type(exc).__name__, exc, exc_info=True)
            if self.core is not None:
                try:
                    self.announcer.announce(self.clock(), self.core, "offline")
                except Exception:       # the connection may be what failed
                    pass
            self._on_fatal(f"internal error: {type(exc).__name__}: {exc} (a bug; the log has the traceback). "
                           "Restart the agent: it resumes the tasks its journal holds", 70)

    def _loop(self) -> None:
        """It holds the turn (``turns.lock``) but while it waits for events."""
        core = self.core
        assert core is not None
        while True:
            now = self.clock()
            due = core.next_deadline()
            event = self._next_event(self._wake_at(due, now), now)
            now = self.clock()
            self.notifier.beat(now, self.standing.status_line)      # only this loop feeds the watchdog
            # The deadline read before the wait: one the step just set that is
            # already due is found by the next loop, which then does not wait.
            idle = self.events.empty() and not self.parked
            if self.step(event, now, tick=due is not None and due <= now, write_here=idle):
                return
            self._housekeeping(now)
            if self.standing.stop.quiet(now):
                self.announcer.maybe(now, core, "draining")
                continue
            if self.standing.stop.ends(now, held=core.held):
                if core.held:
                    self.log.warning("stopping with %d task(s) unfinished; %s", core.held,
                                     self.standing.unfinished_go())
                self.announcer.announce(now, core, "offline")
                if self.standing.stop.draining:
                    self._on_drained()
                return
            self.standing.say_presence(now)
            self._tell_battery(now)

    def _next_event(self, wake: float, now: float) -> Input | None:
        """A parked task once flow control lets it in, else the next event (or none by ``wake``)."""
        if self.parked and self._intake_open():
            return self.parked.popleft()        # taken in now, before anything that came later
        self._sleep_until = wake
        self.turns.open = self.shared and not self.standing.stop.stopping and not self.standing.stop.draining
        self.turns.lock.release()
        try:
            event: Input | None = self.events.get(timeout=min(max(0.0, wake - now), MAX_SLEEP_S))
        except queue.Empty:
            event = None
        finally:
            self.turns.lock.acquire()
        self.turns.check()
        if isinstance(event, MessageIn) and isinstance(event.token, Incoming) and event.token.client is self.client:
            self.turns.stepped()
            if self._parks(event):
                return None
        elif isinstance(event, (LinkChanged, Withdrawn)) and not event.control:
            self.turns.stepped()
        return event

    def _housekeeping(self, now: float) -> None:
        """The shell's own deadlines: the claim-order probe, the journal's
        retry, the task subscriptions while degraded, a drain's plan."""
        core, executor = self.core, self.executor
        assert core is not None and executor is not None
        if now >= self.probe_at:
            self.probe_at = float("inf")
            self._probing = True
            self._carry_out(self._feed(ev.OrderProbe(self.instance), now))
        if self._probing and core.order_verdict is not None:
            self._probing = False
            self.order_checked.set()
        if self.standing.health.due(now) and self.standing.retry_journal(now):
            self._carry_out(self._feed(ev.JournalWorks(), now))
        if core.degraded is not None:
            self.standing.task_subscriptions(now)      # a peer came or went: who answers the tasks
        self.standing.stop.look(now)

    def _wake_at(self, due: float | None, now: float) -> float:
        st = self.standing
        return next_wake(core_due=due, journal_retry_at=st.health.retry_at, probe_at=self.probe_at,
                         beat_at=self.notifier.next_beat_at, rivals_at=self.standing.rivals.next_at,
                         presence_at=self.announcer.wake_at, presence_held=st.presence_waits(now),
                         stop_poll_at=st.stop.poll_at(now), hold_poll_at=st.hold.poll_at(now))

