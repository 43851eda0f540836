"""Exactly-one execution on brokers without shared subscriptions (amqtt).

Every agent receives every task. An agent that wants a task publishes a claim
``{"task": key, "agent": id}`` on the single topic ``{root}/claims``. A broker
forwards the messages of one topic to each subscriber in the order it received
them, so every agent sees the same first claim for a key, and that claim's
agent runs the task; the others drop it. Less loaded agents claim sooner
(:func:`claim_delay`), so the first claim also balances load. Pure functions.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Any

from fogmesh import codec
from fogmesh.errors import InvalidMessage
from fogmesh.topics import is_segment


@dataclass(frozen=True)
class Claim:
    """One record on the claims topic. ``op``:

    - "claim" (the default, omitted on the wire): ``agent`` wants ``task``.
    - "done": the winner answers ``task``. Published *before* the answer and
      carrying it (``reply_to``, ``reply``: the exact JSON bytes), so that if the
      winner dies between the two, a survivor re-delivers that same answer
      instead of running the task a second time.
    - "sent": the broker has the answers of ``tasks``: peers drop the copies
      they kept from the "done" records. A "done" record carries ``tasks`` too,
      so under load confirmations cost no message of their own.
    - "ask": ``agent`` got ``task`` submitted again (``attempt`` > 1) through a
      shared subscription and asks every peer whether it holds or answered it
      (each says so in ``agents/{agent}/inbox``; see :mod:`fogmesh.edge_agent.asking`).

    ``epoch`` (on a claim): how many control connections the claimer had lost
    when it made the claim. An agent back after its will announces its epoch;
    peers contest only what it won with an older one. Those claims may reach
    peers after the will (the client resends them on reconnect), and the agent
    gave them up when its connection dropped; what it won since, it holds.

    ``instance``: the claimer's run (its presence's ``instance``). A record
    from a run other than the one whose will came, or of a later epoch, shows
    that agent alive again, though its presence has not said so yet (it holds
    it back at start-up until its task subscriptions are in).
    """

    task: str
    agent: str
    op: str = "claim"
    reply_to: str | None = None
    reply: bytes | None = None
    tasks: tuple[str, ...] = ()
    epoch: int | None = None
    instance: str | None = None

    def encode(self) -> bytes:
        d: dict[str, Any] = {"task": self.task, "agent": self.agent}
        if self.op != "claim":
            d["op"] = self.op
        if self.epoch is not None:
            d["epoch"] = self.epoch
        if self.instance is not None:
            d["instance"] = self.instance
        if self.tasks:
            d["tasks"] = list(self.tasks)
        if self.reply_to is not None:
            d["reply_to"] = self.reply_to
        return codec.encode_with(d, "reply", self.reply)

    @classmethod
    def decode(cls, payload: bytes) -> Claim:
        d: Any = codec.decode(payload)
        if not (isinstance(d, dict) and isinstance(d.get("task"), str)
                and is_segment(d.get("agent"))
                and d.get("op", "claim") in ("claim", "done", "sent", "ask")
                and (d["task"] or d.get("op") == "sent")):
            raise InvalidMessage("bad_field", "a claim is {\"task\": str, \"agent\": str"
                                 "[, \"op\": \"done\"|\"sent\"]}")
        tasks = d.get("tasks", [])
        if not (isinstance(tasks, list) and all(isinstance(k, str) for k in tasks)):
            raise InvalidMessage("bad_field", "a sent record's \"tasks\" is a list of task keys")
        reply_to, reply = d.get("reply_to"), d.get("reply")
        if not (isinstance(reply_to, str) and isinstance(reply, dict)):
            reply_to, reply = None, None
        epoch = d.get("epoch")
        if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0):
            epoch = None
        instance = d.get("instance")
        if not (isinstance(instance, str) and 0 < len(instance) <= 64):
            instance = None
        return cls(d["task"], d["agent"], d.get("op", "claim"), reply_to=reply_to,
                   reply=codec.encode(reply) if reply is not None else None, tasks=tuple(tasks), epoch=epoch,
                   instance=instance)


def takeover_key(key: str, n: int = 1) -> str:
    """The claim key under which a task held by a dead (or cut-off) agent is
    won again: by a survivor taking it over, or by its holder coming back.
    ``n``: the takeover's round; the winner of round 1 may die or be cut off
    too, and the task is won again in round 2 (``<id>#t#t``), and so on."""
    return key + "#t" * n


def taken_over(claim: str) -> tuple[str, int] | None:
    """The task key and round of a takeover claim key; None for any other."""
    n = 0
    while claim.endswith("#t"):
        claim, n = claim[:-2], n + 1
    return (claim, n) if n else None


def rescue_key(agent: str, since: float) -> str:
    """The claim key that elects the one survivor that rescues a dead agent's
    MQTT session (``since``: the ts of its will, the same for everyone)."""
    return f"rescue:{agent}:{since}"


def claim_key(task_id: str | None, payload: bytes) -> str:
    """The key agents agree on: the task id, or a digest of an unparseable payload
    (so even garbage gets exactly one dead letter, not one per agent)."""
    if task_id is not None:
        return task_id
    return "raw:" + hashlib.sha256(payload).hexdigest()[:32]


def claim_delay(*, queued: int, running: int, capacity: int) -> float:
    """Seconds to wait before claiming: 0 with a free slot, then 1 ms per task
    waiting, up to 50 ms. A busy agent still claims (late), so a task is never
    left unclaimed when every agent is busy."""
    if running < capacity and queued == 0:
        return 0.0
    return min(0.001 * (1 + queued + max(0, running - capacity + 1)), 0.05)


def tie_break(key: str, agent_id: str, *, spread: float = 0.001) -> float:
    """A deterministic 0..``spread`` s offset per (task, agent): among equally
    idle agents it lets a different one win each task, instead of always the
    one the broker serves first. Applied only once peers have been seen."""
    return spread * (zlib.crc32(f"{key}|{agent_id}".encode()) % 1000) / 1000
