"""One-shot questions put to a broker with fogmesh's client: does it accept
this CONNECT (``fogmesh doctor``), does a topic come back unchanged (ids with
characters some brokers rewrite)?"""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace

from fogmesh.broker_url import BrokerUrl
from fogmesh.errors import ConnectError, UnsupportedBroker
from fogmesh.mqtt.client import MqttClient
from fogmesh.topics import Topics, is_safe_id


def probe_connect(url: BrokerUrl | str, *, mqtt5: bool = False, websocket_port: int | None = None,
                  timeout: float = 3.0) -> str | None:
    """One CONNECT, then DISCONNECT: ``None`` if the broker accepted it, else
    why not (refused with a reason code, or no answer). For ``fogmesh doctor``:
    which protocol versions and transports a broker offers. ``websocket_port``:
    MQTT over WebSockets on that port of the URL's host."""
    url = url if isinstance(url, BrokerUrl) else BrokerUrl.parse(url)
    if websocket_port is not None:
        url = replace(url, port=websocket_port, websocket=True)
    try:
        client = MqttClient(url, client_id=f"fogmesh-probe-{uuid.uuid4().hex[:8]}", reconnect=False, mqtt5=mqtt5)
    except ConnectError as exc:          # an unreadable CA file
        return str(exc)
    try:
        client.start(timeout=timeout, fail_fast=True)
    except ConnectError:
        return client.refused or f"no CONNACK within {timeout:g} s"
    client.stop()
    return None


def topic_round_trip(url: BrokerUrl | str, topic: str, *, payload: bytes = b"{}", timeout: float = 5.0) -> bool:
    """Does ``payload`` published on ``topic`` come back on exactly ``topic`` to
    a subscriber of ``topic``? No when the broker rewrites the topic's
    characters, or when its ACL lets this login not both publish and read it."""
    seen = threading.Event()
    client = MqttClient(url, client_id=f"fogmesh-topic-check-{uuid.uuid4().hex[:8]}", reconnect=False,
                        on_message=lambda m: seen.set() if m.topic == topic and m.payload == payload else None)
    client.start(timeout=timeout)
    try:
        client.subscribe(topic, 1, timeout=timeout)
        client.publish(topic, payload, qos=1)
        return seen.wait(timeout)
    except ConnectError:
        return False
    finally:
        client.stop()


def ensure_id_carried(url: BrokerUrl | str, topics: Topics, *, what: str, name: str, timeout: float = 5.0) -> None:
    """Raise :class:`UnsupportedBroker` when the broker does not carry a topic
    holding the id ``name`` unchanged. Ids of letters, digits, ``-`` and
    ``_`` pass without asking the broker."""
    if is_safe_id(name):
        return
    topic = topics.probe(f"{uuid.uuid4().hex[:8]}-{name}")
    # A round trip takes milliseconds; a rewritten topic never comes back at all.
    if not topic_round_trip(url, topic, timeout=min(timeout, 3.0)):
        raise UnsupportedBroker(
            f"{what} {name!r}: the broker at {url} does not carry topics with these characters unchanged "
            "(RabbitMQ's MQTT plugin turns '.' into a level separator), so this id would be invisible. "
            "Use only letters, digits, '-' and '_'")
