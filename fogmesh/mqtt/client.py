"""The reconnecting MQTT client the rest of fogmesh uses (:class:`MqttClient`),
and the values it hands out (:class:`Message`, :class:`Delivery`)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from fogmesh.broker_url import BrokerUrl
from fogmesh.errors import ConnectError, LoginRefused, PublishError, SubscriptionRefused, is_login_refusal
from fogmesh.log_limit import LogLimit
from fogmesh.mqtt.connecting import connect_async, paho_client, refused_hint
from fogmesh.mqtt.fence import Fence
from fogmesh.mqtt.subscriptions import Subscriptions
from fogmesh.mqtt.values import Delivery, Message, Will
from fogmesh.mqtt.wire import _PackedProperties, _Together
from fogmesh.properties import MessageProperties

log = logging.getLogger("fogmesh.mqtt")

# A connection that drops as soon as it is made (a cluster node that is down
# behind a load balancer, a session the next node cannot resume) comes back
# 20 times a second: its "disconnected" line at most this often, with a count.
LOG_EVERY_S = 10.0


class MqttClient:
    """A reconnecting MQTT 3.1.1 client (MQTT 5 with ``mqtt5``) with QoS 1 defaults.

    Callbacks (``on_message``, ``on_connection``, ``on_withdrawn``,
    ``on_confirmed``, a :meth:`watch_unconfirmed`'s) run on paho's network
    thread: keep them short and hand work to your own thread. None of them may
    wait for a lock that a thread holds while it calls this client (publish,
    together, subscribe): the network thread would wait for that thread, which
    waits for the network thread. The agent's only put events on a queue.

    Locks, in one order (:mod:`fogmesh.mqtt.fence` says why, and which
    stand outside it): ``_Client._batch`` (:meth:`together`), then paho's
    ``_out_message_mutex``, which is also the fence that keeps a tagged
    publish and a drop apart, then the ``_lock`` of this client's
    :class:`~fogmesh.mqtt.subscriptions.Subscriptions` and paho's short
    ones. paho calls ``on_confirmed`` and the watch holding the fence.

    A connection that keeps dropping is logged once, then at most once every
    ``LOG_EVERY_S`` seconds with the number of drops left out.
    """

    def __init__(self, url: BrokerUrl | str, *, client_id: str | None = None,
                 clean_session: bool = True, will: Will | None = None,
                 manual_ack: bool = False, keepalive: int = 15,
                 reconnect_min: float = 0.05, reconnect_max: float = 5.0,
                 on_message: Callable[[Message], None] | None = None,
                 on_connection: Callable[[bool], None] | None = None,
                 on_withdrawn: Callable[[list[Any]], None] | None = None,
                 on_confirmed: Callable[[Any], None] | None = None,
                 on_refused: Callable[[str], None] | None = None,
                 max_inflight: int = 1000, reconnect: bool = True, mqtt5: bool = False,
                 fresh_id: bool | None = None) -> None:
        self.url = url if isinstance(url, BrokerUrl) else BrokerUrl.parse(url)
        self.client_id = client_id or f"fogmesh-{uuid.uuid4().hex[:12]}"
        self._on_message = on_message
        self._on_connection = on_connection
        self._on_withdrawn = on_withdrawn
        self._on_confirmed = on_confirmed
        self._on_refused = on_refused          # every refused CONNACK's reason (the network thread)
        self._drop_lines = LogLimit(every_s=LOG_EVERY_S)
        self._refusal_lines = LogLimit(every_s=LOG_EVERY_S)
        self._subscriptions = Subscriptions()
        self._generation = 0
        self.connected = threading.Event()
        self._first_result = threading.Event()
        self.refused: str | None = None      # why the broker (or the network) refused us, if it did
        #: Set once the broker acknowledged this connection's subscriptions
        #: (those renewed at a reconnect, or none to renew); cleared on a drop.
        #: A broker that lost its sessions routes nothing here before it.
        self.resubscribed = threading.Event()
        #: The broker's word in the last CONNACK: it still had this client's
        #: session (its unacknowledged messages come again, flagged DUP). False
        #: after a broker restart that kept nothing, or with a clean session.
        self.session_present = False
        self._manual_ack = manual_ack
        self._stopping = False
        self._fail_fast = False
        self._reconnect = reconnect

        self.mqtt5 = mqtt5
        self._clean_session = clean_session
        c = paho_client(self.url, client_id=self.client_id, clean_session=clean_session, will=will,
                        manual_ack=manual_ack, reconnect_min=reconnect_min, reconnect_max=reconnect_max,
                        max_inflight=max_inflight, reconnect=reconnect, mqtt5=mqtt5, fresh_id=fresh_id)
        c.on_connect = self._handle_connect
        c.on_disconnect = self._handle_disconnect
        c.on_message = self._handle_message
        c.deliver = self._deliver
        c.on_subscribe = self._handle_subscribe
        c.on_publish = self._handle_publish
        c.on_connect_fail = self._handle_connect_fail
        self._keepalive = keepalive
        self._paho = c
        self._fence = Fence(c, mqtt5=mqtt5)
        self._node = 0                       # which of ``url.nodes`` is in use (a failover list)

    # -- lifecycle -------------------------------------------------------
    def start(self, *, timeout: float | None = 10.0, fail_fast: bool = False) -> None:
        """Connect in the background; wait up to ``timeout`` s for the first CONNACK.

        With ``timeout=None`` it returns at once and keeps trying to connect
        (any part may start before the broker). With ``fail_fast`` a refused
        TCP connection raises at once instead of being retried.
        """
        self._fail_fast = fail_fast
        connect_async(self._paho, self.url, keepalive=self._keepalive, mqtt5=self.mqtt5,
                      clean_session=self._clean_session, manual_ack=self._manual_ack)
        self._paho.loop_start()
        if timeout is None:
            return
        if not self._first_result.wait(timeout) or not self.connected.is_set():
            reason = self.refused or f"no answer within {timeout:g} s"
            self.stop()
            if self.refused and is_login_refusal(self.refused):
                raise LoginRefused(f"cannot connect to MQTT broker {self.url}: {reason}. Check the login in the "
                                   "URL (mqtts://LOGIN@host) and its password ($FOGMESH_PASSWORD, "
                                   "$FOGMESH_PASSWORD_FILE or ?password_file=PATH); a box's login may have "
                                   "been revoked (fogmesh fleet list).")
            raise ConnectError(f"cannot connect to MQTT broker {self.url}: {reason}. {refused_hint(self.refused)}")

    def start_waiting(self, on_wait: Callable[[], None], *, every_s: float = 5.0) -> None:
        """Connect however long the broker takes to come up; ``on_wait`` runs
        every ``every_s`` seconds until it has (to log it, to tell systemd)."""
        self.start(timeout=None)
        while not self.wait_connected(every_s):
            on_wait()

    def stop(self) -> None:
        """Disconnect cleanly (no last will) and stop the network thread."""
        self._stopping = True
        try:
            self._paho.disconnect()
        finally:
            self._paho.loop_stop()
            self.connected.clear()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    @property
    def generation(self) -> int:
        """Incremented on every successful CONNACK."""
        return self._generation

    # -- operations ------------------------------------------------------
    def subscribe(self, topic_filter: str, qos: int = 1, *, timeout: float | None = 10.0) -> int:
        """Subscribe now and after every reconnect; returns the granted QoS.

        Waits for the SUBACK when connected and ``timeout`` is not None.
        """
        self._subscriptions.keep(topic_filter, qos)
        if not self.connected.is_set():
            return qos
        awaited = self._subscriptions.send(self._paho, topic_filter, qos)
        if awaited is None:
            return qos  # re-sent on the next CONNACK
        done, granted = awaited
        if timeout is None:
            return qos
        if not done.wait(timeout):
            raise ConnectError(f"no SUBACK for {topic_filter!r} within {timeout:g} s")
        if granted and granted[0] >= 0x80:
            raise SubscriptionRefused(f"broker refused the subscription to {topic_filter!r}")
        return granted[0] if granted else qos

    def unsubscribe(self, topic_filter: str) -> None:
        self._subscriptions.forget(topic_filter)
        self._paho.unsubscribe(topic_filter)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                tag: Any = None, withdraw: bool = True,
                properties: MessageProperties | None = None) -> Delivery | None:
        """Queue a publish. While disconnected, QoS 1 messages wait in paho's queue
        and go out after the reconnect, so a reply is not lost to a short outage.

        With a ``tag`` the message is *withdrawn* instead if the connection drops
        before the broker confirms it (also when published while disconnected):
        ``on_withdrawn`` gets the tags, and the caller decides whether to send it
        again. For answers that peers may take over meanwhile: resending one
        blindly after the reconnect could make two. Returns None when withdrawn
        at once. Either way ``on_confirmed(tag)`` reports the broker's PUBACK;
        ``withdraw=False`` asks for that report only.
        """
        with self._fence.lock:
            if tag is not None and withdraw and not self.connected.is_set():
                withdrawn = True
            else:
                withdrawn = False
                info = self._paho.publish(topic, payload, qos=qos, retain=retain,
                                          properties=_PackedProperties(properties)  # type: ignore[arg-type]
                                          if self.mqtt5 and properties else None)
                if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0:
                    # Queued: paho sends it after the reconnect and marks it
                    # published at its PUBACK, but its is_published() raises
                    # for good on this code. paho's own word for a queued
                    # message (one over max_inflight) is success.
                    info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
                if tag is not None and qos > 0:
                    self._fence.track(info.mid, tag, withdraw)
        if withdrawn:
            if self._on_withdrawn:
                self._on_withdrawn([tag])
            return None
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise PublishError(f"publish to {topic!r} failed: {paho.error_string(info.rc)}")
        return Delivery(info)

    def unconfirmed(self) -> int:
        """QoS 1 messages published here that the broker has not acknowledged
        yet (sent or waiting to be): what this client holds to send again."""
        return self._fence.unconfirmed()

    def watch_unconfirmed(self, at_most: int, then: Callable[[], None]) -> None:
        """Call ``then`` once (on the network thread) when at most ``at_most``
        messages are unconfirmed; at once if that holds already. A later
        call replaces an earlier watch."""
        if self._fence.watch(at_most, then):
            then()

    def together(self, *, write_here: bool = False) -> _Together:
        """Publishes made inside leave in one write, after it: a process
        killed meanwhile has sent all of them or none (see :class:`_Client`).
        Keep it short: the connection writes nothing else meanwhile.

        ``write_here``: this thread writes them (plain TCP), saving the wake-up
        of the network thread, when the caller has nothing else to do next;
        a caller with more work queued leaves them to the network thread, which
        runs beside it and merges many such batches into one write."""
        return _Together(self._paho, write_here)

    def more_to_read(self) -> bool:
        """Whether more bytes wait on the connection right now (True when it
        cannot tell): a caller on the network thread with more to read next
        hands its work on instead of doing it there."""
        return self._paho.more_to_read()

    def ack(self, message: Message) -> bool:
        """PUBACK ``message`` if it arrived on the current connection.

        Returns False when the connection it came on is gone: the broker will
        redeliver it (with dup set), and the caller's dedup handles that.
        """
        if not self._manual_ack or message.qos == 0:
            return True
        if message.generation != self._generation or not self.connected.is_set():
            return False
        self._paho.ack(message.mid, message.qos)
        return True

    # -- paho callbacks (network thread) ---------------------------------
    def _handle_connect(self, client: paho.Client, _ud: object, _flags: object,
                        reason_code: object, _props: object) -> None:
        failed = getattr(reason_code, "is_failure", False)
        if failed:
            self.refused = str(reason_code)
            # A fail-fast start (a probe) hands the reason to its caller, which says what it means.
            left_out = self._refusal_lines.take(time.monotonic())
            if left_out is not None:
                log.log(logging.DEBUG if self._fail_fast else logging.WARNING,
                        "%s: broker %s refused the connection: %s%s", self.client_id, self.url, reason_code,
                        _more(left_out, "refusals"))
            self._first_result.set()
            if self._on_refused:
                self._on_refused(self.refused)
            return
        self.session_present = bool(getattr(_flags, "session_present", False))
        self._generation += 1
        self._subscriptions.renew(self._paho, self.resubscribed)
        self.connected.set()
        self._first_result.set()
        log.debug("%s: connected to %s (generation %d)", self.client_id, self.url, self._generation)
        if self._on_connection:
            self._on_connection(True)

    def _handle_connect_fail(self, _client: paho.Client, _ud: object) -> None:
        if self._fail_fast and not self._first_result.is_set() and self._node == len(self.url.nodes) - 1:
            self.refused = "connection refused"
            self._first_result.set()
        self._next_node()

    def _next_node(self) -> None:
        """A failover list: the next attempt goes to the next node."""
        nodes = self.url.nodes
        if len(nodes) > 1 and not self._stopping:
            self._node = (self._node + 1) % len(nodes)
            self._paho.retarget(*nodes[self._node])

    @property
    def node(self) -> str:
        """``host:port`` of the node in use (or tried next)."""
        host, port = self.url.nodes[self._node]
        return f"{host}:{port}"

    def _handle_disconnect(self, _client: paho.Client, _ud: object, _flags: object,
                           reason_code: object, _props: object) -> None:
        # Publishes from now on see the drop (a tagged one is withdrawn at once);
        # those tracked before it are withdrawn under the fence by _dropped.
        was = self.connected.is_set()
        self.connected.clear()
        self.resubscribed.clear()
        if not self._paho.after_resend(lambda: self._dropped(was, reason_code)):
            self._dropped(was, reason_code)

    def _dropped(self, was: bool, reason_code: object) -> None:
        """A drop, handled: never inside paho's resend loop (see ``_Client.after_resend``)."""
        withdrawn = self._fence.withdraw()
        if withdrawn and self._on_withdrawn:
            self._on_withdrawn(withdrawn)
        if not self._reconnect and not self._stopping:
            self._stopping = True          # one connection only: do not come back
            self._paho.disconnect()
        if was and not self._stopping:
            lost = self.node
            self._next_node()
            left_out = self._drop_lines.take(time.monotonic())
            if left_out is not None:
                log.info("%s: disconnected from %s (%s); reconnecting%s%s", self.client_id, lost, reason_code,
                         f" to {self.node}" if len(self.url.nodes) > 1 else "", _more(left_out, "drops"))
            if self._on_connection:
                self._on_connection(False)

    def _handle_publish(self, _client: paho.Client, _ud: object, mid: int,
                        _reason: object, _props: object) -> None:
        tag, then = self._fence.confirmed(mid)
        if tag is not None and self._on_confirmed:
            self._on_confirmed(tag)
        if then is not None:
            then()

    def _handle_subscribe(self, _client: paho.Client, _ud: object, mid: int,
                          reason_codes: list[Any], _props: object) -> None:
        self._subscriptions.acknowledged(mid, reason_codes)

    def _handle_message(self, _client: paho.Client, _ud: object, msg: paho.MQTTMessage) -> None:
        """What paho read itself (see ``_Client._handle_publish``)."""
        self._deliver(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), msg.mid, bool(msg.dup),
                      _properties(msg.properties) if self.mqtt5 else None)

    def _deliver(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int, dup: bool,
                 properties: MessageProperties | None) -> None:
        if self._on_message is None:
            return
        message = Message(topic=topic, payload=payload, qos=qos, retain=retain, mid=mid,
                          generation=self._generation, dup=dup, properties=properties)
        try:
            self._on_message(message)
        except Exception:  # a bug in a handler must not kill paho's network thread
            log.exception("%s: message handler failed on %s", self.client_id, topic)


def _more(left_out: int, what: str) -> str:
    """What a rate-limited line says of the lines left out before it."""
    return f" ({left_out} more {what} not logged since the last such line)" if left_out else ""


def _properties(p: Any) -> MessageProperties | None:
    """The properties fogmesh maps, or None when the message had none of them
    (decoded by ``_Client``, or by paho for what it leaves to paho)."""
    if p is None or isinstance(p, MessageProperties):
        return p
    user = getattr(p, "UserProperty", None)
    props = MessageProperties(response_topic=getattr(p, "ResponseTopic", None),
                              correlation_data=getattr(p, "CorrelationData", None),
                              user_properties=tuple((str(k), str(v)) for k, v in user) if user else (),
                              expiry_s=getattr(p, "MessageExpiryInterval", None))
    return props if props else None
