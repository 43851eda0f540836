"""The agent shell's presence: its bid for work, announced retained on
``{root}/presence/{agent}`` at start, every period and on significant change
(:func:`fogmesh.edge_agent.presence.presence_due`), with the host read (psutil, battery)
at most once a period because psutil is not free on a Pi."""

from __future__ import annotations

from typing import Any, Callable

from fogmesh.edge_agent.host_monitor import HostMonitor
from fogmesh.edge_agent.presence import HostStats, build_presence, presence_due
from fogmesh.messages import Presence


class Announcer:
    def __init__(self, *, agent_id: str, monitor: HostMonitor, capacity: int, kinds: tuple[str, ...],
                 period: float, wall_clock: Callable[[], float],
                 send: Callable[[bytes], None], instance: str | None = None) -> None:
        self.agent_id = agent_id
        self.instance = instance
        self.since = wall_clock()
        self.monitor = monitor
        self.capacity = capacity
        self.kinds = kinds
        self.period = period
        self.wall_clock = wall_clock
        self.send = send
        self.dispatch = ""
        self.reason: str | None = None     # why the state is not online (degraded)
        self.sent_at = -1e9
        self.last: Presence | None = None
        self.host = HostStats()
        self.host_read_at = -1e9

    @property
    def due_at(self) -> float:
        return self.sent_at + self.period

    def again(self) -> None:
        """Announce at the next chance (after a reconnect: the broker may have lost it)."""
        self.sent_at = -1e9

    def offline_payload(self) -> bytes:
        """The last will: what peers see if this agent vanishes."""
        return build_presence(agent=self.agent_id, state="offline", now=self.wall_clock(), host=HostStats(),
                              queued=0, running=0, capacity=self.capacity, kinds=self.kinds,
                              dispatch=self.dispatch, instance=self.instance, since=self.since,
                              period=self.period).encode()

    def read_host(self, now: float, core: Any) -> None:
        self.host = self.monitor.read(running=core.running)
        self.host_read_at = now
        core.on_battery(self.host.battery.percent if self.host.battery else None)

    def build(self, now: float, core: Any, state: str) -> Presence:
        if now - self.host_read_at >= self.period:
            self.read_host(now, core)
        c = core.counters
        return build_presence(agent=self.agent_id, state=state, now=self.wall_clock(), host=self.host,
                              queued=core.queued, running=core.running, capacity=self.capacity,
                              kinds=self.kinds, dispatch=self.dispatch, done=c.completed + c.failed,
                              offloaded=c.offers_accepted, epoch=core.epoch or None,
                              reason=self.reason if state == "degraded" else None,
                              instance=self.instance, since=self.since, period=self.period)

    def maybe(self, now: float, core: Any, state: str) -> None:
        if now - self.sent_at < 0.2 and now - self.sent_at < self.period:
            return  # cheap early exit on the hot path
        p = self.build(now, core, state)
        if presence_due(self.last, p, last_sent=self.sent_at, now=now, period=self.period):
            self._send(p, now)

    def announce(self, now: float, core: Any, state: str) -> None:
        self._send(self.build(now, core, state), now)

    def _send(self, p: Presence, now: float) -> None:
        self.send(p.encode())
        self.last = p
        self.sent_at = now
