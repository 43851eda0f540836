"""``fogmesh bench cluster``: agents on a 3-node RabbitMQ cluster (tasks from
a quorum queue over AMQP, ``--amqp``) against the same agents on one
mosquitto (shared subscriptions).

Per broker and fleet size N (1, 2, 4, 8 agents, one worker each, spread over
the nodes): a device publishes ``50 x N`` tasks of a 50 ms ``sleep`` kind at
QoS 1 as fast as the broker takes them; tasks/s is that count over the time
from the first publish to the last reply, with the p50 and p99 of each
task's publish-to-reply time. N agents of one worker each top out at
``N x 20`` tasks/s: the scaling column says how close each gets. Then, on
the cluster, with three agents under a steady 30 tasks/s, one node is
stopped (``rabbitmqctl stop_app``): the longest gap between two replies,
the time until the agent that was on it announces itself from another node,
and lost / doubled tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Callable

from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.processes import stop_processes
from fogmesh.broker.rabbitmq import RabbitCluster
from fogmesh.mqtt import MqttClient
from fogmesh.percentiles import percentile

TASK_MS = 50


@dataclass
class ScaleRow:
    broker: str
    agents: int
    tasks: int
    tasks_per_s: float
    ideal_per_s: float
    scaling: float              # tasks/s over N x (1000 / TASK_MS)
    p50_ms: float
    p99_ms: float
    lost: int
    doubled: int


@dataclass
class RecoveryRow:
    tasks: int
    longest_gap_s: float
    agent_back_s: float | None
    lost: int
    doubled: int


def progress(msg: str) -> None:
    print(f"[bench cluster] {msg}", file=sys.stderr, flush=True)


class _Device:
    def __init__(self, url: str, root: str) -> None:
        self.root = root
        self.sent_at: dict[str, float] = {}
        self.replied_at: dict[str, float] = {}
        self.replies: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.done = threading.Condition(self.lock)
        self.sub = MqttClient(url, client_id=f"bench-replies-{uuid.uuid4().hex[:8]}", clean_session=False,
                              on_message=self._reply)
        self.sub.start(timeout=30)
        self.sub.subscribe(f"{root}/replies/bench")
        self.pub = MqttClient(url)
        self.pub.start(timeout=30)

    def _reply(self, m: Any) -> None:
        task_id = json.loads(m.payload)["id"]
        with self.lock:
            self.replies[task_id] += 1
            self.replied_at.setdefault(task_id, time.monotonic())
            self.done.notify_all()

    def send(self, n: int, *, per_s: float | None = None, prefix: str = "t") -> None:
        started = time.monotonic()
        for i in range(n):
            task_id = f"{prefix}{i:06d}"
            with self.lock:
                self.sent_at[task_id] = time.monotonic()
            self.pub.publish(f"{self.root}/tasks", json.dumps(
                {"id": task_id, "kind": "sleep", "args": {"ms": TASK_MS}, "reply_to": f"{self.root}/replies/bench"}
            ).encode(), qos=1)
            if per_s:
                time.sleep(max(0.0, started + (i + 1) / per_s - time.monotonic()))   # the device's pace

    def wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.replied_at) < len(self.sent_at) and time.monotonic() < deadline:
                self.done.wait(0.5)

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return (sum(1 for t in self.sent_at if self.replies[t] == 0),
                    sum(1 for t in self.sent_at if self.replies[t] > 1))

    def close(self) -> None:
        self.sub.stop()
        self.pub.stop()


def _agents(n: int, *, root: str, url_of: Callable[[int], str], amqp_of: Callable[[int], list[str]],
            state: str) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        args = [sys.executable, "-m", "fogmesh", "agent", "--id", f"b{i}", "--broker", url_of(i), "--root", root,
                "--concurrency", "1", "--presence-period", "1", "--log-level", "WARNING"]
        for u in amqp_of(i):
            args += ["--amqp", u]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                      env={**os.environ, "FOGMESH_STATE_DIR": state}))
    return procs


def _wait_online(url: str, root: str, ids: list[str], timeout: float = 90.0
                 ) -> tuple[dict[str, list[float]], MqttClient]:
    """Until every agent said online; returns a live record of when each says
    it (for the recovery row) and the watcher keeping it (stop it after)."""
    seen: dict[str, list[float]] = {}
    ready = threading.Event()

    def on(m: Any) -> None:
        if m.payload and json.loads(m.payload).get("state") == "online":
            seen.setdefault(m.topic.rsplit("/", 1)[1], []).append(time.monotonic())
            if all(a in seen for a in ids):
                ready.set()

    watcher = MqttClient(url, on_message=on)
    watcher.start(timeout=30)
    watcher.subscribe(f"{root}/presence/+")
    if not ready.wait(timeout):
        watcher.stop()
        raise RuntimeError(f"agents online: {sorted(seen)} of {ids}")
    return seen, watcher


def _scale(name: str, n: int, *, url_of: Callable[[int], str], amqp_of: Callable[[int], list[str]],
           device_url: str, state: str, timeout: float) -> ScaleRow:
    root = f"bench/cl-{uuid.uuid4().hex[:8]}"
    procs = _agents(n, root=root, url_of=url_of, amqp_of=amqp_of, state=state)
    device = None
    try:
        _wait_online(device_url, root, [f"b{i}" for i in range(n)])[1].stop()
        device = _Device(device_url, root)
        count = 50 * n
        started = time.monotonic()
        device.send(count)
        device.wait_all(timeout)
        seconds = max(device.replied_at.values(), default=started) - started
        times = [1000 * (device.replied_at[t] - device.sent_at[t]) for t in device.replied_at]
        lost, doubled = device.counts()
        ideal = n * 1000 / TASK_MS
        rate = count / seconds if seconds else 0.0
        progress(f"{name}, {n} agent(s): {rate:.1f} tasks/s")
        return ScaleRow(broker=name, agents=n, tasks=count, tasks_per_s=round(rate, 1), ideal_per_s=ideal,
                        scaling=round(rate / ideal, 2), p50_ms=round(percentile(times, 0.5), 1),
                        p99_ms=round(percentile(times, 0.99), 1), lost=lost, doubled=doubled)
    finally:
        if device is not None:
            device.close()
        stop_processes(procs, timeout=10)


def _recovery(cluster: RabbitCluster, state: str, timeout: float) -> RecoveryRow:
    root = f"bench/cl-{uuid.uuid4().hex[:8]}"
    procs = _agents(3, root=root, url_of=cluster.url_from, amqp_of=cluster.amqp_from, state=state)
    device = None
    online, watcher = _wait_online(cluster.url_from(0), root, ["b0", "b1", "b2"])
    try:
        device = _Device(cluster.url_from(0), root)
        sending = threading.Thread(target=device.send, args=(450,), kwargs={"per_s": 30.0, "prefix": "r"})
        sending.start()
        time.sleep(5.0)
        stopped = time.monotonic()
        cluster.stop_app(2)                 # b2 started on node 2
        sending.join()
        device.wait_all(timeout)
        cluster.start_app(2)
        replies = sorted(device.replied_at.values())
        gaps = [b - a for a, b in zip(replies, replies[1:]) if b >= stopped - 1]
        back = [t - stopped for t in online.get("b2", []) if t > stopped]
        lost, doubled = device.counts()
        return RecoveryRow(tasks=len(device.sent_at), longest_gap_s=round(max(gaps, default=0.0), 2),
                           agent_back_s=round(back[0], 2) if back else None, lost=lost, doubled=doubled)
    finally:
        watcher.stop()
        if device is not None:
            device.close()
        stop_processes(procs, timeout=10)


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(x) for x in str(args.agents).split(",") if x.strip()]
    with tempfile.TemporaryDirectory(prefix="fogmesh-bench-cluster-") as state:
        progress("starting a 3-node RabbitMQ cluster and a mosquitto")
        cluster = RabbitCluster(3).start()
        mosq = Mosquitto().start()
        try:
            rows = []
            for n in sizes:
                rows.append(_scale("mosquitto", n, url_of=lambda i: mosq.url, amqp_of=lambda i: [],
                                   device_url=mosq.url, state=state, timeout=args.timeout))
                rows.append(_scale("rabbitmq x3", n, url_of=cluster.url_from, amqp_of=cluster.amqp_from,
                                   device_url=cluster.url_from(0), state=state, timeout=args.timeout))
            progress("node loss under load")
            recovery = _recovery(cluster, state, args.timeout)
        finally:
            mosq.cleanup()
            cluster.cleanup()
    return {"rows": [asdict(r) for r in rows], "recovery": asdict(recovery), "task_ms": TASK_MS}


def render(report: dict[str, Any]) -> str:
    head = (f"{'broker':<12} {'agents':>6} {'tasks':>6} {'tasks/s':>8} {'ideal':>6} {'scaling':>7} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'vs mosquitto':>12} {'lost':>5} {'doubled':>7}")
    lines = [head, "-" * len(head)]
    mosq = {r["agents"]: r["tasks_per_s"] for r in report["rows"] if r["broker"] == "mosquitto"}
    for r in report["rows"]:
        vs = f"{r['tasks_per_s'] / mosq[r['agents']]:.2f}x" if mosq.get(r["agents"]) else "-"
        lines.append(f"{r['broker']:<12} {r['agents']:>6} {r['tasks']:>6} {r['tasks_per_s']:>8.1f} "
                     f"{r['ideal_per_s']:>6.0f} {r['scaling']:>7.2f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} "
                     f"{vs:>12} {r['lost']:>5} {r['doubled']:>7}")
    rec = report["recovery"]
    lines.append("")
    lines.append(f"node loss (rabbitmqctl stop_app, 3 agents, 30 tasks/s, {rec['tasks']} tasks): longest gap "
                 f"between replies {rec['longest_gap_s']} s; the agent on that node back on another after "
                 f"{rec['agent_back_s']} s; lost {rec['lost']}, doubled {rec['doubled']}")
    lines.append(f"tasks: sleep {report['task_ms']} ms, one worker per agent (ideal: N x "
                 f"{1000 // report['task_ms']}/s); rabbitmq x3: tasks from a quorum queue over AMQP (--amqp)")
    return "\n".join(lines)
