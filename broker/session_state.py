"""What an MQTT session holds, and what the embedded broker keeps of its own
state across a restart (pure).

A client that connects with clean session 0 has a session that outlives its
connection (MQTT 3.1.2.4): its subscriptions, the QoS 1 and 2 messages sent
to it and not yet acknowledged, the QoS 2 messages it sent whose PUBREL has
not come, and the QoS 1 and 2 messages that matched its subscriptions while
it was away. A clean session lasts as long as its connection, and a
clean-session CONNECT discards any session the client had.

The embedded broker writes these sessions, the retained messages and its
shared-subscription groups to a file when it stops (and every few seconds),
and starts from it again, as mosquitto does with its persistence file. This
module says what that state is and how it reads and writes as bytes;
:mod:`fogmesh.broker.embedded.persistence` takes it out of amqtt and puts it
back.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from fogmesh import codec
from fogmesh.broker.shared import GroupState, Queued, ShareFilter

FORMAT = "fogmesh-embedded-broker-state"
VERSION = 1


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False


@dataclass(frozen=True)
class InFlight:
    """A QoS 1 or 2 message between the broker and a client, not yet through
    its flow. ``released``: QoS 2, the PUBREC came and the PUBREL went."""

    packet_id: int
    message: Message
    released: bool = False


PUBLISH_AGAIN = "publish"      # the PUBLISH again, DUP set, with its packet id
RELEASE_AGAIN = "pubrel"       # the PUBREL again (the client has the message)


def resend(entry: InFlight) -> str:
    """What goes again down the client's next connection for a message the
    broker sent it and that was not acknowledged [MQTT-4.4.0-1]: a QoS 1
    message, or a QoS 2 one without its PUBREC, is published again with DUP
    set [MQTT-3.3.1-1]; a QoS 2 message whose PUBREC came has its PUBREL sent
    again (the client holds it: publishing it again could deliver it twice)."""
    return RELEASE_AGAIN if entry.message.qos == 2 and entry.released else PUBLISH_AGAIN


def on_connect(*, clean: bool, existing_clean: bool | None) -> tuple[bool, bool]:
    """A CONNECT meets the session the client had (``existing_clean``: None
    for none, else whether it was a clean one). Returns (discard the
    existing session, session present in the CONNACK).

    A clean-session CONNECT discards it [MQTT-3.1.2-6]; a clean session is
    never resumed, even when its connection is still being taken over
    (it ended with that connection); a persistent one is [MQTT-3.1.2-4],
    with session present 1 [MQTT-3.2.2-2]."""
    if existing_clean is None:
        return False, False
    if clean or existing_clean:
        return True, False
    return False, True


def kept_after_connection(*, clean: bool) -> bool:
    """Whether the session outlives its connection [MQTT-3.1.2-5, 3.1.2-6]."""
    return not clean


@dataclass
class SessionState:
    """A persistent session as kept across the broker's restart. Shared
    subscriptions are kept with their group (:class:`GroupState`)."""

    client_id: str
    subscriptions: dict[str, int] = field(default_factory=dict)       # filter -> granted QoS
    outgoing: list[InFlight] = field(default_factory=list)            # sent, unacknowledged
    incoming: list[InFlight] = field(default_factory=list)            # QoS 2 received, PUBREL awaited
    queued: list[Message] = field(default_factory=list)               # matched while away
    last_packet_id: int = 0


@dataclass
class BrokerState:
    sessions: list[SessionState] = field(default_factory=list)
    retained: list[Message] = field(default_factory=list)
    groups: list[GroupState] = field(default_factory=list)

    @property
    def messages(self) -> int:
        """How many messages it holds (for a log line)."""
        return (len(self.retained) + sum(len(g.waiting) + sum(map(len, g.held.values())) for g in self.groups)
                + sum(len(s.outgoing) + len(s.incoming) + len(s.queued) for s in self.sessions))


# -- as bytes -----------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _message(m: Message) -> list[Any]:
    return [m.topic, _b64(m.payload), m.qos, m.retain]


def _queued(q: Queued) -> list[Any]:
    return [q.topic, _b64(q.payload), q.seq, q.dup]


def _read_queued(item: Any) -> Queued:
    topic, payload, seq, dup = item
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise ValueError(f"bad sequence number {seq!r}")
    return Queued(_text(topic), _unb64(payload), seq, bool(dup))


def _inflight(e: InFlight) -> list[Any]:
    return [e.packet_id, _message(e.message), e.released]


def encode(state: BrokerState) -> bytes:
    """The state as UTF-8 JSON (payloads in base64)."""
    return codec.encode({
        "format": FORMAT, "version": VERSION,
        "sessions": [{"client_id": s.client_id, "subscriptions": s.subscriptions,
                      "outgoing": [_inflight(e) for e in s.outgoing],
                      "incoming": [_inflight(e) for e in s.incoming],
                      "queued": [_message(m) for m in s.queued], "last_packet_id": s.last_packet_id}
                     for s in state.sessions],
        "retained": [_message(m) for m in state.retained],
        "groups": [{"group": g.share.group, "filter": g.share.topic_filter, "members": g.members,
                    "waiting": [_queued(q) for q in g.waiting], "seq": g.seq,
                    "held": {c: [_queued(q) for q in ms] for c, ms in g.held.items()}}
                   for g in state.groups],
    })


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("a payload is not base64 text")
    return base64.b64decode(text.encode("ascii"), validate=True)


def _qos(value: Any) -> int:
    if value not in (0, 1, 2) or isinstance(value, bool):
        raise ValueError(f"bad QoS {value!r}")
    return int(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    return value


def _packet_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ValueError(f"bad packet id {value!r}")
    return value


def _read_message(item: Any) -> Message:
    topic, payload, qos, retain = item
    return Message(_text(topic), _unb64(payload), _qos(qos), bool(retain))


def _read_inflight(item: Any) -> InFlight:
    packet_id, message, released = item
    return InFlight(_packet_id(packet_id), _read_message(message), bool(released))


def _qos_map(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError("expected an object of QoS")
    return {_text(k): _qos(q) for k, q in value.items()}


def decode(data: bytes) -> BrokerState:
    """What :func:`encode` wrote; ValueError for anything else (a file cut
    short, another program's, a later version's)."""
    try:
        doc = codec.decode(data)
    except Exception as exc:            # InvalidMessage: not JSON
        raise ValueError(f"not a broker state file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError("not a broker state file")
    if doc.get("version") != VERSION:
        raise ValueError(f"broker state version {doc.get('version')!r}, this fogmesh reads {VERSION}")
    try:
        sessions = [SessionState(_text(s["client_id"]), _qos_map(s["subscriptions"]),
                                 [_read_inflight(e) for e in s["outgoing"]],
                                 [_read_inflight(e) for e in s["incoming"]],
                                 [_read_message(m) for m in s["queued"]], _packet_id(s["last_packet_id"]))
                    for s in doc["sessions"]]
        retained = [_read_message(m) for m in doc["retained"]]
        groups = [GroupState(ShareFilter(_text(g["group"]), _text(g["filter"])), _qos_map(g["members"]),
                             tuple(_read_queued(q) for q in g["waiting"]), int(g["seq"]),
                             {_text(c): tuple(_read_queued(q) for q in ms) for c, ms in g["held"].items()})
                  for g in doc["groups"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"a broken broker state file: {exc!r}") from None
    return BrokerState(sessions, retained, groups)
