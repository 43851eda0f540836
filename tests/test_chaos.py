"""Tier 3 (real brokers): chaos. Three agents, 600 mixed tasks in flight, one
agent SIGKILLed (not restarted) and another's broker connection cut mid-run:
every task id gets exactly one reply; none lost, none doubled. Both shipped
brokers split tasks with shared subscriptions; claim dispatch (what agents
use on brokers without them) runs here too, forced."""

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import wait

import pytest
from netcut import CuttableLink

from fogmesh.devices.client import FogClient

MIX = [("echo", {"n": 1}, None), ("sleep", {"ms": 20}, None),
       ("sha256", {"data": "x", "rounds": 2000}, "medium"), ("stats", {"values": [1, 2, 3]}, None)]


def agent_process(url, root, agent_id, dispatch):
    return subprocess.Popen(
        [sys.executable, "-m", "fogmesh", "agent", "--id", agent_id, "--broker", url, "--root", root,
         "--concurrency", "2", "--presence-period", "0.5", "--takeover-grace", "1.5",
         "--dispatch", dispatch, "--log-level", "WARNING"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for_agents(client, n, timeout=30):
    deadline = time.monotonic() + timeout
    for i in range(n):
        while True:
            try:
                client.send("echo", {}, agent=f"c{i}").result(timeout=1)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, f"agent c{i} did not come up"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("dispatch", ["auto", "claim"])
def test_600_tasks_survive_a_sigkill_and_a_cut_connection(broker, root, dispatch):
    link = CuttableLink(broker.host, broker.port)
    procs = [agent_process(broker.url, root, "c0", dispatch), agent_process(broker.url, root, "c1", dispatch),
             agent_process(link.url, root, "c2", dispatch)]
    try:
        with FogClient(broker.url, root=root) as client:
            wait_for_agents(client, 3)
            time.sleep(1.0)                            # presence: everyone knows everyone
            futures = {}
            for n in range(600):
                kind, args, weight = MIX[n % len(MIX)]
                futures[f"chaos-{n}"] = client.send(kind, args, weight=weight, task_id=f"chaos-{n}")
                if n == 200:
                    procs[0].send_signal(signal.SIGKILL)   # c0 dies, mid-run, for good
                if n == 400:
                    link.cut()                             # c2 loses its broker connection
                time.sleep(0.004)   # paces the load: a task every 4 ms, not a wait
            wait(futures.values(), timeout=90)
            missing = sorted((tid for tid, f in futures.items() if not f.done()), key=lambda t: int(t[6:]))
            assert not missing, f"{len(missing)} task(s) got no reply: {missing[:30]}"
            results = {tid: f.result() for tid, f in futures.items()}
            time.sleep(3.0)                                # room for a late duplicate
            # The chaos tasks' duplicates: a start-up probe of wait_for_agents that
            # was slow to come back is re-sent by the client (same id, attempt 2)
            # and rightly answered again; it is not what this test is about.
            duplicates = [d for d in client.duplicate_replies if d.id in futures]
        assert set(results) == set(futures)                # none lost
        print(f"\n{broker.name} ({dispatch}): duplicates {[(d.id, d.worker) for d in duplicates]}")
        # None doubled: no task run by two agents...
        second_runs = [(d.id, results[d.id].worker, d.worker) for d in duplicates if d != results[d.id].reply]
        assert second_runs == []
        # ... and no answer delivered twice, but for the documented exceptions
        # (topics.md, "Limits: claim dispatch" and "Answers cut off"): an answer of
        # the agent that was killed or cut, made just before, may be delivered once
        # more, the same bytes, from those two agents only. Under claims by a
        # survivor that cannot know it got out, or by that agent winning it back;
        # under shared subscriptions by the cut agent c2 alone, when the cut took
        # only its answer's PUBACK (5 s after the reconnect, the task not given back,
        # it cannot tell that from a broker that lost the task).
        allowed = ("c0", "c2") if dispatch == "claim" else ("c2",)
        again = [(d.id, d.worker) for d in duplicates if d.worker not in allowed]
        assert again == []
        assert all(r.ok for r in results.values()), [r.error for r in results.values() if not r.ok][:3]
        survivors = {r.worker for r in results.values()} - {"c0"}
        assert {"c1", "c2"} <= survivors
    finally:
        for p in procs:
            p.kill()
            p.wait()
        link.close()
