"""MQTT 5 properties and the JSON contract (pure).

fogmesh's contract is JSON, so 3.1.1 clients and firmware see everything.
Where a client speaks MQTT 5, its request/response properties map onto task
fields when the task arrives, and back onto the reply's properties:

| MQTT 5 property on the task   | task field                 | on the reply                  |
|-------------------------------|----------------------------|-------------------------------|
| Response Topic                | ``reply_to`` (if absent)   | (the reply goes there)        |
| Correlation Data              | ``correlation`` (base64)   | Correlation Data, same bytes  |
| User Property pairs           | ``user_properties``        | the same User Property pairs  |
| Message Expiry Interval       | ``deadline_ms`` (the lower)| -                             |

Merged into the JSON at the edge, the fields travel wherever the task goes
(journal, a peer it is offloaded to, the cloud and back), and the agent that
answers sets the reply's properties from them.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from fogmesh import codec


@dataclass(frozen=True)
class MessageProperties:
    """The MQTT 5 properties fogmesh reads and writes (the adapter converts)."""

    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    expiry_s: int | None = None

    def __bool__(self) -> bool:
        return bool(self.response_topic or self.correlation_data is not None or self.user_properties
                    or self.expiry_s is not None)


def with_mqtt5_properties(payload: bytes, props: MessageProperties) -> bytes:
    """The task payload with ``props`` merged in as contract fields. Fields the
    JSON already has win (an explicit ``reply_to`` stays), except a deadline:
    the earlier of ``deadline_ms`` and the remaining expiry. Not a JSON object:
    unchanged (validation answers it as usual)."""
    try:
        d: Any = codec.decode(payload)
    except Exception:
        return payload
    if not isinstance(d, dict):
        return payload
    changed = False
    if props.response_topic and "reply_to" not in d:
        d["reply_to"] = props.response_topic
        changed = True
    if props.correlation_data is not None and "correlation" not in d:
        d["correlation"] = base64.b64encode(props.correlation_data).decode()
        changed = True
    if props.user_properties and "user_properties" not in d:
        d["user_properties"] = [[k, v] for k, v in props.user_properties]
        changed = True
    if props.expiry_s is not None:
        expiry_ms = max(1, props.expiry_s * 1000)
        current = d.get("deadline_ms")
        if not (isinstance(current, int) and not isinstance(current, bool) and 0 < current <= expiry_ms):
            d["deadline_ms"] = expiry_ms
            changed = True
    return codec.encode(d) if changed else payload


def decode_correlation(text: str) -> bytes:
    """``correlation`` back to bytes; ValueError if it is not base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64: {exc}") from None


def reply_properties(correlation: str | None, user_properties: tuple[tuple[str, str], ...]) -> MessageProperties | None:
    """The properties of the reply to a task with these fields (None: none)."""
    if correlation is None and not user_properties:
        return None
    return MessageProperties(correlation_data=decode_correlation(correlation) if correlation is not None else None,
                             user_properties=user_properties)
