"""Operations: the fleet view behind ``fogmesh monitor`` (pure, then live with
``--once --json`` on real brokers) and the agent's Prometheus endpoint."""

import json
import subprocess
import sys
import urllib.request

import pytest

from fogmesh.announcements import Battery, Presence
from fogmesh.broker.ports import free_port
from fogmesh.devices.client import FogClient
from fogmesh.fleet import FleetView
from fogmesh.topics import Topics

T = Topics("t")


def presence(agent, ts, done, **kw):
    return Presence(agent=agent, state=kw.pop("state", "online"), ts=ts, done=done, capacity=2, **kw).encode()


def test_the_fleet_view_turns_done_counts_into_tasks_per_second():
    view = FleetView(T)
    view.on_message(T.presence("pi-1"), presence("pi-1", 100.0, 10, battery=Battery(64.0, False)))
    view.on_message(T.presence("pi-1"), presence("pi-1", 105.0, 60))
    (row,) = view.rows(106.0)["agents"]
    assert row["tasks_per_s"] == 10.0 and row["state"] == "online" and row["done"] == 60


def test_an_agent_silent_for_one_and_a_half_periods_shows_as_stale_three_as_offline_and_a_will_as_offline():
    view = FleetView(T)                                        # the dashboard's rule: Presence.state_at
    view.on_message(T.presence("a"), presence("a", 0.0, 0))
    view.on_message(T.presence("b"), presence("b", 0.0, 0, state="offline"))
    assert {r["agent"]: r["state"] for r in view.rows(9.0)["agents"]} == {"a": "stale", "b": "offline"}
    assert {r["agent"]: r["state"] for r in view.rows(60.0)["agents"]} == {"a": "offline", "b": "offline"}


def test_bridges_and_pipelines_are_shown_and_garbage_is_ignored():
    view = FleetView(T)
    view.on_message("t/bridge/farm", b'{"state": "online", "link": "down", "backlog": 42, "oldest_age_s": 3.5}')
    view.on_message("t/pipelines/pi-1/deter", b'{"frames": 10, "processed": 8, "skipped": 2, "actuations": 1}')
    view.on_message(T.presence("x"), b"{not json")
    view.on_message(T.presence("y"), b"")
    rows = view.rows(0.0)
    assert rows["bridges"][0]["backlog"] == 42 and rows["bridges"][0]["oldest_s"] == 3.5
    assert rows["pipelines"][0]["pipeline"] == "pi-1/deter" and rows["agents"] == []


@pytest.mark.timeout(60)
def test_monitor_once_json_lists_the_live_agents(broker, root, agents):
    agents("m-1", broker.url, root, presence_period=0.5)
    agents("m-2", broker.url, root, presence_period=0.5)
    out = subprocess.run([sys.executable, "-m", "fogmesh", "monitor", "--broker", broker.url, "--root", root,
                          "--once", "--json", "--wait", "1.5"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {a["agent"]: a["state"] for a in rows["agents"]} == {"m-1": "online", "m-2": "online"}


@pytest.mark.timeout(60)
def test_monitor_once_draws_a_table(broker, root, agents):
    agents("t-1", broker.url, root)
    out = subprocess.run([sys.executable, "-m", "fogmesh", "monitor", "--broker", broker.url, "--root", root,
                          "--once", "--wait", "1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "t-1" in out.stdout and "tasks/s" in out.stdout


@pytest.mark.timeout(60)
def test_the_agent_serves_prometheus_metrics_when_asked(mosquitto_broker, root, agents):
    port = free_port()
    agents("prom", mosquitto_broker.url, root, metrics_port=port)
    with FogClient(mosquitto_broker.url, root=root) as client:
        for _ in range(5):
            assert client.submit("echo", {}, timeout=10).ok
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'fogmesh_agent_completed_total{agent="prom"} 5.0' in text
    assert 'fogmesh_agent_task_latency_ms_count{agent="prom"} 5.0' in text
    assert 'fogmesh_agent_task_latency_ms_bucket{agent="prom",le="+Inf"} 5.0' in text


def test_metrics_are_off_by_default(mosquitto_broker, root, agents):
    agent = agents("quiet", mosquitto_broker.url, root)
    assert agent._metrics is None


@pytest.mark.timeout(120)
def test_bench_footprint_reports_memory_per_process_and_start_up_time_as_json():
    import json
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "fogmesh", "bench", "footprint", "--idle-s", "0.5", "--json"],
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    fp = json.loads(done.stdout)["footprint"]
    roles = [p["role"] for p in fp["processes"]]
    assert roles[0] == "agent" and roles.count("worker") == 2          # default flags: two workers
    assert fp["uss_mb"] == pytest.approx(sum(p["uss_mb"] for p in fp["processes"]))
    assert fp["pss_mb"] >= fp["uss_mb"]                 # shared pages split, not dropped
    assert fp["start_to_first_answer_s"] > 0
