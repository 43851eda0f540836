"""Sessions and routing as MQTT 3.1.1 says, where amqtt 0.12.1 did not (each
override says what it did; the decisions are :mod:`fogmesh.broker.session_state`'s):

* a clean session ends with its connection, and a clean-session CONNECT
  discards the client's old session, taking its connection over if it is
  still up [MQTT-3.1.2-6, 3.1.4-2] (amqtt kept a clean session for up to a
  second after its connection and resumed it, and left the old connection
  of a clean take-over running);
* a persistent session taken over by a new connection stays connected
  (amqtt's old connection, closing, marked it disconnected under the new one:
  its messages were queued instead of sent) and the will that goes out is
  the old connection's;
* a message goes to each subscriber at the lower of its published QoS and
  the subscription's [MQTT-3.8.4-6] (amqtt used the subscription's);
* subscribing again to a filter replaces the subscription, QoS included
  [MQTT-3.8.4-3];
* what was queued for a client while it was away goes with RETAIN 0
  [MQTT-3.3.1-9], in order, without waiting for acknowledgements;
* a client's message to a ``$`` topic other than the broker's own reaches
  the subscriptions that match it (amqtt refused them all, and stopped
  reading the client's packets), and a will on one of the broker's own
  topics is never published (as on mosquitto 2.0; a PUBLISH to one closes
  the connection when it is read: :mod:`.framing`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.contexts import Action
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.session import Session

from fogmesh.broker.packet_checks import brokers_own
from fogmesh.broker.session_state import kept_after_connection, on_connect

log = logging.getLogger("fogmesh.broker.embedded")

_WILL_FIELDS = ("will_flag", "will_topic", "will_message", "will_qos", "will_retain")
_CONNECTION_FIELDS = ("client_id", "keep_alive", "username", "password", "remote_address", "remote_port",
                      "ssl_object", *_WILL_FIELDS)


class SessionRules:
    """A mixin for amqtt's Broker (the methods overridden here are amqtt's)."""

    _sessions: dict[str, Any]
    _subscriptions: dict[str, list[tuple[Session, int]]]
    _tasks_queue: Any
    plugins_manager: Any
    logger: Any

    # -- connecting ------------------------------------------------------------
    async def _initialize_client_session(self, reader: Any, writer: Any, remote_address: str,
                                         remote_port: int) -> Any:
        client_wills = {cid: _will(s) for cid, (s, _) in self._sessions.items()}
        handler, session = await super()._initialize_client_session(  # type: ignore[misc]
            reader, writer, remote_address, remote_port)
        if session.will_flag and brokers_own(session.will_topic or ""):
            log.warning("client %s has its will on %r, one of the broker's own topics, which take no client's "
                        "messages: it will not be published", session.client_id, session.will_topic)
            session.will_flag = False
        if session.parent != 1:
            return handler, session
        existing = self._sessions.get(session.client_id, (None, None))[1]
        if existing is not None and session.transitions.is_connected():
            existing._fogmesh_will = client_wills.get(session.client_id)      # its will, not the newcomer's
        discard, present = on_connect(clean=False, existing_clean=bool(session.clean_session))
        if discard:                     # a clean session is never resumed
            fresh = Session()
            for name in _CONNECTION_FIELDS:
                setattr(fresh, name, getattr(session, name))
            fresh.clean_session = False
            await self._delete_session(session.client_id)
            session = fresh
        session.parent = int(present)
        return handler, session

    async def _handle_client_session(self, reader: Any, writer: Any, client_session: Session, handler: Any,
                                     server: Any, listener_name: str) -> None:
        if client_session.transitions.is_connected():          # a take-over
            old = self._sessions.get(client_session.client_id or "", (None, None))[1]
            log.debug("client %s connects again: its connection taken over", client_session.client_id)
            if old is not None:
                old._fogmesh_taken_over = True
        await super()._handle_client_session(  # type: ignore[misc]
            reader, writer, client_session, handler, server, listener_name)

    async def _delete_session(self, client_id: str) -> None:
        """A session discarded by a clean-session CONNECT: its connection, if
        still up, is taken over first [MQTT-3.1.4-2]."""
        session, handler = self._sessions.get(client_id, (None, None))
        if session is not None and handler is not None and session.transitions.is_connected():
            handler._fogmesh_taken_over = True
            await handler.handle_connection_closed()
            await handler.stop()
        await super()._delete_session(client_id)  # type: ignore[misc]

    async def _handle_disconnect(self, client_session: Session, handler: Any,
                                 disconnect_waiter: asyncio.Future[Any]) -> None:
        log.debug("client %s disconnected (%s)", client_session.client_id,
                  "taken over" if getattr(handler, "_fogmesh_taken_over", False) else "session ends"
                  if client_session.clean_session else "session kept")
        if getattr(handler, "_fogmesh_taken_over", False):
            # The session goes on with the new connection: only the old one ends.
            if not isinstance(disconnect_waiter.result(), DisconnectPacket):
                await self._publish_will(client_session, getattr(handler, "_fogmesh_will", None))
            await self._stop_handler(handler)  # type: ignore[attr-defined]
            return
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)  # type: ignore[misc]
        client_id = client_session.client_id or ""
        if not kept_after_connection(clean=bool(client_session.clean_session)) \
                and self._sessions.get(client_id, (None, None))[0] is client_session:
            await self._delete_session(client_id)

    async def _publish_will(self, session: Session, will: tuple[Any, ...] | None) -> None:
        flag, topic, message, qos, retain = will if will is not None else _will(session)
        if flag:
            await self._broadcast_message(session, topic, message, qos)  # type: ignore[attr-defined]
            if retain:
                await self.retain_message(session, topic, message, qos)  # type: ignore[attr-defined]

    # -- subscriptions ---------------------------------------------------------
    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        granted: int = await super().add_subscription(subscription, session)  # type: ignore[misc]
        if granted != 0x80:
            entries = self._subscriptions.get(subscription[0], [])
            for i, (s, _) in enumerate(entries):
                if s.client_id == session.client_id:
                    entries[i] = (s, granted)        # amqtt kept the first QoS
        return granted

    # -- routing ---------------------------------------------------------------
    async def _handle_message_delivery(self, client_session: Session, handler: Any, wait_deliver: Any) -> bool:
        """amqtt's, with the message's QoS carried to the subscribers."""
        message = wait_deliver.result()
        if message is None:
            return True
        topic = message.topic
        # What no client may publish never gets here: its connection was closed when
        # the PUBLISH was read (:mod:`.framing`). Other '$' topics are routed as any:
        # amqtt refused them all and stopped reading the client's packets.
        if not await self._may_publish(client_session, handler, topic):
            log.info("client %s is not allowed to publish to %s", client_session.client_id, topic)
            return True
        await self._broadcast_message(client_session, topic, message.data, message.qos)  # type: ignore
        if message.publish_packet is not None and message.publish_packet.retain_flag:
            await self.retain_message(client_session, topic, message.data, message.qos)  # type: ignore
        return True

    async def _may_publish(self, session: Session, handler: Any, topic: str) -> bool:
        """Whether ``session`` may publish what its connection ``handler`` read (logins: auth.py)."""
        return await self._topic_filtering(session, topic=topic, action=Action.PUBLISH)  # type: ignore

    async def _run_broadcast(self, running_tasks: Any) -> None:
        """amqtt's, each subscriber at the lower of the message's QoS and its own."""
        broadcast = await self._broadcast_queue.get()  # type: ignore[attr-defined]
        topic, published = broadcast["topic"], broadcast.get("qos")
        for a_filter, subscriptions in self._subscriptions.items():
            if not self._matches(topic, a_filter):  # type: ignore[attr-defined]
                continue
            for target, sub_qos in subscriptions:
                qos = sub_qos if published is None else min(sub_qos, published)
                if not await self._topic_filtering(target, topic=topic, action=Action.RECEIVE):  # type: ignore
                    continue
                if target.transitions.state != "connected":
                    if not target.clean_session and qos in (QOS_1, QOS_2) and not target.is_anonymous:
                        await self._retain_broadcast_message(broadcast, qos, target)  # type: ignore
                    continue
                handler = self._get_handler(target)  # type: ignore[attr-defined]
                if handler:
                    running_tasks.append(asyncio.ensure_future(
                        handler.mqtt_publish(topic, broadcast["data"], qos, retain=False)))

    async def _publish_session_retained_messages(self, session: Session) -> None:
        """What was queued for the session while it was away, sent in order
        without waiting for the acknowledgements: amqtt waited (up to 5 s each)
        before reading what the client sent, and an agent acknowledges a task
        only once its claim, which it sends meanwhile, is decided. RETAIN 0:
        they matched an established subscription [MQTT-3.3.1-9]."""
        handler = self._get_handler(session)  # type: ignore[attr-defined]
        while handler is not None and not session.retained_messages.empty():
            queued = session.retained_messages.get_nowait()
            self._launch(handler.mqtt_publish(queued.topic, queued.data, queued.qos, retain=False))  # type: ignore


def _will(session: Session) -> tuple[Any, ...]:
    return tuple(getattr(session, name) for name in _WILL_FIELDS)
