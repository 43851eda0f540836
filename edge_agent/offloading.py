"""The agent core's offloading concern: offers to peers, their answers and
results, and moving queued work to peers that free up. A concern of
:class:`fogmesh.edge_agent.core.AgentCore`: it owns no state, and decides with
the parts :class:`fogmesh.edge_agent.core_parts.CoreParts` names. Pure."""

from __future__ import annotations

from fogmesh import codec
from fogmesh.asks import Have
from fogmesh.edge_agent.actions import Action, Publish
from fogmesh.edge_agent.core_parts import CoreParts
from fogmesh.edge_agent.entry import Entry, EntryState
from fogmesh.edge_agent.peers import Peer
from fogmesh.edge_agent.placement import LocalPolicy, peer_is_full
from fogmesh.errors import InvalidMessage
from fogmesh.messages import Reply, Timing
from fogmesh.offers import Offer, OfferReply, Result, decode_inbox


class OffloadingConcern(CoreParts):
    def _rebalance(self, now: float, *, limit: int = 8) -> list[Action]:
        """Offer tasks waiting in the local queue (newest first: they would wait
        longest) while the policy prefers a peer. Placement at arrival sees a
        burst as one moment; this runs again whenever a peer frees up."""
        if not self.runner.queued or isinstance(self.policy, LocalPolicy):
            return []
        actions: list[Action] = []
        for key in reversed(self.runner.waiting_for_later()):
            entry = self.entries[key]
            if entry.origin is not None or entry.task is None or entry.kind is None:
                continue
            peer = self._placement(entry, now, with_cloud=False)
            if peer is None:
                if (entry.task.weight or entry.kind.weight) != "light":
                    break
                continue
            self.runner.dequeue(key)
            actions += self._offer(entry, peer, now)
            limit -= 1
            if limit == 0:
                break
        return actions

    def _peer_views(self, now: float) -> list[Peer]:
        """Live peers as placement should see them: their presence plus the
        offers this agent has sent them since (presence lags a burst), minus
        peers that just said they are busy."""
        return self.offers.views(self.peers.live(now), now)

    # -- offloading ----------------------------------------------------------------------
    def _offer(self, entry: Entry, peer: str, now: float) -> list[Action]:
        assert entry.task is not None
        offer_id = f"{self.config.agent_id}:{entry.key}:{len(entry.offer_ids) + 1}"
        # A bridge commits each offer to disk before it accepts: give it longer.
        lease = self.config.offer_lease_s * (5 if self.offers.is_bridge(peer) else 1)
        self.entries.offered(entry, peer, offer_id, now, lease_until=now + lease)
        self.offers.sent(peer)
        self.counters.offers_sent += 1
        lease_ms = int(1000 * self.config.offer_lease_s)
        return [Publish(self.config.topics.agent_inbox(peer),
                        Offer(offer_id, self.config.agent_id, entry.task, lease_ms).encode())]

    def _replace(self, entry: Entry, now: float) -> list[Action]:
        """The offer failed (rejected, lease expired, peer died): place it again,
        never on a peer already tried."""
        if entry.offer is not None:
            self.peers.record(entry.offer.peer, ok=False)
        self._clear_offer(entry)
        self.entries.stop_timers(entry)
        return self._accept(entry, now)

    def _clear_offer(self, entry: Entry) -> None:
        if entry.offer is not None:
            self.offers.settled(entry.offer.peer)
            self.entries.offer_ended(entry)

    def _on_inbox(self, payload: bytes, now: float) -> list[Action]:
        if b'"op":"order-view"' in payload:
            try:
                view = codec.decode(payload)
            except InvalidMessage:
                return []
            return self.order.on_view(view, now) if isinstance(view, dict) else []
        try:
            msg = decode_inbox(payload)
        except InvalidMessage:
            self.counters.bad_inbox += 1     # forged or garbled: ignore; leases cover the rest
            return []
        if isinstance(msg, Offer):
            return self._on_offer(msg, now)
        if isinstance(msg, Have):
            return self._on_have(msg, now)
        if isinstance(msg, OfferReply):
            entry = self.entries.get(msg.task_id)
            if entry is None or entry.offer is None or entry.offer.offer_id != msg.offer \
                    or entry.state is not EntryState.OFFERED or msg.agent != entry.offer.peer:
                return []
            if msg.op == "accept":
                assert entry.kind is not None
                self.counters.offers_accepted += 1
                hold = self.config.cloud_lease_s if self.offers.is_bridge(msg.agent) else entry.kind.timeout_s
                self.entries.offer_accepted(entry, lease_until=now + hold + self.config.offer_lease_s)
                return []
            self.counters.offers_rejected += 1
            if msg.reason == "busy":    # until its next presence, or a moment
                self.offers.busy(msg.agent, now)
            return self._replace(entry, now)
        return self._on_result(msg, now)

    def _on_offer(self, offer: Offer, now: float) -> list[Action]:
        me, inbox = self.config.agent_id, self.config.topics.agent_inbox(offer.origin)
        key = f"{offer.origin}/{offer.task.id}"
        if key in self.entries:                       # a repeated offer: confirm again
            return [Publish(inbox, OfferReply("accept", offer.offer, offer.task.id, me).encode())]
        if self.answers.knows(key, now):
            return []
        reason = ""
        if self.mode.leaving:
            reason = "draining"
        elif self.mode.degraded_by:
            reason = "degraded"
        elif offer.task.kind not in self.registry:
            reason = "unknown_kind"
        elif not self.policy.accepts(self.self_state()):
            reason = "battery"
        elif peer_is_full(self.runner.queued, self.config.concurrency):
            reason = "busy"
        if reason:
            return [Publish(inbox, OfferReply("reject", offer.offer, offer.task.id, me, reason).encode())]
        self.counters.offloaded_in += 1
        entry = Entry(key=key, received=now, tokens=[], task=offer.task,
                       kind=self.registry.get(offer.task.kind), origin=offer.origin,
                       origin_offer=offer.offer)
        self.entries.add(entry)
        return [Publish(inbox, OfferReply("accept", offer.offer, offer.task.id, me).encode())] + \
            self._accept(entry, now)

    def _on_result(self, msg: Result, now: float) -> list[Action]:
        entry = self.entries.get(msg.task_id)
        if entry is None or msg.offer not in entry.offer_ids or entry.origin is not None \
                or entry.state in (EntryState.ANSWERED, EntryState.DONE):
            # Answered already (re-placed, or this very result again: a peer's
            # resend after a reconnect while the answer waits on a takeover): drop it.
            self.counters.late_results += 1
            return []
        assert entry.task is not None
        actions: list[Action] = []
        if entry.offer is not None and entry.offer.offer_id == msg.offer:
            self.peers.record(msg.agent, ok=True,
                              rtt_ms=max(0.0, 1000 * (now - entry.offer.sent_at) - msg.reply.ms.run))
        self._clear_offer(entry)
        actions += self._stop_local(entry)                   # re-placed here meanwhile: first answer wins
        r = msg.reply
        tier = "cloud" if self.offers.is_bridge(msg.agent) else "fog"
        reply = Reply(id=entry.task.id, status=r.status, worker=r.worker or msg.agent, tier=tier,
                      result=r.result, error=r.error,
                      ms=Timing(queue=r.ms.queue, run=r.ms.run, total=1000 * (now - entry.received)))
        if r.status == "ok":
            self.counters.completed += 1
        else:
            self.counters.failed += 1
        return actions + self._finish(entry, Publish(entry.task.reply_to, reply.encode()), now) + \
            self._start_queued(now) + self._rebalance(now)
