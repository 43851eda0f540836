"""A real third-party client: MQTT.js (npm `mqtt`) submits tasks with one
publish each, over TCP and WebSockets, as MQTT 3.1.1 (v4) and MQTT 5, and
gets exactly one reply per task."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from fogmesh.broker.aedes import node_modules
from fogmesh.broker.embedded import EmbeddedBroker
from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.ports import free_port

pytestmark = pytest.mark.timeout(90)

SCRIPT = Path(__file__).with_name("mqttjs_submit.js")
TASKS = 20


def mqttjs(url: str, version: int, root: str) -> dict:
    assert shutil.which("node") and (node_modules() / "mqtt").is_dir(), \
        "MQTT.js is missing: python -m tests.prerequisites installs it"
    done = subprocess.run(["node", str(SCRIPT), url, str(version), root, str(TASKS)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "NODE_PATH": str(node_modules())})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def mosquitto_ws() -> Iterator[Mosquitto]:
    m = Mosquitto(ws_port=free_port()).start()
    yield m
    m.cleanup()


@pytest.fixture(scope="module")
def embedded_ws() -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(port=free_port(), ws_port=free_port()).start()
    yield b
    b.stop()


@pytest.mark.parametrize("transport", ["tcp", "ws"])
@pytest.mark.parametrize("version", [4, 5])
def test_mqttjs_on_mosquitto_gets_one_reply_per_task(mosquitto_ws, root, agents, transport, version):
    agents("js-m", mosquitto_ws.url, root)
    url = mosquitto_ws.url if transport == "tcp" else f"{mosquitto_ws.ws_url}/mqtt"
    result = mqttjs(url, version, root)
    assert result == {"answered": TASKS, "replies": TASKS, "ok": TASKS, "errors": []}


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_mqttjs_v4_on_the_embedded_broker_gets_one_reply_per_task(embedded_ws, root, agents, transport):
    agents("js-e", embedded_ws.url, root)
    url = embedded_ws.url if transport == "tcp" else f"ws://127.0.0.1:{embedded_ws.ws_port}/mqtt"
    result = mqttjs(url, 4, root)
    assert result == {"answered": TASKS, "replies": TASKS, "ok": TASKS, "errors": []}


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_mqttjs_v5_on_the_embedded_broker_is_refused_with_a_reason(embedded_ws, root, transport):
    url = embedded_ws.url if transport == "tcp" else f"ws://127.0.0.1:{embedded_ws.ws_port}/mqtt"
    result = mqttjs(url, 5, root)
    assert result["answered"] == 0 and any("protocol" in e.lower() for e in result["errors"]), result
