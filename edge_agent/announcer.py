"""The agent shell's presence: its bid for work, announced retained on
``{root}/presence/{agent}`` at start, every period and on significant change
(:func:`fogmesh.edge_agent.presence.presence_due`), at a pace that slows as the
site grows (:func:`fogmesh.edge_agent.presence.presence_pace`, judged once a
second from the peers the core knows), with the host read (psutil, battery)
at most once a ``--presence-period`` because psutil is not free on a Pi."""

from __future__ import annotations

import random
from typing import Any, Callable

from fogmesh.announcements import Presence
from fogmesh.edge_agent.host_monitor import HostMonitor
from fogmesh.edge_agent.presence import HostStats, PresencePace, build_presence, presence_due, presence_pace


class Announcer:
    def __init__(self, *, agent_id: str, monitor: HostMonitor, capacity: int, kinds: tuple[str, ...],
                 period: float, wall_clock: Callable[[], float],
                 send: Callable[[bytes], None], instance: str | None = None,
                 rng: random.Random | None = None) -> None:
        """``rng`` draws each heartbeat's jitter (seed it for a repeatable run)."""
        self.agent_id = agent_id
        self.instance = instance
        self.since = wall_clock()
        self.monitor = monitor
        self.capacity = capacity
        self.kinds = kinds
        self.base_period = period
        self.pace: PresencePace = presence_pace(base_period=period, site=1)
        self.paced_at = -1e9
        self.wall_clock = wall_clock
        self.send = send
        self.dispatch = ""
        self.reason: str | None = None     # why the state is not online (degraded)
        self.sent_at = -1e9
        self.checked_at = -1e9     # when maybe() last built a presence to compare
        self.recheck_at = float("inf")
        self.last: Presence | None = None
        self.host = HostStats()
        self.host_read_at = -1e9
        self.newcomer_seen = False
        self.rng = rng or random.Random()
        self.jitter = 1.0          # this period's share of the full period (0.85..1)

    @property
    def period(self) -> float:
        """The period announced now (``--presence-period``, longer at a large site)."""
        return self.pace.period

    @property
    def due_at(self) -> float:
        # Peers judge staleness by the period last announced: never wait longer
        # than that, even when the pace has just slowed (the next presence says so).
        announced = self.last.period if self.last is not None and self.last.period else self.pace.period
        due = self.sent_at + self.jitter * min(self.pace.period, announced)
        return min(due, self.sent_at + self.pace.min_gap) if self.newcomer_seen else due

    @property
    def wake_at(self) -> float:
        """When the dispatcher must next call :meth:`maybe`: the heartbeat, or
        a look at a change it skipped during a burst."""
        return min(self.due_at, self.recheck_at)

    def repace(self, now: float, core: Any) -> None:
        """Judge the pace from the site's size (once a second: it walks the peers)."""
        if now - self.paced_at < 1.0:
            return
        self.paced_at = now
        self.pace = presence_pace(base_period=self.base_period, site=len(core.peers.present(now)) + 1)

    def again(self) -> None:
        """Announce at the next chance (after a reconnect: the broker may have lost it)."""
        self.sent_at = -1e9

    def newcomer(self) -> None:
        """A peer appeared: announce again within the change gap, so it learns
        of this agent even where the broker keeps no retained presence for it.
        Paced like a change, or a site's start-up would have every agent
        re-announce for every newcomer (the square of the site)."""
        self.newcomer_seen = True

    def offline_payload(self) -> bytes:
        """The last will: what peers see if this agent vanishes."""
        return build_presence(agent=self.agent_id, state="offline", now=self.wall_clock(), host=HostStats(),
                              queued=0, running=0, capacity=self.capacity, kinds=self.kinds,
                              dispatch=self.dispatch, instance=self.instance, since=self.since,
                              period=self.base_period).encode()

    def read_host(self, now: float, core: Any) -> None:
        """The host now (the dispatcher tells the core its battery before its next step)."""
        self.host = self.monitor.read(running=core.running)
        self.host_read_at = now

    @property
    def battery(self) -> float | None:
        """The host's battery as last read (None: mains)."""
        return self.host.battery.percent if self.host.battery else None

    def build(self, now: float, core: Any, state: str) -> Presence:
        if now - self.host_read_at >= self.base_period:
            self.read_host(now, core)
        c = core.counters
        return build_presence(agent=self.agent_id, state=state, now=self.wall_clock(), host=self.host,
                              queued=core.queued, running=core.running, capacity=self.capacity,
                              kinds=self.kinds, dispatch=self.dispatch, done=c.completed + c.failed,
                              offloaded=c.offers_accepted, epoch=core.epoch or None,
                              reason=self.reason if state == "degraded" else None,
                              instance=self.instance, since=self.since, period=self.period)

    def maybe(self, now: float, core: Any, state: str) -> None:
        """Announce if due or changed. Called after every step: a change is
        looked for at most once per change gap (building a presence costs more
        than a small task's step), and a step skipped while one may be pending
        asks the dispatcher to look again when the gap is over."""
        since = now - self.sent_at
        gap = self.pace.min_gap
        if now < self.due_at and (since < gap or now - self.checked_at < gap):
            self.recheck_at = min(self.recheck_at, max(self.sent_at, self.checked_at) + gap)
            return  # cheap early exit on the hot path
        self.checked_at, self.recheck_at = now, float("inf")
        self.repace(now, core)
        p = self.build(now, core, state)
        if self.newcomer_seen and since >= self.pace.min_gap or \
                presence_due(self.last, p, last_sent=self.sent_at, now=now, period=self.due_at - self.sent_at,
                             min_gap=self.pace.min_gap):
            self._send(p, now)

    def announce(self, now: float, core: Any, state: str) -> None:
        self._send(self.build(now, core, state), now)

    def _send(self, p: Presence, now: float) -> None:
        self.newcomer_seen = False
        # A little early, by a random share: agents that announced together (a
        # newcomer, a broker restart) drift apart instead of announcing in bursts.
        self.jitter = self.rng.uniform(0.85, 1.0)
        self.send(p.encode())
        self.last = p
        self.sent_at = now
