"""The message schema: frozen, validated dataclasses for every payload.

Validation lives here, once, so an agent, a cloud worker and a device client
agree on what a valid task is. Parsing never trusts the sender: every field is
type- and size-checked, unknown fields are ignored (forward compatibility),
and a failure raises :class:`~fogmesh.errors.InvalidMessage` carrying the wire
error code plus whatever id / reply_to could be salvaged, so the submitter
still gets an answer when one is possible.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from fogmesh import codec
from fogmesh.errors import InvalidMessage, TopicError
from fogmesh.fields import Fields
from fogmesh.properties import decode_correlation
from fogmesh.topics import validate_publish_topic

WEIGHTS = ("light", "medium", "heavy")
TIERS = ("local", "fog", "cloud", "device")   # device: an actuator or sensor answered
STATUSES = ("ok", "error")

#: Wire error codes, documented in topics.md.
ERROR_CODES = (
    "bad_json",            # payload is not UTF-8 JSON
    "not_object",          # JSON, but not an object
    "missing_field",       # a required field is absent
    "bad_field",           # a field has the wrong type, size or value
    "too_large",           # payload above the size limit
    "unknown_kind",        # no handler registered for the kind
    "handler_error",       # the handler raised
    "bad_result",          # the handler returned something that is not JSON
    "timeout",             # the handler ran past its kind's timeout
    "deadline_exceeded",   # the task waited past deadline_ms before it could run
    "busy",                # the agent's queue is full
    "worker_lost",         # the worker process died while running the task
    "bad_args",            # the handler rejected the args (BadArgs)
    "unknown_actuator",    # a command for an actuator the device does not have
    "bad_command",         # an actuator command with a bad op or value
    "duplicate_id",        # the id was answered within the dedup window; its answer is no longer kept
    "degraded",            # the last agent able to answer cannot take tasks (its journal fails): retry later
)


@dataclass(frozen=True)
class Limits:
    """Size limits enforced on input. Why: one oversize or hostile payload
    must cost a clear error, never an agent's memory."""

    max_payload: int = 256 * 1024
    max_id: int = 128
    max_kind: int = 64
    max_reply_to: int = 1024
    max_device: int = 128
    max_correlation: int = 1024          # base64 characters (768 bytes)
    max_user_properties: int = 32
    max_user_property: int = 256         # characters of a name or a value


DEFAULT_LIMITS = Limits()
MAX_MESSAGE = 1 << 20        # characters of an error message a reply is read with (bounded by its payload anyway)


def _str_field(d: Mapping[str, Any], name: str, *, max_len: int, required: bool,
               task_id: str | None, reply_to: str | None) -> str | None:
    value = d.get(name)
    if value is None:
        if required:
            raise InvalidMessage("missing_field", f"field {name!r} is required",
                                 task_id=task_id, reply_to=reply_to)
        return None
    if not isinstance(value, str):
        raise InvalidMessage("bad_field", f"field {name!r} must be a string, got {type(value).__name__}",
                             task_id=task_id, reply_to=reply_to)
    if not 1 <= len(value) <= max_len:
        raise InvalidMessage("bad_field", f"field {name!r} must be 1-{max_len} characters",
                             task_id=task_id, reply_to=reply_to)
    return value


@dataclass(frozen=True)
class Task:
    """A task request, as published on ``{root}/tasks``."""

    id: str
    kind: str
    reply_to: str
    args: Mapping[str, Any] = field(default_factory=dict)
    weight: str | None = None
    deadline_ms: int | None = None
    device: str | None = None
    attempt: int | None = None     # 2, 3...: the submitter sends this id again (no reply came)
    # From MQTT 5 properties (or set by hand): see fogmesh.properties
    correlation: str | None = None
    user_properties: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "kind": self.kind, "args": dict(self.args),
                             "reply_to": self.reply_to}
        if self.weight is not None:
            d["weight"] = self.weight
        if self.deadline_ms is not None:
            d["deadline_ms"] = self.deadline_ms
        if self.device is not None:
            d["device"] = self.device
        if self.attempt is not None:
            d["attempt"] = self.attempt
        if self.correlation is not None:
            d["correlation"] = self.correlation
        if self.user_properties:
            d["user_properties"] = [list(p) for p in self.user_properties]
        return d

    def encode(self) -> bytes:
        return codec.encode(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, *, limits: Limits = DEFAULT_LIMITS) -> Task:
        if not isinstance(d, dict):
            raise InvalidMessage("not_object", f"a task must be a JSON object, got {type(d).__name__}")
        task_id, reply_to = salvage_ids(d, limits=limits)
        raw_reply = reply_to     # both usable: salvage_ids checked them as below would
        if task_id is None or reply_to is None:
            # Re-check with precise errors now that we know where to answer.
            task_id = _str_field(d, "id", max_len=limits.max_id, required=True,
                                 task_id=task_id, reply_to=reply_to)
            raw_reply = _str_field(d, "reply_to", max_len=limits.max_reply_to, required=True,
                                   task_id=task_id, reply_to=reply_to)
            try:
                validate_publish_topic(raw_reply)  # type: ignore[arg-type]
            except TopicError as exc:
                raise InvalidMessage("bad_field", f"reply_to: {exc}", task_id=task_id) from exc
        kind = _str_field(d, "kind", max_len=limits.max_kind, required=True,
                          task_id=task_id, reply_to=reply_to)
        args = d.get("args")
        if args is None:
            args = {}
        elif not isinstance(args, dict):
            raise InvalidMessage("bad_field", "field 'args' must be a JSON object",
                                 task_id=task_id, reply_to=reply_to)
        weight = d.get("weight")
        if weight is not None and weight not in WEIGHTS:
            raise InvalidMessage("bad_field", f"field 'weight' must be one of {', '.join(WEIGHTS)}",
                                 task_id=task_id, reply_to=reply_to)
        deadline = d.get("deadline_ms")
        if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, int)
                                     or deadline <= 0):
            raise InvalidMessage("bad_field", "field 'deadline_ms' must be a positive integer",
                                 task_id=task_id, reply_to=reply_to)
        device = _str_field(d, "device", max_len=limits.max_device, required=False,
                            task_id=task_id, reply_to=reply_to)
        attempt = d.get("attempt")
        if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1):
            raise InvalidMessage("bad_field", "field 'attempt' must be a positive integer",
                                 task_id=task_id, reply_to=reply_to)
        correlation = _str_field(d, "correlation", max_len=limits.max_correlation, required=False,
                                 task_id=task_id, reply_to=reply_to)
        if correlation is not None:
            try:
                decode_correlation(correlation)
            except ValueError as exc:
                raise InvalidMessage("bad_field", f"field 'correlation' must be base64: {exc}",
                                     task_id=task_id, reply_to=reply_to) from None
        user_properties = _user_properties(d.get("user_properties"), limits=limits, task_id=task_id,
                                           reply_to=reply_to)
        return cls(id=task_id, kind=kind, reply_to=raw_reply, args=args,  # type: ignore[arg-type]
                   weight=weight, deadline_ms=deadline, device=device, attempt=attempt,
                   correlation=correlation, user_properties=user_properties)


def _user_properties(value: Any, *, limits: Limits, task_id: str | None,
                     reply_to: str | None) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    ok = isinstance(value, list) and len(value) <= limits.max_user_properties and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) and len(x) <= limits.max_user_property
                                                    for x in p) for p in value)
    if not ok:
        raise InvalidMessage("bad_field", f"field 'user_properties' must be a list of at most "
                             f"{limits.max_user_properties} [name, value] string pairs",
                             task_id=task_id, reply_to=reply_to)
    return tuple((k, v) for k, v in value)


def salvage_ids(d: Mapping[str, Any], *, limits: Limits = DEFAULT_LIMITS) -> tuple[str | None, str | None]:
    """The id and reply_to of a (possibly invalid) task, when they are usable."""
    task_id = d.get("id")
    if not (isinstance(task_id, str) and 1 <= len(task_id) <= limits.max_id):
        task_id = None
    reply_to = d.get("reply_to")
    if isinstance(reply_to, str) and len(reply_to) <= limits.max_reply_to:
        try:
            validate_publish_topic(reply_to)
        except TopicError:
            reply_to = None
    else:
        reply_to = None
    return task_id, reply_to


def parse_task(payload: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Task:
    """Bytes from ``{root}/tasks`` to a :class:`Task`, or ``InvalidMessage``.

    An oversize payload is still parsed when it is at most 16x the limit, only
    to find where to send the ``too_large`` error; anything larger is not
    parsed at all (dead letter), which bounds the cost of hostile input.
    """
    if len(payload) > limits.max_payload:
        task_id = reply_to = None
        if len(payload) <= 16 * limits.max_payload:
            try:
                d = codec.decode(payload)
                if isinstance(d, dict):
                    task_id, reply_to = salvage_ids(d, limits=limits)
            except InvalidMessage:
                pass
        raise InvalidMessage("too_large",
                             f"payload is {len(payload)} bytes; the limit is {limits.max_payload}",
                             task_id=task_id, reply_to=reply_to)
    return Task.from_dict(codec.decode(payload), limits=limits)


@dataclass(frozen=True)
class ErrorInfo:
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Timing:
    """Milliseconds spent waiting, running, and in all (receipt to reply)."""

    queue: float = 0.0
    run: float = 0.0
    total: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {"queue": round(self.queue, 3), "run": round(self.run, 3), "total": round(self.total, 3)}


@dataclass(frozen=True)
class Reply:
    """The answer published on a task's ``reply_to``."""

    id: str | None
    status: str
    worker: str
    tier: str = "local"
    result: Any = None
    error: ErrorInfo | None = None
    ms: Timing = field(default_factory=Timing)

    @classmethod
    def ok(cls, task_id: str, result: Any, *, worker: str, tier: str = "local",
           ms: Timing = Timing()) -> Reply:
        return cls(id=task_id, status="ok", result=result, worker=worker, tier=tier, ms=ms)

    @classmethod
    def failed(cls, task_id: str | None, code: str, message: str, *, worker: str,
               tier: str = "local", ms: Timing = Timing()) -> Reply:
        return cls(id=task_id, status="error", error=ErrorInfo(code, message), worker=worker,
                   tier=tier, ms=ms)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.status == "ok":
            d["result"] = self.result
        else:
            assert self.error is not None
            d["error"] = self.error.to_dict()
        d["worker"] = self.worker
        d["tier"] = self.tier
        d["ms"] = self.ms.to_dict()
        return d

    def encode(self) -> bytes:
        return codec.encode(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any) -> Reply:
        if not isinstance(d, dict):
            raise InvalidMessage("not_object", "a reply must be a JSON object")
        status = d.get("status")
        if status not in STATUSES:
            raise InvalidMessage("bad_field", "reply 'status' must be 'ok' or 'error'")
        f = Fields(d, "reply")
        err = None
        if status == "error":
            e = d.get("error")
            if not isinstance(e, dict):
                raise InvalidMessage("missing_field", "an error reply needs an 'error' object")
            ef = Fields(e, "reply 'error'")
            err = ErrorInfo(ef.text("code", 64) or "", ef.text("message", MAX_MESSAGE) or "")
        mf = Fields(f.mapping("ms"), "reply 'ms'")
        timing = Timing(*(mf.number(k, 0.0) for k in ("queue", "run", "total")))
        task_id = d.get("id")
        return cls(id=task_id if isinstance(task_id, str) else None, status=status,
                   worker=f.text("worker", 300) or "", tier=f.text("tier", 16) or "local",
                   result=d.get("result"), error=err, ms=timing)

    @classmethod
    def decode(cls, payload: bytes) -> Reply:
        return cls.from_dict(codec.decode(payload))


@dataclass(frozen=True)
class DeadLetter:
    """Published on ``{root}/errors`` when no reply topic can be used."""

    agent: str
    ts: float
    error: ErrorInfo
    topic: str
    id: str | None = None
    excerpt: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "ts": round(self.ts, 3), "error": self.error.to_dict(),
                "topic": self.topic, "id": self.id, "excerpt": self.excerpt}

    def encode(self) -> bytes:
        return codec.encode(self.to_dict())


def excerpt(payload: bytes, limit: int = 200) -> str:
    """A printable head of a bad payload, for dead letters and logs."""
    return payload[:limit].decode("utf-8", errors="replace")


def confine_to_device(task: Task | None, error: InvalidMessage | None, device: str,
                      own_replies: str | None) -> tuple[Task | None, InvalidMessage | None]:
    """A task that came on ``tasks/{device}`` (a topic the broker's ACL ties to
    the device's login) may only be answered on ``own_replies`` or below it:
    otherwise any device could make agents publish into another device's reply
    topic. Such a task becomes a dead letter, not a reply. ``device`` is set
    from the topic, whatever the payload claims. ``own_replies`` None: the
    topic's device level is no valid id (over 128 characters, say), so no
    reply topic is the device's: a dead letter too."""
    if own_replies is None:
        salvaged = task.id if task is not None else (error.task_id if error is not None else None)
        shown = device if len(device) <= 40 else f"{device[:40]}...({len(device)} characters)"
        return None, InvalidMessage("bad_field", f"the device id of the topic tasks/{shown} is not a valid id "
                                    "(1-128 characters, no '/', '+', '#', not starting with '$')",
                                    task_id=salvaged)

    def allowed(topic: str | None) -> bool:
        return topic is not None and (topic == own_replies or topic.startswith(own_replies + "/"))

    if error is not None:
        if not allowed(error.reply_to):
            error.reply_to = None
        return None, error
    assert task is not None
    if not allowed(task.reply_to):
        return None, InvalidMessage("bad_field", f"a task on tasks/{device} must reply to {own_replies} "
                                    f"(or below it), not {task.reply_to!r}", task_id=task.id)
    return (task if task.device == device else replace(task, device=device)), None
