"""Tier 1 (pure): the agent core's decisions, driven with a fake clock.

No broker, no threads: messages and ticks in, actions out.
"""

import orjson
import pytest

from fogmesh.announcements import Presence
from fogmesh.claims import Claim, claim_key
from fogmesh.edge_agent.actions import Ack, AgentConfig, Cancel, Forget, Publish, Remember, Rescue, Run, StopTaking
from fogmesh.edge_agent.core import AgentCore
from fogmesh.messages import ErrorInfo, Limits, Task
from fogmesh.registry import Registry
from fogmesh.topics import Topics
from tests.coreio import (
    journal_failed,
    on_clock,
    on_connected,
    on_disconnect,
    on_finished,
    on_message,
    on_sent,
    on_tick,
    on_withdrawn,
    restore,
    stop_accepting,
    take_marks,
)

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
    actions = on_message(c, T.tasks, task(), "tok", now=0.0)
    assert [type(a) for a in actions] == [Remember, Run]
    done = on_finished(c, "t1", 0.5, result={"slept_ms": 1})
    assert [type(a) for a in done] == [Publish, Forget, Ack]
    (topic, reply), = published(done)
    assert topic == "t/replies/d"
    assert reply["status"] == "ok" and reply["worker"] == "a1" and reply["tier"] == "local"
    assert reply["ms"]["total"] == pytest.approx(500)


def test_inline_kinds_skip_the_queue():
    c = core(concurrency=1)
    on_message(c, T.tasks, task("slow"), 1, now=0.0)
    actions = on_message(c, T.tasks, task("fast", kind="echo"), 2, now=0.0)
    assert isinstance(actions[0], Run) and actions[0].kind.inline


def test_tasks_beyond_concurrency_wait_in_fifo_order():
    c = core(concurrency=1)
    assert isinstance(no_journal(on_message(c, T.tasks, task("a"), 1, 0.0))[0], Run)
    assert no_journal(on_message(c, T.tasks, task("b"), 2, 0.0)) == []
    after = on_finished(c, "a", 1.0, result=None)
    assert [a.task.id for a in after if isinstance(a, Run)] == ["b"]


def test_a_full_queue_answers_busy():
    c = core(concurrency=1, max_queue=1)
    on_message(c, T.tasks, task("a"), 1, 0.0)
    on_message(c, T.tasks, task("b"), 2, 0.0)
    (_, reply), = published(on_message(c, T.tasks, task("c"), 3, 0.0))
    assert reply["error"]["code"] == "busy"


def test_an_id_submitted_again_after_its_answer_gets_the_same_answer_again():
    c = core()
    on_message(c, T.tasks, task(), 1, 0.0)
    (first,) = [a for a in on_finished(c, "t1", 0.1, result=1) if isinstance(a, Publish)]
    again = on_message(c, T.tasks, task(), 2, 0.2)
    assert again == [Publish(first.topic, first.payload), Ack(2)]
    assert not any(isinstance(a, Run) for a in again)
    assert (c.counters.duplicates, c.counters.answered_again) == (1, 1)


def test_the_brokers_redelivery_of_an_answered_task_is_acked_and_dropped():
    c = core("claim")
    on_message(c, T.tasks, task(), 1, 0.0)
    on_message(c, T.claims, claim("t1", "a1"), 2, 0.0)
    on_finished(c, "t1", 0.1, result=1)
    assert on_message(c, T.tasks, task(), 3, 0.2, dup=True) == [Ack(3)]


def test_after_the_dedup_window_an_id_is_new_again():
    c = core(dedup_ttl_s=60.0)
    on_message(c, T.tasks, task(), 1, 0.0)
    on_finished(c, "t1", 0.1, result=1)
    assert any(isinstance(a, Run) for a in on_message(c, T.tasks, task(), 2, 61.0))


def test_a_restored_answer_is_sent_again_to_a_resubmission():
    from fogmesh.edge_agent.answer_book import StoredAnswer
    c = core()
    restore(c, done=["t1"], unfinished=[], now=0.0, answers={"t1": StoredAnswer("t/replies/d", b'{"id":"t1"}')})
    assert on_message(c, T.tasks, task("t1"), 9, 0.1) == [Publish("t/replies/d", b'{"id":"t1"}'), Ack(9)]


def test_dead_letters_carry_unix_time():
    c = core()
    on_clock(c, wall=1_800_000_000.0, now=10.0)
    (topic, letter), = published(on_message(c, T.tasks, b"{not json", 1, 12.5))
    assert topic == T.errors and letter["ts"] == 1_800_000_002.5


def test_a_redelivery_while_running_gets_one_reply_and_both_acks():
    c = core()
    on_message(c, T.tasks, task(), "old", 0.0)
    assert on_message(c, T.tasks, task(), "new", 0.1) == []
    done = on_finished(c, "t1", 0.2, result=1)
    assert len(published(done)) == 1
    assert [a.token for a in done if isinstance(a, Ack)] == ["old", "new"]


def test_a_handler_past_its_timeout_is_cancelled_and_answered():
    c = core()
    on_message(c, T.tasks, task(), 1, 0.0)
    assert c.next_deadline() == pytest.approx(30.0)
    actions = on_tick(c, 30.0)
    assert Cancel("t1") in actions
    (_, reply), = published(actions)
    assert reply["error"]["code"] == "timeout"
    assert on_finished(c, "t1", 31.0, result=1) == []     # the late result is ignored


def test_deadline_ms_shortens_the_run_timeout():
    c = core()
    run, = no_journal(on_message(c, T.tasks, task(deadline_ms=2000), 1, 0.0))
    assert run.timeout_s == pytest.approx(2.0)


def test_a_task_queued_past_its_deadline_is_not_run():
    c = core(concurrency=1)
    on_message(c, T.tasks, task("a"), 1, 0.0)
    on_message(c, T.tasks, task("b", deadline_ms=100), 2, 0.0)
    (_, reply), = published(on_tick(c, 0.2))
    assert reply["id"] == "b" and reply["error"]["code"] == "deadline_exceeded"


def test_handler_errors_are_passed_to_the_reply():
    c = core()
    on_message(c, T.tasks, task(), 1, 0.0)
    (_, reply), = published(on_finished(c, "t1", 0.1, error=ErrorInfo("handler_error", "boom")))
    assert reply["error"] == {"code": "handler_error", "message": "boom"}


def test_a_result_that_is_not_json_becomes_bad_result():
    c = core()
    on_message(c, T.tasks, task(), 1, 0.0)
    (_, reply), = published(on_finished(c, "t1", 0.1, result=object()))
    assert reply["error"]["code"] == "bad_result"


def test_unknown_kind_is_answered_with_the_known_kinds():
    (_, reply), = published(on_message(core(), T.tasks, task(kind="nope"), 1, 0.0))
    assert reply["error"]["code"] == "unknown_kind" and "echo" in reply["error"]["message"]


@pytest.mark.parametrize("raw", [b"{oops", b"[1]", b'{"id": "x", "kind": "echo"}'])
def test_unanswerable_input_becomes_one_dead_letter(raw):
    actions = on_message(core(), T.tasks, raw, 1, 0.0)
    (topic, letter), = published(actions)
    assert topic == T.errors and letter["agent"] == "a1" and letter["error"]["code"]
    assert Ack(1) in actions


def test_oversize_input_is_answered_too_large():
    c = core(limits=Limits(max_payload=200))
    (_, reply), = published(on_message(c, T.tasks, task(kind="echo", args={"b": "x" * 300}), 1, 0.0))
    assert reply["error"]["code"] == "too_large"


def test_after_stop_accepting_new_tasks_are_left_for_redelivery():
    c = core()
    stop_accepting(c)
    assert on_message(c, T.tasks, task(), 1, 0.0) == []


# -- claim dispatch (brokers without shared subscriptions) ---------------------
def claim(key, agent):
    return Claim(key, agent).encode()


def test_an_idle_agent_claims_at_once():
    actions = on_message(core("claim"), T.tasks, task(), 1, 0.0)
    (topic, body), = published(actions)
    assert topic == T.claims and body == {"task": "t1", "agent": "a1"}


def test_the_agent_whose_claim_comes_first_runs_the_task():
    mine, other = core("claim", "a1"), core("claim", "a2")
    for c in (mine, other):
        on_message(c, T.tasks, task(), "tok", 0.0)
    first = claim("t1", "a1")
    runs = on_message(mine, T.claims, first, "c", 0.001)
    assert any(isinstance(a, Run) for a in runs)
    drops = on_message(other, T.claims, first, "c", 0.001)
    assert Ack("tok") in drops and not any(isinstance(a, Run) for a in drops)
    # a later claim for the same task changes nothing
    assert on_message(mine, T.claims, claim("t1", "a2"), "c2", 0.002) == [Ack("c2")]


def test_a_claim_seen_before_the_task_still_decides():
    c = core("claim", "a2")
    on_message(c, T.claims, claim("t1", "a1"), "c", 0.0)
    assert on_message(c, T.tasks, task(), "tok", 0.001) == [Ack("tok")]


def test_a_busy_agent_claims_later():
    c = core("claim", concurrency=1)
    on_message(c, T.tasks, task("a"), 1, 0.0)
    on_message(c, T.claims, claim("a", "a1"), 2, 0.0)          # now running a
    assert on_message(c, T.tasks, task("b"), 3, 0.0) == []     # claim is delayed
    assert c.next_deadline() > 0.0
    assert published(on_tick(c, c.next_deadline()))[0][0] == T.claims


def test_garbage_is_claimed_by_digest_so_one_agent_dead_letters_it():
    c = core("claim")
    (_, body), = published(on_message(c, T.tasks, b"{oops", 1, 0.0))
    assert body["task"] == claim_key(None, b"{oops")
    (topic, _), = published(on_message(c, T.claims, claim(body["task"], "a1"), 2, 0.0))
    assert topic == T.errors


def test_forged_claims_are_ignored():
    c = core("claim")
    assert on_message(c, T.claims, b"not a claim", 1, 0.0) == [Ack(1)]
    assert c.counters.bad_claims == 1


def test_once_peers_are_seen_idle_agents_spread_ties_deterministically():
    c = core("claim", "a1")
    on_message(c, T.claims, claim("warmup", "a2"), 0, 0.0)      # a peer exists
    on_message(c, T.tasks, task("x"), 1, 0.0)
    first = c.next_deadline()
    assert 0.0 <= first < 0.001
    again = core("claim", "a1")
    on_message(again, T.claims, claim("warmup", "a2"), 0, 0.0)
    on_message(again, T.tasks, task("x"), 1, 0.0)
    assert again.next_deadline() == first


# -- journal: what a restarted agent gets back ---------------------------------
def test_inline_tasks_are_not_journaled():
    actions = on_message(core(), T.tasks, task(kind="echo"), 1, 0.0)
    assert not any(isinstance(a, (Remember, Forget)) for a in actions)


def test_restored_tasks_run_at_once_but_answer_after_winning_their_takeover_claim():
    c = core("claim")
    actions = restore(c, done=[], unfinished=[task("r1")], now=0.0)
    assert [a.task.id for a in actions if isinstance(a, Run)] == ["r1"]
    (topic, body), = published(actions)
    assert topic == T.claims and body == {"task": "r1#t", "agent": "a1"}
    assert on_finished(c, "r1", 0.1, result=1) == []           # held until decided
    released = on_message(c, T.claims, claim("r1#t", "a1"), "c", 0.2)
    replies = [b for t, b in published(released) if t == "t/replies/d"]
    assert [r["id"] for r in replies] == ["r1"] and "r1" in [a.key for a in released if isinstance(a, Forget)]


def test_a_restored_task_a_survivor_took_over_is_dropped_not_answered():
    c = core()
    restore(c, done=[], unfinished=[task("r1")], now=0.0)
    dropped = on_message(c, T.claims, claim("r1#t", "a2"), "c", 0.1)
    assert Cancel("r1") in dropped and Forget("r1") in dropped
    assert not [t for t, _ in published(dropped) if t == "t/replies/d"]
    assert on_finished(c, "r1", 0.2, result=1) == []


def test_a_redelivered_task_is_competed_for_not_run_blindly():
    c = core()
    actions = on_message(c, T.tasks, task("x"), 1, 0.0, dup=True)
    (topic, body), = published(actions)
    assert topic == T.claims and body == {"task": "x#t", "agent": "a1"}


def test_after_a_connection_loss_held_tasks_answer_only_if_their_reclaim_wins():
    c = core()
    on_message(c, T.presence("a2"), Presence(agent="a2", state="online", ts=0.0).encode(), None, 0.0)
    on_message(c, T.tasks, task("k"), 1, 0.0)
    (topic, body), = published(on_disconnect(c, 0.5))
    assert body == {"task": "k#t", "agent": "a1", "epoch": 1}     # peers contest only older claims
    assert on_finished(c, "k", 0.6, result=1) == []
    released = on_message(c, T.claims, claim("k#t", "a1"), "c", 0.7)
    assert [b["id"] for t, b in published(released) if t == "t/replies/d"] == ["k"]
    assert Ack(1) in released


def test_a_dead_peers_claimed_tasks_are_taken_over_after_the_grace_period():
    c = core("claim", takeover_grace_s=2.0)
    on_message(c, T.tasks, task("w"), 1, 0.0)
    on_message(c, T.claims, claim("w", "a2"), 2, 0.0)            # a2 won it
    offline = Presence(agent="a2", state="offline", ts=42.0).encode()
    on_message(c, T.presence("a2"), offline, None, 1.0)
    assert c.next_deadline() == pytest.approx(3.0)
    claims = [b for t, b in published(on_tick(c, 3.0)) if t == T.claims]
    assert {"task": "w#t", "agent": "a1"} in claims
    assert {"task": "rescue:a2:42.0", "agent": "a1"} in claims
    runs = on_message(c, T.claims, claim("w#t", "a1"), 3, 3.1)
    assert any(isinstance(a, Run) and a.key == "w" for a in runs)


def test_a_done_record_means_there_is_nothing_to_take_over():
    c = core("claim", takeover_grace_s=2.0)
    on_message(c, T.tasks, task("w"), 1, 0.0)
    on_message(c, T.claims, claim("w", "a2"), 2, 0.0)
    on_message(c, T.claims, Claim("w", "a2", op="done").encode(), 3, 0.5)
    on_message(c, T.presence("a2"), Presence(agent="a2", state="offline", ts=1.0).encode(), None, 1.0)
    claims = [b for t, b in published(on_tick(c, 3.0)) if t == T.claims]
    assert all(not b["task"].startswith("w") for b in claims)


def test_in_claim_mode_the_done_record_goes_before_the_answer_and_carries_it():
    c = core("claim")
    on_message(c, T.tasks, task("w", kind="echo"), 1, 0.0)
    on_message(c, T.claims, claim("w", "a1"), 2, 0.001)
    out = on_finished(c, "w", 0.002, result={"echo": 1})
    pubs = [a for a in out if isinstance(a, Publish)]
    assert [p.topic for p in pubs] == [T.claims, "t/replies/d"]
    done = Claim.decode(pubs[0].payload)
    assert done.op == "done" and done.reply_to == "t/replies/d"
    assert orjson.loads(done.reply) == orjson.loads(pubs[1].payload)
    assert pubs[1].sent_key == "w"     # the shell reports its PUBACK


def answered_by_a2_then_dead(c, *, sent):
    on_message(c, T.tasks, task("w", kind="echo"), 1, 0.0)
    on_message(c, T.claims, claim("w", "a2"), 2, 0.0)
    answer = Publish("t/replies/d", b'{"id":"w","status":"ok","worker":"a2"}')
    on_message(c, T.claims, Claim("w", "a2", op="done", reply_to=answer.topic,
                                 reply=answer.payload).encode(), 3, 0.1)
    if sent:
        on_message(c, T.claims, Claim("", "a2", op="sent", tasks=("w",)).encode(), 4, 0.2)
    on_message(c, T.presence("a2"), Presence(agent="a2", state="offline", ts=1.0).encode(), None, 1.0)
    return [b for t, b in published(on_tick(c, 3.0)) if t == T.claims]


def test_a_peer_dead_before_its_answer_was_confirmed_has_that_answer_redelivered_not_rerun():
    c = core("claim", takeover_grace_s=2.0)
    assert {"task": "w#t", "agent": "a1"} in answered_by_a2_then_dead(c, sent=False)
    out = on_message(c, T.claims, claim("w#t", "a1"), 5, 3.1)
    assert not any(isinstance(a, Run) for a in out)
    assert ("t/replies/d", {"id": "w", "status": "ok", "worker": "a2"}) in published(out)
    assert c.counters.redelivered == 1


def test_a_confirmed_answer_is_not_redelivered_when_its_agent_dies():
    c = core("claim", takeover_grace_s=2.0)
    claims = answered_by_a2_then_dead(c, sent=True)
    assert all(not b["task"].startswith("w") for b in claims)


def test_a_done_record_that_overtakes_its_task_message_makes_that_message_a_duplicate():
    c = core("claim", takeover_grace_s=2.0)
    on_message(c, T.claims, claim("w", "a2"), 1, 0.0)
    answer = Publish("t/replies/d", b'{"id":"w","status":"ok","worker":"a2"}')
    on_message(c, T.claims, Claim("w", "a2", op="done", reply_to=answer.topic, reply=answer.payload).encode(),
                 2, 0.1)
    assert on_message(c, T.tasks, task("w", kind="echo"), "late", 0.2) == [Ack("late")]
    # a2 dies before confirming: its recorded answer is delivered, the task is not run
    on_message(c, T.presence("a2"), Presence(agent="a2", state="offline", ts=1.0).encode(), None, 1.0)
    assert {"task": "w#t", "agent": "a1"} in [b for t, b in published(on_tick(c, 3.0)) if t == T.claims]
    out = on_message(c, T.claims, claim("w#t", "a1"), 3, 3.1)
    assert not any(isinstance(a, Run) for a in out)
    assert ("t/replies/d", {"id": "w", "status": "ok", "worker": "a2"}) in published(out)


def back_after_its_will(*claims, presence_epoch=1):
    """a1 sees a2's will, then ``claims`` (key, epoch) by a2, then a2 online
    (in epoch 1, or the ``presence_epoch`` that presence says). What a1
    claims from then on (a claim of a later epoch shows a2 back at once)."""
    c = core("claim", takeover_grace_s=2.0)
    on_message(c, T.tasks, task("old", kind="echo"), 1, 0.0)
    on_message(c, T.claims, claim("old", "a2"), 2, 0.0)
    on_message(c, T.presence("a2"), Presence(agent="a2", state="offline", ts=1.0).encode(), None, 1.0)
    after = []
    for i, (key, epoch) in enumerate(claims):
        after += on_message(c, T.tasks, task(key, kind="echo"), f"t{i}", 1.1)
        after += on_message(c, T.claims, Claim(key, "a2", epoch=epoch).encode(), f"c{i}", 1.2)
    after += on_message(c, T.presence("a2"), Presence(agent="a2", state="online", ts=1.3,
                                                     epoch=presence_epoch).encode(), None, 1.3)
    return [b["task"] for t, b in published(after + on_tick(c, 1.3)) if t == T.claims and b["task"].endswith("#t")]


def test_a_peer_back_after_its_will_keeps_what_it_won_in_its_new_epoch():
    # The chaos run that doubled a task: a2's connection is cut, it reconnects at
    # once and wins "new" on the new connection; a1, behind on its messages, sees
    # the will, that win, then a2 online again. Contesting "new" (a2 holds it and
    # does not compete for it) would run it twice.
    assert back_after_its_will(("new", 1)) == ["old#t"]


def test_a_presence_sent_before_the_cut_but_seen_after_the_will_keeps_new_epoch_wins():
    # The chaos run that doubled chaos-298 (embedded broker, claims): a2's link is
    # cut, a2 reconnects at once and wins "new" in epoch 1; a1, behind on its
    # messages, sees the will, that win, then a presence a2 had sent *before*
    # the cut (epoch 0, so none said). Taken at its word, it contested "new".
    assert back_after_its_will(("new", 1), presence_epoch=None) == ["old#t"]


def test_a_peer_back_after_its_will_without_an_epoch_has_everything_contested():
    assert back_after_its_will(("resent", None), presence_epoch=None) == ["old#t", "resent#t"]


def test_a_peer_back_after_its_will_has_its_resent_old_claims_contested():
    # ... but a claim a2 made before the cut may come after the will too (its
    # client resends it on reconnect), and a2 gave it up when the link dropped.
    assert back_after_its_will(("resent", None)) == ["old#t", "resent#t"]


def test_only_losing_the_control_connection_sends_claims_again_and_starts_an_epoch():
    c = core("claim")
    on_message(c, T.presence("a2"), Presence(agent="a2", state="online", ts=0.0).encode(), None, 0.0)
    on_message(c, T.tasks, task("k", kind="echo"), 1, 0.0)
    assert on_disconnect(c, 0.1, control=False) == [] and c.held == 1 and c.epoch == 0
    (topic, body), = published(on_disconnect(c, 0.2))       # the claim may be lost with the link
    assert body == {"task": "k", "agent": "a1", "epoch": 1} and c.held == 1 and c.epoch == 1
    (topic, body), = published(on_message(c, T.tasks, task("k2", kind="echo"), 2, 0.3) + on_tick(c, 5.0))
    assert body == {"task": "k2", "agent": "a1", "epoch": 1}


def contesting_w(c):
    """a1 holds a copy of w (won by a2) and contests it, a2 having looked dead..."""
    on_message(c, T.tasks, task("w", kind="echo"), 1, 0.0)
    on_message(c, T.claims, claim("w", "a2"), 2, 0.0)
    on_message(c, T.presence("a2"), Presence(agent="a2", state="offline", ts=1.0).encode(), None, 1.0)
    assert {"task": "w#t", "agent": "a1"} in [b for t, b in published(on_tick(c, 3.0)) if t == T.claims]
    # ... and then sees a2's done record for it, which carries a2's answer
    on_message(c, T.claims, Claim("w", "a2", op="done", reply_to="t/replies/d",
                                 reply=b'{"id":"w","status":"ok","worker":"a2"}').encode(), 3, 3.05)


def test_a_done_record_seen_while_contesting_means_redeliver_that_answer_not_run_again():
    c = core("claim", takeover_grace_s=2.0)
    contesting_w(c)
    out = on_message(c, T.claims, claim("w#t", "a1"), 4, 3.1)      # the win comes after
    assert not any(isinstance(a, Run) for a in out)
    assert ("t/replies/d", {"id": "w", "status": "ok", "worker": "a2"}) in published(out)


def test_a_confirmed_answer_seen_while_contesting_ends_the_contest():
    c = core("claim", takeover_grace_s=2.0)
    contesting_w(c)
    on_message(c, T.claims, Claim("", "a2", op="sent", tasks=("w",)).encode(), 4, 3.06)
    out = on_message(c, T.claims, claim("w#t", "a1"), 5, 3.1)
    assert out == [Ack(5)] and c.held == 0


def test_confirmations_ride_on_the_next_done_record():
    c = core("claim")
    on_sent(c, ["a"], 0.0)
    on_message(c, T.tasks, task("w", kind="echo"), 1, 0.0)
    on_message(c, T.claims, claim("w", "a1"), 2, 0.001)
    done = [Claim.decode(p.payload) for p in on_finished(c, "w", 0.002, result={})
            if isinstance(p, Publish) and p.topic == T.claims]
    assert done[0].tasks == ("a",) and c.next_deadline() is None


def test_confirmed_answers_are_reported_in_batches():
    c = core("claim")
    assert on_sent(c, ["a", "b"], 0.0) == []
    assert c.next_deadline() == pytest.approx(0.1)
    (topic, body), = published(on_tick(c, 0.1))
    assert topic == T.claims and body == {"task": "", "agent": "a1", "op": "sent", "tasks": ["a", "b"]}
    assert c.next_deadline() is None
    assert len(published(on_sent(c, [f"k{i}" for i in range(64)], 0.3))) == 1


def withdrawn_answer(c):
    """a1 answered "w" (a1 won it among peers), then the connection dropped
    before the broker confirmed the answer: the shell hands both messages back."""
    on_message(c, T.presence("a2"), Presence(agent="a2", state="online", ts=0.0).encode(), None, 0.0)
    on_message(c, T.tasks, task("w", kind="echo"), 1, 0.0)
    on_message(c, T.claims, claim("w", "a1"), 2, 0.001)
    return [a for a in on_finished(c, "w", 0.002, result={}) if isinstance(a, Publish)]


def test_answers_withdrawn_by_a_dropped_connection_go_out_again_only_after_winning_the_takeover():
    c = core("claim")
    messages = withdrawn_answer(c)
    assert all(m.fence_key == "w" for m in messages)
    out = on_withdrawn(c, messages, 0.5)
    assert published(out) == [(T.claims, {"task": "w#t", "agent": "a1"})]
    again = on_message(c, T.claims, claim("w#t", "a1"), 3, 1.0)
    assert [p.topic for p in again if isinstance(p, Publish)] == [T.claims, "t/replies/d"]
    assert c.held == 0


def test_a_withdrawn_answer_that_its_own_echoed_record_reports_out_is_not_sent_again():
    # The broker had the answer (and the "sent" record after it, same write);
    # only the PUBACK was lost with the link. Sent again, the device got it twice.
    c = core("claim")
    on_withdrawn(c, withdrawn_answer(c), 0.5)
    out = on_message(c, T.claims, Claim("", "a1", op="sent", tasks=("w",)).encode(), 3, 0.8)
    assert published(out) == [] and c.held == 0
    assert on_message(c, T.claims, claim("w#t", "a1"), 4, 1.0) == [Ack(4)]       # the fence: nothing left
    resubmitted = on_message(c, T.tasks, task("w", kind="echo"), 5, 2.0)
    assert [t for t, b in published(resubmitted)] == ["t/replies/d"]            # the same answer, kept


def test_a_withdrawn_answer_is_dropped_when_a_survivor_won_the_takeover():
    c = core("claim")
    on_withdrawn(c, withdrawn_answer(c), 0.5)
    lost = on_message(c, T.claims, claim("w#t", "a2"), 3, 1.0)
    assert not any(isinstance(a, Publish) for a in lost) and c.held == 0


def test_alone_a_withdrawn_answer_is_simply_sent_again():
    c = core("claim")
    on_message(c, T.tasks, task("w", kind="echo"), 1, 0.0)
    on_message(c, T.claims, claim("w", "a1"), 2, 0.001)
    messages = [a for a in on_finished(c, "w", 0.002, result={}) if isinstance(a, Publish)]
    again = on_withdrawn(c, messages, 0.5)
    assert [p.topic for p in again] == [T.claims, "t/replies/d"]


def test_in_shared_dispatch_a_withdrawn_answer_waits_for_its_task_to_come_back():
    c = core("shared")
    on_message(c, T.tasks, task("s", kind="echo"), 1, 0.0)
    (reply,) = [a for a in on_finished(c, "s", 0.001, result={}) if isinstance(a, Publish)]
    assert reply.fence_key == "s"
    assert on_withdrawn(c, [reply], 0.5) == []
    again = on_message(c, T.tasks, task("s", kind="echo"), 2, 1.0, dup=True)
    assert [a for a in again if isinstance(a, Publish)] == [Publish(reply.topic, reply.payload)]


def test_in_shared_dispatch_a_withdrawn_answer_goes_out_again_when_the_broker_kept_no_session():
    # A broker restarted without its sessions (the embedded broker) never gives the task back.
    c = core("shared")
    on_message(c, T.tasks, task("s", kind="echo"), 1, 0.0)
    (reply,) = [a for a in on_finished(c, "s", 0.001, result={}) if isinstance(a, Publish)]
    on_withdrawn(c, [reply], 0.5)
    assert on_connected(c, 1.0, control=True, session_kept=False) == []       # the task connection's business
    again = on_connected(c, 1.0, control=False, session_kept=False)
    assert again == [Publish(reply.topic, reply.payload, fence_key="s")]      # withdrawn again if cut again
    assert on_connected(c, 2.0, control=False, session_kept=False) == []      # once


def test_in_shared_dispatch_a_withdrawn_answer_is_not_sent_blindly_when_the_broker_kept_the_session():
    c = core("shared")
    on_message(c, T.tasks, task("s", kind="echo"), 1, 0.0)
    (reply,) = [a for a in on_finished(c, "s", 0.001, result={}) if isinstance(a, Publish)]
    on_withdrawn(c, [reply], 0.5)
    assert on_connected(c, 1.0, control=False, session_kept=True) == []       # the broker gives the task back


def test_a_record_whose_answer_got_through_is_sent_again_for_peers():
    c = core("claim")
    done, reply = withdrawn_answer(c)
    assert on_withdrawn(c, [done], 0.5) == [Publish(done.topic, done.payload)]


def test_the_rescue_election_winner_rescues():
    c = core(takeover_grace_s=1.0)
    on_message(c, T.presence("a2"), Presence(agent="a2", state="offline", ts=7.0).encode(), None, 0.0)
    on_tick(c, 1.0)
    assert Rescue("a2") in on_message(c, T.claims, claim("rescue:a2:7.0", "a1"), "c", 1.1)
    other = core(takeover_grace_s=1.0)
    on_message(other, T.presence("a2"), Presence(agent="a2", state="offline", ts=7.0).encode(), None, 0.0)
    on_tick(other, 1.0)
    assert Rescue("a2") not in on_message(other, T.claims, claim("rescue:a2:7.0", "a3"), "c", 1.1)


def test_restored_done_ids_swallow_a_redelivery():
    c = core()
    restore(c, done=["t1"], unfinished=[], now=0.0)
    assert on_message(c, T.tasks, task("t1"), 9, 0.1) == [Ack(9)]


# -- per-device task topics (what a broker ACL ties to a login) ----------------------------
def test_a_task_on_its_device_topic_runs_and_is_stamped_with_the_device():
    c = core()
    payload = Task(id="d1", kind="echo", reply_to="t/replies/cam-1", args={}).encode()
    actions = on_message(c, T.device_tasks("cam-1"), payload, "tok", 0.0)
    (run,) = [a for a in actions if isinstance(a, Run)]
    assert run.task.device == "cam-1"


@pytest.mark.parametrize("reply_to", ["t/replies/cam-2", "t/replies/cam-10", "t/other"])
def test_a_device_cannot_have_agents_reply_into_another_devices_topic(reply_to):
    c = core()
    payload = Task(id="d1", kind="echo", reply_to=reply_to, args={}).encode()
    out = on_message(c, T.device_tasks("cam-1"), payload, "tok", 0.0)
    (topic, letter), = published(out)
    assert topic == T.errors and "must reply to t/replies/cam-1" in letter["error"]["message"]


def won_and_answered(c, task_id, now):
    on_message(c, T.tasks, task(task_id, kind="echo"), task_id, now)
    on_message(c, T.claims, claim(task_id, "a1"), "c", now)
    return on_finished(c, task_id, now, result={})


def test_an_answer_is_reported_out_by_the_next_record_after_it_not_by_its_puback():
    c = core("claim")
    won_and_answered(c, "w1", 0.0)
    (mark,) = take_marks(c)
    assert Claim.decode(mark.payload).op == "sent" and Claim.decode(mark.payload).tasks == ("w1",)
    assert take_marks(c) == []
    assert on_sent(c, ["w1"], 0.1) == [] and c.next_deadline() is None   # already said: no second report


def test_answers_ride_on_the_next_done_record_when_there_is_no_pause():
    c = core("claim")
    won_and_answered(c, "w1", 0.0)
    out = won_and_answered(c, "w2", 0.0)
    (done,) = [Claim.decode(p.payload) for p in out if isinstance(p, Publish) and p.topic == T.claims]
    assert done.op == "done" and done.task == "w2" and done.tasks == ("w1",)
    assert Claim.decode(take_marks(c)[0].payload).tasks == ("w2",)


def test_a_mark_dropped_with_its_connection_is_not_sent_again():
    c = core("claim")
    on_message(c, T.presence("a2"), Presence(agent="a2", state="online", ts=0.0).encode(), None, 0.0)
    won_and_answered(c, "w1", 0.0)
    marks = take_marks(c)
    assert all(m.fence_key for m in marks)
    assert on_withdrawn(c, marks, 0.5) == []


def test_an_answer_that_lost_its_takeover_is_never_sent_again():
    c = core("claim")
    on_withdrawn(c, withdrawn_answer(c), 0.5)
    on_message(c, T.claims, claim("w#t", "a2"), 3, 1.0)                  # a2 won it back and runs it
    again = on_message(c, T.tasks, task("w", kind="echo", attempt=2), 4, 2.0)
    assert not any(isinstance(a, Publish) and a.topic == "t/replies/d" for a in again)


def test_in_shared_dispatch_a_cut_off_answer_is_void_once_a_peer_competes_for_the_task():
    c = core("shared")
    on_message(c, T.tasks, task("s", kind="echo"), 1, 0.0)
    (reply,) = [a for a in on_finished(c, "s", 0.001, result={}) if isinstance(a, Publish)]
    on_withdrawn(c, [reply], 0.5)
    on_message(c, T.claims, claim("s#t", "a2"), 2, 0.6)                   # the broker gave it to a2
    again = on_message(c, T.tasks, task("s", kind="echo"), 3, 1.0, dup=True)
    assert not any(isinstance(a, Publish) for a in again)


def test_a_peer_answering_a_task_this_agent_saw_itself_win_stops_the_larger_id_taking_tasks():
    from fogmesh.edge_agent.actions import StopTaking
    done_by = lambda who: Claim("x", who, op="done", reply_to="t/replies/d", reply=b'{"id":"x"}').encode()  # noqa: E731
    small, large = core("claim", agent="a1"), core("claim", agent="a2")
    for c in (small, large):
        on_message(c, T.tasks, task("x", kind="echo"), 1, 0.0)
        on_message(c, T.claims, claim("x", c.config.agent_id), 2, 0.001)   # each saw its own claim first
    assert not any(isinstance(a, StopTaking) for a in on_message(small, T.claims, done_by("a2"), 3, 0.01))
    stop = [a for a in on_message(large, T.claims, done_by("a1"), 3, 0.01) if isinstance(a, StopTaking)]
    assert stop and "different orders" in stop[0].reason and large.degraded
    assert small.counters.order_divergences == large.counters.order_divergences == 1


def test_a_takeover_winner_answering_is_not_a_divergence():
    c = core("claim", agent="a1")
    on_message(c, T.tasks, task("x", kind="echo"), 1, 0.0)
    on_message(c, T.claims, claim("x", "a3"), 2, 0.001)
    on_message(c, T.claims, claim("x#t", "a2"), 3, 0.002)
    on_message(c, T.claims, Claim("x", "a2", op="done", reply_to="t/replies/d", reply=b'{"id":"x"}').encode(), 4, 0.01)
    assert c.counters.order_divergences == 0


def test_a_task_won_back_from_a_peer_is_dropped_when_that_peer_reports_its_answer_out():
    """a2 was only cut off: it answered w after a1 had won w's takeover and
    started it. a2's "sent" record ends a1's copy: one answer, not two."""
    c = core("claim", takeover_grace_s=2.0)
    on_message(c, T.tasks, task("w", kind="sleep"), 1, 0.0)
    on_message(c, T.claims, claim("w", "a2"), 2, 0.0)
    on_message(c, T.presence("a2"), Presence(agent="a2", state="offline", ts=1.0).encode(), None, 1.0)
    on_tick(c, 3.0)                                                   # a1 contests w#t ...
    assert any(isinstance(a, Run) for a in on_message(c, T.claims, claim("w#t", "a1"), 3, 3.1))  # ... wins, runs it
    out = on_message(c, T.claims, Claim("", "a2", op="sent", tasks=("w",)).encode(), 4, 3.2)
    assert Cancel("w") in out and c.held == 0
    assert on_finished(c, "w", 3.3, result="late") == []              # no second answer


def cut_while_claiming(c, key="k"):
    """a1 (a2 alive beside it) claims ``key``, then its connection drops before
    the claims decide it; it is back in epoch 1, still competing."""
    on_message(c, T.presence("a2"), Presence(agent="a2", state="online", ts=0.0).encode(), None, 0.0)
    on_message(c, T.tasks, task(key, kind="echo"), 1, 0.0)
    on_disconnect(c, 0.1)
    on_connected(c, 0.2)


def test_a_task_won_by_a_claim_made_before_a_cut_is_claimed_again_under_its_takeover_key():
    # The chaos run on mosquitto that answered twice: a1's claim from before the
    # cut won; a2, seeing a1's will, contested k#t and ran it; a1 ran it too.
    c = core("claim")
    cut_while_claiming(c)
    out = on_message(c, T.claims, claim("k", "a1"), "c1", 0.3)
    assert not any(isinstance(a, Run) for a in out)
    assert [b["task"] for t, b in published(out) if t == T.claims] == ["k#t"]
    assert on_message(c, T.tasks, task("k", kind="echo"), 2, 0.4, dup=True) == []   # the redelivery: held


def test_a_task_won_across_a_cut_is_dropped_when_a_survivor_won_its_takeover():
    c = core("claim")
    cut_while_claiming(c)
    on_message(c, T.claims, claim("k", "a1"), "c1", 0.3)
    on_message(c, T.tasks, task("k", kind="echo"), 2, 0.4, dup=True)
    out = on_message(c, T.claims, claim("k#t", "a2"), "c2", 0.5)
    assert published(out) == [] and Ack(1) in out and Ack(2) in out and c.held == 0


def test_a_survivors_takeover_seen_before_the_redelivery_makes_it_a_duplicate():
    c = core("claim")
    cut_while_claiming(c)
    on_message(c, T.claims, claim("k", "a1"), "c1", 0.3)
    on_message(c, T.claims, claim("k#t", "a2"), "c2", 0.35)
    out = on_message(c, T.tasks, task("k", kind="echo"), 2, 0.4, dup=True)
    assert out == [Ack(2)] and c.held == 0


def test_a_task_claimed_before_a_cut_and_won_after_it_is_still_claimed_again():
    # amqtt may drop the echo of the claim made before the cut: this agent then
    # sees its new claim win, peers its old one.
    c = core("claim")
    cut_while_claiming(c)
    on_message(c, T.tasks, task("k", kind="echo"), 2, 0.3, dup=True)
    out = on_message(c, T.claims, Claim("k", "a1", epoch=1).encode(), "c1", 0.4)
    assert [b["task"] for t, b in published(out) if t == T.claims] == ["k#t"]
    won = on_message(c, T.claims, Claim("k#t", "a1", epoch=1).encode(), "c2", 0.5)
    assert [a.key for a in won if isinstance(a, Run)] == ["k"]


def test_a_task_first_claimed_after_a_cut_runs_without_a_second_claim():
    c = core("claim")
    cut_while_claiming(c)
    on_message(c, T.tasks, task("n", kind="echo"), 2, 0.3)
    out = on_message(c, T.claims, Claim("n", "a1", epoch=1).encode(), "c1", 0.4)
    assert [a.key for a in out if isinstance(a, Run)] == ["n"]


def test_a_takeover_winner_that_dies_in_turn_is_taken_over_in_the_next_round():
    c = core("claim", takeover_grace_s=2.0)
    on_message(c, T.presence("a3"), Presence(agent="a3", state="online", ts=0.0).encode(), None, 0.0)
    on_message(c, T.tasks, task("w"), 1, 0.0)
    on_message(c, T.claims, claim("w", "a2"), 2, 0.0)                 # a2 won it ...
    on_message(c, T.presence("a2"), Presence(agent="a2", state="offline", ts=1.0).encode(), None, 1.0)
    on_tick(c, 3.5)                                                   # ... died; a1 contests w#t
    on_message(c, T.claims, claim("w#t", "a3"), 3, 3.6)               # a3 wins it ...
    on_message(c, T.presence("a3"), Presence(agent="a3", state="offline", ts=4.0).encode(), None, 4.0)
    contest = published(on_tick(c, 7.0))                               # ... and dies too
    assert ("t/claims", {"task": "w#t#t", "agent": "a1"}) in contest
    assert any(isinstance(a, Run) for a in on_message(c, T.claims, claim("w#t#t", "a1"), 4, 7.1))


def test_a_task_first_seen_after_its_winner_died_is_taken_over():
    # a1 saw a2 win w, never w itself (its copy was in flight when a2 died);
    # the device's retry of w must not be swallowed as a2's.
    c = core("claim", takeover_grace_s=2.0)
    on_message(c, T.presence("a3"), Presence(agent="a3", state="online", ts=0.0).encode(), None, 0.0)
    on_message(c, T.claims, claim("w", "a2"), 2, 0.0)
    on_message(c, T.presence("a2"), Presence(agent="a2", state="offline", ts=1.0).encode(), None, 1.0)
    on_tick(c, 3.5)
    out = on_message(c, T.tasks, task("w", attempt=2), 5, 10.0)
    assert [b["task"] for t, b in published(out) if t == T.claims] == ["w#t"]


def test_a_holder_cut_off_twice_claims_the_round_after_the_one_it_won():
    c = core("claim")
    cut_while_claiming(c)
    on_message(c, T.claims, claim("k", "a1"), "c1", 0.3)
    on_message(c, T.tasks, task("k", kind="sleep"), 2, 0.4, dup=True)
    on_message(c, T.claims, Claim("k#t", "a1", epoch=1).encode(), "c2", 0.5)             # won back: runs it
    (topic, body), = published(on_disconnect(c, 0.6))
    assert body == {"task": "k#t#t", "agent": "a1", "epoch": 2}


def test_a_peer_winning_a_later_takeover_round_ends_this_agents_copy():
    # The loaded chaos run on the embedded broker: a2 missed a1's claim around
    # its cut and took its own for the first; it claimed k#t again and won it,
    # while a1 ran k as the landing's winner. One of them must stop: a1.
    c = core("claim")
    on_message(c, T.presence("a2"), Presence(agent="a2", state="online", ts=0.0).encode(), None, 0.0)
    on_message(c, T.tasks, task("k", kind="sleep"), 1, 0.0)
    assert any(isinstance(a, Run) for a in on_message(c, T.claims, claim("k", "a1"), 2, 0.1))
    out = on_message(c, T.claims, Claim("k#t", "a2", epoch=1).encode(), 3, 0.2)
    assert Cancel("k") in out and Ack(1) in out and c.held == 0
    assert on_finished(c, "k", 0.3, result="late") == []


def test_a_landing_won_after_a_peer_won_a_takeover_round_is_lost():
    c = core("claim")
    on_message(c, T.presence("a2"), Presence(agent="a2", state="online", ts=0.0).encode(), None, 0.0)
    on_message(c, T.tasks, task("k", kind="sleep"), 1, 0.0)
    on_message(c, T.claims, Claim("k#t", "a2", epoch=1).encode(), 2, 0.1)
    out = on_message(c, T.claims, claim("k", "a1"), 3, 0.2)
    assert not any(isinstance(a, Run) for a in out) and c.held == 0


def test_a_task_claimed_across_a_cut_and_answered_by_a_peer_is_no_sign_of_a_disordered_broker():
    # a2 (the larger id) missed a1's claim for k around its cut: a message lost
    # with the connection, not a broker that orders claims differently.
    c = core("claim", agent="a2")
    on_message(c, T.presence("a1"), Presence(agent="a1", state="online", ts=0.0).encode(), None, 0.0)
    on_message(c, T.tasks, task("k", kind="echo"), 1, 0.0)
    on_disconnect(c, 0.1)
    on_connected(c, 0.2)
    on_message(c, T.claims, claim("k", "a2"), "c1", 0.3)
    done = Claim("k", "a1", op="done", reply_to="t/replies/d", reply=b'{"id":"k","status":"ok"}').encode()
    out = on_message(c, T.claims, done, "c2", 0.4)
    assert not any(isinstance(a, StopTaking) for a in out) and c.degraded is None


def test_a_resubmission_gets_the_same_answer_with_the_correlation_data_of_the_new_request():
    c = core()
    first = Task(id="r", kind="echo", reply_to="t/replies/d", args={}, correlation="AAE=").encode()
    assert any(isinstance(a, Run) for a in on_message(c, T.tasks, first, 1, 0.0))
    on_finished(c, "r", 0.1, result={})
    again = Task(id="r", kind="echo", reply_to="t/replies/d", args={}, correlation="AAI=").encode()
    (reply,) = [a for a in on_message(c, T.tasks, again, 2, 0.2) if isinstance(a, Publish)]
    assert reply.properties.correlation_data == b"\x00\x02"


def test_a_fence_won_by_a_claim_from_before_the_epoch_is_claimed_again_in_the_next_round():
    # The chaos run on mosquitto that answered twice: a1's task connection dropped
    # first, so its fence claim k#t carried the old epoch; then its control
    # connection dropped too. a2, seeing a1 back in epoch 1, contested k#t#t and
    # ran k; a1 had won k#t and answered as well.
    c = core("claim")
    on_message(c, T.presence("a2"), Presence(agent="a2", state="online", ts=0.0).encode(), None, 0.0)
    on_message(c, T.tasks, task("k", kind="sleep"), 1, 0.0)
    on_message(c, T.claims, claim("k", "a1"), 2, 0.05)                # won: runs
    (_, fence), = published(on_disconnect(c, 0.1, control=False))
    assert fence == {"task": "k#t", "agent": "a1"}                   # epoch 0 still
    on_disconnect(c, 0.11)
    on_connected(c, 0.2)
    assert on_finished(c, "k", 0.25, result=1) == []                  # held: fenced
    out = on_message(c, T.claims, claim("k#t", "a1"), 3, 0.3)
    assert [b for t, b in published(out)] == [{"task": "k#t#t", "agent": "a1", "epoch": 1}]
    dropped = on_message(c, T.claims, Claim("k#t#t", "a2", epoch=0).encode(), 4, 0.4)
    assert [t for t, b in published(dropped)] == [] and c.held == 0


def test_a_peer_back_that_won_its_answers_takeover_in_its_new_epoch_is_not_contested_again():
    # a2 answered w (its "done" record came), was cut, and fenced the answer
    # with w#t in epoch 1; a1, seeing it back, contested w#t#t and re-delivered
    # the recorded answer while a2 released it: the device got it twice.
    c = core("claim", takeover_grace_s=2.0)
    on_message(c, T.tasks, task("w", kind="echo"), 1, 0.0)
    on_message(c, T.claims, claim("w", "a2"), 2, 0.0)
    done = Claim("w", "a2", op="done", reply_to="t/replies/d", reply=b'{"id":"w","status":"ok"}').encode()
    on_message(c, T.claims, done, 3, 0.1)
    on_message(c, T.presence("a2"), Presence(agent="a2", state="offline", ts=1.0).encode(), None, 0.2)
    on_message(c, T.claims, Claim("w#t", "a2", epoch=1).encode(), 4, 0.3)
    back = on_message(c, T.presence("a2"), Presence(agent="a2", state="online", ts=0.4, epoch=1).encode(), None, 0.4)
    assert [b["task"] for t, b in published(back + on_tick(c, 0.5)) if t == T.claims] == []


def test_a_degraded_agent_with_no_live_peer_answers_new_tasks_with_a_degraded_error():
    c = core("shared")
    journal_failed(c, "cannot write the journal: disk full")
    assert c.last_to_answer(0.0)
    out = on_message(c, T.tasks, task("d1", kind="echo"), 1, 0.0)
    ((topic, body),) = published(out)
    assert topic == "t/replies/d" and body["status"] == "error" and body["error"]["code"] == "degraded"
    assert "disk full" in body["error"]["message"] and Ack(1) in out
    assert not any(isinstance(a, Run) for a in out)


def test_a_degraded_agent_leaves_new_tasks_to_a_live_peer():
    c = core("shared")
    on_message(c, T.presence("a2"), Presence(agent="a2", state="online", ts=0.0).encode(), None, 0.0)
    journal_failed(c, "cannot write the journal: disk full")
    assert not c.last_to_answer(0.1)              # the shell unsubscribes; what still comes runs
    on_message(c, T.presence("a2"), Presence(agent="a2", state="offline", ts=0.0).encode(), None, 0.2)
    assert c.last_to_answer(0.3)                  # its peer went: it answers again, with the error


def test_soon_after_its_task_connection_comes_back_an_agent_asks_its_peers_about_every_task():
    # A device's own QoS 1 resend after a broker restart carries no attempt; the first copy may have run on a peer.
    c = core("shared")
    on_message(c, T.presence("a2"), Presence(agent="a2", state="online", ts=0.0).encode(), None, 0.0)
    on_connected(c, 0.0, control=False)                 # the first connection: nothing to ask about
    first = on_message(c, T.tasks, task("n1", kind="echo"), 1, 0.1)
    assert [b for t, b in published(first) if t == T.claims] == []
    on_connected(c, 5.0, control=False)                 # back after a drop
    asked = on_message(c, T.tasks, task("n2", kind="echo"), 2, 5.1)
    assert published(asked) == [(T.claims, {"task": "n2", "agent": "a1", "op": "ask"})]
    for now in (8.0, 11.0, 14.0):                       # its dispatcher steps on meanwhile (not a freeze)
        on_tick(c, now)
    later = on_message(c, T.tasks, task("n3", kind="echo"), 3, 5.0 + 10.5)
    assert [b for t, b in published(later) if t == T.claims] == []


def test_tasks_whose_queue_connection_closed_are_let_go_unanswered_and_their_runs_stopped():
    from tests.coreio import on_queue_lost
    c = core(concurrency=1)
    on_message(c, T.tasks, task("t1", args={"ms": 50}), ("old", 1), 0.0, queue_connection=1)      # runs
    on_message(c, T.tasks, task("t2", args={"ms": 50}), ("old", 2), 0.0, queue_connection=1)      # queued
    on_message(c, T.tasks, task("t3", args={"ms": 50}), ("new", 1), 0.0, queue_connection=2)      # the next one's
    actions = on_queue_lost(c, 1, 1.0)
    assert Cancel("t1") in actions and published(actions) == []
    assert {e.key for e in c.entries} == {"t3"}
    assert [a for a in actions if isinstance(a, Run)][0].key == "t3"      # the freed worker takes the next


def test_a_task_held_also_through_a_message_still_ours_is_kept():
    from tests.coreio import on_queue_lost
    c = core(concurrency=1)
    on_message(c, T.tasks, task("t1", args={"ms": 50}), ("new", 1), 0.0, queue_connection=2)
    assert on_queue_lost(c, 1, 1.0) == []
    assert {e.key for e in c.entries} == {"t1"}
