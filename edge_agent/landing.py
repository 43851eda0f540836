"""The agent core's landing concern: a task that reaches this agent (parsed,
confined to its device's replies, checked against what was answered or is
held, asked about when it may be a copy), accepted and placed (run here,
offered to a peer, sent to the cloud), and the tasks restored from the
journal after a restart. A concern of
:class:`fogmesh.edge_agent.core.AgentCore`: functions over its state
(:class:`fogmesh.edge_agent.core_state.CoreState`, ``s``), owning none. Pure."""

from __future__ import annotations

from typing import Any

from fogmesh.claims import claim_delay, claim_key, tie_break
from fogmesh.edge_agent import answering, asking, claiming, failover, offloading, peering, running
from fogmesh.edge_agent.actions import Ack, Action, Remember
from fogmesh.edge_agent.answer_book import StoredAnswer
from fogmesh.edge_agent.core_state import CoreState
from fogmesh.edge_agent.entry import Entry
from fogmesh.edge_agent.placement import Cloud, Offload, place_task, stays_local
from fogmesh.errors import InvalidMessage
from fogmesh.messages import Task, confine_to_device, parse_task


def on_task(s: CoreState, payload: bytes, token: Any, now: float, *, direct: bool, device: str | None = None,
            dup: bool = False, requeued: bool = False, connection: int | None = None) -> list[Action]:
    if not s.mode.takes_tasks:
        return []
    s.counters.received += 1
    try:
        task: Task | None = parse_task(payload, limits=s.config.limits)
        error = None
    except InvalidMessage as exc:
        task, error = None, exc
    if device is not None:
        task, error = confine_to_device(task, error, device, s.config.topics.own_replies(device))
        if task is not None:      # what peers, journals and takeovers see: the confined task
            payload = task.encode()
    if task is not None and s.config.topics.carries_identity(task.reply_to):
        # A reply there would speak for this agent (its presence, a report, a claim): refused.
        error = InvalidMessage("bad_field", f"reply_to {task.reply_to} is a topic that speaks for a box or "
                               "steers the fabric (topics.md, Refused input)", task_id=task.id)
        task = None
    if error is not None:        # malformed: answered below (an error reply or a dead letter), and said
        where = s.config.topics.tasks if device is None else f"{s.config.topics.tasks}/{device}"
        s.refusals.refuse("task", where, f"{error.code}: {error.message}")
    task_id = task.id if task else (error.task_id if error else None)
    key = claim_key(task_id, payload)

    held = s.entries.get(key)
    if held is not None:             # redelivery of a task we hold: ack it when done
        s.entries.add_tokens(held, [token], connection)
        s.counters.duplicates += 1
        return []
    if not requeued and asking.asked_elsewhere(s, key, now) not in (None, s.config.agent_id):
        # (A requeued copy is the asker's own, given back as its connection closed: not dropped.)
        s.counters.duplicates += 1    # a peer took on a resubmission of it: it answers
        return [Ack(token)]
    if s.answers.knows(key, now):   # answered already
        s.counters.duplicates += 1
        if dup and not (s.confirms.take_withdrawn(key) or s.answers.take_unconfirmed(key)):
            answer = None            # redelivered: answered again only if its answer was cut off
        else:
            answer = s.answers.answer(key, now)
        if answer is not None:       # submitted again, or its answer was cut off: the same answer
            s.confirms.take_withdrawn(key)
            s.answers.take_unconfirmed(key)
            s.counters.answered_again += 1
            return [answering.sent_again(answer, task), Ack(token)]
        return [Ack(token)]

    kind = None
    if task is not None and task.kind not in s.registry:
        error = InvalidMessage("unknown_kind", f"unknown kind {task.kind!r}; agents here run: "
                               f"{', '.join(s.registry.names())}", task_id=task.id, reply_to=task.reply_to)
    elif task is not None:
        kind = s.registry.get(task.kind)
    entry = s.entries.add(Entry(key=key, received=now, tokens=[token], task=task, kind=kind, error=error,
                                payload=payload, requeued=requeued, queue_connections={connection},
                                queue_held=s.config.task_queue and not direct))

    if not direct and s.config.dispatch == "shared" and entry.error is None \
            and task is not None and (requeued or s.asks.asks_about(task.attempt, now)):
        asked = asking.ask(s, entry, now)    # the first copy may be on a peer: ask first
        if asked is not None:
            return asked
    if direct or s.config.dispatch == "shared":
        return accept(s, entry, now)
    winner = s.claims.winner(key, now)
    if winner is not None:
        return claiming.decided(s, entry, winner, now)
    # Load = what this agent has won or may win; undecided tasks every agent
    # holds alike do not count, or every agent would wait the same.
    at = now + claim_delay(queued=s.runner.queued + s.claims.pending, running=s.runner.running,
                           capacity=s.config.concurrency)
    if s.claims.others_claim():
        at += tie_break(key, s.config.agent_id)
    s.entries.claim_at(entry, at)
    return claiming.fire_claims(s, now) if at <= now else []


def accept(s: CoreState, entry: Entry, now: float) -> list[Action]:
    """This agent is responsible for ``entry`` now: answer, place or queue it."""
    if entry.recorded is not None:   # a dead peer's answer: deliver it, do not run again
        s.counters.redelivered += 1
        return answering.finish(s, entry, entry.recorded, now)
    if entry.error is not None:
        return answering.answer_error(s, entry, entry.error.code, entry.error.message, now)
    assert entry.task is not None and entry.kind is not None
    if s.mode.degraded_by is not None and entry.origin is None and s.last_to_answer(now):
        s.counters.busy += 1
        return answering.answer_error(s, entry, "degraded", f"agent {s.config.agent_id} cannot take tasks "
                                      f"({s.mode.degraded}) and no other agent is online; retry later", now)
    if s.limiter is not None and entry.origin is None:
        device = entry.task.device or entry.task.reply_to
        if not s.limiter.allow(device, now):
            s.counters.busy += 1
            s.counters.rate_limited += 1
            return answering.answer_error(s, entry, "busy", f"device {device} is over its limit of "
                                          f"{s.config.device_rate:g} tasks/s on agent "
                                          f"{s.config.agent_id}; slow down and retry", now)
    s.entries.placing(entry)
    if entry.origin is None:
        target = placement(s, entry, now, with_cloud=True)
        if target is not None:
            return remember(s, entry) + offloading.offer(s, entry, target, now)
    if entry.kind.inline and not s.runner.queued:
        return running.start(s, entry, now)   # answered within this step: nothing to journal
    if s.runner.is_full():
        s.counters.busy += 1
        return answering.answer_error(s, entry, "busy", f"agent {s.config.agent_id} has "
                                      f"{s.runner.queued} tasks queued; retry later", now)
    s.entries.queued(entry)
    s.runner.enqueue(entry.key)
    return remember(s, entry) + running.start_queued(s, now)


def placement(s: CoreState, entry: Entry, now: float, *, with_cloud: bool) -> str | None:
    """Where the policy sends ``entry``: a peer, a cloud bridge (``with_cloud``),
    or None for here."""
    assert entry.task is not None and entry.kind is not None
    weight = entry.task.weight or entry.kind.weight
    if stays_local(weight):      # nothing to weigh (place_task would say so)
        return None
    bridge = peering.cloud_for(s, entry.task.kind, now, exclude=entry.tried) if with_cloud else None
    decision = place_task(s.policy, kind=entry.task.kind, weight=weight,
                          me=s.self_state(), peers=offloading.peer_views(s, now),
                          run_ms=s.runner.run_ms(entry.task.kind),
                          exclude=frozenset(entry.tried), cloud=bridge is not None)
    if isinstance(decision, Offload):
        return decision.peer
    if isinstance(decision, Cloud):
        return bridge
    return None


def remember(s: CoreState, entry: Entry) -> list[Action]:
    """Journal a task this agent is now responsible for; not one a task
    queue holds (amqp dispatch): the queue gives it back if this agent dies
    unanswered, to whichever agent, and a journal copy resumed after a
    restart would run again what a peer answered meanwhile."""
    if entry.remembered or entry.origin is not None or entry.queue_held:
        return []
    s.entries.remembered(entry)
    return [Remember(entry.key, entry.payload)]


def restore(s: CoreState, *, done: list[str], unfinished: list[bytes], now: float,
            answers: dict[str, StoredAnswer] | None = None) -> list[Action]:
    """After a restart: ids answered before (so redeliveries are swallowed,
    and a resubmission gets its ``answers`` entry again), and tasks accepted
    but not answered (placed again, in order)."""
    answers = answers or {}
    for key in done:
        s.answers.restored(key, now, answers.get(key))
    actions: list[Action] = []
    for payload in unfinished:
        try:
            task = parse_task(payload, limits=s.config.limits)
        except InvalidMessage:
            continue
        if task.id in s.entries or s.answers.knows(task.id, now) or task.kind not in s.registry:
            continue
        # A survivor may have taken it over while this agent was down:
        # run it, but answer only after winning its takeover claim.
        entry = Entry(key=task.id, received=now, tokens=[], task=task, payload=payload,
                       kind=s.registry.get(task.kind), remembered=True,
                       claim_key=failover.takeover_claim(s, task.id, now), fenced=True)
        s.entries.add(entry)
        actions.append(s.my_claim(entry.claim_key))
        actions += accept(s, entry, now)
    return actions

