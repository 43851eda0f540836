"""The agent core's claims concern (brokers without shared subscriptions): every
agent sees every task, the first claim the broker orders wins, losers keep a
copy to take over if the winner dies. Takeovers go in rounds (``<id>#t``,
``<id>#t#t``, ...): the winner of the latest round holds the task, and a copy
held by an earlier claim gives way to it. A concern of
:class:`fogmesh.edge_agent.core.AgentCore`: functions over its state
(:class:`fogmesh.edge_agent.core_state.CoreState`, ``s``), owning none. Pure."""

from __future__ import annotations

from typing import Any

from fogmesh.claims import Claim, taken_over
from fogmesh.edge_agent import answering, asking, failover, landing, peering
from fogmesh.edge_agent.actions import Ack, Action, Publish, Rescue, StopTaking
from fogmesh.edge_agent.core_state import CoreState
from fogmesh.edge_agent.entry import Entry, EntryState
from fogmesh.edge_agent.mode import Change
from fogmesh.edge_agent.ordering import is_probe_record
from fogmesh.errors import InvalidMessage


def on_claim(s: CoreState, payload: bytes, token: Any, now: float) -> list[Action]:
    if is_probe_record(payload):
        return [Ack(token)] + s.order.on_record(payload, now, wall_offset=s.wall_offset)
    try:
        claim = Claim.decode(payload)
    except InvalidMessage:
        s.counters.bad_claims += 1
        return [Ack(token)]
    actions: list[Action] = [Ack(token)]
    if claim.agent != s.config.agent_id \
            and s.deaths.revived(claim.agent, instance=claim.instance, epoch=claim.epoch):
        s.deaths.back(claim.agent)       # alive: a later run or epoch than its will's
        actions += peering.peer_back(s, claim.agent, now, epoch=claim.epoch)
    for key in claim.tasks:      # answers the broker confirmed ("sent", or riding on a "done")
        if claim.agent == s.config.agent_id:
            actions += failover.answer_was_out(s, key, now)
        s.claims.answer_confirmed(key)
        contested = _contesting(s, key) if claim.agent != s.config.agent_id else None
        if contested is not None:      # its answer is out: nothing left to run or deliver
            actions += _give_up_claim(s, contested)
        elif claim.agent != s.config.agent_id:
            actions += _drop_taken_over(s, key, now)
    if claim.op == "ask":
        return actions + asking.on_ask(s, claim.task, claim.agent, now)
    if claim.op == "done":
        held = s.claims.drop_copy(claim.task)
        if claim.agent == s.config.agent_id:
            return actions
        first = s.claims.winner(claim.task, now)
        if first is not None and first != claim.agent and not s.claims.won_a_round(claim.task, claim.agent, now):
            actions += _claims_diverged(s, claim.task, first, claim.agent)
        # The task message itself may still be on its way here (it comes on the
        # task connection, whose window can be full): when it arrives it is a
        # duplicate, not a copy to take over later.
        s.answers.add(claim.task, now)
        answer = None
        if claim.reply_to is not None and claim.reply is not None:
            answer = Publish(claim.reply_to, claim.reply)
            if s.config.dispatch == "claim":
                # Delivered by a peer should its maker die before saying it is out
                # ("sent"). Not under shared subscriptions (a takeover winner's
                # "done"): its answer leaves with the task's ack, so a broker that
                # missed the answer gives the task back to its session.
                s.claims.keep_answer(claim.task, claim.agent, held.payload if held is not None else b"",
                                     answer)
        contested = _contesting(s, claim.task)
        if contested is not None:
            # Contesting it (its winner looked dead), and it was answered after
            # all: if this agent wins, it re-delivers that answer, never runs it.
            if answer is None:
                actions += _give_up_claim(s, contested)
            else:
                s.entries.deliver_instead(contested, answer)
        return actions
    if claim.op == "sent":
        return actions
    round_of = taken_over(claim.task)
    if claim.agent != s.config.agent_id and round_of is not None \
            and s.confirms.take_withdrawn(round_of[0]):
        # The broker gave a task whose answer was cut off here to a peer, which
        # competes for it: that peer answers, this agent's answer is void.
        s.answers.drop_answer(round_of[0])
    winner, decides = s.claims.record(claim.task, claim.agent, claim.epoch, now)
    if decides and round_of is not None:
        # A takeover round decided: its winner holds the task now, and is
        # the one to take it from should it die in turn.
        s.claims.round_decided(round_of[0], winner, s.claims.won_epoch(claim.task, now))
        if winner != s.config.agent_id:
            actions += _superseded(s, round_of[0], claim.task, now)
    rescued = s.claims.rescue_of(claim.task)
    if rescued is not None:
        if winner == s.config.agent_id:
            s.counters.rescues += 1
            actions.append(Rescue(rescued))
        return actions
    entry = s.entries.by_claim(claim.task)
    if entry is None:
        return actions
    if entry.state in (EntryState.CLAIMING, EntryState.CLAIMED):
        actions += decided(s, entry, winner, now)
    elif entry.fenced:
        actions += failover.fence_decided(s, entry, winner, now)
    return actions


def _claims_diverged(s: CoreState, key: str, first: str, answerer: str) -> list[Action]:
    """``answerer`` answered ``key``, whose first claim this agent saw from
    ``first``: the broker gave them the claims in different orders (the
    start-up probe missed it). Of the two, the agent with the larger id stops
    taking tasks for good, so the pair cannot run a task twice again."""
    s.counters.order_divergences += 1
    me = s.config.agent_id
    if s.claims.was_cut(key):
        return []       # claimed across this agent's lost connection: a claim missed then, not the broker's order
    if s.mode.degraded_by or me not in (first, answerer) or me != max(first, answerer):
        return []
    reason = (f"claims reached {first} and {answerer} in different orders (task {key!r} was won by "
              f"{first} here and answered by {answerer}): this broker does not order the claims "
              "topic, so this agent takes no more tasks; use a broker with shared subscriptions")
    s.mode.change(Change.CLAIMS_DIVERGED, reason=reason)
    return [StopTaking(reason)]


def decided(s: CoreState, entry: Entry, winner: str, now: float) -> list[Action]:
    if entry.state is EntryState.CLAIMED:
        s.claims.claim_settled()
    if winner == s.config.agent_id:
        winner = _later_round_winner(s, entry, now) or winner
    if winner == s.config.agent_id:
        if won_across_a_cut(s, entry, now):
            return _reclaim(s, entry, now)
        s.counters.claims_won += 1
        return landing.accept(s, entry, now)
    s.counters.claims_lost += 1
    s.release(entry)
    acks: list[Action] = [Ack(tok) for tok in entry.tokens]
    if s.config.dispatch != "claim" or entry.task is None or entry.recorded is not None:
        return acks
    if s.deaths.declared(winner):
        # It won, then died (or this agent learnt of its win late): its death
        # was handled before this copy was its, so take it over now.
        return acks + failover.take_over(s, entry.key, entry.payload, [], now, gone=winner)
    # to take over if it dies
    s.claims.keep_copy(entry.key, winner, entry.payload, s.claims.won_epoch(entry.claim_key, now))
    return acks


def _superseded(s: CoreState, key: str, round_key: str, now: float) -> list[Action]:
    """A peer won ``round_key``, a takeover round of ``key``, while this
    agent holds ``key`` by an earlier claim and has not answered it: the
    two saw the claims that decided it in different orders (one missed a
    claim around a lost connection). The round's winner holds it now:
    drop this copy, or the task runs twice."""
    entry = s.entries.get(key)
    if entry is None or entry.claim_key == round_key or entry.origin is not None or entry.fenced \
            or entry.state not in (EntryState.PLACING, EntryState.QUEUED, EntryState.RUNNING):
        return []
    s.counters.superseded += 1
    if entry.task is not None:      # to take over should the round's winner die
        s.claims.keep_copy(key, s.claims.winner(round_key, now) or "", entry.payload,
                           s.claims.won_epoch(round_key, now))
    return answering.let_go(s, entry, now)


def _later_round_winner(s: CoreState, entry: Entry, now: float) -> str | None:
    """A peer that won a takeover round of ``entry`` later than the claim
    this agent holds it by (see :func:`_superseded`)."""
    mine = taken_over(entry.claim_key)
    later = s.claims.round_winners(entry.key, now)[mine[1] if mine else 0:]
    return later[-1] if later and later[-1] != s.config.agent_id else None


def won_across_a_cut(s: CoreState, entry: Entry, now: float) -> bool:
    """Won by a claim this agent made before its control connection
    dropped (an older epoch, or a task it was claiming then): peers that
    saw its will contest such wins in the next takeover round, so running
    it (or releasing its answer) straight away could run it twice. A fence
    claim made when the task connection dropped first carries the old
    epoch too."""
    if s.config.dispatch != "claim" or s.claims.epoch == 0:
        return False
    stale = (s.claims.won_epoch(entry.claim_key, now) or 0) < s.claims.epoch
    cut = entry.claim_key == entry.key and s.claims.was_cut(entry.key)
    return (stale or cut) and not failover.is_alone(s, now)


def _reclaim(s: CoreState, entry: Entry, now: float) -> list[Action]:
    """Compete for ``entry`` under its takeover key, like the survivors that
    may contest it: the broker's one order picks one of us."""
    if entry.state is EntryState.CLAIMED:
        s.entries.claiming(entry)
    s.counters.reclaimed += 1
    failover.to_next_round(s, entry, now)
    return failover.claim_now(s, entry, now)


def _contesting(s: CoreState, key: str) -> Entry | None:
    """The entry for ``key`` while this agent competes for its takeover."""
    entry = s.entries.get(key)
    if entry is None or entry.claim_key == key \
            or entry.state not in (EntryState.CLAIMING, EntryState.CLAIMED):
        return None
    return entry


def _drop_taken_over(s: CoreState, key: str, now: float) -> list[Action]:
    """A task this agent won back from a peer that looked dead, whose answer
    that peer now reports out (it was only cut off, and answered): drop it,
    and stop its run if it started. Its answer is the device's one answer."""
    entry = s.entries.get(key)
    if entry is None or entry.claim_key == key or entry.origin is not None \
            or entry.state not in (EntryState.PLACING, EntryState.QUEUED, EntryState.RUNNING):
        return []
    return answering.drop_held(s, entry, now)


def _give_up_claim(s: CoreState, entry: Entry) -> list[Action]:
    """Stop competing for ``entry`` (claiming or claimed). A claim already
    sent is harmless: a win for an entry not held is ignored."""
    if entry.state is EntryState.CLAIMED:
        s.claims.claim_settled()
    s.release(entry)
    return [Ack(t) for t in entry.tokens]


def fire_claims(s: CoreState, now: float) -> list[Action]:
    actions: list[Action] = []
    for entry in s.entries.claims_due(now):
        s.entries.claimed(entry)
        s.claims.claim_sent()
        actions.append(s.my_claim(entry.claim_key))
    return actions
