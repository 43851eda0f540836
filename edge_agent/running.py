"""The agent core's running concern: starting the tasks it runs itself in
its workers (or inline), their results, their timeouts, and a queued task
that waited past its ``deadline_ms``. A concern of
:class:`fogmesh.edge_agent.core.AgentCore`: it owns no state, and decides with
the parts :class:`fogmesh.edge_agent.core_parts.CoreParts` names. Pure."""

from __future__ import annotations

from typing import Any

from fogmesh.edge_agent.actions import Action, Cancel, Run
from fogmesh.edge_agent.core_parts import CoreParts
from fogmesh.edge_agent.entry import Entry, EntryState
from fogmesh.messages import ErrorInfo


class RunningConcern(CoreParts):
    def _start(self, entry: Entry, now: float) -> list[Action]:
        assert entry.task is not None and entry.kind is not None
        timeout = entry.kind.timeout_s
        if entry.task.deadline_ms:
            remaining = entry.received + entry.task.deadline_ms / 1000 - now
            if remaining <= 0:
                return self._answer_error(entry, "deadline_exceeded",
                                          f"waited {1000 * (now - entry.received):.0f} ms, "
                                          f"past deadline_ms={entry.task.deadline_ms}", now)
            timeout = min(timeout, remaining)
        inline = entry.kind.inline
        self.entries.running(entry, now, until=None if inline else now + timeout)
        if not inline:
            self.runner.started()
        return [Run(entry.key, entry.task, entry.kind, timeout)]

    def _start_queued(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while (key := self.runner.next_to_start()) is not None:
            actions += self._start(self.entries[key], now)
        return actions

    def _on_finished(self, key: str, now: float, *, result: Any = None,
                    error: ErrorInfo | None = None) -> list[Action]:
        """A local run ended. Results of runs already answered are ignored."""
        entry = self.entries.get(key)
        if entry is None or entry.state is not EntryState.RUNNING:
            return []
        assert entry.kind is not None and entry.task is not None
        if not entry.kind.inline:
            self.runner.stopped()
        if entry.started is not None and error is None:
            self.runner.observe(entry.task.kind, 1000 * (now - entry.started))
        if error is not None:
            actions = self._answer_error(entry, error.code, error.message, now)
        else:
            actions = self._answer_ok(entry, result, now)
        return actions + self._start_queued(now)

    def _stop_local(self, entry: Entry) -> list[Action]:
        """Take ``entry`` out of this agent's queue, or stop its run (first
        answer wins elsewhere)."""
        if entry.state is EntryState.QUEUED:
            self.runner.dequeue(entry.key)
        elif entry.state is EntryState.RUNNING and entry.kind is not None and not entry.kind.inline:
            self.runner.stopped()
            return [Cancel(entry.key)]
        return []

    def _expire_held(self, now: float) -> list[Action]:
        """Timers of the tasks held here that ran out: a queued task past its
        ``deadline_ms``, a run past its kind's timeout, an offer past its lease."""
        actions: list[Action] = []
        for entry in self.entries:
            if entry.state is EntryState.QUEUED and entry.task and entry.task.deadline_ms \
                    and now >= entry.received + entry.task.deadline_ms / 1000:
                self.runner.dequeue(entry.key)
                actions += self._answer_error(entry, "deadline_exceeded",
                                              f"still queued after deadline_ms={entry.task.deadline_ms}", now)
            elif entry.state is EntryState.RUNNING and entry.run_until is not None and now >= entry.run_until:
                self.counters.timeouts += 1
                assert entry.task is not None
                actions += self._stop_local(entry)
                actions += self._answer_error(
                    entry, "timeout", f"kind {entry.task.kind!r} ran past its timeout of "
                    f"{now - (entry.started or now):.1f} s", now)
            elif entry.state is EntryState.OFFERED and entry.offer is not None and entry.lease_until is not None \
                    and now >= entry.lease_until:
                self.counters.leases_expired += 1
                actions += self._replace(entry, now)
        return actions
