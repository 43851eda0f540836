"""What an agent tells the others about itself, and which tasks it lets
reach it: its presence (and when it holds it), its state (online,
degraded, draining), the task subscriptions, a degraded journal's retries,
a drain, a rival instance of its id. The shell side of those; the decisions
are in small pure parts (:mod:`.presence_hold`, :mod:`.rival_watch`,
:mod:`.journal_health`, :mod:`.stop_plan`) and, for whether it is degraded,
in the core (``AgentCore.degraded``: one fact, the core's).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from fogmesh.edge_agent.actions import StopTaking
from fogmesh.edge_agent.announcer import Announcer
from fogmesh.edge_agent.core import AgentCore
from fogmesh.edge_agent.events import LinkChanged, StopAsked, Withdrawn
from fogmesh.edge_agent.journal import Journal
from fogmesh.edge_agent.journal_health import JournalHealth, wants_task_subscriptions
from fogmesh.edge_agent.presence_hold import PresenceHold
from fogmesh.edge_agent.rival_watch import RivalWatch, this_one_leaves
from fogmesh.edge_agent.stop_plan import StopPlan
from fogmesh.edge_agent.unique import in_use_error
from fogmesh.log_limit import LogLimit
from fogmesh.mqtt import MqttClient
from fogmesh.topics import Topics

# Answers finished while a link is down are withdrawn one by one as they are
# published: one line, then at most one per this many seconds, with the rest counted.
WITHDRAWN_LINE_EVERY_S = 10.0


class Standing:
    def __init__(self, *, agent_id: str, instance: str, announcer: Announcer, log: logging.LoggerAdapter[Any],
                 clock: Callable[[], float], presence_period: float,
                 task_filters: Callable[[], tuple[str, ...]], on_fatal: Callable[[str, int], None]) -> None:
        self.agent_id, self.instance, self.announcer, self.log, self.clock = agent_id, instance, announcer, log, clock
        self._task_filters, self._on_fatal = task_filters, on_fatal
        self.rivals = RivalWatch()
        self.health = JournalHealth(presence_period=presence_period)
        self.stop = StopPlan()
        self.hold = PresenceHold(shared=False)
        self.tasks_subscribed = threading.Event()    # start-up's task subscriptions acknowledged
        self._subscribed_to_tasks = True
        self.queue_taking: Callable[[bool], None] | None = None    # amqp dispatch: consume or not
        self.core: AgentCore | None = None
        self.client: MqttClient | None = None
        self.journal: Journal | None = None
        self._withdrawn_lines = LogLimit(every_s=WITHDRAWN_LINE_EVERY_S)
        self._withdrawn_left_out = 0                  # answer messages in the reports left out

    def attach(self, *, core: AgentCore, client: MqttClient, shared: bool, journal: Journal | None) -> None:
        self.core, self.client, self.journal = core, client, journal
        self.hold = PresenceHold(shared=shared)

    # -- presence --------------------------------------------------------------------------
    def link_seen(self, event: LinkChanged, now: float) -> None:
        if event.up and event.control:
            self.hold.control_up(now)
            self.announcer.again()           # re-announce after every reconnect
        elif not event.up and event.control:
            self.hold.control_down()
        elif not event.up:
            self.hold.task_link_down()

    def withdrawn_seen(self, event: Withdrawn, now: float) -> None:
        reports = self._withdrawn_lines.take(now)
        if reports is None:
            self._withdrawn_left_out += len(event.messages)
            return
        more = (f" (and {self._withdrawn_left_out} more answer message(s) in {reports} report(s) since the last "
                "such line)" if reports else "")
        self._withdrawn_left_out = 0
        if self.queue_taking is not None:      # amqp dispatch
            self.log.warning("the task queue's connection closed with %d answer(s) not committed: their "
                             "tasks went back to the queue, and are answered once when they come back%s",
                             len(event.messages), more)
        else:
            self.log.warning("connection dropped with %d answer message(s) unconfirmed: they go out again "
                             "only if this agent wins their takeover (claim dispatch) or the task comes back "
                             "or the broker kept no session (shared dispatch)%s", len(event.messages), more)

    def presence_waits(self, now: float) -> bool:
        return self.hold.waits(now, subscribed=self.tasks_subscribed.is_set(), resubscribed=self._resubscribed(),
                               rival_waiting=self.rivals.waiting)

    def _resubscribed(self) -> bool:
        return self.client is not None and self.client.resubscribed.is_set()

    def say_presence(self, now: float) -> None:
        """Presence if due, unless held; a hold that ends announces at once."""
        core = self.core
        assert core is not None
        if self.hold.released(now, subscribed=self.tasks_subscribed.is_set(), resubscribed=self._resubscribed(),
                              rival_waiting=self.rivals.waiting):
            self.announcer.again()
        elif self.presence_waits(now):
            return
        self.announcer.maybe(now, core, self.state)

    @property
    def state(self) -> str:
        """What presence says: online, draining, or degraded (with a reason)."""
        if self.stop.draining:
            return "draining"
        return "degraded" if self.core is not None and self.core.degraded else "online"

    def status_line(self) -> str:
        """One line for ``systemctl status``: "online, 3 queued, 2/2 running, battery 62%"."""
        core = self.core
        if core is None:
            return "starting"
        parts = [self.state, f"{core.queued} queued", f"{core.running}/{core.config.concurrency} running"]
        battery = self.announcer.battery
        if battery is not None:
            parts.append(f"battery {battery:.0f}%")
        line = ", ".join(parts)
        return f"{line}: {core.degraded}" if core.degraded else line

    def rival_leaves(self, now: float) -> bool:
        """Another process under this id, judged now: the later one leaves, at
        once and without a word on the presence topic (its offline would hide
        the other); the earlier one announces itself again."""
        core = self.core
        assert core is not None
        for other in self.rivals.due(now):
            if this_one_leaves(since=self.announcer.since, instance=self.instance, other=other):
                fatal = str(in_use_error(self.agent_id, other))
                self.log.error("%s; leaving", fatal)
                self._on_fatal(fatal, 2)
                return True
            self.log.error("another agent started under id %s (instance %s); it will leave", self.agent_id,
                           other.instance)
            self.announcer.announce(now, core, self.state)
        return False

    def unfinished_go(self) -> str:
        """Where the tasks a stopping agent did not finish go, for the dispatch in use."""
        if self.queue_taking is not None:
            return ("those from the task queue go back to it for any agent, the others are resumed from "
                    "this agent's journal when it starts again")
        return "the broker redelivers them to this agent's session, and its journal resumes them at its next start"

    # -- degraded, draining -----------------------------------------------------------------
    def stop_taking(self, action: StopTaking) -> None:
        """The core takes no new tasks from now on (its journal failed, or claims
        reach agents in different orders here): say so, leave tasks to peers."""
        core = self.core
        assert core is not None
        now = self.clock()
        if action.journal:
            self.health.failed(now)
            self.log.error("%s; taking no new tasks until it works again (free space there); finishing the "
                           "%d held", action.reason, core.held)
        else:
            self.log.error("%s; finishing the %d held", action.reason, core.held)
        self.task_subscriptions(now)
        self.announcer.reason = action.reason
        self.announcer.announce(now, core, self.state)

    def resume_taking(self) -> None:
        core = self.core
        assert core is not None
        now = self.clock()
        self.log.warning("the journal can be written again; taking tasks")
        self.health.works()
        self.task_subscriptions(now)
        self.announcer.reason = None
        self.announcer.announce(now, core, self.state)

    def retry_journal(self, now: float) -> bool:
        """A degraded journal tried again: True if it works (the core is told)."""
        if self.journal is None or not self.journal.retry():
            self.health.still_failing(now)
            return False
        return True

    def task_subscriptions(self, now: float) -> None:
        """Hold the task subscriptions exactly while tasks should reach this
        agent (:func:`fogmesh.edge_agent.journal_health.wants_task_subscriptions`)."""
        core, client = self.core, self.client
        assert core is not None and client is not None
        want = wants_task_subscriptions(draining=self.stop.draining, degraded=core.degraded is not None,
                                        last_to_answer=core.last_to_answer(now))
        if want == self._subscribed_to_tasks:
            return
        self._subscribed_to_tasks = want
        if self.queue_taking is not None:      # amqp dispatch: the task queue's consumer too
            self.queue_taking(want)
        if not want:
            for topic in self._task_filters():
                client.unsubscribe(topic)
            return
        if core.degraded is not None:
            self.log.warning("no other agent is online: answering tasks with a 'degraded' error (%s)",
                             core.degraded)
        for topic in self._task_filters():
            client.subscribe(topic, 1, timeout=None)

    def stop_asked(self, event: StopAsked, now: float) -> None:
        core = self.core
        assert core is not None
        self.stop.asked(event.by)
        self.log.info("stopping: finishing %d held task(s)", core.held)

    def begin_drain(self, now: float) -> None:
        """Unsubscribing first stops the broker from routing new tasks here;
        held and already-queued ones finish. Once: a drain asked again (the
        operator's control message, ``Agent.drain``) changes nothing. (The
        core is told by the dispatcher: ``DrainAsked``.)"""
        core = self.core
        assert core is not None
        if self.stop.draining:
            return
        self.log.info("draining: finishing %d held task(s), then leaving", core.held)
        self.stop.drain(now)
        self.task_subscriptions(now)
        self.announcer.announce(now, core, "draining")


def task_filters(t: Topics, agent_id: str, dispatch: str) -> tuple[str, ...]:
    """Where an agent's tasks come from over MQTT: its direct topic, and the
    shared task topics (in a shared-subscription group, or each one whole for
    claims; with ``amqp`` dispatch they come from the RabbitMQ queue instead)."""
    if dispatch == "amqp":
        return (t.agent_tasks(agent_id),)
    if dispatch == "shared":
        return (t.agent_tasks(agent_id), t.shared_tasks(), t.shared_device_tasks())
    return (t.agent_tasks(agent_id), t.tasks, t.device_tasks_filter)
