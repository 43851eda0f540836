"""What agents and bridges say about themselves, retained: an agent's
presence (its bid for work; its will says offline) and a cloud bridge's
health. Frozen, validated dataclasses, as in :mod:`fogmesh.messages`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fogmesh import codec
from fogmesh.errors import InvalidMessage

PRESENCE_STATES = ("online", "offline", "draining", "degraded")
BRIDGE_STATES = ("online", "offline", "degraded")


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

    def silence_limit(self, floor: float) -> float:
        """How long the agent may stay silent before it counts as gone: three
        of the periods it announces (longer at a large site), never less
        than ``floor``, the observer's own rule for agents that say none."""
        return floor if self.period is None else max(floor, 3 * self.period)

    @classmethod
    def from_dict(cls, d: Any) -> Presence:
        if not isinstance(d, dict) or not isinstance(d.get("agent"), str):
            raise InvalidMessage("bad_field", "presence must be an object with an 'agent' string")
        if d.get("state") not in PRESENCE_STATES:
            raise InvalidMessage("bad_field", f"presence 'state' must be one of {PRESENCE_STATES}")
        b = d.get("battery")
        battery = Battery(float(b["percent"]), b.get("plugged")) if isinstance(b, dict) else None
        try:
            return cls(agent=d["agent"], state=d["state"], ts=float(d.get("ts", 0.0)),
                       cpu=float(d.get("cpu", 0.0)), mem=float(d.get("mem", 0.0)),
                       load=float(d.get("load", 0.0)), queue=int(d.get("queue", 0)),
                       running=int(d.get("running", 0)), capacity=int(d.get("capacity", 0)),
                       kinds=tuple(str(k) for k in d.get("kinds", ())), battery=battery,
                       dispatch=str(d.get("dispatch", "")), done=int(d.get("done", 0)),
                       offloaded=int(d.get("offloaded", 0)),
                       epoch=int(d["epoch"]) if d.get("epoch") is not None else None,
                       reason=str(d["reason"])[:500] if d.get("reason") is not None else None,
                       instance=str(d["instance"])[:64] if d.get("instance") is not None else None,
                       since=float(d["since"]) if d.get("since") is not None else None,
                       period=float(d["period"]) if d.get("period") is not None else None)
        except (TypeError, ValueError) as exc:
            raise InvalidMessage("bad_field", f"presence field has the wrong type: {exc}") from exc


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
        """``site``: the one its topic names, for an announcement that omits
        it (then its agent is ``bridge-{site}``)."""
        if isinstance(d, dict) and site is not None:
            d = {"site": site, "agent": f"bridge-{d.get('site', site)}", **d}
        if not isinstance(d, dict) or not isinstance(d.get("agent"), str) or not isinstance(d.get("site"), str):
            raise InvalidMessage("bad_field", "bridge health must be an object with 'site' and 'agent' strings")
        if d.get("state") not in BRIDGE_STATES:
            raise InvalidMessage("bad_field", f"bridge health 'state' must be one of {BRIDGE_STATES}")

        def number(name: str, kind: type) -> Any:
            value = d.get(name)
            return None if value is None else kind(value)
        try:
            return cls(site=d["site"], agent=d["agent"], state=d["state"], ts=float(d.get("ts") or 0.0),
                       link="up" if d.get("link") == "up" else "down",
                       kinds=tuple(k for k in d.get("kinds", ()) if isinstance(k, str)),
                       backlog=number("backlog", int), backlog_bytes=number("backlog_bytes", int),
                       oldest_age_s=number("oldest_age_s", float), cloud_workers=number("cloud_workers", int),
                       bytes_in=number("bytes_in", int), bytes_up=number("bytes_up", int),
                       reason=str(d["reason"])[:500] if d.get("reason") is not None else None)
        except (TypeError, ValueError) as exc:
            raise InvalidMessage("bad_field", f"bridge health field has the wrong type: {exc}") from exc

    @classmethod
    def decode(cls, payload: bytes, *, site: str | None = None) -> BridgeHealth:
        return cls.from_dict(codec.decode(payload), site=site)
