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
dies or whose presence goes stale is no longer waited for, and one that has
not answered by its next presence is asked again (its connection may have
dropped and come back without a will, the question lost on the way).

From a task queue (RabbitMQ), a copy the queue gave back (redelivered) is
always asked about: its first holder's connection closed, perhaps after
the answer went out and before the broker recorded the ack (a node stopping
mid-commit). A peer saying ``held`` about such a copy has not yet noticed
that its connection closed; it is asked again at its next presence.

:class:`fogmesh.edge_agent.ask_book.AskBook` holds this state; the core's
:class:`AskingConcern` drives it. Pure like the rest of the core.
"""

from __future__ import annotations

from typing import Any

from fogmesh.asks import Have
from fogmesh.edge_agent.actions import Ack, Action, Publish
from fogmesh.edge_agent.core_parts import CoreParts
from fogmesh.edge_agent.entry import Entry, EntryState


class AskingConcern(CoreParts):
    def _ask(self, entry: Entry, now: float) -> list[Action] | None:
        """A resubmitted task through a shared subscription, not known here:
        ask the peers (None: there is nobody to ask)."""
        peers = {p.agent for p in self.peers.present(now)} | self.deaths.watched()
        peers.discard(self.config.agent_id)
        if not peers:
            return None
        self.entries.asking(entry)
        self.asks.open(entry.key, peers)
        self.counters.asked += 1
        return [Publish(self.config.topics.claims, self._claim_record(entry.key, op="ask"))]

    def _on_ask(self, key: str, asker: str, now: float) -> list[Action]:
        """A peer asks whether this agent holds or answered ``key``."""
        me = self.config.agent_id
        if asker == me:
            return []
        entry = self.entries.get(key)
        reply_to = reply = None
        if entry is not None and not (entry.state is EntryState.ASKING and me > asker):
            state = "held"
        elif entry is None and self.answers.knows(key, now):
            state = "answered"
            answer = self.answers.answer(key, now)
            if answer is not None:
                reply_to, reply = answer.topic, answer.payload
        else:                 # never seen it, or both asking and the asker keeps it
            state = "none"
            self.asks.asked_by_peer(key, asker, now)
        return [Publish(self.config.topics.agent_inbox(asker), Have(key, me, state, reply_to, reply).encode())]

    def _on_have(self, have: Have, now: float) -> list[Action]:
        entry = self.entries.get(have.task_id)
        if entry is None or entry.state is not EntryState.ASKING or not self.asks.is_open(have.task_id):
            return []
        if have.state == "held" and entry.requeued:
            # The queue gave this copy back because that peer's connection to it closed:
            # its hold is void and it lets go once it notices. Asked again at its next presence.
            return []
        if have.state == "held":                    # its holder answers the device
            self.asks.close(entry.key)
            self._release(entry)
            return [Ack(t) for t in entry.tokens]
        if have.state == "answered" and have.reply_to is not None and have.reply is not None:
            self.asks.close(entry.key)
            self.entries.placing(entry, recorded=Publish(have.reply_to, have.reply))
            return self._accept(entry, now)
        if have.state == "answered":        # answered, answer not kept: another peer may have it
            self.asks.answer_not_kept(entry.key)
        if self.asks.answered_by(entry.key, have.agent):
            return self._settle_ask(entry, now)
        return []

    def _settle_ask(self, entry: Entry, now: float) -> list[Action]:
        """Nobody holds it: compete for it under its takeover key, with any
        copy that a rescued session or a restored journal may hold (or, if
        some peer answered it without keeping the answer, say so)."""
        self.asks.close(entry.key)
        if self.asks.take_not_kept(entry.key):
            self.entries.placing(entry)
            return self._answer_error(entry, "duplicate_id",
                                      f"task id {entry.key!r} was answered within the dedup window and its "
                                      "answer is no longer kept; submit it with a new id", now)
        self.entries.claiming(entry)
        self._to_next_round(entry, now)
        return self._claim_now(entry, now)

    def _asked_peer_gone(self, peer: str, now: float) -> list[Action]:
        actions: list[Action] = []
        for key in self.asks.gone(peer):
            entry = self.entries.get(key)
            if entry is not None and entry.state is EntryState.ASKING:
                actions += self._settle_ask(entry, now)
        return actions

    def _ask_again(self, peer: str) -> list[Action]:
        """``peer`` came back after its will: it missed the questions it was asked."""
        return [Publish(self.config.topics.claims, self._claim_record(key, op="ask"))
                for key in self.asks.awaiting(peer)]

    def _expire_silent_askees(self, now: float) -> list[Action]:
        """Peers whose presence went stale are no longer waited for."""
        awaited = self.asks.awaited_peers
        if not awaited:
            return []
        present = {p.agent for p in self.peers.present(now)} | self.deaths.watched()
        actions: list[Action] = []
        for peer in awaited - present:
            actions += self._asked_peer_gone(peer, now)
        return actions

    def _asked_elsewhere(self, key: str, now: float) -> Any:
        """The peer resolving a resubmission of ``key``, if one asked about it."""
        return self.asks.asker(key, now)
