"""Whether the embedded broker lets a CONNECT in, decided from its bytes
before amqtt sees it (pure): the login and password against the password
file, the will's topic against the ACL (as mosquitto 2.0 checks it).

Why before amqtt: amqtt 0.12.1 discards the session of a clean-session
CONNECT's client id, and takes over a connected client of that id, before it
asks whether the newcomer may log in at all: anyone could have thrown a box
off the broker by connecting with its client id.
"""

from __future__ import annotations

from dataclasses import dataclass

from fogmesh.broker.logins import Acl, verify_password
from fogmesh.mqtt_framing import read_varint

#: CONNACK "not authorized" (MQTT 3.1.1 return code 5), what mosquitto answers too.
REFUSED = b"\x20\x02\x00\x05"


@dataclass(frozen=True)
class Connect:
    client_id: str
    username: str | None = None
    password: str | None = None
    will_topic: str | None = None


def connect_length(head: bytes) -> int | None:
    """The whole CONNECT packet's length from its first bytes (None: more needed)."""
    try:
        remaining, at = read_varint(head, 1)
    except ValueError:
        return None
    return at + remaining


def _string(packet: bytes, i: int) -> tuple[bytes, int]:
    n = int.from_bytes(packet[i:i + 2], "big")
    if i + 2 + n > len(packet):
        raise ValueError("a string runs past the packet")
    return packet[i + 2:i + 2 + n], i + 2 + n


def parse_connect(packet: bytes) -> Connect | None:
    """The fields of an MQTT 3.1.1 CONNECT packet, or None when it is not one."""
    try:
        if not packet or packet[0] != 0x10:
            return None
        _, i = read_varint(packet, 1)
        name, i = _string(packet, i)
        if name != b"MQTT" or packet[i] != 4:
            return None
        flags = packet[i + 1]
        i += 4                                   # level, flags, keep-alive
        client_id, i = _string(packet, i)
        will_topic = None
        if flags & 0x04:
            topic, i = _string(packet, i)
            _, i = _string(packet, i)            # the will's message
            will_topic = topic.decode()
        username = password = None
        if flags & 0x80:
            raw, i = _string(packet, i)
            username = raw.decode()
        if flags & 0x40:
            raw, i = _string(packet, i)
            password = raw.decode(errors="replace")
        return Connect(client_id.decode(), username, password, will_topic)
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


def admit(connect: Connect, passwords: dict[str, str], acl: Acl) -> str | None:
    """None when this CONNECT may log in, else why not (for the log)."""
    if connect.username is None:
        return "no login (anonymous clients are refused)"
    hashed = passwords.get(connect.username)
    if hashed is None or connect.password is None or not verify_password(hashed, connect.password):
        return f"login {connect.username!r}: unknown, or a wrong password"
    if connect.will_topic is not None and not acl.allows(connect.username, connect.client_id,
                                                         connect.will_topic, "write"):
        return f"login {connect.username!r} may not publish its will on {connect.will_topic!r}"
    return None


def still_valid(username: str | None, password: str | None, passwords: dict[str, str]) -> bool:
    """After the files changed: does a connected client's login still hold?"""
    hashed = passwords.get(username or "")
    return hashed is not None and password is not None and verify_password(hashed, password)
