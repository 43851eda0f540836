"""What ``fogmesh monitor`` shows, computed from the retained announcements:
agent presence, bridge health, pipeline counters, deployment reports. Pure: messages and ``now``
come in, rows go out (the table and ``--json`` are the same rows).

Each announcement is decoded once, here, by its topic's schema
(:mod:`fogmesh.announcements`, :mod:`fogmesh.deploy.reported`), and who it
is about comes from the topic (``presence/{agent}``, ``bridge/{site}``,
``pipelines/{agent}/{name}``, ``deploy/reported/{agent}``: the broker's ACL
binds those to the box's login), never from the payload: a document that
says another box is refused, as is a malformed one (counted in
:attr:`FleetView.refusals`). At most :data:`MAX_BOXES` of each are kept: a
newcomer past that drops the one heard from longest ago among those that
rank lowest. Boxes heard live (a message that is not a retained one the
broker replays to a new subscription) rank above those only retained, and
among each, a box whose presence is current (not offline, not silent past
its limit) above one whose is not (a report or pipeline ranks as its
agent): so made-up names cost a bounded table, and retained documents of
boxes that never connect do not push real ones out; a retained-only
newcomer ranked below every box kept is not kept."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from fogmesh.announcements import BridgeHealth, PipelineStatus, Presence
from fogmesh.deploy.reported import Report
from fogmesh.errors import InvalidMessage
from fogmesh.identities import IdentityRecord
from fogmesh.refusals import Refusals
from fogmesh.topics import Topics

MAX_BOXES = 1000        # agents, bridges, pipelines, deployment reports: each table at most this many rows

K = TypeVar("K")
V = TypeVar("V")


@dataclass
class _Rate:
    done: int
    ts: float
    per_s: float | None = None


def keep(table: OrderedDict[K, V], key: K, value: V, *, cap: int,
         gone: Callable[[V], bool] = lambda v: False,
         rank: Callable[[K, V], tuple[bool, ...]] | None = None) -> K | None:
    """``table[key] = value``, the table ordered by when each was last heard
    and at most ``cap`` long: a new key past the cap drops the least
    recently heard entry for which ``gone`` holds, else the least recently
    heard. With ``rank`` (higher is kept first): the least recently heard of
    those ranked lowest, and a newcomer ranked below every entry is not kept.
    Returns the key dropped (``key`` itself: the newcomer was not kept), if any."""
    dropped: K | None = None
    if key not in table and len(table) >= cap:
        if rank is None:
            dropped = next((k for k, v in table.items() if gone(v)), next(iter(table)))
        else:
            low: tuple[bool, ...] | None = None
            for k, v in table.items():          # the least recently heard of the lowest rank
                r = rank(k, v)
                if low is None or r < low:
                    dropped, low = k, r
                    if not any(r):
                        break                   # none ranks lower
            if low is not None and rank(key, value) < low:
                return key
        assert dropped is not None
        del table[dropped]
    table[key] = value
    table.move_to_end(key)
    return dropped


class Heard:
    """The boxes heard live (a message that is not a retained one replayed
    to a new subscription), the most recent ``cap``."""

    def __init__(self, *, cap: int) -> None:
        self.cap = cap
        self._boxes: OrderedDict[str, None] = OrderedDict()

    def mark(self, box: str, *, retained: bool) -> None:
        if retained:
            return
        self._boxes[box] = None
        self._boxes.move_to_end(box)
        while len(self._boxes) > self.cap:
            self._boxes.popitem(last=False)

    def __contains__(self, box: object) -> bool:
        return box in self._boxes


def current(p: Presence, now: float | None) -> bool:
    """Whether ``p`` says its agent is there at ``now``: neither offline nor
    stale (:meth:`Presence.state_at`; None: no clock, only its state counts)."""
    return p.state != "offline" if now is None else p.state_at(now) not in ("offline", "stale")


@dataclass
class FleetView:
    topics: Topics
    max_boxes: int = MAX_BOXES
    agents: OrderedDict[str, Presence] = field(default_factory=OrderedDict)
    bridges: OrderedDict[str, BridgeHealth] = field(default_factory=OrderedDict)
    pipelines: OrderedDict[str, PipelineStatus] = field(default_factory=OrderedDict)
    deployments: OrderedDict[str, Report] = field(default_factory=OrderedDict)    # agent -> its deployment report
    revoked: OrderedDict[str, IdentityRecord] = field(default_factory=OrderedDict)   # box -> its revoked record
    refusals: Refusals = field(default_factory=Refusals)
    _rates: dict[str, _Rate] = field(default_factory=dict)
    _heard: Heard = field(init=False)
    _now: float | None = None

    def __post_init__(self) -> None:
        self._heard = Heard(cap=4 * self.max_boxes)

    @property
    def filters(self) -> list[str]:
        t = self.topics
        return [t.presence_filter, t.bridge_filter, t.pipelines_filter, t.deploy_reported_filter,
                t.fleet_identities_filter]

    def _agent_rank(self, agent: str) -> tuple[bool, bool]:
        p = self.agents.get(agent)
        return agent in self._heard, p is not None and current(p, self._now)

    def on_message(self, topic: str, payload: bytes, *, retained: bool = False, now: float | None = None) -> None:
        """Take one announcement; a malformed or forged one is refused (and
        counted), never raised; an empty one (a cleared retained message)
        removes its box. ``retained``: a retained message the broker replays
        (else heard live); ``now``: the time, to tell a current presence."""
        t = self.topics
        kind, names = self._kind(topic)
        if kind is None:
            return
        self._now = now
        try:
            if kind == "presence":
                agent = names[0]
                if not payload:
                    self.agents.pop(agent, None)
                    self._rates.pop(agent, None)
                else:
                    p = Presence.decode(payload, agent=agent)
                    self._heard.mark(agent, retained=retained)
                    self._presence(p)
            elif kind == "bridge":
                if not payload:
                    self.bridges.pop(names[0], None)
                else:
                    health = BridgeHealth.decode(payload, site=names[0])
                    self._heard.mark(f"bridge/{names[0]}", retained=retained)
                    keep(self.bridges, names[0], health, cap=self.max_boxes,
                         rank=lambda k, h: (f"bridge/{k}" in self._heard, h.state != "offline"))
            elif kind == "pipeline":
                key = "/".join(names)
                if not payload:
                    self.pipelines.pop(key, None)
                else:
                    status = PipelineStatus.decode(payload, agent=names[0], name=names[1])
                    self._heard.mark(names[0], retained=retained)
                    keep(self.pipelines, key, status, cap=self.max_boxes,
                         rank=lambda k, s: self._agent_rank(k.split("/", 1)[0]))
            elif kind == "identity":
                record = IdentityRecord.decode(payload, box=names[0]) if payload else None
                if record is None or record.state != "revoked":
                    self.revoked.pop(names[0], None)
                else:
                    keep(self.revoked, names[0], record, cap=self.max_boxes)
            elif kind == "report":
                if not payload:
                    self.deployments.pop(names[0], None)
                else:
                    report = Report.decode(payload, agent=names[0])
                    self._heard.mark(names[0], retained=retained)
                    keep(self.deployments, names[0], report, cap=self.max_boxes,
                         rank=lambda k, r: self._agent_rank(k))
        except InvalidMessage as exc:
            self.refusals.refuse(kind, topic if len(topic) < 300 else t.root + "/...", exc.message)

    def _kind(self, topic: str) -> tuple[str | None, list[str]]:
        """Which announcement ``topic`` carries, and the names its levels give."""
        t = self.topics
        agent = t.agent_of_presence(topic)
        if agent is not None:
            return "presence", [agent]
        for kind, prefix, levels in (("bridge", t.bridge_prefix, 1), ("pipeline", t.pipelines_prefix, 2),
                                     ("report", f"{t.root}/deploy/reported/", 1),
                                     ("identity", f"{t.root}/fleet/identities/", 1)):
            if topic.startswith(prefix):
                names = topic[len(prefix):].split("/")
                return (kind, names) if len(names) == levels else (None, [])
        return None, []

    def _presence(self, p: Presence) -> None:
        dropped = keep(self.agents, p.agent, p, cap=self.max_boxes,
                       rank=lambda k, q: (k in self._heard, current(q, self._now)))
        if dropped is not None:
            self._rates.pop(dropped, None)
        if dropped == p.agent:
            return
        r = self._rates.get(p.agent)
        if r is None or p.done < r.done:
            self._rates[p.agent] = _Rate(p.done, p.ts)
        elif p.ts > r.ts:
            self._rates[p.agent] = _Rate(p.done, p.ts, (p.done - r.done) / (p.ts - r.ts))

    def rows(self, now: float) -> dict[str, list[dict[str, Any]]]:
        """The tables at ``now``; an agent's state is :meth:`Presence.state_at`
        (the dashboard shows the same)."""
        agents = []
        for name, p in sorted(self.agents.items()):
            agents.append({"agent": name, "state": p.state_at(now), "cpu": p.cpu, "mem": p.mem,
                           "queue": p.queue, "running": p.running, "capacity": p.capacity,
                           "battery": p.battery.percent if p.battery else None,
                           "tasks_per_s": self._rates[name].per_s if name in self._rates else None,
                           "done": p.done, "offloaded": p.offloaded, "age_s": round(now - p.ts, 1),
                           "kinds": list(p.kinds), "dispatch": p.dispatch, "reason": p.reason,
                           "period": p.period})
        for a in agents:                 # revoked (fogmesh fleet revoke): its login no longer works
            if a["agent"] in self.revoked:
                a["state"], a["reason"] = "revoked", "revoked: its login no longer works"
        for name, record in sorted(self.revoked.items()):
            if name not in self.agents and record.role == "agent":
                agents.append({"agent": name, "state": "revoked", "cpu": 0.0, "mem": 0.0, "queue": 0, "running": 0,
                               "capacity": 0, "battery": None, "tasks_per_s": None, "done": 0, "offloaded": 0,
                               "age_s": round(now - record.revoked, 1) if record.revoked else 0.0, "kinds": [],
                               "dispatch": None, "reason": "revoked: its login no longer works", "period": None})
        bridges = [{"site": site, "state": h.state, "link": h.link, "backlog": h.backlog,
                    "oldest_s": h.oldest_age_s, "cloud_workers": h.cloud_workers, "reason": h.reason}
                   for site, h in sorted(self.bridges.items())]
        pipelines = [{"pipeline": name, "frames": s.frames, "processed": s.processed, "skipped": s.skipped,
                      "actuations": s.actuations, "last_latency_ms": s.last_latency_ms,
                      "last_decision": s.last_decision, "last_decision_ms": s.last_decision_ms, "agent": s.agent}
                     for name, s in sorted(self.pipelines.items())]
        deployments = [{"agent": name, "state": r.state, "desired_serial": r.desired_serial,
                        "applied_serial": r.applied_serial, "progress": r.progress,
                        "bundles": ", ".join(f"{k} {v.get('version')}" for k, v in sorted(r.bundles.items())),
                        "reason": r.reason, "detail": r.detail}
                       for name, r in sorted(self.deployments.items())]
        return {"agents": agents, "bridges": bridges, "pipelines": pipelines, "deployments": deployments}
