"""The agent's IO shell: MQTT, worker processes, clock and host monitor around
the sans-IO :class:`~fogmesh.edge_agent.core.AgentCore`.

Threads: one dispatcher thread owns the core and carries out its actions;
paho's network threads and the worker reader threads enqueue events for it.
So the core needs no locks, and a slow handler never delays an
acknowledgement. One exception: a task arriving on an idle agent is stepped
on the task connection's network thread, taking the dispatcher's turn
(:mod:`fogmesh.edge_agent.turns`), which saves it a thread hand-off.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import uuid
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

from fogmesh.edge_agent.actions import (Ack, Action, AgentConfig, Cancel, Drain, Forget, Publish, Remember,
                                        describe, Rescue, Run, StopTaking)
from fogmesh.edge_agent.inputs import (Confirmed, DrainAsked, Finished, IdConflict, Incoming, Input, LinkChanged,
                                       Received, Rescued, StopAsked, Wake, Withdrawn, describe_input)
from fogmesh.edge_agent.session_rescue import RescueSession, RescueToken
from fogmesh.edge_agent.turns import Turns
from fogmesh.edge_agent.intake import IntakeGate
from fogmesh.edge_agent.core import AgentCore
from fogmesh.edge_agent.pipeline_runner import PipelineRunner
from fogmesh.edge_agent.journal import Journal, default_state_dir
from fogmesh.edge_agent.options import AgentOptions
from fogmesh.edge_agent.host_monitor import HostMonitor
from fogmesh.edge_agent.announcer import Announcer
from fogmesh.edge_agent.unique import check_id_free, in_use_error
from fogmesh.edge_agent.workers import WorkerPool, run_handler
from fogmesh import codec
from fogmesh.errors import (ClaimOrderError, ConnectError, InvalidMessage, StorageError, SubscriptionRefused,
                            UnsupportedBroker)
from fogmesh.messages import ErrorInfo, Presence
from fogmesh.mqtt import BrokerUrl, Delivery, Message, MqttClient, Will, ensure_id_carried, probe_connect
from fogmesh.properties import with_mqtt5_properties
from fogmesh.registry import Registry
from fogmesh.service_notify import ServiceNotifier
from fogmesh.topics import Topics, validate_segment

log = logging.getLogger(__name__)

JOURNAL_RETRY_S = 5.0      # how often a degraded agent tries its journal again, at most
CLAIM_PROBE_WAIT_S = 1.0   # claim dispatch: time for peers to announce themselves before the order probe
PRESENCE_HOLD_S = 10.0     # shared dispatch: longest presence waits for the task connection (see _presence_held)
MAX_SLEEP_S = 3600.0       # the dispatcher's longest wait (a queue refuses an infinite timeout)
ID_CONFLICT_WAIT_S = 1.0   # another instance of this id "online": judged this long after (see _rival_heard)
# Longest wait between reconnect attempts. A broker back from a restart has no $share
# subscription until agents renew theirs (mosquitto 2.0 does not restore them), and it
# drops what devices publish meanwhile: agents must be back before devices are.
RECONNECT_MAX_S = 0.5


class _AgentLog(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['agent']}] {msg}", kwargs  # type: ignore[index]


class SharedSubscriptionProbe:
    """Does this broker route ``$share/...`` subscriptions? Ask it, don't
    guess: subscribe to a shared filter on ``topic``, publish one probe
    there, see whether it arrives. The client's message handler feeds every
    topic to :meth:`take`, which keeps the probe's own messages.

    A broker that is merely slow (under load) must not pass for one without
    shared subscriptions: an agent on claims among agents on a shared
    subscription would run tasks twice. So the answer waits for a marker
    (``{topic}-marker``) published after the probe, through a plain
    subscription: the broker routes them in order, so once the marker is
    back and the probe is not (a moment later), it did not route the probe.
    No marker within the timeout: :class:`ConnectError`, rather than a guess."""

    def __init__(self, topic: str, *, group: str) -> None:
        self.topic, self.marker = topic, f"{topic}-marker"
        self.shared_filter = f"$share/fogmesh-probe-{group}/{topic}"
        self._probe, self._marked = threading.Event(), threading.Event()

    def take(self, topic: str) -> bool:
        """True (and noted) if a message on ``topic`` is this probe's."""
        if topic == self.topic:
            self._probe.set()
        elif topic == self.marker:
            self._marked.set()
        else:
            return False
        return True

    def run(self, client: MqttClient, *, timeout: float = 30.0) -> bool:
        try:
            client.subscribe(self.shared_filter, 1, timeout=timeout)
        except SubscriptionRefused:
            return False
        client.subscribe(self.marker, 1, timeout=timeout)
        client.publish(self.topic, b"{}", qos=1)
        client.publish(self.marker, b"{}", qos=1)
        if not self._marked.wait(timeout):
            raise ConnectError(f"the broker at {client.url} did not route a probe back within {timeout:g} s, "
                               "so whether it has shared subscriptions is unknown; is it overloaded?")
        ok = self._probe.is_set() or self._probe.wait(1.0)
        client.unsubscribe(self.shared_filter)
        client.unsubscribe(self.marker)
        return ok


def _as_task(message: Message) -> Message:
    """A message from the task connection with its MQTT 5 properties merged
    into the task's JSON (fogmesh.properties); 3.1.1 messages as they are."""
    if message.properties is None:
        return message
    # Built, not dataclasses.replace(): that costs as much as the merge itself, on every MQTT 5 task.
    return Message(topic=message.topic, payload=with_mqtt5_properties(message.payload, message.properties),
                   qos=message.qos, retain=message.retain, mid=message.mid, generation=message.generation,
                   dup=message.dup, properties=message.properties)


class Agent:
    """One fog agent. ``start()`` returns once it is connected and subscribed."""

    def __init__(self, agent_id: str, broker: BrokerUrl | str, options: AgentOptions = AgentOptions()) -> None:
        validate_segment(agent_id, what="agent id")
        o = self.options = options
        root, concurrency, presence_period, wall_clock = o.root, o.concurrency, o.presence_period, o.wall_clock
        self.agent_id = agent_id
        self.topics = Topics(root)
        self.registry = o.registry or Registry.from_entry_points()
        self.concurrency = concurrency
        self.requested_dispatch = o.dispatch
        self.dispatch = o.dispatch
        self.presence_period = presence_period
        self._metrics: Any = None
        self.monitor = o.monitor or HostMonitor()
        self.clock = o.clock
        self.wall_clock = wall_clock
        self.log = _AgentLog(log, {"agent": agent_id})
        # systemd (Type=notify): readiness, status and the watchdog fed by _loop.
        self.notifier = o.notifier or ServiceNotifier(None)
        self.core: AgentCore | None = None
        self._events: queue.SimpleQueue[Input] = queue.SimpleQueue()
        self._turns = Turns()
        # Flow control: tasks not taken in while too many answers wait for the broker (edge_agent/intake.py)
        self._intake = IntakeGate(high=o.max_unconfirmed, low=o.max_unconfirmed // 2)
        self._parked: deque[Received] = deque()   # tasks not taken in yet, in arrival order
        self._sleep_until = float("inf")          # when the dispatcher wakes next, as it planned
        token = uuid.uuid4().hex[:12]
        self._shared_probe = SharedSubscriptionProbe(self.topics.probe(token), group=token)
        self._retained_presence_works = False    # seen a peer's retained presence through presence/+
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.instance = uuid.uuid4().hex[:12]     # this run; another host with our id has another
        self.fatal: str | None = None             # why the agent stopped on its own
        self.fatal_status = 2                     # 2: fix the configuration; 70: a bug, restart it
        self.announcer = Announcer(agent_id=agent_id, monitor=self.monitor, capacity=concurrency,
                                   kinds=self.registry.names(), period=presence_period,
                                   wall_clock=wall_clock, send=self._send_presence, instance=self.instance)
        self._drain_requested = False
        self._last_presence: Delivery | None = None
        self._task_link_lost = False             # see _presence_held
        self._tasks_subscribed = threading.Event()   # start-up's task subscriptions acknowledged
        self._rivals: dict[str, tuple[Presence, float]] = {}   # other instances of this id: judged at
        self._ctl_up_at = float("-inf")          # as this thread last heard; inf while down
        self._degraded: str | None = None       # why this agent takes no new tasks (journal)
        self._subscribed_to_tasks = True         # see _task_subscriptions
        # A degraded agent tries its journal again this often: back within a presence period.
        self._journal_retry_s = min(JOURNAL_RETRY_S, presence_period)
        self._probe_at = float("inf")           # claim dispatch: when to check the claims' order
        self._probing = False
        self._order_checked = threading.Event()
        self._retry_journal_at = float("inf")
        self._rescues: list[RescueSession] = []
        self._root_tag = root_tag = hashlib.sha1(root.encode()).hexdigest()[:8]
        self.journal: Journal | None = None
        if o.journal:
            directory = Path(o.state_dir) if o.state_dir else default_state_dir()
            self.journal = Journal(directory / f"agent-{agent_id}-{root_tag}.journal",
                                   done_ttl_s=AgentConfig.dedup_ttl_s, wall_clock=wall_clock)
        # Two connections: task intake (its session holds the tasks a rescue can
        # take over; it acknowledges a task only once answered, so its in-flight
        # window fills up under load), and control (presence and its will, claims,
        # the offload inbox), which must never wait behind that window.
        self._broker = broker
        self.client, self.ctl = self._make_clients(mqtt5=o.mqtt == "5")
        self._ctl_prefixes = (self.topics.claims, self.topics.presence_prefix, self.topics.agents_prefix)
        self._own_presence = self.topics.presence(agent_id)
        self.pool = WorkerPool(concurrency, self.registry, self._on_worker_done, name=agent_id)
        self.pipelines: PipelineRunner | None = None
        if o.pipelines or o.triggers:
            missing = sorted({p.kind for p in o.pipelines or []} - set(self.registry.names()))
            if missing:
                raise ValueError(f"pipelines use kinds this agent does not have: {', '.join(missing)}")
            self.pipelines = PipelineRunner(broker, agent_id=agent_id, specs=list(o.pipelines or []), root=root,
                                            wall_clock=wall_clock, task_topic=self._pipeline_target,
                                            triggers=list(o.triggers) if o.triggers else None)

    # -- lifecycle -------------------------------------------------------
    def start(self, *, timeout: float = 10.0, wait_for_broker: bool = False) -> Agent:
        """Connect, detect the dispatch mode, subscribe. With ``wait_for_broker``
        a broker that is not up yet is waited for (logged), not an error."""
        if self.journal:
            self.journal.open()
        try:
            self._check_id_free(timeout, wait_for_broker)
        except BaseException:
            if self.journal:
                self.journal.close()
            raise
        self.pool.start()
        try:
            self._choose_protocol(timeout)
            if wait_for_broker:
                self.ctl.start_waiting(self._waiting_for_broker)
            else:
                self.ctl.start(timeout=timeout)
            self.client.start(timeout=max(timeout, 30.0))
            ensure_id_carried(self.ctl.url, self.topics, what="agent id", name=self.agent_id, timeout=timeout)
            if self.requested_dispatch in ("auto", "shared"):
                shared = self._shared_probe.run(self.ctl, timeout=max(timeout, 30.0))
                if self.requested_dispatch == "shared" and not shared:
                    raise UnsupportedBroker(
                        f"--dispatch shared: the broker at {self.ctl.url} does not route $share "
                        "subscriptions (a probe through one never arrived), so this agent would never "
                        "get a task. Use --dispatch auto (claims on such brokers) or a broker with "
                        "shared subscriptions (mosquitto, EMQX, HiveMQ, the embedded one)")
                self.dispatch = "shared" if shared else "claim"
            self.core = AgentCore(AgentConfig(agent_id=self.agent_id, topics=self.topics,
                                              concurrency=self.concurrency, max_queue=self.options.max_queue,
                                              dispatch=self.dispatch, limits=self.options.limits,
                                              offer_lease_s=self.options.offer_lease_s,
                                              takeover_grace_s=self.options.takeover_grace_s,
                                              device_rate=self.options.device_rate,
                                              presence_stale_s=3 * self.presence_period),
                                  self.registry, policy=self.options.policy)
            self.announcer.dispatch = self.dispatch
            self.announcer.read_host(self.clock(), self.core)
            if self.journal and (self.journal.unfinished or self.journal.done):
                if self.journal.unfinished:
                    self.log.info("resuming %d task(s) accepted before a restart",
                                  len(self.journal.unfinished))
                self._execute(self.core.restore(done=list(self.journal.done),
                                                unfinished=list(self.journal.unfinished.values()),
                                                answers=self.journal.answers, now=self.clock()), self.core)
            self._thread = threading.Thread(target=self._loop, name=f"agent-{self.agent_id}",
                                            daemon=True)
            self._thread.start()
            for topic in (self.topics.presence_filter, self.topics.claims, self.topics.bridge_filter,
                          self.topics.agent_inbox(self.agent_id),
                          self.topics.agent_control(self.agent_id)):
                self.ctl.subscribe(topic, 1, timeout=timeout)
            if self.dispatch == "claim":
                self._check_claim_order(timeout)
            for topic in self._task_filters():
                self.client.subscribe(topic, 1, timeout=timeout)
            self._tasks_subscribed.set()
            self._events.put(Wake())           # presence may go out now (_presence_waits)
        except BaseException:
            self.pool.stop()
            self.client.stop()
            self.ctl.stop()
            if self.journal:
                self.journal.close()
            raise
        if self.pipelines:
            self.pipelines.start(timeout=timeout)
        if self.options.metrics_port is not None:
            from fogmesh.edge_agent.metrics import serve
            self._metrics = serve(self, port=self.options.metrics_port, addr=self.options.metrics_addr)
            self.log.info("metrics on http://%s:%d/metrics", self.options.metrics_addr, self.options.metrics_port)
        self.log.info("online at %s (MQTT %s), root %s, dispatch %s, %d workers, kinds: %s",
                      self.client.url, "5" if self.client.mqtt5 else "3.1.1", self.topics.root, self.dispatch,
                      self.concurrency, ", ".join(self.registry.names()))
        self.notifier.ready(self.status_line())
        return self

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop taking tasks, finish the ones held (up to ``timeout``), announce
        offline, disconnect. Tasks that arrive meanwhile stay queued at the
        broker for this agent's session, so a restart picks them up."""
        self.notifier.stopping(f"stopping: finishing {self.core.held if self.core else 0} held task(s)")
        if self.pipelines:
            self.pipelines.stop()
        if self._metrics is not None:
            self._metrics.shutdown()
        if self._thread and self._thread.is_alive():
            self._events.put(StopAsked(self.clock() + timeout))
            self._thread.join(timeout + 5)
        if self._last_presence is not None:
            # Leave only once the broker holds the "offline": an agent started
            # again with this id at once must not read the "online" before it.
            self._last_presence.wait(2.0)
        self._leave()

    def _check_id_free(self, timeout: float, wait_for_broker: bool) -> None:
        """Before taking this id's MQTT sessions: is another agent online under it?"""
        wait_s = max(6.0, 1.5 * self.presence_period + 1.0)
        while True:
            try:
                check_id_free(self.ctl.url, self.topics, self.agent_id, instance=self.instance,
                              wait_s=wait_s, connect_timeout=5.0 if wait_for_broker else timeout)
                return
            except ConnectError:
                if not wait_for_broker:
                    raise
                self._waiting_for_broker()

    def _waiting_for_broker(self) -> None:
        self.log.warning("waiting for the broker at %s (start it with `fogmesh broker`)", self.ctl.url)
        self.notifier.waiting(f"waiting for the broker at {self.ctl.url}", extend_s=30)

    def _check_claim_order(self, timeout: float) -> None:
        """Claim dispatch: before taking tasks, check with the peers that the
        broker gives everyone the claims in one order (edge_agent/ordering.py).
        Peers announce themselves when they see this agent's first presence."""
        self._probe_at = self.clock() + CLAIM_PROBE_WAIT_S
        self._events.put(Wake())
        if not self._order_checked.wait(CLAIM_PROBE_WAIT_S + 10.0):
            self.log.warning("the claim-order check did not finish; going on")
            return
        assert self.core is not None
        verdict = self.core.order_verdict
        if verdict not in (None, "ok"):
            raise ClaimOrderError(verdict)

    def _task_filters(self) -> tuple[str, ...]:
        """Where tasks come from: this agent's direct topic, and the shared task
        topics (in a shared-subscription group, or each one whole for claims)."""
        t = self.topics
        if self.dispatch == "shared":
            return (t.agent_tasks(self.agent_id), t.shared_tasks(), t.shared_device_tasks())
        return (t.agent_tasks(self.agent_id), t.tasks, t.device_tasks_filter)

    def _make_clients(self, *, mqtt5: bool) -> tuple[MqttClient, MqttClient]:
        agent_id, root_tag = self.agent_id, self._root_tag
        client = MqttClient(
            self._broker, client_id=f"fa-{agent_id}-{root_tag}", clean_session=False, manual_ack=True,
            reconnect_max=RECONNECT_MAX_S, on_message=lambda m: self._on_mqtt_message(self.client, m),
            on_connection=lambda up: self._queue_from_task_link(
                LinkChanged(control=False, up=up, session_kept=self.client.session_present)),
            # Shared dispatch answers on this connection: those cut off unconfirmed go out
            # again when their task comes back (core.on_withdrawn), so the core must hear of them.
            on_withdrawn=lambda tags: self._queue_from_task_link(Withdrawn(tags, control=False)),
            mqtt5=mqtt5)
        ctl = MqttClient(
            self._broker, client_id=f"fa-{agent_id}-{root_tag}-ctl", clean_session=False, manual_ack=True,
            reconnect_max=RECONNECT_MAX_S,
            will=Will(self.topics.presence(agent_id), self.announcer.offline_payload()),
            on_message=lambda m: self._on_mqtt_message(self.ctl, m),
            on_connection=lambda up: self._events.put(
                LinkChanged(control=True, up=up, session_kept=self.ctl.session_present)),
            on_withdrawn=lambda tags: self._events.put(Withdrawn(tags)),
            on_confirmed=self._on_confirmed, mqtt5=mqtt5)
        return client, ctl

    def _choose_protocol(self, timeout: float) -> None:
        """``mqtt="auto"`` (the default): MQTT 5 where the broker accepts it (its
        request/response properties map onto tasks: fogmesh.properties), else
        3.1.1. One CONNECT tells (the embedded broker refuses it at once)."""
        if self.options.mqtt != "auto":
            return
        problem = probe_connect(self.ctl.url, mqtt5=True, timeout=min(timeout, 3.0))
        if problem is None:
            self.client, self.ctl = self._make_clients(mqtt5=True)

    def _send_presence(self, payload: bytes) -> None:
        self._last_presence = self.ctl.publish(self._own_presence, payload, qos=1, retain=True)

    def _pipeline_target(self) -> str:
        """Where pipeline tasks go: this agent (its policy places them), or,
        once it drains, the shared task topic (another agent takes them)."""
        return self.topics.tasks if self._drain_requested else self.topics.agent_tasks(self.agent_id)

    def _start_rescue(self, agent: str) -> None:
        """Take over a dead peer's MQTT session (see :mod:`fogmesh.edge_agent.session_rescue`)."""
        self.log.warning("peer %s is gone; rescuing what the broker kept for it", agent)
        session = RescueSession(self.client.url, client_id=f"fa-{agent}-{self._root_tag}", agent=agent,
                                unsubscribe=(self.topics.shared_tasks(), self.topics.tasks,
                                             self.topics.shared_device_tasks(), self.topics.device_tasks_filter,
                                             self.topics.claims),
                                deliver=lambda token: self._events.put(
                                    Rescued(replace(token, message=_as_task(token.message)))),
                                log=self.log, mqtt5=self.client.mqtt5)
        self._rescues.append(session)
        session.start()

    def drain(self) -> None:
        """Stop taking work, finish what is held, announce ``draining`` then
        ``offline``, and leave (as a ``{"op": "drain"}`` control message does)."""
        self._events.put(DrainAsked())

    def _begin_drain(self) -> None:
        """Runs on the dispatcher thread. Unsubscribing first stops the broker
        from routing new tasks here; held and already-queued ones finish."""
        core = self.core
        assert core is not None
        core.begin_drain()
        self.log.info("draining: finishing %d held task(s), then leaving", core.held)
        for topic in self._task_filters():
            self.client.unsubscribe(topic)
        self._subscribed_to_tasks = False
        self.announcer.announce(self.clock(), core, "draining")
        self._drain_requested = True

    def status_line(self) -> str:
        """One line for ``systemctl status``: "online, 3 queued, 2/2 running, battery 62%"."""
        core = self.core
        if core is None:
            return "starting"
        parts = [self.state, f"{core.queued} queued", f"{core.running}/{self.concurrency} running"]
        if core.battery is not None:
            parts.append(f"battery {core.battery:.0f}%")
        line = ", ".join(parts)
        return f"{line}: {self._degraded}" if self._degraded else line

    @property
    def state(self) -> str:
        """What presence says: online, draining, or degraded (with a reason)."""
        if self._drain_requested:
            return "draining"
        return "degraded" if self._degraded else "online"

    def _degrade(self, reason: str, now: float, *, retry_journal: bool = True) -> None:
        """The journal cannot be written (disk full, read-only...): without it a
        crash could lose accepted work. Or (``retry_journal=False``) claims
        reach agents in different orders here. Either way: take no new tasks
        (unsubscribe, reject offers), finish what is held, say so (presence
        ``degraded`` with the reason, an ERROR line); for the journal, try it
        again every few seconds."""
        if self._degraded:
            return
        core = self.core
        assert core is not None
        self._degraded = reason
        core.on_degraded(reason)
        if retry_journal:
            self._retry_journal_at = now + self._journal_retry_s
            self.log.error("%s; taking no new tasks until it works again (free space in %s); "
                           "finishing the %d held", reason, self.journal.path.parent if self.journal else "?",
                           core.held)
        else:
            self.log.error("%s; finishing the %d held", reason, core.held)
        self._task_subscriptions(now)
        self.announcer.reason = reason
        self.announcer.announce(now, core, self.state)

    def _task_subscriptions(self, now: float) -> None:
        """Hold the task subscriptions exactly while this agent should get
        tasks: not draining, and either not degraded or the last agent able
        to answer them (:meth:`AgentCore.last_to_answer`: it answers them with
        a ``degraded`` error rather than let the broker drop them)."""
        core = self.core
        assert core is not None
        want = not self._drain_requested and (self._degraded is None or core.last_to_answer(now))
        if want == self._subscribed_to_tasks:
            return
        self._subscribed_to_tasks = want
        if not want:
            for topic in self._task_filters():
                self.client.unsubscribe(topic)
            return
        if self._degraded is not None:
            self.log.warning("no other agent is online: answering tasks with a 'degraded' error (%s)",
                             self._degraded)
        for topic in self._task_filters():
            self.client.subscribe(topic, 1, timeout=None)

    def _retry_journal(self, now: float) -> None:
        core = self.core
        assert core is not None and self.journal is not None
        if not self.journal.retry():
            self._retry_journal_at = now + self._journal_retry_s
            return
        self.log.warning("the journal %s can be written again; taking tasks", self.journal.path)
        self._degraded = None
        self._retry_journal_at = float("inf")
        core.on_degraded(None)
        self._task_subscriptions(now)
        self.announcer.reason = None
        self.announcer.announce(now, core, self.state)

    def _rival_heard(self, other: Presence, now: float) -> None:
        """Another instance of this agent's id said something. Judged
        ID_CONFLICT_WAIT_S later, unless it says "offline" meanwhile: this
        agent's control session may hand it, on resuming, what a previous
        instance of it (stopped or killed just before) published last and
        never read, its "online" and then its "offline" (or its will): taken
        at once, the "online" made a restarted agent leave."""
        instance = other.instance or ""
        if other.state == "offline":
            self._rivals.pop(instance, None)
            return
        # Judged by its latest word, at the time its first one set.
        judge_at = self._rivals[instance][1] if instance in self._rivals else now + ID_CONFLICT_WAIT_S
        self._rivals[instance] = (other, judge_at)

    def _rival_decided(self, now: float) -> bool:
        """Whether this agent leaves: a rival still online when it is judged."""
        for instance, (other, at) in list(self._rivals.items()):
            if now >= at:
                del self._rivals[instance]
                if self._second_with_this_id(other, now):
                    return True
        return False

    def _second_with_this_id(self, other: Presence, now: float) -> bool:
        """Another process announced itself under this agent's id. The one that
        started later leaves, at once and without a word on the presence topic
        (its offline would hide the other); the earlier one announces itself again."""
        mine = (self.announcer.since, self.instance)
        theirs = (other.since or 0.0, other.instance or "")
        if theirs < mine:
            self.fatal = str(in_use_error(self.agent_id, other))
            self.log.error("%s; leaving", self.fatal)
            threading.Thread(target=self._leave, name="agent-duplicate-id", daemon=True).start()
            return True
        assert self.core is not None
        self.log.error("another agent started under id %s (instance %s); it will leave", self.agent_id,
                       other.instance)
        self.announcer.announce(now, self.core, self.state)
        return False

    def _leave(self) -> None:
        """Stop without the offline announcement (for an agent that must not speak for its id)."""
        for session in self._rescues:
            session.stop()
        self.client.stop()
        self.ctl.stop()
        self.pool.stop()
        if self.journal:
            self.journal.close()
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def __enter__(self) -> Agent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inputs from other threads ------------------------------------------
    def _on_mqtt_message(self, client: MqttClient, message: Message) -> None:
        if self._shared_probe.take(message.topic):
            return
        if client is self.client:
            message = _as_task(message)
        if message.topic == self._own_presence and message.payload:
            try:
                other = Presence.from_dict(codec.decode(message.payload))
            except InvalidMessage:
                other = None
            if other is not None and other.instance not in (None, self.instance):
                self._events.put(IdConflict(other))     # its "offline" too: see _rival_heard
        event = Received(Incoming(client, message))
        if client is not self.client:
            self._events.put(event)
        elif not client.more_to_read() and self._turns.begin_arrival():
            failure = None
            try:
                self._step_arrival(event)
            except Exception as exc:     # a bug in the core: the dispatcher reports it
                failure = exc
            finally:
                self._turns.end(failure)
            if failure is not None:
                self._events.put(Wake())
        else:
            self._queue_from_task_link(event)

    def _queue_from_task_link(self, event: Input) -> None:
        self._turns.queued()
        self._events.put(event)

    def _step_arrival(self, event: Received) -> None:
        """A task stepped on the network thread it arrived on, as the dispatcher
        would have stepped it (:mod:`fogmesh.edge_agent.turns`)."""
        core = self.core
        assert core is not None
        if self._parks(event):
            return
        now = self.clock()
        core.on_clock(wall=self.wall_clock(), now=now)
        msg = event.incoming.message
        self._log_got(msg)
        # Tasks only: presence, whose newcomers _on_received looks for, comes on the control connection.
        actions = core.on_message(msg.topic, msg.payload, event.incoming, now, dup=msg.dup)
        with self.client.together(write_here=True), self.ctl.together(write_here=True):
            self._execute(actions, core)
        if not self._presence_held(now):
            self.announcer.maybe(now, core, self.state)
        if self._wake_at(core.next_deadline(), now) < self._sleep_until:
            self._events.put(Wake())     # the dispatcher sleeps past a deadline this step set

    def _answers_via(self) -> MqttClient:
        """The connection that carries answers (see :meth:`_execute`)."""
        return self.ctl if self.dispatch == "claim" else self.client

    def _intake_open(self) -> bool:
        return self._intake.admits(self._answers_via().unconfirmed())

    def _parks(self, event: Received) -> bool:
        """Whether a task from the task connection waits instead of being taken
        in (edge_agent/intake.py): too many answers unconfirmed, or earlier
        tasks wait already (they go first). Unacknowledged, it holds the
        broker's in-flight window, so the broker stops sending more."""
        if not self._parked and self._intake_open():
            return False
        if not self._parked:
            self.log.info("%d answers wait for the broker's confirmation; taking no new tasks until %d do",
                          self._answers_via().unconfirmed(), self._intake.reopens_at)
        self._parked.append(event)
        self._answers_via().watch_unconfirmed(self._intake.reopens_at, lambda: self._events.put(Wake()))
        return True

    def _wake_at(self, due: float | None, now: float) -> float:
        """When the dispatcher must look next: the core's deadline ``due``,
        presence (unless it is held: an announcement due meanwhile would
        have the dispatcher spin), the journal retry, the order probe, the
        watchdog, a rival instance of this id to judge."""
        wake = min([self._retry_journal_at, self._probe_at, self.notifier.next_beat_at]
                   + [at for _, at in self._rivals.values()])
        if not self._presence_waits(now):
            wake = min(wake, self.announcer.wake_at)
        return wake if due is None else min(wake, due)

    def _log_got(self, msg: Message) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("got %s%s %r", msg.topic, " (dup)" if msg.dup else "", msg.payload[:160])

    def _on_received(self, incoming: Incoming, core: AgentCore, now: float) -> list[Action]:
        msg = incoming.message
        self._log_got(msg)
        peer = self.topics.agent_of_presence(msg.topic)
        new_peer = peer not in (None, self.agent_id) and core.peers.get(peer) is None
        if new_peer and msg.retain:
            # The broker hands retained presence to wildcard subscribers, so a
            # newcomer gets this agent's too: no need to announce for each one.
            self._retained_presence_works = True
        actions = core.on_message(msg.topic, msg.payload, incoming, now, dup=msg.dup)
        if new_peer and core.peers.get(peer) is not None and not self._retained_presence_works:
            self.announcer.newcomer()   # it may not get our retained presence (RabbitMQ)
        return actions

    def _on_confirmed(self, action: Publish) -> None:
        """The broker has an answer the core asked to hear about (``sent_key``)."""
        if action.sent_key is not None:
            self._events.put(Confirmed(action.sent_key))

    def _on_worker_done(self, task_id: str, result: Any, error: ErrorInfo | None, run_ms: float) -> None:
        self._events.put(Finished(task_id, result, error))

    # -- the dispatcher thread -------------------------------------------------
    def _loop(self) -> None:
        """The dispatcher thread. An exception here is a bug (an illegal state
        move in the core, say): the agent leaves at once and loudly rather than
        stay connected with its tasks frozen. It announces itself offline, so
        peers take its tasks over; ``fogmesh agent`` exits 70 and a restart
        (systemd's, or the operator's) resumes what its journal holds."""
        try:
            self._dispatch()
        except Exception as exc:
            self.log.critical("%s: the dispatcher failed (%s: %s); leaving so that peers take over its tasks",
                              self.agent_id, type(exc).__name__, exc, exc_info=True)
            self.fatal = (f"internal error: {type(exc).__name__}: {exc} (a bug; the log has the traceback). "
                          "Restart the agent: it resumes the tasks its journal holds")
            self.fatal_status = 70
            if self.core is not None:
                try:
                    self.announcer.announce(self.clock(), self.core, "offline")
                except Exception:       # the connection may be what failed
                    pass
            threading.Thread(target=self._leave, name="agent-crashed", daemon=True).start()

    def _dispatch(self) -> None:
        self._turns.lock.acquire()
        try:
            self._dispatch_turns()
        finally:
            self._turns.open = False
            self._turns.lock.release()

    def _dispatch_turns(self) -> None:
        """The dispatcher's loop; it holds the turn (``self._turns.lock``) but
        while it waits for events."""
        core = self.core
        assert core is not None
        stop_by: float | None = None
        drain_quiet_until = 0.0
        while True:
            now = self.clock()
            due = core.next_deadline()
            wake = self._wake_at(due, now)
            if stop_by is not None:
                wake = min(wake, now + 0.05)
            if self._task_link_lost and self._ctl_up_at != float("inf"):
                # Polled only while the hold runs: with the control connection
                # down nothing could be announced, and its return is an event.
                wake = min(wake, now + 0.1)
            event: Input | None
            if self._parked and self._intake_open():
                event = self._parked.popleft()     # taken in now, before anything that came later
            else:
                self._sleep_until = wake
                self._turns.open = self.dispatch == "shared" and stop_by is None and not self._drain_requested
                self._turns.lock.release()
                try:
                    event = self._events.get(timeout=min(max(0.0, wake - now), MAX_SLEEP_S))
                except queue.Empty:
                    event = None
                finally:
                    self._turns.lock.acquire()
                self._turns.check()
                if isinstance(event, Received) and event.incoming.client is self.client:
                    self._turns.stepped()
                    if self._parks(event):
                        event = None
                elif isinstance(event, (LinkChanged, Withdrawn)) and not event.control:
                    self._turns.stepped()
            now = self.clock()
            core.on_clock(wall=self.wall_clock(), now=now)
            self.notifier.beat(now, self.status_line)      # only this loop feeds the watchdog
            actions: list[Action] = []
            if event is not None:
                if self.log.isEnabledFor(logging.DEBUG) and not isinstance(event, Received):
                    self.log.debug("event %s", describe_input(event))
                if isinstance(event, Received):
                    actions = self._on_received(event.incoming, core, now)
                elif isinstance(event, Rescued):
                    token = event.token
                    actions = core.on_rescued(token.message.topic, token.message.payload, token, now,
                                              holder=token.session.agent)
                elif isinstance(event, Finished):
                    actions = core.on_finished(event.key, now, result=event.result, error=event.error)
                elif isinstance(event, Confirmed):
                    actions = core.on_sent([event.key], now)
                elif isinstance(event, Withdrawn):
                    self.log.warning("connection dropped with %d answer message(s) unconfirmed: "
                                     "they go out again only if this agent wins their takeover "
                                     "(claim dispatch) or the task comes back (shared dispatch)",
                                     len(event.messages))
                    actions = core.on_withdrawn(event.messages, now)
                elif isinstance(event, LinkChanged) and event.up:
                    actions = core.on_connected(now, control=event.control, session_kept=event.session_kept)
                    if event.control:
                        self._ctl_up_at = now
                        self.announcer.again()   # re-announce after every reconnect
                elif isinstance(event, LinkChanged):
                    actions = core.on_disconnect(now, control=event.control)
                    if not event.control and self.dispatch == "shared":
                        self._task_link_lost = True
                    if event.control:
                        self._ctl_up_at = float("inf")
                elif isinstance(event, DrainAsked) and not self._drain_requested:
                    self._begin_drain()
                elif isinstance(event, IdConflict):
                    self._rival_heard(event.other, now)
                elif isinstance(event, StopAsked):
                    stop_by = event.by
                    core.stop_accepting()
                    self.log.info("stopping: finishing %d held task(s)", core.held)
            if self._rival_decided(now):
                return
            # The deadline read before the wait: one the step just set that is
            # already due is found by the next loop, which then does not wait.
            if due is not None and due <= now:
                actions += core.on_tick(now)
            # What a step publishes leaves in one write per connection, so an
            # agent killed or cut off now has sent all of it or none: an answer
            # and the acknowledgement of its task (shared subscriptions: the
            # broker gives the task to another member only if it missed the
            # answer), an answer and the "sent" record that tells peers it is
            # out (claims).
            # With nothing else queued this thread writes it itself (a round
            # trip saved); under load the network threads merge the writes.
            idle = self._events.empty() and not self._parked
            with self.client.together(write_here=idle), self.ctl.together(write_here=idle):
                self._execute(actions, core)
                if self.dispatch == "claim":
                    self._execute(core.take_marks(), core)
            if now >= self._probe_at:
                self._probe_at = float("inf")
                self._probing = True
                self._execute(core.start_order_probe(self.instance, now), core)
            if self._probing and core.order_verdict is not None:
                self._probing = False
                self._order_checked.set()
            if now >= self._retry_journal_at:
                self._retry_journal(now)
            if self._degraded is not None:
                self._task_subscriptions(now)      # a peer came or went: who answers the tasks
            if self._drain_requested and stop_by is None:
                # Finish everything held, including tasks the broker routed here
                # before the unsubscribe took effect (a quiet half second), then leave.
                stop_by = now + 3600.0
                drain_quiet_until = now + 0.5
            if self._drain_requested and now < drain_quiet_until:
                self.announcer.maybe(now, core, "draining")
                continue
            if stop_by is not None and (core.held == 0 or now >= stop_by):
                if core.held:
                    self.log.warning("stopping with %d task(s) unfinished; the broker "
                                     "redelivers them to this agent's session", core.held)
                self.announcer.announce(now, core, "offline")
                if self._drain_requested:
                    threading.Thread(target=self.stop, name="agent-drained", daemon=True).start()
                return
            if self._presence_held(now):
                continue
            self.announcer.maybe(now, core, self.state)

    def _presence_held(self, now: float) -> bool:
        """Whether to say nothing on the presence topic now (see
        :meth:`_presence_waits`); a hold that ends announces at once."""
        if self._presence_waits(now):
            return True
        if self._task_link_lost:
            self._task_link_lost = False
            self.announcer.again()
        return False

    def _presence_waits(self, now: float) -> bool:
        """Shared dispatch: "online" means tasks reach this agent. Whoever
        sends work on hearing it (a site bridge replaying its outbox to the
        cloud workers) would have it dropped by a broker with no member in
        the $share group yet. So presence waits for the task subscriptions at
        start-up, and after the task connection dropped, until that
        connection is back with its subscriptions acknowledged (a broker
        restarted without its sessions has none), or PRESENCE_HOLD_S after
        the control connection came back (peers judge an agent dead after 3
        silent periods, 15 s by default). And while another instance of this
        id waits to be judged (:meth:`_rival_heard`): if this one is to leave,
        its word would hide the one that stays."""
        if self._rivals:
            return True
        if self.dispatch != "shared":
            return False
        if not self._tasks_subscribed.is_set():
            return True
        return self._task_link_lost and not (self.client.resubscribed.is_set()
                                             or now >= self._ctl_up_at + PRESENCE_HOLD_S)

    def _execute(self, actions: list[Action], core: AgentCore) -> None:
        todo = deque(actions)
        trace = self.log.isEnabledFor(logging.DEBUG)
        while todo:
            action = todo.popleft()
            if trace:
                self.log.debug("do %s", describe(action))
            if isinstance(action, Publish):
                # Shared subscriptions: a reply leaves on the task connection, before
                # the acknowledgement of its task, so a broker that missed the reply
                # gives the task back. Claim dispatch: everything shares the control
                # connection, so peers see a winner's claim, its "done" record (before
                # the reply), its "sent" record (after it) and its presence in the
                # order it sent them (the contests of a peer back after its will
                # depend on it). Claims, presence and the inbox: control connection.
                via = self.ctl if (self.dispatch == "claim"
                                   or action.topic.startswith(self._ctl_prefixes)) else self.client
                tagged = action.fence_key is not None or action.sent_key is not None
                via.publish(action.topic, action.payload, qos=action.qos, retain=action.retain,
                            tag=action if tagged else None, withdraw=action.fence_key is not None,
                            properties=action.properties)
            elif isinstance(action, Ack):
                if isinstance(action.token, RescueToken):
                    action.token.session.ack(action.token)
                elif isinstance(action.token, Incoming):   # None: restored from the journal
                    action.token.client.ack(action.token.message)
            elif isinstance(action, Remember):
                if self.journal:
                    try:
                        self.journal.accepted(action.key, action.payload)
                    except StorageError as exc:
                        self._degrade(str(exc), self.clock())
            elif isinstance(action, Forget):
                if self.journal:
                    try:
                        self.journal.finished(action.key, action.answer)
                    except StorageError as exc:
                        self._degrade(str(exc), self.clock())
            elif isinstance(action, Run):
                if action.kind.inline:
                    result, error = run_handler(self.registry, action.task.kind, action.task.args)
                    todo.extend(core.on_finished(action.key, self.clock(), result=result, error=error))
                else:
                    self.pool.submit(action.key, action.task.kind, action.task.args)
            elif isinstance(action, Cancel):
                self.log.warning("stopping the run of task %s (timeout, or answered elsewhere)",
                                 action.key)
                self.pool.cancel(action.key)
            elif isinstance(action, Drain):
                self._begin_drain()
            elif isinstance(action, Rescue):
                self._start_rescue(action.agent)
            elif isinstance(action, StopTaking):
                self._degrade(action.reason, self.clock(), retry_journal=False)
