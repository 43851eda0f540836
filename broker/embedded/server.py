"""The embedded broker's amqtt subclass: shared subscriptions (:mod:`.sharing`),
sessions and routing as MQTT 3.1.1 says (:mod:`.sessions`, :mod:`.inflight`,
:mod:`.liveness`), its state kept across a restart (:mod:`.persistence`), and
the fixes to amqtt 0.12.1 it needs (each said where it is made). amqtt is
pinned (``pyproject.toml``; ``tests/test_pins.py``): the private methods
overridden here and in the modules named stay valid."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt import __version__ as amqtt_version
from amqtt.adapters import StreamWriterAdapter, WebSocketsWriter
from amqtt.broker import Broker
from amqtt.errors import MQTTError
from amqtt.mqtt.constants import QOS_0
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from fogmesh.broker.embedded.auth import LoginChecks, LoginFiles
from fogmesh.broker.embedded.framing import CheckedTcpReader, CheckedWsReader
from fogmesh.broker.embedded.inflight import keeps_in_flight, qos2_received_once, resends_on_reconnect
from fogmesh.broker.embedded.liveness import close_now, watch_keepalive
from fogmesh.broker.embedded.mqtt5 import REFUSED_V5, connect_level, protocol_level, refuse_mqtt5
from fogmesh.broker.embedded.persistence import StateFile, capture, restore, write
from fogmesh.broker.embedded.sessions import SessionRules
from fogmesh.broker.embedded.sharing import SharedSubscriptions
from fogmesh.broker.session_state import BrokerState
from fogmesh.broker.shared import SharedGroups

log = logging.getLogger("fogmesh.broker.embedded")
# Set while the connection's task answers a SUBSCRIBE (the only time retained messages go out).
_ANSWERING_SUBSCRIBE: contextvars.ContextVar[bool] = contextvars.ContextVar("answering_subscribe", default=False)

SHUTDOWN_BUDGET_S = 3.0
VERSION = f"fogmesh embedded broker (amqtt {amqtt_version})"
DRAIN_S = 1.0             # a graceful stop: how long what was taken in may take to reach subscribers
AUTOSAVE_S = 5.0          # how often the state is written while it changes
CONNECT_DEADLINE_S = 10.0  # how long a new connection has to send its CONNECT whole (mosquitto: about 90 s)
# After a restart, how long a shared-subscription member has to come back for
# what was out to it before it goes to another member of its group.
MEMBER_RETURN_S = 10.0


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


class FogmeshBroker(LoginChecks, SharedSubscriptions, SessionRules, Broker):
    """amqtt's broker with shared subscriptions, MQTT 3.1.1's sessions, its
    state on disk (``state_file``; None: nothing kept across a restart), and
    these fixes:

    * on every CONNECT amqtt 0.12.1 sends the connecting client the retained
      messages matching *every* client's subscriptions, not just its own: a
      device would receive every agent's presence. Only the session's own
      subscriptions are honoured here; a retained message goes at the lower
      of its QoS and the subscription's (amqtt raised a QoS 0 one to the
      subscription's) [MQTT-3.8.4-6], and only in answer to a SUBSCRIBE
      [MQTT-3.3.1-6] (amqtt sent them again on each reconnect of a persistent
      session);
    * a client's connection is watched for its keep-alive (:mod:`.liveness`);
      what its session has in flight is kept and sent again
      (:mod:`.inflight`); a shared-subscription member's packets that arrived
      before its connection died are all taken in, in order
      (:func:`~.connections.reads_to_the_end`).
    """

    def __init__(self, *args: Any, shared: SharedGroups | None = None, state_file: Path | None = None,
                 autosave_s: float = AUTOSAVE_S, logins: LoginFiles | None = None,
                 connect_deadline_s: float = CONNECT_DEADLINE_S, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connect_deadline_s = connect_deadline_s
        self.logins = logins                           # None: every client is let in (no --auth)
        self._login_watch: asyncio.Task[None] | None = None
        self.shared = shared or SharedGroups()
        self._jobs: set[asyncio.Task[Any]] = set()     # deliveries under way, kept from the GC
        self._pump_pending = False
        self._closing: asyncio.Event | None = None     # set when a graceful shutdown begins
        self._state = StateFile(state_file) if state_file is not None else None
        self._autosave_s = autosave_s
        self._autosave: asyncio.Task[None] | None = None
        self._kept: BrokerState | None = None
        self.changes = 0                               # bumped by whatever changes the kept state
        self._captures = 0

    async def start(self) -> None:
        """amqtt's start (with the kept state put back first), and the broker's
        name retained on ``$SYS/broker/version`` as mosquitto has it
        (``fogmesh doctor`` tells brokers apart by it)."""
        self._kept = self._state.open() if self._state is not None else None    # refused before amqtt logs
        await super().start()
        await self.retain_message(None, "$SYS/broker/version", VERSION.encode(), QOS_0)
        if self._state is not None:
            self._autosave = asyncio.ensure_future(self._autosave_loop())
        if self.logins is not None:
            self._login_watch = asyncio.ensure_future(self._watch_logins())

    async def _start_listeners(self) -> None:
        """After amqtt cleared its tables, before the first client: the kept state back."""
        state, self._kept = self._kept, None
        if state is not None and self._state is not None:
            restore(self, state)
            log.info("embedded broker: %d session(s), %d message(s) back from %s",
                     len(state.sessions), state.messages, self._state.path)
            asyncio.get_running_loop().call_later(MEMBER_RETURN_S, self._members_not_back)
        try:
            await super()._start_listeners()
        except BaseException:
            if self._state is not None:
                self._state.close()
            raise

    async def shutdown(self) -> None:
        """A graceful stop that loses no message it acknowledged to a client
        still connected: first it reads nothing more from any client (so it
        acknowledges nothing more: an agent's answer it has not taken stays
        unconfirmed, and the agent sends it again after the restart), then it
        lets what it took in reach the connected subscribers (up to
        :data:`DRAIN_S`), writes its state, and then amqtt closes everything.
        amqtt alone closed the sessions one by one while still taking the
        others' publishes, so an agent's answer could be acknowledged after
        its subscriber was gone."""
        self._closing_event().set()
        if self._autosave is not None:
            self._autosave.cancel()
        if self._login_watch is not None:
            self._login_watch.cancel()
        deadline = asyncio.get_running_loop().time() + DRAIN_S
        while not self._broadcast_queue.empty() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)         # the deliveries the broadcast loop started write their packets
        if self._state is not None:
            # Every connection closes now without a DISCONNECT: the retained wills
            # (agents' offline presence) are what a restarted broker must say.
            for session, _ in list(self._sessions.values()):
                if session.transitions.is_connected() and session.will_flag and session.will_retain:
                    await self.retain_message(session, session.will_topic, session.will_message, session.will_qos)
            self._save()
        try:
            await super().shutdown()
        finally:
            if self._state is not None:
                self._state.close()

    def _capture(self) -> tuple[BrokerState, int]:
        self._captures += 1
        return capture(self), self._captures

    def _save(self) -> None:
        assert self._state is not None
        state, n = self._capture()
        try:
            write(self._state, state, n)
        except OSError as exc:
            log.error("embedded broker: cannot write its state to %s: %s", self._state.path, exc)

    async def _autosave_loop(self) -> None:
        """Every ``autosave_s``, the state written if it changed (or had
        messages in flight: their acknowledgements change it too)."""
        assert self._state is not None
        saved, in_flight = self.changes, False
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._autosave_s)
            if self.changes == saved and not in_flight:
                continue
            saved = self.changes
            state, n = self._capture()
            in_flight = any(s.outgoing or s.incoming for s in state.sessions) or any(g.held for g in state.groups)
            try:
                await loop.run_in_executor(None, write, self._state, state, n)      # encoded off the loop
            except OSError as exc:
                log.error("embedded broker: cannot write its state to %s: %s", self._state.path, exc)

    def _members_not_back(self) -> None:
        n = self.shared.release_pinned()
        if n:
            log.info("embedded broker: %d message(s) out to shared-subscription members not back within %g s "
                     "go to other members", n, MEMBER_RETURN_S)
            self._pump_shared()

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
        resends_on_reconnect(handler, self._launch)
        keeps_in_flight(handler)
        qos2_received_once(handler)
        self.changes += 1
        return handler, session

    async def _client_message_loop(self, client_session: Session, handler: Any) -> None:
        self._pump_shared()                     # a member (re)connected: it may take queued work
        stop_watching = watch_keepalive(handler, client_session.keep_alive)
        try:
            await super()._client_message_loop(client_session, handler)
        finally:
            stop_watching()
            self.changes += 1

    async def _run_broadcast(self, running_tasks: Any) -> None:
        await super()._run_broadcast(running_tasks)
        self.changes += 1                       # a message routed: queued or in flight

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        self.changes += 1
        return await super().add_subscription(subscription, session)

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        self.changes += 1
        return super()._del_subscription(a_filter, session)

    def _launch(self, job: Any) -> None:
        task = asyncio.ensure_future(job)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        adapter = StreamWriterAdapter(writer)
        peer = writer.get_extra_info("peername")
        try:
            checked = await asyncio.wait_for(self._tcp_connect(reader, writer, adapter, peer),
                                             self._connect_deadline_s)
        except asyncio.TimeoutError:
            self._no_connect_in_time(adapter, peer)
            return
        if checked is not None:                        # a CONNECT: amqtt takes the connection from here
            await self._client_connected(listener_name, checked, adapter)

    async def _tcp_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, adapter: Any,
                           peer: Any) -> CheckedTcpReader | None:
        """The connection's reader once its first packet, a checked CONNECT, is
        in (None: refused, and closed)."""
        if await protocol_level(reader) == 5:
            # amqtt would parse an MQTT 5 CONNECT with properties as 3.1.1 and
            # wait for bytes that never come: the client hung without a word.
            await refuse_mqtt5(adapter, peer, bytes(reader._buffer[:512]))
            return None
        if not await self._admit(reader, None, adapter, peer):
            return None
        checked = CheckedTcpReader(reader, self._closing_event(), peer=peer, writer=adapter)
        if await checked.first_packet():
            return checked
        close_now(adapter)
        return None

    def _no_connect_in_time(self, writer: Any, peer: Any) -> None:
        """A connection that sent no whole CONNECT within the deadline (none, or
        half of one) is closed: amqtt kept it open for ever."""
        host, port = peer[:2] if peer else ("?", "?")
        log.warning("closed the connection from %s:%s: no whole CONNECT within %g s", host, port,
                    self._connect_deadline_s)
        close_now(writer)

    async def ws_connected(self, websocket: Any, listener_name: str) -> None:
        """As over TCP: an MQTT 5 CONNECT is refused with a reason, not left
        hanging, every packet is checked (:mod:`.framing`), and a connection
        without a whole CONNECT within the deadline is closed."""
        writer = WebSocketsWriter(websocket)
        peer = getattr(websocket, "remote_address", None)
        reader = CheckedWsReader(websocket, peer=peer, writer=writer)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_deadline_s
        try:
            await asyncio.wait_for(reader._feed_buffer(1), self._connect_deadline_s)    # the first frame
        except asyncio.TimeoutError:
            pass
        head = reader._stream.getvalue()
        if connect_level(head[:20])[0] == 5:
            await refuse_mqtt5(writer, peer, head[:512])
            return
        if not await self._admit(None, head, writer, peer):
            return
        try:
            connected = await asyncio.wait_for(reader.first_packet(), max(deadline - loop.time(), 0.001))
        except asyncio.TimeoutError:
            self._no_connect_in_time(writer, peer)
            return
        if connected:
            await self._client_connected(listener_name, reader, writer)
        else:
            close_now(writer)

    async def _handle_subscription(self, client_session: Session, handler: Any,
                                   subscribe_waiter: asyncio.Future[Any]) -> None:
        token = _ANSWERING_SUBSCRIBE.set(True)
        try:
            await super()._handle_subscription(client_session, handler, subscribe_waiter)
        finally:
            _ANSWERING_SUBSCRIBE.reset(token)

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Session) -> None:
        """The retained messages a new subscription matches, each at the lower of
        its QoS and the subscription's [MQTT-3.8.4-6], only when answering a
        SUBSCRIBE [MQTT-3.3.1-6]: amqtt also sent them on every reconnect of a
        persistent session, for each of its subscriptions, again."""
        if not _ANSWERING_SUBSCRIBE.get():
            return
        subscribers = self._subscriptions.get(subscription[0], [])
        handler = self._get_handler(session)
        if handler is None or not any(s.client_id == session.client_id for s, _ in subscribers):
            return
        topic_filter, qos = subscription
        for topic, retained in list(self._retained_messages.items()):     # sent, not awaited (as the backlog)
            if self._matches(topic, topic_filter) and await self._may_receive(session, topic):
                self._launch(handler.mqtt_publish(retained.topic, retained.data, min(qos, retained.qos or 0),
                                                  retain=True))
