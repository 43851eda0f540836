"""Scenarios: nodes, network and workload, from a TOML file. Pure data.

Nodes are listed one by one (``[[nodes]]``) or in groups (``[[node_groups]]``
with ``prefix`` and ``count``), so a city of 1,000 nodes is a few lines.
``scale`` (``fogmesh simulate --scale 0.1``) shrinks groups, devices and the
arrival rate together, keeping the load per node: the CI-sized form of a big
scenario.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fogmesh.edge_agent.battery import BatteryModel, SolarProfile
from fogmesh.edge_agent.presence import presence_pace


@dataclass(frozen=True)
class NodeSpec:
    name: str
    speed: float = 1.0                 # work per second relative to the reference node
    capacity: int = 1                  # tasks run at once
    battery: BatteryModel | None = None
    idle_w: float = 0.0                # power without a battery model (mains nodes), for energy totals
    task_w: float = 0.0
    sleep_w: float | None = None       # power asleep; None: never sleeps
    sleep_after_s: float = 30.0        # idle this long -> asleep
    wake_ms: float = 0.0               # a task that wakes the node starts this much later


@dataclass(frozen=True)
class Network:
    fog_latency_ms: float = 2.0        # one hop between fog nodes, each way
    fog_mbps: float = 20.0
    cloud_rtt_ms: float = 80.0
    cloud_mbps: float = 10.0
    cloud_speed: float = 4.0           # the cloud runs heavy work this much faster
    cloud: bool = True
    site_size: int = 0                 # nodes per edge broker; peers are the same site's (0: all)


@dataclass(frozen=True)
class Workload:
    rate_per_s: float = 2.0            # Poisson arrivals over all devices
    duration_s: float = 600.0
    mix: dict[str, float] = field(default_factory=lambda: {"light": 0.5, "medium": 0.4, "heavy": 0.1})
    work_ms: dict[str, float] = field(default_factory=lambda: {"light": 20, "medium": 300, "heavy": 2000})
    size_kb: dict[str, float] = field(default_factory=lambda: {"light": 1, "medium": 50, "heavy": 230})
    deadline_ms: float = 2000.0
    landing: tuple[str, ...] = ()      # nodes devices submit to (default: all, round-robin)
    devices: int = 0                   # >0: tasks come from this many devices, each bound to a node
    device_skew: float = 1.0           # >1: devices crowd onto the first nodes (hot spots)
    tasks: int = 0                     # >0: stop after this many tasks (instead of duration_s)
    trace: str | None = None           # CSV (time,device,kind,size_kb) instead of Poisson arrivals


@dataclass(frozen=True)
class Scenario:
    name: str
    nodes: tuple[NodeSpec, ...]
    network: Network = field(default_factory=Network)
    workload: Workload = field(default_factory=Workload)
    presence_period_s: float = 5.0
    seed: int = 1
    policies: tuple[str, ...] = ("local", "round-robin", "random", "least-loaded", "energy")
    presence_paced: bool = True         # the agents' pace (slower at a large site); False: every period

    def presence_every_s(self, site: int) -> float:
        """How often a node of a ``site`` of nodes announces (what live agents do)."""
        if not self.presence_paced:
            return self.presence_period_s
        return presence_pace(base_period=self.presence_period_s, site=site).period


def _battery(d: dict[str, Any] | None) -> BatteryModel | None:
    if not d:
        return None
    solar = SolarProfile(tuple(sorted((float(t), float(w)) for t, w in d.get("solar", []))))
    return BatteryModel(capacity_wh=float(d.get("capacity_wh", 6.7)), percent=float(d.get("percent", 100)),
                        idle_w=float(d.get("idle_w", 1.4)), task_w=float(d.get("task_w", 1.6)), solar=solar)


NODE_FIELDS = ("speed", "capacity", "idle_w", "task_w", "sleep_w", "sleep_after_s", "wake_ms")


def _node(name: str, d: dict[str, Any]) -> NodeSpec:
    unknown = set(d) - set(NODE_FIELDS) - {"name", "battery", "prefix", "count"}
    if unknown:
        raise ValueError(f"node {name}: unknown field(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(NODE_FIELDS)}, battery")
    opts = {k: d[k] for k in NODE_FIELDS if k in d}
    return NodeSpec(name=name, battery=_battery(d.get("battery")), **opts)


def load(path: str | Path, *, scale: float = 1.0) -> Scenario:
    """Read a scenario; a workload trace path is relative to the scenario file."""
    path = Path(path)
    d = tomllib.loads(path.read_text())
    nodes = [_node(n["name"], n) for n in d.get("nodes", [])]
    for g in d.get("node_groups", []):
        count = max(1, round(int(g["count"]) * scale))
        width = len(str(count))
        nodes += [_node(f"{g['prefix']}-{i + 1:0{width}d}", g) for i in range(count)]
    if not nodes:
        raise ValueError(f"{path}: no [[nodes]] or [[node_groups]]")
    net = Network(**d.get("network", {}))
    w = dict(d.get("workload", {}))
    if "landing" in w:
        w["landing"] = tuple(w["landing"])
    if w.get("trace"):
        w["trace"] = str((path.parent / w["trace"]).resolve())
    workload = Workload(**w)
    if scale != 1.0:
        workload = replace(workload, rate_per_s=workload.rate_per_s * scale,
                           devices=max(1, round(workload.devices * scale)) if workload.devices else 0,
                           tasks=max(1, round(workload.tasks * scale)) if workload.tasks else 0)
    return Scenario(name=d.get("name", path.stem), nodes=tuple(nodes), network=net, workload=workload,
                    presence_period_s=float(d.get("presence_period_s", 5.0)), seed=int(d.get("seed", 1)),
                    policies=tuple(d.get("policies", Scenario.policies)))
