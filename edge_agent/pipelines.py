"""Pipelines: sensor stream -> task -> rule -> actuation, declared in a file.

The Con-Pi "microservice" that consumes pushed camera frames, as data::

    [[pipeline]]
    name = "deterrent"
    source = "farm-cam/camera"        # device/camera (or device/sensor)
    kind = "motion"                   # a task kind; "motion" gets 2 frames
    max_age_ms = 2000                 # older frames are skipped, not queued
    max_in_flight = 4
    args = {min_area = 200}
    when = {field = "moving"}         # or {field = "count", min = 1}
    then = {actuator = "farm-relay/deterrent", op = "pulse", ms = 3000}
    cooldown_ms = 3000                # no second command while the first acts

Pure: :class:`PipelineCore` takes frames and replies with ``now`` passed in and
returns the tasks to submit and the commands to send; the agent's IO shell
(:mod:`fogmesh.edge_agent.pipeline_runner`) does the MQTT.
"""

from __future__ import annotations

import base64
import math
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fogmesh import codec
from fogmesh.errors import InvalidMessage
from fogmesh.messages import Reply, Task
from fogmesh.topics import Topics, validate_segment

FRAME_KINDS = {"motion": 2}     # kinds that take a window of frames (others: one image)


@dataclass(frozen=True)
class Rule:
    field: str = "found"
    min: float | None = None       # None: the field must be truthy

    def fires(self, result: Any) -> bool:
        value = result.get(self.field) if isinstance(result, Mapping) else None
        if self.min is None:
            return bool(value)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= self.min


@dataclass(frozen=True)
class Actuation:
    device: str
    actuator: str
    op: str = "pulse"
    ms: int = 3000

    def payload(self, *, task_id: str, frame_ts: float) -> bytes:
        """``frame_ts``: when the triggering frame was captured, so the actuator
        side (or a benchmark) can measure frame-to-actuation latency."""
        d: dict[str, Any] = {"op": self.op, "id": task_id, "frame_ts": frame_ts}
        if self.op == "pulse":
            d["ms"] = self.ms
        return codec.encode(d)


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    device: str
    sensor: str
    kind: str
    when: Rule
    then: Actuation
    args: Mapping[str, Any] = field(default_factory=dict)
    max_age_ms: int = 2000
    max_in_flight: int = 4
    cooldown_ms: int = 0
    weight: str | None = None

    @property
    def window(self) -> int:
        return FRAME_KINDS.get(self.kind, 1)


def _spec(d: Mapping[str, Any]) -> PipelineSpec:
    def need(key: str, typ: type) -> Any:
        if not isinstance(d.get(key), typ):
            raise ValueError(f"pipeline {d.get('name', '?')!r}: {key!r} must be a {typ.__name__}")
        return d[key]
    name = validate_segment(need("name", str), what="pipeline name")
    device, _, sensor = need("source", str).partition("/")
    if not sensor or "/" in sensor:
        raise ValueError(f"pipeline {name!r}: source must be DEVICE/CAMERA (e.g. farm-cam/camera)")
    when, then = need("when", dict), need("then", dict)
    target = str(then.get("actuator", ""))
    adev, _, act = target.partition("/")
    if not act:
        raise ValueError(f"pipeline {name!r}: then.actuator must be DEVICE/ACTUATOR (e.g. farm-relay/deterrent)")
    op = then.get("op", "pulse")
    if op not in ("on", "off", "toggle", "pulse"):
        raise ValueError(f"pipeline {name!r}: then.op must be on, off, toggle or pulse")
    return PipelineSpec(
        name=name, device=validate_segment(device, what="device id"),
        sensor=validate_segment(sensor, what="sensor name"), kind=need("kind", str),
        when=Rule(str(when.get("field", "found")), when.get("min")),
        then=Actuation(validate_segment(adev, what="device id"), validate_segment(act, what="actuator name"),
                    op, int(then.get("ms", 3000))),
        args=dict(d.get("args", {})), max_age_ms=int(d.get("max_age_ms", 2000)),
        max_in_flight=int(d.get("max_in_flight", 4)), cooldown_ms=int(d.get("cooldown_ms", 0)),
        weight=d.get("weight"))


def load_pipelines(path: Path) -> list[PipelineSpec]:
    """Read a pipeline file; errors name the file and what to fix."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read pipeline file {path}: {exc}") from exc
    specs = [_spec(d) for d in data.get("pipeline", [])]
    if not specs and not data.get("trigger"):
        raise ValueError(f"{path}: no [[pipeline]] or [[trigger]] tables")
    if len({s.name for s in specs}) != len(specs):
        raise ValueError(f"{path}: pipeline names must be unique")
    return specs


@dataclass
class PipelineStats:
    frames: int = 0          # frames seen
    submitted: int = 0       # tasks created
    processed: int = 0       # answered ok
    skipped: int = 0         # stale, over the in-flight limit, or past their deadline
    failed: int = 0          # answered with another error
    actuations: int = 0
    last_latency_ms: float | None = None   # frame capture -> command sent
    last_decision: str | None = None       # the last answer: "fired", "no action", "cooldown" or an error code
    last_decision_ms: float | None = None  # frame capture -> that answer

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Submit:
    task: Task


@dataclass(frozen=True)
class Command:
    topic: str
    payload: bytes
    latency_ms: float


class PipelineCore:
    """One pipeline's decisions. ``run_tag`` makes task ids unique per run."""

    def __init__(self, spec: PipelineSpec, *, topics: Topics, reply_to: str, run_tag: str) -> None:
        self.spec = spec
        self.topics = topics
        self.reply_to = reply_to
        self.run_tag = run_tag
        self.stats = PipelineStats()
        # the last frames, each [raw JPEG, its base64 once a task has needed it]:
        # in a motion window every frame serves twice but is encoded once
        self._window: deque[list[Any]] = deque(maxlen=spec.window)
        self._in_flight: dict[str, float] = {}       # task id -> frame ts
        self._quiet_until = 0.0
        self._seq = 0

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def on_frame(self, ts: float, image: bytes, now: float) -> list[Submit]:
        s = self.spec
        self.stats.frames += 1
        age_ms = (now - ts) * 1000
        self._window.append([image, None])
        if not math.isfinite(age_ms) or age_ms > s.max_age_ms or len(self._in_flight) >= s.max_in_flight:
            self.stats.skipped += 1
            return []
        if len(self._window) < s.window:
            return []
        for frame in self._window:
            if frame[1] is None:
                frame[1] = base64.b64encode(frame[0]).decode("ascii")
        encoded = [frame[1] for frame in self._window]
        args = dict(s.args)
        if s.window > 1:
            args["frames"] = encoded
        else:
            args["image"] = encoded[0]
        self._seq += 1
        task_id = f"{s.name}-{self.run_tag}-{self._seq}"
        task = Task(id=task_id, kind=s.kind, args=args, reply_to=self.reply_to,
                    deadline_ms=max(1, int(s.max_age_ms - age_ms)), weight=s.weight)
        self._in_flight[task_id] = ts
        self.stats.submitted += 1
        return [Submit(task)]

    def on_reply(self, reply: Reply, now: float) -> list[Command]:
        ts = self._in_flight.pop(reply.id or "", None)
        if ts is None:
            return []                  # not ours, or a duplicate
        self.stats.last_decision_ms = round((now - ts) * 1000, 1)
        if reply.status != "ok":
            code = reply.error.code if reply.error else ""
            self.stats.last_decision = code or "error"
            if code in ("deadline_exceeded", "busy"):
                self.stats.skipped += 1
            else:
                self.stats.failed += 1
            return []
        self.stats.processed += 1
        if not self.spec.when.fires(reply.result):
            self.stats.last_decision = "no action"
            return []
        if now < self._quiet_until:
            self.stats.last_decision = "cooldown"
            return []
        self.stats.last_decision = "fired"
        self._quiet_until = now + self.spec.cooldown_ms / 1000
        self.stats.actuations += 1
        latency = round((now - ts) * 1000, 1)
        self.stats.last_latency_ms = latency
        a = self.spec.then
        return [Command(self.topics.actuator_set(a.device, a.actuator),
                        a.payload(task_id=f"{reply.id}-act", frame_ts=ts), latency)]

    def expire(self, now: float, *, grace_s: float = 30.0) -> None:
        """Forget tasks whose reply never came (an agent lost them), so the
        in-flight limit cannot stay full forever: counted as skipped."""
        limit = self.spec.max_age_ms / 1000 + grace_s
        for tid, ts in list(self._in_flight.items()):
            if now - ts > limit:
                del self._in_flight[tid]
                self.stats.skipped += 1


def parse_reply(payload: bytes) -> Reply | None:
    try:
        return Reply.decode(payload)
    except InvalidMessage:
        return None
