"""Another process under this agent's id: which of the two leaves, and when
that is judged. Pure: ``now`` comes in.

Why judged later and not at once: an agent restarted at once resumes its
persistent control session, which can hold what its previous instance
published last and never read, its "online" and then its "offline" (or its
will). Taken at its word, that stale "online" made a restarted agent leave.
So another instance's "online" is judged :data:`ID_CONFLICT_WAIT_S` after
its first word, by its latest word then, unless an "offline" came first.
The one that started later leaves, without a word on the presence topic
(its offline would hide the one that stays); the earlier one speaks again.
"""

from __future__ import annotations

from fogmesh.announcements import Presence

ID_CONFLICT_WAIT_S = 1.0


class RivalWatch:
    def __init__(self, *, wait_s: float = ID_CONFLICT_WAIT_S) -> None:
        self.wait_s = wait_s
        self._rivals: dict[str, tuple[Presence, float]] = {}     # instance -> (latest word, judged at)

    def heard(self, other: Presence, now: float) -> None:
        """Another instance of this id said something on its presence topic."""
        instance = other.instance or ""
        if other.state == "offline":
            self._rivals.pop(instance, None)
            return
        judge_at = self._rivals[instance][1] if instance in self._rivals else now + self.wait_s
        self._rivals[instance] = (other, judge_at)

    @property
    def waiting(self) -> bool:
        """A rival waits to be judged (meanwhile this agent says nothing on its presence topic)."""
        return bool(self._rivals)

    @property
    def next_at(self) -> float:
        return min((at for _, at in self._rivals.values()), default=float("inf"))

    def due(self, now: float) -> list[Presence]:
        """The rivals judged now: still online at their time."""
        out = []
        for instance, (other, at) in list(self._rivals.items()):
            if now >= at:
                del self._rivals[instance]
                out.append(other)
        return out


def this_one_leaves(*, since: float, instance: str, other: Presence) -> bool:
    """Whether this agent (started at ``since``, ``instance``) is the one to
    leave: the other started first (ties broken by instance)."""
    return (other.since or 0.0, other.instance or "") < (since, instance)
