"""What the embedded broker changes in amqtt per connection: a reader that
reads what arrived before a reset (and nothing once the broker stops), and a
shared subscription member's packets all taken in. (What a session keeps in
flight: :mod:`.inflight`; the keep-alive: :mod:`.liveness`.) Each patch says why."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.adapters import StreamReaderAdapter
from amqtt.errors import ProtocolHandlerError
from amqtt.mqtt.constants import QOS_1
from amqtt.mqtt.puback import PubackPacket
from amqtt.session import IncomingApplicationMessage

log = logging.getLogger("fogmesh.broker.embedded")

READER_GRACE_S = 0.5      # how long a closing connection's reader may finish the packets it holds


class ReadsBeforeReset(StreamReaderAdapter):
    """amqtt's reader of a TCP connection, except that what arrived before a
    connection reset is still read (writes fail at once, as before).

    Why: asyncio's StreamReader raises a connection's error on the next read
    even when data that came before the error waits in its buffer. An agent
    cut off right after sending an answer and its task's PUBACK in one write
    had the answer read (amqtt reads a packet at a time) and the PUBACK
    dropped: the broker handed the answered task to another member.
    """

    after_reset = False        # set for shared-subscription members (``reads_to_the_end``)

    def __init__(self, reader: asyncio.StreamReader, closing: asyncio.Event) -> None:
        super().__init__(reader)
        self._closing = closing    # the broker is shutting down: read nothing more

    @property
    def closing(self) -> bool:
        """The broker is shutting down: this connection reads no more."""
        return self._closing.is_set()

    async def read(self, n: int = -1) -> bytes:
        if self._closing.is_set():
            await asyncio.Future()        # until the shutdown cancels this connection's reader
        reader = self._reader
        buffered = reader._buffer
        if self.after_reset and reader.exception() is not None:
            if 0 < n <= len(buffered):            # readexactly, minus its error check
                data = bytes(buffered[:n])
                del buffered[:n]
                return data
            # A packet cut short: amqtt's reader goes on after a failed read, so
            # what is left must not be parsed as the start of another packet.
            buffered.clear()
        return await super().read(n)


def reads_to_the_end(handler: Any) -> None:
    """For a shared-subscription member: the packets that arrived before its
    connection died are all taken in, in the order read.

    Why: amqtt handles each packet in a task of its own, cancels those not
    yet run when the connection closes, and cancels the reader itself with
    packets in its buffer. An agent sends its answer and the PUBACK of its
    task in one write; under load the broker forwarded the answer, dropped
    the PUBACK and handed the task to another member, which ran it again.
    Now a QoS 1 PUBLISH goes into the broker and a PUBACK settles as it is
    read, the reader reads what arrived before a reset
    (:class:`ReadsBeforeReset`), and a stop lets it finish (a dead
    connection's reader ends by itself; a live one, a client taken over by
    its own reconnect, is cancelled after a grace). Only for members: under
    claims nothing may follow a peer's will, which amqtt sends as soon as a
    write to the dead connection fails.
    """
    if getattr(handler, "_fogmesh_reads_to_the_end", False):
        return
    handler._fogmesh_reads_to_the_end = True
    if isinstance(handler.reader, ReadsBeforeReset):
        handler.reader.after_reset = True
    queued_publish, queued_puback, queued_stop = handler.handle_publish, handler.handle_puback, handler.stop

    def handle_publish(packet: Any) -> Any:
        header = packet.variable_header
        if packet.qos != QOS_1 or header is None or packet.topic_name is None or packet.data is None:
            return queued_publish(packet)
        message = IncomingApplicationMessage(header.packet_id, packet.topic_name, QOS_1, packet.data,
                                             packet.retain_flag)
        message.publish_packet = packet
        handler.session.delivered_message_queue.put_nowait(message)     # unbounded
        return acknowledge(handler, message)

    def handle_puback(packet: Any) -> Any:
        header = packet.variable_header
        waiter = handler._puback_waiters.get(header.packet_id) if header is not None else None
        if waiter is not None and not waiter.done():
            waiter.set_result(packet)
            return settled()
        return queued_puback(packet)           # amqtt's own, with its warnings

    async def stop() -> None:
        reader = handler._reader_task
        closing = isinstance(handler.reader, ReadsBeforeReset) and handler.reader.closing
        if reader is not None and reader is not asyncio.current_task() and not reader.done() and not closing:
            await asyncio.wait({reader}, timeout=READER_GRACE_S)
        await queued_stop()

    handler.handle_publish, handler.handle_puback = handle_publish, handle_puback
    handler.stop = stop


async def acknowledge(handler: Any, message: Any) -> None:
    """The PUBACK of a PUBLISH `reads_to_the_end` took in (as amqtt's own QoS 1 flow)."""
    puback = PubackPacket.build(message.packet_id)
    try:
        await handler._send_packet(puback)
    except ProtocolHandlerError:        # the connection went first: the client sends it again
        return
    message.puback_packet = puback


async def settled() -> None:
    """What amqtt's reader wraps in a task after `reads_to_the_end`."""


def alive(handler: Any) -> bool:
    """The member's connection is up and its handler reads (amqtt marks a
    session connected before its handler has started, and until after it stopped)."""
    return handler._reader_task is not None and not handler._reader_stopped.is_set()
