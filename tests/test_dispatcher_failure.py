"""A bug in the agent's dispatcher (an illegal state move, say) must not leave
an agent connected with its tasks frozen: it announces itself offline, so
peers take its work over, and stops with exit status 70 (restart it)."""

from __future__ import annotations

import orjson
import pytest

from fogmesh.edge_agent.events import MessageIn
from fogmesh.errors import IllegalTransition
from fogmesh.topics import Topics
from tests.listener import Listener

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_a_failing_dispatcher_takes_the_agent_offline_at_once(amqtt_broker, root, agents, monkeypatch):
    t = Topics(root)
    agent = agents("crashy", amqtt_broker.url, root)
    watch = Listener(amqtt_broker.url, t.presence("crashy"))
    try:
        assert orjson.loads(watch.next(t.presence("crashy")))["state"] == "online"

        handle = agent.core.handle

        def broken(event, now):
            if isinstance(event, MessageIn) and event.topic == t.tasks:
                raise IllegalTransition("task 't1': done -> running is not a legal move")
            return handle(event, now)
        monkeypatch.setattr(agent.core, "handle", broken)
        watch.publish(t.tasks, {"id": "t1", "kind": "echo", "reply_to": f"{root}/replies/x"})
        while orjson.loads(watch.next(t.presence("crashy")))["state"] != "offline":
            pass
        assert agent.wait(10)
        assert agent.fatal_status == 70 and "IllegalTransition" in (agent.fatal or "")
    finally:
        watch.client.stop()
