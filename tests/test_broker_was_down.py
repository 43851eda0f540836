"""Tier 3 (a real broker): how a client tells a broker that restarted from a
link that was cut. Only the first may have rolled its sessions back (a
SIGKILL between two saves), so only then may an agent send again an answer
whose task did not come back (see ``failover.on_connected``)."""

from __future__ import annotations

import pytest
from netcut import CuttableLink
from waiting import wait_until

from fogmesh.bench.faultkit import BrokerProcess
from fogmesh.mqtt.client import MqttClient

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def broker_proc(tmp_path):
    b = BrokerProcess("amqtt", tmp_path).start()     # the embedded broker (amqtt inside)
    yield b
    b.close()


def test_a_broker_killed_and_started_again_is_known_to_have_been_down(broker_proc):
    c = MqttClient(broker_proc.url, clean_session=False, client_id="was-down", reconnect_max=0.2)
    c.start()
    try:
        assert not c.broker_was_down
        broker_proc.kill()
        wait_until(lambda: not c.connected.is_set(), timeout=10)
        wait_until(lambda: c._paho.refused_since_connack, timeout=10)   # its port refused a reconnect
        broker_proc.start()
        assert c.wait_connected(20)
        assert c.broker_was_down
    finally:
        c.stop()


def test_a_cut_link_to_a_broker_that_lived_on_is_not(broker_proc):
    link = CuttableLink("127.0.0.1", broker_proc.port)
    c = MqttClient(link.url, clean_session=False, client_id="cut", reconnect_max=0.2)
    c.start()
    try:
        link.cut()
        wait_until(lambda: not c.connected.is_set(), timeout=10)
        assert c.wait_connected(20)
        assert c.session_present and not c.broker_was_down
    finally:
        c.stop()
        link.close()
