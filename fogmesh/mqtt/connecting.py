"""What a client's connection is made of, as paho is told: protocol and
transport, reconnect backoff, in-flight window, last will, login, TLS, a
fresh client id per connection on a cluster, and the CONNECT's MQTT 5
session properties; and what to say when a broker refuses the connection."""

from __future__ import annotations

import os
import ssl

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fogmesh.broker_url import BrokerUrl, resolve_password
from fogmesh.errors import ConnectError
from fogmesh.mqtt.values import RECEIVE_MAXIMUM, Will
from fogmesh.mqtt.wire import _Client, _nodelay


def paho_client(url: BrokerUrl, *, client_id: str, clean_session: bool, will: Will | None, manual_ack: bool,
                reconnect_min: float, reconnect_max: float, max_inflight: int, reconnect: bool, mqtt5: bool,
                fresh_id: bool | None) -> _Client:
    """fogmesh's paho client for ``url``, set up but not connected (the
    caller sets its callbacks)."""
    c = _Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                clean_session=None if mqtt5 else clean_session,
                protocol=paho.MQTTv5 if mqtt5 else paho.MQTTv311,
                manual_ack=manual_ack, transport="websockets" if url.websocket else "tcp",
                # One connection only (a rescue): paho must not reconnect by itself either.
                # Its network loop overrides a disconnect() made in on_disconnect after a
                # lost connection, and came back, kicking off the client that took the id.
                reconnect_on_failure=reconnect)
    if url.websocket:
        c.ws_set_options(path=url.path)
    c.on_socket_open = _nodelay  # type: ignore[assignment]   # paho types the socket loosely
    c.reconnect_delay_set(min_delay=reconnect_min, max_delay=reconnect_max)  # type: ignore[arg-type]
    c.max_inflight_messages_set(max_inflight)
    if will is not None:
        c.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    if url.username:
        c.username_pw_set(url.username, resolve_password(url, os.environ))
    if url.tls:
        try:
            c.tls_set(ca_certs=url.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot use the CA certificate {url.ca_file}: {exc}") from exc
    # A clean session on a cluster (a failover list): a fresh client id per connection
    # (``client_id`` plus a suffix). RabbitMQ keeps a QoS 1 subscription's queue on one
    # node, named by client id, and refuses the id on every other node while that one
    # is down: the client could not come back until the dead node did.
    if fresh_id if fresh_id is not None else clean_session and len(url.nodes) > 1:
        c.id_base = client_id
    return c


def connect_async(c: _Client, url: BrokerUrl, *, keepalive: int, mqtt5: bool, clean_session: bool,
                  manual_ack: bool) -> None:
    """Start connecting (paho's network loop, started after, makes it)."""
    if not mqtt5:
        c.connect_async(url.host, url.port, keepalive=keepalive)
        return
    # A persistent session outlives the connection only with a Session
    # Expiry Interval (3.1.1's clean_session=0 kept it for ever).
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if not clean_session:
        props.SessionExpiryInterval = 0xFFFFFFFF
    if manual_ack:
        # What 3.1.1 left to the broker's max_inflight_messages: without it an
        # MQTT 5 broker may push 65,535 unacknowledged tasks at once, and
        # tasks should wait at the broker, not in an agent's memory.
        props.ReceiveMaximum = RECEIVE_MAXIMUM
    # No properties where none is needed: amqtt refuses a property-less
    # MQTT 5 CONNECT with a reason, but one with properties not at all.
    c.connect_async(url.host, url.port, keepalive=keepalive, clean_start=clean_session,
                    properties=props if not clean_session or manual_ack else None)


def refused_hint(refused: str | None) -> str:
    """What to check when the first connection failed for ``refused``."""
    if refused and ("authori" in refused.lower() or "password" in refused.lower()):
        return ("Check the login in the URL (mqtts://LOGIN@host) and its password "
                "($FOGMESH_PASSWORD, $FOGMESH_PASSWORD_FILE or ?password_file=PATH).")
    return "Is it running? Start one with `fogmesh broker`."
