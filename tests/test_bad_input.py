"""Tier 3 (real brokers): bad input gets a clear error reply or a dead letter,
and the agent keeps running."""

import threading

import orjson
import pytest

from fogmesh.devices.client import FogClient
from fogmesh.messages import Limits
from fogmesh.mqtt import MqttClient
from fogmesh.registry import Registry, TaskKind
from fogmesh.topics import Topics


def raises(args):
    raise RuntimeError("handler exploded")


def hangs(args):
    import time
    time.sleep(3600)          # the hung handler itself


def crashes(args):
    import os
    os._exit(3)


class Inbox:
    """A raw MQTT client that publishes garbage and collects what comes back."""

    def __init__(self, url, root):
        self.topics = Topics(root)
        self.reply_to = f"{root}/replies/inbox"
        self.messages: list[tuple[str, dict]] = []
        self.arrived = threading.Condition()
        self.client = MqttClient(url, on_message=self._on)
        self.client.start()
        self.client.subscribe(self.reply_to)
        self.client.subscribe(self.topics.errors)

    def _on(self, m):
        if m.topic not in (self.reply_to, self.topics.errors):
            return
        with self.arrived:
            self.messages.append((m.topic, orjson.loads(m.payload)))
            self.arrived.notify_all()

    def send(self, payload: bytes):
        self.client.publish(self.topics.tasks, payload)

    def task(self, **fields):
        body = {"id": "bad-1", "kind": "echo", "reply_to": self.reply_to}
        body.update(fields)
        self.send(orjson.dumps({k: v for k, v in body.items() if v is not None}))

    def next(self, timeout=15):
        with self.arrived:
            assert self.arrived.wait_for(lambda: self.messages, timeout), "nothing came back"
            return self.messages.pop(0)


@pytest.fixture
def fabric(broker, root, agents):
    registry = Registry.from_entry_points().with_kinds(
        TaskKind("raises", raises), TaskKind("hangs", hangs, timeout_s=1.0),
        TaskKind("crashes", crashes))
    agents("a1", broker.url, root, registry=registry, limits=Limits(max_payload=4096))
    inbox = Inbox(broker.url, root)
    yield inbox
    # whatever came before, the agent still answers
    with FogClient(broker.url, root=root) as client:
        assert client.submit("echo", {"still": "alive"}, timeout=15).value == {"still": "alive"}
    inbox.client.stop()


def test_malformed_json_is_dead_lettered(fabric):
    fabric.send(b'{"id": "x", "kind": ')
    topic, letter = fabric.next()
    assert topic == fabric.topics.errors and letter["error"]["code"] == "bad_json"
    assert letter["excerpt"].startswith('{"id"') and letter["agent"] == "a1"


def test_non_object_json_is_dead_lettered(fabric):
    fabric.send(b'[1, 2, 3]')
    topic, letter = fabric.next()
    assert topic == fabric.topics.errors and letter["error"]["code"] == "not_object"


def test_missing_reply_to_is_dead_lettered_with_the_task_id(fabric):
    fabric.send(b'{"id": "no-reply", "kind": "echo"}')
    topic, letter = fabric.next()
    assert (topic, letter["id"], letter["error"]["code"]) == (fabric.topics.errors, "no-reply", "missing_field")


def test_missing_kind_is_answered_on_reply_to(fabric):
    fabric.send(orjson.dumps({"id": "k", "reply_to": fabric.reply_to}))
    topic, reply = fabric.next()
    assert (topic, reply["status"], reply["error"]["code"]) == (fabric.reply_to, "error", "missing_field")


def test_oversize_id_is_a_bad_field(fabric):
    fabric.task(id="x" * 500)
    _, reply = fabric.next()
    assert reply["error"]["code"] == "bad_field"


def test_oversize_payload_is_answered_too_large(fabric):
    fabric.task(args={"blob": "x" * 10_000})
    _, reply = fabric.next()
    assert (reply["id"], reply["error"]["code"]) == ("bad-1", "too_large")


def test_unknown_kind_is_answered(fabric):
    fabric.task(kind="teleport")
    _, reply = fabric.next()
    assert reply["error"]["code"] == "unknown_kind"


def test_a_handler_that_raises_is_answered_handler_error(fabric):
    fabric.task(kind="raises")
    _, reply = fabric.next()
    assert reply["error"] == {"code": "handler_error", "message": "RuntimeError: handler exploded"}


def test_bad_args_are_answered_bad_args(fabric):
    fabric.task(kind="sum", args={"values": "nope"})
    _, reply = fabric.next()
    assert reply["error"]["code"] == "bad_args"


def test_a_handler_that_hangs_is_killed_at_its_timeout(fabric):
    fabric.task(kind="hangs")
    _, reply = fabric.next()
    assert reply["error"]["code"] == "timeout" and reply["worker"] == "a1"


def test_a_worker_process_that_dies_is_answered_worker_lost(fabric):
    fabric.task(kind="crashes")
    _, reply = fabric.next()
    assert reply["error"]["code"] == "worker_lost"
