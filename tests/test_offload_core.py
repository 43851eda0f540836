"""Tier 1 (pure): the offload protocol between two or three agent cores, wired
through an in-memory bus with a fake clock. No broker: every interleaving a
test needs (a lost accept, a late result, a forged message) is written out."""

import orjson
import pytest

from fogmesh.announcements import Battery, Presence
from fogmesh.edge_agent.actions import Ack, AgentConfig, Cancel, Publish, Run
from fogmesh.edge_agent.core import AgentCore
from fogmesh.edge_agent.placement import EnergyPolicy, LeastLoadedPolicy
from fogmesh.messages import Task
from fogmesh.registry import Registry
from fogmesh.topics import Topics
from tests.coreio import on_battery, on_disconnect, on_finished, on_message, on_tick

T = Topics("t")
REG = Registry.from_entry_points()
REPLIES = "t/replies/dev"


class Bus:
    """Delivers Publish actions to the cores subscribed to their topics; runs
    inline kinds on the spot; holds worker runs until the test finishes them."""

    def __init__(self, *cores):
        self.cores = {c.config.agent_id: c for c in cores}
        self.replies: list[dict] = []
        self.runs: list[tuple[str, str]] = []       # (agent, key)
        self.dropped: set[str] = set()              # topics whose messages get lost

    def deliver(self, actions, now):
        for a in actions:
            if isinstance(a, Publish):
                if a.topic in self.dropped:
                    continue
                if a.topic == REPLIES:
                    self.replies.append(orjson.loads(a.payload))
                for core in self.cores.values():
                    if a.topic in (T.agent_inbox(core.config.agent_id),) or \
                            T.agent_of_presence(a.topic) is not None:
                        self.deliver(on_message(core, a.topic, a.payload, None, now), now)
            elif isinstance(a, Run):
                owner = next(c for c in self.cores.values() if a.key in c.entries)
                self.runs.append((owner.config.agent_id, a.key))

    def finish(self, agent, key, now, result="done"):
        self.deliver(on_finished(self.cores[agent], key, now, result=result), now)

    def presence(self, agent, now, *, state="online", queue=0, running=0, battery=None):
        p = Presence(agent=agent, state=state, ts=now, queue=queue, running=running, capacity=2,
                     kinds=REG.names(), battery=Battery(battery, False) if battery is not None else None)
        self.deliver([Publish(T.presence(agent), p.encode())], now)


def core(agent, policy=None, **cfg):
    return AgentCore(AgentConfig(agent_id=agent, topics=T, concurrency=1, **cfg), REG,
                     policy=policy or LeastLoadedPolicy())


def submit(bus, agent, task_id, now, kind="sleep", weight="medium"):
    payload = Task(id=task_id, kind=kind, reply_to=REPLIES, weight=weight, args={"ms": 1}).encode()
    bus.deliver(on_message(bus.cores[agent], T.tasks, payload, f"tok-{task_id}", now), now)


def busy_origin_and_idle_peer():
    a, b = core("a"), core("b")
    bus = Bus(a, b)
    bus.presence("b", 0.0)
    submit(bus, "a", "t0", 0.0)               # a is now running one and has one slot
    submit(bus, "a", "t1", 0.0)               # -> queue would wait: offload to idle b
    return bus, a, b


def test_a_medium_task_goes_to_the_idle_peer_and_the_origin_answers():
    bus, a, b = busy_origin_and_idle_peer()
    assert ("b", "a/t1") in bus.runs
    bus.finish("b", "a/t1", 0.01)
    (reply,) = bus.replies
    assert reply["id"] == "t1" and reply["tier"] == "fog" and reply["worker"] == "b"
    assert a.counters.offers_sent == 1 and a.counters.offers_accepted == 1


def test_a_light_task_never_leaves():
    a, b = core("a"), core("b")
    bus = Bus(a, b)
    bus.presence("b", 0.0)
    submit(bus, "a", "t0", 0.0)
    submit(bus, "a", "t1", 0.0, weight="light")
    assert all(agent == "a" for agent, _ in bus.runs)


def test_a_peer_that_accepts_and_never_answers_costs_a_lease_then_the_task_runs_here():
    bus, a, b = busy_origin_and_idle_peer()
    bus.finish("a", "t0", 0.01)
    deadline = a.next_deadline()
    assert deadline == pytest.approx(30 + 1)     # the kind's timeout + the lease
    bus.deliver(on_tick(a, deadline), deadline)
    assert a.counters.leases_expired == 1
    assert ("a", "t1") in bus.runs


def test_a_lost_accept_expires_after_the_offer_lease():
    a, b = core("a", offer_lease_s=0.5), core("b")
    bus = Bus(a, b)
    bus.presence("b", 0.0)
    bus.dropped.add(T.agent_inbox("b"))         # the offer never arrives
    submit(bus, "a", "t0", 0.0)
    submit(bus, "a", "t1", 0.0)
    assert a.next_deadline() == pytest.approx(0.5)
    bus.deliver(on_tick(a, 0.5), 0.5)
    assert a.entries["t1"].state in ("queued", "running")


def test_a_peers_will_takes_back_what_it_accepted_only_after_the_grace():
    bus, a, b = busy_origin_and_idle_peer()
    bus.presence("b", 0.01, state="offline")      # b's will (or a broker shutting down)
    assert a.entries["t1"].state == "offered"
    assert a.next_deadline() == pytest.approx(2.01)
    bus.deliver(on_tick(a, 2.01), 2.01)          # still offline: a takes t1 back
    assert a.entries["t1"].state == "queued"


def test_a_late_result_from_a_peer_presumed_dead_is_not_delivered_twice():
    bus, a, b = busy_origin_and_idle_peer()
    bus.presence("b", 0.01, state="offline")      # b's will: a takes t1 back after the grace
    bus.deliver(on_tick(a, 2.01), 2.01)
    bus.finish("a", "t0", 2.02)                  # frees a's slot; t1 runs here
    bus.finish("a", "t1", 2.03)
    bus.finish("b", "a/t1", 2.04)                # b was alive after all
    assert [r["id"] for r in bus.replies] == ["t0", "t1"]
    assert a.counters.late_results == 1


def test_a_result_that_beats_the_local_rerun_wins_and_cancels_it():
    bus, a, b = busy_origin_and_idle_peer()
    bus.presence("b", 0.01, state="offline")
    bus.deliver(on_tick(a, 2.01), 2.01)
    bus.finish("a", "t0", 2.02)                  # t1 now running locally
    actions = on_finished(b, "a/t1", 2.03, result="from b")
    cancels = []
    for x in actions:                             # deliver b's result to a by hand
        if isinstance(x, Publish):
            got = on_message(a, x.topic, x.payload, None, 2.03)
            cancels += [c for c in got if isinstance(c, Cancel)]
            bus.deliver(got, 2.03)
    assert cancels == [Cancel("t1")]
    assert [r["id"] for r in bus.replies] == ["t0", "t1"]
    bus.finish("a", "t1", 0.04)                  # the cancelled run's result is ignored
    assert len(bus.replies) == 2


def test_a_rejecting_peer_makes_the_origin_try_elsewhere():
    a, b, c = core("a"), core("b", policy=EnergyPolicy()), core("c")
    bus = Bus(a, b, c)
    on_battery(b, 30.0)                            # energy policy: b accepts nothing
    bus.presence("b", 0.0)
    bus.presence("c", 0.0, queue=1)
    submit(bus, "a", "t0", 0.0)
    submit(bus, "a", "t1", 0.0)
    assert a.counters.offers_rejected == 1
    assert any(key == "a/t1" and agent == "c" for agent, key in bus.runs) or \
        a.entries["t1"].state in ("queued", "running")


def test_forged_and_garbled_inbox_messages_are_ignored():
    a = core("a")
    for junk in (b"{oops", b"[]", b'{"op": "result", "offer": "x", "task": "t9", "agent": "m",'
                 b' "reply": {"status": "ok"}}', b'{"op": "offer", "lease_ms": 0}'):
        assert on_message(a, T.agent_inbox("a"), junk, "tok", 0.0) == [Ack("tok")]
    assert a.counters.bad_inbox == 3 and a.counters.late_results == 1


def test_forged_presence_for_another_agent_is_ignored():
    a = core("a")
    p = Presence(agent="mallory", state="online", ts=0.0, kinds=REG.names())
    on_message(a, T.presence("b"), p.encode(), None, 0.0)
    assert len(a.peers) == 0


def test_a_draining_peer_rejects_offers():
    a, b = core("a"), core("b")
    bus = Bus(a, b)
    bus.presence("b", 0.0)
    on_message(b, T.agent_control("b"), b'{"op": "drain"}', None, 0.0)
    submit(bus, "a", "t0", 0.0)
    submit(bus, "a", "t1", 0.0)
    assert a.counters.offers_rejected == 1


def test_a_peers_result_that_comes_twice_while_the_answer_waits_on_a_takeover_is_dropped():
    """Seen under chaos: the origin's connection dropped (its answers wait on
    the takeover claim), and the peer re-sent its result after a reconnect.
    The second copy is a late result, not a second answer (nor a crash)."""
    bus, a, b = busy_origin_and_idle_peer()
    bus.deliver(on_disconnect(a, 0.02, control=True), 0.02)
    assert a.entries["t1"].fenced
    results = [x for x in on_finished(b, "a/t1", 0.03, result="from b") if isinstance(x, Publish)]
    for now in (0.03, 0.04):
        for x in results:
            bus.deliver(on_message(a, x.topic, x.payload, None, now), now)
    assert a.entries["t1"].state == "answered"
    assert a.counters.late_results == 1
