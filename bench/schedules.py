"""Random fault schedules, seeded and replayable (pure: no clock, no IO).

``random_schedule(seed, ...)`` is a list of :class:`Fault` s: at ``at``
seconds into a run, do ``action`` to ``target`` (an agent id, or
``"broker"``) and undo it ``down_s`` later (start it again, or SIGCONT a
stopped one). The same seed gives the same schedule on every machine, so a
failure found by ``fogmesh bench faults --random N`` is replayed with
``--seed S``. Faults on one target never overlap; a broker fault is never
scheduled while an agent is down for a long time, so a run always ends with
everything back up.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

AGENT_ACTIONS = ("kill", "term", "stop")        # SIGKILL, SIGTERM, SIGSTOP
BROKER_ACTIONS = ("kill", "term")


@dataclass(frozen=True)
class Fault:
    at: float
    target: str          # an agent id, or "broker"
    action: str          # "kill" | "term" | "stop"
    down_s: float

    @property
    def back_at(self) -> float:
        return self.at + self.down_s

    def describe(self) -> str:
        signal = {"kill": "SIGKILL", "term": "SIGTERM", "stop": "SIGSTOP"}[self.action]
        back = "SIGCONT" if self.action == "stop" else "started again"
        return f"{self.at:6.1f} s  {self.target:8} {signal:7} {back} after {self.down_s:.1f} s"


def random_schedule(seed: int, *, duration_s: float, agents: Sequence[str], broker: bool = True,
                    mean_gap_s: float = 6.0, max_down_s: float = 12.0, quiet_end_s: float = 10.0) -> list[Fault]:
    """Faults at random times (exponential gaps of ``mean_gap_s``) over
    ``duration_s``, every one undone by ``duration_s - quiet_end_s``."""
    if not agents:
        raise ValueError("a schedule needs at least one agent")
    rng = random.Random(seed)
    targets = [*agents, *(["broker"] if broker else [])]
    busy_until = {t: 0.0 for t in targets}
    last_back = duration_s - quiet_end_s
    faults: list[Fault] = []
    at = rng.uniform(1.0, mean_gap_s)
    while at < last_back - 1.0:
        target = rng.choice(targets)
        actions = BROKER_ACTIONS if target == "broker" else AGENT_ACTIONS
        action = rng.choice(actions)
        at = round(at, 1)
        down = round(rng.uniform(0.5, max_down_s if target != "broker" else max_down_s / 3), 1)
        down = min(down, math.floor((last_back - at) * 10) / 10)
        free = busy_until[target] <= at
        if target == "broker":        # the broker falls while every agent is up, or briefly down
            free = free and all(busy_until[a] <= at + 1.0 for a in agents)
        if free and down >= 0.5:
            faults.append(Fault(at=at, target=target, action=action, down_s=down))
            busy_until[target] = at + down + 1.0
        at += rng.expovariate(1.0 / mean_gap_s)
    return faults
