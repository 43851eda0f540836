"""Shared subscriptions (``$share/{group}/{filter}``) added to amqtt's broker:
the filters are kept out of amqtt's own table and served by
:class:`fogmesh.broker.shared.SharedGroups` (which member gets what).
Deliveries to a group member wait for its PUBACK without amqtt's 5 s limit
(agents acknowledge a task only once answered), and what a member had not
acknowledged when it went away goes to another member."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.mqtt.constants import QOS_0, QOS_1
from amqtt.session import Session

from fogmesh.broker.embedded.connections import alive, reads_to_the_end
from fogmesh.broker.embedded.inflight import SharedOutgoing
from fogmesh.broker.shared import Delivery, SharedGroups, ShareFilter, valid_filter

log = logging.getLogger("fogmesh.broker.embedded")


class SharedSubscriptions:
    """A mixin for amqtt's Broker (``_sessions``, ``config``, ``_topic_filtering``
    and the methods overridden here are amqtt's)."""

    shared: SharedGroups
    _sessions: dict[str, Any]
    _may_share: Any               # LoginChecks': may this login read every topic of a shared filter?
    _closing: asyncio.Event | None
    _pump_pending: bool
    config: Any

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        share = ShareFilter.parse(subscription[0])
        if share is None:
            if subscription[0].startswith("$share/"):
                return 0x80                     # malformed: $share/{group}/{filter}
            return await super().add_subscription(subscription, session)
        if not valid_filter(share.topic_filter) or session.client_id is None \
                or not await self._may_share(session, share.topic_filter):
            return 0x80
        max_qos = self.config.get("max-qos", subscription[1])
        # At most QoS 1: a group's delivery waits for a PUBACK (a member asking for 2 is granted 1).
        granted = min(subscription[1], max_qos if isinstance(max_qos, int) else subscription[1], QOS_1)
        self.shared.subscribe(session.client_id, share, granted)
        self._pump_shared()
        return granted

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        share = ShareFilter.parse(a_filter)
        if share is None:
            return super()._del_subscription(a_filter, session)
        known = session.client_id in self.shared.members(share)
        if session.client_id is not None:
            self.shared.unsubscribe(session.client_id, share)
        return int(known)

    async def _del_all_subscriptions(self, session: Session) -> None:
        if session.client_id is not None:
            self.shared.remove_client(session.client_id)
        await super()._del_all_subscriptions(session)

    async def _broadcast_message(self, session: Session | None, topic: str | None,
                                 data: bytes | bytearray | None, force_qos: int | None = None) -> None:
        if topic is not None and data is not None and self.shared.publish(topic, bytes(data)):
            self._pump_shared()
        await super()._broadcast_message(session, topic, data, force_qos)

    def _connected(self, client_id: str) -> bool:
        session, handler = self._sessions.get(client_id, (None, None))
        return session is not None and handler is not None and session.transitions.state == "connected" \
            and alive(handler)

    def _pump_shared(self) -> None:
        """Start what can be delivered now, once the current step is over (so
        messages a departing member returns in one go keep their order)."""
        if not self._pump_pending:
            self._pump_pending = True
            asyncio.get_running_loop().call_soon(self._pump_now)

    def _pump_now(self) -> None:
        self._pump_pending = False
        if self._closing is not None and self._closing.is_set():
            return                              # shutting down: nothing more goes out
        for delivery in self.shared.deliveries(self._connected):
            self._launch(self._deliver_shared(delivery))

    async def _deliver_shared(self, delivery: Delivery) -> None:
        session, handler = self._sessions.get(delivery.client_id, (None, None))
        acked = False
        try:
            if session is not None and handler is not None and alive(handler):
                acked = await self._send_and_wait(session, handler, delivery)
        finally:
            if acked:
                self.shared.acked(delivery)
            elif self._closing is not None and self._closing.is_set():
                # A graceful stop: this member's acknowledgement may be among
                # what the broker no longer reads. Handed to another member on
                # its way out, the task ran there too after the first one's
                # answer went out. The state written at the stop has it as
                # out to a member: after the restart it goes to one, flagged DUP.
                pass
            else:                               # gone without acknowledging: to another member
                self.shared.returned([delivery])
            self._pump_shared()

    @staticmethod
    async def _send_and_wait(session: Session, handler: Any, delivery: Delivery) -> bool:
        """Send one message and wait for its PUBACK, however long the task it
        carries runs, or until the member's connection is gone (False)."""
        message = delivery.message
        if delivery.qos == QOS_0:
            await handler.mqtt_publish(message.topic, message.payload, QOS_0, retain=False)
            return True
        reads_to_the_end(handler)
        packet_id = session.next_packet_id
        outgoing = SharedOutgoing(packet_id, message.topic, delivery.qos, message.payload, False)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        gone = asyncio.ensure_future(handler._reader_stopped.wait())
        session.inflight_out[packet_id] = outgoing
        handler._puback_waiters[packet_id] = waiter
        try:
            packet = outgoing.build_publish_packet(dup=message.dup)
            await handler._send_packet(packet)
            outgoing.publish_packet = packet
            await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
            return waiter.done() and not waiter.cancelled()
        except Exception as exc:              # a write to a dead socket, a protocol error
            log.debug("shared delivery to %s failed: %r", session.client_id, exc)
            return False
        finally:
            gone.cancel()
            if handler._puback_waiters.get(packet_id) is waiter:
                del handler._puback_waiters[packet_id]
            if session.inflight_out.get(packet_id) is outgoing:
                del session.inflight_out[packet_id]
