"""MQTT over WebSockets: the embedded broker (`fogmesh broker --ws-port`) and
mosquitto (the shipped configs, plain and TLS) carry fogmesh end to end, and
every part takes ws:// and wss:// URLs. Plus: the embedded broker says why it
refuses an MQTT 5 client."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from fogmesh.broker.embedded import EmbeddedBroker
from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.ports import free_port
from fogmesh.broker.secure import Logins, generate
from fogmesh.devices.client import FogClient
from fogmesh.errors import ConnectError
from fogmesh.mqtt import MqttClient, probe_connect

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["mosquitto", "amqtt"])
def ws_broker(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(TCP URL, WebSocket URL) of one broker with both listeners."""
    ws_port = free_port()
    if request.param == "mosquitto":
        m = Mosquitto(ws_port=ws_port).start()
        yield m.url, f"ws://127.0.0.1:{ws_port}"
        m.cleanup()
    else:
        b = EmbeddedBroker(port=free_port(), ws_port=ws_port).start()
        yield b.url, f"ws://127.0.0.1:{ws_port}"
        b.stop()


def test_a_device_over_websockets_is_answered_by_an_agent_over_tcp(ws_broker, root, agents):
    tcp, ws = ws_broker
    agents("ws-a", tcp, root)
    with FogClient(ws, root=root) as client:
        reply = client.send("sum", {"values": [1, 2]}).result(timeout=10)
    assert reply.ok and reply.value == 3


def test_an_agent_over_websockets_answers_a_device_over_tcp(ws_broker, root, agents):
    tcp, ws = ws_broker
    agents("ws-b", ws, root)
    with FogClient(tcp, root=root) as client:
        assert client.send("echo", {"x": 1}).result(timeout=10).value == {"x": 1}


def test_tls_websockets_on_the_secured_mosquitto_carry_a_task(root, agents):
    out = Path(tempfile.mkdtemp(prefix="fogmesh-wss-"))
    generate(out, Logins(devices=("sensor-7",), agents=("pi-1",), root=root), hosts=["localhost", "127.0.0.1"])
    broker = Mosquitto(secure_dir=out, ws_port=free_port()).start()
    try:
        def url(scheme: str, login: str, port: int) -> str:
            return (f"{scheme}://{login}@127.0.0.1:{port}?ca={out / 'ca.crt'}"
                    f"&password_file={out / 'credentials' / (login + '.password')}")
        agents("pi-1", url("mqtts", "pi-1", broker.port), root)
        with FogClient(url("wss", "sensor-7", broker.ws_port), root=root, device="sensor-7",
                       own_topic=True) as client:
            assert client.send("sum", {"values": [2, 3]}).result(timeout=10).value == 5
    finally:
        broker.cleanup()
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize("conf", ["broker/mosquitto.conf", "broker/mosquitto-compose.conf"])
def test_the_shipped_mosquitto_configs_have_a_websocket_listener(conf):
    lines = (REPO / conf).read_text().splitlines()
    at = lines.index("listener 9001")
    assert lines[at + 1] == "protocol websockets"


def test_the_secured_config_has_a_tls_websocket_listener(tmp_path):
    from fogmesh.broker.secure import conf_text
    text = conf_text(tmp_path, port=8883, bind="0.0.0.0", state_dir="/var/lib/mosquitto")
    ws = text.split("listener 8884 0.0.0.0\n")[1]
    assert ws.startswith("protocol websockets\ncafile ") and "certfile" in ws and "keyfile" in ws


def test_the_embedded_broker_says_why_it_refuses_an_mqtt5_client(caplog):
    with caplog.at_level(logging.WARNING, logger="fogmesh.broker.embedded"):
        with EmbeddedBroker(port=free_port()) as b:
            app = MqttClient(b.url, client_id="an-mqtt5-app", reconnect=False, mqtt5=True)
            with pytest.raises(ConnectError):
                app.start(timeout=5, fail_fast=True)
            assert probe_connect(b.url) is None
    refusals = [r.getMessage() for r in caplog.records if r.name == "fogmesh.broker.embedded"]
    assert any("MQTT 5" in m and "MQTT 3.1.1 only" in m and "-V mqttv311" in m for m in refusals), refusals


@pytest.mark.parametrize("after_connect", [False, True], ids=["a PINGREQ first", "a PUBLISH to a/+"])
def test_a_protocol_violation_over_websockets_closes_the_connection(ws_broker, after_connect):
    # As over TCP (test_mqtt_conformance*.py): [MQTT-3.1.0-1] the first packet is a
    # CONNECT; [MQTT-3.3.2-2] a topic name has no wildcards. The server closes the connection.
    from rawmqtt import CONNECT, PINGREQ, PUBLISH, packet, text
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect
    _, ws = ws_broker
    with connect(f"{ws}/mqtt", subprotocols=["mqtt"], open_timeout=5) as c:
        if after_connect:
            c.send(packet(CONNECT, 0, text("MQTT") + bytes([4, 2]) + (60).to_bytes(2, "big") + text("ws-bad")))
            assert c.recv(timeout=5)[:1] == b"\x20"               # its CONNACK
            c.send(packet(PUBLISH, 0, text("a/+") + b"wildcard"))
        else:
            c.send(packet(PINGREQ, 0, b""))
        with pytest.raises(ConnectionClosed):
            c.recv(timeout=2)
