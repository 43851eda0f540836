"""Tier 1 (pure): the start-up check of an agent's id judges a retained
"online" presence by its age (issue #36 audit: a whole box back from a power
cut waited 1.5 presence periods for a fresh word from its own dead self,
while mosquitto, which does not restore shared subscriptions, dropped what
devices sent)."""

from fogmesh.announcements import Presence
from fogmesh.edge_agent.unique import CLOCK_SKEW_S, long_silent


def online(ts: float, period: float = 5.0) -> Presence:
    return Presence(agent="pi-1", state="online", ts=ts, period=period, capacity=1, kinds=("echo",))


def test_a_presence_a_minute_old_has_nobody_live_behind_it():
    assert long_silent(online(1000.0), now=1060.0, wait_s=0.0)


def test_a_recent_presence_is_waited_on_and_so_is_one_within_the_clock_skew():
    assert not long_silent(online(1000.0), now=1002.0, wait_s=0.0)
    assert not long_silent(online(1000.0), now=1000.0 + 8.5 + CLOCK_SKEW_S - 0.1, wait_s=0.0)


def test_a_slow_announcer_or_a_presence_from_a_clock_ahead_is_waited_on():
    assert not long_silent(online(1000.0, period=60.0), now=1100.0, wait_s=0.0)   # a large site's pace
    assert not long_silent(online(2000.0), now=1000.0, wait_s=0.0)                # its ts in our future


def test_a_presence_without_a_time_is_waited_on():
    assert not long_silent(online(0.0), now=1000.0, wait_s=0.0)
