"""When the agent takes new tasks in: flow control on its unconfirmed answers.

Why: an agent answers as fast as it can, but the broker takes (PUBACKs) its
answers only as fast as it forwards them; a broker busy pushing replies to a
device that reads slowly, or not at all, confirms later and later. Every
answer not yet confirmed is held by the MQTT client (to send again), so an
agent that keeps taking tasks meanwhile grows without bound (a flood of
20,000 tasks: +90 MB). So the agent stops *taking* tasks while its
unconfirmed answers reach ``high``, and takes them again once they are down
to ``low``. Tasks it has not taken are not acknowledged, so the broker's
in-flight window (mosquitto's ``max_inflight_messages``, MQTT 5's Receive
Maximum, the embedded broker's per-member window) stops sending more: they
wait at the broker, in order, and the agent's memory is bounded by
``high`` answers plus that window of tasks, whatever the relative speeds.
That is MQTT's own flow control; nothing sleeps.

Pure: the shell asks :meth:`IntakeGate.admits` with the count its MQTT
client reports, and parks the tasks it may not take yet (in arrival order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_HIGH = 500      # unconfirmed answers at which intake stops
DEFAULT_LOW = 250       # ... and resumes


@dataclass
class IntakeGate:
    """Hysteresis between ``high`` and ``low`` unconfirmed answers."""

    high: int = DEFAULT_HIGH
    low: int = DEFAULT_LOW
    closed: bool = field(default=False, init=False)
    closings: int = field(default=0, init=False)     # how often intake stopped (a counter for metrics)

    def __post_init__(self) -> None:
        if not 0 <= self.low < self.high:
            raise ValueError(f"need 0 <= low < high, got low={self.low}, high={self.high}")

    def admits(self, unconfirmed: int) -> bool:
        """Whether a task may be taken in now, with ``unconfirmed`` answers out."""
        if self.closed and unconfirmed <= self.low:
            self.closed = False
        elif not self.closed and unconfirmed >= self.high:
            self.closed = True
            self.closings += 1
        return not self.closed

    @property
    def reopens_at(self) -> int:
        """The count at or below which a closed gate opens again."""
        return self.low
