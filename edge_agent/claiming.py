"""The agent core's claims concern (brokers without shared subscriptions): every
agent sees every task, the first claim the broker orders wins, losers keep a
copy to take over if the winner dies. Takeovers go in rounds (``<id>#t``,
``<id>#t#t``, ...): the winner of the latest round holds the task, and a copy
held by an earlier claim gives way to it. A concern of
:class:`fogmesh.edge_agent.core.AgentCore`: it owns no state, and decides with
the parts :class:`fogmesh.edge_agent.core_parts.CoreParts` names. Pure."""

from __future__ import annotations

from typing import Any

from fogmesh.claims import Claim, taken_over
from fogmesh.edge_agent.actions import Ack, Action, Publish, Rescue, StopTaking
from fogmesh.edge_agent.core_parts import CoreParts
from fogmesh.edge_agent.entry import Entry, EntryState
from fogmesh.edge_agent.mode import Change
from fogmesh.edge_agent.ordering import is_probe_record
from fogmesh.errors import InvalidMessage


class ClaimingConcern(CoreParts):
    def _on_claim(self, payload: bytes, token: Any, now: float) -> list[Action]:
        if is_probe_record(payload):
            return [Ack(token)] + self.order.on_record(payload, now, wall_offset=self.wall_offset)
        try:
            claim = Claim.decode(payload)
        except InvalidMessage:
            self.counters.bad_claims += 1
            return [Ack(token)]
        actions: list[Action] = [Ack(token)]
        if claim.agent != self.config.agent_id \
                and self.deaths.revived(claim.agent, instance=claim.instance, epoch=claim.epoch):
            self.deaths.back(claim.agent)       # alive: a later run or epoch than its will's
            actions += self._peer_back(claim.agent, now, epoch=claim.epoch)
        for key in claim.tasks:      # answers the broker confirmed ("sent", or riding on a "done")
            if claim.agent == self.config.agent_id:
                actions += self._answer_was_out(key, now)
            self.claims.answer_confirmed(key)
            contested = self._contesting(key) if claim.agent != self.config.agent_id else None
            if contested is not None:      # its answer is out: nothing left to run or deliver
                actions += self._give_up_claim(contested)
            elif claim.agent != self.config.agent_id:
                actions += self._drop_taken_over(key, now)
        if claim.op == "ask":
            return actions + self._on_ask(claim.task, claim.agent, now)
        if claim.op == "done":
            held = self.claims.drop_copy(claim.task)
            if claim.agent == self.config.agent_id:
                return actions
            first = self.claims.winner(claim.task, now)
            if first is not None and first != claim.agent and not self.claims.won_a_round(claim.task, claim.agent, now):
                actions += self._claims_diverged(claim.task, first, claim.agent)
            # The task message itself may still be on its way here (it comes on the
            # task connection, whose window can be full): when it arrives it is a
            # duplicate, not a copy to take over later.
            self.answers.add(claim.task, now)
            answer = None
            if claim.reply_to is not None and claim.reply is not None:
                answer = Publish(claim.reply_to, claim.reply)
                if self.config.dispatch == "claim":
                    # Delivered by a peer should its maker die before saying it is out
                    # ("sent"). Not under shared subscriptions (a takeover winner's
                    # "done"): its answer leaves with the task's ack, so a broker that
                    # missed the answer gives the task back to its session.
                    self.claims.keep_answer(claim.task, claim.agent, held.payload if held is not None else b"",
                                            answer)
            contested = self._contesting(claim.task)
            if contested is not None:
                # Contesting it (its winner looked dead), and it was answered after
                # all: if this agent wins, it re-delivers that answer, never runs it.
                if answer is None:
                    actions += self._give_up_claim(contested)
                else:
                    self.entries.deliver_instead(contested, answer)
            return actions
        if claim.op == "sent":
            return actions
        round_of = taken_over(claim.task)
        if claim.agent != self.config.agent_id and round_of is not None \
                and self.confirms.take_withdrawn(round_of[0]):
            # The broker gave a task whose answer was cut off here to a peer, which
            # competes for it: that peer answers, this agent's answer is void.
            self.answers.drop_answer(round_of[0])
        winner, decides = self.claims.record(claim.task, claim.agent, claim.epoch, now)
        if decides and round_of is not None:
            # A takeover round decided: its winner holds the task now, and is
            # the one to take it from should it die in turn.
            self.claims.round_decided(round_of[0], winner, self.claims.won_epoch(claim.task, now))
            if winner != self.config.agent_id:
                actions += self._superseded(round_of[0], claim.task, now)
        rescued = self.claims.rescue_of(claim.task)
        if rescued is not None:
            if winner == self.config.agent_id:
                self.counters.rescues += 1
                actions.append(Rescue(rescued))
            return actions
        entry = self.entries.by_claim(claim.task)
        if entry is None:
            return actions
        if entry.state in (EntryState.CLAIMING, EntryState.CLAIMED):
            actions += self._decided(entry, winner, now)
        elif entry.fenced:
            actions += self._fence_decided(entry, winner, now)
        return actions

    def _claims_diverged(self, key: str, first: str, answerer: str) -> list[Action]:
        """``answerer`` answered ``key``, whose first claim this agent saw from
        ``first``: the broker gave them the claims in different orders (the
        start-up probe missed it). Of the two, the agent with the larger id stops
        taking tasks for good, so the pair cannot run a task twice again."""
        self.counters.order_divergences += 1
        me = self.config.agent_id
        if self.claims.was_cut(key):
            return []       # claimed across this agent's lost connection: a claim missed then, not the broker's order
        if self.mode.degraded_by or me not in (first, answerer) or me != max(first, answerer):
            return []
        reason = (f"claims reached {first} and {answerer} in different orders (task {key!r} was won by "
                  f"{first} here and answered by {answerer}): this broker does not order the claims "
                  "topic, so this agent takes no more tasks; use a broker with shared subscriptions")
        self.mode.change(Change.CLAIMS_DIVERGED, reason=reason)
        return [StopTaking(reason)]

    def _decided(self, entry: Entry, winner: str, now: float) -> list[Action]:
        if entry.state is EntryState.CLAIMED:
            self.claims.claim_settled()
        if winner == self.config.agent_id:
            winner = self._later_round_winner(entry, now) or winner
        if winner == self.config.agent_id:
            if self._won_across_a_cut(entry, now):
                return self._reclaim(entry, now)
            self.counters.claims_won += 1
            return self._accept(entry, now)
        self.counters.claims_lost += 1
        self._release(entry)
        acks: list[Action] = [Ack(tok) for tok in entry.tokens]
        if self.config.dispatch != "claim" or entry.task is None or entry.recorded is not None:
            return acks
        if self.deaths.declared(winner):
            # It won, then died (or this agent learnt of its win late): its death
            # was handled before this copy was its, so take it over now.
            return acks + self._take_over(entry.key, entry.payload, [], now, gone=winner)
        # to take over if it dies
        self.claims.keep_copy(entry.key, winner, entry.payload, self.claims.won_epoch(entry.claim_key, now))
        return acks

    def _superseded(self, key: str, round_key: str, now: float) -> list[Action]:
        """A peer won ``round_key``, a takeover round of ``key``, while this
        agent holds ``key`` by an earlier claim and has not answered it: the
        two saw the claims that decided it in different orders (one missed a
        claim around a lost connection). The round's winner holds it now:
        drop this copy, or the task runs twice."""
        entry = self.entries.get(key)
        if entry is None or entry.claim_key == round_key or entry.origin is not None or entry.fenced \
                or entry.state not in (EntryState.PLACING, EntryState.QUEUED, EntryState.RUNNING):
            return []
        self.counters.superseded += 1
        if entry.task is not None:      # to take over should the round's winner die
            self.claims.keep_copy(key, self.claims.winner(round_key, now) or "", entry.payload,
                                  self.claims.won_epoch(round_key, now))
        return self._let_go(entry, now)

    def _later_round_winner(self, entry: Entry, now: float) -> str | None:
        """A peer that won a takeover round of ``entry`` later than the claim
        this agent holds it by (see :meth:`_superseded`)."""
        mine = taken_over(entry.claim_key)
        later = self.claims.round_winners(entry.key, now)[mine[1] if mine else 0:]
        return later[-1] if later and later[-1] != self.config.agent_id else None

    def _won_across_a_cut(self, entry: Entry, now: float) -> bool:
        """Won by a claim this agent made before its control connection
        dropped (an older epoch, or a task it was claiming then): peers that
        saw its will contest such wins in the next takeover round, so running
        it (or releasing its answer) straight away could run it twice. A fence
        claim made when the task connection dropped first carries the old
        epoch too."""
        if self.config.dispatch != "claim" or self.claims.epoch == 0:
            return False
        stale = (self.claims.won_epoch(entry.claim_key, now) or 0) < self.claims.epoch
        cut = entry.claim_key == entry.key and self.claims.was_cut(entry.key)
        return (stale or cut) and not self._alone(now)

    def _reclaim(self, entry: Entry, now: float) -> list[Action]:
        """Compete for ``entry`` under its takeover key, like the survivors that
        may contest it: the broker's one order picks one of us."""
        if entry.state is EntryState.CLAIMED:
            self.entries.claiming(entry)
        self.counters.reclaimed += 1
        self._to_next_round(entry, now)
        return self._claim_now(entry, now)

    def _contesting(self, key: str) -> Entry | None:
        """The entry for ``key`` while this agent competes for its takeover."""
        entry = self.entries.get(key)
        if entry is None or entry.claim_key == key \
                or entry.state not in (EntryState.CLAIMING, EntryState.CLAIMED):
            return None
        return entry

    def _drop_taken_over(self, key: str, now: float) -> list[Action]:
        """A task this agent won back from a peer that looked dead, whose answer
        that peer now reports out (it was only cut off, and answered): drop it,
        and stop its run if it started. Its answer is the device's one answer."""
        entry = self.entries.get(key)
        if entry is None or entry.claim_key == key or entry.origin is not None \
                or entry.state not in (EntryState.PLACING, EntryState.QUEUED, EntryState.RUNNING):
            return []
        return self._drop_held(entry, now)

    def _give_up_claim(self, entry: Entry) -> list[Action]:
        """Stop competing for ``entry`` (claiming or claimed). A claim already
        sent is harmless: a win for an entry not held is ignored."""
        if entry.state is EntryState.CLAIMED:
            self.claims.claim_settled()
        self._release(entry)
        return [Ack(t) for t in entry.tokens]

    def _fire_claims(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for entry in self.entries.claims_due(now):
            self.entries.claimed(entry)
            self.claims.claim_sent()
            actions.append(self._my_claim(entry.claim_key))
        return actions
