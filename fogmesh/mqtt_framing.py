"""MQTT's framing, to and from bytes (pure): the variable byte integer
(MQTT 5.0 section 1.5.5, the same in 3.1.1) and whole packets off the front
of a stream (a fixed header byte, the remaining length, the rest).

Why here: the few places that read MQTT bytes without paho (the MQTT 5
PUBLISH properties, the embedded broker's look at a CONNECT, the benchmarks'
and tests' raw sockets) each wrote this loop again.
"""

from __future__ import annotations


def encode_varint(n: int) -> bytes:
    """``n`` as a variable byte integer."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(buf: bytes | bytearray, i: int) -> tuple[int, int]:
    """The variable byte integer at ``buf[i]`` and the index after it.
    Raises ValueError when it is cut off or longer than four bytes."""
    value, shift = 0, 0
    for _ in range(4):
        if i >= len(buf):
            raise ValueError("truncated variable byte integer")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
    raise ValueError("variable byte integer longer than 4 bytes")


def split_packets(buffer: bytearray) -> list[bytes]:
    """Take the whole packets off the front of ``buffer`` (a stream read so
    far); what is left is the start of the next one."""
    packets: list[bytes] = []
    while len(buffer) >= 2:
        try:
            length, at = read_varint(buffer, 1)
        except ValueError:
            if len(buffer) < 5:
                return packets        # the remaining length is still arriving
            raise
        end = at + length
        if end > len(buffer):
            return packets
        packets.append(bytes(buffer[:end]))
        del buffer[:end]
    return packets
