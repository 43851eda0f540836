"""Triggers: a sensor reading that changes how another device senses. The
Con-Pi deterrent's first step: the PIR sees motion, so the camera (idle at 0
frames/s to save the battery) streams at 2 frames/s for 30 s, and goes back to
idle when nothing has moved for that long. Declared beside the pipelines::

    [[trigger]]
    name = "pir-wakes-camera"
    source = "farm-pir/motion"            # DEVICE/SENSOR: fog/v1/sensors/farm-pir/motion
    when = {field = "value", min = 1}
    then = {camera = "farm-cam", hz = 2, for_s = 30, idle_hz = 0}

Pure: readings and ``now`` in, control messages (topic, payload) out.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fogmesh import codec
from fogmesh.edge_agent.pipelines import Rule
from fogmesh.errors import InvalidMessage
from fogmesh.topics import Topics, validate_segment


@dataclass(frozen=True)
class TriggerSpec:
    name: str
    device: str
    sensor: str
    when: Rule
    camera: str
    hz: float = 2.0
    for_s: float = 30.0
    idle_hz: float = 0.0


def _trigger(d: Mapping[str, Any]) -> TriggerSpec:
    name = validate_segment(str(d.get("name", "")), what="trigger name")
    device, _, sensor = str(d.get("source", "")).partition("/")
    then, when = d.get("then"), d.get("when", {})
    if not sensor or not isinstance(then, dict) or not isinstance(when, dict) or "camera" not in then:
        raise ValueError(f"trigger {name!r}: needs source = \"DEVICE/SENSOR\", when = {{field, min}} and "
                         "then = {camera = \"CAMERA-DEVICE\", hz = 2, for_s = 30}")
    return TriggerSpec(name, validate_segment(device, what="device id"), validate_segment(sensor, what="sensor"),
                       Rule(str(when.get("field", "value")), when.get("min", 1)),
                       validate_segment(str(then["camera"]), what="camera device"), float(then.get("hz", 2.0)),
                       float(then.get("for_s", 30.0)), float(then.get("idle_hz", 0.0)))


def load_triggers(path: Path) -> list[TriggerSpec]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read pipeline file {path}: {exc}") from exc
    return [_trigger(d) for d in data.get("trigger", [])]


class TriggerCore:
    def __init__(self, spec: TriggerSpec, *, topics: Topics) -> None:
        self.spec = spec
        self.topics = topics
        self.active_until: float | None = None
        self.fired = 0

    def _rate(self, hz: float) -> tuple[str, bytes]:
        return self.topics.sensor_control(self.spec.camera), codec.encode({"op": "rate", "hz": hz})

    def on_reading(self, payload: bytes, now: float) -> list[tuple[str, bytes]]:
        """A reading (a number or ``{"value": n, ...}``): raise the camera's rate
        if it meets the rule, and keep it up ``for_s`` after the last such one."""
        try:
            reading = codec.decode(payload)
        except InvalidMessage:
            return []
        if isinstance(reading, (int, float)) and not isinstance(reading, bool):
            reading = {"value": reading}
        if not self.spec.when.fires(reading):
            return []
        was_active = self.active_until is not None
        self.active_until = now + self.spec.for_s
        if was_active:
            return []
        self.fired += 1
        return [self._rate(self.spec.hz)]

    def on_tick(self, now: float) -> list[tuple[str, bytes]]:
        if self.active_until is not None and now >= self.active_until:
            self.active_until = None
            return [self._rate(self.spec.idle_hz)]
        return []
