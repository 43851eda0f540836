"""The offload protocol between agents, as messages, and the decoding of
everything an agent's inbox carries (offers, their replies and results, and
the asking protocol's ``have``, :mod:`fogmesh.asks`). Pure.

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
from typing import Union

from fogmesh import codec
from fogmesh.asks import Have, box_field, decode_have, text_field
from fogmesh.errors import InvalidMessage
from fogmesh.messages import Reply, Task

REJECT_REASONS = ("busy", "draining", "degraded", "battery", "unknown_kind", "bad_offer", "stale")


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
class OfferReply:
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


InboxMessage = Union[Offer, OfferReply, Result, Have]


_str = text_field


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
        return Offer(_str(d, "offer"), box_field(d, "origin"), Task.from_dict(d.get("task")), lease)
    if op in ("accept", "reject"):
        return OfferReply(op, _str(d, "offer"), _str(d, "task"), box_field(d, "agent"),
                          str(d.get("reason", ""))[:100])
    if op == "result":
        reply = Reply.from_dict(d.get("reply"))
        return Result(_str(d, "offer"), _str(d, "task"), box_field(d, "agent"), reply)
    if op == "have":
        return decode_have(d)
    raise InvalidMessage("bad_field", f"inbox message: unknown op {op!r}")
