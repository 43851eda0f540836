"""An MQTT 5 CONNECT, refused with a reason: amqtt would parse one with
properties as 3.1.1 and wait for bytes that never come."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fogmesh.mqtt_framing import read_varint

log = logging.getLogger("fogmesh.broker.embedded")


REFUSED_V5 = ("refused the client at %s:%s: it speaks MQTT protocol level %s (%s), the embedded broker "
               "MQTT 3.1.1 only. Connect as 3.1.1 (mosquitto_sub/rr -V mqttv311, MQTT.js protocolVersion: 4, "
               "paho MQTTv311), or run mosquitto for MQTT 5")


async def refuse_mqtt5(writer: Any, peer: Any, connect: bytes) -> None:
    """Say why on the log and to the client (CONNACK 0x84, unsupported
    protocol version), then close. The agents' own start-up probe
    (``--mqtt auto``) is expected: logged at DEBUG."""
    host, port = peer[:2] if peer else ("?", "?")
    probe = v5_client_id(connect).startswith("fogmesh-probe-")
    log.log(logging.DEBUG if probe else logging.WARNING, REFUSED_V5, host, port, 5, "MQTT 5")
    writer.write(b"\x20\x03\x00\x84\x00")
    for step in (writer.drain, writer.close):
        try:
            await step()
        except Exception:               # the client went first
            pass


async def protocol_level(reader: asyncio.StreamReader, *, timeout: float = 10.0) -> int | None:
    """The protocol level of the CONNECT a new connection starts with, read
    from the reader's buffer without consuming it (None: not a CONNECT, or
    too slow to tell; amqtt deals with those)."""
    buffered = reader._buffer
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        level, complete = connect_level(bytes(buffered[:20]))
        if complete or reader.at_eof() or reader.exception() is not None:
            return level
        if asyncio.get_running_loop().time() > deadline:
            return None
        await asyncio.sleep(0.005)       # polled: StreamReader has no peek, and waiting on it races its reader


def connect_level(head: bytes) -> tuple[int | None, bool]:
    """(level, known): the level byte of a CONNECT packet's start, or None
    with known=True when ``head`` is not a CONNECT, known=False when more
    bytes are needed."""
    if not head:
        return None, False
    if head[0] != 0x10:
        return None, True
    i = 1
    while i < len(head) and head[i] & 0x80 and i < 4:      # remaining length: 1-4 bytes
        i += 1
    if i >= len(head) or len(head) < i + 3:
        return None, False
    name_len = int.from_bytes(head[i + 1:i + 3], "big")
    at = i + 3 + name_len
    if name_len > 6:
        return None, True
    if len(head) <= at:
        return None, False
    return head[at], True


def v5_client_id(connect: bytes) -> str:
    """The client id of an MQTT 5 CONNECT ("" if it is not all there)."""
    try:
        i = 1
        while connect[i] & 0x80:
            i += 1
        i += 1 + 2 + 4 + 1 + 1 + 2          # name length, "MQTT", level, flags, keep-alive
        length, i = read_varint(connect, i)  # the properties' length
        i += length
        n = int.from_bytes(connect[i:i + 2], "big")
        return connect[i + 2:i + 2 + n].decode(errors="replace") if i + 2 + n <= len(connect) else ""
    except (IndexError, ValueError):
        return ""
