"""fogmesh's paho client: paho's, with one change to how it writes (every
packet queued goes out in one ``send()``, and nothing while a caller holds
:meth:`_Client.hold`) and the per-message paths read without paho's objects
(an incoming PUBLISH handed on as plain values, a plain PUBACK); and two
fixes to its reconnects (nothing queued before the CONNECT; a drop inside its
resend after a CONNACK handled once it is out). Only this package imports
paho; this module relies on paho's private names, which is why
``pyproject.toml`` pins paho-mqtt's minor version (``tests/test_pins.py``
says what to check before widening it)."""

from __future__ import annotations

import logging
import secrets
import select
import socket
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fogmesh import publish_properties
from fogmesh.properties import MessageProperties

log = logging.getLogger("fogmesh.mqtt")

STABLE_S = 2.0      # a connection that lasted less than this did not end the reconnect backoff


class _Client(paho.Client):
    """paho's client with one change to how it writes: everything queued goes
    out in one ``send()``, and nothing while a caller holds :meth:`together`.

    Why: a process killed between two writes has sent the first message and
    not the second. An agent's answer and the record that tells its peers the
    answer is out ("sent", claim dispatch) must reach the broker both or
    neither, or a peer re-delivers an answer the device already has. One
    syscall is as close to atomic as a socket gets. It also saves a syscall
    per message under load. Packets whose completion paho handles on write
    (QoS 0 publishes, DISCONNECT) are written on their own, as paho does.

    And around a reconnect: nothing is queued before the CONNECT
    (:meth:`reconnect`), and a drop paho reports in the middle of its resend
    after a CONNACK is handled once it is out of it (:meth:`after_resend`).
    """

    def retarget(self, host: str, port: int) -> None:
        """Reconnect to another node of a cluster from the next attempt on (a
        failover list). paho's ``host``/``port`` setters refuse while a lost
        connection is being re-opened, which is exactly when this is needed."""
        self._host, self._port = host, port

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch = threading.Lock()
        self._batch_holder: int | None = None     # thread id inside together()
        self._filtered_callbacks = False
        # (topic, payload, qos, retain, mid, dup, properties) -> None: set by MqttClient
        self.deliver: Callable[[str, bytes, int, bool, int, bool, MessageProperties | None], None] | None = None
        # What paho's on_publish gets for a plain PUBACK (fogmesh's ignores both).
        self._puback_success = ReasonCode(PacketTypes.PUBACK)
        self._no_properties = Properties(PacketTypes.PUBACK)
        self._resending: int | None = None        # the thread inside paho's CONNACK handling
        self._after_resend: list[Callable[[], None]] = []
        self.id_base: str | None = None           # a fresh client id per connection: this plus a suffix
        self._connected_at = float("-inf")        # when the last CONNACK came (monotonic)
        self._delay_before: float | None = None   # the reconnect delay that CONNACK reset

    def fresh_id(self) -> str:
        """The client id of the next connection: ``id_base`` and a random suffix."""
        return f"{self.id_base}-{secrets.token_hex(3)}"

    def hold(self) -> None:
        self._batch.acquire()
        self._batch_holder = threading.get_ident()

    def release(self, *, write_here: bool = False) -> None:
        try:
            if write_here and self._out_packet:
                self._write_here()
        finally:
            self._batch_holder = None
            self._batch.release()
        wake = self._sockpairW                  # the network thread may have slept through it
        if wake is not None and self._out_packet:
            try:
                wake.send(b"0")
            except (BlockingIOError, OSError):
                pass

    def _write_here(self) -> None:
        """Write what :meth:`together` queued on the caller's thread (holding
        ``_batch``), instead of waking the network thread to do it: on a small
        machine a thread hand-off costs ~100 us, a good part of a task's round
        trip. Plain TCP only (an SSL or WebSocket stream must not be written
        while the network thread reads it), and only the run of packets the
        network thread would merge. It peeks and removes by identity, never
        pops and puts back: ``reconnect()`` on the network thread may clear the
        queue meanwhile, and a packet put back after that would leave on the
        next connection before its CONNECT. A send that fails leaves the
        packets to the network thread, which finds the connection's fate.
        On the network thread itself (a task stepped where it arrived) it
        writes now instead of on the thread's next loop turn."""
        sock = self._sock
        if type(sock) is not socket.socket or self._state != paho._ConnectionState.MQTT_CS_CONNECTED:
            return
        run: list[Any] = []
        for packet in list(self._out_packet):
            if not _mergeable(packet):
                break
            run.append(packet)
        if not run:
            return
        data = _unsent(run)
        try:
            sent = sock.send(data)
        except OSError:
            return
        for packet in run:
            if sent < packet["to_process"]:
                packet["pos"] += sent
                packet["to_process"] -= sent
                break
            sent -= packet["to_process"]
            packet["pos"] += packet["to_process"]
            packet["to_process"] = 0
            try:
                self._out_packet.remove(packet)
            except ValueError:          # the queue was cleared for a reconnect
                pass
        with self._msgtime_mutex:
            self._last_msg_out = paho.time_func()

    def _packet_queue(self, command: int, packet: bytes | bytearray, mid: int, qos: int,
                      info: paho.MQTTMessageInfo | None = None) -> MQTTErrorCode:
        """Inside :meth:`together` a packet is only queued: paho would also
        wake the network thread for each one, which could write nothing
        before :meth:`release` (it wakes the thread once, if anything is left
        to write), and whose wake-ups took the interpreter lock from the
        caller in the middle of its batch: a few tens of us per answer on the
        critical path of a round trip.

        While connecting, nothing goes before the CONNECT (see
        :meth:`reconnect`): paho's word for that is "no connection", and a
        QoS 1 message waits in its queue, resent after the CONNACK (a
        subscription is renewed then, an acknowledgement is the old
        connection's and is not due on the new one)."""
        if command != paho.CONNECT and self._state == paho._ConnectionState.MQTT_CS_CONNECTING:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if self._batch_holder != threading.get_ident():
            return super()._packet_queue(command, packet, mid, qos, info)
        self._out_packet.append({"command": command, "mid": mid, "qos": qos, "pos": 0,
                                 "to_process": len(packet), "packet": packet, "info": info})
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def message_callback_add(self, sub: str, callback: Any) -> None:
        self._filtered_callbacks = True
        super().message_callback_add(sub, callback)

    def more_to_read(self) -> bool:
        """Whether bytes wait on the socket (True when it cannot tell: not
        plain TCP, or no socket)."""
        sock = self._sock
        if type(sock) is not socket.socket:
            return True
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def want_write(self) -> bool:
        return not self._batch.locked() and super().want_write()

    def _packet_write(self) -> MQTTErrorCode:
        # Never blocks: paho calls this holding its own locks, which a holder of
        # ``_batch`` may be waiting for.
        if not self._batch.acquire(blocking=False):
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        try:
            self._coalesce()
            return super()._packet_write()
        finally:
            self._batch.release()

    def _coalesce(self) -> None:
        """Merge the run of plain packets at the head of the queue into one.
        Only this (network) thread takes from the head; others append at the
        tail, so putting the merged packet back at the head keeps the order."""
        queue = self._out_packet
        run: list[Any] = []
        while queue:
            packet = queue.popleft()
            if not _mergeable(packet):
                queue.appendleft(packet)
                break
            run.append(packet)
        if len(run) > 1:
            data = _unsent(run)
            queue.appendleft({"command": run[0]["command"], "mid": run[0]["mid"], "qos": 1, "pos": 0,
                              "to_process": len(data), "packet": data, "info": None})
        elif run:
            queue.appendleft(run[0])

    def _handle_publish(self) -> MQTTErrorCode:
        """A PUBLISH read by fogmesh and handed to ``deliver`` as plain
        values: paho's reading built two objects per message (a message and
        its info, with a condition variable), and in MQTT 5 decoded the
        properties at more than a 3.1.1 round trip's cost
        (:mod:`fogmesh.publish_properties` does it here). QoS 2, topic
        aliases, topics that are not UTF-8, malformed blocks and clients with
        per-filter callbacks stay paho's (then ``on_message`` gets them)."""
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        deliver = self.deliver
        if deliver is None or qos == 2 or len(packet) < 2 or self._filtered_callbacks:
            return super()._handle_publish()
        at = 2 + int.from_bytes(packet[0:2], "big")
        try:
            topic = bytes(packet[2:at]).decode("utf-8")
        except UnicodeDecodeError:
            return super()._handle_publish()
        mid = 0
        if qos:
            mid, at = int.from_bytes(packet[at:at + 2], "big"), at + 2
        props = None
        if self._protocol == paho.MQTTv5:
            try:
                props, at, present = publish_properties.decode(packet, at)
            except ValueError:
                return super()._handle_publish()
            if publish_properties.TOPIC_ALIAS in present:
                return super()._handle_publish()
        if not topic:
            return super()._handle_publish()
        with self._in_callback_mutex:
            deliver(topic, bytes(packet[at:]), qos, bool(header & 0x01), mid, bool(header & 0x08), props)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def reconnect(self) -> MQTTErrorCode:
        """paho's, once the state says "connecting" under the lock that
        publishers hold while they queue a PUBLISH. paho's clears the queue
        and opens the next socket before it queues the CONNECT: a PUBLISH
        queued in between went out first on the new connection, which the
        broker closed at once (under a publish storm, again and again).
        :meth:`_packet_queue` queues nothing but the CONNECT meanwhile."""
        with self._out_message_mutex:
            first = self._state == paho._ConnectionState.MQTT_CS_CONNECT_ASYNC
            self._state = paho._ConnectionState.MQTT_CS_CONNECTING
        if self.id_base is not None:
            self._client_id = self.fresh_id().encode()
        try:
            return super().reconnect()
        except OSError:
            if first:
                # paho retries a first connection only while its state still says
                # so, and its reconnect() changed it: a client that does not
                # reconnect (a probe, a rescue) on a failover list whose first
                # node was down never tried the next one (an agent never started).
                with self._out_message_mutex:
                    self._state = paho._ConnectionState.MQTT_CS_CONNECT_ASYNC
            raise

    def _reconnect_wait(self) -> None:
        """paho's, but a connection that dropped within :data:`STABLE_S` of
        its CONNACK does not start the backoff over: paho resets it at every
        CONNACK, so a node that accepts and then drops (a RabbitMQ node whose
        cluster lost the node holding this client's queue) was tried again
        at the minimum delay for good, twenty times a second."""
        with self._reconnect_delay_mutex:
            if self._reconnect_delay is None and self._delay_before is not None \
                    and time.monotonic() - self._connected_at < STABLE_S:
                self._reconnect_delay = self._delay_before
            self._delay_before = None
        super()._reconnect_wait()

    def _handle_connack(self) -> MQTTErrorCode:
        """paho's, noting that the network thread is inside it. After a
        CONNACK paho resends its queue looping over ``_out_messages`` while
        it holds ``_out_message_mutex``, and writes from inside that loop: a
        write that fails there (a connection reset right after its CONNACK)
        calls ``on_disconnect`` in the middle of the loop. Whatever that
        callback did to the queue (withdraw, publish) would end paho's loop
        with a RuntimeError, and its network thread with it; whatever it
        called would run holding paho's lock. So it hands its work to
        :meth:`after_resend`, which runs it once paho is out, holding none
        of paho's locks."""
        self._resending = threading.get_ident()
        delay = self._reconnect_delay
        try:
            return super()._handle_connack()
        finally:
            if self._reconnect_delay is None and delay is not None:       # connected: paho reset the backoff
                self._connected_at, self._delay_before = time.monotonic(), delay
            self._resending = None
            while self._after_resend:
                self._after_resend.pop(0)()

    def after_resend(self, call: Callable[[], None]) -> bool:
        """Run ``call`` when paho's CONNACK handling returns, if the calling
        thread is inside it (True); else nothing (False: call it now)."""
        if self._resending != threading.get_ident():
            return False
        self._after_resend.append(call)
        return True

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        """A plain PUBACK (packet id only: success, no properties) without
        paho's decoder, which builds a ReasonCode and a Properties object for
        every acknowledgement, in 3.1.1 too: about 25 us, one per QoS 1
        publish. Anything longer (an MQTT 5 reason code) stays paho's."""
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, self._puback_success, self._no_properties)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


class _Together:
    """:meth:`MqttClient.together`'s context (a class: it is entered on every
    task, and a generator-based one costs several times more)."""

    __slots__ = ("_client", "_write_here")

    def __init__(self, client: _Client, write_here: bool) -> None:
        self._client, self._write_here = client, write_here

    def __enter__(self) -> None:
        self._client.hold()

    def __exit__(self, *exc: object) -> None:
        self._client.release(write_here=self._write_here)


def _mergeable(packet: Any) -> bool:
    """Whether a queued packet may share a write with those around it: not a
    QoS 0 PUBLISH or a DISCONNECT, whose completion paho handles on write."""
    command = packet["command"] & 0xF0
    return not (command == paho.DISCONNECT or (command == paho.PUBLISH and packet["qos"] == 0))


def _unsent(run: list[Any]) -> bytes:
    """What is left to write of a run of queued packets, as one buffer."""
    return b"".join(bytes(p["packet"][p["pos"]:]) for p in run)


class _PackedProperties:
    """A PUBLISH property block already encoded: paho asks only for ``pack()``."""

    __slots__ = ("block",)

    def __init__(self, props: MessageProperties) -> None:
        self.block = publish_properties.encode(props)

    def pack(self) -> bytes:
        return self.block

    def __str__(self) -> str:
        return f"[{len(self.block)} bytes of properties]"


def _nodelay(_client: paho.Client, _userdata: object, sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket (e.g. websockets/unix)
        pass
