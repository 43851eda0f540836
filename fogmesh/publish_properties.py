"""The property block of an MQTT 5 PUBLISH, to and from bytes (pure).

Why not paho's ``Properties``: it rebuilds its name tables for every
instance and finds each property by scanning them, which cost about 50 us to
create, 50 us to pack and up to 190 us to unpack per message on this
machine: more than a whole 3.1.1 round trip through mosquitto. Only a PUBLISH
goes through here (CONNECT and the rest stay paho's); the layout is MQTT 5.0
section 2.2.2: a variable byte integer length, then (identifier, value)
pairs.
"""

from __future__ import annotations

from fogmesh.mqtt_framing import encode_varint as _vbi
from fogmesh.mqtt_framing import read_varint as _read_vbi
from fogmesh.properties import MessageProperties

_BYTE, _U16, _U32, _VBI, _BIN, _STR, _PAIR = range(7)
# The properties a PUBLISH may carry (MQTT 5.0 section 3.3.2.3), by identifier.
_PUBLISH = {1: _BYTE, 2: _U32, 3: _STR, 8: _STR, 9: _BIN, 11: _VBI, 35: _U16, 38: _PAIR}
TOPIC_ALIAS = 35


def encode(props: MessageProperties | None) -> bytes:
    """The property block for ``props`` (an empty block for None)."""
    if not props:
        return b"\x00"
    out = bytearray()
    if props.expiry_s is not None:
        out += b"\x02" + props.expiry_s.to_bytes(4, "big")
    if props.response_topic:
        out += b"\x08" + _string(props.response_topic)
    if props.correlation_data is not None:
        out += b"\x09" + len(props.correlation_data).to_bytes(2, "big") + props.correlation_data
    for key, value in props.user_properties:
        out += b"\x26" + _string(key) + _string(value)
    return _vbi(len(out)) + bytes(out)


def decode(buf: bytes | bytearray, at: int = 0) -> tuple[MessageProperties | None, int, frozenset[int]]:
    """The properties fogmesh maps from the block at ``buf[at:]``, the offset
    just past the block, and the identifiers of every property present.
    ValueError for a malformed block or a property a PUBLISH may not carry."""
    length, i = _read_vbi(buf, at)
    end = i + length
    if end > len(buf):
        raise ValueError("property block longer than the packet")
    response_topic: str | None = None
    correlation: bytes | None = None
    expiry: int | None = None
    user: list[tuple[str, str]] = []
    seen: set[int] = set()
    while i < end:
        ident, i = _read_vbi(buf, i)
        kind = _PUBLISH.get(ident)
        if kind is None:
            raise ValueError(f"property {ident} is not allowed in a PUBLISH")
        if ident in seen and ident not in (11, 38):
            raise ValueError(f"property {ident} appears twice")
        seen.add(ident)
        if kind == _BYTE:
            i += 1
        elif kind == _U16:
            i += 2
        elif kind == _U32:
            if ident == 2:
                expiry = int.from_bytes(buf[i:i + 4], "big")
            i += 4
        elif kind == _VBI:
            _, i = _read_vbi(buf, i)
        elif kind == _BIN:
            data, i = _read_bytes(buf, i)
            correlation = data
        elif kind == _STR:
            text, i = _read_string(buf, i)
            if ident == 8:
                response_topic = text
        else:
            key, i = _read_string(buf, i)
            value, i = _read_string(buf, i)
            user.append((key, value))
        if i > end:
            raise ValueError("property runs past its block")
    props = MessageProperties(response_topic=response_topic, correlation_data=correlation,
                              user_properties=tuple(user), expiry_s=expiry)
    return (props if props else None), end, frozenset(seen)


def _string(text: str) -> bytes:
    data = text.encode()
    if len(data) > 0xFFFF:
        raise ValueError("an MQTT string is at most 65535 bytes")
    return len(data).to_bytes(2, "big") + data


def _read_bytes(buf: bytes | bytearray, i: int) -> tuple[bytes, int]:
    if i + 2 > len(buf):
        raise ValueError("truncated length")
    n = int.from_bytes(buf[i:i + 2], "big")
    if i + 2 + n > len(buf):
        raise ValueError("truncated data")
    return bytes(buf[i + 2:i + 2 + n]), i + 2 + n


def _read_string(buf: bytes | bytearray, i: int) -> tuple[str, int]:
    data, i = _read_bytes(buf, i)
    try:
        return data.decode(), i
    except UnicodeDecodeError:
        raise ValueError("a string property is not UTF-8") from None
