"""Firmware people flash: examples/firmware/micropython/main.py, run on
MicroPython's unix port with micropython-lib's umqtt.simple, against real
brokers. It reads a sensor, submits a task and re-sends it under the same id
until answered (here: the agent starts only after the first attempts), and
drives its relay from the actuator command topic."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path

import orjson
import pytest

from fogmesh.mqtt import MqttClient
from tests.prerequisites import MICROPYTHON_LIB, umqtt_path
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

FIRMWARE = Path(__file__).resolve().parent.parent / "examples" / "firmware" / "micropython" / "main.py"


def test_the_micropython_firmware_retries_its_task_until_answered_once_and_drives_its_relay(broker, root, agents):
    micropython = shutil.which("micropython")
    assert micropython and umqtt_path().exists(), "python -m tests.prerequisites installs MicroPython and umqtt"
    device = "esp-7"
    seen: queue.SimpleQueue = queue.SimpleQueue()
    watch = MqttClient(broker.url, on_message=lambda m: seen.put((m.topic, m.payload)))
    watch.start()
    for f in (f"{root}/tasks/{device}", f"{root}/replies/{device}", f"{root}/sensors/{device}/#",
              f"{root}/actuators/{device}/+/state"):
        watch.subscribe(f)
    got: dict[str, list[bytes]] = {}
    lock = threading.Lock()

    def drain() -> None:
        while True:
            try:
                topic, payload = seen.get_nowait()
            except queue.Empty:
                return
            with lock:
                got.setdefault(topic, []).append(payload)

    def count(topic: str) -> int:
        drain()
        return len(got.get(topic, []))

    env = {**os.environ, "MICROPYPATH": f".frozen:{MICROPYTHON_LIB}"}
    proc = subprocess.Popen([micropython, str(FIRMWARE), broker.host, str(broker.port), device, root,
                             "1", "4", "0.5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        state_topic = f"{root}/actuators/{device}/relay/state"
        wait_until(lambda: count(state_topic) >= 1, timeout=20, what="the firmware's retained relay state")
        assert orjson.loads(got[state_topic][-1])["state"] == "off"
        tasks_topic = f"{root}/tasks/{device}"
        wait_until(lambda: count(tasks_topic) >= 2, timeout=20, what="the firmware re-sending its task")
        agents("fw-agent", broker.url, root)             # only now is anyone there to answer
        watch.publish(f"{root}/actuators/{device}/relay/set", b"on")
        wait_until(lambda: count(state_topic) >= 2, timeout=20, what="the relay state after the command")
        assert orjson.loads(got[state_topic][-1])["state"] == "on"
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
        watch.stop()
    assert proc.returncode == 0, err
    line = next(line for line in out.splitlines() if line.startswith("REPLY "))
    result = json.loads(line[len("REPLY "):])
    assert result["reply"]["status"] == "ok" and result["attempts"] >= 2
    assert result["reply"]["result"] == 21.0           # the sum of its one reading
    drain()
    assert count(f"{root}/sensors/{device}/temperature") >= 1
    replies = {orjson.loads(p)["id"]: p for p in got.get(f"{root}/replies/{device}", [])}
    assert list(replies) == [result["reply"]["id"]]
    # re-sent ids are answered again with the same bytes: the task ran once
    assert len(set(got[f"{root}/replies/{device}"])) == 1
