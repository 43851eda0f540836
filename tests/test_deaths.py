"""Tier 1 (pure): when a peer counts as dead (edge_agent/deaths.py), including
a broker that restarts and publishes every agent's will."""

from fogmesh.edge_agent.deaths import DeathWatch


def test_a_peer_is_dead_once_its_will_is_older_than_the_grace_and_only_once():
    w = DeathWatch(grace_s=2.0)
    w.will("p", ts=100.0, now=10.0)
    assert w.due(11.9) == [] and w.next_deadline() == 12.0
    assert w.due(12.0) == [("p", 100.0)]
    assert w.due(20.0) == [] and "p" in w


def test_a_peer_back_online_within_the_grace_is_not_dead():
    w = DeathWatch(grace_s=2.0)
    w.will("p", ts=100.0, now=10.0)
    assert w.back("p") is True
    assert w.due(30.0) == [] and "p" not in w
    assert w.back("p") is False


def test_nothing_is_declared_dead_while_this_agent_is_itself_disconnected():
    w = DeathWatch(grace_s=2.0, rejoin_grace_s=8.0)
    w.will("p", ts=100.0, now=10.0)          # the broker shuts down: every will comes
    w.lost_connection()
    assert w.due(60.0) == [] and w.next_deadline() is None


def test_after_a_reconnect_pending_deaths_start_over_with_the_rejoin_grace():
    w = DeathWatch(grace_s=2.0, rejoin_grace_s=8.0)
    w.will("p", ts=100.0, now=10.0)
    w.lost_connection()
    w.reconnected(15.0)
    assert w.due(22.9) == [] and w.due(23.0) == [("p", 100.0)]


def test_retained_wills_seen_just_after_a_reconnect_get_the_rejoin_grace_too():
    w = DeathWatch(grace_s=2.0, rejoin_grace_s=8.0)
    w.lost_connection()
    w.reconnected(15.0)
    w.will("q", ts=90.0, now=15.1)           # the retained offline presence after the restart
    assert w.next_deadline() == 23.0
    assert w.due(23.0) == [("q", 90.0)]
    w.will("r", ts=95.0, now=40.0)           # long after: the normal grace
    assert w.due(42.0) == [("r", 95.0)]
