"""Tier 1 (pure: the bridge's handler with stand-ins for its MQTT clients):
what the cloud may send down to a site (issue #37). The bridge republishes at
the site only what topics.md documents for ``sites/{site}/down/``: actuator
commands, ``actuators/{device}/{actuator}/set``. Anything else a cloud-side
publisher sends there (an agent's drain, a desired state, a presence) is
refused, counted and logged once, never published on the edge broker."""

from __future__ import annotations

import logging

import pytest

from fogmesh.cloud_bridge.bridge import Bridge
from fogmesh.cloud_bridge.translate import command_down
from fogmesh.mqtt import Message
from fogmesh.topics import validate_publish_topic

ROOT = "fog/v1"
DOWN = "fogmesh/v1/sites/farm/down/"


class Wire:
    """What the handler hands an MQTT client: every publish and every ack."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.acked = 0

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, **_: object) -> None:
        validate_publish_topic(topic)
        self.published.append((topic, payload))

    def ack(self, message: object) -> None:
        self.acked += 1

    def stop(self) -> None:
        pass


@pytest.fixture
def bridge(tmp_path):
    b = Bridge(site="farm", edge="mqtt://127.0.0.1:1", cloud="mqtt://127.0.0.1:1", root=ROOT,
               store_path=tmp_path / "outbox.db", wall_clock=lambda: 1795000000.0)
    b.edge, b.cloud = Wire(), Wire()
    yield b
    b.outbox.close()


def from_cloud(bridge: Bridge, rest: str, payload: bytes) -> None:
    bridge._cloud_message(Message(DOWN + rest, payload, qos=1, retain=False, mid=1, generation=1))


@pytest.mark.parametrize("rest,edge", [
    ("actuators/gate-1/relay/set", "fog/v1/actuators/gate-1/relay/set"),
    ("actuators/farm-relay/deterrent/set", "fog/v1/actuators/farm-relay/deterrent/set"),
    ("agents/h5/control", None),                    # a drain: it would stop the agent
    ("deploy/desired/all", None),                   # the fleet's desired state is the operator's, signed
    ("deploy/timestamp", None),
    ("presence/pi-1", None),
    ("actuators/gate-1/relay/state", None),         # an actuator's state is its device's to say
    ("actuators/gate-1/relay/set/more", None),
    ("actuators/gate-1/set", None),
    ("actuators/+/relay/set", None),
    ("actuators/$x/relay/set", None),
    ("sensors/greenhouse/control", None),
    ("tasks", None),
    ("", None),
])
def test_only_an_actuator_command_is_a_command_down(rest, edge):
    assert command_down(rest, root=ROOT) == edge


def test_a_drain_or_a_desired_state_from_the_cloud_never_reaches_the_site(bridge, caplog):
    caplog.set_level(logging.WARNING)
    for _ in range(200):
        from_cloud(bridge, "agents/h5/control", b'{"op": "drain"}')
        from_cloud(bridge, "deploy/desired/all", b'{"signed": {}}')
    from_cloud(bridge, "actuators/gate-1/relay/set", b'{"op": "on"}')
    assert bridge.edge.published == [("fog/v1/actuators/gate-1/relay/set", b'{"op": "on"}')]
    assert bridge.counters["commands_down"] == 1
    assert bridge.refusals.by_kind == {"command down": 400}
    assert bridge.cloud.acked == 401                 # each taken off the cloud broker, none redelivered
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1 and "agents/h5/control" in lines[0].getMessage()
