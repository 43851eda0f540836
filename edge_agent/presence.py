"""Presence: what an agent announces about itself (its bid for work), and when.

Pure: host figures come in as a :class:`HostStats` from the monitor, time as
``now``. Announcing on significant change (not only on a timer) lets peers see
a queue fill up within one message, while the period bounds the traffic.

Why the pace grows with the site: presence is a broadcast, every agent
receives every other agent's, so at a fixed period each agent's share grows
with the number of agents and the site's total with its square. The pace
(:func:`presence_pace`) holds the site's presence to a budget instead, so
what each agent receives stays flat as the site grows; the price is slower
staleness detection at large sites (peers go stale after three announced
periods). A crash, a lost connection or a stop still shows at once: the
broker publishes the agent's will, whatever the period.
"""

from __future__ import annotations

from dataclasses import dataclass

from fogmesh.announcements import MAX_PERIOD_S, Battery, Presence


@dataclass(frozen=True)
class HostStats:
    cpu: float = 0.0
    mem: float = 0.0
    load: float = 0.0
    battery: Battery | None = None


def build_presence(*, agent: str, state: str, now: float, host: HostStats, queued: int,
                   running: int, capacity: int, kinds: tuple[str, ...], dispatch: str,
                   done: int = 0, offloaded: int = 0, epoch: int | None = None,
                   reason: str | None = None, instance: str | None = None,
                   since: float | None = None, period: float | None = None) -> Presence:
    return Presence(agent=agent, state=state, ts=now, cpu=host.cpu, mem=host.mem, load=host.load,
                    queue=queued, running=running, capacity=capacity, kinds=kinds,
                    battery=host.battery, dispatch=dispatch, done=done, offloaded=offloaded, epoch=epoch,
                    reason=reason, instance=instance, since=since, period=period)


def significant_change(last: Presence | None, new: Presence) -> bool:
    """State, capacity or kinds changed, the queue or the running count moved
    by a quarter of capacity (or between zero and not), or the battery moved
    5 points."""
    if last is None:
        return True
    if (last.state, last.capacity, last.kinds) != (new.state, new.capacity, new.kinds):
        return True
    step = max(1, new.capacity // 4)
    if (last.queue == 0) != (new.queue == 0) or abs(last.queue - new.queue) >= step:
        return True
    if (last.running == 0) != (new.running == 0) or abs(last.running - new.running) >= step:
        return True
    if (last.battery is None) != (new.battery is None):
        return True
    if last.battery and new.battery and abs(last.battery.percent - new.battery.percent) >= 5:
        return True
    return False


SITE_HEARTBEATS_PER_S = 3.0   # periodic presence of a whole site, all agents together, at most...
SITE_CHANGES_PER_S = 25.0     # ... and presence on significant change
MIN_GAP_S = 0.2               # one agent's presence on change, at most this often


@dataclass(frozen=True)
class PresencePace:
    period: float      # at least this often (the heartbeat; peers take 3 periods of silence for gone)
    min_gap: float     # on significant change, at most this often


def presence_pace(*, base_period: float, site: int) -> PresencePace:
    """How often an agent of a ``site`` of agents (itself included, as its
    presence registry counts them) announces: every ``base_period`` (the
    ``--presence-period``) while the site is small (up to 15 agents at the
    default 5 s), then less often, so the site's heartbeats stay within
    :data:`SITE_HEARTBEATS_PER_S` and its change-driven presence within
    :data:`SITE_CHANGES_PER_S`."""
    site = max(1, site)
    return PresencePace(period=min(MAX_PERIOD_S, max(base_period, site / SITE_HEARTBEATS_PER_S)),
                        min_gap=max(MIN_GAP_S, site / SITE_CHANGES_PER_S))


def presence_due(last: Presence | None, new: Presence, *, last_sent: float, now: float,
                 period: float, min_gap: float = MIN_GAP_S) -> bool:
    """Publish at least every ``period`` s, and on significant change at most
    every ``min_gap`` s (a burst of tasks must not become a burst of presence)."""
    if last is None or now - last_sent >= period:
        return True
    return now - last_sent >= min_gap and significant_change(last, new)
