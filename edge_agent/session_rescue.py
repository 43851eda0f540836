"""Rescuing a dead peer's MQTT session.

The field's complaint: a shared-subscription member dies with QoS 1 messages
in flight, and the broker keeps them (and keeps routing it new ones) in the
dead member's persistent session, where nobody will ever read them. The agent
elected to rescue (first claim on ``rescue:{agent}:{ts}``) connects with the
dead agent's client id, which resumes that session: the broker redelivers what
was in flight and hands over what was queued. Each task goes to the rescuer's
core, which competes for it under its takeover key (the dead agent, if it was
only cut off, may reclaim it: exactly one wins). As soon as it is connected the
rescuer unsubscribes the session from the task topics (subscribing to each
first: RabbitMQ ignores an UNSUBSCRIBE of a filter the connection did not
subscribe to itself), so the broker routes new tasks to the live agents'
sessions; it waited for the session to go quiet first, which under steady
load it never did. It disconnects once every rescued task is acknowledged and
nothing more came for ``quiet_s``, or after ``max_s`` with no task in and
none acknowledged (a large backlog takes as long as it takes while it moves).
The rescue connection never reconnects: if the agent comes back, it takes
its session back.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from fogmesh.edge_agent.events import RescuedIn
from fogmesh.edge_agent.links import as_task
from fogmesh.errors import ConnectError
from fogmesh.mqtt import BrokerUrl, Message, MqttClient


@dataclass(frozen=True)
class RescueToken:
    """Ack token of a rescued message: acknowledged on the rescue connection."""

    session: RescueSession
    message: Message


class RescueSession:
    def __init__(self, url: BrokerUrl, *, client_id: str, agent: str, unsubscribe: Iterable[str],
                 deliver: Callable[[RescueToken], None], log: logging.LoggerAdapter | logging.Logger,
                 quiet_s: float = 1.0, max_s: float = 120.0, mqtt5: bool = False) -> None:
        self.agent = agent
        self.unsubscribe = tuple(unsubscribe)
        self.deliver = deliver
        self.log = log
        self.quiet_s = quiet_s
        self.max_s = max_s
        self._lock = threading.Lock()
        self._outstanding = 0
        self._received = 0
        self._last_message = self._last_progress = time.monotonic()
        self._stop = threading.Event()
        self.mqtt5 = mqtt5            # the protocol the dead agent spoke: its tasks keep their properties
        self.client = MqttClient(url, client_id=client_id, clean_session=False, manual_ack=True,
                                 reconnect=False, on_message=self._on_message, mqtt5=mqtt5)
        self._thread = threading.Thread(target=self._run, name=f"rescue-{agent}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def ack(self, token: RescueToken) -> None:
        self.client.ack(token.message)
        with self._lock:
            self._outstanding = max(0, self._outstanding - 1)
            self._last_progress = time.monotonic()

    def _on_message(self, message: Message) -> None:
        with self._lock:
            self._outstanding += 1
            self._received += 1
            self._last_message = self._last_progress = time.monotonic()
        self.deliver(RescueToken(self, message))

    def _run(self) -> None:
        try:
            self.client.start(timeout=10)
        except ConnectError as exc:
            self.log.warning("rescue of %s failed: %s", self.agent, exc)
            return
        try:
            # No more work routed to the dead agent, at once: a member of a busy
            # group (the rescuer counts as one while it holds the session) gets
            # its share of every new task and never goes quiet. What the session
            # already kept still comes: mosquitto and the embedded broker go on
            # delivering it after the UNSUBSCRIBE, as MQTT lets them.
            for topic_filter in self.unsubscribe:
                # Subscribed first: RabbitMQ ignores an UNSUBSCRIBE for a filter this
                # connection did not subscribe to, though the resumed session has it.
                try:
                    self.client.subscribe(topic_filter)
                except ConnectError:
                    pass
                self.client.unsubscribe(topic_filter)
            while not self._stop.wait(0.1):      # take what it kept, until all of it is acknowledged
                if not self.client.connected.is_set():
                    self.log.info("rescue of %s ended: it took its session back", self.agent)
                    return
                now = time.monotonic()
                with self._lock:
                    done = self._outstanding == 0 and now - self._last_message >= self.quiet_s
                    stuck = now - self._last_progress > self.max_s    # nothing came, nothing acknowledged
                if done or stuck:
                    break
            self.log.info("rescued %d message(s) of %s", self._received, self.agent)
        finally:
            self.client.stop()


def rescued(token: RescueToken) -> RescuedIn:
    """A message taken from a dead peer's session, as the agent's core is told of it."""
    message = as_task(token.message)
    return RescuedIn(message.topic, message.payload, replace(token, message=message), token.session.agent)
