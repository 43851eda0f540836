"""No lock order that can deadlock (issue #36): the checker of
``tests/lockorder.py`` first on locks taken in known orders (it must flag an
inverted pair), then on real clients and their paho clients driven through
publish storms from several threads, tagged publishes, batches, subscriptions,
cut connections and connections reset right after their CONNACK, against the
real brokers. A cycle need not lock anything up in the run to be reported:
two threads taking two locks in opposite orders is enough."""

from __future__ import annotations

import itertools
import queue
import threading

import pytest

from fogmesh.devices.client import FogClient
from fogmesh.mqtt import MqttClient
from tests.lockorder import LockOrder
from tests.netcut import CuttableLink
from tests.storm import Storm, finishes
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def on_thread(name: str, body) -> None:
    """Run ``body`` on a thread of its own, to its end."""
    t = threading.Thread(target=body, name=name)
    t.start()
    t.join(10)
    assert not t.is_alive()


# -- the checker ------------------------------------------------------------------------

def test_two_threads_taking_two_locks_in_opposite_orders_are_flagged_with_both_stacks():
    order = LockOrder()
    a, b = order.track(threading.Lock(), "a"), order.track(threading.RLock(), "b")

    def a_then_b() -> None:
        with a, b:
            pass

    def b_then_a() -> None:
        with b, a:
            pass

    on_thread("first", a_then_b)       # one after the other: nothing locks up in this run,
    on_thread("second", b_then_a)      # but the two orders together can
    [cycle] = order.cycles()
    text = str(cycle)
    assert cycle.locks in (["a", "b", "a"], ["b", "a", "b"])
    assert "thread 'first' held a while waiting for b" in text and "in a_then_b" in text
    assert "thread 'second' held b while waiting for a" in text and "in b_then_a" in text
    with pytest.raises(AssertionError, match="potential deadlock"):
        order.assert_no_deadlock()


def test_three_threads_each_holding_the_lock_the_next_one_waits_for_are_flagged():
    order = LockOrder()
    locks = [order.track(threading.Lock(), name) for name in "xyz"]
    for n in range(3):
        first, second = locks[n], locks[(n + 1) % 3]
        on_thread(f"t{n}", lambda first=first, second=second: [first.acquire(), second.acquire(),
                                                                 second.release(), first.release()])
    [cycle] = order.cycles()
    assert sorted(seen.thread for _, _, seen in cycle.edges) == ["t0", "t1", "t2"]


def test_locks_always_taken_in_one_order_are_no_deadlock():
    order = LockOrder()
    a, b, c = (order.track(threading.Lock(), name) for name in "abc")

    def in_order() -> None:
        with a, b, c:
            pass

    for n in range(3):
        on_thread(f"t{n}", in_order)
    assert order.edges() == {("a", "b"), ("a", "c"), ("b", "c")}
    assert order.cycles() == []
    order.assert_no_deadlock()


def test_what_cannot_wait_for_ever_is_no_edge():
    """A lock only tried, a reentrant lock its owner takes again, a timed
    wait; and one thread alone taking two locks in both orders (it waits
    for one lock at a time: no other thread holds the other)."""
    order = LockOrder()
    a, b = order.track(threading.Lock(), "a"), order.track(threading.Lock(), "b")
    r = order.track(threading.RLock(), "r")

    def tries() -> None:
        with r:
            assert a.acquire(blocking=False)
            a.release()
            with r:                      # again, its owner: never waits
                pass
            assert b.acquire(timeout=1)
            b.release()

    def takes() -> None:
        with a, r:
            pass

    on_thread("tries", tries)
    on_thread("takes", takes)
    assert order.edges() == {("a", "r")}
    assert r.reentered == 1
    on_thread("alone", lambda: [b.acquire(), a.acquire(), a.release(), b.release(),
                                a.acquire(), b.acquire(), b.release(), a.release()])
    assert {("a", "b"), ("b", "a")} <= order.edges()
    assert order.cycles() == []


def test_every_lock_of_a_client_and_of_its_paho_client_is_tracked():
    client = MqttClient("mqtt://127.0.0.1:1")
    names = LockOrder().instrument_client(client, "c")
    assert {"c.subscriptions._lock", "c.paho._out_message_mutex", "c.paho._callback_mutex", "c.paho._in_callback_mutex",
            "c.paho._msgtime_mutex", "c.paho._in_message_mutex", "c.paho._mid_generate_mutex",
            "c.paho._reconnect_delay_mutex", "c.paho._batch"} <= set(names)


# -- real clients -------------------------------------------------------------------------

def cuts_and_resets(link: CuttableLink, client: MqttClient, *, cuts: int, resets: int) -> None:
    """Cut the link ``cuts`` times (awaiting the client back each time), then
    reset the next ``resets`` connections right after their CONNACK."""
    for _ in range(cuts):
        before = client.generation
        link.cut()
        wait_until(lambda: client.generation > before and client.connected.is_set(), timeout=20,
                   what="the client back after a cut")
    link.reset_after_connack(resets)
    link.cut()
    wait_until(lambda: link.resets == resets and client.connected.is_set(), timeout=20,
               what=f"{resets} connections reset after their CONNACK, then the client back")


def drive(storm: Storm, events) -> tuple[list[str], AssertionError | None]:
    """Run ``events`` during ``storm``, then end it: the threads blocked for
    good, and why the events did not all come (a locked-up client never
    comes back), both for the test to judge after the checker's verdict."""
    came_back = None
    try:
        events()
    except AssertionError as exc:
        came_back = exc
    return storm.end(within=10), came_back


def test_no_lock_order_of_a_client_can_deadlock_through_storms_cuts_and_resets(broker, root):
    order = LockOrder()
    link = CuttableLink(broker.host, broker.port)
    events: queue.SimpleQueue = queue.SimpleQueue()        # the callbacks only hand on, as the agent's do
    sender = MqttClient(link.url, client_id=f"{root}-sender", reconnect_min=0.01, reconnect_max=0.05,
                        on_withdrawn=events.put, on_confirmed=events.put, on_connection=events.put,
                        on_message=lambda m: sender.publish(f"{root}/echoed", m.payload))   # on paho's thread
    peer = MqttClient(broker.url)
    order.instrument_client(sender, "sender")
    order.instrument_client(peer, "peer")
    storm = Storm()
    stuck: list[str] = []
    serial = itertools.count()

    def paced(step):
        def run() -> None:
            if sender.unconfirmed() > 300:
                storm.stopping.wait(0.001)                 # paced: the broker need not take a flood afterwards
            else:
                step()
        return run

    def together() -> None:
        with sender.together(write_here=next(serial) % 2 == 0):
            sender.publish(f"{root}/answer", b"a", tag=("together", next(serial)))
            sender.publish(f"{root}/record", b"r")

    def subscriptions() -> None:
        sender.subscribe(f"{root}/extra/{next(serial) % 3}", timeout=None)
        sender.unsubscribe(f"{root}/extra/{next(serial) % 3}")
        sender.watch_unconfirmed(10, lambda: events.put("watched"))
        storm.stopping.wait(0.01)                          # paced: a subscription now and then

    try:
        sender.start()
        peer.start()
        sender.subscribe(f"{root}/echo")
        storm.run("tagged", paced(lambda: sender.publish(f"{root}/answer", b"a", tag=next(serial))))
        storm.run("report-only", paced(lambda: sender.publish(f"{root}/answer", b"a", tag=next(serial),
                                                              withdraw=False)))
        storm.run("untagged", paced(lambda: sender.publish(f"{root}/plain", b"p")))
        storm.run("together", paced(together))
        storm.run("subscriptions", subscriptions)
        storm.run("peer", paced(lambda: peer.publish(f"{root}/echo", b"e", qos=next(serial) % 2)))
        wait_until(lambda: storm.calls > 100, timeout=10, what="the storm going")
        stuck, came_back = drive(storm, lambda: cuts_and_resets(link, sender, cuts=3, resets=8))
        order.assert_no_deadlock()                         # first: why, when it locked up
        assert not stuck and came_back is None, (stuck, came_back)
        assert not storm.errors, storm.errors
        # The checker saw the paths that matter, on both sides: publishes in
        # batches (a user thread), paho's resend after a CONNACK (its thread).
        seen = order.edges()
        assert ("sender.paho._batch", "sender.paho._out_message_mutex") in seen
        assert ("sender.paho._out_message_mutex", "sender.paho._in_callback_mutex") in seen
    finally:
        for client in (sender, peer):
            if stuck:
                finishes(client.stop, within=2)
            else:
                client.stop()
        link.close()


def test_no_lock_order_of_a_device_client_can_deadlock_while_its_connections_are_reset(broker, root):
    order = LockOrder()
    link = CuttableLink(broker.host, broker.port)
    device = FogClient(link.url, root=root, retry_s=0.5)     # its re-sender publishes too
    # A device backs off up to 5 s between attempts on a link that keeps dropping: quicker here.
    device._mqtt._paho.reconnect_delay_set(min_delay=0.01, max_delay=0.05)
    order.instrument(device, "device")
    order.instrument_client(device._mqtt, "device.mqtt")
    storm = Storm()
    stuck: list[str] = []
    try:
        device.connect()
        for n in range(3):
            storm.run(f"send-{n}", lambda: (device.send("echo", {}), storm.stopping.wait(0.001)))  # paced
        wait_until(lambda: storm.calls > 10, timeout=10, what="tasks sent")
        stuck, came_back = drive(storm, lambda: cuts_and_resets(link, device._mqtt, cuts=1, resets=8))
        order.assert_no_deadlock()
        assert not stuck and came_back is None, (stuck, came_back)
        assert not storm.errors, storm.errors
        assert ("device._lock", "device.mqtt.paho._out_message_mutex") not in order.edges()
    finally:
        if stuck:
            finishes(device.close, within=2)
        else:
            device.close()
        link.close()


def test_no_lock_order_of_an_agent_can_deadlock_while_its_connections_are_cut_and_reset(broker, root):
    """Issue #36 as it was seen: agents on a node killed under load stopped
    answering for good. An agent reaching the broker through the link (both
    its connections, their callbacks into its dispatcher, the dispatcher's
    turn and the steps on the network thread), tasks from a device meanwhile."""
    from fogmesh.edge_agent.agent import Agent
    from fogmesh.edge_agent.options import AgentOptions

    order = LockOrder()
    link = CuttableLink(broker.host, broker.port)
    # The protocol said: "auto" asks the broker, then makes its clients again (not the ones tracked here).
    agent = Agent(f"a-{root.rsplit('/', 1)[-1]}", link.url,
                  AgentOptions(root=root, concurrency=2, presence_period=1.0,
                               mqtt="5" if broker.name == "mosquitto" else "3.1.1"))
    order.instrument_client(agent.client, "task")
    order.instrument_client(agent.ctl, "control")
    order.instrument(agent.dispatcher.turns, "turns")
    device = FogClient(broker.url, root=root, retry_s=1.0)
    storm = Storm()
    futures: list = []
    stuck: list[str] = []
    try:
        agent.start()
        device.connect()
        storm.run("device", lambda: (futures.append(device.send("echo", {"n": len(futures)})),
                                     storm.stopping.wait(0.005)))                      # paced: ~200 tasks/s
        wait_until(lambda: sum(f.done() for f in futures) > 20, timeout=20, what="tasks answered")
        stuck, came_back = drive(storm, lambda: cuts_and_resets(link, agent.client, cuts=2, resets=6))
        order.assert_no_deadlock()
        assert not stuck and came_back is None, (stuck, came_back)
        wait_until(lambda: all(f.done() for f in futures), timeout=60, what="every task answered")
        assert all(f.result().ok for f in futures)
        # Never a second run (another answer); an answer cut off with the link may come again,
        # the same one (topics.md: the PUBACK of one the broker had was lost with the link).
        first = {f.result().reply.id: f.result().reply for f in futures}
        assert [r for r in device.duplicate_replies if r != first[r.id]] == []
        assert ("task.paho._batch", "control.paho._batch") in order.edges()     # a step: both, in one order
    finally:
        device.close()
        if not finishes(agent.stop, within=30):
            stuck.append("agent.stop")
        link.close()
    assert "agent.stop" not in stuck, f"the agent did not stop\n{order.report()}"
