"""Tier 3 (real mosquitto, an agent process): a flood of 20,000 tasks from one
device keeps the agent's memory bounded, and every task gets an answer: its
result, or a clear "busy" error once the device is over its rate."""

import os
import subprocess
import sys
import threading
import time

import psutil
import pytest

from fogmesh.devices.client import FogClient
from tests.waiting import wait_until

FLOOD = 20_000


@pytest.mark.timeout(180)
def test_a_flood_from_one_device_gets_answers_or_busy_errors_in_bounded_memory(mosquitto_broker, root, tmp_path):
    url = mosquitto_broker.url
    agent = subprocess.Popen([sys.executable, "-m", "fogmesh", "agent", "--id", "flooded", "--broker", url,
                              "--root", root, "--device-rate", "1000", "--concurrency", "1",
                              "--log-level", "WARNING"], env={**os.environ, "FOGMESH_STATE_DIR": str(tmp_path)})
    proc = psutil.Process(agent.pid)
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.05):
            try:
                peak[0] = max(peak[0], proc.memory_info().rss)
            except psutil.Error:
                return
    try:
        with FogClient(url, root=root, device="flooder") as client:
            def up():
                try:
                    return client.send("echo", {}).result(timeout=1).ok
                except TimeoutError:
                    return False
            wait_until(up, timeout=30, what="the agent")
            baseline = proc.memory_info().rss
            threading.Thread(target=sample, daemon=True).start()
            t0 = time.monotonic()
            futures = [client.send("echo", {"n": i, "pad": "x" * 200}) for i in range(FLOOD)]
            results = [f.result(timeout=120) for f in futures]
            seconds = time.monotonic() - t0
        ok = sum(r.ok for r in results)
        busy = sum(1 for r in results if not r.ok and r.error.code == "busy")
        growth_mb = (peak[0] - baseline) / 2**20
        print(f"\nflood: {FLOOD} tasks in {seconds:.1f} s: {ok} ok, {busy} busy; agent RSS "
              f"{baseline / 2**20:.0f} MB at rest, peak {peak[0] / 2**20:.0f} MB (+{growth_mb:.1f} MB)")
        assert ok + busy == FLOOD                         # every task answered
        assert busy > 0 and ok >= 1000                    # the limit bit, the allowed share ran
        assert growth_mb < 50                             # bounded: tasks wait at the broker
    finally:
        stop.set()
        agent.terminate()
        agent.wait(10)
