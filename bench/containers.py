"""``fogmesh bench containers``: what a user pays for a container's isolation.

One agent on one mosquitto with the same function (the sum of
``args.values``) three ways: a worker-process kind (fogmesh's default), a
service container kind (one long-running container, tasks over its Unix
socket) and a per-task container kind (``run --rm -i`` each task), plus raw
MQTT request/reply (a bare paho responder) as the floor. Sequential round
trips from a ``FogClient`` on loopback: p50 / p95 / mean, and each against
raw MQTT and against the worker-process kind, from the same run. The
service's first task (the container's start) is reported on its own.

``--image`` must have ``python3`` (default ``python:3.11-slim``; on a box
without a registry, any local image with Python, e.g. one imported from
``mmdebstrap``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.builtin_kinds import total
from fogmesh.container_services import service_kind
from fogmesh.containers import Engine, image_kind
from fogmesh.devices.client import FogClient
from fogmesh.registry import Registry, TaskKind

PER_TASK = ["python3", "-c", "import json, sys; a = json.load(sys.stdin); print(json.dumps(sum(a['values'])))"]
SERVICE = ["python3", "-c", """
import json, os, socketserver
class Task(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            a = json.loads(line)
            self.wfile.write(json.dumps({"result": sum(a["values"])}).encode() + b"\\n")
            return
p = os.environ["FOGMESH_SOCKET"]
if os.path.exists(p):
    os.unlink(p)
socketserver.ThreadingUnixStreamServer(p, Task).serve_forever()
"""]


def worker_sum(args: Any, cache: Any = None) -> float:
    """The worker-process kind's handler (shipped to the workers by reference)."""
    return total(args)


def progress(msg: str) -> None:
    print(f"[bench containers] {msg}", file=sys.stderr, flush=True)


def _timed(n: int, one: Callable[[], None]) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        one()
        out.append(1000 * (time.perf_counter() - t0))
    return out


def _row(system: str, ms: list[float]) -> dict[str, Any]:
    ms = sorted(ms)
    return {"system": system, "tasks": len(ms), "p50_ms": round(statistics.median(ms), 3),
            "p95_ms": round(ms[max(0, int(0.95 * len(ms)) - 1)], 3), "mean_ms": round(statistics.fmean(ms), 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fogmesh.bench.raw_mqtt import Requester
    from fogmesh.edge_agent.agent import Agent
    from fogmesh.edge_agent.options import AgentOptions
    engine = Engine.detect()
    if engine is None:
        raise SystemExit("fogmesh bench containers: needs podman or docker on this box")
    n, n_container = args.tasks, args.container_tasks
    broker = Mosquitto().start()
    root = f"bc/{uuid.uuid4().hex[:6]}"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fogmesh-bench-containers-") as t:
        worker = TaskKind("wsum", worker_sum, weight="light", timeout_s=10, description="sum in a worker process",
                          ships_handler=True)
        per_task = image_kind("csum", args.image, engine=engine, command=PER_TASK, timeout_s=60)
        service = service_kind("ssum", args.image, engine=engine, agent="bench-c", state_dir=Path(t),
                               command=SERVICE, timeout_s=30)
        agent = Agent("bench-c", broker.url, AgentOptions(
            root=root, concurrency=2, presence_period=1.0, journal=False, service_idle_s=3600,
            registry=Registry.from_entry_points().with_kinds(worker, per_task, service)))
        agent.start(timeout=30)
        responder = subprocess.Popen([sys.executable, "-m", "fogmesh.bench.raw_mqtt", "127.0.0.1",
                                      str(broker.port), f"{root}/raw"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        try:
            assert responder.stdout is not None and responder.stdout.readline().strip() == "ready"
            raw = Requester("127.0.0.1", broker.port, f"{root}/raw")
            with FogClient(broker.url, root=root) as client:
                def call(kind: str) -> Callable[[], None]:
                    def one() -> None:
                        r = client.submit(kind, {"values": [1, 2, 3]}, timeout=120)
                        if not r.ok:
                            raise RuntimeError(f"{kind}: {r.error}")
                    return one
                progress("service container: first task (starts the container)")
                cold = _timed(1, call("ssum"))[0]
                for kind in ("wsum", "ssum", "csum"):
                    _timed(3, call(kind))                          # warm: imports, connections
                progress(f"{n} round trips each: raw MQTT, worker process, service container")
                raw.request()
                rows.append(_row("raw MQTT request/reply", _timed(n, lambda: (raw.request(), None)[1])))
                rows.append(_row("worker-process kind", _timed(n, call("wsum"))))
                rows.append(_row("service container kind", _timed(n, call("ssum"))))
                progress(f"{n_container} round trips: a container per task")
                rows.append(_row("container per task", _timed(n_container, call("csum"))))
            raw.close()
        finally:
            if responder.stdin is not None:
                responder.stdin.close()
            responder.wait(10)
            agent.stop(timeout=10)
            broker.cleanup()
    base, floor = rows[1]["p50_ms"], rows[0]["p50_ms"]
    for r in rows:
        r["vs_raw"] = round(r["p50_ms"] / floor, 2)
        r["vs_worker"] = round(r["p50_ms"] / base, 2)
    return {"engine": engine.name, "image": args.image, "rows": rows, "service_first_task_ms": round(cold, 1)}


def render(report: dict[str, Any]) -> str:
    head = f"{'system':<24} {'tasks':>5} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'vs raw':>7} {'vs worker':>9}"
    lines = [f"fogmesh bench containers: one agent, {report['engine']}, image {report['image']}; sequential round "
             "trips of the same sum, loopback", "", head, "-" * len(head)]
    for r in report["rows"]:
        lines.append(f"{r['system']:<24} {r['tasks']:>5} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['mean_ms']:>8.2f} "
                     f"{r['vs_raw']:>6.2f}x {r['vs_worker']:>8.2f}x")
    lines.append(f"service container, first task (the container starts): {report['service_first_task_ms']:.0f} ms")
    return "\n".join(lines)
