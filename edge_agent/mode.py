"""The agent core's mode: what new work it takes, as one value that moves
only along a transition table (:data:`MODE_TRANSITIONS`), h11's way. Pure.

Two things decide it, and the modes are their combinations:

* whether the agent is leaving: not (online), *draining* (the operator asked
  it to leave: it takes no offers from peers and stands in no rescue
  election, and finishes what it holds and what still arrives), or
  *stopping* (task messages are left with the broker, which redelivers them
  to this agent's session later; held tasks finish). A stop follows a drain
  (a drained agent stops); a drain asked of a stopping agent is the shell's
  (its presence says draining), the core stops as it did;
* whether it is *degraded*: its journal failed (it leaves new tasks to live
  peers, answers them ``degraded`` when it is the last agent able to, takes
  no offers, and tries the journal again), or the claims topic reaches the
  agents in different orders (*diverged*: the same, for good).

A change not in a mode's row leaves the mode as it is: a second drain, a
journal failing while the agent is degraded already, claims diverging while
its journal is down (it stays degraded by the journal, and takes tasks again
when that works). The degraded reason (what the operator reads) travels with
the change: :class:`ModeState`.
"""

from __future__ import annotations

from enum import Enum


class Change(str, Enum):
    """What moves the mode."""

    JOURNAL_FAILED = "journal failed"
    JOURNAL_WORKS = "journal works"
    CLAIMS_DIVERGED = "claims diverged"
    DRAIN = "drain"
    STOP = "stop"


class Mode(Enum):
    """Each mode with what it means (``leaving``, ``degraded_by``); ``str``
    gives its name for logs."""

    #                   name                  leaving      degraded by
    ONLINE = ("online", None, None)
    DEGRADED = ("degraded", None, "journal")
    DIVERGED = ("diverged", None, "claims")
    DRAINING = ("draining", "draining", None)
    DRAINING_DEGRADED = ("draining, degraded", "draining", "journal")
    DRAINING_DIVERGED = ("draining, diverged", "draining", "claims")
    STOPPING = ("stopping", "stopping", None)
    STOPPING_DEGRADED = ("stopping, degraded", "stopping", "journal")
    STOPPING_DIVERGED = ("stopping, diverged", "stopping", "claims")

    def __init__(self, label: str, leaving: str | None, degraded_by: str | None) -> None:
        self.label = label
        self.leaving = leaving                    # None, "draining" or "stopping"
        self.degraded_by = degraded_by            # None, "journal" or "claims"
        self.takes_tasks = leaving != "stopping"  # task messages taken (stopping: left with the broker)
        self.draining = leaving == "draining"

    def __str__(self) -> str:
        return self.label


M, C = Mode, Change
MODE_TRANSITIONS: dict[Mode, dict[Change, Mode]] = {
    M.ONLINE: {C.JOURNAL_FAILED: M.DEGRADED, C.CLAIMS_DIVERGED: M.DIVERGED, C.DRAIN: M.DRAINING,
               C.STOP: M.STOPPING},
    M.DEGRADED: {C.JOURNAL_WORKS: M.ONLINE, C.DRAIN: M.DRAINING_DEGRADED, C.STOP: M.STOPPING_DEGRADED},
    M.DIVERGED: {C.DRAIN: M.DRAINING_DIVERGED, C.STOP: M.STOPPING_DIVERGED},
    M.DRAINING: {C.JOURNAL_FAILED: M.DRAINING_DEGRADED, C.CLAIMS_DIVERGED: M.DRAINING_DIVERGED,
                 C.STOP: M.STOPPING},
    M.DRAINING_DEGRADED: {C.JOURNAL_WORKS: M.DRAINING, C.STOP: M.STOPPING_DEGRADED},
    M.DRAINING_DIVERGED: {C.STOP: M.STOPPING_DIVERGED},
    M.STOPPING: {C.JOURNAL_FAILED: M.STOPPING_DEGRADED, C.CLAIMS_DIVERGED: M.STOPPING_DIVERGED},
    M.STOPPING_DEGRADED: {C.JOURNAL_WORKS: M.STOPPING},
    M.STOPPING_DIVERGED: {},
}


class ModeState:
    """The core's mode (:attr:`current`), and why it is degraded."""

    def __init__(self) -> None:
        self.current = Mode.ONLINE
        self._reason: str | None = None

    def change(self, change: Change, *, reason: str | None = None) -> bool:
        """Move along :data:`MODE_TRANSITIONS`; True if the mode changed. A
        change that degrades the agent says why (``reason``)."""
        to = MODE_TRANSITIONS[self.current].get(change)
        if to is None:
            return False
        if to.degraded_by is None:
            self._reason = None
        elif self.current.degraded_by is None:
            self._reason = reason
        self.current = to
        return True

    @property
    def takes_tasks(self) -> bool:
        """Task messages are taken (stopping: left with the broker)."""
        return self.current.takes_tasks

    @property
    def leaving(self) -> bool:
        """Draining or stopping: no offers taken, no rescue elections."""
        return self.current.leaving is not None

    @property
    def draining(self) -> bool:
        return self.current.draining

    @property
    def degraded_by(self) -> str | None:
        """None, "journal" (it tries again) or "claims" (for good)."""
        return self.current.degraded_by

    @property
    def degraded(self) -> str | None:
        """Why this agent takes no new work (its journal failed, claims' order), or None."""
        return self._reason if self.current.degraded_by is not None else None
