"""JSON on the wire, via orjson.

Payloads are UTF-8 JSON objects so that firmware written in C, an operator with
``mosquitto_sub`` and a Python agent all read the same bytes. orjson because it
is several times faster than :mod:`json` on the small objects fogmesh sends.
"""

from __future__ import annotations

from typing import Any

import orjson

from fogmesh.errors import InvalidMessage


def encode(obj: Any) -> bytes:
    """Serialize to compact UTF-8 JSON bytes (dataclasses too).

    Copied to a bytes object of its own length: orjson (3.10+) hands back a
    buffer that keeps the 4 KiB it started with, so a 300-byte answer held
    for the dedup window cost 4 KiB (20,000 answers: 78 MiB, the whole of a
    flood's growth). The copy costs ~0.1 us; what fogmesh encodes is often
    kept (answers, journal records, messages awaiting their PUBACK)."""
    try:
        return memoryview(orjson.dumps(obj)).tobytes()
    except TypeError as exc:
        raise InvalidMessage("bad_result", f"value is not JSON-serializable: {exc}") from exc


#: JSON nested deeper than this is refused on the way in (``bad_json``):
#: orjson reads 1,024 levels but writes only 254, so a document nested in
#: between would parse, and then fail wherever it is written again (a task
#: confined to its device, an offer, a journal line, a "done" record).
MAX_DEPTH = 128


def decode(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON; any parse failure becomes ``InvalidMessage(code="bad_json")``,
    and so does nesting deeper than :data:`MAX_DEPTH`."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage("bad_json", f"payload is not valid UTF-8 JSON: {exc}") from exc
    if isinstance(value, (dict, list)) and _brackets(data) > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise InvalidMessage("bad_json", f"payload nests deeper than {MAX_DEPTH} levels")
    return value


def _brackets(data: bytes | bytearray | memoryview | str) -> int:
    """An upper bound of the nesting (C-speed counts: the walk below is
    needed only for the few payloads with that many brackets)."""
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    raw = bytes(data) if isinstance(data, memoryview) else data
    return raw.count(b"[") + raw.count(b"{")


def _depth(value: Any) -> int:
    """How deep ``value`` nests (iterative: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest > MAX_DEPTH:
                return deepest
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, level + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def encode_with(obj: dict[str, Any], key: str, raw: bytes | None) -> bytes:
    """``obj`` as JSON with ``key`` set to ``raw``, JSON bytes made by fogmesh
    itself (an answer carried inside a record): spliced in, not parsed and
    encoded again."""
    out = encode(obj)
    if raw is None:
        return out
    return out[:-1] + (b',"' if obj else b'"') + key.encode() + b'":' + raw + b"}"


def canonical(obj: Any) -> bytes:
    """The one byte form of ``obj`` that signatures and digests cover: keys
    sorted, compact. Anyone re-encoding a signed document gets these bytes."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise InvalidMessage("bad_json", f"value is not JSON-serializable: {exc}") from exc
