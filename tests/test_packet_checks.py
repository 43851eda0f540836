"""Tier 1 (pure): what a broker refuses in a client's packets
(broker/packet_checks.py): MQTT 3.1.1's protocol violations, on which the
embedded broker closes the connection. Each case names its normative
statement; those mosquitto 2.0 also closes a connection for run against
both real brokers in test_mqtt_conformance.py and
test_mqtt_conformance_topics.py. And the embedded broker's reader that
applies them (broker/embedded/framing.py), on a fake stream: no sockets."""

import asyncio
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rawmqtt import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    packet,
    text,
)

from fogmesh.broker.packet_checks import Malformed, brokers_own, client_id, needed, refusal
from fogmesh.mqtt_framing import split_packets


def connect(cid: str = "c", *, will: tuple[str | bytes, bytes] | None = None, level: int = 4,
            name: str = "MQTT", flags: int = 0) -> bytes:
    connect_flags = 0x02 | (0x04 if will else 0)
    payload = text(cid) + (text(will[0]) + text(will[1]) if will else b"")
    return packet(CONNECT, flags, text(name) + bytes([level, connect_flags]) + (60).to_bytes(2, "big") + payload)


CONNECT_PACKET = connect()


def publish(topic: str | bytes, *, qos: int = 0, packet_id: int = 1, flags: int = 0) -> bytes:
    return packet(PUBLISH, flags | qos << 1, text(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + b"data")


def subscribe(*filters: tuple[str | bytes, int], flags: int = 2, packet_id: int = 1) -> bytes:
    return packet(SUBSCRIBE, flags, packet_id.to_bytes(2, "big") + b"".join(text(f) + bytes([q]) for f, q in filters))


def unsubscribe(*filters: str, flags: int = 2, packet_id: int = 1) -> bytes:
    return packet(UNSUBSCRIBE, flags, packet_id.to_bytes(2, "big") + b"".join(text(f) for f in filters))


TAKEN = [
    publish("a/b"), publish("a/b", qos=1), publish("a/b", qos=2, flags=9), publish("$foo/bar", qos=1),
    publish("/"), publish("a/b", qos=1, packet_id=65535),
    packet(PUBLISH, 0, text("a") + b""),                              # an empty payload
    subscribe(("a/#", 0), ("+/b", 1), ("$SYS/#", 2), ("$share/g/t", 1)),
    unsubscribe("a/#", "b"), packet(PUBACK, 0, b"\x00\x01"), packet(PUBREC, 0, b"\x00\x01"),
    packet(PUBREL, 2, b"\x00\x01"), packet(PUBCOMP, 0, b"\x00\x01"), packet(PINGREQ, 0, b""),
    packet(DISCONNECT, 0, b""),
]


@pytest.mark.parametrize("p", TAKEN, ids=repr)
def test_a_well_formed_packet_is_taken(p):
    assert refusal(p) is None


def test_the_first_packet_is_a_connect_with_no_flags():
    # [MQTT-3.1.0-1] the first packet must be a CONNECT; [MQTT-2.2.2-2] its flags 0
    assert refusal(CONNECT_PACKET, first=True) is None
    assert "MQTT-3.1.0-1" in refusal(packet(PINGREQ, 0, b""), first=True)
    assert "MQTT-3.1.0-1" in refusal(publish("a"), first=True)
    assert "MQTT-3.1.0-1" in refusal(subscribe(("a", 0)), first=True)
    assert "MQTT-2.2.2-2" in refusal(bytes([0x11]) + CONNECT_PACKET[1:], first=True)


def test_a_second_connect_is_refused():
    # [MQTT-3.1.0-2]
    assert "MQTT-3.1.0-2" in refusal(CONNECT_PACKET)


def test_a_will_topic_is_a_topic_name():
    # [MQTT-3.3.2-2] no wildcards; [MQTT-4.7.3-1] not empty (mosquitto 2.0 closes these too)
    assert refusal(connect(will=("a/b", b"gone")), first=True) is None
    assert refusal(connect(will=("$x/b", b"gone")), first=True) is None
    # The broker's own: taken, the will dropped by the broker (as mosquitto does)
    assert refusal(connect(will=("$SYS/x", b"gone")), first=True) is None
    for topic in ("a/+", "#", "a/#"):
        assert "MQTT-3.3.2-2" in refusal(connect(will=(topic, b"gone")), first=True)
    assert "MQTT-4.7.3-1" in refusal(connect(will=("", b"gone")), first=True)
    assert "MQTT-1.5.3-1" in refusal(connect(will=(b"\xff", b"gone")), first=True)
    cut = connect(will=("a", b"gone"))
    cut = cut[:1] + bytes([cut[1] - 3]) + cut[2:-3]           # the will message runs past the end
    assert "MQTT-4.8.0-1" in refusal(cut, first=True)


def raw_connect(connect_flags: int, payload: bytes) -> bytes:
    return packet(CONNECT, 0, text("MQTT") + bytes([4, connect_flags]) + (60).to_bytes(2, "big") + payload)


INVALID_CONNECTS = [
    ("MQTT-3.1.2-3", raw_connect(0x03, text("c"))),
    ("MQTT-3.1.2-14", raw_connect(0x1E, text("c") + text("w") + text(b"gone"))),
    ("MQTT-3.1.2-13", raw_connect(0x0A, text("c"))), ("MQTT-3.1.2-15", raw_connect(0x22, text("c"))),
    ("MQTT-3.1.2-22", raw_connect(0x42, text("c") + text(b"secret"))),
    ("MQTT-1.5.3-1", raw_connect(0x02, text(b"\xff\xfe"))), ("MQTT-1.5.3-2", raw_connect(0x02, text("a\x00b"))),
    ("MQTT-4.8.0-1", raw_connect(0x02, text("c") + b"\x00")),                       # a byte past its end
    ("MQTT-4.8.0-1", raw_connect(0xC2, text("c") + text("user") + text(b"pw") + b"\x00")),
    ("MQTT-4.8.0-1", raw_connect(0xC2, text("c") + text("user"))),                   # no password
    ("MQTT-1.5.3-1", raw_connect(0x82, text("c") + text(b"\xff"))),                  # the user name is UTF-8
]


@pytest.mark.parametrize("statement,p", INVALID_CONNECTS, ids=[f"{s}:{p.hex()}" for s, p in INVALID_CONNECTS])
def test_an_invalid_connect_is_refused_with_its_statement(statement, p):
    reason = refusal(p, first=True)
    assert reason is not None and statement in reason, reason


def test_a_connect_with_a_will_a_user_name_and_a_password_is_taken_whole():
    full = text("c") + text("w/t") + text(b"gone") + text("user") + text(b"\xff binary")
    assert refusal(raw_connect(0xF6, full), first=True) is None
    assert refusal(raw_connect(0x82, text("c") + text("user")), first=True) is None


def test_a_connect_of_another_protocol_level_is_left_to_the_broker_to_refuse():
    # amqtt answers it with a CONNACK 0x01 (unacceptable protocol version)
    assert refusal(connect(level=3, name="MQIsdp", will=("a/+", b"x")), first=True) is None


def test_the_client_id_of_a_connect():
    assert client_id(connect("sensor-7")) == "sensor-7"
    assert client_id(connect("")) == ""
    assert client_id(connect("x", level=5)) == ""
    assert client_id(packet(CONNECT, 0, text("MQTT"))) == ""


def test_the_brokers_own_topics():
    assert brokers_own("$SYS") and brokers_own("$SYS/broker/version") and brokers_own("$share/g/t")
    assert not brokers_own("$x/SYS") and not brokers_own("$SYSTEM/x") and not brokers_own("a/$SYS")


REFUSED = [
    ("MQTT-3.3.2-2", publish("a/+")), ("MQTT-3.3.2-2", publish("a/#", qos=1)), ("MQTT-3.3.2-2", publish("#")),
    ("MQTT-3.3.1-4", publish("a", flags=6)), ("MQTT-3.3.1-2", publish("a", flags=8)),
    ("MQTT-4.7.3-1", publish("")),
    ("MQTT-2.3.1-1", publish("a", qos=1, packet_id=0)),
    ("MQTT-1.5.3-1", publish(b"\xff\xfe")), ("MQTT-1.5.3-2", publish("a\x00b")),
    ("MQTT-1.5.3-1", publish(b"\xed\xa0\x80")),                       # an encoded surrogate
    ("MQTT-4.8.0-1", packet(PUBLISH, 2, text("a") + b"\x00")),         # QoS 1 without its packet id
    ("MQTT-4.8.0-1", packet(PUBLISH, 0, b"\x00\x09abc")),             # a topic longer than the packet
    ("the broker's own", publish("$SYS/broker/version")), ("the broker's own", publish("$SYS")),
    ("the broker's own", publish("$share/g/t", qos=1)),
    ("MQTT-3.8.3-4", subscribe(("a", 3))), ("MQTT-3.8.3-4", subscribe(("a", 0), ("b", 0x41))),
    ("MQTT-3.8.3-3", subscribe()),
    ("MQTT-3.8.1-1", subscribe(("a", 0), flags=0)),
    ("MQTT-2.3.1-1", subscribe(("a", 0), packet_id=0)),
    ("MQTT-4.7.3-1", subscribe(("", 0))),
    ("MQTT-4.8.0-1", packet(SUBSCRIBE, 2, b"\x00\x01" + text("a"))),   # a filter without its QoS byte
    ("MQTT-4.8.0-1", packet(SUBSCRIBE, 2, b"\x00")),                  # no packet id
    ("MQTT-3.10.3-2", unsubscribe()), ("MQTT-3.10.1-1", unsubscribe("a", flags=0)),
    ("MQTT-4.7.3-1", unsubscribe("")),
    ("MQTT-3.6.1-1", packet(PUBREL, 0, b"\x00\x01")),
    ("MQTT-2.2.2-2", packet(PUBACK, 1, b"\x00\x01")), ("MQTT-2.2.2-2", packet(PINGREQ, 1, b"")),
    ("MQTT-3.14.1-1", packet(DISCONNECT, 1, b"")),
    ("MQTT-4.8.0-1", packet(PUBACK, 0, b"\x00\x01\x00")), ("MQTT-4.8.0-1", packet(PINGREQ, 0, b"\x00")),
    ("MQTT-4.8.0-1", packet(CONNACK, 0, b"\x00\x00")), ("MQTT-4.8.0-1", packet(SUBACK, 0, b"\x00\x01\x00")),
    ("MQTT-4.8.0-1", packet(UNSUBACK, 0, b"\x00\x01")), ("MQTT-4.8.0-1", packet(PINGRESP, 0, b"")),
    ("MQTT-4.8.0-1", packet(0, 0, b"")), ("MQTT-4.8.0-1", packet(15, 0, b"")),
]


@pytest.mark.parametrize("statement,p", REFUSED, ids=[f"{s}:{p.hex()}" for s, p in REFUSED])
def test_a_protocol_violation_is_refused_with_its_statement(statement, p):
    reason = refusal(p)
    assert reason is not None and statement in reason, reason


def test_the_fixed_header_is_framed_before_the_rest():
    p = publish("a/b", qos=1)
    assert [needed(p[:n]) for n in (0, 1)] == [2, 1]           # every packet takes two bytes at least
    assert needed(p[:2]) == len(p) - 2
    assert needed(p) == 0
    big = packet(PUBLISH, 0, text("t") + b"x" * 200)            # a two-byte remaining length
    assert needed(big[:2]) == 1 and needed(big[:3]) == len(big) - 3


def test_a_remaining_length_over_four_bytes_is_malformed():
    assert needed(b"\x30\xff\xff\xff") == 1
    with pytest.raises(Malformed, match="MQTT-4.8.0-1"):
        needed(b"\x30\xff\xff\xff\xff")


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5))
def test_framing_finds_the_packets_split_packets_finds(payloads):
    stream = b"".join(packet(PUBLISH, 0, text("t") + p) for p in payloads)
    framed, head = [], bytearray()
    for byte in stream:                      # one byte at a time, the slowest a stream can come
        head.append(byte)
        if needed(head) == 0:
            framed.append(bytes(head))
            head.clear()
    assert framed == split_packets(bytearray(stream)) and not head


@given(st.integers(0, 255), st.binary(max_size=64), st.booleans())
def test_no_packet_makes_the_checks_fail(first_byte, body, first):
    # Nothing a client sends may raise out of the check: a reason or None, always.
    reason = refusal(packet(first_byte >> 4, first_byte & 0x0F, body), first=first)
    assert reason is None or reason.startswith("[MQTT-")


# -- the embedded broker's reader (broker/embedded/framing.py) on a fake stream ---------------
class Stream:
    """A connection's bytes as they arrive: ``read(n)`` waits for all ``n``, as
    StreamReader.readexactly does, and takes nothing until it has them."""

    def __init__(self, *args, **kwargs):
        self.buffer = bytearray()
        self.arrived = asyncio.Event()
        self.aborted = False
        self.transport = self                         # what close_now aborts

    def abort(self):
        self.aborted = True

    def feed(self, data):
        self.buffer += data
        self.arrived.set()

    async def read(self, n):
        while len(self.buffer) < n:
            self.arrived.clear()
            await self.arrived.wait()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data


def checked_reader():
    from fogmesh.broker.embedded.framing import ChecksPackets

    class Checked(ChecksPackets, Stream):
        pass
    writer = types.SimpleNamespace()
    reader = Checked(peer=("127.0.0.1", 1), writer=writer)
    writer._writer = reader                            # close_now: writer._writer.transport.abort()
    return reader


async def read_packet(reader):
    """As amqtt reads a packet: the fixed header byte by byte, then the rest."""
    head = await reader.read(1)
    length, shift = 0, 0
    while True:
        byte = (await reader.read(1))[0]
        head += bytes([byte])
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return head + await reader.read(length)


def test_the_reader_hands_amqtt_whole_checked_packets_and_loses_nothing_to_a_cancelled_read():
    async def scenario():
        reader = checked_reader()
        p1, p2 = publish("a/b", qos=1), publish("c", qos=0)
        reader.feed(CONNECT_PACKET + p1[:3])
        assert await reader.first_packet()
        assert await read_packet(reader) == CONNECT_PACKET
        with pytest.raises(asyncio.TimeoutError):      # amqtt's keep-alive wait, cancelled mid-packet
            await asyncio.wait_for(read_packet(reader), 0.01)
        reader.feed(p1[3:] + p2)
        assert [await read_packet(reader), await read_packet(reader)] == [p1, p2]
        assert not reader.aborted
    asyncio.run(scenario())


def test_the_reader_closes_the_connection_at_the_first_violation_and_reads_nothing_after():
    async def scenario():
        reader = checked_reader()
        reader.feed(CONNECT_PACKET + publish("a") + publish("a/+") + publish("b"))
        assert await reader.first_packet()
        assert await read_packet(reader) == CONNECT_PACKET
        assert await read_packet(reader) == publish("a")
        assert await reader.read(1) == b""             # amqtt's end of stream: its will goes out
        assert reader.aborted and "MQTT-3.3.2-2" in reader.refused
    asyncio.run(scenario())


def test_a_first_packet_that_is_no_connect_never_reaches_amqtt():
    async def scenario():
        reader = checked_reader()
        reader.feed(packet(PINGREQ, 0, b""))
        assert not await reader.first_packet()
        assert reader.aborted and "MQTT-3.1.0-1" in reader.refused
    asyncio.run(scenario())
