"""Tier 1 (pure): the start-up probe that refuses claim dispatch where agents
see the claims topic in different orders (edge_agent/ordering.py). Two cores,
claims delivered to each in an order the test chooses."""

import orjson

from fogmesh.announcements import Presence
from fogmesh.edge_agent.actions import AgentConfig, Publish
from fogmesh.edge_agent.core import AgentCore
from fogmesh.registry import Registry
from fogmesh.topics import Topics
from tests.coreio import on_clock, on_message, on_tick, start_order_probe

T = Topics("t")
REG = Registry.from_entry_points()


def core(agent):
    c = AgentCore(AgentConfig(agent_id=agent, topics=T, dispatch="claim"), REG)
    on_clock(c, wall=1000.0, now=0.0)
    return c


def run_probe(reorder_for=None):
    """b (new) probes a (running); claims reach each core in publish order,
    except that ``reorder_for`` sees the other's burst before its own."""
    a, b = core("a"), core("b")
    for me, other in ((a, "b"), (b, "a")):
        on_message(me, T.presence(other), Presence(agent=other, state="online", ts=0.0).encode(), None, 0.0)
    cores = {"a": a, "b": b}
    claims, inbox = [], []

    def deliver(actions, now):
        for x in actions:
            if isinstance(x, Publish) and x.topic == T.claims:
                claims.append(x.payload)
            elif isinstance(x, Publish) and x.topic == T.agent_inbox("b"):
                inbox.append(x.payload)

    deliver(start_order_probe(b, "tok", 0.0), 0.0)
    for name, c in cores.items():                      # the probe record reaches both
        deliver(on_message(c, T.claims, claims[0], None, 0.01), 0.01)
    for k in range(12):                                # both bursts go out from the agreed moment
        for name, c in cores.items():
            deliver(on_tick(c, 0.31 + 0.02 * k), 0.31 + 0.02 * k)
    bursts = claims[1:]
    by = {n: [p for p in bursts if orjson.loads(p)["agent"] == n] for n in cores}
    for name, c in cores.items():
        order = by["a"] + by["b"]
        if name == reorder_for:
            order = by["b"] + by["a"]
        for p in order:
            on_message(c, T.claims, p, None, 0.6)
    for c in cores.values():
        deliver(on_tick(c, 1.2), 1.2)
    for p in inbox:
        on_message(b, T.agent_inbox("b"), p, None, 1.21)
    return b


def test_agents_that_see_claims_in_one_order_may_use_claim_dispatch():
    assert run_probe().order_verdict == "ok"


def test_agents_that_see_claims_in_different_orders_refuse_claim_dispatch_and_say_what_to_use():
    verdict = run_probe(reorder_for="a").order_verdict
    assert "different orders" in verdict and "shared subscriptions" in verdict


def test_an_agent_alone_has_nothing_to_probe():
    c = core("solo")
    assert start_order_probe(c, "tok", 0.0) == [] and c.order_verdict == "ok"
