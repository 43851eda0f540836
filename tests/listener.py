"""A raw MQTT subscriber for tests: collects (topic, payload) pairs."""

import queue
import time
import warnings

import orjson

from fogmesh.mqtt import MqttClient


class Listener:
    def __init__(self, url, *filters):
        self.got: queue.Queue = queue.Queue()
        self.held: list = []
        self.client = MqttClient(url, on_message=lambda m: self.got.put((m.topic, m.payload)))
        self.client.start()
        for f in filters:
            self.client.subscribe(f)

    def next(self, topic=None, timeout=10):
        """The next message (on ``topic``); others are kept for later calls."""
        for i, (t, payload) in enumerate(self.held):
            if topic is None or t == topic:
                del self.held[i]
                return payload
        while True:
            t, payload = self._get(timeout, waiting_for=topic)
            if topic is None or t == topic:
                return payload
            self.held.append((t, payload))

    def topics_until(self, marker, send, *, rounds=3, wait=10.0):
        """Every topic received up to and including ``marker``. ``send`` publishes
        the marker, and is called again if it is slow: for tests about what gets
        through, not how fast. (About one run in ten, the first marker after a
        secured mosquitto starts takes 10-20 s over TLS, as if held until a
        keepalive; 30 s covers two 15 s keepalives.)"""
        seen = []
        for attempt in range(rounds):
            if attempt:
                warnings.warn(f"{marker} not seen within {wait:g} s; sending it again")
            send()
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                try:
                    topic, _ = self.got.get(timeout=left)
                except queue.Empty:
                    break
                seen.append(topic)
                if topic == marker:
                    return seen
        raise AssertionError(f"{marker} never arrived; saw {seen}; listener connected: "
                             f"{self.client.connected.is_set()}")

    def _get(self, timeout, *, waiting_for):
        """One message, or an AssertionError that says what did come (a bare
        queue.Empty in a CI log says nothing)."""
        try:
            return self.got.get(timeout=timeout)
        except queue.Empty:
            others = [t for t, _ in self.held]
            raise AssertionError(
                f"nothing on {waiting_for or 'any topic'} within {timeout:g} s; other topics seen: "
                f"{others[-10:]}; listener connected: {self.client.connected.is_set()}") from None

    def drain(self):
        items, self.held = self.held, []
        while not self.got.empty():
            items.append(self.got.get())
        return items

    def publish(self, topic, payload):
        self.client.publish(topic, payload if isinstance(payload, bytes) else orjson.dumps(payload))

    def close(self):
        self.client.stop()
