"""Tier 1 (pure): placement policies, their shared rules, and the peer registry."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogmesh.announcements import Battery, Presence
from fogmesh.edge_agent.battery import BatteryModel, SolarProfile, parse_battery_spec
from fogmesh.edge_agent.peers import Peer, PeerRegistry
from fogmesh.edge_agent.placement import (
    Cloud,
    EnergyPolicy,
    LeastLoadedPolicy,
    Local,
    LocalPolicy,
    Offload,
    RandomPolicy,
    RoundRobinPolicy,
    SelfState,
    place_task,
)
from fogmesh.edge_agent.policy_registry import make_policy


def peer(agent, *, queue=0, running=0, capacity=2, battery=None, state="online", kinds=("sha256",),
         rtt=None, failure=0.0):
    p = Presence(agent=agent, state=state, ts=0.0, queue=queue, running=running, capacity=capacity,
                 kinds=tuple(kinds), battery=Battery(battery, False) if battery is not None else None)
    return Peer(p, seen_at=0.0, rtt_ms=rtt, failure=failure)


ME = SelfState(agent="me", queued=0, running=0, capacity=2)


def place(policy, peers, me=ME, weight="medium", kind="sha256", **kw):
    return place_task(policy, kind=kind, weight=weight, me=me, peers=peers, run_ms=10.0, **kw)


def test_light_tasks_run_where_they_land():
    assert place(RoundRobinPolicy(counter=1), [peer("p1")], weight="light") == Local()


def test_heavy_tasks_go_to_the_cloud_when_there_is_one():
    assert place(LocalPolicy(), [], weight="heavy", cloud=True) == Cloud()
    assert place(LocalPolicy(), [], weight="heavy", cloud=False) == Local()


def test_least_loaded_picks_the_peer_with_the_shortest_expected_completion():
    busy_me = SelfState(agent="me", queued=6, running=2, capacity=2)
    peers = [peer("p1", queue=4, running=2), peer("p2", queue=0, running=1), peer("p3", queue=2, running=2)]
    assert place(LeastLoadedPolicy(), peers, me=busy_me) == Offload("p2")


def test_least_loaded_stays_local_when_local_is_as_fast():
    assert place(LeastLoadedPolicy(), [peer("p1")]) == Local()


def test_least_loaded_avoids_peers_that_failed():
    busy_me = SelfState(agent="me", queued=6, running=2, capacity=2)
    peers = [peer("flaky", failure=0.9), peer("solid", queue=1)]
    assert place(LeastLoadedPolicy(), peers, me=busy_me) == Offload("solid")


def test_energy_offloads_below_low_to_a_peer_above_accept_not_below():
    low = SelfState(agent="me", battery=40.0)
    peers = [peer("p65", battery=65.0), peer("p80", battery=80.0)]
    assert place(EnergyPolicy(), peers, me=low) == Offload("p80")


def test_energy_keeps_offloading_until_the_battery_recovers_above_recover():
    policy, peers = EnergyPolicy(), [peer("p80", battery=80.0)]
    assert place(policy, peers, me=SelfState(agent="me", battery=40.0)) == Offload("p80")
    assert place(policy, peers, me=SelfState(agent="me", battery=55.0)) == Offload("p80")
    assert place(policy, peers, me=SelfState(agent="me", battery=61.0)) == Local()
    assert place(policy, peers, me=SelfState(agent="me", battery=55.0)) == Local()


def test_energy_first_fit_and_best_fit():
    low = SelfState(agent="me", battery=30.0)
    peers = [peer("a", battery=75.0), peer("b", battery=95.0)]
    assert place(EnergyPolicy(fit="first"), peers, me=low) == Offload("a")
    assert place(EnergyPolicy(fit="best"), peers, me=low) == Offload("b")


def test_energy_peer_below_accept_never_accepts():
    assert not EnergyPolicy().accepts(SelfState(agent="me", battery=65.0))
    assert EnergyPolicy().accepts(SelfState(agent="me", battery=80.0))


def test_round_robin_cycles_over_self_and_peers():
    policy, peers = RoundRobinPolicy(), [peer("p1"), peer("p2")]
    assert [place(policy, peers) for _ in range(4)] == [Local(), Offload("p1"), Offload("p2"), Local()]


def test_random_is_reproducible_from_its_seed():
    peers = [peer("p1"), peer("p2"), peer("p3")]
    p = RandomPolicy(seed=7)
    q = RandomPolicy(seed=7)
    assert [place(p, peers) for _ in range(20)] == [place(q, peers) for _ in range(20)]


def test_make_policy_knows_the_builtins_and_says_what_exists():
    assert isinstance(make_policy("energy", fit="best"), EnergyPolicy)
    with pytest.raises(ValueError, match="least-loaded"):
        make_policy("teleport")


peers_strategy = st.lists(
    st.builds(lambda i, q, r, c, b, state, has_kind, fail: peer(
        f"p{i}", queue=q, running=r, capacity=c, battery=b, state=state,
        kinds=("sha256",) if has_kind else ("echo",), failure=fail),
        st.integers(0, 50), st.integers(0, 20), st.integers(0, 8), st.integers(1, 8),
        st.none() | st.floats(0, 100), st.sampled_from(["online", "offline", "draining"]),
        st.booleans(), st.floats(0, 1)),
    max_size=8, unique_by=lambda p: p.agent)
policies = st.sampled_from(["local", "round-robin", "random", "least-loaded", "energy"])


@given(policy_name=policies, peers=peers_strategy, battery=st.none() | st.floats(0, 100),
       weight=st.sampled_from(["light", "medium", "heavy"]),
       exclude=st.sets(st.sampled_from([f"p{i}" for i in range(51)])))
def test_a_policy_never_picks_a_dead_draining_incapable_or_tried_peer(policy_name, peers, battery, weight, exclude):
    policy = make_policy(policy_name)
    me = SelfState(agent="me", queued=3, running=2, capacity=2, battery=battery)
    for _ in range(3):
        decision = place(policy, peers, me=me, weight=weight, exclude=frozenset(exclude))
        assert isinstance(decision, (Local, Offload))          # always placed somewhere
        if isinstance(decision, Offload):
            chosen = next(p for p in peers if p.agent == decision.peer)
            assert chosen.presence.state == "online"
            assert "sha256" in chosen.presence.kinds
            assert chosen.agent not in exclude
            if policy_name == "energy":
                assert chosen.battery_percent is not None and chosen.battery_percent > 70


# -- peer registry -------------------------------------------------------------
def presence(agent, state="online", **kw):
    return Presence(agent=agent, state=state, ts=0.0, **kw)


def test_a_peer_is_live_until_its_presence_is_stale():
    r = PeerRegistry(me="me", stale_after=15)
    r.update(presence("p1"), now=0.0)
    assert [p.agent for p in r.live(10.0)] == ["p1"]
    assert r.live(16.0) == []


def test_a_peer_whose_will_arrived_is_dead():
    r = PeerRegistry(me="me")
    r.update(presence("p1"), 0.0)
    r.update(presence("p1", state="offline"), 1.0)
    assert r.live(1.0) == []


def test_the_registry_ignores_our_own_presence():
    r = PeerRegistry(me="me")
    r.update(presence("me"), 0.0)
    assert len(r) == 0


def test_past_performance_is_an_ewma():
    r = PeerRegistry(me="me", alpha=0.5)
    r.update(presence("p1"), 0.0)
    r.record("p1", ok=True, rtt_ms=2.0)
    r.record("p1", ok=True, rtt_ms=4.0)
    r.record("p1", ok=False)
    p = r.get("p1")
    assert p.rtt_ms == 3.0 and p.failure == 0.5 and p.offloads == 3


# -- battery model ---------------------------------------------------------------
def test_the_battery_drains_with_idle_and_task_power():
    b = BatteryModel(capacity_wh=10, percent=50, idle_w=1, task_w=1)
    assert b.advance(3600, running=1).percent == pytest.approx(30)


def test_solar_input_charges_and_is_capped_at_full():
    b = BatteryModel(capacity_wh=10, percent=95, idle_w=0, task_w=0, solar=SolarProfile(((0, 5.0),)))
    assert b.advance(3600, running=0).percent == 100


def test_battery_spec_parses():
    b = parse_battery_spec("capacity_wh=6.7,percent=80,idle_w=1.4,task_w=1.6,solar=0:2.0;600:0")
    assert b.percent == 80 and b.solar.watts(100) == 2.0 and b.solar.watts(700) == 0.0
    with pytest.raises(ValueError, match="unknown field"):
        parse_battery_spec("volts=5")


# -- consolidate --------------------------------------------------------------------------
def _peer(agent, queue=0, running=0, capacity=1):
    from fogmesh.announcements import Presence
    from fogmesh.edge_agent.peers import Peer
    return Peer(Presence(agent=agent, state="online", ts=0.0, queue=queue, running=running,
                         capacity=capacity, kinds=("k",)), seen_at=0.0)


def test_consolidate_packs_onto_the_busiest_node_that_still_meets_the_deadline():
    from fogmesh.edge_agent.placement import ConsolidatePolicy, Local, Offload, SelfState
    policy = ConsolidatePolicy(slack=3.0)
    me = SelfState("me", capacity=2)
    peers = [_peer("idle", capacity=2), _peer("busy", running=2, capacity=2),
             _peer("full", queue=9, running=2, capacity=2)]
    assert policy.place("k", "medium", me, peers, run_ms=100) == Offload("busy")
    assert policy.place("k", "medium", SelfState("me", running=2, capacity=2), peers[:1], run_ms=100) == Local()


def test_consolidate_falls_back_to_the_least_loaded_when_nothing_fits():
    from fogmesh.edge_agent.placement import ConsolidatePolicy, Offload, SelfState
    policy = ConsolidatePolicy(slack=1.5)
    me = SelfState("me", queued=6, running=1, capacity=1)
    assert policy.place("k", "medium", me, [_peer("a", queue=3, running=1), _peer("b", queue=1, running=1)],
                        run_ms=100) == Offload("b")
