"""Tier 1 (pure): the embedded broker's decisions about sessions, on a fake
clock: when a client is overdue (broker/keepalive.py), what a session holds
and what goes again on a reconnect (broker/session_state.py), and what a
shared-subscription group keeps across a restart (broker/shared.py)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogmesh.broker.keepalive import KeepAlive
from fogmesh.broker.session_state import (
    PUBLISH_AGAIN,
    RELEASE_AGAIN,
    BrokerState,
    InFlight,
    Message,
    SessionState,
    decode,
    encode,
    kept_after_connection,
    on_connect,
    resend,
)
from fogmesh.broker.shared import GroupState, Queued, SharedGroups, ShareFilter

SHARE = ShareFilter("agents", "fog/v1/tasks")


# -- the keep-alive --------------------------------------------------------------------------
def test_a_client_is_overdue_once_silent_for_one_and_a_half_keepalives():
    k = KeepAlive(10, now=100.0)
    assert k.deadline() == 115.0
    assert not k.overdue(114.9)
    assert k.overdue(115.0)


def test_anything_heard_from_the_client_moves_the_deadline():
    k = KeepAlive(10, now=0.0)
    k.heard(9.0)
    assert not k.overdue(20.0)
    assert k.deadline() == 24.0
    k.heard(5.0)                      # a late report of an earlier read moves nothing back
    assert k.deadline() == 24.0


def test_a_keepalive_of_zero_turns_the_watch_off():
    k = KeepAlive(0, now=0.0)
    assert k.deadline() is None and not k.overdue(1e9)


def test_a_negative_keepalive_is_refused():
    with pytest.raises(ValueError):
        KeepAlive(-1, now=0.0)


# -- sessions -----------------------------------------------------------------------------------
@pytest.mark.parametrize("clean,existing,want", [
    (True, None, (False, False)),      # new, clean
    (False, None, (False, False)),     # new, persistent: session present 0 [MQTT-3.2.2-3]
    (True, False, (True, False)),      # a clean CONNECT discards the old session [MQTT-3.1.2-6]
    (True, True, (True, False)),
    (False, False, (False, True)),     # a persistent session resumed [MQTT-3.1.2-4, 3.2.2-2]
    (False, True, (True, False)),      # a clean session is never resumed, even one still connected
])
def test_what_a_connect_does_with_the_session_the_client_had(clean, existing, want):
    assert on_connect(clean=clean, existing_clean=existing) == want


def test_only_a_persistent_session_outlives_its_connection():
    assert kept_after_connection(clean=False) and not kept_after_connection(clean=True)


@pytest.mark.parametrize("qos,released,want", [(1, False, PUBLISH_AGAIN), (2, False, PUBLISH_AGAIN),
                                               (2, True, RELEASE_AGAIN)])
def test_what_goes_again_down_the_next_connection(qos, released, want):
    # [MQTT-4.4.0-1]: the PUBLISH again unless a QoS 2 message's PUBREC came: then its PUBREL
    assert resend(InFlight(7, Message("t", b"x", qos), released=released)) == want


# -- the state as bytes --------------------------------------------------------------------------
payloads = st.binary(max_size=40)
topics = st.text(alphabet="abc/$+#é", min_size=1, max_size=12)
messages = st.builds(Message, topics, payloads, st.sampled_from([0, 1, 2]), st.booleans())
inflight = st.builds(InFlight, st.integers(1, 65535), messages, st.booleans())
sessions = st.builds(SessionState, st.text(min_size=1, max_size=10),
                     st.dictionaries(topics, st.sampled_from([0, 1, 2]), max_size=3),
                     st.lists(inflight, max_size=3), st.lists(inflight, max_size=3), st.lists(messages, max_size=3),
                     st.integers(0, 65535))
groups = st.builds(GroupState, st.builds(ShareFilter, st.text(alphabet="gh", min_size=1, max_size=3), topics),
                   st.dictionaries(st.text(min_size=1, max_size=5), st.sampled_from([0, 1]), max_size=3),
                   st.lists(st.builds(Queued, topics, payloads, st.integers(0, 10**6), st.booleans()),
                            max_size=4).map(tuple),
                   st.integers(0, 10**6),
                   st.dictionaries(st.text(min_size=1, max_size=5),
                                   st.lists(st.builds(Queued, topics, payloads, st.integers(0, 10**6), st.booleans()),
                                            max_size=2).map(tuple), max_size=2))


@given(st.builds(BrokerState, st.lists(sessions, max_size=3), st.lists(messages, max_size=3),
                 st.lists(groups, max_size=2)))
def test_the_state_reads_back_as_written(state):
    assert decode(encode(state)) == state


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b'{"format": "other"}',
                                  b'{"format": "fogmesh-embedded-broker-state", "version": 99}',
                                  b'{"format": "fogmesh-embedded-broker-state", "version": 1, "sessions": [{}]}',
                                  b'{"format": "fogmesh-embedded-broker-state", "version": 1, "sessions": [], '
                                  b'"retained": [["t", "!!", 1, true]], "groups": []}'])
def test_anything_but_a_state_file_is_refused_with_a_value_error(data):
    with pytest.raises(ValueError):
        decode(data)


# -- shared-subscription groups across a restart -------------------------------------------------------
def test_a_group_keeps_its_persistent_members_and_what_waits_in_it():
    g = SharedGroups()
    g.subscribe("agent", SHARE, 1)
    g.subscribe("clean-one", SHARE, 1)
    for n in range(3):
        g.publish("fog/v1/tasks", b"%d" % n)
    (state,) = g.snapshot(lambda c: c == "agent")
    assert state.members == {"agent": 1}
    assert [m.payload for m in state.waiting] == [b"0", b"1", b"2"]


def test_what_was_out_to_a_member_goes_back_to_that_member_flagged_dup():
    # As MQTT resends a session's messages in flight [MQTT-4.4.0-1]: an agent holds
    # such a task or has answered it; another member would run it again.
    g = SharedGroups(max_inflight=2)
    g.subscribe("a", SHARE, 1)
    g.subscribe("b", SHARE, 1)
    for n in range(5):
        g.publish("fog/v1/tasks", b"%d" % n)
    sent = g.deliveries(lambda c: c == "a")                   # 0 and 1 out to a; 2, 3, 4 wait
    g.acked(sent[0])                                          # 0 acknowledged: gone
    after = SharedGroups()
    after.restore(g.snapshot(lambda c: True))
    to_b = after.deliveries(lambda c: c == "b")               # b is back first
    assert [d.message.payload for d in to_b] == [b"2", b"3", b"4"]
    to_a = after.deliveries(lambda c: True)
    assert [(d.client_id, d.message.payload, d.message.dup) for d in to_a] == [("a", b"1", True)]


def test_what_a_member_not_back_in_time_had_goes_to_another_flagged_dup():
    g = SharedGroups()
    g.subscribe("a", SHARE, 1)
    g.subscribe("b", SHARE, 1)
    g.publish("fog/v1/tasks", b"x")
    (d,) = g.deliveries(lambda c: c == "a")
    after = SharedGroups()
    after.restore(g.snapshot(lambda c: True))
    assert after.deliveries(lambda c: c == "b") == []         # kept for a while
    assert after.release_pinned() == 1
    (again,) = after.deliveries(lambda c: c == "b")
    assert (again.client_id, again.message.payload, again.message.dup) == ("b", b"x", True)


def test_what_was_out_to_a_member_whose_session_ends_waits_in_the_group():
    g = SharedGroups()
    g.subscribe("clean-one", SHARE, 1)
    g.subscribe("agent", SHARE, 1)
    g.publish("fog/v1/tasks", b"x")
    g.deliveries(lambda c: c == "clean-one")
    (state,) = g.snapshot(lambda c: c == "agent")
    assert state.held == {} and [(m.payload, m.dup) for m in state.waiting] == [(b"x", True)]


def test_a_group_with_no_persistent_member_is_not_kept():
    g = SharedGroups()
    g.subscribe("clean-one", SHARE, 1)
    g.publish("fog/v1/tasks", b"x")
    assert g.snapshot(lambda c: False) == []


def test_a_restored_group_numbers_new_messages_after_the_kept_ones():
    g = SharedGroups()
    g.subscribe("a", SHARE, 1)
    g.publish("fog/v1/tasks", b"old")
    after = SharedGroups()
    after.restore(g.snapshot(lambda c: True))
    after.publish("fog/v1/tasks", b"new")
    assert [d.message.payload for d in after.deliveries(lambda c: True)] == [b"old", b"new"]
