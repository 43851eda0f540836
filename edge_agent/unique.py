"""One live agent per id: checked before an agent takes its MQTT sessions.

Why: two agents started with the same ``--id`` (two hosts, one config file)
share one MQTT client id, so the broker keeps disconnecting one for the
other; both take tasks, both win the same claims (claims name the agent id),
and tasks run twice. Before connecting under its id, an agent looks at the
retained presence of that id with a throwaway client. Offline (a clean stop,
or a crash whose will fired) or none: the id is free. Online: a live agent
announces itself every presence period, so a fresh announcement within
``wait_s`` means the id is in use and this one refuses to start; silence means
that agent died without its will having fired yet (a power cut: the broker
has not noticed), and the id is free. A retained "online" far older than a
period (:func:`long_silent`) needs no wait: nobody live stands behind it.

Two agents started within the same second both pass this check; the shell
then sees the other's presence under its own id and the later one leaves
(see ``Agent``).
"""

from __future__ import annotations

import queue
import time
from datetime import datetime, timezone

from fogmesh import codec
from fogmesh.announcements import Presence
from fogmesh.errors import AgentIdInUse, InvalidMessage
from fogmesh.mqtt import BrokerUrl, Message, MqttClient
from fogmesh.topics import Topics


def when(ts: float | None) -> str:
    if not ts:
        return "an unknown time"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def in_use_error(agent_id: str, other: Presence) -> AgentIdInUse:
    return AgentIdInUse(f"an agent with id {agent_id!r} is already online (running since {when(other.since)}, "
                        f"instance {other.instance or '?'}); give this one another --id, or stop the other first")


#: How far apart two boxes' clocks may be for the check to trust a presence's age.
CLOCK_SKEW_S = 30.0


def long_silent(retained: Presence, *, now: float, wait_s: float) -> bool:
    """Whether a retained "online" presence of this id is so old (by its
    ``ts``, allowing :data:`CLOCK_SKEW_S` between two boxes' clocks) that no
    live agent stands behind it: a live one announces again every period.
    A whole box back from a power cut (its broker and agents at once: no will
    fired) finds its own last words so, and need not wait for a fresh one
    while its shared subscriptions are not there to take what devices send
    (mosquitto 2.0 does not restore them). A rival that does live after all
    is still found once both run: the later one leaves (see ``Agent``)."""
    if not retained.ts:
        return False
    return now - retained.ts > _announces_within(retained, wait_s) + CLOCK_SKEW_S


def _announces_within(retained: Presence, wait_s: float) -> float:
    """How long a live agent behind ``retained`` takes at most to announce
    again (its period grows with a large site)."""
    return max(wait_s, 1.5 * (retained.period or 0.0) + 1.0)


def check_id_free(url: BrokerUrl | str, topics: Topics, agent_id: str, *, instance: str,
                  wait_s: float, connect_timeout: float | None = 10.0) -> None:
    """Raise :class:`AgentIdInUse` if another agent with ``agent_id`` is online."""
    got: queue.SimpleQueue[Message] = queue.SimpleQueue()
    client = MqttClient(url, client_id=f"fogmesh-idcheck-{instance}", on_message=got.put)
    client.start(timeout=connect_timeout)
    marker = topics.probe(f"idcheck-{instance}")
    try:
        client.subscribe(topics.presence(agent_id), 1)
        client.subscribe(marker, 1)
        # A broker sends a subscription's retained message before anything
        # published after it: once our own marker is back, any retained
        # presence has arrived too.
        client.publish(marker, b"{}", qos=1)
        retained = _next(got, 5.0, until=marker)
        if retained is None or retained.state == "offline" or long_silent(retained, now=time.time(), wait_s=wait_s):
            return
        deadline = time.monotonic() + _announces_within(retained, wait_s)
        while (left := deadline - time.monotonic()) > 0:
            fresh = _next(got, left)
            if fresh is None or fresh.state == "offline":
                return
            if fresh.instance != instance:
                raise in_use_error(agent_id, fresh)
    finally:
        client.stop()


def _next(got: queue.SimpleQueue[Message], timeout: float, *, until: str | None = None) -> Presence | None:
    """The next presence within ``timeout`` (or, with ``until``, the last one
    before a message on that topic)."""
    deadline = time.monotonic() + timeout
    last: Presence | None = None
    while (left := deadline - time.monotonic()) > 0:
        try:
            m = got.get(timeout=left)
        except queue.Empty:
            return last
        if until is not None and m.topic == until:
            return last
        if not m.payload:
            continue
        try:
            p = Presence.from_dict(codec.decode(m.payload))
        except InvalidMessage:
            continue
        if until is None:
            return p
        last = p
    return last
