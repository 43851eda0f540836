"""``fogmesh bench faults`` scenarios of a box that goes away for a while and
comes back: a power cut (the process killed, nothing said, back after
seconds or minutes, with whatever its broker sessions queued meanwhile).

As the rest of the fault suite: brokers and agents as processes through the
CLI, a device that publishes each task once (most firmware) beside a
:class:`~fogmesh.devices.client.FogClient` (it sends again what got no
answer), and a plain paho subscriber counting every reply on the wire."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from fogmesh import codec
from fogmesh.bench.faultkit import (
    Agents,
    BrokerProcess,
    FaultRun,
    FirmwareDevice,
    ReplyCounter,
    progress,
    wait_answering,
)

MEDIUM = {"data": "fog", "rounds": 3000}


class PresenceWatch:
    """A plain paho subscriber on one agent's presence: when did an instance
    other than the ones already seen say ``online``?"""

    def __init__(self, broker: BrokerProcess, topic: str) -> None:
        self.seen: list[tuple[float, str, str]] = []     # (monotonic time, state, instance)
        self._changed = threading.Condition()
        self._c = paho.Client(CallbackAPIVersion.VERSION2)
        self._c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
        self._c.on_message = self._on_message
        self._c.connect(broker.host, broker.port)
        self._c.loop_start()

    def _on_message(self, _c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        try:
            body = codec.decode(m.payload) if m.payload else {}
            state, instance = str(body.get("state")), str(body.get("instance"))
        except Exception:       # not a presence document: not this watch's business
            return
        with self._changed:
            self.seen.append((time.monotonic(), state, instance))
            self._changed.notify_all()

    def instances(self) -> set[str]:
        with self._changed:
            return {instance for _, _, instance in self.seen}

    def online_anew(self, old: set[str], *, since: float, timeout: float) -> float | None:
        """Seconds from ``since`` until an instance not in ``old`` said ``online``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for at, state, instance in self.seen:
                    if state == "online" and instance not in old and at >= since:
                        return at - since
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def close(self) -> None:
        self._c.loop_stop()
        self._c.disconnect()


def _pace(seconds: float, rate: float, send: Any) -> None:
    """Call ``send()`` ``rate`` times a second for ``seconds``."""
    start, n = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        send()
        n += 1
        time.sleep(max(0.0, start + n / rate - time.monotonic()))   # the device's pace, not a wait


def _wait_answered(counter: ReplyCounter, sends: dict[str, int], *, quiet_s: float, timeout: float) -> None:
    """Until every id has a reply, or none came for ``quiet_s``."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = sum(1 for tid in sends if counter.replies.get(tid))
        if n == len(sends):
            break
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.1)
    time.sleep(1.0)                     # room for a late second answer: an absence cannot be awaited


def power_cut(broker_name: str, workdir: Path, *, down_s: float = 60.0, rate: float = 20.0,
              before_s: float = 5.0, after_s: float = 10.0, extra: tuple[str, ...] = ()) -> FaultRun:
    """Three agents working through ``rate`` tasks a second; one loses power
    (SIGKILL: no will of its own making, no goodbye) and boots again
    ``down_s`` later, meeting whatever its persistent sessions queued
    meanwhile. ``recover s``: from its start until its new instance says
    ``online``. Every task the broker took is answered once, by it or a peer;
    a :class:`FogClient` sends beside the firmware, a tenth of the rate."""
    from fogmesh.devices.client import FogClient

    label = f"{down_s / 60:g} min" if down_s >= 60 else f"{down_s:g} s"
    run = FaultRun(f"a box back after {label} off (power cut), under {rate:g} tasks/s", broker_name)
    broker = BrokerProcess(broker_name, workdir).start()
    agents = Agents(workdir)
    root = f"faults/cut-{int(time.time() * 1000) % 10**8}"
    ids = ["p0", "p1", "p2"]
    counter: ReplyCounter | None = None
    device: FirmwareDevice | None = None
    watch: PresenceWatch | None = None
    try:
        for a in ids:
            agents.start(a, broker.url, root, "--concurrency", "2", *extra)
        counter = ReplyCounter(broker.host, broker.port, root)
        watch = PresenceWatch(broker, f"{root}/presence/p2")
        with FogClient(broker.url, root=root) as client:
            wait_answering(client, ids)
            device = FirmwareDevice(broker.host, broker.port, root)
            futures: dict[str, Any] = {}
            n = [0]

            def send() -> None:
                n[0] += 1
                tid = f"c-{n[0]}"
                if n[0] % 10 == 0:
                    futures[tid] = client.send("sha256", MEDIUM, weight="medium", task_id=tid)
                else:
                    assert device is not None
                    device.send(tid, "sha256", MEDIUM, weight="medium")

            _pace(before_s, rate, send)
            old = watch.instances()
            agents.kill("p2")
            progress(f"{broker_name}: p2 lost power; back in {down_s:g} s")
            _pace(down_s, rate, send)
            booted = time.monotonic()
            agents.start("p2", broker.url, root, "--concurrency", "2", *extra)
            _pace(after_s, rate, send)
            run.recover_s = watch.online_anew(old, since=booted, timeout=1.0)
            if run.recover_s is None:
                run.recover_s = watch.online_anew(old, since=booted, timeout=30.0)
            if run.recover_s is not None:
                run.recover_s = round(run.recover_s, 1)
            exited = agents.procs["p2"].poll()
            if run.recover_s is None or exited is not None:
                run.note = f"p2 not online again (exit status {exited})"
                run.details["p2_log"] = agents.log("p2").splitlines()[-30:]
            sends = {tid: 1 for tid in device.accepted}
            sends.update({tid: client.attempts(tid) for tid in futures})
            _wait_answered(counter, sends, quiet_s=5.0, timeout=120.0)
            counter.count(run, sends)
            run.details["fire_and_forget"] = len(device.accepted)
            run.details["fogclient"] = len(futures)
    finally:
        for part in (device, counter, watch):
            if part is not None:
                part.close()
        agents.close()
        broker.close()
    return run
