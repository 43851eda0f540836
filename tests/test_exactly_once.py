"""Tier 3 (real brokers): several agents, every task run by exactly one of them."""

import time

from fogmesh.devices.client import FogClient


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
