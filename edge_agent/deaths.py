"""Which peers are dead, and since when: the clock behind takeovers and
session rescues. Pure: wills, reconnects and ``now`` come in.

A peer is dead once its last will (offline presence) arrived and it stayed
offline for the grace period. Why that is not the whole rule: a broker that
shuts down publishes *every* client's will, and after a restart the retained
presence of every agent says offline until each reconnects (with backoff).
Counted naively, every agent declares every peer dead and takes over its work
while that peer is alive and about to come back: tasks run twice. So:

* nothing is declared dead while this agent's own control connection is down
  (it cannot see who comes back);
* once it is back, every pending death starts over, with the longer
  ``rejoin_grace_s`` (peers reconnect with backoff too), and so does every
  will seen within that grace after the reconnect (retained, stale ones);
* each death is handled once; a peer that comes back online is watched
  afresh when its next will arrives;
* a peer is back when its presence says online, or when it makes a claim as
  a later run (``instance``) or in a later epoch than the one whose will came
  (:meth:`revived`): an agent starting again holds its presence back until its
  task subscriptions are in, and may claim what its session gives back
  before; taken for dead still, its win of a takeover round was contested,
  and the task ran twice.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Will:
    since: float          # when the grace started (``now`` of this agent)
    ts: float             # the will's own ts: the same for every observer
    due: float
    handled: bool = False
    instance: str | None = None     # the run whose will this is
    epoch: int = 0                  # the newest epoch it was known in when the will came


MAX_WILLS = 1000


class DeathWatch:
    def __init__(self, *, grace_s: float = 2.0, rejoin_grace_s: float = 8.0) -> None:
        self.grace_s = grace_s
        self.rejoin_grace_s = max(grace_s, rejoin_grace_s)
        self._wills: dict[str, _Will] = {}
        self._away = False
        self._back_at = -1e18

    # -- inputs -----------------------------------------------------------------
    def will(self, agent: str, ts: float, now: float, *, instance: str | None = None, epoch: int = 0) -> None:
        """``agent``'s offline presence arrived (its will, or a retained copy),
        from its run ``instance``, last known in ``epoch``. At most
        :data:`MAX_WILLS` are kept: past that, the oldest whose death was
        handled goes (made-up names cost a bounded table)."""
        if agent in self._wills:
            return
        if len(self._wills) >= MAX_WILLS:
            old = next((a for a, w in self._wills.items() if w.handled), next(iter(self._wills)))
            del self._wills[old]
        self._wills[agent] = _Will(since=now, ts=ts, due=self._due_from(now), instance=instance, epoch=epoch)

    def revived(self, agent: str, *, instance: str | None, epoch: int | None) -> bool:
        """Whether a claim ``agent`` made (as run ``instance``, in ``epoch``)
        shows it alive after its will: made by another run, or in a later epoch
        (claims of the will's epoch may be resent after it by its client)."""
        w = self._wills.get(agent)
        if w is None:
            return False
        if instance is not None and w.instance is not None and instance != w.instance:
            return True
        return (epoch or 0) > w.epoch

    def back(self, agent: str) -> bool:
        """``agent`` announced itself online: True if it was watched (it came
        back after its will; what it held may need contesting)."""
        return self._wills.pop(agent, None) is not None

    def forget(self, agent: str) -> None:
        self._wills.pop(agent, None)

    def lost_connection(self) -> None:
        """This agent's own control connection dropped."""
        self._away = True

    def reconnected(self, now: float) -> None:
        """Back: every pending death starts over (the wills may have come from
        a broker shutting down, and peers reconnect with backoff)."""
        self._away = False
        self._back_at = now
        for w in self._wills.values():
            if not w.handled:
                w.since, w.due = now, now + self.rejoin_grace_s

    def _due_from(self, now: float) -> float:
        return max(now + self.grace_s, self._back_at + self.rejoin_grace_s)

    # -- views --------------------------------------------------------------------
    def due(self, now: float) -> list[tuple[str, float]]:
        """Peers dead as of ``now`` and not yet handled: (agent, will ts), each
        returned once."""
        if self._away:
            return []
        out = []
        for agent, w in self._wills.items():
            if not w.handled and now >= w.due:
                w.handled = True
                out.append((agent, w.ts))
        return out

    def next_deadline(self) -> float | None:
        if self._away:
            return None
        return min((w.due for w in self._wills.values() if not w.handled), default=None)

    def watched(self) -> set[str]:
        """Peers whose will arrived and whose grace is still running: they may be back."""
        return {agent for agent, w in self._wills.items() if not w.handled}

    def declared(self, agent: str) -> bool:
        """Dead: its grace ran out and its death was handled (its tasks contested)."""
        w = self._wills.get(agent)
        return w is not None and w.handled

    def __contains__(self, agent: object) -> bool:
        """Its will arrived and it has not come back (dead, or maybe dead)."""
        return agent in self._wills
