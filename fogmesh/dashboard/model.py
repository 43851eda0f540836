"""What the dashboard shows, computed from what crosses the broker. Pure:
``(topic, payload, now)`` in, ticks out; no sockets, threads or clocks, so
the page's numbers are tested without a browser or a broker.

Every chart series lives in a window of fixed length (``window_s / tick_s``
points), every list of events and every table of tasks awaiting a reply has a
cap: a dashboard left open for a week holds what it held after ten minutes.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from fogmesh import codec
from fogmesh.errors import InvalidMessage
from fogmesh.fleet import FleetView, keep
from fogmesh.messages import Reply
from fogmesh.percentiles import percentile
from fogmesh.refusals import Refusals
from fogmesh.topics import Topics, is_segment

EVENTS_KEPT = 50
AUDIT_KEPT = 50
DEVICES_KEPT = 1_000
ACTUATORS_KEPT = 500         # the least recently heard make room past it
PENDING_KEPT = 20_000        # tasks seen and not yet answered, oldest forgotten first
PENDING_FOR_S = 120.0
LATENCY_WINDOW_S = 5.0       # p50/p99 over the replies of the last seconds
MAX_READ = 1024 * 1024       # a message larger than this is counted where it belongs, never parsed


@dataclass
class _TickCounts:
    tasks: int = 0
    replies: int = 0
    errors: int = 0
    fog: int = 0
    cloud: int = 0


@dataclass
class DashboardModel:
    topics: Topics
    tick_s: float = 1.0
    window_s: float = 600.0
    pending_kept: int = PENDING_KEPT
    fleet: FleetView = field(init=False)
    actuators: OrderedDict[tuple[str, str], dict[str, Any]] = field(default_factory=OrderedDict)
    devices: OrderedDict[str, float] = field(default_factory=OrderedDict)   # least recently heard first
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    audit: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=AUDIT_KEPT))
    history: deque[dict[str, Any]] = field(init=False)
    _pending: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _latencies: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=50_000))
    _counts: _TickCounts = field(default_factory=_TickCounts)
    _last_tick: float | None = None
    _event_seq: int = 0

    def __post_init__(self) -> None:
        self.fleet = FleetView(self.topics)
        self.history = deque(maxlen=self.points)

    @property
    def refusals(self) -> Refusals:
        """What was refused at the boundary (malformed or forged
        announcements), for the server's rate-limited log line."""
        return self.fleet.refusals

    @property
    def points(self) -> int:
        return max(2, int(self.window_s / self.tick_s))

    @property
    def filters(self) -> list[str]:
        t = self.topics
        return [*self.fleet.filters, t.tasks, t.device_tasks_filter, t.errors, t.replies_filter,
                t.actuator_state_filter, t.audit_filter]

    # -- input -------------------------------------------------------------------------
    def on_message(self, topic: str, payload: bytes, now: float, *, retained: bool = False) -> None:
        """Take one message; what does not parse is counted where it belongs (a
        malformed task is still a task that came in) and otherwise ignored.
        ``retained``: a retained message the broker replays (boxes heard live
        are kept over those only retained: :mod:`fogmesh.fleet`)."""
        t = self.topics
        if len(payload) > MAX_READ:
            if t.is_task_topic(topic):
                self._counts.tasks += 1
            else:
                self.refusals.refuse("oversized", topic[:300], f"{len(payload)} bytes, over {MAX_READ}")
        elif t.is_task_topic(topic):
            self._on_task(topic, payload, now)
        elif t.is_reply_topic(topic):
            self._on_reply(payload, now)
        elif topic == t.errors:
            self._on_dead_letter(payload, now)
        elif (actuator := t.actuator_of_state(topic)) is not None:
            self._on_actuator_state(actuator, payload, now)
        elif topic.startswith(f"{t.root}/audit/"):
            self._on_audit(payload)
        else:
            self.fleet.on_message(topic, payload, retained=retained, now=now)

    def _decode(self, payload: bytes) -> dict[str, Any] | None:
        try:
            body = codec.decode(payload)
        except (ValueError, TypeError):
            return None
        return body if isinstance(body, dict) else None

    def _on_task(self, topic: str, payload: bytes, now: float) -> None:
        self._counts.tasks += 1
        body = self._decode(payload)
        device = self.topics.device_of_tasks(topic) or (body or {}).get("device")
        if isinstance(device, str) and device:
            self.devices[device[:128]] = now
            self.devices.move_to_end(device[:128])
            while len(self.devices) > DEVICES_KEPT:
                self.devices.popitem(last=False)
        task_id = (body or {}).get("id")
        if isinstance(task_id, str) and len(task_id) <= 128 and task_id not in self._pending:
            self._pending[task_id] = now
            while len(self._pending) > self.pending_kept:
                self._pending.popitem(last=False)

    def _on_reply(self, payload: bytes, now: float) -> None:
        try:
            reply = Reply.decode(payload)
        except InvalidMessage:
            return
        self._counts.replies += 1
        if reply.tier == "fog":
            self._counts.fog += 1
        elif reply.tier == "cloud":
            self._counts.cloud += 1
        seen = self._pending.pop(reply.id, None) if reply.id is not None else None
        if seen is not None:                 # from the task seen on the broker to its reply seen
            self._latencies.append((now, (now - seen) * 1000))
        elif reply.id is not None and reply.tier != "device":     # task not seen: the agent's own time
            self._latencies.append((now, reply.ms.total))
        if reply.error is not None:
            self._counts.errors += 1
            self._event(now, "error reply", code=reply.error.code, message=reply.error.message,
                        task=reply.id, agent=reply.worker)

    def _on_dead_letter(self, payload: bytes, now: float) -> None:
        body = self._decode(payload)
        if body is None:
            return
        error = body.get("error")
        err: dict[str, Any] = error if isinstance(error, dict) else {}
        self._event(now, "dead letter", code=err.get("code"), message=err.get("message"),
                    task=body.get("id"), agent=body.get("agent"), excerpt=body.get("excerpt"))

    def _on_audit(self, payload: bytes) -> None:
        """An actuator press, as some dashboard published it (newest first)."""
        body = self._decode(payload)
        if body is None:
            return
        result: dict[str, Any] = body["result"] if isinstance(body.get("result"), dict) else {}
        command: dict[str, Any] = body["command"] if isinstance(body.get("command"), dict) else {}

        def number(value: Any) -> float | None:        # only what the page shows: no document passes through
            return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        def text(value: Any, limit: int) -> str:
            return value[:limit] if isinstance(value, str) else ("" if value is None else str(type(value).__name__))
        self.audit.appendleft({
            "ts": number(body.get("ts")), "who": text(body.get("who"), 64), "role": text(body.get("role"), 16),
            "from": text(body.get("from"), 64), "device": text(body.get("device"), 128),
            "actuator": text(body.get("actuator"), 128), "op": text(command.get("op"), 16),
            "ms": number(command.get("ms")), "status": text(result.get("status"), 32),
            "state": text(result.get("state"), 16) if result.get("state") is not None else None,
            "message": text(result.get("message") or result.get("code") or "", 300)})

    def _event(self, now: float, kind: str, **fields: Any) -> None:
        self._event_seq += 1
        clean = {k: (str(v)[:300] if v is not None else None) for k, v in fields.items()}
        self.events.appendleft({"seq": self._event_seq, "ts": round(now, 3), "kind": kind, **clean})

    def _on_actuator_state(self, actuator: tuple[str, str], payload: bytes, now: float) -> None:
        device, name = actuator
        if not payload:                                # a cleared retained state: the actuator is gone
            self.actuators.pop((device, name), None)
            return
        body = self._decode(payload)
        ts = (body or {}).get("ts")
        if body is None or not isinstance(body.get("state"), str) or not (is_segment(device) and is_segment(name)) \
                or (ts is not None and (not isinstance(ts, (int, float)) or isinstance(ts, bool))):
            self.refusals.refuse("actuator state", f"{self.topics.root}/actuators/.../state",
                                 'an actuator state is {"state": "on"|"off", "ts": seconds, ...} on a topic '
                                 "naming a valid device and actuator")
            return
        keep(self.actuators, (device, name), {"device": device, "actuator": name, "state": body["state"][:16],
                                              "ts": ts, "seen": now}, cap=ACTUATORS_KEPT)

    # -- output ------------------------------------------------------------------------
    def tick(self, now: float) -> dict[str, Any]:
        """Close the current interval: one chart point (appended to the window)
        and the whole current picture."""
        dt = max(1e-3, now - self._last_tick) if self._last_tick is not None else self.tick_s
        self._last_tick = now
        c, self._counts = self._counts, _TickCounts()
        while self._latencies and self._latencies[0][0] < now - LATENCY_WINDOW_S:
            self._latencies.popleft()
        while self._pending and next(iter(self._pending.values())) < now - PENDING_FOR_S:
            self._pending.popitem(last=False)
        lat = [ms for _, ms in self._latencies]
        rows = self.fleet.rows(now)        # each agent's state: Presence.state_at, as fogmesh monitor shows it
        bridges = rows["bridges"]
        point = {"ts": round(now, 3), "tasks_per_s": round(c.tasks / dt, 2),
                 "replies_per_s": round(c.replies / dt, 2), "errors_per_s": round(c.errors / dt, 2),
                 "p50_ms": round(percentile(lat, 0.5), 1) if lat else None,
                 "p99_ms": round(percentile(lat, 0.99), 1) if lat else None,
                 "battery": {a["agent"]: a["battery"] for a in rows["agents"]
                             if a["battery"] is not None and a["state"] not in ("offline", "revoked")},
                 "backlog": sum(b["backlog"] or 0 for b in bridges)}
        self.history.append(point)
        live = [a for a in rows["agents"] if a["state"] not in ("offline", "revoked")]
        flows = {"devices": len(self.devices), "tasks_per_s": point["tasks_per_s"],
                 "offloads_per_s": round(c.fog / dt, 2), "cloud_per_s": round(c.cloud / dt, 2),
                 "agent_tasks_per_s": {a["agent"]: a["tasks_per_s"] for a in live},
                 "backlog": point["backlog"],
                 "cloud_workers": sum(b["cloud_workers"] or 0 for b in bridges)}
        return {"point": point, "agents": rows["agents"], "bridges": bridges, "pipelines": rows["pipelines"],
                "deployments": rows["deployments"],
                "actuators": [self.actuators[k] for k in sorted(self.actuators)],
                "events": list(self.events), "flows": flows, "audit": list(self.audit)}

    def hello(self) -> dict[str, Any]:
        """What a page that just opened needs before the first tick: the window
        so far and how long a window is."""
        return {"points": self.points, "tick_s": self.tick_s, "history": list(self.history)}
