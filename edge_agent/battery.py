"""A battery model, so a testbed of mains-powered boxes can act out battery-powered Pis.

Pure: ``advance(dt_s, running)`` moves the charge by idle draw, per-task draw
and optional solar input; the caller owns the clock. The Con-Pi case study ran
Pis on 1820 mAh cells (about 6.7 Wh at 3.7 V) with solar panels, one shaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from fogmesh.announcements import Battery


@dataclass(frozen=True)
class SolarProfile:
    """Piecewise-constant solar input: ``points`` of (seconds since start, watts)."""

    points: tuple[tuple[float, float], ...] = ()

    def watts(self, t: float) -> float:
        w = 0.0
        for start, watts in self.points:
            if t >= start:
                w = watts
            else:
                break
        return w


@dataclass(frozen=True)
class BatteryModel:
    capacity_wh: float = 6.7
    percent: float = 100.0
    idle_w: float = 1.4          # a Pi 3B+ idling
    task_w: float = 1.6          # extra per running task
    solar: SolarProfile = field(default_factory=SolarProfile)
    elapsed_s: float = 0.0

    def __post_init__(self) -> None:
        if self.capacity_wh <= 0:
            raise ValueError("capacity_wh must be positive")
        if not 0 <= self.percent <= 100:
            raise ValueError("percent must be within 0..100")

    def advance(self, dt_s: float, *, running: int) -> BatteryModel:
        """The battery ``dt_s`` seconds later with ``running`` tasks meanwhile."""
        if dt_s <= 0:
            return self
        net_w = self.solar.watts(self.elapsed_s) - self.idle_w - self.task_w * running
        delta_pct = 100 * net_w * dt_s / 3600 / self.capacity_wh
        return replace(self, percent=min(100.0, max(0.0, self.percent + delta_pct)),
                       elapsed_s=self.elapsed_s + dt_s)

    def reading(self) -> Battery:
        return Battery(percent=self.percent, plugged=False)


def parse_battery_spec(spec: str) -> BatteryModel:
    """``--battery-model capacity_wh=6.7,percent=80,idle_w=1.4,task_w=1.6,solar=0:2.0;600:0``"""
    fields: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"battery model: expected name=value, got {part!r}")
        if name == "solar":
            points = []
            for pair in filter(None, value.split(";")):
                t, _, w = pair.partition(":")
                points.append((float(t), float(w)))
            fields["solar"] = SolarProfile(tuple(sorted(points)))
        elif name in ("capacity_wh", "percent", "idle_w", "task_w"):
            fields[name] = float(value)
        else:
            raise ValueError(f"battery model: unknown field {name!r} "
                             "(capacity_wh, percent, idle_w, task_w, solar)")
    return BatteryModel(**fields)  # type: ignore[arg-type]
