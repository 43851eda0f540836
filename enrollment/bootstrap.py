"""The one step of ``fogmesh join`` taken before the box trusts its broker:
fetch the site's CA certificate from the retained ``fleet/ca`` over TLS
*without* verifying the broker (it has no CA yet), then keep it only if its
SHA-256 is the pin the operator signed into the token. Everything after this
(the token included) goes over a connection verified against that CA.

A few MQTT 3.1.1 packets by hand (CONNECT, SUBSCRIBE, the retained PUBLISH,
DISCONNECT) on a socket of its own: fogmesh's client verifies every TLS
connection, as it should. Nothing sent here is secret: the join login's
password lets anyone only ask to join, and only with a token.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import time

from fogmesh.errors import JoinRefused
from fogmesh.join_token import b64url
from fogmesh.mqtt_framing import encode_varint, read_varint, split_packets


def _s(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def connect_packet(client_id: str, username: str, password: str) -> bytes:
    body = _s("MQTT") + bytes([4, 0xC2]) + (30).to_bytes(2, "big") + _s(client_id) + _s(username) + _s(password)
    return b"\x10" + encode_varint(len(body)) + body


def subscribe_packet(topic: str, packet_id: int = 1) -> bytes:
    body = packet_id.to_bytes(2, "big") + _s(topic) + b"\x00"
    return b"\x82" + encode_varint(len(body)) + body


def publish_of(packet: bytes) -> tuple[str, bytes] | None:
    """(topic, payload) of a QoS 0 PUBLISH packet, else None."""
    if packet[0] >> 4 != 3:
        return None
    _, i = read_varint(packet, 1)
    n = int.from_bytes(packet[i:i + 2], "big")
    topic = packet[i + 2:i + 2 + n].decode(errors="replace")
    at = i + 2 + n + (2 if packet[0] & 0x06 else 0)
    return topic, packet[at:]


def pin_of(pem: str) -> str:
    """The pin of a PEM certificate: unpadded base64url of the SHA-256 of its DER form."""
    return b64url(hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).digest())


def fetch_ca(host: str, port: int, *, topic: str, username: str, password: str, pin: str,
             timeout: float = 10.0) -> str:
    """The CA certificate retained on ``topic``, checked against ``pin``; else :class:`JoinRefused`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE         # no CA yet: the pin checks what comes
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as sock:
            sock.sendall(connect_packet(f"fogmesh-join-{int(time.time() * 1000) % 10**9}", username, password))
            sock.sendall(subscribe_packet(topic))
            buffer = bytearray()
            while time.monotonic() < deadline:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                data = sock.recv(65536)
                if not data:
                    break
                buffer += data
                for packet in split_packets(buffer):
                    if packet[0] == 0x20 and len(packet) >= 4 and packet[3] != 0:
                        raise JoinRefused("no_join_login", f"the broker refused the join login {username} "
                                          f"(CONNACK {packet[3]}): is the registrar set up (secure.py --fleet)?")
                    got = publish_of(packet)
                    if got is not None and got[0] == topic:
                        sock.sendall(b"\xe0\x00")
                        return _checked(got[1].decode(errors="replace"), pin)
    except (OSError, ssl.SSLError) as exc:
        raise JoinRefused("unreachable", f"cannot reach the broker at {host}:{port}: {exc}") from None
    raise JoinRefused("no_registrar", f"no CA certificate on {topic} at {host}:{port} within {timeout:g} s: is "
                      "`fogmesh fleet serve` running on the broker's box?")


def _checked(pem: str, pin: str) -> str:
    try:
        got = pin_of(pem)
    except ValueError:
        raise JoinRefused("bad_ca", "what the broker offers as the site's CA is not a certificate") from None
    if got != pin:
        raise JoinRefused("ca_mismatch", "the broker's CA certificate is not the one the token was made for (a "
                          "broker in the middle, or a new CA since): nothing was sent; ask for a new token")
    return pem
