"""``fogmesh bench placement``: the shipped policies side by side on skewed load.

Four agent processes on one broker; every task is submitted to one hot agent's
direct topic (a camera bound to its Pi), so only placement can spread the
work. Per policy: p50/p99 latency, makespan, and where tasks ran. Plus the
added latency of one offload hop over local execution, from a two-agent
round-robin run whose replies say which tasks went to the peer.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from typing import Any

from fogmesh.bench.rtt_systems import _stop, start_amqtt
from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.percentiles import percentile

POLICIES = ("local", "round-robin", "random", "least-loaded", "energy")
WORK = {"data": "fogmesh", "rounds": 5000}    # ~2.5 ms of CPU in a worker


def progress(msg: str) -> None:
    print(f"[bench placement] {msg}", file=sys.stderr, flush=True)


def agent_process(url: str, root: str, agent_id: str, state_dir: str, *extra: str) -> subprocess.Popen:
    """One ``fogmesh agent`` process with one worker and a fast presence period."""
    return subprocess.Popen([sys.executable, "-m", "fogmesh", "agent", "--id", agent_id, "--broker", url,
                             "--root", root, "--concurrency", "1", "--presence-period", "0.5",
                             "--log-level", "WARNING", *extra],
                            env={**os.environ, "FOGMESH_STATE_DIR": state_dir})


def start_agents(url: str, root: str, policy: str, n: int, state_dir: str) -> list[subprocess.Popen]:
    procs = []
    for i in range(n):
        extra = ["--policy", policy]
        if policy == "energy":   # the hot agent is low, the others charged
            extra += ["--battery", "40" if i == 0 else "90"]
        procs.append(agent_process(url, root, f"a{i}", state_dir, *extra))
    return procs


def wait_ready(client: Any, n: int, timeout: float = 30) -> None:
    wait_ready_ids(client, [f"a{i}" for i in range(n)], timeout=timeout)


def wait_ready_ids(client: Any, ids: list[str], timeout: float = 30) -> None:
    """Until every agent answers a direct echo (and has seen its peers' presence)."""
    deadline = time.monotonic() + timeout
    for agent in ids:
        while True:
            try:
                client.send("echo", {}, agent=agent).result(timeout=1)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
    time.sleep(1.2)   # two presence periods: every agent knows the others


def run_policy(url: str, policy: str, args: argparse.Namespace, state_dir: str) -> dict[str, Any]:
    from fogmesh.devices.client import FogClient
    root = f"bench/{uuid.uuid4().hex[:8]}"
    procs = start_agents(url, root, policy, args.agents, state_dir)
    try:
        with FogClient(url, root=root) as client:
            wait_ready(client, args.agents)
            start = time.perf_counter()
            futures = [client.send("sha256", WORK, weight="medium", agent="a0")
                       for _ in range(args.tasks)]
            results = [f.result(timeout=300) for f in futures]
            makespan = time.perf_counter() - start
            assert client.duplicates == 0, "a task was answered twice"
        lat = [r.latency_ms for r in results]
        per_agent: dict[str, int] = {}
        for r in results:
            per_agent[r.worker] = per_agent.get(r.worker, 0) + 1
        return {"policy": policy, "tasks": len(results), "ok": sum(r.ok for r in results),
                "p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99),
                "makespan_s": makespan, "offloaded": sum(r.tier == "fog" for r in results),
                "per_agent": dict(sorted(per_agent.items()))}
    finally:
        for p in procs:
            _stop(p)


def offload_hop(url: str, args: argparse.Namespace, state_dir: str) -> dict[str, Any]:
    """Medium-weight echo through a two-agent round-robin: every other task is
    offloaded, so local and one-hop latencies come from the same run."""
    from fogmesh.devices.client import FogClient
    root = f"bench/{uuid.uuid4().hex[:8]}"
    procs = start_agents(url, root, "round-robin", 2, state_dir)
    try:
        with FogClient(url, root=root) as client:
            wait_ready(client, 2)
            local, fog = [], []
            for _ in range(args.hops):
                r = client.send("echo", {"p": "x" * 80}, weight="medium", agent="a0").result(timeout=10)
                (fog if r.tier == "fog" else local).append(r.latency_ms)
        return {"local_p50_ms": percentile(local, 0.5), "fog_p50_ms": percentile(fog, 0.5),
                "local_p99_ms": percentile(local, 0.99), "fog_p99_ms": percentile(fog, 0.99),
                "added_p50_ms": percentile(fog, 0.5) - percentile(local, 0.5), "samples": len(local) + len(fog)}
    finally:
        for p in procs:
            _stop(p)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile
    report: dict[str, Any] = {"config": {"agents": args.agents, "tasks": args.tasks,
                                         "work": "sha256 rounds=5000 (~2.5 ms CPU)",
                                         "submissions": "all to agent a0 (hot)"}, "brokers": {}}
    for name in [b.strip() for b in args.brokers.split(",") if b.strip()]:
        with ExitStack() as stack:
            state_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="fogmesh-bench-"))
            if name == "mosquitto":
                m = Mosquitto(persistence=False).start()
                stack.callback(m.cleanup)
                url = m.url
            else:
                proc, port = start_amqtt()
                stack.callback(_stop, proc)
                url = f"mqtt://127.0.0.1:{port}"
            rows = []
            for policy in args.policies.split(","):
                progress(f"{name}: policy {policy}, {args.tasks} tasks")
                rows.append(run_policy(url, policy, args, state_dir))
            progress(f"{name}: offload hop, {args.hops} medium echoes")
            report["brokers"][name] = {"policies": rows, "hop": offload_hop(url, args, state_dir)}
    return report


def render(report: dict[str, Any]) -> str:
    c = report["config"]
    out = [f"fogmesh bench placement: {c['agents']} agents (1 worker each), {c['tasks']} medium "
           f"tasks ({c['work']}), {c['submissions']}"]
    for broker, data in report["brokers"].items():
        out += ["", f"broker: {broker}",
                f"{'policy':<13} {'p50 ms':>9} {'p99 ms':>9} {'makespan s':>11} {'offloaded':>10}  tasks per agent",
                "-" * 80]
        for r in data["policies"]:
            spread = " ".join(f"{k}:{v}" for k, v in r["per_agent"].items())
            out.append(f"{r['policy']:<13} {r['p50_ms']:>9.1f} {r['p99_ms']:>9.1f} {r['makespan_s']:>11.2f} "
                       f"{r['offloaded']:>10}  {spread}")
        h = data["hop"]
        out.append(f"one offload hop (medium echo, {h['samples']} samples): local p50 {h['local_p50_ms']:.3f} ms, "
                   f"offloaded p50 {h['fog_p50_ms']:.3f} ms, added {h['added_p50_ms']:.3f} ms "
                   f"(target < 2 ms on mosquitto)")
    return "\n".join(out)
