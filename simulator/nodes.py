"""One simulated fog node: its queue, its power draw (awake, busy, asleep) and
its battery (the agents' own :class:`~fogmesh.edge_agent.battery.BatteryModel`)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from fogmesh.announcements import Battery, Presence
from fogmesh.edge_agent.battery import BatteryModel
from fogmesh.edge_agent.peers import Peer
from fogmesh.edge_agent.placement import SelfState
from fogmesh.simulator.scenario import NodeSpec

KIND = "work"


@dataclass
class SimNode:
    spec: NodeSpec
    policy: Any
    battery: BatteryModel | None = None
    queue: deque = field(default_factory=deque)
    running: int = 0
    alive: bool = True
    energy_wh: float = 0.0
    last_t: float = 0.0
    idle_since: float | None = 0.0     # None while busy
    flat_at: float | None = None
    battery_trace: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.battery = self.spec.battery

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def capacity(self) -> int:
        return self.spec.capacity

    def state(self) -> SelfState:
        pct = self.battery.percent if self.battery else None
        return SelfState(agent=self.name, queued=len(self.queue), running=self.running,
                         capacity=self.capacity, battery=pct)

    def peer(self, now: float) -> Peer:
        """What peers see of this node: its presence as announced at ``now``."""
        b = Battery(self.battery.percent, False) if self.battery else None
        return Peer(Presence(agent=self.name, state="online" if self.alive else "offline", ts=now,
                             queue=len(self.queue), running=self.running, capacity=self.capacity,
                             kinds=(KIND,), battery=b), seen_at=now)

    def asleep(self, now: float) -> bool:
        s = self.spec
        return (s.sleep_w is not None and self.idle_since is not None
                and now >= self.idle_since + s.sleep_after_s)

    def account(self, now: float) -> bool:
        """Energy and battery from the last event to ``now`` (the node's state
        was constant meanwhile). Returns True if the battery ran flat."""
        dt = now - self.last_t
        self.last_t = now
        if dt <= 0 or not self.alive:
            return False
        s = self.spec
        asleep_dt = 0.0
        if s.sleep_w is not None and self.idle_since is not None:
            asleep_dt = max(0.0, min(dt, now - (self.idle_since + s.sleep_after_s)))
        awake_dt = dt - asleep_dt
        idle_w = self.battery.idle_w if self.battery else s.idle_w
        task_w = self.battery.task_w if self.battery else s.task_w
        self.energy_wh += ((idle_w + task_w * self.running) * awake_dt
                           + (s.sleep_w or 0.0) * asleep_dt) / 3600
        if self.battery is not None:
            b = self.battery.advance(awake_dt, running=self.running)
            if asleep_dt > 0:
                b = replace(replace(b, idle_w=s.sleep_w or 0.0).advance(asleep_dt, running=0),
                            idle_w=idle_w)
            self.battery = b
            if b.percent <= 0.0:
                self.alive = False
                self.flat_at = now
                return True
        return False
