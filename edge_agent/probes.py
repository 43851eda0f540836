"""What an agent asks its broker at start-up, before it takes tasks: does it
route ``$share`` subscriptions (shared dispatch), or must agents claim each
task (claim dispatch)? Asked, never guessed."""

from __future__ import annotations

import threading

from fogmesh.broker_url import BrokerUrl
from fogmesh.errors import ConnectError, SubscriptionRefused
from fogmesh.mqtt import Message, MqttClient


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
    No marker within the timeout: :class:`ConnectError`, rather than a guess.

    It asks on a connection of its own, with a clean session: the agent's
    own sessions may hold thousands of messages queued while it was away
    (a box back after a power cut), and a probe queued behind them, or behind
    a full in-flight window, would time out on the agent's own backlog."""

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

    def run(self, url: BrokerUrl, *, client_id: str, mqtt5: bool, timeout: float = 30.0) -> bool:
        """Ask the broker at ``url`` on a throwaway clean-session connection."""
        client = MqttClient(url, client_id=client_id, clean_session=True, mqtt5=mqtt5, reconnect=False,
                            on_message=self._arrived)
        client.start(timeout=timeout)
        try:
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
            return self._probe.is_set() or self._probe.wait(1.0)
        finally:
            client.stop()

    def _arrived(self, message: Message) -> None:
        self.take(message.topic)
