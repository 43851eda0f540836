"""Resubmissions under shared subscriptions: who has this task already?

A device that got no reply sends the same task id again (``attempt`` 2, 3...;
``FogClient`` does, and topics.md gives firmware the recipe). With claims
every agent sees every task and knows who won it; with a shared subscription
the broker may hand the resubmission to another agent than the first copy,
which may be queued or running there, or answered with the reply lost in a
broker restart. Running it blindly would run it twice. So the agent that got
it asks first, on the claims topic, and every peer answers on its inbox:

* ``held``: "I hold it" (queued, running, or being competed for): the asker
  drops its copy; the holder answers the device;
* ``answered``: "I answered it, here is the reply": the asker sends that same
  reply again (the device asked again); without the reply (no longer kept, or
  its answer was void), the asker waits for the others and, if none has it,
  answers ``duplicate_id``;
* ``none``: "never seen it": the peer also notes who asked, so a copy of the
  task that reaches it later is dropped instead of run.

When every peer it asked said ``none`` (or died, or fell silent), the asker
competes for the task under its takeover key, as anybody holding a copy
that might be someone else's does (a rescued session, a journal restored
after a restart), and runs it if it wins. Two agents asking about the same id
at once: the one with the smaller id keeps it. Answers are waited for without
a timeout (a timeout cannot tell a slow peer from a dead one); a peer that
dies (its will) is no longer waited for, one whose presence is only stale
still is (it may be frozen, holding the task or its answer), and one that has
not answered by its next presence is asked again (its connection may have
dropped and come back without a will, the question lost on the way).

From a task queue (RabbitMQ), a copy the queue gave back (redelivered) is
always asked about: its first holder's connection closed, perhaps after
the answer went out and before the broker recorded the ack (a node stopping
mid-commit). A peer saying ``held`` about such a copy has not yet noticed
that its connection closed; it is asked again at its next presence.

:class:`fogmesh.edge_agent.ask_book.AskBook` holds this state; the functions
here drive it, over the core's state. Pure like the rest of the core.
"""

from __future__ import annotations

from typing import Any

from fogmesh.asks import Have
from fogmesh.edge_agent import answering, failover, landing
from fogmesh.edge_agent.actions import Ack, Action, Publish
from fogmesh.edge_agent.core_state import CoreState
from fogmesh.edge_agent.entry import Entry, EntryState


def ask(s: CoreState, entry: Entry, now: float) -> list[Action] | None:
    """A resubmitted task through a shared subscription, not known here:
    ask the peers (None: there is nobody to ask)."""
    peers = s.peers.not_gone(now, silent_s=s.config.gone_silent_s) | s.deaths.watched()
    peers.discard(s.config.agent_id)
    if not peers:
        return None
    s.entries.asking(entry)
    s.asks.open(entry.key, peers, now)
    s.counters.asked += 1
    return [Publish(s.config.topics.claims, s.claim_record(entry.key, op="ask"))]


def on_ask(s: CoreState, key: str, asker: str, now: float) -> list[Action]:
    """A peer asks whether this agent holds or answered ``key``."""
    me = s.config.agent_id
    if asker == me:
        return []
    entry = s.entries.get(key)
    reply_to = reply = None
    if entry is not None and not (entry.state is EntryState.ASKING and me > asker):
        state = "held"
    elif entry is None and s.answers.knows(key, now):
        state = "answered"
        answer = s.answers.answer(key, now)
        if answer is not None:
            reply_to, reply = answer.topic, answer.payload
    else:                 # never seen it, or both asking and the asker keeps it
        state = "none"
        s.asks.asked_by_peer(key, asker, now)
    return [Publish(s.config.topics.agent_inbox(asker), Have(key, me, state, reply_to, reply).encode())]


def on_have(s: CoreState, have: Have, now: float) -> list[Action]:
    entry = s.entries.get(have.task_id)
    if entry is None or entry.state is not EntryState.ASKING or not s.asks.is_open(have.task_id):
        return []
    if have.state == "held" and entry.requeued:
        # The queue gave this copy back because that peer's connection to it closed:
        # its hold is void and it lets go once it notices. Asked again at its next presence.
        return []
    if have.state == "held":                    # its holder answers the device
        s.asks.close(entry.key)
        s.release(entry)
        return [Ack(t) for t in entry.tokens]
    if have.state == "answered" and have.reply_to is not None and have.reply is not None:
        s.asks.close(entry.key)
        s.entries.placing(entry, recorded=Publish(have.reply_to, have.reply))
        return landing.accept(s, entry, now)
    if have.state == "answered":        # answered, answer not kept: another peer may have it
        s.asks.answer_not_kept(entry.key)
    if s.asks.answered_by(entry.key, have.agent):
        return _settle_ask(s, entry, now)
    return []


def _settle_ask(s: CoreState, entry: Entry, now: float) -> list[Action]:
    """Nobody holds it: compete for it under its takeover key, with any
    copy that a rescued session or a restored journal may hold (or, if
    some peer answered it without keeping the answer, say so)."""
    s.asks.close(entry.key)
    if s.asks.take_not_kept(entry.key):
        s.entries.placing(entry)
        return answering.answer_error(s, entry, "duplicate_id",
                                      f"task id {entry.key!r} was answered within the dedup window and its "
                                      "answer is no longer kept; submit it with a new id", now)
    s.entries.claiming(entry)
    failover.to_next_round(s, entry, now)
    return failover.claim_now(s, entry, now)


def asked_peer_gone(s: CoreState, peer: str, now: float) -> list[Action]:
    actions: list[Action] = []
    for key in s.asks.gone(peer):
        entry = s.entries.get(key)
        if entry is not None and entry.state is EntryState.ASKING:
            actions += _settle_ask(s, entry, now)
    return actions


def ask_again(s: CoreState, peer: str, now: float | None = None, *, epoch: int | None = None,
              before: int | None = None) -> list[Action]:
    """``peer`` came back after its will: it missed the questions it was
    asked (all go again). With ``now`` (its presence, no will between, in
    ``epoch``; ``before``: the epoch it said last): those it may have missed
    go again (see :meth:`AskBook.due_again`)."""
    keys = s.asks.awaiting(peer) if now is None else s.asks.due_again(peer, now, epoch=epoch, asked_in=before)
    return [Publish(s.config.topics.claims, s.claim_record(key, op="ask")) for key in keys]


def expire_silent_askees(s: CoreState, now: float) -> list[Action]:
    """Peers that are gone without a will being watched (their presence
    cleared, or offline and judged) are no longer waited for. Not a stale
    one: it may be frozen, holding the task or its answer (a run twice,
    seed 39 of the random schedules); its will comes within 1.5 keep-alives
    if it is dead (``failover.handle_deaths`` then stops the wait), or it is
    given up after ``gone_silent_s`` of silence (a broker restart can take
    its connection, and its will with it)."""
    awaited = s.asks.awaited_peers
    if not awaited:
        return []
    present = s.peers.not_gone(now, silent_s=s.config.gone_silent_s) | s.deaths.watched()
    actions: list[Action] = []
    for peer in awaited - present:
        actions += asked_peer_gone(s, peer, now)
    return actions


def asked_elsewhere(s: CoreState, key: str, now: float) -> Any:
    """The peer resolving a resubmission of ``key``, if one asked about it."""
    return s.asks.asker(key, now)
