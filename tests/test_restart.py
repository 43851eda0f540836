"""Tier 3 (real brokers): an agent's persistent session keeps tasks while it is down."""

import os
import signal
import subprocess
import sys
import time

from fogmesh.devices.client import FogClient
from fogmesh.edge_agent.agent import Agent
from fogmesh.edge_agent.options import AgentOptions


def test_tasks_sent_while_the_agent_is_down_run_after_its_restart(broker, root):
    Agent("a1", broker.url, AgentOptions(root=root, concurrency=2)).start().stop()
    with FogClient(broker.url, root=root) as client:
        futures = [client.send("echo", {"n": n}) for n in range(20)]
        time.sleep(0.3)        # room for an answer that must not come: no agent runs
        assert not any(f.done() for f in futures)
        agent = Agent("a1", broker.url, AgentOptions(root=root, concurrency=2)).start()
        try:
            results = [f.result(timeout=30) for f in futures]
            time.sleep(0.3)    # room for a late duplicate: an absence cannot be awaited
        finally:
            agent.stop()
        assert client.duplicates == 0
    assert [r.value for r in results] == [{"n": n} for n in range(20)]


def agent_process(broker, root, agent_id):
    return subprocess.Popen([sys.executable, "-m", "fogmesh", "agent", "--id", agent_id,
                             "--broker", broker.url, "--root", root, "--log-level", "WARNING"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_online(client: FogClient, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return client.submit("echo", {}, timeout=2)
        except TimeoutError:
            continue
    raise AssertionError("agent did not come online")


def test_an_agent_killed_with_sigkill_gets_its_tasks_back_on_restart(broker, root):
    """On mosquitto the broker redelivers; on amqtt (which forgets unacknowledged
    messages) the agent's journal brings them back."""
    proc = agent_process(broker, root, "k1")
    try:
        with FogClient(broker.url, root=root) as client:
            wait_online(client)
            futures = [client.send("sleep", {"ms": 100}) for _ in range(10)]
            time.sleep(0.25)                 # some done, some running, some queued
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc = agent_process(broker, root, "k1")
            results = [f.result(timeout=15) for f in futures]
            time.sleep(0.5)    # room for a late duplicate: an absence cannot be awaited
            assert client.duplicates == 0
        assert all(r.ok for r in results)
    finally:
        proc.kill()
        proc.wait()


def test_once_stop_returns_the_broker_holds_the_agents_offline_presence(broker, root):
    """An agent started again with the same id at once reads the retained
    presence first: it must say offline, or the newcomer sees its own id
    online and refuses to start."""
    import queue

    from fogmesh import codec
    from fogmesh.mqtt import MqttClient
    from fogmesh.topics import Topics

    for _ in range(3):
        Agent("a1", broker.url, AgentOptions(root=root, concurrency=1)).start().stop()
        seen: queue.Queue = queue.Queue()
        reader = MqttClient(broker.url, on_message=lambda m: seen.put(codec.decode(m.payload)))
        reader.start()
        try:
            reader.subscribe(Topics(root).presence("a1"), timeout=10)
            assert seen.get(timeout=10)["state"] == "offline"
        finally:
            reader.stop()
