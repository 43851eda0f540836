"""Tier 3 (real brokers): several agents, every task run by exactly one of them."""

import time

import pytest

from fogmesh.devices.client import FogClient
from tests.waiting import wait_until


def test_three_agents_answer_300_tasks_exactly_once(broker, root, agents):
    for i in range(3):
        agents(f"a{i}", broker.url, root)
    with FogClient(broker.url, root=root) as client:
        futures = {f"t{n}": client.send("sleep" if n % 3 == 0 else "echo",
                                        {"ms": 2} if n % 3 == 0 else {"n": n}, task_id=f"t{n}")
                   for n in range(300)}
        results = {tid: f.result(timeout=60) for tid, f in futures.items()}
        time.sleep(0.5)  # room for a duplicate to show up if there were one
        assert client.duplicates == 0 and client.late == 0
    assert all(r.ok for r in results.values())
    assert {r.reply.id for r in results.values()} == set(futures)
    workers = {r.worker for r in results.values()}
    assert len(workers) >= 2, f"all tasks ran on {workers}"


def test_the_reply_says_who_ran_it_and_how_long_it_took(broker, root, agents):
    agents("solo", broker.url, root)
    with FogClient(broker.url, root=root) as client:
        r = client.submit("sum", {"values": [1, 2, 3]})
    assert (r.value, r.worker, r.tier) == (6, "solo", "local")
    assert r.ms.total >= r.ms.run >= 0 and r.latency_ms > 0


@pytest.mark.timeout(60)
def test_an_answer_lost_with_its_connection_goes_out_when_the_broker_gives_the_task_back(broker, root, agents):
    """Shared dispatch: the broker never got the write holding an answer and
    its task's acknowledgement (the link died under it, as in a broker's
    shutdown), so it gives the task back (DUP) after the reconnect: the
    stored answer goes out then, once, and the task is not run again."""
    from tests.netcut import CuttableLink
    link = CuttableLink(broker.host, broker.port)
    try:
        agent = agents("w1", link.url, root, dispatch="shared")
        with FogClient(broker.url, root=root, retry_s=None) as device:   # fire and forget: no resubmission
            assert device.send("echo", {"warm": 1}).result(timeout=10).ok
            completed = agent.core.counters.completed
            link.hold()                              # what the agent writes from now on never arrives
            future = device.send("sum", {"values": [1, 2]})
            wait_until(lambda: agent.core.counters.completed > completed, timeout=10, what="the agent's answer")
            link.cut()
            reply = future.result(timeout=20)
            assert reply.ok and reply.value == 3
            wait_until(lambda: agent.core.counters.answered_again == 1, timeout=10, what="the answer sent again")
        assert device.duplicates == 0
        assert agent.core.counters.completed == completed + 1        # run once
    finally:
        link.close()
