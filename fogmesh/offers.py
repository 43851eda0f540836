"""The offload protocol between agents, as messages. Pure.

The origin (the agent a task landed on) stays responsible for the task: it
offers it to a peer's inbox with a lease, the peer accepts or rejects, runs it
and sends the result back to the origin's inbox, and only the origin publishes
the reply to the device. So a late result from a peer presumed dead (after the
origin re-placed the task) is simply dropped by the origin: one reply per task.

    origin                              peer
      |-- offer {offer, task, lease} --->|
      |<-------- accept | reject --------|   (no answer within the lease: re-place)
      |<------- result {reply} ----------|   (none within timeout + lease: re-place)
      |-- reply to the device's reply_to
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from fogmesh import codec
from fogmesh.errors import InvalidMessage
from fogmesh.messages import Reply, Task

REJECT_REASONS = ("busy", "draining", "degraded", "battery", "unknown_kind", "bad_offer")
HAVE_STATES = ("held", "answered", "none")


@dataclass(frozen=True)
class Offer:
    offer: str
    origin: str
    task: Task
    lease_ms: int

    def encode(self) -> bytes:
        return codec.encode({"op": "offer", "offer": self.offer, "origin": self.origin,
                             "lease_ms": self.lease_ms, "task": self.task.to_dict()})


@dataclass(frozen=True)
class Answer:
    """accept or reject of an offer."""

    op: str
    offer: str
    task_id: str
    agent: str
    reason: str = ""

    def encode(self) -> bytes:
        return codec.encode({"op": self.op, "offer": self.offer, "task": self.task_id,
                             "agent": self.agent, "reason": self.reason})


@dataclass(frozen=True)
class Result:
    offer: str
    task_id: str
    agent: str
    reply: Reply

    def encode(self) -> bytes:
        return codec.encode({"op": "result", "offer": self.offer, "task": self.task_id,
                             "agent": self.agent, "reply": self.reply.to_dict()})


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


InboxMessage = Union[Offer, Answer, Result, Have]


def _str(d: dict[str, Any], name: str) -> str:
    v = d.get(name)
    if not isinstance(v, str) or not v or len(v) > 300:
        raise InvalidMessage("bad_field", f"inbox message: {name!r} must be a non-empty string")
    return v


def decode_inbox(payload: bytes) -> InboxMessage:
    """Parse an inbox message; anything forged or garbled raises InvalidMessage."""
    d = codec.decode(payload)
    if not isinstance(d, dict):
        raise InvalidMessage("not_object", "inbox message must be a JSON object")
    op = d.get("op")
    if op == "offer":
        lease = d.get("lease_ms")
        if isinstance(lease, bool) or not isinstance(lease, int) or not 1 <= lease <= 3_600_000:
            raise InvalidMessage("bad_field", "offer: lease_ms must be 1..3600000")
        return Offer(_str(d, "offer"), _str(d, "origin"), Task.from_dict(d.get("task")), lease)
    if op in ("accept", "reject"):
        return Answer(op, _str(d, "offer"), _str(d, "task"), _str(d, "agent"), str(d.get("reason", ""))[:100])
    if op == "result":
        reply = Reply.from_dict(d.get("reply"))
        return Result(_str(d, "offer"), _str(d, "task"), _str(d, "agent"), reply)
    if op == "have":
        state = d.get("state")
        if state not in HAVE_STATES:
            raise InvalidMessage("bad_field", f"have: state must be one of {HAVE_STATES}")
        sent_to, sent = d.get("reply_to"), d.get("reply")
        if isinstance(sent_to, str) and isinstance(sent, dict):
            return Have(_str(d, "task"), _str(d, "agent"), state, sent_to, codec.encode(sent))
        return Have(_str(d, "task"), _str(d, "agent"), state)
    raise InvalidMessage("bad_field", f"inbox message: unknown op {op!r}")
