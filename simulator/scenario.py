"""Scenarios: nodes, network and workload, from a TOML file. Pure data."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.battery import BatteryModel, SolarProfile


@dataclass(frozen=True)
class NodeSpec:
    name: str
    speed: float = 1.0                 # work per second relative to the reference node
    capacity: int = 1                  # tasks run at once
    battery: BatteryModel | None = None


@dataclass(frozen=True)
class Network:
    fog_latency_ms: float = 2.0        # one hop between fog nodes, each way
    fog_mbps: float = 20.0
    cloud_rtt_ms: float = 80.0
    cloud_mbps: float = 10.0
    cloud_speed: float = 4.0           # the cloud runs heavy work this much faster
    cloud: bool = True


@dataclass(frozen=True)
class Workload:
    rate_per_s: float = 2.0            # Poisson arrivals over all devices
    duration_s: float = 600.0
    mix: dict[str, float] = field(default_factory=lambda: {"light": 0.5, "medium": 0.4, "heavy": 0.1})
    work_ms: dict[str, float] = field(default_factory=lambda: {"light": 20, "medium": 300, "heavy": 2000})
    size_kb: dict[str, float] = field(default_factory=lambda: {"light": 1, "medium": 50, "heavy": 230})
    deadline_ms: float = 2000.0
    landing: tuple[str, ...] = ()      # nodes devices submit to (default: all, round-robin)


@dataclass(frozen=True)
class Scenario:
    name: str
    nodes: tuple[NodeSpec, ...]
    network: Network = field(default_factory=Network)
    workload: Workload = field(default_factory=Workload)
    presence_period_s: float = 5.0
    seed: int = 1
    policies: tuple[str, ...] = ("local", "round-robin", "random", "least-loaded", "energy")


def _battery(d: dict[str, Any] | None) -> BatteryModel | None:
    if not d:
        return None
    solar = SolarProfile(tuple(sorted((float(t), float(w)) for t, w in d.get("solar", []))))
    return BatteryModel(capacity_wh=float(d.get("capacity_wh", 6.7)), percent=float(d.get("percent", 100)),
                        idle_w=float(d.get("idle_w", 1.4)), task_w=float(d.get("task_w", 1.6)), solar=solar)


def load(path: str | Path) -> Scenario:
    d = tomllib.loads(Path(path).read_text())
    nodes = tuple(NodeSpec(name=n["name"], speed=float(n.get("speed", 1.0)), capacity=int(n.get("capacity", 1)),
                           battery=_battery(n.get("battery"))) for n in d["nodes"])
    net = Network(**d.get("network", {}))
    w = d.get("workload", {})
    workload = Workload(**{k: (tuple(v) if k == "landing" else v) for k, v in w.items()})
    return Scenario(name=d.get("name", Path(path).stem), nodes=nodes, network=net, workload=workload,
                    presence_period_s=float(d.get("presence_period_s", 5.0)), seed=int(d.get("seed", 1)),
                    policies=tuple(d.get("policies", Scenario.policies)))
