"""The libraries fogmesh reaches inside of are pinned to the versions it was
checked against, and the private names it relies on are there. A new minor
version fails here, loudly, before it fails in the field quietly: check the
names below against it, then widen the pin in pyproject.toml."""

from __future__ import annotations

import asyncio
import importlib.metadata

import amqtt.broker
import paho.mqtt.client as paho

# fogmesh/mqtt/wire.py: paho's write queue, its reads and its PUBACK path; its CONNACK
# handling and publishing while it reconnects, its reconnect backoff and client id (and
# tests/test_lock_order.py: its locks).
PAHO_PRIVATE = ("_out_packet", "_out_messages", "_sock", "_sockpairW", "_state", "_in_packet", "_protocol",
                "_manual_ack", "_in_callback_mutex", "_out_message_mutex", "_msgtime_mutex", "_last_msg_out",
                "_packet_queue", "_packet_write", "_handle_publish", "_handle_pubackcomp", "_do_on_publish",
                "_send_puback", "_handle_connack", "_callback_mutex", "_in_message_mutex",
                "_mid_generate_mutex", "_reconnect_delay_mutex", "_reconnect_delay", "_reconnect_wait", "_client_id")
# broker/embedded/: amqtt's sessions, handlers and retained messages.
AMQTT_PRIVATE = ("_initialize_client_session", "_publish_session_retained_messages", "_client_connected",
                 "_del_all_subscriptions", "_broadcast_message", "_client_message_loop", "_sessions",
                 "_get_handler", "_retained_messages", "_broadcast_queue", "_servers", "_cleanup_session",
                 "_publish_retained_messages_for_subscription", "_subscriptions")


def minor(dist: str) -> str:
    return ".".join(importlib.metadata.version(dist).split(".")[:2])


def test_paho_mqtt_is_the_minor_version_its_private_names_were_checked_against():
    assert minor("paho-mqtt") == "2.2", (
        f"paho-mqtt {importlib.metadata.version('paho-mqtt')}: fogmesh/mqtt/wire.py overrides paho's private "
        "methods; check them against this version, then widen the pin in pyproject.toml and here")


def test_amqtt_is_the_version_its_private_names_were_checked_against():
    assert importlib.metadata.version("amqtt") == "0.12.1", (
        "amqtt changed: broker/embedded/ patches amqtt's private methods; check them, then move the pin")


def test_the_private_names_fogmesh_relies_on_are_there():
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    missing = [n for n in PAHO_PRIVATE if not hasattr(client, n)]
    assert not missing, f"paho-mqtt lacks {missing}: fogmesh/mqtt/wire.py must change"

    async def made() -> amqtt.broker.Broker:       # amqtt makes some of them in __init__, inside a loop
        return amqtt.broker.Broker({"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}}})
    broker = asyncio.run(made())
    missing = [n for n in AMQTT_PRIVATE if not hasattr(broker, n)]
    assert not missing, f"amqtt lacks {missing}: broker/embedded/ must change"
