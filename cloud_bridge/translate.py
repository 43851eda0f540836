"""What the cloud bridge makes of what crosses it, pure: a fog task as the
cloud's task, a cloud result as the fog's, why an offer is refused, the
error a refused task gets with ``--fallback error``, where a sensor summary
goes up. The bridge (:mod:`fogmesh.cloud_bridge.bridge`) does the IO."""

from __future__ import annotations

from fogmesh.messages import DEFAULT_LIMITS, Reply, Task, Timing
from fogmesh.topics import is_segment


def outbox_key(origin: str, task_id: str) -> str:
    """A task's key in the outbox: task ids are unique per origin agent only."""
    return f"{origin}/{task_id}"


def task_of(key: str) -> str:
    """The task id back from an outbox key (agent ids hold no '/')."""
    return key.split("/", 1)[1]


def refusal(task: Task, *, kinds: set[str] | frozenset[str] | list[str], link_up: bool,
            cloud_id: str = "") -> str:
    """Why an offer is refused before anything is stored ("": it is not).
    ``cloud_id``: the id the task would carry up (``{site}/{origin}/{id}``):
    over the id limit, no cloud worker would take it (its answer could not be
    matched, and the task would be sent up again and again): the fog runs it."""
    if task.kind not in kinds:
        return "unknown_kind"
    if len(cloud_id) > DEFAULT_LIMITS.max_id:
        return "bad_offer"
    if task.deadline_ms is not None and not link_up:
        return "deadline"          # the uplink is down: a deadline cannot be promised
    return ""


def cloud_task(task: Task, *, site: str, key: str, results_topic: str) -> Task:
    """The task as the cloud workers get it: its id names the site and the
    origin (unique across sites), and its reply goes to the site's results."""
    return Task(id=f"{site}/{key}", kind=task.kind, args=task.args, reply_to=results_topic, weight=task.weight,
                deadline_ms=task.deadline_ms, device=task.device)


def key_of_result(reply_id: str | None, site: str) -> str | None:
    """The outbox key a cloud result answers (None: not this site's)."""
    if reply_id and reply_id.startswith(site + "/"):
        return reply_id[len(site) + 1:]
    return None


def result_for_fog(reply: Reply, key: str) -> Reply:
    """The cloud's reply as the origin agent gets it: its own task id, tier cloud."""
    return Reply(id=task_of(key), status=reply.status, worker=reply.worker, tier="cloud", result=reply.result,
                 error=reply.error, ms=Timing(queue=reply.ms.queue, run=reply.ms.run, total=reply.ms.total))


def fallback_error(task_id: str | None, reason: str, *, worker: str) -> Reply:
    """``--fallback error``: the refusal as an error reply."""
    code = {"busy": "busy", "deadline": "deadline_exceeded"}.get(reason, "busy")
    message = {"busy": "the cloud bridge's backlog is full; retry later",
               "deadline": "the uplink to the cloud is down and the task's deadline cannot be met"}.get(reason, reason)
    return Reply.failed(task_id, code, message, worker=worker, tier="cloud")


def command_down(rest: str, *, root: str) -> str | None:
    """Where a message the cloud sent on ``sites/{site}/down/{rest}`` goes at
    the site, or None: it is refused. Only what topics.md documents for
    ``down/`` comes down: an actuator command, ``actuators/{device}/{actuator}/set``.
    Nothing else: a cloud-side publisher must not drain an agent
    (``agents/{id}/control``), replace the fleet's desired state, speak for a
    box (presence, an actuator's state) or submit tasks as the site."""
    levels = rest.split("/")
    if len(levels) == 4 and levels[0] == "actuators" and levels[3] == "set" \
            and is_segment(levels[1]) and is_segment(levels[2]):
        return f"{root}/{rest}"
    return None


def uplink_topic(topic: str, *, root: str, site_prefix: str) -> str:
    """Where a sensor summary of ``topic`` goes on the cloud broker."""
    rel = topic[len(root) + 1:] if topic.startswith(root + "/") else topic
    return site_prefix + rel
