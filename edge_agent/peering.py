"""The agent core's peers concern: what peers say of themselves (presence:
their bid for work, their will), what cloud bridges say (health), and what
operators ask on the control topic. A concern of
:class:`fogmesh.edge_agent.core.AgentCore`: functions over its state
(:class:`fogmesh.edge_agent.core_state.CoreState`, ``s``), owning none. Pure."""

from __future__ import annotations

from fogmesh import codec
from fogmesh.announcements import BridgeHealth, Presence
from fogmesh.edge_agent import asking, failover, offloading
from fogmesh.edge_agent.actions import Action, Drain
from fogmesh.edge_agent.core_state import CoreState
from fogmesh.edge_agent.entry import EntryState
from fogmesh.edge_agent.mode import Change
from fogmesh.errors import InvalidMessage
from fogmesh.topics import is_segment


def refuse(s: CoreState, kind: str, topic: str, reason: str) -> list[Action]:
    s.counters.refused += 1
    s.refusals.refuse(kind, topic, reason)
    return []


def on_presence(s: CoreState, agent: str, payload: bytes, now: float) -> list[Action]:
    if not payload:
        s.peers.forget(agent)
        return []
    topic = s.config.topics.presence_prefix + agent
    if not is_segment(agent):
        return refuse(s, "presence", topic, "the topic's agent id is not a valid id")
    try:      # identity from the topic (the broker's ACL binds it to the login), never the payload
        presence = Presence.decode(payload, agent=agent)
    except InvalidMessage as exc:
        return refuse(s, "presence", topic, exc.message)
    if agent == s.config.agent_id:
        return []                    # its own (the shell watches it for a rival instance)
    before = s.peers.get(agent)
    s.peers.update(presence, now)
    s.offers.heard_from(agent)
    if presence.state == "online":
        if s.deaths.back(agent):
            return peer_back(s, agent, now, epoch=presence.epoch)
        # Not answered by its next presence: it may have missed the question (a
        # reconnect without a will, or a hold it has since let go of).
        return asking.ask_again(s, agent, now, epoch=presence.epoch,
                                before=before.presence.epoch if before is not None else None) + \
            offloading.rebalance(s, now)
    if presence.state == "offline":
        known = before.presence.epoch if before is not None and before.presence.instance == presence.instance \
            else None
        s.deaths.will(agent, presence.ts, now, instance=presence.instance,
                      epoch=max(known or 0, s.claims.peer_epoch(agent)))
    # Its will, or it drains: offers it has not accepted go elsewhere now.
    # What it accepted stays with it until it is dead (``failover.handle_deaths``): a
    # will also comes from a broker that shuts down, with the peer alive.
    actions: list[Action] = []
    for entry in s.entries:
        if entry.state is EntryState.OFFERED and entry.offer and entry.offer.peer == agent \
                and not entry.offer.accepted:
            actions += offloading.place_again(s, entry, now)
    return actions


def peer_back(s: CoreState, agent: str, now: float, *, epoch: int | None) -> list[Action]:
    """``agent`` is back after its will (its presence, or a claim of a later
    run or epoch says so): it gave up the claims it had made (their
    outcome may be lost: amqtt drops messages in flight), so what it won
    with them is contested now. Not what it won with claims of its new
    epoch: it holds those, and would not compete for them. Its epoch is the
    newest it said, in a presence or in a claim: a presence it sent before
    the drop can arrive after the will (a broker behind on this agent's
    messages), after claims of its new connection, and taking it at its
    word would contest them."""
    newest = max(epoch or 0, s.claims.peer_epoch(agent)) or None
    return failover.contest(s, agent, now, epoch=newest) + asking.ask_again(s, agent) + offloading.rebalance(s, now)


def on_bridge(s: CoreState, site: str, payload: bytes, now: float) -> list[Action]:
    """A cloud bridge's health (``bridge/{site}``): it takes heavy tasks while
    online. Who it is comes from the topic: ``bridge-{site}``."""
    if not payload:
        return []
    try:
        h = BridgeHealth.decode(payload, site=site)
    except InvalidMessage as exc:
        return refuse(s, "bridge", s.config.topics.bridge_prefix + site, exc.message)
    if h.state == "degraded":     # alive, delivering what it holds, taking nothing new
        s.offers.bridge_away(h.agent)
        s.deaths.back(h.agent)
    elif h.state == "online":
        s.offers.bridge_online(h.agent, h.kinds, now)
        s.deaths.back(h.agent)
    elif s.offers.bridge_away(h.agent):
        s.deaths.will(h.agent, h.ts, now)   # re-placed after the grace
    return []


def cloud_for(s: CoreState, kind: str, now: float, *, exclude: set[str]) -> str | None:
    return s.offers.cloud_for(kind, now, exclude=exclude)


def on_control(s: CoreState, payload: bytes) -> list[Action]:
    try:
        op = codec.decode(payload).get("op")
    except (InvalidMessage, AttributeError):
        op = None
    if op != "drain":
        return refuse(s, "control", s.config.topics.agent_control(s.config.agent_id),
                      'a control message is {"op": "drain"}')
    if s.mode.draining:
        return []
    s.mode.change(Change.DRAIN)       # (stopping: unchanged; the shell drains once)
    return [Drain()]
