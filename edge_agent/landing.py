"""The agent core's landing concern: a task that reaches this agent (parsed,
confined to its device's replies, checked against what was answered or is
held, asked about when it may be a copy), accepted and placed (run here,
offered to a peer, sent to the cloud), and the tasks restored from the
journal after a restart. A concern of :class:`fogmesh.edge_agent.core.AgentCore`:
it owns no state, and decides with the parts
:class:`fogmesh.edge_agent.core_parts.CoreParts` names. Pure."""

from __future__ import annotations

from typing import Any

from fogmesh.claims import claim_delay, claim_key, tie_break
from fogmesh.edge_agent.actions import Ack, Action, Remember
from fogmesh.edge_agent.answer_book import StoredAnswer
from fogmesh.edge_agent.answering import sent_again
from fogmesh.edge_agent.core_parts import CoreParts
from fogmesh.edge_agent.entry import Entry
from fogmesh.edge_agent.placement import Cloud, Offload, place_task, stays_local
from fogmesh.errors import InvalidMessage
from fogmesh.messages import Task, confine_to_device, parse_task


class LandingConcern(CoreParts):
    def _on_task(self, payload: bytes, token: Any, now: float, *, direct: bool, device: str | None = None,
                 dup: bool = False, requeued: bool = False, connection: int | None = None) -> list[Action]:
        if not self.mode.takes_tasks:
            return []
        self.counters.received += 1
        try:
            task: Task | None = parse_task(payload, limits=self.config.limits)
            error = None
        except InvalidMessage as exc:
            task, error = None, exc
        if device is not None:
            task, error = confine_to_device(task, error, device, self.config.topics.own_replies(device))
            if task is not None:      # what peers, journals and takeovers see: the confined task
                payload = task.encode()
        if error is not None:        # malformed: answered below (an error reply or a dead letter), and said
            where = self.config.topics.tasks if device is None else f"{self.config.topics.tasks}/{device}"
            self.refusals.refuse("task", where, f"{error.code}: {error.message}")
        task_id = task.id if task else (error.task_id if error else None)
        key = claim_key(task_id, payload)

        held = self.entries.get(key)
        if held is not None:             # redelivery of a task we hold: ack it when done
            self.entries.add_tokens(held, [token], connection)
            self.counters.duplicates += 1
            return []
        if not requeued and self._asked_elsewhere(key, now) not in (None, self.config.agent_id):
            # (A requeued copy is the asker's own, given back as its connection closed: not dropped.)
            self.counters.duplicates += 1    # a peer took on a resubmission of it: it answers
            return [Ack(token)]
        if self.answers.knows(key, now):   # answered already
            self.counters.duplicates += 1
            if dup and not (self.confirms.take_withdrawn(key) or self.answers.take_unconfirmed(key)):
                answer = None            # redelivered: answered again only if its answer was cut off
            else:
                answer = self.answers.answer(key, now)
            if answer is not None:       # submitted again, or its answer was cut off: the same answer
                self.confirms.take_withdrawn(key)
                self.answers.take_unconfirmed(key)
                self.counters.answered_again += 1
                return [sent_again(answer, task), Ack(token)]
            return [Ack(token)]

        kind = None
        if task is not None and task.kind not in self.registry:
            error = InvalidMessage("unknown_kind", f"unknown kind {task.kind!r}; agents here run: "
                                   f"{', '.join(self.registry.names())}", task_id=task.id, reply_to=task.reply_to)
        elif task is not None:
            kind = self.registry.get(task.kind)
        entry = self.entries.add(Entry(key=key, received=now, tokens=[token], task=task, kind=kind, error=error,
                                       payload=payload, requeued=requeued, queue_connections={connection},
                                       queue_held=self.config.task_queue and not direct))

        if not direct and self.config.dispatch == "shared" and entry.error is None \
                and task is not None and (requeued or self.asks.asks_about(task.attempt, now)):
            asked = self._ask(entry, now)    # the first copy may be on a peer: ask first
            if asked is not None:
                return asked
        if direct or self.config.dispatch == "shared":
            return self._accept(entry, now)
        winner = self.claims.winner(key, now)
        if winner is not None:
            return self._decided(entry, winner, now)
        # Load = what this agent has won or may win; undecided tasks every agent
        # holds alike do not count, or every agent would wait the same.
        at = now + claim_delay(queued=self.runner.queued + self.claims.pending, running=self.runner.running,
                               capacity=self.config.concurrency)
        if self.claims.others_claim():
            at += tie_break(key, self.config.agent_id)
        self.entries.claim_at(entry, at)
        return self._fire_claims(now) if at <= now else []

    def _accept(self, entry: Entry, now: float) -> list[Action]:
        """This agent is responsible for ``entry`` now: answer, place or queue it."""
        if entry.recorded is not None:   # a dead peer's answer: deliver it, do not run again
            self.counters.redelivered += 1
            return self._finish(entry, entry.recorded, now)
        if entry.error is not None:
            return self._answer_error(entry, entry.error.code, entry.error.message, now)
        assert entry.task is not None and entry.kind is not None
        if self.mode.degraded_by is not None and entry.origin is None and self.last_to_answer(now):
            self.counters.busy += 1
            return self._answer_error(entry, "degraded", f"agent {self.config.agent_id} cannot take tasks "
                                      f"({self.mode.degraded}) and no other agent is online; retry later", now)
        if self.limiter is not None and entry.origin is None:
            device = entry.task.device or entry.task.reply_to
            if not self.limiter.allow(device, now):
                self.counters.busy += 1
                self.counters.rate_limited += 1
                return self._answer_error(entry, "busy", f"device {device} is over its limit of "
                                          f"{self.config.device_rate:g} tasks/s on agent "
                                          f"{self.config.agent_id}; slow down and retry", now)
        self.entries.placing(entry)
        if entry.origin is None:
            target = self._placement(entry, now, with_cloud=True)
            if target is not None:
                return self._remember(entry) + self._offer(entry, target, now)
        if entry.kind.inline and not self.runner.queued:
            return self._start(entry, now)   # answered within this step: nothing to journal
        if self.runner.is_full():
            self.counters.busy += 1
            return self._answer_error(entry, "busy", f"agent {self.config.agent_id} has "
                                      f"{self.runner.queued} tasks queued; retry later", now)
        self.entries.queued(entry)
        self.runner.enqueue(entry.key)
        return self._remember(entry) + self._start_queued(now)

    def _placement(self, entry: Entry, now: float, *, with_cloud: bool) -> str | None:
        """Where the policy sends ``entry``: a peer, a cloud bridge (``with_cloud``),
        or None for here."""
        assert entry.task is not None and entry.kind is not None
        weight = entry.task.weight or entry.kind.weight
        if stays_local(weight):      # nothing to weigh (place_task would say so)
            return None
        bridge = self._cloud_for(entry.task.kind, now, exclude=entry.tried) if with_cloud else None
        decision = place_task(self.policy, kind=entry.task.kind, weight=weight,
                              me=self.self_state(), peers=self._peer_views(now),
                              run_ms=self.runner.run_ms(entry.task.kind),
                              exclude=frozenset(entry.tried), cloud=bridge is not None)
        if isinstance(decision, Offload):
            return decision.peer
        if isinstance(decision, Cloud):
            return bridge
        return None

    def _remember(self, entry: Entry) -> list[Action]:
        """Journal a task this agent is now responsible for; not one a task
        queue holds (amqp dispatch): the queue gives it back if this agent dies
        unanswered, to whichever agent, and a journal copy resumed after a
        restart would run again what a peer answered meanwhile."""
        if entry.remembered or entry.origin is not None or entry.queue_held:
            return []
        self.entries.remembered(entry)
        return [Remember(entry.key, entry.payload)]

    def _restore(self, *, done: list[str], unfinished: list[bytes], now: float,
                answers: dict[str, StoredAnswer] | None = None) -> list[Action]:
        """After a restart: ids answered before (so redeliveries are swallowed,
        and a resubmission gets its ``answers`` entry again), and tasks accepted
        but not answered (placed again, in order)."""
        answers = answers or {}
        for key in done:
            self.answers.restored(key, now, answers.get(key))
        actions: list[Action] = []
        for payload in unfinished:
            try:
                task = parse_task(payload, limits=self.config.limits)
            except InvalidMessage:
                continue
            if task.id in self.entries or self.answers.knows(task.id, now) or task.kind not in self.registry:
                continue
            # A survivor may have taken it over while this agent was down:
            # run it, but answer only after winning its takeover claim.
            entry = Entry(key=task.id, received=now, tokens=[], task=task, payload=payload,
                           kind=self.registry.get(task.kind), remembered=True,
                           claim_key=self._takeover_claim(task.id, now), fenced=True)
            self.entries.add(entry)
            actions.append(self._my_claim(entry.claim_key))
            actions += self._accept(entry, now)
        return actions

