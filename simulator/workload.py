"""Where simulated tasks come from: Poisson arrivals (from devices bound to
nodes, or round-robin over landing nodes) or a CSV trace. Generated lazily, one
arrival at a time, so a million-task run does not hold a million tasks."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from fogmesh.simulator.scenario import Workload

WEIGHTS = ("light", "medium", "heavy")


@dataclass
class SimTask:
    id: int
    weight: str
    work_ms: float
    size_kb: float
    created: float
    landing: str
    tier: str = "local"


def arrivals(wl: Workload, nodes: list[str], rng: random.Random) -> Iterator[SimTask]:
    if wl.trace:
        yield from trace_arrivals(Path(wl.trace), wl, nodes)
        return
    landing = list(wl.landing) or nodes
    weights, probs = zip(*sorted(wl.mix.items()))
    t, n = 0.0, 0
    while True:
        t += rng.expovariate(wl.rate_per_s)
        if (wl.tasks and n >= wl.tasks) or (not wl.tasks and t >= wl.duration_s):
            return
        w = rng.choices(weights, probs)[0]
        if wl.devices:
            device = rng.randrange(wl.devices)
            where = landing[int(len(landing) * (device / wl.devices) ** wl.device_skew)]
        else:
            where = landing[n % len(landing)]
        yield SimTask(n, w, wl.work_ms[w], wl.size_kb[w], t, where)
        n += 1


def trace_arrivals(path: Path, wl: Workload, nodes: list[str]) -> Iterator[SimTask]:
    """Rows ``time,device,kind,size_kb`` (header required; ``size_kb`` optional).
    ``kind`` is light/medium/heavy; each device is bound to a node in order of
    first appearance (round-robin), as devices are to their nearest fog node."""
    bound: dict[str, str] = {}
    last = 0.0
    try:
        f = path.open(newline="")
    except OSError as exc:
        raise ValueError(f"cannot read trace {path}: {exc}") from exc
    with f:
        for n, row in enumerate(csv.DictReader(f)):
            try:
                t, device, weight = float(row["time"]), row["device"], row["kind"].strip()
                size = float(row.get("size_kb") or wl.size_kb.get(weight, 1.0))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path} row {n + 2}: need time,device,kind[,size_kb]: {exc}") from exc
            if weight not in WEIGHTS:
                raise ValueError(f"{path} row {n + 2}: kind must be one of {', '.join(WEIGHTS)}, not {weight!r}")
            if t < last:
                raise ValueError(f"{path} row {n + 2}: times must not go backwards")
            last = t
            node = bound.setdefault(device, nodes[len(bound) % len(nodes)])
            yield SimTask(n, weight, wl.work_ms[weight], size, t, node)
