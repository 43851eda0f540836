"""The check after the switch: each kind's health task sent to the agent
itself, through its own task topic (weight ``light``, so it runs there),
with the reply on ``agents/{id}/deploy-health``: the whole path, the core
and a renewed worker loading the new environment (or starting the new
container) included. A handler's failure is the verdict; a busy, degraded
or slow agent says nothing about the version (the check before the switch
passed), so those answers, or none within the timeout, keep it.

Pure: the task, and what a reply says. :mod:`fogmesh.deploy.flow` asks
(one kind at a time, with its deadline); the receiver publishes."""

from __future__ import annotations

from typing import Any, Mapping

from fogmesh import codec

__all__ = ["SAYS_NOTHING", "health_task", "judge", "task_id"]

#: Answers that say nothing about the version.
SAYS_NOTHING = ("busy", "degraded", "draining", "deadline", "timeout")


def task_id(*, digest: str, kind: str, n: int, agent: str) -> str:
    """The id of the ``n``-th health task this agent sends itself."""
    return f"deploy-health-{digest[:8]}-{kind}-{n}-{agent}"


def health_task(*, task: str, kind: str, args: Mapping[str, Any], reply_to: str) -> bytes:
    """The task message (on the agent's own ``agents/{id}/tasks``)."""
    return codec.encode({"id": task, "kind": kind, "args": dict(args), "weight": "light", "reply_to": reply_to})


def judge(reply: Mapping[str, Any], kind: str) -> str | None:
    """None if ``reply`` keeps the version (it answered, or said nothing
    either way); else what failed."""
    error = reply.get("error") or {}
    if not isinstance(error, Mapping):
        error = {"code": "handler_error", "message": str(error)}
    if reply.get("status") == "ok" or error.get("code") in SAYS_NOTHING:
        return None
    return f"its health-check task of {kind} failed on this agent: {error.get('code')}: {error.get('message')}"
