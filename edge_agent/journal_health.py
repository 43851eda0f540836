"""How often a degraded agent tries its journal again, and whether it keeps
its task subscriptions meanwhile. Pure: ``now`` comes in. (Whether it is
degraded, and why, is the core's: ``AgentCore.degraded``.)"""

from __future__ import annotations

RETRY_S = 5.0     # at most; an agent tries every presence period when that is shorter


class JournalHealth:
    def __init__(self, *, presence_period: float, retry_s: float = RETRY_S) -> None:
        # Back within a presence period of the disk having room again.
        self.every_s = min(retry_s, presence_period)
        self.retry_at = float("inf")

    def failed(self, now: float) -> None:
        self.retry_at = now + self.every_s

    def due(self, now: float) -> bool:
        return now >= self.retry_at

    def still_failing(self, now: float) -> None:
        self.retry_at = now + self.every_s

    def works(self) -> None:
        self.retry_at = float("inf")


def wants_task_subscriptions(*, draining: bool, degraded: bool, last_to_answer: bool) -> bool:
    """Hold the task subscriptions exactly while tasks should reach this agent:
    not draining, and either not degraded or the last agent able to answer
    them (it answers them with a ``degraded`` error rather than let the
    broker drop them: ``AgentCore.last_to_answer``)."""
    return not draining and (not degraded or last_to_answer)
