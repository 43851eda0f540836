"""The agent core's failure concern: taking over what a dead peer held, electing
who rescues its MQTT session, and fencing what this agent held across a lost
connection, so that exactly one contender answers each task. A concern of
:class:`fogmesh.edge_agent.core.AgentCore`: functions over its state
(:class:`fogmesh.edge_agent.core_state.CoreState`, ``s``), owning none. Pure."""

from __future__ import annotations

from typing import Any

from fogmesh.claims import claim_key, rescue_key
from fogmesh.edge_agent import answering, asking, claiming, offloading
from fogmesh.edge_agent.actions import Ack, Action, Publish
from fogmesh.edge_agent.answer_book import StoredAnswer
from fogmesh.edge_agent.core_state import CoreState
from fogmesh.edge_agent.entry import Entry, EntryState
from fogmesh.errors import InvalidMessage
from fogmesh.messages import Task, confine_to_device, parse_task


# -- failures: takeover, rescue, fencing -------------------------------------------------
def handle_deaths(s: CoreState, now: float) -> list[Action]:
    """Peers offline for the grace period: re-place what they accepted from
    this agent, take over the tasks they won (claim mode) and elect one
    survivor to rescue their MQTT session."""
    actions: list[Action] = []
    for agent, will_ts in s.deaths.due(now):
        actions += asking.asked_peer_gone(s, agent, now)
        for entry in s.entries:
            if entry.state is EntryState.OFFERED and entry.offer and entry.offer.peer == agent:
                actions += offloading.place_again(s, entry, now)
        if s.offers.is_bridge(agent):        # a bridge stayed down: its tasks went back to the fog
            continue
        actions += contest(s, agent, now)
        rkey = rescue_key(agent, will_ts)
        if not s.mode.leaving and s.claims.winner(rkey, now) is None:
            s.claims.rescuing(rkey, agent)
            actions.append(Publish(s.config.topics.claims, s.claim_record(rkey)))
    return actions


def contest(s: CoreState, agent: str, now: float, *, epoch: int | None = None) -> list[Action]:
    """Compete for every task ``agent`` won (with a claim older than its
    ``epoch``, when it says) and has not reported done."""
    actions: list[Action] = []
    for key, payload in s.claims.copies_held_by(agent, won_before=epoch):
        actions += take_over(s, key, payload, [], now, gone=agent, gone_epoch=epoch)
    for key, said in s.claims.answers_by(agent):   # it answered; the answer may not have reached the broker
        actions += take_over(s, key, said.payload, [], now, recorded=said.answer, gone=agent, gone_epoch=epoch)
    return actions


def takeover_claim(s: CoreState, key: str, now: float, *, gone: str | None = None,
                   gone_epoch: int | None = None) -> str:
    """The claim key to compete for ``key`` under (:meth:`ClaimBook.takeover_claim`)."""
    return s.claims.takeover_claim(key, now, dead=s.deaths, gone=gone, gone_epoch=gone_epoch)


def to_next_round(s: CoreState, entry: Entry, now: float) -> None:
    """Compete for ``entry`` in the takeover round to claim now (:func:`takeover_claim`)."""
    s.entries.compete_under(entry, takeover_claim(s, entry.key, now))


def take_over(s: CoreState, key: str, payload: bytes, tokens: list[Any], now: float, *,
              recorded: Publish | None = None, device: str | None = None, gone: str | None = None,
              gone_epoch: int | None = None, connection: int | None = None) -> list[Action]:
    """Compete for a task some other agent held, under its takeover key
    (with ``recorded``: only to deliver the answer it already made;
    ``tokens``: its messages, from the task queue's ``connection`` or MQTT)."""
    if s.answers.knows(key, now) and recorded is None:
        answer = s.answers.answer(key, now) \
            if s.confirms.take_withdrawn(key) or s.answers.take_unconfirmed(key) else None
        if answer is not None:     # its answer was cut off with the connection: send it now
            s.counters.answered_again += 1
            try:
                task: Task | None = parse_task(payload, limits=s.config.limits)
            except InvalidMessage:
                task = None
            again: list[Action] = [answering.sent_again(answer, task)]
            return again + [Ack(t) for t in tokens]
        return [Ack(t) for t in tokens]
    held = s.entries.get(key)
    if held is not None:
        s.entries.add_tokens(held, tokens, connection)
        return []
    round_key = takeover_claim(s, key, now, gone=gone, gone_epoch=gone_epoch)
    if recorded is not None and not payload:     # its "done" came before the task message
        return _compete(s, Entry(key=key, received=now, tokens=list(tokens), claim_key=round_key,
                                 claim_at=now, recorded=recorded,
                                 queue_connections={connection} if tokens else set()), now)
    try:
        task = parse_task(payload, limits=s.config.limits)
    except InvalidMessage:
        return [Ack(t) for t in tokens]
    if device is not None:
        confined, _ = confine_to_device(task, None, device, s.config.topics.own_replies(device))
        if confined is None:
            return [Ack(t) for t in tokens]
        task, payload = confined, confined.encode()
    if task.kind not in s.registry:
        return [Ack(t) for t in tokens]
    return _compete(s, Entry(key=key, received=now, tokens=list(tokens), task=task, payload=payload,
                             kind=s.registry.get(task.kind), claim_key=round_key, claim_at=now,
                             recorded=recorded, queue_connections={connection} if tokens else set()), now)


def _compete(s: CoreState, entry: Entry, now: float) -> list[Action]:
    s.entries.add(entry)
    s.counters.taken_over += 1
    return claim_now(s, entry, now)


def claim_now(s: CoreState, entry: Entry, now: float) -> list[Action]:
    """Claim ``entry.claim_key`` at once, unless the broker's order already
    decided it (a claim seen before this agent competed)."""
    s.entries.claim_at(entry, now)
    winner = s.claims.winner(entry.claim_key, now)
    if winner is not None:
        return claiming.decided(s, entry, winner, now)
    return claiming.fire_claims(s, now)


def on_rescued(s: CoreState, topic: str, payload: bytes, token: Any, now: float, *,
               holder: str | None = None, connection: int | None = None) -> list[Action]:
    """A task message redelivered to this agent, or taken from ``holder``'s
    rescued session: compete for it like any takeover (its holder may come
    back and reclaim it), unless a live agent is known to have won it."""
    t = s.config.topics
    if not t.is_task_topic(topic) and not topic.endswith("/tasks"):
        return [Ack(token)]                    # its inbox, presence, claims: not ours
    if holder is not None and t.is_task_topic(topic) and s.config.dispatch == "claim":
        # Every agent sees every task in claim dispatch: what the dead agent
        # had won is contested from the claims (``contest``); its session
        # copies are redundant, and competing for them would run new tasks twice.
        return [Ack(token)]
    try:
        task_id: str | None = parse_task(payload, limits=s.config.limits).id
    except InvalidMessage as exc:
        task_id = exc.task_id
    key = claim_key(task_id, payload)
    winner = s.claims.winner(key, now)
    if winner is not None and winner not in (holder, s.config.agent_id) \
            and winner not in s.deaths and key not in s.entries:
        return [Ack(token)]                    # decided for a live agent: it answers
    return take_over(s, key, payload, [token], now, device=t.device_of_tasks(topic), gone=holder,
                     connection=connection)


def on_disconnect(s: CoreState, now: float, *, control: bool = True) -> list[Action]:
    """A broker connection is lost: peers may take over what this agent
    holds before it is back. Every held task is fenced at once, so no answer
    waits in the client's send queue to go out blindly on reconnect: it is
    answered only if this agent wins its takeover claim (queued now, sent
    first thing after the reconnect; brokers order claims, so exactly one
    contender wins). Claims travel on the ``control`` connection: only its
    loss gives up pending claims and starts a new epoch."""
    alone = is_alone(s, now)
    actions: list[Action] = []
    if control:
        s.claims.lost_connection()
        s.deaths.lost_connection()
        s.confirms.connection_lost()
    for entry in s.entries:
        if entry.state is EntryState.ASKING:       # asked again once the connection is back
            continue
        if entry.state in (EntryState.CLAIMED, EntryState.CLAIMING):
            if not control or entry.state is EntryState.CLAIMING:
                continue        # its claim goes out later, in the new epoch
            # Still competing. Its claim may be lost with the connection, so
            # it goes again (the first of the two to reach the broker counts);
            # and a win by it is claimed again under the takeover key, as
            # peers that saw this agent's will contest it (``claiming.won_across_a_cut``).
            if not alone and entry.claim_key == entry.key:
                s.claims.cut(entry.key, now)
            actions.append(s.my_claim(entry.claim_key))
            continue
        if alone or entry.fenced or entry.origin is not None or s.config.task_queue:
            # (From a task queue the answer goes with the ack over AMQP whatever MQTT
            # does, and the queue, not a claim, says who holds a task: a takeover claim
            # here would outlive a hold the queue takes back and void the next taker's.)
            continue
        s.entries.fence(entry, takeover_claim(s, entry.key, now))
        actions.append(s.my_claim(entry.claim_key))
    return actions


def on_connected(s: CoreState, now: float, *, control: bool = True, session_kept: bool = True) -> list[Action]:
    """A broker connection is (back) up. After the control connection's
    return, peers' deaths are timed afresh (see :mod:`fogmesh.edge_agent.deaths`).

    Shared dispatch: answers cut off with the task connection wait for
    their task to come back (``on_withdrawn``). A broker that kept no
    session (``session_kept`` False: restarted without persistence, as
    the embedded broker is) gives nothing back, so they go out now:
    lost otherwise, and no peer can hold their task (the broker forgot
    it). One may reach the device twice, the same bytes: the broker may
    have had it before it went, with only its PUBACK lost."""
    if not control:
        if s.config.dispatch != "shared":
            return []
        s.asks.task_link_up(now)
        if session_kept:
            s.confirms.task_link_back(now)
            return []
        return _send_again(s, s.confirms.take_all_withdrawn(), now)
    s.deaths.reconnected(now)
    if session_kept:
        s.offers.catching_up(now)      # offers its session kept meanwhile are past their lease
    # The answers to questions asked before the drop may be lost: ask again.
    return [Publish(s.config.topics.claims, s.claim_record(key, op="ask"))
            for key in s.asks.open_keys]


def _send_again(s: CoreState, keys: list[str], now: float) -> list[Action]:
    """Withdrawn answers out again (fenced again, should the link drop once more)."""
    again: list[Action] = []
    for key in keys:
        answer = s.answers.answer(key, now)
        if answer is not None:
            s.counters.answered_again += 1
            again.append(Publish(answer.topic, answer.payload, fence_key=key))
    return again


def send_overdue(s: CoreState, now: float) -> list[Action]:
    """Withdrawn answers whose task the broker did not give back after the
    reconnect (it lost it: a SIGKILL between two saves): out now, once.
    The device may get one twice, the same bytes, if the broker had it."""
    return _send_again(s, s.confirms.take_overdue(now), now)


def is_alone(s: CoreState, now: float) -> bool:
    """No live peer and nobody else claiming: nothing to fence against."""
    return not s.peers.live(now) and not s.claims.others_claim()


def on_withdrawn(s: CoreState, messages: list[Publish], now: float) -> list[Action]:
    """Answers (and their records) a dropped connection handed back before
    the broker confirmed them. Sent again blindly after the reconnect, an
    answer the broker did get would reach the device twice.

    Shared subscriptions: the task's acknowledgement left after its answer
    on the same connection, so a broker that missed the answer missed the
    acknowledgement too and delivers the task again (DUP); the stored
    answer goes out then (``take_over``), or when the device submits the
    task again (``landing.on_task``), never blindly.

    Claims: peers may take the task over meanwhile (they contest what a
    peer back after its will had won), so each answer is fenced like a
    held task: sent again only if this agent wins its takeover claim.
    Alone, it is simply sent again."""
    claims = s.config.topics.claims
    answers = {p.fence_key: p for p in messages if p.fence_key and p.topic != claims}
    # A record whose answer the broker has (confirmed): the answer is out,
    # peers must hear of it. "sent" marks go with their connection.
    records = [p for p in messages if p.fence_key and p.topic == claims
               and p.fence_key not in answers and p.fence_key != answering.MARK]
    actions: list[Action] = [Publish(p.topic, p.payload) for p in records]
    if s.config.dispatch == "shared":
        # (Records here are a takeover winner's "done": it carries the answer, so
        # peers that believe it deliver that answer, never run the task again.)
        for key in answers:
            s.confirms.withdraw(key)
            s.counters.withdrawn += 1
        return actions
    alone = is_alone(s, now)
    for key, answer in answers.items():
        if alone:
            done, again = answering.answer_pair(s, key, answer)
            actions += done + [again]
            answering.emitting(s, key)
            continue
        done, again = answering.answer_pair(s, key, answer, carry=False)
        entry = Entry(key=key, received=now, tokens=[], state=EntryState.ANSWERED, fenced=True,
                      claim_key=takeover_claim(s, key, now), pending=done + [again])
        s.entries.add(entry)
        s.counters.withdrawn += 1
        winner = s.claims.winner(entry.claim_key, now)
        if winner is not None:
            actions += fence_decided(s, entry, winner, now)
        else:
            actions.append(s.my_claim(entry.claim_key))
    return actions


def answer_was_out(s: CoreState, key: str, now: float) -> list[Action]:
    """This agent's own record, echoed back by the broker, reports its
    answer for ``key`` out: the broker had the answer before the
    connection dropped (the record left after it, in the same write), only
    its PUBACK was lost. A withdrawn answer waiting on its fence is not
    sent again (a second copy to the device), and peers, which saw the
    same record, drop their contest."""
    entry = s.entries.get(key)
    if entry is None or not entry.fenced or entry.state is not EntryState.ANSWERED or entry.origin is not None:
        return []
    held = s.entries.unfence(entry) or []
    answer = next((StoredAnswer(a.topic, a.payload) for a in held
                   if isinstance(a, Publish) and a.topic != s.config.topics.claims), None)
    s.settle(entry, now, entry.answer or answer)
    s.counters.answers_found_out += 1
    return [a for a in held if not isinstance(a, Publish)] + [Ack(t) for t in entry.tokens]


def fence_decided(s: CoreState, entry: Entry, winner: str, now: float) -> list[Action]:
    if winner == s.config.agent_id and claiming.won_across_a_cut(s, entry, now):
        # won by a claim of an older epoch: peers contest the next round, so must this agent
        to_next_round(s, entry, now)
        s.counters.reclaimed += 1
        later = s.claims.winner(entry.claim_key, now)
        if later is not None:
            return fence_decided(s, entry, later, now)
        return [s.my_claim(entry.claim_key)]
    if winner == s.config.agent_id:
        held = s.entries.unfence(entry)
        if held is not None:                    # answered meanwhile: release it now
            s.settle(entry, now, entry.answer)
            if any(isinstance(a, Publish) and a.topic == s.config.topics.claims for a in held):
                answering.emitting(s, entry.key)       # its done record goes out: claim dispatch
            return held + [Ack(t) for t in entry.tokens]
        return []
    s.counters.fenced_dropped += 1           # a survivor answers it
    s.answers.drop_answer(entry.key)           # ours, if made, never counts (nor is sent again)
    return answering.drop_held(s, entry, now)
