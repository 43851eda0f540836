"""An agent that refuses to run after it already spoke (the claim-order
check failed): it says "offline" and leaves no MQTT session behind. A
persistent session left on the broker keeps collecting the claims topic
and tasks for an agent that is not coming (RabbitMQ queued thousands), and
its next start would have to wade through them."""

from __future__ import annotations

import logging
from typing import Any

from fogmesh.errors import ConnectError
from fogmesh.mqtt import MqttClient


def leave_no_session(*, ctl: MqttClient, client: MqttClient, presence_topic: str, offline: bytes,
                     log: logging.LoggerAdapter[Any]) -> None:
    delivery = ctl.publish(presence_topic, offline, qos=1, retain=True)
    if delivery is not None:
        delivery.wait(3.0)
    for old in (client, ctl):
        old.stop()
        try:
            gone = MqttClient(old.url, client_id=old.client_id, clean_session=True, mqtt5=old.mqtt5, reconnect=False)
            gone.start(timeout=5.0)
            gone.stop()
        except ConnectError as exc:
            log.warning("could not clear the broker's session %s (%s): it may keep collecting messages",
                        old.client_id, exc)
