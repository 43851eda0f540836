"""A minimal MQTT 3.1.1 client over a plain socket, for tests that must do
what a library hides: withhold a PUBACK, PUBREC or PUBCOMP, go silent past
the keep-alive without closing (a frozen device), resend a PUBLISH or a
PUBREL by hand, or drop the connection with a reset instead of a FIN.

It sends exactly what a test asks for and nothing else (no PINGREQ, no
automatic acknowledgement), and reads packets one at a time.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from typing import Callable

from fogmesh.mqtt_framing import encode_varint, read_varint, split_packets

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
NAMES = {CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH", PUBACK: "PUBACK", PUBREC: "PUBREC",
         PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE", SUBACK: "SUBACK",
         UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK", PINGREQ: "PINGREQ", PINGRESP: "PINGRESP",
         DISCONNECT: "DISCONNECT"}


def text(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return len(b).to_bytes(2, "big") + b


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + encode_varint(len(body)) + body


@dataclass(frozen=True)
class Packet:
    """One packet as read: its type, the fixed header's flags, the rest."""

    kind: int
    flags: int
    body: bytes

    @property
    def name(self) -> str:
        return NAMES.get(self.kind, str(self.kind))

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 3

    @property
    def dup(self) -> bool:
        return bool(self.flags & 8)

    @property
    def retain(self) -> bool:
        return bool(self.flags & 1)

    @property
    def topic(self) -> str:
        n = int.from_bytes(self.body[:2], "big")
        return self.body[2:2 + n].decode()

    @property
    def packet_id(self) -> int:
        if self.kind == PUBLISH:
            n = int.from_bytes(self.body[:2], "big")
            return int.from_bytes(self.body[2 + n:4 + n], "big") if self.qos else 0
        return int.from_bytes(self.body[:2], "big")

    @property
    def payload(self) -> bytes:
        n = int.from_bytes(self.body[:2], "big")
        return self.body[2 + n + (2 if self.qos else 0):]

    def __repr__(self) -> str:
        if self.kind == PUBLISH:
            return (f"PUBLISH(topic={self.topic!r}, qos={self.qos}, dup={self.dup}, retain={self.retain}, "
                    f"id={self.packet_id}, payload={self.payload!r})")
        return f"{self.name}({self.body.hex()})"


class Closed(Exception):
    """The broker closed the connection."""


class RawClient:
    """One MQTT connection. Every method sends one packet or waits for one."""

    def __init__(self, port: int, client_id: str, *, host: str = "127.0.0.1") -> None:
        self.client_id = client_id
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()
        self._next_id = 0
        self.closed = False

    # -- sending ---------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def new_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def connect(self, *, clean: bool = True, keepalive: int = 60, will: tuple[str, bytes, int, bool] | None = None,
                timeout: float = 10) -> bool:
        """CONNECT; returns the CONNACK's session-present flag (the return code must be 0).
        ``will``: (topic, payload, qos, retain)."""
        flags = 0x02 if clean else 0
        payload = text(self.client_id)
        if will is not None:
            topic, message, qos, retain = will
            flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
            payload += text(topic) + text(message)
        self.send(packet(CONNECT, 0, text("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big") + payload))
        ack = self.expect(CONNACK, timeout)
        assert ack.body[1] == 0, f"connection refused: return code {ack.body[1]}"
        return bool(ack.body[0] & 1)

    def subscribe(self, *filters: tuple[str, int], timeout: float = 10) -> list[int]:
        """SUBSCRIBE; returns the SUBACK's return codes (its packet id checked)."""
        pid = self.new_id()
        self.send(packet(SUBSCRIBE, 2, pid.to_bytes(2, "big") + b"".join(text(f) + bytes([q]) for f, q in filters)))
        ack = self.expect(SUBACK, timeout)
        assert ack.packet_id == pid, f"SUBACK for {ack.packet_id}, SUBSCRIBE was {pid}"
        return list(ack.body[2:])

    def unsubscribe(self, *filters: str, timeout: float = 10) -> None:
        pid = self.new_id()
        self.send(packet(UNSUBSCRIBE, 2, pid.to_bytes(2, "big") + b"".join(text(f) for f in filters)))
        ack = self.expect(UNSUBACK, timeout)
        assert ack.packet_id == pid, f"UNSUBACK for {ack.packet_id}, UNSUBSCRIBE was {pid}"

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, dup: bool = False,
                packet_id: int | None = None) -> int:
        """PUBLISH, nothing awaited; returns its packet id (0 at QoS 0)."""
        pid = (packet_id or self.new_id()) if qos else 0
        flags = (8 if dup else 0) | qos << 1 | (1 if retain else 0)
        self.send(packet(PUBLISH, flags, text(topic) + (pid.to_bytes(2, "big") if qos else b"") + payload))
        return pid

    def publish_acked(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> None:
        """PUBLISH at QoS 1 or 2 and complete its flow (PUBACK; PUBREC, PUBREL, PUBCOMP)."""
        pid = self.publish(topic, payload, qos=qos, retain=retain)
        if qos == 1:
            assert self.expect(PUBACK).packet_id == pid
        elif qos == 2:
            assert self.expect(PUBREC).packet_id == pid
            self.ack(PUBREL, pid)
            assert self.expect(PUBCOMP).packet_id == pid

    def ack(self, kind: int, packet_id: int) -> None:
        """PUBACK, PUBREC, PUBREL (flags 0010) or PUBCOMP for ``packet_id``."""
        self.send(packet(kind, 2 if kind == PUBREL else 0, packet_id.to_bytes(2, "big")))

    def ping(self) -> None:
        self.send(packet(PINGREQ, 0, b""))

    def disconnect(self) -> None:
        """A DISCONNECT, then the socket closed (a clean goodbye: no will)."""
        self.send(packet(DISCONNECT, 0, b""))
        self.sock.close()
        self.closed = True

    def drop(self) -> None:
        """Gone without a DISCONNECT: the socket reset (no FIN), as a killed
        process behind a cut link."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
        self.closed = True

    # -- receiving -------------------------------------------------------------
    def read(self, timeout: float = 10) -> Packet:
        """The next packet; Closed when the broker closes the connection first,
        TimeoutError when nothing comes within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            got = split_packets(self._buffer)
            if got:
                raw = got[0]
                rest = b"".join(got[1:])
                self._buffer[:0] = rest
                _, at = read_varint(raw, 1)
                return Packet(raw[0] >> 4, raw[0] & 0x0F, raw[at:])
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no packet") from None
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                raise Closed("the broker closed the connection")
            self._buffer += data

    def expect(self, kind: int, timeout: float = 10) -> Packet:
        """The next packet, which must be of ``kind``."""
        p = self.read(timeout)
        assert p.kind == kind, f"expected {NAMES[kind]}, got {p!r}"
        return p

    def nothing_within(self, seconds: float) -> bool:
        """True when no packet arrives within ``seconds`` (an absence: it can
        only be waited out)."""
        try:
            p = self.read(seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"expected nothing, got {p!r}")

    def received(self, n: int, *, ack: bool = True, timeout: float = 10) -> list[Packet]:
        """The next ``n`` PUBLISH packets (QoS 1 acknowledged, QoS 2 received:
        PUBREC sent, and a PUBREL met on the way completed; unless ``ack`` is False)."""
        out: list[Packet] = []
        while len(out) < n:
            p = self.read(timeout)
            if p.kind == PUBREL:                  # the second half of a QoS 2 flow
                self.ack(PUBCOMP, p.packet_id)
                continue
            assert p.kind == PUBLISH, p
            out.append(p)
            if ack and p.qos == 1:
                self.ack(PUBACK, p.packet_id)
            elif ack and p.qos == 2:
                self.ack(PUBREC, p.packet_id)
        return out

    def until_quiet(self, quiet_s: float = 0.3) -> list[Packet]:
        """Every PUBLISH until none comes for ``quiet_s`` (acknowledged as :meth:`received` does)."""
        out: list[Packet] = []
        try:
            while True:
                out += self.received(1, timeout=quiet_s)
        except TimeoutError:
            return out

    def closed_by_broker_within(self, seconds: float) -> float:
        """Seconds until the broker closes the connection (whatever it sends first is skipped)."""
        start = time.monotonic()
        while True:
            left = seconds - (time.monotonic() - start)
            try:
                self.read(max(left, 0.001))
            except Closed:
                return time.monotonic() - start
            except TimeoutError:
                raise AssertionError(f"the broker kept the connection open for {seconds:g} s") from None

    def closed_without_an_answer(self, seconds: float) -> None:
        """The broker closes the connection within ``seconds`` and sends nothing
        first (a packet refused: not acknowledged, not answered)."""
        try:
            p = self.read(seconds)
        except Closed:
            return
        except TimeoutError:
            raise AssertionError(f"the broker kept the connection open for {seconds:g} s") from None
        raise AssertionError(f"the broker answered {p!r} instead of closing the connection")

    def close(self) -> None:
        if not self.closed:
            self.sock.close()
            self.closed = True


def subscriber(client: Callable[[str], RawClient], name: str, *filters: tuple[str, int],
               clean: bool = True) -> RawClient:
    """A connection made by ``client`` (the tests' factory), subscribed to ``filters``, each granted."""
    c = client(name)
    c.connect(clean=clean)
    assert c.subscribe(*filters) == [q for _, q in filters]
    return c


def publisher(client: Callable[[str], RawClient]) -> RawClient:
    p = client("pub")
    p.connect()
    return p
