"""Tier 1 (pure): the agent core's decisions, driven with a fake clock.

No broker, no threads: messages and ticks in, actions out.
"""

import orjson
import pytest

from edge_agent.claims import Claim, claim_key
from edge_agent.actions import Ack, AgentConfig, Cancel, Forget, Publish, Remember, Rescue, Run
from edge_agent.core import AgentCore
from fogmesh.messages import ErrorInfo, Limits, Presence, Task
from fogmesh.registry import Registry
from fogmesh.topics import Topics

T = Topics("t")
REGISTRY = Registry.from_entry_points()


def core(dispatch="shared", agent="a1", **cfg):
    return AgentCore(AgentConfig(agent_id=agent, topics=T, dispatch=dispatch, **cfg), REGISTRY)


def task(task_id="t1", kind="sleep", **fields):
    return Task(id=task_id, kind=kind, reply_to="t/replies/d", args=fields.pop("args", {}),
                **fields).encode()


def no_journal(actions):
    return [a for a in actions if not isinstance(a, (Remember, Forget))]


def published(actions):
    return [(a.topic, orjson.loads(a.payload)) for a in actions if isinstance(a, Publish)]


def test_a_task_runs_then_replies_then_acks():
    c = core()
    actions = c.on_message(T.tasks, task(), "tok", now=0.0)
    assert [type(a) for a in actions] == [Remember, Run]
    done = c.on_finished("t1", 0.5, result={"slept_ms": 1})
    assert [type(a) for a in done] == [Publish, Forget, Ack]
    (topic, reply), = published(done)
    assert topic == "t/replies/d"
    assert reply["status"] == "ok" and reply["worker"] == "a1" and reply["tier"] == "local"
    assert reply["ms"]["total"] == pytest.approx(500)


def test_inline_kinds_skip_the_queue():
    c = core(concurrency=1)
    c.on_message(T.tasks, task("slow"), 1, now=0.0)
    actions = c.on_message(T.tasks, task("fast", kind="echo"), 2, now=0.0)
    assert isinstance(actions[0], Run) and actions[0].kind.inline


def test_tasks_beyond_concurrency_wait_in_fifo_order():
    c = core(concurrency=1)
    assert isinstance(no_journal(c.on_message(T.tasks, task("a"), 1, 0.0))[0], Run)
    assert no_journal(c.on_message(T.tasks, task("b"), 2, 0.0)) == []
    after = c.on_finished("a", 1.0, result=None)
    assert [a.task.id for a in after if isinstance(a, Run)] == ["b"]


def test_a_full_queue_answers_busy():
    c = core(concurrency=1, max_queue=1)
    c.on_message(T.tasks, task("a"), 1, 0.0)
    c.on_message(T.tasks, task("b"), 2, 0.0)
    (_, reply), = published(c.on_message(T.tasks, task("c"), 3, 0.0))
    assert reply["error"]["code"] == "busy"


def test_a_duplicate_id_after_the_answer_is_acked_and_dropped():
    c = core()
    c.on_message(T.tasks, task(), 1, 0.0)
    c.on_finished("t1", 0.1, result=1)
    assert c.on_message(T.tasks, task(), 2, 0.2) == [Ack(2)]
    assert c.counters.duplicates == 1


def test_a_redelivery_while_running_gets_one_reply_and_both_acks():
    c = core()
    c.on_message(T.tasks, task(), "old", 0.0)
    assert c.on_message(T.tasks, task(), "new", 0.1) == []
    done = c.on_finished("t1", 0.2, result=1)
    assert len(published(done)) == 1
    assert [a.token for a in done if isinstance(a, Ack)] == ["old", "new"]


def test_a_handler_past_its_timeout_is_cancelled_and_answered():
    c = core()
    c.on_message(T.tasks, task(), 1, 0.0)
    assert c.next_deadline() == pytest.approx(30.0)
    actions = c.on_tick(30.0)
    assert Cancel("t1") in actions
    (_, reply), = published(actions)
    assert reply["error"]["code"] == "timeout"
    assert c.on_finished("t1", 31.0, result=1) == []     # the late result is ignored


def test_deadline_ms_shortens_the_run_timeout():
    c = core()
    run, = no_journal(c.on_message(T.tasks, task(deadline_ms=2000), 1, 0.0))
    assert run.timeout_s == pytest.approx(2.0)


def test_a_task_queued_past_its_deadline_is_not_run():
    c = core(concurrency=1)
    c.on_message(T.tasks, task("a"), 1, 0.0)
    c.on_message(T.tasks, task("b", deadline_ms=100), 2, 0.0)
    (_, reply), = published(c.on_tick(0.2))
    assert reply["id"] == "b" and reply["error"]["code"] == "deadline_exceeded"


def test_handler_errors_are_passed_to_the_reply():
    c = core()
    c.on_message(T.tasks, task(), 1, 0.0)
    (_, reply), = published(c.on_finished("t1", 0.1, error=ErrorInfo("handler_error", "boom")))
    assert reply["error"] == {"code": "handler_error", "message": "boom"}


def test_a_result_that_is_not_json_becomes_bad_result():
    c = core()
    c.on_message(T.tasks, task(), 1, 0.0)
    (_, reply), = published(c.on_finished("t1", 0.1, result=object()))
    assert reply["error"]["code"] == "bad_result"


def test_unknown_kind_is_answered_with_the_known_kinds():
    (_, reply), = published(core().on_message(T.tasks, task(kind="nope"), 1, 0.0))
    assert reply["error"]["code"] == "unknown_kind" and "echo" in reply["error"]["message"]


@pytest.mark.parametrize("raw", [b"{oops", b"[1]", b'{"id": "x", "kind": "echo"}'])
def test_unanswerable_input_becomes_one_dead_letter(raw):
    actions = core().on_message(T.tasks, raw, 1, 0.0)
    (topic, letter), = published(actions)
    assert topic == T.errors and letter["agent"] == "a1" and letter["error"]["code"]
    assert Ack(1) in actions


def test_oversize_input_is_answered_too_large():
    c = core(limits=Limits(max_payload=200))
    (_, reply), = published(c.on_message(T.tasks, task(kind="echo", args={"b": "x" * 300}), 1, 0.0))
    assert reply["error"]["code"] == "too_large"


def test_after_stop_accepting_new_tasks_are_left_for_redelivery():
    c = core()
    c.stop_accepting()
    assert c.on_message(T.tasks, task(), 1, 0.0) == []


# -- claim dispatch (brokers without shared subscriptions) ---------------------
def claim(key, agent):
    return Claim(key, agent).encode()


def test_an_idle_agent_claims_at_once():
    actions = core("claim").on_message(T.tasks, task(), 1, 0.0)
    (topic, body), = published(actions)
    assert topic == T.claims and body == {"task": "t1", "agent": "a1"}


def test_the_agent_whose_claim_comes_first_runs_the_task():
    mine, other = core("claim", "a1"), core("claim", "a2")
    for c in (mine, other):
        c.on_message(T.tasks, task(), "tok", 0.0)
    first = claim("t1", "a1")
    runs = mine.on_message(T.claims, first, "c", 0.001)
    assert any(isinstance(a, Run) for a in runs)
    drops = other.on_message(T.claims, first, "c", 0.001)
    assert Ack("tok") in drops and not any(isinstance(a, Run) for a in drops)
    # a later claim for the same task changes nothing
    assert mine.on_message(T.claims, claim("t1", "a2"), "c2", 0.002) == [Ack("c2")]


def test_a_claim_seen_before_the_task_still_decides():
    c = core("claim", "a2")
    c.on_message(T.claims, claim("t1", "a1"), "c", 0.0)
    assert c.on_message(T.tasks, task(), "tok", 0.001) == [Ack("tok")]


def test_a_busy_agent_claims_later():
    c = core("claim", concurrency=1)
    c.on_message(T.tasks, task("a"), 1, 0.0)
    c.on_message(T.claims, claim("a", "a1"), 2, 0.0)          # now running a
    assert c.on_message(T.tasks, task("b"), 3, 0.0) == []     # claim is delayed
    assert c.next_deadline() > 0.0
    assert published(c.on_tick(c.next_deadline()))[0][0] == T.claims


def test_garbage_is_claimed_by_digest_so_one_agent_dead_letters_it():
    c = core("claim")
    (_, body), = published(c.on_message(T.tasks, b"{oops", 1, 0.0))
    assert body["task"] == claim_key(None, b"{oops")
    (topic, _), = published(c.on_message(T.claims, claim(body["task"], "a1"), 2, 0.0))
    assert topic == T.errors


def test_forged_claims_are_ignored():
    c = core("claim")
    assert c.on_message(T.claims, b"not a claim", 1, 0.0) == [Ack(1)]
    assert c.counters.bad_claims == 1


def test_once_peers_are_seen_idle_agents_spread_ties_deterministically():
    c = core("claim", "a1")
    c.on_message(T.claims, claim("warmup", "a2"), 0, 0.0)      # a peer exists
    c.on_message(T.tasks, task("x"), 1, 0.0)
    first = c.next_deadline()
    assert 0.0 <= first < 0.001
    again = core("claim", "a1")
    again.on_message(T.claims, claim("warmup", "a2"), 0, 0.0)
    again.on_message(T.tasks, task("x"), 1, 0.0)
    assert again.next_deadline() == first


# -- journal: what a restarted agent gets back ---------------------------------
def test_inline_tasks_are_not_journaled():
    actions = core().on_message(T.tasks, task(kind="echo"), 1, 0.0)
    assert not any(isinstance(a, (Remember, Forget)) for a in actions)


def test_restored_tasks_run_at_once_but_answer_after_winning_their_takeover_claim():
    c = core("claim")
    actions = c.restore(done=[], unfinished=[task("r1")], now=0.0)
    assert [a.task.id for a in actions if isinstance(a, Run)] == ["r1"]
    (topic, body), = published(actions)
    assert topic == T.claims and body == {"task": "r1#t", "agent": "a1"}
    assert c.on_finished("r1", 0.1, result=1) == []           # held until decided
    released = c.on_message(T.claims, claim("r1#t", "a1"), "c", 0.2)
    replies = [b for t, b in published(released) if t == "t/replies/d"]
    assert [r["id"] for r in replies] == ["r1"] and Forget("r1") in released


def test_a_restored_task_a_survivor_took_over_is_dropped_not_answered():
    c = core()
    c.restore(done=[], unfinished=[task("r1")], now=0.0)
    dropped = c.on_message(T.claims, claim("r1#t", "a2"), "c", 0.1)
    assert Cancel("r1") in dropped and Forget("r1") in dropped
    assert not [t for t, _ in published(dropped) if t == "t/replies/d"]
    assert c.on_finished("r1", 0.2, result=1) == []


def test_a_redelivered_task_is_competed_for_not_run_blindly():
    c = core()
    actions = c.on_message(T.tasks, task("x"), 1, 0.0, dup=True)
    (topic, body), = published(actions)
    assert topic == T.claims and body == {"task": "x#t", "agent": "a1"}


def test_after_a_connection_loss_held_tasks_answer_only_if_their_reclaim_wins():
    c = core()
    c.on_message(T.presence("a2"), Presence(agent="a2", state="online", ts=0.0).encode(), None, 0.0)
    c.on_message(T.tasks, task("k"), 1, 0.0)
    (topic, body), = published(c.on_disconnect(0.5))
    assert body == {"task": "k#t", "agent": "a1"}
    assert c.on_finished("k", 0.6, result=1) == []
    released = c.on_message(T.claims, claim("k#t", "a1"), "c", 0.7)
    assert [b["id"] for t, b in published(released) if t == "t/replies/d"] == ["k"]
    assert Ack(1) in released


def test_a_dead_peers_claimed_tasks_are_taken_over_after_the_grace_period():
    c = core("claim", takeover_grace_s=2.0)
    c.on_message(T.tasks, task("w"), 1, 0.0)
    c.on_message(T.claims, claim("w", "a2"), 2, 0.0)            # a2 won it
    offline = Presence(agent="a2", state="offline", ts=42.0).encode()
    c.on_message(T.presence("a2"), offline, None, 1.0)
    assert c.next_deadline() == pytest.approx(3.0)
    claims = [b for t, b in published(c.on_tick(3.0)) if t == T.claims]
    assert {"task": "w#t", "agent": "a1"} in claims
    assert {"task": "rescue:a2:42.0", "agent": "a1"} in claims
    runs = c.on_message(T.claims, claim("w#t", "a1"), 3, 3.1)
    assert any(isinstance(a, Run) and a.key == "w" for a in runs)


def test_a_done_record_means_there_is_nothing_to_take_over():
    c = core("claim", takeover_grace_s=2.0)
    c.on_message(T.tasks, task("w"), 1, 0.0)
    c.on_message(T.claims, claim("w", "a2"), 2, 0.0)
    c.on_message(T.claims, Claim("w", "a2", op="done").encode(), 3, 0.5)
    c.on_message(T.presence("a2"), Presence(agent="a2", state="offline", ts=1.0).encode(), None, 1.0)
    claims = [b for t, b in published(c.on_tick(3.0)) if t == T.claims]
    assert all(not b["task"].startswith("w") for b in claims)


def test_the_rescue_election_winner_rescues():
    c = core(takeover_grace_s=1.0)
    c.on_message(T.presence("a2"), Presence(agent="a2", state="offline", ts=7.0).encode(), None, 0.0)
    c.on_tick(1.0)
    assert Rescue("a2") in c.on_message(T.claims, claim("rescue:a2:7.0", "a1"), "c", 1.1)
    other = core(takeover_grace_s=1.0)
    other.on_message(T.presence("a2"), Presence(agent="a2", state="offline", ts=7.0).encode(), None, 0.0)
    other.on_tick(1.0)
    assert Rescue("a2") not in other.on_message(T.claims, claim("rescue:a2:7.0", "a3"), "c", 1.1)


def test_restored_done_ids_swallow_a_redelivery():
    c = core()
    c.restore(done=["t1"], unfinished=[], now=0.0)
    assert c.on_message(T.tasks, task("t1"), 9, 0.1) == [Ack(9)]
