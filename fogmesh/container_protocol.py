"""The service container's protocol, encoded and decoded (pure): one line
of JSON in (the task's args), one line of JSON out, ``{"result": ...}`` or
``{"error": "...", "code": "bad_args"}`` (``code`` optional), over a Unix
socket (:mod:`fogmesh.container_services` holds the connection).

A reply is read through a :class:`ReplyReader`, which stops at the first
line end and at :data:`MAX_REPLY` bytes: a service that streams without
ending its line costs a clear error, never the worker's memory. Every reply
becomes one :data:`Reply` value, and :func:`reply_result` turns each into
the task's result or its error: an answer, a refusal (``BadArgs``), the
service's own error, a connection closed without a line (a crash), a line
that is not JSON (garbage), JSON that is neither a result nor an error, a
line over the limit (each of the last five a ``ContainerError`` naming it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Union

from fogmesh.errors import BadArgs, ContainerError

__all__ = ["MAX_REPLY", "Answer", "Closed", "Failure", "Garbage", "Refusal", "Reply", "ReplyReader", "TooLarge",
           "Unexpected", "decode_reply", "encode_request", "reply_result"]

#: The longest reply line taken, in bytes (the line end not counted).
MAX_REPLY = 16 * 1024 * 1024
#: How much of a bad reply its error quotes.
EXCERPT = 120


def encode_request(args: Mapping[str, Any]) -> bytes:
    """The task's args as the service reads them: one line of JSON."""
    return json.dumps(dict(args)).encode() + b"\n"


class ReplyReader:
    """A reply's bytes, fed as they arrive, up to the first line end or the
    limit. ``feed`` says when to stop reading: the line ended, the connection
    closed (``b""``), or the limit was passed (``too_large``)."""

    def __init__(self, *, limit: int = MAX_REPLY) -> None:
        self.limit = limit
        self.too_large = False
        self._data = bytearray()
        self._end: int | None = None           # where the line ends, once it does

    def feed(self, chunk: bytes) -> bool:
        """Take ``chunk``; True when reading should stop."""
        if self._end is not None or self.too_large:
            return True
        if not chunk:
            return True
        newline = chunk.find(b"\n")
        if newline >= 0:
            self._end = len(self._data) + newline
            chunk = chunk[:newline]
        room = self.limit - len(self._data)
        if len(chunk) > room:
            self._data += chunk[:room]
            self.too_large, self._end = True, None
            return True
        self._data += chunk
        return self._end is not None

    @property
    def line(self) -> bytes:
        """The reply line read so far, without its line end."""
        return bytes(self._data)


@dataclass(frozen=True)
class Answer:
    result: Any


@dataclass(frozen=True)
class Refusal:
    """``{"error": ..., "code": "bad_args"}``: the args are wrong."""

    message: str


@dataclass(frozen=True)
class Failure:
    """``{"error": ...}``: the service failed the task."""

    message: str


@dataclass(frozen=True)
class Closed:
    """The connection closed without a line (the service crashed, or was stopped)."""


@dataclass(frozen=True)
class Garbage:
    """A line that is not JSON."""

    excerpt: bytes


@dataclass(frozen=True)
class Unexpected:
    """JSON, but neither ``{"result": ...}`` nor ``{"error": ...}``."""

    excerpt: bytes


@dataclass(frozen=True)
class TooLarge:
    """More than ``limit`` bytes without a line end."""

    limit: int


Reply = Union[Answer, Refusal, Failure, Closed, Garbage, Unexpected, TooLarge]


def decode_reply(reader: ReplyReader) -> Reply:
    """What the service answered, read from ``reader`` once it stopped."""
    if reader.too_large:
        return TooLarge(reader.limit)
    data = reader.line
    if not data.strip():
        return Closed()
    try:
        reply = json.loads(data)
    except (ValueError, RecursionError):     # not JSON, not UTF-8, or nested deeper than json reads
        return Garbage(data[:EXCERPT])
    if isinstance(reply, dict) and "result" in reply:
        return Answer(reply["result"])
    if isinstance(reply, dict) and "error" in reply:
        message = str(reply["error"])[:300]
        return Refusal(message) if reply.get("code") == "bad_args" else Failure(message)
    return Unexpected(data[:EXCERPT])


def reply_result(reply: Reply, *, image: str, exit_note: str = "") -> Any:
    """The task's result, or its error (``exit_note``: how a closed
    connection's container ended, for :class:`Closed`)."""
    who = f"service container of {image}"
    if isinstance(reply, Answer):
        return reply.result
    if isinstance(reply, Refusal):
        raise BadArgs(reply.message)
    if isinstance(reply, Failure):
        raise ContainerError(f"{who}: {reply.message}")
    if isinstance(reply, Closed):
        raise ContainerError(f"{who} closed the connection without an answer{exit_note}")
    if isinstance(reply, Garbage):
        raise ContainerError(f"{who} answered no JSON: {reply.excerpt!r}")
    if isinstance(reply, TooLarge):
        raise ContainerError(f"{who} answered more than {reply.limit} bytes without ending its line (the limit "
                             "of one reply)")
    raise ContainerError(f"{who} answered neither result nor error: {reply.excerpt!r}")
