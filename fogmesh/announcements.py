"""What agents and bridges say about themselves, retained: an agent's
presence (its bid for work; its will says offline) and a cloud bridge's
health. Frozen, validated dataclasses, as in :mod:`fogmesh.messages`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fogmesh import codec
from fogmesh.errors import InvalidMessage
from fogmesh.fields import Fields, decode_announcement
from fogmesh.fields import short as _short
from fogmesh.topics import is_segment

PRESENCE_STATES = ("online", "offline", "draining", "degraded")
BRIDGE_STATES = ("online", "offline", "degraded")

DEFAULT_PERIOD_S = 5.0          # the period of an agent that does not say its own
MIN_PERIOD_S = 0.1              # a presence's ``period`` is from this ...
MAX_PERIOD_S = 3600.0           # ... to this (a site of 10,800 agents; topics.md "Presence")
MAX_TS = 4_102_444_800.0        # ``ts`` and ``since``: Unix times from 0 to 2100-01-01
AHEAD_S = 300.0                 # a ``ts`` further ahead of the reader's clock is not believed


@dataclass(frozen=True)
class Battery:
    percent: float
    plugged: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {"percent": round(self.percent, 1), "plugged": self.plugged}


@dataclass(frozen=True)
class Presence:
    """An agent's retained announcement, which is also its bid for work."""

    agent: str
    state: str
    ts: float
    cpu: float = 0.0
    mem: float = 0.0
    load: float = 0.0
    queue: int = 0
    running: int = 0
    capacity: int = 0
    kinds: tuple[str, ...] = ()
    battery: Battery | None = None
    dispatch: str = ""
    done: int = 0           # tasks answered since start (the monitor derives tasks/s)
    offloaded: int = 0      # tasks it placed on peers or the cloud since start
    epoch: int | None = None  # control connections it has lost since start (see Claim.epoch)
    reason: str | None = None  # why it is degraded (e.g. its journal's disk is full)
    instance: str | None = None  # this run of the agent process (two hosts using one id differ here)
    since: float | None = None   # Unix time this run started
    period: float | None = None  # seconds between its announcements (when silent longer, it is stale)

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "state": self.state, "ts": round(self.ts, 3),
                "cpu": round(self.cpu, 1), "mem": round(self.mem, 1), "load": round(self.load, 2),
                "queue": self.queue, "running": self.running, "capacity": self.capacity,
                "kinds": list(self.kinds),
                "battery": self.battery.to_dict() if self.battery else None,
                "dispatch": self.dispatch, "done": self.done, "offloaded": self.offloaded,
                **({"epoch": self.epoch} if self.epoch is not None else {}),
                **({"reason": self.reason} if self.reason is not None else {}),
                **({"instance": self.instance, "since": round(self.since or 0.0, 3)}
                   if self.instance is not None else {}),
                **({"period": self.period} if self.period is not None else {})}

    def encode(self) -> bytes:
        return codec.encode(self.to_dict())

    def state_at(self, now: float) -> str:
        """What the agent is at ``now``, as every operator's tool shows it
        (``fogmesh monitor``, the dashboard, ``fogmesh deploy status``: this
        one rule): its will's ``offline`` at once; silent since ``ts`` for
        more than three periods, ``offline`` (as its peers take it); for more
        than one and a half (and 0.5 s), ``stale``; a ``ts`` more than
        :data:`AHEAD_S` ahead of ``now`` (a clock ahead, or a made-up time),
        ``stale``; else the state it says. The period is the one it says
        (:data:`DEFAULT_PERIOD_S` when it says none)."""
        if self.state == "offline":
            return "offline"
        period = self.period or DEFAULT_PERIOD_S
        age = now - self.ts
        if age > 3 * period:
            return "offline"
        if age > 1.5 * period + 0.5 or age < -AHEAD_S:
            return "stale"
        return self.state

    def silence_limit(self, floor: float) -> float:
        """How long the agent may stay silent before it counts as gone: three
        of the periods it announces (longer at a large site), never less
        than ``floor``, the observer's own rule for agents that say none."""
        return floor if self.period is None else max(floor, 3 * self.period)

    @classmethod
    def from_dict(cls, d: Any, *, agent: str | None = None) -> Presence:
        """Strict: every field present has its documented type (topics.md,
        "Presence"), or :class:`InvalidMessage`. ``agent``: the one the topic
        names (``presence/{agent}``); a document that says another is refused."""
        f = Fields(d, "presence")
        name = f.box_id("agent")
        if agent is not None and name != agent:
            raise InvalidMessage("bad_field", f"a presence on presence/{_short(agent)} speaks for "
                                 f"{_short(name)!r}: a box announces only itself (the topic names it)")
        state = f.choice("state", PRESENCE_STATES)
        b = f.get("battery")
        battery = None
        if b is not None:
            bf = Fields(b, "presence 'battery'")
            plugged = bf.get("plugged")
            if plugged is not None and not isinstance(plugged, bool):
                raise InvalidMessage("bad_field", "presence 'battery.plugged' must be true, false or null")
            battery = Battery(bf.number("percent"), plugged)
        return cls(agent=name, state=state, ts=f.within("ts", 0.0, MAX_TS, 0.0), cpu=f.number("cpu", 0.0),
                   mem=f.number("mem", 0.0), load=f.number("load", 0.0), queue=f.count("queue"),
                   running=f.count("running"), capacity=f.count("capacity"), kinds=f.names("kinds"),
                   battery=battery, dispatch=f.text("dispatch", 32) or "", done=f.count("done"),
                   offloaded=f.count("offloaded"), epoch=f.count("epoch", None), reason=f.text("reason", 500),
                   instance=f.text("instance", 64), since=f.within("since", 0.0, MAX_TS, None),
                   period=f.within("period", MIN_PERIOD_S, MAX_PERIOD_S, None))

    @classmethod
    def decode(cls, payload: bytes, *, agent: str) -> Presence:
        """The presence retained on ``presence/{agent}``, checked against its topic."""
        return cls.from_dict(decode_announcement(payload, "presence"), agent=agent)


@dataclass(frozen=True)
class BridgeHealth:
    """A cloud bridge's retained announcement on ``{root}/bridge/{site}`` (its
    last will is one with ``state: "offline"`` and no figures). Agents read it
    to offer heavy tasks; monitor and dashboard to show the uplink."""

    site: str
    agent: str
    state: str
    ts: float
    link: str = "down"
    kinds: tuple[str, ...] = ()
    backlog: int | None = None
    backlog_bytes: int | None = None
    oldest_age_s: float | None = None
    cloud_workers: int | None = None
    bytes_in: int | None = None
    bytes_up: int | None = None
    reason: str | None = None      # why it is degraded

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"site": self.site, "agent": self.agent, "state": self.state}
        if self.reason is not None:
            d["reason"] = self.reason
        d.update({"link": self.link, "ts": round(self.ts, 3), "kinds": list(self.kinds)})
        for name in ("backlog", "backlog_bytes", "oldest_age_s", "cloud_workers", "bytes_in", "bytes_up"):
            value = getattr(self, name)
            if value is not None:
                d[name] = value
        return d

    def encode(self) -> bytes:
        return codec.encode(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, *, site: str | None = None) -> BridgeHealth:
        """Strict, as :meth:`Presence.from_dict`. ``site``: the one its topic
        names (``bridge/{site}``): the document may omit it (then its agent is
        ``bridge-{site}``), and one that names another site or agent is refused."""
        if isinstance(d, dict) and site is not None:
            if not is_segment(site):
                raise InvalidMessage("bad_field", f"bridge health on bridge/{_short(site)}: not a valid site id")
            d = {"site": site, "agent": f"bridge-{site}", **d}
            if d["site"] != site or d["agent"] != f"bridge-{site}":
                raise InvalidMessage("bad_field", f"bridge health on bridge/{site} speaks for "
                                     f"{_short(str(d['agent']))!r} of site {_short(str(d['site']))!r}: "
                                     "a bridge announces only itself (the topic names it)")
        f = Fields(d, "bridge health")
        return cls(site=f.box_id("site"), agent=f.box_id("agent"), state=f.choice("state", BRIDGE_STATES),
                   ts=f.number("ts", 0.0), link=f.choice("link", ("up", "down")) if "link" in f.d else "down",
                   kinds=f.names("kinds"), backlog=f.count("backlog", None),
                   backlog_bytes=f.count("backlog_bytes", None), oldest_age_s=f.number("oldest_age_s", None),
                   cloud_workers=f.count("cloud_workers", None), bytes_in=f.count("bytes_in", None),
                   bytes_up=f.count("bytes_up", None), reason=f.text("reason", 500))

    @classmethod
    def decode(cls, payload: bytes, *, site: str | None = None) -> BridgeHealth:
        return cls.from_dict(decode_announcement(payload, "bridge health"), site=site)


@dataclass(frozen=True)
class PipelineStatus:
    """A pipeline's counters, retained on ``{root}/pipelines/{agent}/{name}``
    by the agent that runs it (topics.md, "Pipelines")."""

    agent: str
    name: str
    frames: int = 0
    submitted: int = 0
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    actuations: int = 0
    in_flight: int = 0
    last_latency_ms: float | None = None
    last_decision: str | None = None
    last_decision_ms: float | None = None

    COUNTERS = ("frames", "submitted", "processed", "skipped", "failed", "actuations", "in_flight")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in self.COUNTERS}
        d.update(last_latency_ms=self.last_latency_ms, last_decision=self.last_decision,
                 last_decision_ms=self.last_decision_ms, agent=self.agent)
        return d

    @classmethod
    def from_dict(cls, d: Any, *, agent: str, name: str) -> PipelineStatus:
        """``agent`` and ``name``: what the topic names; a document whose
        ``agent`` says another is refused."""
        f = Fields(d, "pipeline counters")
        if not (is_segment(agent) and is_segment(name)):
            raise InvalidMessage("bad_field", f"pipeline counters on pipelines/{_short(agent)}/{_short(name)}: "
                                 "not valid ids")
        said = f.get("agent")
        if said is not None and said != agent:
            raise InvalidMessage("bad_field", f"pipeline counters on pipelines/{agent}/{name} speak for "
                                 f"{_short(str(said))!r}: an agent announces only its own pipelines")
        counts = {k: f.count(k) for k in cls.COUNTERS}
        return cls(agent=agent, name=name, **counts, last_latency_ms=f.number("last_latency_ms", None),
                   last_decision=f.text("last_decision", 64), last_decision_ms=f.number("last_decision_ms", None))

    @classmethod
    def decode(cls, payload: bytes, *, agent: str, name: str) -> PipelineStatus:
        return cls.from_dict(decode_announcement(payload, "pipeline counters"), agent=agent, name=name)
