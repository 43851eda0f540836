"""Tier 3: the cloud bridge between two real mosquitto brokers (edge and cloud)."""

import time

import orjson
import pytest
from listener import Listener
from waiting import wait_until

from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.cloud_bridge.bridge import Bridge
from fogmesh.devices.client import FogClient
from fogmesh.edge_agent.placement import LocalPolicy
from fogmesh.mqtt import MqttClient

HEAVY = {"data": "frame", "rounds": 200}


@pytest.fixture
def edge(tmp_path):
    m = Mosquitto(workdir=tmp_path / "edge").start()
    yield m
    m.cleanup()


@pytest.fixture
def cloud(tmp_path):
    m = Mosquitto(workdir=tmp_path / "cloud").start()
    yield m
    m.cleanup()


@pytest.fixture
def stack(edge, cloud, root, tmp_path, agents):
    """An edge agent, a bridge, and a helper to add cloud workers."""
    cloud_root = f"cloud/{root.rsplit('/', 1)[1]}"
    started = []

    def bridge(**options):
        b = Bridge(site="farm", edge=edge.url, cloud=cloud.url, root=root, cloud_root=cloud_root,
                   store_path=tmp_path / "outbox.db", health_period=0.3, resend_after_s=5.0,
                   **options).start()
        started.append(b)
        return b

    def worker(worker_id):
        return agents(worker_id, cloud.url, cloud_root, policy=LocalPolicy())

    agent = agents("edge-1", edge.url, root, presence_period=0.3)
    yield agent, bridge, worker
    for b in started:
        b.stop()


def bridge_health(url: str, root: str) -> dict:
    """The bridge's retained health, as a fresh subscriber reads it."""
    listener = Listener(url, f"{root}/bridge/farm")
    try:
        return orjson.loads(listener.next(f"{root}/bridge/farm", timeout=5))
    finally:
        listener.client.stop()


def bridge_link_up(url: str, root: str) -> bool:
    return bridge_health(url, root).get("link") == "up"


def bridge_backlog(url: str, root: str) -> int:
    return int(bridge_health(url, root).get("backlog") or 0)


def sees_bridge(agent):
    return lambda: agent.core.offers.cloud_for("sha256", agent.clock(), exclude=set()) is not None


def test_a_heavy_task_goes_to_the_cloud_and_its_answer_comes_back(edge, root, stack):
    agent, bridge, worker = stack
    bridge()
    worker("w1")
    wait_until(sees_bridge(agent), what="the bridge's health")
    with FogClient(edge.url, root=root) as client:
        r = client.submit("sha256", HEAVY, weight="heavy", timeout=20)
    assert r.ok and r.tier == "cloud" and r.worker == "w1"


def test_two_cloud_workers_share_400_tasks_each_once(edge, root, stack):
    agent, bridge, worker = stack
    bridge()
    worker("w1"), worker("w2")
    wait_until(sees_bridge(agent), what="the bridge's health")
    with FogClient(edge.url, root=root) as client:
        futures = [client.send("sha256", HEAVY, weight="heavy") for _ in range(400)]
        results = [f.result(timeout=60) for f in futures]
        time.sleep(0.5)        # room for a late duplicate: an absence cannot be awaited
        assert client.duplicates == 0
    import collections
    assert all(r.ok and r.tier == "cloud" for r in results), (collections.Counter(
        (r.tier, r.worker, r.error) for r in results), agent.core.counters)
    workers = {r.worker for r in results}
    assert workers == {"w1", "w2"}


def test_300_tasks_wait_out_a_cloud_outage_and_none_is_doubled(edge, cloud, root, stack):
    agent, bridge, worker = stack
    b = bridge()
    worker("w1")
    wait_until(sees_bridge(agent), what="the bridge's health")
    cloud.stop()
    wait_until(lambda: not b.uplink.up, what="the bridge to see the outage")
    with FogClient(edge.url, root=root) as client:
        futures = [client.send("sha256", HEAVY, weight="heavy") for _ in range(300)]
        # the agent holds as many as the edge broker's in-flight window lets it
        # (it acknowledges a task only once answered); the rest wait at the broker
        wait_until(lambda: b.outbox.rows >= 50, what="tasks in the outbox")
        time.sleep(0.5)        # room for an answer that must not come while the cloud is down
        assert not any(f.done() for f in futures)
        cloud.start()
        results = [f.result(timeout=60) for f in futures]
        time.sleep(0.5)        # room for a late duplicate: an absence cannot be awaited
        assert client.duplicates == 0
    assert len({r.reply.id for r in results}) == 300 and all(r.tier == "cloud" for r in results)
    assert b.outbox.rows == 0


def test_a_full_outbox_gives_tasks_back_to_the_fog(edge, cloud, root, stack):
    agent, bridge, worker = stack
    b = bridge(max_rows=5)
    wait_until(sees_bridge(agent), what="the bridge's health")
    cloud.stop()
    wait_until(lambda: not b.uplink.up, what="the outage")
    with FogClient(edge.url, root=root) as client:
        futures = [client.send("sha256", HEAVY, weight="heavy") for _ in range(20)]
        fog = [f.result(timeout=30) for f in futures[5:]]
    assert {r.tier for r in fog} == {"local"} and b.outbox.rows == 5


def test_with_fallback_error_a_full_outbox_answers_busy(edge, cloud, root, stack):
    agent, bridge, worker = stack
    b = bridge(max_rows=2, fallback="error")
    wait_until(sees_bridge(agent), what="the bridge's health")
    cloud.stop()
    wait_until(lambda: not b.uplink.up, what="the outage")
    with FogClient(edge.url, root=root) as client:
        futures = [client.send("sha256", HEAVY, weight="heavy") for _ in range(5)]
        errors = [f.result(timeout=30) for f in futures[2:]]
    assert {(r.reply.status, r.error.code, r.tier) for r in errors} == {("error", "busy", "cloud")}


def test_a_deadline_the_outage_cannot_meet_runs_in_the_fog(edge, cloud, root, stack):
    agent, bridge, worker = stack
    b = bridge()
    wait_until(sees_bridge(agent), what="the bridge's health")
    cloud.stop()
    wait_until(lambda: not b.uplink.up, what="the outage")
    with FogClient(edge.url, root=root) as client:
        r = client.submit("sha256", HEAVY, weight="heavy", deadline_ms=5000, timeout=20)
    assert r.ok and r.tier == "local"


def test_bridge_health_is_retained_and_says_link_and_backlog(edge, cloud, root, stack):
    agent, bridge, worker = stack
    bridge()
    seen = []
    watcher = MqttClient(edge.url, on_message=lambda m: seen.append(orjson.loads(m.payload)))
    watcher.start()
    watcher.subscribe(f"{root}/bridge/farm")
    wait_until(lambda: seen and seen[-1]["link"] == "up", what="link up")
    cloud.stop()
    wait_until(lambda: seen[-1]["link"] == "down", what="link down")
    assert {"site", "state", "link", "backlog", "oldest_age_s"} <= set(seen[-1])
    watcher.stop()


def test_sensor_readings_go_up_as_window_summaries_with_fewer_bytes(edge, cloud, root, stack):
    agent, bridge, worker = stack
    cloud_root = f"cloud/{root.rsplit('/', 1)[1]}"
    b = bridge(aggregate=((f"{root}/sensors/+/temperature", 1.0),))
    summaries = []
    up = MqttClient(cloud.url, on_message=lambda m: summaries.append(orjson.loads(m.payload)))
    up.start()
    up.subscribe(f"{cloud_root}/sites/farm/sensors/#")
    pub = MqttClient(edge.url)
    pub.start()
    values = [20.0 + (i % 5) for i in range(50)]
    for v in values:
        pub.publish(f"{root}/sensors/pi-1/temperature", orjson.dumps({"value": v, "unit": "C"}))
    wait_until(lambda: summaries, timeout=10, what="a summary upstream")
    s = summaries[0]
    assert s["count"] == 50 and s["mean"] == pytest.approx(sum(values) / 50)
    assert (s["min"], s["max"]) == (20.0, 24.0)
    assert b.aggregator.bytes_in > 5 * b.aggregator.bytes_up > 0      # 50 readings, one summary
    pub.stop()
    up.stop()


def test_actuation_commands_come_down_from_the_cloud(edge, cloud, root, stack):
    agent, bridge, worker = stack
    cloud_root = f"cloud/{root.rsplit('/', 1)[1]}"
    bridge()
    got = []
    listener = MqttClient(edge.url, on_message=lambda m: got.append((m.topic, m.payload)))
    listener.start()
    for f in (f"{root}/actuators/#", f"{root}/agents/+/control", f"{root}/deploy/#"):
        listener.subscribe(f)
    sender = MqttClient(cloud.url)
    sender.start()
    wait_until(lambda: sender.connected.is_set())
    wait_until(lambda: bridge_link_up(edge.url, root), what="the bridge's uplink")
    # Only actuator commands come down (issue #37): not a drain, not a desired state.
    sender.publish(f"{cloud_root}/sites/farm/down/agents/edge-1/control", b'{"op": "drain"}')
    sender.publish(f"{cloud_root}/sites/farm/down/deploy/desired/all", b'{"signed": {}}')
    sender.publish(f"{cloud_root}/sites/farm/down/actuators/gate-1/relay/set", b'{"value": "on"}')
    wait_until(lambda: got, what="the command at the edge")
    assert got == [(f"{root}/actuators/gate-1/relay/set", b'{"value": "on"}')]
    listener.stop()
    sender.stop()


def bridge_process(edge, cloud, root, store):
    import os
    import subprocess
    import sys
    return subprocess.Popen(
        [sys.executable, "-m", "fogmesh", "bridge", "--site", "farm", "--edge", edge.url, "--cloud",
         cloud.url, "--root", root, "--cloud-root", f"cloud/{root.rsplit('/', 1)[1]}", "--store",
         str(store), "--resend-after", "5", "--log-level", "WARNING"], env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.timeout(120)
def test_a_bridge_killed_mid_replay_and_restarted_still_answers_each_task_once(
        edge, cloud, root, tmp_path, agents):
    import signal
    cloud_root = f"cloud/{root.rsplit('/', 1)[1]}"
    agent = agents("edge-1", edge.url, root, presence_period=0.3)
    agents("w1", cloud.url, cloud_root, policy=LocalPolicy())
    proc = bridge_process(edge, cloud, root, tmp_path / "outbox.db")
    try:
        wait_until(sees_bridge(agent), what="the bridge's health")
        cloud.stop()
        wait_until(lambda: not bridge_link_up(edge.url, root), what="the bridge's uplink down")
        with FogClient(edge.url, root=root) as client:
            futures = [client.send("sha256", {"data": "f", "rounds": 20000}, weight="heavy")
                       for _ in range(300)]
            wait_until(lambda: bridge_backlog(edge.url, root) >= 50, timeout=30, what="a backlog in the outbox")
            cloud.start()
            wait_until(lambda: sum(f.done() for f in futures) >= 5, timeout=30, what="replay to start")
            proc.send_signal(signal.SIGKILL)          # mid-replay
            proc.wait()
            done_at_kill = sum(f.done() for f in futures)
            proc = bridge_process(edge, cloud, root, tmp_path / "outbox.db")
            results = [f.result(timeout=90) for f in futures]
            time.sleep(1.0)    # room for a late duplicate: an absence cannot be awaited
            assert client.duplicates == 0
        assert done_at_kill < 300
        assert len({r.reply.id for r in results}) == 300 and all(r.ok for r in results)
    finally:
        proc.kill()
        proc.wait()


def test_a_queued_task_whose_deadline_passes_during_an_outage_goes_back(tmp_path):
    b = Bridge(site="farm", edge="mqtt://127.0.0.1:1", cloud="mqtt://127.0.0.1:1", root="t/x",
               store_path=tmp_path / "o.db", wall_clock=lambda: 100.0)
    sent = []
    b.edge.publish = lambda topic, payload, **kw: sent.append((topic, orjson.loads(payload)))
    b.outbox.add(task_id="a1/t1", origin="a1", offer="a1:t1:1", payload=b"{}", created=90.0, deadline=99.0)
    b.outbox.add(task_id="a1/t2", origin="a1", offer="a1:t2:1", payload=b"{}", created=90.0, deadline=None)
    b._expire_deadlines(100.0)
    assert b.outbox.rows == 1 and b.outbox.get("a1/t1") is None
    assert sent == [("t/x/agents/a1/inbox", {"op": "reject", "offer": "a1:t1:1", "task": "t1",
                                             "agent": "bridge-farm", "reason": "deadline"})]
    b.outbox.close()
