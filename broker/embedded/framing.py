"""The embedded broker reads a client's stream a whole packet at a time and
checks each (:func:`fogmesh.broker.packet_checks.refusal`) before amqtt
parses any of it: on a protocol violation it closes the connection
[MQTT-4.8.0-1], as for a network failure, so the client's will goes out
[MQTT-3.1.2-8].

Why: amqtt 0.12.1 went on after a PINGREQ as a first packet, granted QoS 3,
answered a SUBSCRIBE without a topic filter or with the wrong flags, and on
a PUBLISH to ``a/+`` stopped serving the connection without closing it (the
client, still connected, had its later packets read and nothing done with
them). And it reads a packet field by field, so one malformed packet (a
SUBSCRIBE filter without its QoS byte) had it read the next packet's first
byte as that QoS. Here a packet reaches amqtt whole and well-formed, or the
connection ends.
"""

from __future__ import annotations

import logging
from typing import Any

from amqtt.adapters import WebSocketsReader

from fogmesh.broker.embedded.connections import ReadsBeforeReset
from fogmesh.broker.embedded.liveness import close_now
from fogmesh.broker.packet_checks import NAMES, Malformed, client_id, needed, refusal

log = logging.getLogger("fogmesh.broker.embedded")


class ChecksPackets:
    """A mixin for an amqtt reader adapter: ``read`` hands out the bytes of
    whole packets that passed the checks (the adapter's own ``read`` takes
    them off the stream). A read cancelled half-way (amqtt waits for a
    fixed header under a timeout) loses nothing: the packet under way is
    kept and finished by the next read."""

    def __init__(self, *args: Any, peer: Any, writer: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._writer = writer              # amqtt's writer adapter: closed at a refusal
        self._ready = bytearray()          # checked bytes amqtt has not read yet
        self._head = bytearray()           # the packet coming in
        self._packets = 0
        self._client = "?"                 # the client id, once its CONNECT is read
        self.refused: str | None = None    # why the connection was closed

    async def read(self, n: int = -1) -> bytes:
        while len(self._ready) < max(n, 1) and self.refused is None:
            if not await self._next_packet():
                break
        if n < 0:
            n = len(self._ready)
        data = bytes(self._ready[:n])
        del self._ready[:n]
        return data

    async def first_packet(self) -> bool:
        """Read and check the connection's first packet: True when it is a
        CONNECT, there for amqtt to read; False when it is refused (the
        connection is closed) or the client went before sending it whole."""
        try:
            if not await self._next_packet():
                return False
        except (OSError, EOFError):       # reset, or closed part-way (IncompleteReadError)
            return False
        self._client = client_id(bytes(self._ready)) or "?"
        return True

    async def _next_packet(self) -> bool:
        head = self._head
        try:
            while (missing := needed(head)) > 0:
                data = await super().read(missing)        # type: ignore[misc]
                if not data:
                    return False
                head += data
            reason = refusal(bytes(head), first=self._packets == 0)
        except Malformed as exc:
            reason = str(exc)
        if reason is not None:
            self._refuse(reason, head[0] >> 4)
            return False
        self._packets += 1
        self._ready += head
        head.clear()
        return True

    def _refuse(self, reason: str, kind: int) -> None:
        self.refused = reason
        log.warning("closed the connection of client %s at %s (its packet %d, a %s): %s", self._client,
                    self._peer, self._packets + 1, NAMES[kind], reason)
        self._head.clear()
        close_now(self._writer)


class CheckedTcpReader(ChecksPackets, ReadsBeforeReset):
    """A TCP connection's reader (:class:`~.connections.ReadsBeforeReset`), checked."""


class CheckedWsReader(ChecksPackets, WebSocketsReader):
    """A WebSocket connection's reader, checked."""
