"""Sensor models for the firmware simulators: what a DHT22 or a PIR would read.

Deterministic by seed (the caller passes a ``random.Random``) and by time
(``now`` is passed in), so a test knows what a simulated room reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


class Rng(Protocol):
    """What a model needs of ``random.Random`` (passed in: models stay pure)."""

    def random(self) -> float: ...

    def gauss(self, mu: float, sigma: float) -> float: ...


@dataclass(frozen=True)
class Reading:
    sensor: str
    value: float
    unit: str
    ts: float
    seq: int

    def to_dict(self) -> dict[str, object]:
        return {"value": self.value, "unit": self.unit, "ts": self.ts, "seq": self.seq}


class SensorModel(Protocol):
    name: str
    unit: str

    def value(self, now: float, rng: Rng) -> float: ...


@dataclass(frozen=True)
class Temperature:
    """A day-long sine around ``mean`` plus noise (°C)."""

    name: str = "temperature"
    unit: str = "C"
    mean: float = 21.0
    swing: float = 3.0
    noise: float = 0.2

    def value(self, now: float, rng: Rng) -> float:
        day = math.sin(2 * math.pi * (now % 86400) / 86400)
        return round(self.mean + self.swing * day + rng.gauss(0, self.noise), 2)


@dataclass(frozen=True)
class Humidity:
    name: str = "humidity"
    unit: str = "%"
    mean: float = 55.0
    noise: float = 1.0

    def value(self, now: float, rng: Rng) -> float:
        return round(min(100.0, max(0.0, self.mean + rng.gauss(0, self.noise))), 1)


@dataclass(frozen=True)
class Motion:
    """A PIR: 1 while something moves, else 0; ``rate`` events per minute."""

    name: str = "motion"
    unit: str = "bool"
    rate: float = 2.0

    def value(self, now: float, rng: Rng) -> float:
        return 1.0 if rng.random() < self.rate / 60.0 else 0.0


MODELS: dict[str, type] = {"temperature": Temperature, "humidity": Humidity, "motion": Motion}


def make_models(names: list[str]) -> list[SensorModel]:
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown sensor(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    return [MODELS[n]() for n in names]
