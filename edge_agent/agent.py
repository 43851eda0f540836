"""The fog agent: its connections, worker pool, journal and presence around
the sans-IO :class:`~fogmesh.edge_agent.core.AgentCore`, and its lifecycle
(start, stop, drain).

Threads: one dispatcher thread owns the core (:mod:`fogmesh.edge_agent.dispatcher`:
events in, one step, actions out, wait); paho's network threads and the
worker reader threads put events on its queue. So the core needs no locks,
and a slow handler never delays an acknowledgement. What it does with the
actions is :mod:`fogmesh.edge_agent.executor`'s.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

from fogmesh.amqp_queue import TaskQueue
from fogmesh.broker_url import BrokerUrl
from fogmesh.deploy.receiver import DeployReceiver
from fogmesh.edge_agent import events as ev
from fogmesh.edge_agent.actions import AgentConfig
from fogmesh.edge_agent.announcer import Announcer
from fogmesh.edge_agent.core import AgentCore
from fogmesh.edge_agent.deploying import make_receiver, switch_kinds
from fogmesh.edge_agent.dispatcher import Dispatcher
from fogmesh.edge_agent.events import DrainAsked, StopAsked
from fogmesh.edge_agent.executor import Executor
from fogmesh.edge_agent.host_monitor import HostMonitor
from fogmesh.edge_agent.inputs import Wake
from fogmesh.edge_agent.journal import Journal, default_state_dir
from fogmesh.edge_agent.links import make_clients
from fogmesh.edge_agent.options import AgentOptions
from fogmesh.edge_agent.pipeline_runner import PipelineRunner
from fogmesh.edge_agent.probes import SharedSubscriptionProbe
from fogmesh.edge_agent.queue_intake import QueueIntake
from fogmesh.edge_agent.refusal import leave_no_session
from fogmesh.edge_agent.session_rescue import RescueSession, rescued
from fogmesh.edge_agent.standing import task_filters
from fogmesh.edge_agent.unique import check_id_free
from fogmesh.edge_agent.workers import WorkerPool
from fogmesh.errors import ClaimOrderError, ConnectError, LoginRefused, UnsupportedBroker, is_login_refusal
from fogmesh.mqtt import Delivery, Message, MqttClient, ensure_id_carried, probe_connect
from fogmesh.registry import Registry
from fogmesh.service_keeper import ServiceKeeper
from fogmesh.service_notify import ServiceNotifier
from fogmesh.topics import Topics, validate_segment

log = logging.getLogger(__name__)

CLAIM_PROBE_WAIT_S = 1.0   # claim dispatch: time for peers to announce themselves before the order probe


class _AgentLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['agent']}] {msg}", kwargs  # type: ignore[index]


class Agent:
    """One fog agent. ``start()`` returns once it is connected and subscribed."""

    def __init__(self, agent_id: str, broker: BrokerUrl | str, options: AgentOptions = AgentOptions()) -> None:
        validate_segment(agent_id, what="agent id")
        o = self.options = options
        self.agent_id = agent_id
        self.topics = Topics(o.root)
        self.registry = o.registry or Registry.from_entry_points()
        self._root_tag = root_tag = hashlib.sha1(o.root.encode()).hexdigest()[:8]
        self.log = _AgentLog(log, {"agent": agent_id})
        self.receiver: DeployReceiver | None = None   # fleet deployment: only with a trusted key
        if o.trust_keys:
            self.receiver = make_receiver(agent_id=agent_id, broker=broker, options=o, topics=self.topics,
                                          base=self.registry, root_tag=root_tag, switch=self._switch_kinds,
                                          log=self.log)
            self.registry = self.receiver.load()
        self.concurrency = o.concurrency
        self.requested_dispatch = self.dispatch = o.dispatch
        self.presence_period = o.presence_period
        self.monitor = o.monitor or HostMonitor()
        self.clock, self.wall_clock = o.clock, o.wall_clock
        # systemd (Type=notify): readiness, status and the watchdog fed by the dispatcher.
        self.notifier = o.notifier or ServiceNotifier(None)
        self.core: AgentCore | None = None
        self._metrics: Any = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.instance = uuid.uuid4().hex[:12]     # this run; another host with our id has another
        self.fatal: str | None = None             # why the agent stopped on its own
        self.fatal_status = 2                     # 2: fix the configuration; 70: a bug, restart it
        token = uuid.uuid4().hex[:12]
        self._shared_probe = SharedSubscriptionProbe(self.topics.probe(token), group=token)
        self.announcer = Announcer(agent_id=agent_id, monitor=self.monitor, capacity=o.concurrency,
                                   kinds=self.registry.names(), period=o.presence_period,
                                   wall_clock=o.wall_clock, send=self._send_presence, instance=self.instance)
        self.dispatcher = Dispatcher(agent_id=agent_id, topics=self.topics, log=self.log, clock=o.clock,
                                     wall_clock=o.wall_clock, notifier=self.notifier, announcer=self.announcer,
                                     instance=self.instance, presence_period=o.presence_period,
                                     max_unconfirmed=o.max_unconfirmed, task_filters=self._task_filters,
                                     on_fatal=self._fatal, on_drained=self._drained)
        self._last_presence: Delivery | None = None
        self._rescues: list[RescueSession] = []
        self.journal: Journal | None = None
        if o.journal:
            directory = Path(o.state_dir) if o.state_dir else default_state_dir()
            self.journal = Journal(directory / f"agent-{agent_id}-{root_tag}.journal",
                                   done_ttl_s=AgentConfig.dedup_ttl_s, wall_clock=o.wall_clock)
        # Two connections: task intake (its session holds the tasks a rescue can
        # take over; it acknowledges a task only once answered, so its in-flight
        # window fills up under load), and control (presence and its will, claims,
        # the offload inbox), which must never wait behind that window.
        self._broker = broker
        self.client, self.ctl = self._make_clients(mqtt5=o.mqtt == "5")
        self.pool = WorkerPool(o.concurrency, self.registry, self.dispatcher.worker_done, name=agent_id)
        self.services = ServiceKeeper(self.registry, idle_s=o.service_idle_s)    # service container kinds
        self.queue_intake = QueueIntake(o.amqp, root=o.root, events=self.dispatcher.events,
                                        prefetch=max(8, 4 * o.concurrency), log=self.log,
                                        make=o.amqp_queue or TaskQueue) if o.amqp else None
        if self.queue_intake is not None:
            self.dispatcher.standing.queue_taking = self.queue_intake.taking
        self.pipelines: PipelineRunner | None = None
        if o.pipelines or o.triggers:
            missing = sorted({p.kind for p in o.pipelines or []} - set(self.registry.names()))
            if missing:
                raise ValueError(f"pipelines use kinds this agent does not have: {', '.join(missing)}")
            self.pipelines = PipelineRunner(broker, agent_id=agent_id, specs=list(o.pipelines or []), root=o.root,
                                            wall_clock=o.wall_clock, task_topic=self._pipeline_target,
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
        self.services.start()
        try:
            self._connect(timeout, wait_for_broker)
            # Subscribed before the journal's tasks are resumed (_begin): each is answered once
            # this agent hears its own takeover claim, which a clean session (amqp dispatch)
            # not yet subscribed never hands it. (What arrives meanwhile waits in the dispatcher's queue.)
            for topic in (self.topics.presence_filter, self.topics.claims, self.topics.bridge_filter,
                          self.topics.agent_inbox(self.agent_id), self.topics.agent_control(self.agent_id)):
                self.ctl.subscribe(topic, 1, timeout=timeout)
            self._begin()
            if self.dispatch == "claim":
                self._check_claim_order(timeout)
            for topic in self._task_filters():
                self.client.subscribe(topic, 1, timeout=timeout)
            if self.queue_intake is not None:
                self.queue_intake.start(timeout=max(timeout, 30.0))
            self.dispatcher.standing.tasks_subscribed.set()
            self.dispatcher.events.put(Wake())           # presence may go out now (presence_hold)
        except BaseException as exc:
            self.pool.stop()
            self.services.stop()
            if isinstance(exc, ClaimOrderError):      # peers saw it: say offline, leave no session
                leave_no_session(ctl=self.ctl, client=self.client, presence_topic=self.topics.presence(self.agent_id),
                                 offline=self.announcer.offline_payload(), log=self.log)
            self.client.stop()
            self.ctl.stop()
            if self.journal:
                self.journal.close()
            raise
        if self.pipelines:
            self.pipelines.start(timeout=timeout)
        if self.receiver:
            self.receiver.start(timeout=timeout)
        if self.options.metrics_port is not None:
            from fogmesh.edge_agent.metrics import serve
            self._metrics = serve(self, port=self.options.metrics_port, addr=self.options.metrics_addr)
            self.log.info("metrics on http://%s:%d/metrics", self.options.metrics_addr, self.options.metrics_port)
        self.log.info("online at %s (MQTT %s), root %s, dispatch %s, %d workers, kinds: %s",
                      self.client.url, "5" if self.client.mqtt5 else "3.1.1", self.topics.root, self.dispatch,
                      self.concurrency, ", ".join(self.registry.names()))
        self.notifier.ready(self.status_line())
        return self

    def _connect(self, timeout: float, wait_for_broker: bool) -> None:
        """Both connections up, the id's characters carried, the dispatch mode known."""
        self._choose_protocol(timeout)
        if wait_for_broker:
            self.ctl.start_waiting(self._waiting_for_broker)
        else:
            self.ctl.start(timeout=timeout)
        self.client.start(timeout=max(timeout, 30.0))
        ensure_id_carried(self.ctl.url, self.topics, what="agent id", name=self.agent_id, timeout=timeout)
        if self.options.amqp and self.requested_dispatch in ("auto", "amqp"):
            self.dispatch = "amqp"           # RabbitMQ: tasks from its quorum queue (edge_agent/queue_intake.py)
        elif self.requested_dispatch in ("auto", "shared"):
            shared = self._shared_probe.run(self.ctl.url, client_id=f"fogmesh-probe-{self.instance}",
                                            mqtt5=self.ctl.mqtt5, timeout=max(timeout, 30.0))
            if self.requested_dispatch == "shared" and not shared:
                raise UnsupportedBroker(
                    f"--dispatch shared: the broker at {self.ctl.url} does not route $share "
                    "subscriptions (a probe through one never arrived), so this agent would never "
                    "get a task. Use --dispatch auto (claims on such brokers) or a broker with "
                    "shared subscriptions (mosquitto, EMQX, HiveMQ, the embedded one)")
            self.dispatch = "shared" if shared else "claim"

    def _begin(self) -> None:
        """The core, what the journal held, and the dispatcher thread."""
        o = self.options
        core = self.core = AgentCore(AgentConfig(agent_id=self.agent_id, topics=self.topics,
                                                 concurrency=self.concurrency, max_queue=o.max_queue,
                                                 dispatch=self.core_dispatch, limits=o.limits,
                                                 offer_lease_s=o.offer_lease_s, takeover_grace_s=o.takeover_grace_s,
                                                 device_rate=o.device_rate, presence_stale_s=3 * self.presence_period,
                                                 gone_silent_s=max(3 * self.presence_period, 1.5 * o.keepalive_s + 10),
                                                 task_queue=self.dispatch == "amqp", instance=self.instance),
                                     self.registry, policy=o.policy)
        d = self.dispatcher
        executor = Executor(client=self.client, ctl=self.ctl, dispatch=self.core_dispatch,
                            topics=self.topics, journal=self.journal, pool=self.pool, registry=self.registry,
                            log=self.log, rescue=self._start_rescue, stop_taking=d.standing.stop_taking,
                            resume_taking=d.standing.resume_taking, queue=self.queue_intake)
        d.attach(core=core, executor=executor, client=self.client, ctl=self.ctl, dispatch=self.core_dispatch,
                 journal=self.journal)
        self.announcer.dispatch = self.dispatch
        self.announcer.read_host(self.clock(), core)
        journal, restored = self.journal, None
        if journal and (journal.unfinished or journal.done):
            if journal.unfinished:
                self.log.info("resuming %d task(s) accepted before a restart", len(journal.unfinished))
            restored = ev.Restored(list(journal.done), list(journal.unfinished.values()), journal.answers)
        d.begin(self.clock(), restored=restored)
        self._thread = threading.Thread(target=d.run, name=f"agent-{self.agent_id}", daemon=True)
        self._thread.start()

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop taking tasks, finish the ones held (up to ``timeout``), announce
        offline, disconnect. Tasks that arrive meanwhile stay queued at the
        broker for this agent's session, so a restart picks them up."""
        self.notifier.stopping(f"stopping: finishing {self.core.held if self.core else 0} held task(s)")
        if self.pipelines:
            self.pipelines.stop()
        if self.receiver:
            self.receiver.stop()
        if self._metrics is not None:
            self._metrics.shutdown()
        if self._thread and self._thread.is_alive():
            self.dispatcher.events.put(StopAsked(self.clock() + timeout))
            self._thread.join(timeout + 5)
        if self._last_presence is not None:
            # Leave only once the broker holds the "offline": an agent started
            # again with this id at once must not read the "online" before it.
            self._last_presence.wait(2.0)
        self._leave()

    def drain(self) -> None:
        """Stop taking work, finish what is held, announce ``draining`` then
        ``offline``, and leave (as a ``{"op": "drain"}`` control message does)."""
        self.dispatcher.events.put(DrainAsked())

    def _fatal(self, message: str, status: int) -> None:
        """The dispatcher leaves on its own (a bug, or another process under this id)."""
        self.fatal, self.fatal_status = message, status
        threading.Thread(target=self._leave, name="agent-leaving", daemon=True).start()

    def _refused(self, reason: str) -> None:
        """A refused reconnect (a network thread): a login refused once accepted does not come back."""
        if self.fatal is None and is_login_refusal(reason) and (self.ctl.generation or self.client.generation):
            self.log.error("the broker refused this agent's login (%s) after accepting it: leaving", reason)
            self._fatal(f"the broker at {self.ctl.url} refused agent {self.agent_id}'s login ({reason}): this box's "
                        "login was revoked (fogmesh fleet list) or its password changed; not retrying", 2)

    def _drained(self) -> None:
        threading.Thread(target=self.stop, name="agent-drained", daemon=True).start()

    def _leave(self) -> None:
        """Stop without the offline announcement (for an agent that must not speak for its id)."""
        if self.queue_intake is not None:
            self.queue_intake.stop()        # what it held unacknowledged goes back to the queue
        for session in self._rescues:
            session.stop()
        self.client.stop()
        self.ctl.stop()
        self.pool.stop()
        self.services.stop()
        if self.journal:
            self.journal.close()
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def __enter__(self) -> Agent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _switch_kinds(self, registry: Registry) -> None:
        """A deployment's new kinds (the receiver's thread): see edge_agent/deploying.py."""
        switch_kinds(registry, events=self.dispatcher.events, switch=self.dispatcher.kinds, pool=self.pool)
        self.services.track(registry)
        self.registry = registry

    @property
    def core_dispatch(self) -> str:
        """What the core reasons by: a RabbitMQ quorum queue gives each task to one
        consumer and takes back what a lost one held, as shared subscriptions do."""
        return "shared" if self.dispatch == "amqp" else self.dispatch

    # -- what it says ------------------------------------------------------
    @property
    def state(self) -> str:
        """What presence says: online, draining, or degraded (with a reason)."""
        return self.dispatcher.standing.state

    def status_line(self) -> str:
        """One line for ``systemctl status``: "online, 3 queued, 2/2 running, battery 62%"."""
        return self.dispatcher.standing.status_line()

    def _send_presence(self, payload: bytes) -> None:
        self._last_presence = self.ctl.publish(self.topics.presence(self.agent_id), payload, qos=1, retain=True)

    # -- start-up checks --------------------------------------------------------
    def _check_id_free(self, timeout: float, wait_for_broker: bool) -> None:
        """Before taking this id's MQTT sessions: is another agent online under it?"""
        wait_s = max(6.0, 1.5 * self.presence_period + 1.0)
        while True:
            try:
                check_id_free(self.ctl.url, self.topics, self.agent_id, instance=self.instance,
                              wait_s=wait_s, connect_timeout=5.0 if wait_for_broker else timeout)
                return
            except LoginRefused:
                raise                  # waiting does not make a refused login good
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
        self.dispatcher.probe_at = self.clock() + CLAIM_PROBE_WAIT_S
        self.dispatcher.events.put(Wake())
        if not self.dispatcher.order_checked.wait(CLAIM_PROBE_WAIT_S + 10.0):
            raise ClaimOrderError("the claim-order check did not finish within 11 s (peers' views never came "
                                  "back): claim dispatch cannot be trusted here. On RabbitMQ use --amqp (a quorum "
                                  "queue); else a broker with shared subscriptions")
        assert self.core is not None
        verdict = self.core.order_verdict
        if verdict not in (None, "ok"):
            raise ClaimOrderError(verdict)

    def _task_filters(self) -> tuple[str, ...]:
        return task_filters(self.topics, self.agent_id, self.dispatch)

    # -- connections -----------------------------------------------------------
    def _make_clients(self, *, mqtt5: bool) -> tuple[MqttClient, MqttClient]:
        return make_clients(self, mqtt5=mqtt5)

    def _arrived(self, client: MqttClient, message: Message, *, task_link: bool) -> None:
        self.dispatcher.arrived(message, client=client, task_link=task_link)

    def _choose_protocol(self, timeout: float) -> None:
        """``mqtt="auto"`` (the default): MQTT 5 where the broker accepts it (its
        request/response properties map onto tasks: fogmesh.properties), else
        3.1.1. One CONNECT tells (the embedded broker refuses it at once)."""
        if self.options.mqtt != "auto":
            return
        if probe_connect(self.ctl.url, mqtt5=True, timeout=min(timeout, 3.0)) is None:
            self.client, self.ctl = self._make_clients(mqtt5=True)

    def _pipeline_target(self) -> str:
        """Where pipeline tasks go: this agent (its policy places them), or,
        once it drains, the shared task topic (another agent takes them)."""
        draining = self.dispatcher.standing.stop.draining
        return self.topics.tasks if draining else self.topics.agent_tasks(self.agent_id)

    def _start_rescue(self, agent: str) -> None:
        """Take over a dead peer's MQTT session (see :mod:`fogmesh.edge_agent.session_rescue`)."""
        self.log.warning("peer %s is gone; rescuing what the broker kept for it", agent)
        events = self.dispatcher.events
        session = RescueSession(self.client.url, client_id=f"fa-{agent}-{self._root_tag}", agent=agent,
                                unsubscribe=(self.topics.shared_tasks(), self.topics.tasks,
                                             self.topics.shared_device_tasks(), self.topics.device_tasks_filter,
                                             self.topics.claims),
                                deliver=lambda token: events.put(rescued(token)),
                                log=self.log, mqtt5=self.client.mqtt5)
        self._rescues.append(session)
        session.start()
