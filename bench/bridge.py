"""``fogmesh bench bridge``: heavy-task throughput through the bridge, and how
fast it replays a 10,000-task backlog after an outage.

A stand-in origin agent speaks the offload protocol straight to the bridge's
inbox (one agent's broker window would cap the backlog far below 10,000); two
cloud workers answer on a second mosquitto. Both brokers are real mosquittos.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

from fogmesh.bench.rtt_systems import _stop
from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.messages import Task
from fogmesh.mqtt import MqttClient
from fogmesh.offers import Offer, decode_inbox
from fogmesh.topics import Topics


def progress(msg: str) -> None:
    print(f"[bench bridge] {msg}", file=sys.stderr, flush=True)


class Origin:
    """Sends offers to the bridge and counts accepts and results."""

    def __init__(self, url: str, root: str) -> None:
        self.topics = Topics(root)
        self.accepted = 0
        self.results: set[str] = set()
        self.lock = threading.Lock()
        self.client = MqttClient(url, on_message=self._on)
        self.client.start()
        self.client.subscribe(self.topics.agent_inbox("origin"))

    def _on(self, m: Any) -> None:
        msg = decode_inbox(m.payload)
        with self.lock:
            if getattr(msg, "op", "") == "accept":
                self.accepted += 1
            elif hasattr(msg, "reply"):
                self.results.add(msg.task_id)

    def offer(self, n: int, prefix: str) -> None:
        inbox = self.topics.agent_inbox("bridge-bench")
        for i in range(n):
            task = Task(id=f"{prefix}-{i}", kind="sha256", args={"data": "frame"}, reply_to="unused/r",
                        weight="heavy")
            self.client.publish(inbox, Offer(f"origin:{task.id}:1", "origin", task, 60_000).encode())

    def wait(self, pred: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError(f"bench bridge: {what} timed out")
            if time.monotonic() - last > 2:
                progress(f"{what}: {len(self.results)} results, {self.accepted} accepted")
                last = time.monotonic()
            time.sleep(0.01)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import subprocess

    from fogmesh.cloud_bridge.bridge import Bridge
    root, cloud_root = f"bench/{uuid.uuid4().hex[:6]}", f"cloud/{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="fogmesh-bench-bridge-") as tmp, \
            Mosquitto(persistence=False) as edge, Mosquitto(workdir=f"{tmp}/cloud") as cloud:
        workers = [subprocess.Popen([sys.executable, "-m", "fogmesh", "cloud-worker", "--cloud", cloud.url,
                                     "--id", f"w{i}", "--cloud-root", cloud_root, "--log-level", "WARNING"])
                   for i in range(2)]
        bridge = Bridge(site="bench", edge=edge.url, cloud=cloud.url, root=root, cloud_root=cloud_root,
                        store_path=f"{tmp}/outbox.db", max_rows=args.backlog + 1000).start()
        origin = Origin(edge.url, root)
        try:
            time.sleep(2.0)   # workers up
            progress(f"throughput: {args.tasks} heavy tasks through the bridge")
            t0 = time.perf_counter()
            origin.offer(args.tasks, "t")
            origin.wait(lambda: len(origin.results) >= args.tasks, 300, "throughput")
            throughput = args.tasks / (time.perf_counter() - t0)

            progress(f"outage: building a {args.backlog}-task backlog")
            cloud.stop()
            origin.accepted = 0
            t1 = time.perf_counter()
            origin.offer(args.backlog, "b")
            origin.wait(lambda: origin.accepted >= args.backlog, 600, "backlog")
            buffer_rate = args.backlog / (time.perf_counter() - t1)
            backlog_rows, backlog_bytes = bridge.outbox.rows, bridge.outbox.bytes
            progress(f"cloud back: replaying {backlog_rows} tasks")
            before = len(origin.results)
            cloud.start()
            t2 = time.perf_counter()
            origin.wait(lambda: len(origin.results) >= before + args.backlog, 900, "replay")
            replay = args.backlog / (time.perf_counter() - t2)
        finally:
            bridge.stop()
            origin.client.stop()
            for w in workers:
                _stop(w)
    return {"config": {"tasks": args.tasks, "backlog": args.backlog, "cloud_workers": 2,
                       "brokers": "mosquitto edge + mosquitto cloud, loopback"},
            "throughput_tasks_per_s": throughput, "buffering_tasks_per_s": buffer_rate,
            "backlog_rows": backlog_rows, "backlog_bytes": backlog_bytes,
            "replay_tasks_per_s": replay}


def render(r: dict[str, Any]) -> str:
    c = r["config"]
    return "\n".join([
        f"fogmesh bench bridge: {c['cloud_workers']} cloud workers, {c['brokers']}",
        "",
        f"{'measure':<44} {'value':>12}",
        "-" * 57,
        f"{'heavy-task throughput through the bridge':<44} {r['throughput_tasks_per_s']:>9.0f}/s",
        f"{'outage: tasks committed to the outbox':<44} {r['buffering_tasks_per_s']:>9.0f}/s",
        f"{'backlog held during the outage':<44} {r['backlog_rows']:>8} tasks",
        f"{'backlog bytes on disk (payloads)':<44} {r['backlog_bytes']:>10}",
        f"{'replay of the backlog after the outage':<44} {r['replay_tasks_per_s']:>9.0f}/s",
    ])
