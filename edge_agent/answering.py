"""The agent core's answering concern: replies and dead letters, the "done"
records that carry them in claim dispatch, the confirmations that let peers
forget them, and the journal/ack bookkeeping of a finished task. A concern of
:class:`fogmesh.edge_agent.core.AgentCore`: functions over its state
(:class:`fogmesh.edge_agent.core_state.CoreState`, ``s``), owning none. Pure."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fogmesh.edge_agent import offloading, running
from fogmesh.edge_agent.actions import Ack, Action, Forget, Publish
from fogmesh.edge_agent.answer_book import StoredAnswer
from fogmesh.edge_agent.core_state import CoreState
from fogmesh.edge_agent.entry import Entry
from fogmesh.errors import InvalidMessage
from fogmesh.messages import DeadLetter, ErrorInfo, Reply, Task, Timing, excerpt
from fogmesh.offers import Result
from fogmesh.properties import MessageProperties, reply_properties

MARK = "#mark"     # fence key of "sent" records made by order: withdrawn with their connection, not resent


def properties_for(task: Task | None, topic: str) -> MessageProperties | None:
    """The MQTT 5 properties of a reply on ``topic`` to ``task`` (None: none):
    MQTT 5 requesters match replies by Correlation Data (fogmesh.properties)."""
    if task is None or topic != task.reply_to:
        return None
    return reply_properties(task.correlation, task.user_properties)


def sent_again(answer: StoredAnswer, task: Task | None) -> Publish:
    """``answer`` going out again, with the MQTT 5 properties of the request
    it answers this time: a requester resubmitting with new Correlation Data
    matches the reply by the new one."""
    return Publish(answer.topic, answer.payload, properties=properties_for(task, answer.topic))


def _timing(s: CoreState, entry: Entry, now: float) -> Timing:
    started = entry.started if entry.started is not None else now
    return Timing(queue=1000 * (started - entry.received), run=1000 * (now - started),
                  total=1000 * (now - entry.received))


def _deliver(s: CoreState, entry: Entry, reply: Reply, reply_to: str, now: float) -> list[Action]:
    """To the device, or, for a task run for a peer, back to its origin."""
    if entry.origin is not None and entry.task is not None:
        result = Result(entry.origin_offer or "", entry.task.id, s.config.agent_id, reply)
        return finish(s, entry, Publish(s.config.topics.agent_inbox(entry.origin),
                                        result.encode()), now)
    return finish(s, entry, Publish(reply_to, reply.encode()), now)


def answer_ok(s: CoreState, entry: Entry, result: Any, now: float) -> list[Action]:
    assert entry.task is not None
    reply = Reply.ok(entry.task.id, result, worker=s.config.agent_id, tier="local",
                     ms=_timing(s, entry, now))
    try:
        payload = reply.encode()
    except InvalidMessage as exc:
        return answer_error(s, entry, "bad_result", exc.message, now)
    s.counters.completed += 1
    if entry.origin is None:     # the hot path: encode once (``finish`` fences it)
        return finish(s, entry, Publish(entry.task.reply_to, payload), now)
    return _deliver(s, entry, reply, entry.task.reply_to, now)


def answer_error(s: CoreState, entry: Entry, code: str, message: str, now: float) -> list[Action]:
    s.counters.failed += 1
    task = entry.task
    task_id = task.id if task else (entry.error.task_id if entry.error else None)
    reply_to = task.reply_to if task else (entry.error.reply_to if entry.error else None)
    if reply_to:
        reply = Reply.failed(task_id, code, message, worker=s.config.agent_id,
                             tier="local", ms=_timing(s, entry, now))
        return _deliver(s, entry, reply, reply_to, now)
    s.counters.dead_letters += 1
    letter = DeadLetter(agent=s.config.agent_id, ts=now + s.wall_offset, error=ErrorInfo(code, message),
                        topic=s.config.topics.tasks, id=task_id,
                        excerpt=excerpt(entry.payload))
    return finish(s, entry, Publish(s.config.topics.errors, letter.encode()), now)


def answer_pair(s: CoreState, key: str, answer: Publish, *, carry: bool = True) -> tuple[list[Action], Publish]:
    """The "done" record (carrying ``answer`` and, with ``carry``, the
    confirmations collected so far: only for a record that goes out now) and
    the answer itself, in claim dispatch. The IO shell hands both back if
    the connection drops before the broker has them (``failover.on_withdrawn``)."""
    sent = s.confirms.take_all() if carry else ()
    done = Publish(s.config.topics.claims,
                   s.claim_record(key, op="done", reply_to=answer.topic, reply=answer.payload,
                                  tasks=sent), fence_key=key)
    return [done], Publish(answer.topic, answer.payload, answer.qos, answer.retain,
                           sent_key=key, fence_key=key, properties=answer.properties)


def finish(s: CoreState, entry: Entry, publish: Publish, now: float) -> list[Action]:
    task = entry.task
    props = properties_for(task, publish.topic) if entry.origin is None else None
    if props is not None:
        publish = replace(publish, properties=props)
    # What a resubmission of the id gets again (a device's own reply, not a
    # result sent back to an origin agent).
    answer = StoredAnswer(publish.topic, publish.payload) if entry.origin is None else None
    forget: list[Action] = [Forget(entry.key, answer)] if entry.remembered else []
    done: list[Action] = []
    if s.config.dispatch == "claim" and entry.origin is None and entry.task is not None \
            and s.claims.winner(entry.key, now) is not None:   # peers hold a copy to forget
        # The record goes first and carries the answer: peers never re-run a
        # task whose answer may be out (see ``Claim``).
        # It also carries the confirmations collected so far (no extra message
        # under load; ``on_sent`` flushes them when idle).
        done, publish = answer_pair(s, entry.key, publish, carry=not entry.fenced)
    elif s.config.dispatch == "shared" and entry.origin is None:
        if entry.tokens:
            # Not sent again blindly if the connection drops first (``failover.on_withdrawn``).
            publish = Publish(publish.topic, publish.payload, fence_key=entry.key, properties=publish.properties)
        if entry.claim_key != entry.key and entry.task is not None:
            # Won in a takeover round: the peers that competed keep a copy, to
            # take over should this agent die holding it. A "done" record (with
            # the answer) tells them it is answered; without it they contested
            # the task again when this agent came back after a will (a broker
            # restart) and, it holding nothing, won and ran it a second time.
            done = [Publish(s.config.topics.claims,
                            s.claim_record(entry.key, op="done", reply_to=publish.topic,
                                           reply=publish.payload), fence_key=entry.key)]
    if entry.fenced:               # hold the answer until the takeover claim is decided
        s.entries.hold_answer(entry, answer, done + [publish] + forget)    # acks are added on release
        return []
    s.settle(entry, now, answer)
    if done and s.config.dispatch == "claim":
        emitting(s, entry.key)
    if entry.origin is None:
        s.latency.observe(1000 * (now - entry.received))
    return done + [publish] + forget + [Ack(tok) for tok in entry.tokens]


def emitting(s: CoreState, key: str) -> None:
    """The answer of ``key`` goes out now (claim dispatch): the next record
    this agent publishes on the claims topic tells peers so. Records leave
    on the connection the answers left on, after them, so a peer that sees
    the record knows the broker had the answer: it drops its copy, and would
    never re-deliver it (a duplicate) if this agent died."""
    s.confirms.emitting(key)


def take_marks(s: CoreState)-> list[Action]:
    """A "sent" record for the answers emitted since the last record, if any.
    The shell asks for it after each step, so an agent that dies right
    after answering has (almost always) said so: the answers and the record
    leave back to back."""
    keys = s.confirms.take_emitted()
    if not keys:
        return []
    return [Publish(s.config.topics.claims, s.claim_record("", op="sent", tasks=keys),
                    fence_key=MARK)]


def on_sent(s: CoreState, keys: list[str], now: float) -> list[Action]:
    """The broker confirmed (PUBACK) the answers of ``keys``: tell peers (on
    the next "done" record, or after a moment alone), unless a record published
    after the answer already did (``take_marks``)."""
    if s.config.dispatch != "claim":
        return []
    return flush_sent(s) if s.confirms.confirmed(keys, now) else []


def flush_sent(s: CoreState)-> list[Action]:
    keys = s.confirms.take_all()
    if not keys:
        return []
    return [Publish(s.config.topics.claims,
                    s.claim_record("", op="sent", tasks=keys))]


def drop_held(s: CoreState, entry: Entry, now: float) -> list[Action]:
    """Stop holding ``entry`` without answering it: another agent's answer
    is the device's one answer. A copy arriving later is a duplicate."""
    s.answers.add(entry.key, now)
    return let_go(s, entry, now)


def let_go(s: CoreState, entry: Entry, now: float) -> list[Action]:
    """Stop holding ``entry``, unanswered here: out of the queue or its run
    stopped, its offer and journal line dropped, its messages acknowledged."""
    actions = running.stop_local(s, entry)
    offloading.clear_offer(s, entry)
    s.release(entry)
    forget: list[Action] = [Forget(entry.key)] if entry.remembered else []
    return actions + forget + [Ack(t) for t in entry.tokens] + running.start_queued(s, now)
