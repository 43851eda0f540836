"""``fogmesh bench deploy``: a bundle pushed to 1, 10 and 50 agents on one
mosquitto.

Per fleet size: N ``fogmesh agent`` processes (``--trust-key``, one worker
each) on a fresh root; a signed bundle of ``--size-mb`` (a small package whose
wheel carries that much incompressible data, plus one dependency wheel);
then, timed from the push (the bundle's chunks and the desired state
published, as ``fogmesh deploy`` does) until every agent reports the version
``running``: the seconds, the chunk bytes each agent took in (from its
report: repeats included; the goal is the bundle once, at most 1.1x its
size), and the largest growth of an agent's RSS during the install. Against
it, in the same run, raw MQTT: N plain paho subscribers fetching the same
retained chunks (no verification, no install): the floor of moving those
bytes through this broker.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fogmesh import codec
from fogmesh.bench.wheels import plant_wheels
from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.processes import stop_processes
from fogmesh.deploy.bundle_file import Bundle, build_bundle
from fogmesh.deploy.desired import Desired
from fogmesh.deploy.operator import Operator
from fogmesh.deploy.probe import probe_kinds
from fogmesh.deploy.signing import SigningKey
from fogmesh.mqtt import MqttClient


@dataclass
class DeployRow:
    agents: int
    bundle_mb: float
    seconds: float
    raw_seconds: float
    vs_raw: float
    bytes_per_agent_max: int
    wire_ratio_max: float          # bytes an agent took in / the bundle's payload
    rss_growth_mb_max: float
    all_running: bool


def progress(msg: str) -> None:
    print(f"[bench deploy] {msg}", file=sys.stderr, flush=True)


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class _Sampler:
    """Each agent's largest RSS while a deployment runs (every 0.1 s)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak = {p: _rss_mb(p) for p in pids}
        self.rest = dict(self.peak)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for p in self.pids:
                self.peak[p] = max(self.peak[p], _rss_mb(p))

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def growth(self) -> float:
        return max((self.peak[p] - self.rest[p] for p in self.pids), default=0.0)


def _reports(url: str, root: str) -> tuple[MqttClient, dict[str, dict[str, Any]], threading.Condition]:
    latest: dict[str, dict[str, Any]] = {}
    cond = threading.Condition()

    def on_message(m: Any) -> None:
        if m.payload:
            r = codec.decode(m.payload)
            with cond:
                latest[r["agent"]] = r
                cond.notify_all()

    client = MqttClient(url, on_message=on_message)
    client.start()
    client.subscribe(f"{root}/deploy/reported/+")
    return client, latest, cond


def _wait(cond: threading.Condition, check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with cond:
        while not check():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            cond.wait(min(left, 1.0))
    return True


def _raw_fetch(url: str, topic_filter: str, chunks: int, n: int, timeout: float) -> float:
    """N plain subscribers each getting every retained chunk: seconds until all have."""
    counts = [0] * n
    done = threading.Event()
    lock = threading.Lock()
    clients = []

    def on_message(i: int) -> Any:
        def take(m: Any) -> None:
            with lock:
                counts[i] += 1
                if all(c >= chunks for c in counts):
                    done.set()
        return take

    for i in range(n):
        c = MqttClient(url, on_message=on_message(i))
        c.start()
        clients.append(c)
    started = time.monotonic()
    for c in clients:
        c.subscribe(topic_filter, 1, timeout=None)
    done.wait(timeout)
    seconds = time.monotonic() - started
    for c in clients:
        c.stop()
    return seconds


def _one(url: str, n: int, bundle: Bundle, key: SigningKey, pub: Path, tmp: Path, timeout: float) -> DeployRow:
    root = f"bench/deploy-{uuid.uuid4().hex[:8]}"
    m = bundle.manifest
    progress(f"{n} agent(s): starting")
    procs = [subprocess.Popen([sys.executable, "-m", "fogmesh", "agent", "--id", f"a{i}", "--broker", url,
                               "--root", root, "--trust-key", str(pub), "--concurrency", "1", "--log-level", "WARNING"],
                              env={**os.environ, "FOGMESH_STATE_DIR": str(tmp / f"state-{root[-8:]}-{i}")},
                              stdout=subprocess.DEVNULL)
             for i in range(n)]
    client, latest, cond = _reports(url, root)
    try:
        ids = [f"a{i}" for i in range(n)]
        if not _wait(cond, lambda: all(a in latest for a in ids), 60 + 2 * n):
            raise RuntimeError(f"only {len(latest)} of {n} agents reported")
        progress(f"{n} agent(s): pushing {m.label} ({m.payload_size / 1e6:.1f} MB)")

        def all_running() -> bool:
            return all(latest[a].get("bundles", {}).get(m.name, {}).get("version") == m.version
                       and latest[a]["state"] == "running" for a in ids)

        with _Sampler([p.pid for p in procs]) as sampler, Operator(url, root=root, key=key) as op:
            started = time.monotonic()
            ref = op.put_bundle(bundle)
            op.put_desired(Desired("all", op.serial(), (ref,)))
            ok = _wait(cond, all_running, timeout)
            seconds = time.monotonic() - started
        got = [int(latest[a].get("received", 0)) for a in ids]
        progress(f"{n} agent(s): {seconds:.1f} s; raw MQTT: {n} subscriber(s) fetching the same chunks")
        raw = _raw_fetch(url, f"{root}/deploy/chunks/{m.digest}/+", len(m.chunks), n, timeout)
    finally:
        client.stop()
        stop_processes(procs, timeout=10)
    return DeployRow(agents=n, bundle_mb=round(m.payload_size / 1e6, 2), seconds=round(seconds, 2),
                     raw_seconds=round(raw, 2), vs_raw=round(seconds / raw, 2) if raw else 0.0,
                     bytes_per_agent_max=max(got), wire_ratio_max=round(max(got) / m.payload_size, 3),
                     rss_growth_mb_max=round(sampler.growth(), 1), all_running=ok)


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(x) for x in str(args.agents).split(",") if x.strip()]
    with tempfile.TemporaryDirectory(prefix="fogmesh-bench-deploy-") as t:
        tmp = Path(t)
        key = SigningKey.generate()
        pub = key.save(tmp / "ops.key")
        wheels = plant_wheels(tmp / "wheels", "1.0", padding=int(args.size_mb * 1e6))
        unsigned = build_bundle(wheels, probe=probe_kinds, health={"plant": {"moisture": 1}})
        bundle = Bundle(unsigned.signed.signed_with(key.sign), unsigned.payload)
        broker = Mosquitto().start()
        try:
            rows = [_one(broker.url, n, bundle, key, pub, tmp, args.timeout) for n in sizes]
        finally:
            broker.cleanup()
    return {"rows": [asdict(r) for r in rows], "goal_wire_ratio": 1.1}


def render(report: dict[str, Any]) -> str:
    head = (f"{'agents':>6} {'bundle MB':>9} {'s to running':>12} {'raw MQTT s':>10} {'vs raw':>7} "
            f"{'bytes/agent':>12} {'x bundle':>8} {'RSS +MB':>8}  all running")
    lines = [head, "-" * len(head)]
    for r in report["rows"]:
        lines.append(f"{r['agents']:>6} {r['bundle_mb']:>9.2f} {r['seconds']:>12.2f} {r['raw_seconds']:>10.2f} "
                     f"{r['vs_raw']:>6.2f}x {r['bytes_per_agent_max']:>12,} {r['wire_ratio_max']:>8.3f} "
                     f"{r['rss_growth_mb_max']:>8.1f}  {'yes' if r['all_running'] else 'NO'}")
    lines.append(f"goal: each agent takes the bundle in once, at most {report['goal_wire_ratio']}x its size "
                 "(resumes included); 'raw MQTT': plain subscribers fetching the same retained chunks")
    return "\n".join(lines)
