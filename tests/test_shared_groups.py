"""Tier 1 (pure): the embedded broker's shared subscriptions (broker/shared.py)."""

import pytest

from fogmesh.broker.shared import SharedGroups, ShareFilter, valid_filter
from fogmesh.topics import topic_matches

SHARE = ShareFilter("agents", "fog/v1/tasks")


def connected(*ids):
    return lambda c: c in ids


def test_a_shared_filter_names_its_group_and_the_filter_it_wraps():
    assert ShareFilter.parse("$share/agents/fog/v1/tasks/+") == ShareFilter("agents", "fog/v1/tasks/+")
    for bad in ("fog/v1/tasks", "$share/agents", "$share//fog", "$share/a+b/fog", "$share/agents/"):
        assert ShareFilter.parse(bad) is None


@pytest.mark.parametrize("f,ok", [("a/+/c", True), ("a/#", True), ("#", True), ("a/b+", False),
                                  ("a/#/c", False), ("", False)])
def test_filters_follow_the_mqtt_wildcard_rules(f, ok):
    assert valid_filter(f) is ok


@pytest.mark.parametrize("f,topic,ok", [("fog/v1/tasks/+", "fog/v1/tasks/dev-1", True),
                                        ("fog/v1/tasks/+", "fog/v1/tasks", False),
                                        ("fog/#", "fog/v1/tasks", True), ("+/v1", "$SYS/v1", False)])
def test_topics_match_filters(f, topic, ok):
    assert topic_matches(f, topic) is ok


def test_each_message_goes_to_one_member():
    g = SharedGroups()
    g.subscribe("a", SHARE, 1)
    g.subscribe("b", SHARE, 1)
    for n in range(10):
        g.publish("fog/v1/tasks", b"%d" % n)
    out = g.deliveries(connected("a", "b"))
    assert sorted(d.message.payload for d in out) == [b"%d" % n for n in range(10)]
    assert {d.client_id for d in out} == {"a", "b"}


def test_the_least_busy_member_gets_the_next_message():
    g = SharedGroups()
    g.subscribe("a", SHARE, 1)
    g.subscribe("b", SHARE, 1)
    g.publish("fog/v1/tasks", b"1")
    g.publish("fog/v1/tasks", b"2")
    first = g.deliveries(connected("a", "b"))
    g.acked(next(d for d in first if d.client_id == "a"))       # a answered, b is still busy
    g.publish("fog/v1/tasks", b"3")
    assert [d.client_id for d in g.deliveries(connected("a", "b"))] == ["a"]


def test_a_full_window_keeps_the_rest_in_the_group_in_order():
    g = SharedGroups(max_inflight=2)
    g.subscribe("a", SHARE, 1)
    for n in range(5):
        g.publish("fog/v1/tasks", b"%d" % n)
    first = g.deliveries(connected("a"))
    assert [d.message.payload for d in first] == [b"0", b"1"] and g.queued(SHARE) == 3
    g.acked(first[0])
    assert [d.message.payload for d in g.deliveries(connected("a"))] == [b"2"]


def test_what_a_departed_member_held_goes_to_another_flagged_dup_and_first():
    g = SharedGroups()
    g.subscribe("a", SHARE, 1)
    g.subscribe("b", SHARE, 1)
    g.publish("fog/v1/tasks", b"x")
    held = g.deliveries(connected("a"))
    g.publish("fog/v1/tasks", b"y")
    g.returned(held)
    again = g.deliveries(connected("b"))
    assert [(d.client_id, d.message.payload, d.message.dup) for d in again] == \
        [("b", b"x", True), ("b", b"y", False)]


def test_messages_wait_while_no_member_is_connected():
    g = SharedGroups()
    g.subscribe("a", SHARE, 1)
    g.publish("fog/v1/tasks", b"x")
    assert g.deliveries(connected()) == []
    assert [d.message.payload for d in g.deliveries(connected("a"))] == [b"x"]


def test_a_group_without_members_is_gone_and_takes_nothing():
    g = SharedGroups()
    g.subscribe("a", SHARE, 1)
    g.unsubscribe("a", SHARE)
    assert g.publish("fog/v1/tasks", b"x") == 0


def test_a_clean_session_leaves_every_group():
    g = SharedGroups()
    g.subscribe("a", SHARE, 1)
    g.subscribe("a", ShareFilter("agents", "fog/v1/tasks/+"), 1)
    g.remove_client("a")
    assert g.members(SHARE) == ()


def test_the_group_queue_is_bounded_and_counts_what_it_drops():
    g = SharedGroups(max_queued=3)
    g.subscribe("a", SHARE, 1)
    for n in range(5):
        g.publish("fog/v1/tasks", b"%d" % n)
    assert g.queued(SHARE) == 3 and g.dropped == 2
