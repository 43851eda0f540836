"""``fogmesh bench faults --faults cluster-node-kill``: a RabbitMQ node's
Erlang VM killed (``kill -9``) under load, then started again.

Three agents, one per node, each with the failover list of the MQTT nodes
and the three ``--amqp`` URLs; a device that publishes each task once
(connected to a node that stays), and a :class:`~fogmesh.devices.client.FogClient`
connected to the node that is killed. What must hold: nothing lost, nothing
run twice (an identical reply twice is counted apart: a node killed as an
agent commits can take the answer and lose the ack), and the agent and the
device on the killed node working again on a live node within seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fogmesh import codec
from fogmesh.bench.faultkit import FaultRun, FirmwareDevice, ReplyCounter, progress
from fogmesh.broker.processes import stop_processes
from fogmesh.broker.rabbitmq import RabbitCluster
from fogmesh.mqtt import MqttClient

MEDIUM = {"data": "fog", "rounds": 3000}


def start_agent(cluster: RabbitCluster, root: str, i: int, workdir: Path) -> subprocess.Popen[bytes]:
    """``fogmesh agent --id n{i}`` on node ``i`` first, the other nodes after."""
    args = [sys.executable, "-m", "fogmesh", "agent", "--id", f"n{i}", "--broker", cluster.url_from(i % 3),
            "--root", root, "--presence-period", "1", "--log-level", os.environ.get("CLUSTER_LOG", "INFO")]
    for url in cluster.amqp_from(i % 3):
        args += ["--amqp", url]
    (workdir / "state").mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(workdir / f"n{i}.log", "ab"),
                            env={**os.environ, "FOGMESH_STATE_DIR": str(workdir / "state"), "PYTHONUNBUFFERED": "1"})


class OnlineWatch:
    """When each agent said ``online`` (monotonic times), from the presence topic."""

    def __init__(self, url: str, root: str) -> None:
        self.times: dict[str, list[float]] = {}
        self._changed = threading.Condition()
        self._c = MqttClient(url, on_message=self._on)
        self._c.start(timeout=30)
        self._c.subscribe(f"{root}/presence/+")

    def _on(self, m: Any) -> None:
        try:
            state = codec.decode(m.payload).get("state") if m.payload else None
        except Exception:          # not a presence document
            return
        if state == "online":
            with self._changed:
                self.times.setdefault(m.topic.rsplit("/", 1)[1], []).append(time.monotonic())
                self._changed.notify_all()

    def wait(self, agents: list[str], *, since: float, timeout: float) -> float | None:
        """Seconds from ``since`` until each of ``agents`` said online after it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                after = [min((t for t in self.times.get(a, []) if t >= since), default=None) for a in agents]
                if all(t is not None for t in after):
                    return max(t for t in after if t is not None) - since
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def close(self) -> None:
        self._c.stop()


def node_killed(cluster: RabbitCluster, workdir: Path, *, node: int = 1, rate: float = 100.0,
                before_s: float = 3.0, down_s: float = 8.0, after_s: float = 5.0) -> FaultRun:
    """The scenario on a running ``cluster`` (started again as it was after)."""
    from fogmesh.devices.client import FogClient

    run = FaultRun(f"a cluster node's VM killed (kill -9) under {rate:g} tasks/s", "rabbitmq")
    root = f"faults/node-{int(time.time() * 1000) % 10**8}"
    procs = {i: start_agent(cluster, root, i, workdir) for i in range(3)}
    watch = OnlineWatch(cluster.url_from(0), root)
    counter = device = None
    try:
        if watch.wait([f"n{i}" for i in range(3)], since=0.0, timeout=90) is None:
            raise RuntimeError(f"agents not online: {sorted(watch.times)}")
        host, port = cluster.nodes[0].host, cluster.nodes[0].port
        counter = ReplyCounter(host, port, root)
        device = FirmwareDevice(host, port, root)
        with FogClient(cluster.url_from(node), root=root) as client:
            futures: dict[str, Any] = {}
            n = [0]

            def pace(seconds: float) -> None:
                start, k = time.monotonic(), 0
                while time.monotonic() - start < seconds:
                    n[0], k = n[0] + 1, k + 1
                    tid = f"k-{n[0]}"
                    if n[0] % 5 == 0:
                        futures[tid] = client.send("sha256", MEDIUM, weight="medium", task_id=tid)
                    else:
                        assert device is not None
                        device.send(tid, "sha256", MEDIUM, weight="medium")
                    time.sleep(max(0.0, start + k / rate - time.monotonic()))     # the devices' pace

            pace(before_s)
            killed = time.monotonic()
            cluster.nodes[node].kill()
            progress(f"rabbitmq: node {node} killed (kill -9)")
            pace(down_s)
            # The agent on the killed node back on a live one, announcing itself.
            back = watch.wait([f"n{node}"], since=killed, timeout=30.0)
            run.recover_s = round(back, 1) if back is not None else None
            cluster.nodes[node].start()
            progress(f"rabbitmq: node {node} started again")
            pace(after_s)
            sends = {tid: 1 for tid in device.accepted}
            sends.update({tid: client.attempts(tid) for tid in futures})
            _wait(counter, sends, futures, timeout=120.0)
            counter.count(run, sends)
            unanswered = sorted(t for t, f in futures.items() if not f.done())
            run.details["fogclient_unanswered"] = unanswered[:20]
            run.details["fire_and_forget"] = len(device.accepted)
            run.details["fogclient"] = len(futures)
            # Identical replies twice: a node killed mid-commit (answer taken, ack lost).
            run.details["identical_duplicates"] = run.duplicate_replies
            run.duplicate_replies = 0
        logs = {f"n{i}": (workdir / f"n{i}.log").read_text(errors="replace") for i in range(3)}
        run.details["reconnect_lines"] = {a: log.count("disconnected from") for a, log in logs.items()}
        if run.recover_s is None:
            run.note = f"n{node} not online again within 30 s"
            run.details["log"] = logs[f"n{node}"].splitlines()[-20:]
    finally:
        for part in (device, counter, watch):
            if part is not None:
                part.close()
        stop_processes(list(procs.values()), timeout=20)
    return run


def _wait(counter: ReplyCounter, sends: dict[str, int], futures: dict[str, Any], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(counter.replies.get(t) for t in sends) and all(f.done() for f in futures.values()):
            break
        time.sleep(0.2)
    time.sleep(1.0)                     # room for a late second answer: an absence cannot be awaited


def cluster_node_kill(broker_name: str, workdir: Path) -> FaultRun:
    """The fault table's row: a 3-node cluster of its own."""
    cluster = RabbitCluster(3, workdir=workdir / "cluster").start()
    try:
        return node_killed(cluster, workdir)
    finally:
        cluster.cleanup()
