"""The discrete-event engine. Pure and deterministic by seed.

Each node runs the *same* policy objects as a live agent
(:func:`fogmesh.edge_agent.placement.place_task` over :mod:`fogmesh.edge_agent.policy_registry`), fed
with what a live agent would see: its own state, and its site's peers'
presence as last announced (at the pace a live agent keeps at that site's
size, :func:`fogmesh.edge_agent.presence.presence_pace`, so the staleness is
the real one). Batteries are the agents' :class:`~fogmesh.edge_agent.battery.BatteryModel`.
"""

from __future__ import annotations

import heapq
import random
from array import array
from dataclasses import dataclass, field
from typing import Any, Callable

from fogmesh.edge_agent.peers import Peer, with_outstanding
from fogmesh.edge_agent.placement import Cloud, Offload, place_task
from fogmesh.edge_agent.policy_registry import make_policy
from fogmesh.simulator.nodes import KIND, SimNode
from fogmesh.simulator.scenario import Scenario
from fogmesh.simulator.workload import SimTask, arrivals


@dataclass
class Result:
    policy: str
    generated: int = 0
    completed: int = 0
    missed: int = 0
    dropped: int = 0
    latencies: array = field(default_factory=lambda: array("d"))
    tiers: dict[str, int] = field(default_factory=lambda: {"local": 0, "fog": 0, "cloud": 0})
    bytes_to_cloud: float = 0.0
    energy_wh: float = 0.0
    first_flat_min: float | None = None
    node_minutes: float = 0.0
    events: int = 0
    presence_every_s: float = 0.0        # how often each node announced (the pace at its site's size)
    presence_in_per_node_s: float = 0.0  # presence messages each node received per second
    battery_traces: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    # (t, node, "offload" | "take-back", battery %) whenever a policy that
    # switches (energy) changes its mind: the case study's story
    switches: list[tuple[float, str, str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, int(0.99 * (len(lat) - 1)))] if lat else None
        return {"policy": self.policy, "generated": self.generated, "completed_in_deadline": self.completed,
                "missed_deadline": self.missed, "dropped": self.dropped,
                "deadline_hit_pct": 100.0 * self.completed / self.generated if self.generated else 0.0,
                "mean_ms": sum(lat) / len(lat) if lat else None, "p99_ms": p99,
                "local": self.tiers["local"], "fog": self.tiers["fog"], "cloud": self.tiers["cloud"],
                "bytes_to_cloud": int(self.bytes_to_cloud), "energy_wh": round(self.energy_wh, 3),
                "first_battery_flat_min": self.first_flat_min, "node_minutes": round(self.node_minutes, 1),
                "events": self.events, "finished": self.completed + self.missed,
                "presence_every_s": round(self.presence_every_s, 2),
                "presence_in_per_node_s": round(self.presence_in_per_node_s, 2),
                "switches": [list(s) for s in self.switches]}


def _sites(names: list[str], size: int) -> dict[str, list[str]]:
    """Each node's peers: the other nodes on its edge broker. Nodes are dealt
    to sites in turn (node i to site i mod sites), so node groups mix."""
    if size <= 0 or size >= len(names):
        return {n: [o for o in names if o != n] for n in names}
    count = -(-len(names) // size)
    members: list[list[str]] = [names[s::count] for s in range(count)]
    return {n: [o for o in members[i % count] if o != n] for i, n in enumerate(names)}


def simulate(scenario: Scenario, policy_name: str, *, seed: int | None = None,
             progress: Callable[[float], None] | None = None) -> Result:
    rng = random.Random(scenario.seed if seed is None else seed)
    nodes: dict[str, SimNode] = {}
    for spec in scenario.nodes:
        options = {"seed": rng.randrange(2**31)} if policy_name == "random" else {}
        nodes[spec.name] = SimNode(spec, make_policy(policy_name, **options))
    names = list(nodes)
    net, wl = scenario.network, scenario.workload
    res = Result(policy_name)
    heap: list[tuple[float, int, str, Any]] = []
    seq = 0

    def push(t: float, kind: str, data: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (t, seq, kind, data))

    source = arrivals(wl, names, rng)
    first = next(source, None)
    if first is not None:
        push(first.created, "arrive", first)
    horizon = float(wl.tasks) / wl.rate_per_s if wl.tasks else wl.duration_s
    site_of = _sites(names, net.site_size)
    site = 1 + max((len(peers) for peers in site_of.values()), default=0)
    presence_every = scenario.presence_every_s(site)
    res.presence_every_s, res.presence_in_per_node_s = presence_every, (site - 1) / presence_every
    seen: dict[str, Peer] = {name: node.peer(0.0) for name, node in nodes.items()}
    switching = {name: node.policy for name, node in nodes.items() if hasattr(node.policy, "offloading")}
    push(0.0, "presence", None)
    arrivals_open = first is not None
    held: dict[tuple[str, str], int] = {}       # (origin, peer) -> offers the peer still holds

    def views(origin: str) -> list[Peer]:
        return [with_outstanding(seen[o], held.get((origin, o), 0)) for o in site_of[origin]]

    def settle(task: SimTask, peer: str) -> None:
        key = (task.landing, peer)
        held[key] = held.get(key, 1) - 1

    def account(node: SimNode, now: float) -> None:
        if node.account(now):          # ran flat: its work is lost
            res.dropped += len(node.queue) + node.running
            node.queue.clear()
            node.running = 0

    def start(node: SimNode, now: float) -> None:
        while node.alive and node.queue and node.running < node.capacity:
            task: SimTask = node.queue.popleft()
            delay = node.spec.wake_ms / 1000 if node.asleep(now) else 0.0
            node.running += 1
            node.idle_since = None
            push(now + delay + task.work_ms / 1000 / node.spec.speed, "finish", (node.name, task))

    def finish(task: SimTask, now: float) -> None:
        latency = 1000 * (now - task.created)
        res.latencies.append(latency)
        res.tiers[task.tier] += 1
        if latency <= wl.deadline_ms:
            res.completed += 1
        else:
            res.missed += 1

    def enqueue(node: SimNode, task: SimTask, now: float) -> None:
        node.queue.append(task)
        start(node, now)

    now = 0.0
    while heap:
        now, _, kind, data = heapq.heappop(heap)
        res.events += 1
        if kind == "presence":
            for node in nodes.values():
                account(node, now)
                seen[node.name] = node.peer(now)
                if node.battery is not None:
                    node.battery_trace.append((now, round(node.battery.percent, 2)))
            if progress:
                progress(min(1.0, now / horizon) if horizon else 1.0)
            if arrivals_open or any(nd.running or nd.queue for nd in nodes.values() if nd.alive):
                push(now + presence_every, "presence", None)
        elif kind == "arrive":
            task: SimTask = data
            res.generated += 1
            nxt = next(source, None)
            if nxt is not None:
                push(nxt.created, "arrive", nxt)
            else:
                arrivals_open = False
            node = nodes[task.landing]
            account(node, now)
            if not node.alive:
                res.dropped += 1
                continue
            policy = switching.get(node.name)
            before = policy.offloading if policy is not None else False
            decision = place_task(node.policy, kind=KIND, weight=task.weight, me=node.state(),
                                  peers=views(node.name),
                                  run_ms=task.work_ms / node.spec.speed, cloud=net.cloud)
            if policy is not None and policy.offloading != before and node.battery is not None:
                res.switches.append((round(now, 1), node.name, "offload" if policy.offloading else "take-back",
                                     round(node.battery.percent, 2)))
            if isinstance(decision, Cloud):
                task.tier = "cloud"
                res.bytes_to_cloud += task.size_kb * 1024
                transfer = task.size_kb * 8 / 1000 / net.cloud_mbps
                push(now + net.cloud_rtt_ms / 1000 + transfer + task.work_ms / 1000 / net.cloud_speed,
                     "cloud_done", task)
            elif isinstance(decision, Offload):
                held[(node.name, decision.peer)] = held.get((node.name, decision.peer), 0) + 1
                transfer = task.size_kb * 8 / 1000 / net.fog_mbps
                push(now + net.fog_latency_ms / 1000 + transfer, "offered", (decision.peer, task))
            else:
                enqueue(node, task, now)
        elif kind == "offered":
            peer_name, task = data
            peer = nodes[peer_name]
            account(peer, now)
            if peer.alive and peer.policy.accepts(peer.state()):
                task.tier = "fog"
                enqueue(peer, task, now)
            else:                                   # rejected: back to its landing node
                settle(task, peer_name)
                origin = nodes[task.landing]
                account(origin, now)
                if origin.alive:
                    enqueue(origin, task, now + net.fog_latency_ms / 1000)
                else:
                    res.dropped += 1
        elif kind == "finish":
            name, task = data
            node = nodes[name]
            account(node, now)
            if not node.alive:
                continue                            # counted as dropped when it ran flat
            node.running -= 1
            if task.tier == "fog":
                settle(task, name)
            extra = net.fog_latency_ms / 1000 if task.tier == "fog" else 0.0
            finish(task, now + extra)
            start(node, now)
            if node.running == 0 and not node.queue:
                node.idle_since = now
        elif kind == "cloud_done":
            finish(data, now + net.cloud_rtt_ms / 2000)
    for node in nodes.values():
        account(node, now)
        res.energy_wh += node.energy_wh
        res.node_minutes += (node.flat_at if node.flat_at is not None else now) / 60
        if node.battery_trace:
            res.battery_traces[node.name] = node.battery_trace
    flats = [nd.flat_at for nd in nodes.values() if nd.flat_at is not None]
    res.first_flat_min = round(min(flats) / 60, 2) if flats else None
    return res


def conserved(result: Result) -> bool:
    """Every generated task completed, missed its deadline, or was dropped."""
    return result.completed + result.missed + result.dropped == result.generated
