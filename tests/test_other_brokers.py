"""Brokers other than mosquitto and the embedded one, each tried for what
trips fogmesh there: RabbitMQ (MQTT plugin: rewrites '.', keeps retained
messages from wildcard subscribers, ignores an UNSUBSCRIBE on a resumed
session) and Aedes (no shared subscriptions)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Iterator

import pytest

from broker.aedes import Aedes
from broker.rabbitmq import RabbitMQ
from cloud_bridge.bridge import Bridge
from devices.client import FogClient
from edge_agent.agent import Agent
from fogmesh.errors import ClaimOrderError, UnsupportedBroker
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


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
    agent = Agent("pi.kitchen", rabbit.url, root=root, concurrency=1)
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
    agent = Agent("ae-1", aedes.url, root=root, concurrency=1, dispatch="shared")
    with pytest.raises(UnsupportedBroker, match="--dispatch auto"):
        agent.start(timeout=10)


def test_the_agent_command_exits_2_with_the_reason_for_a_refused_dispatch(aedes, root):
    done = subprocess.run([sys.executable, "-m", "fogmesh", "agent", "--id", "ae-2", "--broker", aedes.url,
                           "--root", root, "--dispatch", "shared", "--concurrency", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "does not route $share subscriptions" in done.stderr


def _queued_for(rabbit: RabbitMQ, client_id: str) -> int:
    total = 0
    for line in rabbit.ctl("list_queues", "name", "messages", "--quiet").splitlines():
        parts = line.split()
        if len(parts) == 2 and client_id in parts[0] and parts[1].isdigit():
            total += int(parts[1])
    return total


def _task_bindings_of(rabbit: RabbitMQ, client_id: str, root: str) -> list[str]:
    """Routing keys binding the task topics to that client's session queues
    (RabbitMQ's MQTT plugin writes a topic's '/' as '.')."""
    tasks_key = root.replace("/", ".") + ".tasks"
    rows = rabbit.ctl("list_bindings", "destination_name", "routing_key", "--quiet").splitlines()
    return [line for line in rows if client_id in line and tasks_key in line]


def test_a_rescued_session_on_rabbitmq_stops_collecting_tasks(rabbit, root, agents, tmp_path):
    env = {**os.environ, "FOGMESH_STATE_DIR": str(tmp_path / "dead")}
    dead = subprocess.Popen([sys.executable, "-m", "fogmesh", "agent", "--id", "rb-dead", "--broker", rabbit.url,
                             "--root", root, "--concurrency", "1", "--presence-period", "1",
                             "--log-level", "WARNING"], env=env, stderr=subprocess.DEVNULL)
    wait_until(lambda: _task_bindings_of(rabbit, "fa-rb-dead", root), timeout=30,
               what="the dead-to-be agent subscribed")
    # RabbitMQ does not order the claims topic across publishers (topics.md,
    # Brokers): the start-up probe refuses some start-ups on purpose. This test
    # is about the rescue, so it starts the second agent until the probe passes.
    for _ in range(8):
        try:
            live = agents("rb-live", rabbit.url, root, presence_period=1.0, takeover_grace_s=1.0)
            break
        except ClaimOrderError:
            continue
    else:
        pytest.fail("the claim-order probe refused 8 start-ups in a row")
    wait_until(lambda: live.core is not None and live.core.peers.get("rb-dead") is not None,
               timeout=30, what="the live agent to see its peer")
    dead.send_signal(signal.SIGKILL)
    dead.wait(10)
    # the rescuer resumes the dead session and takes it off the task topics
    wait_until(lambda: not _task_bindings_of(rabbit, "fa-rb-dead", root), timeout=60,
               what="the dead session unsubscribed from the task topics")
    with FogClient(rabbit.url, root=root) as client:
        replies = [client.send("echo", {"n": n}) for n in range(30)]
        assert all(f.result(timeout=20).worker == "rb-live" for f in replies)
    assert _queued_for(rabbit, "fa-rb-dead") == 0, rabbit.ctl("list_queues", "name", "messages")
