"""Operations: the fleet view behind ``fogmesh monitor`` (pure, then live with
``--once --json`` on real brokers), the agent's Prometheus endpoint, and
``fogmesh bench footprint`` (its install part, minutes long, is run by hand:
here its size and pip-report readers on small made-up directories)."""

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
    done = subprocess.run([sys.executable, "-m", "fogmesh", "bench", "footprint", "--idle-s", "0.5", "--no-install",
                           "--json"], capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "install" not in report                      # --no-install: no venv made, nothing installed
    fp = report["footprint"]
    roles = [p["role"] for p in fp["processes"]]
    assert roles[0] == "agent" and roles.count("worker") == 2          # default flags: two workers
    assert fp["uss_mb"] == pytest.approx(sum(p["uss_mb"] for p in fp["processes"]))
    assert fp["pss_mb"] >= fp["uss_mb"]                 # shared pages split, not dropped
    assert fp["start_to_first_answer_s"] > 0


def dist(site, name, version, files, *, extra_record=()):
    """A distribution as pip leaves it in site-packages: its files and a RECORD listing them."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    for path, size in files.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_bytes(b"x" * size)
    listed = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD", *extra_record]
    (info / "RECORD").write_text("".join(f"{p},,\n" for p in listed))
    return (info / "METADATA").stat().st_size + (info / "RECORD").stat().st_size


def test_the_installed_size_is_the_directory_and_each_distribution_its_recorded_files_inside_it(tmp_path):
    from fogmesh.bench.install_size import MB, measure
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    big = dist(site, "opencv-python-headless", "4.10.0", {"cv2/__init__.py": MB, "cv2/cv2.so": 2 * MB},
               extra_record=["../../../bin/opencv-tool", "cv2/__pycache__/never_written.pyc"])
    small = dist(site, "numpy", "2.0.0", {"numpy/__init__.py": MB // 2})
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "opencv-tool").write_bytes(b"x" * MB)      # a script: outside site-packages
    (site / "by-hand.pth").write_bytes(b"x" * (MB // 4))            # in no RECORD: the total only
    (site / "cv2" / "link.so").symlink_to(site / "cv2" / "cv2.so")  # a link is not a second copy

    size = measure(site)
    assert [(d.name, d.version) for d in size.distributions] == [("opencv-python-headless", "4.10.0"),
                                                                ("numpy", "2.0.0")]     # largest first
    assert size.distributions[0].mb == pytest.approx(3 + big / MB)
    assert size.distributions[1].mb == pytest.approx(0.5 + small / MB)
    assert size.total_mb == pytest.approx(3.75 + (big + small) / MB)
    assert size.of("OpenCV_Python_Headless", "numpy") == pytest.approx(size.total_mb - 0.25)
    assert size.largest(1) == size.distributions[:1]


def test_where_pip_took_each_distribution_is_counted_from_its_install_report(tmp_path):
    from fogmesh.bench.fresh_join import fetched_from
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"version": "1", "install": [
        {"download_info": {"url": "https://files.pythonhosted.org/packages/numpy-2.0.0.whl"}},
        {"download_info": {"url": "https://files.pythonhosted.org/packages/paho_mqtt-2.2.0.whl"}},
        {"download_info": {"url": "file:///work/fogmesh", "dir_info": {}}},
        {"metadata": {}}]}))
    assert fetched_from(report) == {"https": 2, "file": 1, "?": 1}


def test_bench_footprint_says_how_to_skip_the_install_and_that_sizes_have_no_raw_mqtt_ratio():
    done = subprocess.run([sys.executable, "-m", "fogmesh", "bench", "footprint", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "--no-install" in text and "--no-pip-cache" in text and "--site-broker" in text
    assert "no ratio to raw MQTT" in text


def test_the_install_part_prints_the_largest_distributions_and_each_step_to_the_joined_agent():
    from fogmesh.bench.footprint import render_install
    size = {"site_packages": "/v/lib/python3.11/site-packages", "total_mb": 308.5, "vision_mb": 229.2,
            "distributions": [{"name": f"d{i}", "version": "1.0", "mb": 100.0 - i} for i in range(7)]}
    timing = {"broker": "mosquitto", "source": "/src/fogmesh", "pip": "23.2.1", "pip_cache": True, "venv_s": 5.4,
              "install_s": 19.2, "enroll_s": 1.2, "join_s": 2.6, "online_s": 0.5, "total_s": 28.9,
              "doctor": "8 ok, 5 info, 2 skip", "join_status": 0, "fetched": {"file": 38}}
    text = "\n".join(render_install({"size": size, "timing": timing}))
    assert "site-packages 308.5 MB, 7 distributions" in text
    assert "d4 " in text and "d5 " not in text                      # the five largest
    for step in ("python -m venv", "pip install (pip 23.2.1)", "fogmesh fleet enroll", "fogmesh join TOKEN",
                 "presence online"):
        assert step in text
    assert text.splitlines()[-2].split() == ["total", "28.9"] and "38 from this machine's disk" in text
