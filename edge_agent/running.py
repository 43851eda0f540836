"""The agent core's running concern: starting the tasks it runs itself in
its workers (or inline), their results, their timeouts, and a queued task
that waited past its ``deadline_ms``. A concern of
:class:`fogmesh.edge_agent.core.AgentCore`: functions over its state
(:class:`fogmesh.edge_agent.core_state.CoreState`, ``s``), owning none. Pure."""

from __future__ import annotations

from typing import Any

from fogmesh.edge_agent import answering, offloading
from fogmesh.edge_agent.actions import Action, Cancel, Run
from fogmesh.edge_agent.core_state import CoreState
from fogmesh.edge_agent.entry import Entry, EntryState
from fogmesh.messages import ErrorInfo


def start(s: CoreState, entry: Entry, now: float) -> list[Action]:
    assert entry.task is not None and entry.kind is not None
    timeout = entry.kind.timeout_s
    if entry.task.deadline_ms:
        remaining = entry.received + entry.task.deadline_ms / 1000 - now
        if remaining <= 0:
            return answering.answer_error(s, entry, "deadline_exceeded",
                                          f"waited {1000 * (now - entry.received):.0f} ms, "
                                          f"past deadline_ms={entry.task.deadline_ms}", now)
        timeout = min(timeout, remaining)
    inline = entry.kind.inline
    s.entries.running(entry, now, until=None if inline else now + timeout)
    if not inline:
        s.runner.started()
    return [Run(entry.key, entry.task, entry.kind, timeout)]


def start_queued(s: CoreState, now: float) -> list[Action]:
    actions: list[Action] = []
    while (key := s.runner.next_to_start()) is not None:
        actions += start(s, s.entries[key], now)
    return actions


def on_finished(s: CoreState, key: str, now: float, *, result: Any = None,
                error: ErrorInfo | None = None) -> list[Action]:
    """A local run ended. Results of runs already answered are ignored."""
    entry = s.entries.get(key)
    if entry is None or entry.state is not EntryState.RUNNING:
        return []
    assert entry.kind is not None and entry.task is not None
    if not entry.kind.inline:
        s.runner.stopped()
    if entry.started is not None and error is None:
        s.runner.observe(entry.task.kind, 1000 * (now - entry.started))
    if error is not None:
        actions = answering.answer_error(s, entry, error.code, error.message, now)
    else:
        actions = answering.answer_ok(s, entry, result, now)
    return actions + start_queued(s, now)


def stop_local(s: CoreState, entry: Entry) -> list[Action]:
    """Take ``entry`` out of this agent's queue, or stop its run (first
    answer wins elsewhere)."""
    if entry.state is EntryState.QUEUED:
        s.runner.dequeue(entry.key)
    elif entry.state is EntryState.RUNNING and entry.kind is not None and not entry.kind.inline:
        s.runner.stopped()
        return [Cancel(entry.key)]
    return []


def expire_held(s: CoreState, now: float) -> list[Action]:
    """Timers of the tasks held here that ran out: a queued task past its
    ``deadline_ms``, a run past its kind's timeout, an offer past its lease."""
    actions: list[Action] = []
    for entry in s.entries:
        if entry.state is EntryState.QUEUED and entry.task and entry.task.deadline_ms \
                and now >= entry.received + entry.task.deadline_ms / 1000:
            s.runner.dequeue(entry.key)
            actions += answering.answer_error(s, entry, "deadline_exceeded",
                                              f"still queued after deadline_ms={entry.task.deadline_ms}", now)
        elif entry.state is EntryState.RUNNING and entry.run_until is not None and now >= entry.run_until:
            s.counters.timeouts += 1
            assert entry.task is not None
            actions += stop_local(s, entry)
            actions += answering.answer_error(s,
                entry, "timeout", f"kind {entry.task.kind!r} ran past its timeout of "
                f"{now - (entry.started or now):.1f} s", now)
        elif entry.state is EntryState.OFFERED and entry.offer is not None and entry.lease_until is not None \
                and now >= entry.lease_until:
            s.counters.leases_expired += 1
            actions += offloading.place_again(s, entry, now)
    return actions
