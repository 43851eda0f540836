"""Tier 3 (real brokers): MQTT 3.1.1's broker-side contract, written once and
run on mosquitto and on the embedded broker alike (the ``broker`` fixture).

Each test names the normative statements it checks ([MQTT-x.y.z-n] in the
OASIS standard). The clients are hand-built packets over a socket
(``rawmqtt.py``), so a test can do what a client library hides: withhold an
acknowledgement, go silent past its keep-alive without closing, resend a
PUBLISH or a PUBREL by hand. A behaviour mosquitto itself lacks is marked
so, with the reason (the ``lacking`` fixture). Topic filters, subscriptions
and unsubscribing: test_mqtt_conformance_topics.py.
"""

from __future__ import annotations

import pytest
from rawmqtt import (
    CONNECT,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBSCRIBE,
    packet,
    publisher,
    subscriber,
    text,
)

pytestmark = pytest.mark.timeout(30)


# -- CONNECT, CONNACK and the session ----------------------------------------------------------
def test_a_clean_session_is_acknowledged_without_a_session_present(client):
    # [MQTT-3.2.2-1]
    assert client("c").connect(clean=True) is False


def test_a_persistent_session_is_resumed_with_its_subscriptions(client, root):
    # [MQTT-3.1.2-4] the session resumes; [MQTT-3.2.2-2] session present 1; [MQTT-3.2.2-3] 0 when new
    c = client("p")
    assert c.connect(clean=False) is False
    c.subscribe((f"{root}/t", 1))
    c.disconnect()
    again = client("p")
    assert again.connect(clean=False) is True
    publisher(client).publish_acked(f"{root}/t", b"still subscribed", qos=1)
    assert again.received(1)[0].payload == b"still subscribed"


def test_a_clean_session_connect_discards_the_old_session(client, root):
    # [MQTT-3.1.2-6] the previous session is discarded, a new one begins
    c = client("d")
    c.connect(clean=False)
    c.subscribe((f"{root}/t", 1))
    c.disconnect()
    clean = client("d")
    assert clean.connect(clean=True) is False
    publisher(client).publish_acked(f"{root}/t", b"to nobody", qos=1)
    assert clean.nothing_within(0.3)
    clean.disconnect()
    after = client("d")
    assert after.connect(clean=False) is False
    publisher(client).publish_acked(f"{root}/t", b"to nobody either", qos=1)
    assert after.nothing_within(0.3)


def test_a_clean_session_ends_with_its_connection(client, root):
    # [MQTT-3.1.2-6] a clean session's state is not reused by any later session
    c = client("e")
    c.connect(clean=True)
    c.subscribe((f"{root}/t", 1))
    c.disconnect()
    after = client("e")
    assert after.connect(clean=False) is False
    publisher(client).publish_acked(f"{root}/t", b"to nobody", qos=1)
    assert after.nothing_within(0.3)


def test_a_second_connection_with_the_same_client_id_takes_over(client, root):
    # [MQTT-3.1.4-2] the server disconnects the existing client
    first = client("same")
    first.connect(clean=False)
    first.subscribe((f"{root}/t", 1))
    second = client("same")
    assert second.connect(clean=False) is True
    first.closed_by_broker_within(5)
    publisher(client).publish_acked(f"{root}/t", b"to the second", qos=1)
    assert second.received(1)[0].payload == b"to the second"


def test_a_second_connect_on_one_connection_is_a_protocol_violation(client):
    # [MQTT-3.1.0-2] the server disconnects the client
    c = client("twice")
    c.connect()
    c.send(packet(CONNECT, 0, text("MQTT") + bytes([4, 2]) + (60).to_bytes(2, "big") + text(c.client_id)))
    c.closed_by_broker_within(5)


def _connect(flags: int, payload: bytes) -> bytes:
    return packet(CONNECT, 0, text("MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big") + payload)


INVALID_CONNECTS = {
    # [MQTT-3.1.2-3] the reserved flag is 0
    "the reserved flag set": lambda cid: _connect(0x03, text(cid)),
    # [MQTT-3.1.2-14] a will QoS of 0, 1 or 2
    "will QoS 3": lambda cid: _connect(0x1E, text(cid) + text("w") + text(b"gone")),
    # [MQTT-3.1.2-13] [MQTT-3.1.2-15] without a will, will QoS and will retain are 0
    "will QoS without a will": lambda cid: _connect(0x0A, text(cid)),
    "will retain without a will": lambda cid: _connect(0x22, text(cid)),
    # [MQTT-3.1.2-22] no password flag without the user name flag
    "a password without a user name": lambda cid: _connect(0x42, text(cid) + text(b"secret")),
    # [MQTT-1.5.3-1] [MQTT-1.5.3-2] the client id is well-formed UTF-8 without U+0000
    "a client id that is not UTF-8": lambda cid: _connect(0x02, text(b"\xff\xfe" + cid.encode())),
    "a client id holding U+0000": lambda cid: _connect(0x02, text(cid + "\x00")),
    # [MQTT-4.8.0-1] a malformed packet: bytes past the end of its payload
    "bytes after its end": lambda cid: _connect(0x02, text(cid) + b"\x00"),
}


@pytest.mark.parametrize("invalid", INVALID_CONNECTS)
def test_an_invalid_connect_closes_the_connection_without_a_connack(client, invalid):
    # [MQTT-4.8.0-1] a protocol violation: the server closes the connection, and sends no
    # CONNACK (a return code answers a valid CONNECT the server does not accept)
    c = client("invalid")
    c.send(INVALID_CONNECTS[invalid](c.client_id))
    c.closed_without_an_answer(2)


FIRST_PACKETS = {
    "PINGREQ": lambda root: packet(PINGREQ, 0, b""),
    "PUBLISH": lambda root: packet(PUBLISH, 2, text(f"{root}/t") + b"\x00\x01" + b"before its CONNECT"),
    "SUBSCRIBE": lambda root: packet(SUBSCRIBE, 2, b"\x00\x01" + text(f"{root}/#") + b"\x01"),
}


@pytest.mark.parametrize("first", FIRST_PACKETS)
def test_a_connection_that_does_not_start_with_a_connect_is_closed(client, root, first):
    # [MQTT-3.1.0-1] the first packet from the client must be a CONNECT: the server
    # closes the connection, and acts on nothing sent before it (no answer, no delivery)
    watch = subscriber(client, "watch", (f"{root}/#", 1))
    c = client("no-connect")
    c.send(FIRST_PACKETS[first](root))
    c.closed_without_an_answer(2)
    assert watch.nothing_within(0.2)


def test_a_protocol_violation_closes_the_connection_and_publishes_the_will(client, root):
    # [MQTT-4.8.0-1] the server closes the connection on a protocol violation;
    # [MQTT-3.1.2-8] it publishes the will as for a network failure
    watch = subscriber(client, "watch", (f"{root}/will", 1))
    c = client("violator")
    c.connect(will=(f"{root}/will", b"closed by the server", 1, False))
    c.publish(f"{root}/+", b"a wildcard in a topic name", qos=1)
    c.closed_without_an_answer(2)
    assert watch.received(1)[0].payload == b"closed by the server"


# -- the will ----------------------------------------------------------------------------------
def test_the_will_is_published_when_the_connection_drops_without_a_disconnect(client, root):
    # [MQTT-3.1.2-8]
    watch = subscriber(client, "watch", (f"{root}/will", 1))
    c = client("w")
    c.connect(will=(f"{root}/will", b"gone", 1, False))
    c.drop()
    will = watch.received(1)[0]
    assert (will.payload, will.retain) == (b"gone", False)


def test_no_will_after_a_disconnect(client, root):
    # [MQTT-3.1.2-10] [MQTT-3.14.4-3] a DISCONNECT discards the will
    watch = subscriber(client, "watch", (f"{root}/will", 1))
    c = client("w")
    c.connect(will=(f"{root}/will", b"gone", 1, False))
    c.disconnect()
    assert watch.nothing_within(0.5)


def test_a_will_with_retain_set_is_retained(client, root):
    # [MQTT-3.1.2-17]
    c = client("w")
    c.connect(will=(f"{root}/will", b"gone", 1, True))
    watch = subscriber(client, "watch", (f"{root}/will", 1))
    c.drop()
    assert watch.received(1)[0].payload == b"gone"
    late = subscriber(client, "late", (f"{root}/will", 1))
    will = late.received(1)[0]
    assert (will.payload, will.retain) == (b"gone", True)


def test_a_client_silent_past_one_and_a_half_keepalives_is_disconnected_and_its_will_published(
        client, root, lacking):
    # [MQTT-3.1.2-24] nothing from the client within 1.5 x its keep-alive: the server
    # disconnects it, as for a network failure, so [MQTT-3.1.2-8] its will goes out.
    # The client here stays connected and silent: a frozen device, no FIN, no RST.
    lacking("mosquitto", "mosquitto 2.0.11 looks at keep-alives about every 6 s: a silent client goes "
                         "between 1.5x its keep-alive and 6 s later (a 1 s keep-alive after 1.6-7.5 s), "
                         "so this passes there only when its look falls in time", strict=False)
    watch = subscriber(client, "watch", (f"{root}/will", 1))
    c = client("frozen")
    c.connect(keepalive=1, will=(f"{root}/will", b"frozen", 1, False))
    gone_after = c.closed_by_broker_within(1.5 + 0.5)      # the 0.5: a loaded machine's scheduling
    assert gone_after >= 1.0, gone_after
    assert watch.received(1)[0].payload == b"frozen"


def test_a_client_that_keeps_its_keepalive_stays_connected(client, root):
    # [MQTT-3.1.2-23] a PINGREQ within the keep-alive; [MQTT-3.12.4-1] answered by a PINGRESP
    watch = subscriber(client, "watch", (f"{root}/will", 1))
    c = client("alive")
    c.connect(keepalive=1, will=(f"{root}/will", b"dead", 1, False))
    for _ in range(4):
        assert c.nothing_within(0.7)          # silent, but within its keep-alive
        c.ping()
        assert c.read().name == "PINGRESP"
    assert watch.nothing_within(0.1)


# -- retained messages ---------------------------------------------------------------------------
def test_a_new_subscriber_gets_the_retained_message_flagged_retain(client, root):
    # [MQTT-3.3.1-5] stored; [MQTT-3.3.1-6] sent to a new subscription; [MQTT-3.3.1-8] RETAIN set
    publisher(client).publish_acked(f"{root}/r", b"kept", qos=1, retain=True)
    (m,) = subscriber(client, "s", (f"{root}/r", 1)).received(1)
    assert (m.payload, m.retain, m.qos) == (b"kept", True, 1)


def test_a_message_forwarded_to_an_established_subscription_is_not_flagged_retain(client, root):
    # [MQTT-3.3.1-9]
    s = subscriber(client, "s", (f"{root}/r", 1))
    publisher(client).publish_acked(f"{root}/r", b"live", qos=1, retain=True)
    (m,) = s.received(1)
    assert (m.payload, m.retain) == (b"live", False)


def test_a_retained_message_replaces_the_previous_one(client, root):
    # [MQTT-3.3.1-5] one retained message per topic, the last
    p = publisher(client)
    p.publish_acked(f"{root}/r", b"first", qos=1, retain=True)
    p.publish_acked(f"{root}/r", b"second", qos=1, retain=True)
    s = subscriber(client, "s", (f"{root}/r", 1))
    assert [m.payload for m in s.received(1)] == [b"second"]
    assert s.nothing_within(0.3)


def test_an_empty_retained_message_clears_the_topic(client, root):
    # [MQTT-3.3.1-10] a zero-byte retained message removes the retained one; [MQTT-3.3.1-11] not stored
    p = publisher(client)
    p.publish_acked(f"{root}/r", b"kept", qos=1, retain=True)
    p.publish_acked(f"{root}/r", b"", qos=1, retain=True)
    assert subscriber(client, "s", (f"{root}/r", 1)).nothing_within(0.3)


def test_a_retained_message_goes_at_the_lower_of_its_qos_and_the_subscriptions(client, root):
    # [MQTT-3.8.4-6] (the subscription's QoS is the most it gets)
    publisher(client).publish_acked(f"{root}/r", b"kept", qos=2, retain=True)
    (m,) = subscriber(client, "s", (f"{root}/r", 1)).received(1)
    assert m.qos == 1


@pytest.mark.parametrize("granted", [1, 2])
def test_a_retained_message_published_at_qos0_goes_at_qos0_whatever_the_subscription(client, root, granted):
    # [MQTT-3.8.4-6] the lower of the two: a QoS 0 message is never raised to the subscription's QoS
    publisher(client).publish(f"{root}/r", b"at most once", qos=0, retain=True)
    publisher(client).publish_acked(f"{root}/r/fence", b"", qos=1)     # the QoS 0 one is taken in before it
    (m,) = subscriber(client, "s", (f"{root}/r", granted)).received(1)
    assert (m.payload, m.qos, m.retain) == (b"at most once", 0, True)


def test_a_resumed_session_gets_retained_messages_only_for_a_subscribe(client, root):
    # [MQTT-3.3.1-6] retained messages go to a subscription when it is made, not on each
    # reconnect of the session that holds it; [MQTT-3.3.1-9] what was queued for it while
    # away matched an established subscription: RETAIN 0, once
    publisher(client).publish_acked(f"{root}/r/a", b"kept", qos=1, retain=True)
    s = subscriber(client, "s", (f"{root}/r/#", 1), clean=False)
    assert [(m.payload, m.retain) for m in s.received(1)] == [(b"kept", True)]
    s.disconnect()
    back = client("s")
    assert back.connect(clean=False) is True
    assert back.nothing_within(0.3)
    back.disconnect()
    publisher(client).publish_acked(f"{root}/r/b", b"while away", qos=1, retain=True)
    again = client("s")
    assert again.connect(clean=False) is True
    assert [(m.payload, m.retain) for m in again.until_quiet()] == [(b"while away", False)]


# -- QoS flows -----------------------------------------------------------------------------------
def test_a_qos1_publish_is_acknowledged_with_its_packet_id(client, root):
    # [MQTT-4.3.2-2] PUBACK with the PUBLISH's packet id
    p = publisher(client)
    pid = p.publish(f"{root}/q", b"x", qos=1, packet_id=4242)
    assert p.expect(PUBACK).packet_id == pid == 4242


def test_a_qos2_publish_goes_pubrec_pubrel_pubcomp_and_is_delivered_once(client, root):
    # [MQTT-4.3.3-2] PUBREC, then PUBCOMP for the PUBREL; the message is delivered once
    # even when the sender sends the PUBLISH again (DUP) before its PUBREL
    s = subscriber(client, "s", (f"{root}/q", 2))
    p = publisher(client)
    pid = p.publish(f"{root}/q", b"exactly once", qos=2, packet_id=77)
    assert p.expect(PUBREC).packet_id == pid
    p.publish(f"{root}/q", b"exactly once", qos=2, packet_id=77, dup=True)
    assert p.expect(PUBREC).packet_id == pid
    p.ack(PUBREL, pid)
    assert p.expect(PUBCOMP).packet_id == pid
    (m,) = s.received(1)
    assert (m.payload, m.qos) == (b"exactly once", 2)
    rel = s.expect(PUBREL)
    assert rel.packet_id == m.packet_id
    s.ack(PUBCOMP, rel.packet_id)
    assert s.nothing_within(0.3)


def test_messages_go_at_the_lower_of_the_publish_and_the_subscription_qos(client, root):
    # [MQTT-3.8.4-6] the subscription's QoS is the most a message gets; a lower one stays lower
    s1 = subscriber(client, "s1", (f"{root}/q", 1))
    s2 = subscriber(client, "s2", (f"{root}/q", 2))
    p = publisher(client)
    for qos in (0, 1, 2):
        p.publish_acked(f"{root}/q", bytes([qos]), qos=qos)
    assert [(m.payload[0], m.qos) for m in s1.received(3)] == [(0, 0), (1, 1), (2, 1)]
    assert [(m.payload[0], m.qos) for m in s2.received(3)] == [(0, 0), (1, 1), (2, 2)]


def test_one_publishers_messages_arrive_in_the_order_sent(client, root):
    # [MQTT-4.6.0-2] [MQTT-4.6.0-3] (an ordered topic, one QoS)
    s = subscriber(client, "s", (f"{root}/o", 1))
    p = publisher(client)
    for n in range(30):
        p.publish(f"{root}/o", str(n).encode(), qos=1)
    assert [int(m.payload) for m in s.received(30)] == list(range(30))


# -- what is resent when a client comes back -------------------------------------------------------
def test_an_unacknowledged_qos1_message_is_sent_again_flagged_dup_on_reconnect(client, root):
    # [MQTT-4.4.0-1] resent with its original packet id; [MQTT-3.3.1-1] DUP set
    s = subscriber(client, "s", (f"{root}/q", 1), clean=False)
    publisher(client).publish_acked(f"{root}/q", b"ack me", qos=1)
    (first,) = s.received(1, ack=False)
    s.drop()
    back = client("s")
    assert back.connect(clean=False) is True
    (again,) = back.received(1)
    assert (again.payload, again.dup, again.packet_id) == (b"ack me", True, first.packet_id)
    assert back.nothing_within(0.3)                  # acknowledged now: not sent a third time


def test_an_unreceived_qos2_message_is_sent_again_flagged_dup_on_reconnect(client, root):
    # [MQTT-4.4.0-1] a QoS 2 PUBLISH without its PUBREC
    s = subscriber(client, "s", (f"{root}/q", 2), clean=False)
    publisher(client).publish_acked(f"{root}/q", b"receive me", qos=2)
    (first,) = s.received(1, ack=False)
    s.drop()
    back = client("s")
    back.connect(clean=False)
    again = back.expect(PUBLISH)
    assert (again.payload, again.dup, again.qos, again.packet_id) == (b"receive me", True, 2, first.packet_id)
    back.ack(PUBREC, again.packet_id)
    assert back.expect(PUBREL).packet_id == again.packet_id
    back.ack(PUBCOMP, again.packet_id)
    assert back.nothing_within(0.3)


def test_an_uncompleted_pubrel_is_sent_again_on_reconnect(client, root):
    # [MQTT-4.4.0-1] the PUBREL goes again, the PUBLISH does not (it was received)
    s = subscriber(client, "s", (f"{root}/q", 2), clean=False)
    publisher(client).publish_acked(f"{root}/q", b"once", qos=2)
    (m,) = s.received(1, ack=False)
    s.ack(PUBREC, m.packet_id)
    assert s.expect(PUBREL).packet_id == m.packet_id
    s.drop()
    back = client("s")
    back.connect(clean=False)
    assert back.expect(PUBREL).packet_id == m.packet_id
    back.ack(PUBCOMP, m.packet_id)
    assert back.nothing_within(0.3)


def test_a_pubrel_sent_again_after_a_reconnect_is_completed_and_the_message_delivered_once(client, root):
    # [MQTT-4.4.0-1] the client resends its PUBREL; [MQTT-4.3.3-2] one delivery
    s = subscriber(client, "s", (f"{root}/q", 2))
    p = client("p2")
    p.connect(clean=False)
    pid = p.publish(f"{root}/q", b"once across the drop", qos=2)
    assert p.expect(PUBREC).packet_id == pid
    p.drop()
    back = client("p2")
    assert back.connect(clean=False) is True
    back.ack(PUBREL, pid)
    assert back.expect(PUBCOMP).packet_id == pid
    assert [m.payload for m in s.until_quiet()] == [b"once across the drop"]


def test_qos1_and_qos2_messages_for_an_absent_persistent_client_wait_for_it_in_order(client, root):
    # [MQTT-3.1.2-5] the session keeps QoS 1 and 2 messages while the client is away
    s = subscriber(client, "s", (f"{root}/away", 2), clean=False)
    s.disconnect()
    p = publisher(client)
    for n in range(10):
        p.publish_acked(f"{root}/away", str(n).encode(), qos=1 + n % 2)
    back = client("s")
    assert back.connect(clean=False) is True
    got = back.received(10)
    assert [(int(m.payload), m.qos) for m in got] == [(n, 1 + n % 2) for n in range(10)]
    assert not any(m.retain for m in got)             # [MQTT-3.3.1-9] they matched a subscription
