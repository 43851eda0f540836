"""Tier 1: who steps the agent's core, the dispatcher or a task arriving on
an idle agent (fogmesh.edge_agent.turns). No sockets: the two threads'
moves, one at a time."""

import threading

import pytest

from fogmesh.edge_agent.turns import Turns

pytestmark = pytest.mark.timeout(10)


def waiting_dispatcher() -> Turns:
    """The dispatcher between two events: arrivals open, the turn let go."""
    turns = Turns()
    turns.open = True
    return turns


def test_an_arrival_on_an_idle_agent_takes_the_turn_and_gives_it_back():
    turns = waiting_dispatcher()
    assert turns.begin_arrival()
    assert turns.lock.locked()
    turns.end()
    assert not turns.lock.locked()


def test_an_arrival_waits_for_the_dispatcher_to_step_what_its_connection_queued_before():
    turns = waiting_dispatcher()
    turns.queued()                      # a burst: the first task went to the queue
    assert not turns.begin_arrival()    # the second may not overtake it
    turns.stepped()
    assert turns.begin_arrival()


def test_an_arrival_never_waits_for_a_dispatcher_that_holds_the_turn():
    turns = waiting_dispatcher()
    turns.lock.acquire()
    outcome = []
    arrival = threading.Thread(target=lambda: outcome.append(turns.begin_arrival()))
    arrival.start()
    arrival.join(2)
    assert outcome == [False]


def test_arrivals_do_not_step_once_the_dispatcher_closed_them():
    turns = waiting_dispatcher()
    turns.open = False                  # stopping or draining: only the dispatcher steps
    assert not turns.begin_arrival()
    assert not turns.lock.locked()


def test_a_failed_arrival_step_is_raised_on_the_dispatcher_and_closes_arrivals():
    turns = waiting_dispatcher()
    assert turns.begin_arrival()
    turns.end(RuntimeError("illegal move"))
    assert not turns.begin_arrival()
    with pytest.raises(RuntimeError, match="illegal move"):
        turns.check()
