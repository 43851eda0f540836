"""Tier 3 (real brokers): MQTT 3.1.1's broker-side contract, continued
(test_mqtt_conformance.py): topic filters and wildcards, ``$`` topics,
overlapping and repeated subscriptions, unsubscribing, PINGREQ. Written once,
run on mosquitto and on the embedded broker alike, with hand-built packets
(``rawmqtt.py``); what mosquitto lacks is marked so."""

from __future__ import annotations

import pytest
from rawmqtt import Closed, publisher, subscriber

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
