"""The agent core's offloading concern: offers to peers, their answers and
results, and moving queued work to peers that free up. A concern of
:class:`fogmesh.edge_agent.core.AgentCore`: functions over its state
(:class:`fogmesh.edge_agent.core_state.CoreState`, ``s``), owning none. Pure."""

from __future__ import annotations

from fogmesh import codec
from fogmesh.asks import Have
from fogmesh.edge_agent import answering, asking, landing, running
from fogmesh.edge_agent.actions import Action, Publish
from fogmesh.edge_agent.core_state import CoreState
from fogmesh.edge_agent.entry import Entry, EntryState
from fogmesh.edge_agent.peers import Peer
from fogmesh.edge_agent.placement import LocalPolicy, peer_is_full
from fogmesh.errors import InvalidMessage
from fogmesh.messages import Reply, Timing
from fogmesh.offers import Offer, OfferReply, Result, decode_inbox


def rebalance(s: CoreState, now: float, *, limit: int = 8) -> list[Action]:
    """Offer tasks waiting in the local queue (newest first: they would wait
    longest) while the policy prefers a peer. Placement at arrival sees a
    burst as one moment; this runs again whenever a peer frees up."""
    if not s.runner.queued or isinstance(s.policy, LocalPolicy):
        return []
    actions: list[Action] = []
    for key in reversed(s.runner.waiting_for_later()):
        entry = s.entries[key]
        if entry.origin is not None or entry.task is None or entry.kind is None:
            continue
        peer = landing.placement(s, entry, now, with_cloud=False)
        if peer is None:
            if (entry.task.weight or entry.kind.weight) != "light":
                break
            continue
        s.runner.dequeue(key)
        actions += offer(s, entry, peer, now)
        limit -= 1
        if limit == 0:
            break
    return actions


def peer_views(s: CoreState, now: float) -> list[Peer]:
    """Live peers as placement should see them: their presence plus the
    offers this agent has sent them since (presence lags a burst), minus
    peers that just said they are busy."""
    return s.offers.views(s.peers.live(now), now)


# -- offloading ----------------------------------------------------------------------
def offer(s: CoreState, entry: Entry, peer: str, now: float) -> list[Action]:
    assert entry.task is not None
    offer_id = f"{s.config.agent_id}:{entry.key}:{len(entry.offer_ids) + 1}"
    # A bridge commits each offer to disk before it accepts: give it longer.
    lease = s.config.offer_lease_s * (5 if s.offers.is_bridge(peer) else 1)
    s.entries.offered(entry, peer, offer_id, now, lease_until=now + lease)
    s.offers.sent(peer)
    s.counters.offers_sent += 1
    lease_ms = int(1000 * s.config.offer_lease_s)
    return [Publish(s.config.topics.agent_inbox(peer),
                    Offer(offer_id, s.config.agent_id, entry.task, lease_ms).encode())]


def place_again(s: CoreState, entry: Entry, now: float) -> list[Action]:
    """The offer failed (rejected, lease expired, peer died): place it again,
    never on a peer already tried."""
    if entry.offer is not None:
        s.peers.record(entry.offer.peer, ok=False)
    clear_offer(s, entry)
    s.entries.stop_timers(entry)
    return landing.accept(s, entry, now)


def clear_offer(s: CoreState, entry: Entry) -> None:
    if entry.offer is not None:
        s.offers.settled(entry.offer.peer)
        s.entries.offer_ended(entry)


def on_inbox(s: CoreState, payload: bytes, now: float, *, dup: bool = False) -> list[Action]:
    if b'"op":"order-view"' in payload:
        try:
            view = codec.decode(payload)
        except InvalidMessage:
            return []
        return s.order.on_view(view, now) if isinstance(view, dict) else []
    try:
        msg = decode_inbox(payload)
    except InvalidMessage:
        s.counters.bad_inbox += 1     # forged or garbled: ignore; leases cover the rest
        return []
    if isinstance(msg, Offer):
        return _on_offer(s, msg, now, dup=dup)
    if isinstance(msg, Have):
        return asking.on_have(s, msg, now)
    if isinstance(msg, OfferReply):
        entry = s.entries.get(msg.task_id)
        if entry is None or entry.offer is None or entry.offer.offer_id != msg.offer \
                or entry.state is not EntryState.OFFERED or msg.agent != entry.offer.peer:
            return []
        if msg.op == "accept":
            assert entry.kind is not None
            s.counters.offers_accepted += 1
            hold = s.config.cloud_lease_s if s.offers.is_bridge(msg.agent) else entry.kind.timeout_s
            s.entries.offer_accepted(entry, lease_until=now + hold + s.config.offer_lease_s)
            return []
        s.counters.offers_rejected += 1
        if msg.reason == "busy":    # until its next presence, or a moment
            s.offers.busy(msg.agent, now)
        return place_again(s, entry, now)
    return _on_result(s, msg, now)


def _on_offer(s: CoreState, offer: Offer, now: float, *, dup: bool = False) -> list[Action]:
    me, inbox = s.config.agent_id, s.config.topics.agent_inbox(offer.origin)
    key = f"{offer.origin}/{offer.task.id}"
    if key in s.entries:                       # a repeated offer: confirm again
        return [Publish(inbox, OfferReply("accept", offer.offer, offer.task.id, me).encode())]
    if s.answers.knows(key, now):
        return []
    reason = ""
    if s.offers.may_be_stale(now, dup=dup):
        # Sent long ago (redelivered, or waiting while this agent was away or
        # frozen): its origin may have taken it back and run it (seed 39).
        reason = "stale"
    elif s.mode.leaving:
        reason = "draining"
    elif s.mode.degraded_by:
        reason = "degraded"
    elif offer.task.kind not in s.registry:
        reason = "unknown_kind"
    elif not s.policy.accepts(s.self_state()):
        reason = "battery"
    elif peer_is_full(s.runner.queued, s.config.concurrency):
        reason = "busy"
    if reason:
        return [Publish(inbox, OfferReply("reject", offer.offer, offer.task.id, me, reason).encode())]
    s.counters.offloaded_in += 1
    entry = Entry(key=key, received=now, tokens=[], task=offer.task,
                   kind=s.registry.get(offer.task.kind), origin=offer.origin,
                   origin_offer=offer.offer)
    s.entries.add(entry)
    return [Publish(inbox, OfferReply("accept", offer.offer, offer.task.id, me).encode())] + \
        landing.accept(s, entry, now)


def _on_result(s: CoreState, msg: Result, now: float) -> list[Action]:
    entry = s.entries.get(msg.task_id)
    if entry is None or msg.offer not in entry.offer_ids or entry.origin is not None \
            or entry.state in (EntryState.ANSWERED, EntryState.DONE):
        # Answered already (re-placed, or this very result again: a peer's
        # resend after a reconnect while the answer waits on a takeover): drop it.
        s.counters.late_results += 1
        return []
    assert entry.task is not None
    actions: list[Action] = []
    if entry.offer is not None and entry.offer.offer_id == msg.offer:
        s.peers.record(msg.agent, ok=True,
                       rtt_ms=max(0.0, 1000 * (now - entry.offer.sent_at) - msg.reply.ms.run))
    clear_offer(s, entry)
    actions += running.stop_local(s, entry)                   # re-placed here meanwhile: first answer wins
    r = msg.reply
    tier = "cloud" if s.offers.is_bridge(msg.agent) else "fog"
    reply = Reply(id=entry.task.id, status=r.status, worker=r.worker or msg.agent, tier=tier,
                  result=r.result, error=r.error,
                  ms=Timing(queue=r.ms.queue, run=r.ms.run, total=1000 * (now - entry.received)))
    if r.status == "ok":
        s.counters.completed += 1
    else:
        s.counters.failed += 1
    return actions + answering.finish(s, entry, Publish(entry.task.reply_to, reply.encode()), now) + \
        running.start_queued(s, now) + rebalance(s, now)
