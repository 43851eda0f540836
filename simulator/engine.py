"""The discrete-event engine. Pure and deterministic by seed.

Each node runs the *same* policy objects as a live agent
(:func:`edge_agent.placement.place_task` over
:mod:`edge_agent.policies`), fed with what a live agent would see: its own
state, and its peers' presence as last announced (every presence period, so
the staleness is the real one). Batteries are the agents'
:class:`~edge_agent.battery.BatteryModel`.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from edge_agent.battery import BatteryModel
from edge_agent.peers import Peer
from edge_agent.placement import Cloud, Offload, SelfState, place_task
from edge_agent.policies import make_policy
from fogmesh.messages import Battery, Presence
from simulator.scenario import Scenario

KIND = "work"


@dataclass
class _Task:
    id: int
    weight: str
    work_ms: float
    size_kb: float
    created: float
    landing: str
    tier: str = "local"


@dataclass
class _Node:
    name: str
    speed: float
    capacity: int
    battery: BatteryModel | None
    policy: Any
    queue: deque = field(default_factory=deque)
    running: int = 0
    alive: bool = True
    energy_wh: float = 0.0
    last_energy_t: float = 0.0
    flat_at: float | None = None
    battery_trace: list[tuple[float, float]] = field(default_factory=list)

    def state(self) -> SelfState:
        pct = self.battery.percent if self.battery else None
        return SelfState(agent=self.name, queued=len(self.queue), running=self.running,
                         capacity=self.capacity, battery=pct)

    def presence(self, now: float) -> Presence:
        b = Battery(self.battery.percent, False) if self.battery else None
        return Presence(agent=self.name, state="online" if self.alive else "offline", ts=now,
                        queue=len(self.queue), running=self.running, capacity=self.capacity,
                        kinds=(KIND,), battery=b)


@dataclass
class Result:
    policy: str
    generated: int = 0
    completed: int = 0
    missed: int = 0
    dropped: int = 0
    latencies: list[float] = field(default_factory=list)
    tiers: dict[str, int] = field(default_factory=lambda: {"local": 0, "fog": 0, "cloud": 0})
    bytes_to_cloud: float = 0.0
    energy_wh: float = 0.0
    first_flat_min: float | None = None
    events: int = 0
    battery_traces: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, int(0.99 * (len(lat) - 1)))] if lat else None
        done = self.completed + self.missed
        return {"policy": self.policy, "generated": self.generated, "completed_in_deadline": self.completed,
                "missed_deadline": self.missed, "dropped": self.dropped,
                "deadline_hit_pct": 100.0 * self.completed / self.generated if self.generated else 0.0,
                "mean_ms": sum(lat) / len(lat) if lat else None, "p99_ms": p99,
                "local": self.tiers["local"], "fog": self.tiers["fog"], "cloud": self.tiers["cloud"],
                "bytes_to_cloud": int(self.bytes_to_cloud), "energy_wh": round(self.energy_wh, 3),
                "first_battery_flat_min": self.first_flat_min, "events": self.events,
                "finished": done}


def simulate(scenario: Scenario, policy_name: str, *, seed: int | None = None,
             progress: Callable[[float], None] | None = None) -> Result:
    rng = random.Random(scenario.seed if seed is None else seed)
    nodes = {n.name: _Node(n.name, n.speed, n.capacity, n.battery,
                           make_policy(policy_name, **({"seed": rng.randrange(2**31)} if policy_name == "random" else {})))
             for n in scenario.nodes}
    net, wl = scenario.network, scenario.workload
    res = Result(policy_name)
    heap: list[tuple[float, int, str, Any]] = []
    seq = 0

    def push(t: float, kind: str, data: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, kind, data))

    landing = list(wl.landing) or list(nodes)
    weights, probs = zip(*sorted(wl.mix.items()))
    t, n = 0.0, 0
    while True:                                     # the whole workload, drawn up front from the seed
        t += rng.expovariate(wl.rate_per_s)
        if t >= wl.duration_s:
            break
        w = rng.choices(weights, probs)[0]
        push(t, "arrive", _Task(n, w, wl.work_ms[w], wl.size_kb[w], t, landing[n % len(landing)]))
        n += 1
    res.generated = n
    snapshots: dict[str, Presence] = {name: node.presence(0.0) for name, node in nodes.items()}
    push(0.0, "presence", None)

    def account(node: _Node, now: float) -> None:
        dt = now - node.last_energy_t
        if dt > 0 and node.battery is not None and node.alive:
            node.energy_wh += (node.battery.idle_w + node.battery.task_w * node.running) * dt / 3600
            node.battery = node.battery.advance(dt, running=node.running)
            if node.battery.percent <= 0.0:
                node.alive = False
                node.flat_at = now
                res.dropped += len(node.queue) + node.running
                node.queue.clear()
                node.running = 0
        node.last_energy_t = now

    def run_time(node: _Node, task: _Task) -> float:
        return task.work_ms / 1000 / node.speed

    def start(node: _Node, now: float) -> None:
        while node.alive and node.queue and node.running < node.capacity:
            task = node.queue.popleft()
            node.running += 1
            push(now + run_time(node, task), "finish", (node.name, task))

    def finish(task: _Task, now: float) -> None:
        latency = 1000 * (now - task.created)
        res.latencies.append(latency)
        res.tiers[task.tier] += 1
        if latency <= wl.deadline_ms:
            res.completed += 1
        else:
            res.missed += 1

    def peers_of(name: str, now: float) -> list[Peer]:
        return [Peer(p, seen_at=now) for other, p in sorted(snapshots.items()) if other != name]

    while heap:
        now, _, kind, data = heapq.heappop(heap)
        res.events += 1
        if kind == "presence":
            for node in nodes.values():
                account(node, now)
                snapshots[node.name] = node.presence(now)
                if node.battery is not None:
                    node.battery_trace.append((now, node.battery.percent))
            if progress:
                progress(min(1.0, now / wl.duration_s))
            if now < wl.duration_s or any(nd.running or nd.queue for nd in nodes.values() if nd.alive):
                push(now + scenario.presence_period_s, "presence", None)
        elif kind == "arrive":
            task: _Task = data
            node = nodes[task.landing]
            account(node, now)
            if not node.alive:
                res.dropped += 1
                continue
            decision = place_task(node.policy, kind=KIND, weight=task.weight, me=node.state(),
                                  peers=peers_of(node.name, now), run_ms=task.work_ms / node.speed,
                                  cloud=net.cloud)
            if isinstance(decision, Cloud):
                task.tier = "cloud"
                res.bytes_to_cloud += task.size_kb * 1024
                transfer = task.size_kb * 8 / 1000 / net.cloud_mbps
                push(now + net.cloud_rtt_ms / 1000 + transfer + task.work_ms / 1000 / net.cloud_speed,
                     "cloud_done", task)
            elif isinstance(decision, Offload):
                transfer = task.size_kb * 8 / 1000 / net.fog_mbps
                push(now + net.fog_latency_ms / 1000 + transfer, "offered", (decision.peer, task))
            else:
                node.queue.append(task)
                start(node, now)
        elif kind == "offered":
            peer_name, task = data
            peer = nodes[peer_name]
            account(peer, now)
            if peer.alive and peer.policy.accepts(peer.state()):
                task.tier = "fog"
                peer.queue.append(task)
                start(peer, now)
            else:                                   # rejected: back to its landing node
                origin = nodes[task.landing]
                if origin.alive:
                    origin.queue.append(task)
                    start(origin, now + net.fog_latency_ms / 1000)
                else:
                    res.dropped += 1
        elif kind == "finish":
            name, task = data
            node = nodes[name]
            account(node, now)
            if not node.alive:
                continue                            # counted as dropped when it ran flat
            node.running -= 1
            extra = net.fog_latency_ms / 1000 if task.tier == "fog" else 0.0
            finish(task, now + extra)
            start(node, now)
        elif kind == "cloud_done":
            finish(data, now + net.cloud_rtt_ms / 2000)
    for node in nodes.values():
        res.energy_wh += node.energy_wh
        res.battery_traces[node.name] = node.battery_trace
    flats = [nd.flat_at for nd in nodes.values() if nd.flat_at is not None]
    res.first_flat_min = round(min(flats) / 60, 2) if flats else None
    return res


def conserved(result: Result) -> bool:
    """Every generated task completed, missed its deadline, or was dropped."""
    return result.completed + result.missed + result.dropped == result.generated

