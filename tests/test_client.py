"""Tier 3: the device client, sync and asyncio, against real brokers."""

import asyncio

import pytest

from fogmesh.devices.client import FogClient, submit, submit_async
from fogmesh.errors import SubmitTimeout, TaskFailed


def test_one_shot_submit(broker, root, agents):
    agents("a1", broker.url, root)
    assert submit("sum", {"values": [2, 3]}, broker=broker.url, root=root).value == 5


def test_one_shot_submit_async(broker, root, agents):
    agents("a1", broker.url, root)
    result = asyncio.run(submit_async("echo", {"a": 1}, broker=broker.url, root=root))
    assert result.value == {"a": 1}


def test_many_async_submissions_share_one_client(broker, root, agents):
    agents("a1", broker.url, root)

    async def go():
        with FogClient(broker.url, root=root) as client:
            return await asyncio.gather(*(client.submit_async("echo", {"n": n}) for n in range(50)))

    assert [r.value["n"] for r in asyncio.run(go())] == list(range(50))


def test_no_agent_means_a_timeout_that_says_what_to_check(broker, root):
    with FogClient(broker.url, root=root) as client:
        with pytest.raises(SubmitTimeout, match="fogmesh agent"):
            client.submit("echo", {}, timeout=0.5)


def test_raise_on_error_raises_task_failed_with_the_code(broker, root, agents):
    agents("a1", broker.url, root)
    with FogClient(broker.url, root=root) as client:
        with pytest.raises(TaskFailed) as info:
            client.submit("nope", raise_on_error=True)
    assert info.value.code == "unknown_kind"


def test_the_same_id_twice_in_flight_is_refused_locally(broker, root):
    with FogClient(broker.url, root=root) as client:
        client.send("echo", task_id="same")
        with pytest.raises(ValueError, match="already in flight"):
            client.send("echo", task_id="same")


def test_a_task_lost_before_any_agent_listened_is_sent_again_and_answered_once(broker, root, agents):
    from listener import Listener
    watch = Listener(broker.url, f"{root}/tasks")
    with FogClient(broker.url, root=root, retry_s=0.5) as client:
        future = client.send("sum", {"values": [1, 2]}, task_id="lost-1")   # no agent yet: gone
        import orjson
        assert orjson.loads(watch.next(f"{root}/tasks"))["id"] == "lost-1"
        agents("a1", broker.url, root)
        assert future.result(timeout=15).value == 3
        resent = orjson.loads(watch.next(f"{root}/tasks"))
        assert (resent["id"], resent["attempt"]) == ("lost-1", 2)
        assert client.resent >= 1 and client.duplicates == 0
    watch.close()


def test_a_slow_task_sent_again_runs_once_and_its_answer_is_not_a_duplicate(broker, root, agents):
    agents("a1", broker.url, root)
    agents("a2", broker.url, root)
    with FogClient(broker.url, root=root, retry_s=0.3) as client:
        r = client.submit("sleep", {"ms": 1500}, task_id="slow-1", timeout=20)
        import time
        time.sleep(1.0)                                  # room for any late answer
        assert r.ok and client.resent >= 2
        assert client.duplicates == 0, list(client.duplicate_replies)
