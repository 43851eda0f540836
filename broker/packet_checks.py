"""What a broker refuses in a client's packets (pure): MQTT 3.1.1's protocol
violations, on which the server closes the network connection
[MQTT-4.8.0-1], checked on each packet whole, as framed off the stream,
before anything parses it. No sockets: bytes in, a reason (or None) out.

The embedded broker (:mod:`fogmesh.broker.embedded.framing`) closes a
connection at the first packet :func:`refusal` names. amqtt 0.12.1 took a
PINGREQ or a PUBLISH as a first packet, granted QoS 3, answered a SUBSCRIBE
without a topic filter or with the wrong fixed-header flags, and on a
PUBLISH to ``a/+`` or ``$SYS/x`` stopped serving the connection without
closing it; it accepted (CONNACK 0) a CONNECT with will QoS 3, a will QoS
or will retain without the will flag, a client id that is not UTF-8 or
holds U+0000, or bytes after its end, and answered one with a password but
no user name with CONNACK 4 (each is closed unanswered now, as on
mosquitto). What mosquitto 2.0.11 closes a connection for, this closes it
for too (``tests/test_mqtt_conformance*.py`` run both); it is stricter where
the standard is (a packet only a server sends, reserved flags or a wrong
length on an acknowledgement or a PINGREQ, which mosquitto lets by).

Topics a client never publishes to (:func:`brokers_own`): ``$SYS`` (the
broker's own: whoever reads it must be able to trust it) and ``$share`` (a
subscription prefix, not a topic). A PUBLISH to one closes the connection,
as on mosquitto 2.0; a will to one is never published (the embedded
broker's :mod:`~fogmesh.broker.embedded.sessions`), as on mosquitto. Other ``$`` topics are routed:
matched by the filters that name their first level, never by one starting
with a wildcard [MQTT-4.7.2-1].
"""

from __future__ import annotations

from fogmesh.mqtt_framing import read_varint

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
NAMES = {0: "reserved packet type 0", CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH",
         PUBACK: "PUBACK", PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE",
         SUBACK: "SUBACK", UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK", PINGREQ: "PINGREQ",
         PINGRESP: "PINGRESP", DISCONNECT: "DISCONNECT", 15: "reserved packet type 15"}

# The fixed-header flags each packet type must carry (Table 2.2; PUBLISH's are its own),
# and the statement that says so where there is one of its own.
_FLAGS = {PUBREL: (2, "MQTT-3.6.1-1"), SUBSCRIBE: (2, "MQTT-3.8.1-1"), UNSUBSCRIBE: (2, "MQTT-3.10.1-1"),
          DISCONNECT: (0, "MQTT-3.14.1-1")}
_LENGTH = {PUBACK: 2, PUBREC: 2, PUBREL: 2, PUBCOMP: 2, PINGREQ: 0, DISCONNECT: 0}    # the remaining length
_SERVER_ONLY = (CONNACK, SUBACK, UNSUBACK, PINGRESP)
BROKERS_OWN = ("$SYS", "$share")          # first topic levels no client publishes to
_RESERVED, _WILL, _WILL_RETAIN, _USERNAME, _PASSWORD = 0x01, 0x04, 0x20, 0x80, 0x40      # CONNECT flags


class Malformed(ValueError):
    """A packet that does not parse; its message says where."""


def brokers_own(topic: str) -> bool:
    """Is ``topic`` one of the broker's own, which no client publishes to?"""
    return topic.split("/", 1)[0] in BROKERS_OWN


def needed(head: bytes | bytearray) -> int:
    """How many more bytes the packet starting with ``head`` takes (0: it is
    whole). While its fixed header is still arriving, as many as it surely
    takes (every packet is at least two bytes). Malformed when the remaining
    length runs over four bytes [MQTT-2.2.3]."""
    if len(head) < 2:
        return 2 - len(head)
    try:
        length, at = read_varint(head, 1)
    except ValueError:
        if len(head) < 5:
            return 1
        raise Malformed("[MQTT-4.8.0-1] a remaining length longer than four bytes") from None
    return max(at + length - len(head), 0)


def refusal(packet: bytes, *, first: bool = False) -> str | None:
    """Why the broker closes the connection on ``packet`` (one whole packet,
    fixed header included; ``first``: the connection's first), or None when
    it takes it. The reason names the normative statement broken."""
    kind, flags = packet[0] >> 4, packet[0] & 0x0F
    name = NAMES[kind]
    if first and kind != CONNECT:
        return f"[MQTT-3.1.0-1] the first packet is a {name}, not a CONNECT"
    if kind in (0, 15):
        return f"[MQTT-4.8.0-1] a {name} (forbidden)"
    if kind in _SERVER_ONLY:
        return f"[MQTT-4.8.0-1] a {name}, which only a server sends"
    try:
        body = _body(packet)
        if kind == CONNECT:
            return _connect(flags, body) if first else "[MQTT-3.1.0-2] a second CONNECT"
        if kind == PUBLISH:
            return _publish(flags, body)
        want, statement = _FLAGS.get(kind, (0, "MQTT-2.2.2-2"))
        if flags != want:
            return f"[{statement}] a {name} with fixed-header flags {flags:04b}, not {want:04b}"
        if kind in _LENGTH and len(body) != _LENGTH[kind]:
            return f"[MQTT-4.8.0-1] a {name} of {len(body)} bytes after its fixed header, not {_LENGTH[kind]}"
        if kind == SUBSCRIBE:
            return _subscribe(body)
        if kind == UNSUBSCRIBE:
            return _unsubscribe(body)
    except Malformed as exc:
        return f"{exc} in a {name}"
    return None


def client_id(connect: bytes) -> str:
    """The client id of a 3.1.1 CONNECT ("" if it has none, or speaks
    another protocol level)."""
    try:
        body = _body(connect)
        _, at = _string(body, 0)
        if at + 4 > len(body) or body[at] != 4:
            return ""
        return _string(body, at + 4)[0]
    except Malformed:
        return ""


def _body(packet: bytes) -> bytes:
    """What follows the fixed header."""
    try:
        _, at = read_varint(packet, 1)
    except ValueError:
        raise Malformed("[MQTT-4.8.0-1] a fixed header cut short") from None
    return packet[at:]


def _string(body: bytes, at: int) -> tuple[str, int]:
    """The UTF-8 string at ``body[at]`` (a two-byte length, then the bytes)
    and the index after it."""
    if at + 2 > len(body):
        raise Malformed("[MQTT-4.8.0-1] a string cut short")
    end = at + 2 + int.from_bytes(body[at:at + 2], "big")
    if end > len(body):
        raise Malformed("[MQTT-4.8.0-1] a string longer than the packet")
    try:
        text = body[at + 2:end].decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("[MQTT-1.5.3-1] a string that is not well-formed UTF-8") from None
    if "\x00" in text:
        raise Malformed("[MQTT-1.5.3-2] a string with U+0000")
    return text, end


def _binary(body: bytes, at: int) -> int:
    """The index after the binary data at ``body[at]`` (a two-byte length, then the bytes)."""
    if at + 2 > len(body) or at + 2 + int.from_bytes(body[at:at + 2], "big") > len(body):
        raise Malformed("[MQTT-4.8.0-1] binary data running past the end")
    return at + 2 + int.from_bytes(body[at:at + 2], "big")


def _connect(flags: int, body: bytes) -> str | None:
    """A 3.1.1 CONNECT checked field by field, to its last byte (another
    protocol name or level: left to the broker, which answers CONNACK 0x01)."""
    if flags:
        return f"[MQTT-2.2.2-2] a CONNECT with fixed-header flags {flags:04b}, not 0000"
    name, at = _string(body, 0)
    if at + 4 > len(body):
        raise Malformed("[MQTT-4.8.0-1] a CONNECT cut short")
    if name != "MQTT" or body[at] != 4:
        return None
    connect_flags = body[at + 1]
    will, will_qos, will_retain = connect_flags & _WILL, connect_flags >> 3 & 3, connect_flags & _WILL_RETAIN
    if connect_flags & _RESERVED:
        return "[MQTT-3.1.2-3] a CONNECT with its reserved flag set"
    if will_qos == 3:
        return "[MQTT-3.1.2-14] a CONNECT with will QoS 3"
    if not will and (will_qos or will_retain):
        return "[MQTT-3.1.2-13] [MQTT-3.1.2-15] a CONNECT with a will QoS or will retain and no will flag"
    if connect_flags & _PASSWORD and not connect_flags & _USERNAME:
        return "[MQTT-3.1.2-22] a CONNECT with the password flag and no user name flag"
    _, at = _string(body, at + 4)                  # the client id
    if will:
        topic, at = _string(body, at)
        if not topic:
            return "[MQTT-4.7.3-1] a CONNECT with an empty will topic"
        if "+" in topic or "#" in topic:
            return f"[MQTT-3.3.2-2] a CONNECT with the will topic {topic!r}: a topic name has no wildcards"
        if at + 2 > len(body) or at + 2 + int.from_bytes(body[at:at + 2], "big") > len(body):
            return "[MQTT-4.8.0-1] a CONNECT whose will message runs past its end"
        at = _binary(body, at)
    if connect_flags & _USERNAME:
        _, at = _string(body, at)
    if connect_flags & _PASSWORD:
        at = _binary(body, at)
    if at != len(body):
        return f"[MQTT-4.8.0-1] a CONNECT with {len(body) - at} byte(s) after its payload"
    return None


def _packet_id(body: bytes, at: int) -> int:
    if at + 2 > len(body):
        raise Malformed("[MQTT-4.8.0-1] no packet identifier")
    if body[at] == body[at + 1] == 0:
        raise Malformed("[MQTT-2.3.1-1] packet identifier 0")
    return at + 2


def _publish(flags: int, body: bytes) -> str | None:
    qos = flags >> 1 & 3
    if qos == 3:
        return "[MQTT-3.3.1-4] a PUBLISH with QoS 3"
    if qos == 0 and flags & 8:
        return "[MQTT-3.3.1-2] a PUBLISH at QoS 0 with DUP set"
    topic, at = _string(body, 0)
    if qos:
        _packet_id(body, at)
    if not topic:
        return "[MQTT-4.7.3-1] a PUBLISH with an empty topic"
    if "+" in topic or "#" in topic:
        return f"[MQTT-3.3.2-2] a PUBLISH to {topic!r}: a topic name has no wildcards"
    if brokers_own(topic):
        return f"[MQTT-4.7.2] a PUBLISH to {topic!r}: the broker's own topics take no client's messages"
    return None


def _filters(body: bytes, *, with_qos: bool) -> list[str]:
    """The topic filters after the packet identifier, each checked; each
    QoS byte of a SUBSCRIBE too."""
    at = _packet_id(body, 0)
    filters = []
    while at < len(body):
        text, at = _string(body, at)
        if not text:
            raise Malformed("[MQTT-4.7.3-1] an empty topic filter")
        if with_qos:
            if at >= len(body):
                raise Malformed("[MQTT-4.8.0-1] a topic filter without its QoS byte")
            if body[at] > 2:
                raise Malformed(f"[MQTT-3.8.3-4] requested QoS byte {body[at]:#04x} (0, 1 or 2, "
                                "the other bits 0)")
            at += 1
        filters.append(text)
    return filters


def _subscribe(body: bytes) -> str | None:
    return None if _filters(body, with_qos=True) else "[MQTT-3.8.3-3] a SUBSCRIBE without a topic filter"


def _unsubscribe(body: bytes) -> str | None:
    return None if _filters(body, with_qos=False) else "[MQTT-3.10.3-2] an UNSUBSCRIBE without a topic filter"
