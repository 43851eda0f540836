"""The agent core's per-task state machine: each legal move is taken, each
illegal one refused (one test per pair), so a bug that would answer a task
twice or never stops at the move, not on the wire."""

from __future__ import annotations

import itertools

import pytest

from fogmesh.edge_agent.entry import TRANSITIONS, Entry, EntryState
from fogmesh.errors import IllegalTransition

pytestmark = pytest.mark.timeout(10)

LEGAL = sorted((a, b) for a, targets in TRANSITIONS.items() for b in targets)
ILLEGAL = sorted((a, b) for a, b in itertools.product(EntryState, EntryState) if b not in TRANSITIONS[a])


def entry_in(state: EntryState) -> Entry:
    return Entry(key="t1", received=0.0, tokens=[], state=state)


@pytest.mark.parametrize("start,to", LEGAL, ids=[f"{a}->{b}" for a, b in LEGAL])
def test_a_legal_move_is_taken(start, to):
    e = entry_in(start)
    e.move(to)
    assert e.state is to


@pytest.mark.parametrize("start,to", ILLEGAL, ids=[f"{a}->{b}" for a, b in ILLEGAL])
def test_an_illegal_move_is_refused_and_leaves_the_state_alone(start, to):
    e = entry_in(start)
    with pytest.raises(IllegalTransition, match=f"{start} -> {to}"):
        e.move(to)
    assert e.state is start


def test_done_is_final():
    assert TRANSITIONS[EntryState.DONE] == frozenset()


def test_an_answer_held_for_a_takeover_can_only_go_out():
    assert TRANSITIONS[EntryState.ANSWERED] == frozenset({EntryState.DONE})


def test_every_state_but_done_can_be_answered():
    for state in EntryState:
        if state is not EntryState.DONE:
            assert EntryState.DONE in TRANSITIONS[state]


def test_a_new_entry_starts_claiming_and_reads_as_its_name():
    e = Entry(key="t1", received=0.0, tokens=[])
    assert e.state is EntryState.CLAIMING and str(e.state) == "claiming" and e.state == "claiming"
