"""Strict reading of one document's fields, for the schemas of the retained
announcements (presence, bridge health, pipeline counters, deployment
reports): a field that is present has its documented type, or the whole
document is refused with :class:`~fogmesh.errors.InvalidMessage`
(``bad_field``). Absent fields take their default (older senders omit
newer fields); unknown fields are ignored (newer senders add some). Pure.

Why strict: a consumer that takes ``"bundles": 1.5`` for a mapping fails
wherever it first uses it, far from the boundary (the dashboard's update
thread, ``fogmesh deploy status``); refused here, it fails nowhere.
"""

from __future__ import annotations

from typing import Any, Mapping

from fogmesh import codec
from fogmesh.errors import InvalidMessage
from fogmesh.topics import is_segment

#: The largest whole number a field may hold: what JSON readers keep exact
#: (JavaScript's 2**53, the dashboard's page) and orjson writes again.
MAX_COUNT = 2 ** 53

#: An announcement is small (a presence is ~400 bytes); anything much larger is refused unread.
MAX_ANNOUNCEMENT = 64 * 1024
MAX_NAMES = 256              # kinds in a presence or a bridge's health, labels in a report
MAX_NAME = 128               # characters of one such name

_MISSING = object()


def short(text: str, limit: int = 40) -> str:
    """``text`` cut for an error message (a hostile id can be kilobytes long)."""
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} characters)"


def decode_announcement(payload: bytes, what: str) -> Any:
    """JSON of a retained announcement, refused (``too_large``) above
    :data:`MAX_ANNOUNCEMENT` bytes before it is parsed."""
    if len(payload) > MAX_ANNOUNCEMENT:
        raise InvalidMessage("too_large", f"{what} of {len(payload)} bytes; the limit is {MAX_ANNOUNCEMENT}")
    return codec.decode(payload)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Fields:
    """The fields of one JSON object ``d`` (``what`` names it in errors)."""

    def __init__(self, d: Any, what: str) -> None:
        if not isinstance(d, dict):
            raise InvalidMessage("not_object", f"{what} must be a JSON object, got {type(d).__name__}")
        self.d: Mapping[str, Any] = d
        self.what = what

    def bad(self, name: str, wants: str) -> InvalidMessage:
        value = self.d.get(name)
        return InvalidMessage("bad_field", f"{self.what} field {name!r} must be {wants}, "
                              f"got {type(value).__name__} {short(repr(value))}")

    def get(self, name: str) -> Any:
        return self.d.get(name)

    def box_id(self, name: str) -> str:
        """A required id that is one topic level (1-128 characters, no
        ``/``, ``+``, ``#``, not starting with ``$``)."""
        value = self.d.get(name)
        if not is_segment(value):
            raise self.bad(name, "an id of 1-128 characters without '/', '+', '#' (not starting with '$')")
        return str(value)

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.d.get(name)
        if value not in allowed:
            raise self.bad(name, f"one of {', '.join(allowed)}")
        return str(value)

    def number(self, name: str, default: Any = _MISSING) -> Any:
        """A number (an int or a float, not a boolean); ``default`` when absent or null."""
        value = self.d.get(name)
        if value is None:
            if default is _MISSING:
                raise self.bad(name, "a number")
            return default
        if not _is_number(value):
            raise self.bad(name, "a number")
        return float(value)

    def within(self, name: str, low: float, high: float, default: Any = _MISSING) -> Any:
        """A number from ``low`` to ``high``; ``default`` when absent or null."""
        if self.d.get(name) is None:
            return self.number(name, default)
        value = self.number(name)
        if not low <= value <= high:
            raise self.bad(name, f"a number from {low:g} to {high:g}")
        return value

    def positive(self, name: str) -> float | None:
        value = self.number(name, None)
        if value is not None and value <= 0:
            raise self.bad(name, "a positive number")
        return value  # type: ignore[no-any-return]

    def count(self, name: str, default: Any = 0) -> Any:
        """A whole number from 0 to :data:`MAX_COUNT` (an integral float such
        as ``3.0`` counts too)."""
        value = self.d.get(name)
        if value is None:
            return default
        if not _is_number(value) or not 0 <= value <= MAX_COUNT or value != int(value):
            raise self.bad(name, f"a whole number from 0 to {MAX_COUNT}")
        return int(value)

    def text(self, name: str, limit: int) -> str | None:
        """A string, cut at ``limit`` characters (free text: a reason, a
        detail); None when absent or null."""
        value = self.d.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.bad(name, "a string")
        return value[:limit]

    def names(self, name: str) -> tuple[str, ...]:
        """A list of at most :data:`MAX_NAMES` non-empty strings of at most
        :data:`MAX_NAME` characters (kinds, labels)."""
        value = self.d.get(name)
        if value is None:
            return ()
        if not (isinstance(value, list) and len(value) <= MAX_NAMES
                and all(isinstance(v, str) and 0 < len(v) <= MAX_NAME for v in value)):
            raise self.bad(name, f"a list of at most {MAX_NAMES} names of 1-{MAX_NAME} characters")
        return tuple(value)

    def mapping(self, name: str) -> Mapping[str, Any]:
        """An object (``{}`` when absent or null)."""
        value = self.d.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.bad(name, "an object")
        return value
