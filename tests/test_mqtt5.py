"""MQTT 5 request/response on mosquitto: agents started with `--mqtt auto`
speak MQTT 5 where the broker does, so a task without `reply_to` is answered on its Response Topic, its
Correlation Data and User Properties come back on the reply (also from the
cloud, through the bridge), and its Message Expiry becomes its deadline.
The JSON contract is unchanged for 3.1.1 clients."""

from __future__ import annotations

import queue
import shutil
import subprocess
import uuid

import orjson
import pytest

from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.cloud_bridge.bridge import Bridge
from fogmesh.devices.client import FogClient
from fogmesh.edge_agent.placement import LocalPolicy
from fogmesh.mqtt import Message, MqttClient
from fogmesh.properties import MessageProperties
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


class Requester:
    """A plain MQTT 5 client, as an app using request/response would be."""

    def __init__(self, url: str, response_topic: str) -> None:
        self.got: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.response_topic = response_topic
        self.client = MqttClient(url, mqtt5=True, on_message=self.got.put)
        self.client.start()
        self.client.subscribe(response_topic)

    def request(self, topic: str, task: dict, **props: object) -> None:
        self.client.publish(topic, orjson.dumps(task),
                            properties=MessageProperties(response_topic=self.response_topic, **props))  # type: ignore[arg-type]

    def next(self, timeout: float = 15.0) -> Message:
        return self.got.get(timeout=timeout)

    def close(self) -> None:
        self.client.stop()


def test_agents_on_auto_speak_mqtt5_on_mosquitto_and_311_on_the_embedded_broker(broker, root, agents):
    agent = agents("v-1", broker.url, root, mqtt="auto")
    assert agent.client.mqtt5 is (broker.name == "mosquitto")


def test_agents_speak_mqtt5_by_default_where_the_broker_does(mosquitto_broker, root, agents):
    assert agents("v-0", mosquitto_broker.url, root).client.mqtt5 is True


def test_agents_told_311_speak_311(mosquitto_broker, root, agents):
    assert agents("v-3", mosquitto_broker.url, root, mqtt="3.1.1").client.mqtt5 is False


def test_mosquitto_rr_gets_its_reply_without_a_reply_to_field(mosquitto_broker, root, agents):
    agents("rr-1", mosquitto_broker.url, root)          # default flags: out of the box
    done = subprocess.run([shutil.which("mosquitto_rr") or "mosquitto_rr", "-p", str(mosquitto_broker.port),
                           "-t", f"{root}/tasks", "-e", f"{root}/rr-reply", "-W", "10",
                           "-m", '{"id": "rr-t1", "kind": "sum", "args": {"values": [1, 2]}}'],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    reply = orjson.loads(done.stdout)
    assert reply["id"] == "rr-t1" and reply["result"] == 3


def test_correlation_data_and_user_properties_come_back_on_the_reply(mosquitto_broker, root, agents):
    agents("rr-2", mosquitto_broker.url, root, mqtt="auto")
    req = Requester(mosquitto_broker.url, f"{root}/app/replies")
    try:
        req.request(f"{root}/tasks", {"id": "c-1", "kind": "echo", "args": {"x": 1}},
                    correlation_data=b"\x00\xffreq-7", user_properties=(("traceparent", "00-4bf9-01"),))
        reply = req.next()
    finally:
        req.close()
    assert reply.topic == f"{root}/app/replies"
    assert orjson.loads(reply.payload)["result"] == {"x": 1}
    assert reply.properties == MessageProperties(correlation_data=b"\x00\xffreq-7",
                                                 user_properties=(("traceparent", "00-4bf9-01"),))


def test_a_311_client_sees_the_json_contract_unchanged(mosquitto_broker, root, agents):
    agents("rr-3", mosquitto_broker.url, root, mqtt="auto")
    with FogClient(mosquitto_broker.url, root=root) as client:
        r = client.submit("echo", {"y": 2}, timeout=10)
    assert r.ok and r.value == {"y": 2}


def test_a_task_that_expires_before_it_can_start_is_answered_deadline_exceeded(mosquitto_broker, root, agents):
    agents("rr-4", mosquitto_broker.url, root, concurrency=1, mqtt="auto")
    req = Requester(mosquitto_broker.url, f"{root}/app/replies")
    try:
        req.request(f"{root}/tasks", {"id": "busy", "kind": "sleep", "args": {"ms": 2500}})
        for n in range(3):
            req.request(f"{root}/tasks", {"id": f"exp-{n}", "kind": "sleep", "args": {"ms": 1}}, expiry_s=1)
        replies = {}
        while len(replies) < 4:
            body = orjson.loads(req.next(timeout=20).payload)
            replies[body["id"]] = body
    finally:
        req.close()
    assert replies["busy"]["status"] == "ok"
    for n in range(3):
        assert replies[f"exp-{n}"]["status"] == "error"
        assert replies[f"exp-{n}"]["error"]["code"] == "deadline_exceeded"


def test_properties_come_back_from_the_cloud_through_the_bridge(root, agents, tmp_path):
    edge = Mosquitto(workdir=tmp_path / "edge").start()
    cloud = Mosquitto(workdir=tmp_path / "cloud").start()
    cloud_root = f"cloud/{uuid.uuid4().hex[:8]}"
    bridge = None
    try:
        agent = agents("edge-5", edge.url, root, presence_period=0.3, mqtt="auto")
        bridge = Bridge(site="farm", edge=edge.url, cloud=cloud.url, root=root, cloud_root=cloud_root,
                        store_path=tmp_path / "outbox.db", health_period=0.3).start()
        agents("cw-5", cloud.url, cloud_root, policy=LocalPolicy())
        wait_until(lambda: agent.core.offers.cloud_for("sha256", agent.clock(), exclude=set()) is not None,
                   what="the bridge's health")
        req = Requester(edge.url, f"{root}/app/replies")
        try:
            req.request(f"{root}/tasks", {"id": "heavy-1", "kind": "sha256", "weight": "heavy",
                                          "args": {"data": "x", "rounds": 10}},
                        correlation_data=b"cloud-7", user_properties=(("site", "farm"),))
            reply = req.next(timeout=30)
        finally:
            req.close()
        body = orjson.loads(reply.payload)
        assert body["status"] == "ok" and body["tier"] == "cloud"
        assert reply.properties == MessageProperties(correlation_data=b"cloud-7", user_properties=(("site", "farm"),))
    finally:
        if bridge is not None:
            bridge.stop()
        edge.cleanup()
        cloud.cleanup()
