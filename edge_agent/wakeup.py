"""When the agent's dispatcher must look next, however little happens:
the earliest of every deadline the shell keeps. Pure."""

from __future__ import annotations

MAX_SLEEP_S = 3600.0      # the longest wait (a queue refuses an infinite timeout)


def next_wake(*, core_due: float | None, journal_retry_at: float, probe_at: float, beat_at: float,
              rivals_at: float, presence_at: float, presence_held: bool, stop_poll_at: float,
              hold_poll_at: float) -> float:
    """The core's next deadline, the journal retry, the claim-order probe, the
    watchdog's beat, a rival instance of this id to judge, presence (unless
    it is held: an announcement due meanwhile would have the dispatcher
    spin), a stopping agent's look, and a presence hold's poll."""
    wake = min(journal_retry_at, probe_at, beat_at, rivals_at, stop_poll_at, hold_poll_at)
    if not presence_held:
        wake = min(wake, presence_at)
    return wake if core_due is None else min(wake, core_due)
