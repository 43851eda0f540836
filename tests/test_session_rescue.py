"""Rescuing a dead agent's persistent session (edge_agent/session_rescue.py),
on real brokers: the rescuer takes what the session kept, unsubscribes it
from the task topics, and leaves, so new tasks go to the live agents' own
sessions, not to a session nobody reads (topics.md, "When agents die").
Plain MQTT clients stand in for the agents; the broker and paho are real."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter

import pytest

from fogmesh.edge_agent.session_rescue import RescueSession
from fogmesh.mqtt import BrokerUrl, Message, MqttClient
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


class Device:
    """Publishes task ids 0, 1, 2, ... to the task topic, at a steady pace from
    a thread (the site's load) or a batch at once."""

    def __init__(self, url: str, topic: str) -> None:
        self.topic, self.sent = topic, 0
        self.client = MqttClient(url)
        self.client.start()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self, count: int) -> None:
        for _ in range(count):
            self.client.publish(self.topic, json.dumps({"id": str(self.sent)}).encode()).wait(5)
            self.sent += 1

    def steady(self, every_s: float) -> None:
        def run() -> None:
            while not self._stop.wait(every_s):   # the pace of the load, not a wait for an event
                self.publish(1)
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.client.stop()


def ids(messages: list[Message]) -> list[str]:
    return [json.loads(m.payload)["id"] for m in messages]


@pytest.mark.parametrize("backlog", [0, 300])
def test_a_rescue_under_load_unsubscribes_the_dead_session_and_new_tasks_go_to_the_live_agents(
        broker, root, backlog):
    # The audit: under 20 tasks/s the dead session kept getting its share, never went quiet, and the
    # rescuer held it (and its share of new tasks) until the dead agent came back.
    tasks = f"{root}/tasks"
    shared = f"$share/agents/{tasks}"
    dead_id = f"fa-dead-{root[-8:]}"
    dead = MqttClient(broker.url, client_id=dead_id, clean_session=False)
    dead.start()
    dead.subscribe(shared)
    dead.stop()                                   # a power cut: its session and its turn in the group stay
    live_got: list[Message] = []
    live = MqttClient(broker.url, client_id=f"fa-live-{root[-8:]}", on_message=live_got.append)
    live.start()
    live.subscribe(shared)
    device = Device(broker.url, tasks)
    rescued: list[Message] = []

    def deliver(token) -> None:
        rescued.append(token.message)
        token.session.ack(token)
    rescue = RescueSession(BrokerUrl.parse(broker.url), client_id=dead_id, agent="dead", unsubscribe=[shared],
                           deliver=deliver, log=logging.getLogger("test"), quiet_s=0.3)
    try:
        device.publish(backlog)                   # what the dead session queued while its box was off
        device.steady(0.02)                       # and the load goes on: 50 tasks/s
        wait_until(lambda: device.sent >= backlog + 20, timeout=5, what="the load under way")
        rescue.start()
        rescue._thread.join(5)
        assert not rescue._thread.is_alive(), "the rescuer still holds the dead agent's session"
        after = device.sent
        wait_until(lambda: device.sent >= after + 40, timeout=5, what="tasks sent after the rescue")
    finally:
        device.stop()
        rescue.stop()
    sent = device.sent
    wait_until(lambda: {str(n) for n in range(after, sent)} <= set(ids(live_got)), timeout=5,
               what="every task sent after the rescue at the live agent (none queued in the dead one's session)")
    wait_until(lambda: len(live_got) + len(rescued) >= sent, timeout=5, what="every task delivered")
    live.stop()
    seen = Counter(ids(live_got) + ids(rescued))
    assert set(seen) == {str(n) for n in range(sent)}, "a task was lost"
    assert max(seen.values()) == 1, "a task was delivered twice"
