"""Tier 3 (real brokers, agent processes): an agent frozen while it holds
tasks (SIGSTOP: its connections stay up, nothing comes from them, no FIN, no
RST, as a Pi that lost power behind a switch) is found out by the broker
through its MQTT keep-alive: within 1.5 x its keep-alive its will says
``offline``, the broker gives back what it held, and its peer runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from test_presence_and_reconnect import PresenceWatcher

from fogmesh.devices.client import FogClient

KEEPALIVE_S = 2
# mosquitto 2.0.11 looks at keep-alives about every 6 s (test_mqtt_conformance.py):
# a silent client goes between 1.5x its keep-alive and 6 s later.
LOOKS_EVERY_S = {"mosquitto": 6.0, "amqtt": 0.0}
SCHEDULING_S = 1.0          # two processes and a broker on a loaded 2-core machine


def agent(broker, root, agent_id):
    return subprocess.Popen(
        [sys.executable, "-m", "fogmesh", "agent", "--id", agent_id, "--broker", broker.url, "--root", root,
         "--concurrency", "1", "--keepalive", str(KEEPALIVE_S), "--takeover-grace", "1",
         "--dispatch", "shared", "--log-level", "WARNING"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL)


@pytest.mark.timeout(90)
def test_a_frozen_agent_is_offline_within_one_and_a_half_keepalives_and_its_tasks_are_taken_over(broker, root):
    watcher = PresenceWatcher(broker.url, root)
    frozen, peer = agent(broker, root, "z0"), agent(broker, root, "z1")
    try:
        watcher.wait_state("z0", "online", timeout=30)
        watcher.wait_state("z1", "online", timeout=30)
        with FogClient(broker.url, root=root, retry_s=None) as client:     # each task sent once
            futures = [client.send("sleep", {"ms": 1500}) for _ in range(6)]
            with watcher.changed:           # z0 holds a task: its presence says it runs one
                assert watcher.changed.wait_for(lambda: watcher.latest.get("z0", {}).get("running"), 20)
            frozen.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            watcher.wait_state("z0", "offline", timeout=30)
            offline_after = time.monotonic() - stopped
            results = [f.result(timeout=40) for f in futures]
        assert offline_after <= 1.5 * KEEPALIVE_S + LOOKS_EVERY_S[broker.name] + SCHEDULING_S, offline_after
        assert all(r.ok for r in results)
        assert [r.worker for r in results] == ["z1"] * 6       # z0 froze in its first task
        assert client.duplicates == 0
    finally:
        for p in (frozen, peer):
            p.kill()                       # a stopped process dies of SIGKILL too
            p.wait()
        watcher.client.stop()
