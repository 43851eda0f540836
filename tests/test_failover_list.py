"""Tier 3 (real brokers): a failover list (``mqtt://host1,host2``) whose first
node is down. Found from outside (issue #36 audit): an agent given such a
list connected its main clients to the second node, then its start-up probe
(a client that does not reconnect) tried the first node once, never the
next, and the agent exited 2 after 30 s."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fogmesh.broker.ports import free_port
from fogmesh.broker.processes import stop_processes
from fogmesh.devices.client import FogClient
from fogmesh.mqtt import MqttClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def listing(broker):
    return f"mqtt://127.0.0.1:{free_port()},{broker.host}:{broker.port}"    # the first node down


def test_a_client_that_does_not_reconnect_tries_every_node_of_the_list_once(broker):
    c = MqttClient(listing(broker), reconnect=False)
    c.start(timeout=10)
    c.stop()


def test_an_agent_whose_first_node_is_down_starts_on_the_next_and_answers(broker, root):
    agent = subprocess.Popen([sys.executable, "-m", "fogmesh", "agent", "--id", "f1", "--broker", listing(broker),
                              "--root", root, "--log-level", "WARNING"],
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        with FogClient(broker.url, root=root) as client:
            assert client.send("echo", {"n": 1}, agent="f1").result(timeout=30).worker == "f1"
        assert agent.poll() is None
    finally:
        stop_processes([agent])
