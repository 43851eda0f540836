"""A revoked agent's task session, handed to the fleet before its login goes.

Why: mosquitto 2.0 keeps a dropped client's persistent session, and its
turn in the shared subscription, after the reload that removed its login;
its reads are then denied (the login no longer holds), so every task the
broker routes to that session in turn is dropped, silently: half the tasks
of a two-agent site, from the reload until a peer's session rescue
(``edge_agent/session_rescue.py``) takes the session over, seconds later.
(A session whose login still holds keeps what is routed to it, which is why
a crashed agent loses nothing.)

So before the reload the registrar takes the session over itself: it
connects with the agent's client id (``fa-{id}-{hash of root}``,
topics.md), keeping the session, under its own login, which may read the
task topics; the broker drops the agent's task connection and routes the
session's turn to a login that holds. After the reload it unsubscribes the
session from the task topics (the rest of the fleet gets every new task)
and leaves without acknowledging what the broker handed it: those tasks stay
in the session, for the peer that rescues it to run under the takeover rules
(exactly one answer). The agent's control session is cleared (a clean
connect under its id): nothing is shared there, and nobody will read it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace

from fogmesh.errors import ConnectError
from fogmesh.mqtt import BrokerUrl, MqttClient
from fogmesh.topics import Topics

log = logging.getLogger("fogmesh.enrollment")


def agent_client_ids(agent_id: str, root: str) -> tuple[str, str]:
    """The client ids of an agent's task and control sessions (topics.md:
    ``fa-{agent_id}-{hash of root}``, and ``-ctl``)."""
    task = f"fa-{agent_id}-{hashlib.sha1(root.encode()).hexdigest()[:8]}"
    return task, f"{task}-ctl"


def task_filters(topics: Topics) -> tuple[str, ...]:
    """What an agent's task session may subscribe to that other agents share."""
    return (topics.shared_tasks(), topics.tasks, topics.shared_device_tasks(), topics.device_tasks_filter)


class Handover:
    """One revoked agent's sessions: :meth:`take` before the broker re-reads
    its files, :meth:`finish` after."""

    def __init__(self, url: str | BrokerUrl, agent_id: str, topics: Topics, *, timeout: float = 5.0) -> None:
        self.url = url if isinstance(url, BrokerUrl) else BrokerUrl.parse(url)
        self.agent_id, self.topics, self.timeout = agent_id, topics, timeout
        self.task_id, self.ctl_id = agent_client_ids(agent_id, topics.root)
        self.holder: MqttClient | None = None
        self.kept = False          # the broker had a session for the agent

    def _connect(self, client_id: str, *, clean: bool) -> MqttClient:
        client = MqttClient(replace(self.url), client_id=client_id, clean_session=clean, manual_ack=True,
                            reconnect=False)
        client.start(timeout=self.timeout)
        return client

    def take(self) -> None:
        """Take the task session over (the agent's connection, if up, is dropped)."""
        try:
            self.holder = self._connect(self.task_id, clean=False)
        except ConnectError as exc:
            log.warning("registrar: could not take %s's task session over: %s", self.agent_id, exc)
            return
        self.kept = self.holder.session_present

    def _round_trip(self, client: MqttClient) -> None:
        """A PUBACK: the broker has handled everything this connection sent before (and a
        reload signalled before it: mosquitto re-reads its files between two reads of its sockets)."""
        done = client.publish(self.topics.login_probe(self.url.username or "registrar", "handover"), b"")
        if done is None or not done.wait(self.timeout):
            raise ConnectError("the broker did not confirm a message")

    def finish(self) -> None:
        """After the reload: no more tasks routed to the session; leave what it holds for a rescue."""
        try:
            if self.holder is not None and self.holder.connected.is_set():
                self._round_trip(self.holder)
            if self.holder is not None and not self.holder.connected.is_set():
                # The agent took its session back before the reload dropped it: take it again.
                log.warning("registrar: %s took its task session back before the reload; taking it again",
                            self.agent_id)
                self.holder.stop()
                self.take()
            holder = self.holder
            if holder is not None and holder.connected.is_set() and self.kept:
                for topic_filter in task_filters(self.topics):
                    holder.unsubscribe(topic_filter)
                self._round_trip(holder)
                log.info("registrar: %s's task session takes no more tasks; what it held waits there for "
                         "its peers' rescue", self.agent_id)
            if holder is not None:
                holder.stop()
                if not self.kept:       # it had none: leave none behind
                    self._connect(self.task_id, clean=True).stop()
            self._connect(self.ctl_id, clean=True).stop()
        except ConnectError as exc:
            log.warning("registrar: could not finish with %s's sessions: %s", self.agent_id, exc)
