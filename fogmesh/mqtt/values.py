"""The values fogmesh's MQTT client hands out and takes: a received
:class:`Message`, a last :class:`Will`, and a :class:`Delivery` (whether
the broker has a published message yet)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fogmesh.properties import MessageProperties

if TYPE_CHECKING:
    import paho.mqtt.client as paho

RECEIVE_MAXIMUM = 100       # as max_inflight_messages in the shipped mosquitto configs


@dataclass(frozen=True, slots=True)
class Message:
    """One received application message."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    generation: int
    dup: bool = False
    properties: MessageProperties | None = None     # MQTT 5 only, when it had any fogmesh maps


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class Delivery:
    """What :meth:`MqttClient.publish` returns: whether the broker has the
    message yet (its PUBACK, for QoS 1), without handing out paho's own type."""

    def __init__(self, info: paho.MQTTMessageInfo) -> None:
        self._info = info

    def confirmed(self) -> bool:
        return self._info.is_published()

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s for the confirmation; False if it has not come."""
        try:
            self._info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):       # not queued (no connection) or queue full
            return False
        return self._info.is_published()
