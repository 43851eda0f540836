"""The asking protocol's messages (shared dispatch): a resubmitted task
that lands on an agent that does not know it is asked about on the claims
topic (an ``ask`` record, :class:`fogmesh.claims.Claim` with ``op="ask"``),
and every peer answers on the asker's inbox with a :class:`Have`. The
decisions are :mod:`fogmesh.edge_agent.asking`'s. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fogmesh import codec
from fogmesh.errors import InvalidMessage
from fogmesh.topics import is_segment

HAVE_STATES = ("held", "answered", "none")


def text_field(d: dict[str, Any], name: str) -> str:
    """A required non-empty string field of an inbox message (at most 300 characters)."""
    v = d.get(name)
    if not isinstance(v, str) or not v or len(v) > 300:
        raise InvalidMessage("bad_field", f"inbox message: {name!r} must be a non-empty string")
    return v


def box_field(d: dict[str, Any], name: str) -> str:
    """A required agent id of an inbox message: one topic level (the agent's
    own inbox is built from it), so over 128 characters or with ``/``, ``+``,
    ``#`` or a leading ``$`` it is refused."""
    v = d.get(name)
    if not is_segment(v):
        raise InvalidMessage("bad_field", f"inbox message: {name!r} must be an agent id (1-128 characters, "
                             "no '/', '+', '#', not starting with '$')")
    return str(v)


@dataclass(frozen=True)
class Have:
    """What a peer knows of a task another agent asked about (a resubmission
    that landed there): it holds it, answered it (``reply``: the exact bytes
    it sent, when kept), or has never seen it. See :mod:`fogmesh.edge_agent.asking`."""

    task_id: str
    agent: str
    state: str
    reply_to: str | None = None
    reply: bytes | None = None

    def encode(self) -> bytes:
        d: dict[str, Any] = {"op": "have", "task": self.task_id, "agent": self.agent, "state": self.state}
        if self.reply_to is not None:
            d["reply_to"] = self.reply_to
        return codec.encode_with(d, "reply", self.reply)


def decode_have(d: dict[str, Any]) -> Have:
    state = d.get("state")
    if state not in HAVE_STATES:
        raise InvalidMessage("bad_field", f"have: state must be one of {HAVE_STATES}")
    sent_to, sent = d.get("reply_to"), d.get("reply")
    if isinstance(sent_to, str) and isinstance(sent, dict):
        return Have(text_field(d, "task"), box_field(d, "agent"), state, sent_to, codec.encode(sent))
    return Have(text_field(d, "task"), box_field(d, "agent"), state)
