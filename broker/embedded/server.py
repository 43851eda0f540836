"""The embedded broker's amqtt subclass: shared subscriptions, and the fixes
to amqtt 0.12.1 it needs (each said where it is made). amqtt is pinned
(``pyproject.toml``; ``tests/test_pins.py``): the private methods overridden
here and in :mod:`.connections` stay valid."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from amqtt import __version__ as amqtt_version
from amqtt.adapters import StreamWriterAdapter, WebSocketsReader, WebSocketsWriter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import MQTTError
from amqtt.mqtt.constants import QOS_0
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from fogmesh.broker.embedded.connections import (
    ReadsBeforeReset,
    SharedOutgoing,
    alive,
    keeps_in_flight,
    no_resends_of_shared,
    reads_to_the_end,
)
from fogmesh.broker.embedded.mqtt5 import REFUSED_V5, connect_level, protocol_level, refuse_mqtt5
from fogmesh.broker.shared import Delivery, SharedGroups, ShareFilter, valid_filter

log = logging.getLogger("fogmesh.broker.embedded")

SHUTDOWN_BUDGET_S = 3.0
VERSION = f"fogmesh embedded broker (amqtt {amqtt_version})"
DRAIN_S = 1.0             # a graceful stop: how long what was taken in may take to reach subscribers


class OpenAuthPlugin(BaseAuthPlugin):
    """Accept every client, and keep its persistent session.

    amqtt's stock anonymous-auth plugin marks sessions anonymous, and amqtt
    then drops QoS 1 messages for offline ``clean_session=False`` clients: an
    agent restart would lose queued tasks. Auth and ACLs belong to the
    production (mosquitto) configuration.
    """

    @dataclass
    class Config:
        pass

    async def authenticate(self, *, session: Session) -> bool:
        session.is_anonymous = False
        return True


class FogmeshBroker(Broker):
    """amqtt's broker with shared subscriptions and these fixes (amqtt is
    pinned, so the private methods overridden here stay valid):

    * on every CONNECT amqtt 0.12.1 sends the connecting client the retained
      messages matching *every* client's subscriptions, not just its own: a
      device would receive every agent's presence. Only the session's own
      subscriptions are honoured here;
    * a shared-subscription member's packets that arrived before its
      connection died are all taken in, in order (`reads_to_the_end`), and
      a task it did not acknowledge goes back to the group, never down its
      next connection (`no_resends_of_shared`);
    * a QoS 1 message to a persistent session stays in it until acknowledged,
      however long that takes and across a lost connection (`keeps_in_flight`),
      and a reconnecting client's backlog is sent without holding up what the
      client sends meanwhile.

    Shared subscriptions: ``$share/{group}/{filter}`` filters are kept out of
    amqtt's own table and served by :class:`fogmesh.broker.shared.SharedGroups`.
    Deliveries to a group member wait for its PUBACK without amqtt's 5 s
    limit (agents acknowledge a task only once answered), and what a member
    had not acknowledged when it went away goes to another member.
    """

    def __init__(self, *args: Any, shared: SharedGroups | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shared = shared or SharedGroups()
        self._jobs: set[asyncio.Task[Any]] = set()     # deliveries under way, kept from the GC
        self._pump_pending = False
        self._closing: asyncio.Event | None = None     # set when a graceful shutdown begins

    async def start(self) -> None:
        """amqtt's start, and the broker's name retained on ``$SYS/broker/version``
        as mosquitto has it (``fogmesh doctor`` tells brokers apart by it)."""
        await super().start()
        await self.retain_message(None, "$SYS/broker/version", VERSION.encode(), QOS_0)

    async def shutdown(self) -> None:
        """A graceful stop that loses no message it acknowledged to a client
        still connected: first it reads nothing more from any client (so it
        acknowledges nothing more: an agent's answer it has not taken stays
        unconfirmed, and the agent sends it again after the restart), then it
        lets what it took in reach the connected subscribers (up to
        :data:`DRAIN_S`), then amqtt closes everything. amqtt alone closed the
        sessions one by one while still taking the others' publishes, so an
        agent's answer could be acknowledged after its subscriber was gone."""
        self._closing_event().set()
        deadline = asyncio.get_running_loop().time() + DRAIN_S
        while not self._broadcast_queue.empty() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)         # the deliveries the broadcast loop started write their packets
        await super().shutdown()

    def _closing_event(self) -> asyncio.Event:
        if self._closing is None:
            self._closing = asyncio.Event()
        return self._closing

    async def _initialize_client_session(self, reader: Any, writer: Any, remote_address: str,
                                         remote_port: int) -> Any:
        """amqtt refuses an MQTT 5 CONNECT with a bare "Invalid protocol"; say
        who was refused and what to do instead."""
        try:
            handler, session = await super()._initialize_client_session(reader, writer, remote_address,
                                                                         remote_port)
        except MQTTError as exc:
            if "Invalid protocol" in str(exc):
                level = str(exc).rsplit(":", 1)[-1].strip()
                log.warning(REFUSED_V5, remote_address, remote_port, level,
                            {"5": "MQTT 5", "3": "MQTT 3.1"}.get(level, "unknown"))
            raise
        no_resends_of_shared(handler, session, self._launch)
        keeps_in_flight(handler)
        return handler, session

    async def _publish_session_retained_messages(self, session: Session) -> None:
        """What was queued for the session while it was away, sent in order
        without waiting for the acknowledgements: amqtt waited (up to 5 s each)
        before reading what the client sent, and an agent acknowledges a task
        only once its claim, which it sends meanwhile, is decided."""
        handler = self._get_handler(session)
        while handler is not None and not session.retained_messages.empty():
            queued = session.retained_messages.get_nowait()
            self._launch(handler.mqtt_publish(queued.topic, queued.data, queued.qos, retain=True))

    def _launch(self, job: Any) -> None:
        task = asyncio.ensure_future(job)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        if await protocol_level(reader) == 5:
            # amqtt would parse an MQTT 5 CONNECT with properties as 3.1.1 and
            # wait for bytes that never come: the client hung without a word.
            await refuse_mqtt5(StreamWriterAdapter(writer), writer.get_extra_info("peername"),
                                bytes(reader._buffer[:512]))
            return
        await self._client_connected(listener_name, ReadsBeforeReset(reader, self._closing_event()),
                                     StreamWriterAdapter(writer))

    async def ws_connected(self, websocket: Any, listener_name: str) -> None:
        """As over TCP: an MQTT 5 CONNECT is refused with a reason, not left hanging."""
        reader, writer = WebSocketsReader(websocket), WebSocketsWriter(websocket)
        try:
            await asyncio.wait_for(reader._feed_buffer(1), 10)      # the first frame: the CONNECT
        except asyncio.TimeoutError:
            pass
        head = reader._stream.getvalue()
        if connect_level(head[:20])[0] == 5:
            await refuse_mqtt5(writer, getattr(websocket, "remote_address", None), head[:512])
            return
        await self._client_connected(listener_name, reader, writer)

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Session) -> None:
        subscribers = self._subscriptions.get(subscription[0], [])
        handler = self._get_handler(session)
        if handler is None or not any(s.client_id == session.client_id for s, _ in subscribers):
            return
        topic_filter, qos = subscription
        for topic, retained in self._retained_messages.items():     # sent, not awaited (as the backlog)
            if self._matches(topic, topic_filter):
                self._launch(handler.mqtt_publish(retained.topic, retained.data,
                                                  min(qos, retained.qos or qos), retain=True))

    # -- shared subscriptions --------------------------------------------------
    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        share = ShareFilter.parse(subscription[0])
        if share is None:
            if subscription[0].startswith("$share/"):
                return 0x80                     # malformed: $share/{group}/{filter}
            return await super().add_subscription(subscription, session)
        if not valid_filter(share.topic_filter) or session.client_id is None \
                or not await self._topic_filtering(session, share.topic_filter, Action.SUBSCRIBE):
            return 0x80
        max_qos = self.config.get("max-qos", subscription[1])
        granted = min(subscription[1], max_qos if isinstance(max_qos, int) else subscription[1])
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

    async def _client_message_loop(self, client_session: Session, handler: Any) -> None:
        self._pump_shared()                     # a member (re)connected: it may take queued work
        await super()._client_message_loop(client_session, handler)

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
                # what the broker no longer reads, and the broker keeps nothing
                # across the restart. Handed to another member on its way out,
                # the task ran there too after the first one's answer went out.
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
