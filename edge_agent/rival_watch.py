"""Another process under this agent's id: which of the two leaves, and when
that is judged. Pure: ``now`` comes in.

Why judged later and not at once: an agent restarted at once resumes its
persistent control session, which can hold what its previous instance
published last and never read, its "online" and then its "offline" (or its
will). Taken at its word, that stale "online" made a restarted agent leave.
So another instance's "online" is judged :data:`ID_CONFLICT_WAIT_S` after
its first word (or two and a half of its presence periods, if longer), by
its latest word then, unless an "offline" came first; and only a rival that
spoke twice then (two announcements, two times) is alive: a broker restarted
from an old persistence file brought back a dead instance's retained
"online" with nothing after it, and the agent that was restarted took it
at its word and left for good, its session collecting a third of the tasks.
The one that started later leaves, without a word on the presence topic
(its offline would hide the one that stays); the earlier one speaks again.
"""

from __future__ import annotations

from fogmesh.announcements import Presence
from fogmesh.errors import InvalidMessage

ID_CONFLICT_WAIT_S = 1.0


def rival_presence(payload: bytes, *, agent_id: str, instance: str) -> Presence | None:
    """What a message on this agent's own presence topic says of another
    instance of its id (None: its own word, or no valid presence)."""
    try:
        other = Presence.decode(payload, agent=agent_id)
    except InvalidMessage:
        return None
    return other if other.instance not in (None, instance) else None


class RivalWatch:
    def __init__(self, *, wait_s: float = ID_CONFLICT_WAIT_S) -> None:
        self.wait_s = wait_s
        # instance -> (latest word, judged at, the times it announced)
        self._rivals: dict[str, tuple[Presence, float, frozenset[float]]] = {}

    def heard(self, other: Presence, now: float) -> None:
        """Another instance of this id said something on its presence topic."""
        instance = other.instance or ""
        if other.state == "offline":
            self._rivals.pop(instance, None)
            return
        if instance in self._rivals:
            _, judge_at, said = self._rivals[instance]
        else:
            judge_at, said = now + max(self.wait_s, 2.5 * (other.period or 0.0)), frozenset()
        self._rivals[instance] = (other, judge_at, said | {other.ts})

    @property
    def waiting(self) -> bool:
        """A rival waits to be judged (meanwhile this agent says nothing on its presence topic)."""
        return bool(self._rivals)

    @property
    def next_at(self) -> float:
        return min((at for _, at, _ in self._rivals.values()), default=float("inf"))

    def due(self, now: float) -> list[Presence]:
        """The rivals judged now: still online at their time, and alive (they
        announced themselves twice); a single stale word is forgotten."""
        out = []
        for instance, (other, at, said) in list(self._rivals.items()):
            if now >= at:
                del self._rivals[instance]
                if len(said) >= 2:
                    out.append(other)
        return out


def this_one_leaves(*, since: float, instance: str, other: Presence) -> bool:
    """Whether this agent (started at ``since``, ``instance``) is the one to
    leave: the other started first (ties broken by instance)."""
    return (other.since or 0.0, other.instance or "") < (since, instance)
