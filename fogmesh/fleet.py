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
newcomer past that drops the one heard from longest ago (an offline agent
first), so made-up names cost a bounded table, and never lock a real box out."""

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
         gone: Callable[[V], bool] = lambda v: False) -> K | None:
    """``table[key] = value``, the table ordered by when each was last heard
    and at most ``cap`` long: a new key past the cap drops the least
    recently heard entry for which ``gone`` holds, else the least recently
    heard. Returns the key dropped, if any."""
    dropped: K | None = None
    if key not in table and len(table) >= cap:
        dropped = next((k for k, v in table.items() if gone(v)), next(iter(table)))
        del table[dropped]
    table[key] = value
    table.move_to_end(key)
    return dropped


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

    @property
    def filters(self) -> list[str]:
        t = self.topics
        return [t.presence_filter, t.bridge_filter, t.pipelines_filter, t.deploy_reported_filter,
                t.fleet_identities_filter]

    def on_message(self, topic: str, payload: bytes) -> None:
        """Take one announcement; a malformed or forged one is refused (and
        counted), never raised; an empty one (a cleared retained message)
        removes its box."""
        t = self.topics
        kind, names = self._kind(topic)
        if kind is None:
            return
        try:
            if kind == "presence":
                agent = names[0]
                if not payload:
                    self.agents.pop(agent, None)
                    self._rates.pop(agent, None)
                else:
                    self._presence(Presence.decode(payload, agent=agent))
            elif kind == "bridge":
                if not payload:
                    self.bridges.pop(names[0], None)
                else:
                    keep(self.bridges, names[0], BridgeHealth.decode(payload, site=names[0]), cap=self.max_boxes,
                         gone=lambda h: h.state == "offline")
            elif kind == "pipeline":
                key = "/".join(names)
                if not payload:
                    self.pipelines.pop(key, None)
                else:
                    keep(self.pipelines, key, PipelineStatus.decode(payload, agent=names[0], name=names[1]),
                         cap=self.max_boxes)
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
                    keep(self.deployments, names[0], Report.decode(payload, agent=names[0]), cap=self.max_boxes)
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
        dropped = keep(self.agents, p.agent, p, cap=self.max_boxes, gone=lambda q: q.state == "offline")
        if dropped is not None:
            self._rates.pop(dropped, None)
        r = self._rates.get(p.agent)
        if r is None or p.done < r.done:
            self._rates[p.agent] = _Rate(p.done, p.ts)
        elif p.ts > r.ts:
            self._rates[p.agent] = _Rate(p.done, p.ts, (p.done - r.done) / (p.ts - r.ts))

    def rows(self, now: float, *, stale_after: float = 15.0) -> dict[str, list[dict[str, Any]]]:
        agents = []
        for name, p in sorted(self.agents.items()):
            state = p.state if p.state != "online" or now - p.ts <= p.silence_limit(stale_after) else "stale"
            agents.append({"agent": name, "state": state, "cpu": p.cpu, "mem": p.mem,
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
