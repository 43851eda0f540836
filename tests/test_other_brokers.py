"""Brokers other than mosquitto and the embedded one, each tried for what
trips fogmesh there: RabbitMQ (MQTT plugin: rewrites '.', keeps retained
messages from wildcard subscribers) and Aedes (no shared subscriptions)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from typing import Iterator

import pytest

from fogmesh.broker.aedes import Aedes
from fogmesh.broker.rabbitmq import RabbitMQ
from fogmesh.cloud_bridge.bridge import Bridge
from fogmesh.devices.client import FogClient
from fogmesh.edge_agent.agent import Agent
from fogmesh.edge_agent.options import AgentOptions
from fogmesh.errors import UnsupportedBroker

pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("other-brokers")]   # one RabbitMQ


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitMQ]:
    node = RabbitMQ().start()
    yield node
    node.stop()
    node.cleanup()


@pytest.fixture(scope="module")
def aedes() -> Iterator[Aedes]:
    broker = Aedes().start()
    yield broker
    broker.cleanup()


def test_an_agent_id_rabbitmq_would_rewrite_is_refused_at_start_with_the_safe_characters(rabbit, root):
    agent = Agent("pi.kitchen", rabbit.url, AgentOptions(root=root, concurrency=1))
    with pytest.raises(UnsupportedBroker, match="letters, digits, '-' and '_'"):
        agent.start(timeout=10)


def test_the_same_id_works_on_a_broker_that_carries_it(mosquitto_broker, root, agents):
    agents("pi.kitchen", mosquitto_broker.url, root)
    with FogClient(mosquitto_broker.url, root=root) as client:
        assert client.send("echo", {"x": 1}).result(timeout=10).worker == "pi.kitchen"


def test_a_bridge_site_rabbitmq_would_rewrite_is_refused_at_start(rabbit, root, tmp_path):
    bridge = Bridge(site="farm.3", edge=rabbit.url, cloud="mqtt://127.0.0.1:1", root=root,
                    cloud_root=f"{root}/cloud", store_path=tmp_path / "outbox.db")
    try:
        with pytest.raises(UnsupportedBroker, match="site 'farm.3'"):
            bridge.start(timeout=10)
    finally:
        bridge.edge.stop()
        bridge.outbox.close()


def test_monitor_once_shows_agents_on_rabbitmq_though_it_keeps_retained_presence_from_wildcards(
        rabbit, root, agents):
    agents("rb-mon", rabbit.url, root, presence_period=5.0)
    time.sleep(0.5)       # its first announcement is gone by; RabbitMQ will not replay it to fog/v1/presence/+
    done = subprocess.run([sys.executable, "-m", "fogmesh", "monitor", "--once", "--json", "--broker", rabbit.url,
                           "--root", root], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [a["agent"] for a in json.loads(done.stdout)["agents"]] == ["rb-mon"]


def test_forced_shared_dispatch_on_a_broker_without_shared_subscriptions_is_refused(aedes, root):
    agent = Agent("ae-1", aedes.url, AgentOptions(root=root, concurrency=1, dispatch="shared"))
    with pytest.raises(UnsupportedBroker, match="--dispatch auto"):
        agent.start(timeout=10)


def test_the_agent_command_exits_2_with_the_reason_for_a_refused_dispatch(aedes, root):
    done = subprocess.run([sys.executable, "-m", "fogmesh", "agent", "--id", "ae-2", "--broker", aedes.url,
                           "--root", root, "--dispatch", "shared", "--concurrency", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "does not route $share subscriptions" in done.stderr


def test_a_rescued_session_on_rabbitmq_stops_collecting_tasks(rabbit, root):
    # RabbitMQ ignores an UNSUBSCRIBE of a filter the resumed connection did not
    # subscribe to itself: a decommissioned agent's queue grew for ever.
    from fogmesh.edge_agent.session_rescue import RescueSession
    from fogmesh.mqtt import BrokerUrl, MqttClient
    client_id, tasks = f"fa-gone-{root[-6:]}", f"{root}/tasks"
    gone = MqttClient(rabbit.url, client_id=client_id, clean_session=False)
    gone.start()
    gone.subscribe(tasks)
    gone.stop()                                   # its session and queue stay
    rescue = RescueSession(BrokerUrl.parse(rabbit.url), client_id=client_id, agent="gone", unsubscribe=[tasks],
                           deliver=lambda token: token.session.ack(token), log=logging.getLogger("test"),
                           quiet_s=0.3)
    rescue.start()
    rescue._thread.join(30)
    device = MqttClient(rabbit.url)
    device.start()
    for n in range(5):
        device.publish(tasks, b'{"id": "after-%d", "kind": "echo", "args": {}}' % n).wait(5)
    device.stop()
    got = []
    back = MqttClient(rabbit.url, client_id=client_id, clean_session=False, on_message=got.append)
    back.start()
    time.sleep(1.0)                               # nothing is coming: a wait, not a race
    back.stop()
    assert [m.payload for m in got] == []
