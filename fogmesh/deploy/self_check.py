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

from typing import Any, Callable, Mapping

from fogmesh import codec
from fogmesh.deploy.manifest import Manifest
from fogmesh.topics import Topics

__all__ = ["SAYS_NOTHING", "SelfCheck", "health_task", "judge", "task_id"]

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


class SelfCheck:
    def __init__(self, *, agent: str, topics: Topics, timeout_s: float) -> None:
        self.agent, self.topics, self.timeout_s = agent, topics, timeout_s
        self.topic = topics.agent_topic(agent, "deploy-health")
        self._replies: list[bytes] = []
        self._n = 0

    def take(self, payload: bytes) -> None:
        """A reply on :attr:`topic` (the receiver's thread)."""
        self._replies.append(payload)

    def run(self, manifest: Manifest, *, publish: Callable[[str, bytes], Any], pump: Callable[[float], None],
            clock: Callable[[], float]) -> str | None:
        """None if every kind answered (or said nothing either way); else what failed.
        ``pump(until)`` takes messages until then (a newer desired state pre-empts)."""
        for kind, spec in sorted(manifest.kinds.items()):
            self._n += 1
            task_id = f"deploy-health-{manifest.digest[:8]}-{kind}-{self._n}-{self.agent}"
            self._replies.clear()
            publish(self.topics.agent_tasks(self.agent), codec.encode(
                {"id": task_id, "kind": kind, "args": dict(spec.health_args), "weight": "light",
                 "reply_to": self.topic}))
            deadline = clock() + self.timeout_s
            while clock() < deadline:
                reply = next((r for r in map(codec.decode, self._replies) if r.get("id") == task_id), None)
                if reply is not None:
                    error = reply.get("error") or {}
                    if reply.get("status") == "ok" or error.get("code") in SAYS_NOTHING:
                        break
                    return f"its health-check task of {kind} failed on this agent: {error.get('code')}: " \
                           f"{error.get('message')}"
                pump(deadline)
        return None
