"""Tier 1 (pure), fuzzing: no message can take the agent core down or speak
for another box (issue #37). Hostile topics and payloads go in through
:meth:`AgentCore.handle`, the core's one input surface; the core must
answer every task message once (a reply, or a dead letter when there is no
usable reply topic), never raise, and take a peer's identity from the topic."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogmesh.edge_agent import events as ev
from fogmesh.edge_agent.actions import Ack, AgentConfig, Publish, Run
from fogmesh.edge_agent.core import AgentCore
from fogmesh.edge_agent.placement import LeastLoadedPolicy, LocalPolicy
from fogmesh.registry import Registry
from fogmesh.topics import Topics, is_segment, validate_publish_topic
from tests.fuzzing import FUZZ, ROOT, VALID, catalogue, device_tasks, forged_presence, messages, payloads, segments

T = Topics(ROOT)
REGISTRY = Registry.from_entry_points()


def core(dispatch: str = "shared", **cfg) -> AgentCore:
    c = AgentCore(AgentConfig(agent_id="a1", topics=T, dispatch=dispatch, **cfg), REGISTRY,
                  policy=LeastLoadedPolicy())
    c.handle(ev.ClockRead(1795000000.0), 0.0)
    return c


def peer_online(c: AgentCore, agent: str, now: float) -> None:
    c.handle(ev.MessageIn(T.presence(agent), orjson.dumps(dict(VALID["presence"], agent=agent, queue=0)),
                          "p", False), now)


def run_out(c: AgentCore, actions: list, now: float) -> list:
    """Carry out what the core asked, as the shell and the broker would: runs
    to their end (results, as a worker gives them), its claims back to it (the
    broker echoes the claims topic), until it asks for nothing more."""
    out, todo = [], list(actions)
    for _ in range(50):
        if not todo:
            break
        out += todo
        more: list = []
        for a in todo:
            if isinstance(a, Run):
                more += c.handle(ev.Finished(a.key, {"ran": a.key}, None), now)
            elif isinstance(a, Publish) and a.topic == T.claims:
                more += c.handle(ev.MessageIn(T.claims, a.payload, "echo", False), now)
        todo = more
    return out


@FUZZ
@given(st.sampled_from(["shared", "claim"]),
       st.lists(st.tuples(messages(), st.booleans()), min_size=1, max_size=12))
def test_no_message_on_any_topic_raises_out_of_the_core(dispatch, sequence):
    c = core(dispatch)
    peer_online(c, "a2", 0.0)
    now = 0.0
    for (topic, payload), dup in sequence:
        now += 0.3
        run_out(c, c.handle(ev.MessageIn(topic, payload, object(), dup), now), now)
        run_out(c, c.handle(ev.Tick(), now), now)
    run_out(c, c.handle(ev.Tick(), now + 60.0), now + 60.0)


@FUZZ
@given(st.sampled_from(["shared", "claim"]),
       st.one_of(st.tuples(st.sampled_from([T.tasks, T.agent_tasks("a1")]), payloads("task")), device_tasks()))
def test_every_hostile_task_gets_one_reply_or_one_dead_letter_and_is_acknowledged(dispatch, message):
    topic, payload = message
    c = core(dispatch)
    token = object()
    actions = run_out(c, c.handle(ev.MessageIn(topic, payload, token, False), 0.0), 0.0)
    actions += run_out(c, c.handle(ev.Tick(), 1.0), 1.0)       # a claim's moment passed (claim dispatch)
    answers = [a for a in actions if isinstance(a, Publish) and a.topic != T.claims]
    assert len(answers) == 1, f"{topic!r}: {answers}"
    assert [a for a in actions if isinstance(a, Ack) and a.token is token]


@pytest.mark.parametrize("dispatch", ["shared", "claim"])
def test_the_catalogue_of_hostile_input_on_every_topic_never_raises_nor_publishes_on_an_invalid_topic(dispatch):
    c = core(dispatch)
    peer_online(c, "a2", 0.0)
    now = 0.0
    for i, (topic, payload) in enumerate(catalogue()):
        now += 0.01
        token = ("hostile", i)
        actions = run_out(c, c.handle(ev.MessageIn(topic, payload, token, False), now), now)
        actions += run_out(c, c.handle(ev.Tick(), now + 0.005), now + 0.005)
        for a in actions:
            if isinstance(a, Publish):
                validate_publish_topic(a.topic)
    run_out(c, c.handle(ev.Tick(), now + 60.0), now + 60.0)
    assert c.refusals.total > 0


def test_a_cloud_worker_takes_the_catalogue_on_the_cloud_root_without_raising():
    """A cloud worker is an agent on the cloud broker (LocalPolicy, root fogmesh/v1)."""
    cloud = Topics("fogmesh/v1")
    c = AgentCore(AgentConfig(agent_id="cloud-w1", topics=cloud), REGISTRY, policy=LocalPolicy())
    for i, (topic, payload) in enumerate(catalogue("fogmesh/v1", names=("cloud-w2", "cloud-w1", "farm", "x" * 200))):
        for a in run_out(c, c.handle(ev.MessageIn(topic, payload, i, False), i * 0.01), i * 0.01):
            if isinstance(a, Publish):
                validate_publish_topic(a.topic)
    assert c.refusals.total > 0


def test_a_task_on_a_device_topic_over_128_characters_is_a_dead_letter_not_an_exception():
    """Found from outside: tasks/{200 characters} killed the agent that took it
    (``topics.replies()`` raised inside the core: exit 70)."""
    c = core()
    device = "d" * 200
    task = dict(VALID["task"], reply_to=f"{ROOT}/replies/{device}")
    actions = c.handle(ev.MessageIn(f"{ROOT}/tasks/{device}", orjson.dumps(task), "tok", False), 0.0)
    (letter,) = [orjson.loads(a.payload) for a in actions if isinstance(a, Publish)]
    assert letter["error"]["code"] == "bad_field" and "device" in letter["error"]["message"]
    assert Ack("tok") in actions
    assert c.counters.dead_letters == 1


@FUZZ
@given(segments, st.one_of(st.just("a2"), st.just("a3"), segments))
def test_a_presence_is_taken_for_the_box_its_topic_names_only(topic_agent, says):
    c = core()
    c.handle(ev.MessageIn(f"{ROOT}/presence/{topic_agent}", forged_presence(topic_agent, says), "p", False), 0.0)
    known = {p.agent for p in c.peers.present(0.0)}
    if says == topic_agent and topic_agent != "a1" and is_segment(topic_agent):
        assert known == {topic_agent}
    else:
        assert known == set()


def test_a_presence_that_speaks_for_another_agent_is_refused_and_counted():
    c = core()
    c.handle(ev.MessageIn(T.presence("a2"), forged_presence("a2", "a3"), "p", False), 0.0)
    assert c.peers.get("a3") is None and c.peers.get("a2") is None
    assert c.counters.refused == 1


def test_the_peers_an_agent_tracks_are_bounded_and_the_stalest_make_room():
    c = core()
    cap = c.peers.max_peers
    for i in range(cap + 50):
        peer_online(c, f"made-up-{i}", now=i * 0.001)
    assert len(c.peers) == cap
    peer_online(c, "a2", now=100.0)                  # a real peer that comes later still gets in
    assert c.peers.get("a2") is not None and len(c.peers) == cap


def test_wills_and_bridges_of_made_up_names_cost_a_bounded_table():
    c = core()
    for i in range(1500):
        c.handle(ev.MessageIn(T.presence(f"gone-{i}"), orjson.dumps(dict(VALID["presence"], agent=f"gone-{i}",
                                                                          state="offline")), "p", False), i * 0.01)
        c.handle(ev.MessageIn(T.bridge_health(f"site-{i}"), orjson.dumps(dict(VALID["bridge"], site=f"site-{i}",
                                                                               agent=f"bridge-site-{i}")),
                              "b", False), i * 0.01)
        c.handle(ev.Tick(), i * 0.01)
    assert len(c.deaths._wills) <= 1000 and len(c.offers._bridges) <= 1000 and len(c.offers._bridge_ids) <= 1000
    assert len(c.peers) <= c.peers.max_peers


@FUZZ
@given(st.lists(messages(only=("inbox", "claim", "presence", "bridge", "control")), max_size=8))
def test_protocol_messages_with_odd_ids_never_make_the_core_publish_on_an_invalid_topic(sequence):
    c = core("claim")
    peer_online(c, "a2", 0.0)
    actions = c.handle(ev.MessageIn(T.tasks, orjson.dumps(dict(VALID["task"], id="mine", kind="sleep",
                                                                 args={"ms": 1}, weight="medium")),
                                    "t", False), 0.0)
    now = 0.0
    for topic, payload in sequence:
        now += 0.5
        actions += c.handle(ev.MessageIn(topic, payload, "m", False), now)
        actions += c.handle(ev.Tick(), now)
    for a in actions:
        if isinstance(a, Publish):
            validate_publish_topic(a.topic)
