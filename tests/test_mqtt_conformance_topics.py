"""Tier 3 (real brokers): MQTT 3.1.1's broker-side contract, continued
(test_mqtt_conformance.py): topic filters and wildcards, ``$`` topics,
overlapping and repeated subscriptions, unsubscribing, PINGREQ. Written once,
run on mosquitto and on the embedded broker alike, with hand-built packets
(``rawmqtt.py``); what mosquitto lacks is marked so."""

from __future__ import annotations

import uuid

import pytest
from rawmqtt import CONNECT, SUBSCRIBE, UNSUBSCRIBE, Closed, packet, publisher, subscriber, text

pytestmark = pytest.mark.timeout(30)


# -- topics and subscriptions -------------------------------------------------------------------
def test_the_single_level_wildcard_matches_exactly_one_level(client, root):
    # [MQTT-4.7.1-3]
    s = subscriber(client, "s", (f"{root}/+/c", 1))
    p = publisher(client)
    for topic in ("b/c", "b/d/c", "c", "x/c"):
        p.publish_acked(f"{root}/{topic}", topic.encode(), qos=1)
    assert sorted(m.payload for m in s.received(2)) == [b"b/c", b"x/c"]
    assert s.nothing_within(0.3)


def test_the_multi_level_wildcard_matches_its_parent_and_every_level_below(client, root):
    # [MQTT-4.7.1-2]
    s = subscriber(client, "s", (f"{root}/a/#", 1))
    p = publisher(client)
    for topic in ("a", "a/b", "a/b/c", "ab"):
        p.publish_acked(f"{root}/{topic}", topic.encode(), qos=1)
    assert sorted(m.payload for m in s.received(3)) == [b"a", b"a/b", b"a/b/c"]
    assert s.nothing_within(0.3)


def test_topics_starting_with_dollar_are_not_matched_by_a_leading_wildcard(client):
    # [MQTT-4.7.2-1]: $SYS/broker/version is retained on both brokers
    everything = subscriber(client, "all", ("#", 0), ("+/broker/version", 0))
    seen = [m.topic for m in everything.until_quiet(0.5)]
    assert not [t for t in seen if t.startswith("$")]
    sys = subscriber(client, "sys", ("$SYS/broker/version", 0))
    assert sys.read().topic == "$SYS/broker/version"


def test_a_client_message_to_a_dollar_topic_reaches_its_exact_subscribers_only(client):
    # [MQTT-4.7.2-1] a filter starting with a wildcard does not match a topic starting
    # with '$'; a filter that names its first level does ('$x/leaf', '$x/+', '$x/#')
    leaf = uuid.uuid4().hex[:10]
    exact = subscriber(client, "exact", (f"$x/{leaf}", 1))
    one_below = subscriber(client, "one-below", ("$x/+", 1))
    all_below = subscriber(client, "all-below", ("$x/#", 1))
    leading = subscriber(client, "leading", (f"+/{leaf}", 1), ("#", 1))
    publisher(client).publish_acked(f"$x/{leaf}", b"dollar", qos=1)
    for named in (exact, one_below, all_below):
        assert [(m.topic, m.payload) for m in named.received(1)] == [(f"$x/{leaf}", b"dollar")]
    # The broker has routed the '$' message (a subscriber has it): a copy for `leading`
    # would be on its way before this one, which both of its filters match.
    publisher(client).publish_acked(f"x/{leaf}", b"plain", qos=1)
    first = leading.received(1)[0]          # '#' carries other tests' traffic: only the first copy counts
    while first.topic != f"x/{leaf}":
        assert first.topic != f"$x/{leaf}", "a filter starting with a wildcard matched a '$' topic"
        first = leading.received(1)[0]


@pytest.mark.parametrize("topic,qos", [("$SYS/{leaf}", 0), ("$SYS/broker/version", 1), ("$share/g/{leaf}", 1)])
def test_a_client_publishing_to_the_brokers_own_topics_is_disconnected(client, topic, qos):
    # The broker's own topics take no client's messages: $SYS (a monitor must trust what
    # it reads there) and $share (a subscription prefix, not a topic). MQTT 3.1.1 says the
    # server SHOULD prevent clients exchanging messages on '$' topics (4.7.2); mosquitto 2.0
    # closes the connection (after its PUBACK at QoS 1), and so does the embedded broker
    # (without one). The message reaches nobody and the retained one stays.
    leaf = uuid.uuid4().hex[:10]
    topic = topic.format(leaf=leaf)
    watch = subscriber(client, "watch", (topic, 1))
    before = watch.until_quiet(0.2)                 # $SYS/broker/version: the broker's retained one
    c = client("intruder")
    c.connect()
    c.publish(topic, b"forged", qos=qos, retain=True)
    c.closed_by_broker_within(2)
    assert watch.nothing_within(0.2)
    again = subscriber(client, "again", (topic, 1)).until_quiet(0.2)
    assert [m.payload for m in again] == [m.payload for m in before]


@pytest.mark.parametrize("topic,qos", [("{root}/+", 0), ("{root}/#", 1), ("#", 1), ("{root}/a+b", 0)])
def test_a_publish_to_a_topic_name_with_a_wildcard_closes_the_connection(client, root, topic, qos):
    # [MQTT-3.3.2-2] a topic name contains no wildcard: the server closes the connection
    # [MQTT-4.8.0-1], acknowledges nothing and delivers nothing
    watch = subscriber(client, "watch", (f"{root}/#", 1))
    c = client("wild")
    c.connect()
    c.publish(topic.format(root=root), b"wildcard", qos=qos)
    c.closed_without_an_answer(2)
    assert watch.nothing_within(0.2)


def test_a_qos0_publish_with_dup_set_closes_the_connection(client, root, lacking):
    # [MQTT-3.3.1-2] DUP is 0 on every QoS 0 message: a protocol violation, the server
    # closes the connection [MQTT-4.8.0-1] and delivers nothing
    lacking("mosquitto", "mosquitto 2.0.11 takes a QoS 0 PUBLISH with DUP set and delivers it")
    watch = subscriber(client, "watch", (f"{root}/#", 1))
    c = client("dup0")
    c.connect()
    c.publish(f"{root}/t", b"dup at qos 0", qos=0, dup=True)
    c.closed_without_an_answer(1)
    assert watch.nothing_within(0.2)


@pytest.mark.parametrize("topic", ["{root}/+", "{root}/#", ""])
def test_a_connect_whose_will_topic_is_no_topic_name_is_refused(client, root, topic):
    # [MQTT-3.3.2-2] [MQTT-4.7.3-1] a will topic is a topic name: the server closes the
    # connection [MQTT-4.8.0-1] (mosquitto 2.0 and the embedded broker, without a CONNACK)
    c = client("bad-will")
    c.send(packet(CONNECT, 0, text("MQTT") + bytes([4, 0x06]) + (60).to_bytes(2, "big") + text(c.client_id)
                  + text(topic.format(root=root)) + text(b"gone")))
    c.closed_without_an_answer(2)


def test_a_will_on_the_brokers_own_topics_is_not_published(client, root):
    # As a PUBLISH there (above), but the connection is taken: mosquitto 2.0 drops such a
    # will when it would go out, and so does the embedded broker
    leaf = uuid.uuid4().hex[:10]
    watch = subscriber(client, "watch", (f"$SYS/{leaf}", 1), (f"{root}/will", 1))
    forger = client("forger")
    forger.connect(will=(f"$SYS/{leaf}", b"forged", 1, False))
    forger.drop()
    honest = client("honest")
    honest.connect(will=(f"{root}/will", b"gone", 1, False))
    honest.drop()
    assert [(m.topic, m.payload) for m in watch.received(1)] == [(f"{root}/will", b"gone")]
    assert watch.nothing_within(0.2)


def _filters(root: str, qos: int | None = 0) -> bytes:
    return b"\x00\x01" + text(f"{root}/a") + (b"" if qos is None else bytes([qos]))


MALFORMED = {
    # [MQTT-3.8.3-4] a requested QoS of 0, 1 or 2, the byte's other bits 0
    "SUBSCRIBE asking QoS 3": lambda root: packet(SUBSCRIBE, 2, _filters(root, 3)),
    "SUBSCRIBE with reserved bits": lambda root: packet(SUBSCRIBE, 2, _filters(root, 0x41)),
    # [MQTT-3.8.3-3] at least one topic filter
    "SUBSCRIBE without a filter": lambda root: packet(SUBSCRIBE, 2, b"\x00\x01"),
    # [MQTT-3.8.1-1] fixed-header flags 0010
    "SUBSCRIBE with flags 0000": lambda root: packet(SUBSCRIBE, 0, _filters(root)),
    # [MQTT-3.10.3-2] at least one topic filter; [MQTT-3.10.1-1] flags 0010
    "UNSUBSCRIBE without a filter": lambda root: packet(UNSUBSCRIBE, 2, b"\x00\x01"),
    "UNSUBSCRIBE with flags 0000": lambda root: packet(UNSUBSCRIBE, 0, _filters(root, None)),
}


@pytest.mark.parametrize("bad", MALFORMED)
def test_a_malformed_subscribe_or_unsubscribe_closes_the_connection(client, root, bad):
    # [MQTT-4.8.0-1] the server closes the connection, with no SUBACK or UNSUBACK
    c = client("malformed")
    c.connect()
    c.send(MALFORMED[bad](root))
    c.closed_without_an_answer(2)


def test_overlapping_subscriptions_deliver_at_the_highest_qos_granted(client, root, lacking):
    # [MQTT-3.3.5-1] (a copy per subscription is allowed; the highest QoS must be among them)
    lacking("mosquitto", "mosquitto 2.0.11 sends one copy, at the QoS of the most specific matching "
                         "filter (an exact level before '+' before '#'), not at the highest")
    s = subscriber(client, "s", (f"{root}/o/#", 0), (f"{root}/o/+", 2), (f"{root}/o/x", 1))
    publisher(client).publish_acked(f"{root}/o/x", b"x", qos=2)
    copies = s.until_quiet()
    assert copies and max(m.qos for m in copies) == 2


def test_subscribing_again_to_a_filter_replaces_the_subscription(client, root):
    # [MQTT-3.8.4-3] the new subscription replaces the old, with its QoS; retained messages again
    publisher(client).publish_acked(f"{root}/r", b"kept", qos=1, retain=True)
    s = subscriber(client, "s", (f"{root}/r", 0))
    assert s.received(1)[0].qos == 0
    assert s.subscribe((f"{root}/r", 1)) == [1]
    again = s.received(1)[0]
    assert (again.payload, again.retain) == (b"kept", True)
    publisher(client).publish_acked(f"{root}/r", b"live", qos=1)
    (m,) = s.received(1)
    assert (m.payload, m.qos) == (b"live", 1)
    assert s.nothing_within(0.3)                     # one subscription, one copy


def test_a_malformed_filter_is_refused(client, root):
    # [MQTT-4.7.1-2] '#' only as the last level; [MQTT-4.7.1-3] '+' a whole level:
    # the server refuses the subscription (0x80) or closes the connection
    c = client("bad")
    c.connect()
    try:
        assert c.subscribe((f"{root}/a#", 0)) == [0x80]
    except Closed:
        pass


def test_unsubscribing_stops_delivery_and_is_acknowledged(client, root):
    # [MQTT-3.10.4-2] delivery stops; [MQTT-3.10.4-4] UNSUBACK with the packet id;
    # other subscriptions stay
    s = subscriber(client, "s", (f"{root}/u", 1), (f"{root}/v", 1))
    s.unsubscribe(f"{root}/u")
    p = publisher(client)
    p.publish_acked(f"{root}/u", b"u", qos=1)
    p.publish_acked(f"{root}/v", b"v", qos=1)
    assert [m.payload for m in s.received(1)] == [b"v"]
    assert s.nothing_within(0.3)


def test_unsubscribing_a_filter_never_subscribed_is_still_acknowledged(client, root):
    # [MQTT-3.10.4-5]
    c = client("u")
    c.connect()
    c.unsubscribe(f"{root}/never")


def test_a_pingreq_is_answered(client):
    # [MQTT-3.12.4-1]
    c = client("ping")
    c.connect()
    c.ping()
    assert c.read().name == "PINGRESP"
