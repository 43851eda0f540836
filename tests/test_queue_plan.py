"""Tier 1 (pure): the task queue's decisions under ``amqp`` dispatch
(fogmesh/queue_plan.py): which node of the failover list next and when, what
goes into one transaction, what becomes of an answer whose task was taken on
a connection that has closed, what a failed commit means. No broker, no
clock but the one passed in."""

from __future__ import annotations

import pytest

from fogmesh.edge_agent.actions import Publish
from fogmesh.edge_agent.events import Confirmed, Withdrawn
from fogmesh.edge_agent.queue_intake import settled
from fogmesh.queue_plan import NodeCycle, Settle, Settles, consumer_move, no_node_reason, where
from fogmesh.task_queue import QueuedTask, queue_name, routing_keys


def task(tag: int, connection: int) -> QueuedTask:
    return QueuedTask("fog/v1/tasks", b"{}", False, tag, connection)


# -- which node next, and when ---------------------------------------------------------------

def test_the_first_node_is_tried_at_once_and_a_lost_one_gives_way_to_the_next_soon():
    cycle = NodeCycle(3, retry_s=0.5, step_s=0.05)
    assert cycle.next() == (0, float("-inf"))
    cycle.connected()
    cycle.failed(10.0)                        # node 0 stopped: its agent moves
    assert cycle.next() == (1, pytest.approx(10.05))


def test_a_round_of_the_list_with_no_node_waits_the_backoff_then_starts_again():
    cycle = NodeCycle(3, retry_s=0.5, step_s=0.05)
    cycle.failed(0.0)
    cycle.failed(0.1)
    assert cycle.next() == (2, pytest.approx(0.15)) and not cycle.round_failed
    cycle.failed(0.2)                         # every node refused: the whole cluster is down
    assert cycle.next() == (0, pytest.approx(0.7)) and cycle.round_failed
    cycle.failed(0.7)
    assert cycle.next() == (1, pytest.approx(0.75))


def test_a_connection_that_took_the_queue_ends_the_run_of_failures():
    cycle = NodeCycle(2, retry_s=1.0, step_s=0.0)
    cycle.failed(0.0)                         # node 0 down
    cycle.connected()                         # node 1 took it
    cycle.failed(5.0)                         # and lost it: node 0 next, without the backoff
    assert cycle.next() == (0, 5.0)


def test_a_single_node_is_tried_again_after_the_backoff():
    cycle = NodeCycle(1, retry_s=0.5)
    cycle.connected()
    cycle.failed(3.0)
    assert cycle.next() == (0, 3.5)


def test_a_failover_list_needs_a_node():
    with pytest.raises(ValueError):
        NodeCycle(0, retry_s=0.5)


# -- what goes into one transaction ------------------------------------------------------------

def test_settles_of_the_current_connection_commit_together_and_are_told_so():
    told: list[tuple[int, bool]] = []
    settles = Settles()
    for tag in (1, 2):
        settles.add(Settle.of(task(tag, 7), [("r", b"answer")], lambda ok, tag=tag: told.append((tag, ok))))
    commit = settles.take(7)
    assert [s.task.tag for s in commit.live] == [1, 2] and commit.stale == ()
    assert not settles
    for done, ok in commit.outcomes(True):
        done(ok)
    assert told == [(1, True), (2, True)]


def test_a_task_taken_on_a_closed_connection_is_neither_answered_nor_acknowledged_there():
    """Its delivery tag belonged to that connection; the broker gave the task
    back when it closed, to whichever consumer: that copy answers it."""
    settles = Settles()
    settles.add(Settle.of(task(4, 1), [("r", b"old")], lambda ok: None))
    settles.add(Settle.of(task(1, 2), [("r", b"new")], lambda ok: None))
    commit = settles.take(2)
    assert [s.publishes for s in commit.live] == [(("r", b"new"),)]
    assert [s.task.tag for s in commit.stale] == [4]
    assert [ok for _, ok in commit.outcomes(True)] == [False, True]


def test_a_failed_commit_committed_nothing_answers_and_acks_alike():
    settles = Settles()
    settles.add(Settle.of(task(1, 3), [("r", b"a")], lambda ok: None))
    settles.add(Settle.of(task(2, 3), [("r", b"b")], lambda ok: None))
    assert [ok for _, ok in settles.take(3).outcomes(False)] == [False, False]


def test_settles_waiting_when_the_connection_goes_were_not_committed():
    settles = Settles()
    settles.add(Settle.of(task(1, 3), [("r", b"a")], lambda ok: None))
    assert [ok for _, ok in settles.lost()] == [False]
    assert not settles and settles.lost() == []


def test_the_answers_of_an_uncommitted_settle_are_withdrawn_and_of_a_committed_one_confirmed():
    """What the agent core hears: a withdrawn answer goes out again when its
    task comes back (from the store), a confirmed one is done."""
    answer = Publish("r", b"a", qos=1, fence_key="t1", sent_key="t1")
    untracked = Publish("r", b"b", qos=1)
    assert settled(True, [answer, untracked]) == [Confirmed("t1")]
    [withdrawn] = settled(False, [answer, untracked])
    assert isinstance(withdrawn, Withdrawn) and withdrawn.messages == [answer]
    assert settled(False, [untracked]) == []


# -- small words ---------------------------------------------------------------------------------

def test_the_consumer_starts_and_stops_with_what_the_agent_wants():
    assert consumer_move(want=True, consuming=False) == "consume"
    assert consumer_move(want=False, consuming=True) == "cancel"
    assert consumer_move(want=True, consuming=True) is None
    assert consumer_move(want=False, consuming=False) is None


def test_a_queue_that_never_started_names_its_nodes_without_their_passwords():
    urls = ["amqp://fog:s3cret@rabbit1:5672/", "amqp://fog:s3cret@rabbit2:5672/vh"]
    text = no_node_reason(urls, timeout=3, first_error="rabbit1:5672: connection refused")
    assert text == ("no AMQP node of rabbit1:5672, rabbit2:5672 took the task queue within 3 s "
                    "(rabbit1:5672: connection refused)")
    assert "s3cret" not in text and where("amqp://h:1/") == "h:1"


def test_the_queue_and_its_bindings_are_named_from_the_root():
    assert queue_name("fog/v1") == "fogmesh.fog.v1.tasks"
    assert routing_keys("fog/v1") == ("fog.v1.tasks", "fog.v1.tasks.*")
