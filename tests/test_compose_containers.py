"""The docker-compose testbed in real containers (podman, podman-compose):
built from ``Dockerfile`` on base images made from Debian packages, brought
up from ``docker-compose.yml`` on a network of its own with no way out
(tests/container_testbed.py says what its copy changes). From the host: tasks
answered by agents in containers, heavy ones through the bridge to the cloud
workers, the actuator driven, and an agent container killed under load.

One testbed for the module (building and starting it takes most of the time).
Skipped where podman, podman-compose or mmdebstrap is missing."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from typing import Iterator

import orjson
import pytest

from fogmesh.devices.client import FogClient
from fogmesh.mqtt import MqttClient
from tests import standin_images
from tests.compose_testbed import REPO
from tests.container_testbed import ContainerTestbed
from tests.fire_and_forget import Device
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600), pytest.mark.xdist_group("compose"),
              pytest.mark.skipif(not all(shutil.which(t) for t in ("podman", "podman-compose", "mmdebstrap")),
                                 reason="podman, podman-compose and mmdebstrap are not installed")]

ROOT = "fog/v1"        # the testbed's


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerTestbed]:
    work = tmp_path_factory.mktemp("testbed")
    old = os.environ.get("CONTAINERS_CONF")
    os.environ["CONTAINERS_CONF"] = str(standin_images.containers_conf(work))
    bed = ContainerTestbed(REPO / "docker-compose.yml", work)
    try:
        standin_images.ensure(work)
        bed.up()
        bed.wait_healthy()
        yield bed
    finally:
        bed.down()
        if old is None:
            os.environ.pop("CONTAINERS_CONF", None)
        else:
            os.environ["CONTAINERS_CONF"] = old


class Presence:
    """What each agent of the testbed last said on its retained presence topic."""

    def __init__(self, url: str) -> None:
        self.states: dict[str, str] = {}
        self.online_at: dict[str, list[float]] = {}
        self.client = MqttClient(url, on_message=self._got)
        self.client.start(timeout=30)
        self.client.subscribe(f"{ROOT}/presence/+")

    def _got(self, m) -> None:
        if not m.payload:
            return
        p = orjson.loads(m.payload)
        agent = m.topic.rsplit("/", 1)[1]
        self.states[agent] = p.get("state")
        if p.get("state") == "online":
            self.online_at.setdefault(agent, []).append(time.monotonic())

    def stop(self) -> None:
        self.client.stop()


def test_the_agents_in_containers_announce_themselves(testbed: ContainerTestbed) -> None:
    presence = Presence(testbed.url("edge-broker"))
    try:
        wait_until(lambda: all(presence.states.get(a) == "online" for a in ("pi-1", "pi-2", "pi-3")),
                   timeout=60, what="pi-1, pi-2 and pi-3 online")
    finally:
        presence.stop()


def test_a_task_from_the_host_is_answered_by_an_agent_in_a_container(testbed: ContainerTestbed) -> None:
    with FogClient(testbed.url("edge-broker"), device="host") as client:
        r = client.submit("sum", {"values": [1, 2, 3]}, timeout=30)
    assert r.ok and r.value == 6 and r.worker in ("pi-1", "pi-2", "pi-3"), r


def test_a_heavy_task_goes_through_the_bridge_to_a_cloud_worker_container(testbed: ContainerTestbed) -> None:
    with FogClient(testbed.url("edge-broker"), device="host") as client:
        heavy = None
        for _ in range(20):     # agents learn of the bridge from its health messages
            heavy = client.send("sha256", {"size": 1000}, weight="heavy").result(timeout=30)
            if heavy.tier == "cloud":
                break
    assert heavy is not None and heavy.ok and heavy.tier == "cloud" and heavy.worker in ("cloud-1", "cloud-2"), heavy


def test_the_actuator_container_obeys_a_command_and_says_so(testbed: ContainerTestbed) -> None:
    url = testbed.url("edge-broker")
    replies: list[dict] = []
    got = threading.Event()
    reply_to = f"{ROOT}/replies/host-{uuid.uuid4().hex[:6]}"

    def on_reply(m) -> None:
        replies.append(orjson.loads(m.payload))
        got.set()
    sub = MqttClient(url, on_message=on_reply)
    sub.start(timeout=30)
    sub.subscribe(reply_to)
    try:
        sub.publish(f"{ROOT}/actuators/farm-relay/deterrent/set",
                    json.dumps({"op": "pulse", "ms": 500, "id": "cmd-1", "reply_to": reply_to}).encode(), qos=1)
        assert got.wait(30), "no reply from the actuator container"
    finally:
        sub.stop()
    r = replies[0]
    assert r["status"] == "ok" and r["tier"] == "device" and r["result"]["actuator"] == "deterrent", r


def test_an_agent_container_killed_under_load_loses_nothing_runs_nothing_twice_and_comes_back(
        testbed: ContainerTestbed) -> None:
    url = testbed.url("edge-broker")
    device = Device(url, ROOT)
    presence = Presence(url)
    restarts = testbed.restarts("pi-2")
    sending = threading.Thread(target=device.send, args=(400,), kwargs={"per_s": 40.0})
    sending.start()
    try:
        time.sleep(3.0)                          # under load: the kill lands mid-stream
        killed = time.monotonic()
        testbed.kill("pi-2")
        sending.join()
        lost, doubled = device.settle(timeout=120)     # settle() fails on a second run
        wait_until(lambda: testbed.restarts("pi-2") > restarts and
                   any(t > killed for t in presence.online_at.get("pi-2", [])),
                   timeout=60, what="pi-2 restarted by its restart policy and online again")
    finally:
        if sending.is_alive():
            sending.join()
        device.close()
        presence.stop()
    # An agent's answer and its task's acknowledgement leave in one socket write: a kill
    # loses neither alone, so no reply comes twice either.
    assert (lost, doubled) == ([], []), (lost[:5], doubled[:5], testbed.logs("pi-2")[-2000:])
