"""What a client is subscribed to: the filters it renews at every CONNACK
(the broker may have lost its session), and the SUBACKs awaited.

Its ``_lock`` is the third in the client's lock order
(:mod:`fogmesh.mqtt.fence`): held only around paho's ``subscribe``, which
takes only paho's short locks, and around this book's own dictionaries; a
thread holding it waits for no lock above it.
"""

from __future__ import annotations

import threading
from typing import Any

from paho.mqtt.enums import MQTTErrorCode

from fogmesh.mqtt.wire import _Client

#: A SUBACK awaited: set once it came, with the reason codes it granted.
Awaited = tuple[threading.Event, list[int]]


class Subscriptions:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._filters: dict[str, int] = {}       # filter -> QoS, renewed at every CONNACK
        self._suback: dict[int, Awaited] = {}    # SUBSCRIBE's packet id -> its waiter

    def keep(self, topic_filter: str, qos: int) -> None:
        """Subscribe to ``topic_filter`` on every connection from now on."""
        with self._lock:
            self._filters[topic_filter] = qos

    def forget(self, topic_filter: str) -> None:
        with self._lock:
            self._filters.pop(topic_filter, None)

    def send(self, client: _Client, topic_filter: str, qos: int) -> Awaited | None:
        """Subscribe on the current connection: what its SUBACK will set, or
        None when paho could not send it (it is renewed at the next CONNACK)."""
        done = threading.Event()
        granted: list[int] = []
        with self._lock:
            rc, mid = client.subscribe(topic_filter, qos)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                return None
            self._suback[mid] = (done, granted)
        return done, granted

    def renew(self, client: _Client, done: threading.Event) -> None:
        """After a CONNACK: every kept filter again, in one SUBSCRIBE whose
        SUBACK sets ``done`` (at once when there is none to renew)."""
        with self._lock:
            filters = list(self._filters.items())
            rc, mid = client.subscribe(filters) if filters else (MQTTErrorCode.MQTT_ERR_SUCCESS, None)
            if mid is not None and rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._suback[mid] = (done, [])
            else:
                done.set()

    def acknowledged(self, mid: int, reason_codes: list[Any]) -> None:
        """A SUBACK came: its waiter learns what was granted."""
        with self._lock:
            entry = self._suback.pop(mid, None)
        if entry:
            done, granted = entry
            granted.extend(int(getattr(rc, "value", rc)) for rc in reason_codes)
            done.set()
