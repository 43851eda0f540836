"""Presence: what an agent announces about itself (its bid for work), and when.

Pure: host figures come in as a :class:`HostStats` from the monitor, time as
``now``. Announcing on significant change (not only on a timer) lets peers see
a queue fill up within one message, while the period bounds the traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

from fogmesh.messages import Battery, Presence


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


def presence_due(last: Presence | None, new: Presence, *, last_sent: float, now: float,
                 period: float, min_gap: float = 0.2) -> bool:
    """Publish at least every ``period`` s, and on significant change at most
    every ``min_gap`` s (a burst of tasks must not become a burst of presence)."""
    if last is None or now - last_sent >= period:
        return True
    return now - last_sent >= min_gap and significant_change(last, new)
