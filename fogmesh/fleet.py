"""What ``fogmesh monitor`` shows, computed from the retained announcements:
agent presence, bridge health, pipeline counters, deployment reports. Pure: messages and ``now``
come in, rows go out (the table and ``--json`` are the same rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fogmesh import codec
from fogmesh.announcements import BridgeHealth, Presence
from fogmesh.errors import InvalidMessage
from fogmesh.topics import Topics


@dataclass
class _Rate:
    done: int
    ts: float
    per_s: float | None = None


@dataclass
class FleetView:
    topics: Topics
    agents: dict[str, Presence] = field(default_factory=dict)
    bridges: dict[str, BridgeHealth] = field(default_factory=dict)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)    # agent -> its deployment report
    _rates: dict[str, _Rate] = field(default_factory=dict)

    @property
    def filters(self) -> list[str]:
        t = self.topics
        return [t.presence_filter, t.bridge_filter, t.pipelines_filter, t.deploy_reported_filter]

    def on_message(self, topic: str, payload: bytes) -> None:
        """Take one announcement; anything malformed is ignored (it is not ours to judge)."""
        if not payload:
            return
        agent = self.topics.agent_of_presence(topic)
        try:
            if agent is not None:
                self._presence(Presence.from_dict(codec.decode(payload)))
            elif topic.startswith(self.topics.bridge_prefix):
                site = topic.rsplit("/", 1)[1]
                self.bridges[site] = BridgeHealth.decode(payload, site=site)
            elif topic.startswith(self.topics.pipelines_prefix):
                self.pipelines["/".join(topic.rsplit("/", 2)[1:])] = dict(codec.decode(payload))
            elif topic.startswith(f"{self.topics.root}/deploy/reported/"):
                report = dict(codec.decode(payload))
                self.deployments[str(report["agent"])] = report
        except (InvalidMessage, TypeError, ValueError, KeyError):
            return

    def _presence(self, p: Presence) -> None:
        self.agents[p.agent] = p
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
        bridges = [{"site": site, "state": h.state, "link": h.link, "backlog": h.backlog,
                    "oldest_s": h.oldest_age_s, "cloud_workers": h.cloud_workers, "reason": h.reason}
                   for site, h in sorted(self.bridges.items())]
        pipelines = [{"pipeline": name, **{k: v.get(k) for k in ("frames", "processed", "skipped", "actuations",
                                                                  "last_latency_ms", "last_decision",
                                                                  "last_decision_ms", "agent")}}
                     for name, v in sorted(self.pipelines.items())]
        deployments = [{"agent": name, "state": r.get("state"), "desired_serial": r.get("desired_serial"),
                        "applied_serial": r.get("applied_serial"), "progress": r.get("progress"),
                        "bundles": ", ".join(f"{k} {v.get('version')}" for k, v in sorted(
                            (r.get("bundles") or {}).items())),
                        "reason": r.get("reason"), "detail": r.get("detail")}
                       for name, r in sorted(self.deployments.items())]
        return {"agents": agents, "bridges": bridges, "pipelines": pipelines, "deployments": deployments}
