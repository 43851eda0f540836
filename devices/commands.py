"""Actuator commands: parsing and validation, before any pin is touched. Pure.

A command on ``{root}/actuators/{device}/{actuator}/set`` is JSON
``{"op": "on"|"off"|"toggle"|"pulse", "ms": 3000, "id": "...", "reply_to": "..."}``
or, for an operator at a shell, the bare word ``on``, ``off`` or ``toggle``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fogmesh import codec
from fogmesh.errors import InvalidMessage
from fogmesh.messages import salvage_ids

OPS = ("on", "off", "toggle", "pulse")
DEFAULT_MAX_PULSE_MS = 60_000


@dataclass(frozen=True)
class Command:
    actuator: str
    op: str
    ms: int = 0
    id: str | None = None
    reply_to: str | None = None


def command_ids(payload: bytes) -> tuple[str | None, str | None]:
    """The id and reply_to of a command that is refused before it is parsed
    (e.g. for an unknown actuator), validated as a task's are."""
    try:
        d: Any = codec.decode(payload)
    except InvalidMessage:
        return None, None
    return salvage_ids(d) if isinstance(d, dict) else (None, None)


def parse_command(actuator: str, payload: bytes, *, max_pulse_ms: int = DEFAULT_MAX_PULSE_MS) -> Command:
    """Bytes to a :class:`Command`, or InvalidMessage (``bad_command``) carrying
    whatever id/reply_to could be salvaged so the sender still gets an answer."""
    word = payload.strip().decode("utf-8", "replace").lower()
    if word in ("on", "off", "toggle"):
        return Command(actuator, word)
    d: Any = codec.decode(payload)
    if not isinstance(d, dict):
        raise InvalidMessage("bad_command", 'a command is {"op": "on|off|toggle|pulse", ...} '
                             "or the bare word on/off/toggle")
    task_id, reply_to = salvage_ids(d)

    def bad(message: str) -> InvalidMessage:
        return InvalidMessage("bad_command", message, task_id=task_id, reply_to=reply_to)

    op = d.get("op")
    if op not in OPS:
        raise bad(f"op must be one of {', '.join(OPS)}, not {op!r}")
    ms = d.get("ms", 0)
    if op == "pulse":
        if not isinstance(ms, int) or isinstance(ms, bool) or ms <= 0:
            raise bad("a pulse needs \"ms\": a positive whole number of milliseconds")
        if ms > max_pulse_ms:
            raise bad(f"pulse of {ms} ms is longer than this actuator allows ({max_pulse_ms} ms)")
    return Command(actuator, op, ms if op == "pulse" else 0, task_id, reply_to)
