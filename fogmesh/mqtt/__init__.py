"""The one MQTT client adapter: everything fogmesh does with paho-mqtt is in
this package (``wire``: paho's client, changed; ``client``: the reconnecting
client the rest of fogmesh uses, with its parts ``connecting`` (how paho is
set up), ``subscriptions`` (what it renews at every CONNACK) and ``fence``
(what a drop withdraws, and the lock order); ``checks``: one-shot questions
to a broker).

Why one adapter: paho's surface is large and its errors are integer codes; the
rest of fogmesh sees a small object (start, subscribe, publish, ack, stop), our
exceptions, and frozen :class:`Message` values. What it adds over bare paho:

* TCP_NODELAY on every socket: small QoS 1 packets otherwise pay Nagle plus
  delayed-ACK, 40+ ms per hop on Linux.
* Reconnect with exponential backoff forever, and re-subscription on every
  CONNACK, so a client is never "stuck after a reconnect until restarted"
  (the broker may have lost its session state).
* Manual acknowledgement tied to a connection generation: a message is
  PUBACKed only after the application is done with it, and never with a
  packet id of an earlier connection (ids are reused per connection).
* The per-message paths read without paho's objects: MQTT 5 PUBLISH
  properties (fogmesh.publish_properties) and plain PUBACKs cost paho more
  than the rest of a round trip on a small machine.
"""

from fogmesh.broker_url import BrokerUrl
from fogmesh.mqtt.checks import ensure_id_carried, probe_connect, topic_round_trip
from fogmesh.mqtt.client import MqttClient
from fogmesh.mqtt.values import RECEIVE_MAXIMUM, Delivery, Message, Will

__all__ = ["RECEIVE_MAXIMUM", "BrokerUrl", "Delivery", "Message", "MqttClient", "Will", "ensure_id_carried",
           "probe_connect", "topic_round_trip"]
