"""The embedded broker (amqtt): what ``fogmesh broker`` and ``fogmesh up`` run.

Why amqtt: it is pure Python, so a fresh machine needs nothing but ``pip
install`` to run the whole system. amqtt has no shared subscriptions; this
module adds them (the decisions live in :mod:`fogmesh.broker.shared`), so agents on
the embedded broker split tasks as they do on mosquitto, without a claim per
task. Its other limits (MQTT 3.1.1 only, ~1 ms per hop) are why production
sites run mosquitto or EMQX. All amqtt-specific code lives in this module.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

from amqtt import __version__ as amqtt_version
from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter, WebSocketsReader, WebSocketsWriter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import MQTTError, ProtocolHandlerError
from amqtt.mqtt.constants import QOS_0, QOS_1
from amqtt.mqtt.puback import PubackPacket
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import OUTGOING, IncomingApplicationMessage, OutgoingApplicationMessage, Session

from fogmesh.broker.shared import Delivery, ShareFilter, SharedGroups, valid_filter
from fogmesh.errors import BrokerError

log = logging.getLogger(__name__)
SHUTDOWN_BUDGET_S = 3.0
VERSION = f"fogmesh embedded broker (amqtt {amqtt_version})"
DRAIN_S = 1.0             # a graceful stop: how long what was taken in may take to reach subscribers
READER_GRACE_S = 0.5      # how long a closing connection's reader may finish the packets it holds


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
      connection died are all taken in, in order (`_reads_to_the_end`), and
      a task it did not acknowledge goes back to the group, never down its
      next connection (`_no_resends_of_shared`);
    * a QoS 1 message to a persistent session stays in it until acknowledged,
      however long that takes and across a lost connection (`_keeps_in_flight`),
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
                log.warning(_REFUSED_V5, remote_address, remote_port, level,
                            {"5": "MQTT 5", "3": "MQTT 3.1"}.get(level, "unknown"))
            raise
        _no_resends_of_shared(handler, session, self._launch)
        _keeps_in_flight(handler)
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
        if await _protocol_level(reader) == 5:
            # amqtt would parse an MQTT 5 CONNECT with properties as 3.1.1 and
            # wait for bytes that never come: the client hung without a word.
            await _refuse_mqtt5(StreamWriterAdapter(writer), writer.get_extra_info("peername"),
                                bytes(reader._buffer[:512]))
            return
        await self._client_connected(listener_name, _ReadsBeforeReset(reader, self._closing_event()),
                                     StreamWriterAdapter(writer))

    async def ws_connected(self, websocket: Any, listener_name: str) -> None:
        """As over TCP: an MQTT 5 CONNECT is refused with a reason, not left hanging."""
        reader, writer = WebSocketsReader(websocket), WebSocketsWriter(websocket)
        try:
            await asyncio.wait_for(reader._feed_buffer(1), 10)      # the first frame: the CONNECT
        except asyncio.TimeoutError:
            pass
        head = reader._stream.getvalue()
        if _connect_level(head[:20])[0] == 5:
            await _refuse_mqtt5(writer, getattr(websocket, "remote_address", None), head[:512])
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
            and _alive(handler)

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
            if session is not None and handler is not None and _alive(handler):
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
        _reads_to_the_end(handler)
        packet_id = session.next_packet_id
        outgoing = _SharedOutgoing(packet_id, message.topic, delivery.qos, message.payload, False)
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


_REFUSED_V5 = ("refused the client at %s:%s: it speaks MQTT protocol level %s (%s), the embedded broker "
               "MQTT 3.1.1 only. Connect as 3.1.1 (mosquitto_sub/rr -V mqttv311, MQTT.js protocolVersion: 4, "
               "paho MQTTv311), or run mosquitto for MQTT 5")


async def _refuse_mqtt5(writer: Any, peer: Any, connect: bytes) -> None:
    """Say why on the log and to the client (CONNACK 0x84, unsupported
    protocol version), then close. The agents' own start-up probe
    (``--mqtt auto``) is expected: logged at DEBUG."""
    host, port = peer[:2] if peer else ("?", "?")
    probe = _v5_client_id(connect).startswith("fogmesh-probe-")
    log.log(logging.DEBUG if probe else logging.WARNING, _REFUSED_V5, host, port, 5, "MQTT 5")
    writer.write(b"\x20\x03\x00\x84\x00")
    for step in (writer.drain, writer.close):
        try:
            await step()
        except Exception:               # the client went first
            pass


async def _protocol_level(reader: asyncio.StreamReader, *, timeout: float = 10.0) -> int | None:
    """The protocol level of the CONNECT a new connection starts with, read
    from the reader's buffer without consuming it (None: not a CONNECT, or
    too slow to tell; amqtt deals with those)."""
    buffered = reader._buffer
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        level, complete = _connect_level(bytes(buffered[:20]))
        if complete or reader.at_eof() or reader.exception() is not None:
            return level
        if asyncio.get_running_loop().time() > deadline:
            return None
        await asyncio.sleep(0.005)       # polled: StreamReader has no peek, and waiting on it races its reader


def _connect_level(head: bytes) -> tuple[int | None, bool]:
    """(level, known): the level byte of a CONNECT packet's start, or None
    with known=True when ``head`` is not a CONNECT, known=False when more
    bytes are needed."""
    if not head:
        return None, False
    if head[0] != 0x10:
        return None, True
    i = 1
    while i < len(head) and head[i] & 0x80 and i < 4:      # remaining length: 1-4 bytes
        i += 1
    if i >= len(head) or len(head) < i + 3:
        return None, False
    name_len = int.from_bytes(head[i + 1:i + 3], "big")
    at = i + 3 + name_len
    if name_len > 6:
        return None, True
    if len(head) <= at:
        return None, False
    return head[at], True


def _v5_client_id(connect: bytes) -> str:
    """The client id of an MQTT 5 CONNECT ("" if it is not all there)."""
    try:
        i = 1
        while connect[i] & 0x80:
            i += 1
        i += 1 + 2 + 4 + 1 + 1 + 2          # name length, "MQTT", level, flags, keep-alive
        length, shift = 0, 0
        while True:                          # the properties' length
            byte = connect[i]
            i += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        i += length
        n = int.from_bytes(connect[i:i + 2], "big")
        return connect[i + 2:i + 2 + n].decode(errors="replace") if i + 2 + n <= len(connect) else ""
    except IndexError:
        return ""


class _ReadsBeforeReset(StreamReaderAdapter):
    """amqtt's reader of a TCP connection, except that what arrived before a
    connection reset is still read (writes fail at once, as before).

    Why: asyncio's StreamReader raises a connection's error on the next read
    even when data that came before the error waits in its buffer. An agent
    cut off right after sending an answer and its task's PUBACK in one write
    had the answer read (amqtt reads a packet at a time) and the PUBACK
    dropped: the broker handed the answered task to another member.
    """

    after_reset = False        # set for shared-subscription members (``_reads_to_the_end``)

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


class _SharedOutgoing(OutgoingApplicationMessage):
    """A delivery to a shared-subscription member. It sits in the session's
    in-flight table only to reserve its packet id: if the connection goes,
    it goes back to the group (:meth:`FogmeshBroker._deliver_shared`), never
    again down the member's next connection (:func:`_no_resends_of_shared`)."""


def _no_resends_of_shared(handler: Any, session: Session, launch: Callable[[Any], None]) -> None:
    """amqtt's resend of a session's unacknowledged messages on a new
    connection (MQTT-4.4.0-1), without the shared deliveries.

    Why: an agent whose connection was cut reconnected before the broker had
    noticed; amqtt sent the new connection the task it had just sent down the
    dead one, the agent answered it, and the group also gave that task (never
    acknowledged on the old connection) to another member, which ran it again.
    """
    async def resend() -> None:
        """Started, not awaited: amqtt read nothing from the client until
        every resent message was acknowledged (or 10 s passed)."""
        for m in itertools.chain(session.inflight_in.values(), session.inflight_out.values()):
            if not isinstance(m, _SharedOutgoing):
                launch(handler._handle_message_flow(m))

    handler._retry_deliveries = resend


def _keeps_in_flight(handler: Any) -> None:
    """QoS 1 to a persistent session as MQTT says (MQTT-4.4.0-1): a message
    sent and not acknowledged when the connection goes stays in the session
    and goes again, flagged DUP, down its next connection; and it waits for
    its PUBACK however long the client takes.

    Why: amqtt 0.12.1 drops it from the session when the connection closes
    (it cancels the PUBACK waiter) and after 5 s without a PUBACK. A claim in
    flight to an agent whose link was cut never reached it; the agent took
    its own later claim for the first, and it and a peer both ran the task.
    """
    amqtt_flow = handler._handle_qos1_message_flow

    async def flow(message: Any) -> None:
        if message.direction != OUTGOING or isinstance(message, _SharedOutgoing):
            return await amqtt_flow(message)
        session, packet_id = handler.session, message.packet_id
        session.inflight_out[packet_id] = message
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        handler._puback_waiters[packet_id] = waiter
        try:
            packet = message.build_publish_packet(dup=message.publish_packet is not None)
            await handler._send_packet(packet)
            message.publish_packet = packet
            message.puback_packet = await waiter
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise                         # the broker stops
            return                            # the connection went: kept for the next one
        except Exception as exc:              # a write to a dead socket
            log.debug("delivery to %s kept for its next connection: %r", session.client_id, exc)
            return
        finally:
            if handler._puback_waiters.get(packet_id) is waiter:
                del handler._puback_waiters[packet_id]
        if session.inflight_out.get(packet_id) is message:
            del session.inflight_out[packet_id]

    handler._handle_qos1_message_flow = flow


def _reads_to_the_end(handler: Any) -> None:
    """For a shared-subscription member: the packets that arrived before its
    connection died are all taken in, in the order read.

    Why: amqtt handles each packet in a task of its own, cancels those not
    yet run when the connection closes, and cancels the reader itself with
    packets in its buffer. An agent sends its answer and the PUBACK of its
    task in one write; under load the broker forwarded the answer, dropped
    the PUBACK and handed the task to another member, which ran it again.
    Now a QoS 1 PUBLISH goes into the broker and a PUBACK settles as it is
    read, the reader reads what arrived before a reset
    (:class:`_ReadsBeforeReset`), and a stop lets it finish (a dead
    connection's reader ends by itself; a live one, a client taken over by
    its own reconnect, is cancelled after a grace). Only for members: under
    claims nothing may follow a peer's will, which amqtt sends as soon as a
    write to the dead connection fails.
    """
    if getattr(handler, "_fogmesh_reads_to_the_end", False):
        return
    handler._fogmesh_reads_to_the_end = True
    if isinstance(handler.reader, _ReadsBeforeReset):
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
        return _acknowledge(handler, message)

    def handle_puback(packet: Any) -> Any:
        header = packet.variable_header
        waiter = handler._puback_waiters.get(header.packet_id) if header is not None else None
        if waiter is not None and not waiter.done():
            waiter.set_result(packet)
            return _settled()
        return queued_puback(packet)           # amqtt's own, with its warnings

    async def stop() -> None:
        reader = handler._reader_task
        closing = isinstance(handler.reader, _ReadsBeforeReset) and handler.reader.closing
        if reader is not None and reader is not asyncio.current_task() and not reader.done() and not closing:
            await asyncio.wait({reader}, timeout=READER_GRACE_S)
        await queued_stop()

    handler.handle_publish, handler.handle_puback = handle_publish, handle_puback
    handler.stop = stop


async def _acknowledge(handler: Any, message: Any) -> None:
    """The PUBACK of a PUBLISH `_reads_to_the_end` took in (as amqtt's own QoS 1 flow)."""
    puback = PubackPacket.build(message.packet_id)
    try:
        await handler._send_packet(puback)
    except ProtocolHandlerError:        # the connection went first: the client sends it again
        return
    message.puback_packet = puback


async def _settled() -> None:
    """What amqtt's reader wraps in a task after `_reads_to_the_end`."""


def _alive(handler: Any) -> bool:
    """The member's connection is up and its handler reads (amqtt marks a
    session connected before its handler has started, and until after it stopped)."""
    return handler._reader_task is not None and not handler._reader_stopped.is_set()


def broker_config(host: str, port: int, ws_port: int | None = None) -> dict:
    """MQTT on ``port``; with ``ws_port``, MQTT over WebSockets there too
    (browsers, Node-RED dashboards: ``ws://host:ws_port/mqtt``)."""
    listeners: dict[str, dict[str, str]] = {"default": {"type": "tcp", "bind": f"{host}:{port}"}}
    if ws_port is not None:
        listeners["ws"] = {"type": "ws", "bind": f"{host}:{ws_port}"}
    return {"listeners": listeners, "plugins": {f"{__name__}.OpenAuthPlugin": {}}}


def quiet_amqtt_logs() -> None:
    """amqtt logs every connection at INFO; keep fogmesh's output readable."""
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)


async def serve(host: str, port: int, stop: asyncio.Event,
                on_ready: Callable[[], None] | None = None, *, ws_port: int | None = None) -> None:
    """Run a broker on ``host:port`` (and WebSockets on ``ws_port``) until ``stop`` is set."""
    quiet_amqtt_logs()
    broker = FogmeshBroker(broker_config(host, port, ws_port))
    ports = f"{port}" + (f" and {ws_port} (WebSockets)" if ws_port is not None else "")
    try:
        await broker.start()
    except Exception as exc:  # amqtt raises its own BrokerError / OSError variants
        raise BrokerError(f"cannot start the embedded broker on {host}, port {ports}: {exc}. "
                          "Is the port already in use? Pick another with --port / --ws-port.") from exc
    log.info("embedded amqtt broker listening on %s, port %s", host, ports)
    if on_ready:
        on_ready()
    try:
        await stop.wait()
    finally:
        try:
            # amqtt 0.12.1 can wait for ever on a connection's reader while it
            # shuts down under load; what is left is closed with the process.
            await asyncio.wait_for(broker.shutdown(), SHUTDOWN_BUDGET_S)
        except asyncio.TimeoutError:
            log.warning("the embedded broker did not shut down within %g s; closing its listeners",
                        SHUTDOWN_BUDGET_S)
            for server in broker._servers.values():
                await server.close_instance()


class EmbeddedBroker:
    """The embedded broker on a background thread (for ``fogmesh up`` and tests)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 1883, ws_port: int | None = None) -> None:
        self.host = host
        self.port = port
        self.ws_port = ws_port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        self._thread = threading.Thread(target=self._run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise BrokerError(f"embedded broker did not start within {timeout:g} s")
        if self._error:
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stop = asyncio.Event()

        try:
            loop.run_until_complete(serve(self.host, self.port, self._stop, self._ready.set,
                                          ws_port=self.ws_port))
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop and self._stop and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
