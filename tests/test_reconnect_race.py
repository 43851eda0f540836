"""Tier 3 (real brokers): threads publishing while a reconnect races them
(issue #36). A connection whose CONNACK is read and whose next write fails
(a broker node killed just after accepting it): paho handles the drop inside
its resend of the queued messages, holding its out-message lock, while other
threads publish. A client that took its own lock before paho's in one of
those threads and paho's before its own in the other locked up for good:
agents stopped answering and ignored SIGTERM, devices' ``send()`` never
returned. Every publisher must return, the client must come back, and each
tagged message must still be either confirmed or withdrawn, once."""

from __future__ import annotations

import itertools
import sys
import threading
import traceback
from collections import Counter

import pytest

from fogmesh.devices.client import FogClient
from fogmesh.mqtt import MqttClient
from tests.netcut import CuttableLink
from tests.storm import Storm, finishes
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

RESETS = 15          # connections reset right after their CONNACK, one after the other


def stacks(names: list[str]) -> str:
    """Where the named threads (and paho's network threads) are now: what a lock-up looks like."""
    frames = sys._current_frames()
    out = []
    for t in threading.enumerate():
        if t.name in names or t.name.startswith("paho-mqtt-client-"):
            frame = frames.get(t.ident or -1)
            if frame is not None:
                out.append(f"--- {t.name}\n" + "".join(traceback.format_stack(frame)[-6:]))
    return "\n".join(out)


def race_resets(link: CuttableLink, connected, storm: Storm) -> list[str]:
    """Reset the next RESETS connections after their CONNACK while ``storm``
    runs, then let one through; the storm's threads still blocked after that."""
    link.reset_after_connack(RESETS)
    link.cut()                                       # the current connection goes: the resets begin
    try:
        wait_until(lambda: link.resets == RESETS and connected(), timeout=20,
                   what=f"{RESETS} connections reset after their CONNACK, then the client back")
    except AssertionError:
        pass                                         # a locked-up client never comes back: said below
    return storm.end(within=10)


def test_tagged_publishers_racing_a_reconnect_whose_first_write_fails_all_return(broker, root):
    link = CuttableLink(broker.host, broker.port)
    withdrawn: list = []
    confirmed: list = []
    ups: list[bool] = []
    sender = MqttClient(link.url, reconnect_min=0.01, reconnect_max=0.05, on_withdrawn=withdrawn.extend,
                        on_confirmed=confirmed.append, on_connection=ups.append)
    storm = Storm()
    tags: list = []
    stuck: list[str] = []

    def tagged(n: int):
        count = itertools.count()

        def step() -> None:
            if sender.unconfirmed() > 200:
                storm.stopping.wait(0.001)           # paced: the broker need not take a flood afterwards
                return
            tag = (n, next(count))
            tags.append(tag)
            sender.publish(f"{root}/answer", b"answer", tag=tag)
        return step

    def untagged() -> None:
        # Untagged QoS 1 messages wait in paho's queue through a drop: every CONNACK has some to resend.
        if sender.unconfirmed() < 50:
            sender.publish(f"{root}/plain", b"plain")
        else:
            storm.stopping.wait(0.001)               # paced: enough of them queued

    try:
        sender.start()
        for n in range(3):
            storm.run(f"tagged-{n}", tagged(n))
        storm.run("untagged", untagged)
        wait_until(lambda: sender.unconfirmed() > 0, timeout=10, what="messages in paho's queue")
        stuck = race_resets(link, sender.connected.is_set, storm)
        assert not stuck, f"publishers blocked for good: {stuck}\n{stacks(stuck)}"
        assert not storm.errors, storm.errors
        assert link.resets == RESETS and sender.wait_connected(10), "the client did not come back"
        assert ups.count(True) >= RESETS + 1         # each reset connection was CONNACKed and seen up
        # Nothing left unresolved: each tagged message confirmed or withdrawn, never both, never neither.
        wait_until(lambda: sender.unconfirmed() == 0, timeout=30, what="every message confirmed")
        outcome = Counter(withdrawn) + Counter(confirmed)
        assert set(outcome) == set(tags) and set(outcome.values()) == {1}, \
            [t for t in tags if outcome[t] != 1][:10]
        assert withdrawn                             # the race did cut tagged messages off
        delivery = sender.publish(f"{root}/answer", b"after", tag="after")
        assert delivery is not None and delivery.wait(10) and confirmed[-1] == "after"
    finally:
        if stuck:
            finishes(sender.stop, within=2)          # its network thread is locked up: stop() would join it
        else:
            sender.stop()
        link.close()


def test_a_device_clients_send_returns_while_its_connections_are_reset_after_their_connack(broker, root):
    link = CuttableLink(broker.host, broker.port)
    device = FogClient(link.url, root=root, retry_s=None)
    # A device backs off up to 5 s between attempts on a link that keeps dropping: quicker here.
    device._mqtt._paho.reconnect_delay_set(min_delay=0.01, max_delay=0.05)
    storm = Storm()
    stuck: list[str] = []

    def send() -> None:
        if device._mqtt.unconfirmed() > 20_000:    # paho has 65,535 packet ids: a device waits long before
            storm.stopping.wait(0.01)               # that many are unconfirmed (the broker said nothing)
            return
        device.send("echo", {"n": 1})
        storm.stopping.wait(0.0005)                 # paced: the broker need not take a flood afterwards

    try:
        device.connect()
        for n in range(4):
            storm.run(f"send-{n}", send)
        wait_until(lambda: storm.calls > 10, timeout=10, what="tasks sent")
        stuck = race_resets(link, device._mqtt.connected.is_set, storm)
        assert not stuck, f"send() blocked for good: {stuck}\n{stacks(stuck)}"
        assert not storm.errors, storm.errors
        assert link.resets == RESETS and device._mqtt.wait_connected(10), "the device did not come back"
        # Each connection opened with its CONNECT: a task published while paho reconnected
        # once went out first, and the broker closed that connection at once.
        assert len(link.openings) >= RESETS + 2 and set(link.openings) == {b"\x10"}, Counter(link.openings)
        assert device.send("echo", {"n": 2}) is not None
    finally:
        if stuck:
            finishes(device.close, within=2)
        else:
            device.close()
        link.close()


def test_every_connection_opens_with_its_connect_while_threads_publish_through_reconnects(broker, root):
    """paho clears its queue, opens the next socket and only then queues the
    CONNECT: a PUBLISH queued in between went out first, and the broker
    closed that connection at once (another reconnect, under load again)."""
    link = CuttableLink(broker.host, broker.port)
    sender = MqttClient(link.url, reconnect_min=0.01, reconnect_max=0.05)
    storm = Storm()
    stuck: list[str] = []

    def publish() -> None:
        sender.publish(f"{root}/reading", b"r", qos=0)   # QoS 0: nothing piles up while disconnected
        storm.stopping.wait(0.0002)                       # paced: the broker need not take a flood

    try:
        sender.start()
        for n in range(3):
            storm.run(f"publish-{n}", publish)
        for _ in range(60):
            before = sender.generation
            link.cut()
            wait_until(lambda: sender.generation > before and sender.connected.is_set(), timeout=20,
                       what="the client back after a cut")
        stuck = storm.end(within=10)
        assert not stuck and not storm.errors, (stuck, storm.errors)
        assert len(link.openings) >= 61 and set(link.openings) == {b"\x10"}, Counter(link.openings)
    finally:
        if stuck:
            finishes(sender.stop, within=2)
        else:
            sender.stop()
        link.close()
