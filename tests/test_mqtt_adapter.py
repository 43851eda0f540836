"""Tier 3 (real brokers): the paho adapter's promise about messages a dropped
connection leaves unconfirmed. Untagged QoS 1 messages go out again after the
reconnect (a reply is not lost to a short outage); tagged ones are handed back
instead, because resending them blindly could make a second answer."""

import queue
import threading
import time
from contextlib import contextmanager

import pytest

from fogmesh.mqtt import MqttClient
from tests.netcut import CuttableLink
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


def receiver(url, topic):
    got: queue.Queue = queue.Queue()
    c = MqttClient(url, on_message=lambda m: got.put(m.payload))
    c.start()
    c.subscribe(topic)
    return c, got


@contextmanager
def sender_through_link(broker, root, **client_options):
    """A sender reaching the broker through a CuttableLink (which records its
    writes), and what a plain subscriber to ``{root}/#`` receives."""
    link = CuttableLink(broker.host, broker.port)
    sender = MqttClient(link.url, **client_options)
    watch, got = receiver(broker.url, f"{root}/#")
    try:
        sender.start()
        yield link, sender, got
    finally:
        sender.stop()
        watch.stop()
        link.close()


def test_unconfirmed_tagged_messages_are_handed_back_and_untagged_ones_resent(broker, root):
    link = CuttableLink(broker.host, broker.port)
    withdrawn: list = []
    handed_back = threading.Event()
    sender = MqttClient(link.url, client_id=f"{root}-sender", clean_session=False,
                        on_withdrawn=lambda tags: (withdrawn.extend(tags), handed_back.set()))
    watch, got = receiver(broker.url, f"{root}/#")
    try:
        sender.start()
        link.hold()                      # from here the broker hears nothing from the sender
        sender.publish(f"{root}/answer", b"tagged", tag="answer-1")
        sender.publish(f"{root}/plain", b"untagged")
        link.cut()
        assert handed_back.wait(15)
        assert withdrawn == ["answer-1"]
        assert got.get(timeout=15) == b"untagged"      # resent after the reconnect
        with pytest.raises(queue.Empty):
            got.get(timeout=1.0)                       # the tagged one never went out
    finally:
        sender.stop()
        watch.stop()
        link.close()


def test_a_tagged_message_published_while_disconnected_is_handed_back_at_once(broker, root):
    link = CuttableLink(broker.host, broker.port)
    withdrawn: list = []
    sender = MqttClient(link.url, on_withdrawn=withdrawn.extend, reconnect_min=5.0)
    try:
        sender.start()
        link.cut()
        wait_until(lambda: not sender.connected.is_set(), timeout=10, what="the drop noticed")
        assert sender.publish(f"{root}/answer", b"x", tag="late") is None
        assert withdrawn == ["late"]
    finally:
        sender.stop()
        link.close()


def test_confirmed_tagged_messages_are_not_handed_back(broker, root):
    withdrawn: list = []
    sender = MqttClient(broker.url, on_withdrawn=withdrawn.extend)
    watch, got = receiver(broker.url, f"{root}/#")
    try:
        sender.start()
        delivery = sender.publish(f"{root}/answer", b"tagged", tag="t")
        assert delivery is not None and delivery.wait(10)
        assert got.get(timeout=10) == b"tagged"
        assert withdrawn == []
    finally:
        sender.stop()
        watch.stop()


def test_the_brokers_confirmation_of_a_tagged_message_is_reported(broker, root):
    confirmed = queue.Queue()
    sender = MqttClient(broker.url, on_confirmed=confirmed.put)
    try:
        sender.start()
        sender.publish(f"{root}/answer", b"x", tag="report-only", withdraw=False)
        sender.publish(f"{root}/answer", b"y", tag="withdrawable")
        assert {confirmed.get(timeout=10), confirmed.get(timeout=10)} == {"report-only", "withdrawable"}
    finally:
        sender.stop()


def test_messages_published_together_leave_in_one_write(broker, root):
    """An agent's answer and its "sent" record must reach the broker both or
    neither: a process killed between two writes sent only the first."""
    with sender_through_link(broker, root) as (link, sender, got):
        with sender.together():
            sender.publish(f"{root}/answer", b"first-of-two")
            time.sleep(0.2)              # long enough for the network thread to have written it alone
            sender.publish(f"{root}/record", b"second-of-two")
        assert [got.get(timeout=10), got.get(timeout=10)] == [b"first-of-two", b"second-of-two"]
        carrying = [w for w in link.writes if b"first-of-two" in w or b"second-of-two" in w]
        assert len(carrying) == 1 and b"second-of-two" in carrying[0]


def test_messages_written_on_the_callers_thread_leave_in_one_write_in_order(broker, root):
    """``write_here``: the caller's thread writes what it queued (no wake-up
    of the network thread), with the same one-write promise."""
    with sender_through_link(broker, root) as (link, sender, got):
        for n in range(50):
            with sender.together(write_here=True):
                sender.publish(f"{root}/answer", b"answer-%d" % n)
                sender.publish(f"{root}/record", b"record-%d" % n)
        expected = [p for n in range(50) for p in (b"answer-%d" % n, b"record-%d" % n)]
        assert [got.get(timeout=10) for _ in expected] == expected
        carrying = [w for w in link.writes if b"answer-7" in w or b"record-7" in w]
        assert len(carrying) == 1 and b"record-7" in carrying[0]


def test_a_message_written_on_the_callers_thread_into_a_cut_connection_goes_out_after_the_reconnect(broker, root):
    with sender_through_link(broker, root, client_id=f"{root}-sender", clean_session=False) as (link, sender, got):
        link.cut()                       # the sender's network thread may not know yet
        with sender.together(write_here=True):
            sender.publish(f"{root}/plain", b"after-the-cut")
        assert got.get(timeout=20) == b"after-the-cut"


def test_resubscribed_is_cleared_by_a_drop_and_set_once_the_broker_acknowledges_the_renewed_subscriptions(
        broker, root):
    link = CuttableLink(broker.host, broker.port)
    at_drop: list[bool] = []
    client = MqttClient(link.url, on_connection=lambda up: None if up else at_drop.append(
        client.resubscribed.is_set()))
    try:
        client.start()
        assert client.resubscribed.is_set()          # nothing to renew on a first connection
        client.subscribe(f"{root}/x")
        link.cut()
        wait_until(lambda: at_drop, timeout=10)
        assert at_drop == [False]
        assert client.resubscribed.wait(15) and client.connected.is_set()
    finally:
        client.stop()
        link.close()


def test_a_message_published_before_the_first_connection_is_confirmed_once_the_broker_has_it(tmp_path, root):
    """Published while no connection exists (or as one drops: the dispatcher
    once crashed on it), a QoS 1 message waits in paho's queue; its delivery
    must report the broker's PUBACK after the connection comes, not raise."""
    from fogmesh.broker.mosquitto import Mosquitto
    from fogmesh.broker.ports import free_port

    broker = Mosquitto(port=free_port(), workdir=tmp_path / "mq", persistence=False)
    sender = MqttClient(f"mqtt://127.0.0.1:{broker.port}")
    try:
        sender.start(timeout=None)
        delivery = sender.publish(f"{root}/early", b"before-the-broker")
        assert delivery is not None and not delivery.confirmed()
        broker.start()
        assert delivery.wait(15) and delivery.confirmed()
    finally:
        sender.stop()
        broker.cleanup()


def test_a_failover_list_connects_to_the_next_node_when_the_first_is_down(broker, root):
    from fogmesh.broker.ports import free_port
    c = MqttClient(f"mqtt://127.0.0.1:{free_port()},127.0.0.1:{broker.port}", reconnect_min=0.05,
                   reconnect_max=0.2)
    c.start(timeout=10)
    try:
        assert c.connected.is_set() and c.node == f"127.0.0.1:{broker.port}"
    finally:
        c.stop()


def test_a_client_whose_node_goes_moves_to_the_next_one_in_its_list(broker, root):
    link = CuttableLink(broker.host, broker.port)
    got: queue.Queue = queue.Queue()
    c = MqttClient(f"mqtt://127.0.0.1:{link.port},127.0.0.1:{broker.port}", on_message=lambda m: got.put(m.topic),
                   reconnect_min=0.05, reconnect_max=0.2)
    c.start(timeout=10)
    try:
        c.subscribe(f"{root}/x")
        assert c.node == f"127.0.0.1:{link.port}"
        link.close()                                   # the first node goes for good
        wait_until(lambda: c.connected.is_set() and c.node == f"127.0.0.1:{broker.port}", timeout=10,
                   what="the client on the second node")
        wait_until(lambda: c.resubscribed.is_set(), timeout=10, what="its subscription renewed")
        c.publish(f"{root}/x", b"1").wait(5)
        assert got.get(timeout=5) == f"{root}/x"
    finally:
        c.stop()


@pytest.mark.parametrize("broker", ["mosquitto"], indirect=True)   # amqtt 0.12 keeps a session through a clean connect
def test_an_agent_that_refuses_leaves_no_session_collecting_messages(broker, root):
    import logging

    from fogmesh.edge_agent.refusal import leave_no_session
    kept = MqttClient(broker.url, client_id=f"kept-{root[-8:]}", clean_session=False)
    ctl = MqttClient(broker.url, client_id=f"kept-{root[-8:]}-ctl", clean_session=False)
    for c in (kept, ctl):
        c.start(timeout=10)
        c.subscribe(f"{root}/claims")
    presence: queue.Queue = queue.Queue()
    watcher = MqttClient(broker.url, on_message=lambda m: presence.put(m.payload))
    watcher.start(timeout=10)
    watcher.subscribe(f"{root}/presence/a1")
    leave_no_session(ctl=ctl, client=kept, presence_topic=f"{root}/presence/a1", offline=b'{"state": "offline"}',
                     log=logging.LoggerAdapter(logging.getLogger("test"), {}))
    assert presence.get(timeout=5) == b'{"state": "offline"}'
    watcher.publish(f"{root}/claims", b"queued for nobody?").wait(5)
    again = MqttClient(broker.url, client_id=f"kept-{root[-8:]}", clean_session=False)
    again.start(timeout=10)
    try:
        assert again.session_present is False
    finally:
        again.stop()
        watcher.stop()


def test_a_one_connection_client_taken_over_by_its_id_does_not_come_back(broker, root):
    """A rescue connection (edge_agent/session_rescue.py) speaks for a dead
    agent's session once: when the agent boots and takes its client id back,
    the rescue must not reconnect and kick it off again (they took turns
    every 100 ms, logging a line each time)."""
    client_id = f"taken-{root[-8:]}"
    once = MqttClient(broker.url, client_id=client_id, clean_session=False, reconnect=False,
                      reconnect_min=0.05, reconnect_max=0.1)
    once.start(timeout=10)
    drops: list[bool] = []
    owner = MqttClient(broker.url, client_id=client_id, clean_session=False, reconnect_min=0.05,
                       reconnect_max=0.1, on_connection=lambda up: drops.append(up) if not up else None)
    try:
        owner.start(timeout=10)
        wait_until(lambda: not once.connected.is_set(), timeout=10, what="the one-connection client taken over")
        time.sleep(1.5)          # an absence cannot be awaited: time for a reconnect that must not come
        assert owner.connected.is_set() and owner.generation == 1 and drops == []
    finally:
        once.stop()
        owner.stop()


def test_a_connection_that_keeps_dropping_is_logged_once_then_with_a_count(broker, root, caplog):
    """A node that accepts connections and drops them (issue #36: about 200
    "disconnected ... reconnecting" lines in 12 s) is logged once, then at
    most once every LOG_EVERY_S seconds with the number of drops left out."""
    import logging

    from fogmesh.mqtt.client import LOG_EVERY_S
    link = CuttableLink(broker.host, broker.port)
    client = MqttClient(link.url, reconnect_min=0.01, reconnect_max=0.05)
    caplog.set_level(logging.INFO, logger="fogmesh.mqtt")
    try:
        client.start()
        link.reset_after_connack(10)
        link.cut()
        wait_until(lambda: link.resets == 10 and client.connected.is_set(), timeout=20,
                   what="ten drops right after the CONNACK, then the client back")
        lines = [r.getMessage() for r in caplog.records if "disconnected from" in r.getMessage()]
        assert LOG_EVERY_S >= 5 and len(lines) == 1, lines        # 11 drops within a second or two
        assert "not logged" not in lines[0]
    finally:
        client.stop()
        link.close()


def test_a_clean_session_client_on_a_failover_list_connects_with_a_fresh_id_each_time(broker, root):
    """RabbitMQ names a QoS 1 subscription's queue after the client id and keeps
    it on one node: with that node down, the id was refused on every other node
    (issue #36: a device on a killed node could not come back elsewhere)."""
    from fogmesh.broker.ports import free_port
    link = CuttableLink(broker.host, broker.port)
    c = MqttClient(f"mqtt://127.0.0.1:{link.port},127.0.0.1:{free_port()}", client_id="dev-fresh",
                   reconnect_min=0.05, reconnect_max=0.2)
    c.start(timeout=10)
    try:
        first = c._paho._client_id.decode()
        link.cut()
        wait_until(lambda: c.connected.is_set() and c.generation == 2, timeout=20, what="the client back")
        second = c._paho._client_id.decode()
        assert first.startswith("dev-fresh-") and second.startswith("dev-fresh-") and first != second
    finally:
        c.stop()
        link.close()


def test_a_connection_dropped_right_after_its_connack_does_not_start_the_backoff_over(broker, root):
    """paho resets its reconnect delay at every CONNACK: a node that accepts and
    drops was tried again at the minimum delay, for good."""
    link = CuttableLink(broker.host, broker.port)
    c = MqttClient(link.url, reconnect_min=0.05, reconnect_max=0.8)
    c.start(timeout=10)
    try:
        link.reset_after_connack(6)
        started = time.monotonic()
        link.cut()
        wait_until(lambda: link.resets == 6 and c.connected.is_set(), timeout=30, what="six drops, then back")
        # Doubling from 0.05 s: 0.05 + 0.1 + 0.2 + 0.4 + 0.8 + 0.8 = 2.35 s at least; reset each time, 0.3 s.
        assert time.monotonic() - started >= 2.0
    finally:
        c.stop()
        link.close()
