"""When an agent on shared subscriptions says nothing on its presence topic.
Pure: ``now`` and what the connections say come in.

"online" means tasks reach this agent. Whoever sends work on hearing it (a
site bridge replaying its outbox to the cloud workers) would have it dropped
by a broker with no member in the ``$share`` group yet. So presence waits
for the task subscriptions at start-up, and after the task connection
dropped, until that connection is back with its subscriptions acknowledged
(a broker restarted without its sessions has none), or :data:`HOLD_S` after
the control connection came back (peers judge an agent dead after three
silent periods, 15 s by default). And while another instance of this id
waits to be judged (:mod:`fogmesh.edge_agent.rival_watch`).
"""

from __future__ import annotations

HOLD_S = 10.0
POLL_S = 0.1      # while held after a drop: how often the shell looks whether the subscriptions are back


class PresenceHold:
    def __init__(self, *, shared: bool, hold_s: float = HOLD_S) -> None:
        self.shared = shared
        self.hold_s = hold_s
        self.task_link_lost = False
        self.control_up_at = float("-inf")       # inf while the control connection is down

    def task_link_down(self) -> None:
        if self.shared:
            self.task_link_lost = True

    def control_up(self, now: float) -> None:
        self.control_up_at = now

    def control_down(self) -> None:
        self.control_up_at = float("inf")

    def waits(self, now: float, *, subscribed: bool, resubscribed: bool, rival_waiting: bool) -> bool:
        """Whether to say nothing now. ``subscribed``: start-up's task
        subscriptions are acknowledged; ``resubscribed``: the task connection's
        current ones are."""
        if rival_waiting:
            return True
        if not self.shared:
            return False
        if not subscribed:
            return True
        return self.task_link_lost and not (resubscribed or now >= self.control_up_at + self.hold_s)

    def released(self, now: float, *, subscribed: bool, resubscribed: bool, rival_waiting: bool) -> bool:
        """Whether a hold after a drop ends now (then announce at once)."""
        if self.waits(now, subscribed=subscribed, resubscribed=resubscribed, rival_waiting=rival_waiting):
            return False
        if self.task_link_lost:
            self.task_link_lost = False
            return True
        return False

    def poll_at(self, now: float) -> float:
        """When the shell must look again although nothing happens: while a
        hold after a drop runs and the control connection is up (its return
        is an event; the task connection's subscriptions coming back is not)."""
        if self.task_link_lost and self.control_up_at != float("inf"):
            return now + POLL_S
        return float("inf")
