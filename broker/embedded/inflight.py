"""What a session keeps in flight, as MQTT 3.1.1 says and amqtt 0.12.1 did
not: QoS 1 and 2 messages to a client stay in its session until their flow
is through, however long that takes and across a lost connection, and go
again down its next connection (what goes again: :func:`fogmesh.broker.session_state.resend`);
a QoS 2 message from a client is delivered once, on its PUBREL, and every
PUBREL gets its PUBCOMP. Shared-subscription deliveries are the exception:
they go back to their group, never down a member's next connection."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from amqtt.errors import ProtocolHandlerError
from amqtt.mqtt.constants import QOS_2
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.session import OUTGOING, IncomingApplicationMessage, OutgoingApplicationMessage

from fogmesh.broker.session_state import PUBLISH_AGAIN, InFlight, Message, resend

log = logging.getLogger("fogmesh.broker.embedded")


class SharedOutgoing(OutgoingApplicationMessage):
    """A delivery to a shared-subscription member. It sits in the session's
    in-flight table only to reserve its packet id: if the connection goes,
    it goes back to the group (:meth:`FogmeshBroker._deliver_shared`), never
    again down the member's next connection (:func:`resends_on_reconnect`)."""


class _Kept(Exception):
    """The connection went before the flow was through: the message stays in the session."""


def as_inflight(message: Any) -> InFlight:
    """An amqtt message in a session's table, as :mod:`~fogmesh.broker.session_state` sees it."""
    return InFlight(message.packet_id, Message(message.topic, bytes(message.data), message.qos or 0,
                                               bool(message.retain)),
                    released=message.pubrec_packet is not None)


def resends_on_reconnect(handler: Any, launch: Callable[[Any], None]) -> None:
    """A new connection to a session gets again what the session had sent
    and not seen acknowledged [MQTT-4.4.0-1], in the order first sent,
    without the shared deliveries and without waiting.

    Why no shared deliveries: an agent whose connection was cut reconnected
    before the broker had noticed; amqtt sent the new connection the task it
    had just sent down the dead one, the agent answered it, and the group
    also gave that task (never acknowledged on the old connection) to
    another member, which ran it again. Why not waited: amqtt read nothing
    from the client until every resent message was acknowledged (or 10 s
    passed)."""
    async def resend_all() -> None:
        for m in list(handler.session.inflight_out.values()):
            if not isinstance(m, SharedOutgoing):
                launch(handler._handle_message_flow(m))

    handler._retry_deliveries = resend_all


async def _send_and_wait(handler: Any, packet: Any, waiters: dict[int, Any], packet_id: int) -> Any:
    """Send ``packet`` and wait for the answer registered in ``waiters``, for
    as long as it takes. _Kept when the connection goes first; a broker stop
    (this task cancelled) goes through."""
    waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    waiters[packet_id] = waiter
    try:
        await handler._send_packet(packet)
        return await waiter
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise                             # the broker stops
        raise _Kept() from None               # the connection went (its waiters were cancelled)
    except Exception as exc:                  # a write to a dead socket
        log.debug("delivery to %s kept for its next connection: %r", handler.session.client_id, exc)
        raise _Kept() from None
    finally:
        if waiters.get(packet_id) is waiter:
            del waiters[packet_id]


def keeps_in_flight(handler: Any) -> None:
    """QoS 1 and 2 to a client as MQTT says [MQTT-4.4.0-1]: a message sent and
    not acknowledged when the connection goes stays in the session and goes
    again down its next connection (:func:`resend`), and it waits for its
    acknowledgements however long the client takes.

    Why: amqtt 0.12.1 drops it from the session when the connection closes
    (it cancels the waiter) and after 5 s without an answer. A claim in
    flight to an agent whose link was cut never reached it; the agent took
    its own later claim for the first, and it and a peer both ran the task.
    """
    amqtt_qos1, amqtt_qos2 = handler._handle_qos1_message_flow, handler._handle_qos2_message_flow

    def ours(message: Any) -> bool:
        return message.direction == OUTGOING and not isinstance(message, SharedOutgoing)

    async def flow1(message: Any) -> None:
        if not ours(message):
            return await amqtt_qos1(message)
        session, packet_id = handler.session, message.packet_id
        session.inflight_out[packet_id] = message
        packet = message.build_publish_packet(dup=message.publish_packet is not None)
        message.publish_packet = packet
        try:
            message.puback_packet = await _send_and_wait(handler, packet, handler._puback_waiters, packet_id)
        except _Kept:
            return
        if session.inflight_out.get(packet_id) is message:
            del session.inflight_out[packet_id]

    async def flow2(message: Any) -> None:
        if not ours(message):
            return await amqtt_qos2(message)
        session, packet_id = handler.session, message.packet_id
        session.inflight_out[packet_id] = message
        try:
            if resend(as_inflight(message)) == PUBLISH_AGAIN:
                packet = message.build_publish_packet(dup=message.publish_packet is not None)
                message.publish_packet = packet
                message.pubrec_packet = await _send_and_wait(handler, packet, handler._pubrec_waiters, packet_id)
            message.pubrel_packet = PubrelPacket.build(packet_id)
            message.pubcomp_packet = await _send_and_wait(handler, message.pubrel_packet,
                                                          handler._pubcomp_waiters, packet_id)
        except _Kept:
            return
        if session.inflight_out.get(packet_id) is message:
            del session.inflight_out[packet_id]

    handler._handle_qos1_message_flow, handler._handle_qos2_message_flow = flow1, flow2


def qos2_received_once(handler: Any) -> None:
    """A QoS 2 PUBLISH from a client is kept in its session with its packet
    id and answered with a PUBREC (again for a copy sent again: not kept
    twice), and delivered onwards once, when its PUBREL comes; every PUBREL
    is answered with a PUBCOMP [MQTT-4.3.3-2], also one the client sends again
    after a reconnect, or for an id the broker no longer holds.

    Why: amqtt 0.12.1 waited for the PUBREL in a task that a lost connection
    cancelled; on the next connection it sent the client an unasked PUBREC,
    and a PUBREL it had no waiter for went unanswered, so the client kept
    the message for ever."""
    amqtt_publish = handler.handle_publish

    def handle_publish(packet: Any) -> Any:
        header = packet.variable_header
        if packet.qos != QOS_2 or header is None or packet.topic_name is None or packet.data is None:
            return amqtt_publish(packet)
        session, packet_id = handler.session, header.packet_id
        if packet_id not in session.inflight_in:
            message = IncomingApplicationMessage(packet_id, packet.topic_name, QOS_2, packet.data,
                                                 packet.retain_flag)
            message.publish_packet = packet
            session.inflight_in[packet_id] = message
        return _answer(handler, PubrecPacket.build(packet_id))

    def handle_pubrel(packet: Any) -> Any:
        packet_id = packet.packet_id
        message = handler.session.inflight_in.pop(packet_id, None)
        if message is not None:
            message.pubrel_packet = packet
            handler.session.delivered_message_queue.put_nowait(message)      # unbounded
        return _answer(handler, PubcompPacket.build(packet_id))

    handler.handle_publish, handler.handle_pubrel = handle_publish, handle_pubrel


async def _answer(handler: Any, packet: Any) -> None:
    try:
        await handler._send_packet(packet)
    except ProtocolHandlerError:        # the connection went first: the client sends it again
        pass
