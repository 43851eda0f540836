"""Sensor uplink aggregation: what a fog node saves the core network. Pure.

Readings that match a topic pattern are folded into per-topic windows (count,
mean, min, max); at the end of each window one summary goes up instead of every
reading. Bytes in and bytes up are counted so the saving is a number, not a claim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest)."""
    p, t = pattern.split("/"), topic.split("/")
    for i, level in enumerate(p):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(p) == len(t)


def reading_value(payload: Any) -> float | None:
    """A number, or an object with a numeric ``value``; anything else is skipped."""
    if isinstance(payload, bool):
        return None
    if isinstance(payload, (int, float)):
        return float(payload)
    if isinstance(payload, dict):
        v = payload.get("value")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


@dataclass
class Window:
    start: float
    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")

    def add(self, v: float) -> None:
        self.count += 1
        self.total += v
        self.low = min(self.low, v)
        self.high = max(self.high, v)

    def summary(self, topic: str, end: float) -> dict[str, Any]:
        return {"topic": topic, "start": round(self.start, 3), "end": round(end, 3), "count": self.count,
                "mean": self.total / self.count, "min": self.low, "max": self.high}


@dataclass
class Aggregator:
    """``rules``: (topic pattern, window seconds). First matching rule wins."""

    rules: tuple[tuple[str, float], ...]
    windows: dict[str, tuple[float, Window]] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_up: int = 0
    readings: int = 0
    skipped: int = 0

    def window_for(self, topic: str) -> float | None:
        for pattern, seconds in self.rules:
            if topic_matches(pattern, topic):
                return seconds
        return None

    def add(self, topic: str, value: Any, size: int, now: float) -> list[dict[str, Any]]:
        """Fold one reading in; returns summaries of windows this closed."""
        seconds = self.window_for(topic)
        if seconds is None:
            return []
        self.bytes_in += size
        v = reading_value(value)
        if v is None:
            self.skipped += 1
            return []
        self.readings += 1
        out = self.flush(now, topic=topic)
        if topic not in self.windows:
            self.windows[topic] = (seconds, Window(start=now))
        self.windows[topic][1].add(v)
        return out

    def flush(self, now: float, *, topic: str | None = None, force: bool = False) -> list[dict[str, Any]]:
        """Summaries of windows that ended by ``now`` (all of them with ``force``)."""
        out = []
        for t in ([topic] if topic is not None else list(self.windows)):
            entry = self.windows.get(t)
            if entry is None:
                continue
            seconds, w = entry
            if force or now >= w.start + seconds:
                if w.count:
                    out.append(w.summary(t, min(now, w.start + seconds) if not force else now))
                del self.windows[t]
        return out

    def sent(self, size: int) -> None:
        self.bytes_up += size

    def next_due(self) -> float | None:
        return min((w.start + s for s, w in self.windows.values()), default=None)
